//! The peer side (`sink`) and the generator's yardstick (`reflect`).
//!
//! `sink` counts every datagram per flow (source address), checks each payload byte for
//! byte and sequence number ([`crate::payload`], [`crate::seq`]) and with `--echo` sends
//! every datagram back to its source from the socket it arrived on, so a TURN channel's
//! peer address matches. `reflect` is the trivial stand-in for a TURN server: it answers
//! ChannelData by echoing it unchanged and ignores (counts) anything else. Both use
//! recvmmsg and sendmmsg over the same buffers, one SO_REUSEPORT socket per thread and
//! listening address, and stop at `--duration` or `--idle-exit` seconds after traffic ends.

use crate::cli::{parse_listen, ReflectArgs, SinkArgs};
use crate::cpu;
use crate::net::{self, Epoll, BATCH};
use crate::payload;
use crate::seq::SeqWindow;
use crate::stats::{self, Live, SinkFlow, SinkReport};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xturn_control::wire::{looks_like_channel_data, ChannelData};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sink { echo: bool },
    Reflect,
}

/// UDP RcvbufErrors from /proc/net/snmp text (the "Udp:" header and value lines).
pub fn parse_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let header = lines.next()?;
    let values = lines.next()?;
    let i = header
        .split_whitespace()
        .position(|h| h == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// UDP RcvbufErrors of this process's network namespace, or with `pid` of that
/// process's namespace (/proc/PID/net/snmp).
pub fn rcvbuf_errors_of(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/net/snmp"),
        None => "/proc/net/snmp".to_string(),
    };
    parse_rcvbuf_errors(&std::fs::read_to_string(path).ok()?)
}

fn rcvbuf_errors() -> Option<u64> {
    rcvbuf_errors_of(None)
}

/// Transmit drops of every interface but `lo`, from /proc/net/dev text. On veth a packet
/// that finds the other end's receive ring full is counted here, on the sending end.
pub fn parse_if_drops(dev: &str) -> Option<u64> {
    let mut sum = 0u64;
    let mut seen = false;
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 16 {
            return None;
        }
        sum += v[11];
        seen = true;
    }
    seen.then_some(sum)
}

/// Interface drops of this process's network namespace, or of `pid`'s.
pub fn if_drops_of(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/net/dev"),
        None => "/proc/net/dev".to_string(),
    };
    parse_if_drops(&std::fs::read_to_string(path).ok()?)
}

/// Per-flow accumulator of one thread.
#[derive(Debug, Default)]
pub struct FlowAcc {
    pub flow_id: Option<u32>,
    pub packets: u64,
    pub bytes: u64,
    pub invalid: u64,
    pub window: SeqWindow,
}

impl FlowAcc {
    /// Account one datagram of this flow.
    pub fn account(&mut self, data: Option<&[u8]>) {
        self.packets += 1;
        let Some(d) = data else {
            self.invalid += 1;
            return;
        };
        self.bytes += d.len() as u64;
        match payload::check(d) {
            Ok(h) if self.flow_id.is_none_or(|f| f == h.flow) => {
                self.flow_id = Some(h.flow);
                self.window.record(h.seq);
            }
            // A different flow id from the same source, or a damaged payload.
            _ => self.invalid += 1,
        }
    }
}

/// What one thread counted.
#[derive(Default)]
struct ThreadCounts {
    flows: HashMap<SocketAddr, FlowAcc>,
    packets: u64,
    bytes: u64,
    invalid: u64,
    echoed: u64,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
}

