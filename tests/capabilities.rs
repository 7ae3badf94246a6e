//! Retrieve Capabilities (PS3.18 8.9): `OPTIONS /dicom-web` as WADL and JSON, generated from the
//! route table the server registers; CORS preflights still answered by the CORS layer.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const WADL_NS: &str = "http://wadl.dev.java.net/2009/02";

/// Routes every build must have (other transactions may add more).
const KNOWN: &[(&str, &str)] = &[
    ("OPTIONS", ""),
    ("POST", "/studies"),
    ("POST", "/studies/{study}"),
    ("GET", "/studies"),
    ("GET", "/series"),
    ("GET", "/instances"),
    ("GET", "/studies/{study}/series"),
    ("GET", "/studies/{study}/instances"),
    ("GET", "/studies/{study}/series/{series}/instances"),
    ("GET", "/studies/{study}"),
    ("GET", "/studies/{study}/series/{series}"),
    (
        "GET",
        "/studies/{study}/series/{series}/instances/{instance}",
    ),
    ("GET", "/studies/{study}/metadata"),
    ("GET", "/studies/{study}/series/{series}/metadata"),
    (
        "GET",
        "/studies/{study}/series/{series}/instances/{instance}/metadata",
    ),
    (
        "GET",
        "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    ),
    ("GET", "/studies/{study}/bulkdata"),
    ("GET", "/studies/{study}/series/{series}/bulkdata"),
    (
        "GET",
        "/studies/{study}/series/{series}/instances/{instance}/bulkdata",
    ),
    (
        "GET",
        "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:.+}",
    ),
    ("GET", "/studies/{study}/pixeldata"),
    ("GET", "/studies/{study}/series/{series}/pixeldata"),
    (
        "GET",
        "/studies/{study}/series/{series}/instances/{instance}/pixeldata",
    ),
    ("DELETE", "/studies/{study}"),
    ("DELETE", "/studies/{study}/series/{series}"),
    (
        "DELETE",
        "/studies/{study}/series/{series}/instances/{instance}",
    ),
];

fn table() -> BTreeSet<(String, String)> {
    lightbox::dicomweb::route_table()
        .iter()
        .map(|r| (r.method.to_owned(), r.path.clone()))
        .collect()
}

fn capabilities(s: &Server, accept: Option<&str>) -> Resp {
    let mut rb = s.client().request(reqwest::Method::OPTIONS, s.dicomweb());
    if let Some(a) = accept {
        rb = rb.header("Accept", a);
    }
    send(rb)
}

#[test]
fn the_table_holds_every_known_route_once() {
    let t = table();
    assert_eq!(
        t.len(),
        lightbox::dicomweb::route_table().len(),
        "duplicates"
    );
    for (m, p) in KNOWN {
        assert!(
            t.contains(&(m.to_string(), p.to_string())),
            "{m} {p} missing"
        );
    }
}

#[test]
fn wadl_and_json_list_every_registered_route() {
    let s = Server::start(&[]);

    // WADL is the default.
    let r = capabilities(&s, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.sun.wadl+xml")
    );
    let doc = roxmltree::Document::parse(&r.text).expect("WADL parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "application");
    assert_eq!(root.tag_name().namespace(), Some(WADL_NS));
    let resources = root
        .children()
        .find(|n| n.has_tag_name((WADL_NS, "resources")))
        .expect("resources");
    assert_eq!(resources.attribute("base"), Some(s.dicomweb().as_str()));
    let mut from_wadl = BTreeSet::new();
    for res in resources
        .children()
        .filter(|n| n.has_tag_name((WADL_NS, "resource")))
    {
        let path = res.attribute("path").expect("path");
        // Template parameters are declared for every `{name}` of the path.
        let templates: Vec<&str> = res
            .children()
            .filter(|n| {
                n.has_tag_name((WADL_NS, "param")) && n.attribute("style") == Some("template")
            })
            .filter_map(|n| n.attribute("name"))
            .collect();
        assert_eq!(templates.len(), path.matches('{').count(), "{path}");
        for m in res
            .children()
            .filter(|n| n.has_tag_name((WADL_NS, "method")))
        {
            let name = m.attribute("name").expect("method name");
            assert!(
                from_wadl.insert((name.to_owned(), path.to_owned())),
                "{name} {path} twice"
            );
            let media: Vec<&str> = m
                .descendants()
                .filter(|n| n.has_tag_name((WADL_NS, "representation")))
                .filter_map(|n| n.attribute("mediaType"))
                .collect();
            if name == "GET" {
                assert!(!media.is_empty(), "{name} {path} has no media type");
            }
            if name == "GET" && path == "/studies/{study}" {
                assert!(media.contains(&"application/zip"));
                assert!(media.contains(&"multipart/related; type=\"application/dicom\""));
            }
            if path == "/studies" && name == "GET" {
                let params: Vec<&str> = m
                    .descendants()
                    .filter(|n| {
                        n.has_tag_name((WADL_NS, "param")) && n.attribute("style") == Some("query")
                    })
                    .filter_map(|n| n.attribute("name"))
                    .collect();
                for p in ["limit", "offset", "includefield", "fuzzymatching"] {
                    assert!(params.contains(&p), "{p} in {params:?}");
                }
            }
        }
    }
    assert_eq!(from_wadl, table(), "WADL differs from the route table");
    for (m, p) in KNOWN {
        assert!(
            from_wadl.contains(&(m.to_string(), p.to_string())),
            "{m} {p}"
        );
    }

    // The same content as JSON.
    let r = capabilities(&s, Some("application/json"));
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json["base"], Value::String(s.dicomweb()));
    let mut from_json = BTreeSet::new();
    for res in r.json["resources"].as_array().unwrap() {
        let path = res["path"].as_str().unwrap();
        for m in res["methods"].as_array().unwrap() {
            from_json.insert((m["name"].as_str().unwrap().to_owned(), path.to_owned()));
            assert!(m["title"].as_str().is_some_and(|t| !t.is_empty()));
        }
    }
    assert_eq!(from_json, table(), "JSON differs from the route table");

    // q-values choose; anything else is 406; the accept query parameter works too.
    let r = capabilities(
        &s,
        Some("application/vnd.sun.wadl+xml;q=0.5, application/json"),
    );
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(capabilities(&s, Some("text/html")).status, 406);
    let r = send(s.client().request(
        reqwest::Method::OPTIONS,
        format!("{}?accept=application/json", s.dicomweb()),
    ));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );

    // Every described route is really registered: an unregistered one gets actix's bare 404
    // or a 405, ours answer (a JSON error at worst).
    for route in lightbox::dicomweb::route_table() {
        let path = route
            .path
            .replace("{study}", "1.2.3.4")
            .replace("{series}", "1.2.3.4.5")
            .replace("{instance}", "1.2.3.4.5.6")
            .replace("{frames}", "1")
            .replace("{path:.+}", "00420011")
            .replace("{", "")
            .replace("}", "");
        let m = reqwest::Method::from_bytes(route.method.as_bytes()).unwrap();
        let r = send(s.client().request(m, format!("{}{path}", s.dicomweb())));
        assert!(
            !(r.status == 404 && r.text.is_empty()) && r.status != 405,
            "{} {} is not registered ({})",
            route.method,
            route.path,
            r.status
        );
    }
}

