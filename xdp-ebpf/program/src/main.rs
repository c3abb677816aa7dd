//! # xturn-xdp: xturn's XDP program
//!
//! Runs in the driver on every frame of the interfaces `xturn --xdp` attaches it to:
//!
//! ```text
//! frame ─ Ethernet ─ IPv4 (no options, no fragment) | IPv6 (no extension header) ─ UDP
//!   to a listening address (XT_LISTEN):
//!     plain STUN Binding request, where XDP_TX arrives ──► Binding success response
//!       rewritten in place ──► XDP_TX
//!     ChannelData on a live channel (XT_CHANNELS + XT_PERMS + XT_RELAYS) ──► XSK of the queue
//!     anything else ──► XDP_PASS (the socket path answers)
//!   to a relayed address (XT_RELAYS):
//!     from a peer with a live permission (XT_PERMS) ──► XSK of the queue
//!     from anyone else ──► XDP_DROP (RFC 8656 section 10.3)
//!   anything else ──► XDP_PASS
//! ```
//!
//! A redirect falls back to XDP_PASS when no AF_XDP socket is bound on the receive queue
//! (`bpf_redirect_map` flags = XDP_PASS), so the socket path serves everything the fast
//! path cannot. Every frame increments exactly one per-CPU counter (`XT_COUNTERS`, indexed
//! by `Counter`); [`xturn_xdp`] is one match from outcome to action and counter.
//!
//! The STUN responder is a strict subset of the socket path (RFC 8489): it answers only a
//! Binding request with the magic cookie, a length that fills the datagram, and no
//! attribute other than SOFTWARE, FINGERPRINT (verified) and, when `IGNORE_UNKNOWN_OPTIONAL`
//! is set, unknown comprehension-optional ones; the IPv4 header and UDP checksums must be
//! right (the kernel would drop the datagram otherwise), a UDP checksum left to offload
//! (CHECKSUM_PARTIAL, from a local sender on a veth) counting as right. It answers only on
//! interfaces where user space found that an XDP_TX'd frame arrives (`XT_IFACES`); on the
//! others the socket path answers. The answer carries XOR-MAPPED-ADDRESS and, when the
//! request had one, FINGERPRINT.
//!
//! Peer data without a live permission is dropped, unless some permission of that
//! allocation did not fit in the map (`relay_flags::PASS_UNPERMITTED`): then the socket
//! path decides, so a full map never drops what user space would relay.
//!
//! Every packet access is bounds-checked once per header against `data_end`; loops have
//! constant bounds. The ABI (maps, keys, values, counters) lives in `xturn-xdp-common`.

#![no_std]
#![no_main]
// The target has no atomics in `core` (no `target_has_atomic`), but the BPF ISA v3 the
// object is built for has compare-and-swap: the intrinsic emits it.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_SUCCESS, BPF_F_MMAPABLE},
    btf_maps::{Array, DevMapHash, HashMap, PerCpuArray, XskMap},
    helpers::{
        bpf_check_mtu, bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::mem::size_of;
use xturn_xdp_common::{
    capacity, direction, flags, iface_flags, limits, listen_flags, map_names, program_names,
    relay_flags, xsk_index, AllocStats, ChannelKey, ChannelValue, Config, Counter, Endpoint,
    Expiry, HopEntry, HopRef, IfaceValue, ListenPort, ListenValue, PeerChannel, PeerChannelKey,
    PermissionKey, RelayValue, XskMeta, HOP_CACHE_NS, XSK_META_MAGIC,
};

// ------------------------------------------------------------------------------ maps

// BTF-defined maps (section `.maps`): their key and value types are in the object's BTF
// with every member, which is what `tests/tests/xdp_abi.rs` compares with the Rust types.

#[btf_map]
static XT_CONFIG: Array<Config, 1> = Array::new();
#[btf_map]
static XT_LISTEN: HashMap<Endpoint, ListenValue, { capacity::LISTEN as usize }> = HashMap::new();
#[btf_map]
static XT_LPORTS: Array<ListenPort, { capacity::LISTEN_PORTS as usize }> = Array::new();
#[btf_map]
static XT_CHANNELS: HashMap<ChannelKey, ChannelValue, { capacity::CHANNELS as usize }> =
    HashMap::new();
#[btf_map]
static XT_PERMS: HashMap<PermissionKey, Expiry, { capacity::PERMISSIONS as usize }> =
    HashMap::new();
#[btf_map]
static XT_RELAYS: HashMap<Endpoint, RelayValue, { capacity::RELAYS as usize }> = HashMap::new();
#[btf_map]
static XT_IFACES: Array<IfaceValue, { capacity::IFACES as usize }> = Array::new();
#[btf_map]
static XT_XSKS: XskMap<{ capacity::XSKS as usize }> = XskMap::new();
#[btf_map]
static XT_COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();
#[btf_map]
static XT_HOPS: PerCpuArray<HopEntry, { capacity::HOPS as usize }> = PerCpuArray::new();
#[btf_map]
static XT_PEER_CH: HashMap<PeerChannelKey, PeerChannel, { capacity::CHANNELS as usize }> =
    HashMap::new();
#[btf_map]
static XT_DEVS: DevMapHash<{ capacity::DEVS as usize }> = DevMapHash::new();
#[btf_map]
static XT_ASTATS: PerCpuArray<AllocStats, { capacity::RELAYS as usize }> = PerCpuArray::new();
/// One entry in the object: user space sizes it (`limits::entries`) when limits apply.
#[btf_map]
static XT_LIMITS: Array<u64, 1, { BPF_F_MMAPABLE as usize }> = Array::new();

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The map statics' names are the map names user space looks up: checked at compile time
/// against the single definition in `xturn-xdp-common`.
macro_rules! assert_named {
    ($($item:ident => $name:expr),* $(,)?) => {
        $(const _: () = assert!(str_eq(stringify!($item), $name));)*
    };
}
assert_named!(
    XT_CONFIG => map_names::CONFIG,
    XT_LISTEN => map_names::LISTEN,
    XT_LPORTS => map_names::LISTEN_PORTS,
    XT_IFACES => map_names::IFACES,
    XT_CHANNELS => map_names::CHANNELS,
    XT_PERMS => map_names::PERMISSIONS,
    XT_RELAYS => map_names::RELAYS,
    XT_XSKS => map_names::XSKS,
    XT_COUNTERS => map_names::COUNTERS,
    XT_HOPS => map_names::HOPS,
    XT_PEER_CH => map_names::PEER_CHANNELS,
    XT_DEVS => map_names::DEVS,
    XT_ASTATS => map_names::ALLOC_STATS,
    XT_LIMITS => map_names::LIMITS,
    xturn_xdp => program_names::XTURN,
    xturn_xdp_pass => program_names::PASS,
);

// --------------------------------------------------------------------------- headers

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const STUN_HEADER_LEN: usize = 20;
const CHANNEL_DATA_HEADER_LEN: usize = 4;

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const IPPROTO_UDP: u8 = 17;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const SOFTWARE: u16 = 0x8022;
const FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Longest Binding request answered here (STUN header and attributes); longer ones go to
/// user space. Bounds the attribute walk and the checksum and CRC loops.
const MAX_STUN_LEN: usize = 256;
/// Most attributes in a Binding request answered here.
const MAX_ATTRIBUTES: usize = 8;

/// TTL / hop limit of answers.
const TTL: u8 = 64;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    protocol: u8,
    checksum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

#[repr(C)]
struct UdpHdr {
    src: [u8; 2],
    dst: [u8; 2],
    len: [u8; 2],
    checksum: [u8; 2],
}

#[repr(C)]
struct StunHdr {
    typ: [u8; 2],
    len: [u8; 2],
    cookie: [u8; 4],
    tid: [u8; 12],
}

// Packet pointers are read from the context with volatile loads in every function that
// uses them. Plain loads let LLVM hoist them into the caller and pass them as (32-bit)
// arguments, which the verifier then sees as scalars, not packet pointers.

#[inline(always)]
fn data(ctx: &XdpContext) -> usize {
    // SAFETY: `ctx.ctx` is the kernel's xdp_md for this invocation.
    unsafe { core::ptr::read_volatile(&raw const (*ctx.ctx).data) as usize }
}

#[inline(always)]
fn data_end(ctx: &XdpContext) -> usize {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const (*ctx.ctx).data_end) as usize }
}

/// The one bounds check of a header: `size_of::<T>()` bytes at `off` inside the frame.
#[inline(always)]
fn header<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = data(ctx);
    if start + off + size_of::<T>() > data_end(ctx) {
        return None;
    }
    Some((start + off) as *mut T)
}

/// `x`, hidden from the optimiser. A loop over a variable length keeps its explicit
/// constant bound only if LLVM cannot prove it redundant from facts the verifier does not
/// track (e.g. a length checked in the caller); the verifier needs that bound to accept
/// the packet access.
#[inline(always)]
fn opaque(x: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&x) }
}

#[inline(always)]
const fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

// --------------------------------------------------------------------------- outcome

/// What the program decided for a frame. 8-byte aligned like the structs on the stack
/// (see [`Datagram`]): it is returned through a stack slot.
#[repr(align(8))]
enum Verdict {
    Pass(Counter),
    Drop(Counter),
    Tx(Counter),
    /// Redirect to the XSK at `index` (the receive queue's); `ok` counts a redirect,
    /// `fallback` a frame passed on because no socket is bound there.
    Redirect {
        index: u32,
        ok: Counter,
        fallback: Counter,
    },
    /// Redirect a frame relayed in the driver to interface `ifindex` (in `XT_DEVS`).
    RedirectDev {
        ifindex: u32,
        ok: Counter,
    },
    Aborted,
}

/// The entry point: one match from outcome to action, and one counter per frame.
#[xdp]
pub fn xturn_xdp(ctx: XdpContext) -> u32 {
    let (counter, action) = match classify(&ctx) {
        Verdict::Pass(c) => (c, xdp_action::XDP_PASS),
        Verdict::Drop(c) => (c, xdp_action::XDP_DROP),
        Verdict::Tx(c) => (c, xdp_action::XDP_TX),
        Verdict::Redirect {
            index,
            ok,
            fallback,
        } => match XT_XSKS.redirect(index, u64::from(xdp_action::XDP_PASS)) {
            Ok(action) => (ok, action),
            Err(action) => {
                // No socket in the slot (its forwarder died): the frame goes to the
                // kernel as it came, without the XskMeta put in front of it.
                // SAFETY: ctx is the program's context; this undoes `set_meta`'s move.
                if unsafe { bpf_xdp_adjust_head(ctx.ctx, size_of::<XskMeta>() as i32) } == 0 {
                    (fallback, action)
                } else {
                    (Counter::Aborted, xdp_action::XDP_ABORTED)
                }
            }
        },
        // Flags 0: a failed redirect (the device left the map since the look-up) aborts
        // the rewritten frame.
        Verdict::RedirectDev { ifindex, ok } => match XT_DEVS.redirect(ifindex, 0) {
            Ok(action) => (ok, action),
            Err(action) => (Counter::Aborted, action),
        },
        Verdict::Aborted => (Counter::Aborted, xdp_action::XDP_ABORTED),
    };
    count(counter);
    action
}

