//! WADO-RS bulk data, pixel data and frames (PS3.18 10.4.1.1.3-5, Table 10.3-2).
//!
//! Frames and native Pixel Data are read with the byte ranges ingest recorded (never by
//! parsing or loading the instance): one frame of a 100-frame instance costs one frame of I/O.
//! A compressed frame is sent as stored in its own media type (`image/jpeg`, `image/jls`,
//! `image/jp2`, ...) or, when the client asks for `application/octet-stream` without
//! `transfer-syntax=*`, decoded: the instance header (read up to Pixel Data) plus that frame's
//! fragments alone go to the decoder. Deflated and big-endian instances (no byte ranges) are
//! decoded whole. Other bulk data (BulkDataURIs of the metadata) is read from the header.

use std::os::unix::fs::FileExt;
use std::path::Path;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use dicom_core::Tag;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;

use super::wado::{self, Part, PartBody, Target};
use crate::access::{self, Action, Principal};
use crate::dicom::parse::FrameAccess;
use crate::dicom::transcode::{self, EXPLICIT_LE};
use crate::dicom::walk::{Fragment, Frame};
use crate::error::{Error, Result};
use crate::http::media::{self, MediaRange, Offer};
use crate::http::query::QueryParams;
use crate::ids::{SeriesUid, SopInstanceUid, StudyUid};
use crate::state::AppState;
use crate::store::records::InstanceRecord;

/// The media type of one compressed frame stored in `ts` (PS3.18 Table 8.7.3-5).
pub fn frame_media_type(ts: &str) -> &'static str {
    let n = ts
        .strip_prefix("1.2.840.10008.1.2.4.")
        .and_then(|n| n.parse::<u32>().ok());
    match (ts, n) {
        ("1.2.840.10008.1.2.5", _) => "image/dicom-rle",
        (_, Some(50 | 51 | 57 | 70)) => "image/jpeg",
        (_, Some(80 | 81)) => "image/jls",
        (_, Some(90 | 91)) => "image/jp2",
        (_, Some(92 | 93)) => "image/jpx",
        (_, Some(201..=203)) => "image/jphc",
        (_, Some(110..=112)) => "image/jxl",
        (_, Some(100 | 101)) => "video/mpeg",
        (_, Some(102..=106)) => "video/mp4",
        (_, Some(107 | 108)) => "video/H265",
        _ => "application/octet-stream",
    }
}

/// How frames go out.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// The stored bytes (native, or a compressed bitstream) with this Content-Type.
    Raw(String),
    /// Decoded to native Explicit VR Little Endian samples.
    Decode,
}

