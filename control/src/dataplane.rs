//! The data-plane tables: what a forwarder needs to relay TURN data without the control
//! plane, built only from the server's [`Change`] values.
//!
//! The [`crate::Server`] keeps one of these for the data it sees itself; every I/O driver
//! (socket workers, the AF_XDP forwarder, the XDP maps) keeps its own copy fed with the
//! same outputs. Invariants: data never refreshes anything (RFC 8656 sections 9 and 12);
//! a permission is checked on every packet in both directions, also while a channel is
//! bound, using the expiry time carried by the output, so expiry is exact even before
//! the `Remove*` output arrives.

use crate::bandwidth::{Direction, Limits};
use crate::output::Change;
use crate::types::{
    ChannelNumber, ClientAddr, ExternalIps, FiveTuple, PeerAddr, RelayAddr, Transport,
};
use crate::wire::{attr, channel_data, ChannelData, Class, MessageBuilder, Method, TransactionId};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// The data-plane tables are looked up on every relayed packet (three look-ups per
/// ChannelData). foldhash with a per-process random seed (`fast::RandomState`) hashes these
/// small keys several times faster than std's SipHash (measured in the README) while keys
/// chosen by a network peer still cannot be aimed at one bucket without knowing the seed.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Shrink `m` when it uses under a quarter of its capacity.
pub fn shrink_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(m: &mut HashMap<K, V, S>) {
    if m.capacity() > 16 && m.len() * 4 < m.capacity() {
        m.shrink_to(m.len() * 2);
    }
}

#[derive(Debug, Clone)]
struct AllocEntry {
    five_tuple: FiveTuple,
    expires: Instant,
    permissions: Map<IpAddr, Instant>,
    channel_by_peer: Map<SocketAddr, (ChannelNumber, Instant)>,
    /// Index of this allocation's [`Counters`] in [`DataPlane::counters`].
    counters: usize,
}

impl AllocEntry {
    /// The expiry of the permission for `peer` if the allocation is live and holds a live
    /// permission for it (RFC 8656 sections 9 and 12: checked on every packet, each way,
    /// channel or not).
    fn permission(&self, peer: IpAddr, now: Instant) -> Option<Instant> {
        if now >= self.expires {
            return None;
        }
        self.permissions
            .get(&peer)
            .copied()
            .filter(|&exp| now < exp)
    }
}

/// Per-allocation traffic counters (packets and payload bytes, each direction), as the
/// status file carries them per path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

impl Counters {
    /// Add `o` to these.
    pub fn add(&mut self, o: &Counters) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }
}

/// Peer data framed for its client into `out` (cleared first): ChannelData on `channel`
/// (unpadded: UDP), or without a channel a Data indication with XOR-PEER-ADDRESS `peer`
/// and transaction id `tid` (RFC 8656 sections 11.5 and 12.5). Every path that relays
/// peer data to a client frames it here.
pub fn frame_for_client(
    channel: Option<ChannelNumber>,
    peer: PeerAddr,
    payload: &[u8],
    tid: TransactionId,
    out: &mut Vec<u8>,
) {
    out.clear();
    match channel {
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
    /// UDP, or the client's TCP connection.
    pub transport: Transport,
}

/// A peer datagram resolved to the client it goes to; the framed message is in the
/// caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToClient {
    /// The server address the client talks to (source of the datagram).
    pub server: SocketAddr,
    pub client: ClientAddr,
    /// UDP, or the client's TCP connection (ChannelData then padded to 4 bytes by the
    /// driver that writes it, RFC 8656 section 12.5).
    pub transport: Transport,
}