/// Passes every frame: for the far end of a veth pair (see `program_names::PASS`).
#[xdp]
pub fn xturn_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = XT_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU array slot of this CPU; XDP programs do not nest on one CPU.
        unsafe { *p += 1 };
    }
}

// --------------------------------------------------------------------------- parsing

#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
enum Family {
    #[default]
    V4,
    V6,
}

/// A parsed UDP datagram: addresses (IPv4-mapped for IPv4), ports, and where its payload is.
///
/// Structs that live on the BPF stack are 8-byte aligned with every field at an offset
/// aligned to its size (up to 8): the program is built with misaligned access allowed
/// (fast packet loads), so LLVM merges neighbouring byte copies into wide loads and stores,
/// and the verifier accepts those on the stack only when they are aligned.
#[derive(Default)]
#[repr(C, align(8))]
struct Datagram {
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    /// Offset of the UDP header from the frame start.
    udp_off: usize,
    /// UDP payload length (from the UDP header; at most what the IP header allows).
    payload_len: usize,
    src_port: [u8; 2],
    dst_port: [u8; 2],
    family: Family,
    /// The run-time switches (`Config::flags`) for this frame. With `family`, 8 bytes: the
    /// size is a multiple of 8, so whole-struct copies and zeroing take aligned stores only.
    cfg: u32,
}

impl Datagram {
    const fn payload_off(&self) -> usize {
        self.udp_off + UDP_LEN
    }
}

fn classify(ctx: &XdpContext) -> Verdict {
    let cfg = match XT_CONFIG.get(0) {
        Some(c) => c.flags,
        None => 0,
    };
    let mut d = Datagram::default();
    if let Err(c) = parse(ctx, &mut d) {
        return Verdict::Pass(c);
    }
    d.cfg = cfg;
    let mut server_ip = Ip16([0; 16]);
    if listening(&d, &mut server_ip) {
        return to_listener(ctx, &d, &server_ip, cfg);
    }
    let relay = Endpoint {
        ip: d.dst_ip,
        port: d.dst_port,
        _pad: [0; 2],
    };
    // SAFETY: the value is read at once; the map holds plain data.
    if let Some(alloc) = unsafe { XT_RELAYS.get(&relay) } {
        if cfg & flags::STEERING == 0 {
            return Verdict::Pass(Counter::PassSteeringDisabled);
        }
        return from_peer(ctx, &d, alloc);
    }
    Verdict::Pass(Counter::PassNotOurs)
}

/// Parse Ethernet, IP and UDP into `d` (an out-parameter: a returned struct would be
/// copied on the 512-byte BPF stack).
#[inline(never)]
fn parse(ctx: &XdpContext, d: &mut Datagram) -> Result<(), Counter> {
    let eth = header::<EthHdr>(ctx, 0).ok_or(Counter::PassNotIp)?;
    let frame_len = data_end(ctx) - data(ctx);
    // SAFETY: `header` checked the bounds.
    let ethertype = unsafe { (*eth).ethertype };
    let (family, src_ip, dst_ip, udp_off, ip_payload_len) = if ethertype == ETHERTYPE_IPV4 {
        let ip = header::<Ipv4Hdr>(ctx, ETH_LEN).ok_or(Counter::PassMalformed)?;
        // SAFETY: `header` checked the bounds.
        let ip = unsafe { &*ip };
        if ip.version_ihl >> 4 != 4 {
            return Err(Counter::PassMalformed);
        }
        if ip.version_ihl != 0x45 || be16(ip.frag) & 0x3fff != 0 {
            return Err(Counter::PassIpv4OptionsOrFragment);
        }
        if ip.protocol != IPPROTO_UDP {
            return Err(Counter::PassNotUdp);
        }
        let total = be16(ip.total_len) as usize;
        if total < IPV4_LEN || ETH_LEN + total > frame_len {
            return Err(Counter::PassMalformed);
        }
        (
            Family::V4,
            xturn_xdp_common::ipv4_mapped(ip.src),
            xturn_xdp_common::ipv4_mapped(ip.dst),
            ETH_LEN + IPV4_LEN,
            total - IPV4_LEN,
        )
    } else if ethertype == ETHERTYPE_IPV6 {
        let ip = header::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(Counter::PassMalformed)?;
        // SAFETY: `header` checked the bounds.
        let ip = unsafe { &*ip };
        if ip.version_class_flow[0] >> 4 != 6 {
            return Err(Counter::PassMalformed);
        }
        if ip.next_header != IPPROTO_UDP {
            return Err(Counter::PassNotUdp);
        }
        let payload = be16(ip.payload_len) as usize;
        if ETH_LEN + IPV6_LEN + payload > frame_len {
            return Err(Counter::PassMalformed);
        }
        (Family::V6, ip.src, ip.dst, ETH_LEN + IPV6_LEN, payload)
    } else {
        return Err(Counter::PassNotIp);
    };
    let udp = header::<UdpHdr>(ctx, udp_off).ok_or(Counter::PassMalformed)?;
    // SAFETY: `header` checked the bounds.
    let udp = unsafe { &*udp };
    let udp_len = be16(udp.len) as usize;
    if udp_len < UDP_LEN || udp_len > ip_payload_len {
        return Err(Counter::PassMalformed);
    }
    *d = Datagram {
        family,
        src_ip,
        dst_ip,
        src_port: udp.src,
        dst_port: udp.dst,
        udp_off,
        payload_len: udp_len - UDP_LEN,
        cfg: 0,
    };
    Ok(())
}

/// An IP address on the stack, aligned like [`Datagram`].
#[repr(C, align(8))]
struct Ip16([u8; 16]);

/// Is the datagram for a listening address? Then `server_ip` is that address (its own, or
/// the wildcard of its family). The port index answers the common cases; the hash map the
/// ports with several addresses of a family.
#[inline(never)]
fn listening(d: &Datagram, server_ip: &mut Ip16) -> bool {
    let Some(lp) = XT_LPORTS.get(u32::from(be16(d.dst_port))) else {
        return false;
    };
    let (one, any, more) = match d.family {
        Family::V4 => (
            listen_flags::V4_ONE,
            listen_flags::V4_ANY,
            listen_flags::V4_MORE,
        ),
        Family::V6 => (
            listen_flags::V6_ONE,
            listen_flags::V6_ANY,
            listen_flags::V6_MORE,
        ),
    };
    let f = lp.flags;
    if f & (one | any | more) == 0 {
        return false;
    }
    let own = match d.family {
        Family::V4 => d.dst_ip[12..] == lp.v4,
        Family::V6 => d.dst_ip == lp.v6,
    };
    if f & one != 0 && own {
        server_ip.0 = d.dst_ip;
        return true;
    }
    if f & more != 0 {
        let key = Endpoint {
            ip: d.dst_ip,
            port: d.dst_port,
            _pad: [0; 2],
        };
        if XT_LISTEN.get_ptr(&key).is_some() {
            server_ip.0 = d.dst_ip;
            return true;
        }
    }
    if f & any != 0 {
        server_ip.0 = match d.family {
            Family::V4 => xturn_xdp_common::ipv4_mapped([0; 4]),
            Family::V6 => [0; 16],
        };
        return true;
    }
    false
}

fn to_listener(ctx: &XdpContext, d: &Datagram, server_ip: &Ip16, cfg: u32) -> Verdict {
    let Some(first) = header::<[u8; CHANNEL_DATA_HEADER_LEN]>(ctx, d.payload_off()) else {
        return Verdict::Pass(Counter::PassOtherListenTraffic);
    };
    if d.payload_len < CHANNEL_DATA_HEADER_LEN {
        return Verdict::Pass(Counter::PassOtherListenTraffic);
    }
    // SAFETY: `header` checked the bounds.
    let first = unsafe { *first };
    match first[0] {
        // RFC 7983 / RFC 8656 section 12: 0-3 STUN, 0x40-0x7F ChannelData. The channel
        // map holds only numbers the control plane accepted: 0x4000-0x4FFF, or RFC 5766's
        // 0x4000-0x7FFE with --rfc5766-channels; any other number is simply unbound.
        0x00..=0x03 => {
            if cfg & flags::STUN_RESPONDER == 0 {
                return Verdict::Pass(Counter::PassStunDisabled);
            }
            binding(ctx, d, cfg)
        }
        0x40..=0x7f => {
            if cfg & flags::STEERING == 0 {
                return Verdict::Pass(Counter::PassSteeringDisabled);
            }
            channel_data(ctx, d, server_ip, first)
        }
        _ => Verdict::Pass(Counter::PassOtherListenTraffic),
    }
}

// ------------------------------------------------------------------------- steering

