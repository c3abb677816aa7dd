//! The AF_XDP forwarder loop: frames the XDP program steered to this thread's sockets are
//! checked against the thread's own [`DataPlane`] copy and relayed by rewriting them in
//! place ([`frame`](super::frame)) and sending them on the socket of the egress interface
//! the XDP program found in the kernel's FIB (the [`XskMeta`] in front of each frame).
//!
//! ```text
//!  RX desc ─► XskMeta (egress, MACs) ─► frame::check ─┬─ client→peer: DataPlane::client_to_peer
//!                                                     │     ─► channel_data_to_udp_checked ─► TX on egress port
//!                                                     └─ peer→client: DataPlane::route_peer
//!                                                           ├─ channel: udp_to_channel_data_checked ─► TX
//!                                                           └─ no channel: frame_for_client (Data indication) ─► slow path
//! ```
//!
//! The per-packet decision is the socket path's ([`DataPlane`]: channel, permission and
//! allocation live at `now`, per-allocation counters), so the XDP maps only pre-filter and
//! the forwarder never relays what the control plane no longer allows. What cannot be
//! rewritten in place (IPv4 <-> IPv6, Data indications, an egress interface this thread has
//! no socket on) goes to the [`SlowPath`] (kernel sockets). Every received frame is either
//! sent or freed: none is lost by the loop.
//!
//! Generic over [`Xsk`], so it runs on the in-memory rings in tests.

use super::frame::{self, Reject, Rewrite};
use super::ring::{Desc, Xsk};
use std::net::SocketAddr;
use std::time::Instant;
use xturn_control::dataplane::frame_for_client;
use xturn_control::wire::TransactionId;
use xturn_control::{Change, ClientAddr, DataPlane, FiveTuple, PeerAddr, RelayAddr};
use xturn_xdp_common::{direction, XskMeta, XSK_META_MAGIC};

/// Frames taken from each port per loop iteration.
pub const BATCH: usize = 64;

/// Ethernet header length (the frames are Ethernet II without VLAN tags).
const ETH_HEADER: usize = 14;

/// Datagrams the forwarder cannot relay in place: sent through kernel sockets.
pub trait SlowPath {
    /// Send `payload` as a UDP datagram from the server's own address `from` (a listening
    /// or relayed address) to `to`.
    fn send(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]);
}

/// What the forwarder did with the frames it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ForwarderStats {
    pub received: u64,
    /// Rewritten in place and queued for transmission.
    pub to_peer: u64,
    pub to_client: u64,
    /// Handed to the slow path: Data indications (peer without a channel), family
    /// changes, egress without a socket here, and the two below.
    pub slow_path: u64,
    /// Of `slow_path`: the relayed IP packet would exceed the egress interface's MTU (the
    /// kernel socket fragments it, or refuses it, as the socket path would).
    pub slow_path_mtu: u64,
    /// Of `slow_path`: rewritten, but the egress TX ring was full.
    pub slow_path_tx_full: u64,
    /// Relayed frames that arrived with a UDP checksum left to offload (CHECKSUM_PARTIAL,
    /// from a local sender on a veth) and left with a full one.
    pub partial_checksum: u64,
    /// Dropped: no valid metadata in front of the frame.
    pub dropped_no_meta: u64,
    /// Dropped: malformed frame or wrong checksum.
    pub dropped_malformed: u64,
    pub dropped_bad_checksum: u64,
    /// Dropped: TTL / hop limit exhausted.
    pub dropped_ttl: u64,
    /// Dropped: the data plane does not allow it (no live channel, permission or
    /// allocation at `now`; RFC 8656 sections 10.3, 12.4).
    pub dropped_not_allowed: u64,
    /// Dropped: the egress TX ring was full and the slow path could not take the frame.
    pub dropped_tx_full: u64,
}

