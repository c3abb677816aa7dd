//! `xdp-relay-load`: a kernel-bypass ChannelData load for the AF_XDP forwarder, which the
//! socket generator (about 0.3 Mpps from one core) cannot saturate.
//!
//! ```text
//!  1. TURN, from the client namespace, from local ports P, P+1, ... (fixed 5-tuples):
//!     Allocate, CreatePermission, ChannelBind (channel 0x4000 + i to peer port + i % K)
//!  2. a few ChannelData per allocation through those sockets (the relay resolves the
//!     peer's address: the XDP program's FIB lookup needs a neighbour entry)
//!  3. live-frame BPF_PROG_RUN: a raw generator program writes one ChannelData frame per
//!     packet, the allocations' 5-tuples in turn (flow table in an array map: UDP source
//!     port, UDP checksum, channel number), and XDP_TX's it out of --iface, flat out
//!  4. count: the relay veth's receive counter and drops, the egress veth's transmit
//!     drops, and what reaches the far side (--deliver-iface: the peer's veth, where
//!     `xdp-drop` takes the frames); the relay core's busy share and CPU per relayed frame
//!  5. delete the allocations
//! ```
//!
//! With `--reflector` there is no TURN: the same frames go to whatever reflects on the
//! relay's veth (`xsk-reflect`, the bare AF_XDP reflector), a drop program on --iface
//! takes them back, and the frames back at --iface are the delivered ones. The relay does
//! the same kind of work in both cases (one AF_XDP receive, one copy-mode transmit on a
//! veth per frame), so the two delivered rates and CPU costs compare the forwarder's
//! per-frame work with a bare reflector's.

use crate::bpf::{self, Mode, Prog, FLOW_ENTRY_LEN, XDP_DROP, XDP_TX};
use crate::cli::XdpRelayLoadArgs;
use crate::cpu::{self, CpuReport};
use crate::net;
use crate::payload;
use crate::stats::{self, Params, TrafficReport};
use crate::traffic::{channel_for, peer_for};
use crate::turn::Session;
use crate::xdp_bench::{
    if_counters, live_runs, live_setup, parse_mac, udp_frame, IfCounters, LiveSetup,
};
use anyhow::{ensure, Context, Result};
use aya::maps::{Array, Map, MapData};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// `BPF_MAP_TYPE_ARRAY`.
const MAP_TYPE_ARRAY: u32 = 2;

/// Offsets in an Ethernet/IPv4 (no options)/UDP frame of the fields that differ between
/// the flows: UDP source port, UDP checksum, ChannelData channel number.
pub const PATCH: bpf::FlowPatch = [34, 40, 42];

/// An Ethernet/IPv4/UDP frame carrying ChannelData (`channel`, `data`) from `src` to
/// `dst`, with correct checksums.
pub fn channel_data_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    channel: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut cd = Vec::with_capacity(4 + data.len());
    cd.extend_from_slice(&channel.to_be_bytes());
    cd.extend_from_slice(&(data.len() as u16).to_be_bytes());
    cd.extend_from_slice(data);
    udp_frame(src_mac, dst_mac, src, dst, &cd)
}

/// A flow's map entry: the bytes at [`PATCH`] of its frame, then padding.
pub fn flow_entry(frame: &[u8]) -> [u8; FLOW_ENTRY_LEN] {
    let mut e = [0u8; FLOW_ENTRY_LEN];
    for (i, at) in PATCH.iter().enumerate() {
        let at = *at as usize;
        e[2 * i..2 * i + 2].copy_from_slice(&frame[at..at + 2]);
    }
    e
}

/// The frames of `flows` (local address, channel) towards `server`, each with the same
/// `size`-byte bench payload (flow 0, sequence 0: the frames are counted, not checked).
/// They differ only at [`PATCH`], which the generator relies on.
pub fn flow_frames(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    flows: &[(SocketAddrV4, u16)],
    server: SocketAddrV4,
    size: usize,
) -> Vec<Vec<u8>> {
    let mut data = vec![0u8; size];
    payload::write(&mut data, 0, 0, 0);
    flows
        .iter()
        .map(|(src, ch)| channel_data_frame(src_mac, dst_mac, *src, server, *ch, &data))
        .collect()
}

