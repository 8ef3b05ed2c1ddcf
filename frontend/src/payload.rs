//! Metric payloads: the metric object's validation (422, naming the field), a batch's (an
//! array of them, at most `BATCH_MAX`), and the body limits. Everything here runs before Redis
//! is touched, so an invalid request stores nothing and uses no rate-limit budget. (Reading
//! the body, the 415 and the 413 are `routes::body`; the 408 `routes::deadline`.)

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Body limit of `POST /api/metrics` (one small object).
pub const METRIC_BODY_LIMIT: usize = 64 * 1024;

/// Longest metric type (bytes); the type becomes part of a Redis key.
pub const MAX_TYPE_LEN: usize = 256;

/// How far after the API's clock a metric timestamp may be (5 minutes, the module's bound on
/// `METRIC.ADD ... TS` too): a sample from further ahead would blank the series' windows.
pub const MAX_FUTURE_MS: u64 = 300_000;

/// One validated metric.
pub use crate::store::Metric;

/// Bytes allowed per batch item (a metric object is well under 512 bytes unless its type is
/// long); the batch body limit is `BATCH_MAX` times this, at least `METRIC_BODY_LIMIT`.
pub const BATCH_BYTES_PER_ITEM: usize = 512;

/// The body limit of `POST /api/metrics/batch` for `batch_max` items.
pub fn batch_body_limit(batch_max: usize) -> usize {
    batch_max
        .saturating_mul(BATCH_BYTES_PER_ITEM)
        .max(METRIC_BODY_LIMIT)
}

/// Why a batch body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Malformed, empty, or an invalid item (named, numbered from 0): the 422 detail.
    Invalid(String),
    /// More items than `BATCH_MAX` (413).
    TooManyItems { count: usize, max: usize },
}

/// Parses a batch body: a JSON array of 1 ..= `batch_max` metric objects. More items than
/// `batch_max` is a 413; anything invalid a 422 naming the item (numbered from 0).
pub fn parse_batch(body: &[u8], batch_max: usize) -> Result<Vec<Metric>, BatchError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        if text.trim_start().starts_with('[') {
            BatchError::Invalid(format!("malformed JSON: {e}"))
        } else {
            BatchError::Invalid("the body must be a JSON array of metric objects".to_string())
        }
    })?;
    if items.is_empty() {
        return Err(BatchError::Invalid(
            "the batch must hold at least one metric object".to_string(),
        ));
    }
    if items.len() > batch_max {
        return Err(BatchError::TooManyItems {
            count: items.len(),
            max: batch_max,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            metric_from_raw(raw).map_err(|e| BatchError::Invalid(format!("item {i}: {e}")))
        })
        .collect()
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
    /// Present (even `null`, which is refused) or absent.
    #[serde(borrow, default, deserialize_with = "present")]
    tags: Option<&'a RawValue>,
}

/// A field that is present, whatever its value (`null` included, unlike `Option`'s default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses and validates a `POST /api/metrics` body. The error text is the 422 `detail`.
pub fn parse_metric(body: &[u8]) -> Result<Metric, String> {
    let raw: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    metric_from_raw(raw)
}

/// Validates one metric object (a batch item uses this too), against the API's clock.
pub fn metric_from_raw(raw: &RawValue) -> Result<Metric, String> {
    metric_from_raw_at(raw, now_ms())
}

/// The API's clock, unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`metric_from_raw`] with the clock given: a timestamp more than [`MAX_FUTURE_MS`] after
/// `now_ms` is refused.
fn metric_from_raw_at(raw: &RawValue, now_ms: u64) -> Result<Metric, String> {
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
    if ts_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(format!(
            "timestamp {:?} is in the future: at most {} minutes after the server's clock ({}) is accepted",
            ts_text.trim(),
            MAX_FUTURE_MS / 60_000,
            rfc3339_ms(now_ms),
        ));
    }
    let tags = match fields.tags {
        Some(raw) => crate::labels::parse_tags(raw)?,
        None => Vec::new(),
    };
    Ok(Metric {
        kind,
        tags,
        value,
        ts_ms,
    })
}

fn field<'a>(v: Option<&'a RawValue>, name: &str) -> Result<&'a RawValue, String> {
    match v {
        Some(v) if v.get() != "null" => Ok(v),
        _ => Err(format!("field required: {name}")),
    }
}

