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
//! relay_bound(now, token, ok)            │        DataPlane(Change)}   (until None)
//! handle_timeout(now)  <── poll_timeout()┘
//! ```

pub mod auth;
pub mod bandwidth;
pub mod client;
pub mod dataplane;
pub mod error;
pub mod filter;
pub mod limit;
pub mod output;
pub mod server;
pub mod stateless;
pub mod types;
pub mod wire;

pub use dataplane::{DataPlane, PeerRoute, ToClient, ToPeer};
pub use error::TurnError;
pub use output::{BindToken, Change, Output, TcpRelay, Transmit};
pub use server::{Config, Server, StreamVerdict};
pub use types::{
    ChannelNumber, ClientAddr, ConnectionId, ExternalIps, FiveTuple, PeerAddr, RelayAddr, Transport,
};
