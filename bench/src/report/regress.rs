//! `regress`: a before/after check for a change that should not move performance (a
//! refactoring). Runs of bench/compare.sh with the old and the new binary, taking turns on
//! the same topology, are compared figure by figure: the xturn columns of the side-by-side
//! table, the kernel-bypass capacities, and coturn's and the bare reflectors' figures,
//! which the change cannot touch and so show how much the machine alone moves them.

use super::*;
use crate::cli::RegressArgs;
use std::path::PathBuf;

/// One figure of one run: which server, which metric, its value.
struct Figure {
    server: String,
    metric: String,
    value: f64,
    fmt: fn(f64) -> String,
    higher_better: bool,
}

/// The side-by-side rows worth comparing across runs: rates and CPU per packet, latency
/// percentiles. Loss and drop counts follow from the rates and are left out.
const METRICS: &[&str] = &[
    "Binding responses/s",
    "received at peer pps",
    "relay threads' CPU µs per",
    "round trips/s",
    "RTT p50 µs",
    "RTT p99 µs",
    "allocate/refresh/delete cycles/s",
];

fn figures(res: &Results) -> Vec<Figure> {
    let mut out = Vec::new();
    for (_, rows) in side_rows(res, &side_tests(res)) {
        for r in rows {
            let metric = r.label.split_once(": ").map_or("", |(_, m)| m);
            if !METRICS.iter().any(|m| metric.starts_with(m)) {
                continue;
            }
            for (server, v) in SERVERS.iter().zip(&r.values) {
                if let Some(v) = v {
                    out.push(Figure {
                        server: server.to_string(),
                        metric: r.label.clone(),
                        value: *v,
                        fmt: r.fmt,
                        higher_better: r.higher_better,
                    });
                }
            }
        }
    }
    let mut push = |server: &str, metric: String, value: Option<f64>, fmt, higher_better| {
        if let Some(value) = value {
            out.push(Figure {
                server: server.into(),
                metric,
                value,
                fmt,
                higher_better,
            });
        }
    };
    for (kind, server) in [
        ("forwarder", XTURN_AFXDP),
        ("reflector", "bare AF_XDP reflector"),
    ] {
        if let Some(b) = bypass(res, kind) {
            let n = b.runs.len();
            push(
                server,
                format!("kernel-bypass ChannelData load: delivered pps (median of {n})"),
                Some(b.delivered),
                f0,
                true,
            );
            push(
                server,
                format!("kernel-bypass ChannelData load: relay threads' CPU ns per delivered frame (median of {n})"),
                b.ns,
                f0,
                false,
            );
        }
    }
    // The same run's yardstick divides out what the machine did to both (the reflectors
    // run no code of ours).
    if let (Some(f), Some(r)) = (bypass(res, "forwarder"), bypass(res, "reflector")) {
        push(
            XTURN_AFXDP,
            "kernel-bypass ChannelData load: delivered, over the bare AF_XDP reflector's in the same run (medians)".into(),
            (r.delivered > 0.0).then(|| f.delivered / r.delivered),
            f2,
            true,
        );
    }
    if let (Some(x), Some(r)) = (
        xdp_load(res, "responder").and_then(|l| l.relay_handled_pps),
        xdp_load(res, "reflector").and_then(|l| l.relay_handled_pps),
    ) {
        push(
            XTURN_XDP,
            "kernel-bypass Binding load: handled, over the bare XDP_TX reflector's in the same run"
                .into(),
            (r > 0.0).then(|| x / r),
            f2,
            true,
        );
    }
    for (test, server) in [
        ("responder", XTURN_XDP),
        ("reflector", "bare XDP_TX reflector"),
    ] {
        push(
            server,
            "kernel-bypass Binding load: handled pps".into(),
            xdp_load(res, test).and_then(|l| l.relay_handled_pps),
            f0,
            true,
        );
    }
    out
}

/// A directory compare.sh wrote (OUT_DIR, with `results/` in it) or its `results/`.
fn results_dir(d: &Path) -> PathBuf {
    let r = d.join("results");
    if r.is_dir() {
        r
    } else {
        d.to_path_buf()
    }
}

