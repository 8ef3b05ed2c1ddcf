//! What the store's calls give back: the data types (`Summary`, `Point`, `Decision`, the
//! `Metric` a write takes) and the parsing of Redis replies into them (RESP2 and RESP3).

use std::collections::BTreeSet;

use redis::{RedisError, Value};

use super::error::{Result, StoreError};
use super::keys;

/// One metric sample to store (validated above the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub kind: String,
    /// The tag set, sorted by key (empty: the untagged series `metric:<type>`).
    pub tags: Vec<(String, String)>,
    pub value: f64,
    /// Unix milliseconds, >= 0.
    pub ts_ms: u64,
}

/// The reply of `RATELIMIT.CHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: i64,
    pub remaining: i64,
    /// 0 when allowed; -1 when the cost exceeds the limit (never allowed).
    pub retry_after_ms: i64,
    pub reset_after_ms: i64,
}

/// `METRIC.SUMMARY`, as the API reports it (`None` = nil: no samples).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub stddev: Option<f64>,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    /// Quantiles, when the module reports them (SPEC §5): outer `None` = not reported.
    pub p50: Option<Option<f64>>,
    pub p90: Option<Option<f64>>,
    pub p95: Option<Option<f64>>,
    pub p99: Option<Option<f64>>,
}

/// One bucket of `METRIC.RANGE`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// Bucket start, unix ms.
    pub ts: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
}
/// The reply of `METRIC.RANGE`: an array of records (RESP2 flat pairs or RESP3 maps).
pub fn parse_points(v: Value) -> Result<Vec<Point>> {
    let Value::Array(items) = v else {
        return Err(StoreError::Protocol(format!("METRIC.RANGE: {v:?}")));
    };
    items
        .into_iter()
        .map(|item| {
            let mut p = Point::default();
            for (k, v) in record(item, "METRIC.RANGE")? {
                let Some(k) = name(&k) else { continue };
                let n = || {
                    number(&v)?
                        .ok_or_else(|| StoreError::Protocol(format!("nil in a point: {v:?}")))
                };
                match k {
                    b"ts" => p.ts = n()? as i64,
                    b"count" => p.count = n()? as u64,
                    b"sum" => p.sum = n()?,
                    b"min" => p.min = n()?,
                    b"max" => p.max = n()?,
                    b"avg" => p.avg = n()?,
                    _ => {}
                }
            }
            Ok(p)
        })
        .collect()
}

/// A record reply as its (name, value) pairs: a RESP2 flat array of pairs or a RESP3 map.
pub(super) fn record(v: Value, what: &str) -> Result<Vec<(Value, Value)>> {
    match v {
        Value::Map(entries) => Ok(entries),
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut it = items.into_iter();
            let mut out = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(StoreError::Protocol(format!("{what}: {other:?}"))),
    }
}

pub(super) fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(StoreError::Protocol(format!(
            "expected an integer: {other:?}"
        ))),
    }
}

/// A number field: RESP2 bulk string or integer, RESP3 double; nil is `None`.
pub(super) fn number(v: &Value) -> Result<Option<f64>> {
    match v {
        Value::Nil => Ok(None),
        Value::Int(n) => Ok(Some(*n as f64)),
        Value::Double(d) => Ok(Some(*d)),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| StoreError::Protocol(format!("not a number: {v:?}"))),
        other => Err(StoreError::Protocol(format!("not a number: {other:?}"))),
    }
}

