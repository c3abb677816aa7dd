//! TURN over TCP on the client leg (RFC 8656 section 3.1) with the real binary on loopback:
//! a client of this file's own stream framing (written from the RFC, not from xturn's
//! code) allocates over a connection, relays to a UDP peer through a channel (ChannelData
//! padded to 4 bytes both ways, several messages written at once and split at odd places)
//! and with Send/Data indications; closing the connection ends the allocation. A half
//! message that stalls is closed at the first-message deadline; junk, an oversize STUN
//! length and ChannelData before any allocation close their connection and no other.
//! Headless Chromium with `?transport=tcp` relays through it (getStats: relayProtocol
//! tcp). coturn's `turnutils_uclient -t` is in coturn_interop.rs, aioice over TCP in
//! aioice_interop.rs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use xturn_control::client::{self, Answer};
use xturn_control::wire::{attr, channel_data, Method, TransactionId};
use xturn_tests::{closed_within, payload, tcp_turn, Xturn};

/// ChannelData padded for a stream.
fn padded(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut m = channel_data::encode(channel, data);
    m.resize((m.len() + 3) & !3, 0);
    m
}

fn server() -> Xturn {
    Xturn::start(&["--user", "alice:wonderland", "--allow-loopback-peers"])
}

#[test]
fn allocation_over_tcp_relays_both_ways_and_ends_with_the_connection() {
    let metrics_port = xturn_tests::free_tcp_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let server = Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--allow-loopback-peers",
        "--metrics-listen",
        &listen,
    ]);
    let url = format!("http://{listen}/metrics");
    let mut c = tcp_turn(server.addr, "alice", "wonderland");
    let relay = c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let chan = |ch: u16, p: SocketAddr| {
        move |b: &mut xturn_control::wire::MessageBuilder| {
            b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0]);
            b.xor_addr(attr::XOR_PEER_ADDRESS, p);
        }
    };
    assert_eq!(
        c.answer(Method::ChannelBind, chan(0x4000, peer_addr)),
        Answer::Success
    );

    // Client -> peer: 300 ChannelData messages, 10 per write, each write cut in two at
    // an odd offset, so messages span reads.
    const N: u64 = 300;
    let mut buf = [0u8; 2048];
    for group in 0..N / 10 {
        let bytes: Vec<u8> = (group * 10..group * 10 + 10)
            .flat_map(|k| padded(0x4000, &payload(k)))
            .collect();
        let cut = (bytes.len() / 3) | 1;
        c.s.write_all(&bytes[..cut]).unwrap();
        c.s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        c.s.write_all(&bytes[cut..]).unwrap();
        for k in group * 10..group * 10 + 10 {
            let (n, from) = peer
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {k} lost: {e}"));
            assert_eq!((from, &buf[..n]), (relay, &payload(k)[..]), "datagram {k}");
        }
    }
    // Peer -> client: ChannelData, padded on the stream.
    for k in 0..N {
        peer.send_to(&payload(k), relay).unwrap();
        let m = c
            .read_msg()
            .unwrap_or_else(|| panic!("datagram {k} to the client lost"));
        assert_eq!(m, channel_data::encode(0x4000, &payload(k)), "datagram {k}");
    }
    // Send and Data indications with a second peer port.
    let peer2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer2
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let p2 = peer2.local_addr().unwrap();
    for k in 0..20u64 {
        c.s.write_all(&client::send_indication(
            TransactionId([k as u8; 12]),
            p2,
            &payload(k),
        ))
        .unwrap();
        let (n, from) = peer2.recv_from(&mut buf).expect("Send to the peer");
        assert_eq!((from, &buf[..n]), (relay, &payload(k)[..]));
        peer2.send_to(&payload(k), relay).unwrap();
        let m = c.read_msg().expect("Data to the client");
        assert_eq!(client::data_indication(&m), Some((p2, payload(k))));
    }

    // Counted like any allocation: `xturn sessions` (the TCP thread's data-plane copy
    // counts the ChannelData, the control plane the Send indications).
    let pid = server.proc.child.id().to_string();
    let end = Instant::now() + Duration::from_secs(5);
    let counted = loop {
        let out = std::process::Command::new(xturn_tests::xturn_bin())
            .args(["sessions", "--pid", &pid, "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let row = v["sessions"][0]["sockets"].clone();
        let got = (
            row["to_peer_packets"].as_u64(),
            row["to_client_packets"].as_u64(),
        );
        if got == (Some(N + 20), Some(N + 20)) || Instant::now() > end {
            break (got, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(counted.0, (Some(N + 20), Some(N + 20)), "{:#}", counted.1);
    assert_eq!(
        counted.1["sessions"][0]["transport"], "tcp",
        "{:#}",
        counted.1
    );
    let m = xturn_tests::scrape_until(None, &url, |m| {
        m.get("xturn_tcp_connections{}") == Some(&1.0)
    });
    assert_eq!(m.get("xturn_tcp_connections{}"), Some(&1.0), "{m:#?}");
    assert_eq!(m.get("xturn_tcp_dropped_total{}"), Some(&0.0), "{m:#?}");
    // The allocation ends with the connection: the relayed port is free again at once.
    drop(c);
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        peer.send_to(b"late", relay).unwrap();
        let free = UdpSocket::bind(relay).is_ok();
        if free {
            break;
        }
        assert!(
            Instant::now() < end,
            "the relayed address {relay} is still held after the connection closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the server serves new connections.
    let mut again = tcp_turn(server.addr, "alice", "wonderland");
    again.allocate();
    let m = xturn_tests::scrape_until(None, &url, |m| {
        m.get("xturn_tcp_connections{}") == Some(&1.0)
    });
    assert_eq!(
        m.get("xturn_tcp_connections{}"),
        Some(&1.0),
        "the closed one is gone: {m:#?}"
    );
}

#[test]
fn bad_streams_are_closed_without_touching_other_connections() {
    let server = server();
    let mut good = tcp_turn(server.addr, "alice", "wonderland");
    let relay = good.allocate();

    // Junk.
    let mut junk = tcp_turn(server.addr, "alice", "wonderland");
    junk.s.write_all(&[0xff; 64]).unwrap();
    assert!(
        closed_within(&mut junk.s, Duration::from_secs(2)),
        "junk kept open"
    );
    // A STUN header announcing a message longer than any request.
    let mut big = tcp_turn(server.addr, "alice", "wonderland");
    big.s
        .write_all(&[0x00, 0x03, 0xff, 0xf0, 0x21, 0x12, 0xa4, 0x42])
        .unwrap();
    assert!(
        closed_within(&mut big.s, Duration::from_secs(2)),
        "oversize kept open"
    );
    // ChannelData on a connection without an allocation.
    let mut early = tcp_turn(server.addr, "alice", "wonderland");
    early.s.write_all(&padded(0x4000, b"hello")).unwrap();
    assert!(
        closed_within(&mut early.s, Duration::from_secs(2)),
        "ChannelData before Allocate"
    );
    // After a first message, the start of a long ChannelData without an allocation: closed
    // once more than a STUN message's worth is pending, not buffered up to 64 KiB.
    let mut long = tcp_turn(server.addr, "alice", "wonderland");
    let binding = client::binding_request(TransactionId([3; 12]), false);
    long.s.write_all(&binding).unwrap();
    assert!(long.read_msg().is_some(), "a Binding answer");
    long.s.write_all(&[0x40, 0x00, 0xea, 0x60]).unwrap();
    long.s.write_all(&[0u8; 9000]).unwrap();
    assert!(
        closed_within(&mut long.s, Duration::from_secs(2)),
        "a long pending message kept"
    );
    // Half a message, then nothing: closed at the first-message deadline (5 s).
    let t0 = Instant::now();
    let mut stall = tcp_turn(server.addr, "alice", "wonderland");
    stall.s.write_all(&[0x00, 0x01, 0x00, 0x08, 0x21]).unwrap();
    assert!(
        closed_within(&mut stall.s, Duration::from_secs(8)),
        "a stalled half message kept open"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(7),
        "closed after {waited:?}"
    );

    // The good connection still has its allocation and relays.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let p = peer.local_addr().unwrap();
    let perm = move |b: &mut xturn_control::wire::MessageBuilder| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, p);
    };
    assert_eq!(good.answer(Method::CreatePermission, perm), Answer::Success);
    good.s
        .write_all(&client::send_indication(
            TransactionId([9; 12]),
            p,
            b"still here",
        ))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the good connection relays");
    assert_eq!((from, &buf[..n]), (relay, &b"still here"[..]));
}

#[test]
fn chromium_relay_only_over_tcp() {
    let server = server();
    let url = format!("turn:127.0.0.1:{}?transport=tcp", server.addr.port());
    let r = xturn_tests::chromium_relay_only(None, &url, &|| server.proc.output());
    for pc in ["a", "b"] {
        assert_eq!(r[pc]["relayProtocol"].as_str(), Some("tcp"), "{r:#}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// 10,000 connections that never send: the server holds them within 20 MiB (README:
/// a connection costs its socket and a small entry; buffers grow only with data) and
/// closes every one at the first-message deadline.
#[test]
fn ten_thousand_idle_connections_are_bounded_and_closed() {
    const N: usize = 10_000;
    let lim = open_file_limit();
    assert!(
        lim >= N as u64 + 1000,
        "the open-file limit {lim} is below {N} connections"
    );
    let server = Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--total-quota",
        "1000",
        "--max-tcp-connections",
        "12000",
        "--max-tcp-connections-per-ip",
        "0",
    ]);
    let pid = server.proc.child.id();
    let before = rss_kib(pid);
    let t0 = Instant::now();
    let conns: Vec<TcpStream> = (0..N)
        .map(|i| TcpStream::connect(server.addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Every connection accepted (the thread takes them as they come).
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_kib(pid);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "connecting took {:?}: the deadline would close them first",
        t0.elapsed()
    );
    assert!(
        held < before + 20 * 1024,
        "{N} idle connections: RSS {before} kB -> {held} kB"
    );
    eprintln!("{N} idle connections: RSS {before} kB -> {held} kB");
    // All closed at the deadline (5 s after each was accepted), none left open.
    let end = t0 + Duration::from_secs(12);
    let mut open = 0;
    for mut c in conns {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        c.set_read_timeout(Some(left)).unwrap();
        let mut b = [0u8; 1];
        let closed = match c.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        if !closed {
            open += 1;
        }
    }
    assert_eq!(open, 0, "connections still open after the deadline");
    // The server still serves.
    let mut c = tcp_turn(server.addr, "alice", "wonderland");
    c.allocate();
}

fn open_file_limit() -> u64 {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
