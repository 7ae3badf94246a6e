//! The access policy: who is asking ([`Principal`], resolved once per request from the session
//! cookie or a bearer token) and what they may do ([`authorize`]). Every route takes a
//! `Principal` and asks here before acting; object checks are never left to each handler.
//!
//! Credentials and where they count:
//! - `Authorization: Bearer <access token>` (a JWT bound to a session): everywhere.
//! - An API token `lbx_<id>_<secret>` as `Bearer`, or as the password of HTTP Basic (many PACS
//!   and gateways offer only Basic): DICOMweb only, never `/api`.
//! - The session cookie: on `/api` reads; on `/api` state changes only with an `Origin` equal to
//!   our own origin and a JSON body (CSRF); on DICOMweb GET only for same-origin requests
//!   (`Sec-Fetch-Site: same-origin`); never for STOW (bearer only).
//! - Anything else is anonymous. Invalid bearer tokens are refused with 401 at once.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};

use crate::audit::{AuditEvent, Outcome};
use crate::auth::{Id, Role, User, accounts::session_key, now_ms};
use crate::error::{Error, Result};
use crate::ids::StudyUid;
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "lightbox_session";

/// How an authenticated request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
    ApiToken,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous {
        ip: Option<String>,
    },
    User {
        user: Box<User>,
        /// Stored key of the session (hash of its id); `None` for API tokens.
        session_key: Option<String>,
        via: Via,
        ip: Option<String>,
    },
}

impl Principal {
    pub fn ip(&self) -> Option<&str> {
        match self {
            Principal::Anonymous { ip } | Principal::User { ip, .. } => ip.as_deref(),
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User { user, .. } => Some(user),
            Principal::Anonymous { .. } => None,
        }
    }

    pub fn role(&self) -> Option<Role> {
        self.user().map(|u| u.role)
    }

    /// An audit event pre-filled with who and from where.
    pub fn event(&self, event: &str, action: &str, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            time_ms: now_ms(),
            event: event.to_owned(),
            action: action.to_owned(),
            outcome,
            user_id: self.user().map(|u| u.id.to_string()),
            role: self.role().map(|r| r.as_str().to_owned()),
            ip: self.ip().map(str::to_owned),
            studies: Vec::new(),
            detail: serde_json::Value::Null,
        }
    }
}

/// Middleware for `/api` and `/dicom-web`: resolve the principal once, and refuse callers the
/// route table does not admit (401 without credentials, 403 with too little role) before any
/// extractor reads the body. The principal is kept in the request for the `Principal`
/// extractor. DICOMweb routes need a signed-in account; CORS preflights never get here.
pub async fn guard(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> std::result::Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error>
{
    use crate::api::Need;
    if req.method() == Method::OPTIONS {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let need = if req.path().starts_with("/api") {
        let pattern = req.match_pattern();
        crate::api::ROUTES
            .iter()
            .find(|(m, p, _)| req.method().as_str() == *m && pattern.as_deref() == Some(*p))
            .map(|(_, _, n)| *n)
            // Unknown /api routes fall through to the router's 404.
            .unwrap_or(Need::Public)
    } else {
        Need::SignedIn
    };
    let principal = match Principal::resolve(req.request()).await {
        Ok(p) => p,
        Err(e) => return Ok(req.into_response(actix_web::ResponseError::error_response(&e))),
    };
    let refusal = match (need, principal.role()) {
        (Need::Public, _) => None,
        (_, None) => Some(Error::Unauthenticated("sign-in required".into())),
        (Need::SignedIn, Some(_)) => None,
        (Need::Staff, Some(r)) if r.is_staff() => None,
        (Need::Admin, Some(Role::Admin)) => None,
        (Need::Staff, Some(_)) => Some(Error::Forbidden(
            "only the image library (staff) may do this".into(),
        )),
        (Need::Admin, Some(_)) => Some(Error::Forbidden("only admins may do this".into())),
    };
    if let Some(e) = refusal {
        return Ok(req.into_response(actix_web::ResponseError::error_response(&e)));
    }
    req.extensions_mut().insert(principal);
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The client address: the socket peer or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy (the left-most entries are whatever
/// the client chose to send).
pub fn client_ip(req: &HttpRequest, state: &AppState) -> Option<String> {
    let peer = req.peer_addr()?.ip();
    if !state.urls.trusts(peer) {
        return Some(peer.to_string());
    }
    let hops: Vec<std::net::IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    let client = hops
        .iter()
        .rev()
        .find(|ip| !state.urls.trusts(**ip))
        .copied()
        .unwrap_or(peer);
    Some(client.to_string())
}

/// May the session cookie authenticate this request? (CSRF rules, see the module doc.)
fn cookie_counts(req: &HttpRequest, state: &AppState) -> bool {
    let path = req.path();
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if path.starts_with("/dicom-web") || path.starts_with("/wado") {
        return safe
            && req
                .headers()
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == "same-origin");
    }
    if safe {
        return true;
    }
    let origin_ok = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o == own_origin(req, state));
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    origin_ok && json
}

/// `scheme://host[:port]` of our public base URL.
pub fn own_origin(req: &HttpRequest, state: &AppState) -> String {
    let base = crate::http::urls::base_url(req, &state.urls);
    match base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
    {
        Some(end) => base[..end].to_owned(),
        None => base,
    }
}

impl FromRequest for Principal {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            // Resolved once by the guard middleware when the route has one.
            let known = req.extensions().get::<Principal>().cloned();
            if let Some(p) = known {
                return Ok(p);
            }
            Principal::resolve(&req).await
        })
    }
}

