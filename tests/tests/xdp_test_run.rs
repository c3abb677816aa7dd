//! The XDP program under BPF_PROG_TEST_RUN (katran style): a fixture table of input frames,
//! each with the expected action, the expected output bytes and the one counter it must
//! increment. Binding responses are also checked independently: IP and UDP checksums
//! recomputed here, the STUN message parsed with `xturn_control::wire`, FINGERPRINT
//! verified, XOR-MAPPED-ADDRESS decoded. Needs root (skips otherwise).

mod xdp_support;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::Xdp;
use aya::{Ebpf, TestRun, TestRunOptions};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xdp_support::{
    in_netns, parse_checked, root_or_skip, unique_tag, FrameSpec, Netns, Xsk, MAC_CLIENT,
    MAC_SERVER, OBJECT,
};
use xturn_control::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use xturn_relay::afxdp::frame::{self, Rewrite};
use xturn_xdp_common::{
    direction, flags, iface_flags, ipv4_mapped, limits, map_names, program_names, relay_flags,
    xsk_index, AllocStats, ChannelKey, ChannelValue, Config, Counter, Endpoint, Expiry, HopRef,
    IfaceValue, ListenPort, ListenValue, PeerChannel, PeerChannelKey, PermissionKey, RelayValue,
    XskMeta, HOP_CACHE_NS, NO_STATS_SLOT, XSK_META_MAGIC,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const SERVER4: &str = "192.0.2.1:3478";
const CLIENT4: &str = "192.0.2.2:40000";
const SERVER6: &str = "[2001:db8::1]:3478";
const CLIENT6: &str = "[2001:db8::2]:40001";
const RELAY4: &str = "198.51.100.1:50000";
const PEER4: &str = "198.51.100.2:6000";
const OTHER_PEER4: &str = "198.51.100.3:6000";
/// A relay port whose allocation has expired.
const EXPIRED_RELAY4: &str = "198.51.100.1:50002";
/// Not a relay port at all.
const UNKNOWN_PORT4: &str = "198.51.100.1:50004";
/// An allocation some permission of which did not fit in the map (PASS_UNPERMITTED).
const DEGRADED_RELAY4: &str = "198.51.100.1:50008";
/// An IPv6 relayed address of the IPv4 client (REQUESTED-ADDRESS-FAMILY) and its peer.
const RELAY6: &str = "[2001:db8:51::1]:50006";
const PEER6: &str = "[2001:db8:51::2]:6000";

const LIVE: u64 = u64::MAX / 2;
const EXPIRED: u64 = 1;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key_ip(a: SocketAddr) -> [u8; 16] {
    match a.ip() {
        std::net::IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn ep(a: SocketAddr) -> Endpoint {
    Endpoint {
        ip: key_ip(a),
        port: a.port().to_be_bytes(),
        _pad: [0; 2],
    }
}

/// User slots of the harness's bandwidth buckets.
const LIMIT_USERS: u32 = 4;

/// The loaded program with its maps.
struct Harness {
    ebpf: Ebpf,
}

impl Harness {
    fn new() -> Harness {
        // Bandwidth buckets for LIMIT_USERS user slots, as the relay sizes them with limits.
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(map_names::LIMITS, limits::entries(LIMIT_USERS))
            .load(OBJECT)
            .expect("load the XDP object");
        let p: &mut Xdp = ebpf
            .program_mut(program_names::XTURN)
            .expect("program")
            .try_into()
            .unwrap();
        p.load().expect("the verifier accepts the program");
        let mut h = Harness { ebpf };
        h.set(flags::ALL);
        let mut listen: HashMap<&mut MapData, Endpoint, ListenValue> =
            HashMap::try_from(h.ebpf.map_mut(map_names::LISTEN).unwrap()).unwrap();
        for a in [SERVER4, SERVER6] {
            listen
                .insert(ep(sa(a)), ListenValue { reserved: 0 }, 0)
                .unwrap();
        }
        let mut ports: Array<&mut MapData, ListenPort> =
            Array::try_from(h.ebpf.map_mut(map_names::LISTEN_PORTS).unwrap()).unwrap();
        for a in [SERVER4, SERVER6] {
            let port = u32::from(sa(a).port());
            let e = ports.get(&port, 0).unwrap().with(key_ip(sa(a)));
            ports.set(port, e, 0).unwrap();
        }
        let mut relays: HashMap<&mut MapData, Endpoint, RelayValue> =
            HashMap::try_from(h.ebpf.map_mut(map_names::RELAYS).unwrap()).unwrap();
        relays
            .insert(ep(sa(RELAY4)), relay_value(LIVE, 10), 0)
            .unwrap();
        relays
            .insert(ep(sa(EXPIRED_RELAY4)), relay_value(EXPIRED, 11), 0)
            .unwrap();
        relays
            .insert(ep(sa(RELAY6)), relay_value(LIVE, 12), 0)
            .unwrap();
        let degraded = RelayValue {
            flags: relay_flags::PASS_UNPERMITTED,
            ..relay_value(LIVE, 13)
        };
        relays.insert(ep(sa(DEGRADED_RELAY4)), degraded, 0).unwrap();
        // Test runs arrive on the namespace's loopback (ifindex 1): XDP_TX works there.
        h.set_iface(1, iface_flags::XDP_TX);
        let mut perms: HashMap<&mut MapData, PermissionKey, Expiry> =
            HashMap::try_from(h.ebpf.map_mut(map_names::PERMISSIONS).unwrap()).unwrap();
        for (relay, peer, exp) in [
            (RELAY4, PEER4, LIVE),
            (RELAY4, OTHER_PEER4, EXPIRED),
            (EXPIRED_RELAY4, PEER4, LIVE),
            (RELAY6, PEER6, LIVE),
        ] {
            let k = PermissionKey {
                peer_ip: key_ip(sa(peer)),
                relay_port: sa(relay).port().to_be_bytes(),
                _pad: [0; 2],
            };
            perms.insert(k, Expiry { expires_ns: exp }, 0).unwrap();
        }
        let mut chans: HashMap<&mut MapData, ChannelKey, ChannelValue> =
            HashMap::try_from(h.ebpf.map_mut(map_names::CHANNELS).unwrap()).unwrap();
        for (ch, peer, exp) in [
            (0x4001u16, PEER4, LIVE),
            (0x4002, PEER4, EXPIRED),
            // Live channel whose peer's permission has expired (as its copy says).
            (0x4003, OTHER_PEER4, LIVE),
        ] {
            let mut v = channel_value(peer, exp, u32::from(ch));
            if ch == 0x4003 {
                v.permission_expires_ns = EXPIRED;
            }
            chans.insert(channel_key(ch), v, 0).unwrap();
        }
        // Live channel of the IPv4 client's IPv6 allocation.
        let mut v6 = channel_value(PEER6, LIVE, 0x4004);
        v6.relay_ip = key_ip(sa(RELAY6));
        v6.relay_port = sa(RELAY6).port().to_be_bytes();
        chans.insert(channel_key(0x4004), v6, 0).unwrap();
        h
    }

    /// Write the run-time switches (`flags` bits).
    fn set(&mut self, flags: u32) {
        let mut cfg: Array<&mut MapData, Config> =
            Array::try_from(self.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
        let old = cfg.get(&0, 0).unwrap();
        cfg.set(0, Config { flags, ..old }, 0).unwrap();
    }

    /// Steer no frame longer than `len` bytes.
    fn set_max_steer_len(&mut self, len: u32) {
        let mut cfg: Array<&mut MapData, Config> =
            Array::try_from(self.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
        let old = cfg.get(&0, 0).unwrap();
        cfg.set(
            0,
            Config {
                max_steer_len: len,
                ..old
            },
            0,
        )
        .unwrap();
    }

    /// Set the `XT_IFACES` flags of interface `ifindex`, keeping its XSK slot.
    fn set_iface(&mut self, ifindex: u32, flags: u32) {
        let mut ifaces: Array<&mut MapData, IfaceValue> =
            Array::try_from(self.ebpf.map_mut(map_names::IFACES).unwrap()).unwrap();
        let old = ifaces.get(&ifindex, 0).unwrap();
        ifaces.set(ifindex, IfaceValue { flags, ..old }, 0).unwrap();
    }

    fn counters(&self) -> Vec<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(map_names::COUNTERS).unwrap()).unwrap();
        Counter::ALL
            .iter()
            .map(|c| m.get(&(*c as u32), 0).unwrap().iter().sum())
            .collect()
    }

    /// Run one frame on interface `ifindex`: (action, metadata bytes, frame bytes, the
    /// counters that moved).
    fn run_moved(&self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>, Vec<Counter>) {
        let before = self.counters();
        let (action, meta, out) = self.run_on(ifindex, frame);
        let after = self.counters();
        let moved = Counter::ALL
            .iter()
            .copied()
            .filter(|c| after[*c as usize] != before[*c as usize])
            .collect();
        (action, meta, out, moved)
    }

    /// Run one frame: (action, metadata bytes, frame bytes).
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>) {
        self.run_on(0, frame)
    }

    /// Run one frame received on interface `ifindex` (0: the namespace's loopback).
    fn run_on(&self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>) {
        let p: &Xdp = self
            .ebpf
            .program(program_names::XTURN)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 512];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each).
        let mut ctx_in = [0u8; 24];
        ctx_in[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx_in[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut ctx_out = [0u8; 24];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {}: {e}", hex(frame)));
        out.truncate(r.data_size_out as usize);
        // No XDP metadata (ctx_out's data_meta offset stays 0): a frame steered to an
        // AF_XDP socket carries its XskMeta as its first bytes, split off here.
        assert_eq!(u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()), 0);
        const META: usize = std::mem::size_of::<XskMeta>();
        if r.return_value == XDP_REDIRECT
            && out.len() > META
            && out[META - 4..META] == XSK_META_MAGIC
        {
            let frame = out.split_off(META);
            return (r.return_value, out, frame);
        }
        (r.return_value, Vec::new(), out)
    }
}

/// The allocation of CLIENT4 (via SERVER4) on a relay port.
/// `slot`: its next-hop cache slot (and id `slot + 1000`).
fn relay_value(expires_ns: u64, slot: u32) -> RelayValue {
    let (c, s) = (sa(CLIENT4), sa(SERVER4));
    RelayValue {
        expires_ns,
        client_ip: key_ip(c),
        server_ip: key_ip(s),
        client_port: c.port().to_be_bytes(),
        server_port: s.port().to_be_bytes(),
        hop: hop_ref(slot),
        flags: 0,
        stats_slot: NO_STATS_SLOT,
        user_slot: u32::MAX,
    }
}

fn hop_ref(slot: u32) -> HopRef {
    HopRef {
        slot,
        id: slot + 1000,
    }
}

fn channel_key(ch: u16) -> ChannelKey {
    let (c, s) = (sa(CLIENT4), sa(SERVER4));
    ChannelKey {
        client_ip: key_ip(c),
        server_ip: key_ip(s),
        client_port: c.port().to_be_bytes(),
        server_port: s.port().to_be_bytes(),
        channel: ch.to_be_bytes(),
        _pad: [0; 2],
    }
}

/// `slot`: its next-hop cache slot (and id `slot + 1000`). Its copies of the allocation
/// and the permission: both live, statistics slot 0 (RELAY4's in [`in_kernel_harness`]).
fn channel_value(peer: &str, expires_ns: u64, slot: u32) -> ChannelValue {
    let (p, r) = (sa(peer), sa(RELAY4));
    ChannelValue {
        peer_ip: key_ip(p),
        relay_ip: key_ip(r),
        peer_port: p.port().to_be_bytes(),
        relay_port: r.port().to_be_bytes(),
        _pad: [0; 4],
        expires_ns,
        hop: hop_ref(slot),
        relay_expires_ns: LIVE,
        permission_expires_ns: LIVE,
        stats_slot: 0,
        user_slot: u32::MAX,
    }
}

fn tid(n: u8) -> TransactionId {
    TransactionId([0xa0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, n])
}

fn binding(n: u8, body: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid(n));
    body(&mut b);
    b.finish()
}

