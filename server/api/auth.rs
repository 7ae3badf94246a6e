//! Sign-up, sign-in, sign-out, the caller's own account and password.

use std::time::Instant;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::access::{self, Action, Principal, SESSION_COOKIE};
use crate::audit::{Outcome, event};
use crate::auth::model::{Id, Role, User, normalise_email};
use crate::auth::{now_ms, password};
use crate::error::{Error, Result};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    password: String,
}

/// The public view of an account.
pub fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id.as_str(),
        "email": u.email,
        "role": u.role.as_str(),
        "must_change_password": u.must_change_password,
        "disabled": u.disabled,
        "expires_at_ms": u.expires_ms,
        "organisation": u.organisation,
    })
}

fn is_https(req: &HttpRequest, state: &AppState) -> bool {
    crate::http::urls::base_url(req, &state.urls).starts_with("https://")
}

fn session_cookie(req: &HttpRequest, state: &AppState, sid: &str) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, sid.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_https(req, state))
        .max_age(CookieDuration::seconds(
            state.config.session_absolute.as_secs() as i64,
        ))
        .finish()
}

fn clear_cookie(req: &HttpRequest, state: &AppState) -> Cookie<'static> {
    let mut c = session_cookie(req, state, "");
    c.make_removal();
    c
}

/// Per-IP bucket for every unauthenticated credential endpoint.
fn throttle_ip(state: &AppState, principal: &Principal) -> Result<()> {
    if let Some(ip) = principal.ip().and_then(|i| i.parse().ok()) {
        state
            .throttle
            .check_ip(ip, Instant::now())
            .map_err(|r| Error::TooManyRequests {
                message: "too many attempts from this address; wait and try again".into(),
                retry_after: r.after.as_secs().max(1),
            })?;
    }
    Ok(())
}

fn signup_enabled(state: &AppState) -> Result<bool> {
    Ok(state
        .accounts
        .setting("self_signup")?
        .and_then(|v| v.as_bool())
        .unwrap_or(state.config.self_signup))
}