impl Principal {
    /// Resolve who is asking from the request's credentials (see the module doc).
    pub async fn resolve(req: &HttpRequest) -> Result<Principal> {
        let req = req.clone();
        {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| Error::internal("no application state"))?;
            let ip = client_ip(&req, &state);
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .map(str::to_owned);
            let (key, via) = if let Some(auth) = bearer {
                if let Some(api_token) = api_token_in(&auth) {
                    let dicomweb =
                        req.path().starts_with("/dicom-web") || req.path().starts_with("/wado");
                    if !dicomweb {
                        return Err(Error::Unauthenticated(
                            "API tokens are valid for DICOMweb only; sign in for the API".into(),
                        ));
                    }
                    let user = resolve_api_token(&state, api_token).await?.ok_or_else(|| {
                        Error::Unauthenticated(
                            "the API token is invalid, revoked or expired".into(),
                        )
                    })?;
                    return Ok(Principal::User {
                        user: Box::new(user),
                        session_key: None,
                        via: Via::ApiToken,
                        ip,
                    });
                }
                let token = auth
                    .strip_prefix("Bearer ")
                    .or_else(|| auth.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        Error::Unauthenticated("only Bearer tokens are accepted".into())
                    })?
                    .trim();
                let claims = state.tokens.verify(token).ok_or_else(|| {
                    Error::Unauthenticated("the access token is invalid or expired".into())
                })?;
                (claims.sid, Via::Bearer)
            } else if let Some(c) = req.cookie(SESSION_COOKIE)
                && cookie_counts(&req, &state)
            {
                (session_key(c.value()), Via::Cookie)
            } else {
                return Ok(Principal::Anonymous { ip });
            };
            match resolve_session(&state, key.clone()).await? {
                Some(user) => Ok(Principal::User {
                    user: Box::new(user),
                    session_key: Some(key),
                    via,
                    ip,
                }),
                None if via == Via::Bearer => Err(Error::Unauthenticated(
                    "the session of this token has ended; sign in again".into(),
                )),
                None => Ok(Principal::Anonymous { ip }),
            }
        }
    }
}

