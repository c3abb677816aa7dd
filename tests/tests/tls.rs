//! TURN over TLS (`turns:`, RFC 8656 section 3.1) with the real binary on loopback and a
//! CA made at test time (Debian's openssl): Python's ssl (OpenSSL) verifies the
//! certificate and gets ALPN `stun.turn` (RFC 7443) and a STUN answer through it; a client
//! trusting another CA fails the handshake and plain text on the TLS port is closed, while
//! others are served; a SIGHUP with new certificate files serves the new certificate to
//! new connections. coturn's `turnutils_uclient -S -t` relays with 0 lost, headless
//! Chromium with `turns:` reports relayProtocol tls. aioice over TLS is in
//! aioice_interop.rs.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use xturn_control::client::{self, Answer};
use xturn_control::wire::{attr, channel_data, Method, TransactionId};
use xturn_tests::{free_tcp_port, have, output_text, payload, StreamTurn, TestPki, Xturn};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The project's client over TLS to 127.0.0.1:`port`, trusting `ca`, offering ALPN
/// stun.turn.
fn tls_turn(port: u16, ca: &std::path::Path, user: &str, pass: &str) -> StreamTurn<Tls> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated, reason = "the ring provider, as the server uses")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"stun.turn".to_vec()];
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    StreamTurn::new(rustls::StreamOwned::new(conn, sock), user, pass)
}

fn tls_server(pki: &TestPki, extra: &[&str]) -> (Xturn, u16) {
    let port = free_tcp_port();
    let mut args = vec![
        "--user",
        "alice:wonderland",
        "--allow-loopback-peers",
        "--rfc5766-channels",
        "--cert",
        pki.cert.to_str().unwrap(),
        "--pkey",
        pki.key.to_str().unwrap(),
    ];
    let p = port.to_string();
    args.extend(["--tls-listening-port", &p]);
    args.extend(extra);
    (Xturn::start(&args), port)
}

/// `tls_probe.py` against 127.0.0.1:`port` trusting `ca`, offering `alpn`.
fn probe(port: u16, ca: &std::path::Path, alpn: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/tls_probe.py");
    let out = Command::new("timeout")
        .args(["20", "python3", script, "127.0.0.1", &port.to_string()])
        .arg(ca)
        .arg(alpn)
        .output()
        .unwrap();
    let text = output_text(&out);
    serde_json::from_str(text.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|_| panic!("tls_probe.py: {text}"))
}

#[test]
fn tls_handshake_alpn_and_stun_then_bad_clients_fail_cleanly() {
    let pki = TestPki::new("tls");
    let (server, port) = tls_server(&pki, &[]);
    let r = probe(port, &pki.ca, "stun.turn");
    assert_eq!(r["ok"], true, "{r}\n{}", server.proc.output());
    assert_eq!(r["alpn"], "stun.turn", "{r}");
    assert!(
        r["version"] == "TLSv1.3" || r["version"] == "TLSv1.2",
        "{r}"
    );
    assert_eq!(r["answer_type"], 0x0101, "a Binding success over TLS: {r}");
    // No ALPN offered: served too.
    let r = probe(port, &pki.ca, "");
    assert_eq!(
        (r["ok"].clone(), r["alpn"].clone()),
        (Value::Bool(true), Value::Null),
        "{r}"
    );

    // A client that trusts another CA refuses the certificate.
    let r = probe(port, &pki.other_ca, "stun.turn");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("CERTIFICATE_VERIFY_FAILED"),
        "{r}"
    );
    // Plain STUN on the TLS port: the connection is closed, nothing answered.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let binding =
        xturn_control::client::binding_request(xturn_control::wire::TransactionId([5; 12]), false);
    plain.write_all(&binding).unwrap();
    let mut buf = [0u8; 512];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "plain text on the TLS port got {n} bytes back, not a close or a TLS alert"
    );
    // The server still serves TLS, and plain TCP on the listening port.
    assert_eq!(probe(port, &pki.ca, "stun.turn")["ok"], true);
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tcp.write_all(&binding).unwrap();
    let mut head = [0u8; 20];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head[..2], &[0x01, 0x01]);
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections() {
    let pki = TestPki::new("reload");
    // xturn reads copies, which the test then replaces.
    let (cert, key) = (pki.dir.join("live.pem"), pki.dir.join("live.key"));
    std::fs::copy(&pki.cert, &cert).unwrap();
    std::fs::copy(&pki.key, &key).unwrap();
    // Readable by the user xturn becomes (nobody here), as a reload re-reads them.
    use std::os::unix::fs::PermissionsExt;
    for f in [&cert, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let port = free_tcp_port();
    let p = port.to_string();
    let server = Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--cert",
        cert.to_str().unwrap(),
        "--pkey",
        key.to_str().unwrap(),
        "--tls-listening-port",
        &p,
    ]);
    assert_eq!(probe(port, &pki.ca, "")["ok"], true);
    assert_eq!(probe(port, &pki.other_ca, "")["ok"], false);
    std::fs::copy(&pki.other_cert, &cert).unwrap();
    std::fs::copy(&pki.other_key, &key).unwrap();
    for f in [&cert, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let pid = server.proc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        server
            .proc
            .wait_for_line("TLS certificate and key read again", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.proc.output()
    );
    assert_eq!(
        probe(port, &pki.other_ca, "")["ok"],
        true,
        "{}",
        server.proc.output()
    );
    assert_eq!(probe(port, &pki.ca, "")["ok"], false);
    // A broken file is refused and the running certificate stays.
    std::fs::write(&cert, "garbage\n").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(server
        .proc
        .wait_for_line("reload refused", Duration::from_secs(5))
        .is_some());
    assert_eq!(probe(port, &pki.other_ca, "")["ok"], true);
}

