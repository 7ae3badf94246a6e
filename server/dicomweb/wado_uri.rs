//! WADO-URI (PS3.18 chapter 9): `GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`
//! for viewers and gateways that predate WADO-RS. Same sign-in, access policy and audit as
//! WADO-RS: an object the caller may not see is a 404, like one that does not exist, and so is
//! a series that is not in the study or an object that is not in the series.
//!
//! Parameters (names are case-sensitive):
//! - `requestType=WADO`, `studyUID`, `seriesUID`, `objectUID`: required; a missing or malformed
//!   one is a 400 naming it.
//! - `contentType`: a comma list of media types without parameters (a parameter, e.g.
//!   `image/jpeg;q=0.5`, is a 400); the first supported one wins, and it must be allowed by the
//!   `Accept` header (else 406). Supported: `application/dicom`, and `image/jpeg`, `image/png`,
//!   `image/gif` (rendered; [`rendered`]). DICOM and image types mixed in one list: 400
//!   (PS3.18 8.3.3.1).
//! - No `contentType`: `Accept` decides between `image/jpeg` (preferred at equal weight, and
//!   what `*/*` or no `Accept` gets, PS3.18 9.4.1) and `application/dicom`; neither: 406.
//! - `transferSyntax` (application/dicom only): the Part 10 file is sent in it, converted when
//!   needed; one that cannot be produced is a 406 naming what can. Absent: Explicit VR Little
//!   Endian, except lossy data that stays as stored (the WADO-RS rules).
//! - Rendering parameters (rendered types only; with application/dicom they are a 400):
//!   `rows`, `columns` (positive integers), `windowCenter` + `windowWidth` (numbers, both or
//!   neither, width > 0), `imageQuality` (1..100), `region` (four decimals 0..1, x1 < x2,
//!   y1 < y2), `frameNumber` (≥ 1). Malformed: 400 naming the parameter.
//! - `anonymize`, `annotation`, `presentationUID`/`presentationSeriesUID`: not supported, and
//!   refused with a 400 that says so rather than silently ignored (the result would not be what
//!   was asked for: identifiable data, or an image without its presentation state).
//! - `charset`: accepted and ignored (a Part 10 file and images carry no text encoding choice).
//! - Any other parameter is ignored, as PS3.18 8.3 asks of origin servers.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::wado::{self, Part, PartBody, Target};
use crate::access::{self, Action, Principal};
use crate::dicom::transcode::{self, Want};
use crate::error::{Error, Result};
use crate::http::media::{self, MediaRange, Offer};
use crate::http::query::QueryParams;
use crate::ids::{SeriesUid, SopInstanceUid, StudyUid, Uid};
use crate::state::AppState;
use crate::store::records::InstanceRecord;

const DICOM: &str = "application/dicom";
const RENDERED: &[&str] = &["image/jpeg", "image/png", "image/gif"];
/// Without `contentType`: JPEG first (the default of PS3.18 9.4.1 for images).
const DEFAULT_OFFERS: &[Offer] = &[Offer::new("image/jpeg"), Offer::new(DICOM)];

/// The rendering parameters of a WADO-URI request, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UriRender {
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    /// (windowCenter, windowWidth).
    pub window: Option<(f64, f64)>,
    /// imageQuality, 1..=100.
    pub quality: Option<u8>,
    /// region: x1, y1, x2, y2 as fractions of the image (0..1).
    pub region: Option<[f64; 4]>,
    /// frameNumber, from 1.
    pub frame: Option<u32>,
}

impl UriRender {
    fn is_empty(&self) -> bool {
        *self == UriRender::default()
    }
}

/// `/wado` at the root, under the same guard as `/dicom-web`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(retrieve));
}

fn bad(param: &str, why: &str) -> Error {
    Error::BadRequest(format!("{param}: {why}"))
}

fn uid(params: &QueryParams, name: &str) -> Result<Uid> {
    let v = params
        .get(name)
        .ok_or_else(|| bad(name, "required parameter is missing"))?;
    Uid::parse(v).map_err(|e| bad(name, &format!("not a valid UID: {e}")))
}