/// The `lbx_...` API token in an Authorization value: `Bearer lbx_...`, or the password of
/// `Basic base64(user:lbx_...)`.
fn api_token_in(auth: &str) -> Option<String> {
    use base64::Engine;
    if let Some(t) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    {
        let t = t.trim();
        return t.starts_with("lbx_").then(|| t.to_owned());
    }
    let b = auth
        .strip_prefix("Basic ")
        .or_else(|| auth.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    password.starts_with("lbx_").then(|| password.to_owned())
}

/// Check an API token: known id, constant-time secret comparison, not expired, account usable.
async fn resolve_api_token(state: &web::Data<AppState>, token: String) -> Result<Option<User>> {
    use subtle::ConstantTimeEq;
    let Some((id, secret)) = token.strip_prefix("lbx_").and_then(|t| t.split_once('_')) else {
        return Ok(None);
    };
    let Some(id) = Id::parse(id) else {
        return Ok(None);
    };
    let secret_hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
    let st = state.clone();
    // sled reads and writes: blocking.
    web::block(move || -> Result<Option<User>> {
        let acc = &st.accounts;
        let Some(mut t) = acc.token(&id)? else {
            return Ok(None);
        };
        if !bool::from(t.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes())) {
            return Ok(None);
        }
        let now = now_ms();
        if now >= t.expires_ms {
            return Ok(None);
        }
        let Some(user) = acc.user(&t.user_id)? else {
            return Ok(None);
        };
        if user.disabled || user.expired(now) {
            acc.end_all_access(&user.id)?;
            return Ok(None);
        }
        if t.last_used_ms
            .is_none_or(|l| now.saturating_sub(l) > 60_000)
        {
            t.last_used_ms = Some(now);
            acc.touch_token(&t)?;
        }
        Ok(Some(user))
    })
    .await?
}

/// Look a session up, enforce idle and absolute timeouts and the account's state, and record
/// its use. `None` when it is not (or no longer) valid.
async fn resolve_session(state: &web::Data<AppState>, key: String) -> Result<Option<User>> {
    let st = state.clone();
    // sled reads and writes: blocking.
    web::block(move || -> Result<Option<User>> {
        let acc = &st.accounts;
        let Some(mut s) = acc.session(&key)? else {
            return Ok(None);
        };
        let now = now_ms();
        let idle = st.config.session_idle.as_millis() as u64;
        let absolute = st.config.session_absolute.as_millis() as u64;
        if now.saturating_sub(s.last_seen_ms) > idle || now.saturating_sub(s.created_ms) > absolute
        {
            acc.end_session(&key)?;
            return Ok(None);
        }
        let Some(user) = acc.user(&s.user_id)? else {
            acc.end_session(&key)?;
            return Ok(None);
        };
        if user.disabled || user.expired(now) {
            // At expiry or when disabled, every session and token of the account dies.
            acc.end_all_access(&user.id)?;
            return Ok(None);
        }
        // Record use often enough that an active session never looks idle (at most once a
        // minute, more often for short idle timeouts).
        if now.saturating_sub(s.last_seen_ms) > (idle / 2).min(60_000) {
            s.last_seen_ms = now;
            acc.touch_session(&key, &s)?;
        }
        Ok(Some(user))
    })
    .await?
}

/// What a principal wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// STOW-RS, optionally into one named study.
    Store { study: Option<StudyUid> },
    /// Read or change one's own account (me, sign out, delete).
    OwnAccount,
    /// See one's studies, their access history, or claim a delivered study.
    OwnStudies,
    /// Change one's own password (allowed while a change is required).
    ChangeOwnPassword,
    /// Manage users and settings.
    ManageUsers,
    /// Create, extend and disable facility accounts; manage their API tokens.
    ManageFacilities,
    /// Search or read studies through DICOMweb; what each caller sees is scoped by
    /// [`visible_studies`] and [`can_see_study`].
    Read,
    /// Delete a study, series or instance (a Lightbox extension, not a PS3.18 transaction):
    /// staff and admins only. Callers first check that the object is visible (404 otherwise).
    Delete,
    /// Server health (no patient data).
    Health,
}

