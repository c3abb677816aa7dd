//! CPU lists, thread pinning and "relay core busy" from /proc/stat deltas (NETLAB.md,
//! "Measuring CPU fairly on veth": the relay's cores include its NAPI threads and
//! softirqs, which never show in the server process's own CPU time).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Parse a CPU list such as `0`, `1,3` or `0-3,6`.
pub fn parse_list(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().with_context(|| format!("bad CPU {a:?}"))?;
                let b: usize = b.trim().parse().with_context(|| format!("bad CPU {b:?}"))?;
                if a > b || b - a > 4096 {
                    bail!("bad CPU range {part:?}");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(|| format!("bad CPU {part:?}"))?),
        }
    }
    if out.is_empty() {
        bail!("empty CPU list {s:?}");
    }
    Ok(out)
}

/// Pin the calling thread to `cpus[index % len]` (no-op for an empty list).
pub fn pin(cpus: &[usize], index: usize) -> Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let id = cpus[index % cpus.len()];
    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
        bail!("cannot pin a thread to CPU {id}");
    }
    Ok(())
}

/// Jiffies of one CPU from a `cpuN ...` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// user + nice + system + irq + softirq + steal
    pub busy: u64,
    /// busy + idle + iowait
    pub total: u64,
}

/// Parse /proc/stat text and return the ticks of the listed CPUs (summed).
pub fn parse_proc_stat(text: &str, cpus: &[usize]) -> Result<CpuTicks> {
    let mut sum = CpuTicks::default();
    let mut found = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let Some(Ok(n)) = f.next().map(str::parse::<usize>) else {
            continue; // the aggregate "cpu " line
        };
        if !cpus.contains(&n) {
            continue;
        }
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 5 {
            bail!("short /proc/stat line {line:?}");
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        sum.busy += busy;
        sum.total += busy + at(3) + at(4);
        found += 1;
    }
    if found != cpus.len() {
        bail!("CPUs {cpus:?} not all found in /proc/stat");
    }
    Ok(sum)
}

/// Ticks of the given CPUs now.
pub fn sample(cpus: &[usize]) -> Result<CpuTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_proc_stat(&text, cpus)
}

/// Clock ticks per second of /proc/stat (USER_HZ).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time (ns) the threads of `pid` have run so far: the sum over
/// /proc/PID/task/*/schedstat (first field, the scheduler's exact runtime).
pub fn runtime_ns(pid: u32) -> Option<u64> {
    let mut sum = 0u64;
    let mut any = false;
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(e) = e else { continue };
        let Ok(t) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        if let Some(v) = t
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            sum += v;
            any = true;
        }
    }
    any.then_some(sum)
}

/// Runtime of a set of processes/threads (None if any of them is gone).
pub fn runtime_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| runtime_ns(*p)).sum()
}

/// The CPU cost of a measured interval on the relay's cores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuReport {
    /// The relay's CPUs that were sampled.
    pub cpus: Vec<usize>,
    /// 1 - idle share of those CPUs over the interval (0..1, averaged over the CPUs).
    pub busy: f64,
    /// Busy CPU-seconds over the interval.
    pub busy_seconds: f64,
    /// Packets the cost is divided by, and what they are.
    pub packets: u64,
    pub packet_basis: String,
    /// Busy CPU time per packet in microseconds (None if no packets).
    pub us_per_packet: Option<f64>,
    /// CPU-seconds run by the relay's own threads (the server's and its NAPI threads',
    /// from schedstat) over the interval: unlike `busy`, blind to other processes that
    /// happen to run on the relay's cores, and to kernel work outside those threads.
    pub attributed_seconds: Option<f64>,
    pub attributed_us_per_packet: Option<f64>,
}

impl CpuReport {
    pub fn new(
        cpus: &[usize],
        a: CpuTicks,
        b: CpuTicks,
        hz: u64,
        packets: u64,
        basis: &str,
    ) -> Self {
        let busy_t = b.busy.saturating_sub(a.busy);
        let total_t = b.total.saturating_sub(a.total);
        let busy = if total_t == 0 {
            0.0
        } else {
            busy_t as f64 / total_t as f64
        };
        let busy_seconds = busy_t as f64 / hz.max(1) as f64;
        CpuReport {
            cpus: cpus.to_vec(),
            busy,
            busy_seconds,
            packets,
            packet_basis: basis.to_string(),
            us_per_packet: (packets > 0).then(|| busy_seconds * 1e6 / packets as f64),
            attributed_seconds: None,
            attributed_us_per_packet: None,
        }
    }

    /// Add the relay threads' own runtime over the interval (ns).
    pub fn with_attributed(mut self, runtime_ns: Option<u64>) -> Self {
        if let Some(ns) = runtime_ns {
            let secs = ns as f64 / 1e9;
            self.attributed_seconds = Some(secs);
            self.attributed_us_per_packet =
                (self.packets > 0).then(|| secs * 1e6 / self.packets as f64);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 50 1000 10 0 5 0 0 0
cpu0 60 0 30 400 5 0 3 0 0 0
cpu1 40 0 20 600 5 0 2 0 0 0
intr 1 2 3
ctxt 5
";

    #[test]
    fn lists() {
        assert_eq!(parse_list("0").unwrap(), vec![0]);
        assert_eq!(parse_list("1,3").unwrap(), vec![1, 3]);
        assert_eq!(parse_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_list("").is_err());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("x").is_err());
    }

    #[test]
    fn proc_stat_ticks() {
        let t = parse_proc_stat(STAT, &[1]).unwrap();
        assert_eq!(
            t,
            CpuTicks {
                busy: 62,
                total: 667
            }
        );
        let both = parse_proc_stat(STAT, &[0, 1]).unwrap();
        assert_eq!(both.busy, 93 + 62);
        assert!(parse_proc_stat(STAT, &[2]).is_err());
    }

    #[test]
    fn report_arithmetic() {
        let a = CpuTicks {
            busy: 100,
            total: 1000,
        };
        // 5 s at 100 Hz on one CPU: 500 ticks, of which 250 busy.
        let b = CpuTicks {
            busy: 350,
            total: 1500,
        };
        let r = CpuReport::new(&[1], a, b, 100, 100_000, "received at peer");
        assert!((r.busy - 0.5).abs() < 1e-12);
        assert!((r.busy_seconds - 2.5).abs() < 1e-12);
        // 2.5 CPU-seconds over 100,000 packets = 25 µs per packet.
        assert!((r.us_per_packet.unwrap() - 25.0).abs() < 1e-9);
        assert_eq!(CpuReport::new(&[1], a, b, 100, 0, "x").us_per_packet, None);
    }

    #[test]
    fn attributed_runtime() {
        let r = CpuReport::new(
            &[1],
            CpuTicks::default(),
            CpuTicks::default(),
            100,
            1000,
            "x",
        )
        .with_attributed(Some(2_000_000_000));
        assert_eq!(r.attributed_seconds, Some(2.0));
        assert!((r.attributed_us_per_packet.unwrap() - 2000.0).abs() < 1e-9);
        // A busy single-threaded child: the test process's own thread sum can shrink
        // between two reads when another test's thread exits.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let a = runtime_ns(pid).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let b = runtime_ns(pid).unwrap();
        assert!(runtime_of(&[pid, u32::MAX]).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(b > a, "{b} > {a}");
    }

    #[test]
    fn live_proc_stat_parses() {
        let t = sample(&[0]).unwrap();
        assert!(t.total >= t.busy);
    }
}