fn serve(
    kind: Kind,
    socks: Vec<UdpSocket>,
    stop: &AtomicBool,
    live: &Live,
) -> std::io::Result<ThreadCounts> {
    let ep = Epoll::new()?;
    for (i, s) in socks.iter().enumerate() {
        ep.add(s.as_raw_fd(), i as u64)?;
    }
    let mut rb = net::recv_batch();
    let mut c = ThreadCounts::default();
    let mut ready = Vec::new();
    let (mut pub_p, mut pub_i, mut pub_e) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        ep.wait(50, &mut ready);
        for &t in &ready {
            let Some(s) = socks.get(t as usize) else {
                continue;
            };
            let fd = s.as_raw_fd();
            for _ in 0..8 {
                let n = rb.recv(fd).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let now = net::now_ns();
                c.first_ns.get_or_insert(now);
                c.last_ns = Some(now);
                c.packets += n as u64;
                let mut echo = [false; BATCH];
                for (i, e) in echo.iter_mut().enumerate().take(n) {
                    let d = rb.data(i);
                    c.bytes += d.map_or(0, |d| d.len() as u64);
                    match kind {
                        Kind::Sink { echo: on } => {
                            *e = on;
                            let src = rb
                                .source(i)
                                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                            let f = c.flows.entry(src).or_default();
                            let before = f.invalid;
                            f.account(d);
                            c.invalid += f.invalid - before;
                        }
                        Kind::Reflect => {
                            *e = d.is_some_and(|d| {
                                looks_like_channel_data(d) && ChannelData::new_checked(d).is_ok()
                            });
                            if !*e {
                                c.invalid += 1;
                            }
                        }
                    }
                }
                if echo.iter().any(|e| *e) {
                    c.echoed += rb.echo(fd, |i| echo[i]) as u64;
                }
                if n < BATCH {
                    break;
                }
            }
        }
        live.add(c.packets - pub_p, c.echoed - pub_e, c.invalid - pub_i);
        (pub_p, pub_e, pub_i) = (c.packets, c.echoed, c.invalid);
    }
    Ok(c)
}

/// Listening sockets of thread `t`: one per address, SO_REUSEPORT when several threads
/// share the addresses.
fn sockets(listen: &[SocketAddr], threads: usize) -> Result<Vec<Vec<UdpSocket>>> {
    let mut out = Vec::new();
    for _ in 0..threads {
        let mut v = Vec::new();
        for a in listen {
            v.push(
                net::udp_socket(*a, threads > 1, None)
                    .with_context(|| format!("cannot listen on {a}"))?,
            );
        }
        out.push(v);
    }
    Ok(out)
}

struct Opts<'a> {
    listen: &'a [String],
    threads: usize,
    cpus: &'a Option<String>,
    duration: f64,
    idle_exit: f64,
    quiet: bool,
}

