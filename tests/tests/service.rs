//! Running as a systemd service (relay/dist/xturn.service): the unit file passes
//! `systemd-analyze verify` (Debian's systemd; no systemd runs here), and the real binary
//! speaks systemd's notify protocol to a socket standing in for systemd's: READY=1 with
//! STATUS= once serving, STATUS= following the allocations, WATCHDOG=1 every half
//! WATCHDOG_USEC while every thread serves and none while a worker thread is stopped
//! (ptrace), RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM. That the
//! binary runs with only the unit's capabilities is tested on the AF_XDP path, in
//! afxdp_relay.rs (`runs_with_only_the_unit_files_capabilities`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xturn_tests::{have, output_text, thread_id, xturn_bin, StoppedThread, TestClient, Xturn};

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/dist/xturn.service")
}

/// A scratch directory of this test process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("xturn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // The server may run as nobody: it must reach the socket inside.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `systemd-analyze verify` of `unit` (its ExecStart pointed at this build's binary, which
/// verify requires to exist): its exit code and everything it printed.
fn verify(dir: &Path, unit: &str) -> (bool, String) {
    let text = unit.replace("/usr/local/bin/xturn", &xturn_bin().display().to_string());
    let path = dir.join("xturn.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    (out.status.success(), output_text(&out))
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        panic!("systemd-analyze is missing: tests/run.sh installs Debian's systemd package");
    }
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "AmbientCapabilities=",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    let dir = TempDir::new("unit");
    let (ok, said) = verify(&dir.0, &unit);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The check sees mistakes: an unknown key is reported (with exit code 0).
    let (_, said) = verify(&dir.0, &unit.replace("NoNewPrivileges=", "NoNewPrivilege="));
    assert!(
        said.contains("Unknown key"),
        "verify missed a bad key: {said}"
    );
}

/// What arrived on the stand-in for systemd's notify socket, with the time of arrival.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<(Instant, String)>>>);

impl Heard {
    fn listen(path: &Path) -> Heard {
        let sock = UnixDatagram::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let heard = Heard::default();
        let h = heard.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Bounded: the test ends well within a minute.
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    h.0.lock().unwrap().push((Instant::now(), msg));
                }
            }
        });
        heard
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    /// The first message after `since` that has every line of `lines`, within 5 s.
    fn wait(&self, since: Instant, lines: &[&str]) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let found = self.all().into_iter().find(|(t, m)| {
                *t >= since && lines.iter().all(|l| m.lines().any(|x| x.starts_with(l)))
            });
            if let Some((_, m)) = found {
                return Some(m);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn pings(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(t, m)| *t >= from && *t < to && m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(t, _)| t)
            .collect()
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn notifies_ready_status_watchdog_reload_and_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify");
    let heard = Heard::listen(&path);
    let t0 = Instant::now();
    // A ping every 300 ms.
    let server = Xturn::start_with(&["--threads", "2", "--user", "alice:wonderland"], |c| {
        c.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "600000");
    });
    let pid = server.proc.child.id();
    let diag = |h: &Heard| {
        format!(
            "heard: {:?}\n{}",
            h.all().iter().map(|(_, m)| m).collect::<Vec<_>>(),
            server.proc.output()
        )
    };
    assert!(
        heard
            .wait(t0, &["READY=1", "STATUS=serving 0 allocations"])
            .is_some(),
        "{}",
        diag(&heard)
    );
    let mut alice = TestClient::new(server.addr, "alice", "wonderland");
    alice.allocate();
    assert!(
        heard.wait(t0, &["STATUS=serving 1 allocations"]).is_some(),
        "{}",
        diag(&heard)
    );

    // Pings while every thread serves: 2.4 s hold 7 or 8 of them, never 1 s apart.
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(2400));
    let pings = heard.pings(from, Instant::now());
    assert!(
        (6..=9).contains(&pings.len()),
        "{} pings in 2.4 s: {}",
        pings.len(),
        diag(&heard)
    );

    if xturn_tests::is_root() {
        // A stopped worker thread: after its 1 s of grace, no ping until it runs again.
        let stopped_at = Instant::now();
        let stopped = StoppedThread::stop(thread_id(pid, "xturn-worker-1"));
        std::thread::sleep(Duration::from_millis(3500));
        let quiet_from = stopped_at + Duration::from_millis(1500);
        let late = heard.pings(quiet_from, Instant::now());
        drop(stopped);
        assert!(
            late.is_empty(),
            "{} pings with a worker stopped: {}",
            late.len(),
            diag(&heard)
        );
        assert!(
            server
                .proc
                .wait_for_line("watchdog pings withheld", Duration::from_secs(2))
                .is_some_and(|l| l.contains("worker thread 1")),
            "{}",
            server.proc.output()
        );
        let withheld = server
            .proc
            .output()
            .matches("watchdog pings withheld")
            .count();
        assert_eq!(
            withheld,
            1,
            "one stall, one log line: {}",
            server.proc.output()
        );
        let resumed = Instant::now();
        std::thread::sleep(Duration::from_millis(1200));
        assert!(
            !heard.pings(resumed, Instant::now()).is_empty(),
            "no ping after the worker ran again: {}",
            diag(&heard)
        );
    } else {
        eprintln!("stopped-worker part skipped: ptrace of another user's thread needs root");
    }

    // A reload is bracketed by RELOADING=1 (with the monotonic time) and READY=1.
    let before = Instant::now();
    signal(pid, "-HUP");
    let r = heard.wait(before, &["RELOADING=1", "MONOTONIC_USEC="]);
    assert!(r.is_some(), "{}", diag(&heard));
    assert!(
        heard.wait(before, &["READY=1"]).is_some(),
        "{}",
        diag(&heard)
    );
    // The allocation lived through it.
    let refresh = alice.request(xturn_control::wire::Method::Refresh, |_| {});
    assert_eq!(xturn_control::client::error_code(&refresh), None);

    let before = Instant::now();
    signal(pid, "-TERM");
    assert!(
        heard.wait(before, &["STOPPING=1"]).is_some(),
        "{}",
        diag(&heard)
    );
}