/// One forwarder thread's state: its sockets (ports), their interfaces, its data-plane
/// copy and its slow path.
pub struct Forwarder<X: Xsk, S: SlowPath> {
    xsk: X,
    /// Interface index of each port.
    ifindex: Vec<u32>,
    /// MTU of each port's interface (`u32::MAX`: unknown, not checked).
    mtu: Vec<u32>,
    dp: DataPlane,
    slow: S,
    stats: ForwarderStats,
    rx: Vec<Desc>,
    /// Per port: descriptors to send at the end of the batch.
    tx: Vec<Vec<Desc>>,
    scratch: Vec<u8>,
    /// Transaction ids of Data indications (xorshift; RFC 8489 wants them unpredictable
    /// only for requests).
    tid_state: u64,
}

impl<X: Xsk, S: SlowPath> Forwarder<X, S> {
    /// `ifindex[i]` is the interface port `i` of `xsk` is bound to.
    pub fn new(xsk: X, ifindex: Vec<u32>, slow: S, seed: u64) -> Self {
        assert_eq!(xsk.ports(), ifindex.len(), "one interface index per port");
        let ports = ifindex.len();
        Forwarder {
            xsk,
            mtu: vec![u32::MAX; ports],
            ifindex,
            dp: DataPlane::new(),
            slow,
            stats: ForwarderStats::default(),
            rx: Vec::with_capacity(BATCH),
            tx: vec![Vec::with_capacity(BATCH); ports],
            scratch: Vec::with_capacity(2048),
            tid_state: seed | 1,
        }
    }

    /// Enforce the bandwidth limits every data-plane copy shares.
    pub fn set_limits(&mut self, limits: std::sync::Arc<xturn_control::bandwidth::Limits>) {
        self.dp.set_limits(limits);
    }

    /// The relay addresses' public forms (`--external-ip`), for Data indications.
    pub fn set_external(&mut self, external: xturn_control::ExternalIps) {
        self.dp.set_external(external);
    }

