//! What the socket workers and the AF_XDP forwarder threads learn from the control plane,
//! over one channel each: the data-plane changes of the server and the life of the relay
//! sockets.

use std::net::UdpSocket;
use std::sync::Arc;
use xturn_control::{Change, RelayAddr};

pub enum Update {
    Data(Change),
    RelayOpened(RelayAddr, Arc<UdpSocket>),
    RelayClosed(RelayAddr),
    /// Interface (index) has a new MTU (forwarders: longer packets take the slow path).
    Mtu(u32, u32),
}
