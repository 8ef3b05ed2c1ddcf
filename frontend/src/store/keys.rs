//! The key scheme, in one place. Every key is one resource of its own so Redis Cluster spreads
//! them over all shards; the API adds no hash tags (`{...}`).
//!
//! | key | type | written by |
//! |---|---|---|
//! | `metric:<type>` | the module's metric series (`tally-met`) | `POST /api/metrics` and `/api/metrics/batch` (`METRIC.ADD`) |
//! | `ratelimit:<client-ip>` | the module's rate-limit log | `RATELIMIT.CHECK` on rate-limited routes |
//! | `tally:types` | set of metric type names (the type index, at most `MAX_TYPES` members) | a POST of a new type (a Lua script: add only if the set stays within `MAX_TYPES`); read by `GET /api/metrics/types` (`SMEMBERS`) |
//! | `tally:types:built` | string `1` | set once the index holds every type that was in the keyspace (built by one `SCAN ... TYPE tally-met` when missing) |
//! | `tally:health` | never written | `/health` reads it (`METRIC.SUMMARY`) to prove the module answers |
//! | `ratelimit:read:<client-ip>` | rate-limit log | an anonymous client's read class (with `POLICY_FILE`) |
//! | `ratelimit:key:<key id>:<class>` | rate-limit log | a keyed request's budget of one class (`ingest`, `read`) |
//! | `ratelimit:shadow:<policy>:<rest of the budget's key>` | rate-limit log | a shadow policy, evaluated alone |
//! | `ratelimit:svc:<key id>:<subject>` | rate-limit log | `POST /api/limits/check` of one calling key |
//! | `tally:apikey:<sha256 hex of the key>` | hash `id`, `name`, `tier`, `created_ms` | `tally-api keys create` (deleted by `revoke`); the API reads it (`HGETALL`) |
//! | `tally:apikeys` | hash id -> sha256 hex | the key index, for `keys list` / `keys revoke` (never read by the server) |
//! | `series:<type*>\|<key>=<value*>,...` | the series of one tag set (labels) | as `metric:<type>`, for tagged metrics; the scheme is in `labels.rs` |
//! | `tally:series:<type*>` | set of the type's tag sets (the series index, at most `MAX_SERIES_PER_TYPE` plus the overflow one) | a POST of a new tag set (a Lua script); read by summaries, series and `/api/metrics/tags` (`SMEMBERS`) |
//! | `tally:decisions:<policy>:<outcome>` | the module's metric series: one sample per instance and flush, its value the number of decisions | each instance's flush task, at most once a second (`METRIC.ADD`); read by `GET /api/ratelimit/decisions` (`METRIC.RANGE`) |
//! | `tally:top:<minute>` | sorted set: client -> denials in that minute (unix seconds of its start), at most `TOP_PER_MINUTE` members, expires after `TOP_TTL_S` | each instance's flush task (`ZINCRBY`, trimmed by `ZREMRANGEBYRANK`); read by `GET /api/ratelimit/top` |
//!
//! The index is one key, so in cluster mode it lives on one shard and covers every shard's
//! series. It is never pruned by the API: a type whose series was deleted or expired stays
//! listed (and counted against `MAX_TYPES`) until `SREM tally:types <type>`.

use std::net::IpAddr;

/// Prefix of metric series keys.
pub const METRIC_PREFIX: &str = "metric:";
/// Prefix of rate-limit keys.
pub const RATELIMIT_PREFIX: &str = "ratelimit:";
/// The type index: a set of metric type names.
pub const TYPE_INDEX: &str = "tally:types";
/// Marker: the type index holds every type that was in the keyspace when it was built.
pub const TYPE_INDEX_BUILT: &str = "tally:types:built";
/// Read (never written) by the health check.
pub const HEALTH_PROBE: &str = "tally:health";
/// The module's metric data type, as `TYPE` and `SCAN ... TYPE` name it.
pub const METRIC_TYPE_NAME: &str = "tally-met";

/// Prefix of the limiter's decision series.
pub const DECISIONS_PREFIX: &str = "tally:decisions:";
/// Prefix of the per-minute sorted sets of denied clients.
pub const TOP_PREFIX: &str = "tally:top:";

/// `tally:decisions:<policy>:<outcome>` (policy names come from the configuration).
pub fn decisions(policy: &str, outcome: &str) -> String {
    format!("{DECISIONS_PREFIX}{policy}:{outcome}")
}

/// `tally:top:<minute start, unix seconds>`.
pub fn top(minute_s: u64) -> String {
    format!("{TOP_PREFIX}{minute_s}")
}

/// `metric:<type>`.
pub fn metric(kind: &str) -> String {
    let mut key = String::with_capacity(METRIC_PREFIX.len() + kind.len());
    key.push_str(METRIC_PREFIX);
    key.push_str(kind);
    key
}

/// `ratelimit:<client-ip>` (IPv6 in its canonical compressed form).
pub fn ratelimit(client: IpAddr) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(RATELIMIT_PREFIX.len() + 39);
    key.push_str(RATELIMIT_PREFIX);
    let _ = write!(key, "{client}");
    key
}

/// Prefix of API key records.
pub const API_KEY_PREFIX: &str = "tally:apikey:";
/// The index of API keys (id -> digest).
pub const API_KEY_INDEX: &str = "tally:apikeys";

/// `tally:apikey:<sha256 hex>`.
pub fn api_key(digest_hex: &str) -> String {
    format!("{API_KEY_PREFIX}{digest_hex}")
}

/// `ratelimit:read:<client-ip>`: an anonymous client's read budget.
pub fn ratelimit_read(client: IpAddr) -> String {
    format!("{RATELIMIT_PREFIX}read:{client}")
}

/// `ratelimit:key:<id>:<class>`: a keyed budget.
pub fn ratelimit_key(id: &str, class: &str) -> String {
    format!("{RATELIMIT_PREFIX}key:{id}:{class}")
}

/// `ratelimit:shadow:<policy>:<budget key without ratelimit:>`: a shadow policy's own log.
pub fn ratelimit_shadow(policy: &str, budget_key: &str) -> String {
    let rest = budget_key
        .strip_prefix(RATELIMIT_PREFIX)
        .unwrap_or(budget_key);
    format!("{RATELIMIT_PREFIX}shadow:{policy}:{rest}")
}

/// `ratelimit:svc:<id>:<subject>`: a subject of `/api/limits/check` under one calling key.
pub fn ratelimit_service(id: &str, subject: &str) -> String {
    format!("{RATELIMIT_PREFIX}svc:{id}:{subject}")
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM mod 16384, honouring a `{tag}` the
/// client may have put in a metric type). Used only to group a batch's writes by slot, since
/// redis-rs refuses a cluster pipeline that spans slots.
pub fn hash_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slots_match_redis_cluster_keyslot() {
        // Values of `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        // An empty tag `{}` does not count: the whole key is hashed.
        assert_eq!(hash_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
    }

    #[test]
    fn keys_follow_the_documented_scheme_without_hash_tags() {
        assert_eq!(metric("cpu"), "metric:cpu");
        assert_eq!(ratelimit("10.1.2.3".parse().unwrap()), "ratelimit:10.1.2.3");
        assert_eq!(
            ratelimit("2001:db8::1".parse().unwrap()),
            "ratelimit:2001:db8::1"
        );
    }
}
