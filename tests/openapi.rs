//! schema/openapi.yaml documents exactly the `/api` routes the server registers.

mod common;

use std::collections::BTreeSet;

use common::*;

fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/openapi.yaml"))
        .expect("schema/openapi.yaml");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("openapi.yaml parses");
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    let paths = doc["paths"].as_mapping().expect("paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().unwrap();
        if !path.starts_with("/api") {
            continue;
        }
        for (method, _) in item.as_mapping().unwrap() {
            let m = method.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&m) {
                out.insert((m.to_uppercase(), path.to_owned()));
            }
        }
    }
    out
}

#[test]
fn openapi_documents_every_api_route_and_nothing_else() {
    let table: BTreeSet<(String, String)> = lightbox::api::ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let doc = documented();
    let missing: Vec<_> = table.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes not in openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "openapi.yaml documents routes the server lacks: {extra:?}"
    );
}

#[test]
fn every_route_in_the_table_is_registered() {
    // An unregistered route gets actix's bare 404 (no body); ours always answer JSON errors.
    let s = Server::start(&[]);
    for (method, path, _) in lightbox::api::ROUTES {
        let path = path
            .replace("{id}", "0123456789abcdef0123456789abcdef")
            .replace("{study}", "1.2.3.4");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client()
            .request(m, format!("{}{path}", s.url))
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap();
        assert!(
            !(status == 404 && body.is_empty()) && status != 405,
            "{method} {path} is not registered ({status})"
        );
    }
}
