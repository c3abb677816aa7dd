//! The real `xturn` binary under the hardening rules: a dead thread stops the process
//! (non-zero, within a second) instead of leaving a server that answers nobody; bad limits
//! are refused with the limit named.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use xturn_control::wire::{attr, Class, MessageBuilder, Method, TransactionId};
use xturn_tests::{free_udp_port_pair, xturn_bin, Proc};

fn allocate_request(tid: u8) -> Vec<u8> {
    let mut b = MessageBuilder::new(Method::Allocate, Class::Request, TransactionId([tid; 12]));
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    b.finish()
}

/// Worker 0 panics holding the server lock at its first control message (fault
/// injection). The supervisor must see it, stop the other worker (which must not panic in
/// turn on the poisoned lock) and exit non-zero within a second.
#[test]
fn a_worker_that_dies_stops_the_process_non_zero_within_a_second() {
    let port = free_udp_port_pair();
    let mut cmd = Command::new(xturn_bin());
    cmd.args([
        "--listening-ip",
        "127.0.0.1",
        "--listening-port",
        &port.to_string(),
        "--user",
        "alice:wonderland",
        "--threads",
        "2",
    ])
    .env("XTURN_FAULT_WORKER", "panic:1");
    let mut xturn = Proc::spawn("xturn", cmd);
    assert!(
        xturn
            .wait_for_line("listening on udp", Duration::from_secs(10))
            .is_some(),
        "{}",
        xturn.output()
    );
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // SO_REUSEPORT spreads sources over the two workers: several sources reach worker 0.
    let socks: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut sent_at = None;
    let mut status = None;
    let end = Instant::now() + Duration::from_secs(5);
    'outer: while Instant::now() < end {
        for (i, s) in socks.iter().enumerate() {
            s.send_to(&allocate_request(i as u8), server).unwrap();
            sent_at.get_or_insert_with(Instant::now);
            std::thread::sleep(Duration::from_millis(5));
            if let Some(st) = xturn.child.try_wait().unwrap() {
                status = Some(st);
                break 'outer;
            }
        }
    }
    let status = status.unwrap_or_else(|| {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(st) = xturn.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < end,
                "xturn still runs with a dead worker:\n{}",
                xturn.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    // The exit is observed at most 16 x 5 ms after the fatal datagram was sent.
    let took = sent_at.unwrap().elapsed();
    std::thread::sleep(Duration::from_millis(200)); // the output threads drain
    let out = xturn.output();
    assert!(!status.success(), "exit status {status:?}\n{out}");
    assert!(took < Duration::from_secs(1), "took {took:?}\n{out}");
    assert!(
        out.contains("worker thread 0 died (panicked: fault injection"),
        "{out}"
    );
    assert!(
        !out.contains("worker thread 1 died"),
        "the other worker must not die of the poisoned lock:\n{out}"
    );
}

/// `cmd` as the unprivileged user nobody (no capabilities, so no raising of hard limits)
/// with an open-file limit of `soft`:`hard`, through util-linux's prlimit and setpriv.
fn as_nobody_with_nofile(soft: u32, hard: u32) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.args([
        &format!("--nofile={soft}:{hard}"),
        "--",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ])
    .arg(xturn_bin());
    cmd
}

/// A total quota the open-file limit cannot hold is refused at start, naming the limit
/// and the fixes; one it can hold raises the soft limit to fit.
#[test]
fn the_open_file_limit_follows_the_total_quota_or_start_is_refused() {
    if !xturn_tests::is_root() {
        eprintln!("skipped: needs root to become nobody with given limits");
        return;
    }
    let port = free_udp_port_pair();
    let out = as_nobody_with_nofile(1024, 2048)
        .args([
            "--listening-port",
            &port.to_string(),
            "--total-quota",
            "100000",
        ])
        .output()
        .expect("run setpriv");
    let text = xturn_tests::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for needle in ["--total-quota 100000", "hard limit is 2048", "LimitNOFILE"] {
        assert!(text.contains(needle), "{needle:?} missing: {text}");
    }

    // The default total quota (16384) and a hard limit above what it needs.
    let mut cmd = as_nobody_with_nofile(1024, 19_000);
    cmd.args(["--listening-port", &port.to_string()]);
    let xturn = Proc::spawn("xturn", cmd);
    assert!(
        xturn
            .wait_for_line("listening on udp", Duration::from_secs(10))
            .is_some(),
        "{}",
        xturn.output()
    );
    // prlimit and setpriv exec: the child's PID is xturn's.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", xturn.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(soft >= 16_384 + 1024, "{line}");
}

/// The `Uid:`/`Gid:` line and capability sets of a process, from /proc.
fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .to_string()
}

