//! STOW-RS (PS3.18 10.5, Annex I): `POST /studies` and `POST /studies/{study}`.
//!
//! Parts stream to temp files (memory stays bounded whatever the request size), each part is
//! staged (preamble fixed, hashed, parsed) on a blocking thread while the next one arrives,
//! then the whole batch is committed with one round of fsyncs and one index flush
//! (see `Store::commit_batch`). One bad part never stops the good ones.

use std::path::PathBuf;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::{Map, Value as Json, json};

use crate::access::{self, Action, Principal, StoreScope};
use crate::audit::{Outcome, event};
use crate::dicom::parse::{Failure, reason};
use crate::error::{Error, Result};
use crate::http::media::{self, MediaRange, Offer};
use crate::http::multipart::{MultipartError, MultipartReader};
use crate::http::query::QueryParams;
use crate::http::urls::base_url;
use crate::ids::StudyUid;
use crate::state::AppState;
use crate::store::{Staged, Stored};

/// Response media types, server preference first (PS3.18 10.5.3: JSON is the default).
const RESPONSE_OFFERS: &[Offer] = &[
    Offer {
        media_type: "application/dicom+json",
        type_param: None,
    },
    Offer {
        media_type: "application/json",
        type_param: None,
    },
    Offer {
        media_type: "application/dicom+xml",
        type_param: None,
    },
];

/// Removes every temp file it knows of when dropped, e.g. when the client aborts and actix
/// drops the handler future.
#[derive(Default)]
struct TempGuard(Vec<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum BodyKind {
    Multipart { boundary: String },
    Single,
}

/// Decide from Content-Type what the body is; 415 names what is supported.
fn body_kind(req: &HttpRequest) -> Result<BodyKind> {
    const SUPPORTED: &str =
        "supported request types: multipart/related; type=\"application/dicom\", application/dicom";
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| Error::UnsupportedMediaType(format!("no Content-Type; {SUPPORTED}")))?
        .to_str()
        .map_err(|_| {
            Error::UnsupportedMediaType(format!("unreadable Content-Type; {SUPPORTED}"))
        })?;
    let range = MediaRange::parse(ct).map_err(|_| {
        Error::UnsupportedMediaType(format!("malformed Content-Type {ct:?}; {SUPPORTED}"))
    })?;
    match range.essence().as_str() {
        "multipart/related" => {
            if let Some(t) = range.param("type") {
                let t = t.to_ascii_lowercase();
                if t == "application/dicom+json" || t == "application/dicom+xml" {
                    return Err(Error::UnsupportedMediaType(format!(
                        "{t} with bulk data parts is not supported yet; {SUPPORTED}"
                    )));
                }
                if t != "application/dicom" {
                    return Err(Error::UnsupportedMediaType(format!(
                        "multipart/related type {t:?} is not supported; {SUPPORTED}"
                    )));
                }
            }
            let boundary = range
                .param("boundary")
                .filter(|b| !b.is_empty() && b.len() <= 70)
                .ok_or_else(|| {
                    Error::BadRequest("multipart/related Content-Type has no valid boundary".into())
                })?
                .to_owned();
            Ok(BodyKind::Multipart { boundary })
        }
        "application/dicom" => Ok(BodyKind::Single),
        other => Err(Error::UnsupportedMediaType(format!(
            "Content-Type {other} is not supported; {SUPPORTED}"
        ))),
    }
}

/// Writes one part to a temp file in 1 MiB blocks, hashing the bytes after the 128-byte
/// preamble on the way (so staging need not read the file again). File writes and hashing run
/// on the blocking pool, never on the executor.
struct PartWriter {
    path: PathBuf,
    sink: Option<(std::fs::File, blake3::Hasher)>,
    buf: Vec<u8>,
    /// Bytes written so far.
    written: u64,
}

const PART_BLOCK: usize = 1 << 20;

