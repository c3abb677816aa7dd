//! The server's status file, `/run/xturn/<pid>/status.json`, rewritten twice a second and read
//! by `xturn stats`: the AF_XDP forwarder threads' reports (with `--xdp`) and every
//! allocation's traffic, per path: what the AF_XDP forwarders relayed and what went
//! through the kernel sockets (the socket workers, and Send indications relayed by the
//! control plane). Each of those keeps its own data-plane copy and counts only what it
//! relayed itself, so the sums are exact.
//!
//! The file names every client's address: its directory is owned by the user the server
//! runs as, mode 0750, the file mode 0640, both in the group `--status-group` (default:
//! the server's group). A per-process directory lets a server that dropped root replace
//! its file atomically (rename) without write access to `/run/xturn` itself.
//!
//! [`Status`] is the file's schema, both ways: the server writes it, `xturn stats` and the
//! benchmark's report read it back into the same types, so a renamed field breaks their
//! build rather than their figures.

use crate::afxdp::forwarder::ForwarderStats;
use crate::afxdp::ring::{Mode, PortCounters, QueueStats, RingIndices};
use crate::xdp::{AttachMode, MirrorStats};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use xturn_control::dataplane::Counters;
use xturn_control::{FiveTuple, RelayAddr};

/// Where running servers publish their status, one `<pid>/status.json` each.
pub const STATUS_DIR: &str = "/run/xturn";

/// The status file of process `pid` under `dir`.
pub fn status_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(pid.to_string()).join("status.json")
}

/// One data-plane copy's allocations and what it counted for each.
pub type AllocationCounts = Vec<(RelayAddr, FiveTuple, Counters)>;

/// What one data-plane copy publishes: its allocations' counts and everything it counted
/// since start (removed allocations included).
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    pub allocations: AllocationCounts,
    pub totals: Counters,
}

/// Everything relayed since start, per path (monotonic: the metrics' counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Relayed {
    pub afxdp: Counters,
    pub sockets: Counters,
    /// Relayed in the driver by the XDP program (`--fast-path xdp`).
    pub xdp: Counters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationReport {
    pub relay: SocketAddr,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Relayed by the AF_XDP forwarders (rewritten in place, or sent by them through the
    /// kernel sockets: Data indications, family changes).
    pub afxdp: Counters,
    /// Relayed by the socket workers and the control plane.
    pub sockets: Counters,
    /// Relayed in the driver by the XDP program (`--fast-path xdp`).
    #[serde(default)]
    pub xdp: Counters,
}

/// One interface the XDP program is attached to, as the server sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpInterface {
    pub name: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    /// An XDP_TX'd frame arrives: Binding requests are answered in the driver.
    pub xdp_tx: bool,
    /// Why (or why not).
    pub xdp_tx_why: String,
}

/// The XDP program's side, with `--xdp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpReport {
    pub interfaces: Vec<XdpInterface>,
    /// Entries of the control-plane maps.
    pub map_allocations: u32,
    pub map_permissions: u32,
    pub map_channels: u32,
    /// Outputs the maps could not take (their traffic takes the socket path).
    pub not_mirrored: MirrorStats,
}

/// The status file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub pid: u32,
    /// Interfaces of the AF_XDP fast path by index, for reading the per-port entries.
    pub interfaces: BTreeMap<u32, String>,
    /// The AF_XDP forwarder threads (none without `--xdp` or with `--no-afxdp`).
    pub threads: Vec<ThreadReport>,
    pub allocations: Vec<AllocationReport>,
    /// With `--xdp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpReport>,
    pub dropped: Dropped,
    /// Draining (SIGUSR1, `xturn drain`): no new allocations.
    pub draining: bool,
    pub relayed: Relayed,
}

impl Status {
    /// Whether this server has an AF_XDP socket on interface `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.interfaces.values().any(|n| n == name)
    }

    /// The name of interface `ifindex`, as the server listed it.
    pub fn interface_name(&self, ifindex: u32) -> String {
        self.interfaces
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {ifindex}"))
    }
}

/// One socket of a forwarder thread, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReport {
    pub ifindex: u32,
    pub queue: u32,
    pub mode: Mode,
    /// The kernel's XDP_STATISTICS of the socket.
    pub xdp_statistics: QueueStats,
    /// What the ring module counted.
    pub rings: PortCounters,
    /// UMEM frames now in this socket's fill ring, and on their way through its TX ring.
    pub fill_frames: usize,
    pub tx_frames: usize,
    /// (producer, consumer) of the socket's rings.
    pub ring_indices: RingIndices,
}

