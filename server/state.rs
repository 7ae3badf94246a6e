//! Application state shared by every route: configuration, store, URL building.

use std::sync::Arc;

use crate::config::Config;
use crate::http::urls::UrlConfig;
use crate::store::Store;

pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    pub urls: UrlConfig,
}
