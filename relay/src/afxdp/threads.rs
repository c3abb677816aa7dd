//! The AF_XDP fast path inside the server (with `--xdp`): forwarder threads, each owning
//! the AF_XDP sockets of some receive queues of every XDP interface in one shared UMEM,
//! registered in the XDP program's XSK map so the program steers TURN data to them.
//!
//! ```text
//!  --xdp A,B (queues 0..n each) ─► plan: thread t owns queue q of A and B when q % threads == t
//!  thread t: XskSet [(A,q), (B,q), ...] ─► XdpPath::serve_queue ─► Forwarder::poll loop, pinned
//!  control plane ─► Update channel (as the socket workers) ─► Forwarder::apply
//!  slow path (Data indications, family change): the listener's and relay's kernel sockets
//! ```
//!
//! Every thread publishes its counters (forwarder, module, kernel XDP_STATISTICS per
//! socket, per-allocation packets and bytes) twice a second; the server's
//! [`StatusWriter`](crate::status::StatusWriter) writes them to `/run/xturn/<pid>/status.json`,
//! which `xturn stats` reads.

use crate::afxdp::forwarder::{Forwarder, SlowPath};
use crate::afxdp::ring::{
    frame_size_for_mtu, set_thread_nice, QueueStats, Xsk, XskConfig, XskSet, DEFAULT_RING_SIZE,
    RX_HEADROOM,
};
use crate::config::Settings;
use crate::host::read_u32;
use crate::net::source_socket;
use crate::spawn::{panic_message, spawn_pinned};
use crate::status::{PortReport, ThreadReport};
use crate::update::Update;
use crate::xdp::XdpPath;
use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xturn_control::bandwidth::Limits;
use xturn_control::RelayAddr;

/// Upper bound on receive queues served per interface (the XSK map's layout).
const MAX_QUEUES: u32 = xturn_xdp_common::capacity::MAX_QUEUES;

/// An interface the XDP program is attached to, as the fast path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// Receive queues (the `queues/rx-*` entries in sysfs).
    pub queues: u32,
    pub mtu: u32,
}

