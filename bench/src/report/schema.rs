//! The result files' schema: what each kind of result holds, file names, loading a
//! directory, and xturn's counters read back through the server's own status schema.

use super::*;

/// One result file.
#[derive(Debug, Clone)]
pub enum RunResult {
    Traffic(TrafficReport),
    Churn(ChurnReport),
    /// `xturn-bench xdp-load`: the kernel-bypass Binding load.
    XdpLoad(Box<XdpLoadReport>),
    /// `xturn-bench xdp-cost`: the programs' micro-benchmark.
    XdpCost(XdpCostReport),
    /// `xturn stats --json`: the counters of the (first) program listed.
    Stats(XdpCounters),
    /// `xturn-bench xdp-relay-load`: the kernel-bypass ChannelData load.
    XdpRelayLoad(Box<XdpRelayLoadReport>),
    /// `xturn-bench xsk-reflect`: the bare AF_XDP reflector's own counts.
    XskReflect(Box<XskReflectReport>),
    /// What xturn-afxdp's counters (`xturn stats --json` after minus before) say about
    /// one load: which path its packets took.
    Afxdp(AfxdpCounters),
}

/// xturn's counters from `xturn stats --json` (read into the server's own schema,
/// [`StatsOutput`]): the XDP program's, and those of the AF_XDP fast path (summed over the
/// forwarder threads, and over their sockets).
#[derive(Debug, Clone, PartialEq)]
pub struct AfxdpCounters {
    /// The XDP program (the first listed).
    pub xdp: XdpCounters,
    /// The forwarder threads.
    pub forwarder: ForwarderStats,
    /// The sockets' XDP_STATISTICS.
    pub kernel: QueueStats,
    /// The ring module's per-socket counters.
    pub rings: PortCounters,
}

impl Default for AfxdpCounters {
    fn default() -> Self {
        AfxdpCounters {
            xdp: XdpCounters([0; Counter::COUNT as usize]),
            forwarder: ForwarderStats::default(),
            kernel: QueueStats::default(),
            rings: PortCounters::default(),
        }
    }
}

/// `f(a, b)` field by field of two counter structs of the status schema (every field a
/// u64 counter).
pub(super) fn fieldwise<T: Serialize + DeserializeOwned>(
    a: &T,
    b: &T,
    f: impl Fn(u64, u64) -> u64,
) -> T {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        unreachable!("counter structs serialize to objects");
    };
    let m: serde_json::Map<String, Value> = a
        .into_iter()
        .map(|(k, x)| {
            let y = b.get(&k).and_then(Value::as_u64).unwrap_or(0);
            (k, Value::from(f(x.as_u64().unwrap_or(0), y)))
        })
        .collect();
    serde_json::from_value(Value::Object(m)).expect("the same fields come back")
}

impl AfxdpCounters {
    /// From the text of `xturn stats --json` (with its "servers" list of status files).
    pub fn from_stats(text: &str) -> Result<AfxdpCounters> {
        let out: StatsOutput = serde_json::from_str(text)?;
        let prog = out
            .programs
            .first()
            .context("xturn stats output without a program")?;
        let mut c = AfxdpCounters {
            xdp: prog.counters.clone(),
            ..Default::default()
        };
        for server in &out.servers {
            for t in &server.threads {
                c.forwarder = fieldwise(&c.forwarder, &t.forwarder, |a, b| a + b);
                for p in &t.ports {
                    c.kernel = fieldwise(&c.kernel, &p.xdp_statistics, |a, b| a + b);
                    c.rings = fieldwise(&c.rings, &p.rings, |a, b| a + b);
                }
            }
        }
        Ok(c)
    }

    fn combine(&self, other: &AfxdpCounters, f: impl Fn(u64, u64) -> u64 + Copy) -> Self {
        let mut xdp = self.xdp.clone();
        for (x, y) in xdp.0.iter_mut().zip(other.xdp.0.iter()) {
            *x = f(*x, *y);
        }
        AfxdpCounters {
            xdp,
            forwarder: fieldwise(&self.forwarder, &other.forwarder, f),
            kernel: fieldwise(&self.kernel, &other.kernel, f),
            rings: fieldwise(&self.rings, &other.rings, f),
        }
    }