/// CLOCK_MONOTONIC at jiffy resolution: a load where `bpf_ktime_get_ns` reads the clock
/// source (`read_tsc` and its caller were 8 % of the relay core with the in-kernel relay
/// at saturation). It lags the exact clock by at most one tick (4 ms at HZ=250, 10 ms at
/// HZ=100) and is never ahead of it, so an entry it finds expired has expired: the drop
/// and pass decisions taken with it are never early. Where the program only steers, its
/// expiry checks only pre-filter (the forwarder checks every frame against its exact copy
/// of the data plane). The in-kernel relay decides itself, so it judges with
/// [`RELAY_MARGIN_NS`] added: an entry with less than that left goes the way it would
/// without the in-kernel relay (to the forwarder, which checks the exact clock).
#[inline(always)]
fn now_ns(_cfg: u32) -> u64 {
    // SAFETY: a helper without arguments; CLOCK_MONOTONIC_COARSE nanoseconds.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// How long before its expiry (by the coarse clock) the in-kernel relay stops relaying
/// on a channel, permission or allocation, and leaves the frame to the forwarder: more
/// than the coarse clock's lag (one tick), so that no frame is relayed in the driver after
/// its channel, permission or allocation expired while the lag is under 50 ms.
const RELAY_MARGIN_NS: u64 = 50_000_000;

/// `now` as the in-kernel relay judges expiry: [`RELAY_MARGIN_NS`] ahead.
#[inline(always)]
fn relay_deadline(now: u64) -> u64 {
    now.saturating_add(RELAY_MARGIN_NS)
}

/// Is the permission for `peer_ip` on relay port `relay_port` live?
#[inline(always)]
fn permitted(relay_port: [u8; 2], peer_ip: [u8; 16], now: u64) -> bool {
    let key = PermissionKey {
        peer_ip,
        relay_port,
        _pad: [0; 2],
    };
    // SAFETY: the value is read at once; the map holds plain data.
    matches!(unsafe { XT_PERMS.get(&key) }, Some(p) if now < p.expires_ns)
}

/// ChannelData from a client: steered when its channel is bound and live and the kernel
/// knows the next hop to the peer. The forwarder then makes every check of
/// `DataPlane::client_to_peer` (channel, the peer's permission, the allocation, exactly
/// at its clock), so the permission and allocation look-ups are not repeated here: on
/// this path they cost more than the rest of the program.
#[inline(never)]
fn channel_data(
    ctx: &XdpContext,
    d: &Datagram,
    server_ip: &Ip16,
    header: [u8; CHANNEL_DATA_HEADER_LEN],
) -> Verdict {
    let cfg = d.cfg;
    // Channel number and length (RFC 8656 section 12.4).
    let channel = [header[0], header[1]];
    let length = be16([header[2], header[3]]);
    if CHANNEL_DATA_HEADER_LEN + length as usize > d.payload_len {
        return Verdict::Pass(Counter::PassMalformed);
    }
    let key = ChannelKey {
        client_ip: d.src_ip,
        server_ip: server_ip.0,
        client_port: d.src_port,
        server_port: d.dst_port,
        channel,
        _pad: [0; 2],
    };
    // Read in place: the value stays valid for the whole program run (RCU), and a copy
    // to the stack costs more than the fields read.
    let Some(ch) = XT_CHANNELS.get_ptr(&key) else {
        return Verdict::Pass(Counter::PassChannelUnbound);
    };
    // SAFETY: a live map value of this type.
    let ch = unsafe { &*ch };
    let now = now_ns(cfg);
    if now >= ch.expires_ns {
        return Verdict::Pass(Counter::PassChannelUnbound);
    }
    // A relayed address of the other family (REQUESTED-ADDRESS-FAMILY): the forwarder does
    // not translate between families and the next hop would be looked up in the wrong
    // table; the socket path relays it.
    if is_v4_mapped(&ch.peer_ip) != (d.family == Family::V4) {
        return Verdict::Pass(Counter::PassNoNextHop);
    }
    let hop = Hop {
        family: d.family,
        src_ip: &ch.relay_ip,
        dst_ip: &ch.peer_ip,
        src_port: ch.relay_port,
        dst_port: ch.peer_port,
        cache: ch.hop,
    };
    if cfg & flags::IN_KERNEL != 0 && relay_deadline(now) < ch.expires_ns {
        match relay_channel_data(ctx, d, ch, &hop, now, header) {
            NOT_RELAYED => {}
            ABORTED => return Verdict::Aborted,
            egress => return relayed(ctx, egress, Counter::TxChannel, Counter::RedirectChannelDev),
        }
    }
    steer(
        ctx,
        &hop,
        now,
        direction::CLIENT_TO_PEER,
        Counter::RedirectChannel,
        Counter::PassNoXskChannel,
    )
}

/// A datagram to a relayed address: steered with a live permission and allocation (when
/// the kernel knows the next hop to the client), dropped otherwise.
#[inline(never)]
fn from_peer(ctx: &XdpContext, d: &Datagram, alloc: &RelayValue) -> Verdict {
    let cfg = d.cfg;
    let now = now_ns(cfg);
    if now >= alloc.expires_ns {
        return Verdict::Drop(Counter::DropNoPermission);
    }
    // The in-kernel relay needs the peer's channel, whose entry carries the permission's
    // expiry as user space copied it from XT_PERMS: with both live, XT_PERMS is not
    // looked up. Without the in-kernel relay the channel is not looked up at all.
    let mut channel = NO_CHANNEL;
    if cfg & flags::IN_KERNEL != 0 {
        let key = PeerChannelKey {
            peer_ip: d.src_ip,
            peer_port: d.src_port,
            relay_port: d.dst_port,
        };
        // SAFETY: the value is read at once; the map holds plain data.
        if let Some(pc) = unsafe { XT_PEER_CH.get(&key) } {
            let deadline = relay_deadline(now);
            if deadline < pc.expires_ns
                && deadline < pc.permission_expires_ns
                && deadline < alloc.expires_ns
            {
                channel = pc.channel;
            }
        }
    }
    if channel == NO_CHANNEL && !permitted(d.dst_port, d.src_ip, now) {
        // A permission user space could not put in the map may exist: let it decide.
        if alloc.flags & relay_flags::PASS_UNPERMITTED != 0 {
            return Verdict::Pass(Counter::PassPermissionNotMirrored);
        }
        return Verdict::Drop(Counter::DropNoPermission);
    }
    // The client's family is the listener's, which may differ from the peer's
    // (ADDITIONAL-ADDRESS-FAMILY): the forwarder does not translate, the socket path does.
    if is_v4_mapped(&alloc.client_ip) != (d.family == Family::V4) {
        return Verdict::Pass(Counter::PassNoNextHop);
    }
    let hop = Hop {
        family: d.family,
        src_ip: &alloc.server_ip,
        dst_ip: &alloc.client_ip,
        src_port: alloc.server_port,
        dst_port: alloc.client_port,
        cache: alloc.hop,
    };
    if channel != NO_CHANNEL {
        match relay_peer_data(ctx, d, alloc, &hop, now, channel) {
            NOT_RELAYED => {}
            ABORTED => return Verdict::Aborted,
            egress => return relayed(ctx, egress, Counter::TxPeer, Counter::RedirectPeerDev),
        }
    }
    steer(
        ctx,
        &hop,
        now,
        direction::PEER_TO_CLIENT,
        Counter::RedirectPeer,
        Counter::PassNoXskPeer,
    )
}

/// Is `ip` IPv4-mapped (`::ffff:a.b.c.d`)? Compared as two words: a slice comparison
/// becomes a call to `memcmp`.
#[inline(always)]
fn is_v4_mapped(ip: &[u8; 16]) -> bool {
    let p = ip.as_ptr();
    // SAFETY: 12 bytes inside the array; unaligned reads.
    let (a, b) = unsafe {
        (
            core::ptr::read_unaligned(p.cast::<u64>()),
            core::ptr::read_unaligned(p.add(8).cast::<u32>()),
        )
    };
    a == 0 && b == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

/// The datagram a steered frame becomes (the forwarder sends it from `src` to `dst`),
/// read in place from the map value, and where its next hop is cached.
struct Hop<'a> {
    src_ip: &'a [u8; 16],
    dst_ip: &'a [u8; 16],
    src_port: [u8; 2],
    dst_port: [u8; 2],
    family: Family,
    cache: HopRef,
}

/// `bpf_fib_lookup`'s parameters, aligned for the stack like [`Datagram`].
#[repr(C, align(8))]
struct Fib(FibParams);

const _: () = assert!(size_of::<Fib>() % 8 == 0);

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Redirect to this queue's AF_XDP socket with the next hop of `hop` ([`next_hop`]) in
/// the metadata, or pass to the socket path when there is no usable next hop (one that
/// leaves by an interface AF_XDP sockets serve) or no socket.
#[inline(always)]
fn steer(
    ctx: &XdpContext,
    hop: &Hop,
    now: u64,
    direction: u8,
    ok: Counter,
    fallback: Counter,
) -> Verdict {
    // SAFETY: ctx.ctx is the kernel's xdp_md.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(index) = served_slot(ingress).and_then(|slot| xsk_index(slot, ctx.rx_queue_index()))
    else {
        return Verdict::Pass(fallback);
    };
    // An AF_XDP socket drops a frame longer than its UMEM frames hold; the kernel would not.
    let max_len = match XT_CONFIG.get(0) {
        Some(c) => c.max_steer_len as usize,
        None => 0,
    };
    if max_len != 0 && data_end(ctx) - data(ctx) + size_of::<XskMeta>() > max_len {
        return Verdict::Pass(Counter::PassTooBig);
    }
    let mut nh = NextHop::default();
    if !next_hop(ctx, hop, now, ingress, &mut nh) || served_slot(nh.egress).is_none() {
        return Verdict::Pass(Counter::PassNoNextHop);
    }
    redirect(ctx, nh.dmac, nh.smac, nh.egress, direction, index, ok, fallback)
}

/// Where a relayed frame goes: the egress interface and the Ethernet addresses to write.
/// Laid out for the stack like [`Datagram`].
#[derive(Default)]
#[repr(C, align(8))]
struct NextHop {
    dmac: [u16; 3],
    smac: [u16; 3],
    egress: u32,
}

/// The next hop of `hop` for a frame that came in on `ingress`, into `out`; false when
/// there is none the program can use (no route, neighbour not resolved, wildcard source).
/// It comes from this CPU's entry in the flow's slot of [`XT_HOPS`] while that entry is
/// the flow's (same id and ingress interface) and younger than [`HOP_CACHE_NS`], else
/// from `bpf_fib_lookup` (the costliest step of the program), and is cached again. The
/// slot is an array index: no hashing, no key to build.
#[inline(always)]
fn next_hop(ctx: &XdpContext, hop: &Hop, now: u64, ingress: u32, out: &mut NextHop) -> bool {
    // None for NO_HOP_SLOT (beyond the array).
    let entry = XT_HOPS.get_ptr_mut(hop.cache.slot);
    if let Some(e) = entry {
        // SAFETY: this CPU's entry, read at once: XDP programs do not nest on one CPU and
        // nothing else writes it.
        let e = unsafe { &*e };
        if hop.cache.id != 0
            && e.hop_id == hop.cache.id
            && e.ingress_ifindex == ingress
            && now.wrapping_sub(e.checked_ns) < HOP_CACHE_NS
        {
            out.dmac = mac_words(&e.dst_mac);
            out.smac = mac_words(&e.src_mac);
            out.egress = e.egress_ifindex;
            return true;
        }
    }
    if *hop.src_ip == [0; 16] || *hop.src_ip == xturn_xdp_common::ipv4_mapped([0; 4]) {
        // A wildcard server address: the forwarder would not know what to send from.
        return false;
    }
    // Zeroed with aligned 8-byte stores one at a time: left to LLVM, the zeroing around
    // the fields written below is merged into misaligned stores, which the verifier
    // rejects on the stack (see [`Datagram`]).
    let mut fib = core::mem::MaybeUninit::<Fib>::uninit();
    let q = fib.as_mut_ptr().cast::<u64>();
    for i in 0..size_of::<Fib>() / 8 {
        // SAFETY: inside the 8-byte aligned block of a multiple of 8 bytes.
        unsafe { core::ptr::write_volatile(q.add(i), 0) };
    }
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of them).
    let p = unsafe { &mut (*fib.as_mut_ptr()).0 };
    p.l4_protocol = IPPROTO_UDP;
    p.sport = u16::from_ne_bytes(hop.src_port);
    p.dport = u16::from_ne_bytes(hop.dst_port);
    p.ifindex = ingress;
    match hop.family {
        Family::V4 => {
            p.family = AF_INET;
            let (s, d) = (hop.src_ip, hop.dst_ip);
            p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([s[12], s[13], s[14], s[15]]);
            p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([d[12], d[13], d[14], d[15]]);
        }
        Family::V6 => {
            p.family = AF_INET6;
            // SAFETY: writes of the u32 arrays of the unions (plain integers).
            unsafe {
                put_words(&mut p.__bindgen_anon_3.ipv6_src, words(hop.src_ip));
                put_words(&mut p.__bindgen_anon_4.ipv6_dst, words(hop.dst_ip));
            }
        }
    }
    // SAFETY: ctx is the program's context; `p` is a valid, writable parameter block of
    // the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx.cast(), p, size_of::<FibParams>() as i32, 0) };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return false;
    }
    // The MACs sit at 2-byte aligned offsets of the stack block (52 and 58).
    let (dmac, smac, egress) = (mac_words(&p.dmac), mac_words(&p.smac), p.ifindex);
    if let (Some(e), true) = (entry, hop.cache.id != 0) {
        // SAFETY: this CPU's entry (see above); the MACs sit at 2-byte aligned offsets.
        unsafe {
            (*e).checked_ns = now;
            (*e).hop_id = hop.cache.id;
            (*e).ingress_ifindex = ingress;
            (*e).egress_ifindex = egress;
            put_mac(&mut (*e).dst_mac, dmac);
            put_mac(&mut (*e).src_mac, smac);
        }
    }
    out.dmac = dmac;
    out.smac = smac;
    out.egress = egress;
    true
}

