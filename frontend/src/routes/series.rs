//! `GET /api/metrics/series?metric_type=cpu[&from=...&to=...&bucket=60]`: per-bucket aggregates
//! for charts, over `METRIC.RANGE metric:<type> <from_ms> <to_ms> <bucket*1000>`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::payload::parse_timestamp;
use crate::policies::Class;
use crate::routes::error::ApiError;
use crate::routes::limit;
use crate::routes::metrics::{metric_type, parse_query, positive_seconds, rfc3339};
use crate::routes::AppState;

/// Default `bucket`, seconds.
pub const DEFAULT_BUCKET_S: u64 = 60;
/// Default span when `from` is not given: one hour before `to`'s default, now.
const DEFAULT_SPAN_MS: u64 = 3_600_000;
/// Most buckets one range may span (SPEC §5, the module's limit). Checked here too, so the
/// answer does not depend on whether the series exists (the module only checks existing ones).
pub const MAX_BUCKETS: u64 = 10_000;

#[derive(Deserialize)]
struct SeriesQuery {
    metric_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

#[derive(Serialize)]
struct PointBody {
    timestamp: Option<String>,
    count: u64,
    average: f64,
    min: f64,
    max: f64,
    sum: f64,
}

#[derive(Serialize)]
struct SeriesBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    bucket: u64,
    points: Vec<PointBody>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `from` / `to` as unix ms. In a query string an unencoded `+` arrives as a space, so
/// `...T10:00:00 01:00` is read as `...T10:00:00+01:00`.
fn bound(value: &str, name: &str) -> Result<u64, ApiError> {
    let value = value.trim();
    parse_timestamp(value)
        .or_else(|first| match value.rsplit_once(' ') {
            Some((head, offset)) if offset.starts_with(|c: char| c.is_ascii_digit()) => {
                parse_timestamp(&format!("{head}+{offset}")).map_err(|_| first)
            }
            _ => Err(first),
        })
        .map_err(|e| ApiError::invalid(format!("{name}: {e}")))
}

/// Checks the range's parameters: `(from_ms, to_ms, bucket_ms)` or the 422.
pub fn range_params(
    from: Option<&str>,
    to: Option<&str>,
    bucket: Option<&str>,
    now_ms: u64,
) -> Result<(u64, u64, u64), ApiError> {
    let bucket_s = bucket
        .map(|b| positive_seconds(b, "bucket"))
        .transpose()?
        .unwrap_or(DEFAULT_BUCKET_S);
    let bucket_ms = bucket_s
        .checked_mul(1000)
        .filter(|ms| *ms <= i64::MAX as u64)
        .ok_or_else(|| ApiError::invalid("bucket is too large"))?;
    let to_ms = to.map(|t| bound(t, "to")).transpose()?.unwrap_or(now_ms);
    let from_ms = match from {
        Some(f) => bound(f, "from")?,
        None => to_ms.saturating_sub(DEFAULT_SPAN_MS),
    };
    if from_ms > to_ms {
        return Err(ApiError::invalid("from must not be after to"));
    }
    if to_ms / bucket_ms - from_ms / bucket_ms >= MAX_BUCKETS {
        return Err(ApiError::invalid(format!(
            "the range spans more than {MAX_BUCKETS} buckets of {bucket_s} s: use a larger bucket or a shorter range"
        )));
    }
    Ok((from_ms, to_ms, bucket_ms))
}

/// `GET /api/metrics/series`: the non-empty buckets, oldest first.
pub async fn series(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query: SeriesQuery = parse_query(&req)?;
    let kind = metric_type(query.metric_type.as_deref())?;
    let (from_ms, to_ms, bucket_ms) = range_params(
        query.from.as_deref(),
        query.to.as_deref(),
        query.bucket.as_deref(),
        now_ms(),
    )?;
    let granted = limit::enforce(&state, &req, Class::Read, 1).await?;
    // A refusal by the module (StoreError::Refused) is a 422 too.
    let points = state
        .store
        .range(kind, from_ms, to_ms, bucket_ms)
        .await?
        .into_iter()
        .map(|p| PointBody {
            timestamp: rfc3339(Some(p.ts)),
            count: p.count,
            average: p.avg,
            min: p.min,
            max: p.max,
            sum: p.sum,
        })
        .collect();
    let mut resp = HttpResponse::Ok();
    granted.write_headers(&mut resp);
    Ok(resp.json(SeriesBody {
        kind,
        bucket: bucket_ms / 1000,
        points,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_735_725_600_000; // 2025-01-01T10:00:00Z

    #[test]
    fn defaults_are_the_last_hour_in_one_minute_buckets() {
        assert_eq!(
            range_params(None, None, None, NOW).unwrap(),
            (NOW - 3_600_000, NOW, 60_000)
        );
    }

    #[test]
    fn bounds_are_rfc3339_and_an_unencoded_plus_is_understood() {
        let (from, to, bucket) = range_params(
            Some("2025-01-01T10:00:00 01:00"),
            Some("2025-01-01T10:00:00Z"),
            Some("300"),
            NOW,
        )
        .unwrap();
        assert_eq!((from, to, bucket), (NOW - 3_600_000, NOW, 300_000));
    }

    #[test]
    fn bad_parameters_are_refused_naming_them() {
        for (from, to, bucket, needle) in [
            (Some("yesterday"), None, None, "from"),
            (None, Some("2025-13-01"), None, "to"),
            (
                Some("2025-01-01T11:00:00Z"),
                Some("2025-01-01T10:00:00Z"),
                None,
                "after",
            ),
            (None, None, Some("0"), "bucket"),
            (None, None, Some("-60"), "bucket"),
            (None, None, Some("1.5"), "bucket"),
            (None, None, Some("18446744073709551615"), "bucket"),
            (
                Some("2024-01-01T00:00:00Z"),
                None,
                Some("1"),
                "10000 buckets",
            ),
        ] {
            match range_params(from, to, bucket, NOW) {
                Err(ApiError::Invalid(d)) => assert!(d.contains(needle), "{needle}: {d}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
    }
}
