//! Peer filtering: the open-proxy defence.
//!
//! A TURN server relays to whatever address an authenticated client names, so the peer
//! address decides whether xturn is a media relay or a way into the operator's network.
//! Order of the decision for a peer address (first match wins):
//! 1. normalise: IPv4 carried in IPv6 (mapped, translated, compatible, 6to4, NAT64 with the
//!    well-known prefix or an operator's network-specific prefix, RFC 6052 at every prefix
//!    length) is that IPv4 address;
//! 2. the server's own listening and control endpoints: denied;
//! 3. loopback, when the operator opted in with `allow_loopback` (tests, single-host labs);
//! 4. a relay IP of this server: its live relayed addresses are allowed (two clients of one
//!    server relay to each other), every other port of it is denied;
//! 5. any other address of the host (listening addresses, every interface address): denied,
//!    whatever the allow list says, so that allowing a subnet never opens the host itself;
//! 6. the operator's allow list: allowed;
//! 7. the operator's deny list: denied;
//! 8. the default deny list: the IANA IPv4 and IPv6 special-purpose address registries,
//!    every block that is not globally reachable, and any IPv6 address outside global
//!    unicast (2000::/3);
//! 9. otherwise allowed.
//!
//! Permissions (CreatePermission) carry no port: steps 2 and 4 then only look at the IP.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An inclusive address range: a CIDR block or coturn's `A-B` form. Ranges are normalised
/// like addresses: `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
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
            let a = normalise(a.trim().parse().map_err(|_| err())?);
            let b = normalise(b.trim().parse().map_err(|_| err())?);
            if a.is_ipv4() != b.is_ipv4() || ip_to_u128(a) > ip_to_u128(b) {
                return Err(err());
            }
            return Ok(IpRange::Span(a, b));
        }
        if let Ok(n) = s.parse::<IpNet>() {
            return Ok(IpRange::Net(normalise_net(n.trunc())));
        }
        let a = normalise(s.parse().map_err(|_| err())?);
        Ok(IpRange::Span(a, a))
    }
}

/// An IPv6 block whose every address normalises to IPv4 (a block inside ::ffff:0:0/96,
/// ::ffff:0:0:0/96, 64:ff9b::/96 or 2002::/16) as that IPv4 block; any other block as is.
fn normalise_net(n: IpNet) -> IpNet {
    let IpNet::V6(v6) = n else {
        return n;
    };
    let embedded = |bits_before: u8| -> Option<IpNet> {
        let len = v6.prefix_len().checked_sub(bits_before)?;
        let ip = match normalise(IpAddr::V6(v6.network())) {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => return None,
        };
        Ipv4Net::new(ip, len).ok().map(|n| IpNet::V4(n.trunc()))
    };
    let o = v6.network().octets();
    let s = v6.network().segments();
    let in_96 = |p: [u16; 6]| v6.prefix_len() >= 96 && s[..6] == p;
    let out = if in_96([0, 0, 0, 0, 0, 0xffff])
        || in_96([0, 0, 0, 0, 0xffff, 0])
        || in_96([0x64, 0xff9b, 0, 0, 0, 0])
    {
        embedded(96)
    } else if v6.prefix_len() >= 16 && s[0] == 0x2002 {
        // 2002:AABB:CCDD::/48 is 170.187.204.221/32; the IPv4 address sits in bits 16-47.
        let len = (v6.prefix_len() - 16).min(32);
        Ipv4Net::new(Ipv4Addr::new(o[2], o[3], o[4], o[5]), len)
            .ok()
            .map(|n| IpNet::V4(n.trunc()))
    } else {
        None
    };
    out.unwrap_or(n)
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

/// A NAT64 prefix (RFC 6052): where in an IPv6 address the IPv4 address sits depends on
/// the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nat64Prefix(Ipv6Net);

/// The NAT64 well-known prefix (RFC 6052 section 2.1), always decoded.
pub const NAT64_WELL_KNOWN: &str = "64:ff9b::/96";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a NAT64 prefix: an IPv6 block of length 32, 40, 48, 56, 64 or 96 (RFC 6052)")]
pub struct Nat64ParseError(pub String);

impl FromStr for Nat64Prefix {
    type Err = Nat64ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: Ipv6Net = s
            .trim()
            .parse()
            .map_err(|_| Nat64ParseError(s.to_string()))?;
        if ![32, 40, 48, 56, 64, 96].contains(&n.prefix_len()) {
            return Err(Nat64ParseError(s.to_string()));
        }
        Ok(Nat64Prefix(n.trunc()))
    }
}