/// Store four u32 one at a time: merged into u64 stores they may be misaligned on the
/// stack (the verifier rejects that; see [`Datagram`]).
#[inline(always)]
fn put_words(dst: &mut [u32; 4], w: [u32; 4]) {
    let p = dst.as_mut_ptr();
    // SAFETY: four u32 inside the array.
    unsafe {
        core::ptr::write_volatile(p, w[0]);
        core::ptr::write_volatile(p.add(1), w[1]);
        core::ptr::write_volatile(p.add(2), w[2]);
        core::ptr::write_volatile(p.add(3), w[3]);
    }
}

/// A MAC address as three 16-bit words, read one at a time, volatile so that the reads are
/// not merged into wider, misaligned ones (the verifier rejects those on the stack).
#[inline(always)]
fn mac_words(mac: &[u8; 6]) -> [u16; 3] {
    let w = mac.as_ptr().cast::<u16>();
    // SAFETY: three u16 inside the 6-byte array; every caller's array is 2-byte aligned.
    unsafe {
        [
            core::ptr::read_volatile(w),
            core::ptr::read_volatile(w.add(1)),
            core::ptr::read_volatile(w.add(2)),
        ]
    }
}

/// The inverse of [`mac_words`] (into a 2-byte aligned array).
#[inline(always)]
fn put_mac(mac: &mut [u8; 6], words: [u16; 3]) {
    let w = mac.as_mut_ptr().cast::<u16>();
    // SAFETY: three u16 inside the 6-byte array, which is 2-byte aligned.
    unsafe {
        core::ptr::write_volatile(w, words[0]);
        core::ptr::write_volatile(w.add(1), words[1]);
        core::ptr::write_volatile(w.add(2), words[2]);
    }
}

/// The metadata for the next hop, then the redirect verdict.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn redirect(
    ctx: &XdpContext,
    dmac: [u16; 3],
    smac: [u16; 3],
    egress: u32,
    direction: u8,
    index: u32,
    ok: Counter,
    fallback: Counter,
) -> Verdict {
    if !set_meta(ctx, dmac, smac, egress, direction) {
        return Verdict::Pass(Counter::PassNoMetadata);
    }
    Verdict::Redirect {
        index,
        ok,
        fallback,
    }
}

/// The XSK slot of an interface served by AF_XDP sockets.
#[inline(always)]
fn served_slot(ifindex: u32) -> Option<u32> {
    match XT_IFACES.get(ifindex) {
        Some(v) if v.xsk_slot != 0 => Some(v.xsk_slot - 1),
        _ => None,
    }
}

#[inline(always)]
fn words(ip: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Put the [`XskMeta`] of the next hop in front of the frame, as the first bytes of the
/// data the AF_XDP socket receives (`bpf_xdp_adjust_head`: some kernels refuse XDP
/// programs the `bpf_xdp_adjust_meta` helper, and AF_XDP copy mode hands over XDP
/// metadata only since Linux 6.x). False, the frame unchanged, when the driver has no
/// room for it. Written field by field straight into the packet: a copy of the struct
/// through the stack would be merged into misaligned stack accesses, which the verifier
/// rejects (see [`Datagram`]).
#[inline(always)]
fn set_meta(ctx: &XdpContext, dmac: [u16; 3], smac: [u16; 3], egress: u32, direction: u8) -> bool {
    const LEN: usize = size_of::<XskMeta>();
    // SAFETY: ctx is the program's context; the helper checks the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(LEN as i32)) } != 0 {
        return false;
    }
    let start = data(ctx);
    if start + LEN > data_end(ctx) {
        // Not reached (the frame held at least its headers); undone all the same.
        // SAFETY: as above.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, LEN as i32) };
        return false;
    }
    let m = start as *mut u8;
    // SAFETY (the writes): inside the LEN bytes of metadata checked above; packet memory
    // may be written at any alignment.
    unsafe {
        core::ptr::write_unaligned(m.cast::<[u16; 3]>(), dmac);
        core::ptr::write_unaligned(m.add(6).cast::<[u16; 3]>(), smac);
        core::ptr::write_unaligned(m.add(12).cast::<u32>(), egress);
        core::ptr::write_unaligned(m.add(16).cast::<[u8; 4]>(), [direction, 0, 0, 0]);
        core::ptr::write_unaligned(m.add(20).cast::<[u8; 4]>(), XSK_META_MAGIC);
    }
    true
}

/// The metadata offsets [`set_meta`] writes are [`XskMeta`]'s.
const _: () = {
    assert!(core::mem::offset_of!(XskMeta, dst_mac) == 0);
    assert!(core::mem::offset_of!(XskMeta, src_mac) == 6);
    assert!(core::mem::offset_of!(XskMeta, egress_ifindex) == 12);
    assert!(core::mem::offset_of!(XskMeta, direction) == 16);
    assert!(core::mem::offset_of!(XskMeta, magic) == 20);
    assert!(size_of::<XskMeta>() == 24);
};

// ------------------------------------------------------------------ in-kernel relay

/// Longest UDP payload relayed in the driver (bounds the checksum and move loops); longer
/// datagrams are steered or passed as without the in-kernel relay.
const MAX_RELAY_PAYLOAD: usize = 1500;

/// What a relayed frame keeps of the received IP header (as the AF_XDP forwarder does,
/// `relay/src/afxdp/frame.rs`): DSCP/ECN, the IPv4 identification and DF bit, the TTL or
/// hop limit (decremented). Laid out for the stack like [`Datagram`].
#[repr(C, align(8))]
struct Kept {
    id: [u8; 2],
    /// The DF bit alone, in the first byte of the flags/fragment field.
    df: u8,
    tos: u8,
    ttl: u8,
    _pad: [u8; 3],
    /// Non-zero when the received UDP checksum is a pending offload (CHECKSUM_PARTIAL)
    /// and the frame keeps its socket buffer (generic mode): then the relayed frame's
    /// headers stay where they are (the buffer's offload offsets point at them), the
    /// data moves, and its checksum field is left for the offload too. 4 bytes wide, at
    /// an aligned offset (see [`Datagram`]).
    offload: u32,
    _pad2: u32,
}

impl Kept {
    /// All zero, written with aligned 8-byte stores one at a time: left to LLVM, the
    /// zeroing of the byte fields is merged into misaligned stores, which the verifier
    /// rejects on the stack (see [`Datagram`]).
    #[inline(always)]
    fn zeroed() -> Kept {
        let mut k = core::mem::MaybeUninit::<Kept>::uninit();
        let q = k.as_mut_ptr().cast::<u64>();
        for i in 0..size_of::<Kept>() / 8 {
            // SAFETY: inside the 8-byte aligned block of a multiple of 8 bytes.
            unsafe { core::ptr::write_volatile(q.add(i), 0) };
        }
        // SAFETY: all-zero is a valid Kept (plain integers).
        unsafe { k.assume_init() }
    }
}

const _: () = assert!(size_of::<Kept>() % 8 == 0);

/// The received IP header's fields a relayed frame keeps.
#[inline(always)]
fn kept(ctx: &XdpContext, family: Family, out: &mut Kept) -> bool {
    match family {
        Family::V4 => {
            let Some(ip) = header::<Ipv4Hdr>(ctx, ETH_LEN) else {
                return false;
            };
            // SAFETY: `header` checked the bounds.
            let ip = unsafe { &*ip };
            out.id = ip.id;
            out.df = ip.frag[0] & 0x40;
            out.tos = ip.tos;
            out.ttl = ip.ttl;
        }
        Family::V6 => {
            let Some(ip) = header::<Ipv6Hdr>(ctx, ETH_LEN) else {
                return false;
            };
            // SAFETY: `header` checked the bounds.
            let ip = unsafe { &*ip };
            let w = ip.version_class_flow;
            out.tos = (w[0] << 4) | (w[1] >> 4);
            out.ttl = ip.hop_limit;
        }
    }
    true
}

/// Big-endian one's complement sum (not folded) of the `n` bytes at frame offset `off`
/// (`n <= MAX_RELAY_PAYLOAD`), an even offset from the UDP header: whole 32-bit words,
/// then the last 0-3 bytes.
#[inline(always)]
fn payload_sum(ctx: &XdpContext, off: usize, n: usize) -> Option<u64> {
    let n = opaque(n);
    if n > MAX_RELAY_PAYLOAD {
        return None;
    }
    let words = n & !3;
    let mut sum = swapped(sum_frame_le::<MAX_RELAY_PAYLOAD>(ctx, off, words)?);
    // The last 0-3 bytes; each offset hidden from the optimiser, which would otherwise
    // merge the three bounds checks into one the verifier cannot follow.
    let rest = n - words;
    if rest > 0 {
        sum += u64::from(byte(ctx, opaque(off + words))?) << 8;
    }
    if rest > 1 {
        sum += u64::from(byte(ctx, opaque(off + words + 1))?);
    }
    if rest > 2 {
        sum += u64::from(byte(ctx, opaque(off + words + 2))?) << 8;
    }
    Some(sum)
}

#[inline(always)]
fn byte(ctx: &XdpContext, off: usize) -> Option<u8> {
    let b = header::<u8>(ctx, off)?;
    // SAFETY: `header` checked the bounds.
    Some(unsafe { *b })
}

/// `a - b` in one's complement arithmetic (folded).
#[inline(always)]
fn minus(a: u64, b: u64) -> u64 {
    u64::from(fold(a)) + u64::from(!fold(b))
}

/// What [`verified_payload_sum`] returns for a datagram that fails the checks (a sum of
/// at most 1500 bytes never reaches it).
const BAD_SUM: u64 = u64::MAX;

