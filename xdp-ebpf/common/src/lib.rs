//! # xturn-xdp-common: the kernel/user ABI of xturn's XDP program
//!
//! Everything the BPF program (`xdp-ebpf/program`) and user space (`relay/src/xdp.rs`,
//! the tests) must agree on is defined here once: map names, map key and value types,
//! the counter indices, the run-time configuration and the metadata the program puts in
//! front of a frame it steers to an AF_XDP socket.
//!
//! Invariants:
//! - Every type is `#[repr(C)]`, has no implicit padding (explicit `_pad` fields) and keeps
//!   addresses and ports in network byte order as byte arrays, so the program can copy
//!   them straight from packet headers. IPv4 addresses are stored IPv4-mapped
//!   (`::ffff:a.b.c.d`) in 16 bytes, so one key type serves both families.
//! - Expiry times are `CLOCK_MONOTONIC` nanoseconds, the clock of `bpf_ktime_get_ns()`
//!   (the program reads its coarse form, `bpf_ktime_get_coarse_ns()`, which lags by at
//!   most a tick). An entry is live while `now < expires_ns`.
//! - `tests/tests/xdp_abi.rs` reads the compiled object and checks the map names, key and
//!   value sizes and struct layouts against these types; the program checks at compile
//!   time that its map statics carry the names below.
//!
//! With the `user` feature every map type implements `aya::Pod`.

#![no_std]

/// Map names, exactly as the program's map statics are named (at most 15 bytes: the
/// kernel's `BPF_OBJ_NAME_LEN`).
pub mod map_names {
    /// `Array<Config>` with one entry (index 0): run-time switches.
    pub const CONFIG: &str = "XT_CONFIG";
    /// `HashMap<Endpoint, ListenValue>`: the STUN/TURN listening addresses. An unspecified
    /// address (`::ffff:0.0.0.0` or `::`) with a port matches every address of its family.
    pub const LISTEN: &str = "XT_LISTEN";
    /// `HashMap<ChannelKey, ChannelValue>`: bound channels by client 5-tuple and number.
    pub const CHANNELS: &str = "XT_CHANNELS";
    /// `HashMap<PermissionKey, Expiry>`: permissions by relay port and peer IP.
    pub const PERMISSIONS: &str = "XT_PERMS";
    /// `Array<ListenPort>` indexed by UDP port: the listening addresses of each port, so
    /// the common case (one address or the wildcard per family and port) costs an array
    /// index instead of hash look-ups; [`LISTEN`] holds the rest.
    pub const LISTEN_PORTS: &str = "XT_LPORTS";
    /// `HashMap<Endpoint, RelayValue>`: live relayed transport addresses (allocations) and
    /// the client 5-tuple each belongs to.
    pub const RELAYS: &str = "XT_RELAYS";
    /// `Array<IfaceValue>` indexed by interface index: for every interface the program is
    /// attached to, what it may do there ([`iface_flags`](crate::iface_flags)), and for
    /// interfaces served by AF_XDP sockets their slot in [`XSKS`]. A zeroed entry: not
    /// served, and no XDP_TX.
    pub const IFACES: &str = "XT_IFACES";
    /// `XskMap` indexed by `slot * MAX_QUEUES + receive queue` ([`crate::xsk_index`]): the
    /// AF_XDP socket of each (interface, queue).
    pub const XSKS: &str = "XT_XSKS";
    /// `PerCpuArray<u64>` indexed by [`Counter`](crate::Counter).
    pub const COUNTERS: &str = "XT_COUNTERS";
    /// `PerCpuArray<HopEntry>` indexed by the `hop_slot` of a [`ChannelValue`] or
    /// [`RelayValue`]: the program's own cache of `bpf_fib_lookup` answers for steered
    /// flows. User space hands out the slots and never reads or writes the entries.
    pub const HOPS: &str = "XT_HOPS";
    /// `HashMap<PeerChannelKey, PeerChannel>`: the channel bound to each (relayed address,
    /// peer transport address), for relaying peer data as ChannelData in the driver
    /// ([`flags::IN_KERNEL`](crate::flags::IN_KERNEL)).
    pub const PEER_CHANNELS: &str = "XT_PEER_CH";
    /// `DevMapHash` keyed by interface index: the interfaces the program is attached to
    /// that the in-kernel relay may redirect a frame to (`bpf_redirect_map`).
    pub const DEVS: &str = "XT_DEVS";
    /// `PerCpuArray<AllocStats>` indexed by [`RelayValue::stats_slot`](crate::RelayValue):
    /// what the in-kernel relay carried for each allocation.
    pub const ALLOC_STATS: &str = "XT_ASTATS";
    /// `Array<u64>`, memory-mapped into user space (`BPF_F_MMAPABLE`): the token buckets
    /// of the bandwidth limits, shared by the in-kernel relay and every user-space path
    /// ([`limits`](crate::limits) gives the layout and the bucket arithmetic).
    pub const LIMITS: &str = "XT_LIMITS";

    /// Every map of the object, for tests and diagnostics.
    pub const ALL: [&str; 14] = [
        CONFIG,
        LISTEN,
        LISTEN_PORTS,
        CHANNELS,
        PERMISSIONS,
        RELAYS,
        IFACES,
        XSKS,
        COUNTERS,
        HOPS,
        PEER_CHANNELS,
        DEVS,
        ALLOC_STATS,
        LIMITS,
    ];
}

