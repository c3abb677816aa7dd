//! End to end over a real veth pair in two network namespaces (NETLAB topology): `xturn
//! --xdp` answers STUN Binding requests in the driver. coturn's `turnutils_stunclient` and
//! the project's own client get correct answers; the program's per-CPU counters (read here
//! from the kernel, by program id) count every answer, and xturn's socket path (its trace
//! log) never sees those requests, while a request the program passes to user space is
//! answered by the socket path as before. Needs root (skips otherwise).
//!
//! ```text
//!  ns xtNc: 192.0.2.2, 2001:db8::2 ──veth── ns xtNr: 192.0.2.1, 2001:db8::1 (xturn --xdp)
//!  (XDP_PASS program: XDP_TX frames into a veth need an XDP program on the receiving end)
//! ```

mod xdp_support;

use aya::maps::{Map, MapData, PerCpuArray};
use aya::programs::{loaded_programs, Xdp, XdpMode};
use aya::Ebpf;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use xdp_support::{in_netns, root_or_skip, run, unique_tag, Netns, OBJECT};
use xturn_control::client::binding_request;
use xturn_control::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use xturn_tests::{have, xturn_bin, Proc};
use xturn_xdp_common::{map_names, program_names, Counter};

/// Two namespaces joined by a veth pair; the namespace guards delete everything on drop.
struct Lab {
    client_if: String,
    relay_if: String,
    // Declared last: dropped after the fields above, also on panic.
    client: Netns,
    relay: Netns,
}

impl Lab {
    fn new() -> Lab {
        let tag = unique_tag();
        let lab = Lab {
            client_if: format!("{tag}a"),
            relay_if: format!("{tag}b"),
            client: Netns::new(format!("{tag}c")),
            relay: Netns::new(format!("{tag}r")),
        };
        run(&[
            "ip",
            "-n",
            &lab.client.name,
            "link",
            "add",
            &lab.client_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.relay_if,
            "netns",
            &lab.relay.name,
        ]);
        for (ns, dev, v4, v6) in [
            (
                &lab.client.name,
                &lab.client_if,
                "192.0.2.2/24",
                "2001:db8::2/64",
            ),
            (
                &lab.relay.name,
                &lab.relay_if,
                "192.0.2.1/24",
                "2001:db8::1/64",
            ),
        ] {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            // Complete checksums in frames from kernel sockets (NETLAB.md).
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        lab
    }
}

/// The XDP_PASS program on `dev` in `ns`, detached when the returned object drops.
fn attach_pass(ns: &str, dev: &str) -> Ebpf {
    let dev = dev.to_string();
    in_netns(ns, move || {
        let mut ebpf = Ebpf::load(OBJECT).expect("load object");
        let p: &mut Xdp = ebpf
            .program_mut(program_names::PASS)
            .unwrap()
            .try_into()
            .unwrap();
        p.load().expect("load pass program");
        p.attach(&dev, XdpMode::Driver)
            .expect("attach pass program");
        ebpf
    })
}

/// The id of the XDP program attached to `dev` in `ns`, as iproute2 shows it.
fn prog_id_of(ns: &str, dev: &str) -> u32 {
    let json = run(&["ip", "-n", ns, "-j", "link", "show", "dev", dev]);
    let at = json
        .find("\"prog\":{")
        .unwrap_or_else(|| panic!("no XDP program on {dev}: {json}"));
    json[at..]
        .split("\"id\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no program id in {json}"))
}

/// The counters map of the XDP program attached to `dev` in `ns`, found by program id.
fn counters_of(ns: &str, dev: &str) -> PerCpuArray<MapData, u64> {
    let id = prog_id_of(ns, dev);
    let prog = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("program {id} not loaded"));
    for map_id in prog.map_ids().unwrap().unwrap_or_default() {
        let info = aya::maps::MapInfo::from_id(map_id).unwrap();
        if info.name_as_str() == Some(map_names::COUNTERS) {
            let data = MapData::from_id(map_id).unwrap();
            return PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
        }
    }
    panic!("program {id} has no {} map", map_names::COUNTERS)
}

fn read(c: &PerCpuArray<MapData, u64>, which: Counter) -> u64 {
    c.get(&(which as u32), 0).unwrap().iter().sum()
}

/// Send `req` and wait for the answer with its transaction id (3 tries, 1 s each).
fn exchange(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let tid = Message::new_checked(req).unwrap().transaction_id();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(req, to).unwrap();
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if Message::new_checked(&buf[..n]).map(|m| m.transaction_id()) == Ok(tid) {
                    return Some(buf[..n].to_vec());
                }
            }
        }
    }
    None
}

fn client_socket(ns: &str, local: &str) -> UdpSocket {
    let local: SocketAddr = local.parse().unwrap();
    in_netns(ns, move || {
        let s = UdpSocket::bind(local).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    })
}

