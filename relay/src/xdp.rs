//! The XDP fast path (`--xdp IFACE[,IFACE]`): loads xturn's XDP program, attaches it to
//! the given interfaces, and keeps its maps configured.
//!
//! ```text
//!  frame ─► XDP program ─┬─ Binding request ──► answered in the driver (XDP_TX)
//!                        ├─ ChannelData / peer data with live state ──► XSK of the queue,
//!                        │     or XDP_PASS while no AF_XDP socket is bound there
//!                        ├─ peer data without permission ──► XDP_DROP
//!                        └─ everything else ──► XDP_PASS ──► the socket path (driver.rs)
//! ```
//!
//! The object `xdp-ebpf/xturn-xdp.bpf.o` is built by `xdp-ebpf/build.sh` from
//! `xdp-ebpf/program` and committed, so this crate builds with stable cargo alone;
//! `xdp-ebpf/check.sh` proves the object matches its source. Map names, key/value types
//! and counters come from `xturn-xdp-common`, the single definition of the ABI.
//!
//! Invariant: the socket path stays complete. The program answers only what it fully
//! understands and passes the rest, so xturn serves the same clients with or without XDP
//! (its Binding answers differ only in carrying no SOFTWARE attribute). Dropping
//! [`XdpPath`] detaches the program from every interface and logs its counters.
//!
//! The socket driver mirrors every data-plane output into the channel, permission and
//! allocation maps with [`XdpPath::apply`]. Steered frames go to the AF_XDP socket of
//! their (interface, queue) registered with [`XdpPath::serve_queue`], with the next hop
//! from the kernel's FIB in the metadata; without a socket there, or without a usable
//! next hop, they fall back to XDP_PASS and the socket path relays them. Data to a relayed
//! port without a live permission is dropped in the driver.

use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use xturn_control::Output;
use xturn_xdp_common::{
    capacity, flags, ipv4_mapped, map_names, program_names, xsk_index, Config, Counter, Endpoint,
    ListenPort, ListenValue,
};

/// The compiled program (8-byte aligned, as ELF parsing requires).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../../xdp-ebpf/xturn-xdp.bpf.o");

/// Run-time switches of the program (the `XT_CONFIG` map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// Answer plain Binding requests in the driver.
    pub stun_responder: bool,
    /// Steer TURN data to AF_XDP sockets and drop peer data without permission.
    pub steering: bool,
    /// Answer Binding requests with unknown comprehension-optional attributes.
    pub ignore_unknown_optional: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            stun_responder: true,
            steering: true,
            ignore_unknown_optional: true,
        }
    }
}

impl Switches {
    fn config(self) -> Config {
        let mut f = 0;
        if self.stun_responder {
            f |= flags::STUN_RESPONDER;
        }
        if self.steering {
            f |= flags::STEERING;
        }
        if self.ignore_unknown_optional {
            f |= flags::IGNORE_UNKNOWN_OPTIONAL;
        }
        Config { flags: f, _pad: 0 }
    }
}

/// Counter values summed over all CPUs, indexed like [`Counter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// `name=value` pairs of the non-zero counters, for logs.
    pub fn summary(&self) -> String {
        let v: Vec<String> = Counter::ALL
            .iter()
            .filter(|c| self.get(**c) != 0)
            .map(|c| format!("{}={}", c.name(), self.get(*c)))
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    }
}

/// Map key form of an address (IPv4-mapped for IPv4).
pub fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Map key form of a transport address.
pub fn endpoint(a: SocketAddr) -> Endpoint {
    Endpoint {
        ip: ip_key(a.ip()),
        port: a.port().to_be_bytes(),
        _pad: [0; 2],
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default is too small for
/// the maps here; newer kernels use memory cgroups and ignore it. Best effort.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit value for a resource this process owns.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn xturn_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let name = program_names::XTURN;
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the XDP object"))?
        .try_into()?)
}

