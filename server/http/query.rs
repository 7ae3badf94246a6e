//! The query string of a request, percent-decoded exactly once.
//!
//! Owns splitting `a=1&b=2` into ordered `(name, value)` pairs and decoding both halves with the
//! `application/x-www-form-urlencoded` rules (`+` is a space, `%XX` is one byte). Every other
//! module reads parameters from [`QueryParams`] and must never decode again: a value such as
//! `00100010=%252C` arrives as the literal text `%2C`, not as `,` (PS3.18 8.3.4 matching values
//! may legitimately contain `%`). What a parameter *means* (QIDO `limit`, `includefield`,
//! `fuzzymatching`, the `accept` override of PS3.18 8.3.3.1, ...) is left to the transaction
//! modules.
//!
//! Decoding is byte-wise and then checked as UTF-8 as a whole, so a multi-byte character split
//! over several escapes (`%C3%A9` → `é`) works, while bytes that are not UTF-8 are a 400 that
//! names the parameter rather than being silently replaced with U+FFFD.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload};

use crate::error::{Error, Result};

/// Ordered, decoded query parameters. A name may occur several times (PS3.18 8.3.4.1 allows
/// `includefield` and matching keys to repeat); order of appearance is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Parses a raw query string (without the leading `?`). Pieces between `&` that are empty
    /// (`a=1&&b=2`, a trailing `&`) are skipped; a piece without `=` is a name with an empty value.
    ///
    /// # Errors
    /// [`Error::BadRequest`] if a name or value is not valid UTF-8 after percent-decoding.
    pub fn parse(raw: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = String::from_utf8(decode(raw_name)).map_err(|e| {
                Error::BadRequest(format!(
                    "query parameter name '{}' is not valid UTF-8 after percent-decoding",
                    String::from_utf8_lossy(e.as_bytes())
                ))
            })?;
            let value = String::from_utf8(decode(raw_value)).map_err(|_| {
                Error::BadRequest(format!(
                    "query parameter '{name}' is not valid UTF-8 after percent-decoding"
                ))
            })?;
            pairs.push((name, value));
        }
        Ok(QueryParams(pairs))
    }

    /// The value of the first occurrence of `name` (exact, case-sensitive match).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order of appearance.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All `(name, value)` pairs in order of appearance.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// `true` when the query string held no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each distinct parameter name once, in order of first appearance.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .enumerate()
            .filter(|(i, (n, _))| !self.0[..*i].iter().any(|(m, _)| m == n))
            .map(|(_, (n, _))| n.as_str())
    }

    /// Refuses parameters a transaction does not define, so that a typo (`limt=10`) is a 400
    /// instead of being silently ignored. Names compare exactly (DICOM keywords are
    /// case-sensitive, PS3.18 8.3.4.1).
    ///
    /// # Errors
    /// [`Error::BadRequest`] `unknown query parameter 'x'` for the first name not in `allowed`.
    pub fn reject_unknown(&self, allowed: &[&str]) -> Result<()> {
        match self.names().find(|n| !allowed.contains(n)) {
            Some(n) => Err(Error::BadRequest(format!("unknown query parameter '{n}'"))),
            None => Ok(()),
        }
    }
}

impl FromRequest for QueryParams {
    type Error = Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(QueryParams::parse(req.query_string()))
    }
}

