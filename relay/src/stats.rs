//! `xturn stats`: the XDP program's per-CPU counters, summed over CPUs, for every xturn
//! XDP program attached on this machine (or the one on `--xdp IFACE`).
//!
//! The running server is not asked: the kernel is. Programs are found among the loaded
//! BPF programs by name ([`program_names::XTURN`]), their counters map among the
//! program's maps by name ([`map_names::COUNTERS`]), and where they are attached from an
//! rtnetlink dump of this network namespace ([`crate::netlink`]); a program attached
//! through a BPF link in another network namespace is listed as such (the kernel does
//! not say which interface there). Loaded programs attached nowhere (a server starting
//! or stopping, a test run) are left out. Needs root, as every BPF id lookup does.

use crate::netlink;
use crate::status::{status_path, Status, STATUS_DIR};
use crate::xdp::{read_counters, Counters};
use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, MapInfo, PerCpuArray};
use aya::programs::links::LinkType;
use aya::programs::{loaded_links, loaded_programs, ProgramInfo};
use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use xturn_xdp_common::{map_names, program_names, Counter};

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Only the xturn XDP program attached to this interface (of this network namespace).
    #[arg(long, value_name = "IFACE")]
    pub xdp: Option<String>,
    /// Print JSON: {"programs": [{"id", "interfaces", "in_this_netns", "counters": {name: value}}]}.
    #[arg(long)]
    pub json: bool,
}

/// An interface a program is attached to, in this network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub mode: String,
}

/// One attached xturn XDP program and its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramStats {
    pub id: u32,
    /// Where it is attached in this network namespace (empty when `in_this_netns` is false).
    #[serde(default)]
    pub interfaces: Vec<Attachment>,
    /// False for a program attached through a BPF link in another network namespace.
    #[serde(default)]
    pub in_this_netns: bool,
    #[serde(
        serialize_with = "counters_in_order",
        deserialize_with = "counters_by_name"
    )]
    pub counters: Counters,
}

/// Counters as a JSON object in index order, keyed by [`Counter::name`].
fn counters_in_order<S: Serializer>(c: &Counters, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(Counter::ALL.len()))?;
    for k in Counter::ALL {
        m.serialize_entry(k.name(), &c.get(k))?;
    }
    m.end()
}

/// Counters from a JSON object keyed by [`Counter::name`]; a name this build does not
/// know is ignored, a counter the object lacks is 0.
fn counters_by_name<'de, D: Deserializer<'de>>(d: D) -> Result<Counters, D::Error> {
    let m = BTreeMap::<String, u64>::deserialize(d)?;
    let mut c = [0u64; Counter::COUNT as usize];
    for k in Counter::ALL {
        c[k as usize] = m.get(k.name()).copied().unwrap_or(0);
    }
    Ok(Counters(c))
}

/// `xturn stats --json`, both ways (the benchmark reads it back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsOutput {
    pub programs: Vec<ProgramStats>,
    /// Each running server's status file as written: its AF_XDP fast path (if any) and
    /// every allocation's traffic per path.
    #[serde(default)]
    pub servers: Vec<Status>,
}

pub fn run(a: &StatsArgs) -> Result<()> {
    let progs = collect(a.xdp.as_deref())?;
    let servers = servers(Path::new(STATUS_DIR), a.xdp.as_deref());
    if progs.is_empty() && servers.is_empty() {
        bail!(
            "no xturn server is running on this machine (no status file in {STATUS_DIR}) \
             and no xturn XDP program is attached"
        );
    }
    let text = if a.json {
        serde_json::to_string_pretty(&StatsOutput {
            programs: progs,
            servers,
        })? + "\n"
    } else {
        let mut t = human(&progs);
        for s in &servers {
            t.push('\n');
            t.push_str(&human_server(s));
        }
        t
    };
    // A reader that went away (`xturn stats | head`) is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The human form: a heading per program, then one `name value` line per counter.
pub fn human(progs: &[ProgramStats]) -> String {
    let mut out = String::new();
    for (i, p) in progs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let at = if p.in_this_netns {
            let v: Vec<String> = p
                .interfaces
                .iter()
                .map(|a| format!("{} ({} mode)", a.interface, a.mode))
                .collect();
            format!("on {}", v.join(", "))
        } else {
            "attached in another network namespace".to_string()
        };
        out.push_str(&format!(
            "xturn XDP program {} {at}: counters summed over CPUs\n",
            p.id
        ));
        for c in Counter::ALL {
            out.push_str(&format!("{:<30} {}\n", c.name(), p.counters.get(c)));
        }
    }
    out
}