/// Checks the received datagram's checksums: the IPv4 header checksum; a UDP checksum
/// absent (IPv4 only) or left to offload (CHECKSUM_PARTIAL: the field holds the
/// pseudo-header sum) as the AF_XDP path does (`frame.rs`), reading the payload; any
/// other UDP checksum is taken as given (see [`checked_payload_sum`]). Returns the
/// (unfolded) sum of the UDP payload, from which the relayed frame's checksum is derived.
/// In generic mode a pending offload sets `k.offload` (see [`Kept`]).
#[inline(never)]
fn verified_payload_sum(ctx: &XdpContext, d: &Datagram, k: &mut Kept) -> u64 {
    match checked_payload_sum(ctx, d, k) {
        Some(s) => s,
        None => BAD_SUM,
    }
}

#[inline(always)]
fn checked_payload_sum(ctx: &XdpContext, d: &Datagram, k: &mut Kept) -> Option<u64> {
    if d.family == Family::V4 {
        match sum_frame_le::<IPV4_LEN>(ctx, ETH_LEN, IPV4_LEN) {
            Some(s) if fold(s) == 0xffff => {}
            _ => return None,
        }
    }
    let udp = header::<UdpHdr>(ctx, d.udp_off)?;
    // SAFETY: `header` checked the bounds.
    let udp = unsafe { &*udp };
    let (field, src, dst) = (be16(udp.checksum), be16(udp.src), be16(udp.dst));
    let udp_len = UDP_LEN + d.payload_len;
    let pseudo = pseudo_sum(d.family, &d.src_ip, &d.dst_ip, udp_len);
    let total = pseudo + u64::from(src) + u64::from(dst) + udp_len as u64 + u64::from(field);
    if field != 0 && field != fold(pseudo) {
        // A full checksum, the common case: the payload's sum follows from it (the sum
        // of a right datagram folds to all ones), so the relayed checksum is an
        // incremental update (RFC 1624) and the payload is not read, as a router does
        // it. A datagram that arrived with a wrong checksum leaves with one exactly as
        // wrong, which its receiver drops; none is ever made right. Reading the payload
        // was the costliest step of the relay: its cache lines, written on another core,
        // are cold.
        return Some(u64::from(!fold(total)));
    }
    let sum = payload_sum(ctx, d.payload_off(), d.payload_len)?;
    if field == 0 {
        // RFC 768: none computed (IPv4); RFC 8200 section 8.1: invalid over IPv6.
        return (d.family == Family::V4).then_some(sum);
    }
    // The field holds the pseudo-header sum: a full checksum that happens to equal it,
    // or one left to offload (CHECKSUM_PARTIAL).
    if fold(total + sum) == 0xffff {
        return Some(sum);
    }
    if field != fold(pseudo) {
        return None;
    }
    // SAFETY: ctx.ctx is the kernel's xdp_md.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if generic_mode(ingress) {
        k.offload = 1;
    }
    Some(sum)
}

/// May a relayed frame leave by `egress` (from `ingress`)? XDP_TX back out of the
/// interface it came in on, or a redirect to another interface the program is attached
/// to (`XT_DEVS`); either way only where an XDP-sent frame arrives (`iface_flags::XDP_TX`:
/// not on a veth whose peer has no XDP program). Then the relayed IP packet of `l3_len`
/// bytes must fit the egress MTU.
#[inline(always)]
fn egress_ok(ctx: &XdpContext, ingress: u32, egress: u32, l3_len: usize) -> bool {
    let f = match XT_IFACES.get(egress) {
        Some(v) => v.flags,
        None => 0,
    };
    if f & iface_flags::XDP_TX == 0 {
        return false;
    }
    if egress != ingress && XT_DEVS.get_ifindex(egress).is_none() {
        return false;
    }
    let mut mtu_len = l3_len as u32;
    // SAFETY: ctx is the program's context; `mtu_len` a writable u32 on the stack.
    let rc = unsafe { bpf_check_mtu(ctx.ctx.cast(), egress, &mut mtu_len, 0, 0) };
    rc == 0
}

#[inline(always)]
fn generic_mode(ingress: u32) -> bool {
    match XT_IFACES.get(ingress) {
        Some(v) => v.flags & iface_flags::GENERIC != 0,
        None => false,
    }
}

/// What [`relay_channel_data`] and [`relay_peer_data`] return when they leave the frame
/// untouched (else the egress interface index of the relayed frame).
const NOT_RELAYED: u32 = 0;
/// No live channel for the in-kernel relay (channel numbers start at 0x4000).
const NO_CHANNEL: [u8; 2] = [0, 0];
/// ... when a helper failed after the rewrite began (abort the frame).
const ABORTED: u32 = u32::MAX;

/// The verdict of a frame relayed in the driver to `egress`. (The relay functions return
/// plain integers: a returned `Verdict` was assembled from registers of several paths,
/// one of them a packet pointer stored into a 32-bit field, which the verifier rejects.)
#[inline(always)]
fn relayed(ctx: &XdpContext, egress: u32, tx: Counter, redirect: Counter) -> Verdict {
    // SAFETY: ctx.ctx is the kernel's xdp_md.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if egress == ingress {
        Verdict::Tx(tx)
    } else {
        Verdict::RedirectDev {
            ifindex: egress,
            ok: redirect,
        }
    }
}

/// With [`flags::LIMITED`]: take `bytes` of application data from the allocation's and
/// its user's buckets in `XT_LIMITS`, which user space shares (`limits`). False when a
/// bucket holds too few, when another CPU or user space changed it since it was read, or
/// when the allocation's bucket is missing: the frame then goes the way it goes without
/// the in-kernel relay, to paths that take from the same buckets. A user slot beyond the
/// map has no per-user limit, as in user space.
#[inline(always)]
fn within_limits(
    cfg: u32,
    family: Family,
    relay_port: [u8; 2],
    user_slot: u32,
    direction: u32,
    bytes: usize,
) -> bool {
    if cfg & flags::LIMITED == 0 {
        return true;
    }
    let Some(c) = XT_CONFIG.get(0) else {
        return false;
    };
    // The exact clock, as user space's: with the coarse one the program would see up to a
    // tick less refill than the forwarder and leave it the datagrams at the limit.
    // SAFETY: a helper without arguments; CLOCK_MONOTONIC nanoseconds.
    let now = unsafe { bpf_ktime_get_ns() };
    let now_ms = (now.saturating_sub(c.limits_epoch_ns) / 1_000_000) as u32;
    let bytes = bytes as u64;
    if c.allocation_bps != 0 {
        let i = limits::allocation_bucket(family == Family::V6, be16(relay_port), direction);
        if take_bucket(i, now_ms, u64::from(c.allocation_bps), bytes) != Some(true) {
            return false;
        }
    }
    if c.user_bps != 0 {
        if let Some(i) = limits::user_bucket(user_slot, direction, limits::MAX_USERS) {
            if take_bucket(i, now_ms, u64::from(c.user_bps), bytes) == Some(false) {
                return false;
            }
        }
    }
    true
}

/// Take `cost` from bucket `index` at `now_ms` (`limits::take`, one compare-and-swap):
/// `None` when the map has no such bucket.
#[inline(always)]
fn take_bucket(index: u32, now_ms: u32, rate: u64, cost: u64) -> Option<bool> {
    let p = XT_LIMITS.get_ptr_mut(index)?;
    // SAFETY: an 8-byte aligned u64 of a live map value (array values are 8-byte aligned),
    // changed only by compare-and-swap, here and in user space. An aligned 8-byte load is
    // a single access (LLVM's BPF back end has no relaxed atomic load before ISA v4); a
    // stale value only makes the swap fail.
    let old = unsafe { core::ptr::read_volatile(p) };
    let Some(new) = limits::take(old, now_ms, rate, limits::burst(rate), cost) else {
        return Some(false);
    };
    // SAFETY: as above.
    let (_, swapped) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(p, old, new)
    };
    Some(swapped)
}

/// ChannelData from a client, relayed in the driver (client -> peer): the egress
/// interface, [`ABORTED`], or [`NOT_RELAYED`] when the
/// maps do not fully describe it or it cannot be sent from here, and the frame is
/// untouched (steered or passed as without the in-kernel relay). Relayed only when the
/// channel, the peer's permission and the allocation have [`RELAY_MARGIN_NS`] left at
/// `now` (the coarse clock),
/// the allocation has a statistics slot, the checksums are right, the TTL allows a hop,
/// the padding is 0-3 bytes, and the next hop and MTU allow it.
#[inline(always)]
fn relay_channel_data(
    ctx: &XdpContext,
    d: &Datagram,
    ch: &ChannelValue,
    hop: &Hop,
    now: u64,
    cd: [u8; CHANNEL_DATA_HEADER_LEN],
) -> u32 {
    let data_len = be16([cd[2], cd[3]]) as usize;
    // Also keeps every offset computed from it below the verifier's 64 KiB packet-range
    // limit.
    if data_len > MAX_RELAY_PAYLOAD {
        return NOT_RELAYED;
    }
    // The allocation's and the permission's expiries and the statistics slot, as user
    // space copied them from XT_RELAYS and XT_PERMS into the channel's entry.
    let deadline = relay_deadline(now);
    if deadline >= ch.relay_expires_ns || deadline >= ch.permission_expires_ns {
        return NOT_RELAYED;
    }
    let Some(stats) = XT_ASTATS.get_ptr_mut(ch.stats_slot) else {
        return NOT_RELAYED;
    };
    let padding = d.payload_len - CHANNEL_DATA_HEADER_LEN - data_len;
    if padding > 3 {
        return NOT_RELAYED;
    }
    let mut k = Kept::zeroed();
    if !kept(ctx, d.family, &mut k) || k.ttl <= 1 {
        return NOT_RELAYED;
    }
    // SAFETY: ctx.ctx is the kernel's xdp_md.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let sum = verified_payload_sum(ctx, d, &mut k);
    if sum == BAD_SUM {
        return NOT_RELAYED;
    }
    let mut nh = NextHop::default();
    let ip_len = if d.family == Family::V4 { IPV4_LEN } else { IPV6_LEN };
    if !next_hop(ctx, hop, now, ingress, &mut nh)
        || !egress_ok(ctx, ingress, nh.egress, ip_len + UDP_LEN + data_len)
        || !within_limits(
            d.cfg,
            d.family,
            ch.relay_port,
            ch.user_slot,
            limits::TO_PEER,
            data_len,
        )
    {
        return NOT_RELAYED;
    }
    // The application data's sum: the payload's without the ChannelData header (at an
    // even offset) and the padding (at an odd one after odd-length data).
    let mut removed = u64::from(be16([cd[0], cd[1]])) + u64::from(be16([cd[2], cd[3]]));
    let pad_off = d.payload_off() + CHANNEL_DATA_HEADER_LEN + data_len;
    let mut j = 0;
    while j < 3 {
        if j >= padding {
            break;
        }
        let Some(b) = byte(ctx, opaque(pad_off + j)) else {
            return NOT_RELAYED;
        };
        let b = u64::from(b);
        removed += if (data_len + j) % 2 == 0 { b << 8 } else { b };
        j += 1;
    }
    let data_sum = minus(sum, removed);
    // All checks passed; from here on the frame is rewritten. The headers move 4 bytes
    // forward over the ChannelData header and the data stays where it is; or, with a
    // pending offload in generic mode, the data moves 4 bytes back over it.
    if k.offload != 0 {
        if !shift_front(ctx, d.payload_off(), data_len) {
            return ABORTED;
        }
    // SAFETY: ctx is the program's context; the helpers check their arguments.
    } else if unsafe { bpf_xdp_adjust_head(ctx.ctx, CHANNEL_DATA_HEADER_LEN as i32) } != 0 {
        return ABORTED;
    }
    let trim = data_end(ctx) - data(ctx) - (d.udp_off + UDP_LEN + data_len);
    // SAFETY: as above.
    if trim != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(trim as i32)) } != 0 {
        return ABORTED;
    }
    let ok = match d.family {
        Family::V4 => write_relayed::<false>(
            ctx, &nh, &k, &ch.relay_ip, &ch.peer_ip, ch.relay_port, ch.peer_port, data_len,
            data_sum,
        ),
        Family::V6 => write_relayed::<true>(
            ctx, &nh, &k, &ch.relay_ip, &ch.peer_ip, ch.relay_port, ch.peer_port, data_len,
            data_sum,
        ),
    };
    if !ok {
        return ABORTED;
    }
    // SAFETY: this CPU's slot of the allocation (XDP programs do not nest on one CPU).
    unsafe {
        (*stats).to_peer_packets += 1;
        (*stats).to_peer_bytes += data_len as u64;
    }
    nh.egress
}

