//! WADO-RS (PS3.18 10.4): Retrieve DICOM instances and metadata of a study, series or
//! instance. Bulk data, pixel data and frames are in [`super::bulk`].
//!
//! Everything is decided from the index before the first byte goes out: which instances, in
//! which transfer syntax, and whether some must be left out (206) or none can be sent (406).
//! Bodies are streamed: a blocking producer reads one file at a time in 1 MiB chunks into a
//! bounded channel, so memory stays flat whatever the size of the study.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::dicom::transcode::{self, Want};
use crate::error::{Error, Result};
use crate::http::media::{self, MediaRange, Offer};
use crate::http::query::QueryParams;
use crate::http::urls::base_url;
use crate::ids::{SeriesUid, SopInstanceUid, StudyUid};
use crate::search::query::{Include, Level, Query};
use crate::state::AppState;
use crate::store::Store;
use crate::store::records::{InstanceRecord, InstanceRef};

/// Bytes per chunk read from an instance file (1 MiB: fewer hand-offs between threads).
const CHUNK: usize = 1024 * 1024;
/// Chunks buffered between the reading thread and the connection.
const CHANNEL_DEPTH: usize = 4;

/// Which objects a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub study: StudyUid,
    pub series: Option<SeriesUid>,
    pub sop: Option<SopInstanceUid>,
}

/// The study, series and instance of the route's `{study}`, `{series}`, `{instance}` segments:
/// one extractor for the three levels of every WADO-RS resource.
impl actix_web::FromRequest for Target {
    type Error = Error;
    type Future = std::future::Ready<Result<Self>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let m = req.match_info();
        let bad = |what: &str, e: crate::ids::UidError| {
            Error::BadRequest(format!("invalid path: {what}: {e}"))
        };
        let parsed = (|| {
            let study =
                StudyUid::parse(m.get("study").unwrap_or_default()).map_err(|e| bad("study", e))?;
            let series = m
                .get("series")
                .map(SeriesUid::parse)
                .transpose()
                .map_err(|e| bad("series", e))?;
            let sop = m
                .get("instance")
                .map(SopInstanceUid::parse)
                .transpose()
                .map_err(|e| bad("instance", e))?;
            Ok(Target { study, series, sop })
        })();
        std::future::ready(parsed)
    }
}

impl Target {
    pub fn url(&self, base: &str) -> String {
        let mut u = format!("{base}/studies/{}", self.study);
        if let Some(se) = &self.series {
            u.push_str(&format!("/series/{se}"));
        }
        if let Some(i) = &self.sop {
            u.push_str(&format!("/instances/{i}"));
        }
        u
    }
}

pub fn instance_url(base: &str, r: &InstanceRecord) -> String {
    format!(
        "{base}/studies/{}/series/{}/instances/{}",
        r.study, r.series, r.sop
    )
}

/// The `/dicom-web` base for absolute URLs in this response.
pub fn dicomweb_base(req: &HttpRequest, state: &AppState) -> String {
    format!("{}/dicom-web", base_url(req, &state.urls))
}

/// The series of a target in result order (SeriesNumber, then UID).
fn series_plan(state: &AppState, t: &Target) -> Vec<crate::search::catalog::SeriesRef> {
    let q = Query {
        level: Level::Instance,
        predicates: Vec::new(),
        combined: Vec::new(),
        keys: Vec::new(),
        include: Include::Tags(Vec::new()),
        order: Vec::new(),
        limit: usize::MAX,
        offset: 0,
        fuzzy: false,
    };
    state
        .store
        .catalog
        .series_for_instances(&q, Some(&t.study), t.series.as_ref(), None, false)
}

/// The instances a target addresses, in series then instance order, after the access policy:
/// a study the caller may not see is a 404, exactly like one that does not exist. Blocking.
pub fn locate(state: &AppState, principal: &Principal, t: &Target) -> Result<Vec<InstanceRecord>> {
    let not_found = || Error::NotFound(format!("{} not found", describe(t)));
    if !access::can_see_study(state, principal, &t.study)? {
        return Err(not_found());
    }
    let repo = state.store.repo.as_ref();
    if let Some(sop) = &t.sop {
        let rec = repo.instance(sop)?.ok_or_else(not_found)?;
        if rec.study != t.study || t.series.as_ref().is_some_and(|s| *s != rec.series) {
            return Err(not_found());
        }
        return Ok(vec![rec]);
    }
    let plan = series_plan(state, t);
    let mut out = Vec::new();
    for s in &plan {
        out.extend(crate::search::series_instances(repo, &s.series)?);
    }
    if out.is_empty() {
        return Err(not_found());
    }
    Ok(out)
}