impl PartWriter {
    async fn create(state: &AppState, guard: &mut TempGuard) -> Result<Self> {
        let blobs = state.store.blobs.clone();
        let (path, file) = web::block(move || blobs.create_temp()).await??;
        guard.0.push(path.clone());
        Ok(PartWriter {
            path,
            sink: Some((file, blake3::Hasher::new())),
            buf: Vec::with_capacity(PART_BLOCK),
            written: 0,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= PART_BLOCK {
            self.flush_block().await?;
        }
        Ok(())
    }

    async fn flush_block(&mut self) -> Result<()> {
        let (mut file, mut hasher) = self
            .sink
            .take()
            .ok_or_else(|| Error::internal("part writer used after a failed write"))?;
        let buf = std::mem::take(&mut self.buf);
        let start = self.written;
        let (file, hasher, mut buf) = web::block(move || -> std::io::Result<_> {
            use std::io::Write;
            file.write_all(&buf)?;
            let skip = 128u64.saturating_sub(start).min(buf.len() as u64) as usize;
            hasher.update(&buf[skip..]);
            Ok((file, hasher, buf))
        })
        .await??;
        self.written += buf.len() as u64;
        buf.clear();
        self.buf = buf;
        self.sink = Some((file, hasher));
        Ok(())
    }

    /// The temp file's path and the BLAKE3 (hex) of its bytes after offset 128.
    async fn finish(mut self) -> Result<(PathBuf, String)> {
        if !self.buf.is_empty() {
            self.flush_block().await?;
        }
        let (_, hasher) = self
            .sink
            .take()
            .ok_or_else(|| Error::internal("part writer used after a failed write"))?;
        Ok((self.path, hasher.finalize().to_hex().to_string()))
    }
}

type StageTask = tokio::task::JoinHandle<std::result::Result<Staged, Failure>>;

fn spawn_stage(state: &web::Data<AppState>, (path, hash): (PathBuf, String)) -> StageTask {
    let store = state.store.clone();
    // Parsing and the fdatasync are blocking work, off the executor; they overlap with
    // receiving the next part.
    tokio::task::spawn_blocking(move || store.stage_hashed(path, Some(hash)))
}

/// `POST /dicom-web/studies`: Store Instances (PS3.18 10.5).
pub async fn store_instances(
    req: HttpRequest,
    payload: web::Payload,
    principal: Principal,
    query: QueryParams,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    store(req, payload, principal, query, state, None).await
}

/// `POST /dicom-web/studies/{study}`: Store Instances into one study; instances of another
/// study fail with 0x0110.
pub async fn store_study_instances(
    req: HttpRequest,
    payload: web::Payload,
    principal: Principal,
    query: QueryParams,
    state: web::Data<AppState>,
    path: web::Path<StudyUid>,
) -> Result<HttpResponse> {
    store(
        req,
        payload,
        principal,
        query,
        state,
        Some(path.into_inner()),
    )
    .await
}

async fn store(
    req: HttpRequest,
    payload: web::Payload,
    principal: Principal,
    query: QueryParams,
    state: web::Data<AppState>,
    study: Option<StudyUid>,
) -> Result<HttpResponse> {
    access::check(
        &principal,
        Action::Store {
            study: study.clone(),
        },
    )?;
    let owner = match access::store_scope(&principal)? {
        StoreScope::Any => None,
        StoreScope::OwnedBy(id) => Some(id.to_string()),
    };
    query.reject_unknown(&["accept"])?;
    let ranges = media::requested_ranges(&req, &query)?;
    let response_type = media::negotiate(&ranges, RESPONSE_OFFERS)?.index;
    let kind = body_kind(&req)?;
    let max = state.config.max_upload_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(too_large(max));
    }

    let mut guard = TempGuard::default();
    let mut tasks: Vec<StageTask> = Vec::new();
    let mut other_failures: Vec<Failure> = Vec::new();
    let mut limit = BodyLimit { total: 0, max };

    match kind {
        BodyKind::Single => {
            let mut payload = payload;
            let mut w = PartWriter::create(&state, &mut guard).await?;
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| Error::BadRequest(format!("request body: {e}")))?;
                limit.add(chunk.len())?;
                w.write(&chunk).await?;
            }
            tasks.push(spawn_stage(&state, w.finish().await?));
        }
        BodyKind::Multipart { boundary } => {
            let mut mp = MultipartReader::new(payload, &boundary);
            let mut index = 0usize;
            while let Some(headers) = mp
                .next_part()
                .await
                .map_err(|e| multipart_error(index + 1, e))?
            {
                index += 1;
                let part_type = headers
                    .get("content-type")
                    .and_then(|ct| MediaRange::parse(ct).ok())
                    .map(|m| m.essence());
                let acceptable = matches!(
                    part_type.as_deref(),
                    None | Some("application/dicom") | Some("application/octet-stream")
                );
                let mut writer = if acceptable {
                    Some(PartWriter::create(&state, &mut guard).await?)
                } else {
                    None
                };
                // Read the whole part (into the temp file, or skipped) so the next can be read.
                while let Some(chunk) = mp
                    .read_chunk()
                    .await
                    .map_err(|e| multipart_error(index, e))?
                {
                    limit.add(chunk.len())?;
                    if let Some(w) = writer.as_mut() {
                        w.write(&chunk).await?;
                    }
                }
                match writer {
                    Some(w) => tasks.push(spawn_stage(&state, w.finish().await?)),
                    None => other_failures.push(Failure::new(
                        reason::CANNOT_UNDERSTAND,
                        format!(
                            "part {index} has Content-Type {}; expected application/dicom",
                            part_type.unwrap_or_default()
                        ),
                    )),
                }
            }
        }
    }

    // Collect staging results in part order.
    let mut staged: Vec<Staged> = Vec::new();
    let mut failed: Vec<Failure> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => {
                guard.0.push(s.temp.clone());
                if let Some(expected) = &study
                    && &s.parsed.study != expected
                {
                    failed.push(
                        Failure::new(
                            reason::PROCESSING_FAILURE,
                            format!(
                                "StudyInstanceUID {} does not match the study {expected} in the URL",
                                s.parsed.study
                            ),
                        )
                        .with_uids(Some(s.parsed.sop_class.to_string()), Some(s.parsed.sop.to_string())),
                    );
                    continue;
                }
                staged.push(s);
            }
            Ok(Err(f)) if f.has_uids() => failed.push(f),
            Ok(Err(f)) => other_failures.push(f),
            Err(e) => return Err(Error::internal(format!("staging task: {e}"))),
        }
    }
    // Daily quotas for patients and facilities (PS3.18 Annex I: refused, out of resources).
    let quota_user = principal
        .user()
        .filter(|u| !u.role.is_staff())
        .map(|u| u.id.clone());
    let day = crate::auth::now_ms() / 86_400_000;
    let mut reserved: Vec<(String, u64)> = Vec::new();
    if let Some(user) = &quota_user {
        let st = state.clone();
        let user = user.clone();
        let items: Vec<(crate::ids::SopInstanceUid, String, u64)> = staged
            .iter()
            .map(|s| (s.parsed.sop.clone(), s.hash.clone(), s.size))
            .collect();
        // (counted, granted): byte-identical re-sends cost nothing.
        let granted = web::block(move || -> Result<Vec<(bool, bool)>> {
            items
                .into_iter()
                .map(|(sop, hash, bytes)| {
                    if st
                        .store
                        .repo
                        .instance(&sop)?
                        .is_some_and(|r| r.hash == hash)
                    {
                        return Ok((false, true));
                    }
                    let ok = st.accounts.reserve_quota(
                        &user,
                        day,
                        bytes,
                        st.config.stow_quota_bytes,
                        st.config.stow_quota_instances,
                    )?;
                    Ok((true, ok))
                })
                .collect()
        })
        .await??;
        let mut kept = Vec::with_capacity(staged.len());
        for (s, (counted, ok)) in staged.into_iter().zip(granted) {
            if ok {
                if counted {
                    reserved.push((s.parsed.sop.to_string(), s.size));
                }
                kept.push(s);
            } else {
                failed.push(
                    Failure::new(
                        reason::OUT_OF_RESOURCES,
                        "the daily upload quota of this account is used up",
                    )
                    .with_uids(
                        Some(s.parsed.sop_class.to_string()),
                        Some(s.parsed.sop.to_string()),
                    ),
                );
            }
        }
        staged = kept;
    }
    if staged.is_empty() && failed.is_empty() && other_failures.is_empty() {
        return Err(Error::BadRequest(
            "the request holds no DICOM instances".into(),
        ));
    }

    // Commit: durable files, index, one flush. Runs to completion even if the client leaves.
    let reserve = state.config.disk_reserve_bytes;
    let st = state.clone();
    let results =
        web::block(move || st.store.commit_batch(staged, reserve, owner.as_deref())).await?;
    if let Some(user) = quota_user {
        // Give back what was reserved for instances not stored (or unchanged re-sends).
        let counted: std::collections::HashSet<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|s| s.outcome != crate::store::StoredKind::Unchanged)
            .map(|s| s.sop.to_string())
            .collect();
        let (bytes, n) = reserved
            .iter()
            .filter(|(sop, _)| !counted.contains(sop))
            .fold((0u64, 0u64), |(b, n), (_, size)| (b + size, n + 1));
        if n > 0 {
            let st = state.clone();
            web::block(move || st.accounts.release_quota(&user, day, bytes, n)).await??;
        }
    }
    {
        let stored: Vec<&Stored> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let mut studies: Vec<String> = stored.iter().map(|s| s.study.to_string()).collect();
        studies.sort();
        studies.dedup();
        let outcome = if stored.is_empty() {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        let mut ev = principal.event(event::INSTANCES_STORED, "stow", outcome);
        ev.studies = studies;
        ev.detail = json!({"stored": stored.len(), "failed": results.len() - stored.len()});
        state.audit.record(ev);
    }
    drop(guard); // every temp file is now renamed or removed

    let mut stored: Vec<Stored> = Vec::new();
    for r in results {
        match r {
            Ok(s) => stored.push(s),
            Err(f) if f.has_uids() => failed.push(f),
            Err(f) => other_failures.push(f),
        }
    }
    let base = base_url(&req, &state.urls);
    Ok(respond(
        &base,
        study.as_ref(),
        &stored,
        &failed,
        &other_failures,
        response_type,
    ))
}