/// True if `e` or one of its sources is EPERM/EACCES.
fn permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied
                || io.raw_os_error() == Some(libc::EPERM)
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

const NEED_ROOT: &str = "xturn stats reads BPF programs and maps by id, which needs root \
     (CAP_SYS_ADMIN): run it with sudo";

/// Loaded programs named like xturn's XDP program. Programs that vanish while being listed
/// are skipped; a permission error is reported as such.
fn xturn_programs() -> Result<Vec<ProgramInfo>> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut out = Vec::new();
    for p in loaded_programs() {
        match p {
            Ok(p) if p.name_as_str() == Some(program_names::XTURN) => out.push(p),
            Ok(_) => {}
            Err(e) if permission_denied(&e) || !root => {
                return Err(anyhow::Error::new(e).context(NEED_ROOT))
            }
            Err(_) => {} // gone between listing its id and opening it
        }
    }
    Ok(out)
}

/// Ids of programs attached through an XDP BPF link (in any network namespace).
fn xdp_link_programs() -> Vec<u32> {
    loaded_links()
        .filter_map(Result::ok)
        .filter(|l| l.link_type().ok() == Some(LinkType::Xdp))
        .map(|l| l.program_id())
        .collect()
}

/// The counters of program `p`, from its map named [`map_names::COUNTERS`].
fn counters_of(p: &ProgramInfo) -> Result<Counters> {
    let id = p.id();
    let map_ids = p
        .map_ids()
        .with_context(|| format!("cannot list the maps of program {id}"))?
        .unwrap_or_default();
    for map_id in map_ids {
        let Ok(info) = MapInfo::from_id(map_id) else {
            continue;
        };
        if info.name_as_str() != Some(map_names::COUNTERS) {
            continue;
        }
        if info.max_entries() < Counter::COUNT || info.value_size() != 8 {
            bail!(
                "program {id}: its {} map has {} entries of {} bytes, this xturn expects {} of 8: \
                 the program comes from another xturn version",
                map_names::COUNTERS,
                info.max_entries(),
                info.value_size(),
                Counter::COUNT
            );
        }
        let data = MapData::from_id(map_id)
            .with_context(|| format!("cannot open map {map_id} of program {id}"))?;
        let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))
            .with_context(|| format!("map {map_id} of program {id} is not a per-CPU array"))?;
        return read_counters(&map);
    }
    bail!("program {id} has no {} map", map_names::COUNTERS)
}

/// Every attached xturn XDP program with its counters (only the one on `only` if given).
pub fn collect(only: Option<&str>) -> Result<Vec<ProgramStats>> {
    let progs = xturn_programs()?;
    let ifaces = netlink::interfaces().context("cannot list this namespace's interfaces")?;
    if let Some(name) = only {
        let iface = ifaces
            .iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no interface {name:?} in this network namespace"))?;
        let Some((p, mode)) = iface
            .xdp
            .iter()
            .find_map(|(id, m)| progs.iter().find(|p| p.id() == *id).map(|p| (p, *m)))
        else {
            let what = if iface.xdp.is_empty() {
                "no XDP program is attached to it".to_string()
            } else {
                let ids: Vec<String> = iface.xdp.iter().map(|(id, _)| id.to_string()).collect();
                format!(
                    "the XDP program attached to it (id {}) is not {}",
                    ids.join(", "),
                    program_names::XTURN
                )
            };
            bail!("no xturn XDP program on {name}: {what} (start the server with --xdp {name})");
        };
        return Ok(vec![ProgramStats {
            id: p.id(),
            interfaces: vec![Attachment {
                interface: name.to_string(),
                mode: mode.name().to_string(),
            }],
            in_this_netns: true,
            counters: counters_of(p)?,
        }]);
    }
    let linked = xdp_link_programs();
    let mut out = Vec::new();
    for p in &progs {
        let here: Vec<Attachment> = ifaces
            .iter()
            .flat_map(|i| {
                i.xdp
                    .iter()
                    .filter(|(id, _)| *id == p.id())
                    .map(|(_, m)| Attachment {
                        interface: i.name.clone(),
                        mode: m.name().to_string(),
                    })
            })
            .collect();
        let elsewhere = here.is_empty() && linked.contains(&p.id());
        if here.is_empty() && !elsewhere {
            continue; // loaded, attached nowhere
        }
        // A program detached and unloaded meanwhile has no counters to show.
        let counters = match counters_of(p) {
            Ok(c) => c,
            Err(e) if !still_loaded(p.id()) => {
                tracing::debug!("program {} went away: {e:#}", p.id());
                continue;
            }
            Err(e) => return Err(e),
        };
        out.push(ProgramStats {
            id: p.id(),
            in_this_netns: !here.is_empty(),
            interfaces: here,
            counters,
        });
    }
    out.sort_by_key(|p| (!p.in_this_netns, p.id));
    Ok(out)
}

