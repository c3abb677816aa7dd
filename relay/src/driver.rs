//! The socket data path: worker threads that drive the sans-IO control plane and relay
//! data with their own copy of the data-plane tables.
//!
//! ```text
//!  client ──UDP──> listener (SO_REUSEPORT, one per worker) ─┬─ ChannelData ─> DataPlane ─> relay socket ─> peer
//!                                                           └─ STUN ─> Mutex<Server> ─> outputs
//!  peer ──UDP──> relay socket (polled by one worker) ─> DataPlane ─> ChannelData/Data ind. ─> listener ─> client
//!  outputs: Transmit -> send; BindRelay -> bind + relay_bound; Install*/Remove* -> broadcast to every worker
//! ```
//!
//! The packet path takes no lock: each worker owns a [`DataPlane`] fed through a crossbeam
//! channel with the same outputs the server applies to its own. Control messages (STUN)
//! take the server mutex; they are rare next to data.

use crate::admin;
use crate::afxdp::threads::{self, Watched};
use crate::config::Settings;
use crate::metrics;
use crate::net::{self, source_socket, Epoll, RecvBatch, SendBatch, SocketBatches};
use crate::probe::Watch;
use crate::spawn::{panic_message, spawn_pinned};
use crate::status::{CopyReport, Dropped, StatusWriter, XdpReport, STATUS_DIR};
use crate::stream;
use crate::update::Update;
use crate::xdp::XdpPath;
use anyhow::Result;
use crossbeam_channel::{Receiver, Sender};
use rand::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use xturn_control::bandwidth::Limits;
use xturn_control::stateless::{DropReason, Stateless, Verdict};
use xturn_control::wire::{looks_like_channel_data, TransactionId};
use xturn_control::{
    Change, ClientAddr, ConnectionId, DataPlane, FiveTuple, Output, PeerAddr, RelayAddr, Server,
    StreamVerdict, Transport,
};

struct Shared {
    server: Mutex<Server>,
    /// Answers Binding and drops junk before anything takes the server lock.
    stateless: Stateless,
    /// Datagrams to the listeners dropped before the lock, by [`DropReason`].
    dropped: [AtomicU64; 4],
    updates: Vec<Sender<Update>>,
    epolls: Vec<Arc<Epoll>>,
    relays: Mutex<HashMap<RelayAddr, Arc<UdpSocket>>>,
    shutdown: Arc<AtomicBool>,
    /// The XDP program's maps, kept in step with the same outputs as the workers' tables
    /// (with `--xdp`), from `drive` under the server lock; the main loop also takes it
    /// to update interface flags and XSK slots.
    xdp: Option<Mutex<XdpPath>>,
    /// Outputs not mirrored into the XDP maps so far (logged at 1, 2, 4, 8, ...).
    not_mirrored: AtomicU64,
    /// Messages for TCP clients, written by the TCP thread (without `--no-tcp`).
    tcp: Option<Arc<stream::Outbox>>,
}

const LISTENER: u64 = 1 << 63;
const TIMER_TICK: Duration = Duration::from_millis(100);
/// How often the workers publish their per-allocation counts and the status file is
/// rewritten.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// How often the main thread looks at its workers: a dead one stops the process within
/// this (plus the join of the others).
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);
/// The supervisor's status report takes at most 1/STATUS_DUTY of its core (see its loop).
const STATUS_DUTY: u32 = 100;

/// When the status report that began at `began` and took `took` of CPU may run again.
fn next_status_at(began: Instant, took: Duration) -> Instant {
    began + REPORT_EVERY.max(took * STATUS_DUTY)
}

/// The CPU time this thread has used (what the status report's bound counts: not the
/// time it waited for the server's lock).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; the clock exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
const REPORT_TURNS: u64 = (REPORT_EVERY.as_millis() / SUPERVISE_EVERY.as_millis()) as u64;
/// How often the host's addresses are listed again for the peer filter.
const HOST_ADDRESSES_TURNS: u64 = 50;
/// How long a stopping server waits for its threads.
const JOIN_DEADLINE: Duration = Duration::from_secs(2);
/// A worker whose loop (which wakes at least every 50 ms) did not turn for this long is
/// not serving (`/healthz`).
const WORKER_STALL: Duration = Duration::from_secs(1);

fn relay_token(r: RelayAddr) -> u64 {
    ((r.0.is_ipv6() as u64) << 16) | r.0.port() as u64
}

fn owner(r: RelayAddr, n: usize) -> usize {
    r.0.port() as usize % n
}

fn drop_index(r: DropReason) -> usize {
    match r {
        DropReason::NotStun => 0,
        DropReason::Malformed => 1,
        DropReason::Unwanted => 2,
        DropReason::OverBudget => 3,
    }
}