/// Negotiates the frame representation for an instance stored in `ts`. Returns the mode and
/// whether a multipart body was chosen.
fn negotiate_frames(ranges: &[MediaRange], ts: &str) -> Result<(Mode, bool)> {
    let native = transcode::is_native(ts);
    let stored_type = frame_media_type(ts);
    let octet_ts = if native { EXPLICIT_LE } else { ts };
    let offers_native: [Offer; 2] = [
        Offer::multipart("application/octet-stream"),
        Offer::new("application/octet-stream"),
    ];
    let mut offers: Vec<Offer> = offers_native.to_vec();
    if !native {
        offers.push(Offer::multipart(stored_type));
        offers.push(Offer::new(stored_type));
    }
    let decide = |offer: &Offer, r: &MediaRange| -> Option<Mode> {
        let want = r.transfer_syntax();
        let octet = offer.type_param.unwrap_or(offer.media_type) == "application/octet-stream";
        let wildcard_type = r.param("type").is_some_and(|t| t == "*/*");
        if octet {
            match want {
                Some("*") => Some(Mode::Raw(format!(
                    "application/octet-stream; transfer-syntax={octet_ts}"
                ))),
                Some(t) if t == ts && !native => Some(Mode::Raw(format!(
                    "application/octet-stream; transfer-syntax={ts}"
                ))),
                None if wildcard_type => Some(Mode::Raw(format!(
                    "application/octet-stream; transfer-syntax={octet_ts}"
                ))),
                None | Some(EXPLICIT_LE) if native => Some(Mode::Raw(format!(
                    "application/octet-stream; transfer-syntax={EXPLICIT_LE}"
                ))),
                None | Some(EXPLICIT_LE)
                    if transcode::can_decode(ts) && !transcode::is_video(ts) =>
                {
                    Some(Mode::Decode)
                }
                _ => None,
            }
        } else {
            match want {
                None | Some("*") => Some(Mode::Raw(format!("{stored_type}; transfer-syntax={ts}"))),
                Some(t) if t == ts => {
                    Some(Mode::Raw(format!("{stored_type}; transfer-syntax={ts}")))
                }
                _ => None,
            }
        }
    };
    // A `type="*/*"` multipart range asks for the data as stored.
    let ranges: Vec<MediaRange> = ranges
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.essence() == "multipart/related" && r.param("type") == Some("*/*") && !native {
                r.params.retain(|(n, _)| n != "type");
                r.params.push(("type".into(), stored_type.into()));
            }
            r
        })
        .collect();
    let n =
        media::negotiate_with(&ranges, &offers, |o, r| decide(o, r).is_some()).map_err(|_| {
            Error::NotAcceptable(format!(
                "frames of this instance are available as application/octet-stream{}{}",
                if native || transcode::can_decode(ts) {
                    format!(" (transfer-syntax={EXPLICIT_LE})")
                } else {
                    String::new()
                },
                if native {
                    String::new()
                } else {
                    format!(" and {stored_type} (transfer-syntax={ts})")
                }
            ))
        })?;
    let mode = decide(n.offer, &n.range).expect("usable");
    Ok((mode, n.offer.type_param.is_some()))
}

/// Parses a frame list (`1,3,5`; `%2C` accepted), refusing duplicates.
pub(crate) fn parse_frame_list(s: &str) -> Result<Vec<u32>> {
    let s = s.replace("%2C", ",").replace("%2c", ",");
    let mut out: Vec<u32> = Vec::new();
    for part in s.split(',') {
        let n: u32 = part.trim().parse().map_err(|_| {
            Error::BadRequest(format!(
                "frame list: '{part}' is not a frame number (1, 2, ...)"
            ))
        })?;
        if n == 0 {
            return Err(Error::NotFound("frame numbers start at 1".into()));
        }
        if out.contains(&n) {
            return Err(Error::BadRequest(format!(
                "frame list: frame {n} is listed twice"
            )));
        }
        out.push(n);
    }
    Ok(out)
}

pub(crate) fn read_fragments(path: &Path, fragments: &[Fragment]) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let total: u64 = fragments.iter().map(|f| f.length).sum();
    let mut out = vec![0u8; total as usize];
    let mut at = 0usize;
    for fr in fragments {
        f.read_exact_at(&mut out[at..at + fr.length as usize], fr.offset)?;
        at += fr.length as usize;
    }
    Ok(out)
}

/// A 1-bit frame starting at any bit: read and shift to start at bit 0.
pub(crate) fn read_bits(path: &Path, bit_offset: u64, bit_length: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let first = bit_offset / 8;
    let shift = (bit_offset % 8) as u32;
    let nbytes = (bit_offset + bit_length).div_ceil(8) - first;
    let mut raw = vec![0u8; nbytes as usize];
    f.read_exact_at(&mut raw, first)?;
    let out_len = bit_length.div_ceil(8) as usize;
    let mut out = vec![0u8; out_len];
    for (i, o) in out.iter_mut().enumerate() {
        let lo = raw.get(i).copied().unwrap_or(0) >> shift;
        let hi = if shift == 0 {
            0
        } else {
            raw.get(i + 1).copied().unwrap_or(0) << (8 - shift)
        };
        *o = lo | hi;
    }
    let tail = (bit_length % 8) as u32;
    if tail != 0
        && let Some(last) = out.last_mut()
    {
        *last &= (1u8 << tail) - 1;
    }
    Ok(out)
}

