//! RFC 6062 TCP allocations with the real binary on loopback. coturn's
//! `turnutils_uclient -T` (client to client through two TCP allocations: one side sends
//! Connect, the other gets a ConnectionAttempt, both bind data connections), over TCP
//! and over TLS (`-T -S`), with 0 lost. The project's own client against a TCP peer
//! written here: Connect to an outside peer (which sees the relayed address) and 4 MiB
//! each way byte-exact through a joined data connection (back-pressure: the client reads
//! only after it wrote everything); a peer connecting in is refused without a permission
//! and announced with a ConnectionAttempt with one; a side that ends closes the other
//! after what was queued for it; closing the control connection closes every connection
//! of its allocation.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use xturn_control::client::{self, Answer};
use xturn_control::wire::{attr, Message, Method};
use xturn_tests::{closed_within, have, tcp_turn, uclient, StreamTurn, TestPki, Xturn};

fn server(extra: &[&str]) -> Xturn {
    let mut args = vec!["--user", "alice:wonderland", "--allow-loopback-peers"];
    args.extend(extra);
    Xturn::start(&args)
}

fn connection_id(msg: &[u8]) -> u32 {
    let m = Message::new_checked(msg).unwrap();
    let a = m.attribute(attr::CONNECTION_ID).expect("CONNECTION-ID");
    u32::from_be_bytes(a.value.try_into().unwrap())
}

/// ConnectionBind `id` on a new connection to `server`: the joined stream and the bytes
/// of the peer's that came with the answer.
fn bind(server: SocketAddr, id: u32) -> (TcpStream, Vec<u8>) {
    let mut d = tcp_turn(server, "alice", "wonderland");
    let r = d.request(Method::ConnectionBind, |b| {
        b.u32_attr(attr::CONNECTION_ID, id);
    });
    assert_eq!(
        d.turn.answer(&r),
        Answer::Success,
        "{:?}",
        client::error_code(&r)
    );
    d.into_parts()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Read exactly `n` bytes, starting with `first`.
fn read_n(s: &mut TcpStream, first: Vec<u8>, n: usize) -> Vec<u8> {
    let mut got = first;
    let mut buf = vec![0u8; 65536];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while got.len() < n {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("after {} of {n} bytes: {e}", got.len()),
        }
    }
    got
}

#[test]
fn uclient_client_to_client_through_tcp_allocations() {
    assert!(have("turnutils_uclient"), "run tests/run.sh (coturn)");
    let x = server(&[]);
    // 4 clients x 500 messages of 1000 bytes, each pair joined through two allocations.
    uclient(
        x.addr.port(),
        &[
            "-T",
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-n",
            "500",
            "-l",
            "1000",
            "-m",
            "4",
        ],
        2000,
    );
}

#[test]
fn uclient_client_to_client_through_tcp_allocations_over_tls() {
    assert!(have("turnutils_uclient"), "run tests/run.sh (coturn)");
    let pki = TestPki::new("rfc6062");
    let port = xturn_tests::free_tcp_port();
    let p = port.to_string();
    let _x = server(&[
        "--cert",
        pki.cert.to_str().unwrap(),
        "--pkey",
        pki.key.to_str().unwrap(),
        "--tls-listening-port",
        &p,
    ]);
    uclient(
        port,
        &[
            "-T",
            "-S",
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-n",
            "300",
            "-l",
            "500",
            "-m",
            "2",
        ],
        600,
    );
}

#[test]
fn connect_to_an_outside_peer_four_mib_each_way() {
    let listen = format!("127.0.0.1:{}", xturn_tests::free_tcp_port());
    let x = server(&["--metrics-listen", &listen]);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // The peer: echo everything, then report who connected and how much it saw.
    let echo = std::thread::spawn(move || {
        let (mut s, from) = peer.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    n += k;
                    s.write_all(&buf[..k]).unwrap();
                }
            }
        }
        (from, n)
    });
    let mut c = tcp_turn(x.addr, "alice", "wonderland");
    let relay = c.allocate_transport(6);
    // A Connect is answered with the connection's id once the server is connected.
    let r = c.request(Method::Connect, |b| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(
        c.turn.answer(&r),
        Answer::Success,
        "{:?}",
        client::error_code(&r)
    );
    let id = connection_id(&r);
    // The same peer again: 446.
    let r = c.request(Method::Connect, |b| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(client::error_code(&r), Some(446));
    // Nobody listening there: 447.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = c.request(Method::Connect, |b| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, dead);
    });
    assert_eq!(client::error_code(&r), Some(447));

    let (mut d, first) = bind(x.addr, id);
    assert!(first.is_empty(), "the peer sent nothing yet");
    let data = pattern(4 << 20, 0x5a);
    // Write it all before reading anything: the echo fills every queue on the way, so
    // this only finishes if the server stops reading while a queue is full and resumes.
    let mut w = d.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = read_n(&mut d, Vec::new(), data.len());
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the echo differs from what was sent");
    drop(writer.join().unwrap());
    // The client ends its data connection: the peer's side is closed.
    d.shutdown(std::net::Shutdown::Both).unwrap();
    drop(d);
    let (from, n) = echo.join().unwrap();
    assert_eq!(from, relay, "the peer sees the relayed address");
    assert_eq!(n, data.len());
    // The metrics count the joined bytes each way, and the peer connection is gone.
    let url = format!("http://{listen}/metrics");
    let want = data.len() as f64;
    let (up, down, peers) = (
        "xturn_tcp_relayed_bytes_total{direction=to_peer}",
        "xturn_tcp_relayed_bytes_total{direction=to_client}",
        "xturn_tcp_peer_connections{}",
    );
    let m = xturn_tests::scrape_until(None, &url, |m| {
        m.get(up) == Some(&want) && m.get(down) == Some(&want) && m.get(peers) == Some(&0.0)
    });
    assert_eq!(
        (m.get(up), m.get(down), m.get(peers)),
        (Some(&want), Some(&want), Some(&0.0)),
        "{m:#?}"
    );
    // The control connection still serves.
    let r = c.request(Method::Refresh, |b| {
        b.u32_attr(attr::LIFETIME, 600);
    });
    assert_eq!(c.turn.answer(&r), Answer::Success);
}

