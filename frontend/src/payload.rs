//! Request bodies: the JSON content-type check (415), the per-route size limit (413), and the
//! metric object's validation (422, naming the field). Everything here runs before Redis is
//! touched, so an invalid request stores nothing and uses no rate-limit budget.

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Body limit of `POST /api/metrics` (one small object).
pub const METRIC_BODY_LIMIT: usize = 64 * 1024;

/// Longest metric type (bytes); the type becomes part of a Redis key.
pub const MAX_TYPE_LEN: usize = 256;

/// One validated metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub kind: String,
    pub value: f64,
    /// Unix milliseconds, >= 0.
    pub ts_ms: u64,
}

/// True for `application/json` and `application/<anything>+json`, parameters ignored.
fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    ty.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Reads a JSON body of at most `limit` bytes: 415 unless declared JSON, 413 as soon as it is
/// known to be larger (from `Content-Length`, or while streaming a chunked body).
pub async fn read_json(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The fields as raw JSON, so each one is checked on its own and the error names it.
#[derive(Deserialize)]
struct RawMetric<'a> {
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
}

/// Parses and validates a `POST /api/metrics` body. The error text is the 422 `detail`.
pub fn parse_metric(body: &[u8]) -> Result<Metric, String> {
    let raw: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    metric_from_raw(raw)
}

/// Validates one metric object (a batch item uses this too).
pub fn metric_from_raw(raw: &RawValue) -> Result<Metric, String> {
    if !raw.get().trim_start().starts_with('{') {
        return Err("the body must be a JSON object".to_string());
    }
    let fields: RawMetric<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("malformed JSON: {e}"))?;
    let value = field(fields.value, "value")?;
    let value = serde_json::from_str::<f64>(value.get())
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            if value
                .get()
                .trim_start()
                .starts_with(|c: char| c == '-' || c.is_ascii_digit())
            {
                "value must be a finite number (it is out of range)".to_string()
            } else {
                "value must be a number".to_string()
            }
        })?;
    let kind = serde_json::from_str::<String>(field(fields.kind, "type")?.get())
        .map_err(|_| "type must be a string".to_string())?;
    if kind.trim().is_empty() {
        return Err("type must not be empty".to_string());
    }
    if kind.len() > MAX_TYPE_LEN {
        return Err(format!("type must be at most {MAX_TYPE_LEN} bytes"));
    }
    let ts_text = serde_json::from_str::<String>(field(fields.timestamp, "timestamp")?.get())
        .map_err(|_| "timestamp must be an ISO 8601 / RFC 3339 string".to_string())?;
    let ts_ms = parse_timestamp(&ts_text)?;
    Ok(Metric { kind, value, ts_ms })
}

fn field<'a>(v: Option<&'a RawValue>, name: &str) -> Result<&'a RawValue, String> {
    match v {
        Some(v) if v.get() != "null" => Ok(v),
        _ => Err(format!("field required: {name}")),
    }
}

/// ISO 8601 / RFC 3339 to unix milliseconds. Without an offset the time is UTC; a bare date is
/// midnight UTC. Before 1970 is refused.
pub fn parse_timestamp(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let ms = if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        dt.timestamp_millis()
    } else if let Ok(dt) = s.parse::<NaiveDateTime>() {
        // `2025-01-01T10:00:00[.fff]`, the common form without an offset, without
        // interpreting a format string.
        dt.and_utc().timestamp_millis()
    } else if let Some(dt) = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        dt.timestamp_millis()
    } else if let Some(dt) = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    {
        dt.and_utc().timestamp_millis()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .map_or(-1, |dt| dt.and_utc().timestamp_millis())
    } else {
        return Err(format!(
            "timestamp {s:?} is not an ISO 8601 / RFC 3339 date-time (e.g. 2025-01-01T10:00:00Z)"
        ));
    };
    u64::try_from(ms).map_err(|_| "timestamp must not be before 1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Metric, String> {
        parse_metric(body.as_bytes())
    }

    #[test]
    fn the_documented_example_is_valid_and_means_utc() {
        let m = parse(r#"{"timestamp":"2025-01-01T10:00:00","value":75,"type":"cpu"}"#).unwrap();
        assert_eq!(
            m,
            Metric {
                kind: "cpu".to_string(),
                value: 75.0,
                ts_ms: 1_735_725_600_000
            }
        );
    }

    #[test]
    fn timestamps_with_offsets_fractions_and_z_are_understood() {
        for (text, ms) in [
            ("2025-01-01T10:00:00Z", 1_735_725_600_000),
            ("2025-01-01T11:00:00+01:00", 1_735_725_600_000),
            ("2025-01-01T10:00:00.250Z", 1_735_725_600_250),
            ("2025-01-01 10:00:00", 1_735_725_600_000),
            ("2025-01-01T10:00:00.5", 1_735_725_600_500),
            ("2025-01-01T11:00:00+0100", 1_735_725_600_000),
            ("2025-01-01T10:00", 1_735_725_600_000),
            ("2025-01-01", 1_735_689_600_000),
            ("1970-01-01T00:00:00Z", 0),
        ] {
            assert_eq!(parse_timestamp(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn timestamps_before_1970_and_nonsense_are_refused() {
        assert!(parse_timestamp("1969-12-31T23:59:59Z")
            .unwrap_err()
            .contains("1970"));
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2025-13-01T00:00:00").is_err());
    }

    #[test]
    fn every_invalid_body_is_refused_with_the_field_named() {
        for (body, needle) in [
            ("{", "malformed JSON"),
            ("[1,2]", "object"),
            ("42", "object"),
            (r#"{"value":1,"type":"cpu"}"#, "timestamp"),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","type":"cpu"}"#,
                "value",
            ),
            (r#"{"timestamp":"2025-01-01T10:00:00","value":1}"#, "type"),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":null,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":"75","type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":true,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1e999,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":-1e999,"type":"cpu"}"#,
                "value",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":""}"#,
                "type",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":"  "}"#,
                "type",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":7}"#,
                "type",
            ),
            (
                r#"{"timestamp":1735725600,"value":1,"type":"cpu"}"#,
                "timestamp",
            ),
            (
                r#"{"timestamp":"1960-01-01T00:00:00","value":1,"type":"cpu"}"#,
                "timestamp",
            ),
            (
                r#"{"timestamp":"2025-01-01T10:00:00","value":1,"type":"cpu""#,
                "malformed",
            ),
        ] {
            let err = parse(body).expect_err(body);
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn extra_fields_are_ignored_and_escapes_are_decoded() {
        let m =
            parse(r#"{"timestamp":"2025-01-01T10:00:00Z","value":-0.5,"type":"c\u0070u","x":[1]}"#)
                .unwrap();
        assert_eq!((m.kind.as_str(), m.value), ("cpu", -0.5));
    }
}