/// Unix ms as RFC 3339 UTC, for messages.
fn rfc3339_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms"),
            |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
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

    fn item(i: usize) -> String {
        format!(r#"{{"timestamp":"2025-01-01T10:00:0{i}Z","value":{i},"type":"cpu"}}"#)
    }

    #[test]
    fn a_batch_is_an_array_of_one_to_batch_max_valid_objects() {
        let body = format!("[{},{}]", item(1), item(2));
        let metrics = parse_batch(body.as_bytes(), 2).unwrap();
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[1].value, 2.0);
        assert!(matches!(
            parse_batch(body.as_bytes(), 1),
            Err(BatchError::TooManyItems { count: 2, max: 1 })
        ));
    }

    #[test]
    fn a_bad_batch_is_refused_naming_the_first_bad_item() {
        for (body, needle) in [
            ("[]".to_string(), "at least one"),
            ("{}".to_string(), "JSON array"),
            ("[1,".to_string(), "malformed JSON"),
            (format!("[{},{}]", item(1), "42"), "item 1: "),
            (
                format!(
                    "[{},{},{}]",
                    item(0),
                    item(1),
                    r#"{"timestamp":"2025-01-01","type":"cpu"}"#
                ),
                "item 2: field required: value",
            ),
        ] {
            match parse_batch(body.as_bytes(), 10) {
                Err(BatchError::Invalid(d)) => assert!(d.contains(needle), "{body}: {d}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_batch_body_limit_grows_with_batch_max_from_64_kib() {
        assert_eq!(batch_body_limit(1), METRIC_BODY_LIMIT);
        assert_eq!(batch_body_limit(1000), 512_000);
    }

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
                tags: vec![],
                value: 75.0,
                ts_ms: 1_735_725_600_000
            }
        );
    }

    #[test]
    fn tags_are_read_sorted_and_a_bad_tag_is_named() {
        let m = parse(r#"{"timestamp":"2025-01-01","value":1,"type":"cpu","tags":{"region":"eu","host":"web-1"}}"#)
            .unwrap();
        assert_eq!(
            m.tags,
            vec![
                ("host".to_string(), "web-1".to_string()),
                ("region".to_string(), "eu".to_string())
            ]
        );
        let e = parse(r#"{"timestamp":"2025-01-01","value":1,"type":"cpu","tags":{"Host":"a"}}"#)
            .unwrap_err();
        assert!(e.contains("\"Host\""), "{e}");
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

    fn at(body: &str, now_ms: u64) -> Result<Metric, String> {
        let raw: &RawValue = serde_json::from_str(body).unwrap();
        metric_from_raw_at(raw, now_ms)
    }

    #[test]
    fn a_timestamp_up_to_five_minutes_ahead_of_the_clock_is_accepted_and_no_further() {
        let now = 1_735_725_600_000; // 2025-01-01T10:00:00Z
        for (ts, ok) in [
            ("2025-01-01T10:00:00Z", true),
            ("2025-01-01T10:05:00Z", true),
            ("2025-01-01T10:05:00.001Z", false),
            ("2025-01-01T11:05:00+01:00", true),
            ("2025-01-01T11:05:01+01:00", false),
            ("2025-01-02", false),
            ("9999-12-31T23:59:59Z", false),
        ] {
            let body = format!(r#"{{"timestamp":"{ts}","value":1,"type":"cpu"}}"#);
            match at(&body, now) {
                Ok(m) => assert!(ok, "{ts} accepted as {}", m.ts_ms),
                Err(e) => {
                    assert!(!ok, "{ts} refused: {e}");
                    assert!(e.contains("timestamp") && e.contains("future"), "{ts}: {e}");
                    assert!(e.contains("2025-01-01T10:00:00Z"), "names the clock: {e}");
                }
            }
        }
    }

    #[test]
    fn the_far_future_is_refused_against_the_real_clock() {
        let err =
            parse(r#"{"timestamp":"9999-12-31T23:59:59Z","value":1,"type":"cpu"}"#).unwrap_err();
        assert!(err.contains("future"), "{err}");
        // Now is fine: the check uses the API's own clock.
        let now = rfc3339_ms(now_ms());
        let body = format!(r#"{{"timestamp":"{now}","value":1,"type":"cpu"}}"#);
        assert!(parse(&body).is_ok(), "{body}");
    }

    #[test]
    fn extra_fields_are_ignored_and_escapes_are_decoded() {
        let m =
            parse(r#"{"timestamp":"2025-01-01T10:00:00Z","value":-0.5,"type":"c\u0070u","x":[1]}"#)
                .unwrap();
        assert_eq!((m.kind.as_str(), m.value), ("cpu", -0.5));
    }
}
