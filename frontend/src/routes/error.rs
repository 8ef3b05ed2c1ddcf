//! `ApiError`: every way a request can fail, each with its status and a JSON body
//! `{"detail": "..."}`. Handlers return `Result<_, ApiError>`; nothing else renders errors.

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

use crate::payload::BatchError;
use crate::routes::limit::Denied;
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
    /// 401: an unknown or revoked API key (`WWW-Authenticate: Bearer`).
    Unauthorized,
    /// 503: Redis (or the module) did not acknowledge; the request may or may not have landed.
    Unavailable(String),
    /// 409: the metric type's key holds a value that is not a metric series.
    Conflict(String),
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
            | ApiError::Conflict(d) => f.write_str(d),
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
            ApiError::Unauthorized => f.write_str("invalid API key"),
            ApiError::NotFound => f.write_str("Not Found"),
            ApiError::MethodNotAllowed { .. } => f.write_str("Method Not Allowed"),
        }
    }
}

/// What a response says when the data store failed: what went wrong, never the Redis or
/// client library text (that goes to the log).
pub fn store_detail(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(_) | StoreError::Server(_) | StoreError::Protocol(_) => {
            "The data store is unavailable; try again later".to_string()
        }
        StoreError::ModuleMissing => "The data store is missing the tally module".to_string(),
        StoreError::NotAcknowledged { replicas, wanted } => format!(
            "The write was not acknowledged: {replicas} of {wanted} replicas confirmed it \
             (REDIS_WAIT_REPLICAS); it may or may not be stored"
        ),
        StoreError::WrongType(Some(kind)) => format!(
            "Metric type {kind:?} cannot be used: its key holds a value that is not a metric series"
        ),
        StoreError::WrongType(None) => {
            "A metric type of the request cannot be used: its key holds a value that is not a \
             metric series"
                .to_string()
        }
        StoreError::TooManyTypes { max } => format!(
            "Too many metric types: at most {max} distinct types may be stored (MAX_TYPES); \
             this request would add a new one"
        ),
        StoreError::Refused { message, .. } => message.clone(),
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Invalid(detail) => ApiError::Invalid(detail),
            BatchError::TooManyItems { count, max } => ApiError::TooManyItems { count, max },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let detail = store_detail(&e);
        match e {
            StoreError::Refused { .. } | StoreError::TooManyTypes { .. } => {
                ApiError::Invalid(detail)
            }
            StoreError::WrongType(_) => ApiError::Conflict(detail),
            StoreError::Server(_) | StoreError::Protocol(_) => {
                log::error!("data store error (answered 503): {e}");
                ApiError::Unavailable(detail)
            }
            _ => {
                log::warn!("data store unavailable (answered 503): {e}");
                ApiError::Unavailable(detail)
            }
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
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            ApiError::RateLimited(denied) => {
                denied.write_headers(&mut builder);
                if let Some(body) = denied.body() {
                    return builder.content_type(header::ContentType::json()).body(body);
                }
            }
            ApiError::Unauthorized => {
                builder
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::MethodNotAllowed { allow } => {
                builder.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            _ => {}
        }
        detail_response(builder, &self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_never_put_redis_text_in_a_body_nor_answer_500() {
        for e in [
            StoreError::Unavailable("Connection refused (os error 111)".to_string()),
            StoreError::Server("ERR something WRONGTYPE redis-rs".to_string()),
            StoreError::Protocol("unexpected Redis reply: Nil".to_string()),
            StoreError::ModuleMissing,
            StoreError::WrongType(Some("cpu".to_string())),
            StoreError::WrongType(None),
            StoreError::TooManyTypes { max: 3 },
            StoreError::NotAcknowledged {
                replicas: 0,
                wanted: 1,
            },
        ] {
            let api = ApiError::from(e.clone());
            let body = api.to_string();
            for needle in ["redis", "Redis", "ERR", "WRONGTYPE", "refused", "Nil"] {
                assert!(!body.contains(needle), "{e:?}: {body}");
            }
            assert_ne!(
                api.status_code(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{e:?}"
            );
        }
        let conflict = ApiError::from(StoreError::WrongType(Some("cpu".to_string())));
        assert_eq!(conflict.status_code(), StatusCode::CONFLICT);
        let full = ApiError::from(StoreError::TooManyTypes { max: 3 });
        assert_eq!(full.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(full.to_string().contains("MAX_TYPES"), "{full}");
    }
}
