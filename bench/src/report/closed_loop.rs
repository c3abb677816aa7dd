//! The closed loop (`xdp-relay-load --loop`): every relay and reflector at saturation,
//! both directions, with the targets of issues 3 and 19 judged there.

use super::*;

/// The sides of the closed loop, by the test name of their runs (`loop-inkernel-1`, ...).
const SIDES: [(&str, &str); 8] = [
    ("loop-inkernel", "in-kernel relay (xturn-inkernel)"),
    (
        "loop-inkernel1",
        "in-kernel relay, one interface for both legs (xturn-inkernel, XDP_TX both ways)",
    ),
    ("loop-xdptx", "bare XDP_TX reflector (xdp-reflect)"),
    ("loop-forwarder", "AF_XDP forwarder (xturn-afxdp)"),
    ("loop-xsk", "bare AF_XDP reflector (xsk-reflect)"),
    ("loop-sockets", "xturn on sockets"),
    ("loop-upstream", "coturn upstream"),
    ("loop-coturn", "coturn (Debian's package)"),
];

/// A relay core at least this busy (a share) counts as saturated.
const SATURATED: f64 = 0.9;

/// The relay core's busy share in a run: the larger of /proc/stat's and the relay
/// threads' exact runtime per second.
fn busy(l: &XdpRelayLoadReport) -> Option<f64> {
    let c = l.traffic.cpu.as_ref()?;
    let exact = c
        .attributed_seconds
        .map(|s| s / l.traffic.elapsed_s.max(1e-9));
    Some(exact.map_or(c.busy, |e| e.max(c.busy)))
}

/// One run's columns: relayed datagrams/s (both directions), client-to-peer /s,
/// peer-to-client /s, the pump's frames/s, dropped entering the client-side relay veth,
/// relay core busy, relay core CPU ns per datagram, relay threads' CPU ns per datagram.
fn columns(l: &XdpRelayLoadReport) -> Vec<Option<f64>> {
    let t = &l.traffic;
    let per_s = |n: u64| n as f64 / t.elapsed_s.max(1e-9);
    let back = l.delivered_back;
    vec![
        Some(l.delivered_pps),
        back.map(|b| per_s(l.delivered.saturating_sub(b))),
        back.map(per_s),
        Some(t.sent_pps),
        l.relay_rx_dropped.map(|v| v as f64),
        busy(l),
        t.cpu
            .as_ref()
            .and_then(|c| c.us_per_packet)
            .map(|u| u * 1000.0),
        attributed_ns(l),
    ]
}

/// `a` per `b`, "–" where either is missing.
fn times(a: Option<f64>, b: Option<f64>) -> String {
    a.zip(b)
        .filter(|(_, b)| *b > 0.0)
        .map_or("–".into(), |(a, b)| format!("{:.2}×", a / b))
}

