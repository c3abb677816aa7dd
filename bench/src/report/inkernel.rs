//! The in-kernel relay (`xturn --xdp ... --fast-path xdp`) against the bare XDP_TX
//! reflector, the AF_XDP forwarder and the socket servers, under the kernel-bypass load.

use super::*;

/// The targets of issue 19: the in-kernel relay at least this share of the bare XDP_TX
/// reflector's rate under the same load...
pub const INKERNEL_VS_XDPTX_TARGET: f64 = 0.5;
/// ... and at least this many times coturn 4.6.1 (Debian's) per core...
pub const INKERNEL_VS_COTURN_TARGET: f64 = 20.0;
/// ... and coturn upstream.
pub const INKERNEL_VS_UPSTREAM_TARGET: f64 = 15.0;

/// A relay core at least this busy (a share, as `CpuReport::busy`) counts as saturated.
const SATURATED: f64 = 0.9;

/// The section: a run table for the in-kernel relay and the XDP_TX reflector (the same
/// columns as the forwarder's), the ratios by medians, and the ratios to every socket
/// server of the run and to the forwarder, by rate and by CPU per packet.
pub fn inkernel_section(res: &Results, disturbed: &BTreeMap<String, u64>) -> String {
    let mut md = String::new();
    let (Some(k), x, fw) = (
        bypass(res, "inkernel"),
        bypass(res, "xdptx"),
        bypass(res, "forwarder"),
    ) else {
        return md;
    };
    let _ = writeln!(md, "\n## xturn-inkernel: the in-kernel relay\n");
    let _ = writeln!(
        md,
        "`xturn --xdp <client-side veth>,<peer-side veth> --fast-path xdp`: the XDP program relays in the driver the ChannelData its maps fully describe (live channel, permission and allocation; same family; TTL; checksums; MTU): it strips the ChannelData header, rewrites the frame to the relayed-address-to-peer UDP datagram and redirects it to the peer-side veth through a devmap. The load is the forwarder's (the same `xturn-bench xdp-relay-load` frames and `xdp-drop` on the peer's veth, which as an XDP program is also what makes a frame redirected into that veth arrive); its yardstick is the bare XDP_TX reflector (`xturn-bench xdp-reflect`: swap the Ethernet addresses, XDP_TX) on the relay's client-side veth under the reflector's frames, which come back to the client's veth and are counted there. The two took turns with the forwarder and the AF_XDP reflector, {} runs each, a fresh server or reflector every time; the comparison uses the medians. The relay's work is all in the relay veths' NAPI threads (the server's threads only program the maps).\n",
        k.runs.len()
    );
    if let Some(note) = super::afxdp::inject_note(&k.runs[0].1.inject) {
        let _ = writeln!(md, "{note}\n");
    }
    bypass_table(
        &mut md,
        disturbed,
        &[
            ("in-kernel relay (xturn-inkernel)", Some(&k)),
            ("bare XDP_TX reflector (xdp-reflect)", x.as_ref()),
        ],
    );
    let per_run = |b: &Bypass| {
        b.runs
            .iter()
            .map(|(_, l)| mpps(l.delivered_pps))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(x) = &x {
        let ratio = if x.delivered > 0.0 {
            k.delivered / x.delivered
        } else {
            0.0
        };
        let _ = writeln!(
            md,
            "\n**In-kernel relay vs bare XDP_TX reflector:** the relay delivered a median {} on one relay core ({} per run), {:.2}× the reflector's median {} ({} per run) under the same load. Target: at least {:.2}× — {}.",
            mpps(k.delivered),
            per_run(&k),
            ratio,
            mpps(x.delivered),
            per_run(x),
            INKERNEL_VS_XDPTX_TARGET,
            verdict(ratio >= INKERNEL_VS_XDPTX_TARGET)
        );
        if let (Some(a), Some(b)) = (k.ns, x.ns) {
            let _ = writeln!(
                md,
                "By CPU cost: the relay's threads spent a median {a:.0} ns per delivered frame with the in-kernel relay and {b:.0} ns with the reflector ({:.2}×).",
                b / a.max(1e-9)
            );
        }
    }
    let mut lines = Vec::new();
    // How busy the relay core was: the relay threads' exact runtime per second of the run
    // (the /proc/stat share misses short bursts of work on this tickless VM), or that
    // share where it is larger.
    let k_busy = median(
        k.runs
            .iter()
            .filter_map(|(_, l)| {
                let c = l.traffic.cpu.as_ref()?;
                let exact = c
                    .attributed_seconds
                    .map(|s| s / l.traffic.elapsed_s.max(1e-9));
                Some(exact.map_or(c.busy, |e| e.max(c.busy)))
            })
            .collect(),
    );
    if let Some(f) = &fw {
        let by_cpu = k.ns.zip(f.ns).map(|(a, b)| b / a.max(1e-9));
        lines.push(format!(
            "- vs the AF_XDP forwarder (xturn-afxdp, same load, median {}): {:.2}× by rate, {} by CPU per packet.",
            mpps(f.delivered),
            k.delivered / f.delivered.max(1e-9),
            by_cpu.map_or("–".into(), |r| format!("{r:.2}×")),
        ));
    }
    for s in ["coturn", super::schema::COTURN_UPSTREAM, "xturn"] {
        let Some(t) = traffic(res, s, "relay-max") else {
            continue;
        };
        let by_rate = (t.received_pps > 0.0).then(|| k.delivered / t.received_pps);
        let their_ns = t
            .cpu
            .as_ref()
            .and_then(|c| c.attributed_us_per_packet)
            .map(|u| u * 1000.0);
        let by_cpu = their_ns.zip(k.ns).map(|(a, b)| a / b.max(1e-9));
        let target = match s {
            "coturn" => Some(INKERNEL_VS_COTURN_TARGET),
            x if x == super::schema::COTURN_UPSTREAM => Some(INKERNEL_VS_UPSTREAM_TARGET),
            _ => None,
        }
        .map_or(String::new(), |goal| {
            let rate_ok = by_rate.is_some_and(|r| r >= goal);
            let cpu_ok = by_cpu.is_some_and(|r| r >= goal);
            // Where the relay core had time left, the delivered rate is the generator's
            // limit, not the relay's: say so rather than let the rate stand for capacity.
            let unsaturated = k_busy.filter(|b| *b < SATURATED).map_or(String::new(), |b| {
                format!(
                    " (the in-kernel relay's threads kept its core a median {} busy: the rate is the pump's ceiling here, not the relay's)",
                    pct(b)
                )
            });
            format!(
                " Target: at least {goal:.0}× per core — by CPU per packet (what one core's worth relays): {}; by delivered rate: {}{unsaturated}.",
                verdict(cpu_ok),
                verdict(rate_ok)
            )
        });
        lines.push(format!(
            "- vs {s} on sockets (relay-max of this run: {}/s relayed flat out on the same core, {} busy, {} ns of relay threads' CPU per relayed packet): {} by rate, {} by CPU per packet.{target}",
            f0(t.received_pps),
            cell(t.cpu.as_ref().map(|c| c.busy), pct),
            cell(their_ns, f0),
            by_rate.map_or("–".into(), |r| format!("{r:.2}×")),
            by_cpu.map_or("–".into(), |r| format!("{r:.2}×")),
        ));
    }
    if bypass(res, "loop-inkernel").is_some() {
        lines.push("- These are at the pump's rate; the targets at saturation, every relay flat out in both directions, are judged in the section \"Closed loop\" below.".into());
    }
    if !lines.is_empty() {
        let _ = writeln!(
            md,
            "\n**In-kernel relay vs the other relays, per core:** its median delivered rate under the kernel-bypass load against the forwarder's under the same load and each socket server's flat-out relay rate with the socket generator (which saturates them), and the relay threads' CPU per relayed packet.\n\n{}",
            lines.join("\n")
        );
    }
    md
}

/// The target of issue 19 for the scale sweep: CPU per packet at 10,000 allocations at
/// most this many times that at 16, for every xturn mode.
pub const SCALE_TARGET: f64 = 1.5;

/// Results of the scale sweep flat out (`scale-<mode>-<allocations>.json`).
pub const SCALE: &str = "scale";
/// And at a fixed offered rate per mode (`scalerate-<mode>-<allocations>.json`).
pub const SCALE_RATE: &str = "scalerate";
/// And in the closed loop, at saturation (`scaleloop-<mode>-<allocations>.json`).
pub const SCALE_LOOP: &str = "scaleloop";

/// The scale sweep: per xturn mode and allocation count, the kernel-bypass load's
/// delivered rate and the relay threads' CPU per delivered frame, and the growth of the
/// latter from the fewest to the most allocations; at a fixed rate, then flat out.
pub fn scale_section(res: &Results, disturbed: &BTreeMap<String, u64>) -> String {
    let paced = scale_table(res, SCALE_RATE, disturbed);
    let flat = scale_table(res, SCALE, disturbed);
    let closed = scale_table(res, SCALE_LOOP, disturbed);
    if paced.is_empty() && flat.is_empty() && closed.is_empty() {
        return String::new();
    }
    let mut md = String::new();
    let _ = writeln!(md, "\n## Scale: 16 to 10,000 allocations\n");
    let _ = writeln!(
        md,
        "The kernel-bypass ChannelData load of the sections above with N allocations, one channel each, the frames of all N flows sent in turn (so every frame looks up another flow), against each xturn mode on one relay core; `xdp-drop` on the peer's veth counts what was delivered. The cost per packet is the relay threads' CPU (the server's threads and the relay veths' NAPI threads) per delivered frame. Target: at most {SCALE_TARGET:.1}× the cost at the fewest allocations, for every mode."
    );
    if !paced.is_empty() {
        let _ = writeln!(
            md,
            "\n### At a fixed offered rate\n\nEach mode at one offered rate for every N (the pump paced by `--rate`; about half of what the mode relays flat out at 16 allocations), so that N is the only thing that changes: flat out, the pump's own rate moves from run to run (its core also runs the far ends' NAPI threads), and the cost per frame moves with it (how many frames each NAPI poll finds). At a moderate rate part of each frame's cost is the wake-ups, the same at every N.\n\n{paced}"
        );
    }
    if !flat.is_empty() {
        let _ = writeln!(
            md,
            "\n### Flat out\n\nThe pump as fast as it goes; where a mode loses frames its core is saturated (or its rings overflowed in bursts), and the socket path's figure then includes the work done on frames dropped at its sockets.\n\n{flat}"
        );
    }
    if !closed.is_empty() {
        let _ = writeln!(
            md,
            "\n### In the closed loop\n\nThe load of the section \"Closed loop\" with N allocations: the echoes on both far ends send every relayed datagram back, so the relay runs flat out in both directions and its core stays busy at every N; the pump (the offered rate) only fills the loop, and \"delivered\" counts both directions (loss does not apply). The socket server had xturn's XDP_PASS program on both relay veths, as there.\n\n{closed}"
        );
    }
    md
}

/// One table of the scale sweep (results group `group`), with its verdicts.
fn scale_table(res: &Results, group: &str, disturbed: &BTreeMap<String, u64>) -> String {
    let mut md = String::new();
    let Some(runs) = res.get(group) else {
        return md;
    };
    // (mode, allocations) -> report
    let mut by: BTreeMap<(usize, usize), (&str, &XdpRelayLoadReport)> = BTreeMap::new();
    let modes = [
        ("sockets", "xturn on sockets"),
        ("afxdp", "xturn-afxdp (AF_XDP forwarder)"),
        ("inkernel", "xturn-inkernel (in-kernel relay)"),
    ];
    for (test, r) in runs {
        let RunResult::XdpRelayLoad(l) = r else {
            continue;
        };
        let Some((mode, n)) = test.rsplit_once('-') else {
            continue;
        };
        let (Some(m), Ok(n)) = (modes.iter().position(|(k, _)| *k == mode), n.parse()) else {
            continue;
        };
        by.insert((m, n), (test.as_str(), l.as_ref()));
    }
    if by.is_empty() {
        return md;
    }
    let _ = writeln!(
        md,
        "| mode | allocations | offered rate | sent frames/s | delivered /s | loss | relay core busy | relay threads' CPU ns per delivered frame | vs the fewest allocations |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for (m, (_, label)) in modes.iter().enumerate() {
        let rows: Vec<(usize, &str, &XdpRelayLoadReport)> = by
            .iter()
            .filter(|((mm, _), _)| *mm == m)
            .map(|((_, n), (t, l))| (*n, *t, *l))
            .collect();
        let base = rows.first().and_then(|(_, _, l)| attributed_ns(l));
        for (n, test, l) in &rows {
            let ns = attributed_ns(l);
            let growth = ns.zip(base).map(|(a, b)| a / b.max(1e-9));
            let rate = l.traffic.params.rate;
            let _ = writeln!(
                md,
                "| {label}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if disturbed.contains_key(&format!("{group}-{test}")) {
                    " ⚠"
                } else {
                    ""
                },
                f0(*n as f64),
                if rate == 0 {
                    "flat out".to_string()
                } else {
                    f0(rate as f64)
                },
                f0(l.traffic.sent_pps),
                f0(l.delivered_pps),
                // In a closed loop more is delivered than sent: loss does not apply.
                cell(l.traffic.loss.filter(|_| l.loop_budget.is_none()), pct),
                cell(l.traffic.cpu.as_ref().map(|c| c.busy), pct),
                cell(ns, f0),
                growth.map_or("–".into(), |g| format!("{g:.2}×")),
            );
        }
        if let (Some((n0, _, _)), Some((n1, _, l1))) = (rows.first(), rows.last()) {
            if n1 > n0 {
                let g = attributed_ns(l1).zip(base).map(|(a, b)| a / b.max(1e-9));
                verdicts.push(format!(
                    "{label}: {} at {} allocations vs {} — {}",
                    g.map_or("–".into(), |g| format!("{g:.2}×")),
                    f0(*n1 as f64),
                    f0(*n0 as f64),
                    verdict(g.is_some_and(|g| g <= SCALE_TARGET))
                ));
            }
        }
    }
    if !verdicts.is_empty() {
        let _ = writeln!(
            md,
            "\n**Cost per packet, most vs fewest allocations:** {}.",
            verdicts.join("; ")
        );
    }
    md
}