#[test]
fn capabilities_need_sign_in_but_preflights_are_answered_by_cors() {
    let s = Server::start(&[]);
    // One policy for the service: no credentials, 401.
    let r = send(client().request(reqwest::Method::OPTIONS, s.dicomweb()));
    assert_eq!(r.status, 401, "{}", r.text);
    // A preflight (Origin + Access-Control-Request-Method) carries no credentials and is
    // answered by the CORS layer, not by the capabilities handler.
    let r = send(
        client()
            .request(reqwest::Method::OPTIONS, s.dicomweb())
            .header("Origin", "https://viewer.example.org")
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization"),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("access-control-allow-origin").is_some());
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );
    assert!(!r.text.contains("<application"));
    // Same for a preflight of DELETE on a study.
    let r = send(
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/studies/1.2.3", s.dicomweb()),
            )
            .header("Origin", "https://viewer.example.org")
            .header("Access-Control-Request-Method", "DELETE"),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("DELETE")
    );
    // With an Origin but no Access-Control-Request-Method it is not a preflight: the
    // capabilities, with the CORS header of an actual response.
    let r = send(
        s.client()
            .request(reqwest::Method::OPTIONS, s.dicomweb())
            .header("Origin", "https://viewer.example.org")
            .header("Accept", "application/json"),
    );
    assert_eq!(r.status, 200);
    assert!(r.json["resources"].is_array());
    assert!(r.header("access-control-allow-origin").is_some());
}