pub(super) fn name(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The record reply of `METRIC.SUMMARY`: a RESP2 flat array of pairs or a RESP3 map. Fields
/// are found by name; unknown ones are ignored, so new module fields do not break the API.
pub fn parse_summary(v: Value) -> Result<Summary> {
    let pairs = record(v, "METRIC.SUMMARY")?;
    let mut s = Summary::default();
    for (k, v) in &pairs {
        let Some(k) = name(k) else { continue };
        match k {
            b"count" => s.count = number(v)?.unwrap_or(0.0) as u64,
            b"sum" => s.sum = number(v)?,
            b"min" => s.min = number(v)?,
            b"max" => s.max = number(v)?,
            b"avg" => s.avg = number(v)?,
            b"stddev" => s.stddev = number(v)?,
            b"first_ts" => s.first_ts = number(v)?.map(|t| t as i64),
            b"last_ts" => s.last_ts = number(v)?.map(|t| t as i64),
            b"p50" => s.p50 = Some(number(v)?),
            b"p90" => s.p90 = Some(number(v)?),
            b"p95" => s.p95 = Some(number(v)?),
            b"p99" => s.p99 = Some(number(v)?),
            _ => {}
        }
    }
    Ok(s)
}

/// The reply of `RATELIMIT.CHECK`: a RESP2 array of 5 integers or a RESP3 map.
pub fn parse_decision(v: Value) -> Result<Decision> {
    let ints: Vec<i64> = match &v {
        Value::Array(items) if items.len() == 5 => {
            items.iter().map(int).collect::<Result<Vec<_>>>()?
        }
        Value::Map(entries) if entries.len() == 5 => entries
            .iter()
            .map(|(_, v)| int(v))
            .collect::<Result<Vec<_>>>()?,
        other => return Err(StoreError::Protocol(format!("RATELIMIT.CHECK: {other:?}"))),
    };
    Ok(Decision {
        allowed: ints[0] == 1,
        limit: ints[1],
        remaining: ints[2],
        retry_after_ms: ints[3],
        reset_after_ms: ints[4],
    })
}

/// One SCAN reply `[cursor, [key, ...]]`: adds the types of its keys to `types` and returns
/// the next cursor (0 = done).
pub(super) fn scan_page(v: Value, types: &mut BTreeSet<String>) -> Result<u64> {
    let bad = |v: &Value| StoreError::Protocol(format!("SCAN: {v:?}"));
    let Value::Array(parts) = &v else {
        return Err(match v {
            Value::ServerError(e) => StoreError::from(RedisError::from(e)),
            other => bad(&other),
        });
    };
    let [cursor, Value::Array(keys)] = parts.as_slice() else {
        return Err(bad(&v));
    };
    let cursor = name(cursor)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| bad(&v))?;
    for key in keys {
        let key = name(key).ok_or_else(|| bad(&v))?;
        if let Some(kind) = key.strip_prefix(keys::METRIC_PREFIX.as_bytes()) {
            types.insert(String::from_utf8_lossy(kind).into_owned());
        }
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn an_empty_summary_has_count_zero_and_nil_fields() {
        let mut items = vec![bulk("count"), Value::Int(0)];
        for f in ["sum", "min", "max", "avg", "stddev", "first_ts", "last_ts"] {
            items.push(bulk(f));
            items.push(Value::Nil);
        }
        let s = parse_summary(Value::Array(items)).unwrap();
        assert_eq!(s, Summary::default());
    }

    #[test]
    fn summary_fields_are_read_by_name_from_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            bulk("count"),
            Value::Int(2),
            bulk("avg"),
            bulk("50"),
            bulk("first_ts"),
            Value::Int(1000),
            bulk("p99"),
            Value::Nil,
            bulk("something_new"),
            bulk("x"),
        ]);
        let s = parse_summary(resp2).unwrap();
        assert_eq!((s.count, s.avg, s.first_ts), (2, Some(50.0), Some(1000)));
        assert_eq!(s.p99, Some(None));
        assert_eq!(s.p50, None);
        let resp3 = Value::Map(vec![
            (bulk("count"), Value::Int(1)),
            (bulk("max"), Value::Double(75.5)),
        ]);
        let s = parse_summary(resp3).unwrap();
        assert_eq!((s.count, s.max), (1, Some(75.5)));
    }

    #[test]
    fn a_decision_is_read_from_five_integers() {
        let d = parse_decision(Value::Array(
            [0, 5, 0, 1200, 59000].map(Value::Int).to_vec(),
        ))
        .unwrap();
        assert!(!d.allowed);
        assert_eq!(
            (d.limit, d.retry_after_ms, d.reset_after_ms),
            (5, 1200, 59000)
        );
        assert!(parse_decision(Value::Array(vec![Value::Int(1)])).is_err());
    }
}