impl Shared {
    /// The server, or `None` once a thread panicked holding it: the supervisor in [`run`]
    /// then stops the process, and nobody else panics on the poisoned lock meanwhile.
    fn server(&self) -> Option<std::sync::MutexGuard<'_, Server>> {
        self.server.lock().ok()
    }

    fn dropped(&self, limits: &Limits) -> Dropped {
        let n = |i: usize| self.dropped[i].load(Ordering::Relaxed);
        let over = limits.dropped();
        let shed = self.server().map_or(0, |s| s.unauth_shed());
        Dropped {
            over_unauth_budget: shed,
            not_stun: n(drop_index(DropReason::NotStun)),
            malformed: n(drop_index(DropReason::Malformed)),
            unwanted: n(drop_index(DropReason::Unwanted)),
            over_answer_budget: n(drop_index(DropReason::OverBudget)),
            over_bandwidth_packets: over.packets,
            over_bandwidth_bytes: over.bytes,
        }
    }

    fn relays(&self) -> std::sync::MutexGuard<'_, HashMap<RelayAddr, Arc<UdpSocket>>> {
        // A map of sockets stays consistent whatever panicked while holding it.
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broadcast(&self, mk: impl Fn() -> Update) {
        for tx in &self.updates {
            let _ = tx.send(mk());
        }
    }

    fn mirror_to_xdp(&self, c: &Change) {
        if let Some(x) = &self.xdp {
            if let Err(e) = x.lock().expect("xdp lock").apply(c) {
                let n = self.not_mirrored.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        "XDP maps not updated ({e:#}); the socket path serves that traffic \
                         ({n} outputs not mirrored so far; see xturn stats)"
                    );
                }
            }
        }
    }

    /// Drain the server's outputs. Called with the server lock held.
    fn drive(&self, server: &mut Server, now: Instant, listeners: &[(SocketAddr, UdpSocket)]) {
        while let Some(o) = server.poll_output() {
            match o {
                Output::Transmit(t) if t.transport == Transport::Tcp => {
                    if let Some(o) = &self.tcp {
                        o.send(
                            FiveTuple::tcp(ClientAddr(t.destination), t.source),
                            t.payload,
                        );
                    }
                }
                Output::Transmit(t) => {
                    let relays = self.relays();
                    let r = match source_socket(listeners, &relays, t.source) {
                        Some(s) => s.send_to(&t.payload, t.destination),
                        None => Ok(0),
                    };
                    if let Err(e) = r {
                        tracing::debug!("send to {} failed: {e}", t.destination);
                    }
                }
                Output::BindRelay {
                    token,
                    relay,
                    transport: Transport::Tcp,
                    ..
                } => {
                    // An RFC 6062 TCP allocation: a listener, served by the TCP thread.
                    let bound = self
                        .tcp
                        .as_ref()
                        .ok_or_else(|| std::io::Error::other("no TCP thread"))
                        .and_then(|o| Ok((o, stream::relay_listener(relay)?)));
                    match bound {
                        Ok((o, l)) => {
                            o.command(stream::Cmd::Listen(relay, l));
                            server.relay_bound(now, token, true);
                        }
                        Err(e) => {
                            tracing::debug!("tcp relay address {} unavailable: {e}", relay.0);
                            server.relay_bound(now, token, false);
                        }
                    }
                }
                Output::Tcp(op) => {
                    if let Some(o) = &self.tcp {
                        o.command(stream::Cmd::Relay(op));
                    }
                }
                Output::BindRelay {
                    token,
                    relay,
                    dont_fragment,
                    transport: Transport::Udp,
                } => match net::relay_socket(relay.0, dont_fragment) {
                    Ok(sock) => {
                        let sock = Arc::new(sock);
                        let n = self.epolls.len();
                        if let Err(e) =
                            self.epolls[owner(relay, n)].add(sock.as_raw_fd(), relay_token(relay))
                        {
                            tracing::warn!("cannot poll relay socket {}: {e}", relay.0);
                            server.relay_bound(now, token, false);
                            continue;
                        }
                        self.relays().insert(relay, sock.clone());
                        self.broadcast(|| Update::RelayOpened(relay, sock.clone()));
                        server.relay_bound(now, token, true);
                    }
                    Err(e) => {
                        tracing::debug!("relay address {} unavailable: {e}", relay.0);
                        server.relay_bound(now, token, false);
                    }
                },
                Output::DataPlane(c) => {
                    self.mirror_to_xdp(&c);
                    match c {
                        Change::RemoveAllocation { five_tuple, relay } => {
                            tracing::debug!(
                                "allocation {} of {} removed",
                                relay.0,
                                five_tuple.client.0
                            );
                            let c = Change::RemoveAllocation { five_tuple, relay };
                            self.broadcast(|| Update::Data(c.clone()));
                            if let Some(s) = self.relays().remove(&relay) {
                                let n = self.epolls.len();
                                self.epolls[owner(relay, n)].del(s.as_raw_fd());
                            }
                            self.broadcast(|| Update::RelayClosed(relay));
                        }
                        c => {
                            if let Change::InstallAllocation {
                                five_tuple, relay, ..
                            } = &c
                            {
                                tracing::debug!(
                                    "allocation {} for {}",
                                    relay.0,
                                    five_tuple.client.0
                                );
                            }
                            self.broadcast(|| Update::Data(c.clone()));
                        }
                    }
                }
            }
        }
    }
}

struct Worker {
    idx: usize,
    shared: Arc<Shared>,
    epoll: Arc<Epoll>,
    rx: Receiver<Update>,
    listeners: Vec<(SocketAddr, UdpSocket)>,
    data: DataPlane,
    relays: HashMap<RelayAddr, Arc<UdpSocket>>,
    recv: RecvBatch,
    /// This worker's allocations and what it relayed for them, for the status file.
    report: Arc<Mutex<CopyReport>>,
    to_peers: SocketBatches<RelayAddr>,
    to_clients: Vec<SendBatch>,
    out: Vec<u8>,
    rng: rand::rngs::StdRng,
    /// Relay addresses for IPv4 and IPv6: with the port in an epoll token they name the
    /// relay socket, so a ready socket is found with one hash look-up.
    relay_ips: (Option<IpAddr>, Option<IpAddr>),
    /// Fault injection for the supervision tests ([`WORKER_FAULT_ENV`]): panic holding the
    /// server lock at this control message.
    panic_at: Option<u64>,
    control_messages: u64,
    /// Milliseconds since `epoch` at the last turn of the loop (`/healthz`).
    heartbeat: Arc<AtomicU64>,
    epoch: Instant,
}

/// `XTURN_FAULT_WORKER=panic:N`: worker 0 panics, holding the server lock, at the N-th
/// control message it hands to the server (tests of supervision and lock poisoning).
const WORKER_FAULT_ENV: &str = "XTURN_FAULT_WORKER";

fn worker_fault(idx: usize) -> Option<u64> {
    let v = std::env::var(WORKER_FAULT_ENV).ok()?;
    let n = v.strip_prefix("panic:").and_then(|n| n.parse().ok());
    if n.is_none() {
        tracing::warn!("{WORKER_FAULT_ENV}={v:?} ignored: use panic:N");
    }
    n.filter(|_| idx == 0)
}

impl Worker {
    fn apply_updates(&mut self) {
        while let Ok(u) = self.rx.try_recv() {
            match u {
                Update::Data(o) => self.data.apply(&o),
                Update::RelayOpened(r, s) => {
                    self.relays.insert(r, s);
                }
                Update::RelayClosed(r) => {
                    self.relays.remove(&r);
                    self.to_peers.remove(&r);
                }
                Update::Mtu(..) => {}
            }
        }
    }

