//! The XDP benchmark's tools: what the socket generator cannot measure about xturn's XDP
//! Binding responder.
//!
//! - `xdp-pass IFACE`: hold xturn's XDP_PASS program (from the committed object) on the
//!   client's veth, so frames the relay sends back with XDP_TX arrive (NETLAB.md).
//! - `xdp-reflect IFACE`: hold a bare XDP_TX reflector (swap the Ethernet addresses, send
//!   the frame back) on the relay's veth: the yardstick for the responder.
//! - `xdp-load --iface IFACE`: a kernel-bypass generator. BPF_PROG_RUN in live-frame mode
//!   writes one Binding request (correct checksums, FINGERPRINT) into every frame and
//!   XDP_TX's it out of the client's veth, millions per second from one core, while a
//!   drop program on the same veth takes the answers (so answering costs the client
//!   almost nothing). It reports frames sent, frames that came back (kernel interface
//!   counters: the frames are not checked one by one; `xturn stats` cross-checks the
//!   responder), and the relay core's busy share and CPU per answer.
//! - `xdp-cost`: a micro-benchmark, BPF_PROG_TEST_RUN of the responder, the bare
//!   reflector and the PASS program on the same Binding request, one kernel-timed run per
//!   call: the programs' own cost, without driver, ring or transmit work. (Repeating a run
//!   in one call would feed the responder its own answer from the second run on.)

use crate::bpf::{self, Mode, Prog, XDP_DROP, XDP_PASS, XDP_TX};
use crate::cli::{XdpCostArgs, XdpEchoArgs, XdpHoldArgs, XdpLoadArgs};
use crate::cpu::{self, CpuReport};
use crate::net;
use crate::stats::{self, Params, TrafficReport};
use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Array, HashMap, MapData};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xturn_control::wire::{attr, Class, Message, Method, TransactionId};
use xturn_xdp_common::{
    flags, iface_flags, ipv4_mapped, map_names, program_names, Config, Endpoint, IfaceValue,
    ListenPort, ListenValue,
};

/// xturn's XDP object, the same bytes `xturn --xdp` loads.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../../xdp-ebpf/xturn-xdp.bpf.o");

/// UDP source port of the generated requests.
pub const SRC_PORT: u16 = 40_000;

fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame carrying a STUN Binding request (with FINGERPRINT if
/// `fingerprint`) from `src` to `dst`, with correct IPv4 and UDP checksums (the responder
/// checks both).
pub fn binding_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    tid: [u8; 12],
    fingerprint: bool,
) -> Vec<u8> {
    let stun = xturn_control::client::binding_request(TransactionId(tid), fingerprint);
    udp_frame(src_mac, dst_mac, src, dst, &stun)
}

