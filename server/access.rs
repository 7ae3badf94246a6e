//! The access seam: every route takes a [`Principal`] and asks [`authorize`] before acting, and
//! records what it did with [`audit`]. One policy for every route, so object checks are never
//! left to each handler.
//!
//! Until accounts exist (issue: accounts, roles, tokens) the only principal is `Anonymous`, and
//! the policy allows what the configuration allows: anonymous access on loopback, or anywhere
//! with `--insecure-no-auth`. Start-up refuses any other combination.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde_json::json;

use crate::error::{Error, Result};
use crate::ids::StudyUid;
use crate::state::AppState;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials (the only kind before accounts exist).
    Anonymous { ip: Option<String> },
}

impl Principal {
    pub fn ip(&self) -> Option<&str> {
        match self {
            Principal::Anonymous { ip } => ip.as_deref(),
        }
    }

    /// A stable label for the audit trail.
    pub fn label(&self) -> String {
        match self {
            Principal::Anonymous { .. } => "anonymous".into(),
        }
    }
}

impl FromRequest for Principal {
    type Error = Error;
    type Future = Ready<Result<Self>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Principal::Anonymous {
            ip: req.peer_addr().map(|a| a.ip().to_string()),
        }))
    }
}

/// What a principal wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// STOW-RS, optionally into one named study.
    Store { study: Option<StudyUid> },
    /// Read server health (no patient data).
    Health,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Store { .. } => "store",
            Action::Health => "health",
        }
    }
}

/// The one policy. `Err(Unauthenticated)` when credentials are needed, `Err(Forbidden)` when
/// the caller may see the object but not do this, `Err(NotFound)` when it may not see it.
pub fn authorize(state: &AppState, principal: &Principal, action: &Action) -> Result<()> {
    match (principal, action) {
        (_, Action::Health) => Ok(()),
        (Principal::Anonymous { .. }, _) => {
            if anonymous_allowed(&state.config) {
                Ok(())
            } else {
                Err(Error::Unauthenticated(format!(
                    "sign-in required to {}",
                    action.name()
                )))
            }
        }
    }
}

/// Anonymous access is allowed only on loopback, or when explicitly made insecure.
pub fn anonymous_allowed(config: &crate::config::Config) -> bool {
    config.listen.ip().is_loopback() || config.insecure_no_auth
}

/// DICOM audit event IDs (DCM 1101xx) used in the trail.
pub mod event {
    /// DICOM Instances Transferred (STOW-RS, import).
    pub const INSTANCES_TRANSFERRED: &str = "110104";
}

/// Append an audit record. Failures to audit are logged loudly but do not fail the request
/// that already happened. Blocking (one sled insert): call from a blocking thread.
pub fn audit(
    state: &AppState,
    principal: &Principal,
    event_id: &str,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let record = json!({
        "time_ms": now,
        "event": event_id,
        "action": action,
        "who": principal.label(),
        "ip": principal.ip(),
        "outcome": outcome,
        "detail": detail,
    });
    if let Err(e) = state.store.repo.append_audit(&record) {
        tracing::error!(error = %e, ?record, "could not write audit record");
    }
}

/// Helper for handlers: run `authorize` with the state from `web::Data`.
pub fn check(state: &web::Data<AppState>, principal: &Principal, action: Action) -> Result<()> {
    authorize(state, principal, &action)
}