/// The stored bytes of frame `n` (1-based) of an indexed instance.
fn stored_frame(path: &Path, frames: &[Frame], n: u32) -> std::result::Result<Vec<u8>, String> {
    match frames.get(n as usize - 1) {
        Some(Frame::Bytes { fragments }) => {
            read_fragments(path, fragments).map_err(|e| e.to_string())
        }
        Some(Frame::Bits {
            bit_offset,
            bit_length,
        }) => read_bits(path, *bit_offset, *bit_length).map_err(|e| e.to_string()),
        None => Err(format!("frame {n} does not exist")),
    }
}

/// The bytes of frame `n` in `mode`. A frame that cannot be decoded is the decoder's error
/// (406 with its reason when the response has not started); unreadable files are 500s.
fn frame_bytes(path: &Path, rec: &InstanceRecord, n: u32, mode: &Mode) -> Result<Vec<u8>> {
    let io = |detail: String| Error::Internal { detail };
    match (&rec.frames, mode) {
        (FrameAccess::Indexed(frames), Mode::Raw(_)) => stored_frame(path, frames, n).map_err(io),
        (FrameAccess::Indexed(frames), Mode::Decode)
            if transcode::is_native(&rec.transfer_syntax) =>
        {
            stored_frame(path, frames, n).map_err(io)
        }
        // Decoded exactly as for rendering (one decoder path): only this frame's fragments,
        // the colour and bit-depth cases the codecs get wrong handled there.
        (FrameAccess::Indexed(_), Mode::Decode) | (FrameAccess::DecodeOnRequest, _) => {
            Ok(crate::render::pixels::decoded_samples(path, rec, n)?)
        }
        (FrameAccess::None, _) => Err(Error::NotFound("the instance has no pixel data".into())),
        (FrameAccess::Unknown(why), _) => Err(Error::NotAcceptable(format!(
            "the frames of this instance cannot be located: {why}"
        ))),
    }
}

/// [`frame_bytes`] for a part of a response already under way (its status is sent).
fn frame_part(
    path: &Path,
    rec: &InstanceRecord,
    n: u32,
    mode: &Mode,
) -> std::result::Result<Vec<u8>, String> {
    frame_bytes(path, rec, n, mode).map_err(|e| e.to_string())
}