/// Counts request body bytes against `max_upload`.
struct BodyLimit {
    total: u64,
    max: u64,
}

impl BodyLimit {
    fn add(&mut self, n: usize) -> Result<()> {
        self.total += n as u64;
        if self.total > self.max {
            return Err(too_large(self.max));
        }
        Ok(())
    }
}

fn too_large(max: u64) -> Error {
    Error::PayloadTooLarge(format!(
        "the request body exceeds the maximum of {max} bytes (setting max_upload)"
    ))
}

fn multipart_error(index: usize, e: MultipartError) -> Error {
    Error::BadRequest(format!(
        "malformed multipart body at part {index}: {e}; nothing was stored"
    ))
}

fn attr(vr: &str, values: Vec<Json>) -> Json {
    if values.is_empty() {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": values })
    }
}

fn failure_item(f: &Failure) -> Json {
    let mut m = Map::new();
    if let Some(c) = &f.sop_class {
        m.insert("00081150".into(), attr("UI", vec![json!(c)]));
    }
    if let Some(i) = &f.sop_instance {
        m.insert("00081155".into(), attr("UI", vec![json!(i)]));
    }
    m.insert("00081197".into(), attr("US", vec![json!(f.code)]));
    // ErrorComment (0000,0902): the readable reason.
    let mut comment = f.reason.clone();
    comment.truncate(64);
    m.insert("00000902".into(), attr("LO", vec![json!(comment)]));
    Json::Object(m)
}