    /// The MTU of interface `ifindex`: relayed packets longer than it take the slow path.
    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) {
        for (i, m) in self.ifindex.iter().zip(self.mtu.iter_mut()) {
            if *i == ifindex {
                *m = mtu;
            }
        }
    }

    /// Apply a control-plane change to this thread's data-plane copy.
    pub fn apply(&mut self, change: &Change) {
        self.dp.apply(change);
    }

    /// Give back table memory after a peak of allocations ([`DataPlane::shrink`]).
    pub fn shrink(&mut self) {
        self.dp.shrink();
    }

    pub fn data_plane(&self) -> &DataPlane {
        &self.dp
    }

    pub fn stats(&self) -> ForwarderStats {
        self.stats
    }

    pub fn xsk(&mut self) -> &mut X {
        &mut self.xsk
    }

    pub fn slow_path(&mut self) -> &mut S {
        &mut self.slow
    }

    /// One iteration: up to [`BATCH`] frames from every port, relayed or dropped, then the
    /// rings serviced. Returns the number of frames received.
    pub fn poll(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for port in 0..self.ifindex.len() {
            self.rx.clear();
            let got = self.xsk.recv(port, &mut self.rx, BATCH);
            n += got;
            for i in 0..got {
                let d = self.rx[i];
                self.stats.received += 1;
                match self.handle(now, d) {
                    Some((out_port, desc)) => self.tx[out_port].push(desc),
                    None => self.xsk.free(d.addr),
                }
            }
        }
        for port in 0..self.tx.len() {
            if self.tx[port].is_empty() {
                continue;
            }
            let queued = self.xsk.send(port, &self.tx[port]);
            for i in queued..self.tx[port].len() {
                let d = self.tx[port][i];
                // The rewritten datagram through a kernel socket rather than lost.
                let (chunk, off) = self.xsk.chunk_mut(d.addr);
                match frame::parse(&chunk[off..off + d.len as usize]) {
                    Ok(dg) => {
                        let p = off + dg.payload_off;
                        self.slow
                            .send(dg.src, dg.dst, &chunk[p..p + dg.payload_len]);
                        self.stats.slow_path += 1;
                        self.stats.slow_path_tx_full += 1;
                    }
                    Err(_) => self.stats.dropped_tx_full += 1,
                }
                self.xsk.free(d.addr);
            }
            // Counted as relayed only once queued.
            self.tx[port].clear();
        }
        self.xsk.service();
        n
    }

    /// Decide one frame: `Some((port, desc))` to send it, `None` to free it.
    fn handle(&mut self, now: Instant, d: Desc) -> Option<(usize, Desc)> {
        // The program's XskMeta comes first in the data; the frame follows it.
        const META_LEN: u32 = std::mem::size_of::<XskMeta>() as u32;
        if d.len <= META_LEN {
            self.stats.dropped_no_meta += 1;
            return None;
        }
        let d = Desc {
            addr: d.addr + u64::from(META_LEN),
            len: d.len - META_LEN,
        };
        let (chunk, off) = self.xsk.chunk_mut(d.addr);
        let len = d.len as usize;
        let Some(meta) = read_meta(chunk, off) else {
            self.stats.dropped_no_meta += 1;
            return None;
        };
        // Parsed and verified once (checksums included); the rewrites reuse it.
        let checked = match frame::check(chunk, off, len) {
            Ok(c) => c,
            Err(r) => {
                self.count_reject(r);
                return None;
            }
        };
        let dg = checked.datagram();
        let payload = &chunk[off + dg.payload_off..off + dg.payload_off + dg.payload_len];
        let egress = self.ifindex.iter().position(|&i| i == meta.egress_ifindex);
        match meta.direction {
            direction::CLIENT_TO_PEER => {
                let five_tuple = FiveTuple::udp(ClientAddr(dg.src), dg.dst);
                let Some(to) = self.dp.client_to_peer(now, five_tuple, payload) else {
                    self.stats.dropped_not_allowed += 1;
                    return None;
                };
                let rw = Rewrite {
                    src_mac: meta.src_mac,
                    dst_mac: meta.dst_mac,
                    src: to.relay.0,
                    dst: to.peer.0,
                };
                // IP header + UDP header + data: the datagram the peer gets.
                let ip_len = dg.payload_off - ETH_HEADER + to.payload.len();
                let port = egress.filter(|&p| ip_len <= self.mtu[p] as usize);
                let Some(port) = port else {
                    if egress.is_some() {
                        self.stats.slow_path_mtu += 1;
                    }
                    let data = &payload[to.payload.clone()];
                    self.slow.send(to.relay.0, to.peer.0, data);
                    self.stats.slow_path += 1;
                    return None;
                };
                let (chunk, _) = self.xsk.chunk_mut(d.addr);
                match frame::channel_data_to_udp_checked(chunk, &checked, &rw) {
                    Ok((start, new_len)) => {
                        self.stats.to_peer += 1;
                        self.stats.partial_checksum += u64::from(checked.partial_checksum());
                        Some((port, rebased(d, off, start, new_len)))
                    }
                    Err(Reject::FamilyChange) => {
                        let (chunk, _) = self.xsk.chunk_mut(d.addr);
                        let p = dg.payload_off + to.payload.start;
                        let data = &chunk[off + p..off + dg.payload_off + to.payload.end];
                        self.slow.send(to.relay.0, to.peer.0, data);
                        self.stats.slow_path += 1;
                        None
                    }
                    Err(r) => {
                        self.count_reject(r);
                        None
                    }
                }
            }
            direction::PEER_TO_CLIENT => {
                let relay = RelayAddr(dg.dst);
                let peer = PeerAddr(dg.src);
                let Some(route) = self.dp.route_peer(now, relay, peer, dg.payload_len) else {
                    self.stats.dropped_not_allowed += 1;
                    return None;
                };
                let to_client = |fw: &mut Self, bytes: &[u8]| {
                    fw.slow.send(route.server, route.client.0, bytes);
                    fw.stats.slow_path += 1;
                };
                let Some(channel) = route.channel else {
                    // No channel: a Data indication (RFC 8656 section 11.5), built here
                    // and sent through the listener's socket.
                    let tid = self.next_tid();
                    let (chunk, _) = self.xsk.chunk_mut(d.addr);
                    let p = off + dg.payload_off;
                    let payload = &chunk[p..p + dg.payload_len];
                    let shown = self.dp.shown(peer);
                    frame_for_client(None, shown, payload, tid, &mut self.scratch);
                    let msg = std::mem::take(&mut self.scratch);
                    to_client(self, &msg);
                    self.scratch = msg;
                    return None;
                };
                let rw = Rewrite {
                    src_mac: meta.src_mac,
                    dst_mac: meta.dst_mac,
                    src: route.server,
                    dst: route.client.0,
                };
                let slow_channel_data = |fw: &mut Self| {
                    let (chunk, _) = fw.xsk.chunk_mut(d.addr);
                    let p = off + dg.payload_off;
                    let mut msg = std::mem::take(&mut fw.scratch);
                    let payload = &chunk[p..p + dg.payload_len];
                    frame_for_client(
                        Some(channel),
                        peer,
                        payload,
                        TransactionId([0; 12]),
                        &mut msg,
                    );
                    to_client(fw, &msg);
                    fw.scratch = msg;
                };
                // Grown by the ChannelData header.
                let ip_len = dg.payload_off - ETH_HEADER + 4 + dg.payload_len;
                let port = egress.filter(|&p| ip_len <= self.mtu[p] as usize);
                let Some(port) = port else {
                    if egress.is_some() {
                        self.stats.slow_path_mtu += 1;
                    }
                    slow_channel_data(self);
                    return None;
                };
                let (chunk, _) = self.xsk.chunk_mut(d.addr);
                match frame::udp_to_channel_data_checked(chunk, &checked, channel.get(), &rw) {
                    Ok((start, new_len)) => {
                        self.stats.to_client += 1;
                        self.stats.partial_checksum += u64::from(checked.partial_checksum());
                        Some((port, rebased(d, off, start, new_len)))
                    }
                    Err(Reject::FamilyChange | Reject::NoRoom) => {
                        slow_channel_data(self);
                        None
                    }
                    Err(r) => {
                        self.count_reject(r);
                        None
                    }
                }
            }
            _ => {
                self.stats.dropped_no_meta += 1;
                None
            }
        }
    }

    fn count_reject(&mut self, r: Reject) {
        match r {
            Reject::BadChecksum => self.stats.dropped_bad_checksum += 1,
            Reject::TtlExceeded => self.stats.dropped_ttl += 1,
            Reject::NotChannelData => self.stats.dropped_not_allowed += 1,
            _ => self.stats.dropped_malformed += 1,
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        for c in t.chunks_mut(4) {
            let mut x = self.tid_state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.tid_state = x;
            c.copy_from_slice(&x.to_le_bytes()[..4]);
        }
        TransactionId(t)
    }
}