/// `GET .../instances/{instance}/frames/{frames}`
pub async fn frames(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    path: web::Path<(StudyUid, SeriesUid, SopInstanceUid, String)>,
) -> Result<HttpResponse> {
    let (study, series, sop, list) = path.into_inner();
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept"])?;
    let numbers = parse_frame_list(&list)?;
    let ranges = media::requested_ranges(&req, &params)?;
    wado::require_audit(&state)?;
    let t = Target {
        study,
        series: Some(series),
        sop: Some(sop),
    };
    let rec = wado::locate_instance(&state, &principal, &t).await?;
    match &rec.frames {
        FrameAccess::None => {
            return Err(Error::NotFound(format!(
                "instance {} has no pixel data",
                rec.sop
            )));
        }
        FrameAccess::Unknown(why) => {
            return Err(Error::NotAcceptable(format!(
                "the frames of this instance could not be located when it was stored ({why}); retrieve the instance instead"
            )));
        }
        _ => {}
    }
    let count = rec.number_of_frames();
    if let Some(bad) = numbers.iter().find(|n| **n > count) {
        return Err(Error::NotFound(format!(
            "frame {bad} does not exist: the instance has {count} frame(s)"
        )));
    }
    // Deflated / big-endian data is decoded: it only goes out as native samples.
    let stored_ts = if matches!(rec.frames, FrameAccess::DecodeOnRequest) {
        EXPLICIT_LE.to_owned()
    } else {
        rec.transfer_syntax.clone()
    };
    let (mode, multipart) = negotiate_frames(&ranges, &stored_ts)?;
    if !multipart && numbers.len() > 1 {
        return Err(Error::NotAcceptable(
            "several frames need a multipart/related response".into(),
        ));
    }
    wado::audit_retrieve(&state, &principal, "frames", std::slice::from_ref(&rec));
    let content_type = match &mode {
        Mode::Raw(ct) => ct.clone(),
        Mode::Decode => format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}"),
    };
    let file = state.store.blobs.path(&rec.blob);
    let base = wado::dicomweb_base(&req, &state);
    let url = wado::instance_url(&base, &rec);
    if !multipart {
        let n = numbers[0];
        let body = web::block(move || frame_bytes(&file, &rec, n, &mode)).await??;
        return Ok(HttpResponse::Ok()
            .content_type(content_type)
            .insert_header((header::CONTENT_LOCATION, format!("{url}/frames/{n}")))
            .body(body));
    }
    let rec = std::sync::Arc::new(rec);
    let parts = numbers
        .into_iter()
        .map(|n| {
            let (file, rec, mode) = (file.clone(), rec.clone(), mode.clone());
            Part {
                headers: format!(
                    "Content-Type: {content_type}\r\nContent-Location: {url}/frames/{n}\r\n"
                ),
                body: PartBody::Lazy(Box::new(move || frame_part(&file, &rec, n, &mode))),
            }
        })
        .collect();
    let boundary = wado::new_boundary();
    let part_type = content_type
        .split(';')
        .next()
        .unwrap_or("application/octet-stream");
    Ok(HttpResponse::Ok()
        .content_type(format!(
            "multipart/related; type=\"{part_type}\"; boundary={boundary}"
        ))
        .streaming(wado::stream_parts(parts, Some(boundary))))
}