/// One forwarder thread, as published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreadReport {
    pub thread: usize,
    pub core: Option<usize>,
    /// Serving its queues. False once it exited or stopped answering: the XDP program then
    /// sends its queues' traffic to the socket path.
    pub alive: bool,
    /// Why it is not alive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
    pub ports: Vec<PortReport>,
    pub forwarder: ForwarderStats,
    /// UMEM frames of the thread, those on its free list and those the forwarder holds.
    pub umem_frames: usize,
    pub free_frames: usize,
    pub held_frames: usize,
    /// Per allocation (relayed address): what this thread relayed.
    #[serde(skip)]
    pub allocations: AllocationCounts,
    /// Everything this thread relayed since start.
    pub relayed: Counters,
}

/// What the server dropped on purpose, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Datagrams to a listener that were not STUN or ChannelData.
    pub not_stun: u64,
    /// STUN-looking datagrams that failed to parse or had a wrong FINGERPRINT.
    pub malformed: u64,
    /// Responses and indications the server has no use for.
    pub unwanted: u64,
    /// Stateless answers (Binding, 400, 420) over the per-prefix budget.
    pub over_answer_budget: u64,
    /// 401 answers over the per-prefix or server-wide budget.
    pub over_unauth_budget: u64,
    /// Relayed datagrams over `--max-bps` / `--user-max-bps`, and their payload bytes.
    pub over_bandwidth_packets: u64,
    pub over_bandwidth_bytes: u64,
}

/// Sum per allocation (by relayed address) the counts of the AF_XDP forwarders' and of
/// the socket path's data-plane copies. Every copy lists every allocation it knows, so an
/// allocation without traffic is listed with zeros.
pub fn allocations<'a>(
    afxdp: impl IntoIterator<Item = &'a AllocationCounts>,
    sockets: impl IntoIterator<Item = &'a AllocationCounts>,
    xdp: Option<&'a AllocationCounts>,
) -> Vec<AllocationReport> {
    #[derive(Clone, Copy)]
    enum Path {
        Afxdp,
        Sockets,
        Xdp,
    }
    let mut sums: BTreeMap<SocketAddr, AllocationReport> = BTreeMap::new();
    let mut add = |list: &AllocationCounts, path: Path| {
        for (relay, ft, c) in list {
            let a = sums.entry(relay.0).or_insert(AllocationReport {
                relay: relay.0,
                client: ft.client.0,
                server: ft.server,
                afxdp: Counters::default(),
                sockets: Counters::default(),
                xdp: Counters::default(),
            });
            match path {
                Path::Afxdp => a.afxdp.add(c),
                Path::Sockets => a.sockets.add(c),
                Path::Xdp => a.xdp.add(c),
            }
        }
    };
    afxdp.into_iter().for_each(|l| add(l, Path::Afxdp));
    sockets.into_iter().for_each(|l| add(l, Path::Sockets));
    xdp.into_iter().for_each(|l| add(l, Path::Xdp));
    sums.into_values().collect()
}

/// Writes the status to `dir/<pid>/status.json` (atomically: temporary file, then rename)
/// and removes it when dropped.
pub struct StatusWriter {
    /// `dir/<pid>`.
    dir: PathBuf,
    path: PathBuf,
    interfaces: BTreeMap<u32, String>,
    threads: Vec<Arc<Mutex<ThreadReport>>>,
    workers: Vec<Arc<Mutex<CopyReport>>>,
}

impl StatusWriter {
    /// `interfaces`: those of the AF_XDP fast path (index to name); `threads`: the AF_XDP
    /// forwarders' reports; `workers`: the socket workers' published allocation counts.
    pub fn new(
        dir: &Path,
        interfaces: BTreeMap<u32, String>,
        threads: Vec<Arc<Mutex<ThreadReport>>>,
        workers: Vec<Arc<Mutex<CopyReport>>>,
    ) -> Self {
        let pid = std::process::id();
        StatusWriter {
            dir: dir.join(pid.to_string()),
            path: status_path(dir, pid),
            interfaces,
            threads,
            workers,
        }
    }

