//! `churn`: allocation life cycles per second. A cycle is what a new TURN client does: from
//! a fresh 5-tuple (a new socket), Allocate (401 first, then with credentials, via the
//! sans-IO `TurnClient`), Refresh, Refresh(0) (delete). `--allocations` cycles run
//! concurrently per thread as small state machines driven by epoll, with retransmission
//! and a bounded number of tries; cycle starts are paced by `--rate`.
//!
//! Local ports are taken in order from `--port-range` rather than at random: a server may
//! hold a deleted allocation's 5-tuple for a moment (coturn does, for a second or two, and
//! answers 437 meanwhile), so a port is reused as late as possible. A 437 still happening
//! is counted and the cycle moves to the next port (RFC 8656 section 7.4).

use crate::cli::ChurnArgs;
use crate::cpu::{self, CpuReport};
use crate::net::{self, Epoll};
use crate::pacing::{split_rate, Pacer};
use crate::stats::{self, LatencySummary, Live};
use crate::turn::{random_tid, Credentials};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use xturn_control::client::{self, Answer, TurnClient};
use xturn_control::wire::{Message, Method, TransactionId};

/// The three operations of a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Allocate,
    Refresh,
    Delete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Allocate => "allocate",
            Op::Refresh => "refresh",
            Op::Delete => "delete",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
    /// The operation after a success, or None when the cycle is complete.
    pub fn next(self) -> Option<Op> {
        match self {
            Op::Allocate => Some(Op::Refresh),
            Op::Refresh => Some(Op::Delete),
            Op::Delete => None,
        }
    }
    fn request(self, c: &TurnClient, tid: TransactionId) -> Vec<u8> {
        match self {
            Op::Allocate => c.request(Method::Allocate, tid, client::allocate_body(None)),
            Op::Refresh => c.request(
                Method::Refresh,
                tid,
                client::refresh_body(Duration::from_secs(600)),
            ),
            Op::Delete => c.request(Method::Refresh, tid, client::refresh_body(Duration::ZERO)),
        }
    }
}

/// What a slot does after a response to `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send `Op` (a new transaction).
    Send(Op),
    /// Resend the same operation with new credentials (401/438 round).
    Retry,
    /// Start the cycle again from another 5-tuple (437 to Allocate).
    NewTuple,
    /// Cycle complete.
    Done,
    /// Give up this cycle (error counted).
    Fail,
}

/// The state machine's decision for an answer to `op`; `auth_rounds` is how many 401/438
/// rounds this operation already had.
pub fn step(op: Op, answer: &Answer, auth_rounds: u32) -> Step {
    match answer {
        Answer::Success => match op.next() {
            Some(n) => Step::Send(n),
            None => Step::Done,
        },
        Answer::Retry if auth_rounds < 2 => Step::Retry,
        // 401 with credentials: the server replaced the nonce.
        Answer::Error(401) if auth_rounds < 2 => Step::Retry,
        // The server still holds an allocation for this 5-tuple: use another one.
        Answer::Error(437) if op == Op::Allocate => Step::NewTuple,
        _ => Step::Fail,
    }
}

/// Local ports taken in order from a range, so each is reused as late as possible.
#[derive(Debug, Clone)]
pub struct PortCycler {
    lo: u16,
    len: u32,
    next: u32,
}

impl PortCycler {
    /// Part `index` of `parts` of the range `lo..=hi` (one part per thread).
    pub fn part(lo: u16, hi: u16, parts: usize, index: usize) -> Self {
        let total = (hi - lo) as u32 + 1;
        let per = (total / parts.max(1) as u32).max(1);
        let start = lo as u32 + per * index as u32;
        PortCycler {
            lo: start.min(65535) as u16,
            len: per.min(65536 - start.min(65535)),
            next: 0,
        }
    }

    pub fn next_port(&mut self) -> u16 {
        let p = self.lo as u32 + self.next % self.len;
        self.next = self.next.wrapping_add(1);
        p as u16
    }
}

const RTO_NS: u64 = 200_000_000;
const TRANSMISSIONS: u32 = 4;