/// Start a session for `user` and answer with the bearer token and the session cookie.
async fn start_session(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    user: &User,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse> {
    let st = state.clone();
    let id = user.id.clone();
    let sid = web::block(move || st.accounts.create_session(&id, now_ms())).await??;
    let key = crate::auth::accounts::session_key(&sid);
    let (token, exp) = state
        .tokens
        .issue(&key, now_ms() / 1000)
        .map_err(Error::internal)?;
    Ok(HttpResponse::build(status)
        .cookie(session_cookie(req, state, &sid))
        .json(json!({
            "token": token,
            "token_type": "Bearer",
            "expires_at": exp,
            "user": user_json(user),
        })))
}

/// `POST /api/auth/register`: the same 201 whether or not the email exists.
pub async fn register(
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse> {
    throttle_ip(&state, &principal)?;
    if !signup_enabled(&state)? {
        return Err(Error::Forbidden(
            "self sign-up is turned off; ask the image library for an account".into(),
        ));
    }
    let body = body.into_inner();
    let email = normalise_email(&body.email)
        .ok_or_else(|| Error::BadRequest("this is not an email address".into()))?;
    let local = email.split('@').next().unwrap_or_default().to_owned();
    password::check_policy(&body.password, &[&email, &local])
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    // Hash whether or not the address is taken, so both answers take as long.
    let hash = state
        .hasher
        .hash(body.password)
        .await
        .map_err(Error::internal)?;
    let user = User {
        id: Id::random(),
        email,
        role: Role::Patient,
        password_hash: hash,
        created_ms: now_ms(),
        must_change_password: false,
        disabled: false,
        expires_ms: None,
        organisation: None,
    };
    let st = state.clone();
    let created = web::block(move || match st.accounts.create(&user) {
        Ok(()) => Ok(true),
        Err(crate::auth::accounts::AccountError::EmailTaken) => Ok(false),
        Err(e) => Err(e),
    })
    .await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "register", Outcome::Success);
    ev.detail = json!({"new_account": created});
    state.audit.record(ev);
    Ok(HttpResponse::Created().json(json!({
        "status": "registered",
        "message": "If this address can be registered, the account is ready: sign in with it."
    })))
}

/// `POST /api/auth/login`
pub async fn login(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse> {
    throttle_ip(&state, &principal)?;
    let body = body.into_inner();
    let email = normalise_email(&body.email).unwrap_or_else(|| body.email.trim().to_lowercase());
    state
        .throttle
        .check_account(&email, Instant::now())
        .map_err(|r| Error::TooManyRequests {
            message: "too many failed sign-ins for this account; wait and try again".into(),
            retry_after: r.after.as_secs().max(1),
        })?;
    let st = state.clone();
    let e2 = email.clone();
    let user = web::block(move || st.accounts.user_by_email(&e2)).await??;
    // Unknown email: verify against a dummy hash so the timing matches.
    let ok = match &user {
        Some(u) => {
            state
                .hasher
                .verify(body.password, u.password_hash.clone())
                .await
        }
        None => state.hasher.verify_dummy(body.password).await,
    }
    .map_err(Error::internal)?;
    let usable = user.filter(|u| ok && !u.disabled && !u.expired(now_ms()));
    let Some(user) = usable else {
        state.throttle.record_failure(&email, Instant::now());
        let mut ev = principal.event(event::USER_AUTHENTICATION, "login", Outcome::Failure);
        ev.detail = json!({"email_hash": blake3::hash(email.as_bytes()).to_hex().to_string()});
        state.audit.record(ev);
        return Err(Error::Unauthenticated("wrong email or password".into()));
    };
    state.throttle.record_success(&email);
    let mut ev = principal.event(event::USER_AUTHENTICATION, "login", Outcome::Success);
    ev.user_id = Some(user.id.to_string());
    ev.role = Some(user.role.as_str().to_owned());
    state.audit.record(ev);
    start_session(&req, &state, &user, actix_web::http::StatusCode::OK).await
}

/// `POST /api/auth/logout`: ends the session (token and cookie).
pub async fn logout(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    if let Principal::User {
        session_key: Some(session_key),
        ..
    } = &principal
    {
        let st = state.clone();
        let key = session_key.clone();
        web::block(move || st.accounts.end_session(&key)).await??;
        state
            .audit
            .record(principal.event(event::USER_AUTHENTICATION, "logout", Outcome::Success));
    }
    Ok(HttpResponse::NoContent()
        .cookie(clear_cookie(&req, &state))
        .finish())
}

/// `GET /api/me`
pub async fn me(principal: Principal) -> Result<HttpResponse> {
    access::check(&principal, Action::OwnAccount)?;
    let user = principal.user().expect("authorised");
    Ok(HttpResponse::Ok().json(user_json(user)))
}

/// `POST /api/auth/password`: change one's password; every other session ends, this one is
/// replaced (new token, new cookie).
pub async fn change_password(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::ChangeOwnPassword)?;
    let Principal::User { user, .. } = &principal else {
        unreachable!("authorised")
    };
    let body = body.into_inner();
    let ok = state
        .hasher
        .verify(body.current_password, user.password_hash.clone())
        .await
        .map_err(Error::internal)?;
    if !ok {
        state.throttle.record_failure(&user.email, Instant::now());
        return Err(Error::Forbidden("the current password is wrong".into()));
    }
    let local = user.email.split('@').next().unwrap_or_default().to_owned();
    password::check_policy(&body.new_password, &[&user.email, &local])
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let hash = state
        .hasher
        .hash(body.new_password)
        .await
        .map_err(Error::internal)?;
    let mut updated = (**user).clone();
    updated.password_hash = hash;
    updated.must_change_password = false;
    let st = state.clone();
    let u2 = updated.clone();
    web::block(move || -> Result<()> {
        st.accounts.update(&u2)?;
        st.accounts.end_sessions_of(&u2.id, None)?;
        Ok(())
    })
    .await??;
    state
        .audit
        .record(principal.event(event::SECURITY_ALERT, "change-password", Outcome::Success));
    start_session(&req, &state, &updated, actix_web::http::StatusCode::OK).await
}

/// `DELETE /api/me`: delete one's own account and the studies only it owns. Audit records stay,
/// naming only the (now unresolvable) account id.
pub async fn delete_me(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    body: web::Json<Confirm>,
) -> Result<HttpResponse> {
    access::check(&principal, Action::OwnAccount)?;
    let user = principal.user().expect("authorised").clone();
    let ok = state
        .hasher
        .verify(body.into_inner().password, user.password_hash.clone())
        .await
        .map_err(Error::internal)?;
    if !ok {
        return Err(Error::Forbidden("the password is wrong".into()));
    }
    let st = state.clone();
    let id = user.id.clone();
    let removed = web::block(move || -> Result<usize> {
        st.accounts.delete(&id)?;
        let studies = st.store.repo.owned_studies(id.as_str())?;
        for s in &studies {
            st.store.delete_study(s)?;
        }
        Ok(studies.len())
    })
    .await??;
    let mut ev = principal.event(event::SECURITY_ALERT, "delete-account", Outcome::Success);
    ev.detail = json!({"studies_removed": removed});
    state.audit.record(ev);
    Ok(HttpResponse::NoContent()
        .cookie(clear_cookie(&req, &state))
        .finish())
}
