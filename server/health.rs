//! `GET /healthz`: liveness and store status, no patient data.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::error::Result;
use crate::state::AppState;

pub async fn healthz(principal: Principal, state: web::Data<AppState>) -> Result<HttpResponse> {
    access::check(&principal, Action::Health)?;
    let st = state.clone();
    // sled read and statvfs: blocking.
    let (index_ok, free) = web::block(move || {
        (
            st.store.repo.schema_version().is_ok(),
            st.store.blobs.available_space().ok(),
        )
    })
    .await?;
    let reserve = state.config.disk_reserve_bytes;
    let disk_ok = free.is_none_or(|f| f >= reserve);
    let audit_ok = state.audit.healthy();
    let status = if index_ok && disk_ok && audit_ok {
        "ok"
    } else {
        "degraded"
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "audit": {"status": if audit_ok { "ok" } else { "failing" }},
            "store": {
                "status": if index_ok { "ok" } else { "error" },
                "free_bytes": free,
                "reserve_bytes": reserve,
                "accepting_uploads": disk_ok,
            }
        })))
}