/// The loaded program and its maps. Detaches from every interface when dropped.
pub struct XdpPath {
    ebpf: Ebpf,
    config: Array<MapData, Config>,
    listen: HashMap<MapData, Endpoint, ListenValue>,
    listen_ports: Array<MapData, ListenPort>,
    #[allow(dead_code)]
    ifaces: Array<MapData, u32>,
    #[allow(dead_code)]
    xsks: XskMap<MapData>,
    /// Interface index of each XSK slot in use.
    #[allow(dead_code)]
    slots: Vec<u32>,
    /// Channels, permissions and allocations, mirrored from the control plane's outputs.
    #[cfg_attr(not(test), allow(dead_code))]
    data_plane: mirror::DataPlaneMaps,
    counters: PerCpuArray<MapData, u64>,
    /// (interface, link) of every attachment.
    attached: Vec<(String, XdpLinkId)>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the XDP object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type or layout"))
}

impl XdpPath {
    /// Load the committed object and verify its programs in the kernel (needs root or
    /// CAP_BPF + CAP_NET_ADMIN). Nothing is attached yet; every switch is off until
    /// [`XdpPath::set_switches`].
    pub fn load() -> Result<XdpPath> {
        raise_memlock_limit();
        let mut ebpf = Ebpf::load(OBJECT).context("cannot load the XDP object (root needed)")?;
        xturn_program(&mut ebpf)?
            .load()
            .context("the kernel refused the XDP program")?;
        Ok(XdpPath {
            config: take(&mut ebpf, map_names::CONFIG)?,
            listen: take(&mut ebpf, map_names::LISTEN)?,
            listen_ports: take(&mut ebpf, map_names::LISTEN_PORTS)?,
            ifaces: take(&mut ebpf, map_names::IFACES)?,
            xsks: take(&mut ebpf, map_names::XSKS)?,
            slots: Vec::new(),
            data_plane: mirror::DataPlaneMaps {
                channels: take(&mut ebpf, map_names::CHANNELS)?,
                permissions: take(&mut ebpf, map_names::PERMISSIONS)?,
                relays: take(&mut ebpf, map_names::RELAYS)?,
                hops: mirror::HopSlots::new(capacity::HOPS),
            },
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            ebpf,
            attached: Vec::new(),
        })
    }

    /// Load, configure for `listen` with every switch on, and attach to `interfaces`.
    pub fn start(interfaces: &[String], listen: &[SocketAddr]) -> Result<XdpPath> {
        let mut x = XdpPath::load()?;
        for a in listen {
            x.add_listener(*a)?;
        }
        x.set_switches(Switches::default())?;
        for i in interfaces {
            let mode = x.attach(i)?;
            tracing::info!("XDP program attached to {i} ({mode:?} mode)");
        }
        Ok(x)
    }

    /// Attach the xturn program to `interface` in driver (native) mode, falling back to
    /// generic (SKB) mode with a warning.
    pub fn attach(&mut self, interface: &str) -> Result<XdpMode> {
        let p = xturn_program(&mut self.ebpf)?;
        let (mode, link) = match p.attach(interface, XdpMode::Driver) {
            Ok(link) => (XdpMode::Driver, link),
            Err(native) => {
                let link = p.attach(interface, XdpMode::Skb).with_context(|| {
                    format!("cannot attach XDP to {interface} (native mode failed too: {native})")
                })?;
                tracing::warn!(
                    "{interface}: native XDP unavailable ({native}); running in generic (SKB) mode, \
                     which is slower and gives AF_XDP copy mode only"
                );
                (XdpMode::Skb, link)
            }
        };
        self.attached.push((interface.to_string(), link));
        Ok(mode)
    }

    pub fn set_switches(&mut self, s: Switches) -> Result<()> {
        self.config
            .set(0, s.config(), 0)
            .context("cannot write XT_CONFIG")
    }

    /// Serve STUN on `addr` (an unspecified address matches its whole family).
    pub fn add_listener(&mut self, addr: SocketAddr) -> Result<()> {
        if addr.port() == 0 {
            bail!("XDP listener {addr} has no port");
        }
        let port = u32::from(addr.port());
        let entry = self
            .listen_ports
            .get(&port, 0)
            .with_context(|| format!("cannot read the listening ports entry of {addr}"))?;
        self.listen
            .insert(endpoint(addr), ListenValue { reserved: 0 }, 0)
            .with_context(|| format!("cannot add listener {addr}"))?;
        self.listen_ports
            .set(port, entry.with(ip_key(addr.ip())), 0)
            .with_context(|| format!("cannot add listener {addr} to the port index"))
    }