fn positive(params: &QueryParams, name: &str) -> Result<Option<u32>> {
    params
        .get(name)
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(name, "must be a positive integer"))
        })
        .transpose()
}

fn number(params: &QueryParams, name: &str) -> Result<Option<f64>> {
    params
        .get(name)
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| bad(name, "must be a decimal number"))
        })
        .transpose()
}

/// Parse and check the rendering parameters.
pub fn parse_render(params: &QueryParams) -> Result<UriRender> {
    let rows = positive(params, "rows")?;
    let columns = positive(params, "columns")?;
    let frame = positive(params, "frameNumber")?;
    let window = match (
        number(params, "windowCenter")?,
        number(params, "windowWidth")?,
    ) {
        (None, None) => None,
        (Some(_), None) => return Err(bad("windowCenter", "needs windowWidth too")),
        (None, Some(_)) => return Err(bad("windowWidth", "needs windowCenter too")),
        (Some(_), Some(w)) if w <= 0.0 => {
            return Err(bad("windowWidth", "must be greater than 0"));
        }
        (Some(c), Some(w)) => Some((c, w)),
    };
    let quality = params
        .get("imageQuality")
        .map(|v| {
            v.trim()
                .parse::<u8>()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| bad("imageQuality", "must be an integer from 1 to 100"))
        })
        .transpose()?;
    let region = params
        .get("region")
        .map(|v| {
            let why = "must be four decimals from 0 to 1 (x1,y1,x2,y2) with x1 < x2 and y1 < y2";
            let n: Vec<f64> = v
                .split(',')
                .map(|p| p.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad("region", why))?;
            match n[..] {
                [x1, y1, x2, y2]
                    if n.iter().all(|c| (0.0..=1.0).contains(c)) && x1 < x2 && y1 < y2 =>
                {
                    Ok([x1, y1, x2, y2])
                }
                _ => Err(bad("region", why)),
            }
        })
        .transpose()?;
    Ok(UriRender {
        rows,
        columns,
        window,
        quality,
        region,
        frame,
    })
}

/// The media types of `contentType`, lowercased, in order. Parameters are refused.
fn content_types(params: &QueryParams) -> Result<Option<Vec<String>>> {
    let Some(v) = params.get("contentType") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t.contains(';') {
            return Err(bad(
                "contentType",
                "media type parameters are not allowed here (use transferSyntax for the transfer syntax)",
            ));
        }
        let r = MediaRange::parse(t).map_err(|_| bad("contentType", "not a media type"))?;
        out.push(r.essence());
    }
    if out.is_empty() {
        return Err(bad("contentType", "empty"));
    }
    Ok(Some(out))
}

/// The `Accept` header only (WADO-URI's query parameter is `contentType`, not `accept`).
fn accept_ranges(req: &HttpRequest) -> Result<Vec<MediaRange>> {
    let mut ranges = Vec::new();
    for value in req.headers().get_all(header::ACCEPT) {
        let s = value.to_str().map_err(|_| {
            Error::BadRequest("the Accept header contains non-ASCII characters".into())
        })?;
        ranges.extend(media::parse_accept_lenient(s)?);
    }
    if ranges.is_empty() {
        ranges.push(MediaRange::any());
    }
    Ok(ranges)
}

