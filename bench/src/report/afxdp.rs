//! The AF_XDP forwarder against the bare reflectors and coturn.

use super::*;

pub(super) fn afxdp_counters<'a>(res: &'a Results, test: &str) -> Option<&'a AfxdpCounters> {
    match res.get(AFXDP_COUNTERS)?.get(test)? {
        RunResult::Afxdp(c) => Some(c),
        _ => None,
    }
}

/// What the report says when the generator could not use live frames.
pub(super) fn inject_note(inject: &str) -> Option<&'static str> {
    match inject {
        "xsk" => Some("**This machine's kernel refuses live-frame BPF_PROG_RUN (EPERM)**, so the generator sent the same frames, in the same turn, through an AF_XDP socket on the client's veth instead (`\"inject\": \"xsk\"` in the result files): copy mode, so each frame reaches the relay's veth as a socket buffer, which its XDP program first converts, on the relay core. That costs every XDP-based relay and reflector alike; the generator's ceiling is also lower than with live frames."),
        "xsk-pump" => Some("**This machine's kernel refuses live-frame BPF_PROG_RUN (EPERM)**, so the generator pumps the same frames, in the same turn, through a spare veth pair in the client namespace instead (`--pump`; `\"inject\": \"xsk-pump\"` in the result files): an AF_XDP socket sends them into one end, and an XDP program on the other end redirects them to the client's veth, so they reach the relay as XDP frames, as live frames do, with the conversion from socket buffers done on the generator's core. The generator's ceiling is lower than with live frames: where a relay keeps up with it, its core is less than fully busy, and the CPU per delivered frame is the figure to compare."),
        _ => None,
    }
}

/// The target of issue 3: the forwarder at least this share of the bare AF_XDP
/// reflector's rate under the same kernel-bypass load...
pub const AFXDP_VS_REFLECTOR_TARGET: f64 = 0.8;
/// ... and at least this many times coturn per core.
pub const AFXDP_VS_COTURN_TARGET: f64 = 5.0;

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// One side of the kernel-bypass comparison: its runs (`forwarder` or `forwarder-1`,
/// `forwarder-2`, ...) and the medians over them.
pub(super) struct Bypass<'a> {
    pub(super) runs: Vec<(String, &'a XdpRelayLoadReport)>,
    /// Median delivered frames per second.
    pub(super) delivered: f64,
    /// Median relay threads' CPU ns per delivered frame, and of the relay process alone.
    pub(super) ns: Option<f64>,
    pub(super) process_ns: Option<f64>,
}

impl Bypass<'_> {
    fn delivered_range(&self) -> (f64, f64) {
        self.runs
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), (_, l)| {
                (lo.min(l.delivered_pps), hi.max(l.delivered_pps))
            })
    }
}

/// The median (the mean of the two middle values for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub(super) fn per_delivered_ns(l: &XdpRelayLoadReport, seconds: Option<f64>) -> Option<f64> {
    seconds
        .filter(|_| l.delivered > 0)
        .map(|s| s * 1e9 / l.delivered as f64)
}

pub(super) fn attributed_ns(l: &XdpRelayLoadReport) -> Option<f64> {
    l.traffic
        .cpu
        .as_ref()
        .and_then(|c| c.attributed_us_per_packet)
        .map(|u| u * 1000.0)
}

