//! Peer filtering: the open-proxy defence (see shared/STANDARDS.md, "Peer filtering").
//!
//! Order of the decision for a peer address:
//! 1. normalise IPv4 embedded in IPv6 (mapped, compatible, 6to4, NAT64) to IPv4;
//! 2. the server's own listening and control endpoints are always denied;
//! 3. the operator's allow list permits;
//! 4. the operator's deny list denies;
//! 5. the server's relayed addresses are permitted (hairpin between two clients); for a
//!    transport address on a relay IP, only a live relayed address of this server is,
//!    never another port of the host;
//! 6. the default deny list (loopback, private, link-local, CGNAT, multicast, reserved);
//! 7. otherwise permitted.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An inclusive address range: a CIDR block or coturn's `A-B` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRange {
    Net(IpNet),
    Span(IpAddr, IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address, CIDR block or A-B range of one family")]
pub struct RangeParseError(pub String);

impl FromStr for IpRange {
    type Err = RangeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RangeParseError(s.to_string());
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| err())?;
            let b: IpAddr = b.trim().parse().map_err(|_| err())?;
            if a.is_ipv4() != b.is_ipv4() || ip_to_u128(a) > ip_to_u128(b) {
                return Err(err());
            }
            return Ok(IpRange::Span(normalise(a), normalise(b)));
        }
        if let Ok(n) = s.parse::<IpNet>() {
            return Ok(IpRange::Net(n.trunc()));
        }
        let a: IpAddr = s.parse().map_err(|_| err())?;
        Ok(IpRange::Span(normalise(a), normalise(a)))
    }
}

fn ip_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            IpRange::Net(n) => n.contains(&ip),
            IpRange::Span(a, b) => {
                a.is_ipv4() == ip.is_ipv4()
                    && ip_to_u128(*a) <= ip_to_u128(ip)
                    && ip_to_u128(ip) <= ip_to_u128(*b)
            }
        }
    }
}

/// Map IPv6 forms that carry an IPv4 address to that IPv4 address: IPv4-mapped
/// (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, except :: and ::1), 6to4 (2002:AABB:CCDD::/16)
/// and NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48). These were real bypasses in
/// other servers (CVE-2020-26262, CVE-2026-27624).
pub fn normalise(ip: IpAddr) -> IpAddr {
    let v6 = match ip {
        IpAddr::V4(_) => return ip,
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return IpAddr::V4(tail);
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return IpAddr::V4(tail);
    }
    ip
}

/// The default deny list.
pub const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "ff00::/8",
];

/// Why a peer was refused (mapped to 403 by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    OwnEndpoint,
    OperatorDenied,
    DefaultDenied,
    /// A relay IP of this server, but not one of its live relayed transport addresses.
    NotARelayedAddress,
}

#[derive(Debug, Clone)]
pub struct PeerFilter {
    allowed: Vec<IpRange>,
    denied: Vec<IpRange>,
    default_denied: Vec<IpRange>,
    own_endpoints: Vec<SocketAddr>,
    relay_ips: Vec<IpAddr>,
}

impl PeerFilter {
    /// `default_deny` false turns off the built-in list (operators who know better).
    pub fn new(
        allowed: Vec<IpRange>,
        denied: Vec<IpRange>,
        default_deny: bool,
        own_endpoints: Vec<SocketAddr>,
        relay_ips: Vec<IpAddr>,
    ) -> Self {
        let default_denied = if default_deny {
            DEFAULT_DENIED
                .iter()
                .map(|s| s.parse().expect("built-in ranges parse"))
                .collect()
        } else {
            Vec::new()
        };
        PeerFilter {
            allowed,
            denied,
            default_denied,
            own_endpoints: own_endpoints
                .into_iter()
                .map(|e| SocketAddr::new(normalise(e.ip()), e.port()))
                .collect(),
            relay_ips: relay_ips.into_iter().map(normalise).collect(),
        }
    }

