//! End to end through the AF_XDP fast path, in the standard NETLAB relay topology: `xturn
//! --xdp` on both of the relay's veths, TURN clients in the client namespace, UDP peers in
//! the peer namespace. 100,000 ChannelData datagrams go each way at a moderate rate, every
//! one arrives once and byte-exact, the peer sees the relayed address as source, and the
//! counters (`xturn stats --json`: the XDP program's redirects and the forwarder threads')
//! show that exactly those datagrams took the AF_XDP path. After the permission expires
//! (the channel still lives), nothing passes either way. Run with 1 queue per veth and with
//! 2 queues and 2 forwarder threads, flows spread over both. Needs root (skips otherwise).
//!
//! ```text
//!  ns c: 192.0.2.2 ──veth── ns r: 192.0.2.1 | 198.51.100.1 (xturn --xdp rc,rp) ──veth── ns p: 198.51.100.2
//!        2001:db8:2::2            2001:db8:2::1 | 2001:db8:51::1                           2001:db8:51::2
//! ```
//!
//! The IPv6 run is the same over the IPv6 addresses (listening and relayed). One more run
//! relays between an IPv4 client and an IPv6 peer (through the kernel sockets).

mod xdp_support;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdp_support::traffic::{channel_data, nothing_passes, relay_each_way, socket_in, Flow};
use xdp_support::{root_or_skip, run, unique_tag, Netns};
use xturn_control::client::{self, Answer};
use xturn_control::wire::{attr, Method};
use xturn_tests::{have, payload, xturn_bin, Proc, TestClient};

const DATAGRAMS: u64 = 100_000;
/// Flows (allocation, channel, peer port), datagram `n` goes on flow `n % FLOWS`.
const FLOWS: u64 = 8;
/// Offered rate per direction: moderate, both directions at once.
const RATE: u64 = 20_000;
const PERMISSION_LIFETIME: u64 = 25;

/// The addresses of one IP family in the lab.
#[derive(Clone, Copy)]
struct Net {
    server: SocketAddr,
    client: IpAddr,
    relay: IpAddr,
    peer: IpAddr,
}

fn net(v6: bool) -> Net {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    if v6 {
        Net {
            server: "[2001:db8:2::1]:3478".parse().unwrap(),
            client: ip("2001:db8:2::2"),
            relay: ip("2001:db8:51::1"),
            peer: ip("2001:db8:51::2"),
        }
    } else {
        Net {
            server: "192.0.2.1:3478".parse().unwrap(),
            client: ip("192.0.2.2"),
            relay: ip("198.51.100.1"),
            peer: ip("198.51.100.2"),
        }
    }
}
const PEER_BASE_PORT: u16 = 7000;

struct Lab {
    ns_c: String,
    ns_r: String,
    ns_p: String,
    rc: String,
    rp: String,
    /// The far ends of the client's and the peer's veths.
    ca: String,
    pa: String,
    // Declared last: dropped after the fields above, also on panic.
    _guards: [Netns; 3],
}

impl Lab {
    /// The client's, the relay's and the peer's namespace.
    fn namespaces(&self) -> [&str; 3] {
        [&self.ns_c, &self.ns_r, &self.ns_p]
    }

    fn new(queues: u32, mtu: u32) -> Lab {
        let tag = unique_tag();
        let guards = [
            Netns::new(format!("{tag}c")),
            Netns::new(format!("{tag}r")),
            Netns::new(format!("{tag}p")),
        ];
        let [c, r, p] = [0, 1, 2].map(|i| guards[i].name.clone());
        let q = queues.to_string();
        let qs = ["numrxqueues", &q, "numtxqueues", &q];
        let (ca, rc, rp, pa) = (
            format!("{tag}ca"),
            format!("{tag}rc"),
            format!("{tag}rp"),
            format!("{tag}pa"),
        );
        for (ns, a, b, other) in [(&c, &ca, &rc, &r), (&r, &rp, &pa, &p)] {
            let mut args = vec!["ip", "-n", ns, "link", "add", a];
            args.extend(qs);
            args.extend(["type", "veth", "peer", "name", b]);
            args.extend(qs);
            args.extend(["netns", other]);
            run(&args);
        }
        for (ns, dev, v4, v6) in [
            (&c, &ca, "192.0.2.2/24", "2001:db8:2::2/64"),
            (&r, &rc, "192.0.2.1/24", "2001:db8:2::1/64"),
            (&r, &rp, "198.51.100.1/24", "2001:db8:51::1/64"),
            (&p, &pa, "198.51.100.2/24", "2001:db8:51::2/64"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&[
                "ip",
                "-n",
                ns,
                "link",
                "set",
                dev,
                "mtu",
                &mtu.to_string(),
                "up",
            ]);
            // Complete checksums in frames from kernel sockets (NETLAB.md).
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        // The XDP program's FIB lookup (next hop of steered frames) needs forwarding on.
        for key in [
            "net.ipv4.conf.all.forwarding=1",
            "net.ipv6.conf.all.forwarding=1",
        ] {
            run(&["ip", "netns", "exec", &r, "sysctl", "-qw", key]);
        }
        Lab {
            ns_c: c,
            ns_r: r,
            ns_p: p,
            rc,
            rp,
            ca,
            pa,
            _guards: guards,
        }
    }
}

impl Lab {
    /// xturn in the relay namespace on `net`'s server address, relaying from its relay
    /// address, with `--xdp` on both of its veths and `threads` threads; returns once every
    /// forwarder thread (one per queue) is up.
    fn start_xturn(&self, bin: &std::path::Path, net: Net, threads: u32, extra: &[&str]) -> Proc {
        self.start_xturn_under(&[], bin, net, threads, extra)
    }

