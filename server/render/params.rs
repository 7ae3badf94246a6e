//! Query parameters of the rendered and thumbnail resources (PS3.18 8.3.5.1).

use crate::error::{Error, Result};
use crate::http::query::QueryParams;

/// VOI LUT Function of a window (PS3.3 C.11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// `window=center,width[,function]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowParam {
    pub center: f64,
    pub width: f64,
    /// `None` when the parameter gave two values: the dataset's VOI LUT Function applies.
    pub function: Option<VoiFunction>,
}

/// `viewport=vw,vh[,sx,sy,sw,sh]` (PS3.18 8.3.5.1.3): any value may be elided.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Viewport {
    pub vw: Option<u32>,
    pub vh: Option<u32>,
    pub sx: Option<f64>,
    pub sy: Option<f64>,
    /// Negative: the region is flipped horizontally.
    pub sw: Option<f64>,
    /// Negative: the region is flipped vertically.
    pub sh: Option<f64>,
}

/// Output formats. Every rendered output has 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Gif => "gif",
        }
    }

    pub fn of_media_type(essence: &str) -> Option<Format> {
        match essence {
            "image/jpeg" => Some(Format::Jpeg),
            "image/png" => Some(Format::Png),
            "image/gif" => Some(Format::Gif),
            _ => None,
        }
    }
}

/// JPEG quality when none is asked for.
pub const DEFAULT_QUALITY: u8 = 90;

/// Annotation keywords of PS3.18 8.3.5.1.1; Lightbox burns in none of them.
const ANNOTATIONS: &[&str] = &["patient", "technique"];

/// The parsed rendering parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    pub viewport: Option<Viewport>,
    pub window: Option<WindowParam>,
    pub quality: Option<u8>,
    /// Requested annotations, which are not rendered (answered with a `Warning`).
    pub annotation: Vec<String>,
}

/// The parameters a rendered resource accepts.
pub const RENDERED_PARAMS: &[&str] = &[
    "accept",
    "viewport",
    "window",
    "quality",
    "annotation",
    "iccprofile",
];
/// The parameters a thumbnail resource accepts.
pub const THUMBNAIL_PARAMS: &[&str] = &["accept", "viewport", "quality", "iccprofile"];

fn bad(name: &str, value: &str, why: &str) -> Error {
    Error::BadRequest(format!("query parameter {name}={value:?}: {why}"))
}

fn number(name: &str, whole: &str, v: &str) -> Result<f64> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| bad(name, whole, &format!("{v:?} is not a number")))?;
    if !x.is_finite() {
        return Err(bad(name, whole, "values must be finite"));
    }
    Ok(x)
}

fn single<'a>(params: &'a QueryParams, name: &'a str) -> Result<Option<&'a str>> {
    let mut all = params.get_all(name);
    let first = all.next();
    if all.next().is_some() {
        return Err(Error::BadRequest(format!(
            "query parameter {name} is given more than once"
        )));
    }
    Ok(first)
}

fn parse_viewport(v: &str, thumbnail: bool) -> Result<Viewport> {
    let name = "viewport";
    let parts: Vec<&str> = v.split(',').collect();
    let allowed: &[usize] = if thumbnail { &[2] } else { &[2, 6] };
    if !allowed.contains(&parts.len()) {
        return Err(bad(
            name,
            v,
            if thumbnail {
                "a thumbnail takes vw,vh"
            } else {
                "expected vw,vh or vw,vh,sx,sy,sw,sh"
            },
        ));
    }
    let size = |s: &str| -> Result<Option<u32>> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        match s.trim().parse::<u32>() {
            Ok(n) if (1..=16384).contains(&n) => Ok(Some(n)),
            _ => Err(bad(
                name,
                v,
                &format!("{s:?} is not a size in pixels from 1 to 16384"),
            )),
        }
    };
    let opt = |s: &str| -> Result<Option<f64>> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            number(name, v, s).map(Some)
        }
    };
    let mut vp = Viewport {
        vw: size(parts[0])?,
        vh: size(parts[1])?,
        ..Viewport::default()
    };
    if parts.len() == 6 {
        vp.sx = opt(parts[2])?;
        vp.sy = opt(parts[3])?;
        vp.sw = opt(parts[4])?;
        vp.sh = opt(parts[5])?;
        if vp.sx.is_some_and(|x| x < 0.0) || vp.sy.is_some_and(|y| y < 0.0) {
            return Err(bad(name, v, "sx and sy must not be negative"));
        }
        if vp.sw == Some(0.0) || vp.sh == Some(0.0) {
            return Err(bad(name, v, "sw and sh must not be zero"));
        }
    }
    Ok(vp)
}

