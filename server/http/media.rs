//! Media-type negotiation for every DICOMweb response (PS3.18 8.7, RFC 9110 12.5.1).
//!
//! Owns parsing `Accept` values into [`MediaRange`]s, the `accept` query parameter override
//! (PS3.18 8.3.3.1) and choosing one of the media types a route can produce ([`Offer`]) with
//! [`negotiate`]. It does not decide *what* a route offers, nor which transfer syntaxes are
//! possible: the route lists its offers in order of preference and reads `transfer-syntax` /
//! `charset` from the winning [`Negotiated::range`] (PS3.18 8.7.3). If only some transfer
//! syntaxes can be produced, use [`negotiate_with`] so that an impossible range does not win.
//!
//! Real clients are inconsistent about quoting: dcmjs and OHIF send
//! `multipart/related; type=application/octet-stream; transfer-syntax=*` unquoted, the standard
//! quotes (`type="application/dicom"`, PS3.18 8.7.3.5.1), and both must work. Parameter values are
//! kept as given (only unquoted); names, types and subtypes are compared case-insensitively.
//!
//! ```text
//! const OFFERS: &[Offer] = &[
//!     Offer::new("application/dicom+json"),
//!     Offer::multipart("application/dicom+xml"),
//! ];
//! let ranges = requested_ranges(&req, &query)?;
//! let chosen = negotiate(&ranges, OFFERS)?; // 406 names both types when nothing fits
//! ```

use std::fmt;

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::error::{Error, Result};
use crate::http::query::QueryParams;

/// One element of an `Accept` list, e.g. `multipart/related; type="application/dicom"; q=0.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// Lowercased top-level type, `*` for any.
    pub type_: String,
    /// Lowercased subtype, `*` for any.
    pub subtype: String,
    /// Parameters other than `q`, in order: lowercased names, unquoted values as given.
    pub params: Vec<(String, String)>,
    /// The weight, 0.0..=1.0 (default 1.0); 0 means "not acceptable" (RFC 9110 12.4.2).
    pub q: f32,
}

impl MediaRange {
    /// `*/*` with weight 1: what a request without `Accept` asks for (RFC 9110 12.5.1).
    pub fn any() -> Self {
        MediaRange {
            type_: "*".into(),
            subtype: "*".into(),
            params: Vec::new(),
            q: 1.0,
        }
    }