/// Program names (ELF symbols of the entry points).
pub mod program_names {
    /// The xturn program: STUN responder and steering.
    pub const XTURN: &str = "xturn_xdp";
    /// A program that passes every frame. Attach it to the far end of a veth pair: the
    /// kernel drops frames XDP_TX'd or redirected into a veth whose peer has no XDP program.
    pub const PASS: &str = "xturn_xdp_pass";
}

/// Maximum entries of the hash maps and the XSK map.
pub mod capacity {
    pub const LISTEN: u32 = 64;
    pub const CHANNELS: u32 = 65536;
    pub const PERMISSIONS: u32 = 65536;
    pub const RELAYS: u32 = 16384;
    /// Next-hop cache slots (per CPU): channels and allocations beyond this many get
    /// [`NO_HOP_SLOT`](crate::NO_HOP_SLOT) and a `bpf_fib_lookup` for every frame.
    pub const HOPS: u32 = 32768;
    /// UDP ports: the size of the listening-port index.
    pub const LISTEN_PORTS: u32 = 65536;
    /// Interfaces the in-kernel relay may redirect to ([`map_names::DEVS`]).
    pub const DEVS: u32 = 64;
    /// Interface indices below this can be served by AF_XDP sockets.
    pub const IFACES: u32 = 16384;
    /// Interfaces served by AF_XDP sockets at once.
    pub const XSK_IFACES: u32 = 64;
    /// Receive queues served per interface (queue numbers below this).
    pub const MAX_QUEUES: u32 = 64;
    /// Entries of the XSK map: every (interface slot, queue).
    pub const XSKS: u32 = XSK_IFACES * MAX_QUEUES;
}

/// Index of the AF_XDP socket of receive queue `queue` of the interface in slot `slot`
/// in [`map_names::XSKS`]; `None` beyond the capacities.
pub const fn xsk_index(slot: u32, queue: u32) -> Option<u32> {
    if slot < capacity::XSK_IFACES && queue < capacity::MAX_QUEUES {
        Some(slot * capacity::MAX_QUEUES + queue)
    } else {
        None
    }
}

/// Bits of [`IfaceValue::flags`]: what user space found out about an interface the
/// program is attached to (`relay/src/probe.rs`), re-checked while the server runs.
pub mod iface_flags {
    /// A frame sent back out of this interface with XDP_TX arrives at the other end. Not so
    /// on a veth whose peer has no XDP program in driver mode: the kernel drops it there
    /// (or leaves it queued until other traffic flushes the queue). Without it Binding
    /// requests received here go to user space.
    pub const XDP_TX: u32 = 1 << 0;
    /// The program runs in generic (SKB) mode here. A frame keeps its socket buffer and
    /// that buffer's checksum state, so a request whose UDP checksum is a pending offload
    /// (CHECKSUM_PARTIAL) is not answered with XDP_TX: the stale offload offsets would
    /// apply to the rewritten frame.
    pub const GENERIC: u32 = 1 << 1;
}

/// Value of [`map_names::IFACES`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceValue {
    /// 1 + the interface's slot in [`map_names::XSKS`] when AF_XDP sockets serve it, else 0.
    pub xsk_slot: u32,
    /// [`iface_flags`] bits.
    pub flags: u32,
}

/// Bits of [`RelayValue::flags`].
pub mod relay_flags {
    /// Not every permission of this allocation is in [`map_names::PERMISSIONS`] (an insert
    /// failed: map full): peer data without a map permission is passed to the socket
    /// path, which checks it exactly, instead of being dropped in the driver.
    pub const PASS_UNPERMITTED: u32 = 1 << 0;
}

/// Bits of [`Config::flags`].
pub mod flags {
    /// Answer plain Binding requests with XDP_TX.
    pub const STUN_RESPONDER: u32 = 1 << 0;
    /// Redirect ChannelData on live channels and peer data on live permissions to the
    /// XSK map, and drop peer data without a live permission.
    pub const STEERING: u32 = 1 << 1;
    /// Answer Binding requests that carry comprehension-optional attributes (>= 0x8000)
    /// the program does not know, ignoring them as RFC 8489 section 5 allows and as the
    /// socket path does. Without it such requests go to user space.
    pub const IGNORE_UNKNOWN_OPTIONAL: u32 = 1 << 2;
    /// Relay in the driver what the maps fully describe (with `STEERING`): ChannelData on
    /// a live channel with a live permission and allocation is rewritten to the peer's UDP
    /// datagram, and peer data on a bound channel to ChannelData, then sent with XDP_TX or
    /// redirected through [`map_names::DEVS`](crate::map_names::DEVS). What the program
    /// cannot relay is steered as without it. Off in [`ALL`]: `--fast-path xdp` sets it.
    pub const IN_KERNEL: u32 = 1 << 3;
    /// Test switch: grow a frame at the tail (moving the payload) instead of at the head,
    /// as the relay does on drivers that leave fewer than 4 bytes of headroom. Lets
    /// `BPF_PROG_TEST_RUN`, which always gives 256 bytes of headroom, exercise that path.
    pub const GROW_AT_TAIL: u32 = 1 << 4;
    /// Bandwidth limits apply ([`Config::allocation_bps`](crate::Config),
    /// [`Config::user_bps`](crate::Config)): the in-kernel relay takes each datagram's
    /// application data from its allocation's and its user's buckets in
    /// [`map_names::LIMITS`](crate::map_names::LIMITS), and leaves a datagram it cannot
    /// take to the forwarder or the socket path (which drop and count it, or relay it if
    /// the bucket refilled meanwhile).
    pub const LIMITED: u32 = 1 << 5;
    /// The default: everything on but the in-kernel relay.
    pub const ALL: u32 = STUN_RESPONDER | STEERING | IGNORE_UNKNOWN_OPTIONAL;
}