#[derive(Debug, Default, Clone)]
pub struct DataPlane {
    allocs: Map<RelayAddr, AllocEntry>,
    channels: Map<(FiveTuple, ChannelNumber), (RelayAddr, PeerAddr, Instant)>,
    /// Every allocation's counters, indexed by [`AllocEntry::counters`]; the indices of
    /// removed allocations are in `free_counters` for the next one, so this never holds
    /// more entries than there were allocations at once.
    counters: Vec<Counters>,
    /// The user slot of each allocation, indexed like `counters`.
    users: Vec<u32>,
    free_counters: Vec<usize>,
    /// What removed allocations counted: with the live ones, [`DataPlane::totals`].
    removed: Counters,
    memo: Memo,
    /// Bandwidth limits shared by every copy; `None`: none.
    limits: Option<Arc<Limits>>,
    /// Public forms of the relay addresses (`--external-ip`): a relayed address of this
    /// server as a Data indication's peer is shown as the client knows it.
    external: ExternalIps,
}

/// Recent answers of the per-packet look-ups, so a packet of a known flow costs one
/// direct-mapped slot instead of three hash look-ups (about 100 ns of the AF_XDP
/// forwarder's per-frame work under a flood, measured in the README).
///
/// An answer is only ever taken for the exact key it was found for (compared in full), at
/// the same `generation` of the tables (every [`Change`] bumps it, so an
/// install, refresh or removal makes every memoised answer stale), and before
/// `valid_until`: the earliest expiry among the channel, permission and allocation it
/// depended on. Only answers that hold for every `now` before that are memoised, so
/// callers need not pass times in order. So a memoised answer is always the answer the
/// tables would give; a
/// stale, expired or evicted one just sends the packet through the tables again. The slot
/// index is a plain multiplicative hash: flows that collide (by chance or chosen by a
/// client) only evict each other's answers, which costs the look-ups the memo saves and
/// nothing more.
#[derive(Debug, Clone)]
struct Memo {
    generation: u64,
    /// log2 of the number of slots per direction; 0 turns the memo off.
    bits: u32,
    /// [`DataPlane::client_to_peer`] answers: relayed address, peer, counters index.
    to_peer: Slots<(FiveTuple, ChannelNumber), (RelayAddr, PeerAddr, usize)>,
    /// [`DataPlane::route_peer`] answers: the route and the counters index.
    to_client: Slots<(RelayAddr, PeerAddr), (PeerRoute, usize)>,
}

/// [`Memo`] slots per direction: 1024 (about 180 KiB per direction once used).
const MEMO_BITS: u32 = 10;

impl Default for Memo {
    fn default() -> Self {
        Memo {
            generation: 0,
            bits: MEMO_BITS,
            to_peer: Slots::default(),
            to_client: Slots::default(),
        }
    }
}

/// One direction's memo: per slot the answer `V` found for key `K`, with the table
/// generation it was found at and the time it holds until.
#[derive(Debug, Clone)]
struct Slots<K, V> {
    /// Allocated at the first answer, so tables that never relay cost nothing.
    entries: Vec<Option<Memoised<K, V>>>,
}

impl<K, V> Default for Slots<K, V> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Memoised<K, V> {
    generation: u64,
    key: K,
    valid_until: Instant,
    value: V,
}

impl<K: PartialEq + Copy, V: Copy> Slots<K, V> {
    /// The answer in `slot` if it is for `key`, of `generation` and still valid at `now`.
    fn get(&self, slot: usize, generation: u64, key: K, now: Instant) -> Option<V> {
        let m = self.entries.get(slot)?.as_ref()?;
        (m.generation == generation && m.key == key && now < m.valid_until).then_some(m.value)
    }

    /// Put an answer in `slot` of a table of `2^bits` slots.
    fn put(&mut self, slot: usize, bits: u32, m: Memoised<K, V>) {
        if self.entries.is_empty() {
            self.entries = vec![None; 1 << bits];
        }
        self.entries[slot] = Some(m);
    }
}

impl Memo {
    fn invalidate(&mut self) {
        self.generation += 1;
    }

