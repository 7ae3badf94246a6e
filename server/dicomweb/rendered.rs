//! Rendered and thumbnail resources (PS3.18 10.4.1.1.3-4, 8.3.5): study, series, instance and
//! frames.
//!
//! - A single-image media type (`image/jpeg` default, `image/png`, `image/gif`) gets one image:
//!   for a study or series the representative instance (the first series by SeriesNumber that
//!   holds an image, its middle image by InstanceNumber), for a multi-frame instance its
//!   Representative Frame Number or else the first frame.
//! - `multipart/related; type="image/..."` gets one part per instance (study, series) or per
//!   frame (instance, frame list), rendered one at a time as the body streams.
//! - Video is sent as stored when its media type is accepted (never decoded); an encapsulated PDF
//!   only as `application/pdf`, sandboxed. Other objects without pixels → 406.
//! - Thumbnails carry no annotations (pixels already burned in by the modality stay). Default
//!   thumbnails are kept under the study's derived-data directory, which every change to the
//!   study removes; other sizes are rendered on request.

use std::path::{Path, PathBuf};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::bulk;
use super::wado::{self, Part, PartBody, Target};
use crate::access::{self, Action, Principal};
use crate::dicom::parse::FrameAccess;
use crate::dicom::transcode;
use crate::error::{Error, Result};
use crate::http::media::{self, Offer};
use crate::http::query::QueryParams;
use crate::render::params::{self, Format, Params, Viewport};
use crate::render::{self, Job};
use crate::state::AppState;
use crate::store::records::InstanceRecord;

const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";

const IMAGE_OFFERS: &[Offer] = &[
    Offer::new("image/jpeg"),
    Offer::new("image/png"),
    Offer::new("image/gif"),
    Offer::multipart("image/jpeg"),
    Offer::multipart("image/png"),
    Offer::multipart("image/gif"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rendered,
    Thumbnail,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Rendered => "rendered",
            Kind::Thumbnail => "thumbnail",
        }
    }
}

/// Encapsulated documents (PDF, CDA, STL, ...): SOP classes 1.2.840.10008.5.1.4.1.1.104.x.
fn is_document(rec: &InstanceRecord) -> bool {
    rec.sop_class
        .as_str()
        .starts_with("1.2.840.10008.5.1.4.1.1.104.")
}

/// An instance with pixels this server can turn into an image.
fn is_image(rec: &InstanceRecord) -> bool {
    !matches!(rec.frames, FrameAccess::None)
        && !transcode::is_video(&rec.transfer_syntax)
        && !is_document(rec)
}

/// The representative instance of a study or series (`recs` in series then instance order).
fn representative(recs: &[InstanceRecord]) -> Option<&InstanceRecord> {
    let mut i = 0;
    while i < recs.len() {
        let series = &recs[i].series;
        let end = recs[i..]
            .iter()
            .position(|r| &r.series != series)
            .map_or(recs.len(), |n| i + n);
        let images: Vec<&InstanceRecord> = recs[i..end].iter().filter(|r| is_image(r)).collect();
        if !images.is_empty() {
            return Some(images[images.len() / 2]);
        }
        i = end;
    }
    None
}

/// `GET .../rendered` on a study, series or instance.
pub async fn rendered(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    respond(req, principal, params, state, t, Kind::Rendered).await
}

/// `GET .../thumbnail` on a study, series, instance or frame.
pub async fn thumbnail(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    respond(req, principal, params, state, t, Kind::Thumbnail).await
}

/// What a request renders once its target is resolved.
struct Plan {
    /// (instance, frame) per image; one entry for a single-part answer.
    items: Vec<(InstanceRecord, Option<u32>)>,
}