/// The descriptor of a frame rewritten from `off` to `start` in the same chunk.
fn rebased(d: Desc, off: usize, start: usize, len: usize) -> Desc {
    Desc {
        addr: d.addr - off as u64 + start as u64,
        len: len as u32,
    }
}

/// The [`XskMeta`] the XDP program put right before the frame at `off` (the first bytes
/// of the received data), if its magic is there.
fn read_meta(chunk: &[u8], off: usize) -> Option<XskMeta> {
    const LEN: usize = std::mem::size_of::<XskMeta>();
    let m = chunk.get(off.checked_sub(LEN)?..off)?;
    if m[20..24] != XSK_META_MAGIC {
        return None;
    }
    Some(XskMeta {
        dst_mac: m[0..6].try_into().ok()?,
        src_mac: m[6..12].try_into().ok()?,
        egress_ifindex: u32::from_ne_bytes(m[12..16].try_into().ok()?),
        direction: m[16],
        _pad: [0; 3],
        magic: XSK_META_MAGIC,
    })
}

/// The bytes of an [`XskMeta`] as the XDP program writes them (tests, benchmarks).
pub fn meta_bytes(m: &XskMeta) -> [u8; std::mem::size_of::<XskMeta>()] {
    let mut b = [0u8; std::mem::size_of::<XskMeta>()];
    b[0..6].copy_from_slice(&m.dst_mac);
    b[6..12].copy_from_slice(&m.src_mac);
    b[12..16].copy_from_slice(&m.egress_ifindex.to_ne_bytes());
    b[16] = m.direction;
    b[20..24].copy_from_slice(&m.magic);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::afxdp::ring::MemRings;
    use std::net::IpAddr;
    use std::time::Duration;
    use xturn_control::wire::{attr, Class, Message, Method};
    use xturn_control::ChannelNumber;

    const CLIENT_IF: u32 = 10;
    const PEER_IF: u32 = 20;
    const MAC_CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const MAC_C: [u8; 6] = [2, 0, 0, 0, 0xc, 1];
    const MAC_P: [u8; 6] = [2, 0, 0, 0, 0xd, 1];
    const MAC_PEER: [u8; 6] = [2, 0, 0, 0, 0xd, 2];

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[derive(Default)]
    struct Recorder(Vec<(SocketAddr, SocketAddr, Vec<u8>)>);

    impl SlowPath for Recorder {
        fn send(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
            self.0.push((from, to, payload.to_vec()));
        }
    }

    struct Setup {
        fw: Forwarder<MemRings, Recorder>,
        t0: Instant,
        five_tuple: FiveTuple,
        relay: RelayAddr,
        peer: SocketAddr,
    }

    /// The outputs `setup` applied.
    fn installs(s: &Setup) -> Vec<Change> {
        let mut v = vec![Change::InstallAllocation {
            five_tuple: s.five_tuple,
            relay: s.relay,
            expires: s.t0 + Duration::from_secs(600),
            user: 0,
        }];
        for p in ["198.51.100.2", "198.51.100.3"] {
            v.push(Change::InstallPermission {
                relay: s.relay,
                peer: p.parse::<IpAddr>().unwrap(),
                expires: s.t0 + Duration::from_secs(300),
            });
        }
        v.push(Change::InstallChannel {
            five_tuple: s.five_tuple,
            relay: s.relay,
            channel: ChannelNumber::new(0x4001).unwrap(),
            peer: PeerAddr(s.peer),
            expires: s.t0 + Duration::from_secs(600),
        });
        v
    }

    /// A forwarder with a client-side port 0 and a peer-side port 1, an allocation with
    /// permissions for two peers (300 s) and channel 0x4001 to the first (600 s).
    fn setup() -> Setup {
        let xsk = MemRings::new(2, 2048, 64);
        let mut fw = Forwarder::new(xsk, vec![CLIENT_IF, PEER_IF], Recorder::default(), 7);
        let t0 = Instant::now();
        let five_tuple = FiveTuple::udp(ClientAddr(sa("192.0.2.2:40000")), sa("192.0.2.1:3478"));
        let relay = RelayAddr(sa("198.51.100.1:50000"));
        let peer = sa("198.51.100.2:6000");
        fw.apply(&Change::InstallAllocation {
            five_tuple,
            relay,
            expires: t0 + Duration::from_secs(600),
            user: 0,
        });
        for p in ["198.51.100.2", "198.51.100.3"] {
            fw.apply(&Change::InstallPermission {
                relay,
                peer: p.parse::<IpAddr>().unwrap(),
                expires: t0 + Duration::from_secs(300),
            });
        }
        fw.apply(&Change::InstallChannel {
            five_tuple,
            relay,
            channel: ChannelNumber::new(0x4001).unwrap(),
            peer: PeerAddr(peer),
            expires: t0 + Duration::from_secs(600),
        });
        Setup {
            fw,
            t0,
            five_tuple,
            relay,
            peer,
        }
    }

    impl Setup {
        /// A frame from the client to the server's listening address carrying `payload`.
        fn client_frame(&self, payload: &[u8]) -> Vec<u8> {
            let ft = self.five_tuple;
            udp_frame(MAC_CLIENT, MAC_C, ft.client.0, ft.server, payload)
        }
    }

    fn udp_frame(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac);
        let b = match (from.ip(), to.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed families"),
        };
        let b = b.udp(from.port(), to.port());
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn channel_data(ch: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ch.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn meta(dst_mac: [u8; 6], src_mac: [u8; 6], egress: u32, dir: u8) -> [u8; 24] {
        meta_bytes(&XskMeta {
            dst_mac,
            src_mac,
            egress_ifindex: egress,
            direction: dir,
            _pad: [0; 3],
            magic: XSK_META_MAGIC,
        })
    }

    fn to_peer_meta() -> [u8; 24] {
        meta(MAC_PEER, MAC_P, PEER_IF, direction::CLIENT_TO_PEER)
    }

    fn to_client_meta() -> [u8; 24] {
        meta(MAC_CLIENT, MAC_C, CLIENT_IF, direction::PEER_TO_CLIENT)
    }

    /// (source, destination, MACs, UDP payload) of a sent frame, checked by etherparse.
    fn decode(f: &[u8]) -> (SocketAddr, SocketAddr, [u8; 6], [u8; 6], Vec<u8>) {
        let p = etherparse::SlicedPacket::from_ethernet(f).expect("a valid frame");
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("not Ethernet")
        };
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match p.net.expect("IP") {
            etherparse::NetSlice::Ipv4(v4) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
            ),
            etherparse::NetSlice::Ipv6(v6) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
            ),
            _ => panic!("not IP"),
        };
        let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
            panic!("not UDP")
        };
        // The forwarder's frames carry valid checksums: frame::parse verifies them.
        frame::parse(f).expect("checksums valid");
        (
            SocketAddr::new(src_ip, udp.source_port()),
            SocketAddr::new(dst_ip, udp.destination_port()),
            eth.source(),
            eth.destination(),
            udp.payload().to_vec(),
        )
    }

    #[test]
    fn relays_both_ways_in_place_and_returns_every_frame() {
        let mut s = setup();
        let total = s.fw.xsk().frames();
        let client = s.five_tuple.client.0;
        for i in 0..200u32 {
            let data: Vec<u8> = (0..(i as usize % 97))
                .map(|k| (k as u8) ^ (i as u8))
                .collect();
            let cd = s.client_frame(&channel_data(0x4001, &data));
            assert!(s.fw.xsk().inject_with_meta(0, &to_peer_meta(), &cd));
            let up = udp_frame(MAC_PEER, MAC_P, s.peer, s.relay.0, &data);
            assert!(s.fw.xsk().inject_with_meta(1, &to_client_meta(), &up));
            assert_eq!(s.fw.poll(s.t0 + Duration::from_secs(1)), 2);
            let out = s.fw.xsk().take_sent(1);
            assert_eq!(out.len(), 1, "one datagram to the peer");
            let (src, dst, smac, dmac, payload) = decode(&out[0]);
            assert_eq!((src, dst, smac, dmac), (s.relay.0, s.peer, MAC_P, MAC_PEER));
            assert_eq!(payload, data);
            let back = s.fw.xsk().take_sent(0);
            assert_eq!(back.len(), 1, "one datagram to the client");
            let (src, dst, smac, dmac, payload) = decode(&back[0]);
            assert_eq!(
                (src, dst, smac, dmac),
                (s.five_tuple.server, client, MAC_C, MAC_CLIENT)
            );
            assert_eq!(payload, channel_data(0x4001, &data));
        }
        let st = s.fw.stats();
        assert_eq!((st.received, st.to_peer, st.to_client), (400, 200, 200));
        let c = s.fw.data_plane().counters(s.relay).unwrap();
        assert_eq!((c.to_peer_packets, c.to_client_packets), (200, 200));
        s.fw.poll(s.t0 + Duration::from_secs(1));
        s.fw.xsk().check_accounting().unwrap();
        assert_eq!(
            s.fw.xsk().caller_frames(),
            0,
            "no frame held by the forwarder"
        );
        assert_eq!(s.fw.xsk().frames(), total);
    }

    #[test]
    fn expired_permission_stops_both_directions_while_the_channel_lives() {
        let mut s = setup();
        let late = s.t0 + Duration::from_secs(301);
        let cd = s.client_frame(&channel_data(0x4001, b"x"));
        let up = udp_frame(MAC_PEER, MAC_P, s.peer, s.relay.0, b"y");
        assert!(s.fw.xsk().inject_with_meta(0, &to_peer_meta(), &cd));
        assert!(s.fw.xsk().inject_with_meta(1, &to_client_meta(), &up));
        s.fw.poll(late);
        assert!(s.fw.xsk().take_sent(0).is_empty());
        assert!(s.fw.xsk().take_sent(1).is_empty());
        assert_eq!(s.fw.stats().dropped_not_allowed, 2);
        assert!(s.fw.slow_path().0.is_empty());
        s.fw.poll(late);
        s.fw.xsk().check_accounting().unwrap();
        assert_eq!(s.fw.xsk().caller_frames(), 0);
    }

    #[test]
    fn peer_without_channel_gets_a_data_indication_on_the_slow_path() {
        let mut s = setup();
        let other = sa("198.51.100.3:7000");
        let up = udp_frame(MAC_PEER, MAC_P, other, s.relay.0, b"no channel here");
        assert!(s.fw.xsk().inject_with_meta(1, &to_client_meta(), &up));
        s.fw.poll(s.t0 + Duration::from_secs(1));
        assert!(s.fw.xsk().take_sent(0).is_empty());
        let sent = &s.fw.slow_path().0;
        assert_eq!(sent.len(), 1);
        let (from, to, bytes) = &sent[0];
        assert_eq!((*from, *to), (s.five_tuple.server, s.five_tuple.client.0));
        let m = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
        assert_eq!(m.attribute(attr::DATA).unwrap().value, b"no channel here");
        let xpa = m.attribute(attr::XOR_PEER_ADDRESS).unwrap();
        let addr = attr::decode_xor_address(xpa.value, &m.transaction_id()).unwrap();
        assert_eq!(addr, other);
        assert_eq!(s.fw.stats().slow_path, 1);
    }

    #[test]
    fn egress_without_a_socket_here_takes_the_slow_path() {
        let mut s = setup();
        let cd = s.client_frame(&channel_data(0x4001, b"via kernel"));
        let m = meta(MAC_PEER, MAC_P, 99, direction::CLIENT_TO_PEER);
        assert!(s.fw.xsk().inject_with_meta(0, &m, &cd));
        s.fw.poll(s.t0 + Duration::from_secs(1));
        assert!(s.fw.xsk().take_sent(1).is_empty());
        assert_eq!(
            s.fw.slow_path().0,
            vec![(s.relay.0, s.peer, b"via kernel".to_vec())]
        );
    }

    /// A full TX ring loses nothing: the rewritten datagrams go through the slow path.
    #[test]
    fn tx_ring_full_sends_through_the_slow_path() {
        let mut cfg = crate::afxdp::ring::XskConfig::new(2048, 64);
        cfg.ring_size = 8;
        let mut s = setup();
        let rings = MemRings::with_config(2, cfg).unwrap();
        s.fw = Forwarder::new(rings, vec![CLIENT_IF, PEER_IF], Recorder::default(), 7);
        for o in installs(&s) {
            s.fw.apply(&o);
        }
        let now = s.t0 + Duration::from_secs(1);
        let mut sent = Vec::new();
        // Nobody takes what is transmitted: the 8-entry TX ring fills.
        for round in 0..3u8 {
            for i in 0..8u8 {
                let data = vec![round, i, 0xAB];
                sent.push(data.clone());
                let cd = s.client_frame(&channel_data(0x4001, &data));
                assert!(s.fw.xsk().inject_with_meta(0, &to_peer_meta(), &cd));
            }
            s.fw.poll(now);
        }
        let st = s.fw.stats();
        assert!(st.slow_path_tx_full > 0, "{st:?}");
        assert_eq!(st.slow_path, st.slow_path_tx_full);
        assert_eq!(st.dropped_tx_full, 0);
        let mut got: Vec<Vec<u8>> =
            s.fw.xsk()
                .take_sent(1)
                .iter()
                .map(|f| decode(f).4)
                .collect();
        for (from, to, bytes) in &s.fw.slow_path().0 {
            assert_eq!((*from, *to), (s.relay.0, s.peer));
            got.push(bytes.clone());
        }
        got.sort();
        sent.sort();
        assert_eq!(
            got, sent,
            "every datagram once, by the ring or the slow path"
        );
        s.fw.poll(now);
        s.fw.xsk().check_accounting().unwrap();
        assert_eq!(s.fw.xsk().caller_frames(), 0);
    }

    /// A relayed packet longer than the egress MTU takes the kernel socket, which
    /// fragments it as the socket path would; one that fits takes the ring.
    #[test]
    fn over_the_egress_mtu_takes_the_slow_path() {
        let mut s = setup();
        s.fw.set_mtu(PEER_IF, 20 + 8 + 100);
        s.fw.set_mtu(CLIENT_IF, 20 + 8 + 4 + 100);
        let now = s.t0 + Duration::from_secs(1);
        for (n, over) in [(100usize, false), (101, true)] {
            let data = vec![7u8; n];
            let cd = s.client_frame(&channel_data(0x4001, &data));
            assert!(s.fw.xsk().inject_with_meta(0, &to_peer_meta(), &cd));
            let up = udp_frame(MAC_PEER, MAC_P, s.peer, s.relay.0, &data);
            assert!(s.fw.xsk().inject_with_meta(1, &to_client_meta(), &up));
            s.fw.poll(now);
            let (to_peer, to_client) = (s.fw.xsk().take_sent(1), s.fw.xsk().take_sent(0));
            let slow = std::mem::take(&mut s.fw.slow_path().0);
            if over {
                assert!(to_peer.is_empty() && to_client.is_empty());
                assert_eq!(
                    slow,
                    vec![
                        (s.relay.0, s.peer, data.clone()),
                        (
                            s.five_tuple.server,
                            s.five_tuple.client.0,
                            channel_data(0x4001, &data)
                        ),
                    ]
                );
            } else {
                assert_eq!((to_peer.len(), to_client.len(), slow.len()), (1, 1, 0));
            }
        }
        assert_eq!(s.fw.stats().slow_path_mtu, 2);
    }

    #[test]
    fn frames_without_metadata_or_with_bad_checksums_are_dropped_and_freed() {
        let mut s = setup();
        let cd = s.client_frame(&channel_data(0x4001, b"abcd"));
        assert!(s.fw.xsk().inject(0, &cd));
        let mut bad = cd.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x40;
        assert!(s.fw.xsk().inject_with_meta(0, &to_peer_meta(), &bad));
        let wrong_channel = s.client_frame(&channel_data(0x4002, b"abcd"));
        assert!(s
            .fw
            .xsk()
            .inject_with_meta(0, &to_peer_meta(), &wrong_channel));
        s.fw.poll(s.t0 + Duration::from_secs(1));
        assert!(s.fw.xsk().take_sent(1).is_empty());
        let st = s.fw.stats();
        assert_eq!(
            (
                st.dropped_no_meta,
                st.dropped_bad_checksum,
                st.dropped_not_allowed
            ),
            (1, 1, 1)
        );
        s.fw.poll(s.t0 + Duration::from_secs(1));
        s.fw.xsk().check_accounting().unwrap();
        assert_eq!(s.fw.xsk().caller_frames(), 0);
    }
}