/// What the socket path would put in a Binding response, minus SOFTWARE: the expected
/// STUN payload of the XDP answer.
fn expected_response(n: u8, client: SocketAddr, fingerprint: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new(Method::Binding, Class::Success, tid(n));
    b.xor_addr(attr::XOR_MAPPED_ADDRESS, client);
    if fingerprint {
        b.fingerprint();
    }
    b.finish()
}

/// The exact frame the program must send back for a request from `client` to `server`.
fn expected_frame(client: SocketAddr, server: SocketAddr, stun: &[u8]) -> Vec<u8> {
    let mut s = FrameSpec::new(server, client);
    s.src_mac = MAC_SERVER;
    s.dst_mac = MAC_CLIENT;
    // What the program writes: TOS 0, identification 0, Don't Fragment, TTL/hop limit 64.
    (s.tos, s.id, s.frag, s.ttl) = (0, 0, 0x4000, 64);
    s.build(stun)
}

enum Expect {
    /// The frame unchanged, no metadata.
    Unchanged,
    /// An exact output frame (no metadata).
    Frame(Vec<u8>),
}

struct Fixture {
    desc: &'static str,
    input: Vec<u8>,
    action: u32,
    counter: Counter,
    expect: Expect,
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    FrameSpec::new(sa(CLIENT4), sa(SERVER4)).build(payload)
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    FrameSpec::new(sa(CLIENT6), sa(SERVER6)).build(payload)
}

fn with(f: impl FnOnce(&mut FrameSpec), payload: &[u8]) -> Vec<u8> {
    let mut s = FrameSpec::new(sa(CLIENT4), sa(SERVER4));
    f(&mut s);
    s.build(payload)
}

fn tx(desc: &'static str, input: Vec<u8>, client: &str, server: &str, n: u8, fp: bool) -> Fixture {
    let (c, s) = (sa(client), sa(server));
    Fixture {
        desc,
        input,
        action: XDP_TX,
        counter: if c.is_ipv4() {
            Counter::TxBindingIpv4
        } else {
            Counter::TxBindingIpv6
        },
        expect: Expect::Frame(expected_frame(c, s, &expected_response(n, c, fp))),
    }
}

fn pass(desc: &'static str, input: Vec<u8>, counter: Counter) -> Fixture {
    Fixture {
        desc,
        input,
        action: XDP_PASS,
        counter,
        expect: Expect::Unchanged,
    }
}

fn channel_data(ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ch.to_be_bytes().to_vec();
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn peer_to(peer: &str, relay: &str, payload: &[u8]) -> Vec<u8> {
    FrameSpec::new(sa(peer), sa(relay)).build(payload)
}

/// Interface MACs of the redirect test's namespace, and the peer's (a static neighbour).
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x01];
const MAC_P: [u8; 6] = [0x02, 0, 0, 0, 0x0d, 0x01];
const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0x0d, 0x02];

/// The metadata in front of ChannelData on channel 0x4001 (to PEER4 via RELAY4): the
/// next hop is the peer, out of the peer-side interface `p`.
fn meta_channel(p: u32) -> XskMeta {
    XskMeta {
        dst_mac: MAC_PEER,
        src_mac: MAC_P,
        egress_ifindex: p,
        direction: direction::CLIENT_TO_PEER,
        _pad: [0; 3],
        magic: XSK_META_MAGIC,
    }
}

/// The metadata in front of data from PEER4 to RELAY4: the next hop is the client, out of
/// the client-side interface `c`.
fn meta_peer(c: u32) -> XskMeta {
    XskMeta {
        dst_mac: MAC_CLIENT,
        src_mac: MAC_C,
        egress_ifindex: c,
        direction: direction::PEER_TO_CLIENT,
        _pad: [0; 3],
        magic: XSK_META_MAGIC,
    }
}