/// Run-time configuration (entry 0 of [`map_names::CONFIG`]). A zeroed entry (a freshly
/// loaded program) turns every feature off: the program then passes everything.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// [`flags`] bits.
    pub flags: u32,
    /// Longest data (an [`XskMeta`](crate::XskMeta) and the frame after it) steered to an
    /// AF_XDP socket: what a UMEM frame holds. Longer frames go to the socket path (an
    /// AF_XDP socket would drop them). 0: no limit.
    pub max_steer_len: u32,
    /// With [`flags::LIMITED`]: bytes per second each way per allocation (`--max-bps`),
    /// 0: none.
    pub allocation_bps: u32,
    /// With [`flags::LIMITED`]: bytes per second each way per user (`--user-max-bps`),
    /// 0: none.
    pub user_bps: u32,
    /// `CLOCK_MONOTONIC` nanoseconds at which the buckets' millisecond clock is 0.
    pub limits_epoch_ns: u64,
}

/// An IP address (IPv4-mapped for IPv4) and a UDP port, network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: [u8; 16],
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// Bits of [`ListenPort::flags`].
pub mod listen_flags {
    /// [`ListenPort::v4`](crate::ListenPort::v4) is a listening IPv4 address.
    pub const V4_ONE: u32 = 1 << 0;
    /// The IPv4 wildcard listens on this port.
    pub const V4_ANY: u32 = 1 << 1;
    /// More IPv4 addresses listen on this port: look them up in `XT_LISTEN`.
    pub const V4_MORE: u32 = 1 << 2;
    /// [`ListenPort::v6`](crate::ListenPort::v6) is a listening IPv6 address.
    pub const V6_ONE: u32 = 1 << 3;
    /// The IPv6 wildcard listens on this port.
    pub const V6_ANY: u32 = 1 << 4;
    /// More IPv6 addresses listen on this port: look them up in `XT_LISTEN`.
    pub const V6_MORE: u32 = 1 << 5;
}

/// Value of [`map_names::LISTEN_PORTS`]: the listening addresses of one UDP port. A
/// zeroed entry: nothing listens there. An address is specific or the wildcard; a
/// specific address matches before the wildcard (as `XT_LISTEN` does).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenPort {
    /// The first IPv6 address listening on the port (with `V6_ONE`).
    pub v6: [u8; 16],
    /// The first IPv4 address listening on the port (with `V4_ONE`).
    pub v4: [u8; 4],
    /// [`listen_flags`] bits.
    pub flags: u32,
}

impl ListenPort {
    /// This entry with the listening address `ip` added (IPv4-mapped for IPv4; the
    /// unspecified address of a family is its wildcard). The address also goes into
    /// [`map_names::LISTEN`], which is consulted when a family has `*_MORE`.
    pub const fn with(mut self, ip: [u8; 16]) -> ListenPort {
        let mut v4 = true;
        let mut i = 0;
        while i < 12 {
            if ip[i] != ipv4_mapped([0; 4])[i] {
                v4 = false;
            }
            i += 1;
        }
        let mut unspecified = true;
        let mut i = if v4 { 12 } else { 0 };
        while i < 16 {
            if ip[i] != 0 {
                unspecified = false;
            }
            i += 1;
        }
        let (one, any, more) = if v4 {
            (
                listen_flags::V4_ONE,
                listen_flags::V4_ANY,
                listen_flags::V4_MORE,
            )
        } else {
            (
                listen_flags::V6_ONE,
                listen_flags::V6_ANY,
                listen_flags::V6_MORE,
            )
        };
        if unspecified {
            self.flags |= any;
        } else if self.flags & one == 0 {
            self.flags |= one;
            if v4 {
                self.v4 = [ip[12], ip[13], ip[14], ip[15]];
            } else {
                self.v6 = ip;
            }
        } else {
            let same = if v4 {
                self.v4[0] == ip[12]
                    && self.v4[1] == ip[13]
                    && self.v4[2] == ip[14]
                    && self.v4[3] == ip[15]
            } else {
                let mut same = true;
                let mut i = 0;
                while i < 16 {
                    if self.v6[i] != ip[i] {
                        same = false;
                    }
                    i += 1;
                }
                same
            };
            if !same {
                self.flags |= more;
            }
        }
        self
    }
}

/// Value of [`map_names::LISTEN`]: reserved for per-listener options, must be 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenValue {
    pub reserved: u32,
}

/// An absolute expiry time: live while `CLOCK_MONOTONIC < expires_ns` (the program reads
/// the coarse clock; the in-kernel relay wants 50 ms left by it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    pub expires_ns: u64,
}

