//! Retrieve Capabilities (PS3.18 8.9): `OPTIONS /dicom-web` describes every resource of the
//! service, its methods, the media types it returns and the query parameters it accepts.
//!
//! Generated from [`super::route_table`], the description the route table itself records, so
//! it lists exactly what the server registers. Two representations: WADL
//! (`application/vnd.sun.wadl+xml`, the default, namespace `http://wadl.dev.java.net/2009/02`)
//! and the same content as JSON (`application/json`); anything else is 406.
//!
//! Like every `/dicom-web` route it needs a signed-in account (one policy for the whole
//! service). A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) never
//! reaches this handler: the CORS layer answers it.

use std::collections::BTreeMap;
use std::fmt::Write;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::RouteDoc;
use crate::access::{self, Action, Principal};
use crate::error::Result;
use crate::http::media::{self, Offer};
use crate::http::query::QueryParams;
use crate::state::AppState;

pub const WADL: &str = "application/vnd.sun.wadl+xml";
/// What this resource returns, default first.
pub const MEDIA_TYPES: &[&str] = &[WADL, "application/json"];
const OFFERS: &[Offer] = &[Offer::new(WADL), Offer::new("application/json")];

/// `OPTIONS /dicom-web`
pub async fn capabilities(
    req: HttpRequest,
    principal: Principal,
    params: QueryParams,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::Read)?;
    params.reject_unknown(&["accept"])?;
    let ranges = media::requested_ranges(&req, &params)?;
    let chosen = media::negotiate(&ranges, OFFERS)?;
    let base = super::wado::dicomweb_base(&req, &state);
    let table = super::route_table();
    Ok(if chosen.index == 0 {
        HttpResponse::Ok()
            .content_type(WADL)
            .body(wadl(&base, table))
    } else {
        HttpResponse::Ok().json(as_json(&base, table))
    })
}

/// Routes grouped by path, in table order of first appearance.
fn by_path(table: &[RouteDoc]) -> Vec<(&str, Vec<&RouteDoc>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&RouteDoc>> = BTreeMap::new();
    for r in table {
        if !groups.contains_key(r.path.as_str()) {
            order.push(&r.path);
        }
        groups.entry(&r.path).or_default().push(r);
    }
    order
        .into_iter()
        .map(|p| (p, groups.remove(p).unwrap_or_default()))
        .collect()
}

/// The `{name}` segments of a path template (a `{name:regex}` gives `name`).
fn template_params(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split('}').next())
        .map(|s| s.split(':').next().unwrap_or(s))
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The WADL document.
pub fn wadl(base: &str, table: &[RouteDoc]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <application xmlns=\"http://wadl.dev.java.net/2009/02\">\n",
    );
    let _ = writeln!(x, "  <resources base=\"{}\">", esc(base));
    for (path, routes) in by_path(table) {
        let _ = writeln!(x, "    <resource path=\"{}\">", esc(path));
        for p in template_params(path) {
            let _ = writeln!(
                x,
                "      <param name=\"{}\" style=\"template\" required=\"true\"/>",
                esc(p)
            );
        }
        for r in routes {
            let _ = writeln!(x, "      <method name=\"{}\">", r.method);
            let _ = writeln!(x, "        <doc title=\"{}\"/>", esc(r.title));
            if !r.params.is_empty() {
                x.push_str("        <request>\n");
                for p in r.params {
                    let _ = writeln!(x, "          <param name=\"{}\" style=\"query\"/>", esc(p));
                }
                x.push_str("        </request>\n");
            }
            x.push_str("        <response>\n");
            for m in r.produces {
                let _ = writeln!(x, "          <representation mediaType=\"{}\"/>", esc(m));
            }
            x.push_str("        </response>\n      </method>\n");
        }
        x.push_str("    </resource>\n");
    }
    x.push_str("  </resources>\n</application>\n");
    x
}

/// The same content as JSON: `{"base", "resources": [{"path", "templateParams", "methods":
/// [{"name", "title", "queryParams", "mediaTypes"}]}]}`.
pub fn as_json(base: &str, table: &[RouteDoc]) -> serde_json::Value {
    let resources: Vec<_> = by_path(table)
        .into_iter()
        .map(|(path, routes)| {
            json!({
                "path": path,
                "templateParams": template_params(path),
                "methods": routes.iter().map(|r| json!({
                    "name": r.method,
                    "title": r.title,
                    "queryParams": r.params,
                    "mediaTypes": r.produces,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"base": base, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_params_and_escaping() {
        assert_eq!(
            template_params(
                "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:.+}"
            ),
            vec!["study", "series", "instance", "path"]
        );
        assert!(template_params("/studies").is_empty());
        let x = wadl("http://h/dicom-web", super::super::route_table());
        assert!(x.contains("mediaType=\"multipart/related; type=&quot;application/dicom&quot;\""));
        assert!(!x.contains("type=\"application"));
    }
}