/// Started as root, xturn serves as nobody with no capability at all (plain UDP on ports
/// above 1024), cannot become root again (it checks setuid(0) fails, and no-new-privs is
/// set for anything it could exec), and still allocates and relays; its status file is
/// 0640 in a 0750 directory of its own.
#[test]
fn started_as_root_it_serves_as_nobody_without_capabilities() {
    if !xturn_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let server =
        xturn_tests::Xturn::start(&["--user", "alice:wonderland", "--allow-loopback-peers"]);
    let pid = server.proc.child.id();
    assert!(
        server
            .proc
            .wait_for_line("setuid(0) refused", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.proc.output()
    );
    for key in ["Uid:", "Gid:"] {
        let l = proc_status(pid, key);
        assert!(
            l.split_whitespace().skip(1).all(|v| v == "65534"),
            "real, effective, saved and filesystem IDs: {l}"
        );
    }
    assert_eq!(
        proc_status(pid, "Groups:").split_whitespace().nth(1),
        Some("65534")
    );
    for key in ["CapPrm:", "CapEff:", "CapInh:", "CapAmb:", "CapBnd:"] {
        let l = proc_status(pid, key);
        assert!(l.ends_with("0000000000000000"), "{l}");
    }
    assert!(proc_status(pid, "NoNewPrivs:").ends_with('1'));

    // It still does its job: allocate, bind a channel, relay both ways.
    let mut c = xturn_tests::TestClient::new(server.addr, "alice", "wonderland");
    let relay = c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        c.channel_bind(0x4001, peer.local_addr().unwrap()),
        xturn_control::client::Answer::Success
    );
    c.sock
        .send_to(
            &xturn_control::wire::channel_data::encode(0x4001, b"as nobody"),
            server.addr,
        )
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = peer.recv_from(&mut buf).expect("relayed to the peer");
    assert_eq!((&buf[..n], from), (&b"as nobody"[..], relay));
    peer.send_to(b"back", relay).unwrap();
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, _) = c.sock.recv_from(&mut buf).expect("relayed to the client");
    assert_eq!(
        &buf[..n],
        &xturn_control::wire::channel_data::encode(0x4001, b"back")[..]
    );

    // The status file: readable by root and the status group only.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = format!("/run/xturn/{pid}/status.json");
    let end = Instant::now() + Duration::from_secs(3);
    while !std::path::Path::new(&path).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    let d = std::fs::metadata(format!("/run/xturn/{pid}")).unwrap();
    assert_eq!(d.permissions().mode() & 0o777, 0o750);
}

/// `--max-bps 100000` on the socket path: 1,000-byte payloads offered at twice that for
/// 4 s each way arrive at 100 kB/s within 10 %, and the drops are counted.
#[test]
fn max_bps_holds_a_flow_to_its_limit_on_the_socket_path() {
    const LIMIT: f64 = 100_000.0;
    let server = xturn_tests::Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--allow-loopback-peers",
        "--max-bps",
        "100000",
    ]);
    let mut c = xturn_tests::TestClient::new(server.addr, "alice", "wonderland");
    let relay = c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        c.channel_bind(0x4001, peer.local_addr().unwrap()),
        xturn_control::client::Answer::Success
    );
    let body = vec![7u8; 1000];
    let frame = xturn_control::wire::channel_data::encode(0x4001, &body);
    let to_peer = xturn_tests::received_rate(
        2 * LIMIT as u64,
        1000,
        4,
        |_| {
            c.sock.send_to(&frame, server.addr).unwrap();
        },
        &peer,
        |n| n,
    );
    let to_client = xturn_tests::received_rate(
        2 * LIMIT as u64,
        1000,
        4,
        |_| {
            peer.send_to(&body, relay).unwrap();
        },
        &c.sock,
        |n| n.saturating_sub(4),
    );
    for (dir, rate) in [("to the peer", to_peer), ("to the client", to_client)] {
        assert!(
            (0.9 * LIMIT..=1.1 * LIMIT).contains(&rate),
            "{dir}: {rate:.0} B/s against a limit of {LIMIT}\n{}",
            server.proc.output()
        );
    }
    // What was dropped is counted, in the status file `xturn stats` reads (as root).
    if xturn_tests::is_root() {
        std::thread::sleep(Duration::from_millis(700));
        let out = Command::new(xturn_bin())
            .args(["stats", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let me = v["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["pid"] == server.proc.child.id()))
            .unwrap_or_else(|| panic!("{v:#}"))
            .clone();
        let packets = me["dropped"]["over_bandwidth_packets"].as_u64().unwrap();
        // About half of 2 x 800 offered datagrams.
        assert!((500..=1100).contains(&packets), "{:#}", me["dropped"]);
    }
}
