//! The price of defaults: xturn's AF_XDP path on an untuned topology.

use super::*;

/// "The price of defaults": xturn-afxdp's TURN data loads in the tuned lab beside the same
/// loads in the topology left at veth defaults, with the share of each run the AF_XDP
/// path carried (from the counters: redirected by the program, relayed by the forwarder).
pub fn defaults_section(res: &Results, disturbed: &BTreeMap<String, u64>) -> String {
    let mut md = String::new();
    let Some(defaults) = res.get(XTURN_AFXDP_DEFAULTS) else {
        return md;
    };
    let _ = writeln!(
        md,
        "\n## The price of defaults: xturn-afxdp with veth defaults\n"
    );
    let _ = writeln!(
        md,
        "The same server and loads as the xturn-afxdp column, in the same run, in a second topology left as users have it: veths at their defaults (TX checksum offload on, so frames from the generator's and sink's sockets carry checksums left to offload, which the forwarder completes; GRO off; no XDP program on the client's and peer's veths, so Binding requests are answered by the socket path), IP forwarding on in the relay namespace. Without GRO or an XDP program the outer veths have no NAPI instance: what the relay sends is received in the relay core's own context there, so the relay core also pays for the receiving end. \"AF_XDP share\" is the forwarder's relayed frames over the datagrams the sink received (twice the round trips, for echo).\n"
    );
    let _ = writeln!(
        md,
        "| metric | tuned lab | veth defaults | defaults / lab |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let mut tests: Vec<(&String, &RunResult)> = defaults.iter().collect();
    tests.sort_by_key(|(n, r)| test_order(n, Some(r)));
    for (t, r) in tests {
        let RunResult::Traffic(d) = r else {
            continue;
        };
        let lab = traffic(res, XTURN_AFXDP, t);
        let mark = |s: &str| {
            if disturbed.contains_key(&format!("{s}-{t}")) {
                " ⚠"
            } else {
                ""
            }
        };
        let marks = [mark(XTURN_AFXDP), mark(XTURN_AFXDP_DEFAULTS)];
        let mut rows = traffic_rows(t, &[lab, Some(d)]);
        let share = |key: &str| -> Option<f64> {
            let c = afxdp_counters(res, key)?;
            let relayed = c.in_place();
            let r: &TrafficReport = if key.starts_with("defaults-") {
                d
            } else {
                lab?
            };
            // An echo round trip is relayed twice.
            let per = if r.mode == "echo" { 2.0 } else { 1.0 };
            let received = r.received as f64 * per;
            (received > 0.0).then(|| relayed as f64 / received)
        };
        rows.push(Row {
            label: format!("{t}: AF_XDP share of the datagrams received"),
            values: vec![share(t), share(&format!("defaults-{t}"))],
            fmt: pct,
            higher_better: true,
        });
        for row in rows {
            let cells: Vec<String> = row
                .values
                .iter()
                .zip(marks)
                .map(|(v, m)| v.map_or("–".into(), |v| format!("{}{m}", (row.fmt)(v))))
                .collect();
            let _ = writeln!(
                md,
                "| {} {} | {} | {} | {} |",
                row.label,
                if row.higher_better { "↑" } else { "↓" },
                cells[0],
                cells[1],
                ratio(row.values[1], row.values[0])
            );
        }
    }
    md
}

pub(super) fn traffic<'a>(res: &'a Results, server: &str, test: &str) -> Option<&'a TrafficReport> {
    match res.get(server)?.get(test)? {
        RunResult::Traffic(t) => Some(t),
        _ => None,
    }
}

pub(super) fn xdp_load<'a>(res: &'a Results, test: &str) -> Option<&'a XdpLoadReport> {
    match res.get(XDP)?.get(test)? {
        RunResult::XdpLoad(l) => Some(l),
        _ => None,
    }
}

pub(super) fn cell(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}
