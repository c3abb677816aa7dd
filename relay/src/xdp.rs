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
use aya::maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use xturn_control::Change;
use xturn_xdp_common::{
    capacity, flags, ipv4_mapped, limits, map_names, program_names, xsk_index, Config, Counter,
    Endpoint, IfaceValue, ListenPort, ListenValue,
};

pub use mirror::MirrorStats;

pub use crate::config::{MapSizes, ModeChoice};

/// The mode an attachment got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    Native,
    Generic,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// One interface the program is attached to.
struct Attached {
    name: String,
    ifindex: u32,
    mode: AttachMode,
    link: XdpLinkId,
}

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
    /// Relay ChannelData and peer data in the driver where the maps fully describe it
    /// (`--fast-path xdp`); what the program cannot relay is steered as without it.
    pub in_kernel: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            stun_responder: true,
            steering: true,
            ignore_unknown_optional: true,
            in_kernel: false,
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
        if self.in_kernel {
            f |= flags::IN_KERNEL;
        }
        Config {
            flags: f,
            ..Config::default()
        }
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

/// What the in-kernel relay carried (`XT_ASTATS`): per allocation in the maps (relayed
/// address, 5-tuple, counts), and in total since start, removed allocations included.
#[derive(Debug, Clone, Default)]
pub struct InKernelReport {
    pub allocations: Vec<(
        xturn_control::RelayAddr,
        xturn_control::FiveTuple,
        xturn_control::dataplane::Counters,
    )>,
    pub totals: xturn_control::dataplane::Counters,
}

/// The loaded program and its maps. Detaches from every interface when dropped.
pub struct XdpPath {
    ebpf: Ebpf,
    config: Array<MapData, Config>,
    /// What `config` holds.
    current: Config,
    listen: HashMap<MapData, Endpoint, ListenValue>,
    listen_ports: Array<MapData, ListenPort>,
    ifaces: Array<MapData, IfaceValue>,
    /// What `ifaces` holds for every interface written.
    iface_values: std::collections::HashMap<u32, IfaceValue>,
    xsks: XskMap<MapData>,
    /// The attached interfaces, for the in-kernel relay's redirects.
    devs: DevMapHash<MapData>,
    /// Interface index of each XSK slot in use.
    slots: Vec<u32>,
    /// Channels, permissions and allocations, mirrored from the control plane's outputs.
    data_plane: mirror::DataPlaneMaps,
    sizes: MapSizes,
    counters: PerCpuArray<MapData, u64>,
    attached: Vec<Attached>,
    /// The bandwidth limits' buckets (XT_LIMITS), until [`XdpPath::share_limits`] maps
    /// them, and the user slots they were sized for (0: one unused entry).
    limits: Option<MapData>,
    limit_users: u32,
}

/// The map `name` as plain map data (for maps used through their file descriptor).
fn take_data(ebpf: &mut Ebpf, name: &str) -> Result<MapData> {
    use aya::maps::Map;
    match ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the XDP object"))?
    {
        Map::Array(m) => Ok(m),
        _ => bail!("map {name} is not an array"),
    }
}

/// XT_LIMITS mapped into this process (`BPF_F_MMAPABLE`): the buckets user space and the
/// program share. Unmapped when the limits that hold it are dropped.
struct SharedBuckets {
    words: *mut std::sync::atomic::AtomicU64,
    len: usize,
    bytes: usize,
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for SharedBuckets {}
// SAFETY: as above.
unsafe impl Sync for SharedBuckets {}

impl SharedBuckets {
    fn map(map: MapData, len: usize) -> Result<SharedBuckets> {
        use std::os::fd::{AsFd, AsRawFd};
        // SAFETY: sysconf has no memory effects.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        let bytes = (len * 8).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the map's value area, which is at least `len` u64
        // (its max_entries) and page-aligned; unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .context("cannot map the XDP program's bandwidth buckets (XT_LIMITS)");
        }
        Ok(SharedBuckets {
            words: p.cast(),
            len,
            bytes,
            _map: map,
        })
    }
}

impl xturn_control::bandwidth::BucketMemory for SharedBuckets {
    fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: `len` u64 of the mapping, alive as long as self; AtomicU64 has u64's
        // layout.
        unsafe { std::slice::from_raw_parts(self.words, self.len) }
    }
}