/// An Ethernet/IPv4/UDP frame (no IP options, DF, TTL 64) carrying `payload` from `src`
/// to `dst`, with correct IPv4 header and UDP checksums.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let n = payload.len();
    let udp_len = (8 + n) as u16;
    let mut f = Vec::with_capacity(42 + n);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = fold(ones_sum(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(udp_len as usize);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    let c = match fold(ones_sum(&udp, ones_sum(&pseudo, 0))) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// Whether an Ethernet/IPv4/UDP frame's IPv4 header and UDP checksums are right (for
/// tests and self-checks).
pub fn ipv4_udp_checksums_ok(f: &[u8]) -> bool {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 17 {
        return false;
    }
    let udp = &f[34..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len != udp.len() {
        return false;
    }
    let mut pseudo = f[26..34].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    fold(ones_sum(&f[14..34], 0)) == 0 && fold(ones_sum(udp, ones_sum(&pseudo, 0))) == 0
}

/// Check that `frame` is a Binding success answering `request` (built by
/// [`binding_frame`]): addresses and ports swapped, checksums right, XOR-MAPPED-ADDRESS
/// the request's source.
pub fn check_answer(request: &[u8], frame: &[u8]) -> Result<()> {
    ensure!(frame.len() >= 42, "answer shorter than its headers");
    ensure!(
        frame[0..6] == request[6..12] && frame[6..12] == request[0..6],
        "MACs not swapped"
    );
    let (ip, udp) = (&frame[14..34], &frame[34..]);
    ensure!(fold(ones_sum(ip, 0)) == 0, "bad IPv4 header checksum");
    ensure!(
        ip[12..16] == request[30..34] && ip[16..20] == request[26..30],
        "IPs not swapped"
    );
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    ensure!(
        udp_len == udp.len(),
        "UDP length {udp_len} vs {}",
        udp.len()
    );
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    ensure!(
        fold(ones_sum(udp, ones_sum(&pseudo, 0))) == 0,
        "bad UDP checksum"
    );
    let m = Message::new_checked(&udp[8..]).map_err(|e| anyhow::anyhow!("not STUN: {e:?}"))?;
    ensure!(
        (m.method(), m.class()) == (Method::Binding, Class::Success),
        "not a Binding success"
    );
    let a = m
        .attribute(attr::XOR_MAPPED_ADDRESS)
        .context("no XOR-MAPPED-ADDRESS")?;
    let mapped = attr::decode_xor_address(a.value, &m.transaction_id())
        .map_err(|e| anyhow::anyhow!("bad XOR-MAPPED-ADDRESS: {e:?}"))?;
    let src = SocketAddr::new(
        IpAddr::from([request[26], request[27], request[28], request[29]]),
        u16::from_be_bytes([request[34], request[35]]),
    );
    ensure!(mapped == src, "XOR-MAPPED-ADDRESS {mapped}, expected {src}");
    let asked = Message::new_checked(&request[42..])
        .map(|r| r.attribute(attr::FINGERPRINT).is_some())
        .unwrap_or(false);
    ensure!(
        m.check_fingerprint() == Ok(asked),
        "FINGERPRINT wrong, or present iff the request had none"
    );
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address {s:?}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC address {s:?}"))
}

pub fn v4(a: SocketAddr) -> Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(v) => Ok(v),
        SocketAddr::V6(_) => bail!("the XDP benchmark generates IPv4 only: {a}"),
    }
}

/// Wait until SIGINT/SIGTERM or `seconds` pass.
pub fn hold(seconds: f64) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn check_hold(a: &XdpHoldArgs) -> Result<u32> {
    ensure!(
        a.duration > 0.0 && a.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    Ok(bpf::ifindex(&a.iface)?)
}

/// `xdp-pass IFACE`: xturn's XDP_PASS program on IFACE until signalled or `--duration`.
pub fn run_xdp_pass(a: &XdpHoldArgs) -> Result<()> {
    check_hold(a)?;
    let mut ebpf = Ebpf::load(OBJECT).context("cannot load the XDP object (root needed)")?;
    let p: &mut Xdp = ebpf
        .program_mut(program_names::PASS)
        .context("no PASS program in the object")?
        .try_into()?;
    p.load()?;
    p.attach(&a.iface, XdpMode::Driver)
        .with_context(|| format!("cannot attach XDP_PASS to {} in driver mode", a.iface))?;
    eprintln!(
        "xdp-pass: {} on {} (driver mode)",
        program_names::PASS,
        a.iface
    );
    hold(a.duration)
    // Dropping `ebpf` detaches.
}

/// `xdp-reflect IFACE`: the bare XDP_TX reflector on IFACE until signalled or `--duration`.
pub fn run_xdp_reflect(a: &XdpHoldArgs) -> Result<()> {
    let ifindex = check_hold(a)?;
    let p = Prog::load("xtb_reflect", &bpf::mac_swap_tx())?;
    let _link = bpf::attach_xdp(p.fd(), ifindex)
        .with_context(|| format!("cannot attach the reflector to {} in driver mode", a.iface))?;
    eprintln!(
        "xdp-reflect: MAC-swapping XDP_TX reflector on {} (driver mode)",
        a.iface
    );
    hold(a.duration)
}

/// `xdp-drop IFACE`: an XDP program that drops every frame but ARP on IFACE until
/// signalled or `--duration`: the far end of a kernel-bypass relay load (the peer's veth)
/// takes the relayed frames without a socket, and the relay can still resolve its address.
pub fn run_xdp_drop(a: &XdpHoldArgs) -> Result<()> {
    let ifindex = check_hold(a)?;
    let p = Prog::load("xtb_drop_arp", &bpf::drop_but_arp())?;
    let _link = bpf::attach_xdp(p.fd(), ifindex).with_context(|| {
        format!(
            "cannot attach the drop program to {} in driver mode",
            a.iface
        )
    })?;
    eprintln!(
        "xdp-drop: dropping every frame but ARP on {} (driver mode)",
        a.iface
    );
    hold(a.duration)
}

/// `xdp-echo IFACE`: the closed-loop echo ([`bpf::udp_echo_tx`]) on IFACE until
/// signalled, `--duration` or `--budget` frames; says how many it sent back.
pub fn run_xdp_echo(a: &XdpEchoArgs) -> Result<()> {
    let ifindex = check_hold(&a.hold)?;
    ensure!(
        (1..=i32::MAX as u32).contains(&a.budget),
        "--budget must be 1..=2147483647"
    );
    let counter = bpf::echo_counter()?;
    let p = Prog::load("xtb_echo", &bpf::udp_echo_tx(counter.fd, a.budget))?;
    let _link = bpf::attach_xdp(p.fd(), ifindex)
        .with_context(|| format!("cannot attach the echo to {} in driver mode", a.hold.iface))?;
    eprintln!(
        "xdp-echo: sending every IPv4/UDP frame on {} back, at most {} (driver mode)",
        a.hold.iface, a.budget
    );
    hold(a.hold.duration)?;
    eprintln!("xdp-echo: sent back {}", counter.get());
    Ok(())
}

/// Packet and drop counters of one interface from /proc/net/dev text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl IfCounters {
    pub fn delta(self, before: IfCounters) -> IfCounters {
        IfCounters {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(before.rx_dropped),
            tx_packets: self.tx_packets.saturating_sub(before.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(before.tx_dropped),
        }
    }
}

/// `iface`'s counters in /proc/net/dev text (`name: rx_bytes rx_packets errs drop ... |
/// tx_bytes tx_packets errs drop ...`).
pub fn parse_net_dev(text: &str, iface: &str) -> Option<IfCounters> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (f.len() >= 12).then(|| IfCounters {
            rx_packets: f[1],
            rx_dropped: f[3],
            tx_packets: f[9],
            tx_dropped: f[11],
        })
    })
}

