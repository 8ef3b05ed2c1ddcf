//! `GET /api/metrics/series?metric_type=cpu[&from=...&to=...&bucket=60]`: per-bucket aggregates
//! for charts, over `METRIC.RANGE metric:<type> <from_ms> <to_ms> <bucket*1000>`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tally_core::metric::state::State;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::labels;
use crate::payload::parse_timestamp;
use crate::policies::Class;
use crate::routes::error::ApiError;
use crate::routes::limit;
use crate::routes::metrics::{
    group_tags, metric_type, parse_query, positive_seconds, rfc3339, selector,
};
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
    p50: Option<f64>,
    p90: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(Serialize)]
struct SeriesBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    bucket: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<Vec<PointBody>>,
    /// The number of series merged (without `group_by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<GroupBody>>,
}

#[derive(Serialize)]
struct GroupBody {
    tags: BTreeMap<String, Option<String>>,
    series: usize,
    points: Vec<PointBody>,
}

/// The points of merged range states, oldest first (empty ones left out).
fn points(states: Vec<(u64, State)>) -> Vec<PointBody> {
    states
        .into_iter()
        .filter_map(|(ts, state)| {
            let s = state.summary()?;
            let [p50, p90, p95, p99] = s.quantiles;
            Some(PointBody {
                timestamp: rfc3339(i64::try_from(ts).ok()),
                count: s.count,
                average: s.avg,
                min: s.min,
                max: s.max,
                sum: s.sum,
                p50,
                p90,
                p95,
                p99,
            })
        })
        .collect()
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
    let selector = selector(&req)?;
    let granted = limit::enforce(&state, &req, Class::Read, 1).await?;
    // A refusal by the module (StoreError::Refused) is a 422 too.
    let groups = labels::ranges(&state.store, kind, &selector, (from_ms, to_ms, bucket_ms)).await?;
    let bucket = bucket_ms / 1000;
    let body = if selector.group_by.is_empty() {
        let g = groups.into_iter().next().unwrap_or_default();
        SeriesBody {
            kind,
            bucket,
            points: Some(points(g.merged)),
            series: Some(g.series),
            group_by: None,
            groups: None,
        }
    } else {
        SeriesBody {
            kind,
            bucket,
            points: None,
            series: None,
            group_by: Some(&selector.group_by),
            groups: Some(
                groups
                    .into_iter()
                    .map(|g| GroupBody {
                        tags: group_tags(&selector.group_by, g.values),
                        series: g.series,
                        points: points(g.merged),
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
