//! `--metrics-listen` with the real binary on loopback: `/metrics` scraped and parsed by
//! the prometheus_client package's OpenMetrics parser matches a known run exactly;
//! `/healthz` fails while a worker thread is stopped (ptrace, only that thread) and
//! recovers when it runs again; `/readyz` turns 503 while draining.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};
use xturn_control::client::{self, Answer};
use xturn_control::wire::{attr, Method};
use xturn_tests::free_tcp_port;
use xturn_tests::{
    channel_to_loopback_peer, payload, relay_lockstep, samples, scrape, scrape_until, thread_id,
    StoppedThread, TestClient, Xturn,
};

fn server_with_metrics(extra: &[&str]) -> (Xturn, String) {
    let port = free_tcp_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--user",
        "alice:wonderland",
        "--allow-loopback-peers",
        "--metrics-listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    (Xturn::start(&args), format!("http://{listen}"))
}

#[test]
fn metrics_match_a_known_run_exactly() {
    let (server, base) = server_with_metrics(&["--user-quota", "1"]);
    let url = format!("{base}/metrics");
    // Allocate requests: 2 here, 2 for the second allocation, 2 for the wrong password.
    // One allocation (401, then 200), one channel (which installs a permission), 200
    // datagrams each way.
    let (mut a, peer, relay) = channel_to_loopback_peer(server.addr, "alice", "wonderland");
    let n = 200u64;
    relay_lockstep(&mut a, &peer, relay, 0, n);
    let bytes: u64 = (0..n).map(|k| payload(k).len() as u64).sum();
    // A second allocation of alice: 401, then 486 (user quota).
    let mut a2 = TestClient::new(server.addr, "alice", "wonderland");
    let r = a2.request(Method::Allocate, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(client::error_code(&r), Some(486));
    // A wrong password: 401 (no credentials), then 401 (bad integrity).
    let mut m = TestClient::new(server.addr, "alice", "not-the-password");
    let r = m.request(Method::Allocate, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(client::error_code(&r), Some(401));
    // Two Binding requests, answered by the socket workers without server state.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..2u8 {
        let tid = xturn_control::wire::TransactionId([i + 7; 12]);
        s.send_to(&client::binding_request(tid, true), server.addr)
            .unwrap();
        s.recv_from(&mut buf).expect("Binding answered");
    }

    let key = "xturn_relayed_packets_total{direction=to_client,path=sockets}";
    let got = scrape_until(None, &url, |s| s.get(key) == Some(&(n as f64)));
    let expect: BTreeMap<&str, f64> = [
        ("xturn_allocations{}", 1.0),
        ("xturn_permissions{}", 1.0),
        ("xturn_channels{}", 1.0),
        ("xturn_draining{}", 0.0),
        ("xturn_requests_total{method=allocate}", 6.0),
        ("xturn_requests_total{method=channel_bind}", 1.0),
        ("xturn_responses_total{code=200,method=allocate}", 1.0),
        ("xturn_responses_total{code=401,method=allocate}", 4.0),
        ("xturn_responses_total{code=486,method=allocate}", 1.0),
        ("xturn_responses_total{code=200,method=channel_bind}", 1.0),
        ("xturn_auth_failures_total{reason=no_credentials}", 3.0),
        ("xturn_auth_failures_total{reason=bad_integrity}", 1.0),
        ("xturn_auth_failures_total{reason=unknown_user}", 0.0),
        ("xturn_auth_failures_total{reason=stale_nonce}", 0.0),
        ("xturn_quota_rejections_total{quota=user}", 1.0),
        ("xturn_quota_rejections_total{quota=total}", 0.0),
        ("xturn_unauthorized_shed_total{}", 0.0),
        (
            "xturn_relayed_packets_total{direction=to_peer,path=sockets}",
            n as f64,
        ),
        (
            "xturn_relayed_packets_total{direction=to_client,path=sockets}",
            n as f64,
        ),
        (
            "xturn_relayed_bytes_total{direction=to_peer,path=sockets}",
            bytes as f64,
        ),
        (
            "xturn_relayed_bytes_total{direction=to_client,path=sockets}",
            bytes as f64,
        ),
        (
            "xturn_relayed_packets_total{direction=to_peer,path=afxdp}",
            0.0,
        ),
        ("xturn_dropped_total{reason=not_stun}", 0.0),
    ]
    .into_iter()
    .collect();
    for (k, v) in &expect {
        assert_eq!(got.get(*k), Some(v), "{k}; all samples: {got:#?}");
    }
    // Xturn::start's readiness probe sent Binding requests too: at least our two.
    let binding = got["xturn_stateless_answers_total{kind=binding,path=sockets}"];
    assert!(binding >= 2.0, "{binding}");
    // No label carries a user name or an address.
    for k in got.keys() {
        assert!(
            !k.contains("alice") && !k.contains("127.0.0.1"),
            "per-user or per-address label: {k}"
        );
    }

    // The counters stay when the allocation ends (Refresh 0); the gauges go to zero.
    let r = a.request(Method::Refresh, |b| {
        b.attr(attr::LIFETIME, &0u32.to_be_bytes());
    });
    assert_eq!(a.turn.answer(&r), Answer::Success);
    let got = scrape_until(None, &url, |s| s.get("xturn_allocations{}") == Some(&0.0));
    assert_eq!(got["xturn_allocations{}"], 0.0);
    assert_eq!(got["xturn_channels{}"], 0.0);
    assert_eq!(
        got[key], n as f64,
        "a counter went down with its allocation"
    );
    assert_eq!(got["xturn_responses_total{code=200,method=refresh}"], 1.0);
}

fn status_of(url: &str) -> (u64, String) {
    let v = scrape(None, url);
    (
        v["status"].as_u64().unwrap(),
        v["body"].as_str().unwrap_or("").to_string(),
    )
}

fn status_until(url: &str, code: u64) -> (u64, String) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = status_of(url);
        if r.0 == code || Instant::now() > end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn healthz_fails_while_a_worker_thread_is_stopped_and_readyz_while_draining() {
    if !xturn_tests::is_root() {
        eprintln!("skipped: ptrace of another user's thread needs root");
        return;
    }
    let (server, base) = server_with_metrics(&["--threads", "2"]);
    let (health, ready) = (format!("{base}/healthz"), format!("{base}/readyz"));
    assert_eq!(status_of(&health), (200, "ok\n".into()));
    assert_eq!(status_of(&ready), (200, "ready\n".into()));
    let pid = server.proc.child.id();
    {
        let _stopped = StoppedThread::stop(thread_id(pid, "xturn-worker-1"));
        let (code, body) = status_until(&health, 503);
        assert_eq!(code, 503, "healthz with a stopped worker: {body}");
        assert!(body.contains("worker thread 1"), "{body}");
        assert!(!body.contains("worker thread 0"), "{body}");
        assert_eq!(status_of(&ready).0, 503);
    }
    assert_eq!(status_until(&health, 200), (200, "ok\n".into()));

    // Draining with an allocation left: alive, not ready.
    let mut a = TestClient::new(server.addr, "alice", "wonderland");
    a.allocate();
    let ok = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(status_until(&ready, 503), (503, "draining\n".into()));
    assert_eq!(status_of(&health), (200, "ok\n".into()));
    let got = samples(&scrape(None, &format!("{base}/metrics")));
    assert_eq!(got["xturn_draining{}"], 1.0);
}
