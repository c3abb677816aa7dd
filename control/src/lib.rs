//! # xturn-control: the sans-IO heart of xturn
//!
//! This crate owns the STUN/TURN protocol: wire formats ([`wire`]), long-term
//! authentication ([`auth`]), the open-proxy defence ([`filter`]), the TURN server state
//! machine ([`Server`]) and the data-plane tables every forwarder keeps ([`DataPlane`]).
//!
//! Invariant: no sockets, no clocks, no OS randomness. The caller passes `now` and bytes
//! in, and drains [`Output`] values: datagrams to send ([`Transmit`]) and data-plane
//! changes (install/remove allocation, permission, channel) that it applies to whatever
//! fast path it drives (socket tables, eBPF maps, AF_XDP forwarder tables).
//!
//! ```text
//! handle_input(now, from, local, bytes) ─┐
//! handle_peer_input(now, relay, peer, b) ├─> poll_output() -> Output::{Transmit, BindRelay,
//! relay_bound(now, token, ok)            │        Install*/Remove*}   (until None)
//! handle_timeout(now)  <── poll_timeout()┘
//! ```

pub mod auth;
pub mod bandwidth;
pub mod client;
pub mod dataplane;
pub mod error;
pub mod filter;
pub mod limit;
pub mod server;
pub mod stateless;
pub mod types;
pub mod wire;

pub use dataplane::{DataPlane, PeerRoute, ToClient, ToPeer};
pub use error::TurnError;
pub use server::{BindToken, Config, Server};
pub use types::{ChannelNumber, ClientAddr, FiveTuple, PeerAddr, RelayAddr};

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A datagram to send from `source` (a listening address or a relayed address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Everything the server asks its driver to do. Data-plane variants carry absolute expiry
/// times so a fast path can enforce expiry without waiting for the `Remove*` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    /// Bind a UDP socket (or otherwise reserve) `relay`, then call
    /// [`Server::relay_bound`] with the outcome. `dont_fragment`: set DF on relayed
    /// datagrams (the client sent DONT-FRAGMENT).
    BindRelay {
        token: BindToken,
        relay: RelayAddr,
        dont_fragment: bool,
    },
    /// A new allocation, or a refreshed one (same relay, new expiry).
    InstallAllocation {
        five_tuple: FiveTuple,
        relay: RelayAddr,
        expires: Instant,
        /// The allocation's user, as a slot of the shared bandwidth limits
        /// ([`bandwidth::Limits`]): the same while the user has any allocation.
        user: u32,
    },
    /// The allocation is gone; its channels and permissions were removed just before.
    RemoveAllocation {
        five_tuple: FiveTuple,
        relay: RelayAddr,
    },
    InstallPermission {
        relay: RelayAddr,
        peer: IpAddr,
        expires: Instant,
    },
    RemovePermission {
        relay: RelayAddr,
        peer: IpAddr,
    },
    InstallChannel {
        five_tuple: FiveTuple,
        relay: RelayAddr,
        channel: ChannelNumber,
        peer: PeerAddr,
        expires: Instant,
    },
    RemoveChannel {
        five_tuple: FiveTuple,
        relay: RelayAddr,
        channel: ChannelNumber,
        peer: PeerAddr,
    },
}
