//! The data-plane tables: what a forwarder needs to relay TURN data without the control
//! plane, built only from the server's [`Output`] values.
//!
//! The [`crate::Server`] keeps one of these for the data it sees itself; every I/O driver
//! (socket workers, the AF_XDP forwarder, the XDP maps) keeps its own copy fed with the
//! same outputs. Invariants: data never refreshes anything (RFC 8656 sections 9 and 12);
//! a permission is checked on every packet in both directions, also while a channel is
//! bound, using the expiry time carried by the output, so expiry is exact even before
//! the `Remove*` output arrives.

use crate::types::{ChannelNumber, ClientAddr, FiveTuple, PeerAddr, RelayAddr};
use crate::wire::{attr, channel_data, ChannelData, Class, MessageBuilder, Method, TransactionId};
use crate::Output;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The data-plane tables are looked up on every relayed packet (three look-ups per
/// ChannelData). foldhash with a per-process random seed (`fast::RandomState`) hashes these
/// small keys several times faster than std's SipHash (measured in the README) while keys
/// chosen by a network peer still cannot be aimed at one bucket without knowing the seed.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone)]
struct AllocEntry {
    five_tuple: FiveTuple,
    expires: Instant,
    permissions: Map<IpAddr, Instant>,
    channel_by_peer: Map<SocketAddr, (ChannelNumber, Instant)>,
    counters: Counters,
}

impl AllocEntry {
    /// The allocation is live and holds a live permission for `peer` (RFC 8656 sections
    /// 9 and 12: checked on every packet, each way, channel or not).
    fn permits(&self, peer: IpAddr, now: Instant) -> bool {
        now < self.expires && self.permissions.get(&peer).is_some_and(|&exp| now < exp)
    }
}

/// Per-allocation traffic counters (packets and payload bytes, each direction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// A ChannelData datagram from a client resolved to where its payload goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToPeer {
    pub relay: RelayAddr,
    pub peer: PeerAddr,
    /// Byte range of the payload inside the received datagram.
    pub payload: core::ops::Range<usize>,
}

/// Where a peer datagram goes, before it is framed: the AF_XDP forwarder frames it in
/// place (ChannelData) or hands it to the slow path (Data indication).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRoute {
    /// The server address the client talks to (source of the datagram).
    pub server: SocketAddr,
    pub client: ClientAddr,
    /// The live channel bound to the peer, if any.
    pub channel: Option<ChannelNumber>,
}

/// A peer datagram resolved to the client it goes to; the framed message is in the
/// caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToClient {
    /// The server address the client talks to (source of the datagram).
    pub server: SocketAddr,
    pub client: ClientAddr,
}

#[derive(Debug, Default, Clone)]
pub struct DataPlane {
    allocs: Map<RelayAddr, AllocEntry>,
    channels: Map<(FiveTuple, ChannelNumber), (RelayAddr, PeerAddr, Instant)>,
}

impl DataPlane {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    pub fn counters(&self, relay: RelayAddr) -> Option<Counters> {
        self.allocs.get(&relay).map(|a| a.counters)
    }

