//! WADO-RS Retrieve Metadata (PS3.18 10.4.1.1.2) for a study, series or instance.
//!
//! Served from the metadata templates ingest stored (never by parsing a file): each template is
//! spliced as bytes, its relative `BulkDataURI`s (`"bulkdata/..."`) made absolute (or
//! path-only when `bulkdata_uri_relative` is set) for the instance. A byte splice is safe: the
//! sequence `"BulkDataURI":"bulkdata/` can only be a key and its value, since quotes inside
//! JSON strings are escaped.
//!
//! Series responses are kept pre-compressed (gzip) in a small in-memory cache keyed by the
//! series, the base URL and the ETag (instance versions), so a viewer opening a series again
//! costs a lookup. Study responses are streamed series by series.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::wado::{self, Part, PartBody, Target};
use crate::access::{self, Action, Principal};
use crate::error::{Error, Result};
use crate::http::media::{self, Offer};
use crate::http::query::QueryParams;
use crate::ids::SeriesUid;
use crate::state::AppState;
use crate::store::MetaRepo;
use crate::store::records::InstanceRef;

const OFFERS: &[Offer] = &[
    Offer::new("application/dicom+json"),
    Offer::new("application/json"),
    Offer::multipart("application/dicom+xml"),
];

/// Most series kept pre-compressed.
const CACHE_ENTRIES: usize = 256;

/// Pre-compressed series metadata.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<(SeriesUid, String), (u64, Bytes)>>,
    clock: std::sync::atomic::AtomicU64,
}

impl Cache {
    /// The gzip body for `(series, key)` (key = base URL + ETag), computed when missing.
    fn get_or(
        &self,
        series: &SeriesUid,
        key: &str,
        make: impl FnOnce() -> Result<Bytes>,
    ) -> Result<Bytes> {
        let now = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let k = (series.clone(), key.to_owned());
        if let Some(e) = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&k)
        {
            e.0 = now;
            return Ok(e.1.clone());
        }
        let v = make()?;
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Other versions of this series are stale.
        m.retain(|(s, _), _| s != series);
        if m.len() >= CACHE_ENTRIES
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(k, (now, v.clone()));
        Ok(v)
    }
}

impl Cache {
    /// Drop every cached body of these series (after a delete).
    pub fn forget_series(&self, series: &[SeriesUid]) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| !series.contains(s));
    }
}

/// Whether `Accept-Encoding` allows gzip (q > 0).
pub fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut it = item.split(';');
            let coding = it.next().unwrap_or("").trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// A strong ETag over the instance versions, the base URL and the representation.
fn etag(recs: &[InstanceRef], base: &str, variant: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(base.as_bytes());
    h.update(variant.as_bytes());
    for r in recs {
        h.update(r.sop.as_str().as_bytes());
        h.update(b"\0");
        h.update(r.hash.as_bytes());
    }
    format!("\"{}\"", &h.finalize().to_hex()[..32])
}

fn if_none_match(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
}

/// The stored template of one instance with absolute BulkDataURIs.
fn spliced(repo: &dyn MetaRepo, rec: &InstanceRef, prefix: &str) -> Result<Vec<u8>> {
    let raw = repo
        .metadata_raw(&rec.sop)?
        .ok_or_else(|| Error::NotFound(format!("instance {} not found", rec.sop)))?;
    const NEEDLE: &[u8] = b"\"BulkDataURI\":\"bulkdata/";
    let replacement = format!("\"BulkDataURI\":\"{prefix}/bulkdata/");
    let mut out = Vec::with_capacity(raw.len() + 256);
    let mut rest = &raw[..];
    while let Some(i) = memchr::memmem::find(rest, NEEDLE) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(replacement.as_bytes());
        rest = &rest[i + NEEDLE.len()..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// The JSON array of these instances' metadata.
fn json_array(repo: &dyn MetaRepo, recs: &[InstanceRef], base: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(recs.len() * 4096);
    out.push(b'[');
    for (i, r) in recs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(spliced(repo, r, &wado::ref_url(base, r))?);
    }
    out.push(b']');
    Ok(out)
}

fn gzip(data: &[u8]) -> Result<Bytes> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 6), Compression::fast());
    enc.write_all(data).map_err(Error::internal)?;
    Ok(Bytes::from(enc.finish().map_err(Error::internal)?))
}

