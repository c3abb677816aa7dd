//! xturn behind a 1:1 NAT (`--external-ip`), as on a cloud VM or a Kubernetes node: an
//! nftables router maps the public address 203.0.113.10 to the relay's private
//! 198.51.100.1 (DNAT in, SNAT out, ports kept). Clients and an outside peer are on the
//! public side. Every veth is left at its defaults (TX checksum offload on, no XDP program
//! on the far ends); each test runs on the socket path and with `--xdp` on the relay's one
//! interface (both legs on it). Needs root (skips otherwise).
//!
//! ```text
//!  ns o: clients 203.0.113.2, peer 203.0.113.3 ──veth── ns n: 203.0.113.1 (+.10) | 198.51.100.254 ──veth── ns r: 198.51.100.1 (xturn)
//!                                                        nft: daddr .10 -> dnat 198.51.100.1; saddr 198.51.100.1 -> snat .10
//! ```
//!
//! - A client and an outside peer: XOR-RELAYED-ADDRESS is the public address, the peer
//!   sees the public relayed address as the source, every datagram arrives both ways
//!   (ChannelData, Send and Data indications), on AF_XDP with `--xdp`.
//! - Two clients of the server naming each other's public relayed address: relayed inside
//!   the server (an nftables counter on the router proves no packet went to the NAT), Data
//!   indications name the other's public relayed address.
//! - Headless Chromium, two relay-only RTCPeerConnections: relay candidates on the public
//!   address, the data channel delivered.

mod xdp_support;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdp_support::traffic::socket_in;
use xdp_support::{root_or_skip, run, unique_tag, Netns};
use xturn_control::client::{self, Answer};
use xturn_control::wire::{channel_data, ChannelData, TransactionId};
use xturn_tests::{payload, relay_lockstep, xturn_bin, Proc, TestClient};

const PUBLIC: &str = "203.0.113.10";
const PRIVATE: &str = "198.51.100.1";
const TABLE: &str = "xturn_nat1to1";

/// One run at a time: each starts a server and offers traffic on 2 CPUs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn public_server() -> SocketAddr {
    SocketAddr::new(PUBLIC.parse().unwrap(), 3478)
}

struct NatLab {
    ns_o: String,
    ns_n: String,
    ns_r: String,
    /// The relay's one interface.
    r0: String,
    _guards: [Netns; 3],
}

impl NatLab {
    fn new() -> NatLab {
        let tag = unique_tag();
        let guards = [
            Netns::new(format!("{tag}o")),
            Netns::new(format!("{tag}n")),
            Netns::new(format!("{tag}r")),
        ];
        let [o, n, r] = [0, 1, 2].map(|i| guards[i].name.clone());
        let (o0, n0, n1, r0) = (
            format!("{tag}o0"),
            format!("{tag}n0"),
            format!("{tag}n1"),
            format!("{tag}r0"),
        );
        run(&[
            "ip", "-n", &o, "link", "add", &o0, "type", "veth", "peer", "name", &n0, "netns", &n,
        ]);
        run(&[
            "ip", "-n", &n, "link", "add", &n1, "type", "veth", "peer", "name", &r0, "netns", &r,
        ]);
        for (ns, dev, addrs) in [
            (&o, &o0, &["203.0.113.2/24", "203.0.113.3/24"][..]),
            (&n, &n0, &["203.0.113.1/24", "203.0.113.10/32"][..]),
            (&n, &n1, &["198.51.100.254/24"][..]),
            (&r, &r0, &["198.51.100.1/24"][..]),
        ] {
            for a in addrs {
                run(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            }
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &r,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.254",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // The XDP program's next-hop lookup needs forwarding on the relay's interface.
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
        ]);
        // The 1:1 NAT, and a counter of what the relay sends to its own public address.
        let rules = format!(
            "table ip {TABLE} {{
  counter hairpin {{}}
  chain raw {{
    type filter hook prerouting priority raw; policy accept;
    iifname \"{n1}\" ip daddr {PUBLIC} counter name hairpin
  }}
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {PUBLIC} dnat to {PRIVATE}
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {PRIVATE} snat to {PUBLIC}
  }}
}}
"
        );
        let path = std::env::temp_dir().join(format!("{tag}.nft"));
        std::fs::write(&path, rules).unwrap();
        run(&[
            "ip",
            "netns",
            "exec",
            &n,
            "nft",
            "-f",
            path.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(&path);
        NatLab {
            ns_o: o,
            ns_n: n,
            ns_r: r,
            r0,
            _guards: guards,
        }
    }

    /// Packets the relay sent towards its own public address (through the NAT).
    fn hairpins(&self) -> u64 {
        let out = run(&[
            "ip", "netns", "exec", &self.ns_n, "nft", "list", "counter", "ip", TABLE, "hairpin",
        ]);
        let words: Vec<&str> = out.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == "packets")
            .unwrap_or_else(|| panic!("no packet count in {out}"));
        words[i + 1].parse().unwrap()
    }

    /// xturn on the private address with `--external-ip`, `--xdp` on its interface when
    /// asked; returns once it answers a Binding request sent to the public address.
    fn start_xturn(&self, xdp: bool) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_r])
            .arg(xturn_bin())
            .args([
                "--listening-ip",
                PRIVATE,
                "--relay-ip",
                PRIVATE,
                "--external-ip",
                PUBLIC,
                "--user",
                "alice:wonderland",
                "--user",
                "bob:builder",
                "--allowed-peer-ip",
                "203.0.113.0/24",
                "--metrics-listen",
                "127.0.0.1:9650",
                "--threads",
                "1",
            ]);
        if xdp {
            cmd.args(["--xdp", &self.r0]);
        }
        let xturn = Proc::spawn("xturn", cmd);
        if xdp {
            assert!(
                xturn
                    .wait_for_line("AF_XDP forwarder 0", Duration::from_secs(10))
                    .is_some(),
                "no AF_XDP forwarder:\n{}",
                xturn.output()
            );
        }
        let s = socket_in(&self.ns_o, "203.0.113.2:0".parse().unwrap());
        let end = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1500];
        loop {
            assert!(
                Instant::now() < end,
                "xturn did not answer at {PUBLIC}:\n{}",
                xturn.output()
            );
            let req = client::binding_request(TransactionId([3; 12]), true);
            s.send_to(&req, public_server()).unwrap();
            if s.recv_from(&mut buf).is_ok() {
                return xturn;
            }
        }
    }

    fn client(&self, user: &str, pass: &str) -> TestClient {
        let sock = socket_in(&self.ns_o, "203.0.113.2:0".parse().unwrap());
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        TestClient::with_socket(sock, public_server(), user, pass)
    }

    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        xturn_tests::samples(&xturn_tests::scrape(
            Some(&self.ns_r),
            "http://127.0.0.1:9650/metrics",
        ))
    }
}