/// `iface`'s counters, from /proc/PID/net/dev (the namespace of PID) or this namespace's.
pub fn if_counters(pid: Option<u32>, iface: &str) -> Option<IfCounters> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/net/dev"),
        None => "/proc/net/dev".to_string(),
    };
    parse_net_dev(&std::fs::read_to_string(path).ok()?, iface)
}

/// What `xdp-load` adds to a traffic report: where frames went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct XdpLoadReport {
    #[serde(flatten)]
    pub traffic: TrafficReport,
    /// How the frames were sent: "live" or "xsk" (see `XdpRelayLoadReport::inject`).
    #[serde(default)]
    pub inject: String,
    /// Live-frame test runs (syscalls) or AF_XDP batches, and frames per run.
    pub runs: u64,
    pub batch: u32,
    /// Frames the relay's XDP program handled (the relay veth's rx_packets: on veth every
    /// frame received goes through its NAPI ring and XDP program).
    pub relay_handled: Option<u64>,
    pub relay_handled_pps: Option<f64>,
    /// Frames dropped entering the relay's veth (its ring full: the relay core was behind).
    pub relay_rx_dropped: Option<u64>,
    /// Answers the relay could not put into the client veth's ring (its tx_dropped: the
    /// client's core, which also runs the generator, was behind).
    pub relay_tx_dropped: Option<u64>,
    /// The generator's own CPU time per sent frame, ns (the live test runs).
    pub generator_ns_per_frame: Option<f64>,
}

/// `xdp-load`: live-frame Binding requests out of `--iface`, answers dropped there.
/// What both live-frame loads (`xdp-load`, `xdp-relay-load`) set up first: the calling
/// thread pinned per `--cpus` (returned), the relay CPUs to sample, the sending interface's index
/// and MAC address, the IPv4 server and the local IPv4 address to send from.
pub struct LiveSetup {
    pub cpus: Vec<usize>,
    pub relay_cpus: Option<Vec<usize>>,
    pub ifindex: u32,
    pub mac: String,
    pub server: SocketAddrV4,
    pub bind: std::net::Ipv4Addr,
}

pub fn live_setup(c: &crate::cli::Common, iface: &str) -> Result<LiveSetup> {
    let cpus = match &c.cpus {
        Some(s) => cpu::parse_list(s)?,
        None => Vec::new(),
    };
    cpu::pin(&cpus, 0)?;
    net::tight_timer_slack();
    let relay_cpus = c.relay_cpus.as_deref().map(cpu::parse_list).transpose()?;
    let ifindex = bpf::ifindex(iface)?;
    let mac = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .with_context(|| format!("no MAC address for {iface}"))?;
    let server = v4(c.server)?;
    let bind = match c.bind {
        Some(IpAddr::V4(ip)) => ip,
        Some(IpAddr::V6(_)) => bail!("--bind must be IPv4"),
        None => match net::local_addr_towards(c.server)? {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => bail!("no IPv4 route to {}", c.server),
        },
    };
    Ok(LiveSetup {
        cpus,
        relay_cpus,
        ifindex,
        mac,
        server,
        bind,
    })
}

