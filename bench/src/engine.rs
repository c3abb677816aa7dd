//! The generator's worker loop, shared by the `stun`, `relay` and `echo` modes: each
//! thread owns some flows (one connected UDP socket each), sends paced batches with
//! sendmmsg round-robin over its flows, and receives with recvmmsg on the sockets epoll
//! reports ready. Between paced sends it blocks in epoll on the sockets and a timerfd set
//! to the next due datagram, so answers are timestamped when they arrive, not when the
//! next send is due. Everything is bounded by the run's stop time plus a drain period.

use crate::net::{self, Epoll, RecvBatch, SendBatch, TimerFd, BATCH};
use crate::pacing::Pacer;
use crate::seq::{SeqOutcome, SeqWindow};
use crate::stats::{new_histogram, Invalid, InvalidCounts, Live};
use crate::turn::Session;
use crate::workload::{FlowId, Workload};
use hdrhistogram::Histogram;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// One flow: a socket (and for TURN its session with an allocation and channel).
pub struct Flow {
    pub id: FlowId,
    pub sock: UdpSocket,
    /// The TURN session, for the final delete (None against a reflector / for STUN).
    pub session: Option<Session>,
    /// The relayed address (TURN only), kept after the allocation is deleted.
    pub relay: Option<std::net::SocketAddr>,
    /// Next sequence number to send = datagrams sent on this flow.
    pub next_seq: u64,
    pub window: SeqWindow,
}

/// Timing and options of one worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Datagrams per second for this thread; 0 = flat out.
    pub rate: u64,
    pub start_ns: u64,
    pub stop_ns: u64,
    pub drain_ns: u64,
    pub latency: bool,
}

/// What one worker measured.
pub struct WorkerResult {
    pub flows: Vec<Flow>,
    pub sent: u64,
    pub send_errors: u64,
    pub skipped: u64,
    pub received: u64,
    pub received_bytes: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub invalid: InvalidCounts,
    pub latency: Histogram<u64>,
    pub first_send_ns: Option<u64>,
    pub last_send_ns: Option<u64>,
}

const TIMER: u64 = u64::MAX;
/// recvmmsg calls per ready socket before moving on (fairness between flows).
const RECV_ROUNDS: usize = 8;

struct Worker<'a, W: Workload> {
    w: &'a W,
    cfg: WorkerConfig,
    flows: Vec<Flow>,
    live: Arc<Live>,
    rb: RecvBatch,
    sb: SendBatch,
    res_sent: u64,
    res_errors: u64,
    received: u64,
    received_bytes: u64,
    invalid: InvalidCounts,
    hist: Histogram<u64>,
    first_send: Option<u64>,
    last_send: Option<u64>,
    // Counts not yet published to `live`.
    pub_sent: u64,
    pub_received: u64,
    pub_invalid: u64,
}

impl<W: Workload> Worker<'_, W> {
    fn publish(&mut self) {
        let inv = self.invalid.total();
        self.live.add(
            self.res_sent - self.pub_sent,
            self.received - self.pub_received,
            inv - self.pub_invalid,
        );
        self.pub_sent = self.res_sent;
        self.pub_received = self.received;
        self.pub_invalid = inv;
    }

    /// Send up to `budget` datagrams round-robin from `cursor`; returns (sent, failed).
    fn send(&mut self, budget: u64, cursor: &mut usize) -> (u64, u64) {
        let n = self.flows.len();
        let per_flow = if budget == u64::MAX {
            BATCH as u64
        } else {
            budget.div_ceil(n as u64).clamp(1, BATCH as u64)
        };
        let mut left = budget;
        let (mut sent, mut failed) = (0u64, 0u64);
        let now = net::now_ns();
        for _ in 0..n {
            if left == 0 {
                break;
            }
            let f = &mut self.flows[*cursor];
            *cursor = (*cursor + 1) % n;
            let k = left.min(per_flow) as usize;
            for j in 0..k {
                let (w, seq) = (&self.w, f.next_seq + j as u64);
                self.sb
                    .push_with(None, net::SLOT, |buf| w.build(&f.id, seq, now, buf));
            }
            match self.sb.send_once(f.sock.as_raw_fd()) {
                Ok(s) => {
                    f.next_seq += s as u64;
                    sent += s as u64;
                    left -= s as u64;
                }
                Err(_) => {
                    // Connection refused (ICMP from a dead server) and the like: these
                    // datagrams count as attempted, so the schedule moves on.
                    failed += k as u64;
                    left -= k as u64;
                }
            }
        }
        if sent > 0 {
            self.first_send.get_or_insert(now);
            self.last_send = Some(now);
        }
        self.res_sent += sent;
        self.res_errors += failed;
        (sent, failed)
    }

    fn receive(&mut self, idx: usize) {
        for _ in 0..RECV_ROUNDS {
            let fd = self.flows[idx].sock.as_raw_fd();
            let n = match self.rb.recv(fd) {
                Ok(n) => n,
                Err(_) => {
                    // A pending socket error (ICMP unreachable); reported, then cleared.
                    self.res_errors += 1;
                    continue;
                }
            };
            if n == 0 {
                return;
            }
            let now = net::now_ns();
            let f = &mut self.flows[idx];
            for i in 0..n {
                let Some(d) = self.rb.data(i) else {
                    self.invalid.add(Invalid::Truncated);
                    continue;
                };
                match self.w.check(&f.id, d) {
                    Err(why) => self.invalid.add(why),
                    Ok(a) if a.seq >= f.next_seq => self.invalid.add(Invalid::BadSeq),
                    Ok(a) => match f.window.record(a.seq) {
                        SeqOutcome::Duplicate => self.invalid.add(Invalid::Duplicate),
                        _ => {
                            self.received += 1;
                            self.received_bytes += a.payload_len as u64;
                            if self.cfg.latency {
                                self.hist
                                    .saturating_record(now.saturating_sub(a.sent_ns).max(1));
                            }
                        }
                    },
                }
            }
            if n < BATCH {
                return;
            }
        }
    }

    fn poll(&mut self, epoll: &mut Epoll, timer: &TimerFd, timeout_ms: i32, ready: &mut Vec<u64>) {
        epoll.wait(timeout_ms, ready);
        for &t in ready.iter() {
            if t == TIMER {
                timer.clear();
            } else if (t as usize) < self.flows.len() {
                self.receive(t as usize);
            }
        }
    }
}

