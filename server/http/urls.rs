//! The base of every absolute URL Lightbox writes into a response: RetrieveURL (0008,1190) in the
//! STOW-RS response (PS3.18 Annex I / 10.5.3), BulkDataURI in metadata (PS3.18 F.2.6), and
//! `Content-Location` / links.
//!
//! Owns choosing the scheme, host and path prefix, and nothing else: callers append
//! `/studies/{uid}/...` to [`base_url`]. The `Host` header is never used, because any client can
//! set it and the URLs end up stored or followed by other clients. The order is:
//!
//! 1. the configured public URL (`public_url`), when set;
//! 2. when the TCP peer is a configured trusted proxy: the first element of RFC 7239
//!    `Forwarded` (`proto=`, `host=`), else `X-Forwarded-Proto` / `X-Forwarded-Host` (first
//!    value), plus `X-Forwarded-Prefix`. Every value is validated and an invalid one ignored;
//!    without a valid forwarded host the proxy headers are not used at all;
//! 3. the fallback, `http://<bound listen address>`.
//!
//! A trusted proxy must *replace* these headers, not append to what the client sent: the first
//! element is the one this module reads.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// How to build absolute URLs; built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct UrlConfig {
    /// The externally visible base URL, already checked by [`validate_public_url`] (no trailing
    /// slash). Wins over everything else.
    pub public_url: Option<String>,
    /// Networks whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `http://<bound listen address>`, no trailing slash.
    pub fallback: String,
}

impl UrlConfig {
    /// Whether `ip` is inside a trusted proxy network (IPv4-mapped IPv6 peers count as IPv4).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The base URL (scheme, authority, optional path prefix; no trailing slash) for absolute URLs
/// in the response to `req`. See the module documentation for the order of sources.
pub fn base_url(req: &HttpRequest, cfg: &UrlConfig) -> String {
    if let Some(public) = &cfg.public_url {
        return public.trim_end_matches('/').to_string();
    }
    if let Some(peer) = req.peer_addr()
        && cfg.trusts(peer.ip())
        && let Some(url) = forwarded_base(req.headers(), cfg)
    {
        return url;
    }
    cfg.fallback.trim_end_matches('/').to_string()
}

/// Checks a configured public URL: `http(s)://host[:port][/path]`, no credentials, query or
/// fragment. Returns it with the scheme and host lowercased and without a trailing slash.
///
/// # Errors
/// A message for the operator saying what is wrong.
pub fn validate_public_url(s: &str) -> std::result::Result<String, String> {
    let fail = |why: &str| format!("public URL {s:?} {why}");
    let t = s.trim();
    let (scheme, rest) = t
        .split_once("://")
        .ok_or_else(|| fail("must start with http:// or https://"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(fail("must start with http:// or https://"));
    }
    if rest.contains(['?', '#']) {
        return Err(fail("must not have a query or fragment"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(fail("must not contain credentials"));
    }
    let host = valid_host(authority).ok_or_else(|| fail("has an invalid host or port"))?;
    let path = valid_path(path, true).ok_or_else(|| fail("has an invalid path"))?;
    Ok(format!("{scheme}://{host}{path}"))
}

/// The base URL from a trusted proxy's headers, or `None` if they name no valid host.
fn forwarded_base(headers: &HeaderMap, cfg: &UrlConfig) -> Option<String> {
    let (f_proto, f_host) = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .map(forwarded_first_element)
        .unwrap_or_default();
    let host = f_host
        .as_deref()
        .and_then(valid_host)
        .or_else(|| first_value(headers, "x-forwarded-host").and_then(valid_host))?;
    let proto = f_proto
        .as_deref()
        .and_then(valid_proto)
        .or_else(|| first_value(headers, "x-forwarded-proto").and_then(valid_proto))
        .unwrap_or_else(|| {
            let fallback_scheme = cfg.fallback.split_once("://").map(|(s, _)| s);
            valid_proto(fallback_scheme.unwrap_or("http")).unwrap_or("http")
        });
    let prefix = first_value(headers, "x-forwarded-prefix")
        .filter(|p| p.starts_with('/'))
        .and_then(|p| valid_path(p, false))
        .unwrap_or_default();
    Some(format!("{proto}://{host}{prefix}"))
}

/// `proto` and `host` of the first element of an RFC 7239 `Forwarded` value (RFC 7239 4:
/// `forwarded-element *( "," forwarded-element )`, pairs separated by `;`, values token or
/// quoted-string). Unparseable text yields `(None, None)`.
fn forwarded_first_element(value: &str) -> (Option<String>, Option<String>) {
    let (mut proto, mut host) = (None, None);
    let Some(pairs) = split_first_element(value) else {
        return (None, None);
    };
    for pair in pairs {
        let Some((name, raw)) = pair.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let value = match raw.strip_prefix('"') {
            Some(inner) => match inner.strip_suffix('"') {
                Some(v) if !v.contains(['"', '\\']) => v.to_string(),
                _ => continue,
            },
            None => raw.to_string(),
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "proto" if proto.is_none() => proto = Some(value),
            "host" if host.is_none() => host = Some(value),
            _ => {}
        }
    }
    (proto, host)
}

/// The `;`-separated pairs of the first `,`-separated element, respecting quotes.
fn split_first_element(value: &str) -> Option<Vec<&str>> {
    let mut pairs = Vec::new();
    let (mut start, mut in_quotes) = (0, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b';' if !in_quotes => {
                pairs.push(&value[start..i]);
                start = i + 1;
            }
            b',' if !in_quotes => {
                pairs.push(&value[start..i]);
                return Some(pairs);
            }
            _ => {}
        }
    }
    if in_quotes {
        return None;
    }
    pairs.push(&value[start..]);
    Some(pairs)
}

/// The first comma-separated value of the first `name` header, trimmed and non-empty.
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let v = headers.get(name)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

fn valid_proto(p: &str) -> Option<&'static str> {
    match p.to_ascii_lowercase().as_str() {
        "http" => Some("http"),
        "https" => Some("https"),
        _ => None,
    }
}

/// `hostname`, IPv4 or `[IPv6]`, optionally `:port` (1-65535); lowercased. Anything else —
/// paths, credentials, spaces, control characters, schemes — is refused.
fn valid_host(h: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let addr: Ipv6Addr = v6.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (name, port) = match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        };
        if !valid_hostname(name) {
            return None;
        }
        (name.to_ascii_lowercase(), port)
    };
    match port {
        None => Some(host),
        Some(p) => {
            let ok = (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n != 0);
            ok.then(|| format!("{host}:{p}"))
        }
    }
}

