//! `POST /api/metrics` and `GET /api/metrics/summary`.
//!
//! Order of a POST: read and validate the body (415 / 413 / 422, nothing touched), then one
//! `RATELIMIT.CHECK` (429), then one `METRIC.ADD` (201, or 503 if Redis did not acknowledge).

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::payload::{self, MAX_TYPE_LEN, METRIC_BODY_LIMIT};
use crate::ratelimit;
use crate::startup::AppState;

const STORED: &str = r#"{"message":"Metric stored successfully"}"#;

/// `POST /api/metrics` with `{"timestamp": "...", "value": 75, "type": "cpu"}`.
pub async fn post_metric(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = payload::read_json(&req, body, METRIC_BODY_LIMIT).await?;
    let metric = payload::parse_metric(&body).map_err(ApiError::Invalid)?;
    let granted = ratelimit::enforce(&state, &req, 1).await?;
    state
        .store
        .add_metric(&metric.kind, metric.value, metric.ts_ms)
        .await?;
    let mut resp = HttpResponse::Created();
    granted.write_headers(&mut resp);
    Ok(resp.insert_header(ContentType::json()).body(STORED))
}

#[derive(Deserialize)]
struct SummaryQuery {
    metric_type: Option<String>,
}

/// The summary as the API shows it. With no samples: `count` 0, `average` 0, the rest null.
#[derive(Serialize)]
struct SummaryBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    count: u64,
    average: f64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    stddev: Option<f64>,
    first_timestamp: Option<String>,
    last_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p90: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p95: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99: Option<Option<f64>>,
}

/// Unix ms as RFC 3339 UTC (`2025-01-01T10:00:00Z`, with a fraction only when there is one).
fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// `GET /api/metrics/summary?metric_type=cpu`.
pub async fn summary(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<SummaryQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let kind = match query.metric_type.as_deref() {
        None => return Err(ApiError::invalid("query parameter required: metric_type")),
        Some(k) if k.trim().is_empty() => {
            return Err(ApiError::invalid("metric_type must not be empty"))
        }
        Some(k) if k.len() > MAX_TYPE_LEN => {
            return Err(ApiError::invalid(format!(
                "metric_type must be at most {MAX_TYPE_LEN} bytes"
            )))
        }
        Some(k) => k,
    };
    let s = state.store.summary(kind).await?;
    Ok(HttpResponse::Ok().json(SummaryBody {
        kind,
        count: s.count,
        average: if s.count == 0 {
            0.0
        } else {
            s.avg.unwrap_or(0.0)
        },
        sum: s.sum,
        min: s.min,
        max: s.max,
        stddev: s.stddev,
        first_timestamp: rfc3339(s.first_ts),
        last_timestamp: rfc3339(s.last_ts),
        p50: s.p50,
        p90: s.p90,
        p95: s.p95,
        p99: s.p99,
    }))
}
