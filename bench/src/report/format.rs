//! Number formats and the table rows the sections share.

use super::*;

/// A metric row: label, one value per server, and whether higher is better.
pub(super) struct Row {
    pub(super) label: String,
    pub(super) values: Vec<Option<f64>>,
    pub(super) fmt: fn(f64) -> String,
    pub(super) higher_better: bool,
}

pub(super) fn f0(v: f64) -> String {
    let s = format!("{:.0}", v);
    // Thousands separators for readability.
    let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}
pub(super) fn f1(v: f64) -> String {
    format!("{v:.1}")
}
pub(super) fn f2(v: f64) -> String {
    format!("{v:.2}")
}
pub(super) fn pct(v: f64) -> String {
    fmt_pct(Some(v))
}

/// Ratio cell xturn/coturn.
pub fn ratio(xturn: Option<f64>, coturn: Option<f64>) -> String {
    match (xturn, coturn) {
        (Some(x), Some(c)) if c > 0.0 => format!("{:.2}×", x / c),
        (Some(x), Some(c)) if c == 0.0 && x == 0.0 => "=".into(),
        _ => "–".into(),
    }
}

/// Mpps with two decimals, for the XDP section.
pub(super) fn mpps(v: f64) -> String {
    format!("{:.2} Mpps", v / 1e6)
}

pub(super) fn traffic_rows(name: &str, per: &[Option<&TrafficReport>]) -> Vec<Row> {
    let get = |f: &dyn Fn(&TrafficReport) -> Option<f64>| -> Vec<Option<f64>> {
        per.iter().map(|r| r.and_then(f)).collect()
    };
    let mode = per
        .iter()
        .flatten()
        .next()
        .map(|r| r.mode.clone())
        .unwrap_or_default();
    let rate = per
        .iter()
        .flatten()
        .next()
        .map(|r| r.params.rate)
        .unwrap_or(0);
    let rates: Vec<u64> = per.iter().flatten().map(|r| r.params.rate).collect();
    let same_rate = rates.windows(2).all(|w| w[0] == w[1]);
    let offered = if !same_rate {
        "offered rate per column above".to_string()
    } else if rate == 0 {
        "flat out".to_string()
    } else {
        format!("{} pps offered", f0(rate as f64))
    };
    let mut rows = Vec::new();
    let mut row = |label: String, values, fmt: fn(f64) -> String, hb| {
        rows.push(Row {
            label,
            values,
            fmt,
            higher_better: hb,
        })
    };
    if !same_rate {
        row(
            format!("{name}: offered pps"),
            get(&|r| Some(r.params.rate as f64)),
            f0,
            true,
        );
    }
    let cpu_busy = get(&|r| r.cpu.as_ref().map(|c| c.busy));
    let cpu_pp = get(&|r| r.cpu.as_ref().and_then(|c| c.us_per_packet));
    let cpu_attr = get(&|r| r.cpu.as_ref().and_then(|c| c.attributed_us_per_packet));
    match mode.as_str() {
        "stun" => {
            row(
                format!("{name}: Binding responses/s ({offered})"),
                get(&|r| Some(r.received_pps)),
                f0,
                true,
            );
            row(
                format!("{name}: requests sent/s (the generator's rate)"),
                get(&|r| Some(r.sent_pps)),
                f0,
                true,
            );
            row(format!("{name}: unanswered"), get(&|r| r.loss), pct, false);
            row(
                format!("{name}: invalid responses"),
                get(&|r| Some(r.invalid as f64)),
                f0,
                false,
            );
            row(format!("{name}: relay core busy"), cpu_busy, pct, false);
            row(
                format!("{name}: relay CPU µs per response"),
                cpu_pp,
                f2,
                false,
            );
            row(
                format!("{name}: relay threads' CPU µs per response (server + its NAPI threads)"),
                cpu_attr,
                f2,
                false,
            );
        }
        "relay" => {
            row(
                format!("{name}: sent pps ({offered})"),
                get(&|r| Some(r.sent_pps)),
                f0,
                true,
            );
            row(
                format!("{name}: received at peer pps"),
                get(&|r| Some(r.received_pps)),
                f0,
                true,
            );
            row(
                format!("{name}: loss end to end"),
                get(&|r| r.loss),
                pct,
                false,
            );
            row(
                format!("{name}: loss at or before the relay"),
                get(&|r| r.relay_loss),
                pct,
                false,
            );
            row(
                format!("{name}: of which dropped at full relay sockets"),
                get(&|r| r.relay_rcvbuf_drops.map(|d| d as f64)),
                f0,
                false,
            );
            row(
                format!("{name}: of which dropped at full sink sockets"),
                get(&|r| r.sink_rcvbuf_drops.map(|d| d as f64)),
                f0,
                false,
            );
            row(
                format!(
                    "{name}: dropped in veth rings towards the relay (relay core's NAPI behind)"
                ),
                get(&|r| r.client_if_drops.map(|d| d as f64)),
                f0,
                false,
            );
            row(
                format!("{name}: dropped leaving the relay (peer side's NAPI behind)"),
                get(&|r| r.relay_if_drops.map(|d| d as f64)),
                f0,
                false,
            );
            row(
                format!("{name}: payload Mbit/s at peer"),
                get(&|r| r.payload_mbps),
                f1,
                true,
            );
            row(format!("{name}: relay core busy"), cpu_busy, pct, false);
            row(
                format!("{name}: relay CPU µs per relayed packet"),
                cpu_pp,
                f2,
                false,
            );
            row(
                format!(
                    "{name}: relay threads' CPU µs per relayed packet (server + its NAPI threads)"
                ),
                cpu_attr,
                f2,
                false,
            );
        }
        _ => {
            row(
                format!("{name}: round trips/s ({offered})"),
                get(&|r| Some(r.received_pps)),
                f0,
                true,
            );
            row(
                format!("{name}: round-trip loss"),
                get(&|r| r.loss),
                pct,
                false,
            );
            for (lbl, f) in [
                (
                    "p50",
                    (|l: &crate::stats::LatencySummary| l.p50_us)
                        as fn(&crate::stats::LatencySummary) -> f64,
                ),
                ("p99", |l| l.p99_us),
                ("p99.9", |l| l.p999_us),
                ("max", |l| l.max_us),
            ] {
                row(
                    format!("{name}: RTT {lbl} µs"),
                    get(&|r| r.latency.as_ref().map(f)),
                    f1,
                    false,
                );
            }
            row(format!("{name}: relay core busy"), cpu_busy, pct, false);
            row(
                format!("{name}: relay CPU µs per round trip"),
                cpu_pp,
                f2,
                false,
            );
            row(
                format!("{name}: relay threads' CPU µs per round trip (server + its NAPI threads)"),
                cpu_attr,
                f2,
                false,
            );
        }
    }
    rows
}

