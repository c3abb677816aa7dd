//! RFC 5780 NAT behaviour discovery with `--alt-listening-ip` on loopback (127.0.0.1 and
//! 127.0.0.2, ports P and P+1): pystun3's NAT type test and Debian's `stun` client (both
//! RFC 3489 clients: CHANGED-ADDRESS, CHANGE-REQUEST) find "Open Internet" / "Open", as
//! they must on loopback; RFC 5780 Binding requests (with the magic cookie) get
//! RESPONSE-ORIGIN and OTHER-ADDRESS, and their CHANGE-REQUEST (IP, port, both),
//! RESPONSE-PORT and PADDING are honoured, checked by this file's own decoding; without an
//! alternate address CHANGE-REQUEST gets 420.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;
use xturn_control::client;
use xturn_control::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use xturn_tests::{free_udp_port_pair, have, output_text, Proc};

/// xturn on 127.0.0.1:P with 127.0.0.2 and P+1 as the alternates; returns (proc, P).
fn server() -> (Proc, u16) {
    let port = free_udp_port_pair();
    let mut c = Command::new(xturn_tests::xturn_bin());
    c.args([
        "--listening-ip",
        "127.0.0.1",
        "--listening-port",
        &port.to_string(),
        "--alt-listening-ip",
        "127.0.0.2",
        "--user",
        "alice:wonderland",
    ]);
    let p = Proc::spawn("xturn", c);
    assert!(
        p.wait_for_line("RFC 5780 NAT behaviour discovery", Duration::from_secs(10))
            .is_some(),
        "{}",
        p.output()
    );
    std::thread::sleep(Duration::from_millis(300));
    (p, port)
}

/// A MAPPED-ADDRESS-format value.
fn plain(v: &[u8]) -> SocketAddr {
    assert_eq!((v.len(), v[1]), (8, 1), "an IPv4 address value");
    SocketAddr::new(
        std::net::Ipv4Addr::new(v[4], v[5], v[6], v[7]).into(),
        u16::from_be_bytes([v[2], v[3]]),
    )
}

#[test]
fn rfc3489_clients_find_an_open_internet() {
    let (srv, port) = server();
    let out = Command::new("timeout")
        .args([
            "30",
            "python3",
            "-c",
            &format!(
                "import stun\nprint(stun.get_ip_info(source_ip='127.0.0.1', source_port=0, \
                 stun_host='127.0.0.1', stun_port={port}))"
            ),
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        text.contains("'Open Internet'"),
        "pystun3: {text}\n{}",
        srv.output()
    );
    assert!(
        have("stun"),
        "Debian's stun-client is missing: tests/run.sh installs it"
    );
    let out = Command::new("timeout")
        .args(["30", "stun", &format!("127.0.0.1:{port}"), "-v"])
        .output()
        .unwrap();
    let text = output_text(&out);
    for t in [
        "test I = 1",
        "test II = 1",
        "test III = 1",
        "test I(2) = 1",
        "Primary: Open",
    ] {
        assert!(text.contains(t), "stun client lacks {t:?}:\n{text}");
    }
}

#[test]
fn rfc5780_binding_honours_change_request_response_port_and_padding() {
    let (srv, port) = server();
    let primary: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let p1 = port + 1;
    for (n, (flags, want_from)) in [
        (0u8, format!("127.0.0.1:{port}")),
        (0x02, format!("127.0.0.1:{p1}")),
        (0x04, format!("127.0.0.2:{port}")),
        (0x06, format!("127.0.0.2:{p1}")),
    ]
    .into_iter()
    .enumerate()
    {
        let tid = TransactionId([n as u8 + 1; 12]);
        let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid);
        b.attr(attr::CHANGE_REQUEST, &[0, 0, 0, flags]);
        b.fingerprint();
        sock.send_to(&b.finish(), primary).unwrap();
        let (len, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no answer to CHANGE-REQUEST {flags:#x}: {e}\n{}",
                srv.output()
            )
        });
        let want_from: SocketAddr = want_from.parse().unwrap();
        assert_eq!(from, want_from, "CHANGE-REQUEST {flags:#x}");
        let m = Message::new_checked(&buf[..len]).unwrap();
        assert_eq!((m.class(), m.transaction_id()), (Class::Success, tid));
        assert_eq!(
            client::xor_address(&buf[..len], attr::XOR_MAPPED_ADDRESS),
            Some(sock.local_addr().unwrap())
        );
        assert_eq!(
            plain(m.attribute(attr::RESPONSE_ORIGIN).unwrap().value),
            want_from
        );
        assert_eq!(
            plain(m.attribute(attr::OTHER_ADDRESS).unwrap().value),
            format!("127.0.0.2:{p1}").parse().unwrap()
        );
    }
    // RESPONSE-PORT: the answer goes to another port of the client's address; PADDING
    // comes back as long as it went.
    let tid = TransactionId([9; 12]);
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid);
    let to = other.local_addr().unwrap().port();
    b.attr(attr::RESPONSE_PORT, &[(to >> 8) as u8, to as u8, 0, 0]);
    b.attr(attr::PADDING, &[0; 64]);
    sock.send_to(&b.finish(), primary).unwrap();
    let (len, from) = other
        .recv_from(&mut buf)
        .expect("answer at the RESPONSE-PORT");
    assert_eq!(from, primary);
    let m = Message::new_checked(&buf[..len]).unwrap();
    assert_eq!(m.transaction_id(), tid);
    assert_eq!(m.attribute(attr::PADDING).unwrap().value.len(), 64);
    // Sent to an alternate endpoint, the origin and the other address follow it.
    let alt: SocketAddr = format!("127.0.0.2:{p1}").parse().unwrap();
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, TransactionId([7; 12]));
    b.attr(attr::CHANGE_REQUEST, &[0, 0, 0, 0x06]);
    sock.send_to(&b.finish(), alt).unwrap();
    let (len, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, primary);
    let m = Message::new_checked(&buf[..len]).unwrap();
    assert_eq!(
        plain(m.attribute(attr::OTHER_ADDRESS).unwrap().value),
        primary
    );
}

#[test]
fn without_an_alternate_change_request_gets_420() {
    let server = xturn_tests::Xturn::start(&["--user", "alice:wonderland"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, TransactionId([4; 12]));
    b.attr(attr::CHANGE_REQUEST, &[0, 0, 0, 0x06]);
    sock.send_to(&b.finish(), server.addr).unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, server.addr);
    assert_eq!(client::error_code(&buf[..len]), Some(420));
}