impl Interface {
    /// Read `name`'s index, queue count and MTU from sysfs (this network namespace).
    pub fn probe(name: &str) -> Result<Interface> {
        let dir = Path::new("/sys/class/net").join(name);
        let read = |f: &str| read_u32(&dir.join(f));
        let ifindex = read("ifindex")?;
        let mtu = read("mtu")?;
        let queues = std::fs::read_dir(dir.join("queues"))
            .with_context(|| format!("cannot list the queues of {name}"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count() as u32;
        if queues == 0 {
            bail!("{name} has no receive queues in sysfs");
        }
        Ok(Interface {
            name: name.to_string(),
            ifindex,
            queues,
            mtu,
        })
    }
}

/// Which (interface index, queue) pairs each forwarder thread owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub threads: Vec<Vec<(u32, u32)>>,
    pub frame_size: usize,
}

/// Spread the queues of `ifaces` over at most `max_threads` threads: thread `t` owns
/// queue `q` of every interface that has it when `q % threads == t`, so a frame received
/// on one interface can leave on another from the same thread's UMEM, with no copy.
pub fn plan(ifaces: &[Interface], max_threads: usize) -> Result<Plan> {
    if ifaces.is_empty() {
        bail!("no interface for the AF_XDP fast path");
    }
    let most = ifaces.iter().map(|i| i.queues).max().unwrap_or(1);
    if most > MAX_QUEUES {
        bail!(
            "{} has {most} receive queues; the AF_XDP fast path serves at most {MAX_QUEUES} \
             per interface (reduce them with ethtool -L)",
            ifaces
                .iter()
                .find(|i| i.queues == most)
                .map_or("", |i| &i.name)
        );
    }
    let n = (most as usize).min(max_threads.max(1));
    let mut threads = vec![Vec::new(); n];
    for q in 0..most {
        for i in ifaces {
            if q < i.queues {
                threads[q as usize % n].push((i.ifindex, q));
            }
        }
    }
    let mtu = ifaces.iter().map(|i| i.mtu).max().unwrap_or(1500);
    Ok(Plan {
        threads,
        frame_size: frame_size_for_mtu(mtu as usize),
    })
}

/// UMEM frames per socket: its fill ring full plus as many in flight through RX and TX.
const FRAMES_PER_PORT: usize = 2 * DEFAULT_RING_SIZE as usize;

/// The sockets of every thread of `plan`, bound and registered in the XDP program's XSK
/// map. Fails (naming the socket) if any cannot be bound.
pub fn open(plan: &Plan, xdp: &mut XdpPath) -> Result<Vec<XskSet>> {
    let mut sets = Vec::new();
    for ports in &plan.threads {
        let cfg = XskConfig::new(plan.frame_size, FRAMES_PER_PORT * ports.len());
        let set = XskSet::with_config(ports, cfg).with_context(|| {
            format!(
                "cannot open AF_XDP sockets on (ifindex, queue) {ports:?} (run without the \
                 fast path with --no-afxdp)"
            )
        })?;
        for p in 0..set.ports() {
            xdp.serve_queue(set.ifindex(p), set.queue(p), set.fd(p))?;
        }
        sets.push(set);
    }
    Ok(sets)
}

/// Warn when IP forwarding is off on an interface: the XDP program's FIB lookup then
/// fails and TURN data stays on the socket path (still correct, only slower).
pub fn check_forwarding(ifaces: &[Interface], ipv4: bool, ipv6: bool) {
    for i in ifaces {
        for (on, fam, path) in [
            (
                ipv4,
                "ipv4",
                format!("/proc/sys/net/ipv4/conf/{}/forwarding", i.name),
            ),
            (
                ipv6,
                "ipv6",
                format!("/proc/sys/net/ipv6/conf/{}/forwarding", i.name),
            ),
        ] {
            if !on {
                continue;
            }
            if std::fs::read_to_string(&path)
                .map(|s| s.trim() == "0")
                .unwrap_or(false)
            {
                tracing::warn!(
                    "{fam} forwarding is off on {}: the XDP program cannot look up next hops, \
                     so relayed {fam} data takes the socket path (sysctl -w \
                     net.{fam}.conf.{}.forwarding=1; see README, AF_XDP fast path)",
                    i.name,
                    i.name
                );
            }
        }
    }
}

/// The fast path's kernel sockets: the server's listeners (duplicated descriptors of the
/// socket workers' sockets, so receiving is unchanged) and the relayed addresses' sockets.
pub struct SocketSlowPath {
    pub listeners: Vec<(SocketAddr, UdpSocket)>,
    pub relays: HashMap<RelayAddr, Arc<UdpSocket>>,
}

impl SlowPath for SocketSlowPath {
    fn send(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let Some(sock) = source_socket(&self.listeners, &self.relays, from) else {
            return;
        };
        if let Err(e) = sock.send_to(payload, to) {
            tracing::debug!("slow path send {from} -> {to} failed: {e}");
        }
    }
}

/// How often a thread publishes its counters.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Longest sleep without frames: bounds the delay of shutdown and of the first update.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// A fault to inject into forwarder thread 0, for tests of the fast path's fallback:
/// `XTURN_FAULT_AFXDP=exit:N` makes it panic after it received N frames, `hang:N` makes it
/// stop serving its rings (as a stuck thread would) until shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Exit(u64),
    Hang(u64),
}

impl Fault {
    pub const ENV: &'static str = "XTURN_FAULT_AFXDP";

    pub fn parse(s: &str) -> Option<Fault> {
        let (kind, n) = s.split_once(':')?;
        let n = n.parse().ok()?;
        match kind {
            "exit" => Some(Fault::Exit(n)),
            "hang" => Some(Fault::Hang(n)),
            _ => None,
        }
    }

