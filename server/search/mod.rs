//! Search (QIDO-RS, PS3.18 10.6): parsing a request into a [`query::Query`], matching values
//! ([`matcher`]), and running it against the in-memory [`catalog::Catalog`] of studies and series
//! and, for instances, the records of the candidate series.

pub mod catalog;
pub mod flat;
pub mod matcher;
pub mod query;

use std::cmp::Ordering;

use catalog::{Catalog, Page, SeriesRef};
use flat::Flat;
use query::{Level, Query};

use crate::ids::{SeriesUid, StudyUid};
use crate::store::records::InstanceRecord;
use crate::store::{MetaRepo, RepoError};

fn instance_number(rec: &InstanceRecord) -> Option<i64> {
    let v = rec.attrs.get("00200013")?.get("Value")?.get(0)?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn cmp_instances(a: &InstanceRecord, b: &InstanceRecord) -> Ordering {
    match (instance_number(a), instance_number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.sop.as_str().cmp(b.sop.as_str()))
}

/// The instances of one series, sorted by InstanceNumber then SOP Instance UID.
pub fn series_instances(
    repo: &dyn MetaRepo,
    series: &SeriesUid,
) -> Result<Vec<InstanceRecord>, RepoError> {
    let mut out = Vec::new();
    for sop in repo.instances_of_series(series)? {
        if let Some(rec) = repo.instance(&sop)? {
            out.push(rec);
        }
    }
    out.sort_by(cmp_instances);
    Ok(out)
}

/// Instance search over `plan` (the candidate series in result order). Without instance-level
/// keys or `orderby`, whole series before the page are skipped by their counts and only the
/// series the page touches are read.
pub fn instances(
    repo: &dyn MetaRepo,
    q: &Query,
    plan: &[SeriesRef],
) -> Result<Page<InstanceRecord>, RepoError> {
    let instance_keys: Vec<&query::Predicate> = q
        .predicates
        .iter()
        .filter(|p| p.attr.level == Level::Instance)
        .collect();
    let instance_order = q.order.iter().any(|(a, _)| a.level == Level::Instance);
    if instance_keys.is_empty() && !instance_order {
        let total: u64 = plan.iter().map(|s| s.instances).sum();
        let mut skip = q.offset as u64;
        let mut items = Vec::new();
        for s in plan {
            if items.len() >= q.limit {
                break;
            }
            if skip >= s.instances {
                skip -= s.instances;
                continue;
            }
            let recs = series_instances(repo, &s.series)?;
            for rec in recs.into_iter().skip(skip as usize) {
                if items.len() >= q.limit {
                    break;
                }
                items.push(rec);
            }
            skip = 0;
        }
        return Ok(Page {
            items,
            total: total as usize,
        });
    }
    let mut all: Vec<(usize, InstanceRecord)> = Vec::new();
    for (i, s) in plan.iter().enumerate() {
        for rec in series_instances(repo, &s.series)? {
            let flat = Flat::from_json(&rec.attrs, &[]);
            if instance_keys.iter().all(|p| catalog::eval(p, &flat)) {
                all.push((i, rec));
            }
        }
    }
    if instance_order {
        let flats: Vec<Flat> = all
            .iter()
            .map(|(_, r)| Flat::from_json(&r.attrs, &[]))
            .collect();
        let mut idx: Vec<usize> = (0..all.len()).collect();
        idx.sort_by(|&a, &b| {
            for (attr, desc) in &q.order {
                if attr.level != Level::Instance {
                    continue;
                }
                let o = catalog::cmp_values(
                    attr.vr,
                    flats[a].get(attr.tag()),
                    flats[b].get(attr.tag()),
                    *desc,
                );
                if o != Ordering::Equal {
                    return o;
                }
            }
            all[a]
                .0
                .cmp(&all[b].0)
                .then_with(|| cmp_instances(&all[a].1, &all[b].1))
        });
        let total = idx.len();
        let mut slots: Vec<Option<InstanceRecord>> =
            all.into_iter().map(|(_, r)| Some(r)).collect();
        let items = idx
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .filter_map(|i| slots[i].take())
            .collect();
        return Ok(Page { items, total });
    }
    let total = all.len();
    Ok(Page {
        items: all
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|(_, r)| r)
            .collect(),
        total,
    })
}

/// Study-scoped existence checks shared by the routes: `Ok(false)` when the study (or the
/// series within it) does not exist.
pub fn path_exists(cat: &Catalog, study: &StudyUid, series: Option<&SeriesUid>) -> bool {
    match series {
        None => cat.has_study(study),
        Some(se) => cat.series_in_study(study, se),
    }
}