    /// [`Lab::start_xturn`] through `wrapper` (a command that runs the one after it).
    fn start_xturn_under(
        &self,
        wrapper: &[String],
        bin: &std::path::Path,
        net: Net,
        threads: u32,
        extra: &[&str],
    ) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_r]);
        cmd.args(wrapper);
        cmd.arg(bin).args([
            "--listening-ip",
            &net.server.ip().to_string(),
            "--listening-port",
            &net.server.port().to_string(),
            "--relay-ip",
            &net.relay.to_string(),
            "--user",
            "alice:wonderland",
            "--threads",
            &threads.to_string(),
            "--log-level",
            "debug",
            "--xdp",
            &format!("{},{}", self.rc, self.rp),
        ]);
        cmd.args(xturn_tests::LAB_PEERS);
        cmd.args(extra);
        let xturn = Proc::spawn("xturn", cmd);
        let ready = xturn.wait_for_line(
            &format!("AF_XDP forwarder {}", threads - 1),
            Duration::from_secs(10),
        );
        assert!(ready.is_some(), "no AF_XDP forwarder:\n{}", xturn.output());
        xturn
    }
}

/// One end-to-end run.
#[derive(Clone, Copy)]
struct Run {
    queues: u32,
    v6: bool,
    /// Datagrams each way.
    datagrams: u64,
    /// MTU of every veth; with more than 1500, datagrams carry up to 2414 bytes.
    mtu: u32,
    /// Datagrams per second each way.
    rate: u64,
    /// Wait for the permission to expire and check that nothing passes then.
    expiry: bool,
    /// `--fast-path xdp`, with the XDP_PASS program on the far ends (a tuned lab: frames
    /// the program sends out of a veth arrive): every datagram is relayed in the driver.
    in_kernel: bool,
}

impl Run {
    const fn new(queues: u32, v6: bool) -> Run {
        Run {
            queues,
            v6,
            datagrams: DATAGRAMS,
            mtu: 1500,
            rate: RATE,
            expiry: true,
            in_kernel: false,
        }
    }

    /// The payload of datagram `n`: [`payload`] (8-1207 bytes), twice over for a jumbo
    /// MTU (16-2414 bytes, more than a 1500-byte MTU carries).
    fn data(&self) -> fn(u64, u64) -> Vec<u8> {
        fn normal(n: u64, _: u64) -> Vec<u8> {
            payload(n)
        }
        fn jumbo(n: u64, _: u64) -> Vec<u8> {
            let mut v = payload(n);
            v.extend(payload(n));
            v
        }
        if self.mtu > 1500 {
            jumbo
        } else {
            normal
        }
    }
}

/// `xturn stats --json --xdp IFACE` in the relay namespace.
fn stats(bin: &std::path::Path, lab: &Lab) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_r])
        .arg(bin)
        .args(["stats", "--json", "--xdp", &lab.rc])
        .output()
        .expect("run xturn stats");
    assert!(
        out.status.success(),
        "xturn stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("xturn stats JSON")
}

/// (XDP redirect_channel, redirect_peer; forwarder to_peer, to_client; per-allocation
/// to_peer_packets, to_client_packets summed over the AF_XDP path, then over the socket
/// path; per-thread received) for the server `pid`. With `in_kernel` the first two are
/// the program's in-kernel relay counters (redirect_channel_dev, redirect_peer_dev) and the
/// per-allocation sums of the AF_XDP path are those of the in-kernel path.
fn fast_path_counters(v: &serde_json::Value, pid: u32, in_kernel: bool) -> ([u64; 8], Vec<u64>) {
    let c = &v["programs"][0]["counters"];
    let servers = v["servers"].as_array().expect("servers array");
    let me = servers
        .iter()
        .find(|s| s["pid"] == pid)
        .unwrap_or_else(|| panic!("no AF_XDP status of pid {pid}: {v}"));
    let threads = me["threads"].as_array().unwrap();
    let sum = |k: &str| {
        threads
            .iter()
            .map(|t| t["forwarder"][k].as_u64().unwrap())
            .sum()
    };
    let allocs = me["allocations"].as_array().unwrap();
    let per_alloc = |path: &str, k: &str| allocs.iter().map(|a| a[path][k].as_u64().unwrap()).sum();
    let (channel, peer, path) = if in_kernel {
        ("redirect_channel_dev", "redirect_peer_dev", "xdp")
    } else {
        ("redirect_channel", "redirect_peer", "afxdp")
    };
    (
        [
            c[channel].as_u64().unwrap(),
            c[peer].as_u64().unwrap(),
            sum("to_peer"),
            sum("to_client"),
            per_alloc(path, "to_peer_packets"),
            per_alloc(path, "to_client_packets"),
            per_alloc("sockets", "to_peer_packets"),
            per_alloc("sockets", "to_client_packets"),
        ],
        threads
            .iter()
            .map(|t| t["forwarder"]["received"].as_u64().unwrap())
            .collect(),
    )
}