    /// The fault asked for in the environment, for thread `t` (only thread 0 gets one).
    pub fn from_env(t: usize) -> Option<Fault> {
        let v = std::env::var(Self::ENV).ok()?;
        let f = Fault::parse(&v);
        if f.is_none() {
            tracing::warn!("{}={v:?} ignored: use exit:N or hang:N", Self::ENV);
        }
        f.filter(|_| t == 0)
    }
}

/// A forwarder thread's loop: updates first (so a frame steered after an update is
/// judged by it), then a batch from every socket, then sleep in poll(2) when idle. Every
/// turn stores the milliseconds since `epoch` in `heartbeat`, which the server's watchdog
/// reads.
pub fn run_thread(
    mut fw: Forwarder<XskSet, SocketSlowPath>,
    updates: Receiver<Update>,
    shutdown: Arc<AtomicBool>,
    report: Arc<Mutex<ThreadReport>>,
    heartbeat: Arc<AtomicU64>,
    epoch: Instant,
    fault: Option<Fault>,
) {
    let mut next_report = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        while let Ok(u) = updates.try_recv() {
            match u {
                Update::Data(o) => fw.apply(&o),
                Update::RelayOpened(r, s) => {
                    fw.slow_path().relays.insert(r, s);
                }
                Update::RelayClosed(r) => {
                    fw.slow_path().relays.remove(&r);
                }
                Update::Mtu(ifindex, mtu) => fw.set_mtu(ifindex, mtu),
            }
        }
        let now = Instant::now();
        heartbeat.store((now - epoch).as_millis() as u64, Ordering::Relaxed);
        let n = fw.poll(now);
        if now >= next_report {
            next_report = now + REPORT_EVERY;
            publish(&mut fw, &report);
            fw.shrink();
        }
        match fault {
            Some(Fault::Exit(after)) if fw.stats().received >= after => {
                publish(&mut fw, &report);
                panic!("{}: exit after {after} frames", Fault::ENV);
            }
            Some(Fault::Hang(after)) if fw.stats().received >= after => {
                publish(&mut fw, &report);
                while !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(IDLE_WAIT);
                }
                return;
            }
            _ => {}
        }
        if n == 0 {
            fw.xsk().wait(IDLE_WAIT);
        }
    }
    publish(&mut fw, &report);
}

fn publish(fw: &mut Forwarder<XskSet, SocketSlowPath>, report: &Mutex<ThreadReport>) {
    let forwarder = fw.stats();
    let allocations = fw.data_plane().allocations().collect();
    let relayed = fw.data_plane().totals();
    let xsk = fw.xsk();
    let ports = (0..xsk.ports())
        .map(|p| PortReport {
            ifindex: xsk.ifindex(p),
            queue: xsk.queue(p),
            mode: xsk.mode(p),
            xdp_statistics: xsk.stats(p),
            rings: xsk.counters(p),
            fill_frames: xsk.fill_frames(p),
            tx_frames: xsk.tx_frames(p),
            ring_indices: xsk.ring_indices(p),
        })
        .collect();
    let (umem_frames, free_frames, held_frames) =
        (xsk.frames(), xsk.free_frames(), xsk.caller_frames());
    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
    r.forwarder = forwarder;
    r.ports = ports;
    r.umem_frames = umem_frames;
    r.free_frames = free_frames;
    r.held_frames = held_frames;
    r.allocations = allocations;
    r.relayed = relayed;
}

