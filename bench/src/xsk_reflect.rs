//! `xsk-reflect IFACE`: a bare AF_XDP reflector, the yardstick for the AF_XDP forwarder
//! (as `xdp-reflect`, the bare XDP_TX reflector, is for the XDP responder).
//!
//! A raw XDP program ([`redirect_to_xsk`]) redirects every frame except ARP to the
//! XSKMAP slot of its receive queue (XDP_PASS if the slot is empty; ARP is passed so
//! the kernel keeps answering it). One thread per queue, pinned to its CPU, owns an
//! [`XskSet`] with one socket (xturn's ring module: the same UMEM, rings and kick
//! policy the forwarder uses), swaps the Ethernet addresses, the IP addresses and the
//! UDP ports of each frame in place ([`reflect_frame`]: checksums stay valid) and sends
//! it back out of the same queue, for `--seconds`, then prints its counts as JSON or a
//! summary. Load it with `xdp-load` (kernel-bypass, the answers come back to the
//! generator's veth) or any UDP sender: every datagram comes back to its sender.

use crate::bpf::{self, reg, Insn, Prog, XDP_PASS};
use crate::cli::XskReflectArgs;
use crate::cpu;
use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Map, MapData, XskMap};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use xturn_relay::afxdp::ring::{
    frame_size_for_mtu, set_thread_nice, BindMode, Desc, Mode, QueueStats, Xsk, XskConfig, XskSet,
};

/// `BPF_MAP_TYPE_XSKMAP`.
const MAP_TYPE_XSKMAP: u32 = 17;
/// `bpf_redirect_map` helper id.
const HELPER_REDIRECT_MAP: i32 = 51;

/// The XDP program: `if (frame shorter than Ethernet or ARP) return XDP_PASS; return
/// bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);` (the low bits of the flags
/// are the action when the slot is empty). `map_fd` is the XSKMAP.
pub fn redirect_to_xsk(map_fd: RawFd) -> Vec<Insn> {
    use reg::*;
    let pass_at = 14i16;
    vec![
        Insn::mov(R6, R1),
        Insn::ldx_w(R2, R1, 0), // ctx->data
        Insn::ldx_w(R3, R1, 4), // ctx->data_end
        Insn::mov(R4, R2),
        Insn::add_imm(R4, 14),
        Insn::jgt(R4, R3, pass_at - 5 - 1),
        Insn::ldx_h(R5, R2, 12), // ethertype, as loaded (LE)
        Insn::new(0x15, R5, 0, pass_at - 7 - 1, 0x0608), // if == ARP goto pass
        Insn::ldx_w(R2, R6, 16), // ctx->rx_queue_index
        Insn::new(0x18, R1, 1, 0, map_fd), // r1 = map (BPF_PSEUDO_MAP_FD)
        Insn([0; 8]),            //   second half of ld_imm64
        Insn::mov_imm(R3, XDP_PASS as i32),
        Insn::new(0x85, 0, 0, 0, HELPER_REDIRECT_MAP), // call bpf_redirect_map
        Insn::exit(),
        Insn::mov_imm(R0, XDP_PASS as i32), // pass:
        Insn::exit(),
    ]
}

/// Send a frame back where it came from: swap the Ethernet addresses and, for IPv4 or
/// IPv6 carrying UDP, the IP addresses and the UDP ports (one's-complement sums do not
/// depend on the order of their words: both checksums stay valid). Returns false for a
/// frame shorter than an Ethernet header.
pub fn reflect_frame(f: &mut [u8]) -> bool {
    if f.len() < 14 {
        return false;
    }
    for i in 0..6 {
        f.swap(i, 6 + i);
    }
    let (addr_at, addr_len, l4) = match (u16::from_be_bytes([f[12], f[13]]), f.get(14)) {
        (0x0800, Some(&v)) if v >> 4 == 4 && f.len() >= 34 && f[23] == 17 => {
            (26, 4, 14 + (v & 0xf) as usize * 4)
        }
        (0x86dd, Some(&v)) if v >> 4 == 6 && f.len() >= 54 && f[20] == 17 => (22, 16, 54),
        _ => return true,
    };
    for i in 0..addr_len {
        f.swap(addr_at + i, addr_at + addr_len + i);
    }
    if f.len() >= l4 + 8 {
        f.swap(l4, l4 + 2);
        f.swap(l4 + 1, l4 + 3);
    }
    true
}