async fn respond(
    req: HttpRequest,
    principal: Principal,
    query: QueryParams,
    state: web::Data<AppState>,
    t: Target,
    kind: Kind,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    let mut p = params::parse(&query, kind == Kind::Thumbnail)?;
    let frames = req
        .match_info()
        .get("frames")
        .map(bulk::parse_frame_list)
        .transpose()?;
    let ranges = media::requested_ranges(&req, &query)?;
    wado::require_audit(&state)?;
    let base = wado::dicomweb_base(&req, &state);

    // An instance may be a video or a document: those have their own media types.
    if t.sop.is_some() && kind == Kind::Rendered && frames.is_none() {
        let rec = wado::locate_instance(&state, &principal, &t).await?;
        if transcode::is_video(&rec.transfer_syntax) || is_document(&rec) {
            return stored_media(&state, &principal, &ranges, rec).await;
        }
        return image_response(
            req,
            principal,
            state,
            ranges,
            p,
            kind,
            base,
            t,
            vec![rec],
            None,
        )
        .await;
    }
    if kind == Kind::Thumbnail {
        let size = state.config.thumbnail_size;
        let vp = p.viewport.get_or_insert(Viewport {
            vw: Some(size),
            vh: Some(size),
            ..Viewport::default()
        });
        if vp.vw.is_none() && vp.vh.is_none() {
            (vp.vw, vp.vh) = (Some(size), Some(size));
        }
    }
    // One image of a study or series: its representative instance, remembered per study.
    let single = t.sop.is_none()
        && media::negotiate(&ranges, IMAGE_OFFERS).is_ok_and(|c| c.offer.type_param.is_none());
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    let recs = if single {
        web::block(move || representative_of(&st, &who, &target)).await??
    } else {
        web::block(move || wado::locate(&st, &who, &target)).await??
    };
    image_response(
        req, principal, state, ranges, p, kind, base, t, recs, frames,
    )
    .await
}

/// The representative instance of a study or series (a one-element list, so that
/// [`image_response`] picks it again), through a small file in the study's derived-data
/// directory naming it: every change to the study removes that directory, so the file never
/// outlives what it describes. Blocking.
fn representative_of(
    state: &AppState,
    principal: &Principal,
    t: &Target,
) -> Result<Vec<InstanceRecord>> {
    if !access::can_see_study(state, principal, &t.study)? {
        return Err(Error::NotFound(format!("study {} not found", t.study)));
    }
    let file = state.store.derived_dir(&t.study).join(match &t.series {
        Some(series) => format!("representative-{series}"),
        None => "representative-study".to_string(),
    });
    if let Ok(sop) = std::fs::read_to_string(&file)
        && let Ok(sop) = crate::ids::SopInstanceUid::parse(sop.trim())
        && let Some(rec) = state.store.repo.instance(&sop)?
        && rec.study == t.study
        && t.series.as_ref().is_none_or(|s| *s == rec.series)
    {
        return Ok(vec![rec]);
    }
    let recs = wado::locate(state, principal, t)?;
    let Some(rec) = representative(&recs).cloned() else {
        return Ok(recs);
    };
    if let Some(dir) = file.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        write_atomic(&file, rec.sop.as_str().as_bytes());
    }
    Ok(vec![rec])
}

/// Writes `bytes` to `path` through a temp file and a rename. Derived data is rebuilt on
/// request, so a failure only means it is not kept.
fn write_atomic(path: &Path, bytes: &[u8]) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let tmp = dir.join(format!(
        ".tmp-{}",
        crate::auth::model::Id::random().as_str()
    ));
    if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return false;
    }
    true
}