/// Publication of the forwarders' counters happens every 500 ms.
fn settled_stats(bin: &std::path::Path, lab: &Lab) -> serde_json::Value {
    std::thread::sleep(Duration::from_millis(1200));
    stats(bin, lab)
}

/// The traffic tests run one at a time: each offers 40,000 datagrams/s to a relay on the
/// same 2 CPUs, and "0 loss at a moderate rate" should not depend on their overlap.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// [`FLOWS`] flows: an allocation each, a channel to its own peer port.
fn open_flows(lab: &Lab, net: Net, v6: bool) -> Vec<Flow> {
    let mut flows = Vec::new();
    for i in 0..FLOWS {
        let sock = socket_in(&lab.ns_c, SocketAddr::new(net.client, 0));
        let mut client = TestClient::with_socket(sock, net.server, "alice", "wonderland");
        let relay = client.allocate_family(v6);
        assert_eq!(relay.ip(), net.relay);
        let peer_addr = SocketAddr::new(net.peer, PEER_BASE_PORT + i as u16);
        let peer = socket_in(&lab.ns_p, peer_addr);
        let channel = 0x4000 + i as u16;
        assert_eq!(client.channel_bind(channel, peer_addr), Answer::Success);
        flows.push(Flow {
            client,
            relay,
            peer,
            channel,
        });
    }
    flows
}

/// Warm-up, one datagram each way per flow: the relay's kernel learns both neighbours
/// (the XDP program's FIB lookup needs them; until then frames take the socket path).
fn warm_up(flows: &[Flow], server: SocketAddr, run: Run) {
    let datagrams = run.datagrams;
    let mut buf = [0u8; 4096];
    for (i, f) in flows.iter().enumerate() {
        let warm = run.data()(2 * datagrams - 1 - i as u64, datagrams);
        f.client
            .sock
            .send_to(&channel_data(f.channel, &warm), server)
            .unwrap();
        let (n, from) = f.peer.recv_from(&mut buf).expect("warm-up to the peer");
        assert_eq!((from, &buf[..n]), (f.relay, warm.as_slice()));
        f.peer.send_to(&warm, f.relay).unwrap();
        let (n, _) = f
            .client
            .sock
            .recv_from(&mut buf)
            .expect("warm-up to the client");
        assert_eq!(&buf[..n], channel_data(f.channel, &warm).as_slice());
    }
}