/// The one instance a target naming a SOP Instance UID addresses, after the access policy
/// (404 otherwise, never an empty answer); the index read runs on the blocking pool.
pub async fn locate_instance(
    state: &web::Data<AppState>,
    principal: &Principal,
    t: &Target,
) -> Result<InstanceRecord> {
    debug_assert!(t.sop.is_some(), "locate_instance needs a SOP Instance UID");
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    let mut recs = web::block(move || locate(&st, &who, &target)).await??;
    Ok(recs.swap_remove(0))
}

/// Like [`locate`], for responses that need only identities and versions (metadata): reads
/// [`InstanceRef`]s, same order, same access policy. Blocking.
pub fn locate_refs(
    state: &AppState,
    principal: &Principal,
    t: &Target,
) -> Result<Vec<InstanceRef>> {
    let not_found = || Error::NotFound(format!("{} not found", describe(t)));
    if !access::can_see_study(state, principal, &t.study)? {
        return Err(not_found());
    }
    let repo = state.store.repo.as_ref();
    if let Some(sop) = &t.sop {
        let r = repo.instance_ref(sop)?.ok_or_else(not_found)?;
        if r.study != t.study || t.series.as_ref().is_some_and(|s| *s != r.series) {
            return Err(not_found());
        }
        return Ok(vec![r]);
    }
    let plan = series_plan(state, t);
    let mut out = Vec::new();
    for s in &plan {
        let mut refs = Vec::new();
        for sop in repo.instances_of_series(&s.series)? {
            if let Some(r) = repo.instance_ref(&sop)? {
                refs.push(r);
            }
        }
        refs.sort_by(|a, b| {
            match (a.instance_number(), b.instance_number()) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then_with(|| a.sop.as_str().cmp(b.sop.as_str()))
        });
        out.extend(refs);
    }
    if out.is_empty() {
        return Err(not_found());
    }
    Ok(out)
}

/// The URL of an instance from its UIDs.
pub fn ref_url(base: &str, r: &InstanceRef) -> String {
    format!(
        "{base}/studies/{}/series/{}/instances/{}",
        r.study, r.series, r.sop
    )
}

/// Audits a retrieve of these studies.
pub fn audit_studies(
    state: &AppState,
    principal: &Principal,
    what: &str,
    mut studies: Vec<String>,
    instances: usize,
) {
    let mut ev = principal.event(event::RETRIEVE, what, Outcome::Success);
    studies.sort();
    studies.dedup();
    ev.studies = studies;
    ev.detail = json!({"instances": instances});
    state.audit.record(ev);
}

fn describe(t: &Target) -> String {
    match (&t.series, &t.sop) {
        (_, Some(i)) => format!("instance {i}"),
        (Some(s), None) => format!("series {s}"),
        (None, None) => format!("study {}", t.study),
    }
}

/// Media types of DICOM retrieves and of rendered images may not be mixed in one request
/// (PS3.18 8.7.1).
pub fn reject_mixed(ranges: &[MediaRange]) -> Result<()> {
    let dicomish = |r: &MediaRange| {
        let e = r.essence();
        e == "application/dicom"
            || e == "application/zip"
            || (e == "multipart/related"
                && r.param("type")
                    .is_some_and(|t| t.eq_ignore_ascii_case("application/dicom")))
    };
    let rendered = |r: &MediaRange| {
        (r.type_ == "image" || r.type_ == "video")
            || (e_eq(r, "multipart/related")
                && r.param("type").is_some_and(|t| {
                    let t = t.to_ascii_lowercase();
                    t.starts_with("image/") || t.starts_with("video/")
                }))
    };
    if ranges.iter().any(dicomish) && ranges.iter().any(rendered) {
        return Err(Error::BadRequest(
            "Accept mixes DICOM and rendered media types; ask for one kind per request".into(),
        ));
    }
    Ok(())
}

fn e_eq(r: &MediaRange, essence: &str) -> bool {
    r.essence() == essence
}

/// Fails closed when the audit trail cannot be written.
pub fn require_audit(state: &AppState) -> Result<()> {
    if state.audit.healthy() {
        Ok(())
    } else {
        Err(Error::Unavailable(
            "the audit trail cannot be written; try again later".into(),
        ))
    }
}

pub fn audit_retrieve(
    state: &AppState,
    principal: &Principal,
    what: &str,
    recs: &[InstanceRecord],
) {
    let studies = recs.iter().map(|r| r.study.to_string()).collect();
    audit_studies(state, principal, what, studies, recs.len());
}

