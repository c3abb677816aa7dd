//! The real `xturn` binary on loopback with the project's own client: allocate, bind a
//! channel, relay 10,000 datagrams each way with no loss and byte-exact payloads; the
//! Send/Data indication path; and the default deny of loopback peers.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use xturn_control::client::{self, Answer};
use xturn_control::wire::{channel_data, ChannelData, TransactionId};
use xturn_tests::{payload, TestClient, Xturn};

const N: u64 = 10_000;
const WINDOW: u64 = 64;

fn recv_exact(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    sock.recv_from(buf).ok()
}

#[test]
fn channel_data_10k_each_way_no_loss_byte_exact() {
    let server = Xturn::start(&["--user", "alice:wonderland", "--allow-loopback-peers"]);
    let mut c = TestClient::new(server.addr, "alice", "wonderland");
    let relay = c.allocate();
    assert_eq!(relay.ip().to_string(), "127.0.0.1");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert_eq!(c.channel_bind(0x4001, peer_addr), Answer::Success);
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();

    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(120);
    // Client -> peer, in windows so that socket buffers never overflow.
    let mut seen = HashSet::new();
    let mut i = 0;
    while i < N {
        assert!(Instant::now() < deadline, "timed out");
        let end = (i + WINDOW).min(N);
        for k in i..end {
            c.sock
                .send_to(&channel_data::encode(0x4001, &payload(k)), server.addr)
                .unwrap();
        }
        for _ in i..end {
            let (n, from) =
                recv_exact(&peer, &mut buf).expect("peer did not receive a datagram within 2 s");
            assert_eq!(
                from, relay,
                "the peer must see the relayed address as source"
            );
            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
            assert_eq!(&buf[..n], &payload(seq)[..], "payload {seq} not byte-exact");
            assert!(seen.insert(seq), "duplicate {seq}");
        }
        i = end;
    }
    assert_eq!(seen.len() as u64, N);

    // Peer -> client: ChannelData with exactly the payload.
    let mut seen = HashSet::new();
    let mut i = 0;
    while i < N {
        assert!(Instant::now() < deadline, "timed out");
        let end = (i + WINDOW).min(N);
        for k in i..end {
            peer.send_to(&payload(k), relay).unwrap();
        }
        for _ in i..end {
            let (n, from) = recv_exact(&c.sock, &mut buf)
                .expect("client did not receive a datagram within 2 s");
            assert_eq!(from, server.addr);
            let cd = ChannelData::new_checked(&buf[..n]).expect("ChannelData");
            assert_eq!(cd.channel(), 0x4001);
            let p = cd.payload();
            let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
            assert_eq!(p, &payload(seq)[..], "payload {seq} not byte-exact");
            assert!(seen.insert(seq), "duplicate {seq}");
        }
        i = end;
    }
    assert_eq!(seen.len() as u64, N);

    // What the operator sees: the allocation's traffic counted on the socket path.
    let bytes: u64 = (0..N).map(|k| payload(k).len() as u64).sum();
    let a = allocation_counters(&server, relay);
    assert_eq!(
        (&a["sockets"], &a["afxdp"]),
        (
            &serde_json::json!({"to_peer_packets": N, "to_peer_bytes": bytes,
                                "to_client_packets": N, "to_client_bytes": bytes}),
            &serde_json::json!({"to_peer_packets": 0, "to_peer_bytes": 0,
                                "to_client_packets": 0, "to_client_bytes": 0}),
        ),
        "{a:#}"
    );
}

/// The allocation on `relay` in `xturn stats --json` (the server's status file, published
/// every 500 ms), once its counters have settled.
fn allocation_counters(server: &Xturn, relay: SocketAddr) -> serde_json::Value {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the status file is in /run/xturn: run the tests as root (tests/run.sh)"
    );
    let pid = server.proc.child.id();
    let mut last = serde_json::Value::Null;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(600));
        let out = std::process::Command::new(xturn_tests::xturn_bin())
            .args(["stats", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", xturn_tests::output_text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let found = v["servers"].as_array().and_then(|s| {
            s.iter()
                .find(|s| s["pid"] == pid)
                .and_then(|s| s["allocations"].as_array())
                .and_then(|a| a.iter().find(|a| a["relay"] == relay.to_string()))
                .cloned()
        });
        if let Some(a) = found {
            // Two reads in a row agree: every worker has published its last counts.
            if a == last {
                return a;
            }
            last = a;
        }
    }
    panic!("no settled status for pid {pid}, relay {relay}: last {last:#}");
}