    /// `self - before`, counter by counter.
    pub fn since(&self, before: &AfxdpCounters) -> AfxdpCounters {
        self.combine(before, u64::saturating_sub)
    }

    /// `self + other`, counter by counter.
    pub fn plus(&self, other: &AfxdpCounters) -> AfxdpCounters {
        self.combine(other, |a, b| a + b)
    }

    /// Datagrams the XDP program steered to the AF_XDP sockets.
    pub fn steered(&self) -> u64 {
        self.xdp.get(Counter::RedirectChannel) + self.xdp.get(Counter::RedirectPeer)
    }
    /// TURN data the XDP program passed to the kernel (so to the socket path): no next
    /// hop in the FIB, or the fast path not ready for it.
    pub fn passed_data(&self) -> u64 {
        [
            Counter::PassNoNextHop,
            Counter::PassChannelUnbound,
            Counter::PassNoXskChannel,
            Counter::PassNoXskPeer,
            Counter::PassSteeringDisabled,
            Counter::PassNoMetadata,
        ]
        .iter()
        .map(|k| self.xdp.get(*k))
        .sum()
    }
    pub fn no_next_hop(&self) -> u64 {
        self.xdp.get(Counter::PassNoNextHop)
    }
    /// Relayed by rewriting the frame in place and sending it on the other veth.
    pub fn in_place(&self) -> u64 {
        self.forwarder.to_peer + self.forwarder.to_client
    }
    pub fn slow_path(&self) -> u64 {
        self.forwarder.slow_path
    }
    pub fn forwarder_drops(&self) -> u64 {
        let f = &self.forwarder;
        f.dropped_no_meta
            + f.dropped_malformed
            + f.dropped_bad_checksum
            + f.dropped_ttl
            + f.dropped_not_allowed
            + f.dropped_tx_full
    }
    /// Frames the kernel steered to a socket but dropped (its RX ring full, or no free
    /// frame in its fill ring): the forwarder never saw them.
    pub fn kernel_drops(&self) -> u64 {
        self.kernel.rx_dropped
    }
    pub fn fill_ring_empty(&self) -> u64 {
        self.kernel.rx_fill_ring_empty_descs
    }
    /// Share of the TURN data the relay handled that was relayed in place, rather than
    /// by kernel sockets (passed by the XDP program, or the forwarder's slow path).
    pub fn in_place_share(&self) -> Option<f64> {
        let all = self.in_place() + self.slow_path() + self.passed_data();
        (all > 0).then(|| self.in_place() as f64 / all as f64)
    }
}

/// Results by server, then by test name.
pub type Results = BTreeMap<String, BTreeMap<String, RunResult>>;

/// The servers compared side by side, in column order: coturn, xturn on sockets, xturn
/// with `--xdp` on the client-side veth (Binding answered by the XDP program: the STUN
/// loads only), and xturn with the AF_XDP forwarder (`--xdp` on both veths: the TURN
/// data loads only).
/// Last, coturn built from its upstream repository (`COTURN_UPSTREAM=PATH` in compare.sh),
/// when the run had one: a later column, so the others keep their places.
pub const SERVERS: [&str; 5] = ["coturn", "xturn", XTURN_XDP, XTURN_AFXDP, COTURN_UPSTREAM];
/// coturn built from its public repository (4.17: recvmmsg by default, stateless nonces, a
/// Binding fast path), the peer users would pick today; `coturn` is Debian's package.
pub const COTURN_UPSTREAM: &str = "coturn-upstream";
pub const XTURN_XDP: &str = "xturn-xdp";
pub const XTURN_AFXDP: &str = "xturn-afxdp";
/// xturn-afxdp again, in the same topology left at veth defaults (TX checksum offload on,
/// no GRO, no XDP program on the far ends): the TURN data loads only, for the section
/// "The price of defaults".
pub const XTURN_AFXDP_DEFAULTS: &str = "xturn-afxdp-defaults";
/// Prefix of the AF_XDP benchmark's own files: `afxdp-forwarder.json` and
/// `afxdp-reflector.json` (xdp-relay-load), `afxdp-xsk-reflect.json`; and of the
/// counters directory `afxdp-stats/` (`NAME.before.json`, `NAME.after.json`).
pub const AFXDP: &str = "afxdp";
/// Where the counter deltas of xturn-afxdp's loads go in [`Results`], by test name
/// (`relay-max`, ... and `forwarder` for the kernel-bypass load).
pub const AFXDP_COUNTERS: &str = "afxdp-counters";
pub const GENERATOR: &str = "reflector";
/// Prefix of the XDP benchmark's own files: `xdp-responder.json`, `xdp-reflector.json`
/// (xdp-load), `xdp-cost.json`, `xdp-stats-before.json` / `xdp-stats-after.json`.
pub const XDP: &str = "xdp";