/// Peer data, relayed in the driver as ChannelData to the client (peer -> client): as for
/// [`relay_channel_data`]. The caller checked that the allocation, the peer's `channel`
/// and its permission (the copy in the channel's entry) have [`RELAY_MARGIN_NS`] left at
/// `now` (the coarse clock): without a live channel
/// the client gets a Data indication, which user space builds.
#[inline(always)]
fn relay_peer_data(
    ctx: &XdpContext,
    d: &Datagram,
    alloc: &RelayValue,
    hop: &Hop,
    now: u64,
    channel: [u8; 2],
) -> u32 {
    let cfg = d.cfg;
    if d.payload_len > MAX_RELAY_PAYLOAD {
        return NOT_RELAYED;
    }
    let Some(stats) = XT_ASTATS.get_ptr_mut(alloc.stats_slot) else {
        return NOT_RELAYED;
    };
    let data_len = d.payload_len;
    let mut k = Kept::zeroed();
    if !kept(ctx, d.family, &mut k) || k.ttl <= 1 {
        return NOT_RELAYED;
    }
    // SAFETY: ctx.ctx is the kernel's xdp_md.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let sum = verified_payload_sum(ctx, d, &mut k);
    if sum == BAD_SUM {
        return NOT_RELAYED;
    }
    let mut nh = NextHop::default();
    let ip_len = if d.family == Family::V4 { IPV4_LEN } else { IPV6_LEN };
    let payload_len = CHANNEL_DATA_HEADER_LEN + data_len;
    if !next_hop(ctx, hop, now, ingress, &mut nh)
        || !egress_ok(ctx, ingress, nh.egress, ip_len + UDP_LEN + payload_len)
        || !within_limits(
            cfg,
            d.family,
            d.dst_port,
            alloc.user_slot,
            limits::TO_CLIENT,
            data_len,
        )
    {
        return NOT_RELAYED;
    }
    let data_sum = sum + u64::from(be16(channel)) + data_len as u64;
    // All checks passed; from here on the frame is rewritten. The frame grows by the
    // ChannelData header: at the head (the headers move 4 bytes back, the data stays),
    // or where the driver leaves no headroom for that, at the tail (the data moves).
    let headers = d.payload_off();
    let old_len = data_end(ctx) - data(ctx);
    let new_len = headers + payload_len;
    // SAFETY: ctx is the program's context; the helpers check their arguments.
    if cfg & flags::GROW_AT_TAIL == 0
        && k.offload == 0
        && unsafe { bpf_xdp_adjust_head(ctx.ctx, -(CHANNEL_DATA_HEADER_LEN as i32)) } == 0
    {
        let trim = old_len + CHANNEL_DATA_HEADER_LEN - new_len;
        // SAFETY: as above.
        if trim != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(trim as i32)) } != 0 {
            return ABORTED;
        }
    } else {
        // The old frame may have a trailer (Ethernet padding) longer than the growth.
        // SAFETY: as above.
        if new_len > old_len
            && unsafe { bpf_xdp_adjust_tail(ctx.ctx, (new_len - old_len) as i32) } != 0
        {
            return ABORTED;
        }
        if !shift_back(ctx, headers, data_len) {
            return ABORTED;
        }
        // SAFETY: as above.
        if old_len > new_len
            && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((old_len - new_len) as i32)) } != 0
        {
            return ABORTED;
        }
    }
    let Some(cd) = header::<[u8; CHANNEL_DATA_HEADER_LEN]>(ctx, headers) else {
        return ABORTED;
    };
    let len = (data_len as u16).to_be_bytes();
    // SAFETY: `header` checked the bounds.
    unsafe { *cd = [channel[0], channel[1], len[0], len[1]] };
    let ok = match d.family {
        Family::V4 => write_relayed::<false>(
            ctx, &nh, &k, &alloc.server_ip, &alloc.client_ip, alloc.server_port,
            alloc.client_port, payload_len, data_sum,
        ),
        Family::V6 => write_relayed::<true>(
            ctx, &nh, &k, &alloc.server_ip, &alloc.client_ip, alloc.server_port,
            alloc.client_port, payload_len, data_sum,
        ),
    };
    if !ok {
        return ABORTED;
    }
    // SAFETY: this CPU's slot of the allocation (XDP programs do not nest on one CPU).
    unsafe {
        (*stats).to_client_packets += 1;
        (*stats).to_client_bytes += data_len as u64;
    }
    nh.egress
}

/// Move the `n` bytes at frame offset `off` 4 bytes towards the end (the frame already
/// holds them there), last bytes first.
#[inline(never)]
fn shift_back(ctx: &XdpContext, off: usize, n: usize) -> bool {
    let n = opaque(n);
    if n > MAX_RELAY_PAYLOAD {
        return false;
    }
    let words = n / 4;
    let (base, rest) = (off + words * 4, n % 4);
    // The last 0-3 bytes, the last first. Each offset is hidden from the optimiser, which
    // would otherwise access them through one pointer at negative offsets (the verifier
    // rejects those).
    if rest > 2 && !shift_byte_back(ctx, opaque(base + 2)) {
        return false;
    }
    if rest > 1 && !shift_byte_back(ctx, opaque(base + 1)) {
        return false;
    }
    if rest > 0 && !shift_byte_back(ctx, opaque(base)) {
        return false;
    }
    let mut j = 0;
    while j < MAX_RELAY_PAYLOAD / 4 {
        if j >= words {
            break;
        }
        // Hidden from the optimiser and bounded again (unsigned, against a constant): a
        // descending offset computed in the loop loses its lower bound for the verifier.
        let at = opaque(base - 4 * (j + 1));
        if at > MAX_RELAY_PAYLOAD + 128 {
            return false;
        }
        let Some(p) = header::<[u8; 8]>(ctx, at) else {
            return false;
        };
        // SAFETY: `header` checked the 8 bytes (the word and its destination); packet
        // memory may be accessed at any alignment.
        unsafe {
            let w = core::ptr::read_unaligned(p.cast::<u32>());
            core::ptr::write_unaligned(p.cast::<u8>().add(4).cast::<u32>(), w);
        }
        j += 1;
    }
    true
}

/// Move the `n` bytes at frame offset `off + 4` 4 bytes towards the start (over the
/// ChannelData header), first bytes first.
#[inline(never)]
fn shift_front(ctx: &XdpContext, off: usize, n: usize) -> bool {
    let n = opaque(n);
    if n > MAX_RELAY_PAYLOAD {
        return false;
    }
    let words = n / 4;
    let mut j = 0;
    while j < MAX_RELAY_PAYLOAD / 4 {
        if j >= words {
            break;
        }
        let at = opaque(off + 4 * j);
        if at > MAX_RELAY_PAYLOAD + 128 {
            return false;
        }
        let Some(p) = header::<[u8; 8]>(ctx, at) else {
            return false;
        };
        // SAFETY: `header` checked the 8 bytes (the word and its destination); packet
        // memory may be accessed at any alignment.
        unsafe {
            let w = core::ptr::read_unaligned(p.cast::<u8>().add(4).cast::<u32>());
            core::ptr::write_unaligned(p.cast::<u32>(), w);
        }
        j += 1;
    }
    let (base, rest) = (off + words * 4, n % 4);
    if rest > 0 && !shift_byte_front(ctx, opaque(base)) {
        return false;
    }
    if rest > 1 && !shift_byte_front(ctx, opaque(base + 1)) {
        return false;
    }
    if rest > 2 && !shift_byte_front(ctx, opaque(base + 2)) {
        return false;
    }
    true
}

/// Copy the byte at frame offset `at + 4` to `at`.
#[inline(always)]
fn shift_byte_front(ctx: &XdpContext, at: usize) -> bool {
    let Some(p) = header::<[u8; 5]>(ctx, at) else {
        return false;
    };
    // SAFETY: `header` checked the 5 bytes (the destination and the byte).
    unsafe { (*p)[0] = (*p)[4] };
    true
}

/// Copy the byte at frame offset `at` 4 bytes further.
#[inline(always)]
fn shift_byte_back(ctx: &XdpContext, at: usize) -> bool {
    let Some(p) = header::<[u8; 5]>(ctx, at) else {
        return false;
    };
    // SAFETY: `header` checked the 5 bytes (the byte and its destination).
    unsafe { (*p)[4] = (*p)[0] };
    true
}