/// A one-line summary per thread for the log.
pub fn summary(threads: &[ThreadReport]) -> Vec<String> {
    threads
        .iter()
        .map(|t| {
            let f = &t.forwarder;
            let k = t.ports.iter().fold(QueueStats::default(), |a, p| {
                let s = &p.xdp_statistics;
                QueueStats {
                    rx_dropped: a.rx_dropped + s.rx_dropped,
                    rx_invalid_descs: a.rx_invalid_descs + s.rx_invalid_descs,
                    tx_invalid_descs: a.tx_invalid_descs + s.tx_invalid_descs,
                    rx_ring_full: a.rx_ring_full + s.rx_ring_full,
                    rx_fill_ring_empty_descs: a.rx_fill_ring_empty_descs
                        + s.rx_fill_ring_empty_descs,
                    tx_ring_empty_descs: a.tx_ring_empty_descs + s.tx_ring_empty_descs,
                }
            });
            format!(
                "AF_XDP thread {}{}: received {} to_peer {} to_client {} slow_path {} \
                 (mtu {} tx_full {}) partial_checksum {} not_allowed {} malformed {} \
                 bad_checksum {} tx_full {}; kernel rx_dropped {} rx_ring_full {} \
                 fill_ring_empty {} tx_invalid {}",
                t.thread,
                t.dead
                    .as_ref()
                    .map_or(String::new(), |d| format!(" (dead: {d})")),
                f.received,
                f.to_peer,
                f.to_client,
                f.slow_path,
                f.slow_path_mtu,
                f.slow_path_tx_full,
                f.partial_checksum,
                f.dropped_not_allowed,
                f.dropped_malformed,
                f.dropped_bad_checksum,
                f.dropped_tx_full,
                k.rx_dropped,
                k.rx_ring_full,
                k.rx_fill_ring_empty_descs,
                k.tx_invalid_descs
            )
        })
        .collect()
}

/// A forwarder thread whose heartbeat is older than this is taken for dead: its queues go
/// to the socket path until it beats again.
pub const STALL: Duration = Duration::from_secs(2);

/// One forwarder, its sockets bound and registered, not running yet.
struct Ready {
    thread: usize,
    forwarder: Forwarder<XskSet, SocketSlowPath>,
    updates: Receiver<Update>,
    report: Arc<Mutex<ThreadReport>>,
    ports: Vec<(u32, u32, RawFd)>,
}

/// The AF_XDP fast path of a server between start-up and the privilege drop: every
/// socket bound and in the XDP program's XSK map (so the first allocation's data can take
/// it), no thread running.
pub struct Opened {
    /// The interfaces it serves.
    pub interfaces: Vec<Interface>,
    /// Where the control plane sends each forwarder its [`Update`]s.
    pub updates: Vec<Sender<Update>>,
    /// What each forwarder publishes, for the status file.
    pub reports: Vec<Arc<Mutex<ThreadReport>>>,
    ready: Vec<Ready>,
}