struct Slot {
    /// The cycle's socket (a fresh 5-tuple per cycle); None while idle.
    sock: Option<UdpSocket>,
    client: TurnClient,
    /// The operation in flight and its transaction.
    op: Option<Op>,
    tid: TransactionId,
    req: Vec<u8>,
    sent_ns: u64,
    op_start_ns: u64,
    tries: u32,
    auth_rounds: u32,
    /// Allocated and holding until the given time before its next operation (`--hold`).
    held: Option<(Op, u64)>,
}

impl Slot {
    fn busy(&self) -> bool {
        self.op.is_some() || self.held.is_some()
    }

    fn send(&mut self, op: Op, now: u64, new_op: bool) {
        self.tid = random_tid();
        self.req = op.request(&self.client, self.tid);
        self.op = Some(op);
        self.sent_ns = now;
        self.tries = 1;
        if new_op {
            self.op_start_ns = now;
            self.auth_rounds = 0;
        }
        if let Some(s) = &self.sock {
            let _ = s.send(&self.req);
        }
    }

    /// End the cycle: close the socket (which also removes it from the epoll set).
    fn idle(&mut self) {
        self.op = None;
        self.sock = None;
    }
}

/// Everything a thread needs to open a cycle's socket.
struct Opener<'a> {
    bind_ip: std::net::IpAddr,
    server: SocketAddr,
    ports: PortCycler,
    creds: &'a Credentials,
}

impl Opener<'_> {
    /// A new socket on the next free port of the range, registered with `ep` as `token`,
    /// and a fresh client for it.
    fn open(&mut self, ep: &Epoll, token: u64) -> Option<(UdpSocket, TurnClient)> {
        for _ in 0..64 {
            let port = self.ports.next_port();
            if let Ok(s) = net::udp_socket(
                SocketAddr::new(self.bind_ip, port),
                false,
                Some(self.server),
            ) {
                if ep.add(s.as_raw_fd(), token).is_ok() {
                    return Some((
                        s,
                        TurnClient::new(&self.creds.username, &self.creds.password),
                    ));
                }
            }
        }
        None
    }
}

#[derive(Default)]
struct Counts {
    started: u64,
    cycles: u64,
    requests: u64,
    ok: [u64; 3],
    auth_retries: u64,
    new_tuples: u64,
    open_failures: u64,
    timeouts: u64,
    invalid: u64,
    errors: BTreeMap<String, u64>,
}

struct ThreadOut {
    c: Counts,
    hist: [Histogram<u64>; 3],
}

/// Result of a `churn` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChurnReport {
    pub mode: String,
    pub server: String,
    pub sockets: usize,
    pub threads: usize,
    pub rate: u64,
    pub elapsed_s: f64,
    pub cycles_started: u64,
    /// Complete allocate -> refresh -> delete cycles.
    pub cycles: u64,
    pub cycles_per_s: f64,
    pub allocations: u64,
    pub refreshes: u64,
    pub deletes: u64,
    /// Requests sent, retransmissions and 401/438 rounds included.
    pub requests: u64,
    pub auth_retries: u64,
    /// Cycles moved to another 5-tuple after a 437 to Allocate.
    pub new_tuples: u64,
    /// Cycles not started because no local port could be bound.
    pub open_failures: u64,
    pub timeouts: u64,
    pub invalid: u64,
    /// "op:code" -> count.
    pub errors: BTreeMap<String, u64>,
    pub allocate_latency: Option<LatencySummary>,
    pub refresh_latency: Option<LatencySummary>,
    pub delete_latency: Option<LatencySummary>,
    pub cpu: Option<CpuReport>,
}

impl ChurnReport {
    pub fn human(&self) -> String {
        let lat = |l: &Option<LatencySummary>| {
            l.as_ref()
                .map(|l| format!("p50 {:.0} µs p99 {:.0} µs", l.p50_us, l.p99_us))
                .unwrap_or_else(|| "n/a".into())
        };
        let mut s = format!(
            "churn against {}: {} sockets, {} threads, {:.2} s\n  {} cycles ({:.0}/s), {} started; allocate {} refresh {} delete {}\n  requests {}, 401/438 rounds {}, 437 -> new 5-tuple {}, timeouts {}, invalid {}, errors {:?}\n  allocate {}; refresh {}; delete {}\n",
            self.server, self.sockets, self.threads, self.elapsed_s, self.cycles, self.cycles_per_s,
            self.cycles_started, self.allocations, self.refreshes, self.deletes, self.requests,
            self.auth_retries, self.new_tuples, self.timeouts, self.invalid, self.errors,
            lat(&self.allocate_latency), lat(&self.refresh_latency), lat(&self.delete_latency)
        );
        if let Some(c) = &self.cpu {
            s += &format!(
                "  relay CPUs {:?} busy {:.1} %, {} per cycle\n",
                c.cpus,
                c.busy * 100.0,
                c.us_per_packet
                    .map(|u| format!("{u:.1} µs"))
                    .unwrap_or_else(|| "n/a".into())
            );
        }
        s
    }
}