/// Follows a bulk data path (`00420011`, `00540016/0/00181072`) into the header of a file.
fn element_bytes(path: &Path, bulk: &str) -> std::result::Result<Option<Vec<u8>>, String> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("cannot read header: {e}"))?;
    let segs: Vec<&str> = bulk.split('/').collect();
    let parse_tag = |s: &str| -> Option<Tag> {
        (s.len() == 8)
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .map(|v| Tag((v >> 16) as u16, (v & 0xFFFF) as u16))
    };
    let mut current: &dicom_object::InMemDicomObject = &obj;
    let mut i = 0;
    loop {
        let Some(tag) = segs.get(i).and_then(|s| parse_tag(s)) else {
            return Ok(None);
        };
        let Some(elem) = current.get(tag) else {
            return Ok(None);
        };
        if i + 1 == segs.len() {
            return Ok(match elem.value() {
                Value::Primitive(p) => Some(p.to_bytes().into_owned()),
                _ => None,
            });
        }
        let Some(item) = segs.get(i + 1).and_then(|s| s.parse::<usize>().ok()) else {
            return Ok(None);
        };
        match elem.value() {
            Value::Sequence(seq) => match seq.items().get(item) {
                Some(it) => current = it,
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
        i += 2;
    }
}

/// A byte range request (`bytes=a-b`, `a-`, `-n`) on a body of `len` bytes. `None`: serve it
/// all (no Range, or several ranges).
fn byte_range(req: &HttpRequest, len: u64) -> Result<Option<(u64, u64)>> {
    let Some(v) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || Error::RangeNotSatisfiable {
        message: format!("range '{v}' is outside the {len} bytes of the resource"),
        length: len,
    };
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| Error::BadRequest(format!("invalid Range '{v}'")))?;
    let num = |s: &str| -> Result<u64> {
        s.trim()
            .parse()
            .map_err(|_| Error::BadRequest(format!("invalid Range '{v}'")))
    };
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Err(Error::BadRequest(format!("invalid Range '{v}'"))),
        (true, false) => {
            let n = num(b)?;
            if n == 0 {
                return Err(unsatisfiable());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (false, true) => (num(a)?, len.saturating_sub(1)),
        (false, false) => {
            let (s, e) = (num(a)?, num(b)?);
            if e < s {
                return Err(Error::BadRequest(format!("invalid Range '{v}'")));
            }
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len || len == 0 {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

/// `GET .../instances/{instance}/bulkdata/{path}`: one BulkDataURI of the metadata.
pub async fn bulkdata_path(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    path: web::Path<(StudyUid, SeriesUid, SopInstanceUid, String)>,
) -> Result<HttpResponse> {
    let (study, series, sop, bulk) = path.into_inner();
    let t = Target {
        study,
        series: Some(series),
        sop: Some(sop),
    };
    let bulk = bulk.trim_matches('/').to_ascii_uppercase();
    if bulk == "7FE00010" {
        // A BulkDataURI names one value: single part unless multipart is asked for.
        return pixeldata(req, principal, params, state, t, true).await;
    }
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept"])?;
    let ranges = media::requested_ranges(&req, &params)?;
    let offers = [
        Offer::new("application/octet-stream"),
        Offer::multipart("application/octet-stream"),
    ];
    let ranges = star_type_as_octet(&ranges);
    let chosen = media::negotiate(&ranges, &offers)?;
    wado::require_audit(&state)?;
    let rec = wado::locate_instance(&state, &principal, &t).await?;
    let file = state.store.blobs.path(&rec.blob);
    let b2 = bulk.clone();
    let bytes = web::block(move || element_bytes(&file, &b2))
        .await?
        .map_err(|e| Error::Internal { detail: e })?
        .ok_or_else(|| Error::NotFound(format!("no bulk data at {bulk}")))?;
    wado::audit_retrieve(&state, &principal, "bulkdata", std::slice::from_ref(&rec));
    let base = wado::dicomweb_base(&req, &state);
    let location = format!("{}/bulkdata/{bulk}", wado::instance_url(&base, &rec));
    if chosen.offer.type_param.is_some() {
        let boundary = wado::new_boundary();
        let parts = vec![Part {
            headers: format!(
                "Content-Type: application/octet-stream\r\nContent-Location: {location}\r\n"
            ),
            body: PartBody::Ready(Bytes::from(bytes)),
        }];
        return Ok(HttpResponse::Ok()
            .content_type(format!(
                "multipart/related; type=\"application/octet-stream\"; boundary={boundary}"
            ))
            .streaming(wado::stream_parts(parts, Some(boundary))));
    }
    single_with_range(&req, bytes, "application/octet-stream", &location)
}

/// A single-part body honouring `Range` (206 + Content-Range).
fn single_with_range(
    req: &HttpRequest,
    bytes: Vec<u8>,
    content_type: &str,
    location: &str,
) -> Result<HttpResponse> {
    let len = bytes.len() as u64;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_LOCATION, location.to_owned()))
        .content_type(content_type.to_owned());
    match byte_range(req, len)? {
        None => Ok(resp.body(bytes)),
        Some((s, e)) => Ok(resp
            .status(StatusCode::PARTIAL_CONTENT)
            .insert_header((header::CONTENT_RANGE, format!("bytes {s}-{e}/{len}")))
            .body(bytes[s as usize..=e as usize].to_vec())),
    }
}

/// `multipart/related; type="*/*"` asks for bulk data as stored: read as octet-stream parts.
fn star_type_as_octet(ranges: &[MediaRange]) -> Vec<MediaRange> {
    ranges
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.essence() == "multipart/related" && r.param("type") == Some("*/*") {
                r.params.retain(|(n, _)| n != "type");
                r.params
                    .push(("type".into(), "application/octet-stream".into()));
            }
            r
        })
        .collect()
}

/// Parts holding the Pixel Data of each instance: native data as one part, encapsulated data
/// one part per frame (as stored, or decoded when octet-stream without `*` was asked).
fn pixel_parts(state: &AppState, recs: Vec<InstanceRecord>, base: &str, decode: bool) -> Vec<Part> {
    let mut parts = Vec::new();
    for rec in recs {
        let file = state.store.blobs.path(&rec.blob);
        let url = wado::instance_url(base, &rec);
        let rec = std::sync::Arc::new(rec);
        let native = transcode::is_native(&rec.transfer_syntax)
            || matches!(rec.frames, FrameAccess::DecodeOnRequest);
        match &rec.frames {
            FrameAccess::None | FrameAccess::Unknown(_) => continue,
            _ if native => {
                let (file, rec2) = (file.clone(), rec.clone());
                parts.push(Part {
                    headers: format!(
                        "Content-Type: application/octet-stream; transfer-syntax={EXPLICIT_LE}\r\nContent-Location: {url}/bulkdata/7FE00010\r\n"
                    ),
                    body: PartBody::Lazy(Box::new(move || {
                        let mut all = Vec::new();
                        for n in 1..=rec2.number_of_frames() {
                            all.extend(frame_part(&file, &rec2, n, &Mode::Raw(String::new()))?);
                        }
                        Ok(all)
                    })),
                });
            }
            _ => {
                let can = decode && transcode::can_decode(&rec.transfer_syntax);
                let ct = if can {
                    format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}")
                } else {
                    format!(
                        "{}; transfer-syntax={}",
                        frame_media_type(&rec.transfer_syntax),
                        rec.transfer_syntax
                    )
                };
                let mode = if can {
                    Mode::Decode
                } else {
                    Mode::Raw(ct.clone())
                };
                for n in 1..=rec.number_of_frames() {
                    let (file, rec2, mode) = (file.clone(), rec.clone(), mode.clone());
                    parts.push(Part {
                        headers: format!(
                            "Content-Type: {ct}\r\nContent-Location: {url}/frames/{n}\r\n"
                        ),
                        body: PartBody::Lazy(Box::new(move || frame_part(&file, &rec2, n, &mode))),
                    });
                }
            }
        }
    }
    parts
}

