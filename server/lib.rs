//! Lightbox: a self-hosted DICOMweb origin server with a patient portal.
//!
//! [`configure`] is the whole route table; [`run`] binds and serves; `main.rs` only reads the
//! configuration and calls these.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod dicom;
pub mod dicomweb;
pub mod error;
pub mod health;
pub mod http;
pub mod ids;
pub mod import;
pub mod portal;
pub mod render;
pub mod search;
pub mod state;
pub mod store;

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{App, HttpServer, web};

use config::Config;
use error::Error;
use state::AppState;
use store::Store;

/// Headers browsers may send to DICOMweb routes (OHIF sends all of these).
const CORS_ALLOWED_HEADERS: [header::HeaderName; 5] = [
    header::AUTHORIZATION,
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::IF_NONE_MATCH,
    header::RANGE,
];

/// Headers a browser client may read from DICOMweb responses.
const CORS_EXPOSED_HEADERS: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_LOCATION,
    header::WARNING,
    header::ETAG,
];

fn cors(config: &Config) -> Cors {
    // Credentials are never allowed cross-origin: cookies are not honoured there.
    let mut c = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE", "OPTIONS"])
        .allowed_headers(CORS_ALLOWED_HEADERS)
        .expose_headers(CORS_EXPOSED_HEADERS)
        .max_age(3600);
    if config.cors_origins.iter().any(|o| o == "*") {
        c = c.allow_any_origin().send_wildcard();
    } else {
        for o in &config.cors_origins {
            c = c.allowed_origin(o);
        }
    }
    c
}

/// The whole route table, used by the server and by tests alike.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    let config = state.config.clone();
    cfg.app_data(state)
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| Error::BadRequest(format!("invalid path: {e}")).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| Error::BadRequest(format!("invalid query: {e}")).into()),
        )
        .app_data(
            web::JsonConfig::default()
                .limit(64 * 1024)
                .error_handler(|e, _| Error::BadRequest(format!("invalid JSON body: {e}")).into()),
        )
        .route("/healthz", web::get().to(health::healthz))
        .service(
            web::scope("/api")
                .wrap(actix_web::middleware::from_fn(access::guard))
                .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
                .configure(api::routes),
        )
        .service(
            web::scope("/dicom-web")
                .wrap(actix_web::middleware::from_fn(access::guard))
                .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "private, no-store")))
                .wrap(cors(&config))
                .configure(dicomweb::routes),
        )
        // The patient portal: static, embedded; it calls /api and /dicom-web.
        .configure(portal::routes)
        // WADO-URI (PS3.18 9) lives at the root, under the same guard as DICOMweb.
        .service(
            web::scope("/wado")
                .wrap(actix_web::middleware::from_fn(access::guard))
                .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "private, no-store")))
                .wrap(cors(&config))
                .configure(dicomweb::wado_uri::routes),
        );
}

/// Security headers on every response.
fn security_headers(config: &Config) -> DefaultHeaders {
    let mut h = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"));
    if config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
    {
        h = h.add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"));
    }
    h
}

/// Open the store, create the first admin if no user exists, bind, serve until SIGINT/SIGTERM,
/// then flush. `on_bound` receives the address actually bound (useful with port 0) and what
/// bootstrap did.
pub async fn run(
    config: Config,
    on_bound: impl FnOnce(std::net::SocketAddr, &auth::bootstrap::Bootstrap),
) -> std::io::Result<()> {
    let data = config.data.clone();
    let (store, report) = web::block(move || Store::open(&data))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    if report != Default::default() {
        tracing::info!(?report, "recovered the store after an unclean stop");
    }
    let store = Arc::new(store);
    let listener = TcpListener::bind(config.listen).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    let bound = listener.local_addr()?;
    let urls = http::urls::UrlConfig {
        public_url: config.public_url.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        fallback: format!("http://{bound}"),
    };
    let accounts = Arc::new(auth::Accounts::open(&store.db).map_err(std::io::Error::other)?);
    let grants = Arc::new(auth::grants::Grants::open(&store.db).map_err(std::io::Error::other)?);
    let swept = grants
        .forget_missing_studies(|s| Ok::<_, Error>(store.repo.study(s)?.is_some()))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if swept > 0 {
        tracing::warn!(
            studies = swept,
            "removed the grants of studies that are no longer stored (a delete interrupted by a crash)"
        );
    }
    let tokens = auth::token::TokenKeys::load_or_create(&config.data)?;
    let hasher = auth::password::Hasher::new(2);
    let audit_log = Arc::new(audit::AuditLog::open(&store.db).map_err(std::io::Error::other)?);
    let audit = audit_log.clone().spawn_writer();
    let boot = auth::bootstrap::ensure_admin(
        &accounts,
        &hasher,
        &config.data,
        std::env::var("LIGHTBOX_ADMIN_EMAIL").ok(),
        std::env::var("LIGHTBOX_ADMIN_PASSWORD").ok(),
    )
    .await
    .map_err(std::io::Error::other)?;
    let state = web::Data::new(AppState {
        config: config.clone(),
        store: store.clone(),
        urls,
        accounts,
        grants,
        tokens,
        hasher,
        throttle: auth::throttle::Throttle::new(Default::default()),
        audit_log,
        audit: audit.clone(),
        metadata_cache: Default::default(),
        render_gate: render::Gate::for_cores(),
    });
    tracing::info!(
        listen = %bound,
        data = %config.data.display(),
        "Lightbox {} serving DICOMweb at http://{bound}/dicom-web",
        env!("CARGO_PKG_VERSION")
    );
    on_bound(bound, &boot);
    let config2 = config.clone();
    let server = HttpServer::new(move || {
        let config = config2.clone();
        App::new()
            .wrap(Logger::new("%a \"%r\" %s %b %Dms").log_target("lightbox::http"))
            .wrap(security_headers(&config))
            .configure(|cfg| configure(cfg, state.clone()))
    })
    // Streamed and multipart responses go out in several writes: without TCP_NODELAY, Nagle
    // and the client's delayed ACK stall small responses by ~40 ms.
    .tcp_nodelay(true)
    .listen(listener)?
    .shutdown_timeout(30)
    .run();
    // actix handles SIGINT/SIGTERM: stop accepting, finish in-flight requests, then return.
    server.await?;
    tracing::info!("shutting down: flushing the audit trail and the index");
    if let Err(e) = audit.flush().await {
        tracing::error!(error = %e, "audit trail flush at shutdown failed");
    }
    let s = store.clone();
    web::block(move || s.close())
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    Ok(())
}