/// DNS-style name (also covers dotted IPv4): labels of letters, digits, `-` and `_` (compose
/// service names), not starting or ending with `-`.
fn valid_hostname(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A path prefix: empty or `/seg/seg`, segments of unreserved characters (RFC 3986 2.3), and
/// `%XX` escapes when `allow_escapes`; no empty, `.` or `..` segments. Trailing slashes are
/// dropped, so `/` gives the empty prefix.
fn valid_path(p: &str, allow_escapes: bool) -> Option<String> {
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return Some(String::new());
    }
    let segments = p.strip_prefix('/')?;
    segments
        .split('/')
        .all(|seg| valid_segment(seg, allow_escapes))
        .then(|| p.to_string())
}

fn valid_segment(seg: &str, allow_escapes: bool) -> bool {
    if seg.is_empty() || seg == "." || seg == ".." {
        return false;
    }
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() || b"-._~".contains(&b[i]) {
            i += 1;
        } else if allow_escapes
            && b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            i += 3;
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use actix_web::test::TestRequest;

    const FALLBACK: &str = "http://0.0.0.0:8042";

    fn cfg() -> UrlConfig {
        UrlConfig {
            public_url: None,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            fallback: FALLBACK.into(),
        }
    }

    fn base(peer: &str, headers: &[(&str, &str)], cfg: &UrlConfig) -> String {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        base_url(&req.to_http_request(), cfg)
    }

    #[test]
    fn untrusted_peer_never_uses_request_headers() {
        let spoofed: &[(&str, &str)] = &[
            ("Host", "evil.com"),
            ("X-Forwarded-Host", "evil.com"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Prefix", "/evil"),
            ("Forwarded", "proto=https;host=evil.com"),
        ];
        for peer in ["203.0.113.9:5000", "[2001:db8::1]:5000", "11.0.0.1:1"] {
            assert_eq!(base(peer, spoofed, &cfg()), FALLBACK, "{peer}");
        }
        // No trusted proxies configured at all.
        let none = UrlConfig {
            trusted_proxies: vec![],
            ..cfg()
        };
        assert_eq!(base("10.0.0.1:1", spoofed, &none), FALLBACK);
        // No peer address (e.g. a Unix socket).
        let req = TestRequest::default()
            .insert_header(("X-Forwarded-Host", "evil.com"))
            .to_http_request();
        assert_eq!(base_url(&req, &cfg()), FALLBACK);
    }

    #[test]
    fn trusted_peer_uses_forwarded_values() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "10.1.2.3:4444",
                &[
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "pacs.example.org"),
                ],
                "https://pacs.example.org",
            ),
            // Host header is ignored even from a trusted proxy.
            (
                "10.1.2.3:4444",
                &[("Host", "pacs.example.org"), ("X-Forwarded-Proto", "https")],
                FALLBACK,
            ),
            // Port, case, list values, prefix with trailing slash.
            (
                "10.1.2.3:4444",
                &[
                    ("X-Forwarded-Proto", "HTTPS, http"),
                    ("X-Forwarded-Host", "PACS.Example.org:8443, internal:80"),
                    ("X-Forwarded-Prefix", "/dicomweb/"),
                ],
                "https://pacs.example.org:8443/dicomweb",
            ),
            // No proto: the fallback's scheme.
            (
                "10.1.2.3:4444",
                &[("X-Forwarded-Host", "pacs.example.org")],
                "http://pacs.example.org",
            ),
            // RFC 7239: the first element wins; quoted values; names case-insensitive.
            (
                "10.1.2.3:4444",
                &[(
                    "Forwarded",
                    "for=192.0.2.60;Proto=https;Host=\"pacs.example.org\", for=10.0.0.1;host=evil.com;proto=http",
                )],
                "https://pacs.example.org",
            ),
            (
                "10.1.2.3:4444",
                &[(
                    "Forwarded",
                    "for=\"[2001:db8::1]:1\";host=\"[2001:DB8::5]:8443\";proto=https",
                )],
                "https://[2001:db8::5]:8443",
            ),
            // Forwarded beats X-Forwarded-*.
            (
                "10.1.2.3:4444",
                &[
                    ("Forwarded", "proto=https;host=a.example"),
                    ("X-Forwarded-Host", "b.example"),
                    ("X-Forwarded-Proto", "http"),
                ],
                "https://a.example",
            ),
            // Forwarded without host/proto: X-Forwarded-* fill in, field by field.
            (
                "10.1.2.3:4444",
                &[
                    ("Forwarded", "for=192.0.2.60;proto=https"),
                    ("X-Forwarded-Host", "b.example"),
                    ("X-Forwarded-Proto", "http"),
                ],
                "https://b.example",
            ),
            // IPv6 proxy, and an IPv4-mapped IPv6 peer inside an IPv4 network.
            (
                "[fd00::17]:4444",
                &[("X-Forwarded-Host", "v6.example")],
                "http://v6.example",
            ),
            (
                "[::ffff:10.9.9.9]:4444",
                &[("X-Forwarded-Host", "mapped.example")],
                "http://mapped.example",
            ),
            // IPv4 literal and compose-style names are hosts too.
            (
                "10.1.2.3:1",
                &[("X-Forwarded-Host", "192.168.1.20:8042")],
                "http://192.168.1.20:8042",
            ),
            (
                "10.1.2.3:1",
                &[("X-Forwarded-Host", "light_box")],
                "http://light_box",
            ),
            // Prefix "/" is no prefix.
            (
                "10.1.2.3:1",
                &[
                    ("X-Forwarded-Host", "a.example"),
                    ("X-Forwarded-Prefix", "/"),
                ],
                "http://a.example",
            ),
        ];
        for (peer, headers, want) in cases {
            assert_eq!(base(peer, headers, &cfg()), *want, "{headers:?}");
        }
    }

    #[test]
    fn public_url_wins() {
        let c = UrlConfig {
            public_url: Some("https://images.example.org/pacs".into()),
            ..cfg()
        };
        let headers: &[(&str, &str)] = &[
            ("X-Forwarded-Host", "other.example"),
            ("Forwarded", "host=other.example;proto=http"),
        ];
        assert_eq!(
            base("10.0.0.1:1", headers, &c),
            "https://images.example.org/pacs"
        );
        assert_eq!(
            base("198.51.100.1:1", headers, &c),
            "https://images.example.org/pacs"
        );
    }

    #[test]
    fn injection_attempts_are_ignored() {
        let bad_hosts = [
            "evil.com/x",
            "evil.com?x=1",
            "evil.com#frag",
            "evil.com\\x",
            "javascript:alert(1)",
            "user@evil.com",
            "evil.com:99999",
            "evil.com:0",
            "evil.com:+80",
            "evil.com:80:81",
            "evil.com:",
            "a b.com",
            "a\tb.com",
            "-evil.com",
            "evil..com",
            ".evil.com",
            "[::1",
            "[zz::1]",
            "[::1]x",
            "[fe80::1%eth0]",
            "\"evil.com\"",
            "évil.com",
            "<script>",
        ];
        for bad in bad_hosts {
            let got = base("10.0.0.1:1", &[("X-Forwarded-Host", bad)], &cfg());
            assert_eq!(got, FALLBACK, "X-Forwarded-Host {bad:?}");
            if bad.contains('"') {
                continue;
            }
            let fwd = format!("host=\"{bad}\";proto=https");
            let got = base("10.0.0.1:1", &[("Forwarded", &fwd)], &cfg());
            assert_eq!(got, FALLBACK, "Forwarded {fwd:?}");
        }

        // Bad proto values are dropped, the valid host is kept with the fallback scheme.
        for bad in ["javascript", "ftp", "https://evil.com", "http s", ""] {
            let got = base(
                "10.0.0.1:1",
                &[
                    ("X-Forwarded-Proto", bad),
                    ("X-Forwarded-Host", "ok.example"),
                ],
                &cfg(),
            );
            assert_eq!(got, "http://ok.example", "proto {bad:?}");
        }

        // Bad prefixes are dropped.
        for bad in [
            "dicomweb",
            "//evil.com",
            "/a/../b",
            "/a/./b",
            "/a b",
            "/a?x",
            "/a#x",
            "/a%2F..",
            "/a\\b",
            "/a:b",
        ] {
            let got = base(
                "10.0.0.1:1",
                &[
                    ("X-Forwarded-Host", "ok.example"),
                    ("X-Forwarded-Prefix", bad),
                ],
                &cfg(),
            );
            assert_eq!(got, "http://ok.example", "prefix {bad:?}");
        }

        // Non-ASCII bytes in a header value: ignored.
        let req = TestRequest::default()
            .peer_addr("10.0.0.1:1".parse().unwrap())
            .insert_header((
                "X-Forwarded-Host",
                HeaderValue::from_bytes(b"ok.example\xff").unwrap(),
            ))
            .to_http_request();
        assert_eq!(base_url(&req, &cfg()), FALLBACK);

        // Unterminated quote in Forwarded: the header is unusable, X-Forwarded-Host still works.
        let got = base(
            "10.0.0.1:1",
            &[
                ("Forwarded", "host=\"evil.com;proto=https"),
                ("X-Forwarded-Host", "ok.example"),
            ],
            &cfg(),
        );
        assert_eq!(got, "http://ok.example");
    }

    #[test]
    fn crlf_and_control_characters_never_validate() {
        // actix refuses CR/LF in header values, so check the validators directly.
        for bad in ["evil.com\r\nSet-Cookie: x=1", "evil.com\n", "evil.com\0"] {
            assert_eq!(valid_host(bad), None, "{bad:?}");
            assert!(validate_public_url(&format!("https://{bad}/x")).is_err());
            assert_eq!(valid_path(&format!("/{bad}"), true), None);
        }
        assert_eq!(valid_proto("https\r\n"), None);
    }

    #[test]
    fn validates_public_urls() {
        let ok = [
            ("http://pacs.example.org", "http://pacs.example.org"),
            ("https://pacs.example.org/", "https://pacs.example.org"),
            (
                "HTTPS://PACS.example.org:8443/DicomWeb//",
                "https://pacs.example.org:8443/DicomWeb",
            ),
            ("  https://a.example/x/y  ", "https://a.example/x/y"),
            ("http://[::1]:8042/a%20b", "http://[::1]:8042/a%20b"),
            ("http://127.0.0.1:8042", "http://127.0.0.1:8042"),
        ];
        for (input, want) in ok {
            assert_eq!(validate_public_url(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            ("pacs.example.org", "must start with http"),
            ("ftp://pacs.example.org", "must start with http"),
            ("javascript://alert(1)", "must start with http"),
            ("https://", "invalid host"),
            ("https://a.example?x=1", "query or fragment"),
            ("https://a.example/#top", "query or fragment"),
            ("https://user:pw@a.example", "credentials"),
            ("https://a.example:70000", "invalid host"),
            ("https://a .example", "invalid host"),
            ("https://a.example/x y", "invalid path"),
            ("https://a.example/../x", "invalid path"),
            ("https://a.example/x%2", "invalid path"),
        ];
        for (input, why) in bad {
            let e = validate_public_url(input).expect_err(input);
            assert!(e.contains(why), "{input}: {e}");
            assert!(e.starts_with("public URL "), "{e}");
        }
    }

    #[test]
    fn forwarded_parsing() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("proto=https;host=a", Some("https"), Some("a")),
            (" Proto = https ; HOST=a ", Some("https"), Some("a")),
            ("for=x, proto=https;host=b", None, None),
            ("host=\"a;b,c\";proto=http", Some("http"), Some("a;b,c")),
            ("for=1.2.3.4", None, None),
            ("host=\"unterminated", None, None),
            ("host=a;host=b", None, Some("a")),
        ];
        for (value, proto, host) in cases {
            let (p, h) = forwarded_first_element(value);
            assert_eq!((p.as_deref(), h.as_deref()), (*proto, *host), "{value}");
        }
    }
}
