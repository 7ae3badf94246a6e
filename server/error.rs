//! The one error type of the HTTP layer, mapped to a status and a JSON body in exactly one place.
//!
//! Every route returns `Result<_, Error>`. The body is `{"code": "kebab-case", "message": "..."}`;
//! `message` is what the client may see, the `detail` of internal errors goes to the log only.
//! Transactions that define their own body (STOW's Store Instances Response Module) build it
//! themselves and never go through here.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Every error a route can answer with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed (bad query parameter, bad UID, broken multipart, ...).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or invalid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: the caller can see the object but may not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// 404: absent, or not visible to the caller (the two are never told apart).
    #[error("{0}")]
    NotFound(String),
    /// 406: nothing acceptable can be produced; the message names what is available.
    #[error("{0}")]
    NotAcceptable(String),
    /// 409: formed correctly but conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// 416: a `Range` outside the resource; `length` is its size.
    #[error("{message}")]
    RangeNotSatisfiable { message: String, length: u64 },
    /// 413: the request body is larger than the configured maximum.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the request's Content-Type is not supported; the message names what is.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many attempts; retry after this many seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// 503: the store is not available (e.g. free disk below the reserve).
    #[error("{0}")]
    Unavailable(String),
    /// 503: too much work queued (e.g. rendering); retry after this many seconds.
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    /// 500: a failure inside the store; `detail` is logged, never sent.
    #[error("storage failure")]
    Store { detail: String },
    /// 500: any other internal failure; `detail` is logged, never sent.
    #[error("internal error")]
    Internal { detail: String },
}

impl Error {
    /// The stable, kebab-case code sent in the body.
    pub const fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad-request",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not-found",
            Error::NotAcceptable(_) => "not-acceptable",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge(_) => "payload-too-large",
            Error::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            Error::UnsupportedMediaType(_) => "unsupported-media-type",
            Error::TooManyRequests { .. } => "too-many-requests",
            Error::Unavailable(_) => "unavailable",
            Error::Busy { .. } => "busy",
            Error::Store { .. } => "store-failure",
            Error::Internal { .. } => "internal-error",
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::Internal {
            detail: detail.to_string(),
        }
    }

    pub fn store(detail: impl std::fmt::Display) -> Self {
        Error::Store {
            detail: detail.to_string(),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store { .. } | Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Error::Store { detail } | Error::Internal { detail } => {
                tracing::error!(code = self.code(), %detail, "request failed");
            }
            _ => tracing::debug!(code = self.code(), message = %self, "request refused"),
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        ));
        if matches!(self, Error::Unauthenticated(_)) {
            // Never Basic in the challenge: it pops browser dialogs.
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"lightbox\""));
        }
        if let Error::RangeNotSatisfiable { length, .. } = self {
            resp.insert_header((header::CONTENT_RANGE, format!("bytes */{length}")));
        }
        if let Error::TooManyRequests { retry_after, .. } | Error::Busy { retry_after, .. } = self {
            resp.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        resp.json(json!({"code": self.code(), "message": self.to_string()}))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::store(format!("sled: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::store(format!("io: {e}"))
    }
}

impl From<actix_web::error::BlockingError> for Error {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Error::internal(format!("blocking task failed: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
