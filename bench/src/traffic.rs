//! The `stun`, `relay` and `echo` modes: set up flows (sockets, and for TURN an allocation,
//! a permission and a channel each), run the workers of [`crate::engine`] for the measured
//! interval with a progress line each second, tear the allocations down, and assemble the
//! report (with the sink's per-flow counts in relay mode and /proc/stat CPU figures).
//!
//! Relay mode learns what reached the peer by reading the sink's JSON file (`sink
//! --json-out F`, `relay --sink-json F`): one-way counts per flow, keyed by the relayed
//! address the sink saw as source. Echo mode counts the echoes at the generator instead.

use crate::cli::{Common, StunArgs, TrafficArgs};
use crate::cpu::{self, CpuReport, CpuTicks};
use crate::engine::{run_worker, Flow, WorkerConfig, WorkerResult};
use crate::net;
use crate::pacing::split_rate;
use crate::seq::SeqWindow;
use crate::sink;
use crate::stats::{self, InvalidCounts, LatencySummary, Live, Params, SinkReport, TrafficReport};
use crate::turn::{self, Credentials, Session};
use crate::workload::{ChannelDataLoad, FlowId, StunLoad, Workload};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Channel number of flow `i`: spread over RFC 8656's range 0x4000-0x4FFF.
pub fn channel_for(i: usize) -> u16 {
    0x4000 + (i % 0x1000) as u16
}

/// The sink address flow `i` sends to.
pub fn peer_for(peer: SocketAddr, ports: u16, i: usize) -> SocketAddr {
    let p = peer.port() as u32 + (i % ports.max(1) as usize) as u32;
    SocketAddr::new(peer.ip(), p.min(65535) as u16)
}

/// Indices of the flows thread `t` of `threads` owns (round robin).
pub fn flows_of_thread(flows: usize, threads: usize, t: usize) -> Vec<usize> {
    (t..flows).step_by(threads.max(1)).collect()
}

struct Prepared {
    bind_ip: IpAddr,
    cpus: Vec<usize>,
    relay_cpus: Option<Vec<usize>>,
    threads: usize,
}

fn prepare(c: &Common, flows: usize) -> Result<Prepared> {
    c.validate()?;
    let limit = net::raise_fd_limit();
    if flows as u64 + 64 > limit {
        bail!("{flows} sockets need more open files than the limit {limit} (ulimit -n)");
    }
    let bind_ip = match c.bind {
        Some(ip) => ip,
        None => net::local_addr_towards(c.server)
            .with_context(|| format!("no route to {}", c.server))?,
    };
    let cpus = match &c.cpus {
        Some(s) => cpu::parse_list(s)?,
        None => Vec::new(),
    };
    let relay_cpus = c.relay_cpus.as_deref().map(cpu::parse_list).transpose()?;
    if let Some(r) = &relay_cpus {
        cpu::sample(r)?;
    }
    Ok(Prepared {
        bind_ip,
        cpus,
        relay_cpus,
        threads: c.threads.min(flows).max(1),
    })
}

/// Set up one flow: a socket, and unless `reflector`, Allocate + CreatePermission +
/// ChannelBind towards `peer`.
fn setup_flow(
    i: usize,
    bind_ip: IpAddr,
    server: SocketAddr,
    turn: Option<(&Credentials, SocketAddr)>,
) -> Result<Flow> {
    let channel = channel_for(i);
    match turn {
        None => {
            let sock = net::udp_socket(SocketAddr::new(bind_ip, 0), false, Some(server))
                .with_context(|| format!("cannot open a socket on {bind_ip} towards {server}"))?;
            Ok(Flow {
                id: FlowId {
                    idx: i as u32,
                    local: sock.local_addr()?,
                    channel,
                },
                sock,
                session: None,
                relay: None,
                next_seq: 0,
                window: SeqWindow::default(),
            })
        }
        Some((creds, peer)) => {
            // A 437 means the server still holds an allocation for this 5-tuple (coturn
            // keeps a deleted one for a second or two, and the kernel may hand out a port
            // of a previous run again): retry from a new socket, as RFC 8656 section 7.4
            // tells clients to.
            let mut attempt = 0;
            let (mut s, relay) = loop {
                let mut s = Session::open(bind_ip, server, creds)?;
                match s.allocate() {
                    Ok(r) => break (s, r),
                    Err(e) if turn::error_code(&e) == Some(437) && attempt < 3 => attempt += 1,
                    Err(e) => return Err(e.context(format!("allocation {i}"))),
                }
            };
            s.create_permission(&[peer])
                .with_context(|| format!("allocation {i} ({relay}): permission for {peer}"))?;
            s.channel_bind(channel, peer).with_context(|| {
                format!("allocation {i} ({relay}): channel {channel:#x} to {peer}")
            })?;
            Ok(Flow {
                id: FlowId {
                    idx: i as u32,
                    local: s.local,
                    channel,
                },
                sock: s.sock.try_clone()?,
                relay: Some(relay),
                session: Some(s),
                next_seq: 0,
                window: SeqWindow::default(),
            })
        }
    }
}

