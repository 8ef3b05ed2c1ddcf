//! The key scheme, in one place. Every key is one resource of its own so Redis Cluster spreads
//! them over all shards; the API adds no hash tags (`{...}`).
//!
//! | key | type | written by |
//! |---|---|---|
//! | `metric:<type>` | the module's metric series (`tally-met`) | `POST /api/metrics` (`METRIC.ADD`) |
//! | `ratelimit:<client-ip>` | the module's rate-limit log | `RATELIMIT.CHECK` on rate-limited routes |
//! | `tally:health` | never written | `/health` reads it (`METRIC.SUMMARY`) to prove the module answers |

use std::net::IpAddr;

/// Prefix of metric series keys.
pub const METRIC_PREFIX: &str = "metric:";
/// Prefix of rate-limit keys.
pub const RATELIMIT_PREFIX: &str = "ratelimit:";
/// Read (never written) by the health check.
pub const HEALTH_PROBE: &str = "tally:health";

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

#[cfg(test)]
mod tests {
    use super::*;

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