    /// Decision for a permission (IP only; RFC 8656 section 9: ports are ignored).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = normalise(ip);
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        if self.denied.iter().any(|r| r.contains(ip)) {
            return Err(Denied::OperatorDenied);
        }
        if self.relay_ips.contains(&ip) {
            return Ok(());
        }
        if self.default_denied.iter().any(|r| r.contains(ip)) {
            return Err(Denied::DefaultDenied);
        }
        Ok(())
    }

    /// Decision for a transport address data is sent to (ChannelBind, Send).
    /// `is_relayed` says whether `peer` is a live relayed address of this server.
    pub fn check_endpoint(&self, peer: SocketAddr, is_relayed: bool) -> Result<(), Denied> {
        let ip = normalise(peer.ip());
        let own = |e: &SocketAddr| {
            e.port() == peer.port()
                && (e.ip() == ip || (e.ip().is_unspecified() && e.ip().is_ipv4() == ip.is_ipv4()))
        };
        if self.own_endpoints.iter().any(own) {
            return Err(Denied::OwnEndpoint);
        }
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        if self.denied.iter().any(|r| r.contains(ip)) {
            return Err(Denied::OperatorDenied);
        }
        if self.relay_ips.contains(&ip) {
            // Another allocation of this server: fine. Any other port on our own address
            // would reach local services: not fine.
            return if is_relayed {
                Ok(())
            } else {
                Err(Denied::NotARelayedAddress)
            };
        }
        if self.default_denied.iter().any(|r| r.contains(ip)) {
            return Err(Denied::DefaultDenied);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn filter() -> PeerFilter {
        PeerFilter::new(
            vec![],
            vec![
                "203.0.113.0/25".parse().unwrap(),
                "198.51.100.10-198.51.100.20".parse().unwrap(),
            ],
            true,
            vec![
                "198.51.100.1:3478".parse().unwrap(),
                "0.0.0.0:9641".parse().unwrap(),
            ],
            vec![ip("198.51.100.1")],
        )
    }

    #[test]
    fn normalises_embedded_ipv4() {
        assert_eq!(normalise(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(normalise(ip("::127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(normalise(ip("2002:7f00:1::")), ip("127.0.0.1"));
        assert_eq!(normalise(ip("64:ff9b::a00:1")), ip("10.0.0.1"));
        assert_eq!(normalise(ip("64:ff9b:1::a00:1")), ip("10.0.0.1"));
        assert_eq!(normalise(ip("::1")), ip("::1"));
        assert_eq!(normalise(ip("::")), ip("::"));
        assert_eq!(normalise(ip("2001:db8::1")), ip("2001:db8::1"));
    }

    #[test]
    fn default_deny_list() {
        let f = filter();
        for bad in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2002:a9fe:a9fe::",
            "64:ff9b::7f00:1",
            "::10.0.0.1",
        ] {
            assert!(f.check_ip(ip(bad)).is_err(), "{bad} must be denied");
        }
        for good in ["192.0.2.2", "198.51.100.2", "2001:db8::2", "8.8.8.8"] {
            assert_eq!(f.check_ip(ip(good)), Ok(()), "{good} must be allowed");
        }
    }

    #[test]
    fn operator_lists_and_own_endpoints() {
        let f = filter();
        assert_eq!(f.check_ip(ip("203.0.113.5")), Err(Denied::OperatorDenied));
        assert_eq!(f.check_ip(ip("203.0.113.200")), Ok(()));
        assert_eq!(f.check_ip(ip("198.51.100.15")), Err(Denied::OperatorDenied));
        assert_eq!(f.check_ip(ip("198.51.100.21")), Ok(()));
        // The relay's own address: permissions fine, relay ports fine, others not.
        assert_eq!(f.check_ip(ip("198.51.100.1")), Ok(()));
        assert_eq!(
            f.check_endpoint("198.51.100.1:50000".parse().unwrap(), true),
            Ok(())
        );
        assert_eq!(
            f.check_endpoint("198.51.100.1:50000".parse().unwrap(), false),
            Err(Denied::NotARelayedAddress)
        );
        assert_eq!(
            f.check_endpoint("198.51.100.1:3478".parse().unwrap(), false),
            Err(Denied::OwnEndpoint)
        );
        assert_eq!(
            f.check_endpoint("198.51.100.1:22".parse().unwrap(), false),
            Err(Denied::NotARelayedAddress)
        );
        // A wildcard control endpoint covers every IPv4 address on that port.
        assert_eq!(
            f.check_endpoint("192.0.2.77:9641".parse().unwrap(), false),
            Err(Denied::OwnEndpoint)
        );
        assert_eq!(
            f.check_endpoint("[::ffff:198.51.100.1]:3478".parse().unwrap(), false),
            Err(Denied::OwnEndpoint)
        );
        // An allow list overrides the default list but never the own endpoints.
        let f = PeerFilter::new(
            vec!["127.0.0.1".parse().unwrap()],
            vec![],
            true,
            vec!["127.0.0.1:3478".parse().unwrap()],
            vec![],
        );
        assert_eq!(f.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(
            f.check_endpoint("127.0.0.1:40000".parse().unwrap(), false),
            Ok(())
        );
        assert_eq!(
            f.check_endpoint("127.0.0.1:3478".parse().unwrap(), false),
            Err(Denied::OwnEndpoint)
        );
    }

    #[test]
    fn range_parsing() {
        assert!("10.0.0.0/8".parse::<IpRange>().is_ok());
        assert!("1.2.3.4-1.2.3.9".parse::<IpRange>().is_ok());
        assert!("1.2.3.9-1.2.3.4".parse::<IpRange>().is_err());
        assert!("1.2.3.4-::1".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
        assert!("2001:db8::/32".parse::<IpRange>().is_ok());
    }
}