impl Nat64Prefix {
    /// The IPv4 address `ip` carries under this prefix (RFC 6052 section 2.2: the 8 bits
    /// 64-71 are skipped), or `None` if `ip` is not under it.
    pub fn decode(&self, ip: Ipv6Addr) -> Option<Ipv4Addr> {
        if !self.0.contains(&ip) {
            return None;
        }
        let o = ip.octets();
        let v4 = match self.0.prefix_len() {
            32 => [o[4], o[5], o[6], o[7]],
            40 => [o[5], o[6], o[7], o[9]],
            48 => [o[6], o[7], o[9], o[10]],
            56 => [o[7], o[9], o[10], o[11]],
            64 => [o[9], o[10], o[11], o[12]],
            _ => [o[12], o[13], o[14], o[15]],
        };
        Some(Ipv4Addr::from(v4))
    }
}

/// Map IPv6 forms that carry an IPv4 address to that IPv4 address: IPv4-mapped
/// (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d, RFC 2765), IPv4-compatible
/// (::a.b.c.d, except :: and ::1), 6to4 (2002:AABB:CCDD::/16) and NAT64 with the
/// well-known prefix (64:ff9b::/96). These were real bypasses in other servers
/// (CVE-2020-26262, CVE-2026-27624). The local-use NAT64 block 64:ff9b:1::/48 holds
/// network-specific prefixes of several lengths: it is decoded only under a prefix the
/// operator names ([`PeerFilter::with_nat64_prefixes`]) and otherwise denied.
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
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return IpAddr::V4(tail);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return IpAddr::V4(tail);
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(tail);
    }
    ip
}

/// The default deny list, after normalisation: every block of the IANA IPv4 and IPv6
/// Special-Purpose Address Registries (RFC 6890 and updates) whose "Globally Reachable" is
/// False or N/A, plus multicast, with the block's registry name for logs.
pub const DEFAULT_DENIED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private-use"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private-use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private-use"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, limited broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"),
    (
        "2001::/23",
        "IETF protocol assignments (Teredo, benchmarking, ORCHID)",
    ),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

/// Blocks inside [`DEFAULT_DENIED`] that the registries mark globally reachable.
pub const GLOBALLY_REACHABLE: &[&str] = &[
    "192.0.0.9/32",    // Port Control Protocol anycast
    "192.0.0.10/32",   // TURN anycast
    "2001:1::1/128",   // Port Control Protocol anycast
    "2001:1::2/128",   // TURN anycast
    "2001:1::3/128",   // DNS-SD service registration protocol anycast
    "2001:3::/32",     // AMT
    "2001:4:112::/48", // AS112-v6
    "2001:20::/28",    // ORCHIDv2
    "2001:30::/28",    // drone remote ID
];

/// Why a peer was refused (mapped to 403 by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    OwnEndpoint,
    /// An address of the host that is not a relay address (a listening address, any
    /// interface's address).
    HostAddress,
    OperatorDenied,
    /// In the default deny list; the registry's name of the block.
    DefaultDenied(&'static str),
    /// A relay IP of this server, but not one of its live relayed transport addresses.
    NotARelayedAddress,
}

