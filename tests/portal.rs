//! The embedded portal's static routes: the page and its assets with a strict CSP, ETags, and
//! nothing outside `portal/` reachable.

mod common;

use common::*;

#[test]
fn portal_files_are_served_with_csp_and_nothing_else_is() {
    let s = Server::start(&[]);
    let c = client();
    let r = c.get(format!("{}/", s.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "img-src 'self' blob: data:",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    let page = r.text().unwrap();
    assert!(page.contains("/assets/js/app.js") && !page.contains("<script>"));

    let r = c.get(format!("{}/assets/js/app.js", s.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = c
        .get(format!("{}/assets/js/app.js", s.url))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);

    for path in [
        "/assets/nope.js",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/..%2fCargo.toml",
        "/assets/.hidden",
        "/assets/js//app.js",
    ] {
        let r = c.get(format!("{}{path}", s.url)).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(!r.text().unwrap().contains("[package]"), "{path}");
    }
}