/// Open the AF_XDP fast path on `settings.xdp` for at most `settings.threads` threads:
/// sockets bound and registered, forwarders built over duplicates of the socket
/// workers' `listeners` (their slow path), sharing the server's bandwidth `limits`.
pub fn open_forwarders(
    settings: &Settings,
    xdp: &mut XdpPath,
    listeners: &[(SocketAddr, UdpSocket)],
    limits: &Arc<Limits>,
    core_for: impl Fn(usize) -> Option<core_affinity::CoreId>,
) -> Result<Opened> {
    let ifaces = settings
        .xdp
        .iter()
        .map(|i| Interface::probe(i))
        .collect::<Result<Vec<_>>>()?;
    check_forwarding(
        &ifaces,
        settings.relay_ipv4.is_some(),
        settings.relay_ipv6.is_some(),
    );
    let plan = plan(&ifaces, settings.threads)?;
    // A frame longer than a UMEM frame holds would be dropped by the AF_XDP socket.
    xdp.set_max_steer_len((plan.frame_size - RX_HEADROOM) as u32)?;
    let sets = open(&plan, xdp)?;
    let mut opened = Opened {
        interfaces: Vec::new(),
        updates: Vec::new(),
        reports: Vec::new(),
        ready: Vec::new(),
    };
    for (t, set) in sets.into_iter().enumerate() {
        let modes: Vec<String> = (0..set.ports())
            .map(|p| {
                let name = ifaces
                    .iter()
                    .find(|i| i.ifindex == set.ifindex(p))
                    .map_or("?", |i| i.name.as_str());
                format!("{name}/{} ({:?})", set.queue(p), set.mode(p))
            })
            .collect();
        tracing::info!("AF_XDP forwarder {t}: {}", modes.join(", "));
        let (tx, rx) = crossbeam_channel::unbounded();
        opened.updates.push(tx);
        let report = Arc::new(Mutex::new(ThreadReport {
            thread: t,
            core: core_for(t).map(|c| c.id),
            alive: true,
            ..Default::default()
        }));
        let ports: Vec<(u32, u32, RawFd)> = (0..set.ports())
            .map(|p| (set.ifindex(p), set.queue(p), set.fd(p)))
            .collect();
        opened.reports.push(report.clone());
        let ifindex = (0..set.ports()).map(|p| set.ifindex(p)).collect();
        // Duplicated descriptors: sending through them leaves receiving to the workers.
        let listeners = listeners
            .iter()
            .map(|(a, s)| Ok((*a, s.try_clone()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let slow = SocketSlowPath {
            listeners,
            relays: HashMap::new(),
        };
        let mut forwarder = Forwarder::new(set, ifindex, slow, rand::random());
        forwarder.set_limits(limits.clone());
        forwarder.set_external(settings.server.external.clone());
        for i in &ifaces {
            forwarder.set_mtu(i.ifindex, i.mtu);
        }
        opened.ready.push(Ready {
            thread: t,
            forwarder,
            updates: rx,
            report,
            ports,
        });
    }
    opened.interfaces = ifaces;
    Ok(opened)
}

impl Opened {
    /// Start every forwarder thread (pinned like the workers, at `nice`); `epoch` is the
    /// origin of their heartbeats.
    pub fn spawn(
        self,
        shutdown: &Arc<AtomicBool>,
        nice: i32,
        core_for: impl Fn(usize) -> Option<core_affinity::CoreId>,
        epoch: Instant,
    ) -> Result<Vec<Watched>> {
        let mut watched = Vec::new();
        for r in self.ready {
            let t = r.thread;
            let shutdown = shutdown.clone();
            let heartbeat = Arc::new(AtomicU64::new(0));
            let fault = Fault::from_env(t);
            if let Some(f) = fault {
                tracing::warn!("AF_XDP forwarder {t}: fault injection {f:?}");
            }
            let (hb, rep) = (heartbeat.clone(), r.report.clone());
            let (fw, rx) = (r.forwarder, r.updates);
            let handle = spawn_pinned(format!("xturn-afxdp-{t}"), core_for(t), move || {
                if let Err(e) = set_thread_nice(nice) {
                    tracing::warn!(
                        "AF_XDP forwarder {t}: cannot set nice value {nice} ({e}); it shares \
                         its core equally with the NAPI poll feeding it"
                    );
                }
                let report = rep.clone();
                let run = std::panic::AssertUnwindSafe(move || {
                    run_thread(fw, rx, shutdown, rep, hb, epoch, fault)
                });
                // Its sockets are closed while unwinding, which takes them out of the XSK map.
                if let Err(p) = std::panic::catch_unwind(run) {
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    r.alive = false;
                    r.dead = Some(format!("panicked: {}", panic_message(p.as_ref())));
                }
            })?;
            watched.push(Watched {
                thread: t,
                ports: r.ports,
                heartbeat,
                report: r.report,
                handle: Some(handle),
                unserved: false,
            });
        }
        Ok(watched)
    }
}

/// A forwarder thread, as the server's watchdog sees it.
pub struct Watched {
    thread: usize,
    /// (interface index, queue, socket) of each of its sockets.
    ports: Vec<(u32, u32, RawFd)>,
    heartbeat: Arc<AtomicU64>,
    report: Arc<Mutex<ThreadReport>>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// Its queues are out of the XSK map.
    unserved: bool,
}

impl Watched {
    /// The thread, to join at shutdown (once).
    pub fn take_handle(&mut self) -> Option<std::thread::JoinHandle<()>> {
        self.handle.take()
    }

    /// Take the queues of a dead or stuck thread out of the XSK map (the program then
    /// passes their frames to the socket path), and give them back if a stuck one beats
    /// again. `now_ms`: milliseconds since the heartbeats' epoch.
    /// The thread's heartbeat (milliseconds since the epoch given to `spawn`).
    pub fn heartbeat(&self) -> Arc<AtomicU64> {
        self.heartbeat.clone()
    }

    pub fn check(&mut self, xdp: &Mutex<XdpPath>, now_ms: u64) {
        let finished = self.handle.as_ref().is_none_or(|h| h.is_finished());
        let stale = now_ms.saturating_sub(self.heartbeat.load(Ordering::Relaxed))
            > STALL.as_millis() as u64;
        if (finished || stale) && !self.unserved {
            let mut x = xdp.lock().expect("xdp lock");
            for &(ifindex, queue, _) in &self.ports {
                if let Err(e) = x.unserve_queue(ifindex, queue) {
                    tracing::warn!("{e:#}");
                }
            }
            drop(x);
            self.unserved = true;
            let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
            r.alive = false;
            let why = r.dead.get_or_insert_with(|| {
                if finished {
                    "exited".into()
                } else {
                    format!("no turn of its loop for {} s", STALL.as_secs())
                }
            });
            tracing::error!(
                "AF_XDP forwarder {} is dead ({why}): the traffic of its queues {:?} now takes \
                 the socket path",
                self.thread,
                self.ports.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>()
            );
        } else if !finished && !stale && self.unserved {
            let mut x = xdp.lock().expect("xdp lock");
            let ok = self
                .ports
                .iter()
                .all(|&(ifindex, queue, fd)| x.serve_queue(ifindex, queue, fd).is_ok());
            drop(x);
            if ok {
                self.unserved = false;
                let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
                r.alive = true;
                r.dead = None;
                tracing::warn!(
                    "AF_XDP forwarder {} runs again: its queues take the fast path again",
                    self.thread
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ifindex: u32, queues: u32, mtu: u32) -> Interface {
        Interface {
            name: name.into(),
            ifindex,
            queues,
            mtu,
        }
    }

    #[test]
    fn queues_are_spread_over_threads_with_every_interface_in_each() {
        let p = plan(&[iface("a", 5, 4, 1500), iface("b", 7, 2, 1500)], 2).unwrap();
        assert_eq!(
            p.threads,
            vec![vec![(5, 0), (7, 0), (5, 2)], vec![(5, 1), (7, 1), (5, 3)]]
        );
        assert_eq!(p.frame_size, 2048);
    }

    #[test]
    fn no_more_threads_than_queues_and_big_mtu_gets_big_frames() {
        let p = plan(&[iface("a", 5, 1, 9000)], 8).unwrap();
        assert_eq!(p.threads, vec![vec![(5, 0)]]);
        assert_eq!(p.frame_size, 4096);
        let p = plan(&[iface("a", 5, 3, 1500)], 1).unwrap();
        assert_eq!(p.threads, vec![vec![(5, 0), (5, 1), (5, 2)]]);
    }

    #[test]
    fn too_many_queues_or_no_interface_is_an_error() {
        let e = plan(&[iface("big", 5, MAX_QUEUES + 1, 1500)], 2).unwrap_err();
        assert!(e.to_string().contains("ethtool -L"), "{e}");
        assert!(plan(&[], 2).is_err());
    }

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::parse("exit:100"), Some(Fault::Exit(100)));
        assert_eq!(Fault::parse("hang:0"), Some(Fault::Hang(0)));
        for bad in ["exit", "exit:x", "crash:1", ""] {
            assert_eq!(Fault::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_probes_from_sysfs() {
        let lo = Interface::probe("lo").unwrap();
        assert_eq!(lo.ifindex, 1);
        assert!(lo.queues >= 1 && lo.mtu >= 1280, "{lo:?}");
        let e = Interface::probe("xt-no-such-if").unwrap_err();
        assert!(
            format!("{e:#}").contains("/sys/class/net/xt-no-such-if"),
            "{e:#}"
        );
    }
}