/// Video as stored, or an encapsulated PDF, when the client accepts its media type.
async fn stored_media(
    state: &web::Data<AppState>,
    principal: &Principal,
    ranges: &[media::MediaRange],
    rec: InstanceRecord,
) -> Result<HttpResponse> {
    let path = state.store.blobs.path(&rec.blob);
    if transcode::is_video(&rec.transfer_syntax) {
        let mt = bulk::frame_media_type(&rec.transfer_syntax);
        let offers = [Offer::new(mt)];
        media::negotiate(ranges, &offers).map_err(|_| {
            Error::NotAcceptable(format!(
                "this instance is a video ({mt}); it is sent as stored when {mt} is accepted, and never decoded into images"
            ))
        })?;
        let FrameAccess::Indexed(frames) = &rec.frames else {
            return Err(Error::NotAcceptable(
                "the video stream of this instance cannot be located".into(),
            ));
        };
        let fragments: Vec<_> = frames
            .iter()
            .flat_map(|f| match f {
                crate::dicom::walk::Frame::Bytes { fragments } => fragments.clone(),
                crate::dicom::walk::Frame::Bits { .. } => Vec::new(),
            })
            .collect();
        wado::audit_retrieve(state, principal, "rendered", std::slice::from_ref(&rec));
        let length: u64 = fragments.iter().map(|f| f.length).sum();
        // Streamed from the file in chunks: a video may be gigabytes.
        let part = Part {
            headers: String::new(),
            body: PartBody::Ranges(path, fragments),
        };
        return Ok(HttpResponse::Ok()
            .content_type(mt)
            .no_chunking(length)
            .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
            .streaming(wado::stream_parts(vec![part], None)));
    }
    let offers = [Offer::new("application/pdf")];
    media::negotiate(ranges, &offers).map_err(|_| {
        Error::NotAcceptable(
            "this instance is an encapsulated document; it is rendered as application/pdf only"
                .into(),
        )
    })?;
    let doc = web::block(move || document_bytes(&path)).await??;
    wado::audit_retrieve(state, principal, "rendered", std::slice::from_ref(&rec));
    Ok(HttpResponse::Ok()
        .content_type("application/pdf")
        // The stored MIME type is never echoed (text/html there would be stored XSS); the
        // document opens sandboxed and is never sniffed.
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .body(doc))
}