fn fixtures() -> Vec<Fixture> {
    let plain = binding(1, |_| {});
    let fp = binding(2, |b| {
        b.fingerprint();
    });
    let software_fp = binding(3, |b| {
        b.attr(attr::SOFTWARE, b"some client 1.0 with a long name");
        b.fingerprint();
    });
    let unknown_optional = binding(4, |b| {
        b.attr(0xc057, &[0, 1, 0, 0]);
    });
    let mut bad_fp = binding(5, |b| {
        b.fingerprint();
    });
    let l = bad_fp.len();
    bad_fp[l - 1] ^= 1;
    let fp_not_last = {
        let mut v = binding(6, |b| {
            b.fingerprint();
        });
        // Append SOFTWARE after FINGERPRINT and fix the length.
        v.extend_from_slice(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
        let len = (v.len() - 20) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v
    };
    let integrity = binding(7, |b| {
        b.message_integrity(b"key");
    });
    let username = binding(8, |b| {
        b.attr(attr::USERNAME, b"alice");
    });
    let mut rfc3489 = binding(9, |_| {});
    rfc3489[4..8].copy_from_slice(&[1, 2, 3, 4]);
    let mut length_not_multiple_of_4 = binding(10, |b| {
        b.attr(attr::SOFTWARE, b"abcd");
    });
    length_not_multiple_of_4[3] -= 2;
    let mut length_past_datagram = binding(11, |_| {});
    length_past_datagram[3] = 8;
    let success = {
        let mut b = MessageBuilder::new(Method::Binding, Class::Success, tid(12));
        b.xor_addr(attr::XOR_MAPPED_ADDRESS, sa(CLIENT4));
        b.finish()
    };
    let allocate = {
        let mut b = MessageBuilder::new(Method::Allocate, Class::Request, tid(13));
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.finish()
    };

    vec![
        tx(
            "IPv4 Binding request",
            udp4(&plain),
            CLIENT4,
            SERVER4,
            1,
            false,
        ),
        tx(
            "IPv4 Binding request with FINGERPRINT",
            udp4(&fp),
            CLIENT4,
            SERVER4,
            2,
            true,
        ),
        tx(
            "IPv6 Binding request",
            udp6(&plain),
            CLIENT6,
            SERVER6,
            1,
            false,
        ),
        tx(
            "IPv6 Binding request with FINGERPRINT",
            udp6(&fp),
            CLIENT6,
            SERVER6,
            2,
            true,
        ),
        tx(
            "SOFTWARE and FINGERPRINT: the answer is shorter (frame shrinks at the head)",
            udp4(&software_fp),
            CLIENT4,
            SERVER4,
            3,
            true,
        ),
        tx(
            "IPv6 with SOFTWARE and FINGERPRINT",
            udp6(&software_fp),
            CLIENT6,
            SERVER6,
            3,
            true,
        ),
        tx(
            "unknown comprehension-optional attribute is ignored",
            udp4(&unknown_optional),
            CLIENT4,
            SERVER4,
            4,
            false,
        ),
        tx(
            "Ethernet padding after the IP packet is trimmed",
            with(|s| s.trailer = vec![0; 6], &plain),
            CLIENT4,
            SERVER4,
            1,
            false,
        ),
        tx(
            "IPv4 UDP checksum zero (none) is accepted",
            with(|s| s.zero_udp_checksum = true, &plain),
            CLIENT4,
            SERVER4,
            1,
            false,
        ),
        pass(
            "MESSAGE-INTEGRITY goes to user space",
            udp4(&integrity),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "USERNAME (comprehension-required) goes to user space",
            udp4(&username),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "RFC 3489 request without magic cookie",
            udp4(&rfc3489),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "bad FINGERPRINT",
            udp4(&bad_fp),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "FINGERPRINT not last",
            udp4(&fp_not_last),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "STUN length not a multiple of 4",
            udp4(&length_not_multiple_of_4),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "STUN length past the datagram",
            udp4(&length_past_datagram),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "truncated STUN header",
            udp4(&plain[..12]),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "Binding success response",
            udp4(&success),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "Allocate request",
            udp4(&allocate),
            Counter::PassStunForUserSpace,
        ),
        pass(
            "bad UDP checksum",
            with(|s| s.bad_udp_checksum = true, &plain),
            Counter::PassBadChecksum,
        ),
        tx(
            "UDP checksum left to offload (CHECKSUM_PARTIAL from a veth): answered",
            with(|s| s.partial_udp_checksum = true, &plain),
            CLIENT4,
            SERVER4,
            1,
            false,
        ),
        tx(
            "IPv6, UDP checksum left to offload: answered",
            {
                let mut s = FrameSpec::new(sa(CLIENT6), sa(SERVER6));
                s.partial_udp_checksum = true;
                s.build(&plain)
            },
            CLIENT6,
            SERVER6,
            1,
            false,
        ),
        pass(
            "IPv6 UDP checksum zero is invalid",
            {
                let mut s = FrameSpec::new(sa(CLIENT6), sa(SERVER6));
                s.zero_udp_checksum = true;
                s.build(&plain)
            },
            Counter::PassBadChecksum,
        ),
        pass(
            "IPv4 options",
            with(|s| s.ipv4_options = vec![1, 1, 1, 0], &plain),
            Counter::PassIpv4OptionsOrFragment,
        ),
        pass(
            "IPv4 fragment (more fragments)",
            with(|s| s.frag = 0x2000, &plain),
            Counter::PassIpv4OptionsOrFragment,
        ),
        pass(
            "IPv4 fragment (offset)",
            with(|s| s.frag = 0x0010, &plain),
            Counter::PassIpv4OptionsOrFragment,
        ),
        pass(
            "wrong port",
            FrameSpec::new(sa(CLIENT4), sa("192.0.2.1:3479")).build(&plain),
            Counter::PassNotOurs,
        ),
        pass(
            "wrong address, right port",
            FrameSpec::new(sa(CLIENT4), sa("192.0.2.9:3478")).build(&plain),
            Counter::PassNotOurs,
        ),
        pass(
            "not UDP",
            with(|s| s.protocol = 6, &plain),
            Counter::PassNotUdp,
        ),
        pass(
            "ARP",
            {
                let mut f = udp4(&plain);
                f[12..14].copy_from_slice(&[0x08, 0x06]);
                f
            },
            Counter::PassNotIp,
        ),
        pass(
            "Ethernet header only",
            udp4(&plain)[..14].to_vec(),
            Counter::PassMalformed,
        ),
        pass(
            "IPv4 total length past the frame",
            {
                let mut f = udp4(&plain);
                f.truncate(f.len() - 4);
                f
            },
            Counter::PassMalformed,
        ),
        pass(
            "neither STUN nor ChannelData to the listener",
            udp4(&[0x80, 0, 0, 0, 1, 2, 3, 4]),
            Counter::PassOtherListenTraffic,
        ),
        Fixture {
            desc: "ChannelData on a live channel: no XSK on the queue, so passed unchanged",
            input: udp4(&channel_data(0x4001, b"hello peer")),
            action: XDP_PASS,
            counter: Counter::PassNoXskChannel,
            expect: Expect::Unchanged,
        },
        pass(
            "ChannelData on an unbound channel",
            udp4(&channel_data(0x4005, b"x")),
            Counter::PassChannelUnbound,
        ),
        pass(
            "ChannelData on an expired channel",
            udp4(&channel_data(0x4002, b"x")),
            Counter::PassChannelUnbound,
        ),
        pass(
            "ChannelData on a live channel whose peer's permission expired: steered like any \
             live channel (the forwarder checks permissions; no XSK here, so passed)",
            udp4(&channel_data(0x4003, b"x")),
            Counter::PassNoXskChannel,
        ),
        pass(
            "ChannelData from another client port",
            FrameSpec::new(sa("192.0.2.2:40009"), sa(SERVER4)).build(&channel_data(0x4001, b"x")),
            Counter::PassChannelUnbound,
        ),
        pass(
            "ChannelData to an IPv6 peer from an IPv4 client: the socket path translates",
            udp4(&channel_data(0x4004, b"x")),
            Counter::PassNoNextHop,
        ),
        pass(
            "ChannelData length past the datagram",
            udp4(&[0x40, 0x01, 0, 200, 1, 2, 3, 4]),
            Counter::PassMalformed,
        ),
        pass(
            "channel 0x5000 (RFC 5766 range) is looked up: unbound here",
            udp4(&channel_data(0x5000, b"x")),
            Counter::PassChannelUnbound,
        ),
        pass(
            "channel 0x7FFF is looked up: never bound",
            udp4(&channel_data(0x7fff, b"x")),
            Counter::PassChannelUnbound,
        ),
        Fixture {
            desc: "peer data with a live permission: no XSK on the queue, so passed unchanged",
            input: peer_to(PEER4, RELAY4, b"to the client"),
            action: XDP_PASS,
            counter: Counter::PassNoXskPeer,
            expect: Expect::Unchanged,
        },
        Fixture {
            desc: "peer data without a permission is dropped",
            input: peer_to("198.51.100.7:6000", RELAY4, b"spoofed"),
            action: XDP_DROP,
            counter: Counter::DropNoPermission,
            expect: Expect::Unchanged,
        },
        Fixture {
            desc: "peer data on an expired permission is dropped",
            input: peer_to(OTHER_PEER4, RELAY4, b"late"),
            action: XDP_DROP,
            counter: Counter::DropNoPermission,
            expect: Expect::Unchanged,
        },
        Fixture {
            desc: "peer data to an expired allocation is dropped",
            input: peer_to(PEER4, EXPIRED_RELAY4, b"late"),
            action: XDP_DROP,
            counter: Counter::DropNoPermission,
            expect: Expect::Unchanged,
        },
        pass(
            "UDP to a port that is not a relayed address",
            peer_to(PEER4, UNKNOWN_PORT4, b"x"),
            Counter::PassNotOurs,
        ),
        pass(
            "peer data without a map permission to an allocation whose permissions did not \
             all fit in the map: the socket path decides",
            peer_to("198.51.100.7:6000", DEGRADED_RELAY4, b"maybe permitted"),
            Counter::PassPermissionNotMirrored,
        ),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn xdp_fixture_table() {
    if !root_or_skip("xdp_fixture_table") {
        return;
    }
    let h = Harness::new();
    let mut failures = Vec::new();
    for f in fixtures() {
        let before = h.counters();
        let (action, meta, frame) = h.run(&f.input);
        let after = h.counters();
        let mut diffs: Vec<(Counter, u64)> = Counter::ALL
            .iter()
            .map(|c| (*c, after[*c as usize] - before[*c as usize]))
            .filter(|(_, d)| *d != 0)
            .collect();
        diffs.sort_by_key(|(c, _)| *c as u32);
        if action != f.action {
            failures.push(format!("{}: action {action}, want {}", f.desc, f.action));
        }
        if diffs != vec![(f.counter, 1)] {
            failures.push(format!(
                "{}: counters {diffs:?}, want [{:?}]",
                f.desc, f.counter
            ));
        }
        let (want_meta, want_frame) = match &f.expect {
            Expect::Unchanged => (Vec::new(), f.input.clone()),
            Expect::Frame(b) => (Vec::new(), b.clone()),
        };
        if meta != want_meta {
            failures.push(format!(
                "{}: metadata\n  got  {}\n  want {}",
                f.desc,
                hex(&meta),
                hex(&want_meta)
            ));
        }
        if frame != want_frame {
            failures.push(format!(
                "{}: frame\n  got  {}\n  want {}",
                f.desc,
                hex(&frame),
                hex(&want_frame)
            ));
        }
        if action == XDP_TX {
            check_response(f.desc, &f.input, &frame);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn meta_bytes(m: &XskMeta) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&m.dst_mac);
    v.extend_from_slice(&m.src_mac);
    v.extend_from_slice(&m.egress_ifindex.to_ne_bytes());
    v.push(m.direction);
    v.extend_from_slice(&m._pad);
    v.extend_from_slice(&m.magic);
    assert_eq!(v.len(), std::mem::size_of::<XskMeta>());
    v
}

/// A Binding response checked without the expected bytes: checksums, addresses swapped,
/// STUN parsed, FINGERPRINT verified, XOR-MAPPED-ADDRESS = the request's source.
fn check_response(desc: &str, request: &[u8], response: &[u8]) {
    let mut req = request.to_vec();
    // A zero (IPv4) or pending-offload UDP checksum is valid input; parse_checked wants a
    // computed one, so the request's is recomputed (its addresses are what matter here).
    let (udp, src, dst): (usize, std::net::IpAddr, std::net::IpAddr) =
        if req[12..14] == [0x08, 0x00] {
            let ihl = (req[14] & 0x0f) as usize * 4;
            let s = <[u8; 4]>::try_from(&req[26..30]).unwrap();
            let d = <[u8; 4]>::try_from(&req[30..34]).unwrap();
            (14 + ihl, s.into(), d.into())
        } else {
            let s = <[u8; 16]>::try_from(&req[22..38]).unwrap();
            let d = <[u8; 16]>::try_from(&req[38..54]).unwrap();
            (54, s.into(), d.into())
        };
    let udp_len = u16::from_be_bytes([req[udp + 4], req[udp + 5]]) as usize;
    req[udp + 6..udp + 8].fill(0);
    let c = xdp_support::udp_checksum(src, dst, &req[udp..udp + udp_len]);
    req[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    let q = parse_checked(&req, desc);
    let r = parse_checked(response, desc);
    assert_eq!(
        (r.src, r.dst),
        (q.dst, q.src),
        "{desc}: addresses not swapped"
    );
    assert_eq!(
        (r.src_mac, r.dst_mac),
        (q.dst_mac, q.src_mac),
        "{desc}: MACs not swapped"
    );
    let m = Message::new_checked(&r.payload[..]).unwrap_or_else(|e| panic!("{desc}: {e}"));
    assert_eq!(
        (m.method(), m.class()),
        (Method::Binding, Class::Success),
        "{desc}"
    );
    let qm = Message::new_checked(&q.payload[..]).unwrap();
    assert_eq!(
        m.transaction_id(),
        qm.transaction_id(),
        "{desc}: transaction id"
    );
    let had_fp = qm.attribute(attr::FINGERPRINT).is_some();
    assert_eq!(m.check_fingerprint(), Ok(had_fp), "{desc}: FINGERPRINT");
    let xma = m
        .attribute(attr::XOR_MAPPED_ADDRESS)
        .expect("XOR-MAPPED-ADDRESS");
    let mapped = attr::decode_xor_address(xma.value, &m.transaction_id()).unwrap();
    assert_eq!(mapped, q.src, "{desc}: XOR-MAPPED-ADDRESS");
}

/// Frames built here are what the fixtures claim: a sanity check of the test's own builder
/// against the control crate's parser, so a builder bug cannot hide a program bug.
#[test]
fn xdp_fixture_builder_is_consistent() {
    let f = udp4(&binding(1, |b| {
        b.fingerprint();
    }));
    let p = parse_checked(&f, "builder");
    assert_eq!(p.src, sa(CLIENT4));
    let m = Message::new_checked(&p.payload[..]).unwrap();
    assert_eq!(m.check_fingerprint(), Ok(true));
    let f6 = udp6(&binding(1, |_| {}));
    assert_eq!(parse_checked(&f6, "builder v6").dst, sa(SERVER6));
}

#[test]
fn xdp_switches_turn_features_off() {
    if !root_or_skip("xdp_switches_turn_features_off") {
        return;
    }
    let mut h = Harness::new();
    let plain = udp4(&binding(1, |_| {}));
    let cd = udp4(&channel_data(0x4001, b"x"));
    let peer = FrameSpec::new(sa("198.51.100.7:6000"), sa(RELAY4)).build(b"x");
    let optional = udp4(&binding(4, |b| {
        b.attr(0xc057, &[0, 1, 0, 0]);
    }));
    let cases: [(u32, &Vec<u8>, u32, Counter); 6] = [
        (
            flags::ALL & !flags::STUN_RESPONDER,
            &plain,
            XDP_PASS,
            Counter::PassStunDisabled,
        ),
        (
            flags::ALL & !flags::STEERING,
            &cd,
            XDP_PASS,
            Counter::PassSteeringDisabled,
        ),
        (
            flags::ALL & !flags::STEERING,
            &peer,
            XDP_PASS,
            Counter::PassSteeringDisabled,
        ),
        (
            flags::ALL & !flags::IGNORE_UNKNOWN_OPTIONAL,
            &optional,
            XDP_PASS,
            Counter::PassStunForUserSpace,
        ),
        (0, &plain, XDP_PASS, Counter::PassStunDisabled),
        (flags::ALL, &plain, XDP_TX, Counter::TxBindingIpv4),
    ];
    for (f, input, action, counter) in cases {
        h.set(f);
        let before = h.counters()[counter as usize];
        let (a, _, out) = h.run(input);
        assert_eq!(a, action, "flags {f:#x} {counter:?}");
        assert_eq!(
            h.counters()[counter as usize],
            before + 1,
            "flags {f:#x} {counter:?}"
        );
        if a == XDP_PASS {
            assert_eq!(&out, input, "flags {f:#x}: a passed frame is unchanged");
        }
    }
}

/// Binding requests are answered only where an XDP_TX'd frame arrives (`XT_IFACES` flags,
/// set by user space from what it found out about the interface), and in generic mode
/// only with a complete UDP checksum (the socket buffer's stale offload state would apply
/// to the answer).
#[test]
fn xdp_answers_binding_only_where_xdp_tx_arrives() {
    if !root_or_skip("xdp_answers_binding_only_where_xdp_tx_arrives") {
        return;
    }
    let mut h = Harness::new();
    let full = udp4(&binding(1, |_| {}));
    let partial = with(|s| s.partial_udp_checksum = true, &binding(1, |_| {}));
    let bad = with(|s| s.bad_udp_checksum = true, &binding(1, |_| {}));
    let generic = iface_flags::XDP_TX | iface_flags::GENERIC;
    let cases: [(u32, &Vec<u8>, u32, Counter); 7] = [
        (0, &full, XDP_PASS, Counter::PassNoXdpTx),
        (0, &partial, XDP_PASS, Counter::PassNoXdpTx),
        (0, &bad, XDP_PASS, Counter::PassBadChecksum),
        (iface_flags::GENERIC, &full, XDP_PASS, Counter::PassNoXdpTx),
        (generic, &full, XDP_TX, Counter::TxBindingIpv4),
        (generic, &partial, XDP_PASS, Counter::PassNoXdpTx),
        (
            iface_flags::XDP_TX,
            &partial,
            XDP_TX,
            Counter::TxBindingIpv4,
        ),
    ];
    for (f, input, action, counter) in cases {
        h.set_iface(1, f);
        let before = h.counters();
        let (a, _, out) = h.run(input);
        let after = h.counters();
        assert_eq!(a, action, "iface flags {f:#x} {counter:?}");
        assert_eq!(after[counter as usize], before[counter as usize] + 1);
        assert_eq!(after.iter().sum::<u64>(), before.iter().sum::<u64>() + 1);
        if a == XDP_PASS {
            assert_eq!(&out, input, "a passed frame is unchanged");
        } else {
            parse_checked(&out, "the answer has full checksums");
        }
    }
}

/// Keep the calling thread on the CPU it runs on now.
fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu has no arguments; the cpu_set_t is a plain bit set on the stack,
    // passed with its size.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity");
    }
}

/// Give the peer (198.51.100.2, on `p`) a new static neighbour entry in the calling
/// thread's network namespace.
fn set_peer_mac(mac: [u8; 6]) {
    let mac = mac.map(|b| format!("{b:02x}")).join(":");
    xdp_support::run(&[
        "ip",
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        &mac,
        "dev",
        "p",
        "nud",
        "permanent",
    ]);
}

/// `ip -n NS <cmd>` (words separated by single spaces).
fn ip_in(ns: &str, cmd: &str) {
    let args: Vec<&str> = cmd.split(' ').collect();
    xdp_support::run(&[&["ip", "-n", ns][..], &args[..]].concat());
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The relay's two sides inside namespace `ns`: a veth pair `c` (client side, MAC_C) and
/// `p` (peer side, MAC_P), not yet addressed or up.
fn relay_veths(ns: &str) {
    ip_in(ns, "link add c type veth peer name p");
    ip_in(ns, &format!("link set c address {}", mac_text(MAC_C)));
    ip_in(ns, &format!("link set p address {}", mac_text(MAC_P)));
}

/// With an AF_XDP socket in the XSK map slot of the receive interface and queue, live
/// ChannelData and permitted peer data are redirected to it (XDP_REDIRECT) with the next
/// hop from the kernel's FIB and neighbour tables in the metadata; without a usable next
/// hop or without the egress interface served they are passed; what the state does not
/// allow is still passed or dropped.
#[test]
fn xdp_redirects_to_a_bound_xsk() {
    if !root_or_skip("xdp_redirects_to_a_bound_xsk") {
        return;
    }
    let ns = Netns::new(format!("{}x", unique_tag()));
    let name = ns.name.clone();
    // Two interfaces, the relay's two sides: `c` (192.0.2.1, client side) and `p`
    // (198.51.100.1, peer side), a veth pair inside the namespace, with static neighbours
    // for the client and the peer. 198.51.100.3 (OTHER_PEER4) has no neighbour entry.
    let sh = |cmd: &str| ip_in(&name, cmd);
    let mac = mac_text;
    relay_veths(&name);
    sh("addr add 192.0.2.1/24 dev c");
    sh("addr add 198.51.100.1/24 dev p");
    sh("link set c up");
    sh("link set p up");

    sh(&format!(
        "neigh replace 192.0.2.2 lladdr {} dev c nud permanent",
        mac(MAC_CLIENT)
    ));
    sh(&format!(
        "neigh replace 198.51.100.2 lladdr {} dev p nud permanent",
        mac(MAC_PEER)
    ));
    in_netns(&name, || {
        // One CPU for every run: the program caches next hops per CPU.
        pin_to_current_cpu();
        let (c, p) = (ifindex("c"), ifindex("p"));
        assert!(c != 0 && p != 0);
        let xsk_c = Xsk::bind("c", 0).expect("AF_XDP socket on c");
        let xsk_p = Xsk::bind("p", 0).expect("AF_XDP socket on p");
        let mut h = Harness::new();
        {
            let mut xsks: XskMap<&mut MapData> =
                XskMap::try_from(h.ebpf.map_mut(map_names::XSKS).unwrap()).unwrap();
            use std::os::fd::AsRawFd;
            // c in slot 0, p in slot 1; test_run frames arrive on queue 0.
            xsks.set(xsk_index(0, 0).unwrap(), xsk_c.fd.as_raw_fd(), 0)
                .unwrap();
            xsks.set(xsk_index(1, 0).unwrap(), xsk_p.fd.as_raw_fd(), 0)
                .unwrap();
        }
        let serve = |h: &mut Harness, ifindex: u32, slot_plus_one: u32| {
            let mut ifaces: Array<&mut MapData, IfaceValue> =
                Array::try_from(h.ebpf.map_mut(map_names::IFACES).unwrap()).unwrap();
            let old = ifaces.get(&ifindex, 0).unwrap();
            let v = IfaceValue {
                xsk_slot: slot_plus_one,
                ..old
            };
            ifaces.set(ifindex, v, 0).unwrap();
        };
        serve(&mut h, c, 1);
        serve(&mut h, p, 2);
        let cd = udp4(&channel_data(0x4001, b"to the peer"));
        let from_peer = peer_to(PEER4, RELAY4, b"to the client");
        let forwarding = |on: bool| {
            let v = format!("net.ipv4.conf.all.forwarding={}", u8::from(on));
            xdp_support::run(&["sysctl", "-qw", &v]);
        };
        let cases = [
            (
                "live channel",
                c,
                cd.clone(),
                XDP_REDIRECT,
                Counter::RedirectChannel,
                meta_bytes(&meta_channel(p)),
            ),
            (
                "permitted peer",
                p,
                from_peer.clone(),
                XDP_REDIRECT,
                Counter::RedirectPeer,
                meta_bytes(&meta_peer(c)),
            ),
            (
                "expired channel",
                c,
                udp4(&channel_data(0x4002, b"expired channel")),
                XDP_PASS,
                Counter::PassChannelUnbound,
                Vec::new(),
            ),
            (
                "peer with an expired permission",
                p,
                peer_to(OTHER_PEER4, RELAY4, b"expired permission"),
                XDP_DROP,
                Counter::DropNoPermission,
                Vec::new(),
            ),
        ];
        let check =
            |h: &Harness, desc: &str, ifx: u32, input: &[u8], action, counter, meta: &[u8]| {
                let before = h.counters();
                let (a, m, frame) = h.run_on(ifx, input);
                let after = h.counters();
                let moved: Vec<_> = Counter::ALL
                    .iter()
                    .filter(|c| after[**c as usize] != before[**c as usize])
                    .collect();
                assert_eq!(a, action, "{desc}: {counter:?} moved {moved:?}");
                assert_eq!(
                    after[counter as usize],
                    before[counter as usize] + 1,
                    "{desc}: {counter:?}"
                );
                assert_eq!(after.iter().sum::<u64>(), before.iter().sum::<u64>() + 1);
                assert_eq!(m, meta, "{desc}: metadata");
                assert_eq!(frame, input, "{desc}: the frame itself is not changed");
            };
        // bpf_fib_lookup answers only for interfaces with forwarding on (its
        // BPF_FIB_LKUP_RET_FWD_DISABLED): off, the socket path relays everything.
        forwarding(false);
        check(
            &h,
            "forwarding off",
            c,
            &cd,
            XDP_PASS,
            Counter::PassNoNextHop,
            &[],
        );
        forwarding(true);
        for (desc, ifx, input, action, counter, meta) in &cases {
            check(&h, desc, *ifx, input, *action, *counter, meta);
        }
        // Longer than a UMEM frame holds (with the XskMeta in front of it): an AF_XDP socket
        // would drop it, so it is passed.
        let steered = (cd.len() + std::mem::size_of::<XskMeta>()) as u32;
        h.set_max_steer_len(steered - 1);
        check(&h, "too big", c, &cd, XDP_PASS, Counter::PassTooBig, &[]);
        h.set_max_steer_len(steered);
        check(
            &h,
            "just fits",
            c,
            &cd,
            XDP_REDIRECT,
            Counter::RedirectChannel,
            &meta_bytes(&meta_channel(p)),
        );
        // The next hop is cached per CPU for HOP_CACHE_NS: the peer's new MAC is used once
        // the entry is that old, not before (so the cache, not bpf_fib_lookup, answered).
        let looked_up = Instant::now();
        const MAC_PEER_NEW: [u8; 6] = [0x02, 0, 0, 0, 0x0d, 0x22];
        // This thread is in the namespace.
        set_peer_mac(MAC_PEER_NEW);
        let new_meta = XskMeta {
            dst_mac: MAC_PEER_NEW,
            ..meta_channel(p)
        };
        let cache = Duration::from_nanos(HOP_CACHE_NS);
        check(
            &h,
            "live channel, next hop cached",
            c,
            &cd,
            XDP_REDIRECT,
            Counter::RedirectChannel,
            &meta_bytes(&meta_channel(p)),
        );
        assert!(
            looked_up.elapsed() < cache,
            "the cached answer was checked within {cache:?}"
        );
        // The coarse clock advances a jiffy (at most 10 ms) at a time.
        std::thread::sleep(cache + Duration::from_millis(50));
        check(
            &h,
            "live channel, next hop looked up again",
            c,
            &cd,
            XDP_REDIRECT,
            Counter::RedirectChannel,
            &meta_bytes(&new_meta),
        );
        // The cache entry belongs to the slot's owner (its id): a refresh keeps the answer;
        // a new id in the slot (user space gave it to another flow) or no slot at all means
        // a look-up at once.
        let looked_up = Instant::now();
        const MAC_PEER_THIRD: [u8; 6] = [0x02, 0, 0, 0, 0x0d, 0x33];
        set_peer_mac(MAC_PEER_THIRD);
        let third_meta = XskMeta {
            dst_mac: MAC_PEER_THIRD,
            ..meta_channel(p)
        };
        let set_channel = |h: &mut Harness, hop: HopRef| {
            let mut chans: HashMap<&mut MapData, ChannelKey, ChannelValue> =
                HashMap::try_from(h.ebpf.map_mut(map_names::CHANNELS).unwrap()).unwrap();
            let v = ChannelValue {
                hop,
                ..channel_value(PEER4, LIVE, 0x4001)
            };
            chans.insert(channel_key(0x4001), v, 0).unwrap();
        };
        set_channel(&mut h, hop_ref(0x4001));
        check(
            &h,
            "refreshed channel, next hop still cached",
            c,
            &cd,
            XDP_REDIRECT,
            Counter::RedirectChannel,
            &meta_bytes(&new_meta),
        );
        assert!(
            looked_up.elapsed() < cache,
            "the cached answer was checked within {cache:?}"
        );
        set_channel(
            &mut h,
            HopRef {
                slot: 0x4001,
                id: 77,
            },
        );
        check(
            &h,
            "new id in the slot, next hop looked up",
            c,
            &cd,
            XDP_REDIRECT,
            Counter::RedirectChannel,
            &meta_bytes(&third_meta),
        );
        set_peer_mac(MAC_PEER);
        set_channel(&mut h, HopRef::NONE);
        check(
            &h,
            "no cache slot, next hop looked up",
            c,
            &cd,
            XDP_REDIRECT,
            Counter::RedirectChannel,
            &meta_bytes(&meta_channel(p)),
        );
        // No neighbour entry for the peer yet: the socket path relays it (and the kernel
        // resolves the neighbour).
        let mut chans: HashMap<&mut MapData, ChannelKey, ChannelValue> =
            HashMap::try_from(h.ebpf.map_mut(map_names::CHANNELS).unwrap()).unwrap();
        chans
            .insert(
                channel_key(0x4009),
                channel_value("198.51.100.9:6000", LIVE, 0x4009),
                0,
            )
            .unwrap();
        let mut perms: HashMap<&mut MapData, PermissionKey, Expiry> =
            HashMap::try_from(h.ebpf.map_mut(map_names::PERMISSIONS).unwrap()).unwrap();
        let k = PermissionKey {
            peer_ip: key_ip(sa("198.51.100.9:6000")),
            relay_port: sa(RELAY4).port().to_be_bytes(),
            _pad: [0; 2],
        };
        perms.insert(k, Expiry { expires_ns: LIVE }, 0).unwrap();
        check(
            &h,
            "peer without a neighbour entry",
            c,
            &udp4(&channel_data(0x4009, b"x")),
            XDP_PASS,
            Counter::PassNoNextHop,
            &[],
        );
        // The egress interface not served: passed.
        serve(&mut h, p, 0);
        check(
            &h,
            "egress not served",
            c,
            &cd,
            XDP_PASS,
            Counter::PassNoNextHop,
            &[],
        );
        // The receive interface not served: no socket, passed.
        check(
            &h,
            "ingress not served",
            p,
            &from_peer,
            XDP_PASS,
            Counter::PassNoXskPeer,
            &[],
        );
        // The interface is served but its queue's socket is gone (its forwarder thread
        // died: user space cleared the slot): passed to the kernel exactly as received,
        // without the XskMeta the program had put in front of it.
        serve(&mut h, p, 2);
        serve(&mut h, c, 1);
        {
            let mut xsks: XskMap<&mut MapData> =
                XskMap::try_from(h.ebpf.map_mut(map_names::XSKS).unwrap()).unwrap();
            xsks.unset(xsk_index(0, 0).unwrap()).unwrap();
        }
        check(
            &h,
            "socket slot emptied",
            c,
            &cd,
            XDP_PASS,
            Counter::PassNoXskChannel,
            &[],
        );
        drop((xsk_c, xsk_p));
    });
    drop(ns);
}

// ------------------------------------------------------------------- in-kernel relay

/// The IPv6 allocation of CLIENT6 (via SERVER6) the in-kernel fixtures relay through.
const RELAY6K: &str = "[2001:db8:51::1]:50010";
const PEER6_OTHER_PORT: &str = "[2001:db8:51::2]:6001";
/// Peer transport addresses with a live permission (PEER4's IP) but no live channel.
const PEER4_NO_CHANNEL: &str = "198.51.100.2:6001";
const PEER4_EXPIRED_CHANNEL: &str = "198.51.100.2:6002";
/// ... and one with a live channel whose entry's copy of that permission has expired.
const PEER4_EXPIRED_COPY: &str = "198.51.100.2:6003";
/// ... and ones whose channel's copy of the permission expires soon (within and beyond
/// the in-kernel relay's margin on the coarse clock).
const PEER4_SOON: &str = "198.51.100.2:6004";
const PEER4_LATER: &str = "198.51.100.2:6005";

/// `CLOCK_MONOTONIC` now, ns: the clock of the map entries' expiry times.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The in-kernel relay reads the coarse clock and stops relaying this long before an
/// expiry (the program's RELAY_MARGIN_NS).
const RELAY_MARGIN_NS: u64 = 50_000_000;

fn peer_channel_key(peer: &str, relay: &str) -> PeerChannelKey {
    PeerChannelKey {
        peer_ip: key_ip(sa(peer)),
        peer_port: sa(peer).port().to_be_bytes(),
        relay_port: sa(relay).port().to_be_bytes(),
    }
}

fn ifindex(n: &str) -> u32 {
    let c = std::ffi::CString::new(n).unwrap();
    // SAFETY: a valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// The in-kernel relay's maps on top of [`Harness::new`]'s: statistics slots 0 (RELAY4)
/// and 1 (RELAY6K), an IPv6 allocation with a channel and permission, the peer -> channel
/// entries, both interfaces in XT_DEVS with XDP_TX, and the IN_KERNEL switch.
fn in_kernel_harness(c: u32, p: u32) -> Harness {
    let mut h = Harness::new();
    h.set(flags::ALL | flags::IN_KERNEL);
    h.set_iface(c, iface_flags::XDP_TX);
    h.set_iface(p, iface_flags::XDP_TX);
    h.set_dev(c, true);
    h.set_dev(p, true);
    let mut relays: HashMap<&mut MapData, Endpoint, RelayValue> =
        HashMap::try_from(h.ebpf.map_mut(map_names::RELAYS).unwrap()).unwrap();
    let v4 = RelayValue {
        stats_slot: 0,
        ..relay_value(LIVE, 10)
    };
    relays.insert(ep(sa(RELAY4)), v4, 0).unwrap();
    let (c6, s6) = (sa(CLIENT6), sa(SERVER6));
    let v6 = RelayValue {
        client_ip: key_ip(c6),
        server_ip: key_ip(s6),
        client_port: c6.port().to_be_bytes(),
        server_port: s6.port().to_be_bytes(),
        stats_slot: 1,
        ..relay_value(LIVE, 20)
    };
    relays.insert(ep(sa(RELAY6K)), v6, 0).unwrap();
    let mut perms: HashMap<&mut MapData, PermissionKey, Expiry> =
        HashMap::try_from(h.ebpf.map_mut(map_names::PERMISSIONS).unwrap()).unwrap();
    let k = PermissionKey {
        peer_ip: key_ip(sa(PEER6)),
        relay_port: sa(RELAY6K).port().to_be_bytes(),
        _pad: [0; 2],
    };
    perms.insert(k, Expiry { expires_ns: LIVE }, 0).unwrap();
    let mut chans: HashMap<&mut MapData, ChannelKey, ChannelValue> =
        HashMap::try_from(h.ebpf.map_mut(map_names::CHANNELS).unwrap()).unwrap();
    let key6 = ChannelKey {
        client_ip: key_ip(c6),
        server_ip: key_ip(s6),
        client_port: c6.port().to_be_bytes(),
        server_port: s6.port().to_be_bytes(),
        channel: 0x4005u16.to_be_bytes(),
        _pad: [0; 2],
    };
    let mut ch6 = channel_value(PEER6, LIVE, 21);
    ch6.relay_ip = key_ip(sa(RELAY6K));
    ch6.relay_port = sa(RELAY6K).port().to_be_bytes();
    ch6.stats_slot = 1;
    chans.insert(key6, ch6, 0).unwrap();
    // A live channel of the expired allocation (its permission is live), as its copy
    // says.
    let mut exp = channel_value(PEER4, LIVE, 22);
    exp.relay_port = sa(EXPIRED_RELAY4).port().to_be_bytes();
    exp.relay_expires_ns = EXPIRED;
    chans.insert(channel_key(0x4006), exp, 0).unwrap();
    // A live channel to the reachable peer whose copy of the permission has expired.
    let mut unpermitted = channel_value(PEER4, LIVE, 23);
    unpermitted.permission_expires_ns = EXPIRED;
    chans.insert(channel_key(0x4008), unpermitted, 0).unwrap();
    let mut pch: HashMap<&mut MapData, PeerChannelKey, PeerChannel> =
        HashMap::try_from(h.ebpf.map_mut(map_names::PEER_CHANNELS).unwrap()).unwrap();
    // (peer, relay, channel, the channel's expiry, its copy of the permission's)
    for (peer, relay, ch, exp, perm) in [
        (PEER4, RELAY4, 0x4001u16, LIVE, LIVE),
        (PEER6, RELAY6K, 0x4005, LIVE, LIVE),
        (PEER4_EXPIRED_CHANNEL, RELAY4, 0x4007, EXPIRED, LIVE),
        (PEER4, EXPIRED_RELAY4, 0x4006, LIVE, LIVE),
        (PEER4_EXPIRED_COPY, RELAY4, 0x4009, LIVE, EXPIRED),
    ] {
        let v = PeerChannel {
            expires_ns: exp,
            permission_expires_ns: perm,
            channel: ch.to_be_bytes(),
            _pad: [0; 6],
        };
        pch.insert(peer_channel_key(peer, relay), v, 0).unwrap();
    }
    h
}

/// A namespace for the in-kernel relay's fixtures: the relay veths `c` (client side) and
/// `p` (peer side, MTU 1400) addressed in both families, the far ends' MACs as permanent
/// neighbours (the next hops), and forwarding on (which `bpf_fib_lookup` wants).
fn in_kernel_netns() -> Netns {
    let ns = Netns::new(format!("{}k", unique_tag()));
    let name = ns.name.clone();
    let sh = |cmd: &str| ip_in(&name, cmd);
    relay_veths(&name);
    sh("link set p mtu 1400");
    sh("addr add 192.0.2.1/24 dev c");
    sh("addr add 2001:db8::1/64 dev c nodad");
    sh("addr add 198.51.100.1/24 dev p");
    sh("addr add 2001:db8:51::1/64 dev p nodad");
    sh("link set c up");
    sh("link set p up");
    for (ip, m, dev) in [
        ("192.0.2.2", MAC_CLIENT, "c"),
        ("2001:db8::2", MAC_CLIENT, "c"),
        ("198.51.100.2", MAC_PEER, "p"),
        ("2001:db8:51::2", MAC_PEER, "p"),
    ] {
        sh(&format!(
            "neigh replace {ip} lladdr {} dev {dev} nud permanent",
            mac_text(m)
        ));
    }
    in_netns(&name, || {
        xdp_support::run(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
        xdp_support::run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    });
    ns
}

/// Run `body` (as root; else the test `name` is skipped) with [`in_kernel_harness`] in a
/// fresh [`in_kernel_netns`], on one CPU, given the indices of `c` and `p`.
fn in_kernel_case(name: &str, body: impl FnOnce(Harness, u32, u32) + Send + 'static) {
    if !root_or_skip(name) {
        return;
    }
    let ns = in_kernel_netns();
    in_netns(&ns.name.clone(), move || {
        pin_to_current_cpu();
        let (c, p) = (ifindex("c"), ifindex("p"));
        assert!(c != 0 && p != 0);
        body(in_kernel_harness(c, p), c, p);
    });
    drop(ns);
}

/// One relayed datagram of `n` bytes of data in the expected statistics of its allocation.
fn count_relayed(s: &mut AllocStats, to_client: bool, n: usize) {
    if to_client {
        s.to_client_packets += 1;
        s.to_client_bytes += n as u64;
    } else {
        s.to_peer_packets += 1;
        s.to_peer_bytes += n as u64;
    }
}

impl Harness {
    /// Put interface `ifindex` in XT_DEVS (a redirect target), or take it out.
    fn set_dev(&mut self, ifindex: u32, present: bool) {
        let mut devs: aya::maps::DevMapHash<&mut MapData> =
            aya::maps::DevMapHash::try_from(self.ebpf.map_mut(map_names::DEVS).unwrap()).unwrap();
        if present {
            devs.insert(ifindex, ifindex, None, 0).unwrap();
        } else {
            devs.remove(ifindex).unwrap();
        }
    }

    /// The in-kernel relay's statistics of slot `slot`, summed over CPUs.
    fn alloc_stats(&self, slot: u32) -> AllocStats {
        let m: PerCpuArray<&MapData, AllocStats> =
            PerCpuArray::try_from(self.ebpf.map(map_names::ALLOC_STATS).unwrap()).unwrap();
        m.get(&slot, 0)
            .unwrap()
            .iter()
            .fold(AllocStats::default(), |a, s| AllocStats {
                to_peer_packets: a.to_peer_packets + s.to_peer_packets,
                to_peer_bytes: a.to_peer_bytes + s.to_peer_bytes,
                to_client_packets: a.to_client_packets + s.to_client_packets,
                to_client_bytes: a.to_client_bytes + s.to_client_bytes,
            })
    }
}

/// What the AF_XDP forwarder's rewrite (`relay/src/afxdp/frame.rs`, an implementation
/// independent of the program's) makes of `input`: client -> peer when `channel` is None.
fn forwarder_rewrite(input: &[u8], channel: Option<u16>, rw: &Rewrite) -> Vec<u8> {
    const HEADROOM: usize = 256;
    let mut buf = vec![0u8; HEADROOM + input.len()];
    buf[HEADROOM..].copy_from_slice(input);
    let (start, len) = match channel {
        None => frame::channel_data_to_udp(&mut buf, HEADROOM, input.len(), rw),
        Some(ch) => frame::udp_to_channel_data(&mut buf, HEADROOM, input.len(), ch, rw),
    }
    .unwrap_or_else(|e| panic!("the forwarder rejects {}: {e:?}", hex(input)));
    buf[start..start + len].to_vec()
}

/// How far the UDP checksum that frame `f` (Ethernet, IPv4 without options or IPv6, UDP,
/// no trailer) carries is from the right one: their one's complement difference, 0 when
/// it is right.
fn udp_checksum_error(f: &[u8]) -> u16 {
    let (src, dst, udp): (std::net::IpAddr, std::net::IpAddr, &[u8]) = if f[12..14] == [8, 0] {
        let s: [u8; 4] = f[26..30].try_into().unwrap();
        let d: [u8; 4] = f[30..34].try_into().unwrap();
        (s.into(), d.into(), &f[34..])
    } else {
        let s: [u8; 16] = f[22..38].try_into().unwrap();
        let d: [u8; 16] = f[38..54].try_into().unwrap();
        (s.into(), d.into(), &f[54..])
    };
    let mut zeroed = udp.to_vec();
    zeroed[6..8].copy_from_slice(&[0, 0]);
    let right = xdp_support::udp_checksum(src, dst, &zeroed);
    let carried = u16::from_be_bytes([udp[6], udp[7]]);
    match xdp_support::fold(u32::from(carried) + u32::from(!right)) {
        0xffff => 0,
        e => e,
    }
}

/// Application data of `n` bytes, different for every length.
fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The in-kernel relay (`flags::IN_KERNEL`) under BPF_PROG_TEST_RUN: ChannelData on a live
/// channel becomes the peer's UDP datagram and peer data on a bound channel becomes
/// ChannelData, in both families, padded and unpadded, every length mod 4, with
/// DSCP/ECN, trailers, zero and pending-offload checksums, with the frame grown at the
/// tail as on drivers without headroom, and in generic mode with a pending offload
/// (headers kept in place, checksum left to the offload); each output is byte for byte what the AF_XDP
/// forwarder's rewrite makes of the same input, and its checksums verify independently.
/// XDP_TX back out of the interface it came in on, a devmap redirect to the other one.
/// What the maps do not fully describe (expired channel, permission or allocation, no
/// channel for the peer, TTL 1, MTU, an egress without XDP_TX or outside XT_DEVS) is not
/// relayed in the kernel; a wrong full UDP checksum is relayed exactly as wrong (an
/// incremental update). Every frame counts exactly one counter; the per-allocation
/// statistics count exactly what was relayed.
#[test]
fn xdp_relays_in_the_kernel() {
    in_kernel_case("xdp_relays_in_the_kernel", |mut h, c, p| {
        let mut failures = Vec::new();
        // (packets, bytes) each way per allocation slot, as the fixtures relay them.
        let mut want_stats = [AllocStats::default(); 2];

        let to_peer4 = Rewrite {
            src_mac: MAC_P,
            dst_mac: MAC_PEER,
            src: sa(RELAY4),
            dst: sa(PEER4),
        };
        let to_peer6 = Rewrite {
            src: sa(RELAY6K),
            dst: sa(PEER6),
            ..to_peer4
        };
        let to_client4 = Rewrite {
            src_mac: MAC_C,
            dst_mac: MAC_CLIENT,
            src: sa(SERVER4),
            dst: sa(CLIENT4),
        };
        let to_client6 = Rewrite {
            src: sa(SERVER6),
            dst: sa(CLIENT6),
            ..to_client4
        };
        // Per family: IPv6?, client, server, peer, relayed address, channel, statistics
        // slot, and the rewrites to the peer and to the client.
        let families = [
            (
                false, CLIENT4, SERVER4, PEER4, RELAY4, 0x4001u16, 0usize, to_peer4, to_client4,
            ),
            (
                true, CLIENT6, SERVER6, PEER6, RELAY6K, 0x4005, 1, to_peer6, to_client6,
            ),
        ];

        // Runs one relayed fixture; returns false (and records why) on a mismatch.
        let mut relayed = |h: &Harness,
                           desc: String,
                           ifx: u32,
                           input: Vec<u8>,
                           channel: Option<u16>,
                           rw: &Rewrite,
                           counter: Counter,
                           slot: usize,
                           data_len: usize| {
            let want = forwarder_rewrite(&input, channel, rw);
            let before = h.counters();
            let (action, meta, out) = h.run_on(ifx, &input);
            let after = h.counters();
            let moved: Vec<Counter> = Counter::ALL
                .iter()
                .copied()
                .filter(|c| after[*c as usize] != before[*c as usize])
                .collect();
            let want_action = match counter {
                Counter::TxChannel | Counter::TxPeer => XDP_TX,
                _ => XDP_REDIRECT,
            };
            if action != want_action || !meta.is_empty() || moved != [counter] {
                failures.push(format!(
                    "{desc}: action {action} (want {want_action}), counters {moved:?} (want \
                     {counter:?}), metadata {}",
                    hex(&meta)
                ));
                return;
            }
            if after[counter as usize] != before[counter as usize] + 1 {
                failures.push(format!("{desc}: {counter:?} moved by more than one"));
            }
            if out != want {
                failures.push(format!(
                    "{desc}: frame\n  got  {}\n  want {}",
                    hex(&out),
                    hex(&want)
                ));
                return;
            }
            let parsed = parse_checked(&out, &desc);
            assert_eq!((parsed.src, parsed.dst), (rw.src, rw.dst), "{desc}");
            count_relayed(&mut want_stats[slot], channel.is_some(), data_len);
        };

        // Up to what the 1400-byte MTU of `p` takes over IPv6 (40 + 8 + 1352).
        let lengths = [
            0usize, 1, 2, 3, 4, 5, 6, 7, 8, 61, 100, 255, 1000, 1351, 1352,
        ];
        for (v6, client, server, peer, relay, channel, slot, to_peer, to_client) in families {
            let fam = if v6 { "IPv6" } else { "IPv4" };
            for &n in &lengths {
                let app = data(n, n as u8);
                for padded in [false, true] {
                    let mut cd = channel_data(channel, &app);
                    if padded {
                        // Padding to a multiple of 4, not zero, as a sender may leave it.
                        while !cd.len().is_multiple_of(4) {
                            cd.push(0xee);
                        }
                    }
                    let mut spec = FrameSpec::new(sa(client), sa(server));
                    (spec.tos, spec.ttl, spec.flow) = (0xb9, 17, 0x12345);
                    relayed(
                        &h,
                        format!("{fam} ChannelData of {n} bytes, padded {padded}"),
                        c,
                        spec.build(&cd),
                        None,
                        &to_peer,
                        Counter::RedirectChannelDev,
                        slot,
                        n,
                    );
                }
                let mut spec = FrameSpec::new(sa(peer), sa(relay));
                (spec.tos, spec.ttl, spec.flow) = (0x2e, 2, 7);
                relayed(
                    &h,
                    format!("{fam} peer data of {n} bytes"),
                    p,
                    spec.build(&app),
                    Some(channel),
                    &to_client,
                    Counter::RedirectPeerDev,
                    slot,
                    n,
                );
            }
            // One interface for both legs: the frame leaves where it came in (XDP_TX).
            let app = data(33, 1);
            relayed(
                &h,
                format!("{fam} ChannelData out of the interface it came in on"),
                p,
                FrameSpec::new(sa(client), sa(server)).build(&channel_data(channel, &app)),
                None,
                &to_peer,
                Counter::TxChannel,
                slot,
                33,
            );
            relayed(
                &h,
                format!("{fam} peer data out of the interface it came in on"),
                c,
                FrameSpec::new(sa(peer), sa(relay)).build(&app),
                Some(channel),
                &to_client,
                Counter::TxPeer,
                slot,
                33,
            );
            // A checksum left to offload (a local sender on a veth) and, over IPv4, none.
            let mut spec = FrameSpec::new(sa(client), sa(server));
            spec.partial_udp_checksum = true;
            relayed(
                &h,
                format!("{fam} ChannelData with a pending checksum offload"),
                c,
                spec.build(&channel_data(channel, &data(21, 2))),
                None,
                &to_peer,
                Counter::RedirectChannelDev,
                slot,
                21,
            );
            let mut spec = FrameSpec::new(sa(peer), sa(relay));
            spec.partial_udp_checksum = true;
            relayed(
                &h,
                format!("{fam} peer data with a pending checksum offload"),
                p,
                spec.build(&data(22, 3)),
                Some(channel),
                &to_client,
                Counter::RedirectPeerDev,
                slot,
                22,
            );
            if !v6 {
                let mut spec = FrameSpec::new(sa(client), sa(server));
                spec.zero_udp_checksum = true;
                spec.trailer = vec![0xaa; 9];
                relayed(
                    &h,
                    "IPv4 ChannelData without a UDP checksum, with a trailer".into(),
                    c,
                    spec.build(&channel_data(channel, &data(3, 4))),
                    None,
                    &to_peer,
                    Counter::RedirectChannelDev,
                    slot,
                    3,
                );
                let mut spec = FrameSpec::new(sa(peer), sa(relay));
                spec.trailer = vec![0; 14];
                relayed(
                    &h,
                    "IPv4 peer data with Ethernet padding".into(),
                    p,
                    spec.build(&data(2, 5)),
                    Some(channel),
                    &to_client,
                    Counter::RedirectPeerDev,
                    slot,
                    2,
                );
            }
            // A driver without headroom: the frame grows at the tail, the data moves.
            h.set(flags::ALL | flags::IN_KERNEL | flags::GROW_AT_TAIL);
            for &n in &[0usize, 1, 2, 3, 4, 5, 6, 7, 99, 1372] {
                let mut spec = FrameSpec::new(sa(peer), sa(relay));
                if n == 2 && !v6 {
                    spec.trailer = vec![0; 14];
                }
                relayed(
                    &h,
                    format!("{fam} peer data of {n} bytes grown at the tail"),
                    p,
                    spec.build(&data(n, 9)),
                    Some(channel),
                    &to_client,
                    Counter::RedirectPeerDev,
                    slot,
                    n,
                );
            }
            h.set(flags::ALL | flags::IN_KERNEL);
        }

        // Generic mode with a pending checksum offload: the frame keeps its socket buffer,
        // whose offload offsets point at the UDP header, so the headers stay in place,
        // the data moves, and the relayed checksum is left to the offload too (the
        // pseudo-header sum). Otherwise the same bytes as the forwarder's rewrite.
        h.set_iface(c, iface_flags::XDP_TX | iface_flags::GENERIC);
        h.set_iface(p, iface_flags::XDP_TX | iface_flags::GENERIC);
        for (v6, client, server, peer, relay, channel, slot, to_peer, to_client) in families {
            for n in [0usize, 1, 2, 3, 4, 5, 6, 7, 250, 1203] {
                let app = data(n, 77);
                for (desc, ifx, input, ch, rw, counter, payload) in [
                    (
                        "ChannelData",
                        c,
                        {
                            let mut s = FrameSpec::new(sa(client), sa(server));
                            s.partial_udp_checksum = true;
                            let mut cd = channel_data(channel, &app);
                            cd.resize(cd.len().next_multiple_of(4), 0);
                            s.build(&cd)
                        },
                        None,
                        to_peer,
                        Counter::RedirectChannelDev,
                        app.clone(),
                    ),
                    (
                        "peer data",
                        p,
                        {
                            let mut s = FrameSpec::new(sa(peer), sa(relay));
                            s.partial_udp_checksum = true;
                            s.build(&app)
                        },
                        Some(channel),
                        to_client,
                        Counter::RedirectPeerDev,
                        channel_data(channel, &app),
                    ),
                ] {
                    let desc =
                        format!("generic mode, pending offload, v6 {v6}: {desc} of {n} bytes");
                    let mut want = forwarder_rewrite(&input, ch, &rw);
                    let mut left = FrameSpec::new(rw.src, rw.dst);
                    left.partial_udp_checksum = true;
                    let field = left.build(&payload);
                    let at = if v6 { 14 + 40 + 6 } else { 14 + 20 + 6 };
                    want[at..at + 2].copy_from_slice(&field[at..at + 2]);
                    let (action, meta, out, moved) = h.run_moved(ifx, &input);
                    if (action, meta.is_empty(), moved.as_slice())
                        != (XDP_REDIRECT, true, &[counter][..])
                        || out != want
                    {
                        failures.push(format!(
                            "{desc}: action {action}, counters {moved:?}\n  got  {}\n  want {}",
                            hex(&out),
                            hex(&want)
                        ));
                        continue;
                    }
                    count_relayed(&mut want_stats[slot], ch.is_some(), n);
                }
            }
        }
        h.set_iface(c, iface_flags::XDP_TX);
        h.set_iface(p, iface_flags::XDP_TX);

        // Not relayed in the kernel: passed, steered (here: no AF_XDP socket, so passed
        // as PassNoXsk*) or dropped exactly as without the in-kernel relay.
        let not_relayed = |h: &Harness, desc: &str, ifx: u32, input: Vec<u8>, action, counter| {
            let (a, m, out, moved) = h.run_moved(ifx, &input);
            assert_eq!((a, moved), (action, vec![counter]), "{desc}");
            assert!(m.is_empty(), "{desc}: metadata");
            assert_eq!(out, input, "{desc}: the frame must be left untouched");
        };
        let cd4 = |ch: u16, spec: FrameSpec| spec.build(&channel_data(ch, b"not here"));
        let from_client = || FrameSpec::new(sa(CLIENT4), sa(SERVER4));
        let stats_before = (h.alloc_stats(0), h.alloc_stats(1));
        not_relayed(
            &h,
            "expired channel",
            c,
            cd4(0x4002, from_client()),
            XDP_PASS,
            Counter::PassChannelUnbound,
        );
        not_relayed(
            &h,
            "channel whose permission expired",
            c,
            cd4(0x4008, from_client()),
            XDP_PASS,
            Counter::PassNoXskChannel,
        );
        not_relayed(
            &h,
            "channel of an expired allocation",
            c,
            cd4(0x4006, from_client()),
            XDP_PASS,
            Counter::PassNoXskChannel,
        );
        let mut ttl1 = from_client();
        ttl1.ttl = 1;
        not_relayed(
            &h,
            "TTL 1",
            c,
            cd4(0x4001, ttl1),
            XDP_PASS,
            Counter::PassNoXskChannel,
        );
        not_relayed(
            &h,
            "longer than the egress MTU (1400)",
            c,
            from_client().build(&channel_data(0x4001, &data(1400 - 28 + 1, 0))),
            XDP_PASS,
            Counter::PassNoXskChannel,
        );
        not_relayed(
            &h,
            "peer without a live permission",
            p,
            peer_to(OTHER_PEER4, RELAY4, b"x"),
            XDP_DROP,
            Counter::DropNoPermission,
        );
        not_relayed(
            &h,
            "peer of an expired allocation",
            p,
            peer_to(PEER4, EXPIRED_RELAY4, b"x"),
            XDP_DROP,
            Counter::DropNoPermission,
        );
        not_relayed(
            &h,
            "permitted peer without a channel",
            p,
            peer_to(PEER4_NO_CHANNEL, RELAY4, b"x"),
            XDP_PASS,
            Counter::PassNoXskPeer,
        );
        not_relayed(
            &h,
            "permitted peer whose channel expired",
            p,
            peer_to(PEER4_EXPIRED_CHANNEL, RELAY4, b"x"),
            XDP_PASS,
            Counter::PassNoXskPeer,
        );
        // XT_PERMS has the permission (the socket path would relay it), but the copy the
        // in-kernel relay reads says it expired: not relayed in the driver.
        not_relayed(
            &h,
            "peer whose channel's copy of the permission expired",
            p,
            peer_to(PEER4_EXPIRED_COPY, RELAY4, b"x"),
            XDP_PASS,
            Counter::PassNoXskPeer,
        );
        not_relayed(
            &h,
            "IPv6 peer without a channel",
            p,
            peer_to(PEER6_OTHER_PORT, RELAY6K, b"x"),
            XDP_PASS,
            Counter::PassNoXskPeer,
        );
        // The coarse clock lags by up to a tick, so the in-kernel relay leaves an entry
        // with less than its margin left to the forwarder (which checks the exact clock):
        // live by the exact clock, 30 ms left, not relayed in the driver, but steered as
        // without the in-kernel relay; with a second left, relayed. (Inserted just
        // before the runs; a stall past the 30 ms gives the same verdicts.)
        let (soon, later) = {
            let now = monotonic_ns();
            (now + RELAY_MARGIN_NS * 3 / 5, now + 1_000_000_000)
        };
        {
            let mut chans: HashMap<&mut MapData, ChannelKey, ChannelValue> =
                HashMap::try_from(h.ebpf.map_mut(map_names::CHANNELS).unwrap()).unwrap();
            // Statistics slot 2: the relayed one must not move slot 0's counts.
            let mut v = channel_value(PEER4, LIVE, 24);
            v.stats_slot = 2;
            v.relay_expires_ns = soon;
            chans.insert(channel_key(0x400a), v, 0).unwrap();
            v.relay_expires_ns = LIVE;
            v.permission_expires_ns = soon;
            chans.insert(channel_key(0x400b), v, 0).unwrap();
            v.permission_expires_ns = LIVE;
            v.expires_ns = soon;
            chans.insert(channel_key(0x400c), v, 0).unwrap();
            v.expires_ns = later;
            v.relay_expires_ns = later;
            v.permission_expires_ns = later;
            chans.insert(channel_key(0x400d), v, 0).unwrap();
            let mut pch: HashMap<&mut MapData, PeerChannelKey, PeerChannel> =
                HashMap::try_from(h.ebpf.map_mut(map_names::PEER_CHANNELS).unwrap()).unwrap();
            for (peer, exp, perm) in [(PEER4_SOON, LIVE, soon), (PEER4_LATER, later, later)] {
                let v = PeerChannel {
                    expires_ns: exp,
                    permission_expires_ns: perm,
                    channel: 0x4001u16.to_be_bytes(),
                    _pad: [0; 6],
                };
                pch.insert(peer_channel_key(peer, RELAY4), v, 0).unwrap();
            }
        }
        for (ch, what) in [
            (0x400a, "allocation"),
            (0x400b, "permission"),
            (0x400c, "channel"),
        ] {
            not_relayed(
                &h,
                &format!("ChannelData whose {what} expires within the margin"),
                c,
                cd4(ch, from_client()),
                XDP_PASS,
                Counter::PassNoXskChannel,
            );
        }
        not_relayed(
            &h,
            "peer whose channel's permission expires within the margin",
            p,
            peer_to(PEER4_SOON, RELAY4, b"x"),
            XDP_PASS,
            Counter::PassNoXskPeer,
        );
        // (The peer's datagram is counted in slot 0: check the cases above first.)
        assert_eq!(
            (h.alloc_stats(0), h.alloc_stats(1)),
            stats_before,
            "nothing not relayed is counted"
        );
        for (desc, ifx, input, counter) in [
            (
                "ChannelData with a second left",
                c,
                cd4(0x400d, from_client()),
                Counter::RedirectChannelDev,
            ),
            (
                "peer data with a second left",
                p,
                peer_to(PEER4_LATER, RELAY4, b"x"),
                Counter::RedirectPeerDev,
            ),
        ] {
            let (a, _, out, moved) = h.run_moved(ifx, &input);
            assert_eq!((a, moved), (XDP_REDIRECT, vec![counter]), "{desc}");
            assert_ne!(out, input, "{desc}: rewritten");
        }
        // Counted exactly: the ChannelData in slot 2 (8 bytes of data), the peer's
        // datagram (1 byte) in slot 0 with the others.
        let s2 = h.alloc_stats(2);
        assert_eq!(
            (s2.to_peer_packets, s2.to_peer_bytes, s2.to_client_packets),
            (1, 8, 0)
        );
        count_relayed(&mut want_stats[0], true, 1);
        let stats_before = (h.alloc_stats(0), h.alloc_stats(1));
        // An egress where an XDP-sent frame does not arrive (a veth whose peer has no
        // XDP program), or that is not in XT_DEVS.
        h.set_iface(p, 0);
        not_relayed(
            &h,
            "egress without XDP_TX",
            c,
            cd4(0x4001, from_client()),
            XDP_PASS,
            Counter::PassNoXskChannel,
        );
        h.set_iface(p, iface_flags::XDP_TX);
        h.set_dev(p, false);
        not_relayed(
            &h,
            "egress not in XT_DEVS",
            c,
            cd4(0x4001, from_client()),
            XDP_PASS,
            Counter::PassNoXskChannel,
        );
        // Switched off: steered as before.
        h.set(flags::ALL);
        not_relayed(
            &h,
            "in-kernel relay off",
            p,
            peer_to(PEER4, RELAY4, b"x"),
            XDP_PASS,
            Counter::PassNoXskPeer,
        );
        assert_eq!(
            (h.alloc_stats(0), h.alloc_stats(1)),
            stats_before,
            "nothing not relayed is counted"
        );

        // A wrong UDP checksum (0x0101 off) is not looked into: the relayed checksum is
        // an incremental update of the received one, so the datagram leaves exactly as
        // wrong (its receiver drops it), and otherwise as the forwarder relays the right
        // one.
        h.set(flags::ALL | flags::IN_KERNEL);
        h.set_dev(p, true);
        for (v6, client, server, peer, relay, channel, slot, to_peer, to_client) in families {
            for n in [0usize, 1, 100, 1001] {
                let app = data(n, 7);
                for (dir, ifx, spec, payload, ch, rw, counter) in [
                    (
                        "ChannelData",
                        c,
                        FrameSpec::new(sa(client), sa(server)),
                        channel_data(channel, &app),
                        None,
                        &to_peer,
                        Counter::RedirectChannelDev,
                    ),
                    (
                        "peer data",
                        p,
                        FrameSpec::new(sa(peer), sa(relay)),
                        app.clone(),
                        Some(channel),
                        &to_client,
                        Counter::RedirectPeerDev,
                    ),
                ] {
                    let desc = format!("v6 {v6}: {dir} of {n} bytes with a wrong UDP checksum");
                    let right = forwarder_rewrite(&spec.build(&payload), ch, rw);
                    let mut bad = spec.clone();
                    bad.bad_udp_checksum = true;
                    let input = bad.build(&payload);
                    let before = h.counters()[counter as usize];
                    let (action, meta, out) = h.run_on(ifx, &input);
                    assert_eq!(action, XDP_REDIRECT, "{desc}");
                    assert!(meta.is_empty(), "{desc}: metadata");
                    assert_eq!(h.counters()[counter as usize], before + 1, "{desc}");
                    let error = udp_checksum_error(&input);
                    assert_ne!(error, 0, "{desc}: the input's checksum must be wrong");
                    assert_eq!(
                        udp_checksum_error(&out),
                        error,
                        "{desc}: as wrong as it came"
                    );
                    let field = if v6 { 14 + 40 + 6 } else { 14 + 20 + 6 };
                    let mut fixed = out.clone();
                    fixed[field..field + 2].copy_from_slice(&right[field..field + 2]);
                    assert_eq!(hex(&fixed), hex(&right), "{desc}: all but the checksum");
                    count_relayed(&mut want_stats[slot], ch.is_some(), n);
                }
            }
        }

        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(
            h.alloc_stats(0),
            want_stats[0],
            "IPv4 allocation statistics"
        );
        assert_eq!(
            h.alloc_stats(1),
            want_stats[1],
            "IPv6 allocation statistics"
        );
    });
}

impl Harness {
    /// Turn the bandwidth limits on (`flags::LIMITED` with the in-kernel relay) at these
    /// rates, with the buckets' clock at 0 `epoch_ago_ns` ago.
    fn set_limits(&mut self, allocation_bps: u32, user_bps: u32, epoch_ago_ns: u64) {
        let mut cfg: Array<&mut MapData, Config> =
            Array::try_from(self.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
        let c = Config {
            flags: flags::ALL | flags::IN_KERNEL | flags::LIMITED,
            allocation_bps,
            user_bps,
            limits_epoch_ns: monotonic_ns() - epoch_ago_ns,
            ..cfg.get(&0, 0).unwrap()
        };
        cfg.set(0, c, 0).unwrap();
    }

    fn bucket(&self, index: u32) -> u64 {
        let m: Array<&MapData, u64> =
            Array::try_from(self.ebpf.map(map_names::LIMITS).unwrap()).unwrap();
        m.get(&index, 0).unwrap()
    }

    fn set_bucket(&mut self, index: u32, ms: u32, tokens: u32) {
        let mut m: Array<&mut MapData, u64> =
            Array::try_from(self.ebpf.map_mut(map_names::LIMITS).unwrap()).unwrap();
        m.set(index, (u64::from(ms) << 32) | u64::from(tokens), 0)
            .unwrap();
    }
}

/// The in-kernel relay under bandwidth limits (`flags::LIMITED`), BPF_PROG_TEST_RUN: a
/// datagram is relayed in the driver only when its allocation's bucket (and its user's,
/// where it has a user slot) holds its application data, which is then taken from it
/// exactly; otherwise the frame is left untouched and steered as without the in-kernel
/// relay (the forwarder and the socket path take from the same buckets and drop it),
/// and nothing is counted as relayed. Each direction has its own bucket. A bucket whose
/// time is ahead of the program's clock (another CPU or user space read a later clock
/// and stored first) keeps its time. The rates are 1 B/s, so that no bucket refills
/// a byte during the test.
#[test]
fn xdp_in_kernel_relay_takes_from_the_shared_buckets() {
    in_kernel_case(
        "xdp_in_kernel_relay_takes_from_the_shared_buckets",
        |mut h, c, p| {
            // The buckets' clock at 100 s, so that times ahead of and behind it fit.
            const EPOCH_AGO_NS: u64 = 100_000_000_000;
            h.set_limits(1, 0, EPOCH_AGO_NS);
            let relay4 = sa(RELAY4).port();
            let to_peer = limits::allocation_bucket(false, relay4, limits::TO_PEER);
            let to_client = limits::allocation_bucket(false, relay4, limits::TO_CLIENT);
            // 8 bytes of application data client -> peer on channel 0x4001 (statistics slot
            // 0), 1 byte peer -> client.
            let cd =
                FrameSpec::new(sa(CLIENT4), sa(SERVER4)).build(&channel_data(0x4001, b"8 bytes!"));
            let pd = peer_to(PEER4, RELAY4, b"x");
            let mut stats = h.alloc_stats(0);
            let run = |h: &Harness, desc: &str, ifx: u32, input: &[u8], want: Counter| {
                let (a, _, out, moved) = h.run_moved(ifx, input);
                let relayed =
                    matches!(want, Counter::RedirectChannelDev | Counter::RedirectPeerDev);
                let action = if relayed { XDP_REDIRECT } else { XDP_PASS };
                assert_eq!((a, moved), (action, vec![want]), "{desc}");
                assert_eq!(out != input, relayed, "{desc}: rewritten only when relayed");
            };

            // Client -> peer. A bucket behind the clock (written at 50 s) with 100 bytes:
            // relayed, refilled at 1 B/s for the time since, 8 taken, its time now the
            // program's clock.
            h.set_bucket(to_peer, 50_000, 100);
            let before_ms = ((EPOCH_AGO_NS - 1_000_000_000) / 1_000_000) as u32;
            run(
                &h,
                "ChannelData within the limit",
                c,
                &cd,
                Counter::RedirectChannelDev,
            );
            let b = h.bucket(to_peer);
            let at = (b >> 32) as u32;
            assert!(
                (before_ms..=before_ms + 2_000).contains(&at),
                "bucket time {at} ms: the program's clock (about 100,000)"
            );
            let refilled = u64::from(at - 50_000) / 1000;
            assert_eq!(b & 0xffff_ffff, 100 + refilled - 8, "8 bytes taken");
            count_relayed(&mut stats, false, 8);
            // 5 bytes left: not relayed, nothing taken, nothing counted.
            h.set_bucket(to_peer, at, 5);
            run(
                &h,
                "ChannelData over the limit",
                c,
                &cd,
                Counter::PassNoXskChannel,
            );
            assert_eq!(h.bucket(to_peer), (u64::from(at) << 32) | 5, "untouched");
            // A bucket 5 s ahead of the program's clock (user space's time): the time stays.
            let ahead = at + 5_000;
            h.set_bucket(to_peer, ahead, 8);
            run(
                &h,
                "ChannelData, bucket time ahead",
                c,
                &cd,
                Counter::RedirectChannelDev,
            );
            assert_eq!(
                h.bucket(to_peer),
                u64::from(ahead) << 32,
                "8 taken, time kept"
            );
            count_relayed(&mut stats, false, 8);
            assert_eq!(
                h.bucket(to_client) & 0xffff_ffff,
                0,
                "the other direction untouched"
            );

            // Peer -> client: its own bucket.
            h.set_bucket(to_client, ahead, 1);
            run(
                &h,
                "peer data within the limit",
                p,
                &pd,
                Counter::RedirectPeerDev,
            );
            assert_eq!(h.bucket(to_client), u64::from(ahead) << 32, "1 byte taken");
            count_relayed(&mut stats, true, 1);
            run(
                &h,
                "peer data over the limit",
                p,
                &pd,
                Counter::PassNoXskPeer,
            );
            assert_eq!(
                h.alloc_stats(0),
                stats,
                "exactly what was relayed is counted"
            );

            // A per-user limit only: the channel's and the allocation's user slot 1. Channel
            // 0x400e of RELAY4 (statistics slot 2) and user slot 1; the peer channel of
            // PEER4 (0x4001) via RELAY4's allocation entry.
            h.set_limits(0, 1, EPOCH_AGO_NS);
            {
                let mut chans: HashMap<&mut MapData, ChannelKey, ChannelValue> =
                    HashMap::try_from(h.ebpf.map_mut(map_names::CHANNELS).unwrap()).unwrap();
                let mut v = channel_value(PEER4, LIVE, 25);
                v.stats_slot = 2;
                v.user_slot = 1;
                chans.insert(channel_key(0x400e), v, 0).unwrap();
            }
            let user_to_peer = limits::user_bucket(1, limits::TO_PEER, LIMIT_USERS).unwrap();
            let cd_user =
                FrameSpec::new(sa(CLIENT4), sa(SERVER4)).build(&channel_data(0x400e, b"8 bytes!"));
            h.set_bucket(user_to_peer, ahead, 7);
            run(
                &h,
                "ChannelData over its user's limit",
                c,
                &cd_user,
                Counter::PassNoXskChannel,
            );
            h.set_bucket(user_to_peer, ahead, 8);
            run(
                &h,
                "ChannelData within its user's limit",
                c,
                &cd_user,
                Counter::RedirectChannelDev,
            );
            assert_eq!(h.bucket(user_to_peer), u64::from(ahead) << 32);
            let s2 = h.alloc_stats(2);
            assert_eq!((s2.to_peer_packets, s2.to_peer_bytes), (1, 8));
            // Without a user slot (channel 0x4001): no per-user limit, as in user space;
            // the empty bucket of the allocation is not read with the allocation limit off.
            h.set_bucket(to_peer, ahead, 0);
            run(
                &h,
                "ChannelData without a user slot",
                c,
                &cd,
                Counter::RedirectChannelDev,
            );
            assert_eq!(
                h.bucket(to_peer),
                u64::from(ahead) << 32,
                "allocation bucket unread"
            );
            // Limits off: relayed whatever the buckets hold.
            h.set(flags::ALL | flags::IN_KERNEL);
            h.set_bucket(user_to_peer, ahead, 0);
            run(&h, "limits off", c, &cd_user, Counter::RedirectChannelDev);
        },
    );
}
