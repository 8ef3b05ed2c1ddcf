//! The limiter's analytics and the breaker's state, read-only (SPEC §10):
//! `GET /api/ratelimit/decisions?window=900&bucket=10`, `GET /api/ratelimit/top?window=900&limit=10`
//! and `GET /external/state`. The counts are every instance's, as flushed to Redis
//! (`crate::decisions`); the breaker is this instance's.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::decisions::{Outcome, MAX_TOP_WINDOW_S};
use crate::routes::error::ApiError;
use crate::routes::metrics::{parse_query, positive_seconds};
use crate::routes::AppState;

/// Defaults of both endpoints: the last 15 minutes.
pub const DEFAULT_WINDOW_S: u64 = 900;
pub const DEFAULT_BUCKET_S: u64 = 10;
pub const DEFAULT_LIMIT: usize = 10;
/// Longest window of `/api/ratelimit/decisions` (one day; older buckets are past any default
/// retention anyway).
pub const MAX_DECISIONS_WINDOW_S: u64 = 86_400;
/// Most buckets per series in one answer.
pub const MAX_POINTS: u64 = 3600;
/// Most clients `/api/ratelimit/top` lists.
pub const MAX_LIMIT: usize = 100;

#[derive(Deserialize)]
struct Query {
    window: Option<String>,
    bucket: Option<String>,
    limit: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `window` (seconds, 1 ..= `max`, default `DEFAULT_WINDOW_S`), or the 422 naming it.
fn window(value: Option<&str>, max: u64) -> Result<u64, ApiError> {
    let w = value
        .map(|v| positive_seconds(v, "window"))
        .transpose()?
        .unwrap_or(DEFAULT_WINDOW_S);
    if w > max {
        return Err(ApiError::invalid(format!(
            "window must be an integer between 1 and {max} (seconds)"
        )));
    }
    Ok(w)
}

/// `(window, bucket)` of `/api/ratelimit/decisions`, or the 422 naming the parameter.
pub fn decisions_params(
    window_v: Option<&str>,
    bucket: Option<&str>,
) -> Result<(u64, u64), ApiError> {
    let w = window(window_v, MAX_DECISIONS_WINDOW_S)?;
    let b = bucket
        .map(|v| positive_seconds(v, "bucket"))
        .transpose()?
        .unwrap_or(DEFAULT_BUCKET_S);
    if b > w {
        return Err(ApiError::invalid("bucket must not exceed window"));
    }
    if w / b > MAX_POINTS {
        return Err(ApiError::invalid(format!(
            "bucket is too small: window/bucket must be at most {MAX_POINTS}"
        )));
    }
    Ok((w, b))
}

/// `(window, limit)` of `/api/ratelimit/top`, or the 422 naming the parameter.
pub fn top_params(window_v: Option<&str>, limit: Option<&str>) -> Result<(u64, usize), ApiError> {
    let w = window(window_v, MAX_TOP_WINDOW_S)?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(format!(
                    "limit must be an integer between 1 and {MAX_LIMIT}"
                )))
            }
        },
    };
    Ok((w, limit))
}

/// `GET /api/ratelimit/decisions`: `{"window":900,"bucket":10,"policies":{"default":
/// {"allowed":[[ts,n],...],"denied":[...],"shadow_denied":[...]}}}`, every bucket of the
/// window (unix seconds of its start), oldest first.
pub async fn decisions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = parse_query(&req)?;
    let (w, b) = decisions_params(q.window.as_deref(), q.bucket.as_deref())?;
    let series = state.decisions.series(&state.store, w, b, now_ms()).await?;
    let mut policies = Map::new();
    for (policy, by_outcome) in series {
        let mut outcomes = Map::new();
        for (outcome, points) in Outcome::ALL.iter().zip(by_outcome) {
            let points: Vec<[u64; 2]> = points.into_iter().map(|(t, n)| [t, n]).collect();
            outcomes.insert(outcome.as_str().to_string(), json!(points));
        }
        policies.insert(policy, Value::Object(outcomes));
    }
    Ok(HttpResponse::Ok().json(json!({"window": w, "bucket": b, "policies": policies})))
}

/// `GET /api/ratelimit/top`: `[{"client":"203.0.113.7","denied":42},...]`, largest first.
pub async fn top(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let q: Query = parse_query(&req)?;
    let (w, limit) = top_params(q.window.as_deref(), q.limit.as_deref())?;
    let top = state
        .decisions
        .top(&state.store, w, limit, now_ms())
        .await?;
    let body: Vec<Value> = top
        .into_iter()
        .map(|(client, denied)| json!({"client": client, "denied": denied}))
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /external/state`: `{"state":"closed"}` (`open`, `half_open`), this instance's breaker.
pub async fn breaker(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"state": state.breaker.state().as_str()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_have_defaults_and_bounds_naming_them() {
        assert_eq!(decisions_params(None, None).unwrap(), (900, 10));
        assert_eq!(decisions_params(Some("60"), Some("60")).unwrap(), (60, 60));
        assert_eq!(top_params(None, None).unwrap(), (900, 10));
        assert_eq!(top_params(Some("3600"), Some("100")).unwrap(), (3600, 100));
        for (w, b, needle) in [
            (Some("0"), None, "window"),
            (Some("x"), None, "window"),
            (Some("86401"), None, "window"),
            (None, Some("0"), "bucket"),
            (Some("60"), Some("61"), "bucket"),
            (Some("86400"), Some("1"), "bucket"),
        ] {
            match decisions_params(w, b) {
                Err(ApiError::Invalid(d)) => assert!(d.contains(needle), "{needle}: {d}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
        for (w, l, needle) in [
            (Some("3601"), None, "window"),
            (None, Some("0"), "limit"),
            (None, Some("101"), "limit"),
            (None, Some("-1"), "limit"),
        ] {
            match top_params(w, l) {
                Err(ApiError::Invalid(d)) => assert!(d.contains(needle), "{needle}: {d}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
    }
}