#[derive(Debug, Clone)]
pub struct PeerFilter {
    allowed: Vec<IpRange>,
    denied: Vec<IpRange>,
    default_denied: Vec<(IpRange, &'static str)>,
    reachable: Vec<IpRange>,
    own_endpoints: Vec<SocketAddr>,
    relay_ips: Vec<IpAddr>,
    host_ips: Vec<IpAddr>,
    allow_loopback: bool,
    nat64: Vec<Nat64Prefix>,
}

impl PeerFilter {
    /// `default_deny` false turns off the built-in list (operators who know better). The
    /// specific IPs of `own_endpoints` count as addresses of the host.
    pub fn new(
        allowed: Vec<IpRange>,
        denied: Vec<IpRange>,
        default_deny: bool,
        own_endpoints: Vec<SocketAddr>,
        relay_ips: Vec<IpAddr>,
    ) -> Self {
        let (default_denied, reachable) = if default_deny {
            (
                DEFAULT_DENIED
                    .iter()
                    .map(|(s, name)| (s.parse().expect("built-in ranges parse"), *name))
                    .collect(),
                GLOBALLY_REACHABLE
                    .iter()
                    .map(|s| s.parse().expect("built-in ranges parse"))
                    .collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let own_endpoints: Vec<SocketAddr> = own_endpoints
            .into_iter()
            .map(|e| SocketAddr::new(normalise(e.ip()), e.port()))
            .collect();
        let mut f = PeerFilter {
            allowed,
            denied,
            default_denied,
            reachable,
            own_endpoints,
            relay_ips: relay_ips.into_iter().map(normalise).collect(),
            host_ips: Vec::new(),
            allow_loopback: false,
            nat64: Vec::new(),
        };
        f.set_host_ips(Vec::new());
        f
    }

    /// Every address of the host (interface addresses): denied as peers unless they are a
    /// relay address. Replaces the previous list; the listening addresses stay in it.
    pub fn set_host_ips(&mut self, ips: Vec<IpAddr>) {
        let mut v: Vec<IpAddr> = ips
            .into_iter()
            .chain(self.own_endpoints.iter().map(|e| e.ip()))
            .map(normalise)
            .filter(|ip| !ip.is_unspecified() && !self.relay_ips.contains(ip))
            .collect();
        v.sort();
        v.dedup();
        self.host_ips = v;
    }

    /// The host's addresses the filter denies (the last [`PeerFilter::set_host_ips`] list
    /// with the listening addresses).
    pub fn host_ips(&self) -> &[IpAddr] {
        &self.host_ips
    }

    pub fn with_host_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.set_host_ips(ips);
        self
    }

    /// Allow loopback peers (127.0.0.0/8, ::1), including other ports of a loopback relay
    /// or listening address: coturn's `allow-loopback-peers`, for tests and labs on one
    /// host. The server's own listening endpoints stay denied.
    pub fn with_loopback_allowed(mut self, yes: bool) -> Self {
        self.allow_loopback = yes;
        self
    }

    /// Network-specific NAT64 prefixes in use where the server runs: peers under them are
    /// judged by the IPv4 address they carry.
    pub fn with_nat64_prefixes(mut self, prefixes: Vec<Nat64Prefix>) -> Self {
        self.nat64 = prefixes;
        self
    }

    /// The address the decision is about: embedded IPv4 forms and NAT64 decoded.
    pub fn normalise(&self, ip: IpAddr) -> IpAddr {
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = self.nat64.iter().find_map(|p| p.decode(v6)) {
                return IpAddr::V4(v4);
            }
        }
        normalise(ip)
    }

    /// Steps 3 and 5 to 9 of the order in the module documentation.
    fn check_common(&self, ip: IpAddr) -> Result<(), Denied> {
        if self.host_ips.contains(&ip) {
            return Err(Denied::HostAddress);
        }
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        if self.denied.iter().any(|r| r.contains(ip)) {
            return Err(Denied::OperatorDenied);
        }
        self.check_default(ip)
    }

    fn check_default(&self, ip: IpAddr) -> Result<(), Denied> {
        if self.default_denied.is_empty() || self.reachable.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        if let Some((_, name)) = self.default_denied.iter().find(|(r, _)| r.contains(ip)) {
            return Err(Denied::DefaultDenied(name));
        }
        match ip {
            IpAddr::V6(v6) if v6.segments()[0] & 0xe000 != 0x2000 => Err(Denied::DefaultDenied(
                "outside IPv6 global unicast (2000::/3)",
            )),
            _ => Ok(()),
        }
    }

    fn loopback_allowed(&self, ip: IpAddr) -> bool {
        self.allow_loopback && ip.is_loopback()
    }

    /// Decision for a permission (IP only; RFC 8656 section 9: ports are ignored).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = self.normalise(ip);
        if self.loopback_allowed(ip) || self.relay_ips.contains(&ip) {
            return Ok(());
        }
        self.check_common(ip)
    }

    /// Decision for a transport address data is sent to (ChannelBind, Send).
    /// `is_relayed` says whether `peer` is a live relayed address of this server.
    pub fn check_endpoint(&self, peer: SocketAddr, is_relayed: bool) -> Result<(), Denied> {
        let ip = self.normalise(peer.ip());
        let own = |e: &SocketAddr| {
            e.port() == peer.port()
                && (e.ip() == ip || (e.ip().is_unspecified() && e.ip().is_ipv4() == ip.is_ipv4()))
        };
        if self.own_endpoints.iter().any(own) {
            return Err(Denied::OwnEndpoint);
        }
        if self.loopback_allowed(ip) {
            return Ok(());
        }
        if self.relay_ips.contains(&ip) {
            // Another allocation of this server: fine. Any other port on our own address
            // would reach local services: not fine, whatever the allow list says.
            return if is_relayed {
                Ok(())
            } else {
                Err(Denied::NotARelayedAddress)
            };
        }
        self.check_common(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
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
            vec![sa("198.51.100.1:3478"), sa("0.0.0.0:9641")],
            vec![ip("198.51.100.1")],
        )
    }