    /// Steer the frames of receive queue `queue` of interface `ifindex` to the AF_XDP
    /// socket `fd` (bound to that interface and queue), and accept the interface as a next
    /// hop for steered frames.
    pub fn serve_queue(&mut self, ifindex: u32, queue: u32, fd: RawFd) -> Result<()> {
        if ifindex >= capacity::IFACES {
            bail!(
                "interface index {ifindex} is too large for the AF_XDP fast path (limit {})",
                capacity::IFACES
            );
        }
        let slot = match self.slots.iter().position(|&i| i == ifindex) {
            Some(s) => s as u32,
            None => {
                self.slots.push(ifindex);
                self.slots.len() as u32 - 1
            }
        };
        let Some(index) = xsk_index(slot, queue) else {
            bail!(
                "AF_XDP fast path: at most {} interfaces and {} queues per interface",
                capacity::XSK_IFACES,
                capacity::MAX_QUEUES
            );
        };
        self.xsks
            .set(index, fd, 0)
            .with_context(|| format!("cannot put the AF_XDP socket of queue {queue} in XT_XSKS"))?;
        self.ifaces
            .set(ifindex, slot + 1, 0)
            .context("cannot write XT_IFACES")
    }

    /// Per-CPU counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.counters)
    }

    /// Mirror one control-plane output into the channel, permission and allocation maps.
    pub fn apply(&mut self, out: &Output) -> Result<()> {
        self.data_plane.apply(out)
    }
}

/// Sum a counters map over CPUs.
pub fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<Counters> {
    let mut out = [0u64; Counter::COUNT as usize];
    for c in Counter::ALL {
        let per_cpu = map
            .get(&(c as u32), 0)
            .with_context(|| format!("cannot read counter {}", c.name()))?;
        out[c as usize] = per_cpu.iter().sum();
    }
    Ok(Counters(out))
}

/// Keeping the channel, permission and allocation maps in step with the control plane.
/// `Shared::drive` in driver.rs calls [`XdpPath::apply`] for every data-plane output.
mod mirror {

    use super::{endpoint, ip_key};
    use anyhow::Result;
    use aya::maps::{HashMap, MapData, MapError};
    use std::net::IpAddr;
    use std::time::Instant;
    use xturn_control::{ChannelNumber, FiveTuple, Output, PeerAddr, RelayAddr};
    use xturn_xdp_common::{
        ChannelKey, ChannelValue, Endpoint, Expiry, HopRef, PermissionKey, RelayValue,
    };

    pub struct DataPlaneMaps {
        pub channels: HashMap<MapData, ChannelKey, ChannelValue>,
        pub permissions: HashMap<MapData, PermissionKey, Expiry>,
        pub relays: HashMap<MapData, Endpoint, RelayValue>,
        pub hops: HopSlots,
    }

    /// The next-hop cache slots (`XT_HOPS`) of the channels and allocations in the maps.
    ///
    /// Every steered flow direction (a channel: to its peer; an allocation: to its client)
    /// gets a slot and an id no other flow ever gets. It keeps both while its entry is
    /// refreshed with the same addresses; new addresses under the same key get a new id
    /// (the program then looks the hop up again); a removal frees the slot, and the id
    /// the next owner gets makes the old cached answer unusable. With every slot taken a
    /// flow gets [`HopRef::NONE`] (a `bpf_fib_lookup` per frame) until a refresh finds one.
    /// Entries mirror the maps, so the control plane's quotas bound them.
    pub struct HopSlots {
        pool: SlotPool,
        channels: std::collections::HashMap<ChannelKey, (Target, HopRef)>,
        relays: std::collections::HashMap<Endpoint, (Target, HopRef)>,
    }