fn relayed(m: &std::collections::BTreeMap<String, f64>, path: &str, direction: &str) -> u64 {
    m.get(&format!(
        "xturn_relayed_packets_total{{direction={direction},path={path}}}"
    ))
    .copied()
    .unwrap_or(0.0) as u64
}

fn public_ip() -> IpAddr {
    PUBLIC.parse().unwrap()
}

/// A client and an outside peer through the NAT: the public relayed address everywhere
/// the outside sees it, every datagram both ways.
fn client_and_outside_peer(xdp: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = NatLab::new();
    let xturn = lab.start_xturn(xdp);
    let mut c = lab.client("alice", "wonderland");
    let relay = c.allocate();
    assert_eq!(relay.ip(), public_ip(), "XOR-RELAYED-ADDRESS");
    let peer_addr: SocketAddr = "203.0.113.3:7000".parse().unwrap();
    let peer = socket_in(&lab.ns_o, peer_addr);
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(c.channel_bind(0x4000, peer_addr), Answer::Success);
    // ChannelData each way, one at a time: the peer sees the public relayed address.
    const N: u64 = 2000;
    relay_lockstep(&mut c, &peer, relay, 0, N);

    // A second peer port without a channel: Send and Data indications.
    let peer2_addr: SocketAddr = "203.0.113.3:7001".parse().unwrap();
    let peer2 = socket_in(&lab.ns_o, peer2_addr);
    peer2
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for k in 0..20u64 {
        let tid = TransactionId([k as u8; 12]);
        c.sock
            .send_to(
                &client::send_indication(tid, peer2_addr, &payload(k)),
                c.server,
            )
            .unwrap();
        let (n, from) = peer2.recv_from(&mut buf).expect("Send to the peer");
        assert_eq!((from, &buf[..n]), (relay, &payload(k)[..]));
        peer2.send_to(&payload(k), relay).unwrap();
        let (n, _) = c.sock.recv_from(&mut buf).expect("Data to the client");
        assert_eq!(
            client::data_indication(&buf[..n]),
            Some((peer2_addr, payload(k)))
        );
    }
    if xdp {
        // The fast path carried the ChannelData (what it hands to the sockets is counted
        // there: the first datagrams, before the neighbours are known).
        let m = xturn_tests::scrape_until(Some(&lab.ns_r), "http://127.0.0.1:9650/metrics", |m| {
            relayed(m, "afxdp", "to_peer") + relayed(m, "sockets", "to_peer") >= N + 20
        });
        let (afxdp_up, afxdp_down) = (
            relayed(&m, "afxdp", "to_peer"),
            relayed(&m, "afxdp", "to_client"),
        );
        assert!(
            afxdp_up >= N * 99 / 100 && afxdp_down >= N * 99 / 100,
            "AF_XDP carried {afxdp_up} and {afxdp_down} of {N} each way: {m:#?}\n{}",
            xturn.output()
        );
    }
    assert_eq!(lab.hairpins(), 0);
}