impl Drop for SharedBuckets {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer borrowed (self is going).
        unsafe { libc::munmap(self.words.cast(), self.bytes) };
    }
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
    #[cfg(test)]
    pub fn load() -> Result<XdpPath> {
        XdpPath::load_with(MapSizes::default())
    }

    /// [`XdpPath::load`] with the control-plane maps sized `sizes`.
    pub fn load_with(sizes: MapSizes) -> Result<XdpPath> {
        XdpPath::load_limited(sizes, 0)
    }

    /// [`XdpPath::load_with`], and the bandwidth limits' buckets sized for `limit_users`
    /// user slots (0: no limits; [`XdpPath::share_limits`] then fails).
    pub fn load_limited(sizes: MapSizes, limit_users: u32) -> Result<XdpPath> {
        raise_memlock_limit();
        let limit_users = limit_users.min(limits::MAX_USERS);
        let limit_entries = if limit_users == 0 {
            1
        } else {
            limits::entries(limit_users)
        };
        for (what, n) in [
            ("allocations", sizes.allocations),
            ("permissions", sizes.permissions),
            ("channels", sizes.channels),
        ] {
            if n == 0 {
                bail!("XDP map of {what} sized 0");
            }
        }
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(map_names::RELAYS, sizes.allocations)
            .map_max_entries(map_names::PERMISSIONS, sizes.permissions)
            .map_max_entries(map_names::CHANNELS, sizes.channels)
            .map_max_entries(map_names::PEER_CHANNELS, sizes.channels)
            .map_max_entries(map_names::ALLOC_STATS, sizes.allocations)
            .map_max_entries(map_names::LIMITS, limit_entries)
            .load(OBJECT)
            .context("cannot load the XDP object (root needed)")?;
        xturn_program(&mut ebpf)?
            .load()
            .context("the kernel refused the XDP program")?;
        Ok(XdpPath {
            config: take(&mut ebpf, map_names::CONFIG)?,
            current: Config::default(),
            listen: take(&mut ebpf, map_names::LISTEN)?,
            listen_ports: take(&mut ebpf, map_names::LISTEN_PORTS)?,
            ifaces: take(&mut ebpf, map_names::IFACES)?,
            iface_values: Default::default(),
            xsks: take(&mut ebpf, map_names::XSKS)?,
            devs: take(&mut ebpf, map_names::DEVS)?,
            slots: Vec::new(),
            data_plane: mirror::DataPlaneMaps {
                channels: take(&mut ebpf, map_names::CHANNELS)?,
                permissions: take(&mut ebpf, map_names::PERMISSIONS)?,
                relays: take(&mut ebpf, map_names::RELAYS)?,
                peer_channels: take(&mut ebpf, map_names::PEER_CHANNELS)?,
                alloc_stats: take(&mut ebpf, map_names::ALLOC_STATS)?,
                stats_slots: mirror::StatsSlots::new(sizes.allocations),
                hops: mirror::HopSlots::new(capacity::HOPS),
                degraded: Default::default(),
                copies: Default::default(),
                stats: MirrorStats::default(),
            },
            sizes,
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            limits: Some(take_data(&mut ebpf, map_names::LIMITS)?),
            limit_users,
            ebpf,
            attached: Vec::new(),
        })
    }

    /// Bandwidth limits of `per_allocation` and `per_user` bytes per second each way
    /// whose buckets are the program's (XT_LIMITS, mapped into this process): every path
    /// that takes from the returned limits and the in-kernel relay take from the same
    /// buckets. Turns the program's limits on. Once, after [`XdpPath::load_limited`] with
    /// user slots.
    pub fn share_limits(
        &mut self,
        per_allocation: u64,
        per_user: u64,
    ) -> Result<xturn_control::bandwidth::Limits> {
        if self.limit_users == 0 {
            bail!("the XDP program was loaded without bandwidth limits");
        }
        let (Ok(allocation_bps), Ok(user_bps)) =
            (u32::try_from(per_allocation), u32::try_from(per_user))
        else {
            bail!("bandwidth limits above {} bytes per second", u32::MAX);
        };
        let map = self
            .limits
            .take()
            .context("the XDP program's bandwidth limits are shared already")?;
        let memory = SharedBuckets::map(map, limits::entries(self.limit_users) as usize)?;
        let epoch = std::time::Instant::now();
        let epoch_ns = mirror::instant_to_monotonic_ns(epoch);
        let shared = xturn_control::bandwidth::Limits::with_memory(
            per_allocation,
            per_user,
            self.limit_users,
            epoch,
            Box::new(memory),
        )
        .map_err(anyhow::Error::msg)?;
        self.write_config(Config {
            flags: self.current.flags | flags::LIMITED,
            allocation_bps,
            user_bps,
            limits_epoch_ns: epoch_ns,
            ..self.current
        })?;
        Ok(shared)
    }

    /// Load with `sizes` (and buckets for `limit_users`, as [`XdpPath::load_limited`]),
    /// configure for `listen` with every switch on, and attach to `interfaces` as `mode`
    /// asks. Each interface's flags ([`XdpPath::set_iface_flags`])
    /// are still zero: the caller probes them, and until then no Binding is answered here.
    pub fn start(
        interfaces: &[String],
        listen: &[SocketAddr],
        mode: ModeChoice,
        sizes: MapSizes,
        in_kernel: bool,
        limit_users: u32,
    ) -> Result<XdpPath> {
        let mut x = XdpPath::load_limited(sizes, limit_users)?;
        for a in listen {
            x.add_listener(*a)?;
        }
        x.set_switches(Switches {
            in_kernel,
            ..Switches::default()
        })?;
        for i in interfaces {
            let m = x.attach(i, mode)?;
            tracing::info!("XDP program attached to {i} ({} mode)", m.name());
        }
        Ok(x)
    }

    /// Attach the xturn program to `interface`: in driver (native) mode, in generic (SKB)
    /// mode, or (`Auto`) native with generic as the fallback, with a warning.
    pub fn attach(&mut self, interface: &str, choice: ModeChoice) -> Result<AttachMode> {
        let ifindex = crate::host::ifindex(interface)?;
        let p = xturn_program(&mut self.ebpf)?;
        let (mode, link) = match choice {
            ModeChoice::Native => (
                AttachMode::Native,
                p.attach(interface, XdpMode::Driver).with_context(|| {
                    format!(
                        "cannot attach XDP to {interface} in native mode (use --xdp-mode generic \
                         or auto)"
                    )
                })?,
            ),
            ModeChoice::Generic => (
                AttachMode::Generic,
                p.attach(interface, XdpMode::Skb)
                    .with_context(|| format!("cannot attach XDP to {interface} in generic mode"))?,
            ),
            ModeChoice::Auto => match p.attach(interface, XdpMode::Driver) {
                Ok(link) => (AttachMode::Native, link),
                Err(native) => {
                    let link = p.attach(interface, XdpMode::Skb).with_context(|| {
                        format!(
                            "cannot attach XDP to {interface} (native mode failed too: {native})"
                        )
                    })?;
                    tracing::warn!(
                        "{interface}: native XDP unavailable ({native}); running in generic (SKB) \
                         mode, which is slower and gives AF_XDP copy mode only"
                    );
                    (AttachMode::Generic, link)
                }
            },
        };
        self.attached.push(Attached {
            name: interface.to_string(),
            ifindex,
            mode,
            link,
        });
        // A redirect target of the in-kernel relay (which also needs the interface's
        // XDP_TX flag, set once the probe found that XDP-sent frames arrive there).
        if let Err(e) = self.devs.insert(ifindex, ifindex, None, 0) {
            tracing::warn!(
                "{interface}: not in XT_DEVS ({e}): the in-kernel relay does not redirect \
                 frames to it (AF_XDP or the sockets relay them)"
            );
        }
        Ok(mode)
    }

    /// The attached interfaces: (name, index, mode).
    pub fn attachments(&self) -> Vec<(String, u32, AttachMode)> {
        self.attached
            .iter()
            .map(|a| (a.name.clone(), a.ifindex, a.mode))
            .collect()
    }

    /// The sizes the control-plane maps were created with.
    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// Set the switches; the bandwidth limits ([`XdpPath::share_limits`]) stay as they are.
    pub fn set_switches(&mut self, s: Switches) -> Result<()> {
        self.write_config(Config {
            flags: s.config().flags | (self.current.flags & flags::LIMITED),
            ..self.current
        })
    }

    /// Steer no frame longer than `len` bytes (what a UMEM frame holds); 0: no limit.
    pub fn set_max_steer_len(&mut self, len: u32) -> Result<()> {
        self.write_config(Config {
            max_steer_len: len,
            ..self.current
        })
    }

    fn write_config(&mut self, c: Config) -> Result<()> {
        self.config.set(0, c, 0).context("cannot write XT_CONFIG")?;
        self.current = c;
        Ok(())
    }

    /// Set what the program may do on interface `ifindex` ([`iface_flags`] bits).
    pub fn set_iface_flags(&mut self, ifindex: u32, flags: u32) -> Result<()> {
        let v = self.iface_values.get(&ifindex).copied().unwrap_or_default();
        self.write_iface(ifindex, IfaceValue { flags, ..v })
    }

    fn write_iface(&mut self, ifindex: u32, v: IfaceValue) -> Result<()> {
        if ifindex >= capacity::IFACES {
            bail!(
                "interface index {ifindex} is too large for the XDP program (limit {})",
                capacity::IFACES
            );
        }
        self.ifaces
            .set(ifindex, v, 0)
            .context("cannot write XT_IFACES")?;
        self.iface_values.insert(ifindex, v);
        Ok(())
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
        let v = self.iface_values.get(&ifindex).copied().unwrap_or_default();
        self.write_iface(
            ifindex,
            IfaceValue {
                xsk_slot: slot + 1,
                ..v
            },
        )
    }

    /// Stop steering the frames of receive queue `queue` of interface `ifindex` to its
    /// AF_XDP socket (its forwarder thread died): they go to the socket path
    /// (`bpf_redirect_map` falls back to XDP_PASS for an empty slot).
    pub fn unserve_queue(&mut self, ifindex: u32, queue: u32) -> Result<()> {
        let Some(slot) = self.slots.iter().position(|&i| i == ifindex) else {
            return Ok(());
        };
        let Some(index) = xsk_index(slot as u32, queue) else {
            return Ok(());
        };
        match self.xsks.unset(index) {
            Ok(()) => Ok(()),
            // Already gone: a closed socket leaves the map by itself.
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(e).context("cannot clear an XT_XSKS slot"),
        }
    }

    /// How many data-plane outputs could not be mirrored into the maps.
    pub fn mirror_stats(&self) -> MirrorStats {
        self.data_plane.stats
    }

    /// Per-CPU counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.counters)
    }

    /// Mirror one data-plane change into the channel, permission and allocation maps.
    pub fn apply(&mut self, change: &Change) -> Result<()> {
        self.data_plane.apply(change)
    }

    /// What the in-kernel relay carried: per allocation in the maps, and in total since
    /// start (removed allocations included).
    pub fn in_kernel_report(&self) -> InKernelReport {
        self.data_plane.in_kernel_report()
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
    use aya::maps::{PerCpuArray, PerCpuValues};
    use std::net::IpAddr;
    use std::time::Instant;
    use xturn_control::dataplane::Counters;
    use xturn_control::{Change, ChannelNumber, FiveTuple, PeerAddr, RelayAddr};
    use xturn_xdp_common::{
        relay_flags, AllocStats, ChannelKey, ChannelValue, Endpoint, Expiry, HopRef, PeerChannel,
        PeerChannelKey, PermissionKey, RelayValue, NO_STATS_SLOT,
    };

    pub struct DataPlaneMaps {
        pub channels: HashMap<MapData, ChannelKey, ChannelValue>,
        pub permissions: HashMap<MapData, PermissionKey, Expiry>,
        pub relays: HashMap<MapData, Endpoint, RelayValue>,
        /// The channel of each (relay port, peer): the in-kernel relay's peer -> client.
        pub peer_channels: HashMap<MapData, PeerChannelKey, PeerChannel>,
        /// What the in-kernel relay carried per allocation (per CPU), by stats slot.
        pub alloc_stats: PerCpuArray<MapData, AllocStats>,
        pub stats_slots: StatsSlots,
        pub hops: HopSlots,
        /// Allocations some permission of which is not in the map: their entries carry
        /// `PASS_UNPERMITTED` (kept across refreshes) until they are removed.
        pub degraded: std::collections::HashSet<Endpoint>,
        pub copies: ChannelCopies,
        pub stats: MirrorStats,
    }

    /// What the channel entries carry of their allocation and their peer's permission
    /// (see `ChannelValue`): the allocations' expiries and statistics slots as in
    /// XT_RELAYS, the permissions' expiries as in XT_PERMS, and every channel in
    /// XT_CHANNELS by relay port, so that a change to an allocation or a permission
    /// rewrites the copies of exactly the channels it concerns. It mirrors the maps, so
    /// the control plane's quotas bound it.
    #[derive(Default)]
    pub struct ChannelCopies {
        /// Expiry, statistics slot and user slot of each allocation in XT_RELAYS.
        relays: std::collections::HashMap<Endpoint, (u64, u32, u32)>,
        permissions: std::collections::HashMap<PermissionKey, u64>,
        channels:
            std::collections::HashMap<[u8; 2], std::collections::HashMap<ChannelKey, ChannelValue>>,
        /// Every channel in XT_PEER_CH by relay port.
        peer_channels: std::collections::HashMap<
            [u8; 2],
            std::collections::HashMap<PeerChannelKey, PeerChannel>,
        >,
    }

    impl ChannelCopies {
        /// `v` with the copies of its allocation and its peer's permission as they are in
        /// the maps now (expiry 0 for what is not there).
        fn fill(&self, mut v: ChannelValue) -> ChannelValue {
            let relay = Endpoint {
                ip: v.relay_ip,
                port: v.relay_port,
                _pad: [0; 2],
            };
            let (expires_ns, slot, user) =
                self.relays
                    .get(&relay)
                    .copied()
                    .unwrap_or((0, NO_STATS_SLOT, u32::MAX));
            v.relay_expires_ns = expires_ns;
            v.stats_slot = slot;
            v.user_slot = user;
            v.permission_expires_ns = self.permission_expiry(v.peer_ip, v.relay_port);
            v
        }

        /// `pc` (the peer channel on `key`) with the copy of its peer's permission.
        fn fill_peer(&self, key: &PeerChannelKey, mut pc: PeerChannel) -> PeerChannel {
            pc.permission_expires_ns = self.permission_expiry(key.peer_ip, key.relay_port);
            pc
        }

        /// The expiry of the permission for `peer_ip` on `relay_port` in XT_PERMS (0: none).
        fn permission_expiry(&self, peer_ip: [u8; 16], relay_port: [u8; 2]) -> u64 {
            let key = PermissionKey {
                peer_ip,
                relay_port,
                _pad: [0; 2],
            };
            self.permissions.get(&key).copied().unwrap_or(0)
        }

        fn forget_peer(&mut self, key: &PeerChannelKey) {
            forget_in(&mut self.peer_channels, key.relay_port, key);
        }

        fn forget(&mut self, key: &ChannelKey, relay_port: [u8; 2]) {
            forget_in(&mut self.channels, relay_port, key);
        }
    }

    /// Remove `key` from the entries of relay port `port`, and the port once it has none.
    fn forget_in<K: std::hash::Hash + Eq, V>(
        by_port: &mut std::collections::HashMap<[u8; 2], std::collections::HashMap<K, V>>,
        port: [u8; 2],
        key: &K,
    ) {
        if let Some(m) = by_port.get_mut(&port) {
            m.remove(key);
            if m.is_empty() {
                by_port.remove(&port);
            }
        }
    }

    /// Data-plane outputs the maps could not take (full, or another error): that traffic
    /// takes the socket path, never a drop in the driver.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    pub struct MirrorStats {
        pub allocations_not_mirrored: u64,
        pub permissions_not_mirrored: u64,
        pub channels_not_mirrored: u64,
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

    /// The statistics slots (`XT_ASTATS`) of the allocations in the map: one per
    /// allocation for as long as it lives (refreshes keep it), zeroed before it is handed
    /// out; with every slot taken an allocation gets [`NO_STATS_SLOT`], and the program
    /// leaves its traffic to AF_XDP and the sockets, which count it.
    pub struct StatsSlots {
        capacity: u32,
        fresh: u32,
        free: Vec<u32>,
        by_relay: std::collections::HashMap<Endpoint, (u32, RelayAddr, FiveTuple)>,
        /// What removed allocations' slots held when they were removed.
        retired: Counters,
    }

    impl StatsSlots {
        pub fn new(capacity: u32) -> StatsSlots {
            StatsSlots {
                capacity,
                fresh: 0,
                free: Vec::new(),
                by_relay: Default::default(),
                retired: Counters::default(),
            }
        }
    }

    fn counters(s: &AllocStats) -> Counters {
        Counters {
            to_peer_packets: s.to_peer_packets,
            to_peer_bytes: s.to_peer_bytes,
            to_client_packets: s.to_client_packets,
            to_client_bytes: s.to_client_bytes,
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

    pub fn peer_channel_key(relay: RelayAddr, peer: std::net::SocketAddr) -> PeerChannelKey {
        PeerChannelKey {
            peer_ip: ip_key(peer.ip()),
            peer_port: peer.port().to_be_bytes(),
            relay_port: relay.0.port().to_be_bytes(),
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
        /// Mirror one data-plane change, so the program steers exactly what the socket
        /// path's `DataPlane` would relay and drops peer data it would discard.
        ///
        /// What cannot be mirrored (a map full) is left to the socket path, never to a
        /// drop: an allocation or channel that is not in its map is passed by the program
        /// (a failed refresh removes the stale entry, whose earlier expiry would drop), and
        /// an allocation with a permission that is not in its map gets
        /// `PASS_UNPERMITTED`. The error is returned for the log, counted in
        /// [`MirrorStats`].
        pub fn apply(&mut self, change: &Change) -> Result<()> {
            // A TCP client's allocation is the socket path's (the program sees UDP only):
            // not in XT_RELAYS, so the program passes its peer data. Its permissions go in
            // XT_PERMS like any (unused without the allocation entry).
            if let Change::InstallAllocation { five_tuple, .. }
            | Change::RemoveAllocation { five_tuple, .. }
            | Change::InstallChannel { five_tuple, .. }
            | Change::RemoveChannel { five_tuple, .. } = change
            {
                if five_tuple.transport != xturn_control::Transport::Udp {
                    return Ok(());
                }
            }
            match change {
                Change::InstallAllocation {
                    five_tuple,
                    relay,
                    expires,
                    user,
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
                    let flags = if self.degraded.contains(&key) {
                        relay_flags::PASS_UNPERMITTED
                    } else {
                        0
                    };
                    let stats_slot = self.stats_slot(key, *relay, five_tuple);
                    let value = RelayValue {
                        expires_ns: expiry(*expires).expires_ns,
                        client_ip,
                        server_ip,
                        client_port,
                        server_port,
                        hop,
                        flags,
                        stats_slot,
                        user_slot: *user,
                    };
                    if let Err(e) = self.relays.insert(key, value, 0) {
                        self.stats.allocations_not_mirrored += 1;
                        self.hops.remove_relay(&key);
                        self.release_stats_slot(&key);
                        let _ = self.relays.remove(&key);
                        let _ = self.copy_relay(key, None);
                        return Err(anyhow::Error::from(e)
                            .context(format!("allocation {} not in XT_RELAYS", relay.0)));
                    }
                    let copy = (value.expires_ns, value.stats_slot, value.user_slot);
                    self.copy_relay(key, Some(copy))?;
                }
                Change::RemoveAllocation { relay, .. } => {
                    let key = endpoint(relay.0);
                    self.hops.remove_relay(&key);
                    self.release_stats_slot(&key);
                    self.degraded.remove(&key);
                    let copies = self.copy_relay(key, None);
                    removed(self.relays.remove(&key))?;
                    copies?
                }
                Change::InstallPermission {
                    relay,
                    peer,
                    expires,
                } => {
                    let key = permission_key(*relay, *peer);
                    let value = expiry(*expires);
                    if let Err(e) = self.permissions.insert(key, value, 0) {
                        self.stats.permissions_not_mirrored += 1;
                        // An entry left from before would expire too early.
                        let _ = self.permissions.remove(&key);
                        let _ = self.copy_permission(key, None);
                        self.degrade(endpoint(relay.0));
                        return Err(anyhow::Error::from(e).context(format!(
                            "permission of {} for {peer} not in XT_PERMS: peer data to that \
                             allocation without a permission in the map now goes to the \
                             socket path",
                            relay.0
                        )));
                    }
                    self.copy_permission(key, Some(value.expires_ns))?;
                }
                Change::RemovePermission { relay, peer } => {
                    let key = permission_key(*relay, *peer);
                    let copies = self.copy_permission(key, None);
                    removed(self.permissions.remove(&key))?;
                    copies?
                }
                Change::InstallChannel {
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
                    let value = self.copies.fill(ChannelValue {
                        peer_ip,
                        relay_ip,
                        peer_port,
                        relay_port,
                        expires_ns: expiry(*expires).expires_ns,
                        hop,
                        ..Default::default()
                    });
                    if let Err(e) = self.channels.insert(key, value, 0) {
                        self.stats.channels_not_mirrored += 1;
                        self.hops.remove_channel(&key);
                        let _ = self.channels.remove(&key);
                        self.copies.forget(&key, relay_port);
                        let pkey = peer_channel_key(*relay, *peer);
                        let _ = self.peer_channels.remove(&pkey);
                        self.copies.forget_peer(&pkey);
                        return Err(anyhow::Error::from(e).context(format!(
                            "channel {:#06x} of {} not in XT_CHANNELS",
                            channel.get(),
                            five_tuple.client.0
                        )));
                    }
                    self.copies
                        .channels
                        .entry(relay_port)
                        .or_default()
                        .insert(key, value);
                    let pkey = peer_channel_key(*relay, *peer);
                    let pc = self.copies.fill_peer(
                        &pkey,
                        PeerChannel {
                            expires_ns: value.expires_ns,
                            channel: channel.get().to_be_bytes(),
                            ..Default::default()
                        },
                    );
                    if let Err(e) = self.peer_channels.insert(pkey, pc, 0) {
                        // Peer data of this channel is then steered or passed (a stale
                        // entry would relay it after the binding expired).
                        let _ = self.peer_channels.remove(&pkey);
                        self.copies.forget_peer(&pkey);
                        return Err(anyhow::Error::from(e).context(format!(
                            "channel {:#06x} of {} not in XT_PEER_CH: its peer data is not \
                             relayed in the driver",
                            channel.get(),
                            five_tuple.client.0
                        )));
                    }
                    self.copies
                        .peer_channels
                        .entry(pkey.relay_port)
                        .or_default()
                        .insert(pkey, pc);
                }
                Change::RemoveChannel {
                    five_tuple,
                    channel,
                    relay,
                    peer: PeerAddr(peer),
                } => {
                    let key = channel_key(five_tuple, *channel);
                    self.hops.remove_channel(&key);
                    self.copies.forget(&key, relay.0.port().to_be_bytes());
                    let pkey = peer_channel_key(*relay, *peer);
                    self.copies.forget_peer(&pkey);
                    let peer_removed = removed(self.peer_channels.remove(&pkey));
                    removed(self.channels.remove(&key))?;
                    peer_removed?
                }
            }
            Ok(())
        }

        /// The statistics slot of the allocation on `key` (kept across refreshes), zeroed
        /// when newly handed out; [`NO_STATS_SLOT`] when none is free or it cannot be
        /// zeroed.
        fn stats_slot(&mut self, key: Endpoint, relay: RelayAddr, five_tuple: &FiveTuple) -> u32 {
            let s = &mut self.stats_slots;
            if let Some(&(slot, _, _)) = s.by_relay.get(&key) {
                return slot;
            }
            let Some(slot) = s.free.pop().or_else(|| {
                (s.fresh < s.capacity).then(|| {
                    s.fresh += 1;
                    s.fresh - 1
                })
            }) else {
                return NO_STATS_SLOT;
            };
            let zeroed = aya::util::nr_cpus()
                .map_err(|(_, e)| anyhow::Error::from(e))
                .and_then(|n| Ok(PerCpuValues::try_from(vec![AllocStats::default(); n])?))
                .and_then(|v| Ok(self.alloc_stats.set(slot, v, 0)?));
            if let Err(e) = zeroed {
                tracing::warn!("cannot zero XT_ASTATS slot {slot}: {e:#}");
                s.free.push(slot);
                return NO_STATS_SLOT;
            }
            s.by_relay.insert(key, (slot, relay, *five_tuple));
            slot
        }

        /// The slot's sum over CPUs.
        fn slot_counters(&self, slot: u32) -> Counters {
            let mut c = Counters::default();
            if let Ok(v) = self.alloc_stats.get(&slot, 0) {
                for s in v.iter() {
                    c.add(&counters(s));
                }
            }
            c
        }

        /// Free the allocation's slot, keeping what it counted in the totals.
        fn release_stats_slot(&mut self, key: &Endpoint) {
            if let Some((slot, _, _)) = self.stats_slots.by_relay.remove(key) {
                let c = self.slot_counters(slot);
                self.stats_slots.retired.add(&c);
                self.stats_slots.free.push(slot);
            }
        }

        /// What the in-kernel relay carried, per allocation and in total.
        pub fn in_kernel_report(&self) -> super::InKernelReport {
            let mut report = super::InKernelReport {
                totals: self.stats_slots.retired,
                ..Default::default()
            };
            for (slot, relay, five_tuple) in self.stats_slots.by_relay.values() {
                let c = self.slot_counters(*slot);
                report.totals.add(&c);
                report.allocations.push((*relay, *five_tuple, c));
            }
            report
        }

        /// Record what XT_RELAYS now holds for the allocation on `key` (its expiry,
        /// statistics slot and user slot; None: nothing) and rewrite its channels' copies.
        fn copy_relay(&mut self, key: Endpoint, entry: Option<(u64, u32, u32)>) -> Result<()> {
            match entry {
                Some(e) => self.copies.relays.insert(key, e),
                None => self.copies.relays.remove(&key),
            };
            self.rewrite_copies(key.port, |v| v.relay_ip == key.ip)
        }

        /// The same for the permission `key` in XT_PERMS (its expiry; None: nothing).
        fn copy_permission(&mut self, key: PermissionKey, expires_ns: Option<u64>) -> Result<()> {
            match expires_ns {
                Some(e) => self.copies.permissions.insert(key, e),
                None => self.copies.permissions.remove(&key),
            };
            let channels = self.rewrite_copies(key.relay_port, |v| v.peer_ip == key.peer_ip);
            let peers = self.rewrite_peer_copies(key);
            channels.and(peers)
        }

        /// Bring the permission copies of the peer channels of permission `key` (its relay
        /// port and peer address, every peer port) up to date, as [`Self::rewrite_copies`]
        /// does for the channels: an entry that cannot be rewritten is removed (the peer's
        /// data is then steered or passed, never relayed on a stale copy).
        fn rewrite_peer_copies(&mut self, key: PermissionKey) -> Result<()> {
            let Some(peers) = self.copies.peer_channels.get(&key.relay_port) else {
                return Ok(());
            };
            let changed: Vec<(PeerChannelKey, PeerChannel)> = peers
                .iter()
                .filter(|(k, _)| k.peer_ip == key.peer_ip)
                .map(|(k, v)| (*k, self.copies.fill_peer(k, *v)))
                .filter(|(k, v)| peers.get(k) != Some(v))
                .collect();
            let mut first_error = None;
            for (pkey, pc) in changed {
                match self.peer_channels.insert(pkey, pc, 0) {
                    Ok(()) => {
                        if let Some(m) = self.copies.peer_channels.get_mut(&key.relay_port) {
                            m.insert(pkey, pc);
                        }
                    }
                    Err(e) => {
                        let _ = self.peer_channels.remove(&pkey);
                        self.copies.forget_peer(&pkey);
                        first_error.get_or_insert(anyhow::Error::from(e).context(format!(
                            "channel {:#06x} on relay port {} not rewritten in XT_PEER_CH: \
                             its peer's data is no longer relayed in the driver",
                            u16::from_be_bytes(pc.channel),
                            u16::from_be_bytes(key.relay_port)
                        )));
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        }

        /// Bring the copies in the entries of the channels on relay port `port` that
        /// `which` selects up to date with [`ChannelCopies`]. An entry that cannot be
        /// rewritten is removed, with the first error returned: a stale copy could outlive
        /// what it copies, while without its entry the channel's data takes the socket
        /// path.
        fn rewrite_copies(
            &mut self,
            port: [u8; 2],
            which: impl Fn(&ChannelValue) -> bool,
        ) -> Result<()> {
            let Some(channels) = self.copies.channels.get(&port) else {
                return Ok(());
            };
            let changed: Vec<(ChannelKey, ChannelValue)> = channels
                .iter()
                .filter(|(_, v)| which(v))
                .map(|(k, v)| (*k, self.copies.fill(*v)))
                .filter(|(k, v)| channels.get(k) != Some(v))
                .collect();
            let mut first_error = None;
            for (key, value) in changed {
                match self.channels.insert(key, value, 0) {
                    Ok(()) => {
                        if let Some(m) = self.copies.channels.get_mut(&port) {
                            m.insert(key, value);
                        }
                    }
                    Err(e) => {
                        let _ = self.channels.remove(&key);
                        self.hops.remove_channel(&key);
                        self.copies.forget(&key, port);
                        first_error.get_or_insert(anyhow::Error::from(e).context(format!(
                            "channel {:#06x} on relay port {} not rewritten in XT_CHANNELS: \
                             its data now takes the socket path",
                            u16::from_be_bytes(key.channel),
                            u16::from_be_bytes(port)
                        )));
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        }

        /// Mark the allocation on `relay` as having permissions outside the map. An
        /// allocation not in the map needs nothing: its peer data is passed anyway.
        fn degrade(&mut self, relay: Endpoint) {
            self.degraded.insert(relay);
            if let Ok(mut v) = self.relays.get(&relay, 0) {
                if v.flags & relay_flags::PASS_UNPERMITTED == 0 {
                    v.flags |= relay_flags::PASS_UNPERMITTED;
                    if self.relays.insert(relay, v, 0).is_err() {
                        // The stale entry would drop that allocation's peer data: without
                        // it the program passes all of it.
                        let _ = self.relays.remove(&relay);
                        self.hops.remove_relay(&relay);
                        let _ = self.copy_relay(relay, None);
                    }
                }
            }
        }
    }
}

impl Drop for XdpPath {
    fn drop(&mut self) {
        if let Ok(c) = self.counters() {
            tracing::info!("XDP counters: {}", c.summary());
        }
        let attached: Vec<_> = self.attached.drain(..).collect();
        for a in attached {
            match xturn_program(&mut self.ebpf).and_then(|p| Ok(p.detach(a.link)?)) {
                Ok(()) => tracing::debug!("XDP program detached from {}", a.name),
                Err(e) => tracing::warn!("cannot detach XDP from {}: {e:#}", a.name),
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
    use xturn_xdp_common::NO_STATS_SLOT;

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
        let five_tuple = FiveTuple::udp(ClientAddr(sa("192.0.2.2:40000")), sa("192.0.2.1:3478"));
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

    /// A full permission map never drops peer data user space would relay: the allocation
    /// whose permission did not fit passes what it has no map permission for, also after a
    /// refresh of the allocation, while its mirrored permissions are still steered; full
    /// channel and allocation maps leave their traffic unsteered (passed).
    /// The copies a channel entry carries of its allocation (expiry, statistics slot) and
    /// of its peer's permission follow every change to either, and only for the channels
    /// they concern.
    #[test]
    fn channel_entries_carry_their_allocation_and_permission() {
        if !is_root() {
            return;
        }
        let mut x = XdpPath::load().unwrap();
        let t = Instant::now() + Duration::from_secs(60);
        // An expiry in the map, against the instant it was made from (the conversion to
        // CLOCK_MONOTONIC reads two clocks: within a millisecond); None: 0.
        let ns = |t: Instant| Some(t);
        let same = |got: (u64, u64, u32), want: (Option<Instant>, Option<Instant>, u32)| {
            let close = |g: u64, w: Option<Instant>| match w {
                None => g == 0,
                Some(w) => instant_to_monotonic_ns(w).abs_diff(g) < 1_000_000,
            };
            assert!(
                close(got.0, want.0) && close(got.1, want.1) && got.2 == want.2,
                "{got:?} vs {want:?}"
            );
        };
        let client = |port: u16| {
            FiveTuple::udp(
                ClientAddr(sa(&format!("192.0.2.2:{port}"))),
                sa("192.0.2.1:3478"),
            )
        };
        let (a, b) = (
            RelayAddr(sa("198.51.100.1:50000")),
            RelayAddr(sa("198.51.100.1:50002")),
        );
        let (p1, p2, p3) = (
            sa("198.51.100.2:6000"),
            sa("198.51.100.3:6000"),
            sa("198.51.100.4:6000"),
        );
        let alloc = |x: &mut XdpPath, relay, port, expires| {
            x.apply(&Change::InstallAllocation {
                five_tuple: client(port),
                relay,
                expires,
                user: 0,
            })
            .unwrap()
        };
        let permit = |x: &mut XdpPath, relay, peer: SocketAddr, expires| {
            x.apply(&Change::InstallPermission {
                relay,
                peer: peer.ip(),
                expires,
            })
            .unwrap()
        };
        let bind = |x: &mut XdpPath, relay, port, n, peer| {
            x.apply(&Change::InstallChannel {
                five_tuple: client(port),
                relay,
                channel: ChannelNumber::new(n).unwrap(),
                peer: PeerAddr(peer),
                expires: t,
            })
            .unwrap()
        };
        let key =
            |port: u16, n: u16| mirror::channel_key(&client(port), ChannelNumber::new(n).unwrap());
        // (allocation expiry, permission expiry, statistics slot) in the map.
        let copies = |x: &XdpPath, port: u16, n: u16| {
            let v = x.data_plane.channels.get(&key(port, n), 0).unwrap();
            (v.relay_expires_ns, v.permission_expires_ns, v.stats_slot)
        };
        // The peer channel's permission copy (XT_PEER_CH), in the same shape.
        let peer_copy = |x: &XdpPath, relay, peer| {
            let pc = x
                .data_plane
                .peer_channels
                .get(&mirror::peer_channel_key(relay, peer), 0)
                .unwrap();
            (pc.expires_ns, pc.permission_expires_ns, 0)
        };
        alloc(&mut x, a, 40000, t);
        alloc(&mut x, b, 40001, t);
        permit(&mut x, a, p1, t);
        permit(&mut x, a, p2, t);
        permit(&mut x, b, p1, t);
        bind(&mut x, a, 40000, 0x4001, p1);
        bind(&mut x, a, 40000, 0x4002, p2);
        bind(&mut x, b, 40001, 0x4001, p1);
        // A channel bound before its peer's permission is installed.
        bind(&mut x, a, 40000, 0x4003, p3);
        let (_, _, slot_a) = copies(&x, 40000, 0x4001);
        let (_, _, slot_b) = copies(&x, 40001, 0x4001);
        assert!(slot_a != NO_STATS_SLOT && slot_b != NO_STATS_SLOT && slot_a != slot_b);
        same(copies(&x, 40000, 0x4001), (ns(t), ns(t), slot_a));
        same(copies(&x, 40000, 0x4003), (ns(t), None, slot_a));
        same(peer_copy(&x, a, p1), (ns(t), ns(t), 0));
        same(peer_copy(&x, a, p3), (ns(t), None, 0));

        // A refresh of allocation a: its channels only.
        let t2 = t + Duration::from_secs(5);
        alloc(&mut x, a, 40000, t2);
        same(copies(&x, 40000, 0x4001), (ns(t2), ns(t), slot_a));
        same(copies(&x, 40000, 0x4002), (ns(t2), ns(t), slot_a));
        same(copies(&x, 40001, 0x4001), (ns(t), ns(t), slot_b));
        // A refreshed permission: the channels of that allocation to that peer only.
        let t3 = t + Duration::from_secs(7);
        permit(&mut x, a, p1, t3);
        same(copies(&x, 40000, 0x4001), (ns(t2), ns(t3), slot_a));
        same(copies(&x, 40000, 0x4002), (ns(t2), ns(t), slot_a));
        same(copies(&x, 40001, 0x4001), (ns(t), ns(t), slot_b));
        same(peer_copy(&x, a, p1), (ns(t), ns(t3), 0));
        same(peer_copy(&x, a, p2), (ns(t), ns(t), 0));
        same(peer_copy(&x, b, p1), (ns(t), ns(t), 0));
        permit(&mut x, a, p3, t3);
        same(copies(&x, 40000, 0x4003), (ns(t2), ns(t3), slot_a));
        same(peer_copy(&x, a, p3), (ns(t), ns(t3), 0));
        // A removed permission, then a removed allocation: expiry 0 in their copies.
        x.apply(&Change::RemovePermission {
            relay: a,
            peer: p2.ip(),
        })
        .unwrap();
        same(copies(&x, 40000, 0x4002), (ns(t2), None, slot_a));
        same(peer_copy(&x, a, p2), (ns(t), None, 0));
        x.apply(&Change::RemoveAllocation {
            five_tuple: client(40000),
            relay: a,
        })
        .unwrap();
        same(copies(&x, 40000, 0x4001), (None, ns(t3), NO_STATS_SLOT));
        same(copies(&x, 40001, 0x4001), (ns(t), ns(t), slot_b));
        // A removed channel is forgotten: a later change does not put it back.
        x.apply(&Change::RemoveChannel {
            five_tuple: client(40001),
            channel: ChannelNumber::new(0x4001).unwrap(),
            relay: b,
            peer: PeerAddr(p1),
        })
        .unwrap();
        alloc(&mut x, b, 40001, t2);
        assert!(x.data_plane.channels.get(&key(40001, 0x4001), 0).is_err());
        permit(&mut x, b, p1, t3);
        let pkey = mirror::peer_channel_key(b, p1);
        assert!(x.data_plane.peer_channels.get(&pkey, 0).is_err());
    }

    #[test]
    fn full_maps_pass_instead_of_dropping() {
        if !is_root() {
            return;
        }
        let sizes = MapSizes {
            allocations: 2,
            permissions: 2,
            channels: 1,
        };
        let mut x = XdpPath::load_with(sizes).unwrap();
        x.add_listener(sa("192.0.2.1:3478")).unwrap();
        x.set_switches(Switches::default()).unwrap();
        let live = Instant::now() + Duration::from_secs(60);
        let five_tuple = FiveTuple::udp(ClientAddr(sa("192.0.2.2:40000")), sa("192.0.2.1:3478"));
        let (relay, other) = (
            RelayAddr(sa("198.51.100.1:50000")),
            RelayAddr(sa("198.51.100.1:50002")),
        );
        for r in [relay, other] {
            x.apply(&Change::InstallAllocation {
                five_tuple,
                relay: r,
                expires: live,
                user: 0,
            })
            .unwrap();
        }
        let peers: Vec<SocketAddr> = (2..5)
            .map(|i| sa(&format!("198.51.100.{i}:6000")))
            .collect();
        for p in &peers[..2] {
            x.apply(&Change::InstallPermission {
                relay,
                peer: p.ip(),
                expires: live,
            })
            .unwrap();
        }
        use Counter::*;
        let third = frame(peers[2], relay.0, b"x");
        assert_eq!(run(&x, &third), (XDP_DROP, vec![DropNoPermission]));
        let e = x
            .apply(&Change::InstallPermission {
                relay,
                peer: peers[2].ip(),
                expires: live,
            })
            .unwrap_err();
        assert!(format!("{e:#}").contains("not in XT_PERMS"), "{e:#}");
        assert_eq!(x.mirror_stats().permissions_not_mirrored, 1);
        assert_eq!(run(&x, &third), (XDP_PASS, vec![PassPermissionNotMirrored]));
        // A mirrored permission is still steered (no socket here: passed as such).
        let first = frame(peers[0], relay.0, b"x");
        assert_eq!(run(&x, &first), (XDP_PASS, vec![PassNoXskPeer]));
        // The other allocation keeps dropping unsolicited data in the driver.
        assert_eq!(
            run(&x, &frame(peers[2], other.0, b"x")),
            (XDP_DROP, vec![DropNoPermission])
        );
        // A refresh of the allocation keeps the flag.
        x.apply(&Change::InstallAllocation {
            five_tuple,
            relay,
            expires: live + Duration::from_secs(1),
            user: 0,
        })
        .unwrap();
        assert_eq!(run(&x, &third), (XDP_PASS, vec![PassPermissionNotMirrored]));
        // A third allocation does not fit: its peer data is not the program's business.
        let late = RelayAddr(sa("198.51.100.1:50004"));
        assert!(x
            .apply(&Change::InstallAllocation {
                five_tuple,
                relay: late,
                expires: live,
                user: 0,
            })
            .is_err());
        assert_eq!(
            run(&x, &frame(peers[0], late.0, b"x")),
            (XDP_PASS, vec![PassNotOurs])
        );
        // Channels: the second does not fit and stays unbound for the program.
        let ch = |n: u16| Change::InstallChannel {
            five_tuple,
            relay,
            channel: ChannelNumber::new(n).unwrap(),
            peer: PeerAddr(peers[0]),
            expires: live,
        };
        x.apply(&ch(0x4001)).unwrap();
        assert!(x.apply(&ch(0x4002)).is_err());
        let cd = frame(
            five_tuple.client.0,
            five_tuple.server,
            &[0x40, 0x02, 0, 1, 7],
        );
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassChannelUnbound]));
        assert_eq!(
            x.mirror_stats(),
            MirrorStats {
                allocations_not_mirrored: 1,
                permissions_not_mirrored: 1,
                channels_not_mirrored: 1,
            }
        );
        // Removing the allocation forgets the flag; a new one on that port drops again.
        x.apply(&Change::RemoveAllocation { five_tuple, relay })
            .unwrap();
        x.apply(&Change::InstallAllocation {
            five_tuple,
            relay,
            expires: live,
            user: 0,
        })
        .unwrap();
        assert_eq!(run(&x, &third), (XDP_DROP, vec![DropNoPermission]));
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
        let five_tuple = FiveTuple::udp(ClientAddr(sa("192.0.2.2:40000")), sa("192.0.2.1:3478"));
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
        x.apply(&Change::InstallAllocation {
            five_tuple,
            relay,
            expires: live,
            user: 0,
        })
        .unwrap();
        assert_eq!(run(&x, &from_peer), (XDP_DROP, vec![DropNoPermission]));
        x.apply(&Change::InstallPermission {
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
        x.apply(&Change::InstallChannel {
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
        x.apply(&Change::InstallChannel {
            five_tuple,
            relay,
            channel,
            peer: PeerAddr(peer),
            expires: live + Duration::from_secs(1),
        })
        .unwrap();
        assert_eq!(x.data_plane.channels.get(&ckey, 0).unwrap().hop, chop);
        // The in-kernel relay's entries: the peer's channel (number, the binding's
        // expiry, refreshed with it) and a statistics slot of the allocation, zeroed.
        let pkey = mirror::peer_channel_key(relay, peer);
        let pc = x.data_plane.peer_channels.get(&pkey, 0).unwrap();
        assert_eq!(pc.channel, 0x4001u16.to_be_bytes());
        assert_eq!(
            pc.expires_ns,
            x.data_plane.channels.get(&ckey, 0).unwrap().expires_ns
        );
        let slot = x
            .data_plane
            .relays
            .get(&endpoint(relay.0), 0)
            .unwrap()
            .stats_slot;
        assert_eq!(slot, 0, "the first allocation gets the first slot");
        let report = x.in_kernel_report();
        assert_eq!(report.allocations.len(), 1);
        assert_eq!(report.allocations[0].0, relay);
        assert_eq!(report.totals, Default::default());

        // A permission refreshed into the past (as the control plane's expiry would be
        // once it passes) drops peer data in the driver; ChannelData on the live channel
        // is still steered, and the forwarder drops it (its data plane checks permissions
        // exactly; the program does not repeat that look-up). The program's clock is
        // coarse (a jiffy, up to 10 ms, behind), so the expiry is set well in the past.
        x.apply(&Change::InstallPermission {
            relay,
            peer: peer.ip(),
            expires: Instant::now() - Duration::from_millis(50),
        })
        .unwrap();
        assert_eq!(run(&x, &from_peer), (XDP_DROP, vec![DropNoPermission]));
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassNoXskChannel]));

        for out in [
            Change::RemoveChannel {
                five_tuple,
                relay,
                channel,
                peer: PeerAddr(peer),
            },
            Change::RemovePermission {
                relay,
                peer: peer.ip(),
            },
            Change::RemoveAllocation { five_tuple, relay },
        ] {
            x.apply(&out).unwrap();
            // Removing again is not an error.
            x.apply(&out).unwrap();
        }
        assert_eq!(run(&x, &from_peer), (XDP_PASS, vec![PassNotOurs]));
        assert_eq!(run(&x, &cd), (XDP_PASS, vec![PassChannelUnbound]));
        assert!(x.data_plane.peer_channels.get(&pkey, 0).is_err());
        assert!(x.in_kernel_report().allocations.is_empty());
        // The slot is free again: the next allocation gets it back, zeroed.
        x.apply(&Change::InstallAllocation {
            five_tuple,
            relay,
            expires: live,
            user: 0,
        })
        .unwrap();
        let v = x.data_plane.relays.get(&endpoint(relay.0), 0).unwrap();
        assert_eq!(v.stats_slot, slot);
    }
}