/// Build the Store Instances Response Module (PS3.18 Table I.1-1) and pick the status
/// (PS3.18 Table 10.5.3-1).
fn respond(
    base: &str,
    target_study: Option<&StudyUid>,
    stored: &[Stored],
    failed: &[Failure],
    other: &[Failure],
    response_type: usize,
) -> HttpResponse {
    let mut studies: Vec<&StudyUid> = stored.iter().map(|s| &s.study).collect();
    studies.sort();
    studies.dedup();
    let study_url = match (target_study, studies.as_slice()) {
        (Some(s), _) => Some(format!("{base}/dicom-web/studies/{s}")),
        (None, [one]) => Some(format!("{base}/dicom-web/studies/{one}")),
        _ => None,
    };
    let mut body = Map::new();
    body.insert(
        "00081190".into(),
        attr("UR", study_url.into_iter().map(Json::String).collect()),
    );
    if !failed.is_empty() {
        body.insert(
            "00081198".into(),
            attr("SQ", failed.iter().map(failure_item).collect()),
        );
    }
    if !stored.is_empty() {
        let items = stored
            .iter()
            .map(|s| {
                json!({
                    "00081150": attr("UI", vec![json!(s.sop_class)]),
                    "00081155": attr("UI", vec![json!(s.sop.as_str())]),
                    "00081190": attr("UR", vec![json!(format!(
                        "{base}/dicom-web/studies/{}/series/{}/instances/{}",
                        s.study, s.series, s.sop
                    ))]),
                })
            })
            .collect();
        body.insert("00081199".into(), attr("SQ", items));
    }
    if !other.is_empty() {
        body.insert(
            "0008119A".into(),
            attr("SQ", other.iter().map(failure_item).collect()),
        );
    }
    let failures = failed.len() + other.len();
    let status = if failures == 0 {
        actix_web::http::StatusCode::OK
    } else if !stored.is_empty() {
        actix_web::http::StatusCode::ACCEPTED
    } else if failed
        .iter()
        .chain(other)
        .all(|f| f.code == reason::CANNOT_UNDERSTAND)
    {
        actix_web::http::StatusCode::BAD_REQUEST
    } else {
        actix_web::http::StatusCode::CONFLICT
    };
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::CACHE_CONTROL, "private, no-store"));
    if let Some(f) = failed
        .iter()
        .chain(other)
        .find(|f| f.code == reason::OUT_OF_RESOURCES)
    {
        resp.insert_header((
            header::WARNING,
            format!("A700 lightbox \"{}\"", f.reason.replace('"', "'")),
        ));
    }
    let conflicts: Vec<String> = stored
        .iter()
        .filter(|s| s.patient_conflict)
        .map(|s| s.study.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for s in conflicts {
        resp.append_header((
            header::WARNING,
            format!("299 lightbox \"study {s} holds instances of more than one patient (PatientID/PatientName differ); it is flagged for review\""),
        ));
    }
    let body = Json::Object(body);
    match response_type {
        2 => resp
            .content_type("application/dicom+xml")
            .body(crate::dicomweb::xml::to_native_xml(&body)),
        1 => resp.content_type("application/json").body(body.to_string()),
        _ => resp
            .content_type("application/dicom+json")
            .body(body.to_string()),
    }
}
