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

    pub fn new(n: u16) -> Option<Self> {
        (Self::MIN..=Self::MAX).contains(&n).then_some(ChannelNumber(n))
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
