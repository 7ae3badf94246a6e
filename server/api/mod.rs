//! The JSON API under `/api` used by the portal: authentication, the caller's own account,
//! user and settings management. Bodies are JSON with unknown fields refused; no self-service
//! body carries a role.

pub mod auth;
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
        .route("/settings", web::put().to(users::put_settings));
}
