//! QIDO-RS: Search Transaction (PS3.18 10.6). Thin routes: parse ([`crate::search::query`]),
//! scope (the access policy's visible studies, applied inside the query), run against the
//! catalog, then write each result from the index records: the required return attributes of
//! the level (Tables 10.6.3-3/4/5), the matching keys sent, `includefield`, and the computed
//! attributes (counts, ModalitiesInStudy, RetrieveURL, InstanceAvailability).
//!
//! Extensions, documented in the README: `orderby`; DICOM JSON numbers for IS counts.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use dicom_core::Tag;
use serde_json::{Map, Value as Json, json};

use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::error::{Error, Result};
use crate::http::media::{self, Offer};
use crate::http::query::QueryParams;
use crate::http::urls::base_url;
use crate::ids::{SeriesUid, SopInstanceUid, StudyUid};
use crate::search::catalog::{Catalog, Page};
use crate::search::query::{self, Include, Level, Query};
use crate::state::AppState;
use crate::store::MetaRepo;
use crate::store::records::{InstanceRecord, SeriesRecord, StudyRecord};

const OFFERS: &[Offer] = &[
    Offer::new("application/dicom+json"),
    Offer::new("application/json"),
    Offer::multipart("application/dicom+xml"),
];

/// Required study return attributes copied from the index (Table 10.6.3-3).
const STUDY_RETURN: &[&str] = &[
    "00080020", "00080030", "00080050", "00080090", "00080201", "00100010", "00100020", "00100030",
    "00100040", "0020000D", "00200010",
];
/// Required series return attributes (Table 10.6.3-4).
const SERIES_RETURN: &[&str] = &[
    "00080060", "00080201", "0008103E", "0020000E", "00200011", "00400244", "00400245", "00400275",
];
/// Required instance return attributes (Table 10.6.3-5).
const INSTANCE_RETURN: &[&str] = &[
    "00080016", "00080018", "00080201", "00200013", "00280010", "00280011", "00280100", "00280008",
];

/// What a search route targets.
#[derive(Debug, Clone)]
enum Target {
    Studies,
    Series(Option<StudyUid>),
    Instances(Option<StudyUid>, Option<SeriesUid>),
}

pub async fn studies(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    search(req, principal, params, state, Target::Studies).await
}

pub async fn all_series(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    search(req, principal, params, state, Target::Series(None)).await
}

pub async fn study_series(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    path: web::Path<StudyUid>,
) -> Result<HttpResponse> {
    let study = path.into_inner();
    search(req, principal, params, state, Target::Series(Some(study))).await
}

pub async fn all_instances(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    search(req, principal, params, state, Target::Instances(None, None)).await
}

pub async fn study_instances(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    path: web::Path<StudyUid>,
) -> Result<HttpResponse> {
    let study = path.into_inner();
    let target = Target::Instances(Some(study), None);
    search(req, principal, params, state, target).await
}

pub async fn series_instances(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    path: web::Path<(StudyUid, SeriesUid)>,
) -> Result<HttpResponse> {
    let (study, series) = path.into_inner();
    let target = Target::Instances(Some(study), Some(series));
    search(req, principal, params, state, target).await
}

/// The `charset` parameter (PS3.18 8.3.3.2): responses are always UTF-8.
fn check_charset(params: &QueryParams) -> Result<()> {
    for v in params.get_all("charset") {
        let ok = v.split(',').any(|c| {
            let c = c.split(';').next().unwrap_or("").trim();
            c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("utf8") || c == "*"
        });
        if !ok {
            return Err(Error::NotAcceptable(format!(
                "charset '{v}' is not available; responses are UTF-8 (ISO_IR 192)"
            )));
        }
    }
    Ok(())
}