fn parse_window(v: &str) -> Result<WindowParam> {
    let name = "window";
    let parts: Vec<&str> = v.split(',').collect();
    if parts.len() != 2 && parts.len() != 3 {
        return Err(bad(name, v, "expected center,width,function"));
    }
    let center = number(name, v, parts[0])?;
    let width = number(name, v, parts[1])?;
    let function = match parts.get(2).map(|f| f.trim().to_ascii_lowercase()) {
        None => None,
        Some(f) => Some(match f.as_str() {
            "linear" => VoiFunction::Linear,
            "linear-exact" => VoiFunction::LinearExact,
            "sigmoid" => VoiFunction::Sigmoid,
            other => {
                return Err(bad(
                    name,
                    v,
                    &format!("function {other:?} is not linear, linear-exact or sigmoid"),
                ));
            }
        }),
    };
    let min = if function == Some(VoiFunction::Linear) || function.is_none() {
        1.0
    } else {
        f64::MIN_POSITIVE
    };
    if width < min {
        return Err(bad(
            name,
            v,
            if min == 1.0 {
                "the width of a linear window must be at least 1"
            } else {
                "the width must be greater than 0"
            },
        ));
    }
    Ok(WindowParam {
        center,
        width,
        function,
    })
}

/// Parses and validates the rendering parameters; a malformed or out-of-range value is a 400
/// naming the parameter. `thumbnail` restricts the viewport to `vw,vh`.
pub fn parse(params: &QueryParams, thumbnail: bool) -> Result<Params> {
    params.reject_unknown(if thumbnail {
        THUMBNAIL_PARAMS
    } else {
        RENDERED_PARAMS
    })?;
    let mut out = Params::default();
    if let Some(v) = single(params, "viewport")? {
        out.viewport = Some(parse_viewport(v, thumbnail)?);
    }
    if let Some(v) = single(params, "window")? {
        out.window = Some(parse_window(v)?);
    }
    if let Some(v) = single(params, "quality")? {
        match v.trim().parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => out.quality = Some(q),
            _ => return Err(bad("quality", v, "expected an integer from 1 to 100")),
        }
    }
    if let Some(v) = single(params, "iccprofile")?
        && !v.eq_ignore_ascii_case("no")
    {
        return Err(bad(
            "iccprofile",
            v,
            "only \"no\" is supported (no ICC profile is embedded)",
        ));
    }
    for v in params.get_all("annotation") {
        for word in v.split(',') {
            let w = word.trim().to_ascii_lowercase();
            if !ANNOTATIONS.contains(&w.as_str()) {
                return Err(bad(
                    "annotation",
                    v,
                    &format!("{word:?} is not an annotation keyword (patient, technique)"),
                ));
            }
            out.annotation.push(w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str, thumb: bool) -> Result<Params> {
        parse(&QueryParams::parse(q).unwrap(), thumb)
    }

    #[test]
    fn viewport_values_may_be_elided_and_flipped() {
        let v = p("viewport=256,,10,,-100,", false)
            .unwrap()
            .viewport
            .unwrap();
        assert_eq!(v.vw, Some(256));
        assert_eq!(v.vh, None);
        assert_eq!(v.sx, Some(10.0));
        assert_eq!(v.sw, Some(-100.0));
        assert!(p("viewport=256,256,0,0,10,10", true).is_err());
        assert!(p("viewport=0,10", false).is_err());
        assert!(p("viewport=a,10", false).is_err());
        assert!(p("viewport=10", false).is_err());
    }

    #[test]
    fn window_function_and_refusals() {
        let w = p("window=40,400,sigmoid", false).unwrap().window.unwrap();
        assert_eq!(w.function, Some(VoiFunction::Sigmoid));
        assert_eq!(
            p("window=40,400", false).unwrap().window.unwrap().function,
            None
        );
        for bad in [
            "window=40",
            "window=40,0",
            "window=40,400,cubic",
            "window=x,1",
        ] {
            let e = p(bad, false).unwrap_err().to_string();
            assert!(e.contains("window"), "{bad}: {e}");
        }
    }

    #[test]
    fn quality_and_annotation() {
        assert_eq!(p("quality=55", false).unwrap().quality, Some(55));
        assert!(p("quality=0", false).is_err());
        assert!(p("quality=101", false).is_err());
        assert_eq!(
            p("annotation=patient,technique", false).unwrap().annotation,
            vec!["patient", "technique"]
        );
        assert!(p("annotation=<b>", false).is_err());
        assert!(p("window=1,2", true).is_err(), "thumbnails take no window");
    }
}
