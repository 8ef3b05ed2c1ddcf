//! Rate limiting over `RATELIMIT.CHECK`: who the client is, the one module call, and the IETF
//! draft headers (`RateLimit-Policy`, `RateLimit`, `Retry-After`).
//!
//! The client is the TCP peer. `X-Forwarded-For` is read only when the peer is a trusted proxy
//! (`TRUSTED_PROXIES`), and then walked from the right, skipping trusted proxies: the first
//! address that is not one is the client. Anything a client can write (the left part of the
//! header) is never believed past an untrusted hop.
//!
//! The rate-limited identity is that address for IPv4, and its /64 network for IPv6: one
//! ordinary IPv6 subscriber holds a whole /64 (2^64 addresses), so limiting per /128 would give
//! one person 2^64 budgets. IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is the IPv4 client.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponseBuilder};

use crate::error::ApiError;
use crate::startup::AppState;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The configured policy, with its header value built once.
#[derive(Debug, Clone)]
pub struct Policy {
    pub limit: u64,
    pub window_s: u64,
    header: HeaderValue,
}

impl Policy {
    pub fn new(limit: u64, window_s: u64) -> Policy {
        let header = HeaderValue::from_str(&format!("\"default\";q={limit};w={window_s}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""));
        Policy {
            limit,
            window_s,
            header,
        }
    }

    pub fn window_ms(&self) -> u64 {
        self.window_s * 1000
    }
}

pub use crate::store::Decision;

/// Whole seconds, rounded up.
fn ceil_s(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

fn write_common(builder: &mut HttpResponseBuilder, policy: &Policy, d: &Decision) {
    builder.insert_header((RATELIMIT_POLICY, policy.header.clone()));
    let value = format!(
        "\"default\";r={};t={}",
        d.remaining.max(0),
        ceil_s(d.reset_after_ms)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        builder.insert_header((RATELIMIT, v));
    }
}

/// An allowed request: its response carries the rate-limit headers.
#[derive(Debug)]
pub struct Granted {
    policy: Policy,
    decision: Decision,
}

impl Granted {
    pub fn write_headers(&self, builder: &mut HttpResponseBuilder) {
        write_common(builder, &self.policy, &self.decision);
    }
}

/// A denied request (429).
#[derive(Debug)]
pub struct Denied {
    policy: Policy,
    decision: Decision,
}

impl Denied {
    /// `Retry-After` in whole seconds, at least 1. A request that can never be allowed (its
    /// cost exceeds the limit, retry_after_ms = -1) is told to wait one window.
    pub fn retry_after_s(&self) -> i64 {
        if self.decision.retry_after_ms < 0 {
            return self.policy.window_s as i64;
        }
        ceil_s(self.decision.retry_after_ms).max(1)
    }

    pub fn write_headers(&self, builder: &mut HttpResponseBuilder) {
        write_common(builder, &self.policy, &self.decision);
        builder.insert_header((RETRY_AFTER, HeaderValue::from(self.retry_after_s())));
    }
}

/// One `RATELIMIT.CHECK` for the client of `req` with `cost`: `Ok` to go on, or the 429.
/// Redis being unreachable is a 503 (the limit fails closed).
pub async fn enforce(state: &AppState, req: &HttpRequest, cost: u64) -> Result<Granted, ApiError> {
    let client = client_identity(client_ip(req, &state.config.trusted_proxies));
    let policy = &state.policy;
    let decision = state
        .store
        .check_rate(client, policy.limit, policy.window_ms(), cost)
        .await?;
    state.telemetry.count_rate_decision(decision.allowed);
    if decision.allowed {
        Ok(Granted {
            policy: policy.clone(),
            decision,
        })
    } else {
        Err(ApiError::RateLimited(Denied {
            policy: policy.clone(),
            decision,
        }))
    }
}

/// Length of the IPv6 prefix that identifies one client.
pub const IPV6_CLIENT_PREFIX: u32 = 64;

/// Who is rate limited for the client address `ip`: an IPv4 address as is, an IPv6 address as
/// its /64 network (the interface bits zeroed), so every address of one /64 shares one budget.
pub fn client_identity(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// The client address of `req` (see the module doc).
pub fn client_ip(req: &HttpRequest, trusted: &TrustedProxies) -> IpAddr {
    let Some(peer) = req.peer_addr().map(|a| canonical(a.ip())) else {
        // No peer (a test request without a socket): everyone shares one bucket.
        return IpAddr::from([0, 0, 0, 0]);
    };
    if !trusted.contains(peer) {
        return peer;
    }
    let values: Vec<&str> = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .collect();
    walk_forwarded_for(peer, &values, trusted)
}

/// Walks the `X-Forwarded-For` values (in header order) from the right, starting from a
/// trusted `peer`. An entry that is not an address stops the walk: the hop that added it is
/// the client.
pub fn walk_forwarded_for(peer: IpAddr, values: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        match parse_forwarded_entry(entry) {
            Some(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    return ip;
                }
            }
            None => return client,
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, `[2001:db8::1]`.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let s = entry.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(|ip| canonical(IpAddr::V6(ip)))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4, so one
/// client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `TRUSTED_PROXIES`: a list of CIDR blocks (a bare address is a /32 or /128).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl TrustedProxies {
    /// A comma- or space-separated list of CIDR blocks.
    pub fn parse(s: &str) -> Result<TrustedProxies, String> {
        s.split([',', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7 fd00::/8,0.0.0.0/0").unwrap();
        assert!(t.contains(ip("10.255.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(t.contains(ip("fd12::1")));
        assert!(!t.contains(ip("fe80::1")));
        // /0 trusts every IPv4 address, and IPv4-mapped IPv6 counts as IPv4.
        assert!(t.contains(ip("::ffff:8.8.8.8")));
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert!(!t.contains(ip("11.0.0.1")));
    }

    #[test]
    fn bad_cidr_blocks_are_refused() {
        for s in ["10.0.0.0/33", "::/129", "proxy", "10.0.0.0/x", "1.2.3/8"] {
            assert!(TrustedProxies::parse(s).is_err(), "{s}");
        }
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_skipping_trusted_proxies() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let peer = ip("10.0.0.1");
        // The client wrote "6.6.6.6" itself; the proxy appended the real 1.2.3.4.
        assert_eq!(
            walk_forwarded_for(peer, &["6.6.6.6, 1.2.3.4"], &t),
            ip("1.2.3.4")
        );
        // Inner proxies are skipped.
        assert_eq!(
            walk_forwarded_for(peer, &["1.2.3.4, 10.0.0.9", "10.0.0.8"], &t),
            ip("1.2.3.4")
        );
        // Only trusted hops: the leftmost one is the best we know.
        assert_eq!(walk_forwarded_for(peer, &["10.0.0.5"], &t), ip("10.0.0.5"));
        // No header: the proxy itself.
        assert_eq!(walk_forwarded_for(peer, &[], &t), peer);
        // Garbage stops the walk at the hop that added it.
        assert_eq!(
            walk_forwarded_for(peer, &["1.1.1.1, nonsense, 10.0.0.7"], &t),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        assert_eq!(parse_forwarded_entry(" 1.2.3.4:80"), Some(ip("1.2.3.4")));
        assert_eq!(
            parse_forwarded_entry("[2001:db8::1]:443"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_forwarded_entry("[2001:db8::1]"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_forwarded_entry("\"::ffff:1.2.3.4\""),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(parse_forwarded_entry("unknown"), None);
    }

    #[test]
    fn an_ipv6_client_is_its_64_network_and_an_ipv4_client_its_address() {
        for (addr, identity) in [
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
            ("::1", "::"),
            ("203.0.113.7", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
        ] {
            assert_eq!(client_identity(ip(addr)), ip(identity), "{addr}");
        }
        // Neighbouring IPv4 addresses stay apart.
        assert_ne!(
            client_identity(ip("203.0.113.7")),
            client_identity(ip("203.0.113.8"))
        );
    }

    #[test]
    fn trusted_proxies_are_matched_on_full_ipv6_addresses_not_on_the_64() {
        // A proxy at 2001:db8::1 is trusted; its /64 neighbour is a client like any other.
        let t = TrustedProxies::parse("2001:db8::1").unwrap();
        let peer = ip("2001:db8::1");
        assert_eq!(
            walk_forwarded_for(peer, &["2001:db8::2"], &t),
            ip("2001:db8::2")
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let denied = |retry_after_ms| Denied {
            policy: Policy::new(5, 60),
            decision: Decision {
                allowed: false,
                limit: 5,
                remaining: 0,
                retry_after_ms,
                reset_after_ms: 60_000,
            },
        };
        assert_eq!(denied(1).retry_after_s(), 1);
        assert_eq!(denied(0).retry_after_s(), 1);
        assert_eq!(denied(1000).retry_after_s(), 1);
        assert_eq!(denied(1001).retry_after_s(), 2);
        assert_eq!(denied(-1).retry_after_s(), 60);
    }
}
