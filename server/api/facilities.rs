//! Facility accounts (outside hospitals and clinics) and API tokens for DICOMweb clients.
//! Staff create facility accounts with an expiry (14 days by default), extend or disable them,
//! and create, list and revoke their API tokens. Staff may also hold tokens of their own (at
//! most 90 days).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::auth::bootstrap::generate_password;
use crate::auth::model::{ApiToken, Id, Role, User, normalise_email};
use crate::auth::now_ms;
use crate::error::{Error, Result};
use crate::state::AppState;

use super::auth::user_json;

const DAY_MS: u64 = 86_400_000;
/// Default lifetime of a facility account.
pub const FACILITY_DEFAULT_DAYS: u64 = 14;
/// Longest lifetime of a facility account or of one extension.
pub const FACILITY_MAX_DAYS: u64 = 365;
/// Longest lifetime of a staff member's own API token.
pub const STAFF_TOKEN_MAX_DAYS: u64 = 90;

fn parse_id(raw: &str) -> Result<Id> {
    Id::parse(raw).ok_or_else(|| Error::NotFound("no such account".into()))
}

fn days(d: Option<u64>, default: u64, max: u64, what: &str) -> Result<u64> {
    let d = d.unwrap_or(default);
    if d == 0 || d > max {
        return Err(Error::BadRequest(format!(
            "{what} must be between 1 and {max} days"
        )));
    }
    Ok(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFacility {
    email: String,
    organisation: String,
    expires_in_days: Option<u64>,
}

/// `POST /api/facilities` (staff): a facility account with a temporary password (shown once).
pub async fn create_facility(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<NewFacility>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let body = body.into_inner();
    let email = normalise_email(&body.email)
        .ok_or_else(|| Error::BadRequest("this is not an email address".into()))?;
    let organisation = body.organisation.trim().to_owned();
    if organisation.is_empty() || organisation.chars().count() > 128 {
        return Err(Error::BadRequest(
            "organisation must be 1 to 128 characters".into(),
        ));
    }
    let d = days(
        body.expires_in_days,
        FACILITY_DEFAULT_DAYS,
        FACILITY_MAX_DAYS,
        "expires_in_days",
    )?;
    let temporary = generate_password();
    let hash = state
        .hasher
        .hash(temporary.clone())
        .await
        .map_err(Error::internal)?;
    let now = now_ms();
    let user = User {
        id: Id::random(),
        email,
        role: Role::Facility,
        password_hash: hash,
        created_ms: now,
        must_change_password: true,
        disabled: false,
        expires_ms: Some(now + d * DAY_MS),
        organisation: Some(organisation),
    };
    let st = state.clone();
    let u2 = user.clone();
    web::block(move || st.accounts.create(&u2)).await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "create-facility", Outcome::Success);
    ev.detail = json!({"target": user.id.as_str(), "expires_at_ms": user.expires_ms});
    state.audit.record(ev);
    Ok(HttpResponse::Created().json(json!({
        "user": user_json(&user),
        "temporary_password": temporary,
    })))
}

/// `GET /api/facilities` (staff)
pub async fn list_facilities(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let st = state.clone();
    let users = web::block(move || st.accounts.users()).await??;
    Ok(HttpResponse::Ok().json(
        users
            .iter()
            .filter(|u| u.role == Role::Facility)
            .map(user_json)
            .collect::<Vec<_>>(),
    ))
}

async fn facility(state: &web::Data<AppState>, id: Id) -> Result<User> {
    let st = state.clone();
    web::block(move || st.accounts.user(&id))
        .await??
        .filter(|u| u.role == Role::Facility)
        .ok_or_else(|| Error::NotFound("no such facility account".into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    days: u64,
}

/// `POST /api/facilities/{id}/extend` (staff): push the expiry `days` past the later of now and
/// the current expiry. Audited.
pub async fn extend_facility(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Extend>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let d = days(Some(body.days), 0, FACILITY_MAX_DAYS, "days")?;
    let mut user = facility(&state, parse_id(&path)?).await?;
    let now = now_ms();
    user.expires_ms = Some(user.expires_ms.unwrap_or(now).max(now) + d * DAY_MS);
    let st = state.clone();
    let u2 = user.clone();
    web::block(move || st.accounts.update(&u2)).await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "extend-facility", Outcome::Success);
    ev.detail = json!({"target": user.id.as_str(), "expires_at_ms": user.expires_ms});
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(user_json(&user)))
}

/// `POST /api/facilities/{id}/disable` (staff): the account's sessions and tokens die at once.
pub async fn disable_facility(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let mut user = facility(&state, parse_id(&path)?).await?;
    user.disabled = true;
    let st = state.clone();
    let u2 = user.clone();
    web::block(move || -> Result<()> {
        st.accounts.update(&u2)?;
        st.accounts.end_all_access(&u2.id)?;
        Ok(())
    })
    .await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "disable-facility", Outcome::Success);
    ev.detail = json!({"target": user.id.as_str()});
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(user_json(&user)))
}

