//! What the server asks of its driver, split by consumer: datagrams for the sockets
//! ([`Transmit`]), relay-address binds for the driver ([`Output::BindRelay`]) and table
//! changes for the data planes ([`Change`]: socket tables, eBPF maps, AF_XDP forwarders).
//! A data plane takes a [`Change`] only, so it never filters out what is not its own.

use crate::types::{ChannelNumber, ConnectionId, FiveTuple, PeerAddr, RelayAddr, Transport};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A message to send from `source` (a listening address or a relayed address): a UDP
/// datagram, or with [`Transport::Tcp`] a message down the client's connection from
/// `source` to `destination` (to peers it is always UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
    pub transport: Transport,
}

/// Identifies a pending relay-address bind (see [`Output::BindRelay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindToken(pub u64);

/// Everything the server asks its driver to do, drained with `Server::poll_output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    /// Bind a UDP socket (or otherwise reserve) `relay`, then call
    /// `Server::relay_bound` with the outcome. `dont_fragment`: set DF on relayed
    /// datagrams (the client sent DONT-FRAGMENT). With [`Transport::Tcp`] (an RFC 6062
    /// TCP allocation) it is a TCP listening socket instead, which also gives outgoing
    /// connections their source ([`TcpRelay::Connect`]).
    BindRelay {
        token: BindToken,
        relay: RelayAddr,
        dont_fragment: bool,
        transport: Transport,
    },
    /// RFC 6062 TCP allocations: connections to and from peers.
    Tcp(TcpRelay),
    /// A change to the data-plane tables, for every fast path the driver runs.
    DataPlane(Change),
}

/// What the driver does with the peer connections of TCP allocations (RFC 6062). The
/// driver owns the sockets; the server owns the state and the deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpRelay {
    /// Open a TCP connection from `relay` (the allocation's listening address) to `peer`,
    /// then call `Server::peer_connected` with the outcome (a failure after a bounded
    /// time: the server also answers 447 at its own deadline).
    Connect {
        id: ConnectionId,
        relay: RelayAddr,
        peer: SocketAddr,
    },
    /// Close the peer connection `id` and the client's data connection joined to it, if
    /// any (no `Server::tcp_connection_closed` is needed for it).
    Close { id: ConnectionId },
    /// The TCP allocation at `relay` is gone: close its listening socket (its
    /// connections were closed by the `Close`s just before).
    CloseListener { relay: RelayAddr },
}

/// A change to the data-plane tables. Installs carry absolute expiry times so a fast path
/// can enforce expiry without waiting for the matching `Remove*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new allocation, or a refreshed one (same relay, new expiry).
    InstallAllocation {
        five_tuple: FiveTuple,
        relay: RelayAddr,
        expires: Instant,
        /// The allocation's user, as a slot of the shared bandwidth limits
        /// ([`crate::bandwidth::Limits`]): the same while the user has any allocation.
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

impl Change {
    /// The relayed address the change is about.
    pub fn relay(&self) -> RelayAddr {
        match self {
            Change::InstallAllocation { relay, .. }
            | Change::RemoveAllocation { relay, .. }
            | Change::InstallPermission { relay, .. }
            | Change::RemovePermission { relay, .. }
            | Change::InstallChannel { relay, .. }
            | Change::RemoveChannel { relay, .. } => *relay,
        }
    }
}
