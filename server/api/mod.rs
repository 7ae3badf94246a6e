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

/// The `/api` route table (one table: the OpenAPI test reads it too).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/password"),
    ("GET", "/api/me"),
    ("DELETE", "/api/me"),
    ("GET", "/api/users"),
    ("PATCH", "/api/users/{id}"),
    ("POST", "/api/users/{id}/password-reset"),
    ("GET", "/api/settings"),
    ("PUT", "/api/settings"),
    ("POST", "/api/facilities"),
    ("GET", "/api/facilities"),
    ("POST", "/api/facilities/{id}/extend"),
    ("POST", "/api/facilities/{id}/disable"),
    ("POST", "/api/users/{id}/tokens"),
    ("GET", "/api/users/{id}/tokens"),
    ("DELETE", "/api/tokens/{id}"),
    ("GET", "/api/audit"),
    ("POST", "/api/studies/{study}/grants"),
    ("GET", "/api/studies/{study}/grants"),
    ("DELETE", "/api/grants/{id}"),
    ("POST", "/api/grants/claim"),
    ("GET", "/api/studies"),
    ("GET", "/api/studies/{study}/access-history"),
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
