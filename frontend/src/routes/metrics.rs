//! `POST /api/metrics`, `POST /api/metrics/batch` and `GET /api/metrics/summary`.
//!
//! Order of a POST: read and validate the whole body (415 / 413 / 422, nothing touched), then
//! admit its metric types (`KnownTypes::admit`: no round trip for types this process knows; for a
//! new one, 409 if its key holds a foreign value, 422 if it would exceed `MAX_TYPES`; no budget
//! used), then one `RATELIMIT.CHECK` (429; a batch costs its number of items), then the writes
//! (201, or 503 if Redis did not acknowledge).

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::payload::{self, MAX_TYPE_LEN, METRIC_BODY_LIMIT};
use crate::policies::Class;
use crate::routes::body::read_json;
use crate::routes::error::ApiError;
use crate::routes::limit;
use crate::routes::AppState;
use crate::store::{Argument, StoreError};

const STORED: &str = r#"{"message":"Metric stored successfully"}"#;

/// `POST /api/metrics` with `{"timestamp": "...", "value": 75, "type": "cpu"}`.
pub async fn post_metric(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, body, METRIC_BODY_LIMIT).await?;
    let metric = payload::parse_metric(&body).map_err(ApiError::Invalid)?;
    let admitted = state
        .known
        .admit(&state.store, &[metric.kind.as_str()])
        .await?;
    let granted = limit::enforce(&state, &req, Class::Ingest, 1).await?;
    state
        .known
        .add_metric(&state.store, &admitted, &metric)
        .await?;
    let mut resp = HttpResponse::Created();
    granted.write_headers(&mut resp);
    Ok(resp.insert_header(ContentType::json()).body(STORED))
}

#[derive(Serialize)]
struct BatchStored {
    stored: usize,
}

/// `POST /api/metrics/batch` with `[{"timestamp": ..., "value": ..., "type": ...}, ...]`.
pub async fn post_batch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = payload::batch_body_limit(state.config.batch_max);
    let body = read_json(&req, body, limit).await?;
    let metrics = payload::parse_batch(&body, state.config.batch_max)?;
    let kinds: Vec<&str> = metrics.iter().map(|m| m.kind.as_str()).collect();
    let admitted = state.known.admit(&state.store, &kinds).await?;
    let granted = limit::enforce(&state, &req, Class::Ingest, metrics.len() as u64).await?;
    state
        .known
        .add_metrics(&state.store, &admitted, &metrics)
        .await?;
    let mut resp = HttpResponse::Created();
    granted.write_headers(&mut resp);
    Ok(resp.json(BatchStored {
        stored: metrics.len(),
    }))
}

/// The request's query string as `T`; a malformed one is a 422.
pub fn parse_query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
}

/// The `metric_type` query parameter: required, not blank, at most `MAX_TYPE_LEN` bytes.
pub fn metric_type(value: Option<&str>) -> Result<&str, ApiError> {
    match value {
        None => Err(ApiError::invalid("query parameter required: metric_type")),
        Some(k) if k.trim().is_empty() => Err(ApiError::invalid("metric_type must not be empty")),
        Some(k) if k.len() > MAX_TYPE_LEN => Err(ApiError::invalid(format!(
            "metric_type must be at most {MAX_TYPE_LEN} bytes"
        ))),
        Some(k) => Ok(k),
    }
}

/// A positive whole number of seconds (`window`, `bucket`), or the 422 naming `name`.
pub fn positive_seconds(value: &str, name: &str) -> Result<u64, ApiError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "{name} must be a positive integer (seconds)"
        ))),
    }
}

#[derive(Deserialize)]
struct SummaryQuery {
    metric_type: Option<String>,
    window: Option<String>,
}

/// The summary as the API shows it. With no samples: `count` 0, `average` 0, the rest null.
#[derive(Serialize)]
struct SummaryBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// Seconds, when the summary covers only the last `window` seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<u64>,
    count: u64,
    average: f64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    stddev: Option<f64>,
    first_timestamp: Option<String>,
    last_timestamp: Option<String>,
    p50: Option<f64>,
    p90: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// Unix ms as RFC 3339 UTC (`2025-01-01T10:00:00Z`, with a fraction only when there is one).
pub fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The module's refusal of `window_ms` as the API says it: the retention (`retention_ms`, the
/// bound the module states, when known) in seconds, the unit of `window`.
fn window_refused(retention_ms: Option<u64>) -> ApiError {
    ApiError::invalid(match retention_ms.map(|ms| ms / 1000) {
        Some(s) => format!(
            "window must be an integer between 1 and {s} (seconds; the retention, tally.retention-ms)"
        ),
        None => "window must not exceed the retention (tally.retention-ms)".to_string(),
    })
}

/// `GET /api/metrics/summary?metric_type=cpu[&window=60]`.
///
/// The retention bounding `window` is the module's (`tally.retention-ms`, settable at run
/// time): the API does not read it, it sends `WINDOW window*1000` and turns the module's
/// refusal into a 422, so there is one round trip and no cached value to go stale.
pub async fn summary(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query: SummaryQuery = parse_query(&req)?;
    let kind = metric_type(query.metric_type.as_deref())?;
    let window = query
        .window
        .as_deref()
        .map(|w| positive_seconds(w, "window"))
        .transpose()?;
    let granted = limit::enforce(&state, &req, Class::Read, 1).await?;
    // Saturating: a window too large for u64 ms is beyond any retention, and the module says so.
    let s = match state
        .store
        .summary(kind, window.map(|w| w.saturating_mul(1000)))
        .await
    {
        Ok(s) => s,
        Err(StoreError::Refused {
            argument: Argument::WindowMs,
            max,
            ..
        }) => return Err(window_refused(max)),
        Err(e) => return Err(e.into()),
    };
    let mut resp = HttpResponse::Ok();
    granted.write_headers(&mut resp);
    Ok(resp.json(SummaryBody {
        kind,
        window,
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
        p50: s.p50.flatten(),
        p90: s.p90.flatten(),
        p95: s.p95.flatten(),
        p99: s.p99.flatten(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_window_refusal_is_reported_in_seconds() {
        let e = window_refused(Some(3_600_000));
        assert!(e.to_string().contains("between 1 and 3600 "), "{e}");
    }
}
