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
