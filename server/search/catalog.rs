//! The search catalog: every study and series of the archive in memory, in compact form
//! ([`Flat`]), with ordered secondary indexes on the keys viewers search by, so that a search
//! looks at the candidates of its most selective key instead of at every study.
//!
//! | index | key | serves |
//! |---|---|---|
//! | `by_uid` | StudyInstanceUID | UID lists, study paths |
//! | `by_date` | StudyDate | date and combined date-time ranges |
//! | `by_name` | folded PatientName (each representation) | `DOE*`, exact names |
//! | `by_component` | folded name components | `fuzzymatching=true` |
//! | `by_pid` / `by_accession` | PatientID / AccessionNumber | exact and `ABC*` |
//! | `by_modality` | ModalitiesInStudy | `ModalitiesInStudy=CT,MR` |
//!
//! The catalog is derived from the sled index (the source of truth): built at start-up and
//! refreshed per study after every change the store makes (store, replace, delete), reading the
//! committed records. Instances are not held here: an instance search reads the records of its
//! candidate series from sled.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

use dicom_core::{Tag, VR};

use super::flat::Flat;
use super::matcher::{self, Pattern};
use super::query::*;
use crate::ids::{SeriesUid, StudyUid};
use crate::store::records::{SeriesRecord, StudyRecord};
use crate::store::{MetaRepo, RepoError};

const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const ACCESSION: Tag = Tag(0x0008, 0x0050);
const STUDY_UID: Tag = Tag(0x0020, 0x000D);
const SERIES_UID: Tag = Tag(0x0020, 0x000E);
const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
const STUDY_TIME: Tag = Tag(0x0008, 0x0030);
const SERIES_NUMBER: Tag = Tag(0x0020, 0x0011);

struct StudyRow {
    uid: StudyUid,
    flat: Flat,
    /// YYYYMMDD, 0 when absent.
    date: u32,
    /// Microseconds since midnight, 0 when absent.
    time: u64,
    series: Vec<u32>,
}

/// A series ready to become a row (built without the tables' lock).
struct SeriesPrep {
    uid: SeriesUid,
    flat: Flat,
    number: Option<i64>,
    instances: u64,
}

impl SeriesPrep {
    fn new(s: &SeriesRecord) -> SeriesPrep {
        let flat = Flat::from_json(
            &s.attrs,
            &[
                (SERIES_UID, s.series.to_string()),
                (SERIES_RELATED_INSTANCES, s.instance_count.to_string()),
            ],
        );
        SeriesPrep {
            uid: s.series.clone(),
            number: first_int(flat.get(SERIES_NUMBER)),
            flat,
            instances: s.instance_count,
        }
    }
}

struct SeriesRow {
    uid: SeriesUid,
    study: u32,
    flat: Flat,
    number: Option<i64>,
    instances: u64,
}

type Ordered = BTreeSet<(Box<str>, u32)>;

#[derive(Default)]
struct Tables {
    studies: Vec<Option<StudyRow>>,
    free_studies: Vec<u32>,
    series: Vec<Option<SeriesRow>>,
    free_series: Vec<u32>,
    by_uid: HashMap<Box<str>, u32>,
    series_by_uid: HashMap<Box<str>, u32>,
    by_date: BTreeSet<(u32, u32)>,
    by_name: Ordered,
    by_component: Ordered,
    by_pid: Ordered,
    by_accession: Ordered,
    by_modality: HashMap<Box<str>, BTreeSet<u32>>,
}

/// A page of results and how many matched in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// A series an instance search must read, in result order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRef {
    pub study: StudyUid,
    pub series: SeriesUid,
    pub instances: u64,
}

/// The in-memory search catalog. See the module documentation.
#[derive(Default)]
pub struct Catalog {
    tables: RwLock<Tables>,
    /// Serialises refreshes so that a later refresh always reads a later index state.
    refresh: Mutex<()>,
    /// Parsed study and series records for writing results, dropped on every change to their
    /// study: a page of 25 results then costs no index reads once its studies were seen.
    records: Mutex<RecordCache>,
}

/// Most records kept parsed (about 4 KB each).
const RECORD_CACHE: usize = 16_384;

#[derive(Default)]
struct RecordCache {
    studies: HashMap<StudyUid, Arc<StudyRecord>>,
    series: HashMap<SeriesUid, Arc<SeriesRecord>>,
}

impl RecordCache {
    fn make_room<K: Clone + Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
        if m.len() >= RECORD_CACHE {
            // Drop an arbitrary eighth: cheap, and the hot records come back at once.
            let victims: Vec<K> = m.keys().take(RECORD_CACHE / 8).cloned().collect();
            for k in victims {
                m.remove(&k);
            }
        }
    }
}

