//! `GET /api/audit`: the audit trail for staff, newest first, filtered by user, study, event and
//! time. Reading the trail is itself audited (110101).

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{AuditFilter, Outcome, event};
use crate::auth::model::Id;
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
    let (log, accounts) = (state.audit_log.clone(), state.accounts.clone());
    let f2 = filter.clone();
    let (records, emails) = web::block(move || -> Result<_> {
        let records = log
            .query(&f2, limit)
            .map_err(|e| Error::store(e.to_string()))?;
        // Who each account is, for the people reading the trail (staff see emails of the
        // patients they deliver to anyway); accounts deleted since keep their id only.
        let mut emails: HashMap<String, String> = HashMap::new();
        for r in &records {
            if let Some(id) = r.event.user_id.as_deref()
                && !emails.contains_key(id)
                && let Some(user) = Id::parse(id)
                    .map(|i| accounts.user(&i))
                    .transpose()?
                    .flatten()
            {
                emails.insert(id.to_owned(), user.email);
            }
        }
        Ok((records, emails))
    })
    .await??;
    let mut ev = principal.event(event::AUDIT_LOG_USED, "read-audit", Outcome::Success);
    ev.detail = json!({"filter": filter, "returned": records.len()});
    state.audit.record(ev);
    // Each record as stored (its hash covers `seq`, `prev` and `event`), plus `user_email`
    // beside it when the account still exists.
    let out: Vec<serde_json::Value> = records
        .into_iter()
        .map(|r| {
            let email = r
                .event
                .user_id
                .as_deref()
                .and_then(|id| emails.get(id))
                .cloned();
            let mut v = json!(r);
            if let (Some(obj), Some(email)) = (v.as_object_mut(), email) {
                obj.insert("user_email".into(), json!(email));
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}
