//! `TRUSTED_PROXIES`: the peers whose `X-Forwarded-For` is believed, as CIDR blocks.

use std::net::IpAddr;

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4, so one
/// client has one key.
pub fn canonical(ip: IpAddr) -> IpAddr {
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
}
