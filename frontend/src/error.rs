//! `ApiError`: every way a request can fail, each with its status and a JSON body
//! `{"detail": "..."}`. Handlers return `Result<_, ApiError>`; nothing else renders errors.

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

use crate::ratelimit::Denied;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 422: the input is malformed, missing, of the wrong type or out of range.
    Invalid(String),
    /// 400: the body could not be read (the client went away, bad chunking).
    BadRequest(String),
    /// 413: the body is larger than the route's limit.
    TooLarge { limit: usize },
    /// 413: a batch of more items than `BATCH_MAX`.
    TooManyItems { count: usize, max: usize },
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 429: over the rate limit.
    RateLimited(Denied),
    /// 503: Redis (or the module) did not acknowledge; the request may or may not have landed.
    Unavailable(String),
    /// 500: Redis answered with an error the API did not expect.
    Internal(String),
    /// 404.
    NotFound,
    /// 405, with the methods the resource does allow.
    MethodNotAllowed { allow: &'static str },
}

impl ApiError {
    pub fn invalid(detail: impl Into<String>) -> Self {
        ApiError::Invalid(detail.into())
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError::Unavailable(detail.into())
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::TooLarge { limit }
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError::MethodNotAllowed { allow }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Invalid(d)
            | ApiError::BadRequest(d)
            | ApiError::Unavailable(d)
            | ApiError::Internal(d) => f.write_str(d),
            ApiError::TooLarge { limit } => {
                write!(f, "Request body is larger than {limit} bytes")
            }
            ApiError::TooManyItems { count, max } => {
                write!(
                    f,
                    "The batch holds {count} items, more than {max} (BATCH_MAX)"
                )
            }
            ApiError::UnsupportedMediaType => f.write_str("Content-Type must be application/json"),
            ApiError::RateLimited(_) => f.write_str("Too many requests"),
            ApiError::NotFound => f.write_str("Not Found"),
            ApiError::MethodNotAllowed { .. } => f.write_str("Method Not Allowed"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Server(_) => ApiError::Internal(e.to_string()),
            StoreError::Refused(detail) => ApiError::Invalid(detail),
            _ => ApiError::Unavailable(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

/// A JSON response `{"detail": detail}` with `status`.
pub fn detail_response(mut builder: HttpResponseBuilder, detail: &str) -> HttpResponse {
    builder.json(Detail { detail })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } | ApiError::TooManyItems { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            ApiError::RateLimited(denied) => denied.write_headers(&mut builder),
            ApiError::MethodNotAllowed { allow } => {
                builder.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            _ => {}
        }
        detail_response(builder, &self.to_string())
    }
}
