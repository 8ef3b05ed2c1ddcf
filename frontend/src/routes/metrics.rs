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

use std::collections::BTreeMap;

use crate::labels::{self, Selector};
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
    let mut metric = payload::parse_metric(&body).map_err(ApiError::Invalid)?;
    let admitted = state
        .known
        .admit(&state.store, &[metric.kind.as_str()])
        .await?;
    let granted = limit::enforce(&state, &req, Class::Ingest, 1).await?;
    state
        .labels
        .resolve(&state.store, std::slice::from_mut(&mut metric))
        .await?;
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
    let mut metrics = payload::parse_batch(&body, state.config.batch_max)?;
    let kinds: Vec<&str> = metrics.iter().map(|m| m.kind.as_str()).collect();
    let admitted = state.known.admit(&state.store, &kinds).await?;
    let granted = limit::enforce(&state, &req, Class::Ingest, metrics.len() as u64).await?;
    state.labels.resolve(&state.store, &mut metrics).await?;
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

/// The summary fields as the API shows them. With no samples: `count` 0, `average` 0, the
/// rest null.
#[derive(Serialize)]
pub struct SummaryFields {
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

impl SummaryFields {
    pub fn of(s: Option<tally_core::metric::Summary>) -> SummaryFields {
        let ts = |t: u64| rfc3339(i64::try_from(t).ok());
        let [p50, p90, p95, p99] = s.map_or([None; 4], |s| s.quantiles);
        SummaryFields {
            count: s.map_or(0, |s| s.count),
            average: s.map_or(0.0, |s| s.avg),
            sum: s.map(|s| s.sum),
            min: s.map(|s| s.min),
            max: s.map(|s| s.max),
            stddev: s.map(|s| s.stddev),
            first_timestamp: s.and_then(|s| ts(s.first_ts)),
            last_timestamp: s.and_then(|s| ts(s.last_ts)),
            p50,
            p90,
            p95,
            p99,
        }
    }
}

/// A summary: merged over every matching series, or per group with `group_by`.
#[derive(Serialize)]
struct SummaryBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// Seconds, when the summary covers only the last `window` seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    fields: Option<SummaryFields>,
    /// The number of series merged (without `group_by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<SummaryGroup>>,
}

#[derive(Serialize)]
struct SummaryGroup {
    tags: BTreeMap<String, Option<String>>,
    series: usize,
    #[serde(flatten)]
    fields: SummaryFields,
}

/// A group's tags as JSON: each `group_by` key and its value (null when missing).
pub fn group_tags(
    keys: &[String],
    values: Vec<Option<String>>,
) -> BTreeMap<String, Option<String>> {
    keys.iter().cloned().zip(values).collect()
}

/// The query's labels selector (`tag.<key>=<value>`, `group_by`); a bad one is a 422.
pub fn selector(req: &HttpRequest) -> Result<Selector, ApiError> {
    let pairs: Vec<(String, String)> = parse_query(req)?;
    Selector::from_query(&pairs).map_err(ApiError::Invalid)
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
    let selector = selector(&req)?;
    let granted = limit::enforce(&state, &req, Class::Read, 1).await?;
    // Saturating: a window too large for u64 ms is beyond any retention, and the module says so.
    let window_ms = window.map(|w| w.saturating_mul(1000));
    let groups = match labels::summaries(&state.store, kind, &selector, window_ms).await {
        Ok(g) => g,
        Err(StoreError::Refused {
            argument: Argument::WindowMs,
            max,
            ..
        }) => return Err(window_refused(max)),
        Err(e) => return Err(e.into()),
    };
    let body = if selector.group_by.is_empty() {
        let g = groups.into_iter().next().unwrap_or_default();
        SummaryBody {
            kind,
            window,
            fields: Some(SummaryFields::of(g.merged.summary())),
            series: Some(g.series),
            group_by: None,
            groups: None,
        }
    } else {
        SummaryBody {
            kind,
            window,
            fields: None,
            series: None,
            group_by: Some(&selector.group_by),
            groups: Some(
                groups
                    .into_iter()
                    .map(|g| SummaryGroup {
                        tags: group_tags(&selector.group_by, g.values),
                        series: g.series,
                        fields: SummaryFields::of(g.merged.summary()),
                    })
                    .collect(),
            ),
        }
    };
    let mut resp = HttpResponse::Ok();
    granted.write_headers(&mut resp);
    Ok(resp.json(body))
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