fn token_json(t: &ApiToken) -> serde_json::Value {
    json!({
        "id": t.id.as_str(),
        "user_id": t.user_id.as_str(),
        "label": t.label,
        "created_at_ms": t.created_ms,
        "expires_at_ms": t.expires_ms,
        "last_used_at_ms": t.last_used_ms,
    })
}

/// Whose tokens may the caller manage: facility accounts (staff), or their own (staff).
async fn token_owner(principal: &Principal, state: &web::Data<AppState>, id: Id) -> Result<User> {
    access::check(principal, Action::ManageFacilities)?;
    let me = principal.user().expect("authorised");
    let st = state.clone();
    let owner = web::block(move || st.accounts.user(&id))
        .await??
        .ok_or_else(|| Error::NotFound("no such account".into()))?;
    if owner.role == Role::Facility || owner.id == me.id {
        Ok(owner)
    } else {
        Err(Error::Forbidden(
            "tokens can be made for facility accounts or for yourself".into(),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    label: String,
    expires_in_days: Option<u64>,
}

/// `POST /api/users/{id}/tokens` (staff): the token is shown once.
pub async fn create_token(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<NewToken>,
) -> Result<HttpResponse> {
    let owner = token_owner(&principal, &state, parse_id(&path)?).await?;
    let body = body.into_inner();
    let label = body.label.trim().to_owned();
    if label.is_empty() || label.chars().count() > 100 {
        return Err(Error::BadRequest(
            "label must be 1 to 100 characters".into(),
        ));
    }
    let now = now_ms();
    let max_days = if owner.role == Role::Facility {
        FACILITY_MAX_DAYS
    } else {
        STAFF_TOKEN_MAX_DAYS
    };
    let d = days(
        body.expires_in_days,
        14.min(max_days),
        max_days,
        "expires_in_days",
    )?;
    let mut expires = now + d * DAY_MS;
    if let Some(account_end) = owner.expires_ms {
        // A facility token never outlives its account (an extension does not revive it).
        expires = expires.min(account_end);
    }
    let me = principal.user().expect("authorised").id.clone();
    let st = state.clone();
    let oid = owner.id.clone();
    let (t, secret) =
        web::block(move || st.accounts.create_token(&oid, &me, &label, now, expires)).await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "create-token", Outcome::Success);
    ev.detail = json!({"target": owner.id.as_str(), "token_id": t.id.as_str()});
    state.audit.record(ev);
    let mut j = token_json(&t);
    j["token"] = json!(secret);
    Ok(HttpResponse::Created().json(j))
}

/// `GET /api/users/{id}/tokens` (staff)
pub async fn list_tokens(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let owner = token_owner(&principal, &state, parse_id(&path)?).await?;
    let st = state.clone();
    let tokens = web::block(move || st.accounts.tokens_of(&owner.id)).await??;
    Ok(HttpResponse::Ok().json(tokens.iter().map(token_json).collect::<Vec<_>>()))
}

/// `DELETE /api/tokens/{id}` (staff): revocation takes effect on the next request.
pub async fn revoke_token(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageFacilities)?;
    let id = Id::parse(&path).ok_or_else(|| Error::NotFound("no such token".into()))?;
    let st = state.clone();
    let t2 = id.clone();
    let t = web::block(move || st.accounts.token(&t2))
        .await??
        .ok_or_else(|| Error::NotFound("no such token".into()))?;
    token_owner(&principal, &state, t.user_id.clone()).await?;
    let st = state.clone();
    web::block(move || st.accounts.revoke_token(&id)).await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "revoke-token", Outcome::Success);
    ev.detail = json!({"target": t.user_id.as_str(), "token_id": t.id.as_str()});
    state.audit.record(ev);
    Ok(HttpResponse::NoContent().finish())
}