/// Value of [`map_names::RELAYS`]: an allocation's expiry and the client 5-tuple it
/// belongs to (where peer data is relayed to, and from which server address).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayValue {
    pub expires_ns: u64,
    pub client_ip: [u8; 16],
    pub server_ip: [u8; 16],
    pub client_port: [u8; 2],
    pub server_port: [u8; 2],
    /// Where the next hop to the client is cached ([`HopRef`]).
    pub hop: HopRef,
    /// [`relay_flags`] bits.
    pub flags: u32,
    /// Index in [`map_names::ALLOC_STATS`], or [`NO_STATS_SLOT`]: then the in-kernel relay
    /// leaves this allocation's traffic to the AF_XDP and socket paths, which count it.
    pub stats_slot: u32,
    /// The allocation's user's slot of the per-user buckets ([`limits::user_bucket`]);
    /// beyond the map: no per-user limit, as in user space.
    pub user_slot: u32,
}

/// An allocation without a statistics slot ([`RelayValue::stats_slot`]).
pub const NO_STATS_SLOT: u32 = u32::MAX;

/// Entry of [`map_names::ALLOC_STATS`] (one per CPU): datagrams and application-data
/// bytes the in-kernel relay carried for one allocation, each way. User space zeroes a
/// slot before it hands it to an allocation.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// Key of [`map_names::PEER_CHANNELS`]: a peer transport address and the relayed
/// address's port (the relay IP is implied as in [`PermissionKey`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PeerChannelKey {
    pub peer_ip: [u8; 16],
    pub peer_port: [u8; 2],
    pub relay_port: [u8; 2],
}

/// Value of [`map_names::PEER_CHANNELS`]: the channel number (network byte order), the
/// binding's expiry, and a copy of the expiry of the peer's permission, so that the
/// in-kernel relay checks peer data against one entry, not two (as [`ChannelValue`]
/// does for ChannelData). User space rewrites the copy when [`map_names::PERMISSIONS`]
/// changes for it; a permission that is absent there has expiry 0 here.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerChannel {
    pub expires_ns: u64,
    /// The expiry of the peer's permission in [`map_names::PERMISSIONS`] (0: not there).
    pub permission_expires_ns: u64,
    pub channel: [u8; 2],
    pub _pad: [u8; 6],
}

/// Key of [`map_names::CHANNELS`]: the client 5-tuple (client and server transport
/// addresses, UDP) and the channel number.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub client_ip: [u8; 16],
    pub server_ip: [u8; 16],
    pub client_port: [u8; 2],
    pub server_port: [u8; 2],
    pub channel: [u8; 2],
    pub _pad: [u8; 2],
}

/// Value of [`map_names::CHANNELS`]: where the channel leads and until when, and copies
/// of what the in-kernel relay needs of its allocation and of its peer's permission, so
/// that a ChannelData frame costs one hash look-up, not three (each one cache lines no
/// other frame warmed). User space rewrites the copies of every channel of an allocation
/// when [`map_names::RELAYS`] or [`map_names::PERMISSIONS`] change for it; an entry
/// that is absent there has expiry 0 here.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelValue {
    pub peer_ip: [u8; 16],
    pub relay_ip: [u8; 16],
    pub peer_port: [u8; 2],
    pub relay_port: [u8; 2],
    pub _pad: [u8; 4],
    pub expires_ns: u64,
    /// Where the next hop to the peer is cached ([`HopRef`]).
    pub hop: HopRef,
    /// The allocation's `expires_ns` in [`map_names::RELAYS`] (0: not there).
    pub relay_expires_ns: u64,
    /// The expiry of the peer's permission in [`map_names::PERMISSIONS`] (0: not there).
    pub permission_expires_ns: u64,
    /// The allocation's [`RelayValue::stats_slot`] ([`NO_STATS_SLOT`]: none).
    pub stats_slot: u32,
    /// The allocation's [`RelayValue::user_slot`].
    pub user_slot: u32,
}

/// A steered flow direction's place in the next-hop cache [`map_names::HOPS`]: the slot,
/// and an id that user space never gives two flows (a counter), so an entry cached for an
/// earlier owner of the slot is not taken for this flow's. One flow keeps its slot and id
/// for as long as its channel or allocation lives (refreshes included).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HopRef {
    /// Index in [`map_names::HOPS`], or [`NO_HOP_SLOT`].
    pub slot: u32,
    /// Non-zero for a slot.
    pub id: u32,
}

/// A flow without a cache slot (all were taken): its next hop is looked up for every frame.
pub const NO_HOP_SLOT: u32 = u32::MAX;

impl HopRef {
    pub const NONE: HopRef = HopRef {
        slot: NO_HOP_SLOT,
        id: 0,
    };
}

/// Entry of [`map_names::HOPS`] (one per CPU): the `bpf_fib_lookup` answer for the flow
/// with id `hop_id` arriving on `ingress_ifindex`, and when it was looked up
/// (CLOCK_MONOTONIC_COARSE). It is used for [`HOP_CACHE_NS`], then looked up again, so a
/// route or neighbour change reaches steered flows within that time.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HopEntry {
    pub checked_ns: u64,
    pub hop_id: u32,
    pub ingress_ifindex: u32,
    pub egress_ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// How long a cached next hop is used before `bpf_fib_lookup` is asked again.