pub fn new_boundary() -> String {
    format!("lightbox-{}", crate::auth::model::Id::random().as_str())
}

/// One part of a multipart body: headers, then the content.
pub struct Part {
    pub headers: String,
    pub body: PartBody,
}

pub enum PartBody {
    /// A whole file, read in chunks.
    File(PathBuf),
    /// A file converted to another transfer syntax when its turn comes.
    Convert(PathBuf, String),
    /// Byte ranges of a file, concatenated, read in chunks (e.g. a video stream's fragments).
    Ranges(PathBuf, Vec<crate::dicom::walk::Fragment>),
    /// Bytes produced by a blocking closure when the part's turn comes.
    Lazy(Box<dyn FnOnce() -> std::result::Result<Vec<u8>, String> + Send>),
    Ready(Bytes),
}

/// Streams parts as `multipart/related` (or one bare body when `boundary` is `None`), reading
/// on a blocking thread into a bounded channel.
pub fn stream_parts(
    parts: Vec<Part>,
    boundary: Option<String>,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, Error>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let send = |b: std::result::Result<Bytes, Error>| tx.blocking_send(b).is_ok();
        for part in parts {
            if let Some(b) = &boundary
                && !send(Ok(Bytes::from(format!("--{b}\r\n{}\r\n", part.headers))))
            {
                return;
            }
            let ok = match part.body {
                PartBody::Ready(bytes) => send(Ok(bytes)),
                PartBody::File(path) => match std::fs::File::open(&path) {
                    Ok(mut f) => loop {
                        // `read_to_end` into spare capacity: no zeroing of each chunk.
                        let mut buf = Vec::with_capacity(CHUNK);
                        match f.by_ref().take(CHUNK as u64).read_to_end(&mut buf) {
                            Ok(0) => break true,
                            Ok(_) => {
                                if !send(Ok(Bytes::from(buf))) {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::error!(file = %path.display(), error = %e, "read failed mid-response");
                                let _ = send(Err(Error::internal(e)));
                                return;
                            }
                        }
                    },
                    Err(e) => {
                        // Deleted since the response started: the body is cut short.
                        tracing::error!(file = %path.display(), error = %e, "instance file vanished mid-response");
                        let _ = send(Err(Error::internal(e)));
                        return;
                    }
                },
                PartBody::Ranges(path, ranges) => {
                    use std::os::unix::fs::FileExt;
                    let Ok(f) = std::fs::File::open(&path) else {
                        tracing::error!(file = %path.display(), "instance file vanished mid-response");
                        let _ = send(Err(Error::internal("file vanished")));
                        return;
                    };
                    for r in ranges {
                        let mut at = 0u64;
                        while at < r.length {
                            let n = (r.length - at).min(CHUNK as u64) as usize;
                            let mut buf = vec![0u8; n];
                            if let Err(e) = f.read_exact_at(&mut buf, r.offset + at) {
                                tracing::error!(file = %path.display(), error = %e, "read failed mid-response");
                                let _ = send(Err(Error::internal(e)));
                                return;
                            }
                            if !send(Ok(Bytes::from(buf))) {
                                return;
                            }
                            at += n as u64;
                        }
                    }
                    true
                }
                PartBody::Convert(path, ts) => match transcode::convert(&path, &ts) {
                    Ok(v) => send(Ok(Bytes::from(v))),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "conversion failed mid-response");
                        let _ = send(Err(Error::Internal { detail: e }));
                        return;
                    }
                },
                PartBody::Lazy(f) => match f() {
                    Ok(v) => send(Ok(Bytes::from(v))),
                    Err(e) => {
                        tracing::error!(error = %e, "part failed mid-response");
                        let _ = send(Err(Error::Internal { detail: e }));
                        return;
                    }
                },
            };
            if !ok {
                return;
            }
            if boundary.is_some() && !send(Ok(Bytes::from_static(b"\r\n"))) {
                return;
            }
        }
        if let Some(b) = &boundary {
            let _ = send(Ok(Bytes::from(format!("--{b}--\r\n"))));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// What an instance retrieve can answer, in server preference.
const INSTANCE_OFFERS: &[Offer] = &[
    Offer::multipart("application/dicom"),
    Offer::new("application/dicom"),
    Offer::new("application/zip"),
];
/// A study or series: a single-part `application/dicom` body holds one instance only.
const SET_OFFERS: &[Offer] = &[
    Offer::multipart("application/dicom"),
    Offer::new("application/zip"),
];

/// `GET /studies/{study}[/series/{series}[/instances/{instance}]]`: multipart DICOM, a single
/// `application/dicom` body (one instance), or a ZIP of Part 10 files ([`super::zip`]), with
/// the same transfer-syntax plan for all three.
pub async fn retrieve(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept"])?;
    let ranges = media::requested_ranges(&req, &params)?;
    reject_mixed(&ranges)?;
    require_audit(&state)?;
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    let recs = web::block(move || locate(&st, &who, &target)).await??;
    let offers = if t.sop.is_some() {
        INSTANCE_OFFERS
    } else {
        SET_OFFERS
    };
    let deliverable = |r: &MediaRange| {
        let want = Want::from_param(r.transfer_syntax());
        recs.iter()
            .any(|rec| transcode::plan(&rec.transfer_syntax, &want).is_some())
    };
    let chosen = match media::negotiate_with(&ranges, offers, |_, r| deliverable(r)) {
        Ok(n) => n,
        Err(_) if media::negotiate(&ranges, offers).is_ok() => {
            let mut stored: Vec<&str> = recs.iter().map(|r| r.transfer_syntax.as_str()).collect();
            stored.sort();
            stored.dedup();
            return Err(Error::NotAcceptable(format!(
                "none of the requested instances is available in the requested transfer syntax; \
                 stored as: {}; convertible to: {}",
                stored.join(", "),
                transcode::TARGETS.join(", ")
            )));
        }
        Err(e) => return Err(e),
    };
    let want = Want::from_param(chosen.range.transfer_syntax());
    let as_zip = chosen.offer.media_type == "application/zip";
    let single = chosen.offer.type_param.is_none();
    let base = dicomweb_base(&req, &state);
    let mut planned = Vec::new();
    let mut omitted = 0usize;
    for rec in &recs {
        match transcode::plan(&rec.transfer_syntax, &want) {
            Some(ts) => planned.push((rec, ts)),
            None => omitted += 1,
        }
    }
    audit_retrieve(
        &state,
        &principal,
        if as_zip { "retrieve-zip" } else { "retrieve" },
        &planned
            .iter()
            .map(|(r, _)| (*r).clone())
            .collect::<Vec<_>>(),
    );
    let store: Arc<Store> = state.store.clone();
    let status = if omitted > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = HttpResponse::build(status);
    if omitted > 0 {
        resp.insert_header((
            header::WARNING,
            format!(
                "299 {base}: {omitted} of {} instances were left out: not available in the requested transfer syntax",
                recs.len()
            ),
        ));
    }
    if as_zip {
        let entries = planned
            .iter()
            .map(|(rec, ts)| super::zip::ZipEntry::new(rec, store.blobs.path(&rec.blob), ts))
            .collect();
        let (level, uid) = match (&t.series, &t.sop) {
            (_, Some(i)) => ("instance", i.as_str()),
            (Some(s), None) => ("series", s.as_str()),
            (None, None) => ("study", t.study.as_str()),
        };
        return Ok(resp
            .insert_header((
                header::CONTENT_DISPOSITION,
                super::zip::content_disposition(level, uid),
            ))
            .content_type("application/zip")
            .streaming(super::zip::stream(entries)));
    }
    let parts: Vec<Part> = planned
        .iter()
        .map(|(rec, ts)| {
            let path = store.blobs.path(&rec.blob);
            let convert = *ts != rec.transfer_syntax;
            let mut headers = format!(
                "Content-Type: application/dicom; transfer-syntax={ts}\r\nContent-Location: {}\r\n",
                instance_url(&base, rec)
            );
            if !convert {
                headers.push_str(&format!("Content-Length: {}\r\n", rec.size));
            }
            Part {
                headers,
                body: if convert {
                    PartBody::Convert(path, ts.clone())
                } else {
                    PartBody::File(path)
                },
            }
        })
        .collect();
    if single {
        let (rec, ts) = &planned[0];
        resp.insert_header((header::CONTENT_LOCATION, instance_url(&base, rec)));
        if *ts == rec.transfer_syntax {
            resp.no_chunking(rec.size);
        }
        return Ok(resp
            .content_type(format!("application/dicom; transfer-syntax={ts}"))
            .streaming(stream_parts(parts, None)));
    }
    let boundary = new_boundary();
    Ok(resp
        .content_type(format!(
            "multipart/related; type=\"application/dicom\"; boundary={boundary}"
        ))
        .streaming(stream_parts(parts, Some(boundary))))
}