/// Whose studies a STOW may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreScope {
    /// Staff: any study.
    Any,
    /// Patients and facilities: only studies they own; new studies become theirs.
    OwnedBy(Id),
}

fn signed_in(principal: &Principal) -> Result<&User> {
    principal
        .user()
        .ok_or_else(|| Error::Unauthenticated("sign-in required".into()))
}

/// The one policy. `Err(Unauthenticated)` when credentials are needed, `Err(Forbidden)` when
/// the caller is known but may not do this, `Err(NotFound)` when it may not see the object.
pub fn authorize(principal: &Principal, action: &Action) -> Result<()> {
    if *action == Action::Health {
        return Ok(());
    }
    let user = signed_in(principal)?;
    // A temporary password opens nothing but its own change. API tokens are exempt: staff
    // issue them to DICOMweb clients that never sign in interactively.
    let via_token = matches!(
        principal,
        Principal::User {
            via: Via::ApiToken,
            ..
        }
    );
    if user.must_change_password
        && !via_token
        && !matches!(action, Action::ChangeOwnPassword | Action::OwnAccount)
    {
        return Err(Error::Forbidden(
            "a password change is required before anything else".into(),
        ));
    }
    match action {
        Action::Health
        | Action::OwnAccount
        | Action::OwnStudies
        | Action::ChangeOwnPassword
        | Action::Read => Ok(()),
        Action::ManageUsers if user.role == Role::Admin => Ok(()),
        Action::ManageUsers => Err(Error::Forbidden("only admins manage users".into())),
        Action::ManageFacilities if user.role.is_staff() => Ok(()),
        Action::ManageFacilities => Err(Error::Forbidden(
            "only the image library manages facility accounts".into(),
        )),
        Action::Delete if user.role.is_staff() => Ok(()),
        Action::Delete => Err(Error::Forbidden(
            "only the image library (staff) may delete studies, series or instances".into(),
        )),
        Action::Store { .. } => {
            if matches!(
                principal,
                Principal::User {
                    via: Via::Cookie,
                    ..
                }
            ) {
                return Err(Error::Unauthenticated(
                    "STOW-RS needs a bearer token, not a session cookie".into(),
                ));
            }
            Ok(())
        }
    }
}

/// The scope of a STOW for an authorised principal.
pub fn store_scope(principal: &Principal) -> Result<StoreScope> {
    let user = signed_in(principal)?;
    Ok(if user.role.is_staff() {
        StoreScope::Any
    } else {
        StoreScope::OwnedBy(user.id.clone())
    })
}

/// May this principal see this study? Staff: every study. Patients and facilities: the studies
/// they uploaded and those granted to them (a live grant; revocation counts at once). The
/// answer for a study that does not exist is `false`, like for one that may not be seen, so
/// routes answer 404 for both. Blocking (sled reads).
pub fn can_see_study(state: &AppState, principal: &Principal, study: &StudyUid) -> Result<bool> {
    let Some(user) = principal.user() else {
        return Ok(false);
    };
    if user.role.is_staff() {
        return Ok(state.store.repo.study(study)?.is_some());
    }
    if state.store.repo.owner(study)?.as_deref() == Some(user.id.as_str()) {
        return Ok(true);
    }
    Ok(state.grants.visible(&user.id, study)?)
}

/// The studies a principal may see, for searches that must be scoped inside the query:
/// `None` for staff (every study), else the studies the account uploaded or was granted.
/// Blocking (sled reads).
pub fn visible_studies(state: &AppState, principal: &Principal) -> Result<Option<Vec<StudyUid>>> {
    let Some(user) = principal.user() else {
        return Ok(Some(Vec::new()));
    };
    if user.role.is_staff() {
        return Ok(None);
    }
    let mut v = state.store.repo.owned_studies(user.id.as_str())?;
    v.extend(state.grants.visible_studies(&user.id)?);
    v.sort();
    v.dedup();
    Ok(Some(v))
}

/// Helper for handlers.
pub fn check(principal: &Principal, action: Action) -> Result<()> {
    authorize(principal, &action)
}