    /// The slot of a flow: a multiplicative hash of both addresses and `extra`. Not keyed:
    /// see [`Memo`] for why collisions are harmless.
    fn slot(&self, a: SocketAddr, b: SocketAddr, extra: u16) -> Option<usize> {
        if self.bits == 0 {
            return None;
        }
        let x = addr_word(a) ^ addr_word(b).rotate_left(29) ^ (u64::from(extra) << 40);
        Some((x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize)
    }
}

/// An address and port folded into 64 bits for [`Memo::slot`].
fn addr_word(a: SocketAddr) -> u64 {
    let ip = match a.ip() {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let b = v6.to_bits();
            (b as u64) ^ ((b >> 64) as u64)
        }
    };
    (ip << 16) ^ u64::from(a.port())
}

impl DataPlane {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tables that enforce `limits` (shared with every other copy) on what they relay.
    pub fn with_limits(limits: Arc<Limits>) -> Self {
        let mut d = Self::default();
        d.set_limits(limits);
        d
    }

    pub fn set_limits(&mut self, limits: Arc<Limits>) {
        self.limits = (!limits.is_unlimited()).then_some(limits);
    }

    /// The relay addresses' public forms behind a 1:1 NAT (`--external-ip`).
    pub fn set_external(&mut self, external: ExternalIps) {
        self.external = external;
    }

    /// `peer` as its client knows it (XOR-PEER-ADDRESS of a Data indication): another
    /// allocation of this server by its public relayed address, any other peer as it is.
    pub fn shown(&self, peer: PeerAddr) -> PeerAddr {
        PeerAddr(self.external.public(peer.0))
    }

    /// Within the bandwidth limits? (Counts a refusal in the shared limits.)
    fn admit(
        &self,
        now: Instant,
        relay: RelayAddr,
        counters: usize,
        d: Direction,
        len: usize,
    ) -> bool {
        match &self.limits {
            None => true,
            Some(l) => l.admit(now, relay, self.users[counters], d, len),
        }
    }

    /// May the control plane relay `len` bytes of a Send indication for `relay` now?
    pub fn admit_send(&self, now: Instant, relay: RelayAddr, len: usize) -> bool {
        match self.allocs.get(&relay) {
            Some(a) => self.admit(now, relay, a.counters, Direction::ToPeer, len),
            None => true,
        }
    }

    /// Tables whose look-ups never use the memo (tests compare the two).
    #[cfg(test)]
    fn without_memo() -> Self {
        let mut d = Self::default();
        d.memo.bits = 0;
        d
    }

    /// Tables with a memo of `2^bits` slots per direction (tests: collisions).
    #[cfg(test)]
    fn with_memo_bits(bits: u32) -> Self {
        let mut d = Self::default();
        d.memo.bits = bits;
        d
    }

    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    /// Give back the memory of tables that emptied (a hash map never shrinks by itself):
    /// after a peak of allocations, memory returns to what the live ones need. Cheap when
    /// nothing is to be done; drivers call it now and then.
    pub fn shrink(&mut self) {
        if self.allocs.is_empty() && !self.counters.is_empty() {
            // No index is in use: the counters of the last peak go.
            self.counters = Vec::new();
            self.users = Vec::new();
            self.free_counters = Vec::new();
        }
        // Per-allocation maps are bounded by the quotas and freed with their allocation:
        // not walked here (this runs on the forwarder threads' loop).
        shrink_map(&mut self.allocs);
        shrink_map(&mut self.channels);
    }

    pub fn counters(&self, relay: RelayAddr) -> Option<Counters> {
        self.allocs.get(&relay).map(|a| self.counters[a.counters])
    }

    /// Everything this table counted since it was made, removed allocations included
    /// (monotonic: the metrics' relayed packets and bytes).
    pub fn totals(&self) -> Counters {
        let mut t = self.removed;
        for a in self.allocs.values() {
            t.add(&self.counters[a.counters]);
        }
        t
    }

