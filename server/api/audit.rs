//! `GET /api/audit`: the audit trail for staff, newest first, filtered by user, study, event and
//! time. Reading the trail is itself audited (110101).

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{AuditFilter, Outcome, event};
use crate::error::{Error, Result};
use crate::http::query::QueryParams;
use crate::state::AppState;

const MAX_LIMIT: usize = 1000;

fn number(q: &QueryParams, name: &str) -> Result<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                Error::BadRequest(format!(
                    "query parameter '{name}' must be a non-negative integer"
                ))
            })
        })
        .transpose()
}

/// `GET /api/audit?user=&study=&event=&since_ms=&until_ms=&limit=` (staff)
pub async fn search_audit(
    principal: Principal,
    state: web::Data<AppState>,
    query: QueryParams,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    query.reject_unknown(&["user", "study", "event", "since_ms", "until_ms", "limit"])?;
    let limit = number(&query, "limit")?
        .unwrap_or(100)
        .min(MAX_LIMIT as u64) as usize;
    let filter = AuditFilter {
        user_id: query.get("user").map(str::to_owned),
        study: query.get("study").map(str::to_owned),
        event: query.get("event").map(str::to_owned),
        since_ms: number(&query, "since_ms")?,
        until_ms: number(&query, "until_ms")?,
    };
    let log = state.audit_log.clone();
    let f2 = filter.clone();
    let records = web::block(move || log.query(&f2, limit))
        .await?
        .map_err(|e| Error::store(e.to_string()))?;
    let mut ev = principal.event(event::AUDIT_LOG_USED, "read-audit", Outcome::Success);
    ev.detail = json!({"filter": filter, "returned": records.len()});
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(records))
}