/// Two clients relaying to each other by their public relayed addresses: inside the
/// server, never through the NAT.
fn two_clients_by_public_addresses(xdp: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = NatLab::new();
    let xturn = lab.start_xturn(xdp);
    let mut a = lab.client("alice", "wonderland");
    let mut b = lab.client("bob", "builder");
    let (ra, rb) = (a.allocate(), b.allocate());
    assert_eq!((ra.ip(), rb.ip()), (public_ip(), public_ip()));
    assert_eq!(a.channel_bind(0x4000, rb), Answer::Success);
    assert_eq!(b.create_permission(ra), Answer::Success);
    let mut buf = [0u8; 2048];
    for k in 0..300u64 {
        a.sock
            .send_to(&channel_data::encode(0x4000, &payload(k)), a.server)
            .unwrap();
        let (n, _) = b
            .sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {k} A -> B lost: {e}\n{}", xturn.output()));
        assert_eq!(
            client::data_indication(&buf[..n]),
            Some((ra, payload(k))),
            "B is told A's public relayed address"
        );
        let tid = TransactionId([7; 12]);
        b.sock
            .send_to(&client::send_indication(tid, ra, &payload(k)), b.server)
            .unwrap();
        let (n, _) = a.sock.recv_from(&mut buf).expect("datagram B -> A");
        let cd = ChannelData::new_checked(&buf[..n]).expect("ChannelData");
        assert_eq!((cd.channel(), cd.payload()), (0x4000, &payload(k)[..]));
    }
    assert_eq!(lab.hairpins(), 0, "the relay sent to its public address");
    // Another port of the public address is not a peer.
    let other = SocketAddr::new(
        public_ip(),
        if ra.port() == 65535 {
            65534
        } else {
            ra.port() + 1
        },
    );
    if other != rb {
        assert_eq!(a.channel_bind(0x4001, other), Answer::Error(403));
    }
    // Through the kernel sockets (the XDP program cannot send to the host itself).
    let m = xturn_tests::scrape_until(Some(&lab.ns_r), "http://127.0.0.1:9650/metrics", |m| {
        relayed(m, "sockets", "to_client") >= 600
    });
    assert!(relayed(&m, "sockets", "to_client") >= 600, "{m:#?}");
}

/// Headless Chromium, two relay-only RTCPeerConnections through xturn behind the NAT.
fn chromium_through_the_nat(xdp: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = NatLab::new();
    let xturn = lab.start_xturn(xdp);
    let url = format!("turn:{PUBLIC}:3478?transport=udp");
    let r = xturn_tests::chromium_relay_only(Some(&lab.ns_o), &url, &|| xturn.output());
    for pc in ["a", "b"] {
        for end in ["localAddress", "remoteAddress"] {
            assert!(
                r[pc][end]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{PUBLIC}:"))),
                "{end} of {pc}: {r:#}"
            );
        }
    }
    assert_eq!(lab.hairpins(), 0, "the relay sent to its public address");
    let m = lab.metrics();
    assert!(
        m.get("xturn_allocations{}").copied().unwrap_or(0.0) >= 2.0,
        "{m:#?}"
    );
}

#[test]
fn client_and_outside_peer_through_one_to_one_nat_sockets() {
    if root_or_skip("nat1to1_sockets") {
        client_and_outside_peer(false);
    }
}

#[test]
fn client_and_outside_peer_through_one_to_one_nat_xdp() {
    if root_or_skip("nat1to1_xdp") {
        client_and_outside_peer(true);
    }
}

#[test]
fn two_clients_by_public_addresses_relay_inside_sockets() {
    if root_or_skip("nat1to1_hairpin_sockets") {
        two_clients_by_public_addresses(false);
    }
}

#[test]
fn two_clients_by_public_addresses_relay_inside_xdp() {
    if root_or_skip("nat1to1_hairpin_xdp") {
        two_clients_by_public_addresses(true);
    }
}

#[test]
fn chromium_relay_only_behind_one_to_one_nat_sockets() {
    if root_or_skip("nat1to1_chromium_sockets") {
        chromium_through_the_nat(false);
    }
}

#[test]
fn chromium_relay_only_behind_one_to_one_nat_xdp() {
    if root_or_skip("nat1to1_chromium_xdp") {
        chromium_through_the_nat(true);
    }
}