#[test]
fn send_and_data_indications() {
    let server = Xturn::start(&["--user", "bob:builder", "--allow-loopback-peers"]);
    let mut c = TestClient::new(server.addr, "bob", "builder");
    let relay = c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // Without a permission nothing passes, either way.
    c.sock
        .send_to(
            &client::send_indication(TransactionId([3; 12]), peer_addr, b"early"),
            server.addr,
        )
        .unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "data without permission was relayed"
    );
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    assert_eq!(c.create_permission(peer_addr), Answer::Success);
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for k in 0..1000u64 {
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&k.to_be_bytes());
        c.sock
            .send_to(
                &client::send_indication(TransactionId(t), peer_addr, &payload(k)),
                server.addr,
            )
            .unwrap();
        let (n, from) = peer.recv_from(&mut buf).expect("peer receive");
        assert_eq!(from, relay);
        assert_eq!(&buf[..n], &payload(k)[..]);
        peer.send_to(&payload(k + 1), relay).unwrap();
        let (n, _) = c.sock.recv_from(&mut buf).expect("client receive");
        let (p, data) = client::data_indication(&buf[..n]).expect("Data indication");
        assert_eq!(p, peer_addr);
        assert_eq!(data, payload(k + 1));
    }
    // Send indications are counted by the control plane, Data indications by a worker.
    let a = allocation_counters(&server, relay);
    let bytes = |r: std::ops::Range<u64>| -> u64 { r.map(|k| payload(k).len() as u64).sum() };
    assert_eq!(
        a["sockets"],
        serde_json::json!({"to_peer_packets": 1000, "to_peer_bytes": bytes(0..1000),
                           "to_client_packets": 1000, "to_client_bytes": bytes(1..1001)}),
        "{a:#}"
    );
}

#[test]
fn loopback_peers_are_denied_by_default() {
    let server = Xturn::start(&["--user", "eve:pw"]);
    let mut c = TestClient::new(server.addr, "eve", "pw");
    c.allocate();
    for peer in [
        "127.0.0.2:9",
        "[::ffff:127.0.0.2]:9",
        "0.0.0.0:9",
        "[::1]:9",
        "169.254.169.254:80",
    ] {
        let peer: SocketAddr = peer.parse().unwrap();
        assert_eq!(c.create_permission(peer), Answer::Error(403), "{peer}");
        assert_eq!(c.channel_bind(0x4000, peer), Answer::Error(403), "{peer}");
    }
    // 127.0.0.1 is this server's relay address: a permission for it is fine (two clients
    // of one server relay to each other), but only its relayed transport addresses may
    // be sent to, never another port of the host.
    assert_eq!(
        c.create_permission("127.0.0.1:9".parse().unwrap()),
        Answer::Success
    );
    assert_eq!(
        c.channel_bind(0x4000, "127.0.0.1:9".parse().unwrap()),
        Answer::Error(403)
    );
    assert_eq!(c.channel_bind(0x4000, server.addr), Answer::Error(403));
    let mut other = TestClient::new(server.addr, "eve", "pw");
    let other_relay = other.allocate();
    assert_eq!(c.channel_bind(0x4000, other_relay), Answer::Success);
    // The server's own listening endpoint, even with loopback peers allowed.
    let server2 = Xturn::start(&["--user", "eve:pw", "--allow-loopback-peers"]);
    let mut c2 = TestClient::new(server2.addr, "eve", "pw");
    c2.allocate();
    assert_eq!(c2.channel_bind(0x4000, server2.addr), Answer::Error(403));
}

#[test]
fn bad_configuration_fails_fast_with_a_reason() {
    let out = std::process::Command::new(xturn_tests::xturn_bin())
        .args(["--user", "no-colon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAME:PASSWORD"), "{err}");
    let out = std::process::Command::new(xturn_tests::xturn_bin())
        .args(["--config", "/nonexistent/xturn.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn default_start_prints_a_demo_user_that_works() {
    let server = Xturn::start(&[]);
    let line = server
        .proc
        .wait_for_line("demo user:", Duration::from_secs(5))
        .expect("demo user line");
    // "demo user: demo password: XXXX realm: xturn"
    let words: Vec<&str> = line.split_whitespace().collect();
    let pw = words[words.iter().position(|w| *w == "password:").unwrap() + 1];
    let mut c = TestClient::new(server.addr, "demo", pw);
    let relay = c.allocate();
    assert_eq!(relay.ip(), server.addr.ip());
    let r = c.request(
        xturn_control::wire::Method::Refresh,
        client::refresh_body(Duration::ZERO),
    );
    assert_eq!(c.turn.answer(&r), Answer::Success);
}
