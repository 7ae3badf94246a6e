//! The JSON API under `/api` used by the portal: authentication, the caller's own account,
//! user and settings management. Bodies are JSON with unknown fields refused; no self-service
//! body carries a role.

pub mod audit;
pub mod auth;
pub mod facilities;
pub mod grants;
pub mod studies;
pub mod users;

use actix_web::web;

/// Who may call a route at all. Checked by [`crate::access::guard`] before any extractor runs
/// (so a refused caller never learns anything from body validation); handlers then ask the
/// policy about the specific object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No credentials needed.
    Public,
    /// Any signed-in account.
    SignedIn,
    /// Staff or admin.
    Staff,
    /// Admin only.
    Admin,
}

/// The `/api` route table: method, path pattern, who may call it. One table: the guard, the
/// OpenAPI test and the authorization suite all read it.
pub const ROUTES: &[(&str, &str, Need)] = &[
    ("POST", "/api/auth/register", Need::Public),
    ("POST", "/api/auth/login", Need::Public),
    ("POST", "/api/auth/logout", Need::Public),
    ("POST", "/api/auth/password", Need::SignedIn),
    ("GET", "/api/me", Need::SignedIn),
    ("DELETE", "/api/me", Need::SignedIn),
    ("GET", "/api/users", Need::Admin),
    ("PATCH", "/api/users/{id}", Need::Admin),
    ("POST", "/api/users/{id}/password-reset", Need::Admin),
    ("GET", "/api/settings", Need::Admin),
    ("PUT", "/api/settings", Need::Admin),
    ("POST", "/api/facilities", Need::Staff),
    ("GET", "/api/facilities", Need::Staff),
    ("POST", "/api/facilities/{id}/extend", Need::Staff),
    ("POST", "/api/facilities/{id}/disable", Need::Staff),
    ("POST", "/api/users/{id}/tokens", Need::Staff),
    ("GET", "/api/users/{id}/tokens", Need::Staff),
    ("DELETE", "/api/tokens/{id}", Need::Staff),
    ("GET", "/api/audit", Need::Staff),
    ("POST", "/api/studies/{study}/grants", Need::Staff),
    ("GET", "/api/studies/{study}/grants", Need::Staff),
    ("DELETE", "/api/grants/{id}", Need::Staff),
    ("POST", "/api/grants/claim", Need::SignedIn),
    ("GET", "/api/studies", Need::SignedIn),
    ("GET", "/api/studies/{study}/access-history", Need::SignedIn),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/register", web::post().to(auth::register))
        .route("/auth/login", web::post().to(auth::login))
        .route("/auth/logout", web::post().to(auth::logout))
        .route("/auth/password", web::post().to(auth::change_password))
        .route("/me", web::get().to(auth::me))
        .route("/me", web::delete().to(auth::delete_me))
        .route("/users", web::get().to(users::list_users))
        .route("/users/{id}", web::patch().to(users::update_user))
        .route(
            "/users/{id}/password-reset",
            web::post().to(users::reset_password),
        )
        .route("/settings", web::get().to(users::get_settings))
        .route("/settings", web::put().to(users::put_settings))
        .route("/facilities", web::post().to(facilities::create_facility))
        .route("/facilities", web::get().to(facilities::list_facilities))
        .route(
            "/facilities/{id}/extend",
            web::post().to(facilities::extend_facility),
        )
        .route(
            "/facilities/{id}/disable",
            web::post().to(facilities::disable_facility),
        )
        .route(
            "/users/{id}/tokens",
            web::post().to(facilities::create_token),
        )
        .route("/users/{id}/tokens", web::get().to(facilities::list_tokens))
        .route("/tokens/{id}", web::delete().to(facilities::revoke_token))
        .route("/audit", web::get().to(audit::search_audit))
        .route(
            "/studies/{study}/grants",
            web::post().to(grants::create_grant),
        )
        .route(
            "/studies/{study}/grants",
            web::get().to(grants::list_grants),
        )
        .route("/grants/claim", web::post().to(grants::claim))
        .route("/studies", web::get().to(studies::my_studies))
        .route(
            "/studies/{study}/access-history",
            web::get().to(studies::access_history),
        )
        .route("/grants/{id}", web::delete().to(grants::revoke_grant));
}