/// `GET /studies/{study}[/series/{series}[/instances/{instance}]]/metadata`
pub async fn metadata(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept", "charset"])?;
    let ranges = media::requested_ranges(&req, &params)?;
    let chosen = media::negotiate(&ranges, OFFERS)?.index;
    wado::require_audit(&state)?;
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    let recs = web::block(move || wado::locate_refs(&st, &who, &target)).await??;
    let base = wado::dicomweb_base(&req, &state);
    // URIs: absolute, or path-only (`/dicom-web/...`) when configured.
    let uri_base = if state.config.bulkdata_uri_relative {
        "/dicom-web".to_owned()
    } else {
        base.clone()
    };
    let gz = chosen != 2 && accepts_gzip(&req);
    let variant = format!("{chosen}{}", if gz { "gz" } else { "" });
    let tag = etag(&recs, &uri_base, &variant);
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::ETAG, tag.clone()))
        .insert_header((header::VARY, "Accept, Accept-Encoding"));
    if if_none_match(&req, &tag) {
        return Ok(resp.status(StatusCode::NOT_MODIFIED).finish());
    }
    wado::audit_studies(
        &state,
        &principal,
        "metadata",
        recs.iter().map(|r| r.study.to_string()).collect(),
        recs.len(),
    );
    let content_type = if chosen == 1 {
        "application/json"
    } else {
        "application/dicom+json"
    };
    match chosen {
        2 => {
            let boundary = wado::new_boundary();
            let repo = state.store.clone();
            let parts = recs
                .into_iter()
                .map(|r| {
                    let repo = repo.clone();
                    let uri_base = uri_base.clone();
                    Part {
                        headers: format!(
                            "Content-Type: application/dicom+xml; charset=utf-8\r\nContent-Location: {}/metadata\r\n",
                            wado::ref_url(&base, &r)
                        ),
                        body: PartBody::Lazy(Box::new(move || {
                            let bytes = spliced(repo.repo.as_ref(), &r, &wado::ref_url(&uri_base, &r))
                                .map_err(|e| e.to_string())?;
                            let json: serde_json::Value =
                                serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                            Ok(crate::dicomweb::xml::to_native_xml(&json).into_bytes())
                        })),
                    }
                })
                .collect();
            Ok(resp
                .content_type(format!(
                    "multipart/related; type=\"application/dicom+xml\"; boundary={boundary}"
                ))
                .streaming(wado::stream_parts(parts, Some(boundary))))
        }
        _ if t.series.is_some() => {
            // One series (or one instance): built whole, the series cached compressed.
            let st = state.clone();
            let series = t.series.clone().expect("checked");
            let key = format!("{uri_base}\n{tag}");
            let one = t.sop.is_some();
            let body = web::block(move || -> Result<Bytes> {
                let repo = st.store.repo.as_ref();
                if one {
                    let raw = spliced(repo, &recs[0], &wado::ref_url(&uri_base, &recs[0]))?;
                    let mut v = Vec::with_capacity(raw.len() + 2);
                    v.push(b'[');
                    v.extend(raw);
                    v.push(b']');
                    return if gz { gzip(&v) } else { Ok(Bytes::from(v)) };
                }
                if gz {
                    st.metadata_cache
                        .get_or(&series, &key, || gzip(&json_array(repo, &recs, &uri_base)?))
                } else {
                    Ok(Bytes::from(json_array(repo, &recs, &uri_base)?))
                }
            })
            .await??;
            if gz {
                resp.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            Ok(resp.content_type(content_type).body(body))
        }
        _ => {
            // A whole study: streamed series by series (one gzip stream when accepted).
            let repo = state.store.clone();
            let mut groups: Vec<Vec<InstanceRef>> = Vec::new();
            for r in recs {
                match groups.last_mut() {
                    Some(g) if g[0].series == r.series => g.push(r),
                    _ => groups.push(vec![r]),
                }
            }
            let n = groups.len();
            let encoder = std::sync::Arc::new(Mutex::new(if gz {
                Some(GzEncoder::new(Vec::new(), Compression::fast()))
            } else {
                None
            }));
            let parts: Vec<Part> = groups
                .into_iter()
                .enumerate()
                .map(|(i, g)| {
                    let repo = repo.clone();
                    let uri_base = uri_base.clone();
                    let encoder = encoder.clone();
                    Part {
                        headers: String::new(),
                        body: PartBody::Lazy(Box::new(move || {
                            let arr = json_array(repo.repo.as_ref(), &g, &uri_base)
                                .map_err(|e| e.to_string())?;
                            // Strip the brackets: the study array is one array.
                            let mut chunk = Vec::with_capacity(arr.len() + 2);
                            if i == 0 {
                                chunk.push(b'[');
                            }
                            chunk.extend_from_slice(&arr[1..arr.len() - 1]);
                            if i + 1 < n {
                                if arr.len() > 2 {
                                    chunk.push(b',');
                                }
                            } else {
                                chunk.push(b']');
                            }
                            let mut enc = encoder.lock().unwrap_or_else(|p| p.into_inner());
                            match enc.as_mut() {
                                None => Ok(chunk),
                                Some(e) => {
                                    e.write_all(&chunk).map_err(|e| e.to_string())?;
                                    if i + 1 == n {
                                        let e = enc.take().expect("present");
                                        return e.finish().map_err(|e| e.to_string());
                                    }
                                    e.flush().map_err(|e| e.to_string())?;
                                    Ok(std::mem::take(e.get_mut()))
                                }
                            }
                        })),
                    }
                })
                .collect();
            if gz {
                resp.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            Ok(resp
                .content_type(content_type)
                .streaming(wado::stream_parts(parts, None)))
        }
    }
}