fn wants_decoded(ranges: &[MediaRange]) -> bool {
    // Decode unless the client asked for data as stored.
    !ranges.iter().any(|r| {
        r.transfer_syntax() == Some("*")
            || r.param("type") == Some("*/*")
            || (r.type_ == "image" || r.param("type").is_some_and(|t| t.starts_with("image/")))
    })
}

/// `GET .../pixeldata` of a study, series or instance.
pub async fn pixeldata_of(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    pixeldata(req, principal, params, state, t, false).await
}

async fn pixeldata(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
    prefer_single: bool,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept"])?;
    let ranges = media::requested_ranges(&req, &params)?;
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    let recs = web::block(move || wado::locate(&st, &who, &target)).await??;
    // Single part only makes sense for one native instance.
    let single_ok = prefer_single
        && recs.len() == 1
        && (transcode::is_native(&recs[0].transfer_syntax)
            || matches!(recs[0].frames, FrameAccess::DecodeOnRequest));
    let offers: Vec<Offer> = if single_ok {
        vec![
            Offer::new("application/octet-stream"),
            Offer::multipart("application/octet-stream"),
        ]
    } else {
        vec![
            Offer::multipart("application/octet-stream"),
            Offer::new("application/octet-stream"),
        ]
    };
    let octet_ranges = star_type_as_octet(&ranges);
    // Compressed frames go as their own media types inside the multipart body: accept any
    // multipart/related range here.
    let chosen = media::negotiate(&octet_ranges, &offers).or_else(|e| {
        if ranges.iter().any(|r| r.essence() == "multipart/related") {
            Ok(media::Negotiated {
                offer: &offers[0],
                index: 0,
                range: ranges[0].clone(),
            })
        } else {
            Err(e)
        }
    })?;
    wado::require_audit(&state)?;
    let base = wado::dicomweb_base(&req, &state);
    let decode = wants_decoded(&ranges);
    // One native instance, single part: Range applies.
    if chosen.offer.type_param.is_none() {
        if recs.len() != 1
            || !(transcode::is_native(&recs[0].transfer_syntax)
                || matches!(recs[0].frames, FrameAccess::DecodeOnRequest))
        {
            return Err(Error::NotAcceptable(
                "encapsulated or multi-instance pixel data needs multipart/related".into(),
            ));
        }
        let rec = recs[0].clone();
        if matches!(rec.frames, FrameAccess::None) {
            return Err(Error::NotFound("the instance has no pixel data".into()));
        }
        wado::audit_retrieve(&state, &principal, "pixeldata", &recs);
        let file = state.store.blobs.path(&rec.blob);
        let location = format!("{}/bulkdata/7FE00010", wado::instance_url(&base, &rec));
        let r2 = rec.clone();
        let bytes = web::block(move || -> Result<Vec<u8>> {
            let mut all = Vec::new();
            for n in 1..=r2.number_of_frames() {
                all.extend(frame_bytes(&file, &r2, n, &Mode::Raw(String::new()))?);
            }
            Ok(all)
        })
        .await??;
        return single_with_range(
            &req,
            bytes,
            &format!("application/octet-stream; transfer-syntax={EXPLICIT_LE}"),
            &location,
        );
    }
    wado::audit_retrieve(&state, &principal, "pixeldata", &recs);
    let parts = pixel_parts(&state, recs, &base, decode);
    if parts.is_empty() {
        return Err(Error::NotFound("no pixel data".into()));
    }
    let boundary = wado::new_boundary();
    Ok(HttpResponse::Ok()
        .content_type(format!(
            "multipart/related; type=\"application/octet-stream\"; boundary={boundary}"
        ))
        .streaming(wado::stream_parts(parts, Some(boundary))))
}

