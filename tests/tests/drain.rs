//! Drain with the real `xturn` binary on loopback: `xturn drain` (and SIGUSR1) stop new
//! allocations with 300 Try Alternate (or 508 without an alternate), the allocation that
//! exists keeps relaying without a lost datagram and can be refreshed, and the server exits
//! 0 when it ends, or at `--drain-timeout` when it does not.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use xturn_control::auth::{long_term_key, PasswordAlgorithm};
use xturn_control::client::{self, Answer};
use xturn_control::wire::{attr, Message, Method};
use xturn_tests::{channel_to_loopback_peer, relay_lockstep, TestClient, Xturn};

/// Wait (bounded) for the server to exit.
fn exit_within(server: &mut Xturn, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(s)) = server.proc.child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn signal_usr1(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -USR1 {pid}");
}

#[test]
fn xturn_drain_sends_new_allocations_away_and_exits_when_the_last_ends() {
    let mut server = Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--user",
        "bob:builder",
        "--allow-loopback-peers",
        "--alternate-server",
        "127.0.0.1:3999",
        "--log-level",
        "info",
    ]);
    let (mut a, peer, relay) = channel_to_loopback_peer(server.addr, "alice", "wonderland");
    relay_lockstep(&mut a, &peer, relay, 0, 100);

    // `xturn drain --pid` (several test servers run at once: the pid picks ours).
    let pid = server.proc.child.id();
    let out = std::process::Command::new(xturn_tests::xturn_bin())
        .args(["drain", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", xturn_tests::output_text(&out));
    server
        .proc
        .wait_for_line("draining", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no drain in the log:\n{}", server.proc.output()));

    // A new allocation: 300 naming the alternate, authenticated with bob's key.
    let mut b = TestClient::new(server.addr, "bob", "builder");
    let r = b.request(Method::Allocate, |m| {
        m.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(client::error_code(&r), Some(300), "{r:?}");
    let m = Message::new_checked(&r[..]).unwrap();
    let alt = attr::decode_address(m.attribute(attr::ALTERNATE_SERVER).unwrap().value).unwrap();
    assert_eq!(alt, "127.0.0.1:3999".parse::<SocketAddr>().unwrap());
    let key = long_term_key(PasswordAlgorithm::Md5, "bob", "xturn", "builder");
    assert!(m.verify_integrity(key.as_bytes()).is_ok());

    // The existing allocation: refreshed, and relaying without a lost datagram.
    let r = a.request(
        Method::Refresh,
        client::refresh_body(Duration::from_secs(600)),
    );
    assert_eq!(a.turn.answer(&r), Answer::Success);
    relay_lockstep(&mut a, &peer, relay, 100, 1000);
    assert!(
        exit_within(&mut server, Duration::from_millis(500)).is_none(),
        "the server must wait for its last allocation"
    );

    // Its end is the server's end: exit 0.
    let r = a.request(Method::Refresh, client::refresh_body(Duration::ZERO));
    assert_eq!(a.turn.answer(&r), Answer::Success);
    let status = exit_within(&mut server, Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "still running after the last allocation:\n{}",
            server.proc.output()
        )
    });
    assert!(status.success(), "{status:?}\n{}", server.proc.output());
    assert!(server
        .proc
        .wait_for_line("drained", Duration::from_secs(1))
        .is_some());
}

#[test]
fn sigusr1_without_an_alternate_answers_508_and_the_drain_timeout_ends_it() {
    let mut server = Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--drain-timeout",
        "2",
        "--log-level",
        "info",
    ]);
    let mut a = TestClient::new(server.addr, "alice", "wonderland");
    a.allocate();
    signal_usr1(server.proc.child.id());
    server
        .proc
        .wait_for_line("draining", Duration::from_secs(5))
        .expect("drain in the log");
    let started = Instant::now();
    let mut b = TestClient::new(server.addr, "alice", "wonderland");
    let r = b.request(Method::Allocate, |m| {
        m.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(client::error_code(&r), Some(508));
    // The allocation is kept alive past the timeout: the server stops anyway, 0.
    let status = exit_within(&mut server, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit at the drain timeout:\n{}", server.proc.output()));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(server
        .proc
        .wait_for_line("drain timeout", Duration::from_secs(1))
        .is_some());
}

#[test]
fn a_drain_with_no_allocation_exits_at_once() {
    let mut server = Xturn::start(&["--user", "alice:wonderland"]);
    signal_usr1(server.proc.child.id());
    let status = exit_within(&mut server, Duration::from_secs(5)).expect("exit");
    assert!(status.success(), "{status:?}");
}