    /// Parses one media range. A bare `*` (sent by Java's `HttpURLConnection`) is read as `*/*`,
    /// and a weight written `.5` is accepted as `0.5`.
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming the range: missing `/`, characters outside the token set,
    /// `*/subtype`, a parameter without `=`, an unterminated quoted string, a repeated `q` or a
    /// `q` that is not 0..=1 with at most three decimals.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        Self::parse_inner(s)
            .map_err(|why| Error::BadRequest(format!("invalid media range '{}': {why}", clip(s))))
    }

    fn parse_inner(s: &str) -> std::result::Result<Self, String> {
        let mut parts = split_unquoted(s, b';')?.into_iter();
        let essence = parts.next().unwrap_or_default().trim();
        let (type_, subtype) = match essence {
            "*" => ("*", "*"),
            "" => return Err("empty media type".into()),
            e => e
                .split_once('/')
                .ok_or_else(|| "expected type/subtype".to_string())?,
        };
        if !is_token(type_) || !is_token(subtype) {
            return Err("expected type/subtype made of token characters".into());
        }
        if type_ == "*" && subtype != "*" {
            return Err("a wildcard type needs a wildcard subtype".into());
        }
        let mut range = MediaRange {
            type_: type_.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params: Vec::new(),
            q: 1.0,
        };
        let mut seen_q = false;
        for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let (name, raw) = part
                .split_once('=')
                .ok_or_else(|| format!("parameter '{part}' has no value"))?;
            let (name, raw) = (name.trim().to_ascii_lowercase(), raw.trim());
            if !is_token(&name) {
                return Err(format!("invalid parameter name '{name}'"));
            }
            if name == "q" {
                // RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
                if seen_q {
                    return Err("more than one q parameter".into());
                }
                seen_q = true;
                range.q = parse_qvalue(raw).ok_or_else(|| {
                    format!("q={raw} is not a weight between 0 and 1 with at most 3 decimals")
                })?;
            } else {
                let value = if raw.starts_with('"') {
                    unquote(raw)?
                } else if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
                {
                    // Lenient: unquoted values in the wild contain `/` (`type=application/dicom`),
                    // which a strict RFC token would refuse.
                    raw.to_string()
                } else {
                    return Err(format!("invalid value for parameter '{name}'"));
                };
                range.params.push((name, value));
            }
        }
        Ok(range)
    }

    /// The value of parameter `name` (case-insensitive name), unquoted.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `transfer-syntax` parameter (PS3.18 8.7.3): a UID, or `*` for "as stored".
    pub fn transfer_syntax(&self) -> Option<&str> {
        self.param("transfer-syntax")
    }

    /// `type/subtype`, lowercased, without parameters.
    pub fn essence(&self) -> String {
        format!("{}/{}", self.type_, self.subtype)
    }

    /// Whether this range covers `offer`: type and subtype equal or `*`; for a
    /// `multipart/related` range, its `type` parameter (if any) must equal the offer's
    /// (PS3.18 8.7.3.5.1, case-insensitive). Other parameters never prevent a match.
    pub fn matches(&self, offer: &Offer) -> bool {
        let (ot, os) = offer
            .media_type
            .split_once('/')
            .unwrap_or((offer.media_type, ""));
        let type_ok = self.type_ == "*" || self.type_.eq_ignore_ascii_case(ot);
        let sub_ok = self.subtype == "*" || self.subtype.eq_ignore_ascii_case(os);
        if !(type_ok && sub_ok) {
            return false;
        }
        if self.type_ == "multipart"
            && self.subtype == "related"
            && let Some(t) = self.param("type")
        {
            return offer
                .type_param
                .is_some_and(|o| o.eq_ignore_ascii_case(t.trim()));
        }
        true
    }

    /// RFC 9110 12.5.1 precedence: `*/*` < `type/*` < `type/subtype` < with more parameters.
    fn specificity(&self) -> (u8, usize) {
        let level = match (self.type_.as_str(), self.subtype.as_str()) {
            ("*", _) => 0,
            (_, "*") => 1,
            _ => 2,
        };
        (level, self.params.len())
    }
}

impl fmt::Display for MediaRange {
    /// Canonical form: `type/subtype; name="value"...`, then `; q=0.5` unless the weight is 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.type_, self.subtype)?;
        for (n, v) in &self.params {
            write!(f, "; {n}=\"")?;
            for c in v.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        if self.q != 1.0 {
            let q = format!("{:.3}", self.q);
            write!(f, "; q={}", q.trim_end_matches('0').trim_end_matches('.'))?;
        }
        Ok(())
    }
}

/// Parses a comma-separated `Accept` value. Empty elements (`a/b,,c/d`, a trailing comma) are
/// skipped, so an empty string gives an empty list; commas inside quoted strings do not split.
///
/// # Errors
/// [`Error::BadRequest`] naming the first range that does not parse.
pub fn parse_accept(header: &str) -> Result<Vec<MediaRange>> {
    let elements = split_unquoted(header, b',').map_err(|why| {
        Error::BadRequest(format!("invalid Accept value '{}': {why}", clip(header)))
    })?;
    elements
        .into_iter()
        .filter(|e| !e.trim().is_empty())
        .map(MediaRange::parse)
        .collect()
}