fn names_of(flat: &Flat) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    if let Some(v) = flat.get(PATIENT_NAME) {
        for value in v.split('\\') {
            for g in matcher::pn_groups(value) {
                out.push(matcher::fold(g).into());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn components_of(flat: &Flat) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    if let Some(v) = flat.get(PATIENT_NAME) {
        for value in v.split('\\') {
            out.extend(matcher::pn_components(value).map(|c| matcher::fold(c).into()));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn values_of(flat: &Flat, tag: Tag) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = flat
        .get(tag)
        .map(|v| v.split('\\').map(|s| s.trim().into()).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

fn first_int(v: Option<&str>) -> Option<i64> {
    let s = v?.split('\\').next()?.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
}

impl Tables {
    fn study_row(&self, i: u32) -> &StudyRow {
        self.studies[i as usize].as_ref().expect("live row")
    }

    fn series_row(&self, i: u32) -> &SeriesRow {
        self.series[i as usize].as_ref().expect("live row")
    }

    fn index_study(&mut self, i: u32, add: bool) {
        let row = self.study_row(i);
        let date = row.date;
        let names = names_of(&row.flat);
        let comps = components_of(&row.flat);
        let pids = values_of(&row.flat, PATIENT_ID);
        let accs = values_of(&row.flat, ACCESSION);
        let mods = values_of(&row.flat, MODALITIES_IN_STUDY);
        let uid: Box<str> = row.uid.as_str().into();
        fn apply(set: &mut Ordered, keys: Vec<Box<str>>, i: u32, add: bool) {
            for k in keys {
                if add {
                    set.insert((k, i));
                } else {
                    set.remove(&(k, i));
                }
            }
        }
        apply(&mut self.by_name, names, i, add);
        apply(&mut self.by_component, comps, i, add);
        apply(&mut self.by_pid, pids, i, add);
        apply(&mut self.by_accession, accs, i, add);
        for m in mods {
            if add {
                self.by_modality.entry(m).or_default().insert(i);
            } else if let Some(set) = self.by_modality.get_mut(&m) {
                set.remove(&i);
                if set.is_empty() {
                    self.by_modality.remove(&m);
                }
            }
        }
        if add {
            if date != 0 {
                self.by_date.insert((date, i));
            }
            self.by_uid.insert(uid, i);
        } else {
            self.by_date.remove(&(date, i));
            self.by_uid.remove(&uid);
        }
    }

    fn remove_study(&mut self, uid: &str) {
        let Some(&i) = self.by_uid.get(uid) else {
            return;
        };
        self.index_study(i, false);
        let row = self.studies[i as usize].take().expect("live row");
        for s in row.series {
            if let Some(srow) = self.series[s as usize].take() {
                self.series_by_uid.remove(srow.uid.as_str());
                self.free_series.push(s);
            }
        }
        self.free_studies.push(i);
    }

    fn insert_study(&mut self, rec: &StudyRecord, series: Vec<SeriesPrep>) {
        self.remove_study(rec.study.as_str());
        let modalities: Vec<&str> = rec.modalities.keys().map(String::as_str).collect();
        let flat = Flat::from_json(
            &rec.attrs,
            &[
                (STUDY_UID, rec.study.to_string()),
                (MODALITIES_IN_STUDY, modalities.join("\\")),
                (STUDY_RELATED_SERIES, rec.series_count.to_string()),
                (STUDY_RELATED_INSTANCES, rec.instance_count.to_string()),
            ],
        );
        let date = flat
            .get(STUDY_DATE)
            .and_then(matcher::parse_stored_date)
            .unwrap_or(0);
        let time = flat
            .get(STUDY_TIME)
            .and_then(matcher::parse_stored_time)
            .map_or(0, |t| t.0);
        let row = StudyRow {
            uid: rec.study.clone(),
            flat,
            date,
            time,
            series: Vec::new(),
        };
        let i = match self.free_studies.pop() {
            Some(i) => {
                self.studies[i as usize] = Some(row);
                i
            }
            None => {
                self.studies.push(Some(row));
                (self.studies.len() - 1) as u32
            }
        };
        self.index_study(i, true);
        let mut ids = Vec::with_capacity(series.len());
        for s in series {
            let srow = SeriesRow {
                uid: s.uid,
                study: i,
                number: s.number,
                flat: s.flat,
                instances: s.instances,
            };
            let key: Box<str> = srow.uid.as_str().into();
            let j = match self.free_series.pop() {
                Some(j) => {
                    self.series[j as usize] = Some(srow);
                    j
                }
                None => {
                    self.series.push(Some(srow));
                    (self.series.len() - 1) as u32
                }
            };
            self.series_by_uid.insert(key, j);
            ids.push(j);
        }
        self.studies[i as usize].as_mut().expect("live").series = ids;
    }

    fn prefix_rows(set: &Ordered, prefix: &str, exact: bool) -> Vec<u32> {
        let start: (Box<str>, u32) = (prefix.into(), 0);
        let mut out: Vec<u32> = set
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(|(k, _)| {
                if exact {
                    &**k == prefix
                } else {
                    k.starts_with(prefix)
                }
            })
            .map(|(_, i)| *i)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Candidate study rows from the most selective indexed key; `None` means every row.
    /// The second value is the index (in `q.predicates`) of a key the candidates satisfy
    /// exactly, which then need not be tested again row by row.
    fn study_candidates(
        &self,
        q: &Query,
        visible: Option<&[StudyUid]>,
        case_sensitive_pn: bool,
    ) -> Option<(Vec<u32>, Option<usize>)> {
        if let Some(v) = visible {
            return Some((
                v.iter()
                    .filter_map(|s| self.by_uid.get(s.as_str()).copied())
                    .collect(),
                None,
            ));
        }
        let single = |tag: Tag| {
            q.predicates.iter().enumerate().find(|(_, p)| {
                p.attr.level == Level::Study && p.attr.path.len() == 1 && p.attr.tag() == tag
            })
        };
        // `LITERAL*` (or an exact value) is exactly what an ordered range over the literal finds.
        let prefix_only =
            |p: &Pattern| !p.is_wild() || p.text == format!("{}*", p.literal_prefix());
        if let Some((
            i,
            Predicate {
                test: Test::Uids(uids),
                ..
            },
        )) = single(STUDY_UID)
        {
            let rows = uids
                .iter()
                .filter_map(|u| self.by_uid.get(u.as_str()).copied())
                .collect();
            return Some((rows, Some(i)));
        }
        for (tag, set) in [(PATIENT_ID, &self.by_pid), (ACCESSION, &self.by_accession)] {
            if let Some((
                i,
                Predicate {
                    test: Test::Text { patterns, .. },
                    ..
                },
            )) = single(tag)
                && patterns.len() == 1
                && !patterns[0].literal_prefix().is_empty()
            {
                let p = &patterns[0];
                let rows = Self::prefix_rows(set, p.literal_prefix(), !p.is_wild());
                return Some((rows, prefix_only(p).then_some(i)));
            }
        }
        match single(PATIENT_NAME) {
            Some((
                i,
                Predicate {
                    test:
                        Test::Text {
                            patterns,
                            folded: true,
                        },
                    ..
                },
            )) if !case_sensitive_pn && !patterns[0].literal_prefix().is_empty() => {
                let p = &patterns[0];
                let rows = Self::prefix_rows(&self.by_name, p.literal_prefix(), !p.is_wild());
                return Some((rows, prefix_only(p).then_some(i)));
            }
            Some((
                i,
                Predicate {
                    test: Test::Fuzzy(tokens),
                    ..
                },
            )) if tokens
                .first()
                .is_some_and(|t| !t.literal_prefix().is_empty()) =>
            {
                let rows = Self::prefix_rows(&self.by_component, tokens[0].literal_prefix(), false);
                let exact = tokens.len() == 1 && prefix_only(&tokens[0]);
                return Some((rows, exact.then_some(i)));
            }
            _ => {}
        }
        if let Some((
            i,
            Predicate {
                test: Test::Text { patterns, .. },
                ..
            },
        )) = single(MODALITIES_IN_STUDY)
            && patterns.iter().all(|p| !p.is_wild())
        {
            let sets: Vec<&BTreeSet<u32>> = patterns
                .iter()
                .filter_map(|p| self.by_modality.get(p.text.as_str()))
                .collect();
            let rows = match sets.as_slice() {
                [one] => one.iter().copied().collect(),
                _ => {
                    let mut out: Vec<u32> = sets.iter().flat_map(|s| s.iter().copied()).collect();
                    out.sort_unstable();
                    out.dedup();
                    out
                }
            };
            return Some((rows, Some(i)));
        }
        let combined = q
            .combined
            .iter()
            .find(|c| c.date == STUDY_DATE)
            .map(|c| (c.date_lo, c.date_hi, None));
        let date_range = combined.or_else(|| match single(STUDY_DATE) {
            Some((i, p)) => match &p.test {
                Test::Range { lo, hi } => Some((
                    u32::try_from(*lo).unwrap_or(0),
                    u32::try_from(*hi).unwrap_or(u32::MAX),
                    Some(i),
                )),
                _ => None,
            },
            None => None,
        });
        if let Some((lo, hi, satisfied)) = date_range {
            let rows = self
                .by_date
                .range((lo, 0)..=(hi, u32::MAX))
                .map(|(_, i)| *i)
                .collect();
            return Some((rows, satisfied));
        }
        None
    }

    fn study_matches(&self, q: &Query, row: &StudyRow, skip: Option<usize>) -> bool {
        q.predicates
            .iter()
            .enumerate()
            .filter(|(i, p)| p.attr.level == Level::Study && Some(*i) != skip)
            .all(|(_, p)| eval(p, &row.flat))
            && q.combined
                .iter()
                .filter(|c| c.level == Level::Study)
                .all(|c| eval_combined(c, &row.flat))
    }

    fn series_matches(&self, q: &Query, row: &SeriesRow) -> bool {
        q.predicates
            .iter()
            .filter(|p| p.attr.level == Level::Series)
            .all(|p| eval(p, &row.flat))
            && q.combined
                .iter()
                .filter(|c| c.level == Level::Series)
                .all(|c| eval_combined(c, &row.flat))
    }

    fn has_level(q: &Query, level: Level) -> bool {
        q.predicates.iter().any(|p| p.attr.level == level)
            || q.combined.iter().any(|c| c.level == level)
    }

    /// Every study row matching the study-level keys (unordered).
    fn matching_studies(&self, q: &Query, visible: Option<&[StudyUid]>, cs: bool) -> Vec<u32> {
        let (candidates, skip) = match self.study_candidates(q, visible, cs) {
            Some((rows, skip)) => (Some(rows), skip),
            None => (None, None),
        };
        let remaining = q
            .predicates
            .iter()
            .enumerate()
            .any(|(i, p)| p.attr.level == Level::Study && Some(i) != skip)
            || q.combined.iter().any(|c| c.level == Level::Study);
        if !remaining && let Some(c) = &candidates {
            // The index answered the whole query: no row needs to be looked at.
            return c.clone();
        }
        let test = |i: &u32| {
            self.studies[*i as usize]
                .as_ref()
                .is_some_and(|r| self.study_matches(q, r, skip))
        };
        match candidates {
            Some(c) => c.into_iter().filter(test).collect(),
            None => (0..self.studies.len() as u32).filter(test).collect(),
        }
    }

    fn cmp_study_default(&self, a: u32, b: u32) -> Ordering {
        let (ra, rb) = (self.study_row(a), self.study_row(b));
        rb.date
            .cmp(&ra.date)
            .then(rb.time.cmp(&ra.time))
            .then_with(|| ra.uid.as_str().cmp(rb.uid.as_str()))
    }

    fn cmp_series_default(&self, a: u32, b: u32, across_studies: bool) -> Ordering {
        let (ra, rb) = (self.series_row(a), self.series_row(b));
        let by_study = if across_studies && ra.study != rb.study {
            self.cmp_study_default(ra.study, rb.study)
        } else {
            Ordering::Equal
        };
        by_study
            .then_with(|| match (ra.number, rb.number) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| ra.uid.as_str().cmp(rb.uid.as_str()))
    }

    /// Compares by the `orderby` keys (values of the row's own level or of its study).
    fn cmp_custom(&self, order: &[(Attr, bool)], a: (&Flat, &Flat), b: (&Flat, &Flat)) -> Ordering {
        fn pick<'f>(attr: &Attr, f: (&'f Flat, &'f Flat)) -> Option<&'f str> {
            if attr.level == Level::Study {
                f.0.get(attr.tag())
            } else {
                f.1.get(attr.tag())
            }
        }
        for (attr, desc) in order {
            let pick = |f| pick(attr, f);
            let o = cmp_values(attr.vr, pick(a), pick(b), *desc);
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

/// Orders two values of one attribute; absent values always last.
pub fn cmp_values(vr: VR, a: Option<&str>, b: Option<&str>, desc: bool) -> Ordering {
    let (a, b) = match (a, b) {
        (None, None) => return Ordering::Equal,
        (Some(_), None) => return Ordering::Less,
        (None, Some(_)) => return Ordering::Greater,
        (Some(a), Some(b)) => (a, b),
    };
    let first = |s: &str| s.split('\\').next().unwrap_or("").trim().to_owned();
    let (a, b) = (first(a), first(b));
    let o = match vr {
        VR::IS | VR::DS | VR::SL | VR::SS | VR::UL | VR::US | VR::FL | VR::FD => {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                _ => a.cmp(&b),
            }
        }
        VR::PN => matcher::fold(&a).cmp(&matcher::fold(&b)),
        _ => a.cmp(&b),
    };
    if desc { o.reverse() } else { o }
}

/// Sorts `items` by `cmp` and keeps the page `[offset, offset + limit)`, selecting before
/// sorting so that a large match set costs O(n) plus the sort of one page.
fn page<T: Copy>(
    mut items: Vec<T>,
    offset: usize,
    limit: usize,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Page<T> {
    let total = items.len();
    let end = offset.saturating_add(limit).min(total);
    if offset >= total || limit == 0 {
        return Page {
            items: Vec::new(),
            total,
        };
    }
    if end < total {
        items.select_nth_unstable_by(end, &cmp);
        items.truncate(end);
    }
    items.sort_unstable_by(&cmp);
    Page {
        items: items[offset..].to_vec(),
        total,
    }
}

/// Does `p` hold for this data set?
pub fn eval(p: &Predicate, flat: &Flat) -> bool {
    eval_path(&p.attr.path, p.attr.vr, &p.test, flat)
}

fn eval_path(path: &[Tag], vr: VR, test: &Test, flat: &Flat) -> bool {
    if matches!(test, Test::Universal) {
        return true;
    }
    if path.len() > 1 {
        return flat
            .items(path[0])
            .iter()
            .any(|item| eval_path(&path[1..], vr, test, item));
    }
    eval_value(test, vr, flat.get(path[0]))
}

/// Tests one stored value (multi-values joined by `\`).
pub fn eval_value(test: &Test, vr: VR, value: Option<&str>) -> bool {
    let Some(value) = value else {
        return matches!(test, Test::Universal)
            || matches!(test, Test::Text { patterns, .. } if patterns.iter().any(Pattern::is_match_all));
    };
    let mut values = value.split('\\').map(str::trim);
    match test {
        Test::Universal => true,
        Test::Uids(uids) => values.any(|v| uids.iter().any(|u| u == v)),
        Test::Text { patterns, folded } if vr == VR::PN => values.any(|v| {
            matcher::pn_groups(v).any(|g| {
                let g = if *folded {
                    std::borrow::Cow::Owned(matcher::fold(g))
                } else {
                    std::borrow::Cow::Borrowed(g)
                };
                patterns.iter().any(|p| p.matches(&g))
            })
        }),
        Test::Text { patterns, .. } => values.any(|v| patterns.iter().any(|p| p.matches(v))),
        Test::Fuzzy(tokens) => {
            let comps: Vec<String> = values
                .flat_map(|v| {
                    matcher::pn_components(v)
                        .map(matcher::fold)
                        .collect::<Vec<_>>()
                })
                .collect();
            tokens.iter().all(|t| comps.iter().any(|c| t.matches(c)))
        }
        Test::Range { lo, hi } => values.any(|v| {
            let at = match vr {
                VR::DA => matcher::parse_stored_date(v).map(u64::from),
                VR::TM => matcher::parse_stored_time(v).map(|t| t.0),
                _ => matcher::parse_datetime(v).map(|t| t.0),
            };
            at.is_some_and(|at| *lo <= at && at <= *hi)
        }),
        Test::Int(n) => values.any(|v| first_int(Some(v)) == Some(*n)),
        Test::Decimal(f) => values.any(|v| {
            v.parse::<f64>()
                .is_ok_and(|x| (x - f).abs() <= f.abs().max(1.0) * 1e-9)
        }),
    }
}

/// Combined date-time range (PS3.4 C.2.2.2.5.1). A stored date without a time matches when
/// the date lies in the date range.
pub fn eval_combined(c: &Combined, flat: &Flat) -> bool {
    let Some(date) = flat.get(c.date).and_then(matcher::parse_stored_date) else {
        return false;
    };
    match flat.get(c.time).and_then(matcher::parse_stored_time) {
        None => c.date_lo <= date && date <= c.date_hi,
        Some((t, _)) => {
            let k = matcher::dt_key(date, t);
            c.lo <= k && k <= c.hi
        }
    }
}

impl Catalog {
    /// Builds the catalog from every study and series record of the index.
    pub fn build(repo: &dyn MetaRepo) -> Result<Catalog, RepoError> {
        let cat = Catalog::default();
        cat.rebuild(repo)?;
        Ok(cat)
    }

    pub fn rebuild(&self, repo: &dyn MetaRepo) -> Result<(), RepoError> {
        let _serial = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        // Records are read one at a time and kept only in compact form.
        let mut by_study: HashMap<StudyUid, Vec<SeriesPrep>> = HashMap::new();
        repo.for_each_series(&mut |s| {
            by_study
                .entry(s.study.clone())
                .or_default()
                .push(SeriesPrep::new(&s));
        })?;
        let mut t = Tables::default();
        repo.for_each_study(&mut |st| {
            let series = by_study.remove(&st.study).unwrap_or_default();
            t.insert_study(&st, series);
        })?;
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = t;
        *self.records.lock().unwrap_or_else(|p| p.into_inner()) = RecordCache::default();
        Ok(())
    }

    /// Re-reads one study (and its series) from the index after a change; removes it when it
    /// is gone.
    pub fn refresh(&self, repo: &dyn MetaRepo, study: &StudyUid) -> Result<(), RepoError> {
        let _serial = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        let rec = repo.study(study)?;
        let mut series = Vec::new();
        if rec.is_some() {
            for s in repo.series_of_study(study)? {
                if let Some(r) = repo.series(&s)? {
                    series.push(SeriesPrep::new(&r));
                }
            }
        }
        {
            let mut cache = self.records.lock().unwrap_or_else(|p| p.into_inner());
            cache.studies.remove(study);
            cache.series.retain(|_, s| s.study != *study);
        }
        let mut t = self.tables.write().unwrap_or_else(|p| p.into_inner());
        match rec {
            Some(rec) => t.insert_study(&rec, series),
            None => t.remove_study(study.as_str()),
        }
        Ok(())
    }

    /// The study record, parsed once and shared until the study changes.
    pub fn study_record(
        &self,
        repo: &dyn MetaRepo,
        study: &StudyUid,
    ) -> Result<Option<Arc<StudyRecord>>, RepoError> {
        if let Some(r) = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .studies
            .get(study)
        {
            return Ok(Some(r.clone()));
        }
        // Read under the refresh lock, so a concurrent change cannot slip a stale record in.
        let _serial = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = repo.study(study)?.map(Arc::new) else {
            return Ok(None);
        };
        let mut cache = self.records.lock().unwrap_or_else(|p| p.into_inner());
        RecordCache::make_room(&mut cache.studies);
        cache.studies.insert(study.clone(), rec.clone());
        Ok(Some(rec))
    }

    /// The series record, parsed once and shared until its study changes.
    pub fn series_record(
        &self,
        repo: &dyn MetaRepo,
        series: &SeriesUid,
    ) -> Result<Option<Arc<SeriesRecord>>, RepoError> {
        if let Some(r) = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .series
            .get(series)
        {
            return Ok(Some(r.clone()));
        }
        let _serial = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = repo.series(series)?.map(Arc::new) else {
            return Ok(None);
        };
        let mut cache = self.records.lock().unwrap_or_else(|p| p.into_inner());
        RecordCache::make_room(&mut cache.series);
        cache.series.insert(series.clone(), rec.clone());
        Ok(Some(rec))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    /// (studies, series) held.
    pub fn len(&self) -> (usize, usize) {
        let t = self.read();
        (t.by_uid.len(), t.series_by_uid.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }

    /// Whether the study exists (visibility is the caller's business).
    pub fn has_study(&self, study: &StudyUid) -> bool {
        self.read().by_uid.contains_key(study.as_str())
    }

    /// Whether the series exists in that study.
    pub fn series_in_study(&self, study: &StudyUid, series: &SeriesUid) -> bool {
        let t = self.read();
        t.series_by_uid
            .get(series.as_str())
            .is_some_and(|&j| t.study_row(t.series_row(j).study).uid == *study)
    }

    /// Study search. `visible`: the studies the caller may see (`None`: all).
    pub fn studies(&self, q: &Query, visible: Option<&[StudyUid]>, cs_pn: bool) -> Page<StudyUid> {
        let t = self.read();
        let rows = t.matching_studies(q, visible, cs_pn);
        if q.order.is_empty() {
            // Default order on compact keys (newest first), the UID only for exact ties.
            let keys: Vec<(u32, u64, u32)> = rows
                .iter()
                .map(|&i| {
                    let r = t.study_row(i);
                    (r.date, r.time, i)
                })
                .collect();
            let p = page(keys, q.offset, q.limit, |a, b| {
                b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then_with(|| {
                    t.study_row(a.2)
                        .uid
                        .as_str()
                        .cmp(t.study_row(b.2).uid.as_str())
                })
            });
            return Page {
                items: p
                    .items
                    .iter()
                    .map(|k| t.study_row(k.2).uid.clone())
                    .collect(),
                total: p.total,
            };
        }
        let p = page(rows, q.offset, q.limit, |a, b| {
            let custom = if q.order.is_empty() {
                Ordering::Equal
            } else {
                let (fa, fb) = (&t.study_row(*a).flat, &t.study_row(*b).flat);
                t.cmp_custom(&q.order, (fa, fa), (fb, fb))
            };
            custom.then_with(|| t.cmp_study_default(*a, *b))
        });
        Page {
            items: p
                .items
                .iter()
                .map(|i| t.study_row(*i).uid.clone())
                .collect(),
            total: p.total,
        }
    }

    /// Series rows matching the study- and series-level keys, within `study` when given.
    fn matching_series(
        t: &Tables,
        q: &Query,
        study: Option<&StudyUid>,
        visible: Option<&[StudyUid]>,
        cs_pn: bool,
    ) -> Vec<u32> {
        let study_rows: Vec<u32> = match study {
            Some(s) => t
                .by_uid
                .get(s.as_str())
                .copied()
                .filter(|i| t.study_matches(q, t.study_row(*i), None))
                .into_iter()
                .collect(),
            None if visible.is_some() || Tables::has_level(q, Level::Study) => {
                t.matching_studies(q, visible, cs_pn)
            }
            None => {
                // No study-level restriction: every series, unless the series UID narrows it.
                let uid_list = q.predicates.iter().find_map(|p| match &p.test {
                    Test::Uids(u) if p.attr.path == [SERIES_UID] => Some(u),
                    _ => None,
                });
                let candidates: Vec<u32> = match uid_list {
                    Some(u) => u
                        .iter()
                        .filter_map(|s| t.series_by_uid.get(s.as_str()).copied())
                        .collect(),
                    None => t.series_by_uid.values().copied().collect(),
                };
                return candidates
                    .into_iter()
                    .filter(|j| t.series_matches(q, t.series_row(*j)))
                    .collect();
            }
        };
        study_rows
            .iter()
            .flat_map(|i| t.study_row(*i).series.iter().copied())
            .filter(|j| t.series_matches(q, t.series_row(*j)))
            .collect()
    }

    fn series_cmp<'a>(
        t: &'a Tables,
        q: &'a Query,
        across: bool,
    ) -> impl Fn(&u32, &u32) -> Ordering + 'a {
        move |a, b| {
            let custom = if q.order.is_empty() {
                Ordering::Equal
            } else {
                let (sa, sb) = (t.series_row(*a), t.series_row(*b));
                t.cmp_custom(
                    &q.order,
                    (&t.study_row(sa.study).flat, &sa.flat),
                    (&t.study_row(sb.study).flat, &sb.flat),
                )
            };
            custom.then_with(|| t.cmp_series_default(*a, *b, across))
        }
    }

    /// Series search, within `study` when given.
    pub fn series(
        &self,
        q: &Query,
        study: Option<&StudyUid>,
        visible: Option<&[StudyUid]>,
        cs_pn: bool,
    ) -> Page<(StudyUid, SeriesUid)> {
        let t = self.read();
        let rows = Self::matching_series(&t, q, study, visible, cs_pn);
        let p = page(
            rows,
            q.offset,
            q.limit,
            Self::series_cmp(&t, q, study.is_none()),
        );
        Page {
            items: p
                .items
                .iter()
                .map(|j| {
                    let s = t.series_row(*j);
                    (t.study_row(s.study).uid.clone(), s.uid.clone())
                })
                .collect(),
            total: p.total,
        }
    }

    /// The series an instance search reads, in result order (study- and series-level keys
    /// applied; `orderby` on study or series keys respected).
    pub fn series_for_instances(
        &self,
        q: &Query,
        study: Option<&StudyUid>,
        series: Option<&SeriesUid>,
        visible: Option<&[StudyUid]>,
        cs_pn: bool,
    ) -> Vec<SeriesRef> {
        let t = self.read();
        let mut rows = Self::matching_series(&t, q, study, visible, cs_pn);
        if let Some(se) = series {
            rows.retain(|j| t.series_row(*j).uid == *se);
        }
        rows.sort_unstable_by(Self::series_cmp(&t, q, study.is_none()));
        rows.iter()
            .map(|j| {
                let s = t.series_row(*j);
                SeriesRef {
                    study: t.study_row(s.study).uid.clone(),
                    series: s.uid.clone(),
                    instances: s.instances,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::query::QueryParams;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn study(
        uid: &str,
        name: &str,
        pid: &str,
        date: &str,
        time: &str,
        mods: &[&str],
    ) -> StudyRecord {
        StudyRecord {
            study: StudyUid::parse(uid).unwrap(),
            attrs: json!({
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
                "00100020": {"vr": "LO", "Value": [pid]},
                "00080020": {"vr": "DA", "Value": [date]},
                "00080030": {"vr": "TM", "Value": [time]},
            }),
            series_count: 1,
            instance_count: 1,
            modalities: mods
                .iter()
                .map(|m| (m.to_string(), 1))
                .collect::<BTreeMap<_, _>>(),
            patients: BTreeMap::new(),
            updated_at: 0,
        }
    }

    fn series(study: &str, uid: &str, number: i64) -> SeriesRecord {
        SeriesRecord {
            study: StudyUid::parse(study).unwrap(),
            series: SeriesUid::parse(uid).unwrap(),
            modality: Some("CT".into()),
            attrs: json!({"00200011": {"vr": "IS", "Value": [number]}}),
            instance_count: 2,
        }
    }

    fn prep(v: &[SeriesRecord]) -> Vec<SeriesPrep> {
        v.iter().map(SeriesPrep::new).collect()
    }

    fn cat() -> Catalog {
        let c = Catalog::default();
        {
            let mut t = c.tables.write().unwrap();
            t.insert_study(
                &study("1.1", "DOE^JOHN", "P1", "20200101", "101500", &["CT"]),
                prep(&[series("1.1", "1.1.2", 2), series("1.1", "1.1.1", 1)]),
            );
            t.insert_study(
                &study(
                    "1.2",
                    "Müller^Hans",
                    "P2",
                    "20210301",
                    "080000",
                    &["MR", "SR"],
                ),
                prep(&[series("1.2", "1.2.1", 1)]),
            );
            t.insert_study(
                &study("1.3", "DOE^JANE", "P3", "20200101", "230000", &["CT"]),
                vec![],
            );
        }
        c
    }

    fn find(c: &Catalog, raw: &str) -> Vec<String> {
        let q = parse(
            &QueryParams::parse(raw).unwrap(),
            Level::Study,
            &Settings {
                max_results: 100,
                case_sensitive_pn: false,
            },
        )
        .unwrap();
        c.studies(&q, None, false)
            .items
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn indexed_searches_and_order() {
        let c = cat();
        assert_eq!(find(&c, ""), ["1.2", "1.3", "1.1"]);
        assert_eq!(find(&c, "PatientName=doe*"), ["1.3", "1.1"]);
        assert_eq!(find(&c, "PatientName=MULLER^HANS"), ["1.2"]);
        assert_eq!(find(&c, "PatientName=han&fuzzymatching=true"), ["1.2"]);
        assert_eq!(
            find(&c, "PatientName=ohn&fuzzymatching=true"),
            Vec::<String>::new()
        );
        assert_eq!(find(&c, "PatientID=P1"), ["1.1"]);
        assert_eq!(find(&c, "ModalitiesInStudy=MR,XA"), ["1.2"]);
        assert_eq!(find(&c, "StudyDate=20200101"), ["1.3", "1.1"]);
        assert_eq!(
            find(&c, "StudyDate=20200101-&StudyTime=1200-"),
            ["1.2", "1.3"]
        );
        assert_eq!(find(&c, "orderby=PatientName"), ["1.3", "1.1", "1.2"]);
        assert_eq!(
            find(&c, "StudyInstanceUID=1.1,1.2&limit=1&offset=1"),
            ["1.1"]
        );
    }

    #[test]
    fn refresh_replaces_and_removes() {
        let c = cat();
        {
            let mut t = c.tables.write().unwrap();
            t.insert_study(
                &study("1.1", "ROE^RICHARD", "P1", "20190101", "", &["CT"]),
                vec![],
            );
            t.remove_study("1.3");
        }
        assert_eq!(find(&c, "PatientName=DOE*"), Vec::<String>::new());
        assert_eq!(find(&c, "PatientName=ROE*"), ["1.1"]);
        assert_eq!(c.len(), (2, 1));
    }
}

#[cfg(test)]
mod scale {
    use super::*;
    use crate::http::query::QueryParams;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// `cargo test --release --lib scale -- --ignored --nocapture`: engine-only timings.
    #[test]
    #[ignore]
    fn hundred_thousand_studies() {
        let c = Catalog::default();
        let mods = ["CT", "CT", "CT", "CT", "MR", "MR", "CR", "US", "XA", "NM"];
        let t0 = std::time::Instant::now();
        {
            let mut t = c.tables.write().unwrap();
            let mut x: u64 = 1;
            for i in 0..100_000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let date = 20150101 + (x >> 40) % 10 * 10000 + (x >> 20) % 12 * 100 + (x >> 8) % 28;
                let m = mods[(x >> 33) as usize % mods.len()];
                let rec = StudyRecord {
                    study: StudyUid::parse(&format!("2.25.{i}")).unwrap(),
                    attrs: json!({
                        "00100010": {"vr": "PN", "Value": [{"Alphabetic": format!("FAM{}^GIVEN{}", (x >> 12) % 2000, (x >> 24) % 200)}]},
                        "00100020": {"vr": "LO", "Value": [format!("PID{i}")]},
                        "00080020": {"vr": "DA", "Value": [date.to_string()]},
                        "00080030": {"vr": "TM", "Value": ["101500"]},
                        "00080050": {"vr": "SH", "Value": [format!("ACC{i}")]},
                        "00081030": {"vr": "LO", "Value": ["CT CHEST"]},
                    }),
                    series_count: 1,
                    instance_count: 10,
                    modalities: [(m.to_string(), 1)].into_iter().collect::<BTreeMap<_, _>>(),
                    patients: BTreeMap::new(),
                    updated_at: 0,
                };
                t.insert_study(&rec, vec![]);
            }
        }
        eprintln!("built in {:?}", t0.elapsed());
        for raw in [
            "ModalitiesInStudy=CT&limit=25",
            "StudyDate=20181001-20181031&limit=25",
            "PatientName=FAM12*&limit=25",
            "limit=25",
        ] {
            let q = parse(
                &QueryParams::parse(raw).unwrap(),
                Level::Study,
                &Settings {
                    max_results: 1000,
                    case_sensitive_pn: false,
                },
            )
            .unwrap();
            {
                let tb = c.tables.read().unwrap();
                let t1 = std::time::Instant::now();
                let cand = tb.study_candidates(&q, None, false);
                let t2 = t1.elapsed();
                let n = cand.as_ref().map_or(0, |c| c.0.len());
                let t3 = std::time::Instant::now();
                let rows = tb.matching_studies(&q, None, false);
                eprintln!(
                    "  candidates {n} in {t2:?}; matching {} in {:?}",
                    rows.len(),
                    t3.elapsed()
                );
            }
            let t = std::time::Instant::now();
            let mut total = 0;
            for _ in 0..20 {
                total = c.studies(&q, None, false).total;
            }
            eprintln!("{raw}: {:?} per query, {total} matches", t.elapsed() / 20);
        }
    }
}