    fn run(mut self) {
        let mut ready = Vec::with_capacity(256);
        let mut next_tick = Instant::now() + TIMER_TICK;
        let mut next_report = Instant::now();
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            self.epoll.wait(50, &mut ready);
            crate::metrics::beat(&self.heartbeat, self.epoch);
            self.apply_updates();
            let now = Instant::now();
            if now >= next_report {
                next_report = now + REPORT_EVERY;
                *self.report.lock().expect("report lock") = CopyReport {
                    allocations: self.data.allocations().collect(),
                    totals: self.data.totals(),
                };
                self.data.shrink();
                xturn_control::dataplane::shrink_map(&mut self.relays);
                self.to_peers.shrink();
            }
            for &token in &ready {
                if token & LISTENER != 0 {
                    self.on_listener((token & !LISTENER) as usize);
                } else {
                    self.on_relay(token);
                }
            }
            // What the relay sockets' peers sent, relayed to the clients: sent once the
            // ready sockets are read (see on_relay).
            self.flush_clients(1);
            if self.idx == 0 {
                let now = Instant::now();
                if now >= next_tick {
                    next_tick = now + TIMER_TICK;
                    if let Some(mut s) = self.shared.server() {
                        s.handle_timeout(now);
                        self.shared.drive(&mut s, now, &self.listeners);
                    }
                }
            }
        }
    }

    fn on_listener(&mut self, li: usize) {
        let fd = self.listeners[li].1.as_raw_fd();
        let local = self.listeners[li].0;
        // Bounded rounds so one busy socket cannot starve the others.
        for _ in 0..8 {
            let n = match self.recv.recv(fd) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            for i in 0..n {
                let Some((from, bytes)) = self.recv.get(i) else {
                    continue;
                };
                if looks_like_channel_data(bytes) {
                    let ft = FiveTuple::udp(ClientAddr(from), local);
                    if let Some(f) = self.data.client_to_peer(now, ft, bytes) {
                        self.to_peers.push(f.relay, f.peer.0, &bytes[f.payload]);
                    }
                } else {
                    tracing::trace!(
                        "{} bytes of control traffic from {from} to {local}",
                        bytes.len()
                    );
                    match self.shared.stateless.classify_at(now, from, local, bytes) {
                        Verdict::Answer(b) => self.to_clients[li].push(from, &b),
                        Verdict::AnswerVia {
                            source,
                            destination,
                            bytes,
                        } => {
                            // RFC 5780: from another of our endpoints (rare: sent at once).
                            if let Some((_, s)) = self.listeners.iter().find(|(a, _)| *a == source)
                            {
                                let _ = s.send_to(&bytes, destination);
                            }
                        }
                        Verdict::Drop(r) => {
                            self.shared.dropped[drop_index(r)].fetch_add(1, Ordering::Relaxed);
                        }
                        Verdict::Server => {
                            let ft = FiveTuple::udp(ClientAddr(from), local);
                            self.control_messages += 1;
                            if let Some(mut s) = self.shared.server() {
                                if self.panic_at == Some(self.control_messages) {
                                    panic!("fault injection ({WORKER_FAULT_ENV})");
                                }
                                s.handle_stateful(now, ft, bytes);
                                self.shared.drive(&mut s, now, &self.listeners);
                            }
                            // Our own tables must see what we just installed before the
                            // next datagram.
                            self.apply_updates();
                        }
                    }
                }
            }
            if !self.to_clients[li].is_empty() {
                self.to_clients[li].flush(fd);
            }
            let relays = &self.relays;
            self.to_peers
                .flush(|relay| relays.get(relay).map(|s| s.as_raw_fd()));
            if n < net::BATCH {
                break;
            }
        }
    }

    fn on_relay(&mut self, token: u64) {
        let port = (token & 0xFFFF) as u16;
        let ip = if token & (1 << 16) != 0 {
            self.relay_ips.1
        } else {
            self.relay_ips.0
        };
        let Some(ip) = ip else {
            return;
        };
        let relay = RelayAddr(SocketAddr::new(ip, port));
        let Some(sock) = self.relays.get(&relay) else {
            return;
        };
        let fd = sock.as_raw_fd();
        for _ in 0..8 {
            let n = match self.recv.recv(fd) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            for i in 0..n {
                let Some((from, bytes)) = self.recv.get(i) else {
                    continue;
                };
                let mut t = [0u8; 12];
                self.rng.fill_bytes(&mut t);
                if let Some(to) = self.data.peer_to_client(
                    now,
                    relay,
                    PeerAddr(from),
                    bytes,
                    TransactionId(t),
                    &mut self.out,
                ) {
                    if to.transport == Transport::Tcp {
                        if let Some(o) = &self.shared.tcp {
                            o.send(FiveTuple::tcp(to.client, to.server), self.out.clone());
                        }
                    } else if let Some(li) =
                        self.listeners.iter().position(|(a, _)| *a == to.server)
                    {
                        self.to_clients[li].push(to.client.0, &self.out);
                    }
                }
            }
            // With many allocations each ready relay socket holds a datagram or two: the
            // datagrams for the clients (a few listening sockets) wait for the other
            // ready sockets and leave together, one sendmmsg per batch instead of one
            // per relay socket (run() sends the rest once every ready socket is read).
            self.flush_clients(net::BATCH);
            if n < net::BATCH {
                break;
            }
        }
    }

    /// Send the datagrams queued for clients on each listening socket that has at least
    /// `min` of them.
    fn flush_clients(&mut self, min: usize) {
        for (li, batch) in self.to_clients.iter_mut().enumerate() {
            if batch.len() >= min {
                batch.flush(self.listeners[li].1.as_raw_fd());
            }
        }
    }
}

/// What the process was asked to do by signal.
pub struct Signals {
    /// Stop now (SIGINT, SIGTERM).
    pub shutdown: Arc<AtomicBool>,
    /// Drain (SIGUSR1): no new allocations, stop when the last one ends or after
    /// `--drain-timeout`.
    pub drain: Arc<AtomicBool>,
    pub reload: Reload,
}

/// Reload (SIGHUP): read the configuration again and apply what can change live.
pub struct Reload {
    /// Set by the signal.
    pub asked: Arc<AtomicBool>,
    /// The configuration as start-up read it: the same command line, the file again.
    pub load: Box<dyn Fn() -> Result<Settings> + Send>,
    pub set_log_level: Box<SetLogLevel>,
}