fn churn_thread(
    slots_n: usize,
    mut opener: Opener,
    rate: u64,
    (start_ns, stop_ns, drain_ns, hold_ns): (u64, u64, u64, u64),
    live: &Live,
) -> std::io::Result<ThreadOut> {
    net::tight_timer_slack();
    let ep = Epoll::new()?;
    let mut slots: Vec<Slot> = (0..slots_n)
        .map(|_| Slot {
            sock: None,
            client: TurnClient::new("", ""),
            op: None,
            tid: TransactionId::default(),
            req: Vec::new(),
            sent_ns: 0,
            op_start_ns: 0,
            tries: 0,
            auth_rounds: 0,
            held: None,
        })
        .collect();
    let mut out = ThreadOut {
        c: Counts::default(),
        hist: [
            stats::new_histogram(),
            stats::new_histogram(),
            stats::new_histogram(),
        ],
    };
    let mut rb = net::recv_batch();
    let mut ready = Vec::new();
    let now = net::now_ns();
    if start_ns > now {
        std::thread::sleep(Duration::from_nanos(start_ns - now));
    }
    let mut pacer = Pacer::new(rate, start_ns);
    let mut cursor = 0;
    let (mut pub_req, mut pub_cyc, mut pub_inv) = (0u64, 0u64, 0u64);
    loop {
        let now = net::now_ns();
        let sending = now < stop_ns;
        let busy = slots.iter().any(|s| s.busy());
        if !sending && (!busy || now >= stop_ns + drain_ns) {
            break;
        }
        // Start cycles on idle slots as the pacer allows, each from a fresh 5-tuple.
        if sending {
            let mut due = pacer.due_now(now, out.c.started);
            let n = slots.len();
            for _ in 0..n {
                if due == 0 {
                    break;
                }
                let i = cursor;
                cursor = (cursor + 1) % n;
                if slots[i].busy() {
                    continue;
                }
                let Some((sock, client)) = opener.open(&ep, i as u64) else {
                    out.c.open_failures += 1;
                    due -= 1;
                    continue;
                };
                let s = &mut slots[i];
                s.sock = Some(sock);
                s.client = client;
                s.send(Op::Allocate, now, true);
                out.c.started += 1;
                out.c.requests += 1;
                due -= 1;
            }
        }
        // Held allocations whose time has come (all of them once sending stopped).
        for s in slots.iter_mut() {
            if let Some((next, at)) = s.held {
                if now >= at || !sending {
                    s.held = None;
                    s.send(next, now, true);
                    out.c.requests += 1;
                }
            }
        }
        // Retransmit or give up.
        for s in slots.iter_mut() {
            if let Some(op) = s.op {
                if now.saturating_sub(s.sent_ns) > RTO_NS << (s.tries - 1) {
                    if s.tries >= TRANSMISSIONS {
                        out.c.timeouts += 1;
                        *out.c
                            .errors
                            .entry(format!("{}:timeout", op.name()))
                            .or_default() += 1;
                        s.idle();
                    } else {
                        if let Some(sock) = &s.sock {
                            let _ = sock.send(&s.req);
                        }
                        s.sent_ns = now;
                        s.tries += 1;
                        out.c.requests += 1;
                    }
                }
            }
        }
        let wait_ms = if sending && !pacer.unlimited() {
            let next = pacer.next_due_ns(out.c.started);
            (next.saturating_sub(now) / 1_000_000).clamp(0, 10) as i32
        } else if sending && slots.iter().any(|s| s.op.is_none()) {
            0
        } else {
            10
        };
        ep.wait(wait_ms, &mut ready);
        for &t in &ready {
            let i = t as usize;
            if i >= slots.len() {
                continue;
            }
            while let Some(fd) = slots[i].sock.as_ref().map(|s| s.as_raw_fd()) {
                let n = rb.recv(fd).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let now = net::now_ns();
                for k in 0..n {
                    let s = &mut slots[i];
                    let Some(d) = rb.data(k) else {
                        out.c.invalid += 1;
                        continue;
                    };
                    let ours = Message::new_checked(d)
                        .map(|m| m.transaction_id() == s.tid)
                        .unwrap_or(false);
                    let Some(op) = s.op.filter(|_| ours) else {
                        // Late answers to retransmissions and anything else.
                        out.c.invalid += 1;
                        continue;
                    };
                    let answer = s.client.answer(d);
                    match step(op, &answer, s.auth_rounds) {
                        Step::Retry => {
                            out.c.auth_retries += 1;
                            s.auth_rounds += 1;
                            s.send(op, now, false);
                            out.c.requests += 1;
                        }
                        Step::Send(next) if op == Op::Allocate && hold_ns > 0 => {
                            out.c.ok[op.index()] += 1;
                            out.hist[op.index()]
                                .saturating_record(now.saturating_sub(s.op_start_ns).max(1));
                            s.op = None;
                            s.held = Some((next, now + hold_ns));
                        }
                        Step::Send(next) => {
                            out.c.ok[op.index()] += 1;
                            out.hist[op.index()]
                                .saturating_record(now.saturating_sub(s.op_start_ns).max(1));
                            s.send(next, now, true);
                            out.c.requests += 1;
                        }
                        Step::Done => {
                            out.c.ok[op.index()] += 1;
                            out.hist[op.index()]
                                .saturating_record(now.saturating_sub(s.op_start_ns).max(1));
                            // Cycles finishing in the drain after the stop are not
                            // counted: the rate is over the measured interval.
                            if now < stop_ns {
                                out.c.cycles += 1;
                            }
                            s.idle();
                            break;
                        }
                        Step::NewTuple => {
                            out.c.new_tuples += 1;
                            s.idle();
                            match opener.open(&ep, i as u64) {
                                Some((sock, client)) => {
                                    let s = &mut slots[i];
                                    s.sock = Some(sock);
                                    s.client = client;
                                    s.send(Op::Allocate, now, true);
                                    out.c.requests += 1;
                                }
                                None => out.c.open_failures += 1,
                            }
                            break;
                        }
                        Step::Fail => {
                            let what = match answer {
                                Answer::Error(c) => c.to_string(),
                                Answer::Retry => "auth".into(),
                                _ => "invalid".into(),
                            };
                            *out.c
                                .errors
                                .entry(format!("{}:{what}", op.name()))
                                .or_default() += 1;
                            s.idle();
                            break;
                        }
                    }
                }
                if n < net::BATCH {
                    break;
                }
            }
        }
        live.add(
            out.c.requests - pub_req,
            out.c.cycles - pub_cyc,
            out.c.invalid - pub_inv,
        );
        (pub_req, pub_cyc, pub_inv) = (out.c.requests, out.c.cycles, out.c.invalid);
    }
    Ok(out)
}