    /// Every allocation in this table with its five-tuple and what this table counted.
    pub fn allocations(&self) -> impl Iterator<Item = (RelayAddr, FiveTuple, Counters)> + '_ {
        self.allocs
            .iter()
            .map(|(r, a)| (*r, a.five_tuple, self.counters[a.counters]))
    }

    /// Apply one change of the control plane's tables.
    pub fn apply(&mut self, change: &Change) {
        self.memo.invalidate();
        match change {
            Change::InstallAllocation {
                five_tuple,
                relay,
                expires,
                user,
            } => {
                if let Some(e) = self.allocs.get_mut(relay) {
                    e.five_tuple = *five_tuple;
                    e.expires = *expires;
                    self.users[e.counters] = *user;
                } else {
                    let counters = match self.free_counters.pop() {
                        Some(i) => i,
                        None => {
                            self.counters.push(Counters::default());
                            self.users.push(0);
                            self.counters.len() - 1
                        }
                    };
                    self.users[counters] = *user;
                    self.allocs.insert(
                        *relay,
                        AllocEntry {
                            five_tuple: *five_tuple,
                            expires: *expires,
                            permissions: Map::default(),
                            channel_by_peer: Map::default(),
                            counters,
                        },
                    );
                }
            }
            Change::RemoveAllocation { relay, .. } => {
                if let Some(a) = self.allocs.remove(relay) {
                    for (c, _) in a.channel_by_peer.values() {
                        self.channels.remove(&(a.five_tuple, *c));
                    }
                    let c = std::mem::take(&mut self.counters[a.counters]);
                    self.removed.add(&c);
                    self.free_counters.push(a.counters);
                }
            }
            Change::InstallPermission {
                relay,
                peer,
                expires,
            } => {
                if let Some(a) = self.allocs.get_mut(relay) {
                    a.permissions.insert(*peer, *expires);
                }
            }
            Change::RemovePermission { relay, peer } => {
                if let Some(a) = self.allocs.get_mut(relay) {
                    a.permissions.remove(peer);
                }
            }
            Change::InstallChannel {
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
            Change::RemoveChannel {
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
        let slot = self
            .memo
            .slot(five_tuple.client.0, five_tuple.server, channel.get());
        let key = (five_tuple, channel);
        let generation = self.memo.generation;
        let memo = slot.and_then(|s| self.memo.to_peer.get(s, generation, key, now));
        let (relay, peer, counters) = match memo {
            Some(answer) => answer,
            None => {
                let &(relay, peer, ch_expires) = self.channels.get(&key)?;
                if now >= ch_expires {
                    return None;
                }
                let a = self.allocs.get(&relay)?;
                let perm_expires = a.permission(peer.0.ip(), now)?;
                let counters = a.counters;
                if let Some(s) = slot {
                    let m = Memoised {
                        generation,
                        key,
                        valid_until: ch_expires.min(perm_expires).min(a.expires),
                        value: (relay, peer, counters),
                    };
                    self.memo.to_peer.put(s, self.memo.bits, m);
                }
                (relay, peer, counters)
            }
        };
        let len = cd.length() as usize;
        if !self.admit(now, relay, counters, Direction::ToPeer, len) {
            return None;
        }
        let c = &mut self.counters[counters];
        c.to_peer_packets += 1;
        c.to_peer_bytes += len as u64;
        Some(ToPeer {
            relay,
            peer,
            payload: channel_data::HEADER_LEN..channel_data::HEADER_LEN + len,
        })
    }

    /// Count a Send indication relayed by the control plane.
    pub fn count_to_peer(&mut self, relay: RelayAddr, bytes: usize) {
        if let Some(a) = self.allocs.get(&relay) {
            let c = &mut self.counters[a.counters];
            c.to_peer_packets += 1;
            c.to_peer_bytes += bytes as u64;
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
        frame_for_client(route.channel, self.shown(peer), payload, tid, out);
        Some(ToClient {
            server: route.server,
            client: route.client,
            transport: route.transport,
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
        let slot = self.memo.slot(relay.0, peer.0, 0);
        let generation = self.memo.generation;
        let memo = slot.and_then(|s| self.memo.to_client.get(s, generation, (relay, peer), now));
        let (route, counters) = match memo {
            Some(answer) => answer,
            None => {
                let a = self.allocs.get(&relay)?;
                let perm_expires = a.permission(peer.0.ip(), now)?;
                let mut valid_until = perm_expires.min(a.expires);
                // A live channel is the answer only until it expires. "No channel"
                // because one expired holds only from its expiry on, and a memoised
                // answer must hold for any earlier `now` too: not memoised (the control
                // plane removes an expired channel soon anyway).
                let mut memoise = true;
                let channel = match a.channel_by_peer.get(&peer.0) {
                    Some(&(ch, exp)) if now < exp => {
                        valid_until = valid_until.min(exp);
                        Some(ch)
                    }
                    Some(_) => {
                        memoise = false;
                        None
                    }
                    None => None,
                };
                let route = PeerRoute {
                    server: a.five_tuple.server,
                    client: a.five_tuple.client,
                    transport: a.five_tuple.transport,
                    channel,
                };
                let counters = a.counters;
                if let Some(s) = slot.filter(|_| memoise) {
                    let m = Memoised {
                        generation,
                        key: (relay, peer),
                        valid_until,
                        value: (route, counters),
                    };
                    self.memo.to_client.put(s, self.memo.bits, m);
                }
                (route, counters)
            }
        };
        if !self.admit(now, relay, counters, Direction::ToClient, len) {
            return None;
        }
        let c = &mut self.counters[counters];
        c.to_client_packets += 1;
        c.to_client_bytes += len as u64;
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const RELAYS: [&str; 2] = ["198.51.100.1:50000", "[2001:db8::1]:50001"];
    const CLIENTS: [&str; 2] = ["192.0.2.2:40000", "[2001:db8:c::2]:40001"];
    const PEERS: [&str; 3] = [
        "198.51.100.2:6000",
        "198.51.100.2:6001",
        "[2001:db8:d::2]:7000",
    ];
    const CHANNELS: [u16; 2] = [0x4000, 0x4001];

    fn relay(i: usize) -> RelayAddr {
        RelayAddr(sa(RELAYS[i]))
    }
    fn five_tuple(i: usize) -> FiveTuple {
        FiveTuple::udp(ClientAddr(sa(CLIENTS[i])), sa("192.0.2.1:3478"))
    }
    fn peer(i: usize) -> PeerAddr {
        PeerAddr(sa(PEERS[i]))
    }
    fn channel(i: usize) -> ChannelNumber {
        ChannelNumber::new(CHANNELS[i]).unwrap()
    }
    fn channel_data(ch: u16, len: usize) -> Vec<u8> {
        let mut d = vec![0x55; channel_data::HEADER_LEN + len];
        channel_data::write_header(&mut d, ch, len as u16);
        d
    }

    /// An allocation of five-tuple 0 on relay 0 with a permission for peer 0's address
    /// until `perm`, channel 0 bound to peer 0 until `chan` and the allocation until
    /// `alloc` (seconds after t0).
    fn one_flow(dp: &mut DataPlane, t0: Instant, alloc: u64, perm: u64, chan: u64) {
        let s = |n| t0 + Duration::from_secs(n);
        dp.apply(&Change::InstallAllocation {
            five_tuple: five_tuple(0),
            relay: relay(0),
            expires: s(alloc),
            user: 0,
        });
        dp.apply(&Change::InstallPermission {
            relay: relay(0),
            peer: peer(0).0.ip(),
            expires: s(perm),
        });
        dp.apply(&Change::InstallChannel {
            five_tuple: five_tuple(0),
            relay: relay(0),
            channel: channel(0),
            peer: peer(0),
            expires: s(chan),
        });
    }

    #[test]
    fn memoised_answers_end_at_the_earliest_expiry_they_depend_on() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let cd = channel_data(CHANNELS[0], 10);
        // Permission first (300 s), then the allocation (200 s).
        for (alloc, perm, end) in [(600, 300, 300), (200, 300, 200)] {
            let mut dp = DataPlane::new();
            one_flow(&mut dp, t0, alloc, perm, 600);
            for t in [1, 2, end - 1] {
                assert!(dp.client_to_peer(s(t), five_tuple(0), &cd).is_some());
                assert!(dp.route_peer(s(t), relay(0), peer(0), 10).is_some());
            }
            assert_eq!(dp.client_to_peer(s(end), five_tuple(0), &cd), None);
            assert_eq!(dp.route_peer(s(end), relay(0), peer(0), 10), None);
            let c = dp.counters(relay(0)).unwrap();
            assert_eq!((c.to_peer_packets, c.to_client_packets), (3, 3));
        }
    }

    #[test]
    fn a_peer_whose_channel_expires_first_gets_data_indications_then() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut dp = DataPlane::new();
        one_flow(&mut dp, t0, 600, 300, 100);
        let route = |dp: &mut DataPlane, t| dp.route_peer(s(t), relay(0), peer(0), 10);
        assert_eq!(route(&mut dp, 1).unwrap().channel, Some(channel(0)));
        assert_eq!(route(&mut dp, 99).unwrap().channel, Some(channel(0)));
        assert_eq!(route(&mut dp, 100).unwrap().channel, None);
        assert_eq!(route(&mut dp, 299).unwrap().channel, None);
        assert_eq!(route(&mut dp, 300), None);
        let cd = channel_data(CHANNELS[0], 10);
        assert!(dp.client_to_peer(s(99), five_tuple(0), &cd).is_some());
        assert_eq!(dp.client_to_peer(s(100), five_tuple(0), &cd), None);
    }

    #[test]
    fn a_change_makes_memoised_answers_stale_at_once() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1);
        let cd = channel_data(CHANNELS[0], 10);
        let mut dp = DataPlane::new();
        one_flow(&mut dp, t0, 600, 600, 600);
        assert!(dp.client_to_peer(now, five_tuple(0), &cd).is_some());
        assert!(dp.route_peer(now, relay(0), peer(0), 10).is_some());
        dp.apply(&Change::RemovePermission {
            relay: relay(0),
            peer: peer(0).0.ip(),
        });
        assert_eq!(dp.client_to_peer(now, five_tuple(0), &cd), None);
        assert_eq!(dp.route_peer(now, relay(0), peer(0), 10), None);
    }

    #[test]
    fn a_new_allocation_reuses_counters_from_zero_and_old_answers_do_not_count_into_it() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1);
        let cd = channel_data(CHANNELS[0], 10);
        let mut dp = DataPlane::new();
        one_flow(&mut dp, t0, 600, 600, 600);
        assert!(dp.client_to_peer(now, five_tuple(0), &cd).is_some());
        dp.apply(&Change::RemoveAllocation {
            five_tuple: five_tuple(0),
            relay: relay(0),
        });
        dp.apply(&Change::InstallAllocation {
            five_tuple: five_tuple(1),
            relay: relay(1),
            expires: t0 + Duration::from_secs(600),
            user: 0,
        });
        assert_eq!(dp.client_to_peer(now, five_tuple(0), &cd), None);
        assert_eq!(dp.counters(relay(1)), Some(Counters::default()));
        // What the removed allocation relayed stays in the totals (monotonic metrics).
        let t = dp.totals();
        assert_eq!((t.to_peer_packets, t.to_client_packets), (1, 0));
        assert_eq!(t.to_peer_bytes, 10);
        assert_eq!(
            dp.counters.len(),
            1,
            "the removed allocation's counters were reused"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Change(Change),
        ToPeer {
            ft: usize,
            ch: u16,
            t: u64,
            len: usize,
        },
        Route {
            relay: usize,
            peer: usize,
            t: u64,
            len: usize,
        },
    }

    fn op(t0: Instant) -> impl Strategy<Value = Op> {
        let at = move |n: u64| t0 + Duration::from_secs(n);
        let i2 = 0usize..2;
        let i3 = 0usize..3;
        prop_oneof![
            1 => (i2.clone(), i2.clone(), 0u64..20).prop_map(move |(f, r, e)| Op::Change(
                Change::InstallAllocation { five_tuple: five_tuple(f), relay: relay(r), expires: at(e), user: 0 }
            )),
            1 => (i2.clone(), i2.clone()).prop_map(|(f, r)| Op::Change(Change::RemoveAllocation {
                five_tuple: five_tuple(f),
                relay: relay(r),
            })),
            1 => (i2.clone(), i3.clone(), 0u64..20).prop_map(move |(r, p, e)| Op::Change(
                Change::InstallPermission { relay: relay(r), peer: peer(p).0.ip(), expires: at(e) }
            )),
            1 => (i2.clone(), i3.clone()).prop_map(|(r, p)| Op::Change(Change::RemovePermission {
                relay: relay(r),
                peer: peer(p).0.ip(),
            })),
            1 => (i2.clone(), i2.clone(), i2.clone(), i3.clone(), 0u64..20).prop_map(
                move |(f, r, c, p, e)| Op::Change(Change::InstallChannel {
                    five_tuple: five_tuple(f),
                    relay: relay(r),
                    channel: channel(c),
                    peer: peer(p),
                    expires: at(e),
                })
            ),
            1 => (i2.clone(), i2.clone(), i2.clone(), i3.clone()).prop_map(|(f, r, c, p)| Op::Change(
                Change::RemoveChannel {
                    five_tuple: five_tuple(f),
                    relay: relay(r),
                    channel: channel(c),
                    peer: peer(p),
                }
            )),
            // Look-ups three times as often as changes, so answers get memoised and reused.
            3 => (i2.clone(), prop::sample::select(vec![0x4000u16, 0x4001, 0x4002, 0x5000]), 0u64..20, 0usize..8)
                .prop_map(|(ft, ch, t, len)| Op::ToPeer { ft, ch, t, len }),
            3 => (i2, i3, 0u64..20, 0usize..8).prop_map(|(relay, peer, t, len)| Op::Route { relay, peer, t, len }),
        ]
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        // One t0 for the whole run: the strategies build Instants from it.
        let t0 = *T0.get_or_init(Instant::now);
        prop::collection::vec(op(t0), 1..80)
    }

    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the outputs and the times, the tables answer and count the same with
        /// and without the memo, also with a two-slot memo where every flow collides.
        #[test]
        fn the_memo_never_changes_an_answer(ops in ops()) {
            let t0 = *T0.get_or_init(Instant::now);
            let mut reference = DataPlane::without_memo();
            let mut tables = [DataPlane::new(), DataPlane::with_memo_bits(1)];
            for op in &ops {
                match op {
                    Op::Change(out) => {
                        reference.apply(out);
                        tables.iter_mut().for_each(|d| d.apply(out));
                    }
                    &Op::ToPeer { ft, ch, t, len } => {
                        let now = t0 + Duration::from_secs(t);
                        let cd = channel_data(ch, len);
                        let want = reference.client_to_peer(now, five_tuple(ft), &cd);
                        for d in &mut tables {
                            prop_assert_eq!(d.client_to_peer(now, five_tuple(ft), &cd), want.clone());
                        }
                    }
                    &Op::Route { relay: r, peer: p, t, len } => {
                        let now = t0 + Duration::from_secs(t);
                        let want = reference.route_peer(now, relay(r), peer(p), len);
                        for d in &mut tables {
                            prop_assert_eq!(d.route_peer(now, relay(r), peer(p), len), want);
                        }
                    }
                }
                for r in 0..2 {
                    for d in &tables {
                        prop_assert_eq!(d.counters(relay(r)), reference.counters(relay(r)));
                    }
                }
            }
        }
    }
}
