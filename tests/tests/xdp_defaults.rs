//! `xturn --xdp` in topologies left as users have them: veths at their defaults (TX
//! checksum offload on, so frames from local senders carry CHECKSUM_PARTIAL; no XDP program
//! on the far ends, so XDP_TX'd frames would not arrive), IP forwarding on in the relay
//! namespace and nothing else tuned. The rule under test: whatever the socket path would
//! relay is relayed with `--xdp` too, on the fast path where it can be carried, on the
//! socket path where not, and the counters say which. With the in-kernel relay
//! (`--fast-path xdp`), once the permissions expire nothing passes by any path.
//!
//! ```text
//!  (a) standard:  ns c 192.0.2.2 ──veth── ns r (xturn --xdp rc,rp) ──veth── ns p 198.51.100.2
//!  (b) the same with --xdp-mode generic
//!  (c) one interface (a cloud VM's single NIC):
//!      ns c ──veth──┐
//!      ns p ──veth──┤ bridge (ns s) ├──veth── ns r: r0 = 192.0.2.1 and 198.51.100.1 (xturn --xdp r0)
//! ```
//!
//! Also: a full permission map, a forwarder thread that dies or hangs, `xturn check`'s
//! verdicts, and clients nobody here wrote (coturn's turnutils_uclient with channels and
//! with Send indications, aioice, headless Chromium) through topology (a). Needs root
//! (skips otherwise).

mod xdp_support;

use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdp_support::traffic::{channel_data, nothing_passes, relay_each_way, socket_in, Flow};
use xdp_support::{root_or_skip, run, unique_tag, Netns, OBJECT};
use xturn_control::client::Answer;
use xturn_control::wire::{attr, Class, MessageBuilder, Method, TransactionId};
use xturn_tests::{have, payload, xturn_bin, Proc, TestClient};

const SERVER: &str = "192.0.2.1:3478";
const CLIENT_IP: &str = "192.0.2.2";
const RELAY_IP: &str = "198.51.100.1";
const PEER_IP: &str = "198.51.100.2";
const PEER_BASE_PORT: u16 = 7000;
/// Flows (allocation, channel, peer port): datagram `n` goes on flow `n % FLOWS`.
const FLOWS: u64 = 8;
/// Every this many datagrams one is as large as a 1500-byte MTU carries (ChannelData of
/// 1472 bytes from the client; 1472 bytes of UDP payload from the peer, which grow past
/// the client side's MTU as ChannelData and so must take the kernel socket).
const MAX_SIZE_EVERY: u64 = 1000;

fn server() -> SocketAddr {
    SERVER.parse().unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topo {
    /// Client and peer on their own veths to the relay.
    Standard,
    /// Client, peer and relay on one bridge; the relay has a single interface.
    OneInterface,
}

struct Lab {
    ns_c: String,
    ns_r: String,
    ns_p: String,
    /// The client's interface (in `ns_c`).
    client_if: String,
    /// The relay's interfaces for `--xdp`.
    xdp: Vec<String>,
    // Declared last: dropped after the fields above, also on panic.
    _guards: Vec<Netns>,
}

impl Lab {
    /// The client's, the relay's and the peer's namespace.
    fn namespaces(&self) -> [&str; 3] {
        [&self.ns_c, &self.ns_r, &self.ns_p]
    }

    /// The topology with veth defaults: no ethtool, no XDP program on any far end.
    fn new(topo: Topo) -> Lab {
        Lab::with_queues(topo, 1)
    }

    fn with_queues(topo: Topo, queues: u32) -> Lab {
        let tag = unique_tag();
        let mut guards = vec![
            Netns::new(format!("{tag}c")),
            Netns::new(format!("{tag}r")),
            Netns::new(format!("{tag}p")),
        ];
        let [c, r, p] = [0, 1, 2].map(|i| guards[i].name.clone());
        let q = queues.to_string();
        let veth = |ns: &str, a: &str, b: &str, other: &str| {
            run(&[
                "ip",
                "-n",
                ns,
                "link",
                "add",
                a,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                b,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "netns",
                other,
            ]);
        };
        let addr =
            |ns: &str, dev: &str, a: &str| run(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
        let up = |ns: &str, dev: &str| run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        let (ca, pa) = (format!("{tag}ca"), format!("{tag}pa"));
        let xdp = match topo {
            Topo::Standard => {
                let (rc, rp) = (format!("{tag}rc"), format!("{tag}rp"));
                veth(&c, &ca, &rc, &r);
                veth(&r, &rp, &pa, &p);
                addr(&r, &rc, "192.0.2.1/24");
                addr(&r, &rp, "198.51.100.1/24");
                up(&r, &rc);
                up(&r, &rp);
                vec![rc, rp]
            }
            Topo::OneInterface => {
                guards.push(Netns::new(format!("{tag}s")));
                let s = guards[3].name.clone();
                let br = format!("{tag}br");
                run(&["ip", "-n", &s, "link", "add", &br, "type", "bridge"]);
                up(&s, &br);
                let r0 = format!("{tag}r0");
                for (ns, a, b) in [
                    (&c, &ca, format!("{tag}sc")),
                    (&p, &pa, format!("{tag}sp")),
                    (&r, &r0, format!("{tag}sr")),
                ] {
                    veth(ns, a, &b, &s);
                    run(&["ip", "-n", &s, "link", "set", &b, "master", &br]);
                    up(&s, &b);
                }
                addr(&r, &r0, "192.0.2.1/24");
                addr(&r, &r0, "198.51.100.1/24");
                up(&r, &r0);
                vec![r0]
            }
        };
        addr(&c, &ca, "192.0.2.2/24");
        up(&c, &ca);
        addr(&p, &pa, "198.51.100.2/24");
        up(&p, &pa);
        // The XDP program's next-hop lookup needs forwarding on (README, Next hop).
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
        ]);
        Lab {
            ns_c: c,
            ns_r: r,
            ns_p: p,
            client_if: ca,
            xdp,
            _guards: guards,
        }
    }

    /// xturn in the relay namespace with `--xdp` on the lab's interfaces and `extra`
    /// options, `env` set; returns once its forwarder thread is up.
    fn start_xturn(&self, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_r])
            .arg(xturn_bin())
            .args([
                "--listening-ip",
                "192.0.2.1",
                "--relay-ip",
                RELAY_IP,
                "--user",
                "alice:wonderland",
                "--threads",
                "1",
                "--log-level",
                "debug",
                "--xdp",
                &self.xdp.join(","),
            ])
            .args(xturn_tests::LAB_PEERS)
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let xturn = Proc::spawn("xturn", cmd);
        let ready = xturn.wait_for_line("AF_XDP forwarder 0", Duration::from_secs(15));
        assert!(ready.is_some(), "no AF_XDP forwarder:\n{}", xturn.output());
        xturn
    }

    /// `xturn stats --json` in the relay namespace, after the status file was rewritten.
    fn stats(&self) -> Value {
        std::thread::sleep(Duration::from_millis(1200));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_r])
            .arg(xturn_bin())
            .args(["stats", "--json", "--xdp", &self.xdp[0]])
            .output()
            .expect("run xturn stats");
        assert!(
            out.status.success(),
            "xturn stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("xturn stats JSON")
    }

    /// Attach xturn's XDP_PASS program to the client's veth end (what a tuned lab does).
    fn attach_pass_on_client(&self) {
        let obj = std::env::temp_dir().join(format!("xturn-xdp-{}.o", std::process::id()));
        std::fs::write(&obj, OBJECT).unwrap();
        run(&[
            "ip",
            "-n",
            &self.ns_c,
            "link",
            "set",
            "dev",
            &self.client_if,
            "xdp",
            "obj",
            obj.to_str().unwrap(),
            "sec",
            "xdp",
            "program",
            xturn_xdp_common::program_names::PASS,
        ]);
        let _ = std::fs::remove_file(obj);
    }
}