/// The flow table for [`bpf::write_flows_tx`]: keys 0..n the flows' entries, key n the
/// counter (0).
fn flow_map(frames: &[Vec<u8>]) -> Result<(Array<MapData, u64>, i32)> {
    let n = frames.len() as u32;
    let map = MapData::create(
        aya_obj::Map::new_from_params(MAP_TYPE_ARRAY, 4, FLOW_ENTRY_LEN as u32, n + 1, 0),
        "xtb_flows",
        None,
    )
    .context("cannot create the flow map (root needed)")?;
    // The program refers to the map by this fd (the same after `map` moves).
    let fd = map.fd().as_fd().as_raw_fd();
    let mut a: Array<MapData, u64> = Array::try_from(Map::Array(map))?;
    for (i, f) in frames.iter().enumerate() {
        a.set(i as u32, u64::from_ne_bytes(flow_entry(f)), 0)?;
    }
    a.set(n, 0, 0)?;
    Ok((a, fd))
}

/// What `xdp-relay-load` reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct XdpRelayLoadReport {
    #[serde(flatten)]
    pub traffic: TrafficReport,
    /// "relay" (TURN allocations, frames relayed to the peer) or "reflector".
    pub target: String,
    /// How the frames were sent: "live" (live-frame BPF_PROG_RUN) or "xsk" (an AF_XDP
    /// socket, where the kernel refuses live frames).
    #[serde(default)]
    pub inject: String,
    /// Live-frame test runs (syscalls) or AF_XDP batches, frames per batch, 5-tuples,
    /// bytes per frame.
    pub runs: u64,
    pub batch: u32,
    pub flows: usize,
    pub frame_len: usize,
    /// Seconds the TURN set-up took, and the ChannelData sent through the sockets
    /// before the load (so the relay resolves the peer's address).
    pub turn_setup_s: f64,
    pub warmup_sent: u64,
    /// Frames the relay veth received (its rx_packets: each went through its XDP program).
    pub relay_handled: Option<u64>,
    pub relay_handled_pps: Option<f64>,
    /// Frames dropped entering the relay veth (its ring full: the relay core was behind).
    pub relay_rx_dropped: Option<u64>,
    /// Frames the relay could not hand to the far side's veth (the egress veth's
    /// tx_dropped: the far side's ring full, its core behind).
    pub relay_tx_dropped: Option<u64>,
    /// Where delivered frames were counted, and how many arrived there.
    pub deliver_iface: String,
    pub delivered: u64,
    pub delivered_pps: f64,
    /// The generator's own CPU time per frame sent, ns.
    pub generator_ns_per_frame: Option<f64>,
    /// Of the relay threads' CPU (schedstat, seconds): the relay process's threads
    /// (--relay-pid: the forwarder or reflector thread and its other threads) and the
    /// other threads given (--relay-threads: the relay-side NAPI kthreads).
    pub relay_process_cpu_s: Option<f64>,
    pub relay_napi_cpu_s: Option<f64>,
    /// Allocations whose deletion failed at the end.
    pub teardown_failed: usize,
    /// `--loop`: the echo's budget on --iface, what it sent back to the relay, and (with
    /// a relay) what came back to --iface from it (the peer-to-client direction, part of
    /// `delivered`).
    #[serde(default)]
    pub loop_budget: Option<u32>,
    #[serde(default)]
    pub echoed: Option<u64>,
    #[serde(default)]
    pub delivered_back: Option<u64>,
}