/// Like [`parse_accept`], but an invalid element of a list is skipped (PS3.18 8.7: invalid or
/// unsupported values in a list are ignored); only a list with nothing valid in it is an error.
///
/// # Errors
/// [`Error::BadRequest`] for the first bad element when no element is valid.
pub fn parse_accept_lenient(header: &str) -> Result<Vec<MediaRange>> {
    let elements = split_unquoted(header, b',').map_err(|why| {
        Error::BadRequest(format!("invalid Accept value '{}': {why}", clip(header)))
    })?;
    let mut out = Vec::new();
    let mut first_error = None;
    for e in elements.into_iter().filter(|e| !e.trim().is_empty()) {
        match MediaRange::parse(e) {
            Ok(r) => out.push(r),
            Err(err) => {
                tracing::debug!(error = %err, "ignoring an invalid Accept element");
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) if out.is_empty() => Err(err),
        _ => Ok(out),
    }
}

/// The media ranges a request asks for, in the client's order.
///
/// The `accept` query parameter (PS3.18 8.3.3.1; it may repeat, each a comma list) overrides the
/// `Accept` header; several `Accept` headers are concatenated; no or an empty `Accept` is `*/*`.
/// In the query parameter a space between two token characters is read as `+`, because clients
/// often send `?accept=application/dicom+json` unescaped and the query decoder turns `+` into a
/// space; a space can never sit there in a valid media range.
///
/// # Errors
/// [`Error::BadRequest`] if no range of a list parses or an `Accept` header is not visible ASCII.
pub fn requested_ranges(req: &HttpRequest, query: &QueryParams) -> Result<Vec<MediaRange>> {
    let from_query: Vec<&str> = query
        .get_all("accept")
        .filter(|v| !v.trim().is_empty())
        .collect();
    let mut ranges = Vec::new();
    if from_query.is_empty() {
        for value in req.headers().get_all(header::ACCEPT) {
            let s = value.to_str().map_err(|_| {
                Error::BadRequest("the Accept header contains non-ASCII characters".into())
            })?;
            ranges.extend(parse_accept_lenient(s)?);
        }
    } else {
        for v in from_query {
            ranges.extend(parse_accept_lenient(&restore_plus(v))?);
        }
    }
    if ranges.is_empty() {
        ranges.push(MediaRange::any());
    }
    Ok(ranges)
}

/// A media type a route can produce. `type_param` is the `type` parameter of a
/// `multipart/related` response (PS3.18 8.7.3.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// Lowercase `type/subtype`.
    pub media_type: &'static str,
    /// For `multipart/related`: the media type of the parts.
    pub type_param: Option<&'static str>,
}

impl Offer {
    /// A single-part media type, e.g. `Offer::new("application/dicom+json")`.
    pub const fn new(media_type: &'static str) -> Self {
        Offer {
            media_type,
            type_param: None,
        }
    }

    /// `multipart/related; type="<part_type>"`, e.g. `Offer::multipart("application/dicom")`.
    pub const fn multipart(part_type: &'static str) -> Self {
        Offer {
            media_type: "multipart/related",
            type_param: Some(part_type),
        }
    }
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.media_type)?;
        if let Some(t) = self.type_param {
            write!(f, "; type=\"{t}\"")?;
        }
        Ok(())
    }
}

/// The outcome of [`negotiate`]: the chosen offer, its position in the offer list, and the
/// request's range that decided it (read `transfer_syntax()` / `param("charset")` from it).
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated<'a> {
    pub offer: &'a Offer,
    pub index: usize,
    pub range: MediaRange,
}

/// Picks the offer the client weights highest (RFC 9110 12.5.1; PS3.18 8.7).
///
/// Each offer's weight is the `q` of the most specific range matching it (ties between equally
/// specific ranges: the higher `q`, then the earlier range); `q=0` excludes the offer. Among
/// offers with the same weight the earlier one wins, so list offers in server preference.
///
/// # Errors
/// [`Error::NotAcceptable`] listing every offer when nothing matches with `q > 0`.
pub fn negotiate<'a>(ranges: &[MediaRange], offers: &'a [Offer]) -> Result<Negotiated<'a>> {
    negotiate_with(ranges, offers, |_, _| true)
}