/// Live-frame BPF_PROG_RUN of `gen` on `frame` out of `ifindex`, `frames_per_run` frames
/// per run in batches of `batch`, from `start_ns` until `stop_ns` (CLOCK_MONOTONIC), with a
/// progress line each second if `progress`. Returns (frames sent, runs).
/// Send `frames` in turn out of `iface` (queue 0) through an AF_XDP socket until
/// `stop_ns`, flat out (`rate` 0) or `rate` frames per second: the kernel-bypass load
/// where live-frame BPF_PROG_RUN is refused (some kernels do: EPERM). Copy mode on a
/// veth: one skb per frame built and sent by the kernel on this core, as a live frame's
/// XDP_TX is. Returns (frames queued, batches, frames the schedule skipped because the
/// sender fell behind it).
pub fn xsk_runs(
    frames: &[Vec<u8>],
    iface: &str,
    pump: Option<&str>,
    (rate, stop_ns): (u64, u64),
    progress: bool,
    label: &str,
) -> Result<(u64, u64, u64)> {
    use xturn_relay::afxdp::ring::{Desc, Xsk, XskConfig, XskSet};
    ensure!(!frames.is_empty(), "no frames to send");
    // With a pump NEAR:FAR the socket sends on NEAR and FAR redirects to `iface`.
    let (iface, _pump) = match pump {
        None => (iface.to_string(), None),
        Some(p) => {
            let (near, far) = p
                .split_once(':')
                .with_context(|| format!("--pump {p}: want NEAR:FAR"))?;
            let target = bpf::ifindex(iface)?;
            let prog = Prog::load("xtb_pump", &bpf::redirect_all(target))?;
            let link = bpf::attach_xdp(prog.fd(), bpf::ifindex(far)?)
                .with_context(|| format!("cannot attach the pump's redirect to {far}"))?;
            pin_napi_here(far);
            (near.to_string(), Some((prog, link)))
        }
    };
    let iface = iface.as_str();
    let mut cfg = XskConfig::new(2048, 4096);
    // Transmit only: one frame parked in the fill ring.
    cfg.fill_per_port = 1;
    let mut set = XskSet::with_config(&[(iface, 0)], cfg)
        .with_context(|| format!("AF_XDP socket on {iface} queue 0"))?;
    let (mut sent, mut batches, mut k) = (0u64, 0u64, 0usize);
    let (mut last_report, mut prev_sent) = (net::now_ns(), 0u64);
    let mut batch: Vec<Desc> = Vec::with_capacity(64);
    let mut pacer = crate::pacing::Pacer::new(rate, net::now_ns());
    loop {
        let now = net::now_ns();
        if now >= stop_ns {
            break;
        }
        let due = pacer.due_now(now, sent).min(64) as usize;
        if due == 0 {
            // Ahead of the schedule: sleep, so that the NAPI threads sharing this core
            // (the pump's far end among them) run rather than drop what is sent.
            set.service();
            std::thread::sleep(Duration::from_micros(20));
            continue;
        }
        batch.clear();
        while batch.len() < due {
            let Some(addr) = set.alloc() else { break };
            let f = &frames[k % frames.len()];
            let (chunk, off) = set.chunk_mut(addr);
            chunk[off..off + f.len()].copy_from_slice(f);
            batch.push(Desc {
                addr,
                len: f.len() as u32,
            });
            k += 1;
        }
        let queued = set.send(0, &batch);
        for d in &batch[queued..] {
            set.free(d.addr);
        }
        // Frames not queued are sent again, in order.
        k -= batch.len() - queued;
        sent += queued as u64;
        batches += 1;
        set.service();
        if progress && now >= last_report + 1_000_000_000 {
            eprintln!(
                "{label}: sent {:>9}/s (AF_XDP)",
                (sent - prev_sent) * 1_000_000_000 / (now - last_report)
            );
            (last_report, prev_sent) = (now, sent);
        }
    }
    // The frames still in the TX ring go out; wait for their completions a moment.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        set.service();
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((sent, batches, pacer.skipped()))
}

/// Pin the NAPI kthreads of interface `dev` (threaded NAPI: `napi/<dev>-<id>`) to this
/// thread's CPUs: attaching an XDP program may give the interface a new NAPI instance,
/// whose kthread would run anywhere (on the relay core, too).
fn pin_napi_here(dev: &str) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        let prefix = format!("napi/{dev}-");
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(&prefix) {
                libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
}

/// Whether live-frame BPF_PROG_RUN works here: one frame through `gen` out of `ifindex`.
/// False on EPERM (a kernel that refuses live frames); other errors are returned.
pub fn live_frames_work(gen: &Prog, frame: &[u8], ifindex: u32) -> Result<bool> {
    match bpf::test_run(gen.fd(), frame, 1, Mode::Live { ifindex, batch: 1 }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
        Err(e) => Err(anyhow::Error::from(e).context("live-frame BPF_PROG_RUN")),
    }
}