    /// Every allocation in this table with its five-tuple and what this table counted.
    pub fn allocations(&self) -> impl Iterator<Item = (RelayAddr, FiveTuple, Counters)> + '_ {
        self.allocs
            .iter()
            .map(|(r, a)| (*r, a.five_tuple, a.counters))
    }

    /// Apply one control-plane output; outputs that are not data-plane changes are ignored.
    pub fn apply(&mut self, out: &Output) {
        match out {
            Output::InstallAllocation {
                five_tuple,
                relay,
                expires,
            } => {
                let e = self.allocs.entry(*relay).or_insert_with(|| AllocEntry {
                    five_tuple: *five_tuple,
                    expires: *expires,
                    permissions: Map::default(),
                    channel_by_peer: Map::default(),
                    counters: Counters::default(),
                });
                e.five_tuple = *five_tuple;
                e.expires = *expires;
            }
            Output::RemoveAllocation { relay, .. } => {
                if let Some(a) = self.allocs.remove(relay) {
                    for (c, _) in a.channel_by_peer.values() {
                        self.channels.remove(&(a.five_tuple, *c));
                    }
                }
            }
            Output::InstallPermission {
                relay,
                peer,
                expires,
            } => {
                if let Some(a) = self.allocs.get_mut(relay) {
                    a.permissions.insert(*peer, *expires);
                }
            }
            Output::RemovePermission { relay, peer } => {
                if let Some(a) = self.allocs.get_mut(relay) {
                    a.permissions.remove(peer);
                }
            }
            Output::InstallChannel {
                five_tuple,
                relay,
                channel,
                peer,
                expires,
            } => {
                if let Some(a) = self.allocs.get_mut(relay) {
                    a.channel_by_peer.insert(peer.0, (*channel, *expires));
                    self.channels
                        .insert((*five_tuple, *channel), (*relay, *peer, *expires));
                }
            }
            Output::RemoveChannel {
                five_tuple,
                relay,
                channel,
                peer,
            } => {
                if let Some(a) = self.allocs.get_mut(relay) {
                    a.channel_by_peer.remove(&peer.0);
                }
                self.channels.remove(&(*five_tuple, *channel));
            }
            Output::Transmit(_) | Output::BindRelay { .. } => {}
        }
    }

    /// ChannelData from a client. `None` means discard silently (RFC 8656 section 12.4:
    /// malformed, channel out of range or unbound, no live permission).
    pub fn client_to_peer(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        datagram: &[u8],
    ) -> Option<ToPeer> {
        let cd = ChannelData::new_checked(datagram).ok()?;
        // Only validated bindings are in the table: an unbound or out-of-range number
        // (0x5000-0xFFFF under RFC 8656) finds nothing and is discarded.
        let channel = ChannelNumber::lookup_key(cd.channel());
        let &(relay, peer, ch_expires) = self.channels.get(&(five_tuple, channel))?;
        if now >= ch_expires {
            return None;
        }
        let a = self.allocs.get_mut(&relay)?;
        if !a.permits(peer.0.ip(), now) {
            return None;
        }
        let len = cd.length() as usize;
        a.counters.to_peer_packets += 1;
        a.counters.to_peer_bytes += len as u64;
        Some(ToPeer {
            relay,
            peer,
            payload: channel_data::HEADER_LEN..channel_data::HEADER_LEN + len,
        })
    }

    /// Count a Send indication relayed by the control plane.
    pub fn count_to_peer(&mut self, relay: RelayAddr, bytes: usize) {
        if let Some(a) = self.allocs.get_mut(&relay) {
            a.counters.to_peer_packets += 1;
            a.counters.to_peer_bytes += bytes as u64;
        }
    }

    /// A datagram from `peer` to `relay`. On success `out` holds the ChannelData message
    /// (when a channel is bound) or Data indication to send to the client. `tid` is the
    /// transaction id for a Data indication (random, from the caller).
    pub fn peer_to_client(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: PeerAddr,
        payload: &[u8],
        tid: TransactionId,
        out: &mut Vec<u8>,
    ) -> Option<ToClient> {
        let route = self.route_peer(now, relay, peer, payload.len())?;
        out.clear();
        match route.channel {
            Some(ch) => {
                out.resize(channel_data::HEADER_LEN + payload.len(), 0);
                channel_data::write_header(out, ch.get(), payload.len() as u16);
                out[channel_data::HEADER_LEN..].copy_from_slice(payload);
            }
            None => {
                let mut b = MessageBuilder::new(Method::Data, Class::Indication, tid);
                b.xor_addr(attr::XOR_PEER_ADDRESS, peer.0);
                b.attr(attr::DATA, payload);
                out.extend_from_slice(b.as_bytes());
            }
        }
        Some(ToClient {
            server: route.server,
            client: route.client,
        })
    }

    /// The checks and counting of [`DataPlane::peer_to_client`] without the framing: where
    /// `len` bytes from `peer` to `relay` go, or `None` to discard them (no live
    /// allocation or permission, or too long to frame).
    pub fn route_peer(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: PeerAddr,
        len: usize,
    ) -> Option<PeerRoute> {
        if len > u16::MAX as usize - 64 {
            return None;
        }
        let a = self.allocs.get_mut(&relay)?;
        if !a.permits(peer.0.ip(), now) {
            return None;
        }
        let channel = match a.channel_by_peer.get(&peer.0) {
            Some(&(ch, exp)) if now < exp => Some(ch),
            _ => None,
        };
        a.counters.to_client_packets += 1;
        a.counters.to_client_bytes += len as u64;
        Some(PeerRoute {
            server: a.five_tuple.server,
            client: a.five_tuple.client,
            channel,
        })
    }
}