async fn search(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    target: Target,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    let ranges = media::requested_ranges(&req, &params)?;
    let chosen = media::negotiate(&ranges, OFFERS)?.index;
    check_charset(&params)?;
    let level = match target {
        Target::Studies => Level::Study,
        Target::Series(_) => Level::Series,
        Target::Instances(..) => Level::Instance,
    };
    let settings = query::Settings {
        max_results: state.config.qido_max_results,
        case_sensitive_pn: state.config.qido_case_sensitive_pn,
    };
    let q = query::parse(&params, level, &settings)?;
    query::check_private_creators(&q.include)?;
    if !state.audit.healthy() {
        // Reads of patient data fail closed when they cannot be audited.
        return Err(Error::Unavailable(
            "the audit trail cannot be written; try again later".into(),
        ));
    }
    let base = format!("{}/dicom-web", base_url(&req, &state.urls));
    let st = state.clone();
    let who = principal.clone();
    let base2 = base.clone();
    let offset = q.offset;
    let (results, total, studies) =
        web::block(move || run(&st, &who, &q, &target, &base2)).await??;
    let shown = results.len();
    let remaining = total.saturating_sub(offset.saturating_add(shown));

    let mut ev = principal.event(event::QUERY, "search", Outcome::Success);
    ev.studies = studies;
    ev.detail = json!({
        "resource": req.path(),
        "query": req.query_string(),
        "results": shown,
    });
    state.audit.record(ev);

    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::VARY, "Accept"));
    if remaining > 0 {
        resp.insert_header((
            header::WARNING,
            format!("299 {base}: There are {remaining} additional results that can be requested"),
        ));
    }
    Ok(match chosen {
        2 => {
            let boundary = format!("lightbox-{}", crate::auth::model::Id::random().as_str());
            let mut body = String::new();
            for r in &results {
                body.push_str(&format!(
                    "--{boundary}\r\nContent-Type: application/dicom+xml; charset=utf-8\r\n\r\n"
                ));
                body.push_str(&crate::dicomweb::xml::to_native_xml(r));
                body.push_str("\r\n");
            }
            body.push_str(&format!("--{boundary}--\r\n"));
            resp.content_type(format!(
                "multipart/related; type=\"application/dicom+xml\"; boundary={boundary}"
            ))
            .body(body)
        }
        1 => resp
            .content_type("application/json")
            .body(Json::Array(results).to_string()),
        _ => resp
            .content_type("application/dicom+json")
            .body(Json::Array(results).to_string()),
    })
}

type Found = (Vec<Json>, usize, Vec<String>);

/// Runs the search and writes the results. Blocking.
fn run(st: &AppState, who: &Principal, q: &Query, target: &Target, base: &str) -> Result<Found> {
    let repo = st.store.repo.as_ref();
    let cat = &st.store.catalog;
    let visible = access::visible_studies(st, who)?;
    let cs = st.config.qido_case_sensitive_pn;
    // A study (or series) in the path must exist and be visible; both refusals read the same.
    let path_study = match target {
        Target::Series(s) | Target::Instances(s, _) => s.clone(),
        Target::Studies => None,
    };
    if let Some(study) = &path_study {
        let seen = visible
            .as_ref()
            .is_none_or(|v| v.binary_search(study).is_ok());
        if !seen || !cat.has_study(study) {
            return Err(Error::NotFound(format!("study {study} not found")));
        }
        if let Target::Instances(_, Some(series)) = target
            && !cat.series_in_study(study, series)
        {
            return Err(Error::NotFound(format!(
                "series {series} not found in study {study}"
            )));
        }
    }
    let visible = visible.as_deref();
    let mut w = Writer {
        repo,
        q,
        base,
        catalog: cat,
        studies: HashMap::new(),
        series: HashMap::new(),
    };
    let mut out = Vec::new();
    let mut audit_studies: Vec<String> = Vec::new();
    let total = match target {
        Target::Studies => {
            let Page { items, total } = cat.studies(q, visible, cs);
            for s in &items {
                if let Some(obj) = w.study_result(s)? {
                    out.push(obj);
                    audit_studies.push(s.to_string());
                }
            }
            total
        }
        Target::Series(study) => {
            let Page { items, total } = cat.series(q, study.as_ref(), visible, cs);
            for (s, se) in &items {
                if let Some(obj) = w.series_result(s, se, study.is_none())? {
                    out.push(obj);
                    audit_studies.push(s.to_string());
                }
            }
            total
        }
        Target::Instances(study, series) => {
            let plan = cat.series_for_instances(q, study.as_ref(), series.as_ref(), visible, cs);
            let Page { items, total } = crate::search::instances(repo, q, &plan)?;
            for rec in &items {
                let obj = w.instance_result(rec, study.is_none(), series.is_none())?;
                out.push(obj);
                audit_studies.push(rec.study.to_string());
            }
            total
        }
    };
    audit_studies.sort();
    audit_studies.dedup();
    Ok((out, total, audit_studies))
}

/// Writes result objects from index records, caching study and series records per request.
struct Writer<'a> {
    repo: &'a dyn MetaRepo,
    q: &'a Query,
    base: &'a str,
    catalog: &'a Catalog,
    studies: HashMap<StudyUid, Option<Arc<StudyRecord>>>,
    series: HashMap<SeriesUid, Option<Arc<SeriesRecord>>>,
}

fn key(t: Tag) -> String {
    format!("{:04X}{:04X}", t.group(), t.element())
}

fn cs(values: Vec<Json>) -> Json {
    if values.is_empty() {
        json!({"vr": "CS"})
    } else {
        json!({"vr": "CS", "Value": values})
    }
}