/// The media type of the response.
fn choose(req: &HttpRequest, types: Option<Vec<String>>) -> Result<&'static str> {
    let accept = accept_ranges(req)?;
    let Some(types) = types else {
        return Ok(media::negotiate(&accept, DEFAULT_OFFERS)?.offer.media_type);
    };
    let rendered = |t: &str| t.starts_with("image/") || t.starts_with("video/");
    if types.iter().any(|t| t == DICOM) && types.iter().any(|t| rendered(t)) {
        return Err(bad(
            "contentType",
            "DICOM and rendered media types may not be mixed",
        ));
    }
    let chosen = types
        .iter()
        .find_map(|t| {
            std::iter::once(DICOM)
                .chain(RENDERED.iter().copied())
                .find(|s| s == t)
        })
        .ok_or_else(|| {
            Error::NotAcceptable(format!(
                "contentType: none of {} is supported; available: {DICOM}, {}",
                types.join(", "),
                RENDERED.join(", ")
            ))
        })?;
    // PS3.18 8.3.3.1: the type asked for must also be acceptable by the Accept header.
    let offer = [Offer::new(chosen)];
    media::negotiate(&accept, &offer).map_err(|_| {
        Error::NotAcceptable(format!(
            "contentType {chosen} is not allowed by the Accept header"
        ))
    })?;
    Ok(chosen)
}

/// `GET /wado`
pub async fn retrieve(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    if params.get("requestType") != Some("WADO") {
        return Err(bad("requestType", "required, and must be WADO"));
    }
    let study = StudyUid(uid(&params, "studyUID")?);
    let series = SeriesUid(uid(&params, "seriesUID")?);
    let sop = SopInstanceUid(uid(&params, "objectUID")?);
    for (name, why) in [
        ("anonymize", "anonymize is not supported"),
        (
            "annotation",
            "annotation is not supported (no text is burned into images)",
        ),
        (
            "presentationUID",
            "presentation states are not supported in rendering",
        ),
        (
            "presentationSeriesUID",
            "presentation states are not supported in rendering",
        ),
    ] {
        if params.get(name).is_some() {
            return Err(bad(name, why));
        }
    }
    let transfer_syntax = params
        .get("transferSyntax")
        .map(|v| {
            Uid::parse(v)
                .map(|u| u.as_str().to_owned())
                .map_err(|e| bad("transferSyntax", &format!("not a valid UID: {e}")))
        })
        .transpose()?;
    let render = parse_render(&params)?;
    let media_type = choose(&req, content_types(&params)?)?;
    if media_type == DICOM && !render.is_empty() {
        return Err(Error::BadRequest(
            "rows, columns, windowCenter, windowWidth, imageQuality, region and frameNumber \
             apply to rendered images only, not to application/dicom"
                .into(),
        ));
    }
    if media_type != DICOM && transfer_syntax.is_some() {
        return Err(bad("transferSyntax", "applies to application/dicom only"));
    }
    wado::require_audit(&state)?;
    let t = Target {
        study,
        series: Some(series),
        sop: Some(sop),
    };
    let rec = wado::locate_instance(&state, &principal, &t).await?;
    if media_type == DICOM {
        return dicom(&state, &principal, rec, transfer_syntax.as_deref());
    }
    rendered(state, &principal, rec, media_type, render).await
}

/// The Part 10 file, single body.
fn dicom(
    state: &AppState,
    principal: &Principal,
    rec: InstanceRecord,
    transfer_syntax: Option<&str>,
) -> Result<HttpResponse> {
    let want = Want::from_param(transfer_syntax);
    let ts = transcode::plan(&rec.transfer_syntax, &want).ok_or_else(|| {
        Error::NotAcceptable(format!(
            "transferSyntax {}: the object is stored as {} and can be sent as that or converted to: {}",
            transfer_syntax.unwrap_or("(default)"),
            rec.transfer_syntax,
            transcode::TARGETS.join(", ")
        ))
    })?;
    wado::audit_retrieve(state, principal, "wado-uri", std::slice::from_ref(&rec));
    let path = state.store.blobs.path(&rec.blob);
    let convert = ts != rec.transfer_syntax;
    let mut resp = HttpResponse::Ok();
    resp.content_type(DICOM);
    if !convert {
        resp.no_chunking(rec.size);
    }
    let part = Part {
        headers: String::new(),
        body: if convert {
            PartBody::Convert(path, ts)
        } else {
            PartBody::File(path)
        },
    };
    Ok(resp.streaming(wado::stream_parts(vec![part], None)))
}

