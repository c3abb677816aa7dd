//! A hand-written SVG of HDR latency percentile distributions: percentile on the x axis as
//! log10(1 / (1 - q)) (0 %, 90 %, 99 %, 99.9 %, ...), latency in µs on a log y axis, one
//! polyline per server. No fonts or C libraries: text is left to the SVG viewer.

use std::fmt::Write;

/// One curve: a name and (quantile, µs) points with the quantile in 0..=1.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 900.0;
const H: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 240.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e",
];

/// x position of quantile `q` in decades ("nines"); q = 1 (the maximum) is drawn at
/// `max_nines`, the right end of the series.
pub fn nines(q: f64, max_nines: f64) -> f64 {
    if q >= 1.0 {
        return max_nines;
    }
    (1.0 / (1.0 - q)).log10().min(max_nines)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Label of a decade tick on the percentile axis.
pub fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        d => format!("99.{}%", "9".repeat(d as usize - 2)),
    }
}

/// Render the chart. Series without points are listed in the legend in grey, undrawn.
pub fn render(title: &str, series: &[Series]) -> String {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let max_nines = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .filter(|p| p.0 < 1.0)
                .map(|p| nines(p.0, 12.0))
        })
        .fold(1.0f64, f64::max)
        .ceil()
        .max(1.0);
    let (lo, hi) = pts
        .iter()
        .filter(|p| p.1 > 0.0)
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (ylo, yhi) = if lo <= hi {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (0.0, 3.0)
    };
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let xp = |n: f64| LEFT + n / max_nines * pw;
    let yp = |us: f64| {
        let v = us.max(10f64.powf(ylo)).log10();
        TOP + ph - (v - ylo) / (yhi - ylo) * ph
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>
"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    // Grid and ticks.
    for d in 0..=(max_nines as u32) {
        let x = xp(d as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            percentile_label(d)
        );
    }
    let mut e = ylo as i32;
    while e <= yhi as i32 {
        let y = yp(10f64.powi(e));
        let label = if e >= 0 {
            format!("{}", 10u64.pow(e as u32))
        } else {
            format!("{}", 10f64.powi(e))
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ccc"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
        if e < yhi as i32 {
            for m in [2.0, 5.0] {
                let y = yp(m * 10f64.powi(e));
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/>"##,
                    LEFT + pw
                );
            }
        }
        e += 1;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">round-trip latency (µs, log scale)</text>"##,
        LEFT + pw / 2.0,
        H - 14.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let ly = TOP + 20.0 + i as f64 * 22.0;
        let lx = LEFT + pw + 15.0;
        if se.points.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{lx:.1}" y="{ly:.1}" fill="#999">{}</text>"##,
                esc(&se.name)
            );
            continue;
        }
        let series_max = se
            .points
            .iter()
            .filter(|p| p.0 < 1.0)
            .map(|p| nines(p.0, max_nines))
            .fold(0.0, f64::max);
        let path: Vec<String> = se
            .points
            .iter()
            .map(|&(q, us)| {
                let n = if q >= 1.0 {
                    series_max
                } else {
                    nines(q, max_nines)
                };
                format!("{:.1},{:.1}", xp(n), yp(us))
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>
<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            path.join(" "),
            ly - 4.0,
            lx + 22.0,
            ly - 4.0,
            lx + 28.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_arithmetic() {
        assert_eq!(nines(0.0, 6.0), 0.0);
        assert!((nines(0.99, 6.0) - 2.0).abs() < 1e-9);
        assert!((nines(0.999, 6.0) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0, 4.0), 4.0);
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(5), "99.999%");
    }

    #[test]
    fn renders_all_series() {
        let a = Series {
            name: "coturn <udp>".into(),
            points: vec![(0.0, 20.0), (0.9, 40.0), (0.99, 90.0), (1.0, 400.0)],
        };
        let b = Series {
            name: "xturn".into(),
            points: vec![(0.0, 15.0), (0.9, 30.0), (0.999, 70.0), (1.0, 100.0)],
        };
        let c = Series {
            name: "xturn-xdp (not built yet)".into(),
            points: vec![],
        };
        let svg = render("t", &[a, b, c]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("coturn &lt;udp&gt;"));
        assert!(svg.contains(r##"fill="#999">xturn-xdp (not built yet)</text>"##));
        assert!(svg.contains(">99.9%<"));
        // y axis covers 10 µs .. 1000 µs in decades.
        assert!(svg.contains(">10<") && svg.contains(">1000<"));
    }
}