/// Parse `LO-HI` (1024..=65535).
pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--port-range wants LO-HI, got {s:?}"))?;
    let lo: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("bad port {a:?}"))?;
    let hi: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("bad port {b:?}"))?;
    if lo < 1024 || lo > hi {
        bail!("--port-range {s:?}: want 1024 <= LO <= HI");
    }
    Ok((lo, hi))
}

pub fn run_churn(a: &ChurnArgs) -> Result<ChurnReport> {
    let c = &a.common;
    if !(0.0..=3600.0).contains(&a.hold) {
        bail!("--hold must be 0..=3600 seconds");
    }
    c.validate_up_to(if a.hold > 0.0 { 3600.0 } else { 240.0 })?;
    let hold_ns = (a.hold * 1e9) as u64;
    // Held allocations all refresh and delete when sending stops: give them time.
    let drain_ns = if hold_ns > 0 {
        20_000_000_000
    } else {
        2_000_000_000
    };
    if a.allocations == 0 || a.allocations > 20_000 {
        bail!("--allocations must be 1..=20000");
    }
    let creds = a.auth.credentials()?;
    let limit = net::raise_fd_limit();
    if a.allocations as u64 + 64 > limit {
        bail!(
            "{} sockets exceed the open-file limit {limit}",
            a.allocations
        );
    }
    let bind_ip = match c.bind {
        Some(ip) => ip,
        None => net::local_addr_towards(c.server)
            .with_context(|| format!("no route to {}", c.server))?,
    };
    let cpus = c
        .cpus
        .as_deref()
        .map(cpu::parse_list)
        .transpose()?
        .unwrap_or_default();
    let relay_cpus = c.relay_cpus.as_deref().map(cpu::parse_list).transpose()?;
    let threads = c.threads.min(a.allocations).max(1);
    let (lo, hi) = parse_port_range(&a.port_range)?;
    if ((hi - lo) as usize + 1) < threads * a.allocations * 4 {
        bail!(
            "--port-range {lo}-{hi} is too small for {} concurrent cycles",
            a.allocations
        );
    }
    let per_thread: Vec<usize> = (0..threads)
        .map(|t| crate::traffic::flows_of_thread(a.allocations, threads, t).len())
        .collect();
    let live: Vec<Arc<Live>> = (0..threads).map(|_| Arc::new(Live::default())).collect();
    let start_ns = net::now_ns() + 100_000_000;
    let stop_ns = start_ns + (c.duration * 1e9) as u64;
    let pids: Vec<u32> = c
        .relay_pid
        .into_iter()
        .chain(c.relay_threads.iter().copied())
        .collect();
    let (outs, cpu_a, cpu_b, runtime) = std::thread::scope(|sc| -> Result<_> {
        let hs: Vec<_> = per_thread
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                let (live, cpus) = (live[t].clone(), &cpus);
                let opener = Opener {
                    bind_ip,
                    server: c.server,
                    ports: PortCycler::part(lo, hi, threads, t),
                    creds: &creds,
                };
                let rate = split_rate(c.rate, threads, t);
                sc.spawn(move || -> Result<ThreadOut> {
                    cpu::pin(cpus, t)?;
                    Ok(churn_thread(
                        n,
                        opener,
                        rate,
                        (start_ns, stop_ns, drain_ns, hold_ns),
                        &live,
                    )?)
                })
            })
            .collect();
        let sleep_until = |t: u64| {
            let n = net::now_ns();
            if t > n {
                std::thread::sleep(Duration::from_nanos(t - n));
            }
        };
        sleep_until(start_ns);
        let cpu_a = relay_cpus.as_ref().and_then(|r| cpu::sample(r).ok());
        let run_a = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
        let mut prev = Live::snapshot(&live);
        for sec in 1u64.. {
            let t = start_ns + sec * 1_000_000_000;
            if t > stop_ns {
                break;
            }
            sleep_until(t);
            let now = Live::snapshot(&live);
            if !c.quiet {
                eprintln!(
                    "[{sec:>3}s] churn: requests {:>7}/s  cycles {:>7}/s  invalid {}",
                    now.0 - prev.0,
                    now.1 - prev.1,
                    now.2
                );
            }
            prev = now;
        }
        sleep_until(stop_ns);
        let cpu_b = relay_cpus.as_ref().and_then(|r| cpu::sample(r).ok());
        let run_b = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
        let mut outs = Vec::new();
        for h in hs {
            outs.push(h.join().map_err(|_| anyhow!("churn thread panicked"))??);
        }
        let runtime = match (run_a, run_b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Ok((outs, cpu_a, cpu_b, runtime))
    })?;
    let elapsed_s = (stop_ns - start_ns) as f64 / 1e9;
    let mut r = ChurnReport {
        mode: "churn".into(),
        server: c.server.to_string(),
        sockets: a.allocations,
        threads,
        rate: c.rate,
        elapsed_s,
        ..Default::default()
    };
    let mut hist = [
        stats::new_histogram(),
        stats::new_histogram(),
        stats::new_histogram(),
    ];
    for o in outs {
        r.cycles_started += o.c.started;
        r.cycles += o.c.cycles;
        r.allocations += o.c.ok[0];
        r.refreshes += o.c.ok[1];
        r.deletes += o.c.ok[2];
        r.requests += o.c.requests;
        r.auth_retries += o.c.auth_retries;
        r.new_tuples += o.c.new_tuples;
        r.open_failures += o.c.open_failures;
        r.timeouts += o.c.timeouts;
        r.invalid += o.c.invalid;
        for (k, v) in o.c.errors {
            *r.errors.entry(k).or_default() += v;
        }
        for (h, oh) in hist.iter_mut().zip(o.hist.iter()) {
            let _ = h.add(oh);
        }
    }
    r.cycles_per_s = stats::per_second(r.cycles, elapsed_s);
    r.allocate_latency = LatencySummary::from_histogram(&hist[0]);
    r.refresh_latency = LatencySummary::from_histogram(&hist[1]);
    r.delete_latency = LatencySummary::from_histogram(&hist[2]);
    if let (Some(rc), Some(a0), Some(b0)) = (&relay_cpus, cpu_a, cpu_b) {
        r.cpu = Some(
            CpuReport::new(
                rc,
                a0,
                b0,
                cpu::ticks_per_second(),
                r.cycles,
                "complete allocate/refresh/delete cycles",
            )
            .with_attributed(runtime),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_state_machine() {
        use Step::*;
        assert_eq!(step(Op::Allocate, &Answer::Success, 0), Send(Op::Refresh));
        assert_eq!(step(Op::Refresh, &Answer::Success, 0), Send(Op::Delete));
        assert_eq!(step(Op::Delete, &Answer::Success, 0), Done);
        assert_eq!(step(Op::Allocate, &Answer::Retry, 0), Retry);
        assert_eq!(step(Op::Allocate, &Answer::Retry, 1), Retry);
        // Bounded: a server that keeps asking for credentials fails the cycle.
        assert_eq!(step(Op::Allocate, &Answer::Retry, 2), Fail);
        assert_eq!(step(Op::Refresh, &Answer::Error(401), 0), Retry);
        assert_eq!(step(Op::Refresh, &Answer::Error(401), 2), Fail);
        assert_eq!(step(Op::Allocate, &Answer::Error(437), 0), NewTuple);
        assert_eq!(step(Op::Refresh, &Answer::Error(437), 0), Fail);
        assert_eq!(step(Op::Allocate, &Answer::Error(486), 0), Fail);
        assert_eq!(step(Op::Delete, &Answer::Invalid, 0), Fail);
    }

    #[test]
    fn ports_cycle_in_order_per_thread() {
        let mut a = PortCycler::part(20000, 20009, 2, 0);
        let mut b = PortCycler::part(20000, 20009, 2, 1);
        let pa: Vec<u16> = (0..7).map(|_| a.next_port()).collect();
        let pb: Vec<u16> = (0..3).map(|_| b.next_port()).collect();
        assert_eq!(pa, vec![20000, 20001, 20002, 20003, 20004, 20000, 20001]);
        assert_eq!(pb, vec![20005, 20006, 20007]);
        let mut top = PortCycler::part(65530, 65535, 1, 0);
        let p: Vec<u16> = (0..7).map(|_| top.next_port()).collect();
        assert_eq!(p, vec![65530, 65531, 65532, 65533, 65534, 65535, 65530]);
        assert_eq!(parse_port_range("20000-60999").unwrap(), (20000, 60999));
        assert!(parse_port_range("80-90").is_err());
        assert!(parse_port_range("3000-2000").is_err());
        assert!(parse_port_range("3000").is_err());
    }

    #[test]
    fn requests_of_each_op() {
        let c = TurnClient::new("u", "p");
        let tid = TransactionId([3; 12]);
        let m = Op::Allocate.request(&c, tid);
        let msg = Message::new_checked(&m[..]).unwrap();
        assert_eq!(msg.method(), Method::Allocate);
        assert!(msg
            .attribute(xturn_control::wire::attr::REQUESTED_TRANSPORT)
            .is_some());
        let d = Op::Delete.request(&c, tid);
        assert_eq!(client::lifetime(&d), Some(0));
        let r = Op::Refresh.request(&c, tid);
        assert_eq!(client::lifetime(&r), Some(600));
        assert_eq!(
            Message::new_checked(&r[..]).unwrap().method(),
            Method::Refresh
        );
    }
}