/// Set up all flows, in parallel over the worker threads (each pinned like its worker).
fn setup_flows(
    p: &Prepared,
    server: SocketAddr,
    n: usize,
    turn: Option<(&Credentials, SocketAddr, u16)>,
) -> Result<Vec<Vec<Flow>>> {
    let results: Vec<Result<Vec<Flow>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..p.threads)
            .map(|t| {
                sc.spawn(move || -> Result<Vec<Flow>> {
                    cpu::pin(&p.cpus, t)?;
                    let mut out = Vec::new();
                    for i in flows_of_thread(n, p.threads, t) {
                        let tp = turn.map(|(c, peer, ports)| (c, peer_for(peer, ports, i)));
                        match setup_flow(i, p.bind_ip, server, tp) {
                            Ok(f) => out.push(f),
                            Err(e) => {
                                teardown(&mut out);
                                return Err(e);
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("set-up thread panicked")))
            })
            .collect()
    });
    let mut ok = Vec::new();
    let mut first_err = None;
    for r in results {
        match r {
            Ok(f) => ok.push(f),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for f in &mut ok {
            teardown(f);
        }
        return Err(e.context("set-up failed (the allocations made were deleted)"));
    }
    Ok(ok)
}

/// Delete the flows' allocations (best effort; the server would expire them anyway).
fn teardown(flows: &mut [Flow]) -> usize {
    let mut failed = 0;
    for f in flows {
        if let Some(s) = &mut f.session {
            if s.delete().is_err() {
                failed += 1;
            }
        }
    }
    failed
}

fn sleep_until(t_ns: u64) {
    let now = net::now_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

/// Sample the relay CPUs (if any).
fn relay_sample(r: &Option<Vec<usize>>) -> Option<CpuTicks> {
    r.as_ref().and_then(|c| cpu::sample(c).ok())
}

/// A progress line each second until `stop_ns` (to stderr).
fn progress(
    label: &str,
    live: &[Arc<Live>],
    start_ns: u64,
    stop_ns: u64,
    relay: &Option<Vec<usize>>,
    quiet: bool,
) {
    let mut prev = Live::snapshot(live);
    let mut prev_cpu = relay_sample(relay);
    for sec in 1u64.. {
        let t = start_ns + sec * 1_000_000_000;
        if t > stop_ns {
            break;
        }
        sleep_until(t);
        let now = Live::snapshot(live);
        let cpu_now = relay_sample(relay);
        if !quiet {
            let busy = match (prev_cpu, cpu_now) {
                (Some(a), Some(b)) if b.total > a.total => format!(
                    "  relay busy {:.0} %",
                    (b.busy - a.busy) as f64 * 100.0 / (b.total - a.total) as f64
                ),
                _ => String::new(),
            };
            eprintln!(
                "[{sec:>3}s] {label}: sent {:>8}/s  received {:>8}/s  invalid {}{busy}",
                now.0 - prev.0,
                now.1 - prev.1,
                now.2
            );
        }
        prev = now;
        prev_cpu = cpu_now;
    }
}

/// What a measured run produced before mode-specific accounting.
struct Measured {
    results: Vec<WorkerResult>,
    elapsed_s: f64,
    cpu_a: Option<CpuTicks>,
    cpu_b: Option<CpuTicks>,
    gen_cpu_ns: u64,
    /// Relay namespace UDP RcvbufErrors over the run (start to end of drain).
    relay_drops: Option<u64>,
    /// Runtime of the relay's own threads over the measured interval.
    relay_runtime_ns: Option<u64>,
    /// Interface drops in the generator's and the relay's namespaces over the run.
    client_if_drops: Option<u64>,
    relay_if_drops: Option<u64>,
}

/// The server's PID and its extra threads, for attributed CPU.
fn relay_pids(c: &Common) -> Vec<u32> {
    c.relay_pid
        .into_iter()
        .chain(c.relay_threads.iter().copied())
        .collect()
}

fn measure<W: Workload>(
    label: &str,
    w: &W,
    p: &Prepared,
    c: &Common,
    groups: Vec<Vec<Flow>>,
    latency: bool,
    drain_ns: u64,
) -> Result<Measured> {
    let threads = groups.len();
    let live: Vec<Arc<Live>> = (0..threads).map(|_| Arc::new(Live::default())).collect();
    let start_ns = net::now_ns() + 100_000_000;
    let stop_ns = start_ns + (c.duration * 1e9) as u64;
    let out = std::thread::scope(|sc| -> Result<Measured> {
        let hs: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(t, flows)| {
                let l = live[t].clone();
                let cfg = WorkerConfig {
                    rate: split_rate(c.rate, threads, t),
                    start_ns,
                    stop_ns,
                    drain_ns,
                    latency,
                };
                let cpus = p.cpus.clone();
                sc.spawn(move || -> Result<WorkerResult> {
                    cpu::pin(&cpus, t)?;
                    Ok(run_worker(w, flows, cfg, l)?)
                })
            })
            .collect();
        let drops_a = c.relay_pid.and_then(|p| sink::rcvbuf_errors_of(Some(p)));
        let cif_a = sink::if_drops_of(None);
        let rif_a = c.relay_pid.and_then(|p| sink::if_drops_of(Some(p)));
        sleep_until(start_ns);
        let cpu_a = relay_sample(&p.relay_cpus);
        let pids = relay_pids(c);
        let run_a = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
        let gen_a = net::process_cpu_ns();
        progress(label, &live, start_ns, stop_ns, &p.relay_cpus, c.quiet);
        sleep_until(stop_ns);
        let cpu_b = relay_sample(&p.relay_cpus);
        let run_b = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
        let gen_b = net::process_cpu_ns();
        let mut results = Vec::new();
        for h in hs {
            results.push(h.join().map_err(|_| anyhow!("worker thread panicked"))??);
        }
        let drops_b = c.relay_pid.and_then(|p| sink::rcvbuf_errors_of(Some(p)));
        let cif_b = sink::if_drops_of(None);
        let rif_b = c.relay_pid.and_then(|p| sink::if_drops_of(Some(p)));
        let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Ok(Measured {
            client_if_drops: delta(cif_a, cif_b),
            relay_if_drops: delta(rif_a, rif_b),
            relay_runtime_ns: match (run_a, run_b) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            relay_drops: match (drops_a, drops_b) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            results,
            elapsed_s: (stop_ns - start_ns) as f64 / 1e9,
            cpu_a,
            cpu_b,
            gen_cpu_ns: gen_b.saturating_sub(gen_a),
        })
    })?;
    Ok(out)
}

/// Sum the workers' results into a report skeleton.
fn base_report(
    mode: &str,
    c: &Common,
    p: &Prepared,
    m: &Measured,
    flows: usize,
    size: usize,
    reflector: bool,
) -> (TrafficReport, InvalidCounts) {
    let mut inv = InvalidCounts::default();
    let mut r = TrafficReport {
        mode: mode.to_string(),
        params: Params {
            server: c.server.to_string(),
            reflector,
            flows,
            threads: m.results.len(),
            cpus: p.cpus.clone(),
            rate: c.rate,
            size,
            duration_s: c.duration,
        },
        elapsed_s: m.elapsed_s,
        ..Default::default()
    };
    for w in &m.results {
        r.sent += w.sent;
        r.send_errors += w.send_errors;
        r.pacing_skipped += w.skipped;
        r.received += w.received;
        r.duplicates += w.duplicates;
        r.reordered += w.reordered;
        inv.merge(&w.invalid);
    }
    r.sent_pps = stats::per_second(r.sent, m.elapsed_s);
    r.relay_rcvbuf_drops = m.relay_drops;
    r.client_if_drops = m.client_if_drops;
    r.relay_if_drops = m.relay_if_drops;
    r.generator_us_per_packet = (r.sent > 0).then(|| m.gen_cpu_ns as f64 / 1000.0 / r.sent as f64);
    (r, inv)
}

fn finish_cpu(r: &mut TrafficReport, p: &Prepared, m: &Measured, packets: u64, basis: &str) {
    if let (Some(cpus), Some(a), Some(b)) = (&p.relay_cpus, m.cpu_a, m.cpu_b) {
        r.cpu = Some(
            CpuReport::new(cpus, a, b, cpu::ticks_per_second(), packets, basis)
                .with_attributed(m.relay_runtime_ns),
        );
    }
}

fn merged_latency(m: &Measured) -> Option<LatencySummary> {
    let mut h = stats::new_histogram();
    for w in &m.results {
        let _ = h.add(&w.latency);
    }
    LatencySummary::from_histogram(&h)
}

/// `stun`: Binding requests from `--sockets` sockets.
pub fn run_stun(a: &StunArgs) -> Result<TrafficReport> {
    if a.sockets == 0 || a.sockets > 20_000 {
        bail!("--sockets must be 1..=20000");
    }
    let p = prepare(&a.common, a.sockets)?;
    let groups = setup_flows(&p, a.common.server, a.sockets, None)?;
    let w = StunLoad {
        tag: rand::random(),
        epoch_ns: net::now_ns(),
    };
    let m = measure("stun", &w, &p, &a.common, groups, true, 300_000_000)?;
    let (mut r, inv) = base_report("stun", &a.common, &p, &m, a.sockets, 0, false);
    r.received_pps = stats::per_second(r.received, m.elapsed_s);
    r.received_basis = "valid Binding responses at the generator".into();
    r.loss = stats::loss(r.sent, r.received);
    r.latency = merged_latency(&m);
    r.invalid = inv.total();
    r.invalid_reasons = inv.to_map();
    let responses = r.received;
    finish_cpu(&mut r, &p, &m, responses, "Binding responses");
    Ok(r)
}

/// Wait (bounded) for the sink's JSON written after `since`, and parse it.
pub fn read_sink_json(path: &Path, since: SystemTime, wait: Duration) -> Result<SinkReport> {
    let end = std::time::Instant::now() + wait;
    loop {
        let fresh = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| t >= since)
            .unwrap_or(false);
        if fresh {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{} is not a sink report", path.display()));
        }
        if std::time::Instant::now() >= end {
            bail!(
                "the sink did not write {} within {wait:?} (start it with --json-out and --idle-exit)",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Per-flow one-way accounting from the sink's counts: (received, worst flow loss,
/// duplicates, reordered, invalid at the sink). Flows are matched by the relayed address
/// (the source the sink saw); a flow the sink never saw lost everything.
pub fn account_sink(
    sent: &[(SocketAddr, u64)],
    sink: &SinkReport,
) -> (u64, Option<f64>, u64, u64, u64) {
    let by_src: HashMap<&str, &stats::SinkFlow> =
        sink.flows.iter().map(|f| (f.source.as_str(), f)).collect();
    let (mut recv, mut dup, mut reo, mut inv) = (0, 0, 0, 0);
    let mut worst: Option<f64> = None;
    for (relay, n) in sent {
        let got = by_src.get(relay.to_string().as_str());
        let unique = got.map(|f| f.unique.min(*n)).unwrap_or(0);
        if let Some(f) = got {
            dup += f.duplicates;
            reo += f.reordered;
            inv += f.invalid;
        }
        recv += unique;
        if let Some(l) = stats::loss(*n, unique) {
            worst = Some(worst.map_or(l, |w: f64| w.max(l)));
        }
    }
    (recv, worst, dup, reo, inv)
}

/// `relay` (one way, `echo == false`) and `echo` (round trips with latency).
pub fn run_traffic(a: &TrafficArgs, echo: bool) -> Result<TrafficReport> {
    a.validate()?;
    let mode = if echo { "echo" } else { "relay" };
    let started = SystemTime::now();
    let p = prepare(&a.common, a.allocations)?;
    let creds = if a.reflector {
        None
    } else {
        Some(a.auth.credentials()?)
    };
    let t0 = std::time::Instant::now();
    let turn = match (&creds, a.peer) {
        (Some(c), Some(peer)) => Some((c, peer, a.peer_ports)),
        _ => None,
    };
    let groups = setup_flows(&p, a.common.server, a.allocations, turn)?;
    let setup_seconds = t0.elapsed().as_secs_f64();
    if !a.common.quiet {
        eprintln!(
            "{mode}: {} flows ready in {setup_seconds:.2} s; sending for {} s",
            a.allocations, a.common.duration
        );
    }
    let w = ChannelDataLoad { size: a.size };
    let mut m = measure(
        mode,
        &w,
        &p,
        &a.common,
        groups,
        echo,
        a.drain_ms * 1_000_000,
    )?;
    // Delete the allocations in parallel, one thread per worker group.
    let failed: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = m
            .results
            .iter_mut()
            .map(|w| sc.spawn(|| teardown(&mut w.flows)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    if failed > 0 {
        eprintln!("{mode}: warning: {failed} allocations could not be deleted (they will expire)");
    }
    let (mut r, inv) = base_report(mode, &a.common, &p, &m, a.allocations, a.size, a.reflector);
    if creds.is_some() {
        r.setup_allocations = a.allocations;
        r.setup_seconds = setup_seconds;
    }
    let sink = match (&a.sink_json, echo, a.reflector) {
        (Some(path), false, false) => Some(read_sink_json(
            path,
            started,
            Duration::from_secs_f64(a.sink_wait),
        )?),
        _ => None,
    };
    let (received, basis) = if let Some(s) = &sink {
        let sent: Vec<(SocketAddr, u64)> = m
            .results
            .iter()
            .flat_map(|w| w.flows.iter())
            .filter_map(|f| f.relay.map(|rl| (rl, f.next_seq)))
            .collect();
        let (recv, worst, dup, reo, sink_inv) = account_sink(&sent, s);
        r.worst_flow_loss = worst;
        r.duplicates = dup;
        r.reordered = reo;
        r.invalid_reasons.insert("at_sink".into(), sink_inv);
        r.sink_rcvbuf_drops = s.rcvbuf_errors;
        r.relay_loss = r
            .relay_if_drops
            .and_then(|d| stats::relay_loss(r.sent, recv, d));
        (recv, "distinct valid datagrams at the peer (sink JSON)")
    } else if echo {
        (r.received, "round trips back at the generator")
    } else if a.reflector {
        (r.received, "echoed by the reflector, back at the generator")
    } else {
        (0, "not measured: no --sink-json")
    };
    r.received = received;
    r.received_pps = stats::per_second(received, m.elapsed_s);
    let measured = sink.is_some() || echo || a.reflector;
    if measured {
        r.loss = stats::loss(r.sent, received);
        r.payload_mbps = Some(stats::mbps(received * a.size as u64, m.elapsed_s));
    }
    r.received_basis = basis.into();
    if echo {
        r.latency = merged_latency(&m);
    }
    let at_sink = r.invalid_reasons.remove("at_sink").unwrap_or(0);
    r.invalid = inv.total() + at_sink;
    r.invalid_reasons = inv.to_map();
    if at_sink > 0 {
        r.invalid_reasons.insert("at_sink".into(), at_sink);
    }
    let cpu_basis = if a.reflector {
        "datagrams echoed by the reflector"
    } else if echo {
        "round trips (each relayed twice)"
    } else {
        "datagrams relayed to the peer"
    };
    if measured {
        finish_cpu(&mut r, &p, &m, received, cpu_basis);
    }
    m.results.clear();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SinkFlow;

    #[test]
    fn flow_layout() {
        assert_eq!(channel_for(0), 0x4000);
        assert_eq!(channel_for(0x1000), 0x4000);
        assert_eq!(channel_for(0xFFF), 0x4FFF);
        let peer: SocketAddr = "198.51.100.2:40000".parse().unwrap();
        assert_eq!(peer_for(peer, 4, 5).port(), 40001);
        assert_eq!(peer_for(peer, 1, 5).port(), 40000);
        assert_eq!(flows_of_thread(5, 2, 0), vec![0, 2, 4]);
        assert_eq!(flows_of_thread(5, 2, 1), vec![1, 3]);
        let all: usize = (0..3).map(|t| flows_of_thread(10, 3, t).len()).sum();
        assert_eq!(all, 10);
    }

    #[test]
    fn sink_accounting_per_flow() {
        let a: SocketAddr = "198.51.100.1:50000".parse().unwrap();
        let b: SocketAddr = "198.51.100.1:50001".parse().unwrap();
        let c: SocketAddr = "198.51.100.1:50002".parse().unwrap();
        let sink = SinkReport {
            flows: vec![
                SinkFlow {
                    source: a.to_string(),
                    unique: 100,
                    duplicates: 2,
                    ..Default::default()
                },
                SinkFlow {
                    source: b.to_string(),
                    unique: 90,
                    reordered: 3,
                    invalid: 1,
                    ..Default::default()
                },
                // Someone else's traffic is not counted.
                SinkFlow {
                    source: "198.51.100.9:1".into(),
                    unique: 1000,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let (recv, worst, dup, reo, inv) = account_sink(&[(a, 100), (b, 100), (c, 50)], &sink);
        assert_eq!(recv, 190);
        // Flow c never reached the sink: 100 % loss is the worst.
        assert_eq!(worst, Some(1.0));
        assert_eq!((dup, reo, inv), (2, 3, 1));
        let (recv, worst, ..) = account_sink(&[(a, 100), (b, 100)], &sink);
        assert_eq!(recv, 190);
        assert_eq!(worst, Some(0.1));
        assert_eq!(stats::loss(200, recv), Some(0.05));
    }
}