/// A ConnectionAttempt on the control connection `c`: (id, peer address).
fn connection_attempt<S: Read + Write>(c: &mut StreamTurn<S>) -> (u32, SocketAddr) {
    let m = c.read_msg().expect("a ConnectionAttempt");
    let msg = Message::new_checked(&m[..]).unwrap();
    assert_eq!(msg.method(), Method::ConnectionAttempt);
    (
        connection_id(&m),
        client::xor_address(&m, attr::XOR_PEER_ADDRESS).unwrap(),
    )
}

#[test]
fn a_peer_connects_in_with_a_permission_and_each_end_closes_the_other() {
    let x = server(&[]);
    let mut c = tcp_turn(x.addr, "alice", "wonderland");
    let relay = c.allocate_transport(6);
    // No permission: the relay closes the peer's connection.
    let mut p = TcpStream::connect(relay).unwrap();
    assert!(closed_within(&mut p, Duration::from_secs(3)));
    let r = c.request(Method::CreatePermission, |b| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, "127.0.0.1:1".parse().unwrap());
    });
    assert_eq!(c.turn.answer(&r), Answer::Success);

    // Permitted: announced to the client, joined by its ConnectionBind. What the peer
    // sent before the bind waits and comes first.
    let mut p = TcpStream::connect(relay).unwrap();
    let early = pattern(100_000, 1);
    p.write_all(&early).unwrap();
    let (id, from) = connection_attempt(&mut c);
    assert_eq!(from, p.local_addr().unwrap());
    let (mut d, first) = bind(x.addr, id);
    let got = read_n(&mut d, first, early.len());
    assert!(got == early);
    let back = pattern(300_000, 2);
    d.write_all(&back).unwrap();
    let got = read_n(&mut p, Vec::new(), back.len());
    assert!(got == back);
    // The peer writes its last bytes and ends: the client gets them, then the end.
    let last = pattern(200_000, 3);
    p.write_all(&last).unwrap();
    drop(p);
    let got = read_n(&mut d, Vec::new(), last.len());
    assert!(got == last);
    assert!(closed_within(&mut d, Duration::from_secs(3)));

    // Another one; this time the control connection ends: every connection of the
    // allocation is closed, the listener too.
    let mut p = TcpStream::connect(relay).unwrap();
    let (id, _) = connection_attempt(&mut c);
    let (mut d, _) = bind(x.addr, id);
    d.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut p, Vec::new(), 4), b"ping");
    let (control, _) = c.into_parts();
    drop(control);
    assert!(closed_within(&mut p, Duration::from_secs(3)));
    assert!(closed_within(&mut d, Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect_timeout(&relay, Duration::from_secs(2)).is_err(),
        "the relayed address stopped listening"
    );
}

#[test]
fn connection_bind_rules_over_the_wire() {
    let x = server(&[]);
    let mut c = tcp_turn(x.addr, "alice", "wonderland");
    c.allocate_transport(6);
    // An id nobody has: 400, and the connection stays a STUN connection.
    let mut d = tcp_turn(x.addr, "alice", "wonderland");
    let r = d.request(Method::ConnectionBind, |b| {
        b.u32_attr(attr::CONNECTION_ID, 12345);
    });
    assert_eq!(client::error_code(&r), Some(400));
    // No ChannelBind on a TCP allocation.
    let r = c.request(Method::ChannelBind, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]);
        b.xor_addr(attr::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().unwrap());
    });
    assert_eq!(client::error_code(&r), Some(400));
    // A TCP allocation over UDP: 400.
    let mut u = xturn_tests::TestClient::new(x.addr, "alice", "wonderland");
    let r = u.request(Method::Allocate, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(client::error_code(&r), Some(400));
}