/// A checked Binding success response for `sock`: XOR-MAPPED-ADDRESS is its address,
/// FINGERPRINT present and right iff asked for. Returns whether SOFTWARE is present
/// (the socket path adds it, the XDP program does not).
fn check_answer(resp: &[u8], sock: &UdpSocket, fingerprint: bool) -> bool {
    let m = Message::new_checked(resp).expect("a STUN message");
    assert_eq!((m.method(), m.class()), (Method::Binding, Class::Success));
    assert_eq!(m.check_fingerprint(), Ok(fingerprint), "FINGERPRINT");
    let a = m
        .attribute(attr::XOR_MAPPED_ADDRESS)
        .expect("XOR-MAPPED-ADDRESS");
    let mapped = attr::decode_xor_address(a.value, &m.transaction_id()).unwrap();
    assert_eq!(mapped, sock.local_addr().unwrap(), "XOR-MAPPED-ADDRESS");
    m.attribute(attr::SOFTWARE).is_some()
}

fn tid(i: u32) -> TransactionId {
    let mut t = [0x5a; 12];
    t[8..].copy_from_slice(&i.to_be_bytes());
    TransactionId(t)
}

/// Run `xturn stats ARGS` in namespace `ns`: (success, stdout, stderr).
fn xturn_stats(bin: &std::path::Path, ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .arg("stats")
        .args(args)
        .output()
        .expect("run xturn stats");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `xturn stats --json` (and its text form, and its errors) against the counters the test
/// reads itself from the program attached to the relay's veth.
fn check_stats_command(
    bin: &std::path::Path,
    lab: &Lab,
    counters: &PerCpuArray<MapData, u64>,
    pid: u32,
) {
    let id = prog_id_of(&lab.relay.name, &lab.relay_if);
    let before: Vec<u64> = Counter::ALL.iter().map(|c| read(counters, *c)).collect();
    let (ok, json, err) = xturn_stats(bin, &lab.relay.name, &["--json"]);
    let after: Vec<u64> = Counter::ALL.iter().map(|c| read(counters, *c)).collect();
    assert!(ok, "xturn stats --json failed: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    // Other tests' xturn programs (other namespaces) may be listed too: ours is the one on
    // the relay's veth.
    let mine: Vec<&serde_json::Value> = v["programs"]
        .as_array()
        .unwrap_or_else(|| panic!("no programs array: {json}"))
        .iter()
        .filter(|p| {
            p["interfaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["interface"] == lab.relay_if.as_str()))
        })
        .collect();
    assert_eq!(mine.len(), 1, "{json}");
    let p = mine[0];
    assert_eq!(p["id"], id, "{json}");
    assert_eq!(p["in_this_netns"], true, "{json}");
    assert_eq!(p["interfaces"][0]["mode"], "driver", "{json}");
    let c = p["counters"].as_object().unwrap();
    assert_eq!(c.len(), Counter::ALL.len(), "{json}");
    for (i, k) in Counter::ALL.iter().enumerate() {
        let got = c
            .get(k.name())
            .and_then(|x| x.as_u64())
            .unwrap_or_else(|| panic!("no counter {} in {json}", k.name()));
        // Nothing sends STUN meanwhile; only stray frames (IPv6 ND) may move others.
        assert!(
            (before[i]..=after[i]).contains(&got),
            "{}: {got} not in {}..={}",
            k.name(),
            before[i],
            after[i]
        );
    }
    for k in [Counter::TxBindingIpv4, Counter::TxBindingIpv6] {
        assert!(read(counters, k) > 0);
        assert_eq!(c[k.name()], read(counters, k), "{}: {json}", k.name());
    }

    // The text form: one `name value` line per counter, for the program on --xdp IFACE.
    let (ok, text, err) = xturn_stats(bin, &lab.relay.name, &["--xdp", &lab.relay_if]);
    assert!(ok, "xturn stats --xdp failed: {err}");
    assert!(
        text.starts_with(&format!("xturn XDP program {id} on {} ", lab.relay_if)),
        "{text}"
    );
    let line = format!(
        "{} {}",
        Counter::TxBindingIpv4.name(),
        read(counters, Counter::TxBindingIpv4)
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
        "no line {line:?} in:\n{text}"
    );
    // Then, after a blank line, the AF_XDP fast path of the server on that interface.
    let program_part = text.split("\n\n").next().unwrap();
    assert_eq!(
        program_part.lines().count(),
        1 + Counter::ALL.len(),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\n\nxturn server {pid}: AF_XDP fast path and kernel sockets\nthread 0 "
        )),
        "{text}"
    );

    // Clear errors: the client's veth carries the XDP_PASS program, not xturn's.
    let (ok, _, err) = xturn_stats(bin, &lab.client.name, &["--xdp", &lab.client_if]);
    assert!(!ok && err.contains("is not xturn_xdp"), "{err}");
    let (ok, _, err) = xturn_stats(bin, &lab.client.name, &["--xdp", &lab.relay_if]);
    assert!(!ok && err.contains("no interface"), "{err}");
    // Not root: refused with the reason (setpriv is in util-linux; the check needs a
    // binary that user nobody may run, which a checkout under /root is not).
    let as_nobody = |arg: &str| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(bin)
            .arg(arg)
            .output()
    };
    match as_nobody("--version") {
        Ok(v) if v.status.success() => {
            let out = as_nobody("stats").unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains("needs root"), "{err}");
        }
        _ => eprintln!("not checking `xturn stats` as a non-root user: setpriv or access missing"),
    }
}