fn relay_through_afxdp(run: Run) {
    let Run { queues, v6, .. } = run;
    let datagrams = run.datagrams;
    let test = format!(
        "afxdp_relay_{queues}_queues{}_mtu{}{}",
        if v6 { "_ipv6" } else { "" },
        run.mtu,
        if run.in_kernel { "_in_kernel" } else { "" }
    );
    if !root_or_skip(&test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(have("ethtool"), "ethtool is needed: run tests/run.sh");
    let bin = xturn_bin();
    let lab = Lab::new(queues, run.mtu);
    let net = net(v6);
    let lifetime = PERMISSION_LIFETIME.to_string();
    let mut extra = vec!["--permission-lifetime", &lifetime];
    let _far_ends = run.in_kernel.then(|| {
        extra.extend(["--fast-path", "xdp"]);
        [
            xdp_support::attach_pass(&lab.ns_c, &lab.ca),
            xdp_support::attach_pass(&lab.ns_p, &lab.pa),
        ]
    });
    let xturn = lab.start_xturn(&bin, net, queues, &extra);
    let pid = xturn.child.id();
    let server = net.server;

    let t_bind = Instant::now();
    let flows = open_flows(&lab, net, v6);
    warm_up(&flows, server, run);
    let k = run.in_kernel;
    let (before, threads_before) = fast_path_counters(&settled_stats(&bin, &lab), pid, k);

    // 100,000 each way, both directions at once, checked on arrival.
    let diag = || format!("{:#}\n{}", settled_stats(&bin, &lab), xturn.output());
    relay_each_way(
        &flows,
        datagrams,
        run.rate,
        server,
        run.data(),
        &lab.namespaces(),
        &diag,
    );
    let sent_by = t_bind.elapsed();
    assert!(
        !run.expiry || sent_by < Duration::from_secs(PERMISSION_LIFETIME),
        "the run outlived the permission ({sent_by:?}): the machine is too slow for this test"
    );

    // Every one of them through AF_XDP: steered by the program, relayed by a forwarder.
    // With the in-kernel relay: every one relayed by the program, none by a forwarder.
    let v = settled_stats(&bin, &lab);
    let (after, threads_after) = fast_path_counters(&v, pid, k);
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let want = if k {
        vec![datagrams, datagrams, 0, 0, datagrams, datagrams, 0, 0]
    } else {
        [vec![datagrams; 6], vec![0, 0]].concat()
    };
    assert_eq!(
        delta, want,
        "deltas of (program's redirects, forwarders' to_peer, to_client, per-allocation \
         to_peer_packets, to_client_packets through the fast path (in-kernel: {k}), and \
         through the kernel sockets): {v:#}"
    );
    let me = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pid);
    assert_eq!(
        me.unwrap()["allocations"].as_array().unwrap().len(),
        FLOWS as usize
    );
    // With 2 queues the flows are spread: both threads relayed some.
    assert_eq!(threads_after.len(), queues as usize, "{v:#}");
    for (t, (a, b)) in threads_after.iter().zip(&threads_before).enumerate() {
        if k {
            assert_eq!(
                a, b,
                "forwarder thread {t} received frames the driver relays: {v:#}"
            );
        } else {
            assert!(a > b, "forwarder thread {t} relayed nothing: {v:#}");
        }
    }
    if !run.expiry {
        return;
    }
    // The permission expires (the channel, 600 s, lives on): nothing passes any more.
    let expired = t_bind + Duration::from_secs(PERMISSION_LIFETIME) + Duration::from_millis(1500);
    if let Some(d) = expired.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    nothing_passes(&flows[0], server);
    let (late, _) = fast_path_counters(&settled_stats(&bin, &lab), pid, k);
    assert_eq!(
        (late[2], late[3], late[4], late[5]),
        (after[2], after[3], after[4], after[5]),
        "the fast path relayed after expiry"
    );
    drop(xturn);
}

#[test]
fn afxdp_relays_100k_each_way_on_one_queue() {
    relay_through_afxdp(Run::new(1, false));
}

#[test]
fn in_kernel_relays_100k_each_way() {
    relay_through_afxdp(Run {
        in_kernel: true,
        ..Run::new(1, false)
    });
}

#[test]
fn in_kernel_relays_100k_each_way_over_ipv6_on_two_queues() {
    relay_through_afxdp(Run {
        in_kernel: true,
        ..Run::new(2, true)
    });
}

/// An IPv4 client with an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY) and an IPv6
/// peer, through `xturn --xdp` relaying from one address of each family. A frame cannot be
/// rewritten in place across families, so such data takes the kernel sockets (the
/// forwarder's slow path or the socket workers); every datagram still arrives once and
/// byte-exact each way, the peer sees the IPv6 relayed address as source, and the
/// allocation's counters (both paths together) count exactly them.
#[test]
fn afxdp_server_relays_between_an_ipv4_client_and_an_ipv6_peer() {
    const N: u64 = 2_000;
    const WINDOW: u64 = 32;
    if !root_or_skip("afxdp_relay_ipv4_client_ipv6_peer") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(have("ethtool"), "ethtool is needed: run tests/run.sh");
    let bin = xturn_bin();
    let lab = Lab::new(1, 1500);
    let (v4, v6) = (net(false), net(true));
    let xturn = lab.start_xturn(&bin, v4, 1, &["--relay-ip", &v6.relay.to_string()]);
    let pid = xturn.child.id();

    let sock = socket_in(&lab.ns_c, SocketAddr::new(v4.client, 0));
    let mut client = TestClient::with_socket(sock, v4.server, "alice", "wonderland");
    let relay = client.allocate_family(true);
    assert_eq!(relay.ip(), v6.relay);
    let peer_addr = SocketAddr::new(v6.peer, PEER_BASE_PORT);
    let peer = socket_in(&lab.ns_p, peer_addr);
    assert_eq!(client.channel_bind(0x4000, peer_addr), Answer::Success);
    for s in [&client.sock, &peer] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }

    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut bytes = 0;
    let mut i = 0;
    while i < N {
        assert!(Instant::now() < deadline, "timed out");
        let end = (i + WINDOW).min(N);
        for k in i..end {
            let cd = channel_data(0x4000, &payload(k));
            client.sock.send_to(&cd, v4.server).unwrap();
            peer.send_to(&payload(N + k), relay).unwrap();
            bytes += payload(k).len() as u64;
        }
        let (mut to_peer, mut to_client) = (Vec::new(), Vec::new());
        for _ in i..end {
            let (n, from) = peer
                .recv_from(&mut buf)
                .expect("the peer received within 2 s");
            assert_eq!(from, relay, "the peer must see the IPv6 relayed address");
            to_peer.push(buf[..n].to_vec());
            let (n, from) = client
                .sock
                .recv_from(&mut buf)
                .expect("the client received within 2 s");
            assert_eq!(from, v4.server);
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), 0x4000, "ChannelData");
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            assert!(
                4 + len <= n,
                "ChannelData length {len} in a {n}-byte datagram"
            );
            to_client.push(buf[4..4 + len].to_vec());
        }
        // Each way in order within a window is not promised; the set is.
        to_peer.sort();
        to_client.sort();
        let mut want_peer: Vec<Vec<u8>> = (i..end).map(payload).collect();
        let mut want_client: Vec<Vec<u8>> = (i..end).map(|k| payload(N + k)).collect();
        want_peer.sort();
        want_client.sort();
        assert_eq!(to_peer, want_peer, "datagrams {i}..{end} to the peer");
        assert_eq!(to_client, want_client, "datagrams {i}..{end} to the client");
        i = end;
    }

    let v = settled_stats(&bin, &lab);
    let me = v["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["pid"] == pid))
        .unwrap_or_else(|| panic!("no status of pid {pid}: {v:#}"));
    let a = me["allocations"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["relay"] == relay.to_string()))
        .unwrap_or_else(|| panic!("no allocation {relay}: {v:#}"));
    let both = |k: &str| a["afxdp"][k].as_u64().unwrap() + a["sockets"][k].as_u64().unwrap();
    let bytes_back: u64 = (N..2 * N).map(|k| payload(k).len() as u64).sum();
    assert_eq!(
        [
            both("to_peer_packets"),
            both("to_peer_bytes"),
            both("to_client_packets"),
            both("to_client_bytes")
        ],
        [N, bytes, N, bytes_back],
        "{a:#}"
    );
    drop(xturn);
}