pub fn live_runs(
    gen: &Prog,
    frame: &[u8],
    (frames_per_run, batch): (u32, u32),
    ifindex: u32,
    (start_ns, stop_ns): (u64, u64),
    progress: bool,
    label: &str,
) -> Result<(u64, u64)> {
    let (mut sent, mut runs, mut last_report, mut prev_sent) = (0u64, 0u64, start_ns, 0u64);
    loop {
        let now = net::now_ns();
        if now >= stop_ns {
            return Ok((sent, runs));
        }
        bpf::test_run(
            gen.fd(),
            frame,
            frames_per_run,
            Mode::Live { ifindex, batch },
        )
        .context("live-frame BPF_PROG_RUN")?;
        sent += u64::from(frames_per_run);
        runs += 1;
        if progress && now >= last_report + 1_000_000_000 {
            eprintln!(
                "{label}: sent {:>9}/s",
                (sent - prev_sent) * 1_000_000_000 / (now - last_report)
            );
            (last_report, prev_sent) = (now, sent);
        }
    }
}

pub fn run_xdp_load(a: &XdpLoadArgs) -> Result<XdpLoadReport> {
    let c = &a.common;
    c.validate()?;
    ensure!((1..=256).contains(&a.batch), "--batch must be 1..=256");
    ensure!(
        (a.batch..=16 << 20).contains(&a.frames_per_run),
        "--frames-per-run must be --batch..=16777216"
    );
    // Each live run costs tens of milliseconds of set-up (measured: about 30 ms on the
    // 2-vCPU VM), so runs cannot be paced finely: the load is flat out only.
    ensure!(
        c.rate == 0,
        "xdp-load runs flat out only (--rate 0): live-frame runs cannot be paced"
    );
    let LiveSetup {
        cpus,
        relay_cpus,
        ifindex,
        mac,
        server,
        bind,
    } = live_setup(c, &a.iface)?;
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(b"XDPL");
    let frame = binding_frame(
        parse_mac(&mac)?,
        parse_mac(&a.dst_mac)?,
        SocketAddrV4::new(bind, SRC_PORT),
        server,
        tid,
        true,
    );
    let gen = Prog::load("xtb_gen", &bpf::write_frame_tx(&frame))?;
    // The generator writes exactly the frame: check once in a plain run.
    let mut out = vec![0u8; frame.len()];
    let t = bpf::test_run(
        gen.fd(),
        &frame,
        1,
        Mode::Plain {
            out: Some(&mut out),
        },
    )?;
    ensure!(
        t.retval == XDP_TX && out == frame,
        "generator self-check failed"
    );
    let live = live_frames_work(&gen, &frame, ifindex)?;
    if !live && !c.quiet {
        eprintln!(
            "xdp-load: live-frame BPF_PROG_RUN refused here (EPERM): sending through an AF_XDP socket on {}",
            a.iface
        );
    }
    let drop = Prog::load("xtb_drop", &bpf::constant(XDP_DROP))?;
    let _link = bpf::attach_xdp(drop.fd(), ifindex)
        .with_context(|| format!("cannot attach the drop program to {}", a.iface))?;
    // xturn answers Binding requests with XDP_TX only once it has seen that the veth the
    // answers go to has an XDP program (it re-reads that every second): let it see this one.
    if a.relay_iface.is_some() {
        std::thread::sleep(Duration::from_millis(1500));
    }

    let pids: Vec<u32> = c
        .relay_pid
        .into_iter()
        .chain(c.relay_threads.iter().copied())
        .collect();
    let relay_iface = a.relay_iface.as_deref();
    let relay_if = |pid: Option<u32>| relay_iface.and_then(|i| if_counters(pid, i));
    let start_ns = net::now_ns();
    let stop_ns = start_ns + (c.duration * 1e9) as u64;
    let client_a = if_counters(None, &a.iface);
    let relay_a = relay_if(c.relay_pid);
    let cpu_a = relay_cpus.as_ref().map(|r| cpu::sample(r)).transpose()?;
    let run_a = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
    let gen_a = net::process_cpu_ns();
    // (Live runs report no return value: the self-check above covers the program.)
    let (sent, runs) = if live {
        live_runs(
            &gen,
            &frame,
            (a.frames_per_run, a.batch),
            ifindex,
            (start_ns, stop_ns),
            !c.quiet,
            "xdp-load",
        )?
    } else {
        let (sent, runs, _) = xsk_runs(
            std::slice::from_ref(&frame),
            &a.iface,
            None,
            (0, stop_ns),
            !c.quiet,
            "xdp-load",
        )?;
        (sent, runs)
    };
    let elapsed_s = (net::now_ns() - start_ns) as f64 / 1e9;
    let gen_b = net::process_cpu_ns();
    let cpu_b = relay_cpus.as_ref().map(|r| cpu::sample(r)).transpose()?;
    let run_b = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
    // Let the last frames come back before reading the counters.
    std::thread::sleep(Duration::from_millis(200));
    let client = if_counters(None, &a.iface)
        .zip(client_a)
        .map(|(b, a)| b.delta(a));
    let relay = relay_if(c.relay_pid).zip(relay_a).map(|(b, a)| b.delta(a));
    let received = client.map(|d| d.rx_packets).unwrap_or(0);
    let handled = relay.map(|d| d.rx_packets);
    let mut r = TrafficReport {
        mode: "xdp-load".into(),
        params: Params {
            server: c.server.to_string(),
            reflector: false,
            flows: 1,
            threads: 1,
            cpus,
            rate: c.rate,
            size: frame.len(),
            duration_s: c.duration,
        },
        elapsed_s,
        sent,
        sent_pps: stats::per_second(sent, elapsed_s),
        received,
        received_pps: stats::per_second(received, elapsed_s),
        received_basis: "frames back at the client's veth (kernel counter, not checked one by one)"
            .into(),
        loss: stats::loss(sent, received),
        relay_if_drops: relay.map(|d| d.tx_dropped),
        client_if_drops: relay.map(|d| d.rx_dropped),
        generator_us_per_packet: (sent > 0)
            .then(|| gen_b.saturating_sub(gen_a) as f64 / 1000.0 / sent as f64),
        ..Default::default()
    };
    if let (Some(rc), Some(x), Some(y)) = (&relay_cpus, cpu_a, cpu_b) {
        let attributed = match (run_a, run_b) {
            (Some(p), Some(q)) => Some(q.saturating_sub(p)),
            _ => None,
        };
        r.cpu = Some(
            CpuReport::new(
                rc,
                x,
                y,
                cpu::ticks_per_second(),
                handled.unwrap_or(0),
                "requests handled by the relay's XDP program",
            )
            .with_attributed(attributed),
        );
    }
    Ok(XdpLoadReport {
        generator_ns_per_frame: r.generator_us_per_packet.map(|u| u * 1000.0),
        traffic: r,
        inject: if live { "live" } else { "xsk" }.into(),
        runs,
        batch: a.batch,
        relay_handled: handled,
        relay_handled_pps: handled.map(|h| stats::per_second(h, elapsed_s)),
        relay_rx_dropped: relay.map(|d| d.rx_dropped),
        relay_tx_dropped: relay.map(|d| d.tx_dropped),
    })
}