#[test]
fn xdp_answers_binding_requests_on_veth() {
    if !root_or_skip("xdp_answers_binding_requests_on_veth") {
        return;
    }
    assert!(
        have("turnutils_stunclient") && have("ethtool"),
        "turnutils_stunclient (Debian package coturn) and ethtool are needed: run tests/run.sh"
    );
    let bin = xturn_bin();
    let lab = Lab::new();
    let _pass = attach_pass(&lab.client.name, &lab.client_if);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.relay.name])
        .arg(&bin)
        .args([
            "--listening-ip",
            "192.0.2.1",
            "--listening-ip",
            "2001:db8::1",
            "--listening-port",
            "3478",
            "--threads",
            "1",
            "--log-level",
            "trace",
            "--xdp",
            &lab.relay_if,
        ]);
    let xturn = Proc::spawn("xturn", cmd);
    let attached = xturn.wait_for_line("XDP program attached", Duration::from_secs(10));
    assert!(attached.is_some(), "no XDP attach:\n{}", xturn.output());
    assert!(
        attached.unwrap().contains("native mode"),
        "veth has native XDP: {}",
        xturn.output()
    );
    let server4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let server6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
    let sock4 = client_socket(&lab.client.name, "192.0.2.2:0");
    let sock6 = client_socket(&lab.client.name, "[2001:db8::2]:0");

    // Ready when the sockets are bound: the first answer of the socket path (a request
    // the program passes) says so; the XDP path answers from the moment of attachment.
    let probe = {
        let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid(0));
        b.attr(attr::USERNAME, b"probe");
        b.finish()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while exchange(&sock4, server4, &probe).is_none() {
        assert!(
            Instant::now() < end,
            "xturn never answered:\n{}",
            xturn.output()
        );
    }
    let counters = counters_of(&lab.relay.name, &lab.relay_if);
    let seen_by_sockets = |s: &UdpSocket| {
        // The reader threads need a moment to collect the latest log lines.
        std::thread::sleep(Duration::from_millis(300));
        let me = format!("from {} ", s.local_addr().unwrap());
        xturn
            .output()
            .lines()
            .filter(|l| l.contains("control traffic") && l.contains(&me))
            .count()
    };
    let seen_before = (seen_by_sockets(&sock4), seen_by_sockets(&sock6));

    // 1. The project's client, IPv4 and IPv6, with and without FINGERPRINT.
    let (v4_before, v6_before) = (
        read(&counters, Counter::TxBindingIpv4),
        read(&counters, Counter::TxBindingIpv6),
    );
    let (mut n4, mut n6) = (0, 0);
    for i in 1..=20u32 {
        let fp = i % 2 == 0;
        let (sock, server, n) = if i % 4 == 3 {
            (&sock6, server6, &mut n6)
        } else {
            (&sock4, server4, &mut n4)
        };
        let resp = exchange(sock, server, &binding_request(tid(i), fp))
            .unwrap_or_else(|| panic!("no answer to request {i}:\n{}", xturn.output()));
        *n += 1;
        assert!(
            !check_answer(&resp, sock, fp),
            "request {i} was answered by the socket path (SOFTWARE present)"
        );
    }
    // One answer per request (no retransmissions were needed, or the deltas say so).
    assert_eq!(read(&counters, Counter::TxBindingIpv4) - v4_before, n4);
    assert_eq!(read(&counters, Counter::TxBindingIpv6) - v6_before, n6);
    assert_eq!(
        (seen_by_sockets(&sock4), seen_by_sockets(&sock6)),
        seen_before,
        "the socket path saw requests the program answered:\n{}",
        xturn.output()
    );

    // 1b. `xturn stats`, run in the relay's namespace, shows the counters read above.
    check_stats_command(&bin, &lab, &counters, xturn.child.id());

    // 2. coturn's client.
    let before = read(&counters, Counter::TxBindingIpv4);
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &lab.client.name,
        "timeout",
        "10",
        "turnutils_stunclient",
        "-L",
        "192.0.2.2",
        "192.0.2.1",
    ]);
    let line = out
        .lines()
        .find(|l| l.contains("UDP reflexive addr:"))
        .unwrap_or_else(|| panic!("{out}"));
    let mapped = line.rsplit(' ').next().unwrap().trim().to_string();
    assert!(mapped.starts_with("192.0.2.2:"), "{line}");
    assert!(
        read(&counters, Counter::TxBindingIpv4) > before,
        "turnutils_stunclient was not answered by XDP:\n{out}"
    );
    assert!(
        !xturn.output().contains(&format!("from {mapped} ")),
        "the socket path saw turnutils_stunclient's request:\n{}",
        xturn.output()
    );

    // 3. What the program passes still reaches the socket path, which answers it.
    let user_space = read(&counters, Counter::PassStunForUserSpace);
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid(99));
    b.attr(attr::USERNAME, b"to user space");
    b.fingerprint();
    let resp = exchange(&sock4, server4, &b.finish()).expect("socket path answers");
    assert!(
        check_answer(&resp, &sock4, true),
        "a passed request is answered by the socket path (with SOFTWARE)"
    );
    assert_eq!(
        read(&counters, Counter::PassStunForUserSpace),
        user_space + 1
    );
    let me = sock4.local_addr().unwrap().to_string();
    assert!(
        xturn
            .wait_for_line(&format!("from {me} "), Duration::from_secs(2))
            .is_some(),
        "the socket path's trace log shows the passed request:\n{}",
        xturn.output()
    );
    drop(xturn);
    drop(lab);
}

