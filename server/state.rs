//! Application state shared by every route: configuration, store, accounts, tokens, audit.

use std::sync::Arc;

use crate::audit::{AuditLog, AuditSink};
use crate::auth::Accounts;
use crate::auth::password::Hasher;
use crate::auth::throttle::Throttle;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::http::urls::UrlConfig;
use crate::store::Store;

pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    pub urls: UrlConfig,
    pub accounts: Arc<Accounts>,
    pub grants: Arc<crate::auth::grants::Grants>,
    pub tokens: TokenKeys,
    pub hasher: Hasher,
    pub throttle: Throttle,
    pub audit_log: Arc<AuditLog>,
    pub audit: AuditSink,
    /// Pre-compressed WADO-RS series metadata.
    pub metadata_cache: crate::dicomweb::metadata::Cache,
    /// Bounds concurrent rendering to the cores (PS3.18 rendered and thumbnail resources).
    pub render_gate: crate::render::Gate,
}