/// Write the relayed frame's Ethernet, IP and UDP headers at the frame start for a UDP
/// payload of `payload_len` bytes whose (unfolded) sum is `payload_sum`: the next hop's
/// MACs, `src` -> `dst`, what [`Kept`] keeps, TTL / hop limit decremented, both
/// checksums. False if the frame is shorter than the headers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn write_relayed<const V6: bool>(
    ctx: &XdpContext,
    nh: &NextHop,
    k: &Kept,
    src_ip: &[u8; 16],
    dst_ip: &[u8; 16],
    src_port: [u8; 2],
    dst_port: [u8; 2],
    payload_len: usize,
    payload_sum: u64,
) -> bool {
    let ip_len = if V6 { IPV6_LEN } else { IPV4_LEN };
    let udp_off = ETH_LEN + ip_len;
    let start = data(ctx);
    if start + udp_off + UDP_LEN > data_end(ctx) {
        return false;
    }
    let p = start as *mut u8;
    // SAFETY (every access below): inside the header bytes checked just above.
    let put = |off: usize, b: &[u8]| unsafe {
        core::ptr::copy_nonoverlapping(b.as_ptr(), p.add(off), b.len());
    };
    let put16 = |off: usize, v: u16| unsafe {
        core::ptr::write_unaligned(p.add(off).cast::<[u8; 2]>(), v.to_be_bytes());
    };
    // SAFETY: as above.
    unsafe {
        core::ptr::write_unaligned(p.cast::<[u16; 3]>(), nh.dmac);
        core::ptr::write_unaligned(p.add(6).cast::<[u16; 3]>(), nh.smac);
    }
    let udp_len = UDP_LEN + payload_len;
    let ttl = k.ttl - 1;
    let family = if V6 {
        put16(12, be16(ETHERTYPE_IPV6));
        put(ETH_LEN, &[0x60 | (k.tos >> 4), k.tos << 4, 0, 0]);
        put16(ETH_LEN + 4, udp_len as u16);
        put(ETH_LEN + 6, &[IPPROTO_UDP, ttl]);
        put(ETH_LEN + 8, src_ip);
        put(ETH_LEN + 24, dst_ip);
        Family::V6
    } else {
        put16(12, be16(ETHERTYPE_IPV4));
        put(ETH_LEN, &[0x45, k.tos]);
        put16(ETH_LEN + 2, (IPV4_LEN + udp_len) as u16);
        put(ETH_LEN + 4, &k.id);
        put(ETH_LEN + 6, &[k.df, 0, ttl, IPPROTO_UDP, 0, 0]);
        put(ETH_LEN + 12, &src_ip[12..]);
        put(ETH_LEN + 16, &dst_ip[12..]);
        // SAFETY: as above.
        let s = sum_ptr_le::<IPV4_LEN>(unsafe { p.add(ETH_LEN) });
        put16(ETH_LEN + 10, !(swapped(s) as u16));
        Family::V4
    };
    put(udp_off, &src_port);
    put(udp_off + 2, &dst_port);
    put16(udp_off + 4, udp_len as u16);
    let sum = pseudo_sum(family, src_ip, dst_ip, udp_len)
        + u64::from(be16(src_port))
        + u64::from(be16(dst_port))
        + udp_len as u64
        + payload_sum;
    if k.offload != 0 {
        // Left to the offload like the received one: the pseudo-header sum, as the
        // kernel's own senders write it (~csum_tcpudp_magic(.., 0)).
        put16(udp_off + 6, fold(pseudo_sum(family, src_ip, dst_ip, udp_len)));
        return true;
    }
    let c = !fold(sum);
    // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    put16(udp_off + 6, if c == 0 { 0xffff } else { c });
    true
}

// ---------------------------------------------------------------------- STUN Binding

/// What the answer needs from the request once the frame is about to be rewritten.
/// Laid out for the stack like [`Datagram`].
#[repr(C, align(8))]
struct Request {
    tid: [u8; 12],
    /// Non-zero when the request had a FINGERPRINT.
    fingerprint: u32,
    /// Ethernet addresses in the first 6 bytes of 8.
    mac_src: [u8; 8],
    mac_dst: [u8; 8],
}

#[inline(always)]
fn mac8(m: [u8; 6]) -> [u8; 8] {
    [m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]
}

/// A plain Binding request: answered in place with XDP_TX; anything else to user space.
#[inline(never)]
fn binding(ctx: &XdpContext, d: &Datagram, cfg: u32) -> Verdict {
    let off = d.payload_off();
    let Some(stun) = header::<StunHdr>(ctx, off) else {
        return Verdict::Pass(Counter::PassStunForUserSpace);
    };
    // SAFETY: `header` checked the bounds.
    let stun = unsafe { &*stun };
    let len = be16(stun.len) as usize;
    if stun.typ != BINDING_REQUEST
        || stun.cookie != MAGIC_COOKIE
        || len % 4 != 0
        || STUN_HEADER_LEN + len != d.payload_len
        || d.payload_len > MAX_STUN_LEN
    {
        return Verdict::Pass(Counter::PassStunForUserSpace);
    }
    let tid = stun.tid;
    let fingerprint_at = match walk_attributes(ctx, off, d.payload_len, cfg) {
        Ok(f) => f,
        Err(()) => return Verdict::Pass(Counter::PassStunForUserSpace),
    };
    let checksum = request_checksum(ctx, d);
    if checksum == Checksum::Bad {
        return Verdict::Pass(Counter::PassBadChecksum);
    }
    if let Some(at) = fingerprint_at {
        if !request_fingerprint_ok(ctx, off, at) {
            return Verdict::Pass(Counter::PassStunForUserSpace);
        }
    }
    // Answer only where the answer arrives (see `iface_flags`).
    // SAFETY: ctx.ctx is the kernel's xdp_md.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let iface = match XT_IFACES.get(ingress) {
        Some(v) => v.flags,
        None => 0,
    };
    if iface & iface_flags::XDP_TX == 0
        || (checksum == Checksum::Partial && iface & iface_flags::GENERIC != 0)
    {
        return Verdict::Pass(Counter::PassNoXdpTx);
    }
    let Some(eth) = header::<EthHdr>(ctx, 0) else {
        return Verdict::Pass(Counter::PassMalformed);
    };
    // SAFETY: `header` checked the bounds.
    let eth = unsafe { &*eth };
    let req = Request {
        mac_src: mac8(eth.src),
        mac_dst: mac8(eth.dst),
        tid,
        fingerprint: u32::from(fingerprint_at.is_some()),
    };
    let ok = match (d.family, req.fingerprint != 0) {
        (Family::V4, false) => respond::<false, false>(ctx, d, &req),
        (Family::V4, true) => respond::<false, true>(ctx, d, &req),
        (Family::V6, false) => respond::<true, false>(ctx, d, &req),
        (Family::V6, true) => respond::<true, true>(ctx, d, &req),
    };
    match (ok, d.family) {
        (false, _) => Verdict::Aborted,
        (true, Family::V4) => Verdict::Tx(Counter::TxBindingIpv4),
        (true, Family::V6) => Verdict::Tx(Counter::TxBindingIpv6),
    }
}

/// Walk the attributes of a request of `len` bytes at `off`: `Ok(Some(offset))` of a
/// FINGERPRINT that is last, `Ok(None)` without one, `Err` when user space must decide
/// (a comprehension-required attribute, MESSAGE-INTEGRITY included; an unknown optional
/// one unless `IGNORE_UNKNOWN_OPTIONAL`; a malformed attribute; too many attributes).
#[inline(always)]
fn walk_attributes(
    ctx: &XdpContext,
    off: usize,
    len: usize,
    cfg: u32,
) -> Result<Option<usize>, ()> {
    let len = opaque(len);
    let mut at = STUN_HEADER_LEN;
    let mut fingerprint = None;
    for _ in 0..MAX_ATTRIBUTES {
        if at >= len {
            return Ok(fingerprint);
        }
        // The bound is checked on the very value the packet access uses (`opaque`): LLVM
        // otherwise checks a copy and the verifier loses the bound of the offset.
        let at_checked = opaque(at);
        if fingerprint.is_some() || at_checked > MAX_STUN_LEN {
            return Err(());
        }
        let a = header::<[u8; 4]>(ctx, off + at_checked).ok_or(())?;
        // SAFETY: `header` checked the bounds.
        let a = unsafe { *a };
        let typ = be16([a[0], a[1]]);
        let alen = be16([a[2], a[3]]) as usize;
        let next = at + 4 + ((alen + 3) & !3);
        if next > len {
            return Err(());
        }
        match typ {
            FINGERPRINT if alen == 4 => fingerprint = Some(at),
            SOFTWARE => {}
            t if t >= 0x8000 && t != FINGERPRINT && cfg & flags::IGNORE_UNKNOWN_OPTIONAL != 0 => {}
            _ => return Err(()),
        }
        at = next;
    }
    if at >= len {
        Ok(fingerprint)
    } else {
        Err(())
    }
}

/// One's complement sum of `n` bytes (n <= MAX_BYTES, a multiple of 4) at frame offset
/// `off`, taken a 32-bit word at a time in the machine's (little-endian) byte order: fold
/// it and swap its bytes ([`swapped`]) for the big-endian sum (RFC 1071 section 2(B)).
#[inline(always)]
fn sum_frame_le<const MAX_BYTES: usize>(ctx: &XdpContext, off: usize, n: usize) -> Option<u64> {
    let n = opaque(n);
    let mut sum = 0u64;
    let mut i = 0;
    while i < MAX_BYTES {
        if i >= n {
            break;
        }
        let w = header::<[u8; 4]>(ctx, off + i)?;
        // SAFETY: `header` checked the bounds.
        sum += u64::from(u32::from_le_bytes(unsafe { *w }));
        i += 4;
    }
    Some(sum)
}

/// The big-endian 16-bit one's complement sum of a little-endian word sum.
#[inline(always)]
fn swapped(sum_le: u64) -> u64 {
    u64::from(fold(sum_le).swap_bytes())
}

