//! Newtypes for the roles addresses play, so a peer address cannot be passed where a
//! client address is expected.

use std::net::SocketAddr;

/// A TURN client's transport address as seen by the server (source of its datagrams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAddr(pub SocketAddr);

/// A peer's transport address (the far side of a relayed address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr(pub SocketAddr);

/// A relayed transport address allocated by this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr(pub SocketAddr);

/// The transport between a client and the server (RFC 8656 section 3.1): UDP, or a TCP
/// connection (plain or TLS). Relaying to peers is UDP either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// The 5-tuple of an allocation: client address, the server address it talks to, and
/// the transport (a TCP connection and a UDP flow between the same addresses are two
/// 5-tuples: a spoofed UDP datagram never reaches a TCP client's allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub client: ClientAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

impl FiveTuple {
    pub fn udp(client: ClientAddr, server: SocketAddr) -> FiveTuple {
        FiveTuple {
            client,
            server,
            transport: Transport::Udp,
        }
    }

    pub fn tcp(client: ClientAddr, server: SocketAddr) -> FiveTuple {
        FiveTuple {
            client,
            server,
            transport: Transport::Tcp,
        }
    }
}

/// A TCP connection to or from a peer on a TCP allocation (RFC 6062 CONNECTION-ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

/// A channel number in the valid range 0x4000-0x4FFF (RFC 8656 section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    pub const MIN: u16 = 0x4000;
    pub const MAX: u16 = 0x4FFF;

    /// Highest channel of RFC 5766's older range 0x4000-0x7FFE, which coturn and its
    /// `turnutils_uclient` still use.
    pub const MAX_RFC5766: u16 = 0x7FFE;

    pub fn new(n: u16) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&n)
            .then_some(ChannelNumber(n))
    }

    /// Validate against RFC 8656's range, or RFC 5766's when `rfc5766` is set.
    pub fn new_in(n: u16, rfc5766: bool) -> Option<Self> {
        let max = if rfc5766 {
            Self::MAX_RFC5766
        } else {
            Self::MAX
        };
        (Self::MIN..=max).contains(&n).then_some(ChannelNumber(n))
    }

    /// For table look-ups only: a number from the wire that is not validated; it matches
    /// nothing unless a validated binding with that number exists.
    pub(crate) fn lookup_key(n: u16) -> Self {
        ChannelNumber(n)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn channel_range() {
        assert!(ChannelNumber::new(0x3FFF).is_none());
        assert_eq!(ChannelNumber::new(0x4000).unwrap().get(), 0x4000);
        assert_eq!(ChannelNumber::new(0x4FFF).unwrap().get(), 0x4FFF);
        assert!(ChannelNumber::new(0x5000).is_none());
    }
}

/// A 1:1 NAT in front of the server (`--external-ip PUBLIC/PRIVATE`, coturn's option): for
/// each family at most one pair of the public address clients and peers see and the
/// private one the server's sockets have. Relayed addresses are advertised with the public
/// address (XOR-RELAYED-ADDRESS, and a relayed address as a Data indication's peer); a peer
/// address a client names with the public address is the private one (so two clients of
/// one server relay to each other inside it, never through the NAT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalIps {
    /// (public, private)
    pairs: Vec<(std::net::IpAddr, std::net::IpAddr)>,
}

impl ExternalIps {
    /// `pairs` of (public, private) addresses, one per family at most (checked by the
    /// configuration).
    pub fn new(pairs: Vec<(std::net::IpAddr, std::net::IpAddr)>) -> Self {
        ExternalIps { pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn pairs(&self) -> &[(std::net::IpAddr, std::net::IpAddr)] {
        &self.pairs
    }

    /// `a` as clients and peers see it: its public address if `a` has a private one.
    pub fn public(&self, a: SocketAddr) -> SocketAddr {
        match self.pairs.iter().find(|(_, private)| *private == a.ip()) {
            Some((public, _)) => SocketAddr::new(*public, a.port()),
            None => a,
        }
    }

    /// `a` as the server's sockets know it: its private address if `a` has a public one.
    pub fn private(&self, a: SocketAddr) -> SocketAddr {
        match self.pairs.iter().find(|(public, _)| *public == a.ip()) {
            Some((_, private)) => SocketAddr::new(*private, a.port()),
            None => a,
        }
    }
}

#[cfg(test)]
mod external_tests {
    use super::*;

    #[test]
    fn external_ips_map_each_way_and_leave_the_rest() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let x = ExternalIps::new(vec![
            (ip("203.0.113.10"), ip("198.51.100.1")),
            (ip("2001:db8:113::10"), ip("2001:db8:51::1")),
        ]);
        assert_eq!(x.public(sa("198.51.100.1:50000")), sa("203.0.113.10:50000"));
        assert_eq!(
            x.private(sa("203.0.113.10:50000")),
            sa("198.51.100.1:50000")
        );
        assert_eq!(
            x.public(sa("[2001:db8:51::1]:5")),
            sa("[2001:db8:113::10]:5")
        );
        for other in ["198.51.100.2:50000", "203.0.113.11:1", "[2001:db8::1]:9"] {
            assert_eq!(x.public(sa(other)), sa(other));
            assert_eq!(x.private(sa(other)), sa(other));
        }
        assert!(ExternalIps::default().is_empty());
    }
}