pub(super) fn churn_rows(name: &str, per: &[Option<&ChurnReport>]) -> Vec<Row> {
    let get = |f: &dyn Fn(&ChurnReport) -> Option<f64>| -> Vec<Option<f64>> {
        per.iter().map(|r| r.and_then(f)).collect()
    };
    vec![
        Row {
            label: format!("{name}: allocate/refresh/delete cycles/s"),
            values: get(&|r| Some(r.cycles_per_s)),
            fmt: f0,
            higher_better: true,
        },
        Row {
            label: format!("{name}: errors + timeouts"),
            values: get(&|r| Some(r.errors.values().sum::<u64>() as f64)),
            fmt: f0,
            higher_better: false,
        },
        Row {
            label: format!("{name}: 437 to Allocate (cycle moved to a new port)"),
            values: get(&|r| Some(r.new_tuples as f64)),
            fmt: f0,
            higher_better: false,
        },
        Row {
            label: format!("{name}: Allocate p99 µs"),
            values: get(&|r| r.allocate_latency.as_ref().map(|l| l.p99_us)),
            fmt: f1,
            higher_better: false,
        },
        Row {
            label: format!("{name}: relay core busy"),
            values: get(&|r| r.cpu.as_ref().map(|c| c.busy)),
            fmt: pct,
            higher_better: false,
        },
        Row {
            label: format!("{name}: relay CPU µs per cycle"),
            values: get(&|r| r.cpu.as_ref().and_then(|c| c.us_per_packet)),
            fmt: f1,
            higher_better: false,
        },
        Row {
            label: format!("{name}: relay threads' CPU µs per cycle (server + its NAPI threads)"),
            values: get(&|r| r.cpu.as_ref().and_then(|c| c.attributed_us_per_packet)),
            fmt: f1,
            higher_better: false,
        },
    ]
}

pub(super) fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{nproc} CPUs ({model}), Linux {kernel}")
}