/// A rendered image (`image/jpeg`, `image/png`, `image/gif`) of a located, visible object,
/// through the same pipeline as the WADO-RS rendered resources. `rows`/`columns` fit the image
/// (aspect kept, like a viewport's `vw`/`vh`); `region` is the source rectangle in fractions of
/// the image; `windowCenter`/`windowWidth` override the dataset's window (its VOI LUT Function
/// applies, else linear).
async fn rendered(
    state: web::Data<AppState>,
    principal: &Principal,
    rec: InstanceRecord,
    media_type: &'static str,
    render: UriRender,
) -> Result<HttpResponse> {
    use crate::render::params::{Format, Params, Viewport, WindowParam};
    let format = Format::of_media_type(media_type)
        .ok_or_else(|| Error::NotAcceptable(format!("{media_type} cannot be rendered")))?;
    let (cols, rows) = super::rendered::image_size(&rec);
    let mut viewport = Viewport {
        vw: render.columns,
        vh: render.rows,
        ..Viewport::default()
    };
    if let Some([x1, y1, x2, y2]) = render.region {
        let (c, r) = (f64::from(cols.unwrap_or(0)), f64::from(rows.unwrap_or(0)));
        if c == 0.0 || r == 0.0 {
            return Err(Error::NotAcceptable(
                "this object has no image to take a region of".into(),
            ));
        }
        viewport.sx = Some(x1 * c);
        viewport.sy = Some(y1 * r);
        viewport.sw = Some((x2 - x1) * c);
        viewport.sh = Some((y2 - y1) * r);
    }
    let params = Params {
        viewport: (viewport != Viewport::default()).then_some(viewport),
        window: render.window.map(|(center, width)| WindowParam {
            center,
            width,
            function: None,
        }),
        quality: render.quality,
        annotation: Vec::new(),
    };
    wado::audit_retrieve(&state, principal, "wado-uri", std::slice::from_ref(&rec));
    let bytes = super::rendered::render_now(&state, rec, render.frame, params, format).await?;
    Ok(HttpResponse::Ok()
        .content_type(media_type)
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryParams {
        QueryParams::parse(s).unwrap()
    }

    #[test]
    fn render_parameters_are_checked() {
        let r = parse_render(&q(
            "rows=10&columns=20&windowCenter=40&windowWidth=400&imageQuality=80&region=0,0.1,0.5,1&frameNumber=2",
        ))
        .unwrap();
        assert_eq!(r.rows, Some(10));
        assert_eq!(r.window, Some((40.0, 400.0)));
        assert_eq!(r.region, Some([0.0, 0.1, 0.5, 1.0]));
        assert_eq!(r.frame, Some(2));
        for (bad_query, name) in [
            ("rows=0", "rows"),
            ("columns=-3", "columns"),
            ("windowCenter=1", "windowCenter"),
            ("windowWidth=1", "windowWidth"),
            ("windowCenter=1&windowWidth=0", "windowWidth"),
            ("windowCenter=x&windowWidth=2", "windowCenter"),
            ("imageQuality=0", "imageQuality"),
            ("imageQuality=101", "imageQuality"),
            ("region=0,0,1", "region"),
            ("region=0.5,0,0.4,1", "region"),
            ("region=0,0,1,1.5", "region"),
            ("frameNumber=0", "frameNumber"),
        ] {
            let e = parse_render(&q(bad_query)).unwrap_err();
            assert!(
                matches!(&e, Error::BadRequest(m) if m.starts_with(name)),
                "{bad_query}: {e}"
            );
        }
    }

    #[test]
    fn content_type_lists() {
        assert_eq!(
            content_types(&q("contentType=image/png,image/jpeg"))
                .unwrap()
                .unwrap(),
            vec!["image/png", "image/jpeg"]
        );
        assert!(content_types(&q("contentType=image/jpeg;q=0.5")).is_err());
        assert!(content_types(&q("contentType=")).is_err());
        assert!(content_types(&q("x=1")).unwrap().is_none());
    }
}
