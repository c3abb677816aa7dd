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

/// The 5-tuple of a UDP allocation: client address and the server address it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub client: ClientAddr,
    pub server: SocketAddr,
}

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