/// With `--xdp`, the control plane's outputs reach the program's maps: ChannelData on a
/// bound channel and peer data with a permission are steered toward AF_XDP, and while no
/// AF_XDP socket is bound for the queue the program passes them, so the socket path
/// relays them exactly as without XDP. The counters prove both that the maps were fed and
/// that the fallback was taken for every datagram. (`--no-afxdp`: the server binds no
/// AF_XDP socket; afxdp_relay.rs tests the path with them.)
#[test]
fn xdp_maps_follow_the_control_plane_and_fall_back_to_sockets() {
    if !root_or_skip("xdp_maps_follow_the_control_plane_and_fall_back_to_sockets") {
        return;
    }
    let bin = xturn_bin();
    let lab = Lab::new();
    let _pass = attach_pass(&lab.client.name, &lab.client_if);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.relay.name])
        .arg(&bin)
        .args(["--listening-ip", "192.0.2.1", "--listening-port", "3478"])
        .args([
            "--user",
            "alice:wonderland",
            "--threads",
            "1",
            "--xdp",
            &lab.relay_if,
            "--no-afxdp",
        ])
        .args(xturn_tests::LAB_PEERS);
    let xturn = Proc::spawn("xturn", cmd);
    assert!(
        xturn
            .wait_for_line("XDP program attached", Duration::from_secs(10))
            .is_some(),
        "no XDP attach:\n{}",
        xturn.output()
    );
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let mut client = xturn_tests::TestClient::with_socket(
        client_socket(&lab.client.name, "192.0.2.2:0"),
        server,
        "alice",
        "wonderland",
    );
    // The first request may race the socket path's start: TestClient retransmits.
    let relay = client.allocate();
    assert_eq!(relay.ip().to_string(), "192.0.2.1");
    let peer = client_socket(&lab.client.name, "192.0.2.2:0");
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client
        .sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert_eq!(
        client.channel_bind(0x4000, peer_addr),
        xturn_control::client::Answer::Success
    );
    let counters = counters_of(&lab.relay.name, &lab.relay_if);
    let (ch0, peer0) = (
        read(&counters, Counter::PassNoXskChannel),
        read(&counters, Counter::PassNoXskPeer),
    );
    const N: u64 = 200;
    let mut buf = vec![0u8; 2048];
    for i in 0..N {
        let p = xturn_tests::payload(i);
        client
            .sock
            .send_to(
                &xturn_control::wire::channel_data::encode(0x4000, &p),
                server,
            )
            .unwrap();
        let (n, from) = peer.recv_from(&mut buf).expect("peer receives");
        assert_eq!((from, &buf[..n]), (relay, &p[..]));
        peer.send_to(&p, relay).unwrap();
        let (n, _) = client.sock.recv_from(&mut buf).expect("client receives");
        let cd = xturn_control::wire::ChannelData::new_checked(&buf[..n]).unwrap();
        assert_eq!((cd.channel(), cd.payload()), (0x4000, &p[..]));
    }
    assert_eq!(read(&counters, Counter::PassNoXskChannel) - ch0, N);
    assert_eq!(read(&counters, Counter::PassNoXskPeer) - peer0, N);
    drop(xturn);
    drop(lab);
}
