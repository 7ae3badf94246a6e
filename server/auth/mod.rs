//! Accounts and authentication: users and roles, passwords, sessions, bearer tokens, login
//! throttling. Who may do what is decided in `crate::access`, not here.

pub mod accounts;
pub mod bootstrap;
pub mod grants;
pub mod model;
pub mod password;
pub mod throttle;
pub mod token;

pub use accounts::Accounts;
pub use model::{Id, Role, Session, User};

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