/// `application/x-www-form-urlencoded` byte decoding (WHATWG URL "percent-decode" with `+` as
/// space). A `%` not followed by two hex digits is kept literally, as browsers and
/// `form_urlencoded` do.
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(c: &u8) -> Option<u8> {
    (*c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;
    use actix_web::http::StatusCode;
    use actix_web::test::TestRequest;

    fn pairs(q: &QueryParams) -> Vec<(&str, &str)> {
        q.iter().collect()
    }

    #[test]
    fn decodes_names_and_values_exactly_once() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("a=1", &[("a", "1")]),
            (
                "includefield=00100010%2C00100020",
                &[("includefield", "00100010,00100020")],
            ),
            ("PatientName=DOE%5EJOHN", &[("PatientName", "DOE^JOHN")]),
            ("PatientName=D%2A", &[("PatientName", "D*")]),
            ("PatientName=D*", &[("PatientName", "D*")]),
            // Double-encoded: one decoding leaves the literal escape.
            ("PatientName=A%252CB", &[("PatientName", "A%2CB")]),
            ("q=a+b%20c", &[("q", "a b c")]),
            ("%2Bplus=%2B", &[("+plus", "+")]),
            ("n%61me=v", &[("name", "v")]),
            ("x=caf%C3%A9", &[("x", "café")]),
            ("x=%c3%a9", &[("x", "é")]),
            ("x=é", &[("x", "é")]),
            // Broken escapes stay literal.
            ("x=100%", &[("x", "100%")]),
            ("x=%4", &[("x", "%4")]),
            ("x=%zz1", &[("x", "%zz1")]),
            // `=` inside the value is part of the value.
            ("x=a=b", &[("x", "a=b")]),
            ("flag", &[("flag", "")]),
            ("flag=", &[("flag", "")]),
            ("a=1&&b=2&", &[("a", "1"), ("b", "2")]),
            ("&&&", &[]),
            ("a=1&a=2&b=3", &[("a", "1"), ("a", "2"), ("b", "3")]),
            ("x=%26&y=%3D", &[("x", "&"), ("y", "=")]),
        ];
        for (raw, want) in cases {
            let q = QueryParams::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(pairs(&q), *want, "raw = {raw}");
            assert_eq!(q.is_empty(), want.is_empty(), "raw = {raw}");
        }
    }

    #[test]
    fn invalid_utf8_is_bad_request_naming_the_parameter() {
        let e = QueryParams::parse("ok=1&PatientName=%FF%FE").unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("'PatientName'"), "{e}");

        // Truncated multi-byte sequence.
        let e = QueryParams::parse("x=%C3").unwrap_err();
        assert!(e.to_string().contains("'x'"), "{e}");

        // Invalid name: named lossily.
        let e = QueryParams::parse("a%FFb=1").unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
        assert!(e.to_string().contains("a\u{FFFD}b"), "{e}");
    }

    #[test]
    fn get_get_all_and_names() {
        let q = QueryParams::parse("includefield=a&limit=5&includefield=b%2Cc&Limit=7").unwrap();
        assert_eq!(q.get("includefield"), Some("a"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(q.get("Limit"), Some("7"), "names are case-sensitive");
        assert_eq!(q.get("offset"), None);
        assert_eq!(q.get_all("includefield").collect::<Vec<_>>(), ["a", "b,c"]);
        assert_eq!(q.get_all("offset").count(), 0);
        assert_eq!(
            q.names().collect::<Vec<_>>(),
            ["includefield", "limit", "Limit"]
        );
        assert!(!q.is_empty());
    }

    #[test]
    fn reject_unknown() {
        let q = QueryParams::parse("limit=1&offset=2&limit=3").unwrap();
        assert!(
            q.reject_unknown(&["limit", "offset", "fuzzymatching"])
                .is_ok()
        );
        let e = q.reject_unknown(&["limit"]).unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
        assert_eq!(e.to_string(), "unknown query parameter 'offset'");

        let q = QueryParams::parse("limt=10").unwrap();
        assert_eq!(
            q.reject_unknown(&["limit"]).unwrap_err().to_string(),
            "unknown query parameter 'limt'"
        );
        assert!(QueryParams::default().reject_unknown(&[]).is_ok());
    }

    #[actix_web::test]
    async fn extractor_reads_the_raw_query_string() {
        let (req, mut pl) = TestRequest::get()
            .uri("/studies?PatientName=DOE%5E*&includefield=00100010%2C00100020&x=%252C")
            .to_http_parts();
        let q = QueryParams::from_request(&req, &mut pl).await.unwrap();
        assert_eq!(q.get("PatientName"), Some("DOE^*"));
        assert_eq!(q.get("includefield"), Some("00100010,00100020"));
        assert_eq!(q.get("x"), Some("%2C"));

        let (req, mut pl) = TestRequest::get().uri("/studies").to_http_parts();
        assert!(
            QueryParams::from_request(&req, &mut pl)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[actix_web::test]
    async fn extractor_error_is_a_400_response() {
        let (req, mut pl) = TestRequest::get()
            .uri("/studies?PatientName=%FF")
            .to_http_parts();
        let e = QueryParams::from_request(&req, &mut pl).await.unwrap_err();
        let resp = actix_web::Error::from(e).error_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