pub const HOP_CACHE_NS: u64 = 1_000_000_000;

/// Key of [`map_names::PERMISSIONS`] (RFC 8656 section 9: a permission is per peer IP,
/// ports ignored). The relay IP is implied: one relay address per family, and a peer's
/// family is its relay's.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionKey {
    pub peer_ip: [u8; 16],
    pub relay_port: [u8; 2],
    pub _pad: [u8; 2],
}

/// Counter indices of [`map_names::COUNTERS`]: one per outcome of the program. Every frame
/// the program sees increments exactly one counter.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Not IPv4 or IPv6 (ARP, VLAN-tagged, ...), or shorter than an Ethernet header.
    PassNotIp = 0,
    /// IP but not UDP, or IPv6 with extension headers.
    PassNotUdp,
    /// IPv4 with options or a fragment.
    PassIpv4OptionsOrFragment,
    /// Headers truncated or length fields inconsistent with the frame.
    PassMalformed,
    /// UDP to neither a listening nor a relayed address.
    PassNotOurs,
    /// To a listening address but neither STUN nor ChannelData (first byte 0x40-0x7F).
    PassOtherListenTraffic,
    /// STUN that is not a Binding request the program fully understands (integrity,
    /// comprehension-required attributes, bad FINGERPRINT, ...): user space decides.
    PassStunForUserSpace,
    /// A Binding request with a bad IPv4 header or UDP checksum: the kernel drops it.
    PassBadChecksum,
    /// A Binding request on an interface where an answer sent with XDP_TX would not arrive
    /// (a veth whose peer has no XDP program), or, in generic mode, with a UDP checksum
    /// left to offload: the socket path answers it.
    PassNoXdpTx,
    /// A Binding request while the responder is switched off.
    PassStunDisabled,
    /// ChannelData without a live channel, permission and allocation.
    PassChannelUnbound,
    /// ChannelData or peer data while steering is switched off.
    PassSteeringDisabled,
    /// Steered ChannelData, but no AF_XDP socket on the receive queue: passed on.
    PassNoXskChannel,
    /// Steered peer data, but no AF_XDP socket on the receive queue: passed on.
    PassNoXskPeer,
    /// Steerable, but no next hop the forwarder can use: the FIB lookup failed (no route,
    /// neighbour not resolved yet, ...), the route leaves by an interface without AF_XDP
    /// sockets, or the server address is a wildcard. The socket path relays it (and the
    /// kernel resolves the neighbour).
    PassNoNextHop,
    /// Steerable, but the driver has no room for XDP metadata: passed on.
    PassNoMetadata,
    /// Steerable, but longer than a UMEM frame holds (`Config::max_steer_len`): passed on.
    PassTooBig,
    /// Peer data without a permission in the map, to an allocation whose permissions did
    /// not all fit in it ([`relay_flags::PASS_UNPERMITTED`]): the socket path decides.
    PassPermissionNotMirrored,
    /// Binding request over IPv4 answered with XDP_TX.
    TxBindingIpv4,
    /// Binding request over IPv6 answered with XDP_TX.
    TxBindingIpv6,
    /// ChannelData on a live channel redirected to the queue's AF_XDP socket.
    RedirectChannel,
    /// Peer data with a live permission redirected to the queue's AF_XDP socket.
    RedirectPeer,
    /// Data to a relayed address from a peer without a live permission (or to an expired
    /// allocation): dropped (RFC 8656 section 10.3).
    DropNoPermission,
    /// ChannelData relayed in the driver to its peer, sent back out of the interface it
    /// came in on (XDP_TX).
    TxChannel,
    /// ChannelData relayed in the driver to its peer, redirected to another interface.
    RedirectChannelDev,
    /// Peer data relayed in the driver to the client as ChannelData (XDP_TX).
    TxPeer,
    /// Peer data relayed in the driver to the client as ChannelData, redirected to another
    /// interface.
    RedirectPeerDev,
    /// A helper failed while rewriting a frame (XDP_ABORTED).
    Aborted,
}

impl Counter {
    /// Number of counters: the size of the counters map.
    pub const COUNT: u32 = Counter::Aborted as u32 + 1;