/// The Encapsulated Document (0042,0011) of a PDF instance.
fn document_bytes(path: &Path) -> Result<Vec<u8>> {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(path)
        .map_err(|e| Error::NotAcceptable(format!("the document cannot be read: {e}")))?;
    let mime = obj
        .element_opt(tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    if obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        != ENCAPSULATED_PDF
        || mime.as_deref().is_some_and(|m| m != "application/pdf")
    {
        return Err(Error::NotAcceptable(
            "this encapsulated document is not a PDF; retrieve it with WADO-RS".into(),
        ));
    }
    let mut bytes = obj
        .element(tags::ENCAPSULATED_DOCUMENT)
        .map_err(|_| Error::NotAcceptable("the document has no content".into()))?
        .to_bytes()
        .map_err(|e| Error::NotAcceptable(format!("the document cannot be read: {e}")))?
        .into_owned();
    // Encapsulated Document is padded to an even length with one NUL.
    if bytes.len() % 2 == 0 && bytes.last() == Some(&0) {
        bytes.pop();
    }
    Ok(bytes)
}

/// The ETag of one rendering: the instance version, the frame, and everything that shapes the
/// pixels.
fn etag(rec: &InstanceRecord, frame: Option<u32>, p: &Params, format: Format) -> String {
    let key = format!(
        "{}|{frame:?}|{:?}|{:?}|{:?}|{format:?}",
        rec.hash, p.viewport, p.window, p.quality
    );
    let h = blake3::hash(key.as_bytes());
    format!("\"r-{}\"", &h.to_hex()[..24])
}

#[allow(clippy::too_many_arguments)]
async fn image_response(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    ranges: Vec<media::MediaRange>,
    p: Params,
    kind: Kind,
    base: String,
    t: Target,
    recs: Vec<InstanceRecord>,
    frames: Option<Vec<u32>>,
) -> Result<HttpResponse> {
    let chosen = media::negotiate(&ranges, IMAGE_OFFERS)?;
    let multipart = chosen.offer.type_param.is_some() && kind == Kind::Rendered;
    let essence = chosen.offer.type_param.unwrap_or(chosen.offer.media_type);
    let format = Format::of_media_type(essence).unwrap_or(Format::Jpeg);
    let plan = if t.sop.is_some() {
        let rec = recs
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound("instance not found".into()))?;
        if !is_image(&rec) {
            return Err(render::RenderError::NotImage(not_image_reason(&rec)).into());
        }
        match (frames, multipart) {
            (Some(list), true) => Plan {
                items: list.into_iter().map(|n| (rec.clone(), Some(n))).collect(),
            },
            (Some(list), false) if list.len() > 1 && kind == Kind::Rendered => {
                return Err(Error::NotAcceptable(
                    "several frames need multipart/related; type=\"image/...\" in Accept".into(),
                ));
            }
            (Some(list), false) => Plan {
                items: vec![(rec, Some(list[0]))],
            },
            (None, true) => {
                let n = rec.number_of_frames();
                Plan {
                    items: (1..=n).map(|f| (rec.clone(), Some(f))).collect(),
                }
            }
            (None, false) => Plan {
                items: vec![(rec, None)],
            },
        }
    } else if multipart {
        let items: Vec<_> = recs
            .into_iter()
            .filter(is_image)
            .map(|r| (r, None))
            .collect();
        if items.is_empty() {
            return Err(Error::NotAcceptable(
                "nothing here can be rendered: no instance holds an image".into(),
            ));
        }
        Plan { items }
    } else {
        let rec = representative(&recs).cloned().ok_or_else(|| {
            Error::NotAcceptable("nothing here can be rendered: no instance holds an image".into())
        })?;
        Plan {
            items: vec![(rec, None)],
        }
    };

    let mut warnings = Vec::new();
    if !p.annotation.is_empty() {
        warnings.push(format!(
            "299 {base}: annotation is not supported; the image carries no annotations"
        ));
    }
    if p.quality.is_some() && format != Format::Jpeg {
        warnings.push(format!(
            "299 {base}: quality applies to lossy media types only; {} is lossless",
            format.media_type()
        ));
    }
    let job = |frame: Option<u32>| Job {
        frame,
        params: p.clone(),
        format,
        max_decoded_bytes: state.config.render_max_decoded_bytes,
    };
    let recs_only: Vec<InstanceRecord> = plan.items.iter().map(|(r, _)| r.clone()).collect();

    if !multipart {
        let (rec, frame) = plan.items.into_iter().next().expect("one item");
        let tag = etag(&rec, frame, &p, format);
        let fresh = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim() == tag || e.trim() == "*"));
        wado::audit_retrieve(&state, &principal, kind.word(), &recs_only);
        let mut resp = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        resp.insert_header((header::ETAG, tag.clone()))
            .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
            .insert_header((
                header::CONTENT_LOCATION,
                format!("{}/{}", wado::instance_url(&base, &rec), kind.word()),
            ));
        for w in &warnings {
            resp.append_header((header::WARNING, w.clone()));
        }
        if fresh {
            return Ok(resp.finish());
        }
        // Only the default thumbnail is kept: arbitrary sizes must not fill the disk.
        let size = Some(state.config.thumbnail_size);
        let default_thumbnail = kind == Kind::Thumbnail
            && p.quality.is_none()
            && p.viewport
                == Some(Viewport {
                    vw: size,
                    vh: size,
                    ..Viewport::default()
                });
        let cache = default_thumbnail.then(|| thumb_path(&state, &rec, frame, format, &p));
        let path = state.store.blobs.path(&rec.blob);
        let job = job(frame);
        let st = state.clone();
        let bytes = state
            .render_gate
            .run(move || -> Result<Vec<u8>> {
                if let Some(c) = &cache
                    && let Ok(b) = std::fs::read(c)
                {
                    return Ok(b);
                }
                let b = render::render(&path, &rec, &job)?;
                if let Some(c) = &cache {
                    keep_thumbnail(&st, &rec, c, &b);
                }
                Ok(b)
            })
            .await??;
        return Ok(resp.content_type(format.media_type()).body(bytes));
    }

    wado::audit_retrieve(&state, &principal, kind.word(), &recs_only);
    let parts: Vec<Part> = plan
        .items
        .into_iter()
        .map(|(rec, frame)| {
            let location = match frame {
                Some(n) => format!(
                    "{}/frames/{n}/{}",
                    wado::instance_url(&base, &rec),
                    kind.word()
                ),
                None => format!("{}/{}", wado::instance_url(&base, &rec), kind.word()),
            };
            let st = state.clone();
            let job = job(frame);
            Part {
                headers: format!(
                    "Content-Type: {}\r\nContent-Location: {location}\r\n",
                    format.media_type()
                ),
                body: PartBody::Lazy(Box::new(move || {
                    let path = st.store.blobs.path(&rec.blob);
                    st.render_gate
                        .blocking(|| render::render(&path, &rec, &job))
                        .map_err(|e| e.to_string())
                })),
            }
        })
        .collect();
    let boundary = wado::new_boundary();
    let mut resp = HttpResponse::Ok();
    for w in &warnings {
        resp.append_header((header::WARNING, w.clone()));
    }
    Ok(resp
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .content_type(format!(
            "multipart/related; type=\"{}\"; boundary={boundary}",
            format.media_type()
        ))
        .streaming(wado::stream_parts(parts, Some(boundary))))
}