/// Copies `tags` (8-hex keys) that `attrs` holds into `out`, never SpecificCharacterSet: the
/// index holds every text already decoded, and the response says UTF-8 when needed.
fn copy(attrs: &Json, tags: impl IntoIterator<Item = String>, out: &mut Map<String, Json>) {
    let Json::Object(m) = attrs else { return };
    for t in tags {
        if t == "00080005" {
            continue;
        }
        if let Some(v) = m.get(&t) {
            out.insert(t, v.clone());
        }
    }
}

fn all_keys(attrs: &Json) -> Vec<String> {
    match attrs {
        Json::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn is_ascii_json(v: &Json) -> bool {
    match v {
        Json::String(s) => s.is_ascii(),
        Json::Array(a) => a.iter().all(is_ascii_json),
        Json::Object(m) => m.values().all(is_ascii_json),
        _ => true,
    }
}

impl Writer<'_> {
    fn study(&mut self, s: &StudyUid) -> Result<Option<Arc<StudyRecord>>> {
        if let Some(r) = self.studies.get(s) {
            return Ok(r.clone());
        }
        let r = self.catalog.study_record(self.repo, s)?;
        self.studies.insert(s.clone(), r.clone());
        Ok(r)
    }

    fn series_rec(&mut self, s: &SeriesUid) -> Result<Option<Arc<SeriesRecord>>> {
        if let Some(r) = self.series.get(s) {
            return Ok(r.clone());
        }
        let r = self.catalog.series_record(self.repo, s)?;
        self.series.insert(s.clone(), r.clone());
        Ok(r)
    }

    /// Tags requested at `level`: matching keys and includefields held by that level's index.
    fn requested(&self, level: Level) -> Vec<String> {
        let mut tags: Vec<String> = self
            .q
            .keys
            .iter()
            .filter(|t| query::indexed_level(**t) == Some(level))
            .map(|t| key(*t))
            .collect();
        if let Include::Tags(inc) = &self.q.include {
            tags.extend(
                inc.iter()
                    .filter(|t| query::indexed_level(**t) == Some(level))
                    .map(|t| key(*t)),
            );
        }
        tags
    }

    /// includefields that no level of this result holds: read from stored metadata.
    fn metadata_tags(&self, levels: &[Level], result_level: Level) -> Vec<String> {
        let Include::Tags(inc) = &self.q.include else {
            return Vec::new();
        };
        inc.iter()
            .filter(|t| match query::indexed_level(**t) {
                None => **t != query::SPECIFIC_CHARACTER_SET,
                // A lower level's attribute at study level comes from the first instance; at
                // series level instance attributes are not returned (PS3.18 10.6.3.3.2).
                Some(l) => !levels.contains(&l) && result_level == Level::Study,
            })
            .map(|t| key(*t))
            .collect()
    }

    fn first_instance(
        &self,
        study: &StudyUid,
        series: Option<&SeriesUid>,
    ) -> Result<Option<SopInstanceUid>> {
        let series = match series {
            Some(s) => Some(s.clone()),
            None => self.repo.series_of_study(study)?.into_iter().next(),
        };
        let Some(series) = series else {
            return Ok(None);
        };
        Ok(self.repo.instances_of_series(&series)?.into_iter().next())
    }

    fn add_metadata(
        &self,
        sop: Option<SopInstanceUid>,
        tags: Vec<String>,
        out: &mut Map<String, Json>,
    ) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let Some(sop) = sop else { return Ok(()) };
        if let Some(Json::Object(meta)) = self.repo.metadata(&sop)? {
            for t in tags {
                // Bulk data is not part of a search result.
                if let Some(v) = meta.get(&t).filter(|v| v.get("BulkDataURI").is_none()) {
                    out.entry(t).or_insert_with(|| v.clone());
                }
            }
        }
        Ok(())
    }

    fn study_part(
        &mut self,
        s: &StudyUid,
        full: bool,
        out: &mut Map<String, Json>,
    ) -> Result<bool> {
        let Some(rec) = self.study(s)? else {
            return Ok(false);
        };
        let mut tags = self.requested(Level::Study);
        if full {
            tags.extend(STUDY_RETURN.iter().map(|t| t.to_string()));
            if self.q.include == Include::All {
                tags.extend(all_keys(&rec.attrs));
            }
        }
        copy(&rec.attrs, tags, out);
        let wants = |t: Tag| {
            full || self.q.keys.contains(&t)
                || matches!(&self.q.include, Include::Tags(i) if i.contains(&t))
        };
        if full {
            out.insert("00080056".into(), cs(vec![json!("ONLINE")]));
            out.insert(
                "00081190".into(),
                json!({"vr": "UR", "Value": [format!("{}/studies/{s}", self.base)]}),
            );
        }
        if wants(query::MODALITIES_IN_STUDY) {
            out.insert(
                "00080061".into(),
                cs(rec.modalities.keys().map(|m| json!(m)).collect()),
            );
        }
        if wants(query::STUDY_RELATED_SERIES) {
            out.insert(
                "00201206".into(),
                json!({"vr": "IS", "Value": [rec.series_count]}),
            );
        }
        if wants(query::STUDY_RELATED_INSTANCES) {
            out.insert(
                "00201208".into(),
                json!({"vr": "IS", "Value": [rec.instance_count]}),
            );
        }
        Ok(true)
    }

    fn series_part(
        &mut self,
        s: &StudyUid,
        se: &SeriesUid,
        full: bool,
        out: &mut Map<String, Json>,
    ) -> Result<bool> {
        let Some(rec) = self.series_rec(se)? else {
            return Ok(false);
        };
        let mut tags = self.requested(Level::Series);
        if full {
            tags.extend(SERIES_RETURN.iter().map(|t| t.to_string()));
            if self.q.include == Include::All {
                tags.extend(all_keys(&rec.attrs));
            }
        }
        copy(&rec.attrs, tags, out);
        let wants = full
            || self.q.keys.contains(&query::SERIES_RELATED_INSTANCES)
            || matches!(&self.q.include, Include::Tags(i) if i.contains(&query::SERIES_RELATED_INSTANCES));
        if wants {
            out.insert(
                "00201209".into(),
                json!({"vr": "IS", "Value": [rec.instance_count]}),
            );
        }
        if full {
            out.insert(
                "00081190".into(),
                json!({"vr": "UR", "Value": [format!("{}/studies/{s}/series/{se}", self.base)]}),
            );
        }
        Ok(true)
    }

    /// Adds SpecificCharacterSet when a value is not ASCII, and puts attributes in tag order.
    fn finish(mut out: Map<String, Json>) -> Json {
        out.remove("00080005");
        if !out.values().all(is_ascii_json) {
            out.insert("00080005".into(), cs(vec![json!("ISO_IR 192")]));
        }
        out.sort_keys();
        Json::Object(out)
    }

    fn study_result(&mut self, s: &StudyUid) -> Result<Option<Json>> {
        let mut out = Map::new();
        if !self.study_part(s, true, &mut out)? {
            return Ok(None);
        }
        let meta = self.metadata_tags(&[Level::Study], Level::Study);
        if !meta.is_empty() {
            let first = self.first_instance(s, None)?;
            self.add_metadata(first, meta, &mut out)?;
        }
        Ok(Some(Self::finish(out)))
    }

    fn series_result(
        &mut self,
        s: &StudyUid,
        se: &SeriesUid,
        all_series: bool,
    ) -> Result<Option<Json>> {
        let mut out = Map::new();
        // Study attributes first: the series' own RetrieveURL then wins.
        self.study_part(s, all_series, &mut out)?;
        if !self.series_part(s, se, true, &mut out)? {
            return Ok(None);
        }
        let meta = self.metadata_tags(&[Level::Study, Level::Series], Level::Series);
        if !meta.is_empty() {
            let first = self.first_instance(s, Some(se))?;
            self.add_metadata(first, meta, &mut out)?;
        }
        Ok(Some(Self::finish(out)))
    }

    fn instance_result(
        &mut self,
        rec: &InstanceRecord,
        all: bool,
        study_wide: bool,
    ) -> Result<Json> {
        let mut out = Map::new();
        self.study_part(&rec.study, all, &mut out)?;
        self.series_part(&rec.study, &rec.series, all || study_wide, &mut out)?;
        let mut tags = self.requested(Level::Instance);
        tags.extend(INSTANCE_RETURN.iter().map(|t| t.to_string()));
        if self.q.include == Include::All {
            tags.extend(all_keys(&rec.attrs));
        }
        copy(&rec.attrs, tags, &mut out);
        out.insert(
            "00080016".into(),
            json!({"vr": "UI", "Value": [rec.sop_class.as_str()]}),
        );
        out.insert(
            "00080018".into(),
            json!({"vr": "UI", "Value": [rec.sop.as_str()]}),
        );
        out.insert("00080056".into(), cs(vec![json!("ONLINE")]));
        out.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [format!(
                "{}/studies/{}/series/{}/instances/{}",
                self.base, rec.study, rec.series, rec.sop
            )]}),
        );
        let meta = self.metadata_tags(
            &[Level::Study, Level::Series, Level::Instance],
            Level::Instance,
        );
        self.add_metadata(Some(rec.sop.clone()), meta, &mut out)?;
        Ok(Self::finish(out))
    }
}