#[test]
fn afxdp_relays_100k_each_way_over_ipv6() {
    relay_through_afxdp(Run::new(1, true));
}

/// MTU 3000 on every veth: the fast path's UMEM frames are 4096 bytes and datagrams of up
/// to 2414 bytes (frames of up to 2460) go through it. At a quarter of the rate: the test's
/// own generating and checking of twice the bytes per datagram would otherwise take the
/// 2 CPUs the relay runs on (measured in CI: a starved forwarder, 132 drops for an empty
/// fill ring at 20,000/s each way).
#[test]
fn afxdp_relays_jumbo_frames() {
    relay_through_afxdp(Run {
        datagrams: 20_000,
        rate: 5_000,
        mtu: 3000,
        expiry: false,
        ..Run::new(1, false)
    });
}

#[test]
fn afxdp_relays_100k_each_way_on_two_queues() {
    relay_through_afxdp(Run::new(2, false));
}

/// coturn's `turnutils_uclient` (clients) and `turnutils_peer` (an echoing peer) through
/// the AF_XDP path: no loss, every message back, and the forwarder relayed them.
#[test]
fn afxdp_relays_coturn_uclient_to_turnutils_peer() {
    if !root_or_skip("afxdp_relays_coturn_uclient_to_turnutils_peer") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        have("turnutils_uclient") && have("turnutils_peer") && have("ethtool"),
        "coturn's turnutils_* and ethtool are needed: run tests/run.sh"
    );
    let bin = xturn_bin();
    let lab = Lab::new(1, 1500);
    // turnutils_uclient picks channel numbers from RFC 5766's 0x4000-0x7FFE.
    let xturn = lab.start_xturn(&bin, net(false), 1, &["--rfc5766-channels"]);
    let pid = xturn.child.id();
    let mut peer_cmd = Command::new("ip");
    peer_cmd.args(["netns", "exec", &lab.ns_p]).args([
        "turnutils_peer",
        "-L",
        "198.51.100.2",
        "-p",
        "3480",
    ]);
    let _peer = Proc::spawn("turnutils_peer", peer_cmd);
    std::thread::sleep(Duration::from_millis(300));
    let (before, _) = fast_path_counters(&settled_stats(&bin, &lab), pid, false);
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_c])
        .args(["timeout", "90", "turnutils_uclient"])
        .args(["-u", "alice", "-w", "wonderland", "-e", "198.51.100.2"])
        .args([
            "-r",
            "3480",
            "-n",
            "1000",
            "-m",
            "4",
            "-l",
            "180",
            "192.0.2.1",
        ])
        .output()
        .expect("run turnutils_uclient");
    let text = xturn_tests::output_text(&out);
    assert!(out.status.success(), "turnutils_uclient failed:\n{text}");
    assert!(
        text.contains("Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"),
        "loss reported by turnutils_uclient:\n{text}"
    );
    let msgs = 4 * 1000;
    assert!(
        text.contains(&format!("tot_send_msgs={msgs}, tot_recv_msgs={msgs}")),
        "expected {msgs} messages each way:\n{text}"
    );
    let v = settled_stats(&bin, &lab);
    let (after, _) = fast_path_counters(&v, pid, false);
    // The first datagrams of a flow may take the socket path while the relay's kernel
    // resolves the neighbours; the rest are steered and relayed by the forwarder.
    let (to_peer, to_client) = (after[2] - before[2], after[3] - before[3]);
    assert!(
        to_peer >= msgs - 50 && to_peer <= msgs && to_client >= msgs - 50 && to_client <= msgs,
        "AF_XDP relayed {to_peer} to the peer and {to_client} to the clients of {msgs}:\n{text}\n{v:#}"
    );
    drop(xturn);
}