impl XdpRelayLoadReport {
    pub fn human(&self) -> String {
        let t = &self.traffic;
        let mut s = format!(
            "xdp-relay-load ({}, {} flows, {}-byte frames): sent {} ({:.0}/s) in {} runs; \
             delivered at {} {} ({:.0}/s), loss {}\n",
            self.target,
            self.flows,
            self.frame_len,
            t.sent,
            t.sent_pps,
            self.runs,
            self.deliver_iface,
            self.delivered,
            self.delivered_pps,
            stats::fmt_pct(t.loss)
        );
        if let (Some(h), Some(pps)) = (self.relay_handled, self.relay_handled_pps) {
            s += &format!(
                "  relay: received {h} ({pps:.0}/s); dropped entering (relay behind) {}; \
                 dropped leaving (far side behind) {}\n",
                self.relay_rx_dropped.map_or("–".into(), |v| v.to_string()),
                self.relay_tx_dropped.map_or("–".into(), |v| v.to_string())
            );
        }
        if let Some(c) = &t.cpu {
            s += &format!(
                "  relay core busy {:.1} %, {} ns CPU per delivered frame; relay threads {} ns\n",
                c.busy * 100.0,
                c.us_per_packet
                    .map_or("–".into(), |u| format!("{:.0}", u * 1000.0)),
                c.attributed_us_per_packet
                    .map_or("–".into(), |u| format!("{:.0}", u * 1000.0))
            );
        }
        if let (Some(p), Some(n)) = (self.relay_process_cpu_s, self.relay_napi_cpu_s) {
            let per = |x: f64| {
                if self.delivered > 0 {
                    format!("{:.0} ns", x * 1e9 / self.delivered as f64)
                } else {
                    "–".into()
                }
            };
            s += &format!(
                "  relay process {p:.2} s CPU ({} per delivered frame), relay NAPI threads {n:.2} s ({})\n",
                per(p),
                per(n)
            );
        }
        if let (Some(b), Some(e)) = (self.loop_budget, self.echoed) {
            s += &format!(
                "  closed loop: the echo on the client's side sent {e} back (budget {b}); \
                 delivered {} to the far side and {} back\n",
                self.delivered - self.delivered_back.unwrap_or(0),
                self.delivered_back.map_or("–".into(), |v| v.to_string())
            );
        }
        if self.target == "relay" {
            s += &format!(
                "  TURN set-up {:.2} s, {} warm-up datagrams through the sockets, {} deletions failed\n",
                self.turn_setup_s, self.warmup_sent, self.teardown_failed
            );
        }
        s
    }
}

/// Set up the allocations: one session per flow from its fixed local address.
fn set_up(a: &XdpRelayLoadArgs, locals: &[SocketAddrV4]) -> Result<Vec<Session>> {
    let creds = a.auth.credentials()?;
    let peer = a
        .peer
        .context("--peer ADDR is required unless --reflector")?;
    let server = a.common.server;
    let mut sessions: Vec<Session> = Vec::with_capacity(locals.len());
    for (i, l) in locals.iter().enumerate() {
        let step = (|| -> Result<Session> {
            let mut s = Session::open_at(SocketAddr::V4(*l), server, &creds)?;
            let relay = s.allocate()?;
            let p = peer_for(peer, a.peer_ports, i);
            s.create_permission(&[p])
                .with_context(|| format!("{relay}: permission for {p}"))?;
            s.channel_bind(channel_for(i), p)
                .with_context(|| format!("{relay}: channel {:#x} to {p}", channel_for(i)))?;
            Ok(s)
        })();
        match step {
            Ok(s) => sessions.push(s),
            Err(e) => {
                tear_down(&mut sessions);
                return Err(e.context(format!("allocation {i} from {l}")));
            }
        }
    }
    Ok(sessions)
}

/// Delete the allocations (best effort); returns how many deletions failed.
fn tear_down(sessions: &mut [Session]) -> usize {
    sessions
        .iter_mut()
        .map(|s| s.delete().is_err())
        .filter(|&failed| failed)
        .count()
}