#[inline(always)]
fn sum_bytes(b: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u64::from(be16([b[i], b[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    // Four folds reduce any sum of fewer than 2^48 words to 16 bits.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Pseudo-header sum (RFC 768 / RFC 8200 section 8.1) for a UDP datagram of `udp_len`.
#[inline(always)]
fn pseudo_sum(family: Family, src: &[u8; 16], dst: &[u8; 16], udp_len: usize) -> u64 {
    let addrs = match family {
        Family::V4 => sum_bytes(&src[12..]) + sum_bytes(&dst[12..]),
        Family::V6 => sum_bytes(src) + sum_bytes(dst),
    };
    addrs + u64::from(IPPROTO_UDP) + udp_len as u64
}

/// What the checksums of a request say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checksum {
    /// The IPv4 header checksum and the UDP checksum are right (or an IPv4 datagram
    /// carries none: zero).
    Full,
    /// The IPv4 header checksum is right and the UDP checksum field holds only the
    /// pseudo-header sum: a checksum left to offload (CHECKSUM_PARTIAL), as frames sent by
    /// a local socket over a veth with TX checksum offload on (the default) carry it. The
    /// kernel trusts such a frame, so it is as good as a full checksum here.
    Partial,
    /// Anything else: the kernel would drop the datagram, so the responder must not
    /// answer it.
    Bad,
}

/// Check the IPv4 header checksum and the UDP checksum of the request (over IPv6 a zero
/// UDP checksum is invalid).
fn request_checksum(ctx: &XdpContext, d: &Datagram) -> Checksum {
    if d.family == Family::V4 {
        // A sum of 0xffff reads the same in either byte order.
        match sum_frame_le::<IPV4_LEN>(ctx, ETH_LEN, IPV4_LEN) {
            Some(s) if fold(s) == 0xffff => {}
            _ => return Checksum::Bad,
        }
    }
    let Some(udp) = header::<UdpHdr>(ctx, d.udp_off) else {
        return Checksum::Bad;
    };
    // SAFETY: `header` checked the bounds.
    let field = unsafe { (*udp).checksum };
    if field == [0, 0] {
        return if d.family == Family::V4 {
            Checksum::Full
        } else {
            Checksum::Bad
        };
    }
    let udp_len = UDP_LEN + d.payload_len;
    let pseudo = pseudo_sum(d.family, &d.src_ip, &d.dst_ip, udp_len);
    // udp_len is a multiple of 4: `binding` checked the STUN length.
    let Some(s) = sum_frame_le::<{ UDP_LEN + MAX_STUN_LEN }>(ctx, d.udp_off, udp_len) else {
        return Checksum::Bad;
    };
    if fold(swapped(s) + pseudo) == 0xffff {
        Checksum::Full
    } else if be16(field) == fold(pseudo) {
        Checksum::Partial
    } else {
        Checksum::Bad
    }
}

/// One's complement sum of the first `N` bytes (a multiple of 4) at `p`, which the caller
/// has bounds-checked, in little-endian 32-bit words (see [`sum_frame_le`]).
#[inline(always)]
fn sum_ptr_le<const N: usize>(p: *const u8) -> u64 {
    const { assert!(N % 4 == 0) };
    let mut sum = 0u64;
    let mut i = 0;
    while i < N {
        // SAFETY: i + 3 < N, inside the caller's checked range.
        sum += u64::from(u32::from_le(unsafe {
            core::ptr::read_unaligned(p.add(i).cast::<u32>())
        }));
        i += 4;
    }
    sum
}

/// CRC-32 of the first `N` bytes (a multiple of 4) at `p`, which the caller has
/// bounds-checked. Not inlined: the unrolled table look-ups would spill into the caller's
/// share of the 512-byte stack.
#[inline(never)]
fn crc_ptr<const N: usize>(p: *const u8) -> u32 {
    const { assert!(N % 4 == 0) };
    let mut crc = !0u32;
    let mut i = 0;
    while i < N {
        // SAFETY: i + 3 < N, inside the caller's checked range.
        crc = crc_word(crc, unsafe {
            core::ptr::read_unaligned(p.add(i).cast::<[u8; 4]>())
        });
        i += 4;
    }
    !crc
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) tables for slicing by 4
/// (Intel's "slicing-by-N"): `CRC_TABLES[0]` is the byte-at-a-time table, and
/// `CRC_TABLES[k][b]` advances byte `b` by k further zero bytes, so four look-ups that do
/// not depend on each other consume a 32-bit word.
static CRC_TABLES: [[u32; 256]; 4] = {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 4 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
};

/// Advance `crc` (pre-inverted, reflected) over the four bytes `w`, in order.
#[inline(always)]
fn crc_word(crc: u32, w: [u8; 4]) -> u32 {
    let x = crc ^ u32::from_le_bytes(w);
    CRC_TABLES[3][(x & 0xff) as usize]
        ^ CRC_TABLES[2][((x >> 8) & 0xff) as usize]
        ^ CRC_TABLES[1][((x >> 16) & 0xff) as usize]
        ^ CRC_TABLES[0][(x >> 24) as usize]
}

/// CRC-32 of `n` frame bytes at `off` (n <= MAX_BYTES, a multiple of 4), pre- and
/// post-inverted.
#[inline(always)]
fn crc_frame<const MAX_BYTES: usize>(ctx: &XdpContext, off: usize, n: usize) -> Option<u32> {
    let n = opaque(n);
    let mut crc = !0u32;
    let mut i = 0;
    while i < MAX_BYTES {
        if i >= n {
            break;
        }
        let w = header::<[u8; 4]>(ctx, off + i)?;
        // SAFETY: `header` checked the bounds.
        crc = crc_word(crc, unsafe { *w });
        i += 4;
    }
    Some(!crc)
}

/// FINGERPRINT at `at` (from the STUN header at `off`) is CRC-32 of the message before it
/// XOR 0x5354554E (RFC 8489 section 14.7).
fn request_fingerprint_ok(ctx: &XdpContext, off: usize, at: usize) -> bool {
    let Some(v) = header::<[u8; 4]>(ctx, off + at + 4) else {
        return false;
    };
    // SAFETY: `header` checked the bounds.
    let want = u32::from_be_bytes(unsafe { *v });
    matches!(crc_frame::<MAX_STUN_LEN>(ctx, off, at), Some(c) if c ^ FINGERPRINT_XOR == want)
}

/// Rewrite the frame into the Binding success response: MACs, addresses and ports
/// swapped, XOR-MAPPED-ADDRESS of the request's source, FINGERPRINT when `FP`, IP and UDP
/// checksums. The frame grows at the head when the answer is longer than the request,
/// shrinks at the head when it is shorter, and loses any trailer after the IP packet.
/// False if a helper failed (the frame may be half rewritten: abort it).
#[inline(never)]
fn respond<const V6: bool, const FP: bool>(ctx: &XdpContext, d: &Datagram, req: &Request) -> bool {
    let ip_len = if V6 { IPV6_LEN } else { IPV4_LEN };
    let xma_value = if V6 { 20 } else { 8 };
    let stun_len = STUN_HEADER_LEN + 4 + xma_value + if FP { 8 } else { 0 };
    let udp_off = ETH_LEN + ip_len;
    let stun_off = udp_off + UDP_LEN;
    let frame_len = stun_off + stun_len;

    let old_frame = data_end(ctx) - data(ctx);
    let trailer = old_frame - (stun_off + d.payload_len);
    let delta = d.payload_len as i32 - stun_len as i32;
    // SAFETY: ctx is the program's context; the helpers check their arguments.
    if delta != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return false;
    }
    // SAFETY: as above.
    if trailer != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(trailer as i32)) } != 0 {
        return false;
    }
    let start = data(ctx);
    if start + frame_len > data_end(ctx) {
        return false;
    }
    let p = start as *mut u8;
    // SAFETY (every access below): inside the `frame_len` bytes checked just above.
    let put = |off: usize, b: &[u8]| unsafe {
        core::ptr::copy_nonoverlapping(b.as_ptr(), p.add(off), b.len());
    };
    let put16 = |off: usize, v: u16| unsafe {
        core::ptr::write_unaligned(p.add(off).cast::<[u8; 2]>(), v.to_be_bytes());
    };
    let put32 = |off: usize, v: u32| unsafe {
        core::ptr::write_unaligned(p.add(off).cast::<[u8; 4]>(), v.to_be_bytes());
    };

    put(0, &req.mac_src[..6]);
    put(6, &req.mac_dst[..6]);
    let udp_len = UDP_LEN + stun_len;
    if V6 {
        put16(12, be16(ETHERTYPE_IPV6));
        put32(ETH_LEN, 0x6000_0000);
        put16(ETH_LEN + 4, udp_len as u16);
        put16(ETH_LEN + 6, u16::from_be_bytes([IPPROTO_UDP, TTL]));
        put(ETH_LEN + 8, &d.dst_ip);
        put(ETH_LEN + 24, &d.src_ip);
    } else {
        put16(12, be16(ETHERTYPE_IPV4));
        put16(ETH_LEN, 0x4500);
        put16(ETH_LEN + 2, (IPV4_LEN + udp_len) as u16);
        // Identification 0, Don't Fragment, TTL, protocol, checksum 0 for now.
        put32(ETH_LEN + 4, 0x0000_4000);
        put32(ETH_LEN + 8, u32::from_be_bytes([TTL, IPPROTO_UDP, 0, 0]));
        put(ETH_LEN + 12, &d.dst_ip[12..]);
        put(ETH_LEN + 16, &d.src_ip[12..]);
    }
    put(udp_off, &d.dst_port);
    put(udp_off + 2, &d.src_port);
    put16(udp_off + 4, udp_len as u16);
    put16(udp_off + 6, 0);

    put16(stun_off, be16(BINDING_SUCCESS));
    put16(stun_off + 2, (stun_len - STUN_HEADER_LEN) as u16);
    put(stun_off + 4, &MAGIC_COOKIE);
    put(stun_off + 8, &req.tid);
    // XOR-MAPPED-ADDRESS (RFC 8489 section 14.2): port XOR the cookie's high 16 bits,
    // address XOR the cookie (IPv4) or the cookie and transaction id (IPv6).
    let a = stun_off + STUN_HEADER_LEN;
    let cookie = u32::from_be_bytes(MAGIC_COOKIE);
    put16(a, XOR_MAPPED_ADDRESS);
    put16(a + 2, xma_value as u16);
    put16(a + 4, if V6 { 2 } else { 1 });
    put16(a + 6, be16(d.src_port) ^ (cookie >> 16) as u16);
    if V6 {
        // The transaction id was just written after the cookie: XOR with those 16 bytes.
        let mut i = 0;
        while i < 16 {
            // SAFETY: inside the checked `frame_len` bytes.
            unsafe { *p.add(a + 8 + i) = d.src_ip[i] ^ *p.add(stun_off + 4 + i) };
            i += 1;
        }
    } else {
        let s = &d.src_ip;
        put32(
            a + 8,
            u32::from_be_bytes([s[12], s[13], s[14], s[15]]) ^ cookie,
        );
    }
    // SAFETY (the reads below): inside the `frame_len` bytes checked above.
    let stun = unsafe { p.add(stun_off) };
    if FP {
        let f = a + 4 + xma_value;
        // The header length already counts FINGERPRINT (RFC 8489 section 14.7).
        let crc = if V6 {
            crc_ptr::<{ STUN_HEADER_LEN + 24 }>(stun)
        } else {
            crc_ptr::<{ STUN_HEADER_LEN + 12 }>(stun)
        };
        put16(f, FINGERPRINT);
        put16(f + 2, 4);
        put32(f + 4, crc ^ FINGERPRINT_XOR);
    }
    if !V6 {
        // SAFETY: as above.
        let s = sum_ptr_le::<IPV4_LEN>(unsafe { p.add(ETH_LEN) });
        put16(ETH_LEN + 10, !(swapped(s) as u16));
    }
    // SAFETY: as above.
    let udp = unsafe { p.add(udp_off) };
    let s = match (V6, FP) {
        (true, true) => sum_ptr_le::<{ UDP_LEN + STUN_HEADER_LEN + 24 + 8 }>(udp),
        (true, false) => sum_ptr_le::<{ UDP_LEN + STUN_HEADER_LEN + 24 }>(udp),
        (false, true) => sum_ptr_le::<{ UDP_LEN + STUN_HEADER_LEN + 12 + 8 }>(udp),
        (false, false) => sum_ptr_le::<{ UDP_LEN + STUN_HEADER_LEN + 12 }>(udp),
    };
    let family = if V6 { Family::V6 } else { Family::V4 };
    let c = !fold(swapped(s) + pseudo_sum(family, &d.dst_ip, &d.src_ip, udp_len));
    // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    put16(udp_off + 6, if c == 0 { 0xffff } else { c });
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects a reachable infinite loop,
    // so a panic path left in the code fails at load time rather than at run time.
    #[allow(clippy::empty_loop)]
    loop {}
}