impl XdpLoadReport {
    pub fn human(&self) -> String {
        let t = &self.traffic;
        let mut s = format!(
            "xdp-load: sent {} frames ({:.0}/s) in {} runs; back at the client {} ({:.0}/s, {})\n",
            t.sent,
            t.sent_pps,
            self.runs,
            t.received,
            t.received_pps,
            stats::fmt_pct(t.loss)
        );
        if let (Some(h), Some(pps), Some(d), Some(e)) = (
            self.relay_handled,
            self.relay_handled_pps,
            self.relay_rx_dropped,
            self.relay_tx_dropped,
        ) {
            s += &format!(
                "  relay: handled {h} ({pps:.0}/s); dropped entering (relay behind) {d}; \
                 answers dropped leaving (client behind) {e}\n"
            );
        }
        if let Some(c) = &t.cpu {
            s += &format!(
                "  relay core busy {:.1} %, {} ns CPU per request handled\n",
                c.busy * 100.0,
                c.us_per_packet
                    .map(|u| format!("{:.0}", u * 1000.0))
                    .unwrap_or("–".into())
            );
        }
        s
    }
}

/// One program's cost in the micro-benchmark.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProgramCost {
    pub name: String,
    pub what: String,
    /// XDP action it returned for the Binding request.
    pub action: String,
    pub runs: u64,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub min_ns: f64,
}

/// `xdp-cost` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct XdpCostReport {
    pub mode: String,
    pub frame_len: usize,
    pub cpus: Vec<usize>,
    pub method: String,
    pub programs: Vec<ProgramCost>,
}

impl XdpCostReport {
    pub fn human(&self) -> String {
        let mut s = format!("xdp-cost ({}):\n", self.method);
        for p in &self.programs {
            s += &format!(
                "  {:<15} {:<6} mean {:>6.1} ns  p50 {:>6.1}  p99 {:>6.1}  min {:>6.1}  ({} runs)\n",
                p.name, p.action, p.mean_ns, p.p50_ns, p.p99_ns, p.min_ns, p.runs
            );
        }
        s
    }
}