/// `rounds` ChannelData per session through its socket, `gap` apart.
fn warm_up(sessions: &[Session], size: usize, rounds: u32, gap: Duration) -> u64 {
    let mut data = vec![0u8; 4 + size];
    let mut sent = 0;
    for r in 0..rounds {
        for (i, s) in sessions.iter().enumerate() {
            data[0..2].copy_from_slice(&channel_for(i).to_be_bytes());
            data[2..4].copy_from_slice(&(size as u16).to_be_bytes());
            payload::write(&mut data[4..], i as u32, r as u64, 0);
            if s.sock.send(&data).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(gap);
    }
    sent
}

/// `xdp-relay-load`.
pub fn run_xdp_relay_load(a: &XdpRelayLoadArgs) -> Result<XdpRelayLoadReport> {
    let c = &a.common;
    c.validate()?;
    ensure!((1..=256).contains(&a.batch), "--batch must be 1..=256");
    ensure!(
        (a.batch..=16 << 20).contains(&a.frames_per_run),
        "--frames-per-run must be --batch..=16777216"
    );
    // Up to what xturn's default port range and allocation quota hold (channel numbers
    // repeat every 4096 allocations: each allocation has its own channels).
    ensure!(
        (1..=16384).contains(&a.allocations),
        "--allocations must be 1..=16384"
    );
    ensure!(
        a.first_port >= 1024 && a.first_port as usize + a.allocations <= 65_536,
        "--first-port must be at least 1024 and leave room for --allocations ports"
    );
    ensure!(
        (payload::HEADER_LEN..=1400).contains(&a.size),
        "--size must be 24..=1400 bytes"
    );
    ensure!(a.peer_ports >= 1, "--peer-ports must be at least 1");
    if let Some(b) = a.loop_budget {
        ensure!(
            (1..=i32::MAX as u32).contains(&b),
            "--loop must be 1..=2147483647 frames"
        );
    }
    if !a.reflector {
        ensure!(
            a.peer.is_some(),
            "--peer ADDR is required unless --reflector"
        );
        ensure!(
            a.deliver_iface.is_some(),
            "--deliver-iface (the peer's veth, with xdp-drop on it) is required unless --reflector"
        );
    }
    let LiveSetup {
        cpus,
        relay_cpus,
        ifindex,
        mac,
        server,
        bind,
    } = live_setup(c, &a.iface)?;
    // One UDP socket per allocation during the set-up (10,000 in the scale sweep).
    crate::net::raise_fd_limit();
    let locals: Vec<SocketAddrV4> = (0..a.allocations)
        .map(|i| SocketAddrV4::new(bind, a.first_port + i as u16))
        .collect();

    // 1-2. TURN and the warm-up.
    let setup_start = Instant::now();
    let (mut sessions, warmup_sent) = if a.reflector {
        (Vec::new(), 0)
    } else {
        let s = set_up(a, &locals)?;
        let w = warm_up(&s, a.size, 3, Duration::from_millis(100));
        (s, w)
    };
    let turn_setup_s = setup_start.elapsed().as_secs_f64();
    // Everything after this point must delete the allocations on failure too.
    let result = load(
        a,
        &cpus,
        relay_cpus.as_deref(),
        ifindex,
        &mac,
        server,
        &locals,
    );
    // After a closed loop, what was in flight reaches the client's sockets and the
    // relay's queues: let that settle before the deletions.
    if a.loop_budget.is_some() && !sessions.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
    }
    let teardown_failed = tear_down(&mut sessions);
    let mut r = result?;
    r.turn_setup_s = turn_setup_s;
    r.warmup_sent = warmup_sent;
    r.teardown_failed = teardown_failed;
    r.traffic.setup_allocations = sessions.len();
    r.traffic.setup_seconds = turn_setup_s;
    Ok(r)
}

/// Whether the frames that come back to `iface` are counted on their own, besides those
/// at `deliver_iface`: in a closed loop (`echo`) with the peer behind another interface.
/// With the peer on the client's side (`deliver_iface` is `iface`: one relay interface
/// for both legs) that one counter already holds both directions.
fn counts_back(echo: bool, iface: &str, deliver_iface: Option<&str>) -> bool {
    echo && deliver_iface.is_some_and(|d| d != iface)
}