fn not_image_reason(rec: &InstanceRecord) -> String {
    if transcode::is_video(&rec.transfer_syntax) {
        "it is a video: ask for its own media type on the instance's /rendered".into()
    } else if is_document(rec) {
        "it is an encapsulated document: ask for application/pdf on the instance's /rendered".into()
    } else {
        format!(
            "it has no pixel data (SOP Class {}: e.g. a report, waveform or RT object)",
            rec.sop_class
        )
    }
}

/// Columns and Rows of an instance from its indexed attributes, when known.
pub fn image_size(rec: &InstanceRecord) -> (Option<u32>, Option<u32>) {
    let get = |tag| rec.attr_u64(tag).and_then(|n| u32::try_from(n).ok());
    (get("00280011"), get("00280010"))
}

/// Renders one frame of a located instance now (behind the render gate).
pub async fn render_now(
    state: &web::Data<AppState>,
    rec: InstanceRecord,
    frame: Option<u32>,
    params: Params,
    format: Format,
) -> Result<Vec<u8>> {
    let job = Job {
        frame,
        params,
        format,
        max_decoded_bytes: state.config.render_max_decoded_bytes,
    };
    let path = state.store.blobs.path(&rec.blob);
    Ok(state
        .render_gate
        .run(move || render::render(&path, &rec, &job))
        .await??)
}

/// Where a default thumbnail of this instance version is kept.
fn thumb_path(
    state: &AppState,
    rec: &InstanceRecord,
    frame: Option<u32>,
    format: Format,
    p: &Params,
) -> PathBuf {
    let vp = p.viewport.unwrap_or_default();
    let frame = frame.map_or_else(|| "r".to_string(), |n| n.to_string());
    state
        .store
        .derived_dir(&rec.study)
        .join("thumbnails")
        .join(format!(
            "{}-{}-{frame}-{}x{}.{}",
            rec.sop,
            &rec.hash[..16.min(rec.hash.len())],
            vp.vw.unwrap_or(0),
            vp.vh.unwrap_or(0),
            format.extension()
        ))
}

/// Writes a thumbnail atomically (temp file, rename). If the instance changed or went away
/// meanwhile (a replace or DELETE removed the derived directory), the file is removed again.
fn keep_thumbnail(state: &AppState, rec: &InstanceRecord, path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() || !write_atomic(path, bytes) {
        return;
    }
    let current = state.store.repo.instance_ref(&rec.sop).ok().flatten();
    if current.is_none_or(|r| r.hash != rec.hash) {
        let _ = std::fs::remove_file(path);
    }
}