/// A drain (SIGUSR1) of a server relaying through AF_XDP: new allocations get 300 with the
/// alternate, the existing ones go on relaying through the forwarder, every datagram
/// arriving, and the server exits 0 once they are deleted.
#[test]
fn afxdp_drain_keeps_relaying_and_exits_with_the_last_allocation() {
    if !root_or_skip("afxdp_drain") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = xturn_bin();
    let lab = Lab::new(1, 1500);
    let net = net(false);
    let mut xturn = lab.start_xturn(
        &bin,
        net,
        1,
        &[
            "--alternate-server",
            "192.0.2.9:3478",
            "--metrics-listen",
            "127.0.0.1:9641",
        ],
    );
    let pid = xturn.child.id();
    let run = Run {
        datagrams: 10_000,
        ..Run::new(1, false)
    };
    let mut flows = open_flows(&lab, net, false);
    warm_up(&flows, net.server, run);
    let (before, _) = fast_path_counters(&settled_stats(&bin, &lab), pid, false);

    assert!(Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(
        xturn
            .wait_for_line("draining", Duration::from_secs(5))
            .is_some(),
        "{}",
        xturn.output()
    );
    let sock = socket_in(&lab.ns_c, SocketAddr::new(net.client, 0));
    let mut late = TestClient::with_socket(sock, net.server, "alice", "wonderland");
    let r = late.request(Method::Allocate, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(client::error_code(&r), Some(300));

    let diag = || format!("{:#}\n{}", settled_stats(&bin, &lab), xturn.output());
    relay_each_way(
        &flows,
        run.datagrams,
        run.rate,
        net.server,
        run.data(),
        &lab.namespaces(),
        &diag,
    );
    let v = settled_stats(&bin, &lab);
    let (after, _) = fast_path_counters(&v, pid, false);
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        [vec![run.datagrams; 6], vec![0, 0]].concat(),
        "while draining, all through AF_XDP: {v:#}"
    );
    // /metrics (inside the server's namespace) counts the same, per path.
    let m = xturn_tests::scrape_until(Some(&lab.ns_r), "http://127.0.0.1:9641/metrics", |m| {
        m.get("xturn_relayed_packets_total{direction=to_peer,path=afxdp}")
            == Some(&(after[4] as f64))
    });
    for (k, want) in [
        (
            "xturn_relayed_packets_total{direction=to_peer,path=afxdp}",
            after[4],
        ),
        (
            "xturn_relayed_packets_total{direction=to_client,path=afxdp}",
            after[5],
        ),
        (
            "xturn_relayed_packets_total{direction=to_peer,path=sockets}",
            after[6],
        ),
        (
            "xturn_relayed_packets_total{direction=to_client,path=sockets}",
            after[7],
        ),
        ("xturn_xdp_frames_total{outcome=redirect_channel}", after[0]),
        ("xturn_xdp_frames_total{outcome=redirect_peer}", after[1]),
        ("xturn_afxdp_threads_alive{}", 1),
        ("xturn_draining{}", 1),
        ("xturn_allocations{}", FLOWS),
    ] {
        assert_eq!(m.get(k), Some(&(want as f64)), "{k}: {m:#?}");
    }
    for f in &mut flows {
        let r = f
            .client
            .request(Method::Refresh, client::refresh_body(Duration::ZERO));
        assert_eq!(f.client.turn.answer(&r), Answer::Success);
    }
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Ok(Some(s)) = xturn.child.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "no exit after the last allocation:\n{}",
            xturn.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", xturn.output());
}

/// The capability mask of `caps` (names as in capabilities(7) without `CAP_`, lower case),
/// as /proc/PID/status shows it.
fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "net_bind_service" => 10,
            "net_admin" => 12,
            "net_raw" => 13,
            "ipc_lock" => 14,
            "sys_nice" => 23,
            "perfmon" => 38,
            "bpf" => 39,
            other => panic!("capability {other}: add its number"),
        })
        .fold(0, |m, bit| m | 1u64 << bit)
}