/// Run one worker over `flows` until `cfg.stop_ns`, then drain answers until
/// `stop_ns + drain_ns`.
pub fn run_worker<W: Workload>(
    w: &W,
    flows: Vec<Flow>,
    cfg: WorkerConfig,
    live: Arc<Live>,
) -> std::io::Result<WorkerResult> {
    net::tight_timer_slack();
    let mut epoll = Epoll::new()?;
    let timer = TimerFd::new()?;
    epoll.add(timer.raw(), TIMER)?;
    for (i, f) in flows.iter().enumerate() {
        epoll.add(f.sock.as_raw_fd(), i as u64)?;
    }
    let mut wk = Worker {
        w,
        cfg,
        flows,
        live,
        rb: net::recv_batch(),
        sb: SendBatch::new(),
        res_sent: 0,
        res_errors: 0,
        received: 0,
        received_bytes: 0,
        invalid: InvalidCounts::default(),
        hist: new_histogram(),
        first_send: None,
        last_send: None,
        pub_sent: 0,
        pub_received: 0,
        pub_invalid: 0,
    };
    let mut ready = Vec::with_capacity(256);
    // Start together with the other workers.
    let now = net::now_ns();
    if cfg.start_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(cfg.start_ns - now));
    }
    let mut pacer = Pacer::new(cfg.rate, cfg.start_ns);
    let mut cursor = 0usize;
    let mut done = 0u64; // sent + failed: what the pacer has had
    let mut last_publish = 0u64;
    if !wk.flows.is_empty() {
        loop {
            let now = net::now_ns();
            if now >= cfg.stop_ns {
                break;
            }
            let budget = pacer.due_now(now, done);
            if budget > 0 {
                let (s, f) = wk.send(budget, &mut cursor);
                done += s + f;
            }
            wk.poll(&mut epoll, &timer, 0, &mut ready);
            if !pacer.unlimited() {
                let next = pacer.next_due_ns(done).min(cfg.stop_ns);
                let now = net::now_ns();
                if next > now {
                    timer.arm_at(next);
                    // The timerfd wakes us on time; the ms timeout is only a safety net.
                    let ms = ((next - now) / 1_000_000 + 2).min(100) as i32;
                    wk.poll(&mut epoll, &timer, ms, &mut ready);
                }
            }
            if now - last_publish > 50_000_000 {
                wk.publish();
                last_publish = now;
            }
        }
    }
    // Drain: answers still in flight.
    let end = cfg.stop_ns + cfg.drain_ns;
    loop {
        let now = net::now_ns();
        if now >= end {
            break;
        }
        let ms = ((end - now) / 1_000_000).clamp(1, 20) as i32;
        wk.poll(&mut epoll, &timer, ms, &mut ready);
    }
    wk.publish();
    let (duplicates, reordered) = wk.flows.iter().fold((0, 0), |(d, r), f| {
        (d + f.window.duplicates, r + f.window.reordered)
    });
    Ok(WorkerResult {
        skipped: pacer.skipped(),
        sent: wk.res_sent,
        send_errors: wk.res_errors,
        received: wk.received,
        received_bytes: wk.received_bytes,
        duplicates,
        reordered,
        invalid: wk.invalid,
        latency: wk.hist,
        first_send_ns: wk.first_send,
        last_send_ns: wk.last_send,
        flows: wk.flows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::ChannelDataLoad;
    use std::net::SocketAddr;

    /// A loopback reflector thread echoing everything for `ms` milliseconds.
    fn reflector(ms: u64) -> (SocketAddr, std::thread::JoinHandle<u64>) {
        let s = net::udp_socket("127.0.0.1:0".parse().unwrap(), false, None).unwrap();
        let addr = s.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut rb = net::recv_batch();
            let end = net::now_ns() + ms * 1_000_000;
            let mut n = 0u64;
            while net::now_ns() < end {
                if !net::wait_readable(s.as_raw_fd(), 10) {
                    continue;
                }
                let k = rb.recv(s.as_raw_fd()).unwrap_or(0);
                n += rb.echo(s.as_raw_fd(), |_| true) as u64;
                let _ = k;
            }
            n
        });
        (addr, h)
    }

    fn flows(server: SocketAddr, n: usize) -> Vec<Flow> {
        (0..n)
            .map(|i| {
                let sock =
                    net::udp_socket("127.0.0.1:0".parse().unwrap(), false, Some(server)).unwrap();
                Flow {
                    id: FlowId {
                        idx: i as u32,
                        local: sock.local_addr().unwrap(),
                        channel: 0x4000 + i as u16,
                    },
                    sock,
                    session: None,
                    relay: None,
                    next_seq: 0,
                    window: SeqWindow::default(),
                }
            })
            .collect()
    }

    /// The loop sends exactly what the pacer allows and accounts every echo: a bounded
    /// count of datagrams at a low rate on loopback, where nothing is lost.
    #[test]
    fn paced_round_trips_on_loopback() {
        let (addr, refl) = reflector(2500);
        let start = net::now_ns() + 20_000_000;
        let cfg = WorkerConfig {
            rate: 2_000,
            start_ns: start,
            stop_ns: start + 200_000_000,
            // Generous, so a loaded machine (tests in parallel) still gets every echo.
            drain_ns: 1_000_000_000,
            latency: true,
        };
        let w = ChannelDataLoad { size: 64 };
        let r = run_worker(&w, flows(addr, 3), cfg, Arc::new(Live::default())).unwrap();
        // 0.2 s at 2000/s: datagram 0 at the start plus one per 500 µs.
        // Never ahead of the schedule (how far behind depends on the machine's load).
        let expected = Pacer::new(2_000, start).due_total(start + 200_000_000);
        assert!(r.sent > 0 && r.sent <= expected, "{} vs {expected}", r.sent);
        assert_eq!(r.received, r.sent);
        assert_eq!(r.invalid.total(), 0);
        assert_eq!(r.latency.len(), r.sent);
        assert_eq!(r.received_bytes, r.sent * 64);
        let per_flow: u64 = r.flows.iter().map(|f| f.next_seq).sum();
        assert_eq!(per_flow, r.sent);
        // Round robin spreads the datagrams over the flows (within one batch).
        let max = r.flows.iter().map(|f| f.next_seq).max().unwrap();
        let min = r.flows.iter().map(|f| f.next_seq).min().unwrap();
        assert!(max - min <= BATCH as u64, "{min}..{max}");
        assert_eq!(refl.join().unwrap(), r.sent);
    }

    /// Unexpected datagrams are counted as invalid, never trusted.
    #[test]
    fn foreign_datagrams_are_invalid() {
        let (addr, refl) = reflector(1500);
        let start = net::now_ns() + 10_000_000;
        let cfg = WorkerConfig {
            rate: 100,
            start_ns: start,
            stop_ns: start + 100_000_000,
            drain_ns: 1_000_000_000,
            latency: false,
        };
        let mut fl = flows(addr, 1);
        // The workload below builds datagrams on channel 0x4002 while the flow expects
        // 0x4001: every echo is then someone else's traffic.
        fl[0].id.channel = 0x4001;
        struct Liar(ChannelDataLoad);
        impl Workload for Liar {
            fn build(&self, f: &FlowId, seq: u64, now: u64, b: &mut [u8]) -> usize {
                let other = FlowId {
                    channel: 0x4002,
                    ..*f
                };
                self.0.build(&other, seq, now, b)
            }
            fn check(&self, f: &FlowId, d: &[u8]) -> Result<crate::workload::Answer, Invalid> {
                self.0.check(f, d)
            }
        }
        let w = Liar(ChannelDataLoad { size: 30 });
        let r = run_worker(&w, fl, cfg, Arc::new(Live::default())).unwrap();
        assert!(r.sent > 0);
        assert_eq!(r.received, 0);
        assert_eq!(r.invalid.get(Invalid::WrongChannel), r.sent);
        refl.join().unwrap();
    }
}