    #[test]
    fn normalises_embedded_ipv4() {
        for (form, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0:127.0.0.1", "127.0.0.1"),
            ("::127.0.0.1", "127.0.0.1"),
            ("2002:7f00:1::", "127.0.0.1"),
            ("64:ff9b::a00:1", "10.0.0.1"),
        ] {
            assert_eq!(normalise(ip(form)), ip(v4), "{form}");
        }
        for same in [
            "::1",
            "::",
            "2001:db8::1",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378::",
        ] {
            assert_eq!(normalise(ip(same)), ip(same), "{same}");
        }
    }

    #[test]
    fn rfc6052_decoding_at_every_prefix_length() {
        // RFC 6052 section 2.4's table: 192.0.2.33 under 2001:db8::/32 .. /96.
        for (prefix, addr) in [
            ("2001:db8::/32", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
        ] {
            let p: Nat64Prefix = prefix.parse().unwrap();
            assert_eq!(
                p.decode(addr.parse().unwrap()),
                Some("192.0.2.33".parse().unwrap()),
                "{prefix}"
            );
            assert_eq!(p.decode("2001:db9::1".parse().unwrap()), None);
        }
        assert!("2001:db8::/33".parse::<Nat64Prefix>().is_err());
        assert!("10.0.0.0/8".parse::<Nat64Prefix>().is_err());
        // The local-use block is denied unless its prefix is declared; then the IPv4 address
        // it carries decides.
        let f = filter();
        assert!(f.check_ip(ip("64:ff9b:1:c000:2:2100::")).is_err());
        let f = filter().with_nat64_prefixes(vec!["64:ff9b:1::/48".parse().unwrap()]);
        // 64:ff9b:1::/48 carrying 8.8.8.8 (octets 6,7 and 9,10): allowed.
        assert_eq!(f.check_ip(ip("64:ff9b:1:808:8:800::")), Ok(()));
        // ... carrying 127.0.0.1: denied as loopback. A /96 reading would see 0.0.0.0.
        assert_eq!(
            f.check_ip(ip("64:ff9b:1:7f00:0:100::")),
            Err(Denied::DefaultDenied("loopback"))
        );
    }

    /// Every form a review found accepted, and the ones handled before: denied by default.
    #[test]
    fn default_deny_table() {
        let f = filter();
        for bad in [
            // IPv4 special-purpose registry
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.2",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.2",
            "203.0.113.200",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 special-purpose registry
            "::",
            "::1",
            "100::1",
            "100::1:0:0:1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:db8::2",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "64:ff9b:1::a00:1",
            // outside global unicast
            "4000::1",
            "1::1",
            // IPv4 in IPv6, carrying denied IPv4 addresses
            "::ffff:127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a00:1",
            "::10.0.0.1",
            "2002:a9fe:a9fe::",
            "2002:7f00:1::1",
            "64:ff9b::7f00:1",
            "64:ff9b::c0a8:101",
        ] {
            let r = f.check_ip(ip(bad));
            assert!(
                matches!(r, Err(Denied::DefaultDenied(_))),
                "{bad} must be denied by default: {r:?}"
            );
            let e = f.check_endpoint(SocketAddr::new(ip(bad), 7000), false);
            assert!(matches!(e, Err(Denied::DefaultDenied(_))), "{bad}: {e:?}");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "192.0.0.9",
            "192.0.0.10",
            "192.31.196.1",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "2001:1::2",
            "2001:4:112::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(f.check_ip(ip(good)), Ok(()), "{good} must be allowed");
        }
    }

    #[test]
    fn operator_ranges_are_normalised() {
        let r: IpRange = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(r, "10.0.0.0/8".parse().unwrap());
        let r: IpRange = "64:ff9b::c0a8:0/112".parse().unwrap();
        assert_eq!(r, "192.168.0.0/16".parse().unwrap());
        let r: IpRange = "2002:c0a8::/32".parse().unwrap();
        assert_eq!(r, "192.168.0.0/16".parse().unwrap());
        let r: IpRange = "::ffff:10.0.0.1-::ffff:10.0.0.9".parse().unwrap();
        assert!(r.contains(ip("10.0.0.5")));
        // A mixed-family range is refused only after normalisation.
        assert!("::ffff:10.0.0.1-10.0.0.9".parse::<IpRange>().is_ok());
        assert!("10.0.0.1-2001:db8::1".parse::<IpRange>().is_err());
        // An allow list written in mapped form opens the IPv4 addresses.
        let f = PeerFilter::new(
            vec!["::ffff:10.0.0.0/104".parse().unwrap()],
            vec![],
            true,
            vec![],
            vec![],
        );
        assert_eq!(f.check_ip(ip("10.1.2.3")), Ok(()));
    }

    #[test]
    fn operator_lists_and_own_endpoints() {
        let f = filter();
        assert_eq!(f.check_ip(ip("203.0.113.5")), Err(Denied::OperatorDenied));
        assert!(f.check_ip(ip("203.0.113.200")).is_err(), "default list");
        assert_eq!(f.check_ip(ip("198.51.100.15")), Err(Denied::OperatorDenied));
        // The relay's own address: permissions fine, relay ports fine, others not.
        assert_eq!(f.check_ip(ip("198.51.100.1")), Ok(()));
        assert_eq!(f.check_endpoint(sa("198.51.100.1:50000"), true), Ok(()));
        assert_eq!(
            f.check_endpoint(sa("198.51.100.1:50000"), false),
            Err(Denied::NotARelayedAddress)
        );
        assert_eq!(
            f.check_endpoint(sa("198.51.100.1:3478"), false),
            Err(Denied::OwnEndpoint)
        );
        assert_eq!(
            f.check_endpoint(sa("198.51.100.1:22"), false),
            Err(Denied::NotARelayedAddress)
        );
        // A wildcard control endpoint covers every IPv4 address on that port.
        assert_eq!(
            f.check_endpoint(sa("192.0.2.77:9641"), false),
            Err(Denied::OwnEndpoint)
        );
        assert_eq!(
            f.check_endpoint(sa("[::ffff:198.51.100.1]:3478"), false),
            Err(Denied::OwnEndpoint)
        );
    }

    #[test]
    fn the_host_comes_before_the_allow_list() {
        // Listening on 192.0.2.1, relaying from 198.51.100.1, the operator allows both
        // documentation subnets, and the host has another address, 198.51.100.77.
        let f = PeerFilter::new(
            vec![
                "198.51.100.0/24".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap(),
            ],
            vec![],
            true,
            vec![sa("192.0.2.1:3478")],
            vec![ip("198.51.100.1")],
        )
        .with_host_ips(vec![ip("198.51.100.77"), ip("127.0.0.1")]);
        assert_eq!(f.check_endpoint(sa("198.51.100.2:7000"), false), Ok(()));
        assert_eq!(f.check_endpoint(sa("198.51.100.1:40000"), true), Ok(()));
        for (p, why) in [
            ("198.51.100.1:22", Denied::NotARelayedAddress),
            ("192.0.2.1:22", Denied::HostAddress),
            ("192.0.2.1:3478", Denied::OwnEndpoint),
            ("198.51.100.77:6379", Denied::HostAddress),
            ("[::ffff:198.51.100.77]:6379", Denied::HostAddress),
        ] {
            assert_eq!(f.check_endpoint(sa(p), false), Err(why), "{p}");
        }
        assert_eq!(f.check_ip(ip("192.0.2.1")), Err(Denied::HostAddress));
        assert_eq!(f.check_ip(ip("198.51.100.77")), Err(Denied::HostAddress));
        assert_eq!(f.check_ip(ip("198.51.100.1")), Ok(()));
    }

    #[test]
    fn loopback_opt_in() {
        let f = PeerFilter::new(
            vec![],
            vec![],
            true,
            vec![sa("127.0.0.1:3478")],
            vec![ip("127.0.0.1")],
        )
        .with_host_ips(vec![ip("127.0.0.1"), ip("::1")]);
        assert!(f.check_endpoint(sa("127.0.0.1:40000"), false).is_err());
        let f = f.with_loopback_allowed(true);
        assert_eq!(f.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(f.check_endpoint(sa("127.0.0.1:40000"), false), Ok(()));
        assert_eq!(f.check_endpoint(sa("[::1]:40000"), false), Ok(()));
        assert_eq!(
            f.check_endpoint(sa("127.0.0.1:3478"), false),
            Err(Denied::OwnEndpoint)
        );
        assert!(f.check_ip(ip("10.0.0.1")).is_err());
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
