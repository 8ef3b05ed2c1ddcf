//! The limiter's analytics in Redis (SPEC §10): decision counts as the module's series
//! (`tally:decisions:<policy>:<outcome>`) and denied clients per minute in capped sorted sets
//! (`tally:top:<minute>`). Written only by each instance's flush task (never on a request's
//! path), read by `GET /api/ratelimit/decisions` and `/top`.

use redis::{Cmd, Value};

use super::error::{Result, StoreError};
use super::keys;
use super::reply::{number, parse_points};
use super::{metric_add, Point, Store};

/// Most members a minute's sorted set keeps (the largest counts); trimmed after every flush.
pub const TOP_PER_MINUTE: usize = 1000;
/// A minute's sorted set expires this long after its last flush: the longest window of
/// `/api/ratelimit/top` plus two minutes.
pub const TOP_TTL_S: u64 = 3600 + 120;

impl Store {
    /// Adds `counts` (`(policy, outcome, n)`) at `ts_ms`: one `METRIC.ADD` each, sent
    /// concurrently (each key is its own slot in cluster mode); the result of each.
    pub async fn add_decisions(
        &self,
        counts: &[(String, &str, u64)],
        ts_ms: u64,
    ) -> Vec<Result<()>> {
        futures_util::future::join_all(counts.iter().map(|(policy, outcome, n)| {
            let cmd = metric_add(keys::decisions(policy, outcome), *n as f64, ts_ms);
            async move { self.call_once(&cmd).await.map(drop) }
        }))
        .await
    }

    /// The buckets of `tally:decisions:<policy>:<outcome>` over `[from_ms, to_ms]`.
    pub async fn decision_range(
        &self,
        policy: &str,
        outcome: &str,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<Vec<Point>> {
        let mut cmd = redis::cmd("METRIC.RANGE");
        cmd.arg(keys::decisions(policy, outcome))
            .arg(from_ms)
            .arg(to_ms)
            .arg(bucket_ms);
        parse_points(self.call(&cmd).await?)
    }

    /// Adds `deltas` (client, denials) to the sorted set of `minute_s`, then trims it to its
    /// `TOP_PER_MINUTE` largest members and sets its expiry: one pipeline on one key.
    pub async fn add_denied_clients(&self, minute_s: u64, deltas: &[(String, u64)]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let key = keys::top(minute_s);
        let mut pipe = redis::pipe();
        for (client, n) in deltas {
            pipe.cmd("ZINCRBY").arg(&key).arg(*n).arg(client).ignore();
        }
        pipe.cmd("ZREMRANGEBYRANK")
            .arg(&key)
            .arg(0)
            .arg(-(TOP_PER_MINUTE as i64) - 1)
            .ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(TOP_TTL_S).ignore();
        self.call_pipeline(&pipe, false).await.map(drop)
    }

    /// The members of the sorted set of `minute_s` with their counts (at most
    /// `TOP_PER_MINUTE`).
    pub async fn denied_clients(&self, minute_s: u64) -> Result<Vec<(String, u64)>> {
        let mut cmd: Cmd = redis::cmd("ZRANGE");
        cmd.arg(keys::top(minute_s))
            .arg(0)
            .arg(TOP_PER_MINUTE - 1)
            .arg("REV")
            .arg("WITHSCORES");
        scored_members(self.call(&cmd).await?)
    }
}

/// `ZRANGE ... WITHSCORES`: a flat array (RESP2) or an array of pairs (RESP3).
fn scored_members(v: Value) -> Result<Vec<(String, u64)>> {
    let items = match v {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(StoreError::Protocol(format!("ZRANGE: {other:?}"))),
    };
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(pair) => flat.extend(pair),
            other => flat.push(other),
        }
    }
    if flat.len() % 2 != 0 {
        return Err(StoreError::Protocol("ZRANGE: odd reply".to_string()));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(member), Some(score)) = (it.next(), it.next()) {
        let member = match member {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::SimpleString(s) => s,
            other => return Err(StoreError::Protocol(format!("ZRANGE member: {other:?}"))),
        };
        let score = number(&score)?.unwrap_or(0.0);
        out.push((member, score.max(0.0) as u64));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn scored_members_are_read_from_resp2_and_resp3() {
        let resp2 = Value::Array(vec![bulk("a"), bulk("3"), bulk("b"), bulk("1")]);
        let resp3 = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(3.0)]),
            Value::Array(vec![bulk("b"), Value::Double(1.0)]),
        ]);
        let want = vec![("a".to_string(), 3), ("b".to_string(), 1)];
        assert_eq!(scored_members(resp2).unwrap(), want);
        assert_eq!(scored_members(resp3).unwrap(), want);
        assert!(scored_members(Value::Array(vec![bulk("a")])).is_err());
    }
}