/// The section: a run table per side, the medians, the ratios between every xturn mode
/// and the coturns and between each xturn data path and its bare reflector, and the
/// targets judged by rate and by CPU per datagram.
pub fn closed_loop_section(res: &Results, disturbed: &BTreeMap<String, u64>) -> String {
    let mut md = String::new();
    let sides: Vec<(&str, &str, Bypass)> = SIDES
        .iter()
        .filter_map(|(kind, name)| bypass(res, kind).map(|b| (*kind, *name, b)))
        .collect();
    if sides.is_empty() {
        return md;
    }
    let get = |kind: &str| sides.iter().find(|(k, _, _)| *k == kind).map(|(_, _, b)| b);
    let first = &sides[0].2.runs[0].1;
    let _ = writeln!(md, "\n## Closed loop: every relay at saturation\n");
    let _ = writeln!(
        md,
        "The pumped load above cannot saturate the in-kernel relay (its core stays mostly idle), so here the loop is closed: `xturn-bench xdp-echo` on the peer's veth sends every datagram relayed to the peer back to its relayed address as the peer's answer, and `xdp-relay-load --loop` holds the same echo on the client's veth, which sends every datagram relayed (or reflected) back to the client to the server again as the client's next ChannelData (Ethernet, IP and UDP source and destination swapped, TTL 64; both checksums stay right). The pump ({}/s, {} allocations with a channel each) only fills the loop and makes up for what the relay drops; the relay then runs flat out in both directions, and every datagram it relays counts (what arrives at the peer's veth plus what comes back to the client's). Each echo stops after {} frames and is detached at the end of the load. The bare reflectors take the same loop on the client's side: the XDP_TX reflector and the AF_XDP reflector send every frame back to the client's veth, whose echo returns it. The in-kernel relay also takes the loop with its peer on the client's side (a second address on the client's veth): one relay interface for both legs, so that it sends both directions with XDP_TX as the XDP_TX reflector does (the other topology's redirect to the peer-side veth costs more than a transmit on the same one); the client's echo answers for the client and the peer, and its receive counter holds both directions. The socket servers had xturn's XDP_PASS program on both relay veths during their loads (on this kernel, frames that an XDP program sends with XDP_TX into a veth without one were dropped on the peer side and, on the client side, left the client veth's transmit queue stopped after the load). {} runs of each, taking turns, a fresh server or reflector every time; medians compared. The relay core's busy share is the larger of /proc/stat's and the relay threads' runtime per second; the echoes and the pump run on the other core.\n",
        f0(first.traffic.sent_pps.round()),
        first.flows,
        first.loop_budget.map_or("–".into(), |b| b.to_string()),
        sides[0].2.runs.len(),
    );
    let _ = writeln!(
        md,
        "| relay on one core | relayed datagrams/s (both directions) | client → peer /s | peer → client /s | pumped frames/s | dropped entering the client-side relay veth | relay core busy | relay core CPU ns per datagram | relay threads' CPU ns per datagram |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let fmts: [fn(f64) -> String; 8] = [f0, f0, f0, f0, f0, pct, f0, f0];
    for (_, name, b) in &sides {
        run_rows(&mut md, disturbed, name, b, columns, &fmts);
    }
    let busy_of = |b: &Bypass| median(b.runs.iter().filter_map(|(_, l)| busy(l)).collect());
    let unsaturated: Vec<String> = sides
        .iter()
        .filter_map(|(_, name, b)| {
            busy_of(b)
                .filter(|x| *x < SATURATED)
                .map(|x| format!("{name} ({})", pct(x)))
        })
        .collect();
    if !unsaturated.is_empty() {
        let _ = writeln!(
            md,
            "\nNot saturated (relay core median busy below {}): {}. Their rate is bounded by the loop's other end (the echo and the pump on the generator's core), not by the relay core; for them the CPU per datagram is the figure to compare.",
            pct(SATURATED),
            unsaturated.join(", ")
        );
    }

    // Ratios per core: every xturn mode against each coturn, by rate and by CPU.
    let coturns: Vec<(&str, &Bypass)> = [
        ("loop-coturn", "coturn (Debian)"),
        ("loop-upstream", "coturn upstream"),
    ]
    .iter()
    .filter_map(|(k, n)| get(k).map(|b| (*n, b)))
    .collect();
    if !coturns.is_empty() {
        let _ = writeln!(
            md,
            "\n**Per core against coturn, at saturation:** the xturn mode's median relayed rate over coturn's, and coturn's median relay threads' CPU per datagram over xturn's.\n"
        );
        let mut head = "| xturn mode |".to_string();
        let mut rule = "|---|".to_string();
        for (n, _) in &coturns {
            head += &format!(" vs {n}, by rate | vs {n}, by CPU per datagram |");
            rule += "---:|---:|";
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for kind in [
            "loop-inkernel",
            "loop-inkernel1",
            "loop-forwarder",
            "loop-sockets",
        ] {
            let (Some(x), Some((_, name))) = (get(kind), SIDES.iter().find(|(k, _)| *k == kind))
            else {
                continue;
            };
            let mut row = format!("| {name} |");
            for (_, c) in &coturns {
                row += &format!(
                    " {} | {} |",
                    times(Some(x.delivered), Some(c.delivered)),
                    times(c.ns, x.ns)
                );
            }
            let _ = writeln!(md, "{row}");
        }
    }

    // The targets.
    let mut lines = Vec::new();
    let judge = |goal: f64, rate: Option<f64>, cpu: Option<f64>| {
        format!(
            "by rate {} — {}; by CPU per datagram {} — {}",
            rate.map_or("–".into(), |r| format!("{r:.2}×")),
            verdict(rate.is_some_and(|r| r >= goal)),
            cpu.map_or("–".into(), |r| format!("{r:.2}×")),
            verdict(cpu.is_some_and(|r| r >= goal)),
        )
    };
    let ratio_of = |a: &Bypass, b: &Bypass| {
        (
            (b.delivered > 0.0).then(|| a.delivered / b.delivered),
            a.ns.zip(b.ns).map(|(x, y)| y / x.max(1e-9)),
        )
    };
    // The in-kernel relay's targets, judged in each topology it ran in.
    let topologies = [
        (
            "loop-inkernel",
            "peer behind the relay's other interface: a redirect to it",
        ),
        (
            "loop-inkernel1",
            "one interface for both legs: XDP_TX, as the reflector does",
        ),
    ];
    for (kind, how) in topologies {
        if let (Some(k), Some(x)) = (get(kind), get("loop-xdptx")) {
            let (r, c) = ratio_of(k, x);
            lines.push(format!(
                "- In-kernel relay ({how}) vs the bare XDP_TX reflector (target at least {:.2}×): {}.",
                INKERNEL_VS_XDPTX_TARGET,
                judge(INKERNEL_VS_XDPTX_TARGET, r, c)
            ));
        }
    }
    for (coturn, goal, what) in [
        ("loop-coturn", INKERNEL_VS_COTURN_TARGET, "coturn (Debian)"),
        (
            "loop-upstream",
            INKERNEL_VS_UPSTREAM_TARGET,
            "coturn upstream",
        ),
    ] {
        for (kind, how) in topologies {
            if let (Some(k), Some(c)) = (get(kind), get(coturn)) {
                let (r, cpu) = ratio_of(k, c);
                lines.push(format!(
                    "- In-kernel relay ({how}) vs {what} per core (target at least {goal:.0}×): {}.",
                    judge(goal, r, cpu)
                ));
            }
        }
    }
    if let (Some(f), Some(x)) = (get("loop-forwarder"), get("loop-xsk")) {
        let (r, c) = ratio_of(f, x);
        lines.push(format!(
            "- AF_XDP forwarder vs the bare AF_XDP reflector (issue 3, target at least {:.2}×): {}.",
            AFXDP_VS_REFLECTOR_TARGET,
            judge(AFXDP_VS_REFLECTOR_TARGET, r, c)
        ));
    }
    if let (Some(f), Some(c)) = (get("loop-forwarder"), get("loop-coturn")) {
        let (r, cpu) = ratio_of(f, c);
        lines.push(format!(
            "- AF_XDP forwarder vs coturn (Debian) per core (issue 3, target at least {:.0}×): {}.",
            AFXDP_VS_COTURN_TARGET,
            judge(AFXDP_VS_COTURN_TARGET, r, cpu)
        ));
    }
    if !lines.is_empty() {
        let _ = writeln!(
            md,
            "\n**Targets at saturation** (medians of this section's runs; by CPU: the other side's relay threads' CPU per datagram over this one's):\n\n{}",
            lines.join("\n")
        );
    }
    md
}