/// Counters of the server `pid` in `xturn stats --json`.
struct Snapshot {
    xdp: Value,
    server: Value,
}

impl Snapshot {
    fn of(v: &Value, pid: u32) -> Snapshot {
        let server = v["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["pid"] == pid))
            .unwrap_or_else(|| panic!("no status of pid {pid}: {v:#}"))
            .clone();
        Snapshot {
            xdp: v["programs"][0]["counters"].clone(),
            server,
        }
    }

    fn xdp(&self, name: &str) -> u64 {
        self.xdp[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no XDP counter {name}: {:#}", self.xdp))
    }

    /// A forwarder counter summed over threads.
    fn fw(&self, name: &str) -> u64 {
        self.server["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["forwarder"][name].as_u64().unwrap())
            .sum()
    }

    /// A counter of everything `path` (afxdp, sockets, xdp) relayed since the start, the
    /// allocations that are gone included.
    fn relayed(&self, path: &str, name: &str) -> u64 {
        self.server["relayed"][path][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no relayed.{path}.{name}: {:#}", self.server))
    }

    /// A per-allocation counter summed over allocations, for `path` (afxdp, sockets).
    fn allocs(&self, path: &str, name: &str) -> u64 {
        self.server["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a[path][name].as_u64().unwrap())
            .sum()
    }
}

/// The traffic tests run one at a time: the relay and the test share 2 CPUs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `FLOWS` allocations from the client namespace, each with a channel to its own peer port
/// (ChannelBind also installs the peer's permission), warmed up one datagram each way so
/// the relay's kernel knows both neighbours.
fn flows(lab: &Lab) -> Vec<Flow> {
    let mut flows = Vec::new();
    for i in 0..FLOWS {
        let sock = socket_in(&lab.ns_c, SocketAddr::new(CLIENT_IP.parse().unwrap(), 0));
        let mut client = TestClient::with_socket(sock, server(), "alice", "wonderland");
        let relay = client.allocate();
        assert_eq!(relay.ip(), RELAY_IP.parse::<IpAddr>().unwrap());
        let peer_addr = SocketAddr::new(PEER_IP.parse().unwrap(), PEER_BASE_PORT + i as u16);
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
    let mut buf = [0u8; 4096];
    for f in &flows {
        let warm = b"warm-up".to_vec();
        f.client
            .sock
            .send_to(&channel_data(f.channel, &warm), server())
            .unwrap();
        let (n, from) = f.peer.recv_from(&mut buf).expect("warm-up to the peer");
        assert_eq!((from, &buf[..n]), (f.relay, warm.as_slice()));
        f.peer.send_to(&warm, f.relay).unwrap();
        let (n, _) = f.client.sock.recv_from(&mut buf).expect("warm-up back");
        assert_eq!(&buf[..n], channel_data(f.channel, &warm).as_slice());
    }
    flows
}

/// The data of datagram `n` of a run of `count` each way: 0..count go to the peers,
/// count..2*count to the clients. Mostly [`payload`] (8-1207 bytes); every
/// `MAX_SIZE_EVERY`th as large as a 1500-byte MTU carries.
fn data(n: u64, count: u64) -> Vec<u8> {
    let mut v = payload(n);
    if n % MAX_SIZE_EVERY == MAX_SIZE_EVERY - 1 {
        // 1472 bytes of UDP payload: ChannelData with 1468 bytes of data from the client,
        // 1472 bytes of data from the peer.
        let len = if n < count { 1468 } else { 1472 };
        v.resize(len, (n % 251) as u8);
    }
    v
}

/// coturn's `turnutils_stunclient` from the client namespace gets an answer.
fn stun_answered(lab: &Lab) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_c])
        .args(["timeout", "10", "turnutils_stunclient", "192.0.2.1"])
        .output()
        .expect("run turnutils_stunclient");
    let text = xturn_tests::output_text(&out);
    assert!(
        text.contains("UDP reflexive addr: 192.0.2.2:"),
        "no Binding answer:\n{text}"
    );
}

const RUN: u64 = 10_000;
/// `--permission-lifetime` (seconds) of the in-kernel runs.
const PERMISSION_LIFETIME: u64 = 25;
const RATE: u64 = 5_000;

/// 10,000 ChannelData datagrams each way through an untuned topology: every one arrives,
/// the per-allocation counters of the two paths add up to exactly that, and (where the
/// fast path can carry them) at least 99 % took AF_XDP. Datagrams that grow past the
/// client side's MTU take the kernel socket (and are fragmented there, as without --xdp);
/// checksums left to offload by the veth senders are completed on the fast path; Binding
/// requests are answered by the socket path, since XDP_TX would not arrive.
///
/// With `in_kernel` (`--fast-path xdp`) the run is 100,000 each way at 20,000/s. In
/// generic mode the driver relays at least 99 % of it (frames keep their socket buffer,
/// so checksums left to offload stay left to offload); in native mode, where a frame sent
/// out of a veth without a program on its far end would not arrive, it relays none and
/// AF_XDP carries what it did without the in-kernel relay: nothing is lost either way.
fn relay_untuned(topo: Topo, generic: bool, in_kernel: bool) {
    let test = format!(
        "xdp_defaults_{topo:?}{}{}",
        if generic { "_generic" } else { "" },
        if in_kernel { "_in_kernel" } else { "" }
    );
    if !root_or_skip(&test) {
        return;
    }
    assert!(
        have("turnutils_stunclient"),
        "turnutils_stunclient (Debian package coturn) is needed: run tests/run.sh"
    );
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(topo);
    let mut mode: Vec<&str> = Vec::new();
    if generic {
        mode.extend(["--xdp-mode", "generic"]);
    }
    // With the in-kernel relay, the permissions expire after the run: nothing passes then.
    let lifetime = PERMISSION_LIFETIME.to_string();
    if in_kernel {
        mode.extend(["--fast-path", "xdp", "--permission-lifetime", &lifetime]);
    }
    let (run, rate) = if in_kernel {
        (100_000, 20_000)
    } else {
        (RUN, RATE)
    };
    let xturn = lab.start_xturn(&mode, &[]);
    let pid = xturn.child.id();
    let log = xturn.output();
    let want = if generic {
        "XDP_TX arrives: generic mode"
    } else {
        "XDP_TX does not arrive: the veth peer"
    };
    assert!(log.contains(want), "start-up lines: {log}");
    assert!(
        log.contains("STUN Binding requests: answered"),
        "start-up lines: {log}"
    );

    let t_bind = Instant::now();
    let flows = flows(&lab);
    let before = Snapshot::of(&lab.stats(), pid);
    let diag = || format!("{:#}\n{}", lab.stats(), xturn.output());
    relay_each_way(&flows, run, rate, server(), data, &lab.namespaces(), &diag);
    let sent_by = t_bind.elapsed();
    assert!(
        !in_kernel || sent_by < Duration::from_secs(PERMISSION_LIFETIME),
        "the run outlived the permission ({sent_by:?}): the machine is too slow for this test"
    );
    stun_answered(&lab);
    let after = Snapshot::of(&lab.stats(), pid);
    let d = |f: &dyn Fn(&Snapshot) -> u64| f(&after) - f(&before);

    // The paths together carried exactly the run.
    let (driver_peer, driver_client) = (
        d(&|s| s.allocs("xdp", "to_peer_packets")),
        d(&|s| s.allocs("xdp", "to_client_packets")),
    );
    let (fast_peer, fast_client) = (
        d(&|s| s.allocs("afxdp", "to_peer_packets")) + driver_peer,
        d(&|s| s.allocs("afxdp", "to_client_packets")) + driver_client,
    );
    let (slow_peer, slow_client) = (
        d(&|s| s.allocs("sockets", "to_peer_packets")),
        d(&|s| s.allocs("sockets", "to_client_packets")),
    );
    let ctx = format!(
        "{test}: fast path {fast_peer}/{fast_client} (in the driver {driver_peer}/\
         {driver_client}), sockets {slow_peer}/{slow_client}\n{}",
        diag()
    );
    assert_eq!(
        (fast_peer + slow_peer, fast_client + slow_client),
        (run, run),
        "{ctx}"
    );
    // The fast path carried at least 99 % each way.
    assert!(
        fast_peer * 100 >= run * 99 && fast_client * 100 >= run * 99,
        "{ctx}"
    );
    let relayed_in_driver = in_kernel && generic;
    if relayed_in_driver {
        assert!(
            driver_peer * 100 >= run * 99 && driver_client * 100 >= run * 99,
            "{ctx}"
        );
    } else {
        assert_eq!((driver_peer, driver_client), (0, 0), "{ctx}");
    }
    // The datagrams grown past the MTU went by the kernel socket (the driver leaves them
    // to AF_XDP, whose forwarder hands them to the socket).
    let over_mtu = run / MAX_SIZE_EVERY;
    assert_eq!(d(&|s| s.fw("slow_path_mtu")), over_mtu, "{ctx}");
    // Frames of veth senders carry checksums left to offload; the forwarder completed
    // them (the driver, in generic mode, leaves them to the offload).
    if !relayed_in_driver {
        assert!(
            d(&|s| s.fw("partial_checksum")) >= run,
            "no partial checksums completed: {ctx}"
        );
    }
    for k in [
        "dropped_bad_checksum",
        "dropped_malformed",
        "dropped_not_allowed",
        "dropped_tx_full",
    ] {
        assert_eq!(d(&|s| s.fw(k)), 0, "{k}: {ctx}");
    }
    assert_eq!(d(&|s| s.xdp("drop_no_permission")), 0, "{ctx}");
    // The Binding request: passed to the socket path, never XDP_TX'd into the void.
    assert!(d(&|s| s.xdp("pass_no_xdp_tx")) >= 1, "{ctx}");
    assert_eq!(d(&|s| s.xdp("tx_binding_ipv4")), 0, "{ctx}");
    if in_kernel {
        // The permissions expire (the channels, 600 s, live on): nothing passes any more,
        // by any path.
        let expired =
            t_bind + Duration::from_secs(PERMISSION_LIFETIME) + Duration::from_millis(1500);
        if let Some(d) = expired.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let b = Snapshot::of(&lab.stats(), pid);
        nothing_passes(&flows[0], server());
        // The status file is rewritten every 0.5 s.
        std::thread::sleep(Duration::from_millis(1200));
        let a = Snapshot::of(&lab.stats(), pid);
        for path in ["xdp", "afxdp", "sockets"] {
            for name in ["to_peer_packets", "to_client_packets"] {
                assert_eq!(
                    a.allocs(path, name),
                    b.allocs(path, name),
                    "{test}: {path} {name} after the permission expired\n{}",
                    diag()
                );
            }
        }
    }
    let tx_report = &after.server["xdp"]["interfaces"];
    assert_eq!(
        tx_report[0]["xdp_tx"].as_bool(),
        Some(generic),
        "status: {tx_report:#}"
    );

    if topo == Topo::Standard && !generic {
        // A program on the veth peer appears: within the re-check (1 s) Binding requests
        // are answered in the driver.
        lab.attach_pass_on_client();
        let line = xturn.wait_for_line("XDP_TX arrives now", Duration::from_secs(5));
        assert!(line.is_some(), "no re-check:\n{}", xturn.output());
        let b = Snapshot::of(&lab.stats(), pid);
        stun_answered(&lab);
        let a = Snapshot::of(&lab.stats(), pid);
        assert_eq!(
            a.xdp("tx_binding_ipv4") - b.xdp("tx_binding_ipv4"),
            1,
            "{:#}",
            a.xdp
        );
    }
    drop(xturn);
}

#[test]
fn untuned_standard_topology_relays_everything_mostly_on_the_fast_path() {
    relay_untuned(Topo::Standard, false, false);
}

#[test]
fn untuned_standard_topology_in_generic_mode() {
    relay_untuned(Topo::Standard, true, false);
}

#[test]
fn untuned_single_interface_relay() {
    relay_untuned(Topo::OneInterface, false, false);
}

#[test]
fn untuned_standard_topology_with_the_in_kernel_relay() {
    relay_untuned(Topo::Standard, false, true);
}

#[test]
fn untuned_standard_topology_in_generic_mode_with_the_in_kernel_relay() {
    relay_untuned(Topo::Standard, true, true);
}

#[test]
fn untuned_single_interface_in_generic_mode_with_the_in_kernel_relay() {
    relay_untuned(Topo::OneInterface, true, true);
}

/// A permission map of 4 entries for 8 allocations with one permission each: the four
/// that do not fit are served by the socket path (peer data passed, not dropped), the
/// rest by AF_XDP, and nothing is lost.
#[test]
fn full_permission_map_degrades_to_the_socket_path() {
    if !root_or_skip("full_permission_map_degrades_to_the_socket_path") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(Topo::Standard);
    let xturn = lab.start_xturn(&["--xdp-max-permissions", "4"], &[]);
    let pid = xturn.child.id();
    assert!(
        xturn.output().contains("65536 channels"),
        "{}",
        xturn.output()
    );
    let flows = flows(&lab);
    let before = Snapshot::of(&lab.stats(), pid);
    let n = 4_000;
    let diag = || format!("{:#}\n{}", lab.stats(), xturn.output());
    relay_each_way(&flows, n, RATE, server(), data, &lab.namespaces(), &diag);
    let v = lab.stats();
    let after = Snapshot::of(&v, pid);
    let d = |f: &dyn Fn(&Snapshot) -> u64| f(&after) - f(&before);
    assert_eq!(
        after.server["xdp"]["not_mirrored"]["permissions_not_mirrored"].as_u64(),
        Some(4),
        "{v:#}"
    );
    assert_eq!(after.server["xdp"]["map_permissions"].as_u64(), Some(4));
    // Half the flows' peer data was passed to the socket path, and relayed there.
    assert_eq!(
        d(&|s| s.xdp("pass_permission_not_mirrored")),
        n / 2,
        "{v:#}"
    );
    assert_eq!(d(&|s| s.xdp("drop_no_permission")), 0, "{v:#}");
    assert_eq!(d(&|s| s.allocs("sockets", "to_client_packets")), n / 2);
    assert_eq!(d(&|s| s.allocs("afxdp", "to_client_packets")), n / 2);
    // Client to peer: every channel is in its map, the forwarder checks the permissions.
    assert_eq!(d(&|s| s.allocs("afxdp", "to_peer_packets")), n);
    assert!(
        xturn.output().contains("not in XT_PERMS"),
        "the log names the map: {}",
        xturn.output()
    );
    drop(xturn);
}

/// Forwarder thread 0 is made to die (panic) or hang after `after` frames; datagrams sent
/// one at a time until then take the fast path, the death is logged and shown in `xturn
/// stats`, and 2,000 datagrams each way afterwards all arrive by the socket path.
fn forwarder_fault(fault: &str, after: u64, reason: &str) {
    let test = format!("forwarder_fault_{fault}");
    if !root_or_skip(&test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(Topo::Standard);
    let spec = format!("{fault}:{after}");
    let xturn = lab.start_xturn(&[], &[("XTURN_FAULT_AFXDP", &spec)]);
    let pid = xturn.child.id();
    let flows = flows(&lab);
    // The warm-up took the fast path for some frames already: count what is left.
    let start = Snapshot::of(&lab.stats(), pid);
    let received = start.fw("received");
    assert!(received < after, "{received} frames before the fault");
    let f = &flows[0];
    let mut buf = [0u8; 4096];
    let mut k = received;
    while k < after {
        let d = payload(k);
        f.client
            .sock
            .send_to(&channel_data(f.channel, &d), server())
            .unwrap();
        let (n, _) = f
            .peer
            .recv_from(&mut buf)
            .expect("to the peer before the fault");
        assert_eq!(&buf[..n], d.as_slice());
        k += 1;
        if k == after {
            break;
        }
        f.peer.send_to(&d, f.relay).unwrap();
        let (n, _) = f
            .client
            .sock
            .recv_from(&mut buf)
            .expect("back before the fault");
        assert_eq!(&buf[..n], channel_data(f.channel, &d).as_slice());
        k += 1;
    }
    let dead = xturn.wait_for_line("AF_XDP forwarder 0 is dead", Duration::from_secs(10));
    assert!(dead.is_some(), "death not logged:\n{}", xturn.output());
    assert!(dead.unwrap().contains(reason), "{}", xturn.output());
    let before = Snapshot::of(&lab.stats(), pid);
    let t0 = &before.server["threads"][0];
    assert_eq!(t0["alive"], false, "{t0:#}");
    assert!(
        t0["dead"].as_str().is_some_and(|d| d.contains(reason)),
        "{t0:#}"
    );
    let diag = || format!("{:#}\n{}", lab.stats(), xturn.output());
    relay_each_way(
        &flows,
        2_000,
        2_000,
        server(),
        data,
        &lab.namespaces(),
        &diag,
    );
    let after_run = Snapshot::of(&lab.stats(), pid);
    let d = |f: &dyn Fn(&Snapshot) -> u64| f(&after_run) - f(&before);
    assert_eq!(d(&|s| s.allocs("sockets", "to_peer_packets")), 2_000);
    assert_eq!(d(&|s| s.allocs("sockets", "to_client_packets")), 2_000);
    assert_eq!(d(&|s| s.allocs("afxdp", "to_peer_packets")), 0);
    // The human form says so too.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_r])
        .arg(xturn_bin())
        .args(["stats", "--xdp", &lab.xdp[0]])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DEAD"), "{text}");
    drop(xturn);
}

#[test]
fn a_forwarder_that_dies_leaves_its_traffic_to_the_socket_path() {
    forwarder_fault("exit", 40, "panicked");
}

#[test]
fn a_forwarder_that_hangs_leaves_its_traffic_to_the_socket_path() {
    forwarder_fault("hang", 40, "no turn of its loop");
}

/// `xturn check` in the relay namespace with `args`: (exit code, output).
fn check(lab: &Lab, args: &[&str]) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_r])
        .arg(xturn_bin())
        .args([
            "check",
            "--listening-ip",
            "192.0.2.1",
            "--relay-ip",
            RELAY_IP,
        ])
        .args(args)
        .output()
        .expect("run xturn check");
    (
        out.status.code().unwrap_or(-1),
        xturn_tests::output_text(&out),
    )
}

/// One verdict of `xturn check` per case, and its refusals with their fixes; the server
/// refuses the same at start.
#[test]
fn xturn_check_verdicts() {
    if !root_or_skip("xturn_check_verdicts") {
        return;
    }
    let lab = Lab::new(Topo::Standard);
    let (rc, rp) = (lab.xdp[0].as_str(), lab.xdp[1].as_str());
    let both = lab.xdp.join(",");
    let has = |out: &str, needles: &[&str]| {
        for n in needles {
            assert!(out.contains(n), "{n:?} missing from:\n{out}");
        }
    };

    let (code, out) = check(&lab, &["--xdp", &both]);
    assert_eq!(code, 0, "{out}");
    has(
        &out,
        &[
            &format!("{rc}: driver veth, 1 receive queue(s), MTU 1500, XDP native mode"),
            "AF_XDP copy mode, IPv4 forwarding on",
            "TX checksum offload on",
            &format!("{rc}: XDP_TX does not arrive: the veth peer"),
            &format!("{rc}: STUN Binding requests: answered by the socket path"),
            &format!("{rc}: TURN data over ipv4 received here: AF_XDP forwarder (copy mode)"),
            "xturn check: ok",
        ],
    );

    // An XDP program on the client's veth end: XDP_TX arrives there, not on rp.
    lab.attach_pass_on_client();
    let (_, out) = check(&lab, &["--xdp", &both]);
    has(
        &out,
        &[
            &format!("{rc}: XDP_TX arrives: the veth peer"),
            &format!("{rc}: STUN Binding requests: answered in the driver"),
            &format!("{rp}: XDP_TX does not arrive"),
        ],
    );

    let (_, out) = check(&lab, &["--xdp", rp, "--xdp-mode", "generic"]);
    has(
        &out,
        &[
            "XDP generic mode",
            &format!("{rp}: XDP_TX arrives: generic mode"),
        ],
    );

    let (_, out) = check(&lab, &["--xdp", rp, "--no-afxdp"]);
    has(
        &out,
        &[
            "no AF_XDP (--no-afxdp)",
            "TURN data: socket path (--no-afxdp)",
        ],
    );

    run(&[
        "ip",
        "netns",
        "exec",
        &lab.ns_r,
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{rp}.forwarding=0"),
    ]);
    let (code, out) = check(&lab, &["--xdp", rp]);
    assert_eq!(
        code, 0,
        "forwarding off is a slower path, not a refusal: {out}"
    );
    has(
        &out,
        &[
            "IPv4 forwarding off",
            "received here: socket path, because IP forwarding is off",
            &format!("sysctl -w net.ipv4.conf.{rp}.forwarding=1"),
        ],
    );

    // Refusals: exit 2 and the fix.
    let (code, out) = check(&lab, &["--xdp", "xtnosuch0"]);
    assert_eq!(code, 2, "{out}");
    has(&out, &["xtnosuch0", "no interface"]);
    run(&["ip", "-n", &lab.ns_r, "link", "set", rp, "mtu", "4000"]);
    let (code, out) = check(&lab, &["--xdp", rp, "--xdp-mode", "native"]);
    assert_eq!(code, 2, "{out}");
    has(&out, &["lower the MTU or use --xdp-mode generic"]);
    let (code, out) = check(&lab, &["--xdp", rp]);
    assert_eq!(code, 0, "auto falls back to generic: {out}");
    has(&out, &["XDP generic mode"]);
    let tag = unique_tag();
    let (q0, q1) = (format!("{tag}q0"), format!("{tag}q1"));
    run(&[
        "ip",
        "-n",
        &lab.ns_r,
        "link",
        "add",
        &q0,
        "numrxqueues",
        "65",
        "numtxqueues",
        "65",
        "type",
        "veth",
        "peer",
        "name",
        &q1,
    ]);
    let (code, out) = check(&lab, &["--xdp", &q0]);
    assert_eq!(code, 2, "{out}");
    has(&out, &["65 receive queues", &format!("ethtool -L {q0}")]);
    let (code, out) = check(&lab, &["--xdp", &q0, "--no-afxdp"]);
    assert_eq!(code, 0, "{out}");

    // The server refuses what check refuses, before attaching anything.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_r])
        .arg(xturn_bin())
        .args(["--listening-ip", "192.0.2.1", "--xdp", &q0])
        .output()
        .unwrap();
    let text = xturn_tests::output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    has(&text, &["cannot serve with --xdp", "ethtool -L"]);
}

/// coturn's turnutils_uclient (channels, then Send indications) and aioice through
/// `xturn --xdp` in topology (a): no loss; the uclient's channel data took AF_XDP.
#[test]
fn coturn_and_aioice_clients_through_untuned_xdp() {
    third_party_clients("coturn_and_aioice_clients_through_untuned_xdp", false);
}

/// The same with the in-kernel relay (`--fast-path xdp`) in generic mode, where a frame
/// the driver relays arrives without an XDP program on the far end: the uclient's channel
/// data and the peer's echoes were relayed in the driver, each way.
#[test]
fn coturn_and_aioice_clients_through_the_in_kernel_relay() {
    third_party_clients(
        "coturn_and_aioice_clients_through_the_in_kernel_relay",
        true,
    );
}

fn third_party_clients(test: &str, in_kernel: bool) {
    if !root_or_skip(test) {
        return;
    }
    assert!(
        have("turnutils_uclient") && have("turnutils_peer"),
        "coturn's turnutils_* are needed: run tests/run.sh"
    );
    let aioice = Command::new("python3")
        .args(["-c", "import aioice.turn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(aioice, "python3 module aioice is missing: run tests/run.sh");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(Topo::Standard);
    // turnutils_uclient picks channel numbers from RFC 5766's 0x4000-0x7FFE.
    let mut args = vec!["--rfc5766-channels"];
    if in_kernel {
        args.extend(["--xdp-mode", "generic", "--fast-path", "xdp"]);
    }
    let xturn = lab.start_xturn(&args, &[]);
    let pid = xturn.child.id();
    let mut peer_cmd = Command::new("ip");
    peer_cmd.args(["netns", "exec", &lab.ns_p]).args([
        "turnutils_peer",
        "-L",
        PEER_IP,
        "-p",
        "3480",
    ]);
    let _peer = Proc::spawn("turnutils_peer", peer_cmd);
    std::thread::sleep(Duration::from_millis(300));

    for (how, flag) in [("channels", None), ("Send indications", Some("-s"))] {
        let before = Snapshot::of(&lab.stats(), pid);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.ns_c])
            .args(["timeout", "90", "turnutils_uclient"])
            .args([
                "-u",
                "alice",
                "-w",
                "wonderland",
                "-e",
                PEER_IP,
                "-r",
                "3480",
            ])
            .args(["-n", "500", "-m", "4", "-l", "180"]);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let out = cmd
            .arg("192.0.2.1")
            .output()
            .expect("run turnutils_uclient");
        let text = xturn_tests::output_text(&out);
        assert!(
            out.status.success(),
            "turnutils_uclient ({how}) failed:\n{text}"
        );
        assert!(
            text.contains("Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"),
            "loss with {how}:\n{text}\n{}",
            xturn.output()
        );
        assert!(
            text.contains("tot_send_msgs=2000, tot_recv_msgs=2000"),
            "{how}:\n{text}"
        );
        let after = Snapshot::of(&lab.stats(), pid);
        let fast = after.fw("to_peer") - before.fw("to_peer");
        let d = |name: &str| after.relayed("xdp", name) - before.relayed("xdp", name);
        let (driver_peer, driver_client) = (d("to_peer_packets"), d("to_client_packets"));
        match (flag, in_kernel) {
            (None, false) => {
                assert!(fast >= 2_000 - 50, "channel data on AF_XDP: {fast} of 2000")
            }
            (None, true) => assert!(
                driver_peer >= 2_000 - 50 && driver_client >= 2_000 - 50,
                "relayed in the driver: {driver_peer} to the peer, {driver_client} to the \
                 client, of 2000 each way\n{:#}",
                after.server
            ),
            // Send and Data indications are the control plane's, whatever the fast path.
            (Some(_), _) => assert_eq!((driver_peer, driver_client), (0, 0)),
        }
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioice_relay.py");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_c])
        .args([
            "timeout",
            "120",
            "python3",
            script,
            "3478",
            "alice",
            "wonderland",
        ])
        .args(["500", "192.0.2.1", &format!("{PEER_IP}:3480")])
        .output()
        .expect("run python3");
    let text = xturn_tests::output_text(&out);
    assert!(
        out.status.success() && text.contains("\"sent\": 500, \"received\": 500"),
        "aioice through xturn --xdp:\n{text}\n{}",
        xturn.output()
    );
    drop(xturn);
}

/// Headless Chromium in the client namespace: two RTCPeerConnections, relay only, a data
/// channel with 50 messages and one of 60 KB, through `xturn --xdp` in topology (a).
/// Their relayed addresses are on the same server, so the data hairpins from one
/// allocation to the other, which the kernel sockets carry (XDP_TX cannot reach the host
/// itself; the program passes it: pass_no_next_hop).
#[test]
fn chromium_relay_only_through_untuned_xdp() {
    if !root_or_skip("chromium_relay_only_through_untuned_xdp") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(Topo::Standard);
    let xturn = lab.start_xturn(&[], &[]);
    let pid = xturn.child.id();
    let r = xturn_tests::chromium_relay_only(
        Some(&lab.ns_c),
        "turn:192.0.2.1:3478?transport=udp",
        &|| xturn.output(),
    );
    for pc in ["a", "b"] {
        assert!(
            r[pc]["localAddress"]
                .as_str()
                .is_some_and(|a| a.starts_with(RELAY_IP)),
            "{r:#}"
        );
    }
    // Two allocations, each relayed the other's data: > 60 KB each way through them.
    let s = Snapshot::of(&lab.stats(), pid);
    let allocs = s.server["allocations"].as_array().unwrap();
    assert_eq!(allocs.len(), 2, "{:#}", s.server);
    let bytes = s.allocs("sockets", "to_client_bytes") + s.allocs("afxdp", "to_client_bytes");
    assert!(bytes > 60 * 1024, "{:#}", s.server);
    drop(xturn);
}

/// `--max-bps` on the fast path: one flow offered twice the limit each way for 4 s in the
/// untuned standard topology. AF_XDP carried it (the socket path nothing), and what
/// arrived is the limit within 10 %: the forwarder shares the socket path's buckets.
#[test]
fn max_bps_holds_on_the_fast_path() {
    max_bps_holds(
        "max_bps_holds_on_the_fast_path",
        Topo::Standard,
        &[],
        "afxdp",
    );
}

/// The same with the in-kernel relay (`--fast-path xdp`, generic mode, where XDP-sent
/// frames arrive in this topology): the driver carried it, taking from the buckets it
/// shares with user space (the XDP program's map, mapped into the process).
#[test]
fn max_bps_holds_in_the_driver() {
    max_bps_holds(
        "max_bps_holds_in_the_driver",
        Topo::Standard,
        &["--fast-path", "xdp", "--xdp-mode", "generic"],
        "xdp",
    );
}

/// The same with one interface for both legs (client, peer and relay on one bridge),
/// where the driver sends each relayed datagram back out with XDP_TX.
#[test]
fn max_bps_holds_in_the_driver_on_one_interface() {
    max_bps_holds(
        "max_bps_holds_in_the_driver_on_one_interface",
        Topo::OneInterface,
        &["--fast-path", "xdp", "--xdp-mode", "generic"],
        "xdp",
    );
}

/// One flow offered twice the 100 kB/s limit each way for 4 s in `topo` with `mode`: `carrier`
/// (the per-allocation statistics' path) carried it, the socket path nothing, and what
/// arrived is the limit within 10 %. Then ChannelData and Send indications alternate,
/// each at the limit: the fast path carried the first, the socket path judged the
/// second, and what arrived is still the limit within 10 %, not twice it, since both
/// take from the same bucket.
fn max_bps_holds(test: &str, topo: Topo, mode: &[&str], carrier: &str) {
    if !root_or_skip(test) {
        return;
    }
    const LIMIT: f64 = 100_000.0;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(topo);
    let xturn = lab.start_xturn(&[&["--max-bps", "100000"], mode].concat(), &[]);
    let pid = xturn.child.id();
    let flows = flows(&lab);
    let f = &flows[0];
    let before = Snapshot::of(&lab.stats(), pid);
    let body = vec![9u8; 1000];
    let frame = channel_data(f.channel, &body);
    let to_peer = xturn_tests::received_rate(
        2 * LIMIT as u64,
        1000,
        4,
        |_| {
            f.client.sock.send_to(&frame, server()).unwrap();
        },
        &f.peer,
        |n| n,
    );
    let to_client = xturn_tests::received_rate(
        2 * LIMIT as u64,
        1000,
        4,
        |_| {
            f.peer.send_to(&body, f.relay).unwrap();
        },
        &f.client.sock,
        |n| n.saturating_sub(4),
    );
    let v = lab.stats();
    let after = Snapshot::of(&v, pid);
    let d = |a: &Snapshot, b: &Snapshot, f: &dyn Fn(&Snapshot) -> u64| f(b) - f(a);
    let ctx = || format!("{test}\n{v:#}\n{}", xturn.output());
    assert!(
        d(&before, &after, &|s| s.allocs(carrier, "to_peer_packets")) > 300,
        "{}",
        ctx()
    );
    assert!(
        d(&before, &after, &|s| s.allocs(carrier, "to_client_packets")) > 300,
        "{}",
        ctx()
    );
    for dir in ["to_peer_packets", "to_client_packets"] {
        assert_eq!(
            d(&before, &after, &|s| s.allocs("sockets", dir)),
            0,
            "{}",
            ctx()
        );
    }
    for (dir, rate) in [("to the peer", to_peer), ("to the client", to_client)] {
        assert!(
            (0.9 * LIMIT..=1.1 * LIMIT).contains(&rate),
            "{dir}: {rate:.0} B/s against a limit of {LIMIT}\n{}",
            ctx()
        );
    }
    assert!(
        after.server["dropped"]["over_bandwidth_packets"].as_u64() > Some(500),
        "{:#}",
        after.server["dropped"]
    );

    // ChannelData (the fast path) and Send indications (the socket path) in turn.
    let peer_addr = f.peer.local_addr().unwrap();
    let send = |n: u64| {
        let mut b = MessageBuilder::new(
            Method::Send,
            Class::Indication,
            TransactionId([(n % 251) as u8; 12]),
        );
        b.xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
        b.attr(attr::DATA, &body);
        b.finish()
    };
    let mixed = xturn_tests::received_rate(
        2 * LIMIT as u64,
        1000,
        4,
        |n| {
            let m = if n % 2 == 0 { frame.clone() } else { send(n) };
            f.client.sock.send_to(&m, server()).unwrap();
        },
        &f.peer,
        |n| n,
    );
    let v = lab.stats();
    let last = Snapshot::of(&v, pid);
    let ctx = || format!("{test}, mixed\n{v:#}\n{}", xturn.output());
    assert!(
        d(&after, &last, &|s| s.allocs(carrier, "to_peer_packets")) > 150,
        "{}",
        ctx()
    );
    // The Send indications reached the socket path, which judged them by the same
    // bucket: relayed or dropped for the limit (the ChannelData, arriving with more
    // refill behind it in this pattern, takes most of the budget).
    let over = |s: &Snapshot| {
        s.server["dropped"]["over_bandwidth_packets"]
            .as_u64()
            .unwrap()
    };
    let judged =
        d(&after, &last, &|s| s.allocs("sockets", "to_peer_packets")) + over(&last) - over(&after);
    assert!(judged > 300, "{judged} Send indications judged\n{}", ctx());
    assert!(
        (0.9 * LIMIT..=1.1 * LIMIT).contains(&mixed),
        "ChannelData and Send together: {mixed:.0} B/s against a limit of {LIMIT}\n{}",
        ctx()
    );
    drop(xturn);
}

/// With `--xdp`, a worker that dies (fault injection: a panic holding the server lock at
/// its first control message) stops the process non-zero, and no XDP program is left on
/// the interfaces: nothing answers Binding for a server that does not serve.
#[test]
fn a_dead_worker_stops_xdp_and_the_process() {
    if !root_or_skip("a_dead_worker_stops_xdp_and_the_process") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(Topo::Standard);
    let mut xturn = lab.start_xturn(&[], &[("XTURN_FAULT_WORKER", "panic:1")]);
    let attached = |lab: &Lab| -> Vec<String> {
        lab.xdp
            .iter()
            .filter(|i| {
                let out = Command::new("ip")
                    .args(["-n", &lab.ns_r, "-d", "link", "show", "dev", i])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
            })
            .cloned()
            .collect()
    };
    assert_eq!(attached(&lab), lab.xdp, "{}", xturn.output());
    let sock = socket_in(&lab.ns_c, SocketAddr::new(CLIENT_IP.parse().unwrap(), 0));
    let mut b = xturn_control::wire::MessageBuilder::new(
        xturn_control::wire::Method::Allocate,
        xturn_control::wire::Class::Request,
        xturn_control::wire::TransactionId([3; 12]),
    );
    b.attr(
        xturn_control::wire::attr::REQUESTED_TRANSPORT,
        &[17, 0, 0, 0],
    );
    sock.send_to(&b.finish(), server()).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = xturn.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < end,
            "still running:\n{}",
            xturn.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!status.success(), "{status:?}");
    let out = xturn.output();
    assert!(out.contains("worker thread 0 died"), "{out}");
    assert!(attached(&lab).is_empty(), "XDP left attached:\n{out}");
}