/// Applies a `--log-level` to the running log filter.
pub type SetLogLevel = dyn Fn(&str) -> Result<()> + Send;

/// The options of `new` that differ from the running `old` and only a restart changes
/// (sockets, threads and the XDP attachment are made at start, privileges dropped).
fn restart_only(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut differs = |d: bool, name| {
        if d {
            v.push(name);
        }
    };
    differs(old.listen != new.listen, "listening-ip/listening-port");
    differs(old.threads != new.threads, "threads");
    differs(old.xdp != new.xdp, "xdp");
    differs(old.afxdp != new.afxdp, "afxdp");
    differs(old.afxdp_nice != new.afxdp_nice, "afxdp-nice");
    differs(old.xdp_mode != new.xdp_mode, "xdp-mode");
    differs(old.xdp_maps != new.xdp_maps, "xdp-max-*");
    differs(old.proc_user != new.proc_user, "proc-user");
    differs(old.proc_group != new.proc_group, "proc-group");
    differs(old.status_group != new.status_group, "status-group");
    differs(old.metrics_listen != new.metrics_listen, "metrics-listen");
    differs(old.tcp != new.tcp, "no-tcp/max-tcp-connections*");
    differs(old.tcp_plain != new.tcp_plain, "no-tcp");
    differs(
        old.rfc5780 != new.rfc5780,
        "alt-listening-ip/alt-listening-port",
    );
    differs(
        old.tls.as_ref().map(|t| &t.listen) != new.tls.as_ref().map(|t| &t.listen),
        "cert/pkey/tls-listening-port/no-tls (TLS on or off, its ports)",
    );

    v
}

impl Reload {
    /// Read the configuration again and apply it; an invalid one changes nothing.
    fn apply(
        &self,
        running: &Settings,
        server: &mut Server,
        drain: &mut Drain,
        tls: Option<&crate::tls::Shared>,
    ) {
        let new = match (self.load)() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e:#}");
                return;
            }
        };
        let mut kept = restart_only(running, &new);
        let mut cfg = new.server;
        if new.demo_user.is_some() {
            // No credentials configured: a reload would make a new demo password.
            cfg.credentials = server.config().credentials.clone();
        }
        kept.extend(server.reload(Instant::now(), cfg));
        if let Err(e) = (self.set_log_level)(&new.log_level) {
            tracing::warn!("{e:#}");
        }
        drain.timeout = new.drain_timeout;
        if let (Some(shared), Some(config)) = (tls, new.tls_config) {
            // New connections take the certificate read now; open ones keep theirs.
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = config;
            tracing::info!("TLS certificate and key read again");
        }
        if kept.is_empty() {
            tracing::info!("reloaded the configuration");
        } else {
            tracing::warn!(
                "reloaded the configuration; these options differ but change only on restart \
                 (their running values stay): {}",
                kept.join(", ")
            );
        }
    }
}

/// A drain under way: when it started, and when it ends at the latest.
struct Drain {
    timeout: Duration,
    started: Option<Instant>,
}

impl Drain {
    /// One look at the drain from the supervising loop: start it when asked; `true` when
    /// the server should stop (no allocation left, or the timeout passed).
    fn step(&mut self, asked: bool, server: Option<&mut Server>) -> bool {
        let Some(server) = server else {
            return false;
        };
        let live = server.allocation_count() + server.pending_count();
        let started = match self.started {
            Some(t) => t,
            None if asked => {
                server.set_draining(true);
                tracing::info!(
                    "draining: no new allocations{}; {live} allocations left, stopping when                      the last ends or in {:?}",
                    if server.config().alternate_servers.is_empty() {
                        " (508)".to_string()
                    } else {
                        " (300 to the alternate servers)".to_string()
                    },
                    self.timeout
                );
                let now = Instant::now();
                self.started = Some(now);
                now
            }
            None => return false,
        };
        if live == 0 {
            tracing::info!("drained: the last allocation ended");
            return true;
        }
        if started.elapsed() >= self.timeout {
            tracing::info!(
                "drain timeout ({:?}) passed with {live} allocations left: stopping",
                self.timeout
            );
            return true;
        }
        false
    }
}