    /// Every counter in index order.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::PassNotIp,
        Counter::PassNotUdp,
        Counter::PassIpv4OptionsOrFragment,
        Counter::PassMalformed,
        Counter::PassNotOurs,
        Counter::PassOtherListenTraffic,
        Counter::PassStunForUserSpace,
        Counter::PassBadChecksum,
        Counter::PassNoXdpTx,
        Counter::PassStunDisabled,
        Counter::PassChannelUnbound,
        Counter::PassSteeringDisabled,
        Counter::PassNoXskChannel,
        Counter::PassNoXskPeer,
        Counter::PassNoNextHop,
        Counter::PassNoMetadata,
        Counter::PassTooBig,
        Counter::PassPermissionNotMirrored,
        Counter::TxBindingIpv4,
        Counter::TxBindingIpv6,
        Counter::RedirectChannel,
        Counter::RedirectPeer,
        Counter::DropNoPermission,
        Counter::TxChannel,
        Counter::RedirectChannelDev,
        Counter::TxPeer,
        Counter::RedirectPeerDev,
        Counter::Aborted,
    ];

    /// A stable snake_case name for logs and statistics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassNotIp => "pass_not_ip",
            Counter::PassNotUdp => "pass_not_udp",
            Counter::PassIpv4OptionsOrFragment => "pass_ipv4_options_or_fragment",
            Counter::PassMalformed => "pass_malformed",
            Counter::PassNotOurs => "pass_not_ours",
            Counter::PassOtherListenTraffic => "pass_other_listen_traffic",
            Counter::PassStunForUserSpace => "pass_stun_for_user_space",
            Counter::PassBadChecksum => "pass_bad_checksum",
            Counter::PassNoXdpTx => "pass_no_xdp_tx",
            Counter::PassStunDisabled => "pass_stun_disabled",
            Counter::PassChannelUnbound => "pass_channel_unbound",
            Counter::PassSteeringDisabled => "pass_steering_disabled",
            Counter::PassNoXskChannel => "pass_no_xsk_channel",
            Counter::PassNoXskPeer => "pass_no_xsk_peer",
            Counter::PassNoNextHop => "pass_no_next_hop",
            Counter::PassNoMetadata => "pass_no_metadata",
            Counter::PassTooBig => "pass_too_big",
            Counter::PassPermissionNotMirrored => "pass_permission_not_mirrored",
            Counter::TxBindingIpv4 => "tx_binding_ipv4",
            Counter::TxBindingIpv6 => "tx_binding_ipv6",
            Counter::RedirectChannel => "redirect_channel",
            Counter::RedirectPeer => "redirect_peer",
            Counter::DropNoPermission => "drop_no_permission",
            Counter::TxChannel => "tx_channel",
            Counter::RedirectChannelDev => "redirect_channel_dev",
            Counter::TxPeer => "tx_peer",
            Counter::RedirectPeerDev => "redirect_peer_dev",
            Counter::Aborted => "aborted",
        }
    }
}

/// Direction of a frame steered to an AF_XDP socket ([`XskMeta::direction`]).
pub mod direction {
    /// ChannelData from a client on a live channel.
    pub const CLIENT_TO_PEER: u8 = 1;
    /// A datagram from a peer with a live permission to a relayed address.
    pub const PEER_TO_CLIENT: u8 = 2;
}

/// The bandwidth limits' token buckets (`--max-bps`, `--user-max-bps`: bytes per second,
/// each direction on its own), shared by the in-kernel relay and user space
/// (`xturn_control::bandwidth::Limits`) in [`map_names::LIMITS`], so that a limit holds
/// whichever path and thread carries an allocation's traffic.
///
/// A bucket is one `u64`: the time of its last refill in milliseconds since
/// [`Config::limits_epoch_ns`] (upper 32 bits) and the tokens (bytes) left then (lower 32
/// bits). Both sides update it with compare-and-swap, computing the new value with
/// [`limits::take`]. The program reads the coarse clock, up to a tick behind user
/// space's: a bucket never goes back in time, so the two clocks never refill it twice.
///
/// Layout: the allocations' buckets first, indexed by relayed address family and port
/// ([`limits::allocation_bucket`]), then two per user slot ([`limits::user_bucket`]).
pub mod limits {
    /// Direction of relayed data: client to peer.
    pub const TO_PEER: u32 = 0;
    /// Direction of relayed data: peer to client.
    pub const TO_CLIENT: u32 = 1;
    /// Buckets of the allocations: both families, every port, both directions.
    pub const ALLOCATION_BUCKETS: u32 = 2 * 65536 * 2;
    /// How much a bucket holds beyond the steady rate: 200 ms of traffic, at least
    /// [`MIN_BURST`] bytes (two full-size datagrams), so that packet spacing jitter is not
    /// punished.
    pub const BURST_MS: u64 = 200;
    pub const MIN_BURST: u64 = 3000;
    /// The longest idle time a refill counts (over an hour): beyond it the bucket is full
    /// at any rate that fits in it.
    pub const MAX_ELAPSED_MS: u64 = 1 << 22;

    /// The bucket of the allocation on relayed `port` (`v6`: an IPv6 relayed address) in
    /// `direction`.
    pub const fn allocation_bucket(v6: bool, port: u16, direction: u32) -> u32 {
        ((v6 as u32) << 17) | ((port as u32) << 1) | (direction & 1)
    }

    /// Most user slots a table holds (the total quota bounds the users with allocations).
    pub const MAX_USERS: u32 = 1 << 24;

    /// The bucket of user `slot` in `direction`; `None` beyond `users` slots (at most
    /// [`MAX_USERS`]).
    pub const fn user_bucket(slot: u32, direction: u32, users: u32) -> Option<u32> {
        if slot < users && slot < MAX_USERS {
            Some(ALLOCATION_BUCKETS + slot * 2 + (direction & 1))
        } else {
            None
        }
    }

    /// Entries of [`map_names::LIMITS`](crate::map_names::LIMITS) for `users` user slots.
    pub const fn entries(users: u32) -> u32 {
        ALLOCATION_BUCKETS + users * 2
    }

    /// What a bucket of `rate` bytes per second holds.
    pub const fn burst(rate: u64) -> u64 {
        let b = rate * BURST_MS / 1000;
        if b < MIN_BURST {
            MIN_BURST
        } else {
            b
        }
    }