/// One queue's thread.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueReport {
    pub queue: u32,
    pub cpu: Option<usize>,
    /// "zero-copy" or "copy".
    pub bind_mode: String,
    /// Frames received and sent back.
    pub rx: u64,
    pub tx: u64,
    /// Frames dropped because the TX ring (or completion ring) was full, or too short.
    pub dropped: u64,
    pub tx_kicks: u64,
    pub tx_kick_errors: u64,
    /// Loop iterations that found nothing and waited in poll(2).
    pub idle_waits: u64,
    /// The socket's XDP_STATISTICS.
    pub kernel: QueueStats,
}

/// `xsk-reflect` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct XskReflectReport {
    pub mode: String,
    pub iface: String,
    pub frame_size: usize,
    pub frames_per_queue: usize,
    pub ring_size: u32,
    pub batch: usize,
    pub busy_poll: bool,
    pub elapsed_s: f64,
    pub rx: u64,
    pub tx: u64,
    pub dropped: u64,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub queues: Vec<QueueReport>,
}

impl XskReflectReport {
    pub fn human(&self) -> String {
        let mut s = format!(
            "xsk-reflect on {}: {} received ({:.0}/s), {} sent back ({:.0}/s), {} dropped in {:.1} s\n",
            self.iface, self.rx, self.rx_pps, self.tx, self.tx_pps, self.dropped, self.elapsed_s
        );
        for q in &self.queues {
            s += &format!(
                "  queue {} (CPU {}, {}): rx {} tx {} dropped {}; kicks {}; kernel: rx_dropped {} \
                 rx_ring_full {} fill_ring_empty {}\n",
                q.queue,
                q.cpu.map(|c| c.to_string()).unwrap_or("any".into()),
                q.bind_mode,
                q.rx,
                q.tx,
                q.dropped,
                q.tx_kicks,
                q.kernel.rx_dropped,
                q.kernel.rx_ring_full,
                q.kernel.rx_fill_ring_empty_descs
            );
        }
        s
    }
}

/// Receive queues of `iface` (from sysfs).
fn rx_queues(iface: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let n = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {dir}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    ensure!(n > 0, "{iface} has no receive queues in {dir}");
    Ok(n as u32)
}

/// The reflecting loop of one queue, until `stop`.
fn reflect_loop(set: &mut XskSet, batch: usize, busy: bool, stop: &AtomicBool) -> (u64, u64) {
    let mut descs: Vec<Desc> = Vec::with_capacity(batch);
    let mut keep: Vec<Desc> = Vec::with_capacity(batch);
    let (mut dropped, mut idle) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        descs.clear();
        if set.recv(0, &mut descs, batch) > 0 {
            keep.clear();
            for d in &descs {
                let (chunk, off) = set.chunk_mut(d.addr);
                if reflect_frame(&mut chunk[off..off + d.len as usize]) {
                    keep.push(*d);
                } else {
                    set.free(d.addr);
                    dropped += 1;
                }
            }
            let sent = set.send(0, &keep);
            for d in &keep[sent..] {
                set.free(d.addr);
                dropped += 1;
            }
        } else if !busy {
            idle += 1;
            set.wait(Duration::from_millis(1));
        }
        set.service();
    }
    // Let what is queued go out and complete (bounded).
    for _ in 0..200 {
        set.service();
        if set.tx_frames(0) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (dropped, idle)
}

