//! Who an anonymous client is, for rate limiting (the policies and the headers are in
//! `crate::policies`; the route layer, `routes::limit`, sends the module call and writes them).
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

use crate::config::canonical;
pub use crate::config::TrustedProxies;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
}