/// The kernel-bypass runs of `kind` ("forwarder" or "reflector"), in name order.
pub(super) fn bypass<'a>(res: &'a Results, kind: &str) -> Option<Bypass<'a>> {
    let runs: Vec<(String, &XdpRelayLoadReport)> = res
        .get(AFXDP)?
        .iter()
        .filter(|(t, _)| {
            t.as_str() == kind
                || t.strip_prefix(kind)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(t, r)| match r {
            RunResult::XdpRelayLoad(l) => Some((t.clone(), l.as_ref())),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return None;
    }
    let delivered = median(runs.iter().map(|(_, l)| l.delivered_pps).collect()).unwrap_or(0.0);
    let ns = median(runs.iter().filter_map(|(_, l)| attributed_ns(l)).collect());
    let process_ns = median(
        runs.iter()
            .filter_map(|(_, l)| per_delivered_ns(l, l.relay_process_cpu_s))
            .collect(),
    );
    Some(Bypass {
        runs,
        delivered,
        ns,
        process_ns,
    })
}

/// The capacity table's columns for one run.
pub(super) fn bypass_columns(l: &XdpRelayLoadReport) -> Vec<Option<f64>> {
    let t = &l.traffic;
    let c = t.cpu.as_ref();
    vec![
        Some(t.sent_pps),
        l.relay_handled_pps,
        l.relay_rx_dropped.map(|v| v as f64),
        Some(l.delivered_pps),
        t.loss,
        l.relay_tx_dropped.map(|v| v as f64),
        c.map(|c| c.busy),
        c.and_then(|c| c.us_per_packet).map(|u| u * 1000.0),
        attributed_ns(l),
        per_delivered_ns(l, l.relay_process_cpu_s),
        per_delivered_ns(l, l.relay_napi_cpu_s),
    ]
}

/// The capacity table of kernel-bypass runs: a row per run of each named side, and its
/// medians when it has several runs.
pub(super) fn bypass_table(
    md: &mut String,
    disturbed: &BTreeMap<String, u64>,
    sides: &[(&str, Option<&Bypass>)],
) {
    let _ = writeln!(
        md,
        "| relay on one core | offered frames/s | received by the relay veth /s | dropped entering the relay veth (relay behind) | delivered at the far side /s | loss | dropped leaving the relay (far side behind) | relay core busy | relay CPU ns per delivered frame | relay threads' CPU ns per delivered frame | of which the relay process | of which the relay NAPI threads |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let fmts: [fn(f64) -> String; 11] = [f0, f0, f0, f0, pct, f0, pct, f0, f0, f0, f0];
    for (name, b) in sides {
        let Some(b) = b else { continue };
        run_rows(md, disturbed, name, b, bypass_columns, &fmts);
    }
}

/// A row per run of side `name` (its `columns`, each in its format; runs the interference
/// check flagged marked ⚠) and, with several runs, the row of their medians.
pub(super) fn run_rows(
    md: &mut String,
    disturbed: &BTreeMap<String, u64>,
    name: &str,
    b: &Bypass,
    columns: fn(&XdpRelayLoadReport) -> Vec<Option<f64>>,
    fmts: &[fn(f64) -> String],
) {
    let cols: Vec<Vec<Option<f64>>> = b.runs.iter().map(|(_, l)| columns(l)).collect();
    for ((test, _), c) in b.runs.iter().zip(&cols) {
        let cells: Vec<String> = c.iter().zip(fmts).map(|(v, f)| cell(*v, *f)).collect();
        let run = test
            .rsplit_once('-')
            .map_or(String::new(), |(_, n)| format!(", run {n}"));
        let warn = if disturbed.contains_key(&format!("{AFXDP}-{test}")) {
            " ⚠"
        } else {
            ""
        };
        let _ = writeln!(md, "| {name}{run}{warn} | {} |", cells.join(" | "));
    }
    if b.runs.len() > 1 {
        let cells: Vec<String> = (0..fmts.len())
            .map(|i| cell(median(cols.iter().filter_map(|c| c[i]).collect()), fmts[i]))
            .collect();
        let _ = writeln!(md, "| **{name}, median** | {} |", cells.join(" | "));
    }
}

/// The AF_XDP section: which path xturn-afxdp's data took under the socket loads (its
/// counters), and the forwarder's capacity against a bare AF_XDP reflector under a
/// kernel-bypass ChannelData load, with the issue's two targets. Every figure and verdict
/// is computed from the result files.
pub fn afxdp_section(
    res: &Results,
    disturbed: &BTreeMap<String, u64>,
    commands: &[(String, String)],
) -> String {
    let mut md = String::new();
    if res.get(XTURN_AFXDP).is_none() && res.get(AFXDP).is_none() {
        return md;
    }
    let warn = |name: &str| {
        if disturbed.contains_key(name) {
            " ⚠"
        } else {
            ""
        }
    };
    let _ = writeln!(md, "\n## xturn-afxdp: the AF_XDP forwarder\n");
    let _ = writeln!(
        md,
        "`xturn --xdp <client-side veth>,<peer-side veth>`: the XDP program on both relay veths steers ChannelData from clients (and UDP from peers to relayed addresses) to AF_XDP sockets (copy mode: veth has no zero-copy), after a FIB lookup for the next hop (which needs IP forwarding on). The server's forwarder thread checks each frame against its copy of the data plane (channel, permission, allocation), rewrites it in place and sends it on the other veth's socket; what it cannot rewrite goes to kernel sockets (the slow path), and what the XDP program does not steer takes the socket path as in the `xturn` column. The relay's work is the forwarder thread's and the relay veths' NAPI threads' (the frame copies into and out of the sockets), all pinned to the relay core."
    );

    // 1. Which path the data took under the socket loads.
    let mut tests: Vec<(&String, &RunResult)> = res
        .get(XTURN_AFXDP)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    tests.sort_by_key(|(n, r)| test_order(n, Some(r)));
    let rows: Vec<(&String, &TrafficReport, &AfxdpCounters)> = tests
        .iter()
        .filter_map(|(n, r)| match r {
            RunResult::Traffic(t) => Some((*n, t, afxdp_counters(res, n)?)),
            _ => None,
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(md, "\n### Which path the data took (socket loads)\n");
        let _ = writeln!(
            md,
            "From `xturn stats --json` before and after each load (the XDP program's counters, and the forwarder's and its sockets' from the server's status file). An echo round trip is relayed twice (client to peer, then peer to client); the TURN control messages (Allocate, ChannelBind, ...) are not counted here.\n"
        );
        let _ = writeln!(
            md,
            "| load | datagrams sent by the generator | steered to AF_XDP by the XDP program | passed to the kernel: no next hop | passed to the kernel: other data reasons | dropped by the kernel before the forwarder (socket full, fill ring empty) | relayed in place by the forwarder | forwarder to kernel sockets (slow path) | dropped by the forwarder | relayed in place, share of the data handled |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (n, t, c) in &rows {
            let _ = writeln!(
                md,
                "| {n}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                warn(&format!("{XTURN_AFXDP}-{n}")),
                f0(t.sent as f64),
                f0(c.steered() as f64),
                f0(c.no_next_hop() as f64),
                f0((c.passed_data() - c.no_next_hop()) as f64),
                f0(c.kernel_drops() as f64),
                f0(c.in_place() as f64),
                f0(c.slow_path() as f64),
                f0(c.forwarder_drops() as f64),
                cell(c.in_place_share(), pct)
            );
        }
        // Where a load lost datagrams at or before the relay, say where.
        for (n, t, c) in &rows {
            let (Some(loss), "relay") = (t.relay_loss, t.mode.as_str()) else {
                continue;
            };
            if loss <= 0.0 {
                continue;
            }
            let lost = t.sent.saturating_sub(t.received) as f64;
            let _ = writeln!(
                md,
                "\n{n}: {} of {} datagrams sent were lost at or before the relay ({}): {} in the veth ring into the relay (the relay core's NAPI behind), {} dropped by the kernel at the AF_XDP sockets ({} of them for an empty fill ring), {} dropped by the forwarder{}; {} more were lost leaving the relay (the peer side's NAPI behind).",
                f0(lost - t.relay_if_drops.unwrap_or(0) as f64),
                f0(t.sent as f64),
                pct(loss),
                cell(t.client_if_drops.map(|v| v as f64), f0),
                f0(c.kernel_drops() as f64),
                f0(c.fill_ring_empty() as f64),
                f0(c.forwarder_drops() as f64),
                match c.forwarder.dropped_tx_full {
                    0 => String::new(),
                    v => format!(" ({} of them for a full TX ring)", f0(v as f64)),
                },
                cell(t.relay_if_drops.map(|v| v as f64), f0),
            );
        }
        if let Some(t) = traffic(res, XTURN_AFXDP, "relay-max") {
            if let Some(c) = &t.cpu {
                let loss = t.relay_loss.unwrap_or(0.0);
                let verdict = if c.busy < 0.95 && loss > 0.01 {
                    "so the relay lost datagrams before its core was saturated, in the veth ring into the relay and at the AF_XDP sockets (the NAPI thread that fills the sockets and the forwarder thread that empties them share the one core). The forwarder's capacity on a saturated core is measured below with a kernel-bypass load."
                } else if c.busy < 0.95 {
                    "the socket generator, not the forwarder, is the limit of the socket loads; the forwarder's capacity is measured below with a kernel-bypass load."
                } else {
                    "the relay core is about saturated by the socket load."
                };
                let _ = writeln!(
                    md,
                    "\nFlat out with the socket generator (relay-max) the generator offered {}/s, the relay core was {} busy and {} of the datagrams were lost at or before the relay; {verdict}",
                    f0(t.sent_pps),
                    pct(c.busy),
                    pct(loss),
                );
            }
        }
    }

    // 2. Capacity: the kernel-bypass ChannelData load, forwarder vs bare reflector, each
    // run a few times (the flat-out figures move from run to run): medians compared.
    let (fw, refl) = (bypass(res, "forwarder"), bypass(res, "reflector"));
    if fw.is_none() && refl.is_none() {
        return md;
    }
    let any = fw.as_ref().or(refl.as_ref()).expect("one is there").runs[0].1;
    let _ = writeln!(
        md,
        "\n### Capacity on one relay core: kernel-bypass ChannelData load\n"
    );
    let _ = writeln!(
        md,
        "The socket generator cannot saturate the forwarder (it sends about 0.3 Mpps from its core), so `xturn-bench xdp-relay-load` first sets up {} allocations with channels over TURN from fixed local ports of the client namespace, sends a few ChannelData through those sockets (so the relay resolves the peer's address), then runs BPF_PROG_RUN in live-frame mode: a raw generator program writes one ChannelData frame ({} bytes: Ethernet, IPv4, UDP, 4-byte ChannelData header, {}-byte payload; valid IPv4 and UDP checksums) per packet, the allocations' 5-tuples and channel numbers in turn, and XDP_TX's it out of the client's veth, flat out ({} frames per run in batches of {}). On the peer's veth `xturn-bench xdp-drop` drops the relayed frames (ARP passes); its receive counter is \"delivered\". The yardstick is `xturn-bench xsk-reflect`, a bare AF_XDP reflector (xturn's own ring module, copy mode, one thread on the relay core) on the relay's client-side veth, under the same generator with the same frames (`--reflector`: no TURN), which swaps the addresses and sends every frame back to the client's veth, where it is dropped and counted as delivered: one AF_XDP receive and one copy-mode transmit per frame, as for the forwarder, without its per-frame work. Frames are counted by the kernel's interface counters, not checked one by one. Flat out only: each live run costs tens of milliseconds of set-up. The two loads took turns, {} runs each, every run against a freshly started server or reflector (the flood's rate drifts with the host over minutes, and taking turns exposes both to the same drift); the comparison uses the medians.\n",
        any.flows,
        any.frame_len,
        any.traffic.params.size,
        f0(any.traffic.sent as f64 / any.runs.max(1) as f64),
        any.batch,
        fw.as_ref().or(refl.as_ref()).map_or(0, |b| b.runs.len())
    );
    if let Some(note) = inject_note(&any.inject) {
        let _ = writeln!(md, "{note}\n");
    }
    bypass_table(
        &mut md,
        disturbed,
        &[
            ("AF_XDP forwarder (xturn-afxdp)", fw.as_ref()),
            ("bare AF_XDP reflector (xsk-reflect)", refl.as_ref()),
        ],
    );
    let list =
        |b: &Bypass, f: &dyn Fn(&XdpRelayLoadReport) -> Option<f64>, fmt: fn(f64) -> String| {
            b.runs
                .iter()
                .map(|(_, l)| cell(f(l), fmt))
                .collect::<Vec<_>>()
                .join(", ")
        };
    if let (Some(f), Some(r)) = (&fw, &refl) {
        let ratio = if r.delivered > 0.0 {
            f.delivered / r.delivered
        } else {
            0.0
        };
        let (fmin, fmax) = f.delivered_range();
        let (rmin, rmax) = r.delivered_range();
        let _ = writeln!(
            md,
            "\n**Forwarder vs bare AF_XDP reflector:** the forwarder delivered a median {} on one relay core ({} per run), {:.2}× the bare reflector's median {} ({} per run) under the same load; run against run, the ratio lies between {:.2}× and {:.2}×. Target: at least {:.2}× — {} (by the medians).",
            mpps(f.delivered),
            list(f, &|l| Some(l.delivered_pps), mpps),
            ratio,
            mpps(r.delivered),
            list(r, &|l| Some(l.delivered_pps), mpps),
            fmin / rmax.max(1e-9),
            fmax / rmin.max(1e-9),
            AFXDP_VS_REFLECTOR_TARGET,
            verdict(ratio >= AFXDP_VS_REFLECTOR_TARGET)
        );
        if let (Some(a), Some(b)) = (f.ns, r.ns) {
            let _ = writeln!(
                md,
                "By CPU cost, which does not depend on how the relay core's time was split: the relay's threads spent a median {a:.0} ns per delivered frame with the forwarder and {b:.0} ns with the reflector, so one core's worth of the forwarder relays {:.2}× what a core's worth of the reflector does ({}).",
                b / a.max(1e-9),
                if b / a.max(1e-9) >= AFXDP_VS_REFLECTOR_TARGET {
                    "at or above the target by this measure too"
                } else {
                    "below the target by this measure too"
                }
            );
        }
        if let (Some(pf), Some(pr)) = (f.process_ns, r.process_ns) {
            let _ = writeln!(
                md,
                "Of that, the user-space process (the forwarder thread with its rewrite, checks and transmit calls; the reflector's thread with its address swap and transmit calls) took a median {pf:.0} ns and {pr:.0} ns per delivered frame."
            );
        }
    }
    // What the counters say about the kernel-bypass runs.
    if let Some(f) = &fw {
        let c = f
            .runs
            .iter()
            .filter_map(|(t, _)| afxdp_counters(res, t))
            .fold(None::<AfxdpCounters>, |a, c| {
                Some(a.map_or_else(|| c.clone(), |a| a.plus(c)))
            });
        if let Some(c) = c {
            let _ = writeln!(
                md,
                "\nxturn's counters over the forwarder's loads (summed): the XDP program steered {} frames to the AF_XDP sockets and passed {} to the kernel for lack of a next hop{}; the kernel dropped {} of the steered frames at the sockets ({} for an empty fill ring: no free UMEM frame to copy into); the forwarder received {}, relayed {} in place, sent {} to the slow path and dropped {} ({} for a full TX ring).",
                f0(c.steered() as f64),
                f0(c.no_next_hop() as f64),
                if c.no_next_hop() > 0 {
                    " (the warm-up's first datagrams, before the relay knew the peer's address)"
                } else {
                    ""
                },
                f0(c.kernel_drops() as f64),
                f0(c.fill_ring_empty() as f64),
                f0(c.forwarder.received as f64),
                f0(c.in_place() as f64),
                f0(c.slow_path() as f64),
                f0(c.forwarder_drops() as f64),
                f0(c.forwarder.dropped_tx_full as f64),
            );
        }
    }
    if let Some(RunResult::XskReflect(x)) = res.get(AFXDP).and_then(|m| m.get("xsk-reflect")) {
        let (kd, fe) = x.queues.iter().fold((0, 0), |(a, b), q| {
            (
                a + q.kernel.rx_dropped,
                b + q.kernel.rx_fill_ring_empty_descs,
            )
        });
        let modes: Vec<&str> = x.queues.iter().map(|q| q.bind_mode.as_str()).collect();
        let _ = writeln!(
            md,
            "The last reflector process's own counts over its life ({:.1} s, {} mode): received {}, sent back {}, dropped {}; the kernel dropped {} frames at its socket ({} for an empty fill ring).",
            x.elapsed_s,
            modes.join("/"),
            f0(x.rx as f64),
            f0(x.tx as f64),
            f0(x.dropped as f64),
            f0(kd as f64),
            f0(fe as f64)
        );
    }
    if let Some(f) = &fw {
        let busy: Vec<String> = [("forwarder", &fw), ("reflector", &refl)]
            .iter()
            .filter_map(|(n, b)| {
                let b = b.as_ref()?;
                Some(format!(
                    "{n} {}",
                    list(b, &|l| l.traffic.cpu.as_ref().map(|c| c.busy), pct)
                ))
            })
            .collect();
        let _ = writeln!(
            md,
            "Relay core busy: {}. The generator offers several times what either relays; frames beyond that are dropped entering the relay veth (its ring full) or at the AF_XDP socket (its rings), after the relay core has spent some work on them, which is part of the CPU per delivered frame above.",
            busy.join("; ")
        );
        if let Some(m) = traffic(res, XTURN_AFXDP, "relay-max") {
            if f.delivered < m.received_pps {
                let sustained = traffic(res, XTURN_AFXDP, "relay-sustained")
                    .map(|t| format!(" (relay-sustained, the highest offered rate with at most 1 % lost at or before the relay: {}/s)", f0(t.params.rate as f64)))
                    .unwrap_or_default();
                let _ = writeln!(
                    md,
                    "Under this overload the forwarder delivered fewer frames per second (median {}/s) than it relayed with the socket generator flat out ({}/s at relay-max): the flat-out kernel-bypass figure is the rate under overload, where the relay core's time goes partly to frames it then drops, not the highest rate it carries{sustained}.",
                    f0(f.delivered),
                    f0(m.received_pps)
                );
            }
        }
        // 3. Against the socket servers of this run, per core.
        let mut lines = Vec::new();
        for s in ["coturn", super::schema::COTURN_UPSTREAM, "xturn"] {
            let Some(t) = traffic(res, s, "relay-max") else {
                continue;
            };
            let by_rate = (t.received_pps > 0.0).then(|| f.delivered / t.received_pps);
            let their_ns = t
                .cpu
                .as_ref()
                .and_then(|c| c.attributed_us_per_packet)
                .map(|u| u * 1000.0);
            let by_cpu = their_ns.zip(f.ns).map(|(a, b)| a / b.max(1e-9));
            let target = if s == "coturn" {
                let ok = by_rate.is_some_and(|r| r >= AFXDP_VS_COTURN_TARGET)
                    && by_cpu.is_some_and(|r| r >= AFXDP_VS_COTURN_TARGET);
                format!(
                    " Target: at least {AFXDP_VS_COTURN_TARGET:.0}× coturn per core — {}.",
                    verdict(ok)
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "- vs {s} on sockets (relay-max of this run: {}/s relayed flat out on the same core, {} busy, {} ns of relay threads' CPU per relayed packet): {} by rate, {} by CPU per packet.{target}",
                f0(t.received_pps),
                cell(t.cpu.as_ref().map(|c| c.busy), pct),
                cell(their_ns, f0),
                by_rate.map_or("–".into(), |r| format!("{r:.2}×")),
                by_cpu.map_or("–".into(), |r| format!("{r:.2}×")),
            ));
        }
        if !lines.is_empty() {
            let _ = writeln!(
                md,
                "\n**Forwarder vs the socket servers, per core:** the forwarder's median delivered rate under the kernel-bypass load against each server's flat-out relay rate with the socket generator (which saturates them), and the relay threads' CPU per relayed packet (forwarder: the median per delivered frame, above).\n\n{}",
                lines.join("\n")
            );
        }
    }
    // The exact commands of this section's runs, as compare.sh logged them.
    let wanted = [
        "xturn-afxdp server",
        "xturn-afxdp ping",
        "xturn-afxdp counters",
        "xturn-afxdp-relay-max sink",
        "xturn-afxdp-relay-max",
        "xturn-afxdp-echo-20k sink",
        "xturn-afxdp-echo-20k",
        "afxdp-forwarder holder",
        "afxdp-forwarder-1",
        "afxdp-reflector holder",
        "afxdp-reflector-1",
    ];
    let mut lines: Vec<String> = Vec::new();
    for w in wanted {
        let mut first = true;
        for (n, c) in commands.iter().filter(|(n, _)| n == w) {
            // A load re-run after interference ran the same command: once is enough.
            if lines.iter().any(|l| l == c) {
                continue;
            }
            if first {
                lines.push(format!("# {n}"));
                first = false;
            }
            lines.push(c.clone());
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            md,
            "\n### Commands\n\nAs run by compare.sh (from results/commands.txt; the other loads differ from these in their names, `--json-out` and `--rate`; `xturn stats` ran before and after each load of the server):\n\n```sh\n{}\n```",
            lines.join("\n")
        );
    }
    md
}