    /// What a cached next hop depends on: the steered datagram's new addresses and ports.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Target {
        pub src_ip: [u8; 16],
        pub dst_ip: [u8; 16],
        pub src_port: [u8; 2],
        pub dst_port: [u8; 2],
    }

    struct SlotPool {
        capacity: u32,
        /// Slots below this were handed out at least once.
        fresh: u32,
        free: Vec<u32>,
        last_id: u32,
    }

    impl SlotPool {
        fn next_id(&mut self) -> u32 {
            // Never 0. Wrapping takes 2^32 hand-outs, and a cached answer is used for at
            // most HOP_CACHE_NS, so an earlier owner's answer cannot be taken for a flow's.
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            self.last_id
        }

        fn take(&mut self) -> HopRef {
            let slot = self.free.pop().or_else(|| {
                (self.fresh < self.capacity).then(|| {
                    self.fresh += 1;
                    self.fresh - 1
                })
            });
            match slot {
                Some(slot) => HopRef {
                    slot,
                    id: self.next_id(),
                },
                None => HopRef::NONE,
            }
        }

        fn assign<K: std::hash::Hash + Eq>(
            &mut self,
            refs: &mut std::collections::HashMap<K, (Target, HopRef)>,
            key: K,
            target: Target,
        ) -> HopRef {
            let hop = match refs.get(&key) {
                Some(&(t, h)) if h != HopRef::NONE && t == target => h,
                Some(&(_, h)) if h != HopRef::NONE => HopRef {
                    slot: h.slot,
                    id: self.next_id(),
                },
                _ => self.take(),
            };
            refs.insert(key, (target, hop));
            hop
        }

        fn release<K: std::hash::Hash + Eq>(
            &mut self,
            refs: &mut std::collections::HashMap<K, (Target, HopRef)>,
            key: &K,
        ) {
            if let Some((_, h)) = refs.remove(key) {
                if h != HopRef::NONE {
                    self.free.push(h.slot);
                }
            }
        }
    }

    impl HopSlots {
        pub fn new(capacity: u32) -> HopSlots {
            HopSlots {
                pool: SlotPool {
                    capacity,
                    fresh: 0,
                    free: Vec::new(),
                    last_id: 0,
                },
                channels: Default::default(),
                relays: Default::default(),
            }
        }

        /// The cache slot of channel `key`, whose frames go to `target`.
        pub fn channel(&mut self, key: ChannelKey, target: Target) -> HopRef {
            self.pool.assign(&mut self.channels, key, target)
        }

        /// The cache slot of the allocation on relayed address `key`, whose peer data
        /// goes to `target`.
        pub fn relay(&mut self, key: Endpoint, target: Target) -> HopRef {
            self.pool.assign(&mut self.relays, key, target)
        }

        pub fn remove_channel(&mut self, key: &ChannelKey) {
            self.pool.release(&mut self.channels, key);
        }

        pub fn remove_relay(&mut self, key: &Endpoint) {
            self.pool.release(&mut self.relays, key);
        }
    }

    /// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns()`.
    pub fn monotonic_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        assert_eq!(r, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// An `Instant` as `CLOCK_MONOTONIC` nanoseconds, measured against the clock now
    /// (Rust's `Instant` is CLOCK_MONOTONIC on Linux but does not expose its value).
    pub fn instant_to_monotonic_ns(t: Instant) -> u64 {
        let (now, now_ns) = (Instant::now(), monotonic_ns());
        if t >= now {
            now_ns.saturating_add(u64::try_from((t - now).as_nanos()).unwrap_or(u64::MAX))
        } else {
            now_ns.saturating_sub(u64::try_from((now - t).as_nanos()).unwrap_or(u64::MAX))
        }
    }

    pub fn channel_key(five_tuple: &FiveTuple, channel: ChannelNumber) -> ChannelKey {
        ChannelKey {
            client_ip: ip_key(five_tuple.client.0.ip()),
            server_ip: ip_key(five_tuple.server.ip()),
            client_port: five_tuple.client.0.port().to_be_bytes(),
            server_port: five_tuple.server.port().to_be_bytes(),
            channel: channel.get().to_be_bytes(),
            _pad: [0; 2],
        }
    }

    pub fn permission_key(relay: RelayAddr, peer: IpAddr) -> PermissionKey {
        PermissionKey {
            peer_ip: ip_key(peer),
            relay_port: relay.0.port().to_be_bytes(),
            _pad: [0; 2],
        }
    }

    fn expiry(t: Instant) -> Expiry {
        Expiry {
            expires_ns: instant_to_monotonic_ns(t),
        }
    }

    /// A removal of something already gone is fine (the maps may have been full).
    fn removed(r: Result<(), MapError>) -> Result<()> {
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    impl DataPlaneMaps {
        /// Mirror one control-plane output, so the program steers exactly what the socket
        /// path's `DataPlane` would relay and drops peer data it would discard. Outputs
        /// that do not change the data plane are ignored.
        pub fn apply(&mut self, out: &Output) -> Result<()> {
            match out {
                Output::InstallAllocation {
                    five_tuple,
                    relay,
                    expires,
                } => {
                    let key = endpoint(relay.0);
                    let (client_ip, server_ip) = (
                        ip_key(five_tuple.client.0.ip()),
                        ip_key(five_tuple.server.ip()),
                    );
                    let (client_port, server_port) = (
                        five_tuple.client.0.port().to_be_bytes(),
                        five_tuple.server.port().to_be_bytes(),
                    );
                    let hop = self.hops.relay(
                        key,
                        Target {
                            src_ip: server_ip,
                            dst_ip: client_ip,
                            src_port: server_port,
                            dst_port: client_port,
                        },
                    );
                    let value = RelayValue {
                        expires_ns: expiry(*expires).expires_ns,
                        client_ip,
                        server_ip,
                        client_port,
                        server_port,
                        hop,
                        _pad: [0; 4],
                    };
                    if let Err(e) = self.relays.insert(key, value, 0) {
                        self.hops.remove_relay(&key);
                        return Err(e.into());
                    }
                }
                Output::RemoveAllocation { relay, .. } => {
                    let key = endpoint(relay.0);
                    self.hops.remove_relay(&key);
                    removed(self.relays.remove(&key))?
                }
                Output::InstallPermission {
                    relay,
                    peer,
                    expires,
                } => self
                    .permissions
                    .insert(permission_key(*relay, *peer), expiry(*expires), 0)?,
                Output::RemovePermission { relay, peer } => {
                    removed(self.permissions.remove(&permission_key(*relay, *peer)))?
                }
                Output::InstallChannel {
                    five_tuple,
                    relay,
                    channel,
                    peer: PeerAddr(peer),
                    expires,
                } => {
                    let key = channel_key(five_tuple, *channel);
                    let (peer_ip, relay_ip) = (ip_key(peer.ip()), ip_key(relay.0.ip()));
                    let (peer_port, relay_port) =
                        (peer.port().to_be_bytes(), relay.0.port().to_be_bytes());
                    let hop = self.hops.channel(
                        key,
                        Target {
                            src_ip: relay_ip,
                            dst_ip: peer_ip,
                            src_port: relay_port,
                            dst_port: peer_port,
                        },
                    );
                    let value = ChannelValue {
                        peer_ip,
                        relay_ip,
                        peer_port,
                        relay_port,
                        _pad: [0; 4],
                        expires_ns: expiry(*expires).expires_ns,
                        hop,
                    };
                    if let Err(e) = self.channels.insert(key, value, 0) {
                        self.hops.remove_channel(&key);
                        return Err(e.into());
                    }
                }
                Output::RemoveChannel {
                    five_tuple,
                    channel,
                    ..
                } => {
                    let key = channel_key(five_tuple, *channel);
                    self.hops.remove_channel(&key);
                    removed(self.channels.remove(&key))?
                }
                Output::Transmit(_) | Output::BindRelay { .. } => {}
            }
            Ok(())
        }
    }
}

impl Drop for XdpPath {
    fn drop(&mut self) {
        if let Ok(c) = self.counters() {
            tracing::info!("XDP counters: {}", c.summary());
        }
        let attached: Vec<_> = self.attached.drain(..).collect();
        for (interface, link) in attached {
            match xturn_program(&mut self.ebpf).and_then(|p| Ok(p.detach(link)?)) {
                Ok(()) => tracing::debug!("XDP program detached from {interface}"),
                Err(e) => tracing::warn!("cannot detach XDP from {interface}: {e:#}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mirror::{instant_to_monotonic_ns, monotonic_ns};
    use super::*;
    use aya::programs::TestRun;
    use aya::TestRunOptions;
    use std::time::{Duration, Instant};
    use xturn_control::{ChannelNumber, ClientAddr, FiveTuple, PeerAddr, RelayAddr};

    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn instants_become_clock_monotonic_nanoseconds() {
        let now = monotonic_ns();
        let later = instant_to_monotonic_ns(Instant::now() + Duration::from_secs(5));
        let earlier = instant_to_monotonic_ns(Instant::now() - Duration::from_millis(500));
        let d = later - now;
        assert!((5_000_000_000..5_100_000_000).contains(&d), "{d}");
        assert!(
            earlier < now && now - earlier < 600_000_000,
            "{}",
            now - earlier
        );
    }

    fn target(last: u8) -> mirror::Target {
        mirror::Target {
            src_ip: ipv4_mapped([198, 51, 100, 1]),
            dst_ip: ipv4_mapped([198, 51, 100, last]),
            src_port: [0xc3, 0x50],
            dst_port: [0x17, 0x70],
        }
    }

    fn channel(n: u16) -> xturn_xdp_common::ChannelKey {
        let five_tuple = FiveTuple {
            client: ClientAddr(sa("192.0.2.2:40000")),
            server: sa("192.0.2.1:3478"),
        };
        mirror::channel_key(&five_tuple, ChannelNumber::new(n).unwrap())
    }

    #[test]
    fn hop_slots_are_kept_per_flow_and_never_reused_under_an_old_id() {
        use xturn_xdp_common::HopRef;
        let mut h = mirror::HopSlots::new(2);
        let a = h.channel(channel(0x4001), target(2));
        let b = h.relay(endpoint(sa("198.51.100.1:50000")), target(3));
        assert_eq!((a.slot, b.slot), (0, 1));
        assert!(a.id != 0 && b.id != 0 && a.id != b.id);
        // A refresh with the same addresses keeps slot and id (the cached answer).
        assert_eq!(h.channel(channel(0x4001), target(2)), a);
        // New addresses under the same key: the same slot, a new id.
        let a2 = h.channel(channel(0x4001), target(4));
        assert_eq!(a2.slot, a.slot);
        assert!(a2.id != a.id && a2.id != b.id && a2.id != 0);
        // Every slot taken: no slot, a look-up per frame.
        assert_eq!(h.channel(channel(0x4002), target(5)), HopRef::NONE);
        // A removed flow's slot goes to the next one, under a new id; a flow without a
        // slot gets one at its next refresh.
        h.remove_channel(&channel(0x4001));
        h.remove_channel(&channel(0x4001));
        let c = h.channel(channel(0x4002), target(5));
        assert_eq!(c.slot, a.slot);
        assert!(![0, a.id, a2.id, b.id].contains(&c.id));
        h.remove_relay(&endpoint(sa("198.51.100.1:50000")));
        let d = h.channel(channel(0x4003), target(6));
        assert_eq!(d.slot, b.slot);
        assert!(![0, a.id, a2.id, b.id, c.id].contains(&d.id));
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("SKIPPED: loading the XDP program needs root");
        }
        root
    }

    /// An IPv4/UDP frame (checksums are not checked on the steering path).
    fn frame(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (from.ip(), to.ip()) else {
            panic!("IPv4 only")
        };
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        f.extend_from_slice(&from.port().to_be_bytes());
        f.extend_from_slice(&to.port().to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// Run `f` once; the action and the counter that moved.
    fn run(x: &XdpPath, f: &[u8]) -> (u32, Vec<Counter>) {
        let before = x.counters().unwrap();
        let p: &Xdp = x
            .ebpf
            .program(program_names::XTURN)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; f.len() + 256];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        let after = x.counters().unwrap();
        let moved = Counter::ALL
            .into_iter()
            .filter(|c| after.get(*c) != before.get(*c))
            .collect();
        (r.return_value, moved)
    }

    /// Control-plane outputs applied to the maps change what the program does with peer
    /// data and ChannelData, including expiry times given as `Instant`s.
    #[test]
    fn outputs_drive_the_steering_maps() {
        if !is_root() {
            return;
        }
        let mut x = XdpPath::load().unwrap();
        x.add_listener(sa("192.0.2.1:3478")).unwrap();
        x.set_switches(Switches::default()).unwrap();
        let five_tuple = FiveTuple {
            client: ClientAddr(sa("192.0.2.2:40000")),
            server: sa("192.0.2.1:3478"),
        };
        let relay = RelayAddr(sa("198.51.100.1:50000"));
        let peer = sa("198.51.100.2:6000");
        let live = Instant::now() + Duration::from_secs(60);
        let from_peer = frame(peer, relay.0, b"data");
        let cd = frame(
            five_tuple.client.0,
            five_tuple.server,
            &[0x40, 0x01, 0, 1, 7],
        );
        use Counter::*;

        assert_eq!(run(&x, &from_peer), (XDP_PASS, vec![PassNotOurs]));
        x.apply(&Output::InstallAllocation {
            five_tuple,
            relay,
            expires: live,
        })
        .unwrap();
        assert_eq!(run(&x, &from_peer), (XDP_DROP, vec![DropNoPermission]));
        x.apply(&Output::InstallPermission {
            relay,
            peer: peer.ip(),
            expires: live,
        })
        .unwrap();
        let key = mirror::permission_key(relay, peer.ip());
        let exp = x.data_plane.permissions.get(&key, 0).unwrap().expires_ns;
        let ahead = exp - monotonic_ns();
        assert!(ahead > 59_000_000_000 && ahead <= 60_000_000_000, "{ahead}");
        assert_eq!(run(&x, &from_peer), (XDP_PASS, vec![PassNoXskPeer]));

        let channel = ChannelNumber::new(0x4001).unwrap();
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassChannelUnbound]));
        x.apply(&Output::InstallChannel {
            five_tuple,
            relay,
            channel,
            peer: PeerAddr(peer),
            expires: live,
        })
        .unwrap();
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassNoXskChannel]));
        // Each steered direction has its own next-hop cache slot, kept across refreshes.
        let ckey = mirror::channel_key(&five_tuple, channel);
        let chop = x.data_plane.channels.get(&ckey, 0).unwrap().hop;
        let rhop = x.data_plane.relays.get(&endpoint(relay.0), 0).unwrap().hop;
        assert!(chop.slot < capacity::HOPS && rhop.slot < capacity::HOPS);
        assert!(chop.slot != rhop.slot && chop.id != 0 && rhop.id != 0);
        x.apply(&Output::InstallChannel {
            five_tuple,
            relay,
            channel,
            peer: PeerAddr(peer),
            expires: live + Duration::from_secs(1),
        })
        .unwrap();
        assert_eq!(x.data_plane.channels.get(&ckey, 0).unwrap().hop, chop);

        // A permission refreshed into the past (as the control plane's expiry would be
        // once it passes) drops peer data in the driver; ChannelData on the live channel
        // is still steered, and the forwarder drops it (its data plane checks permissions
        // exactly; the program does not repeat that look-up). The program's clock is
        // coarse (a jiffy, up to 10 ms, behind), so the expiry is set well in the past.
        x.apply(&Output::InstallPermission {
            relay,
            peer: peer.ip(),
            expires: Instant::now() - Duration::from_millis(50),
        })
        .unwrap();
        assert_eq!(run(&x, &from_peer), (XDP_DROP, vec![DropNoPermission]));
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassNoXskChannel]));

        for out in [
            Output::RemoveChannel {
                five_tuple,
                relay,
                channel,
                peer: PeerAddr(peer),
            },
            Output::RemovePermission {
                relay,
                peer: peer.ip(),
            },
            Output::RemoveAllocation { five_tuple, relay },
        ] {
            x.apply(&out).unwrap();
            // Removing again is not an error.
            x.apply(&out).unwrap();
        }
        assert_eq!(run(&x, &from_peer), (XDP_PASS, vec![PassNotOurs]));
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassChannelUnbound]));
    }
}