/// The field `key` of /proc/PID/status.
fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Names as setpriv takes them: `-all,+bpf,+net_admin`.
fn setpriv_set(caps: &[String]) -> String {
    std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Capability names in setpriv's form (`CAP_NET_ADMIN`, `NET_ADMIN` -> `net_admin`).
fn cap_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// xturn started in the lab through `wrapper` (which sets its user, capabilities and
/// limits) loads the XDP program, keeps only CAP_BPF, CAP_NET_ADMIN and CAP_SYS_NICE
/// (--afxdp-nice -10) as uid 65534 with nothing ambient, and relays every datagram of a run
/// through AF_XDP (its /metrics, scraped in the server's namespace).
fn relays_through_afxdp_under(wrapper: &[String], metrics_port: u16) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = xturn_bin();
    let lab = Lab::new(1, 1500);
    let net = net(false);
    let listen = format!("127.0.0.1:{metrics_port}");
    let xturn = lab.start_xturn_under(wrapper, &bin, net, 1, &["--metrics-listen", &listen]);
    let pid = xturn.child.id();
    // Privileges are dropped after the forwarders are opened: wait for it.
    assert!(
        xturn
            .wait_for_line("running as", Duration::from_secs(5))
            .is_some(),
        "{}",
        xturn.output()
    );
    let kept = cap_names(["bpf", "net_admin", "sys_nice"]);
    assert_eq!(
        u64::from_str_radix(&proc_status(pid, "CapEff"), 16).unwrap(),
        cap_mask(&kept),
        "{}",
        xturn.output()
    );
    for set in ["CapAmb", "CapInh"] {
        assert_eq!(
            u64::from_str_radix(&proc_status(pid, set), 16).unwrap(),
            0,
            "{set}"
        );
    }
    assert!(proc_status(pid, "Uid").starts_with("65534\t"));
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    let run = Run {
        datagrams: 5_000,
        ..Run::new(1, false)
    };
    let flows = open_flows(&lab, net, false);
    warm_up(&flows, net.server, run);
    let url = format!("http://{listen}/metrics");
    let keys = [
        "xturn_relayed_packets_total{direction=to_peer,path=afxdp}",
        "xturn_relayed_packets_total{direction=to_client,path=afxdp}",
        "xturn_relayed_packets_total{direction=to_peer,path=sockets}",
        "xturn_relayed_packets_total{direction=to_client,path=sockets}",
        "xturn_xdp_frames_total{outcome=redirect_channel}",
        "xturn_xdp_frames_total{outcome=redirect_peer}",
    ];
    let read = |m: &std::collections::BTreeMap<String, f64>| -> Vec<u64> {
        keys.iter()
            .map(|k| m.get(*k).copied().unwrap_or(0.0) as u64)
            .collect()
    };
    std::thread::sleep(Duration::from_millis(1200));
    let before = read(&xturn_tests::samples(&xturn_tests::scrape(
        Some(&lab.ns_r),
        &url,
    )));
    let diag = || xturn.output();
    relay_each_way(
        &flows,
        run.datagrams,
        run.rate,
        net.server,
        run.data(),
        &lab.namespaces(),
        &diag,
    );
    let want: Vec<u64> = before
        .iter()
        .zip([
            run.datagrams,
            run.datagrams,
            0,
            0,
            run.datagrams,
            run.datagrams,
        ])
        .map(|(b, d)| b + d)
        .collect();
    let m = xturn_tests::scrape_until(Some(&lab.ns_r), &url, |m| read(m) == want);
    assert_eq!(
        read(&m),
        want,
        "all through AF_XDP: {m:#?}\n{}",
        xturn.output()
    );
}

/// The systemd unit (relay/dist/xturn.service) runs xturn as a user of its own with only
/// its AmbientCapabilities; systemd cannot run here, so prlimit and setpriv start it the
/// same way: a non-root uid, those capabilities ambient and inheritable, the bounding set
/// its CapabilityBoundingSet, no-new-privs, its LimitNOFILE (RLIMIT_MEMLOCK stays at this
/// machine's 8 MiB: CAP_IPC_LOCK covers the UMEM).
#[test]
fn runs_with_only_the_unit_files_capabilities() {
    if !root_or_skip("unit_capabilities") {
        return;
    }
    if !have("setpriv") || !have("prlimit") {
        panic!("setpriv and prlimit (util-linux) are missing");
    }
    let value = |k: &str| xturn_tests::unit_value(k).unwrap_or_else(|| panic!("unit has no {k}"));
    let ambient = cap_names(value("AmbientCapabilities").split_whitespace());
    let bounding = cap_names(value("CapabilityBoundingSet").split_whitespace());
    assert_eq!(value("NoNewPrivileges"), "yes");
    // The unit's LimitNOFILE, or this machine's hard limit where that is lower (raising it
    // takes CAP_SYS_RESOURCE, which systemd has and a container may not).
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let nofile = value("LimitNOFILE")
        .parse::<u64>()
        .unwrap()
        .min(hard.rlim_max);
    let wrapper: Vec<String> = vec![
        "prlimit".into(),
        format!("--nofile={nofile}:{nofile}"),
        "--".into(),
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={}", setpriv_set(&ambient)),
        format!("--ambient-caps={}", setpriv_set(&ambient)),
        format!("--bounding-set={}", setpriv_set(&bounding)),
        "--no-new-privs".into(),
    ];
    relays_through_afxdp_under(&wrapper, 9642);
}