    /// Create the directory (before privileges are dropped): owned by `owner` (uid, gid)
    /// when given, mode 0750. Directories of servers that are gone (a server that dropped
    /// root cannot remove its own) are removed.
    pub fn prepare(&self, owner: Option<(u32, u32)>) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let parent = self.dir.parent().expect("a pid directory has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(pid) = name.parse::<u32>() {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .mode(0o750)
                .create(&self.dir)
                .with_context(|| format!("cannot create {}", self.dir.display()))?;
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o750))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to uid {uid}", self.dir.display()))?;
        }
        Ok(())
    }

    /// This server's status directory (`/run/xturn/PID`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn threads(&self) -> Vec<ThreadReport> {
        self.threads
            .iter()
            // A forwarder that panicked while publishing leaves the last report readable.
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The status now; `control` is the control plane's own count (Send indications),
    /// `in_kernel` what the XDP program relayed in the driver.
    pub fn status(
        &self,
        control: &CopyReport,
        in_kernel: Option<&CopyReport>,
        xdp: Option<&XdpReport>,
        dropped: &Dropped,
        draining: bool,
    ) -> Status {
        let threads = self.threads();
        let workers: Vec<CopyReport> = self
            .workers
            .iter()
            .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        let mut relayed = Relayed::default();
        for t in &threads {
            relayed.afxdp.add(&t.relayed);
        }
        for w in workers.iter().chain(std::iter::once(control)) {
            relayed.sockets.add(&w.totals);
        }
        if let Some(k) = in_kernel {
            relayed.xdp.add(&k.totals);
        }
        let allocations = allocations(
            threads.iter().map(|t| &t.allocations),
            workers
                .iter()
                .chain(std::iter::once(control))
                .map(|w| &w.allocations),
            in_kernel.map(|k| &k.allocations),
        );
        Status {
            pid: std::process::id(),
            interfaces: self.interfaces.clone(),
            threads,
            allocations,
            xdp: xdp.cloned(),
            dropped: *dropped,
            draining,
            relayed,
        }
    }

    /// Write `status` to the file.
    pub fn write(&self, status: &Status) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(&serde_json::to_vec(status)?)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot rename {} into place", tmp.display()))
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Fails without write access to the parent: the next server's `prepare` sweeps it.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xturn_control::ClientAddr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pc(c: [u64; 4]) -> Counters {
        Counters {
            to_peer_packets: c[0],
            to_peer_bytes: c[1],
            to_client_packets: c[2],
            to_client_bytes: c[3],
        }
    }

    fn counts(relay: &str, client: &str, c: [u64; 4]) -> (RelayAddr, FiveTuple, Counters) {
        (
            RelayAddr(sa(relay)),
            FiveTuple::udp(ClientAddr(sa(client)), sa("192.0.2.1:3478")),
            Counters {
                to_peer_packets: c[0],
                to_peer_bytes: c[1],
                to_client_packets: c[2],
                to_client_bytes: c[3],
            },
        )
    }

    #[test]
    fn allocations_are_summed_per_path_over_every_copy() {
        let (r1, r2) = ("198.51.100.1:50000", "198.51.100.1:50002");
        let fw0 = vec![counts(r1, "192.0.2.2:4000", [1, 10, 2, 20])];
        let fw1 = vec![
            counts(r1, "192.0.2.2:4000", [3, 30, 0, 0]),
            counts(r2, "192.0.2.3:4000", [0, 0, 0, 0]),
        ];
        let worker = vec![
            counts(r2, "192.0.2.3:4000", [5, 50, 6, 60]),
            counts(r1, "192.0.2.2:4000", [0, 0, 1, 7]),
        ];
        let control = vec![counts(r2, "192.0.2.3:4000", [1, 4, 0, 0])];
        let in_kernel = vec![counts(r1, "192.0.2.2:4000", [100, 1000, 50, 500])];
        let all = allocations([&fw0, &fw1], [&worker, &control], Some(&in_kernel));
        assert_eq!(
            all,
            vec![
                AllocationReport {
                    relay: sa(r1),
                    client: sa("192.0.2.2:4000"),
                    server: sa("192.0.2.1:3478"),
                    afxdp: pc([4, 40, 2, 20]),
                    sockets: pc([0, 0, 1, 7]),
                    xdp: pc([100, 1000, 50, 500]),
                },
                AllocationReport {
                    relay: sa(r2),
                    client: sa("192.0.2.3:4000"),
                    server: sa("192.0.2.1:3478"),
                    afxdp: pc([0, 0, 0, 0]),
                    sockets: pc([6, 54, 6, 60]),
                    xdp: pc([0, 0, 0, 0]),
                },
            ]
        );
    }

    #[test]
    fn the_file_is_written_whole_and_removed_with_the_writer() {
        let dir = std::env::temp_dir().join(format!("xturn-status-{}", std::process::id()));
        let worker = Arc::new(Mutex::new(CopyReport {
            allocations: vec![counts(
                "198.51.100.1:50000",
                "192.0.2.2:4000",
                [2, 200, 1, 100],
            )],
            // An ended allocation counted 1 more packet each way.
            totals: pc([3, 300, 2, 150]),
        }));
        let w = StatusWriter::new(&dir, BTreeMap::new(), Vec::new(), vec![worker]);
        // A dead server's directory is swept.
        std::fs::create_dir_all(dir.join("4194305")).unwrap();
        w.prepare(None).unwrap();
        assert!(!dir.join("4194305").exists());
        let in_kernel = CopyReport {
            allocations: Vec::new(),
            totals: pc([7, 70, 0, 0]),
        };
        let s = w.status(
            &CopyReport::default(),
            Some(&in_kernel),
            None,
            &Dropped::default(),
            false,
        );
        assert_eq!(s.relayed.sockets, pc([3, 300, 2, 150]));
        assert_eq!(s.relayed.afxdp, Counters::default());
        assert_eq!(s.relayed.xdp, pc([7, 70, 0, 0]));
        w.write(&s).unwrap();
        let path = status_path(&dir, std::process::id());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o640);
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["threads"].as_array().unwrap().len(), 0);
        let a = &v["allocations"][0];
        assert_eq!(a["relay"], "198.51.100.1:50000");
        assert_eq!(a["sockets"]["to_peer_bytes"], 200);
        assert_eq!(a["afxdp"]["to_peer_packets"], 0);
        // Read back into the schema the writer used, as `xturn stats` and the bench do.
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back.allocations[0].sockets.to_peer_bytes, 200);
        assert_eq!(back.dropped, Dropped::default());
        drop(w);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// Every field the writer fills survives the trip through the file.
    #[test]
    fn a_full_status_reads_back_equal() {
        let status = Status {
            pid: 7,
            interfaces: BTreeMap::from([(5, "xt0".to_string())]),
            threads: vec![ThreadReport {
                thread: 0,
                core: Some(1),
                alive: false,
                dead: Some("exited".into()),
                ports: vec![PortReport {
                    ifindex: 5,
                    queue: 0,
                    mode: Mode::Copy,
                    xdp_statistics: QueueStats {
                        rx_dropped: 3,
                        ..Default::default()
                    },
                    rings: PortCounters::default(),
                    fill_frames: 2048,
                    tx_frames: 1,
                    ring_indices: RingIndices::default(),
                }],
                forwarder: ForwarderStats {
                    received: 9,
                    dropped_tx_full: 1,
                    ..Default::default()
                },
                umem_frames: 4096,
                free_frames: 2000,
                held_frames: 3,
                allocations: Vec::new(),
                relayed: Counters {
                    to_peer_packets: 4,
                    ..Default::default()
                },
            }],
            allocations: Vec::new(),
            xdp: Some(XdpReport {
                interfaces: vec![XdpInterface {
                    name: "xt0".into(),
                    ifindex: 5,
                    mode: AttachMode::Generic,
                    xdp_tx: false,
                    xdp_tx_why: "generic".into(),
                }],
                map_allocations: 1,
                map_permissions: 2,
                map_channels: 3,
                not_mirrored: MirrorStats::default(),
            }),
            dropped: Dropped {
                malformed: 4,
                ..Default::default()
            },
            draining: true,
            relayed: Relayed {
                afxdp: Counters {
                    to_client_bytes: 9,
                    ..Default::default()
                },
                sockets: Counters::default(),
                xdp: Counters::default(),
            },
        };
        let text = serde_json::to_string_pretty(&status).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
        assert!(back.serves("xt0") && !back.serves("xt1"));
        assert_eq!(back.interface_name(9), "ifindex 9");
    }
}