/// [`negotiate`], treating a range as non-matching when `usable(offer, range)` is false — e.g.
/// a `transfer-syntax` the route cannot produce — so that a less specific range can still apply.
///
/// # Errors
/// As [`negotiate`].
pub fn negotiate_with<'a>(
    ranges: &[MediaRange],
    offers: &'a [Offer],
    usable: impl Fn(&Offer, &MediaRange) -> bool,
) -> Result<Negotiated<'a>> {
    let mut best: Option<(usize, &MediaRange)> = None;
    for (index, offer) in offers.iter().enumerate() {
        let mut decisive: Option<&MediaRange> = None;
        for r in ranges
            .iter()
            .filter(|r| r.matches(offer) && usable(offer, r))
        {
            decisive = match decisive {
                Some(d) if (d.specificity(), d.q) >= (r.specificity(), r.q) => Some(d),
                _ => Some(r),
            };
        }
        if let Some(r) = decisive
            && r.q > 0.0
            && best.is_none_or(|(_, b)| r.q > b.q)
        {
            best = Some((index, r));
        }
    }
    match best {
        Some((index, range)) => Ok(Negotiated {
            offer: &offers[index],
            index,
            range: range.clone(),
        }),
        None => {
            let available: Vec<String> = offers.iter().map(Offer::to_string).collect();
            Err(Error::NotAcceptable(format!(
                "none of the requested media types can be provided; available: {}",
                available.join(", ")
            )))
        }
    }
}

/// RFC 9110 5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 12.4.2 qvalue, plus the common `.5` spelling.
fn parse_qvalue(v: &str) -> Option<f32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let frac_value = frac
        .bytes()
        .zip([100u32, 10, 1])
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum::<u32>();
    match int {
        "0" | "" => Some(frac_value as f32 / 1000.0),
        "1" if frac_value == 0 => Some(1.0),
        _ => None,
    }
}

