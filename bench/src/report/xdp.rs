//! The XDP program's Binding responder: loads, costs, and who answered.

use super::*;

/// The XDP section: the socket loads' limit, the kernel-bypass capacity of the responder
/// against a bare XDP_TX reflector, and the programs' micro-benchmark. Every figure and
/// every verdict is computed from the result files.
pub fn xdp_section(res: &Results, disturbed: &BTreeMap<String, u64>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n## xturn-xdp: the XDP Binding responder\n");
    let _ = writeln!(
        md,
        "`xturn --xdp <relay veth>` answers Binding requests in the relay veth's driver (XDP_TX); its sockets never see them. The client's veth holds xturn's XDP_PASS program (`xturn-bench xdp-pass`), without which a veth drops frames sent into it with XDP_TX. Relay, echo and churn have no xturn-xdp figures: TURN data through the AF_XDP forwarder is the xturn-afxdp column and section."
    );
    let ms = |t: &TrafficReport| t.cpu.as_ref().and_then(|c| c.attributed_us_per_packet);
    let warn = |name: &str| {
        if disturbed.contains_key(name) {
            " ⚠"
        } else {
            ""
        }
    };

    // 1. The socket generator against the responder.
    if let Some(x) = traffic(res, XTURN_XDP, "stun") {
        let _ = writeln!(md, "\n### With the socket generator\n");
        let busy = x.cpu.as_ref().map(|c| c.busy);
        let (entering, leaving) = (x.client_if_drops, x.relay_if_drops);
        let mut text = format!(
            "Flat out, the socket generator sent {}/s Binding requests and xturn-xdp answered {}/s ({} unanswered: {} requests dropped entering the relay veth, {} answers dropped leaving it because the client's core, which also runs the generator, did not take them in; {} invalid answers) while the relay core was {} busy ({} µs of relay CPU per answer)",
            f0(x.sent_pps),
            f0(x.received_pps),
            fmt_pct(x.loss),
            cell(entering.map(|v| v as f64), f0),
            cell(leaving.map(|v| v as f64), f0),
            x.invalid,
            cell(busy, pct),
            cell(ms(x), f2),
        );
        match (busy, entering, leaving) {
            (Some(b), Some(e), Some(l)) if b < 0.9 && l >= e => text.push_str(
                ". The generator's side, not the responder, is the limit here; the responder's capacity is measured below with a kernel-bypass load.",
            ),
            _ => text.push('.'),
        }
        let _ = writeln!(md, "{text}{}", warn("xturn-xdp-stun"));
        let fixed: Vec<String> = SERVERS
            .iter()
            .filter_map(|s| {
                let t = traffic(res, s, "stun-20k")?;
                Some(format!(
                    "{s}{} {} µs ({} µs from /proc/stat, relay core {} busy)",
                    warn(&format!("{s}-stun-20k")),
                    cell(ms(t), f2),
                    cell(t.cpu.as_ref().and_then(|c| c.us_per_packet), f2),
                    cell(t.cpu.as_ref().map(|c| c.busy), pct)
                ))
            })
            .collect();
        if !fixed.is_empty() {
            let _ = writeln!(
                md,
                "\nAt a fixed 20,000 requests/s, relay CPU per answer (the relay's threads, server and NAPI, from schedstat; /proc/stat, sampled by the tick, misses much of such short bursts of work on this tickless VM): {}.{}",
                fixed.join("; "),
                if fixed.iter().any(|f| f.contains('⚠')) {
                    " ⚠: other processes used the CPU during that load (see the note under the table); its figures are not comparable."
                } else {
                    ""
                }
            );
        }
        // How xturn-xdp's cost per answer moves with the rate.
        let mut by_rate: Vec<(u64, f64)> = res
            .get(XTURN_XDP)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|r| match r {
                RunResult::Traffic(t) if t.mode == "stun" => Some((t.params.rate, ms(t)?)),
                _ => None,
            })
            .collect();
        by_rate.sort_by_key(|(rate, _)| if *rate == 0 { u64::MAX } else { *rate });
        if by_rate.len() > 1 {
            let v: Vec<String> = by_rate
                .iter()
                .map(|(rate, us)| {
                    let at = if *rate == 0 {
                        "flat out".to_string()
                    } else {
                        format!("at {}/s", f0(*rate as f64))
                    };
                    format!("{us:.2} µs {at}")
                })
                .collect();
            let _ = writeln!(
                md,
                "xturn-xdp's relay CPU per answer with the socket generator: {}. With the XDP path that is the relay veth's NAPI thread (the answers never reach xturn's sockets), and at low rates that thread is woken for nearly every request, so the wake-ups, not the program, dominate; on veth the thread also turns each socket-sent frame (an skb) into an XDP frame before the program runs, which a NIC driver does not have to do. The kernel-bypass load below sends XDP frames directly.",
                v.join(", ")
            );
        }
    }

    // 2. Capacity: live-frame load against the responder and the bare reflector.
    let (resp, refl) = (xdp_load(res, "responder"), xdp_load(res, "reflector"));
    if resp.is_some() || refl.is_some() {
        let any = resp.or(refl).expect("one is there");
        let _ = writeln!(md, "\n### Capacity on one relay core: kernel-bypass load\n");
        let _ = writeln!(
            md,
            "`xturn-bench xdp-load` runs in the client namespace: BPF_PROG_RUN in live-frame mode writes one Binding request (a {}-byte frame: the socket generator's request, with FINGERPRINT and valid checksums) into every frame and XDP_TX's it out of the client's veth, {} frames per run in batches of {}; a drop program on that veth takes what comes back. On the relay side runs either `xturn --xdp` (the responder) or `xturn-bench xdp-reflect` (a bare XDP_TX reflector that swaps the Ethernet addresses, like `xdp-bench tx`). The relay's XDP work runs in the relay veth's NAPI thread, pinned to the relay core; the generator and the client veth's NAPI thread share the other core. \"Handled\" is the relay veth's receive counter (every frame it receives goes through its XDP program); frames are not checked one by one (the micro-benchmark below checks the answer's bytes), but xturn's own counter is compared below. Flat out only: each live run costs tens of milliseconds of set-up, so runs cannot be paced.\n",
            any.traffic.params.size,
            f0(any.traffic.sent as f64 / any.runs.max(1) as f64),
            any.batch
        );
        let _ = writeln!(
            md,
            "| relay program | offered frames/s | handled by the relay /s | dropped entering the relay (relay behind) | answers dropped leaving (client core behind) | back at the client /s | relay core busy | relay CPU ns per request | relay threads' CPU ns per request |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, l) in [
            ("responder (xturn --xdp)", resp),
            ("bare XDP_TX reflector", refl),
        ] {
            let Some(l) = l else { continue };
            let t = &l.traffic;
            let c = t.cpu.as_ref();
            let key = if name.starts_with("responder") {
                "xdp-responder"
            } else {
                "xdp-reflector"
            };
            let _ = writeln!(
                md,
                "| {name}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                warn(key),
                f0(t.sent_pps),
                cell(l.relay_handled_pps, f0),
                cell(l.relay_rx_dropped.map(|v| v as f64), f0),
                cell(l.relay_tx_dropped.map(|v| v as f64), f0),
                f0(t.received_pps),
                cell(c.map(|c| c.busy), pct),
                cell(c.and_then(|c| c.us_per_packet).map(|u| u * 1000.0), f0),
                cell(
                    c.and_then(|c| c.attributed_us_per_packet)
                        .map(|u| u * 1000.0),
                    f0
                ),
            );
        }
        let ns = |l: &XdpLoadReport| {
            l.traffic
                .cpu
                .as_ref()
                .and_then(|c| c.attributed_us_per_packet)
                .map(|u| u * 1000.0)
        };
        if let Some(b) = resp.and_then(|p| p.traffic.cpu.as_ref()).map(|c| c.busy) {
            if b >= 0.95 {
                let _ = writeln!(
                    md,
                    "\nWith the responder the relay core was {} busy: saturated, and frames were dropped entering it.",
                    pct(b)
                );
            }
        }
        if let (Some(p), Some(q)) = (resp, refl) {
            let within = |ok: bool| if ok { "within 2×" } else { "not within 2×" };
            if let (Some(a), Some(b)) = (p.relay_handled_pps, q.relay_handled_pps) {
                let r = if b > 0.0 { a / b } else { 0.0 };
                let _ = writeln!(
                    md,
                    "\nThe responder handled {} on one core: {:.2}× the bare reflector's {} under the same conditions, {} of the reflector by this measure (the issue's target).",
                    mpps(a),
                    r,
                    mpps(b),
                    within(r >= 0.5)
                );
            }
            if let (Some(a), Some(b)) = (ns(p), ns(q)) {
                let r = a / b.max(1e-9);
                let _ = writeln!(
                    md,
                    "Per request handled, the relay's threads spent {a:.0} ns with the responder and {b:.0} ns with the reflector: {r:.1}×, {} by this measure, which does not depend on how busy the relay core was.",
                    within(r <= 2.0)
                );
            }
        }
        if let Some(p) = resp {
            if let Some(a) = p.relay_handled_pps {
                let vs: Vec<String> = ["xturn", "coturn", super::schema::COTURN_UPSTREAM]
                    .iter()
                    .filter_map(|s| {
                        let t = traffic(res, s, "stun")?;
                        (t.received_pps > 0.0).then(|| {
                            format!(
                                "{:.1}× {s} on sockets ({}/s flat out)",
                                a / t.received_pps,
                                f0(t.received_pps)
                            )
                        })
                    })
                    .collect();
                if !vs.is_empty() {
                    let _ = writeln!(
                        md,
                        "Against the socket paths' Binding rates of this run, on the same core: {}.",
                        vs.join(", ")
                    );
                }
            }
            let counter = |test: &str| match res.get(XDP).and_then(|m| m.get(test)) {
                Some(RunResult::Stats(c)) => Some(c.get(Counter::TxBindingIpv4)),
                _ => None,
            };
            if let (Some(b), Some(e), Some(h)) = (
                counter("stats-before"),
                counter("stats-after"),
                p.relay_handled,
            ) {
                let _ = writeln!(
                    md,
                    "Cross-check: `xturn stats --json` before and after the responder load shows tx_binding_ipv4 +{} (requests answered with XDP_TX), against {} frames handled at the relay veth.",
                    f0(e.saturating_sub(b) as f64),
                    f0(h as f64)
                );
            }
        }
        let limits: Vec<String> = [("responder", resp), ("reflector", refl)]
            .iter()
            .filter_map(|(n, l)| {
                let l = (*l)?;
                let busy = l.traffic.cpu.as_ref()?.busy;
                (l.relay_rx_dropped? > 0 && busy < 0.95).then(|| format!("{n} {}", pct(busy)))
            })
            .collect();
        if !limits.is_empty() {
            let _ = writeln!(
                md,
                "Frames were dropped entering the relay veth although the relay core was not fully busy ({}): its ring holds 256 frames and the generator fills it a batch at a time, faster than the relay's NAPI thread, which has to be woken for each burst, drains it. The handled rates are what the relay core kept up with in this set-up, not a saturated core's ceiling.",
                limits.join(", ")
            );
        }
    }

    // 3. The programs alone.
    if let Some(RunResult::XdpCost(c)) = res.get(XDP).and_then(|m| m.get("cost")) {
        let _ = writeln!(md, "\n### The programs alone: micro-benchmark\n");
        let _ = writeln!(
            md,
            "{} ({}-byte request, {} runs per program, interleaved, on CPU {:?}).\n",
            c.method,
            c.frame_len,
            c.programs.first().map(|p| p.runs).unwrap_or(0),
            c.cpus
        );
        let _ = writeln!(
            md,
            "| program | what | action | mean ns | p50 ns | p99 ns | min ns |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|");
        for p in &c.programs {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                p.name,
                p.what,
                p.action,
                f1(p.mean_ns),
                f1(p.p50_ns),
                f1(p.p99_ns),
                f1(p.min_ns)
            );
        }
        let mean = |n: &str| c.programs.iter().find(|p| p.name == n).map(|p| p.mean_ns);
        if let (Some(r), Some(x), Some(pass)) = (mean("responder"), mean("reflector"), mean("pass"))
        {
            let mut text = format!(
                "\nThe responder's program costs {:.0} ns more per request than the bare reflector's ({:.0} ns above the pass program's {:.0} ns, the method's floor)",
                r - x,
                r - pass,
                pass
            );
            if let Some(nofp) = mean("responder-nofp") {
                text += &format!(
                    "; FINGERPRINT (checking the request's CRC-32 and writing the answer's) accounts for {:.0} ns of it",
                    r - nofp
                );
            }
            let _ = writeln!(md, "{text}.");
        }
    }
    md
}