/// The status files of running servers (`<pid>/status.json` in `dir` whose process lives), in
/// pid order; with `only`, those of servers with an AF_XDP socket on that interface.
/// Unreadable or stale files are skipped: a server may stop while they are read.
pub fn servers(dir: &Path, only: Option<&str>) -> Vec<Status> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Status> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: u32 = name.parse().ok()?;
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return None;
            }
            let v: Status =
                serde_json::from_slice(&std::fs::read(status_path(dir, pid)).ok()?).ok()?;
            only.is_none_or(|i| v.serves(i)).then_some(v)
        })
        .collect();
    out.sort_by_key(|s| s.pid);
    out
}

/// `name value` lines of a counters struct, field by field, under `prefix`.
fn fields<T: Serialize>(o: &T, prefix: &str, out: &mut String) {
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(o) {
        for (k, x) in m {
            out.push_str(&format!("{:<40} {}\n", format!("{prefix}{k}"), x));
        }
    }
}

/// The human form of one server's status: per AF_XDP thread its forwarder counters, per
/// socket the kernel's XDP_STATISTICS and the ring module's counters, then the
/// allocations' traffic per path.
pub fn human_server(v: &Status) -> String {
    let mut out = format!(
        "xturn server {}: {}{}\n",
        v.pid,
        if v.threads.is_empty() {
            "kernel sockets"
        } else {
            "AF_XDP fast path and kernel sockets"
        },
        if v.draining {
            ", draining (no new allocations)"
        } else {
            ""
        }
    );
    for t in &v.threads {
        let core = t
            .core
            .map_or("unpinned".to_string(), |c| format!("core {c}"));
        let state = if t.alive {
            String::new()
        } else {
            format!(
                " DEAD ({}): its queues take the socket path",
                t.dead.as_deref().unwrap_or("not serving")
            )
        };
        out.push_str(&format!("thread {} ({core}){state}\n", t.thread));
        fields(&t.forwarder, "  ", &mut out);
        for (k, x) in [
            ("umem_frames", t.umem_frames),
            ("free_frames", t.free_frames),
            ("held_frames", t.held_frames),
        ] {
            out.push_str(&format!("{:<40} {x}\n", format!("  {k}")));
        }
        for p in &t.ports {
            let mode = serde_json::to_value(p.mode)
                .ok()
                .and_then(|m| m.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!(
                "  socket {} queue {} ({mode} mode)\n",
                v.interface_name(p.ifindex),
                p.queue
            ));
            fields(&p.xdp_statistics, "    ", &mut out);
            fields(&p.rings, "    ring_", &mut out);
            for (k, x) in [("fill_frames", p.fill_frames), ("tx_frames", p.tx_frames)] {
                out.push_str(&format!("{:<40} {x}\n", format!("    {k}")));
            }
            let r = &p.ring_indices;
            for (ring, (producer, consumer)) in [
                ("completion", r.completion),
                ("fill", r.fill),
                ("rx", r.rx),
                ("tx", r.tx),
            ] {
                out.push_str(&format!(
                    "{:<40} producer {producer} consumer {consumer}\n",
                    format!("    {ring}_ring"),
                ));
            }
        }
    }
    if let Some(x) = &v.xdp {
        for i in &x.interfaces {
            out.push_str(&format!(
                "XDP on {} ({} mode): Binding answered {} ({})\n",
                i.name,
                i.mode.name(),
                if i.xdp_tx {
                    "in the driver"
                } else {
                    "by the socket path"
                },
                i.xdp_tx_why
            ));
        }
        let n = &x.not_mirrored;
        out.push_str(&format!(
            "XDP maps: {} allocations, {} permissions, {} channels; not mirrored (socket \
             path): {} allocations, {} permissions, {} channels\n",
            x.map_allocations,
            x.map_permissions,
            x.map_channels,
            n.allocations_not_mirrored,
            n.permissions_not_mirrored,
            n.channels_not_mirrored
        ));
    }
    out.push_str(&format!("allocations: {}\n", v.allocations.len()));
    for a in &v.allocations {
        out.push_str(&format!("  {} for {}\n", a.relay, a.client));
        for (path, c) in [
            ("xdp", &a.xdp),
            ("afxdp", &a.afxdp),
            ("sockets", &a.sockets),
        ] {
            let none = xturn_control::dataplane::Counters::default();
            if path == "xdp" && *c == none && v.relayed.xdp == none {
                // Not relaying in the driver (`--fast-path afxdp`, or sockets only).
                continue;
            }
            out.push_str(&format!(
                "    {path:<8} to peer {} packets {} bytes, to client {} packets {} bytes\n",
                c.to_peer_packets, c.to_peer_bytes, c.to_client_packets, c.to_client_bytes
            ));
        }
    }
    out
}