/// Split `coturn-relay-20k.json` into ("coturn", "relay-20k"); `xturn-xdp-stun.json` into
/// ("xturn-xdp", "stun").
pub fn split_name(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".json")?;
    let (server, test) = if let Some(test) = stem.strip_prefix("xturn-xdp-") {
        (XTURN_XDP, test)
    } else if let Some(test) = stem.strip_prefix("coturn-upstream-") {
        (COTURN_UPSTREAM, test)
    } else if let Some(test) = stem.strip_prefix("xturn-afxdp-defaults-") {
        (XTURN_AFXDP_DEFAULTS, test)
    } else if let Some(test) = stem.strip_prefix("xturn-afxdp-") {
        (XTURN_AFXDP, test)
    } else {
        stem.split_once('-')?
    };
    if server.is_empty() || test.is_empty() {
        return None;
    }
    Some((server.to_string(), test.to_string()))
}

/// Parse one result file by its "mode" field (`xturn stats --json` output has none, but
/// a "programs" list); sink/reflect files are skipped (None).
pub fn parse_result(text: &str) -> Result<Option<RunResult>> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    Ok(match v.get("mode").and_then(|m| m.as_str()) {
        Some("stun" | "relay" | "echo") => Some(RunResult::Traffic(serde_json::from_value(v)?)),
        Some("churn") => Some(RunResult::Churn(serde_json::from_value(v)?)),
        Some("xdp-load") => Some(RunResult::XdpLoad(Box::new(serde_json::from_value(v)?))),
        Some("xdp-cost") => Some(RunResult::XdpCost(serde_json::from_value(v)?)),
        Some("xdp-relay-load") => Some(RunResult::XdpRelayLoad(Box::new(serde_json::from_value(
            v,
        )?))),
        Some("xsk-reflect") => Some(RunResult::XskReflect(Box::new(serde_json::from_value(v)?))),
        Some("sink" | "reflect") => None,
        None if v.get("programs").is_some() => {
            let out: StatsOutput = serde_json::from_value(v)?;
            let p = out
                .programs
                .into_iter()
                .next()
                .context("xturn stats output without a program")?;
            Some(RunResult::Stats(p.counters))
        }
        other => bail!("unknown result mode {other:?}"),
    })
}

/// What the report says about the run besides the figures.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub command: String,
    pub date: String,
    pub notes: String,
    /// The exact command lines compare.sh ran, by name (DIR/commands.txt: `NAME<TAB>CMD`).
    pub commands: Vec<(String, String)>,
}

/// compare.sh's `commands.txt`: one `NAME<TAB>COMMAND` per line.
pub fn parse_commands(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (n, c) = l.split_once('\t')?;
            Some((n.to_string(), c.to_string()))
        })
        .collect()
}