/// The DaemonSet (relay/dist/xturn-daemonset.yaml) and the Dockerfile's run line start
/// xturn as root with only the capabilities listed (`add:`) and no privilege escalation;
/// setpriv does the same here. xturn then becomes uid 65534 itself.
#[test]
fn runs_as_the_daemonsets_root_with_only_its_capabilities() {
    if !root_or_skip("daemonset_capabilities") {
        return;
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../relay/dist/xturn-daemonset.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let add = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: ["))
        .and_then(|l| l.strip_suffix(']'))
        .expect("an `add: [..]` line in the DaemonSet");
    let caps = cap_names(add.split(',').map(|c| c.trim().trim_matches('"')));
    assert!(yaml.contains("allowPrivilegeEscalation: false"));
    let dockerfile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../relay/dist/Dockerfile"
    ))
    .unwrap();
    for c in &caps {
        let flag = format!("--cap-add {}", c.to_uppercase());
        assert!(
            dockerfile.contains(&flag),
            "the Dockerfile's run line lacks {flag}"
        );
    }
    let wrapper: Vec<String> = vec![
        "setpriv".into(),
        format!("--bounding-set={}", setpriv_set(&caps)),
        "--no-new-privs".into(),
    ];
    relays_through_afxdp_under(&wrapper, 9643);
}

/// `xturn kill` of an allocation that relays through AF_XDP: `xturn sessions` counts its
/// datagrams on the AF_XDP path; once killed, nothing passes either way (the XDP program
/// redirects none of it: its maps lost the channel and the permission with the
/// forwarders' tables), while the other allocations go on relaying every datagram through
/// AF_XDP.
#[test]
fn xturn_kill_stops_an_allocation_relaying_through_afxdp() {
    if !root_or_skip("afxdp_kill") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = xturn_bin();
    let lab = Lab::new(1, 1500);
    let net = net(false);
    let xturn = lab.start_xturn(&bin, net, 1, &[]);
    let pid = xturn.child.id();
    let run = Run {
        datagrams: 4_000,
        ..Run::new(1, false)
    };
    let mut flows = open_flows(&lab, net, false);
    warm_up(&flows, net.server, run);
    let diag = || format!("{:#}\n{}", settled_stats(&bin, &lab), xturn.output());
    relay_each_way(
        &flows,
        run.datagrams,
        run.rate,
        net.server,
        run.data(),
        &lab.namespaces(),
        &diag,
    );
    let admin = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.ns_r])
            .arg(&bin)
            .args(args)
            .args(["--pid", &pid.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xturn {args:?}: {}",
            xturn_tests::output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::thread::sleep(Duration::from_millis(1200));
    let v: serde_json::Value = serde_json::from_str(&admin(&["sessions", "--json"])).unwrap();
    let victim = flows.remove(0);
    let row = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["relay"] == victim.relay.to_string())
        .unwrap_or_else(|| panic!("no session of {}: {v:#}", victim.relay))
        .clone();
    let per_flow = run.datagrams / FLOWS;
    assert!(
        row["afxdp"]["to_peer_packets"].as_u64().unwrap() >= per_flow
            && row["afxdp"]["to_client_packets"].as_u64().unwrap() >= per_flow,
        "the victim's datagrams on AF_XDP: {row:#}"
    );

    let said = admin(&["kill", &victim.relay.to_string()]);
    assert!(said.contains("killed the allocation"), "{said}");
    let (s0, _) = fast_path_counters(&settled_stats(&bin, &lab), pid, false);
    let mut buf = [0u8; 4096];
    victim
        .peer
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    victim
        .client
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let late = run.data()(0, run.datagrams);
    victim
        .client
        .sock
        .send_to(&channel_data(victim.channel, &late), net.server)
        .unwrap();
    assert!(
        victim.peer.recv_from(&mut buf).is_err(),
        "relayed to the peer after the kill"
    );
    victim.peer.send_to(&late, victim.relay).unwrap();
    assert!(
        victim.client.sock.recv_from(&mut buf).is_err(),
        "relayed to the client after the kill"
    );
    let (s1, _) = fast_path_counters(&settled_stats(&bin, &lab), pid, false);
    assert_eq!(
        s1[..4],
        s0[..4],
        "the killed allocation's datagrams were steered"
    );

    relay_each_way(
        &flows,
        run.datagrams,
        run.rate,
        net.server,
        run.data(),
        &lab.namespaces(),
        &diag,
    );
    let (s2, _) = fast_path_counters(&settled_stats(&bin, &lab), pid, false);
    let delta: Vec<u64> = s2.iter().zip(s1).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        [vec![run.datagrams; 6], vec![0, 0]].concat(),
        "the others, all through AF_XDP"
    );
}