fn still_loaded(id: u32) -> bool {
    loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.id() == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProgramStats {
        let mut c = [0u64; Counter::COUNT as usize];
        c[Counter::TxBindingIpv4 as usize] = 20;
        c[Counter::PassNotIp as usize] = 3;
        ProgramStats {
            id: 57,
            interfaces: vec![Attachment {
                interface: "xt1b".into(),
                mode: "driver".into(),
            }],
            in_this_netns: true,
            counters: Counters(c),
        }
    }

    #[test]
    fn human_has_one_line_per_counter() {
        let mut other = sample();
        other.id = 58;
        other.interfaces.clear();
        other.in_this_netns = false;
        let text = human(&[sample(), other]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "xturn XDP program 57 on xt1b (driver mode): counters summed over CPUs"
        );
        assert_eq!(lines.len(), 2 * (1 + Counter::COUNT as usize) + 1);
        for (i, c) in Counter::ALL.iter().enumerate() {
            let f: Vec<&str> = lines[1 + i].split_whitespace().collect();
            assert_eq!(f[0], c.name());
        }
        assert!(
            text.contains("\ntx_binding_ipv4                20\n"),
            "{text}"
        );
        assert!(text.contains("xturn XDP program 58 attached in another network namespace"));
    }

    #[test]
    fn json_keys_are_counter_names_in_order() {
        let out = StatsOutput {
            programs: vec![sample()],
            servers: Vec::new(),
        };
        let text = serde_json::to_string(&out).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let p = &v["programs"][0];
        assert_eq!(p["id"], 57);
        assert_eq!(p["interfaces"][0]["interface"], "xt1b");
        assert_eq!(p["interfaces"][0]["mode"], "driver");
        assert_eq!(p["in_this_netns"], true);
        assert_eq!(p["counters"]["tx_binding_ipv4"], 20);
        assert_eq!(p["counters"]["pass_not_ip"], 3);
        assert_eq!(p["counters"].as_object().unwrap().len(), Counter::ALL.len());
        // Index order in the text, not alphabetical.
        let a = text.find("pass_not_ip").unwrap();
        let b = text.find("aborted").unwrap();
        assert!(a < b);
        // And back, as the benchmark reads it.
        let back: StatsOutput = serde_json::from_str(&text).unwrap();
        assert_eq!(back, out);
    }

    #[test]
    fn dead_threads_and_the_xdp_side_are_printed() {
        let v = serde_json::json!({
            "pid": 7, "interfaces": {},
            "threads": [{"thread": 0, "core": 1, "alive": false,
                         "dead": "panicked: boom", "ports": [], "forwarder": {}}],
            "allocations": [],
            "xdp": {"interfaces": [{"name": "xt1b", "ifindex": 4, "mode": "native",
                                    "xdp_tx": false, "xdp_tx_why": "no program on the peer"}],
                    "map_allocations": 16384, "map_permissions": 4, "map_channels": 65536,
                    "not_mirrored": {"allocations_not_mirrored": 0,
                                     "permissions_not_mirrored": 2,
                                     "channels_not_mirrored": 0}}
        });
        let text = human_server(&serde_json::from_value(v).unwrap());
        assert!(
            text.contains(
                "thread 0 (core 1) DEAD (panicked: boom): its queues take the socket path\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "XDP on xt1b (native mode): Binding answered by the socket path (no program on \
                 the peer)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "4 permissions, 65536 channels; not mirrored (socket path): 0 \
                 allocations, 2 permissions"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_files_of_live_servers_are_read_and_printed() {
        let dir = std::env::temp_dir().join(format!("xturn-stats-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        let status = serde_json::json!({
            "pid": me,
            "interfaces": {"4": "xt1b", "5": "xt1c"},
            "threads": [{
                "thread": 0, "core": 1, "alive": true,
                "ports": [{"ifindex": 4, "queue": 0, "mode": "copy",
                           "xdp_statistics": {"rx_dropped": 7}, "rings": {"rx": 9},
                           "fill_frames": 2048, "tx_frames": 3,
                           "ring_indices": {"fill": [4105, 2057]}}],
                "forwarder": {"received": 9, "to_peer": 9},
                "umem_frames": 8192, "free_frames": 6141, "held_frames": 0
            }],
            "allocations": [{"relay": "198.51.100.1:50000", "client": "192.0.2.2:4000",
                             "server": "192.0.2.1:3478",
                             "afxdp": {"to_peer_packets": 9, "to_peer_bytes": 900,
                                       "to_client_packets": 0, "to_client_bytes": 0},
                             "sockets": {"to_peer_packets": 1, "to_peer_bytes": 50,
                                         "to_client_packets": 2, "to_client_bytes": 70}}]
        });
        let put = |pid: &str, text: &str| {
            std::fs::create_dir_all(dir.join(pid)).unwrap();
            std::fs::write(dir.join(pid).join("status.json"), text).unwrap();
        };
        put(&me.to_string(), &status.to_string());
        // A dead process's file (pid beyond pid_max), a broken file, a foreign name.
        put("4194305", &status.to_string());
        put("1", "{not json");
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let all = servers(&dir, None);
        assert_eq!(all, vec![serde_json::from_value(status.clone()).unwrap()]);
        assert_eq!(servers(&dir, Some("xt1c")).len(), 1);
        assert!(servers(&dir, Some("eth9")).is_empty());
        assert!(servers(&dir.join("missing"), None).is_empty());
        let text = human_server(&all[0]);
        assert!(
            text.starts_with(&format!(
                "xturn server {me}: AF_XDP fast path and kernel sockets\n"
            )),
            "{text}"
        );
        assert!(text.contains("thread 0 (core 1)\n"), "{text}");
        assert!(
            text.contains("  socket xt1b queue 0 (copy mode)\n"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().eq(["rx_dropped", "7"])),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().eq(["ring_rx", "9"])),
            "{text}"
        );
        for line in [
            ["umem_frames", "8192"].as_slice(),
            &["free_frames", "6141"],
            &["fill_frames", "2048"],
            &["fill_ring", "producer", "4105", "consumer", "2057"],
        ] {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().eq(line.iter().copied())),
                "{line:?} in {text}"
            );
        }
        assert!(
            text.contains("  198.51.100.1:50000 for 192.0.2.2:4000\n"),
            "{text}"
        );
        for line in [
            "afxdp to peer 9 packets 900 bytes, to client 0 packets 0 bytes",
            "sockets to peer 1 packets 50 bytes, to client 2 packets 70 bytes",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().eq(line.split_whitespace())),
                "{line:?} in {text}"
            );
        }
        // A server without AF_XDP: no threads.
        let plain = serde_json::json!({"pid": 7, "interfaces": {}, "threads": [],
                                       "allocations": []});
        let plain = serde_json::from_value(plain).unwrap();
        assert!(human_server(&plain).starts_with("xturn server 7: kernel sockets\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn permission_errors_are_recognised_through_sources() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EPERM)).context("x");
        assert!(permission_denied(e.as_ref()));
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(!permission_denied(e.as_ref()));
    }
}