    /// A full bucket of `cap` tokens at time 0.
    pub const fn full(cap: u64) -> u64 {
        if cap > u32::MAX as u64 {
            u32::MAX as u64
        } else {
            cap
        }
    }

    /// How far behind a bucket's time a clock may be and still count as behind it (the
    /// coarse clock after user space's exact one: a few ms). Further behind is a clock
    /// that wrapped past the bucket's time.
    pub const BEHIND_MS: u32 = 1 << 16;

    /// The bucket `old` at `now_ms` refilled at `rate` tokens per second up to `cap`,
    /// less `cost`; `None` when fewer than `cost` are left (then nothing is to be stored,
    /// which keeps the refill exact: it is computed from the last take). A clock less than
    /// [`BEHIND_MS`] behind the bucket's (the coarse clock after user space's) refills
    /// nothing and keeps the bucket's time. The clock field wraps after 49 days: an idle
    /// bucket then refills less than it could, never more.
    #[inline(always)]
    pub const fn take(old: u64, now_ms: u32, rate: u64, cap: u64, cost: u64) -> Option<u64> {
        let cap = full(cap);
        let (ms, left) = ((old >> 32) as u32, old & u32::MAX as u64);
        let ahead = now_ms.wrapping_sub(ms);
        let (elapsed, at) = if ahead > u32::MAX - BEHIND_MS {
            (0, ms)
        } else {
            let e = ahead as u64;
            (
                if e > MAX_ELAPSED_MS {
                    MAX_ELAPSED_MS
                } else {
                    e
                },
                now_ms,
            )
        };
        let refilled = left + elapsed * rate / 1000;
        let left = if refilled > cap { cap } else { refilled };
        if left < cost {
            return None;
        }
        Some(((at as u64) << 32) | (left - cost))
    }
}

/// Magic value of [`XskMeta::magic`] ("XTM1"): tells the forwarder the metadata is there.
pub const XSK_META_MAGIC: [u8; 4] = *b"XTM2";

/// What the program puts in front of a frame it steers to an AF_XDP socket, inside the
/// data the socket receives (`bpf_xdp_adjust_head`, not XDP metadata: some kernels refuse
/// `bpf_xdp_adjust_meta` to XDP programs). The forwarder finds it in the first
/// `size_of::<XskMeta>()` bytes of a received descriptor, checks `magic` (the last field),
/// and takes the frame from the bytes after it.
/// It carries the next hop of the relayed frame, from the kernel's FIB and neighbour
/// tables (`bpf_fib_lookup`): the interface to send it on and the Ethernet addresses to
/// write. What the frame is relayed to comes from the forwarder's own tables.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskMeta {
    /// Destination Ethernet address of the relayed frame (the peer, client or gateway).
    pub dst_mac: [u8; 6],
    /// Source Ethernet address of the relayed frame (the egress interface's).
    pub src_mac: [u8; 6],
    /// Interface index to send the relayed frame on.
    pub egress_ifindex: u32,
    /// A [`direction`] value.
    pub direction: u8,
    pub _pad: [u8; 3],
    pub magic: [u8; 4],
}