/// Every bulk data path in a metadata template (`bulkdata/...` values).
fn bulk_paths(raw: &[u8]) -> Vec<String> {
    const NEEDLE: &[u8] = b"\"BulkDataURI\":\"bulkdata/";
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(i) = memchr::memmem::find(rest, NEEDLE) {
        rest = &rest[i + NEEDLE.len()..];
        if let Some(end) = memchr::memchr(b'"', rest) {
            out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
    }
    out
}

/// `GET .../bulkdata` of a study, series or instance.
pub async fn bulkdata_all(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
    t: Target,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept"])?;
    let ranges = media::requested_ranges(&req, &params)?;
    let octet_ranges = star_type_as_octet(&ranges);
    let offers = [Offer::multipart("application/octet-stream")];
    media::negotiate(&octet_ranges, &offers)?;
    wado::require_audit(&state)?;
    let (st, who, target) = (state.clone(), principal.clone(), t.clone());
    let recs = web::block(move || wado::locate(&st, &who, &target)).await??;
    wado::audit_retrieve(&state, &principal, "bulkdata", &recs);
    let base = wado::dicomweb_base(&req, &state);
    let decode = wants_decoded(&ranges);
    let st = state.clone();
    let recs2 = recs.clone();
    let others = web::block(move || -> Result<Vec<(InstanceRecord, Vec<String>)>> {
        let mut out = Vec::new();
        for r in recs2 {
            let raw = st.store.repo.metadata_raw(&r.sop)?.unwrap_or_default();
            let paths: Vec<String> = bulk_paths(&raw)
                .into_iter()
                .filter(|p| p != "7FE00010")
                .collect();
            out.push((r, paths));
        }
        Ok(out)
    })
    .await??;
    let mut parts = Vec::new();
    for (rec, paths) in others {
        let file = state.store.blobs.path(&rec.blob);
        let url = wado::instance_url(&base, &rec);
        for p in paths {
            let file = file.clone();
            parts.push(Part {
                headers: format!(
                    "Content-Type: application/octet-stream\r\nContent-Location: {url}/bulkdata/{p}\r\n"
                ),
                body: PartBody::Lazy(Box::new(move || {
                    element_bytes(&file, &p)?.ok_or_else(|| format!("bulk data {p} vanished"))
                })),
            });
        }
    }
    parts.extend(pixel_parts(&state, recs, &base, decode));
    if parts.is_empty() {
        return Err(Error::NotFound("no bulk data".into()));
    }
    let boundary = wado::new_boundary();
    Ok(HttpResponse::Ok()
        .content_type(format!(
            "multipart/related; type=\"application/octet-stream\"; boundary={boundary}"
        ))
        .streaming(wado::stream_parts(parts, Some(boundary))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists() {
        assert_eq!(parse_frame_list("1,3%2C5").unwrap(), [1, 3, 5]);
        assert!(matches!(parse_frame_list("1,1"), Err(Error::BadRequest(_))));
        assert!(matches!(parse_frame_list("0"), Err(Error::NotFound(_))));
        assert!(matches!(parse_frame_list("a"), Err(Error::BadRequest(_))));
    }

    #[test]
    fn media_types_of_frames() {
        assert_eq!(frame_media_type("1.2.840.10008.1.2.4.50"), "image/jpeg");
        assert_eq!(frame_media_type("1.2.840.10008.1.2.4.80"), "image/jls");
        assert_eq!(frame_media_type("1.2.840.10008.1.2.4.90"), "image/jp2");
        assert_eq!(frame_media_type("1.2.840.10008.1.2.5"), "image/dicom-rle");
        assert_eq!(frame_media_type(EXPLICIT_LE), "application/octet-stream");
    }

    #[test]
    fn frame_negotiation() {
        let r = |s: &str| media::parse_accept(s).unwrap();
        let jpeg = "1.2.840.10008.1.2.4.50";
        assert_eq!(
            negotiate_frames(&r("*/*"), EXPLICIT_LE).unwrap(),
            (
                Mode::Raw(format!(
                    "application/octet-stream; transfer-syntax={EXPLICIT_LE}"
                )),
                true
            )
        );
        assert_eq!(
            negotiate_frames(&r("*/*"), jpeg).unwrap(),
            (Mode::Decode, true)
        );
        assert_eq!(
            negotiate_frames(&r("multipart/related; type=\"image/jpeg\""), jpeg)
                .unwrap()
                .0,
            Mode::Raw(format!("image/jpeg; transfer-syntax={jpeg}"))
        );
        assert_eq!(
            negotiate_frames(
                &r("multipart/related; type=application/octet-stream; transfer-syntax=*"),
                jpeg
            )
            .unwrap()
            .0,
            Mode::Raw(format!("application/octet-stream; transfer-syntax={jpeg}"))
        );
        assert!(
            !negotiate_frames(&r("application/octet-stream"), EXPLICIT_LE)
                .unwrap()
                .1
        );
        assert!(negotiate_frames(&r("image/jpeg"), EXPLICIT_LE).is_err());
        assert!(
            negotiate_frames(
                &r("multipart/related; type=\"image/jls\""),
                "1.2.840.10008.1.2.4.201"
            )
            .is_err()
        );
    }

    #[test]
    fn one_bit_frames_shift_to_bit_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        // bits (LSB first): byte0 = 0b1011_0000 → frame starting at bit 4: 1,1,0,1 then byte1.
        std::fs::write(&p, [0b1011_0000u8, 0b0000_0110]).unwrap();
        assert_eq!(read_bits(&p, 4, 8).unwrap(), [0b0110_1011]);
        assert_eq!(read_bits(&p, 4, 3).unwrap(), [0b011]);
    }
}