#[test]
fn uclient_over_tls_channels_and_send_indications() {
    assert!(
        have("turnutils_uclient") && have("turnutils_peer"),
        "coturn's turnutils_* are missing: tests/run.sh installs Debian's coturn"
    );
    let pki = TestPki::new("uclient");
    let (_server, port) = tls_server(&pki, &[]);
    xturn_tests::uclient_channels_and_send(port, &["-t", "-S"]);
}

#[test]
fn chromium_relay_only_over_tls() {
    let pki = TestPki::new("chromium");
    let (server, port) = tls_server(&pki, &[]);
    let url = format!("turns:127.0.0.1:{port}?transport=tcp");
    let r = xturn_tests::chromium_relay_only(None, &url, &|| server.proc.output());
    for pc in ["a", "b"] {
        assert_eq!(r[pc]["relayProtocol"].as_str(), Some("tls"), "{r:#}");
    }
}

#[test]
fn own_client_over_tls_relays_both_ways_and_ends_with_the_connection() {
    let pki = TestPki::new("own");
    let (server, port) = tls_server(&pki, &[]);
    let mut c = tls_turn(port, &pki.ca, "alice", "wonderland");
    let relay = c.allocate();
    assert_eq!(c.s.conn.alpn_protocol(), Some(&b"stun.turn"[..]));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let p: SocketAddr = peer.local_addr().unwrap();
    let bind = move |b: &mut xturn_control::wire::MessageBuilder| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
        b.xor_addr(attr::XOR_PEER_ADDRESS, p);
    };
    assert_eq!(c.answer(Method::ChannelBind, bind), Answer::Success);
    let mut buf = [0u8; 2048];
    for k in 0..200u64 {
        let mut m = channel_data::encode(0x4000, &payload(k));
        m.resize((m.len() + 3) & !3, 0);
        c.s.write_all(&m).unwrap();
        let (n, from) = peer.recv_from(&mut buf).expect("to the peer");
        assert_eq!((from, &buf[..n]), (relay, &payload(k)[..]), "datagram {k}");
        peer.send_to(&payload(k), relay).unwrap();
        let back = c.read_msg().expect("to the client");
        assert_eq!(
            back,
            channel_data::encode(0x4000, &payload(k)),
            "datagram {k}"
        );
    }
    c.s.write_all(&client::send_indication(
        TransactionId([1; 12]),
        p,
        b"indicated",
    ))
    .unwrap();
    let (n, _) = peer.recv_from(&mut buf).expect("Send to the peer");
    assert_eq!(&buf[..n], b"indicated");
    drop(c);
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while UdpSocket::bind(relay).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "{relay} still held after the TLS connection closed\n{}",
            server.proc.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