pub fn run_regress(a: &RegressArgs) -> Result<()> {
    if a.before.is_empty() || a.after.is_empty() {
        bail!("give at least one --before and one --after directory");
    }
    let load = |dirs: &[PathBuf]| -> Result<Vec<Vec<Figure>>> {
        dirs.iter()
            .map(|d| load_dir(&results_dir(d)).map(|r| figures(&r)))
            .collect()
    };
    let before = load(&a.before)?;
    let after = load(&a.after)?;
    let dates = |dirs: &[PathBuf]| -> Vec<String> {
        dirs.iter()
            .map(|d| {
                std::fs::read_to_string(results_dir(d).join("date.txt"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .collect()
    };
    let md = render(a, &before, &after, &dates(&a.before), &dates(&a.after));
    std::fs::write(&a.out, md).with_context(|| format!("cannot write {}", a.out.display()))
}

/// The verdict on one figure: the change moved it beyond noise only if every run after is
/// worse than every run before and the means differ by more than both the spread within
/// either side and `floor`.
fn verdict(b: &[f64], a: &[f64], higher_better: bool, floor: f64) -> (&'static str, f64, f64) {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        if mean(v) > 0.0 {
            (hi - lo) / mean(v)
        } else {
            0.0
        }
    };
    let (mb, ma) = (mean(b), mean(a));
    let noise = spread(b).max(spread(a));
    if mb <= 0.0 {
        return ("–", 0.0, noise);
    }
    let change = ma / mb;
    // Worse by this fraction of the before mean (negative: better).
    let worse = if higher_better {
        1.0 - change
    } else {
        change - 1.0
    };
    let all_worse = b
        .iter()
        .all(|x| a.iter().all(|y| if higher_better { y < x } else { y > x }));
    let all_better = b
        .iter()
        .all(|x| a.iter().all(|y| if higher_better { y > x } else { y < x }));
    let beyond = worse.abs() > noise.max(floor);
    let v = if beyond && worse > 0.0 && all_worse {
        "**worse beyond noise**"
    } else if beyond && worse < 0.0 && all_better {
        "better beyond noise"
    } else {
        "within noise"
    };
    (v, change, noise)
}

/// Noise floor: differences under 5 % are never called a change.
const FLOOR: f64 = 0.05;

fn render(
    a: &RegressArgs,
    before: &[Vec<Figure>],
    after: &[Vec<Figure>],
    before_dates: &[String],
    after_dates: &[String],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Generated by `xturn-bench regress` from {} runs of `bench/compare.sh` with the binary before and {} with the binary after, taking turns on the same topology and machine; do not edit by hand.\n",
        before.len(),
        after.len()
    );
    let _ = writeln!(
        md,
        "- Command: `{}`; each run was `OUT_DIR=DIR NO_BUILD=1 bash bench/compare.sh`, with `XTURN_BIN=` the binary built from the before commit for the before runs, taking turns (before, after, before, after)",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        md,
        "- Before: {} (runs of {})",
        a.before_label,
        before_dates.join(", ")
    );
    let _ = writeln!(
        md,
        "- After: {} (runs of {})",
        a.after_label,
        after_dates.join(", ")
    );
    let _ = writeln!(
        md,
        "- Verdict per figure: **worse beyond noise** when every run after is worse than every run before and the means differ by more than the spread (max - min over mean) within the before runs or within the after runs, and by more than {:.0} %; \"better beyond noise\" likewise; otherwise \"within noise\". coturn and the bare reflectors run the same code in every run: their rows show how much the machine alone moves a figure.\n",
        FLOOR * 100.0
    );
    let _ = writeln!(
        md,
        "| server | figure | {} | {} | after / before (means) | spread | verdict |",
        (1..=before.len())
            .map(|i| format!("before {i}"))
            .collect::<Vec<_>>()
            .join(" | "),
        (1..=after.len())
            .map(|i| format!("after {i}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        md,
        "|---|---|{}---:|---:|---|",
        "---:|".repeat(before.len() + after.len())
    );
    // Figures in the first before run's order, where every run has them.
    let find = |run: &[Figure], f: &Figure| {
        run.iter()
            .find(|g| g.server == f.server && g.metric == f.metric)
            .map(|g| g.value)
    };
    let (mut worse, mut total, mut unchanged) = (0, 0, 0);
    for f in &before[0] {
        let b: Option<Vec<f64>> = before.iter().map(|r| find(r, f)).collect();
        let x: Option<Vec<f64>> = after.iter().map(|r| find(r, f)).collect();
        let (Some(b), Some(x)) = (b, x) else {
            continue;
        };
        let (v, change, noise) = verdict(&b, &x, f.higher_better, FLOOR);
        total += 1;
        if v.contains("worse") {
            worse += 1;
            if f.server == "coturn" || f.server.starts_with("bare ") {
                unchanged += 1;
            }
        }
        let cells: Vec<String> = b.iter().chain(&x).map(|v| (f.fmt)(*v)).collect();
        let _ = writeln!(
            md,
            "| {} | {} {} | {} | {:.2}× | {:.0} % | {} |",
            f.server,
            f.metric,
            if f.higher_better { "↑" } else { "↓" },
            cells.join(" | "),
            change,
            noise * 100.0,
            v
        );
    }
    let _ = writeln!(
        md,
        "\n{worse} of {total} figures worse beyond noise; {unchanged} of them are coturn's or a bare reflector's, which ran the same code before and after (the machine's drift between runs)."
    );
    md
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    #[test]
    fn a_change_counts_only_beyond_the_spread_and_the_floor() {
        // Runs 10 % apart on either side, means 3 % apart: noise.
        assert_eq!(
            verdict(&[100.0, 110.0], &[99.0, 104.0], true, FLOOR).0,
            "within noise"
        );
        // Clearly lower rates after: worse.
        assert_eq!(
            verdict(&[100.0, 101.0], &[80.0, 82.0], true, FLOOR).0,
            "**worse beyond noise**"
        );
        // The same drop in a lower-is-better figure is an improvement.
        assert_eq!(
            verdict(&[100.0, 101.0], &[80.0, 82.0], false, FLOOR).0,
            "better beyond noise"
        );
        // Overlapping runs are never a change, however far apart the means.
        assert_eq!(
            verdict(&[100.0, 60.0], &[59.0, 20.0], true, FLOOR).0,
            "within noise"
        );
        // Under the floor: not a change even with no spread.
        assert_eq!(
            verdict(&[100.0, 100.0], &[97.0, 97.0], true, FLOOR).0,
            "within noise"
        );
    }
}