impl Meta {
    /// From the command line, falling back to `command.txt`, `date.txt` and `notes.md` in
    /// the results directory (compare.sh writes them, so a report can be regenerated from
    /// the directory alone).
    pub fn resolve(a: &ReportArgs) -> Result<Meta> {
        let file = |name: &str| std::fs::read_to_string(a.dir.join(name)).ok();
        let need = |v: &Option<String>, name: &str| -> Result<String> {
            v.clone()
                .or_else(|| file(name))
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "give --{} or put {name} in {}",
                        name.split('.').next().unwrap_or(name),
                        a.dir.display()
                    )
                })
        };
        Ok(Meta {
            command: need(&a.command, "command.txt")?,
            date: need(&a.date, "date.txt")?,
            notes: a
                .notes
                .clone()
                .or_else(|| file("notes.md"))
                .unwrap_or_default(),
            commands: file("commands.txt")
                .map(|t| parse_commands(&t))
                .unwrap_or_default(),
        })
    }
}

/// Interference per load from compare.sh's `interference.txt`: lines
/// `NAME JIFFIES LIMIT`; returns the loads whose other-process CPU exceeded the limit.
pub fn parse_interference(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let j: u64 = f.next()?.parse().ok()?;
            let limit: u64 = f.next()?.parse().ok()?;
            (j > limit).then(|| (name.to_string(), j))
        })
        .collect()
}

pub fn load_dir(dir: &Path) -> Result<Results> {
    let mut out: Results = BTreeMap::new();
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some((server, test)) = split_name(&name) else {
            continue;
        };
        let text = std::fs::read_to_string(e.path())?;
        if let Some(r) = parse_result(&text).with_context(|| format!("in {name}"))? {
            out.entry(server).or_default().insert(test, r);
        }
    }
    if out.is_empty() {
        bail!("no result files in {}", dir.display());
    }
    let counters = load_afxdp_stats(&dir.join("afxdp-stats"))?;
    if !counters.is_empty() {
        out.insert(AFXDP_COUNTERS.into(), counters);
    }
    Ok(out)
}

/// The counter deltas of xturn-afxdp's loads from `NAME.before.json` / `NAME.after.json`
/// pairs (`xturn stats --json`), keyed by test name: `xturn-afxdp-relay-max` becomes
/// `relay-max`, `afxdp-forwarder` becomes `forwarder`. A missing directory is no error; a
/// pair with a missing or unreadable half is left out (with a warning).
pub fn load_afxdp_stats(dir: &Path) -> Result<BTreeMap<String, RunResult>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in rd {
        let name = e?.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".after.json") else {
            continue;
        };
        let read = |which: &str| -> Result<AfxdpCounters> {
            let f = dir.join(format!("{stem}.{which}.json"));
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            AfxdpCounters::from_stats(&text).with_context(|| format!("in {}", f.display()))
        };
        let delta = match (read("after"), read("before")) {
            (Ok(a), Ok(b)) => a.since(&b),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("report: counters of {stem} left out: {e:#}");
                continue;
            }
        };
        let test = stem
            .strip_prefix("xturn-afxdp-")
            .or_else(|| stem.strip_prefix("afxdp-"))
            .unwrap_or(stem);
        out.insert(test.to_string(), RunResult::Afxdp(delta));
    }
    Ok(out)
}

/// Order tests: stun, relay (flat out first, then by rate), echo by rate, churn, others.
pub fn test_order(name: &str, r: Option<&RunResult>) -> (u8, u64, String) {
    let (group, rate) = match r {
        Some(RunResult::Traffic(t)) => (
            match t.mode.as_str() {
                "stun" => 0,
                "relay" => 1,
                _ => 2,
            },
            t.params.rate,
        ),
        Some(RunResult::Churn(c)) => (3, c.rate),
        Some(
            RunResult::XdpLoad(_)
            | RunResult::XdpCost(_)
            | RunResult::Stats(_)
            | RunResult::XdpRelayLoad(_)
            | RunResult::XskReflect(_)
            | RunResult::Afxdp(_),
        )
        | None => (4, 0),
    };
    (group, rate, name.to_string())
}