/// Run the server until `shutdown` is set. With `xdp`, the program's maps follow the
/// control plane and its interface flags follow the interfaces (`Watch`); it is detached
/// when this returns, after the sockets have stopped.
pub fn run(settings: Settings, signals: Signals, xdp: Option<(XdpPath, Watch)>) -> Result<()> {
    let Signals {
        shutdown,
        drain,
        reload,
    } = signals;
    let mut draining = Drain {
        timeout: settings.drain_timeout,
        started: None,
    };
    let mut notifier = crate::systemd::Notifier::from_env();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = settings.threads;
    let mut server = Server::new(
        settings.server.clone(),
        Instant::now(),
        unix,
        Box::new(rand::rngs::StdRng::from_entropy()),
    );
    let mut host_ips = crate::host::local_addresses().unwrap_or_else(|e| {
        tracing::warn!("{e:#}: only the listening addresses count as the host's own");
        Vec::new()
    });
    server.set_host_ips(host_ips.clone());
    // The in-kernel relay honours the bandwidth limits with the buckets of every other
    // path: they live in the program's map.
    let mut xdp = xdp;
    if let Some((x, _)) = xdp.as_mut() {
        if settings.xdp_limit_users() != 0 {
            let cfg = &settings.server;
            let shared = x.share_limits(cfg.max_bps, cfg.user_max_bps)?;
            server.set_limits(Arc::new(shared));
            tracing::info!(
                "bandwidth limits ({} B/s per allocation, {} B/s per user) held in the driver too",
                cfg.max_bps,
                cfg.user_max_bps
            );
        }
    }
    let limits = server.limits();
    let mut stateless = Stateless::new(
        settings.server.software.clone(),
        settings.server.stateless_rate_per_prefix,
        rand::random(),
        Instant::now(),
    );
    if let Some(r) = settings.rfc5780 {
        stateless = stateless.with_rfc5780(r);
        tracing::info!(
            "RFC 5780 NAT behaviour discovery on {}",
            r.endpoints()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    let mut epolls = Vec::new();
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded();
        txs.push(tx);
        rxs.push(rx);
        epolls.push(Arc::new(Epoll::new()?));
    }
    // All listeners are bound before any worker starts, so a bind error stops start-up.
    let mut per_worker = Vec::new();
    for ep in &epolls {
        let mut ls = Vec::new();
        for (li, addr) in settings.listen.iter().enumerate() {
            let s = net::reuseport_listener(*addr)?;
            ep.add(s.as_raw_fd(), LISTENER | li as u64)?;
            ls.push((*addr, s));
        }
        per_worker.push(ls);
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let core_for = |i: usize| (!cores.is_empty()).then(|| cores[i % cores.len()]);

    // The AF_XDP fast path: sockets bound and registered with the XDP program before the
    // control plane runs, so the first allocation's data can take it.
    let (mut xdp, mut watch) = match xdp {
        Some((x, w)) => (Some(x), Some(w)),
        None => (None, None),
    };
    let opened = match (xdp.as_mut(), settings.afxdp) {
        (Some(x), true) => {
            let o = threads::open_forwarders(&settings, x, &per_worker[0], &limits, core_for)?;
            txs.extend(o.updates.iter().cloned());
            Some(o)
        }
        _ => None,
    };
    if let (Some(x), Some(_)) = (xdp.as_mut(), settings.rfc5780) {
        // The driver's answer has no RESPONSE-ORIGIN or OTHER-ADDRESS: the sockets answer.
        x.set_switches(crate::xdp::Switches {
            stun_responder: false,
            in_kernel: settings.fast_path == crate::config::FastPath::Xdp,
            ..Default::default()
        })?;
        tracing::info!("--alt-listening-ip: Binding requests are answered by the socket path");
    }
    // The TCP thread's own data-plane copy: its updates and its report (one more copy).
    let (tcp_updates, tcp_report) = if settings.tcp.is_some() {
        let (tx, rx) = crossbeam_channel::unbounded();
        txs.push(tx);
        (Some(rx), Some(Arc::new(Mutex::new(CopyReport::default()))))
    } else {
        (None, None)
    };
    let worker_reports: Vec<Arc<Mutex<CopyReport>>> = (0..n)
        .map(|_| Arc::default())
        .chain(tcp_report.clone())
        .collect();
    let status = StatusWriter::new(
        Path::new(STATUS_DIR),
        opened.as_ref().map_or_else(Default::default, |o| {
            o.interfaces
                .iter()
                .map(|i| (i.ifindex, i.name.clone()))
                .collect()
        }),
        opened.as_ref().map_or_else(Vec::new, |o| o.reports.clone()),
        worker_reports.clone(),
    );
    let metrics_listener = settings.metrics_listen.map(metrics::bind).transpose()?;
    // The TLS configuration new connections take; a reload replaces it.
    let tls_config: Option<crate::tls::Shared> =
        settings.tls_config.clone().map(|c| Arc::new(Mutex::new(c)));
    let tcp = match settings.tcp {
        Some(mut limits) => {
            limits.total = limits.total.min(settings.tcp_fit.unwrap_or(usize::MAX));
            let plain: &[SocketAddr] = if settings.tcp_plain {
                &settings.listen
            } else {
                &[]
            };
            let secure = settings.tls.as_ref().map_or(&[][..], |t| &t.listen[..]);
            Some(stream::bind(plain, secure, tls_config.clone(), limits)?)
        }
        None => None,
    };
    // Everything that needs root is done (sockets bound, XDP attached, AF_XDP sockets open)
    // and no thread runs yet: drop it.
    let admin_listener = drop_privileges(&settings, &status)?;
    let shared = Arc::new(Shared {
        server: Mutex::new(server),
        stateless,
        dropped: Default::default(),
        updates: txs,
        epolls: epolls.clone(),
        relays: Mutex::new(HashMap::new()),
        shutdown,
        xdp: xdp.map(Mutex::new),
        not_mirrored: AtomicU64::new(0),
        tcp: tcp.as_ref().map(|(_, o)| o.clone()),
    });
    let mut handles = Vec::new();
    let epoch = Instant::now();
    let mut forwarders: Vec<Watched> = match opened {
        Some(o) => o.spawn(&shared.shutdown, settings.afxdp_nice, core_for, epoch)?,
        None => Vec::new(),
    };
    let deaths: Vec<Arc<Mutex<Option<String>>>> = (0..n).map(|_| Arc::default()).collect();
    let supervisor_beat = Arc::new(AtomicU64::new(0));
    let mut beats = vec![metrics::Beat {
        name: "supervisor".into(),
        millis: supervisor_beat.clone(),
        stale: WORKER_STALL * 2,
    }];
    for (i, f) in forwarders.iter().enumerate() {
        beats.push(metrics::Beat {
            name: format!("AF_XDP forwarder thread {i}"),
            millis: f.heartbeat(),
            stale: threads::STALL,
        });
    }
    for (idx, ((epoll, rx), listeners)) in epolls.into_iter().zip(rxs).zip(per_worker).enumerate() {
        let core = core_for(idx);
        let nl = listeners.len();
        let w = Worker {
            idx,
            shared: shared.clone(),
            epoll,
            rx,
            listeners,
            data: {
                let mut d = DataPlane::with_limits(limits.clone());
                d.set_external(settings.server.external.clone());
                d
            },
            relays: HashMap::new(),
            recv: net::recv_batch(),
            report: worker_reports[idx].clone(),
            to_peers: SocketBatches::default(),
            to_clients: (0..nl).map(|_| SendBatch::new()).collect(),
            out: Vec::with_capacity(2048),
            rng: rand::rngs::StdRng::from_entropy(),
            relay_ips: (settings.relay_ipv4, settings.relay_ipv6),
            panic_at: worker_fault(idx),
            control_messages: 0,
            heartbeat: Arc::new(AtomicU64::new(0)),
            epoch,
        };
        beats.push(metrics::Beat {
            name: format!("worker thread {idx}"),
            millis: w.heartbeat.clone(),
            stale: WORKER_STALL,
        });
        if let Some(n) = w.panic_at {
            tracing::warn!("worker {idx}: fault injection, panic at control message {n}");
        }
        let death = deaths[idx].clone();
        handles.push(spawn_pinned(
            format!("xturn-worker-{idx}"),
            core,
            move || {
                let run = std::panic::AssertUnwindSafe(move || w.run());
                if let Err(p) = std::panic::catch_unwind(run) {
                    *death.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("panicked: {}", panic_message(p.as_ref())));
                }
            },
        )?);
    }
    let tcp_gauges = tcp.as_ref().map(|(t, _)| t.gauges());
    let tcp_thread = match tcp {
        Some((t, _)) => {
            let beat = Arc::new(AtomicU64::new(0));
            beats.push(metrics::Beat {
                name: "TCP thread".into(),
                millis: beat.clone(),
                stale: WORKER_STALL,
            });
            let control = TcpControl {
                shared: shared.clone(),
                rx: tcp_updates.expect("made with the TCP thread"),
                data: {
                    let mut d = DataPlane::with_limits(limits.clone());
                    d.set_external(settings.server.external.clone());
                    d
                },
                relays: HashMap::new(),
                allocated: Default::default(),
                to_peers: SocketBatches::default(),
                report: tcp_report.clone().expect("made with the TCP thread"),
                next_report: Instant::now(),
            };
            let stop = shared.shutdown.clone();
            let list = |v: &[SocketAddr]| {
                v.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if settings.tcp_plain {
                tracing::info!("TURN over TCP on {}", list(&settings.listen));
            }
            if let Some(t) = &settings.tls {
                tracing::info!("TURN over TLS on {}", list(&t.listen));
            }
            Some(
                std::thread::Builder::new()
                    .name("xturn-tcp".into())
                    .spawn(move || t.run(control, stop, || metrics::beat(&beat, epoch)))?,
            )
        }
        None => None,
    };
    let snapshot = Arc::new(Mutex::new(metrics::Snapshot::default()));
    let health = Arc::new(metrics::Health {
        epoch,
        beats,
        draining: drain.clone(),
    });
    let metrics_thread = match metrics_listener {
        Some(l) => Some(metrics::spawn(
            l,
            metrics::Endpoint {
                snapshot: snapshot.clone(),
                health: health.clone(),
            },
            shared.shutdown.clone(),
        )?),
        None => None,
    };
    let admin_thread = match admin_listener {
        Some(l) => Some(admin::spawn(
            l,
            admin_handler(shared.clone(), snapshot.clone()),
            shared.shutdown.clone(),
        )?),
        None => None,
    };
    notifier.ready(&service_status(0, false));
    let mut warned = false;
    let mut turn = 0u64;
    let mut next_status = Instant::now();
    let mut fatal = None;
    while !shared.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(SUPERVISE_EVERY);
        metrics::beat(&supervisor_beat, epoch);
        notifier.watchdog(Instant::now(), &health);
        turn += 1;
        // A worker that stopped while the server runs is a server that no longer answers
        // its share of clients (SO_REUSEPORT still sends them there): stop the whole
        // process, non-zero, for systemd or the orchestrator to restart it.
        if let Some(i) = handles.iter().position(|h| h.is_finished()) {
            if shared.shutdown.load(Ordering::Relaxed) {
                break; // stopping anyway (a signal)
            }
            let why = deaths[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "exited".into());
            fatal = Some(format!("worker thread {i} died ({why})"));
            break;
        }
        if reload.asked.swap(false, Ordering::Relaxed) {
            notifier.reloading();
            if let Some(mut s) = shared.server() {
                reload.apply(&settings, &mut s, &mut draining, tls_config.as_ref());
            }
            notifier.reloaded();
        }
        let asked = drain.load(Ordering::Relaxed);
        if (asked || draining.started.is_some())
            && draining.step(asked, shared.server().as_deref_mut())
        {
            shared.shutdown.store(true, Ordering::Relaxed);
            break;
        }
        if turn.is_multiple_of(HOST_ADDRESSES_TURNS) {
            // Memory a peak of allocations used goes back: the server's tables, then the
            // allocator's free pages (every thread's arena) to the system.
            if let Some(mut s) = shared.server() {
                s.shrink();
            }
            xturn_control::dataplane::shrink_map(&mut shared.relays());
            // SAFETY: malloc_trim has no preconditions; it only returns free memory.
            unsafe { libc::malloc_trim(0) };
            if let Ok(ips) = crate::host::local_addresses() {
                if ips != host_ips {
                    tracing::info!("host addresses changed: the peer filter follows");
                    if let Some(mut s) = shared.server() {
                        s.set_host_ips(ips.clone());
                    }
                    host_ips = ips;
                }
            }
        }
        if !turn.is_multiple_of(REPORT_TURNS) {
            continue;
        }
        if let Some(x) = &shared.xdp {
            let now_ms = epoch.elapsed().as_millis() as u64;
            for f in &mut forwarders {
                f.check(x, now_ms);
            }
            // Once a second: a veth peer's program may come or go, an MTU change.
            if let Some(w) = watch
                .as_mut()
                .filter(|_| turn.is_multiple_of(2 * REPORT_TURNS))
            {
                for (ifindex, mtu) in w.recheck(x) {
                    shared.broadcast(|| Update::Mtu(ifindex, mtu));
                }
            }
        }
        // The status walks every allocation (several copies of each): with ten thousand
        // it takes tens of milliseconds. It is written every REPORT_EVERY, but never
        // takes more than 1/STATUS_DUTY of a core: after a report that took T of this
        // thread's CPU, the next one waits at least STATUS_DUTY * T.
        let began = Instant::now();
        if began < next_status {
            continue;
        }
        let cpu_began = thread_cpu();
        let mut xdp_report = None;
        let mut in_kernel = None;
        if let Some(x) = &shared.xdp {
            if let Some(w) = watch.as_mut() {
                let g = x.lock().expect("xdp lock");
                let k = g.in_kernel_report();
                in_kernel = Some(CopyReport {
                    allocations: k.allocations,
                    totals: k.totals,
                });
                let sizes = g.sizes();
                xdp_report = Some(XdpReport {
                    interfaces: w.report(),
                    map_allocations: sizes.allocations,
                    map_permissions: sizes.permissions,
                    map_channels: sizes.channels,
                    not_mirrored: g.mirror_stats(),
                });
            }
        }
        let (control, control_stats) = shared
            .server
            .lock()
            .map(|s| {
                let d = s.data_plane();
                let copy = CopyReport {
                    allocations: d.allocations().collect(),
                    totals: d.totals(),
                };
                (copy, s.stats())
            })
            .unwrap_or_default();
        let dropped = shared.dropped(&limits);
        let state = draining.started.is_some();
        notifier.status(&service_status(control.allocations.len(), state));
        let now_status = status.status(
            &control,
            in_kernel.as_ref(),
            xdp_report.as_ref(),
            &dropped,
            state,
        );
        let written = status.write(&now_status);
        next_status = next_status_at(began, thread_cpu().saturating_sub(cpu_began));
        {
            let xdp_counters = shared
                .xdp
                .as_ref()
                .and_then(|x| x.lock().ok().and_then(|g| g.counters().ok()));
            *snapshot.lock().unwrap_or_else(|e| e.into_inner()) = metrics::Snapshot {
                status: now_status,
                control: control_stats,
                answered: shared.stateless.answered(),
                xdp: xdp_counters,
                tcp: tcp_gauges.as_ref().map(|g| metrics::Tcp {
                    open: g.open.load(Ordering::Relaxed),
                    dropped: shared.tcp.as_ref().map_or(0, |o| o.dropped()),
                    peer_connections: g.peer_connections.load(Ordering::Relaxed),
                    to_peer_bytes: g.to_peer_bytes.load(Ordering::Relaxed),
                    to_client_bytes: g.to_client_bytes.load(Ordering::Relaxed),
                }),
            };
        }
        if let Err(e) = written {
            if !warned {
                tracing::warn!("status (per-allocation and AF_XDP counters) not published: {e:#}");
                warned = true;
            }
        }
    }
    if let Some(why) = &fatal {
        tracing::error!("{why}: stopping so that a supervisor restarts xturn");
        if let Some(x) = &shared.xdp {
            // Not one more Binding answered for a server that does not serve.
            let off = crate::xdp::Switches {
                stun_responder: false,
                steering: false,
                ignore_unknown_optional: false,
                in_kernel: false,
            };
            if let Err(e) = x
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_switches(off)
            {
                tracing::warn!("{e:#}");
            }
        }
        shared.shutdown.store(true, Ordering::Relaxed);
    }
    notifier.stopping();
    let deadline = Instant::now() + JOIN_DEADLINE;
    let mut all: Vec<_> = handles
        .into_iter()
        .chain(forwarders.iter_mut().filter_map(Watched::take_handle))
        .chain(metrics_thread)
        .chain(admin_thread)
        .chain(tcp_thread)
        .collect();
    while !all.is_empty() && Instant::now() < deadline {
        let (done, busy): (Vec<_>, Vec<_>) = all.into_iter().partition(|h| h.is_finished());
        for h in done {
            let _ = h.join();
        }
        all = busy;
        if !all.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if !all.is_empty() {
        tracing::warn!(
            "{} threads did not stop within {JOIN_DEADLINE:?}",
            all.len()
        );
    }
    let d = shared.dropped(&limits);
    tracing::info!(
        "dropped on purpose: {} not STUN, {} malformed, {} unwanted, {} stateless answers and \
         {} 401s over their budgets, {} datagrams ({} bytes) over the bandwidth limits",
        d.not_stun,
        d.malformed,
        d.unwanted,
        d.over_answer_budget,
        d.over_unauth_budget,
        d.over_bandwidth_packets,
        d.over_bandwidth_bytes
    );
    for line in threads::summary(&status.threads()) {
        tracing::info!("{line}");
    }
    let alive = shared
        .server
        .lock()
        .map(|s| s.allocation_count())
        .unwrap_or(0);
    tracing::info!("stopped ({alive} allocations dropped)");
    match fatal {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

/// The control plane as the TCP thread sees it: ChannelData relayed by its own data-plane
/// copy (fed like a worker's, no lock), STUN messages and closes under the server lock,
/// their outputs driven at once.
struct TcpControl {
    shared: Arc<Shared>,
    rx: Receiver<Update>,
    data: DataPlane,
    relays: HashMap<RelayAddr, Arc<UdpSocket>>,
    /// The 5-tuples (connections) with an allocation, from the same changes.
    allocated: std::collections::HashSet<FiveTuple>,
    /// Datagrams to peers from what one poll read, sent with one sendmmsg per relay.
    to_peers: SocketBatches<RelayAddr>,
    report: Arc<Mutex<CopyReport>>,
    next_report: Instant,
}

impl TcpControl {
    fn apply_updates(&mut self) {
        while let Ok(u) = self.rx.try_recv() {
            match u {
                Update::Data(c) => {
                    match &c {
                        Change::InstallAllocation { five_tuple, .. }
                            if five_tuple.transport == Transport::Tcp =>
                        {
                            self.allocated.insert(*five_tuple);
                        }
                        Change::RemoveAllocation { five_tuple, .. } => {
                            self.allocated.remove(five_tuple);
                        }
                        _ => {}
                    }
                    self.data.apply(&c);
                }
                Update::RelayOpened(r, s) => {
                    self.relays.insert(r, s);
                }
                Update::RelayClosed(r) => {
                    self.relays.remove(&r);
                    self.to_peers.remove(&r);
                }
                Update::Mtu(..) => {}
            }
        }
    }
}

impl stream::Control for TcpControl {
    fn message(&mut self, now: Instant, ft: FiveTuple, bytes: &[u8]) -> StreamVerdict {
        if looks_like_channel_data(bytes) {
            // What the server installed before it answered the client is queued here.
            self.apply_updates();
            if !self.allocated.contains(&ft) {
                // ChannelData without a (UDP) allocation: nothing legitimate sends that.
                return StreamVerdict::Close;
            }
            if let Some(f) = self.data.client_to_peer(now, ft, bytes) {
                self.to_peers.push(f.relay, f.peer.0, &bytes[f.payload]);
                // A fast stream is read until it has nothing more: send as it comes.
                if self.to_peers.len() >= 256 {
                    stream::Control::flush(self);
                }
            }
            return StreamVerdict::Keep;
        }
        let Some(mut s) = self.shared.server() else {
            return StreamVerdict::Close;
        };
        let verdict = s.handle_stream_message(now, ft, bytes);
        // Its outputs go to peers (relay sockets) and down TCP connections: no UDP
        // listener is needed.
        self.shared.drive(&mut s, now, &[]);
        verdict
    }

    fn peer_connected(&mut self, now: Instant, id: ConnectionId, ok: bool) {
        if let Some(mut s) = self.shared.server() {
            s.peer_connected(now, id, ok);
            self.shared.drive(&mut s, now, &[]);
        }
    }

    fn peer_incoming(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: SocketAddr,
    ) -> Option<ConnectionId> {
        let mut s = self.shared.server()?;
        let id = s.peer_connection_incoming(now, relay, peer);
        self.shared.drive(&mut s, now, &[]);
        id
    }

    fn tcp_closed(&mut self, id: ConnectionId) {
        if let Some(mut s) = self.shared.server() {
            s.tcp_connection_closed(id);
            self.shared.drive(&mut s, Instant::now(), &[]);
        }
    }

    fn closed(&mut self, ft: FiveTuple) {
        if let Some(mut s) = self.shared.server() {
            s.connection_closed(ft);
            self.shared.drive(&mut s, Instant::now(), &[]);
        }
    }

    fn with_allocation(&mut self, fts: &[FiveTuple]) -> Vec<bool> {
        match self.shared.server() {
            Some(s) => fts.iter().map(|f| s.has_allocation(f)).collect(),
            None => vec![false; fts.len()],
        }
    }

    fn flush(&mut self) {
        let relays = &self.relays;
        self.to_peers
            .flush(|relay| relays.get(relay).map(|s| s.as_raw_fd()));
    }

    fn tick(&mut self, now: Instant) {
        self.apply_updates();
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            *self.report.lock().unwrap_or_else(|e| e.into_inner()) = CopyReport {
                allocations: self.data.allocations().collect(),
                totals: self.data.totals(),
            };
            self.data.shrink();
            xturn_control::dataplane::shrink_map(&mut self.relays);
            self.to_peers.shrink();
        }
    }
}

/// What answers the admin socket: sessions from the control plane joined with their
/// per-path counters from the last status report; kills applied under the server lock
/// and their `Remove*` outputs sent to every data-plane copy and the XDP maps at once.
fn admin_handler(shared: Arc<Shared>, snapshot: Arc<Mutex<metrics::Snapshot>>) -> admin::Handler {
    Box::new(move |req| {
        let now = Instant::now();
        let Some(mut server) = shared.server() else {
            return admin::Reply::Error("the server is stopping (a thread failed)".into());
        };
        let killing = !matches!(req, admin::Request::Sessions);
        let sessions = match req {
            admin::Request::Sessions => server.sessions(now),
            admin::Request::Kill { relay } => server.kill(now, relay).into_iter().collect(),
            admin::Request::KillUser { user } => server.kill_user(now, &user),
        };
        // A kill's outputs are data-plane changes only (no datagram to send, so no
        // listener is needed).
        shared.drive(&mut server, now, &[]);
        drop(server);
        if killing {
            for s in &sessions {
                tracing::info!(
                    "killed by an admin: the allocation {} of {} (user {})",
                    s.relay,
                    s.client,
                    s.user
                );
            }
        }
        let snap = snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let rows = sessions
            .iter()
            .map(|s| admin::row(s, &snap.status))
            .collect();
        if killing {
            admin::Reply::Killed(rows)
        } else {
            admin::Reply::Sessions(rows)
        }
    })
}

/// systemd's `STATUS=` line (`systemctl status`).
fn service_status(allocations: usize, draining: bool) -> String {
    if draining {
        format!("draining: {allocations} allocations left")
    } else {
        format!("serving {allocations} allocations")
    }
}

/// Become the `--proc-user` (nobody by default when root) with only the capabilities the
/// features in use need ([`crate::privileges`]), after handing the status directory over
/// and binding the admin socket in it (returned; `None`, logged, if it cannot be had).
fn drop_privileges(settings: &Settings, status: &StatusWriter) -> Result<Option<UnixListener>> {
    use crate::privileges;
    let keep = privileges::needed(
        settings.server.min_port < 1024,
        !settings.xdp.is_empty(),
        !settings.xdp.is_empty() && settings.afxdp && settings.afxdp_nice < 0,
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let status_gid = settings
        .status_group
        .as_deref()
        .map(privileges::group_id)
        .transpose()?;
    let admin = |owner| match admin::bind(status.dir(), owner) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("no admin socket (xturn sessions, xturn kill): {e:#}");
            None
        }
    };
    if !root {
        // SAFETY: as above.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let owner = Some((uid, status_gid.unwrap_or(gid)));
        let listener = match status.prepare(owner) {
            Ok(()) => admin(owner),
            Err(e) => {
                tracing::warn!("{e:#}; no admin socket either");
                None
            }
        };
        tracing::info!("{}", privileges::narrow(&keep)?);
        return Ok(listener);
    }
    let user = settings.proc_user.as_deref().unwrap_or("nobody");
    let target = privileges::resolve(user, settings.proc_group.as_deref())?;
    let owner = Some((target.uid, status_gid.unwrap_or(target.gid)));
    status.prepare(owner)?;
    let listener = admin(owner);
    if target.uid == 0 {
        tracing::warn!("--proc-user {user}: running as root for the whole life of the process");
        return Ok(listener);
    }
    tracing::info!("{}", privileges::drop_to(&target, &keep)?);
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_status_report_is_spaced_out_to_one_percent_of_a_core() {
        let t = Instant::now();
        // A quick report: the regular interval.
        assert_eq!(
            next_status_at(t, Duration::from_millis(1)),
            t + REPORT_EVERY
        );
        // Ten thousand allocations' worth (35 ms): 3.5 s until the next.
        assert_eq!(
            next_status_at(t, Duration::from_millis(35)),
            t + Duration::from_millis(3500)
        );
    }

    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let a = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let b = thread_cpu();
        let spin_until = Instant::now() + Duration::from_millis(30);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let c = thread_cpu();
        // Sleeping costs next to nothing; 30 ms of spinning gets at least some of a core,
        // even on a busy machine.
        assert!(b - a < Duration::from_millis(10), "slept: {:?}", b - a);
        assert!(c - b > Duration::from_millis(1), "worked: {:?}", c - b);
        assert!(c - b > b - a, "slept {:?}, worked {:?}", b - a, c - b);
    }
}
