//! The patient portal: static files from `portal/`, embedded in the binary at build time (so the
//! one binary is the whole product: no CDN, no download at run time), served at `/`.
//!
//! The portal is a single page (`portal/index.html`) with ES modules and one stylesheet under
//! `/assets/`. It talks only to `/api` and `/dicom-web` with the session cookie. Pages get a
//! strict Content-Security-Policy: scripts, styles and connections from this origin only, images
//! also from `blob:`/`data:`, no plugins, no framing, no inline script.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

#[derive(rust_embed::Embed)]
#[folder = "portal/"]
struct Files;

/// The Content-Security-Policy of every portal response.
pub const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; \
                       frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{path:.+}", web::get().to(asset));
}

fn file(path: &str, req: &HttpRequest, cache: &'static str) -> HttpResponse {
    let Some(f) = Files::get(path) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .body("not found");
    };
    let etag = format!("\"{}\"", hex::encode(&f.metadata.sha256_hash()[..12]));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim() == etag));
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
    if fresh {
        return resp.finish();
    }
    let mime = f.metadata.mimetype();
    let mime = if mime.starts_with("text/") || mime.contains("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    resp.content_type(mime).body(f.data.into_owned())
}

/// `GET /`: the single page.
async fn index(req: HttpRequest) -> HttpResponse {
    file("index.html", &req, "no-cache")
}

/// `GET /assets/{path}`: scripts, styles, icons. Revalidated with the ETag on each load
/// (`no-cache`), so a new release is picked up at once.
async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let p = path.into_inner();
    if p.split('/')
        .any(|s| s.is_empty() || s == ".." || s.starts_with('.'))
    {
        return file("", &req, "no-cache");
    }
    file(&format!("assets/{p}"), &req, "no-cache")
}