fn run(kind: Kind, o: Opts) -> Result<SinkReport> {
    if !(o.duration > 0.0 && o.duration <= 3600.0) {
        bail!("--duration must be in (0, 3600] seconds");
    }
    if !(0.0..=600.0).contains(&o.idle_exit) {
        bail!("--idle-exit must be 0..=600 seconds");
    }
    if o.threads == 0 || o.threads > 256 {
        bail!("--threads must be 1..=256");
    }
    let listen = parse_listen(o.listen)?;
    let limit = net::raise_fd_limit();
    if (listen.len() * o.threads) as u64 + 64 > limit {
        bail!("too many sockets for the open-file limit {limit}");
    }
    let cpus = o
        .cpus
        .as_deref()
        .map(cpu::parse_list)
        .transpose()?
        .unwrap_or_default();
    let groups = sockets(&listen, o.threads)?;
    let stop = AtomicBool::new(false);
    let live: Vec<Arc<Live>> = (0..o.threads).map(|_| Arc::new(Live::default())).collect();
    let name = match kind {
        Kind::Sink { .. } => "sink",
        Kind::Reflect => "reflect",
    };
    if !o.quiet {
        eprintln!(
            "{name}: listening on {} ({} sockets, {} threads), at most {} s",
            o.listen.join(" "),
            listen.len() * o.threads,
            o.threads,
            o.duration
        );
    }
    let drops_before = rcvbuf_errors();
    let if_before = if_drops_of(None);
    let results = std::thread::scope(|sc| -> Result<Vec<ThreadCounts>> {
        let hs: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(t, socks)| {
                let (stop, live, cpus) = (&stop, live[t].clone(), &cpus);
                sc.spawn(move || -> Result<ThreadCounts> {
                    cpu::pin(cpus, t)?;
                    Ok(serve(kind, socks, stop, &live)?)
                })
            })
            .collect();
        // Supervise: progress each second, stop on the deadline or when idle.
        let start = net::now_ns();
        let deadline = start + (o.duration * 1e9) as u64;
        let idle_ns = (o.idle_exit * 1e9) as u64;
        let mut last_change = start;
        let mut prev = Live::snapshot(&live);
        let mut prev_print = (start, prev);
        let mut sec = 0u64;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = net::now_ns();
            let snap = Live::snapshot(&live);
            if snap.0 != prev.0 {
                last_change = now;
                prev = snap;
            }
            if now >= prev_print.0 + 1_000_000_000 {
                sec += 1;
                if !o.quiet {
                    eprintln!(
                        "[{sec:>3}s] {name}: received {:>8}/s  echoed {:>8}/s  invalid {}",
                        snap.0 - prev_print.1 .0,
                        snap.1 - prev_print.1 .1,
                        snap.2
                    );
                }
                prev_print = (now, snap);
            }
            let idle = idle_ns > 0 && snap.0 > 0 && now - last_change >= idle_ns;
            if now >= deadline || idle || hs.iter().any(|h| h.is_finished()) {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("{name} thread panicked"))?)
            .collect()
    })?;
    let mut r = summarise(kind, o.listen, o.threads, results);
    r.rcvbuf_errors = match (drops_before, rcvbuf_errors()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    r.if_drops = match (if_before, if_drops_of(None)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(r)
}

fn summarise(
    kind: Kind,
    listen: &[String],
    threads: usize,
    results: Vec<ThreadCounts>,
) -> SinkReport {
    let mut flows: HashMap<SocketAddr, SinkFlow> = HashMap::new();
    let mut r = SinkReport {
        mode: match kind {
            Kind::Sink { .. } => "sink".into(),
            Kind::Reflect => "reflect".into(),
        },
        listen: listen.to_vec(),
        threads,
        echo: !matches!(kind, Kind::Sink { echo: false }),
        ..Default::default()
    };
    let (mut first, mut last) = (u64::MAX, 0u64);
    for t in results {
        r.packets += t.packets;
        r.bytes += t.bytes;
        r.invalid += t.invalid;
        r.echoed += t.echoed;
        if let (Some(a), Some(b)) = (t.first_ns, t.last_ns) {
            first = first.min(a);
            last = last.max(b);
        }
        for (src, a) in t.flows {
            let f = flows.entry(src).or_insert_with(|| SinkFlow {
                source: src.to_string(),
                ..Default::default()
            });
            f.flow_id = f.flow_id.or(a.flow_id);
            f.packets += a.packets;
            f.bytes += a.bytes;
            f.unique += a.window.unique;
            f.duplicates += a.window.duplicates;
            f.reordered += a.window.reordered;
            f.invalid += a.invalid;
            f.highest_seq = f.highest_seq.max(a.window.highest());
        }
    }
    r.unique = flows.values().map(|f| f.unique).sum();
    r.active_s = if last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    r.pps = stats::per_second(r.packets, r.active_s);
    r.payload_mbps = stats::mbps(r.bytes, r.active_s);
    let mut v: Vec<SinkFlow> = flows.into_values().collect();
    v.sort_by(|a, b| a.flow_id.cmp(&b.flow_id).then(a.source.cmp(&b.source)));
    r.flows = v;
    r
}

pub fn run_sink(a: &SinkArgs) -> Result<SinkReport> {
    run(
        Kind::Sink { echo: a.echo },
        Opts {
            listen: &a.listen,
            threads: a.threads,
            cpus: &a.cpus,
            duration: a.duration,
            idle_exit: a.idle_exit,
            quiet: a.quiet,
        },
    )
}

pub fn run_reflect(a: &ReflectArgs) -> Result<SinkReport> {
    run(
        Kind::Reflect,
        Opts {
            listen: &a.listen,
            threads: a.threads,
            cpus: &a.cpus,
            duration: a.duration,
            idle_exit: a.idle_exit,
            quiet: a.quiet,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_parsing() {
        let t = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 1 2 0 7 0 0 0 0 1 2 0 9 0 0 0 0\nxt1ca: 100 10 0 3 0 0 0 0 200 20 0 5 0 0 0 0\nxt1cb: 100 10 0 1 0 0 0 0 200 20 0 0 0 0 0 0\n";
        assert_eq!(parse_if_drops(t), Some(5));
        assert_eq!(
            parse_if_drops("a\nb\n    lo: 1 2 0 7 0 0 0 0 1 2 0 9 0 0 0 0\n"),
            None
        );
        assert_eq!(parse_if_drops("a\nb\nx: 1 2 3\n"), None);
    }

    #[test]
    fn snmp_parsing() {
        let t = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 100 2 7 90 5 0\nUdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdpLite: 0 0 0 0 9 0\n";
        assert_eq!(parse_rcvbuf_errors(t), Some(5));
        assert_eq!(parse_rcvbuf_errors("Udp: InDatagrams\nUdp: 1\n"), None);
        assert_eq!(parse_rcvbuf_errors(""), None);
        assert!(rcvbuf_errors().is_some());
    }

    #[test]
    fn flow_accounting() {
        let mut f = FlowAcc::default();
        let mut b = vec![0u8; 40];
        for seq in [0u64, 1, 1, 3, 2] {
            payload::write(&mut b, 9, seq, 0);
            f.account(Some(&b));
        }
        f.account(None); // truncated
        f.account(Some(b"junk"));
        payload::write(&mut b, 10, 4, 0); // another flow id from the same source
        f.account(Some(&b));
        assert_eq!(f.packets, 8);
        assert_eq!(f.flow_id, Some(9));
        assert_eq!(f.window.unique, 4);
        assert_eq!(f.window.duplicates, 1);
        assert_eq!(f.window.reordered, 1);
        assert_eq!(f.invalid, 3);
    }

    /// A real sink and reflector on loopback for a fraction of a second: counts, echoes,
    /// and the idle exit.
    #[test]
    fn sink_and_reflector_on_loopback() {
        // Pick a free port, then serve on it.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = vec![format!("127.0.0.1:{port}")];
        let h = std::thread::spawn(move || {
            run(
                Kind::Sink { echo: true },
                Opts {
                    listen: &listen,
                    threads: 1,
                    cpus: &None,
                    duration: 5.0,
                    idle_exit: 1.0,
                    quiet: true,
                },
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(150));
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = vec![0u8; 60];
        for seq in 0..20u64 {
            payload::write(&mut b, 1, seq, 0);
            c.send_to(&b, ("127.0.0.1", port)).unwrap();
        }
        c.send_to(b"not a payload", ("127.0.0.1", port)).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 100];
        while got < 21 {
            let n = c.recv(&mut buf).unwrap();
            if n == 60 {
                assert!(payload::check(&buf[..n]).is_ok());
            }
            got += 1;
        }
        let r = h.join().unwrap();
        assert_eq!(r.packets, 21);
        assert_eq!(r.echoed, 21);
        assert_eq!(r.unique, 20);
        assert_eq!(r.invalid, 1);
        assert_eq!(r.flows.len(), 1);
        assert_eq!(r.flows[0].source, c.local_addr().unwrap().to_string());
        assert_eq!(r.flows[0].highest_seq, Some(19));

        // The reflector echoes ChannelData only.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = vec![format!("127.0.0.1:{port}")];
        let h = std::thread::spawn(move || {
            run(
                Kind::Reflect,
                Opts {
                    listen: &listen,
                    threads: 2,
                    cpus: &None,
                    duration: 5.0,
                    idle_exit: 1.0,
                    quiet: true,
                },
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(150));
        let cd = xturn_control::wire::channel_data::encode(0x4001, b"hello");
        c.send_to(&cd, ("127.0.0.1", port)).unwrap();
        c.send_to(b"\x00\x01 not channel data", ("127.0.0.1", port))
            .unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &cd[..]);
        let r = h.join().unwrap();
        assert_eq!((r.packets, r.echoed, r.invalid), (2, 1, 1));
    }
}