/// 3-4: the live-frame load and the counts.
fn load(
    a: &XdpRelayLoadArgs,
    cpus: &[usize],
    relay_cpus: Option<&[usize]>,
    ifindex: u32,
    mac: &str,
    server: SocketAddrV4,
    locals: &[SocketAddrV4],
) -> Result<XdpRelayLoadReport> {
    let c = &a.common;
    let flows: Vec<(SocketAddrV4, u16)> = locals
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, channel_for(i)))
        .collect();
    let frames = flow_frames(
        parse_mac(mac)?,
        parse_mac(&a.dst_mac)?,
        &flows,
        server,
        a.size,
    );
    let template = &frames[0];
    let (mut map, map_fd) = flow_map(&frames)?;
    let n = frames.len() as u32;
    let gen = Prog::load(
        "xtb_gen_flows",
        &bpf::write_flows_tx(template, PATCH, map_fd, n),
    )?;
    // The generator writes exactly the flows' frames, in turn: check one round (and the
    // wrap to flow 0) in plain runs, then reset the counter.
    let mut out = vec![0u8; template.len()];
    for k in 0..=frames.len() {
        let t = bpf::test_run(
            gen.fd(),
            template,
            1,
            Mode::Plain {
                out: Some(&mut out),
            },
        )?;
        ensure!(
            t.retval == XDP_TX && out == frames[k % frames.len()],
            "generator self-check failed at frame {k}"
        );
    }
    // Live frames where the kernel allows them, else an AF_XDP socket (the flow's frames,
    // the same bytes, in the same turn).
    // A fixed rate (--rate) needs the socket: live-frame runs cannot be paced.
    let live = c.rate == 0 && crate::xdp_bench::live_frames_work(&gen, template, ifindex)?;
    if !live && !c.quiet {
        let why = if c.rate > 0 {
            "--rate"
        } else {
            "live-frame BPF_PROG_RUN refused here (EPERM)"
        };
        eprintln!(
            "xdp-relay-load: {why}: sending through an AF_XDP socket on {}",
            a.pump.as_deref().unwrap_or(&a.iface)
        );
    }
    map.set(n, 0, 0)?;
    // Frames that come back (from a reflector) are dropped where they arrive; in a
    // closed loop every frame that comes back is sent to the relay again.
    let echo = a.loop_budget.map(|b| -> Result<_> {
        let counter = bpf::echo_counter()?;
        let prog = Prog::load("xtb_echo", &bpf::udp_echo_tx(counter.fd, b))?;
        Ok((counter, prog))
    });
    let echo = echo.transpose()?;
    let drop = Prog::load("xtb_drop", &bpf::constant(XDP_DROP))?;
    let _link = match (&echo, a.reflector) {
        (Some((_, prog)), _) => Some(
            bpf::attach_xdp(prog.fd(), ifindex)
                .with_context(|| format!("cannot attach the echo program to {}", a.iface))?,
        ),
        (None, true) => Some(
            bpf::attach_xdp(drop.fd(), ifindex)
                .with_context(|| format!("cannot attach the drop program to {}", a.iface))?,
        ),
        (None, false) => None,
    };
    if echo.is_some() && !a.reflector {
        // xturn re-reads once a second whether frames it sends into a veth with XDP_TX
        // or a redirect arrive (they do once the veth's peer, --iface here, has an XDP
        // program): without this its first second of the loop would go the AF_XDP way.
        // (A bare reflector has no such check.)
        std::thread::sleep(Duration::from_millis(1500));
    }
    // What comes back to --iface from a relay in a closed loop is delivered too (unless
    // --iface is where delivered frames are counted anyway).
    let back_now = || {
        counts_back(echo.is_some(), &a.iface, a.deliver_iface.as_deref())
            .then(|| if_counters(None, &a.iface))
            .flatten()
    };
    let deliver_iface = a.deliver_iface.clone().unwrap_or_else(|| a.iface.clone());
    let deliver_pid = if a.deliver_iface.is_some() {
        a.deliver_pid
    } else {
        None
    };
    let egress = a.relay_egress.as_deref().or(a.relay_iface.as_deref());
    let relay_if = |iface: Option<&str>| iface.and_then(|i| if_counters(c.relay_pid, i));
    let delivered_now = || if_counters(deliver_pid, &deliver_iface);
    ensure!(
        delivered_now().is_some(),
        "no interface {deliver_iface} in the namespace of {}",
        deliver_pid.map_or("this process".to_string(), |p| format!("PID {p}"))
    );
    let pids: Vec<u32> = c
        .relay_pid
        .into_iter()
        .chain(c.relay_threads.iter().copied())
        .collect();

    let deliver_a = delivered_now();
    let back_a = back_now();
    let in_a = relay_if(a.relay_iface.as_deref());
    let out_a = relay_if(egress);
    let cpu_a = relay_cpus.map(cpu::sample).transpose()?;
    let run_a = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
    let process = |pid: Option<u32>| pid.and_then(cpu::runtime_ns);
    let napi = || cpu::runtime_of(&c.relay_threads).filter(|_| !c.relay_threads.is_empty());
    let (proc_a, napi_a) = (process(c.relay_pid), napi());
    let gen_a = net::process_cpu_ns();
    let start_ns = net::now_ns();
    let stop_ns = start_ns + (c.duration * 1e9) as u64;
    let (sent, runs, skipped) = if live {
        let (sent, runs) = live_runs(
            &gen,
            template,
            (a.frames_per_run, a.batch),
            ifindex,
            (start_ns, stop_ns),
            !c.quiet,
            "xdp-relay-load",
        )?;
        (sent, runs, 0)
    } else {
        crate::xdp_bench::xsk_runs(
            &frames,
            &a.iface,
            a.pump.as_deref(),
            (c.rate, stop_ns),
            !c.quiet,
            "xdp-relay-load",
        )?
    };
    let elapsed_s = (net::now_ns() - start_ns) as f64 / 1e9;
    let gen_b = net::process_cpu_ns();
    // The relay drains its rings for a moment after the last run: count that work too
    // (not in a closed loop, which goes on until the echo is detached: it is counted
    // over the load's time exactly).
    if echo.is_none() {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every "after" reading together, right after that.
    let (deliver_b, back_b) = (delivered_now(), back_now());
    let (in_b, out_b) = (relay_if(a.relay_iface.as_deref()), relay_if(egress));
    let cpu_b = relay_cpus.map(cpu::sample).transpose()?;
    let run_b = cpu::runtime_of(&pids).filter(|_| !pids.is_empty());
    let (proc_b, napi_b) = (process(c.relay_pid), napi());
    let echoed = echo.as_ref().map(|(counter, _)| counter.get());
    let secs =
        |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
    let d = |b: Option<IfCounters>, a: Option<IfCounters>| b.zip(a).map(|(b, a)| b.delta(a));
    let back = d(back_b, back_a).map(|x| x.rx_packets);
    let delivered = d(deliver_b, deliver_a).map(|x| x.rx_packets).unwrap_or(0) + back.unwrap_or(0);
    let inbound = d(in_b, in_a);
    let outbound = d(out_b, out_a);
    let handled = inbound.map(|x| x.rx_packets);
    let mut r = TrafficReport {
        mode: "xdp-relay-load".into(),
        params: Params {
            server: c.server.to_string(),
            reflector: a.reflector,
            flows: flows.len(),
            threads: 1,
            cpus: cpus.to_vec(),
            rate: c.rate,
            size: a.size,
            duration_s: c.duration,
        },
        elapsed_s,
        sent,
        sent_pps: stats::per_second(sent, elapsed_s),
        pacing_skipped: skipped,
        received: delivered,
        received_pps: stats::per_second(delivered, elapsed_s),
        received_basis: format!(
            "frames received by {deliver_iface} (kernel counter, not checked one by one)"
        ),
        loss: stats::loss(sent, delivered),
        payload_mbps: Some(stats::mbps(delivered * a.size as u64, elapsed_s)),
        client_if_drops: inbound.map(|x| x.rx_dropped),
        relay_if_drops: outbound.map(|x| x.tx_dropped),
        generator_us_per_packet: (sent > 0)
            .then(|| gen_b.saturating_sub(gen_a) as f64 / 1000.0 / sent as f64),
        ..Default::default()
    };
    if let (Some(rc), Some(x), Some(y)) = (relay_cpus, cpu_a, cpu_b) {
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
                delivered,
                "frames delivered at the far side",
            )
            .with_attributed(attributed),
        );
    }
    Ok(XdpRelayLoadReport {
        generator_ns_per_frame: r.generator_us_per_packet.map(|u| u * 1000.0),
        traffic: r,
        target: if a.reflector { "reflector" } else { "relay" }.into(),
        inject: match (live, &a.pump) {
            (true, _) => "live",
            (false, None) => "xsk",
            (false, Some(_)) => "xsk-pump",
        }
        .into(),
        runs,
        batch: a.batch,
        flows: flows.len(),
        frame_len: template.len(),
        relay_handled: handled,
        relay_handled_pps: handled.map(|h| stats::per_second(h, elapsed_s)),
        relay_rx_dropped: inbound.map(|x| x.rx_dropped),
        relay_tx_dropped: outbound.map(|x| x.tx_dropped),
        deliver_iface,
        delivered,
        delivered_pps: stats::per_second(delivered, elapsed_s),
        relay_process_cpu_s: secs(proc_a, proc_b),
        relay_napi_cpu_s: secs(napi_a, napi_b),
        loop_budget: a.loop_budget,
        echoed,
        delivered_back: back,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp_bench::ipv4_udp_checksums_ok;

    fn flows(n: usize) -> Vec<(SocketAddrV4, u16)> {
        (0..n)
            .map(|i| {
                (
                    SocketAddrV4::new([192, 0, 2, 2].into(), 30_000 + i as u16),
                    channel_for(i),
                )
            })
            .collect()
    }

    #[test]
    fn a_closed_loop_counts_what_comes_back_once() {
        // Peer behind its own veth: what comes back to the client's veth is counted too.
        assert!(counts_back(true, "ca", Some("pa")));
        // The peer on the client's side: --iface counts both directions already.
        assert!(!counts_back(true, "ca", Some("ca")));
        // No loop, or a reflector (delivered is --iface): nothing counted twice.
        assert!(!counts_back(false, "ca", Some("pa")));
        assert!(!counts_back(true, "ca", None));
    }

    #[test]
    fn frames_are_channel_data_with_valid_checksums_differing_only_at_the_patch() {
        let server: SocketAddrV4 = "192.0.2.1:3478".parse().unwrap();
        let fs = flow_frames(
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 1],
            &flows(5),
            server,
            100,
        );
        assert_eq!(fs.len(), 5);
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.len(), 14 + 20 + 8 + 4 + 100);
            assert!(ipv4_udp_checksums_ok(f), "flow {i}");
            assert_eq!(u16::from_be_bytes([f[34], f[35]]), 30_000 + i as u16);
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), 3478);
            assert_eq!(u16::from_be_bytes([f[42], f[43]]), 0x4000 + i as u16);
            assert_eq!(u16::from_be_bytes([f[44], f[45]]), 100);
            assert!(payload::check(&f[46..]).is_ok());
            // Every other byte is the first flow's.
            for (k, (x, y)) in f.iter().zip(&fs[0]).enumerate() {
                let patched = PATCH
                    .iter()
                    .any(|&p| k == p as usize || k == p as usize + 1);
                assert!(patched || x == y, "flow {i} byte {k}");
            }
            let e = flow_entry(f);
            assert_eq!(&e[0..2], &f[34..36]);
            assert_eq!(&e[2..4], &f[40..42]);
            assert_eq!(&e[4..6], &f[42..44]);
        }
        let mut damaged = fs[1].clone();
        damaged[60] ^= 1;
        assert!(!ipv4_udp_checksums_ok(&damaged));
    }

    #[test]
    fn generator_writes_the_flows_in_turn_in_the_kernel() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let server: SocketAddrV4 = "192.0.2.1:3478".parse().unwrap();
        let fs = flow_frames(
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 1],
            &flows(3),
            server,
            100,
        );
        let (_map, fd) = flow_map(&fs).unwrap();
        let p = Prog::load("xtb_test_flows", &bpf::write_flows_tx(&fs[0], PATCH, fd, 3)).unwrap();
        // Whatever the packet held (a recycled page), the frames come out in turn.
        let junk = vec![0xa5u8; fs[0].len() + 10];
        let mut out = vec![0u8; junk.len()];
        for k in 0..7 {
            let t = bpf::test_run(
                p.fd(),
                &junk,
                1,
                Mode::Plain {
                    out: Some(&mut out),
                },
            )
            .unwrap();
            assert_eq!(t.retval, XDP_TX);
            assert_eq!(&out[..fs[0].len()], &fs[k % 3][..], "run {k}");
            assert_eq!(&out[fs[0].len()..], &junk[fs[0].len()..]);
        }
        // Shorter than the frame: aborted.
        let t = bpf::test_run(p.fd(), &junk[..60], 1, Mode::Plain { out: None }).unwrap();
        assert_eq!(t.retval, bpf::XDP_ABORTED);
        // The peer-side sink passes ARP and drops the rest.
        let d = Prog::load("xtb_test_dra", &bpf::drop_but_arp()).unwrap();
        let mut arp = fs[0].clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let run = |f: &[u8]| {
            bpf::test_run(d.fd(), f, 1, Mode::Plain { out: None })
                .unwrap()
                .retval
        };
        assert_eq!(run(&arp), bpf::XDP_PASS);
        assert_eq!(run(&fs[0]), XDP_DROP);
    }
}