/// IPv4-mapped form of an IPv4 address (`::ffff:a.b.c.d`), as stored in map keys.
pub const fn ipv4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_cap_and_never_twice_for_a_lagging_clock() {
        let (rate, cap) = (10_000, limits::burst(10_000));
        assert_eq!(
            cap, 3000,
            "200 ms of 10 kB/s is less than the minimum burst"
        );
        assert_eq!(limits::burst(1_000_000), 200_000);
        let b = limits::full(cap);
        // Take all but 100 bytes at 1,000 ms: the bucket was full (cap) at time 0.
        let b = limits::take(b, 1000, rate, cap, 2900).unwrap();
        assert_eq!((b >> 32, b & 0xffff_ffff), (1000, 100));
        assert_eq!(limits::take(b, 1000, rate, cap, 101), None);
        // 5 ms later: 50 bytes more.
        let b = limits::take(b, 1005, rate, cap, 150).unwrap();
        assert_eq!((b >> 32, b & 0xffff_ffff), (1005, 0));
        // A clock 4 ms behind (the coarse one) refills nothing and keeps the time, so the
        // next exact reading refills from 1005, not from 1001.
        let b = limits::take(b | 40, 1001, rate, cap, 10).unwrap();
        assert_eq!((b >> 32, b & 0xffff_ffff), (1005, 30));
        let b = limits::take(b, 1006, rate, cap, 0).unwrap();
        assert_eq!(b & 0xffff_ffff, 40);
        // Idle for an hour: full, not more.
        let b = limits::take(b, 3_601_006, rate, cap, 0).unwrap();
        assert_eq!(b & 0xffff_ffff, cap);
        // A bucket filled at time 0 is full 30 days later (not taken for a clock behind).
        let day = 86_400_000u32;
        let b = limits::take(limits::full(cap), 30 * day, rate, cap, 1).unwrap();
        assert_eq!((b >> 32, b & 0xffff_ffff), (30 * day as u64, cap - 1));
        // The clock wraps after 49.7 days: refills less, never more.
        let b = limits::take(((u32::MAX - 10) as u64) << 32, 20, rate, cap, 0).unwrap();
        assert_eq!(b & 0xffff_ffff, 31 * rate / 1000);
    }

    #[test]
    fn bucket_indices_do_not_overlap() {
        use limits::*;
        let last = allocation_bucket(true, u16::MAX, TO_CLIENT);
        assert_eq!(last, ALLOCATION_BUCKETS - 1);
        assert_eq!(allocation_bucket(false, 0, TO_PEER), 0);
        assert_ne!(
            allocation_bucket(false, 5, TO_CLIENT),
            allocation_bucket(true, 5, TO_CLIENT)
        );
        assert_eq!(user_bucket(0, TO_PEER, 4), Some(ALLOCATION_BUCKETS));
        assert_eq!(user_bucket(3, TO_CLIENT, 4), Some(entries(4) - 1));
        assert_eq!(user_bucket(4, TO_PEER, 4), None);
        assert_eq!(user_bucket(u32::MAX, TO_PEER, 4), None);
    }

    #[test]
    fn listen_ports_record_one_address_per_family_then_defer_to_the_hash() {
        let a = ipv4_mapped([192, 0, 2, 1]);
        let b = ipv4_mapped([192, 0, 2, 9]);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        let e = ListenPort::default().with(a);
        assert_eq!((e.flags, e.v4), (listen_flags::V4_ONE, [192, 0, 2, 1]));
        assert_eq!(
            e.with(a),
            e,
            "adding the same address twice changes nothing"
        );
        let e = e.with(b);
        assert_eq!(e.flags, listen_flags::V4_ONE | listen_flags::V4_MORE);
        assert_eq!(e.v4, [192, 0, 2, 1], "the first address stays inline");
        let e = e.with(ipv4_mapped([0; 4])).with(v6).with([0; 16]);
        assert_eq!(
            e.flags,
            listen_flags::V4_ONE
                | listen_flags::V4_MORE
                | listen_flags::V4_ANY
                | listen_flags::V6_ONE
                | listen_flags::V6_ANY
        );
        assert_eq!(e.v6, v6);
    }

    #[test]
    fn xsk_indices_are_unique_and_bounded() {
        assert_eq!(xsk_index(0, 0), Some(0));
        assert_eq!(xsk_index(1, 0), Some(capacity::MAX_QUEUES));
        assert_eq!(xsk_index(0, capacity::MAX_QUEUES), None);
        assert_eq!(xsk_index(capacity::XSK_IFACES, 0), None);
        assert_eq!(
            xsk_index(capacity::XSK_IFACES - 1, capacity::MAX_QUEUES - 1),
            Some(capacity::XSKS - 1)
        );
    }
}

// Sizes are part of the ABI; a change here is a change on both sides.
const _: () = {
    assert!(core::mem::size_of::<Config>() == 24);
    assert!(core::mem::size_of::<Endpoint>() == 20);
    assert!(core::mem::size_of::<ListenValue>() == 4);
    assert!(core::mem::size_of::<Expiry>() == 8);
    assert!(core::mem::size_of::<ChannelKey>() == 40);
    assert!(core::mem::size_of::<ChannelValue>() == 80);
    assert!(core::mem::size_of::<PermissionKey>() == 20);
    assert!(core::mem::size_of::<XskMeta>() == 24);
    assert!(core::mem::size_of::<ListenPort>() == 24);
    assert!(core::mem::size_of::<RelayValue>() == 64);
    assert!(core::mem::size_of::<AllocStats>() == 32);
    assert!(core::mem::size_of::<PeerChannelKey>() == 20);
    assert!(core::mem::size_of::<PeerChannel>() == 24);
    assert!(core::mem::size_of::<HopRef>() == 8);
    assert!(core::mem::size_of::<IfaceValue>() == 8);
    assert!(core::mem::size_of::<HopEntry>() == 32);
    assert!(core::mem::offset_of!(HopEntry, dst_mac) % 2 == 0);
    assert!(core::mem::offset_of!(HopEntry, src_mac) % 2 == 0);
    assert!(
        core::mem::size_of::<XskMeta>() <= 32 && core::mem::size_of::<XskMeta>().is_multiple_of(4)
    );
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as u32 == i as u32);
        i += 1;
    }
    let mut i = 0;
    while i < map_names::ALL.len() {
        assert!(map_names::ALL[i].len() <= 15);
        i += 1;
    }
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], made only of integers and byte arrays, without
    // implicit padding (the size assertions above), so every bit pattern is valid and
    // there are no uninitialised bytes.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::ListenValue {}
    unsafe impl aya::Pod for super::Expiry {}
    unsafe impl aya::Pod for super::ChannelKey {}
    unsafe impl aya::Pod for super::ChannelValue {}
    unsafe impl aya::Pod for super::PermissionKey {}
    unsafe impl aya::Pod for super::XskMeta {}
    unsafe impl aya::Pod for super::ListenPort {}
    unsafe impl aya::Pod for super::RelayValue {}
    unsafe impl aya::Pod for super::HopRef {}
    unsafe impl aya::Pod for super::HopEntry {}
    unsafe impl aya::Pod for super::IfaceValue {}
    unsafe impl aya::Pod for super::AllocStats {}
    unsafe impl aya::Pod for super::PeerChannelKey {}
    unsafe impl aya::Pod for super::PeerChannel {}
}