/// `xsk-reflect`.
pub fn run_xsk_reflect(a: &XskReflectArgs) -> Result<XskReflectReport> {
    ensure!(
        a.seconds > 0.0 && a.seconds <= 3600.0,
        "--seconds must be in (0, 3600]"
    );
    ensure!(
        a.batch >= 1 && a.batch <= a.ring_size as usize,
        "--batch must be 1..=--ring-size"
    );
    let ifindex = bpf::ifindex(&a.iface)?;
    let queues: Vec<u32> = match &a.queues {
        Some(s) => cpu::parse_list(s)
            .context("--queues")?
            .into_iter()
            .map(|q| q as u32)
            .collect(),
        None => (0..rx_queues(&a.iface)?).collect(),
    };
    let cpus = match &a.cpus {
        Some(s) => cpu::parse_list(s)?,
        None => Vec::new(),
    };
    let frame_size = match a.frame_size {
        Some(f) => f,
        None => {
            let p = format!("/sys/class/net/{}/mtu", a.iface);
            let mtu: usize = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {p}"))?
                .trim()
                .parse()
                .with_context(|| format!("bad MTU in {p}"))?;
            frame_size_for_mtu(mtu)
        }
    };
    let mut cfg = XskConfig::new(frame_size, a.frames);
    cfg.ring_size = a.ring_size;
    cfg.bind = if a.copy {
        BindMode::CopyOnly
    } else {
        BindMode::Auto
    };

    let slots = queues.iter().max().map_or(1, |m| m + 1);
    let map = MapData::create(
        aya_obj::Map::new_from_params(MAP_TYPE_XSKMAP, 4, 4, slots, 0),
        "xtb_xsks",
        None,
    )
    .context("cannot create the XSKMAP (root needed)")?;
    // The program refers to the map by this fd (it stays the same when `map` moves).
    let map_fd = map.fd().as_fd().as_raw_fd();
    let prog = Prog::load("xtb_xsk_redir", &redirect_to_xsk(map_fd))?;
    let mut xsks = XskMap::try_from(Map::XskMap(map))?;

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    // Each thread binds its socket, reports its fd (or the error), waits for `go`.
    let go = Arc::new(AtomicBool::new(false));
    let (fd_tx, fd_rx) = mpsc::channel::<Result<(u32, RawFd, Mode), String>>();
    let mut threads = Vec::new();
    for (i, &q) in queues.iter().enumerate() {
        let (stop, go, fd_tx, cpus) = (stop.clone(), go.clone(), fd_tx.clone(), cpus.clone());
        let (batch, busy, nice) = (a.batch, a.busy_poll, a.nice);
        threads.push(std::thread::spawn(move || -> Option<QueueReport> {
            if let Err(e) = cpu::pin(&cpus, i) {
                let _ = fd_tx.send(Err(format!("queue {q}: {e:#}")));
                return None;
            }
            if let Err(e) = set_thread_nice(nice) {
                let _ = fd_tx.send(Err(format!("queue {q}: nice {nice}: {e}")));
                return None;
            }
            let mut set = match XskSet::with_config(&[(ifindex, q)], cfg) {
                Ok(s) => s,
                Err(e) => {
                    let _ = fd_tx.send(Err(format!("queue {q}: {e}")));
                    return None;
                }
            };
            let _ = fd_tx.send(Ok((q, set.fd(0), set.mode(0))));
            drop(fd_tx);
            while !go.load(Ordering::Acquire) {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let (dropped, idle_waits) = reflect_loop(&mut set, batch, busy, &stop);
            let c = set.counters(0);
            let k = set.stats(0);
            Some(QueueReport {
                queue: q,
                cpu: (!cpus.is_empty()).then(|| cpus[i % cpus.len()]),
                bind_mode: match set.mode(0) {
                    Mode::ZeroCopy => "zero-copy",
                    Mode::Copy => "copy",
                }
                .into(),
                rx: c.rx,
                tx: c.tx,
                dropped,
                tx_kicks: c.tx_kicks,
                tx_kick_errors: c.tx_kick_errors,
                idle_waits,
                kernel: k,
            })
        }));
    }
    drop(fd_tx);
    let mut failed = Vec::new();
    let mut modes = Vec::new();
    // One message per queue thread (each keeps its sender while it runs).
    for r in fd_rx.iter().take(queues.len()) {
        match r {
            Ok((q, fd, mode)) => {
                xsks.set(q, fd, 0)
                    .with_context(|| format!("XSKMAP slot {q}"))?;
                modes.push(format!("{q}:{mode:?}"));
            }
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        bail!("cannot bind AF_XDP sockets: {}", failed.join("; "));
    }
    let link = bpf::attach_xdp(prog.fd(), ifindex).with_context(|| {
        format!(
            "cannot attach the redirect program to {} in driver mode",
            a.iface
        )
    })?;
    eprintln!(
        "xsk-reflect: AF_XDP reflector on {} queues {queues:?} (modes {}) for {} s",
        a.iface,
        modes.join(","),
        a.seconds
    );
    let start = Instant::now();
    go.store(true, Ordering::Release);
    let end = start + Duration::from_secs_f64(a.seconds);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed_s = start.elapsed().as_secs_f64();
    let mut reports: Vec<QueueReport> = Vec::new();
    for t in threads {
        if let Some(r) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a queue thread panicked"))?
        {
            reports.push(r);
        }
    }
    drop(link);
    let (rx, tx, dropped) = reports.iter().fold((0, 0, 0), |(r, t, d), q| {
        (r + q.rx, t + q.tx, d + q.dropped)
    });
    Ok(XskReflectReport {
        mode: "xsk-reflect".into(),
        iface: a.iface.clone(),
        frame_size,
        frames_per_queue: a.frames,
        ring_size: a.ring_size,
        batch: a.batch,
        busy_poll: a.busy_poll,
        elapsed_s,
        rx,
        tx,
        dropped,
        rx_pps: rx as f64 / elapsed_s.max(1e-9),
        tx_pps: tx as f64 / elapsed_s.max(1e-9),
        queues: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 6];
        f[0..6].copy_from_slice(&[1; 6]);
        f[6..12].copy_from_slice(&[2; 6]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[192, 0, 2, 2]);
        f[30..34].copy_from_slice(&[192, 0, 2, 1]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&3478u16.to_be_bytes());
        f
    }

    #[test]
    fn reflects_ethernet_ip_and_udp() {
        let orig = udp4();
        let mut f = orig.clone();
        assert!(reflect_frame(&mut f));
        assert_eq!((&f[0..6], &f[6..12]), (&orig[6..12], &orig[0..6]));
        assert_eq!((&f[26..30], &f[30..34]), (&orig[30..34], &orig[26..30]));
        assert_eq!((&f[34..36], &f[36..38]), (&orig[36..38], &orig[34..36]));
        assert_eq!(&f[38..], &orig[38..]);
        // Twice is the identity.
        assert!(reflect_frame(&mut f));
        assert_eq!(f, orig);

        // IPv6/UDP.
        let mut v6 = vec![0u8; 14 + 40 + 8];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
        v6[20] = 17;
        v6[22..38].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6[38..54].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6[54..56].copy_from_slice(&1u16.to_be_bytes());
        v6[56..58].copy_from_slice(&2u16.to_be_bytes());
        let o6 = v6.clone();
        assert!(reflect_frame(&mut v6));
        assert_eq!((&v6[22..38], &v6[38..54]), (&o6[38..54], &o6[22..38]));
        assert_eq!((&v6[54..56], &v6[56..58]), (&o6[56..58], &o6[54..56]));

        // ARP or anything else: only the Ethernet addresses; runts are refused.
        let mut arp = orig.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(reflect_frame(&mut arp));
        assert_eq!(&arp[14..], &orig[14..]);
        assert!(!reflect_frame(&mut [0u8; 13]));
    }

    #[test]
    fn redirect_program_shape() {
        let p = redirect_to_xsk(7);
        assert_eq!(p.len(), 16);
        // Both conditional jumps land on the `pass` label.
        for (at, code) in [(5usize, 0x2du8), (7, 0x15)] {
            assert_eq!(p[at].0[0], code);
            let off = i16::from_le_bytes([p[at].0[2], p[at].0[3]]) as usize;
            assert_eq!(p[at + 1 + off], Insn::mov_imm(reg::R0, XDP_PASS as i32));
        }
        // ld_imm64 of map fd 7 with BPF_PSEUDO_MAP_FD, then the helper call.
        assert_eq!(p[9].0, [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[12].0, [0x85, 0, 0, 0, 51, 0, 0, 0]);
    }

    #[test]
    fn redirect_program_passes_the_verifier() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0");
        if !root {
            eprintln!("SKIPPED redirect_program_passes_the_verifier: needs root");
            return;
        }
        // Loading the program checks it with the verifier (no attachment).
        let map = MapData::create(
            aya_obj::Map::new_from_params(MAP_TYPE_XSKMAP, 4, 4, 1, 0),
            "xtb_xsks_t",
            None,
        )
        .unwrap();
        Prog::load("xtb_xsk_t", &redirect_to_xsk(map.fd().as_fd().as_raw_fd())).unwrap();
    }
}
