//! Delivering studies: staff grant a study to a patient (by claim code) or share it with a
//! facility account; patients redeem codes; staff list and revoke grants.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::auth::grants::{Claim, Grant, GrantKind, code_hash, new_claim_code};
use crate::auth::model::{Id, Role, normalise_email};
use crate::auth::now_ms;
use crate::error::{Error, Result};
use crate::ids::StudyUid;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// Deliver to a patient: they claim it with the code.
    email: Option<String>,
    /// Share with a facility account: visible at once.
    account_id: Option<String>,
}

fn grant_json(g: &Grant) -> serde_json::Value {
    let mut j = json!({
        "id": g.id.as_str(),
        "study": g.study.as_str(),
        "created_by": g.created_by.as_str(),
        "created_at_ms": g.created_ms,
        "revoked_at_ms": g.revoked_ms,
    });
    match &g.kind {
        GrantKind::Patient {
            email,
            claimed_by,
            claimed_ms,
            ..
        } => {
            j["kind"] = json!("patient");
            j["email"] = json!(email);
            j["claimed_by"] = json!(claimed_by.as_ref().map(Id::as_str));
            j["claimed_at_ms"] = json!(claimed_ms);
        }
        GrantKind::Facility { account_id } => {
            j["kind"] = json!("facility");
            j["account_id"] = json!(account_id.as_str());
        }
    }
    j
}

/// `POST /api/studies/{study}/grants` (staff): `{"email"}` → a claim code, shown once;
/// `{"account_id"}` → shared with that facility at once.
pub async fn create_grant(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<StudyUid>,
    body: web::Json<NewGrant>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let study = path.into_inner();
    let me = principal.user().expect("authorised").id.clone();
    let st = state.clone();
    let s2 = study.clone();
    if web::block(move || st.store.repo.study(&s2))
        .await??
        .is_none()
    {
        return Err(Error::NotFound(format!("study {study} is not stored here")));
    }
    let body = body.into_inner();
    let (kind, code) = match (body.email, body.account_id) {
        (Some(email), None) => {
            let email = normalise_email(&email)
                .ok_or_else(|| Error::BadRequest("this is not an email address".into()))?;
            let code = new_claim_code();
            (
                GrantKind::Patient {
                    email,
                    code_hash: code_hash(&code),
                    claimed_by: None,
                    claimed_ms: None,
                },
                Some(code),
            )
        }
        (None, Some(account)) => {
            let id = Id::parse(&account)
                .ok_or_else(|| Error::BadRequest("account_id is not an account id".into()))?;
            let st = state.clone();
            let id2 = id.clone();
            let acc = web::block(move || st.accounts.user(&id2)).await??;
            if !acc.is_some_and(|u| u.role == Role::Facility && !u.disabled) {
                return Err(Error::BadRequest(
                    "account_id must name an active facility account".into(),
                ));
            }
            (GrantKind::Facility { account_id: id }, None)
        }
        _ => {
            return Err(Error::BadRequest(
                "give exactly one of email (deliver to a patient) or account_id (share with a facility)".into(),
            ));
        }
    };
    let grant = Grant {
        id: Id::random(),
        study: study.clone(),
        kind,
        created_by: me,
        created_ms: now_ms(),
        revoked_ms: None,
    };
    let st = state.clone();
    let g2 = grant.clone();
    web::block(move || st.grants.create(&g2)).await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "grant", Outcome::Success);
    ev.studies = vec![study.to_string()];
    ev.detail = json!({"grant_id": grant.id.as_str(), "kind": grant_json(&grant)["kind"]});
    state.audit.record(ev);
    let mut j = json!({"grant_id": grant.id.as_str(), "grant": grant_json(&grant)});
    if let Some(code) = code {
        j["claim_code"] = json!(code);
    }
    Ok(HttpResponse::Created().json(j))
}

/// `GET /api/studies/{study}/grants` (staff). Claim codes are never shown again.
pub async fn list_grants(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<StudyUid>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let study = path.into_inner();
    let st = state.clone();
    let grants = web::block(move || st.grants.of_study(&study)).await??;
    Ok(HttpResponse::Ok().json(grants.iter().map(grant_json).collect::<Vec<_>>()))
}

/// `DELETE /api/grants/{id}` (staff): takes effect on the grantee's next request.
pub async fn revoke_grant(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let id = Id::parse(&path).ok_or_else(|| Error::NotFound("no such grant".into()))?;
    let st = state.clone();
    let g = web::block(move || st.grants.revoke(&id, now_ms()))
        .await??
        .ok_or_else(|| Error::NotFound("no such grant".into()))?;
    let mut ev = principal.event(event::SECURITY_ALERT, "revoke-grant", Outcome::Success);
    ev.studies = vec![g.study.to_string()];
    ev.detail = json!({"grant_id": g.id.as_str()});
    state.audit.record(ev);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    code: String,
}

/// `POST /api/grants/claim` (patients): redeem a claim code; the study becomes visible.
/// Unknown, revoked and already-used codes get one answer; attempts are throttled per account.
pub async fn claim(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<ClaimBody>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::OwnStudies)?;
    let user = principal.user().expect("authorised").clone();
    if user.role != Role::Patient {
        return Err(Error::Forbidden(
            "claim codes are for patient accounts".into(),
        ));
    }
    let key = format!("claim:{}", user.id);
    state
        .throttle
        .check_account(&key, Instant::now())
        .map_err(|r| Error::TooManyRequests {
            message: "too many wrong codes; wait and try again".into(),
            retry_after: r.after.as_secs().max(1),
        })?;
    let st = state.clone();
    let code = body.into_inner().code;
    let uid = user.id.clone();
    let result = web::block(move || st.grants.claim(&code, &uid, now_ms())).await??;
    match result {
        Claim::Claimed(g) => {
            state.throttle.record_success(&key);
            let mut ev = principal.event(event::SECURITY_ALERT, "claim", Outcome::Success);
            ev.studies = vec![g.study.to_string()];
            ev.detail = json!({"grant_id": g.id.as_str()});
            state.audit.record(ev);
            Ok(HttpResponse::Ok()
                .json(json!({"study": g.study.as_str(), "grant_id": g.id.as_str()})))
        }
        Claim::Refused => {
            state.throttle.record_failure(&key, Instant::now());
            state
                .audit
                .record(principal.event(event::SECURITY_ALERT, "claim", Outcome::Failure));
            Err(Error::NotFound(
                "this code is unknown, was revoked, or has been used by another account".into(),
            ))
        }
    }
}