/// Splits on `sep` outside RFC 9110 quoted strings (`\` escapes the next character inside).
fn split_unquoted(s: &str, sep: u8) -> std::result::Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if in_quotes {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        return Err("unterminated quoted string".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

/// Unquotes `"..."` (already trimmed), resolving `\` escapes; nothing may follow the quote.
fn unquote(raw: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = raw.chars().skip(1);
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or("unterminated quoted string")?),
            '"' => {
                return if chars.next().is_none() {
                    Ok(out)
                } else {
                    Err("unexpected text after a quoted string".into())
                };
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

/// Turns a space between two characters that are neither whitespace nor `,;=` back into `+`.
fn restore_plus(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    let joins = |c: Option<&char>| c.is_some_and(|c| !c.is_whitespace() && !",;=".contains(*c));
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if c == ' ' && i > 0 && joins(chars.get(i - 1)) && joins(chars.get(i + 1)) {
                '+'
            } else {
                c
            }
        })
        .collect()
}

/// Client text echoed in an error, cut to a readable length.
fn clip(s: &str) -> String {
    const MAX: usize = 100;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;
    use actix_web::http::StatusCode;
    use actix_web::test::TestRequest;

    const JSON: Offer = Offer::new("application/dicom+json");
    const XML: Offer = Offer::multipart("application/dicom+xml");
    const DICOM: Offer = Offer::multipart("application/dicom");
    const OCTET: Offer = Offer::multipart("application/octet-stream");
    const OCTET_SINGLE: Offer = Offer::new("application/octet-stream");
    const METADATA: &[Offer] = &[JSON, XML];

    fn r(s: &str) -> MediaRange {
        MediaRange::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ranges(header: &str) -> Vec<MediaRange> {
        parse_accept(header).unwrap_or_else(|e| panic!("{header}: {e}"))
    }

    #[test]
    fn parses_single_ranges() {
        // (input, essence, params, q)
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], f32);
        let cases: &[Case] = &[
            ("application/dicom+json", "application/dicom+json", &[], 1.0),
            (
                "  Application/DICOM+JSON  ",
                "application/dicom+json",
                &[],
                1.0,
            ),
            ("*/*", "*/*", &[], 1.0),
            ("*", "*/*", &[], 1.0),
            ("image/*;q=0.8", "image/*", &[], 0.8),
            (
                "multipart/related; type=application/octet-stream; transfer-syntax=*",
                "multipart/related",
                &[
                    ("type", "application/octet-stream"),
                    ("transfer-syntax", "*"),
                ],
                1.0,
            ),
            (
                r#"multipart/related; Type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.5"#,
                "multipart/related",
                &[
                    ("type", "application/dicom"),
                    ("transfer-syntax", "1.2.840.10008.1.2.4.50"),
                ],
                0.5,
            ),
            // Values keep their case; only names are lowercased.
            (
                "text/plain; CHARSET=UTF-8",
                "text/plain",
                &[("charset", "UTF-8")],
                1.0,
            ),
            // Quoted strings: escapes, commas and semicolons inside.
            (
                r#"a/b; x="p\"q\\r"; y="1,2;3""#,
                "a/b",
                &[("x", r#"p"q\r"#), ("y", "1,2;3")],
                1.0,
            ),
            (r#"a/b; x="""#, "a/b", &[("x", "")], 1.0),
            // Trailing / empty parameter pieces are skipped; whitespace around `=` tolerated.
            ("a/b;", "a/b", &[], 1.0),
            ("a/b ; ; x = y ;q = 0.25", "a/b", &[("x", "y")], 0.25),
            // q: boundaries and spellings.
            ("a/b;q=0", "a/b", &[], 0.0),
            ("a/b;q=0.", "a/b", &[], 0.0),
            ("a/b;q=0.001", "a/b", &[], 0.001),
            ("a/b;q=1", "a/b", &[], 1.0),
            ("a/b;q=1.000", "a/b", &[], 1.0),
            ("a/b;Q=.2", "a/b", &[], 0.2),
            // Parameters after q (accept-ext) are kept.
            ("a/b;q=0.5;ext=1", "a/b", &[("ext", "1")], 0.5),
        ];
        for (input, essence, params, q) in cases {
            let m = r(input);
            assert_eq!(m.essence(), *essence, "{input}");
            let got: Vec<(&str, &str)> = m
                .params
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            assert_eq!(got, *params, "{input}");
            assert_eq!(m.q, *q, "{input}");
        }
    }

    #[test]
    fn rejects_garbage_with_a_readable_400() {
        let cases = [
            "",
            "garbage",
            "text/",
            "/html",
            "*/html",
            "te xt/html",
            "text/html/x",
            "a/b; q=2",
            "a/b; q=1.001",
            "a/b; q=0.1234",
            "a/b; q=-0.5",
            "a/b; q=abc",
            "a/b; q=",
            "a/b; q=.",
            "a/b; q=\"0.5\"",
            "a/b; q=0.5; q=0.6",
            "a/b; foo",
            "a/b; =v",
            "a/b; x=",
            "a/b; x=\"unterminated",
            "a/b; x=\"v\"junk",
            "a/b; x=a\"b",
            "a/b; x=a b",
            "a/b; x=\"v\\",
        ];
        for input in cases {
            let e = MediaRange::parse(input).expect_err(input);
            assert!(matches!(e, Error::BadRequest(_)), "{input}");
            assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
            let msg = e.to_string();
            assert!(msg.starts_with("invalid media range '"), "{input}: {msg}");
            assert!(msg.contains(input.trim()), "{input}: {msg}");
        }
    }

    #[test]
    fn error_message_names_the_bad_element_and_reason() {
        let e = parse_accept("application/dicom+json, nonsense, */*").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid media range 'nonsense': expected type/subtype"
        );
        let e = parse_accept("a/b; q=7").unwrap_err();
        assert!(e.to_string().contains("q=7 is not a weight"), "{e}");
        let e = parse_accept(r#"a/b; type="x, c/d"#).unwrap_err();
        assert!(e.to_string().contains("unterminated quoted string"), "{e}");
        // Very long input is clipped in the message.
        let long = format!("x{}", "y".repeat(5000));
        assert!(parse_accept(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn parse_accept_lists() {
        assert!(ranges("").is_empty());
        assert!(ranges(" , ,").is_empty());
        let got: Vec<String> = ranges(
            r#"application/dicom+json, multipart/related; type="application/dicom+xml",,*/*;q=0.1"#,
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            got,
            [
                "application/dicom+json",
                r#"multipart/related; type="application/dicom+xml""#,
                "*/*; q=0.1"
            ]
        );
        // Commas inside quotes do not split.
        let v = ranges(r#"a/b; x="1,2", c/d"#);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].param("x"), Some("1,2"));
        assert_eq!(v[1].essence(), "c/d");
    }

    #[test]
    fn helpers_and_display() {
        let m = r(
            r#"multipart/related; type="application/dicom"; Transfer-Syntax=1.2.840.10008.1.2.1;q=0.9"#,
        );
        assert_eq!(m.param("TYPE"), Some("application/dicom"));
        assert_eq!(m.transfer_syntax(), Some("1.2.840.10008.1.2.1"));
        assert_eq!(m.param("charset"), None);
        assert_eq!(m.essence(), "multipart/related");
        assert_eq!(
            m.to_string(),
            r#"multipart/related; type="application/dicom"; transfer-syntax="1.2.840.10008.1.2.1"; q=0.9"#
        );
        assert_eq!(MediaRange::any().to_string(), "*/*");
        assert_eq!(r("a/b;q=0").to_string(), "a/b; q=0");
        assert_eq!(r("a/b;q=0.125").to_string(), "a/b; q=0.125");
        // Display round-trips, including escapes.
        for s in [
            r#"a/b; x="p\"q\\r"; y="1,2;3"; q=0.05"#,
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            "*/*;q=0.5",
        ] {
            let m = r(s);
            assert_eq!(r(&m.to_string()), m, "{s}");
        }
        assert_eq!(
            DICOM.to_string(),
            r#"multipart/related; type="application/dicom""#
        );
        assert_eq!(JSON.to_string(), "application/dicom+json");
    }

    /// (Accept header, offers, expected offer index or None for 406)
    #[test]
    fn negotiates_real_client_headers() {
        let frames: &[Offer] = &[OCTET, OCTET_SINGLE];
        let retrieve: &[Offer] = &[DICOM];
        let rendered: &[Offer] = &[Offer::new("image/jpeg"), Offer::new("image/png")];
        let json_and_plain: &[Offer] = &[JSON, Offer::new("application/json")];
        let cases: &[(&str, &[Offer], Option<usize>)] = &[
            // OHIF frames / bulk data.
            (
                "multipart/related; type=application/octet-stream; transfer-syntax=*",
                frames,
                Some(0),
            ),
            (
                "multipart/related; type=application/octet-stream; transfer-syntax=*",
                METADATA,
                None,
            ),
            // OHIF / dicomweb-client metadata, with an XML alternative.
            (
                r#"application/dicom+json, multipart/related; type="application/dicom+xml""#,
                METADATA,
                Some(0),
            ),
            (
                r#"application/dicom+json;q=0.5, multipart/related; type="application/dicom+xml""#,
                METADATA,
                Some(1),
            ),
            // dcmjs sends the type unquoted; quoted must work too, any case.
            (
                "multipart/related; type=application/dicom",
                retrieve,
                Some(0),
            ),
            (
                r#"multipart/related; type="application/dicom"; transfer-syntax=*"#,
                retrieve,
                Some(0),
            ),
            (
                r#"Multipart/Related; TYPE="Application/DICOM""#,
                retrieve,
                Some(0),
            ),
            // Wrong part type.
            ("multipart/related; type=application/dicom", frames, None),
            (
                "multipart/related; type=\"application/dicom+xml\"",
                retrieve,
                None,
            ),
            // multipart/related without type matches any multipart offer.
            ("multipart/related", METADATA, Some(1)),
            ("multipart/related", retrieve, Some(0)),
            ("multipart/*", METADATA, Some(1)),
            // */* at q=0.5 still beats nothing; application/json is not offered here.
            ("*/*;q=0.5, application/json", METADATA, Some(0)),
            // ...but when it is offered, its q=1 beats the preferred offer at 0.5.
            ("*/*;q=0.5, application/json", json_and_plain, Some(1)),
            // q=0 excludes, even though it is the only offer.
            ("application/dicom+json;q=0", &[JSON], None),
            ("application/dicom+json;q=0", METADATA, None),
            // The more specific q=0 overrides the wildcard for that offer only.
            ("application/dicom+json;q=0, */*", METADATA, Some(1)),
            ("*/*;q=0", METADATA, None),
            ("application/*;q=0, */*;q=0.1", METADATA, Some(1)),
            // Quoted commas do not split the list.
            (
                r#"multipart/related; type="application/dicom"; x="a, application/dicom+json""#,
                METADATA,
                None,
            ),
            // Browsers and curl.
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
                METADATA,
                Some(0),
            ),
            ("*/*", retrieve, Some(0)),
            // Java HttpURLConnection's default.
            (
                "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2",
                rendered,
                Some(0),
            ),
            ("text/html, image/gif, *; q=.2", METADATA, Some(0)),
            // Rendered: wildcard ties go to the server's preference.
            ("image/*", rendered, Some(0)),
            ("image/png, image/*;q=0.8", rendered, Some(1)),
            ("image/gif", rendered, None),
            // Unknown parameters and charset do not prevent a match.
            (
                "application/dicom+json; charset=utf-8; foo=bar",
                METADATA,
                Some(0),
            ),
            // No offers at all.
            ("*/*", &[], None),
        ];
        for (header, offers, want) in cases {
            let got = negotiate(&ranges(header), offers);
            match (want, got) {
                (Some(i), Ok(n)) => {
                    assert_eq!(n.index, *i, "{header}");
                    assert_eq!(n.offer, &offers[*i], "{header}");
                }
                (None, Err(e)) => {
                    assert!(matches!(e, Error::NotAcceptable(_)), "{header}");
                    assert_eq!(e.status_code(), StatusCode::NOT_ACCEPTABLE);
                }
                (want, got) => panic!("{header}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn ties_go_to_the_earlier_offer() {
        let header = r#"application/dicom+json, multipart/related; type="application/dicom+xml""#;
        assert_eq!(
            negotiate(&ranges(header), &[JSON, XML]).unwrap().offer,
            &JSON
        );
        assert_eq!(
            negotiate(&ranges(header), &[XML, JSON]).unwrap().offer,
            &XML
        );
    }

    #[test]
    fn the_most_specific_range_decides_and_is_returned() {
        let header = "multipart/related;q=0.2, \
                      multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50;q=0.9, \
                      */*;q=0.1";
        let n = negotiate(&ranges(header), &[JSON, DICOM]).unwrap();
        assert_eq!(n.offer, &DICOM);
        assert_eq!(n.index, 1);
        assert_eq!(n.range.q, 0.9);
        assert_eq!(n.range.transfer_syntax(), Some("1.2.840.10008.1.2.4.50"));

        // Equally specific ranges: the higher q decides, then the earlier one.
        let header = "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50;q=0.5, \
                      multipart/related; type=application/dicom; transfer-syntax=*;q=0.8";
        let n = negotiate(&ranges(header), &[DICOM]).unwrap();
        assert_eq!(n.range.transfer_syntax(), Some("*"));
        let header = "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1, \
                      multipart/related; type=application/dicom; transfer-syntax=*";
        let n = negotiate(&ranges(header), &[DICOM]).unwrap();
        assert_eq!(n.range.transfer_syntax(), Some("1.2.840.10008.1.2.1"));
    }

    #[test]
    fn negotiate_with_skips_unusable_ranges() {
        let header = "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50, \
                      multipart/related; type=application/dicom; transfer-syntax=*;q=0.5";
        let only_native = |_: &Offer, r: &MediaRange| {
            matches!(
                r.transfer_syntax(),
                None | Some("*") | Some("1.2.840.10008.1.2.1")
            )
        };
        let n = negotiate_with(&ranges(header), &[DICOM], only_native).unwrap();
        assert_eq!(n.range.transfer_syntax(), Some("*"));
        assert_eq!(n.range.q, 0.5);

        let header =
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50";
        let e = negotiate_with(&ranges(header), &[DICOM], only_native).unwrap_err();
        assert!(matches!(e, Error::NotAcceptable(_)));
    }

    #[test]
    fn not_acceptable_lists_every_available_type() {
        let e = negotiate(&ranges("text/html"), METADATA).unwrap_err();
        assert_eq!(
            e.to_string(),
            "none of the requested media types can be provided; available: \
             application/dicom+json, multipart/related; type=\"application/dicom+xml\""
        );
    }

    fn requested(req: TestRequest) -> Result<Vec<String>> {
        let req = req.to_http_request();
        let query = QueryParams::parse(req.query_string()).unwrap();
        requested_ranges(&req, &query).map(|v| v.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn requested_ranges_sources() {
        // Missing header → */*.
        assert_eq!(requested(TestRequest::get().uri("/x")).unwrap(), ["*/*"]);
        // Empty header → */*.
        assert_eq!(
            requested(TestRequest::get().uri("/x").insert_header(("Accept", ""))).unwrap(),
            ["*/*"]
        );
        // Several Accept headers are concatenated.
        let got = requested(
            TestRequest::get()
                .uri("/x")
                .append_header(("Accept", "application/dicom+json;q=0.5"))
                .append_header((
                    "Accept",
                    "multipart/related; type=\"application/dicom+xml\"",
                )),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "application/dicom+json; q=0.5",
                "multipart/related; type=\"application/dicom+xml\""
            ]
        );
        // The accept query parameter overrides the header; it may repeat and hold lists.
        let got = requested(
            TestRequest::get()
                .uri("/x?accept=application%2Fdicom%2Bjson%2C%20image%2Fpng&limit=1&accept=image/jpeg")
                .insert_header(("Accept", "text/html")),
        )
        .unwrap();
        assert_eq!(got, ["application/dicom+json", "image/png", "image/jpeg"]);
        // An unescaped `+` (decoded to a space) is restored in the query parameter.
        let got = requested(TestRequest::get().uri(
            "/x?accept=application/dicom+json&accept=multipart/related;+type=%22application/dicom+xml%22;+q=0.5",
        ))
        .unwrap();
        assert_eq!(
            got,
            [
                "application/dicom+json",
                "multipart/related; type=\"application/dicom+xml\"; q=0.5"
            ]
        );
        // An empty accept parameter does not override the header.
        let got = requested(
            TestRequest::get()
                .uri("/x?accept=")
                .insert_header(("Accept", "image/png")),
        )
        .unwrap();
        assert_eq!(got, ["image/png"]);
    }

    #[test]
    fn requested_ranges_errors() {
        let e = requested(TestRequest::get().uri("/x?accept=nonsense")).unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
        assert!(e.to_string().contains("'nonsense'"), "{e}");

        let e = requested(
            TestRequest::get()
                .uri("/x")
                .insert_header(("Accept", "application/dicom+json;q=5")),
        )
        .unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));

        // An invalid element beside valid ones is ignored.
        let ok = requested(TestRequest::get().uri("/x").insert_header((
            "Accept",
            "nonsense, application/dicom+json;q=5, application/dicom+json",
        )))
        .unwrap();
        assert_eq!(ok, ["application/dicom+json"]);

        let bad = header::HeaderValue::from_bytes(b"application/dicom+json; x=\xe9").unwrap();
        let e = requested(
            TestRequest::get()
                .uri("/x")
                .insert_header((header::ACCEPT, bad)),
        )
        .unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
    }

    #[test]
    fn end_to_end_query_override_negotiation() {
        let req = TestRequest::get()
            .uri("/x?accept=multipart%2Frelated%3B%20type%3D%22application%2Fdicom%2Bxml%22")
            .insert_header(("Accept", "application/dicom+json"))
            .to_http_request();
        let query = QueryParams::parse(req.query_string()).unwrap();
        let n = negotiate(&requested_ranges(&req, &query).unwrap(), METADATA).unwrap();
        assert_eq!(n.offer, &XML);
    }

    #[test]
    fn restore_plus_only_between_token_characters() {
        let cases = [
            ("application/dicom json", "application/dicom+json"),
            ("a/b, c/d", "a/b, c/d"),
            ("a/b; q=0.5", "a/b; q=0.5"),
            ("a/b ;q=0.5", "a/b ;q=0.5"),
            (" a/b x ", " a/b+x "),
        ];
        for (input, want) in cases {
            assert_eq!(restore_plus(input), want, "{input}");
        }
    }
}