fn action_name(a: u32) -> String {
    match a {
        0 => "ABORTED",
        1 => "DROP",
        2 => "PASS",
        3 => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
    .to_string()
}

/// Mean, p50, p99 and min of kernel-timed runs.
pub fn summarize(mut v: Vec<u32>) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize] as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    (mean, q(0.5), q(0.99), v[0] as f64)
}

/// `xdp-cost`: the responder, the bare reflector and PASS on the same Binding request.
pub fn run_xdp_cost(a: &XdpCostArgs) -> Result<XdpCostReport> {
    ensure!(
        (1..=10_000_000).contains(&a.runs),
        "--runs must be 1..=10000000"
    );
    let cpus = match &a.cpus {
        Some(s) => cpu::parse_list(s)?,
        None => Vec::new(),
    };
    cpu::pin(&cpus, 0)?;
    let server = v4(a.server)?;
    let client = SocketAddrV4::new([192, 0, 2, 2].into(), SRC_PORT);
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(b"XDPC");
    let frame = binding_frame(
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 1],
        client,
        server,
        tid,
        true,
    );
    let bare = binding_frame(
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 1],
        client,
        server,
        tid,
        false,
    );

    let mut ebpf = Ebpf::load(OBJECT).context("cannot load the XDP object (root needed)")?;
    for name in [program_names::XTURN, program_names::PASS] {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no {name} in the object"))?
            .try_into()?;
        p.load()
            .with_context(|| format!("the kernel refused {name}"))?;
    }
    let mut config: Array<MapData, Config> =
        Array::try_from(ebpf.take_map(map_names::CONFIG).context("no config map")?)?;
    config.set(
        0,
        Config {
            flags: flags::ALL,
            ..Config::default()
        },
        0,
    )?;
    // BPF_PROG_TEST_RUN frames arrive on the loopback (ifindex 1): answer there, as xturn
    // does on an interface where XDP_TX arrives.
    let mut ifaces: Array<MapData, IfaceValue> = Array::try_from(
        ebpf.take_map(map_names::IFACES)
            .context("no interface map")?,
    )?;
    ifaces.set(
        1,
        IfaceValue {
            xsk_slot: 0,
            flags: iface_flags::XDP_TX,
        },
        0,
    )?;
    let mut listen: HashMap<MapData, Endpoint, ListenValue> =
        HashMap::try_from(ebpf.take_map(map_names::LISTEN).context("no listen map")?)?;
    listen.insert(
        Endpoint {
            ip: ipv4_mapped(server.ip().octets()),
            port: server.port().to_be_bytes(),
            _pad: [0; 2],
        },
        ListenValue { reserved: 0 },
        0,
    )?;
    let mut ports: Array<MapData, ListenPort> = Array::try_from(
        ebpf.take_map(map_names::LISTEN_PORTS)
            .context("no listening ports map")?,
    )?;
    let port = u32::from(server.port());
    let entry = ports.get(&port, 0)?.with(ipv4_mapped(server.ip().octets()));
    ports.set(port, entry, 0)?;
    let fd_of = |name: &str| -> Result<std::os::fd::OwnedFd> {
        let p: &Xdp = ebpf.program(name).context("program missing")?.try_into()?;
        Ok(p.fd()?.as_fd().try_clone_to_owned()?)
    };
    let responder = fd_of(program_names::XTURN)?;
    let pass = fd_of(program_names::PASS)?;
    let reflector = Prog::load("xtb_reflect", &bpf::mac_swap_tx())?;
    use std::os::fd::AsFd;
    // (name, what, program, input frame, expected action)
    let progs: [(&str, &str, std::os::fd::BorrowedFd<'_>, &[u8], u32); 4] = [
        (
            "responder",
            "xturn's XDP program (xturn_xdp) on a Binding request with FINGERPRINT: parse, \
             verify checksums and FINGERPRINT, write the answer, checksums and FINGERPRINT",
            responder.as_fd(),
            &frame,
            XDP_TX,
        ),
        (
            "responder-nofp",
            "the same program on a Binding request without FINGERPRINT (no CRC-32 either way)",
            responder.as_fd(),
            &bare,
            XDP_TX,
        ),
        (
            "reflector",
            "bare XDP_TX reflector (raw BPF): swap the Ethernet addresses",
            reflector.fd(),
            &frame,
            XDP_TX,
        ),
        (
            "pass",
            "xturn_xdp_pass: return XDP_PASS (the floor: run and timer overhead)",
            pass.as_fd(),
            &frame,
            XDP_PASS,
        ),
    ];
    // Check what each program does with its request before timing it.
    let mut actions = Vec::new();
    for (name, _, fd, input, want) in &progs {
        let mut out = vec![0u8; 256];
        let t = bpf::test_run(
            *fd,
            input,
            1,
            Mode::Plain {
                out: Some(&mut out),
            },
        )?;
        ensure!(
            t.retval == *want,
            "{name} returned {} for the request",
            t.retval
        );
        if name.starts_with("responder") {
            check_answer(input, &out[..t.data_out_len as usize])
                .with_context(|| format!("the {name} answer"))?;
        }
        actions.push(action_name(t.retval));
    }
    // Interleaved, so drift (frequency, other load) hits every program alike.
    let mut samples: Vec<Vec<u32>> = vec![Vec::with_capacity(a.runs as usize); progs.len()];
    for _ in 0..a.runs {
        for (i, (_, _, fd, input, _)) in progs.iter().enumerate() {
            let t = bpf::test_run(*fd, input, 1, Mode::Plain { out: None })?;
            samples[i].push(t.duration_ns);
        }
    }
    let programs = progs
        .iter()
        .zip(samples)
        .zip(actions)
        .map(|(((name, what, _, _, _), s), action)| {
            let (mean_ns, p50_ns, p99_ns, min_ns) = summarize(s);
            ProgramCost {
                name: name.to_string(),
                what: what.to_string(),
                action,
                runs: a.runs,
                mean_ns,
                p50_ns,
                p99_ns,
                min_ns,
            }
        })
        .collect();
    Ok(XdpCostReport {
        mode: "xdp-cost".into(),
        frame_len: frame.len(),
        cpus,
        method:
            "BPF_PROG_TEST_RUN, one run per call (repeat=1), kernel-timed; the programs alone: \
                 no driver, ring or transmit work"
                .into(),
        programs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_has_valid_checksums_and_a_binding_request() {
        let src: SocketAddrV4 = "192.0.2.2:40000".parse().unwrap();
        let dst: SocketAddrV4 = "192.0.2.1:3478".parse().unwrap();
        let f = binding_frame(
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 1],
            src,
            dst,
            [7; 12],
            true,
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 28);
        assert_eq!(fold(ones_sum(&f[14..34], 0)), 0, "IPv4 header checksum");
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 36]);
        assert_eq!(
            fold(ones_sum(&f[34..], ones_sum(&pseudo, 0))),
            0,
            "UDP checksum"
        );
        let m = Message::new_checked(&f[42..]).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Binding, Class::Request));
        assert_eq!(m.check_fingerprint(), Ok(true));
        // The same request as the socket generator's, byte for byte.
        let mut stun = [0u8; 28];
        crate::workload::write_binding_request(&mut stun, &[7; 12]);
        assert_eq!(&f[42..], &stun[..]);
        // A request is not an answer to itself.
        assert!(check_answer(&f, &f).is_err());
    }

    #[test]
    fn macs_net_dev_and_summaries() {
        assert_eq!(
            parse_mac("02:00:0a:FF:00:01\n").unwrap(),
            [2, 0, 10, 255, 0, 1]
        );
        assert!(parse_mac("02:00").is_err() && parse_mac("zz:00:00:00:00:00").is_err());
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
 xt1rc: 7000 100 0 5 0 0 0 0 9000 90 0 3 0 0 0 0
";
        assert_eq!(
            parse_net_dev(dev, "xt1rc"),
            Some(IfCounters {
                rx_packets: 100,
                rx_dropped: 5,
                tx_packets: 90,
                tx_dropped: 3
            })
        );
        assert_eq!(parse_net_dev(dev, "xt1r"), None);
        assert_eq!(summarize(vec![30, 10, 20, 40]), (25.0, 30.0, 40.0, 10.0));
        assert_eq!(summarize(vec![]), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn cost_of_the_programs_in_the_kernel() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let a = XdpCostArgs {
            server: "192.0.2.1:3478".parse().unwrap(),
            runs: 50,
            cpus: None,
            json: false,
            json_out: None,
        };
        let r = run_xdp_cost(&a).unwrap();
        let names: Vec<(&str, &str)> = r
            .programs
            .iter()
            .map(|p| (p.name.as_str(), p.action.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("responder", "TX"),
                ("responder-nofp", "TX"),
                ("reflector", "TX"),
                ("pass", "PASS")
            ]
        );
        assert!(r
            .programs
            .iter()
            .all(|p| p.runs == 50 && p.min_ns <= p.p50_ns));
    }
}
