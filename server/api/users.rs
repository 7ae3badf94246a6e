//! User and settings management (admins), and admin-initiated password resets.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::access::{self, Action, Principal};
use crate::audit::{Outcome, event};
use crate::auth::bootstrap::generate_password;
use crate::auth::model::{Id, Role};
use crate::error::{Error, Result};
use crate::state::AppState;

use super::auth::user_json;

fn parse_id(raw: &str) -> Result<Id> {
    Id::parse(raw).ok_or_else(|| Error::NotFound("no such user".into()))
}

/// `GET /api/users` (admin)
pub async fn list_users(principal: Principal, state: web::Data<AppState>) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageUsers)?;
    let st = state.clone();
    let users = web::block(move || st.accounts.users()).await??;
    Ok(HttpResponse::Ok().json(users.iter().map(user_json).collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    role: Option<Role>,
    disabled: Option<bool>,
}

/// `PATCH /api/users/{id}` (admin): role and disabled flag. The last admin cannot be demoted
/// or disabled; a change of role or a disable ends the user's sessions and API tokens.
pub async fn update_user(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<UserUpdate>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageUsers)?;
    let id = parse_id(&path)?;
    let body = body.into_inner();
    let st = state.clone();
    let user = web::block(move || -> Result<_> {
        let mut user = st
            .accounts
            .user(&id)?
            .ok_or_else(|| Error::NotFound("no such user".into()))?;
        let before = (user.role, user.disabled);
        if let Some(r) = body.role {
            user.role = r;
        }
        if let Some(d) = body.disabled {
            user.disabled = d;
        }
        st.accounts.update(&user)?;
        if (user.role, user.disabled) != before {
            // New privileges start from a fresh sign-in; API tokens go with the old role.
            st.accounts.end_all_access(&user.id)?;
        }
        Ok(user)
    })
    .await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "update-user", Outcome::Success);
    ev.detail =
        json!({"target": user.id.as_str(), "role": user.role.as_str(), "disabled": user.disabled});
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(user_json(&user)))
}

/// `POST /api/users/{id}/password-reset` (admin): a temporary password, shown once, that must
/// be changed at the next sign-in; the user's sessions end.
pub async fn reset_password(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageUsers)?;
    let id = parse_id(&path)?;
    let temporary = generate_password();
    let hash = state
        .hasher
        .hash(temporary.clone())
        .await
        .map_err(Error::internal)?;
    let st = state.clone();
    let user = web::block(move || -> Result<_> {
        let mut user = st
            .accounts
            .user(&id)?
            .ok_or_else(|| Error::NotFound("no such user".into()))?;
        user.password_hash = hash;
        user.must_change_password = true;
        st.accounts.update(&user)?;
        st.accounts.end_sessions_of(&user.id, None)?;
        Ok(user)
    })
    .await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "password-reset", Outcome::Success);
    ev.detail = json!({"target": user.id.as_str()});
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(json!({
        "user": user_json(&user),
        "temporary_password": temporary,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    self_signup: bool,
}

/// `GET /api/settings` (admin)
pub async fn get_settings(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageUsers)?;
    let st = state.clone();
    let v = web::block(move || st.accounts.setting("self_signup")).await??;
    Ok(HttpResponse::Ok().json(json!({
        "self_signup": v.and_then(|v| v.as_bool()).unwrap_or(state.config.self_signup),
    })))
}

/// `PUT /api/settings` (admin). Stored settings override the start-up default from the
/// configuration; the README says so.
pub async fn put_settings(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<Settings>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ManageUsers)?;
    let value = body.into_inner().self_signup;
    let st = state.clone();
    web::block(move || st.accounts.set_setting("self_signup", &json!(value))).await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "settings", Outcome::Success);
    ev.detail = json!({"self_signup": value});
    state.audit.record(ev);
    Ok(HttpResponse::Ok().json(json!({"self_signup": value})))
}
