//! The NAT lab (issue 18, first part): the NAT types of the article the product comes from
//! (../shared/seed/), emulated by nftables in a router namespace, told apart by `xturn
//! nat-type` (RFC 5780 tests) against xturn with two public addresses. Needs root and
//! nftables (tests/run.sh installs it); every namespace (and its tables) goes with the
//! test.
//!
//! ```text
//!  ns h: 192.0.2.2 ──veth── ns n (router): 192.0.2.1 | 203.0.113.2 ──veth── ns s: 203.0.113.10, .11 (xturn --alt-listening-ip)
//! ```
//!
//! The rule sets, in the router's postrouting/prerouting/forward chains (see [`rules`]):
//! - no NAT: routing only (the server routes 192.0.2.0/24 back via the router);
//! - full cone: static 1:1 NAT of the host to 203.0.113.2 (snat out, dnat in): any
//!   outside endpoint reaches the mapping;
//! - restricted cone: the same, plus a forward filter that lets in, to each of the host's
//!   ports (a mapping: the NAT keeps ports), only the addresses that port has sent to (a
//!   dynamic set of (port, IP), filled by its outgoing packets);
//! - port-restricted cone: the same with (port, IP, port);
//! - symmetric: masquerade with fully random ports (a new mapping per destination),
//!   conntrack letting in only the replies of each.

mod xdp_support;

use std::process::Command;
use std::time::Duration;
use xdp_support::{root_or_skip, run, unique_tag, Netns};
use xturn_tests::{have, xturn_bin, Proc};

const TABLE: &str = "xturn_natlab";

/// The nftables rule set for `nat` on the router (`out` is its public interface, `inn` the
/// private one) of the host 192.0.2.2, public as 203.0.113.2.
fn rules(nat: &str, out: &str, inn: &str) -> String {
    rules_for(nat, out, inn, "192.0.2.2", "203.0.113.2", "192.0.2.0/24")
}

/// [`rules`] for the host `host` of the private network `lan`, public as `public`.
fn rules_for(nat: &str, out: &str, inn: &str, host: &str, public: &str, lan: &str) -> String {
    let static_nat = format!(
        "chain post {{
  type nat hook postrouting priority srcnat; policy accept;
  oifname \"{out}\" ip saddr {host} snat to {public}
}}
chain pre {{
  type nat hook prerouting priority dstnat; policy accept;
  iifname \"{out}\" ip daddr {public} dnat to {host}
}}
"
    );
    let body = match nat {
        "none" => String::new(),
        "full-cone" => static_nat,
        "restricted-cone" => format!(
            "{static_nat}set seen {{
  type inet_service . ipv4_addr; flags dynamic, timeout; timeout 120s;
}}
chain filter_in {{
  type filter hook forward priority filter; policy accept;
  iifname \"{inn}\" meta l4proto udp update @seen {{ udp sport . ip daddr }}
  iifname \"{out}\" meta l4proto udp udp dport . ip saddr != @seen drop
}}
"
        ),
        "port-restricted-cone" => format!(
            "{static_nat}set seen {{
  type inet_service . ipv4_addr . inet_service; flags dynamic, timeout; timeout 120s;
}}
chain filter_in {{
  type filter hook forward priority filter; policy accept;
  iifname \"{inn}\" meta l4proto udp update @seen {{ udp sport . ip daddr . udp dport }}
  iifname \"{out}\" meta l4proto udp udp dport . ip saddr . udp sport != @seen drop
}}
"
        ),
        "symmetric" => format!(
            "chain post {{
  type nat hook postrouting priority srcnat; policy accept;
  oifname \"{out}\" ip saddr {lan} masquerade fully-random
}}
"
        ),
        other => panic!("no rule set for {other}"),
    };
    format!("table ip {TABLE} {{\n{body}}}\n")
}

/// Load the nftables rule set `text` (for `nat`) in namespace `ns`.
fn load_rules(ns: &str, tag: &str, nat: &str, text: &str) {
    let path = std::env::temp_dir().join(format!("{tag}.nft"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nft for {nat}: {}\n{text}",
        xturn_tests::output_text(&out)
    );
}

struct Lab {
    ns_h: String,
    ns_s: String,
    _guards: [Netns; 3],
}

impl Lab {
    fn new(nat: &str) -> Lab {
        let tag = unique_tag();
        let guards = [
            Netns::new(format!("{tag}h")),
            Netns::new(format!("{tag}n")),
            Netns::new(format!("{tag}s")),
        ];
        let [h, n, s] = [0, 1, 2].map(|i| guards[i].name.clone());
        let (h0, n0, n1, s0) = (
            format!("{tag}h0"),
            format!("{tag}n0"),
            format!("{tag}n1"),
            format!("{tag}s0"),
        );
        run(&[
            "ip", "-n", &h, "link", "add", &h0, "type", "veth", "peer", "name", &n0, "netns", &n,
        ]);
        run(&[
            "ip", "-n", &n, "link", "add", &n1, "type", "veth", "peer", "name", &s0, "netns", &s,
        ]);
        for (ns, dev, addrs) in [
            (&h, &h0, &["192.0.2.2/24"][..]),
            (&n, &n0, &["192.0.2.1/24"][..]),
            (&n, &n1, &["203.0.113.2/24"][..]),
            (&s, &s0, &["203.0.113.10/24", "203.0.113.11/24"][..]),
        ] {
            for a in addrs {
                run(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            }
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &h,
            "route",
            "add",
            "default",
            "via",
            "192.0.2.1",
        ]);
        run(&[
            "ip",
            "-n",
            &s,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "203.0.113.2",
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
        load_rules(&n, &tag, nat, &rules(nat, &n1, &n0));
        Lab {
            ns_h: h,
            ns_s: s,
            _guards: guards,
        }
    }

    fn start_xturn(&self) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_s])
            .arg(xturn_bin())
            .args([
                "--listening-ip",
                "203.0.113.10",
                "--alt-listening-ip",
                "203.0.113.11",
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
        p
    }

    /// `xturn nat-type` from the host behind the router.
    fn nat_type(&self) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_h])
            .arg(xturn_bin())
            .args(["nat-type", "203.0.113.10:3478", "--json"])
            .output()
            .unwrap();
        let text = xturn_tests::output_text(&out);
        assert!(out.status.success(), "xturn nat-type: {text}");
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }
}

#[test]
fn nat_type_names_each_of_the_articles_nats() {
    if !root_or_skip("natlab") {
        return;
    }
    assert!(have("nft"), "nftables is missing: tests/run.sh installs it");
    let mut wrong = Vec::new();
    for (nat, want, mapping, filtering) in [
        (
            "none",
            "no NAT",
            "endpoint-independent",
            "endpoint-independent",
        ),
        (
            "full-cone",
            "full cone",
            "endpoint-independent",
            "endpoint-independent",
        ),
        (
            "restricted-cone",
            "restricted cone",
            "endpoint-independent",
            "address-dependent",
        ),
        (
            "port-restricted-cone",
            "port-restricted cone",
            "endpoint-independent",
            "address-and-port-dependent",
        ),
        (
            "symmetric",
            "symmetric",
            "address-and-port-dependent",
            "address-and-port-dependent",
        ),
    ] {
        let lab = Lab::new(nat);
        let _xturn = lab.start_xturn();
        let v = lab.nat_type();
        let got = (
            v["verdict"]["name"].as_str().unwrap_or("").to_string(),
            v["verdict"]["mapping"].as_str().unwrap_or("").to_string(),
            v["verdict"]["filtering"].as_str().unwrap_or("").to_string(),
        );
        eprintln!("{nat}: {got:?} ({})", v["observed"]);
        if got != (want.to_string(), mapping.to_string(), filtering.to_string()) {
            wrong.push(format!(
                "{nat}: got {got:?}, want {want}/{mapping}/{filtering}: {v}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Two hosts, each behind its own router, and xturn on the public side:
///
/// ```text
///  ns a: 192.0.2.2/25   ── ns ra: 192.0.2.1   | 203.0.113.2 ─┐
///                                                             ├─ bridge in ns s: 203.0.113.10 (xturn)
///  ns b: 192.0.2.130/25 ── ns rb: 192.0.2.129 | 203.0.113.3 ─┘
/// ```
///
/// Each router runs the rule set of its NAT type ([`rules_for`]); the hosts' own networks
/// are routed on the public side too, so that "no NAT" is a host with a public address.
/// The routers reach each other directly over the bridge: a punched hole carries data
/// without xturn.
struct IceLab {
    ns_a: String,
    ns_b: String,
    ns_s: String,
    _guards: [Netns; 5],
}

impl IceLab {
    fn new(nat_a: &str, nat_b: &str) -> IceLab {
        let tag = unique_tag();
        let guards = ["a", "ra", "b", "rb", "s"].map(|n| Netns::new(format!("{tag}{n}")));
        let [a, ra, b, rb, s] = [0, 1, 2, 3, 4].map(|i| guards[i].name.clone());
        let br = format!("{tag}br");
        run(&["ip", "-n", &s, "link", "add", &br, "type", "bridge"]);
        run(&["ip", "-n", &s, "addr", "add", "203.0.113.10/24", "dev", &br]);
        run(&["ip", "-n", &s, "link", "set", &br, "up"]);
        let sides = [
            (
                &a,
                &ra,
                "a",
                "192.0.2.2/25",
                "192.0.2.1",
                "203.0.113.2",
                nat_a,
                "192.0.2.128/25",
                "203.0.113.3",
                nat_b,
            ),
            (
                &b,
                &rb,
                "b",
                "192.0.2.130/25",
                "192.0.2.129",
                "203.0.113.3",
                nat_b,
                "192.0.2.0/25",
                "203.0.113.2",
                nat_a,
            ),
        ];
        for (h, r, n, host_cidr, gw, public, nat, other_lan, other_public, other_nat) in sides {
            let (h0, r0, r1, s0) = (
                format!("{tag}{n}0"),
                format!("{tag}r{n}0"),
                format!("{tag}r{n}1"),
                format!("{tag}s{n}"),
            );
            run(&[
                "ip", "-n", h, "link", "add", &h0, "type", "veth", "peer", "name", &r0, "netns", r,
            ]);
            run(&[
                "ip", "-n", r, "link", "add", &r1, "type", "veth", "peer", "name", &s0, "netns", &s,
            ]);
            run(&["ip", "-n", h, "addr", "add", host_cidr, "dev", &h0]);
            run(&[
                "ip",
                "-n",
                r,
                "addr",
                "add",
                &format!("{gw}/25"),
                "dev",
                &r0,
            ]);
            run(&[
                "ip",
                "-n",
                r,
                "addr",
                "add",
                &format!("{public}/24"),
                "dev",
                &r1,
            ]);
            run(&["ip", "-n", &s, "link", "set", &s0, "master", &br]);
            for (ns, dev) in [(h, &h0), (r, &r0), (r, &r1), (&s, &s0)] {
                run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            }
            run(&["ip", "-n", h, "route", "add", "default", "via", gw]);
            // Only a host without NAT has an address the other side can route to.
            if other_nat == "none" {
                run(&[
                    "ip",
                    "-n",
                    r,
                    "route",
                    "add",
                    other_lan,
                    "via",
                    other_public,
                ]);
            }
            let lan = format!(
                "{}/25",
                gw.rsplit_once('.')
                    .map(|(p, l)| format!("{p}.{}", l.parse::<u8>().unwrap() - 1))
                    .unwrap()
            );
            if nat == "none" {
                run(&["ip", "-n", &s, "route", "add", &lan, "via", public]);
            }
            run(&[
                "ip",
                "netns",
                "exec",
                r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
            let host = host_cidr.split('/').next().unwrap();
            let text = rules_for(nat, &r1, &r0, host, public, &lan);
            load_rules(r, &format!("{tag}{n}"), nat, &text);
        }
        IceLab {
            ns_a: a,
            ns_b: b,
            ns_s: s,
            _guards: guards,
        }
    }

    fn start_xturn(&self) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_s])
            .arg(xturn_bin())
            .args([
                "--listening-ip",
                "203.0.113.10",
                "--user",
                "alice:wonderland",
                // The hosts' own addresses are the lab's public side.
                "--allowed-peer-ip",
                "192.0.2.0/24",
                "--allowed-peer-ip",
                "203.0.113.0/24",
            ]);
        let p = Proc::spawn("xturn", c);
        assert!(
            p.wait_for_line("listening on", Duration::from_secs(10))
                .is_some(),
            "{}",
            p.output()
        );
        p
    }
}

/// Packets xturn relayed to peers and to clients since it started, every path (the
/// `relayed` totals of its status file, the sum of its per-allocation counters, which
/// outlive the allocations), once two reports in a row agree.
fn relayed_packets(pid: u32) -> u64 {
    let path = format!("/run/xturn/{pid}/status.json");
    let mut last = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(600));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let n: u64 = ["afxdp", "sockets"]
            .iter()
            .map(|p| &v["relayed"][p])
            .map(|c| {
                c["to_peer_packets"].as_u64().unwrap_or(0)
                    + c["to_client_packets"].as_u64().unwrap_or(0)
            })
            .sum();
        if last == Some(n) {
            return n;
        }
        last = Some(n);
    }
    panic!("no steady status at {path}: {last:?}")
}

/// The agents of a cell: aioice ([`ICE_AGENT`]) or a headless Chromium page each
/// ([`BROWSER_AGENT`]).
const ICE_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/ice_agent.py");
const BROWSER_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/webrtc_nat.py");

/// The ICE tests take turns: each is timing-sensitive (a hole punched against a relay
/// pair started late), and a browser beside the other test's agents on two cores would
/// make their timing the machine's rather than the NATs'.
static ICE_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One cell of the matrix: (the selected pair's candidate types as the controlling agent
/// saw them, packets xturn relayed).
fn ice_cell(nat_a: &str, nat_b: &str, count: u64) -> (String, String, u64) {
    let (v, relayed) = cell(nat_a, nat_b, ICE_AGENT, &[&count.to_string()]);
    (
        v["local"].as_str().unwrap_or("?").to_string(),
        v["remote"].as_str().unwrap_or("?").to_string(),
        relayed,
    )
}

/// Run `script ROLE SIGNAL_DIR 203.0.113.10 3478 alice wonderland EXTRA..` on both hosts
/// of a lab with these NATs: the controlling side's JSON line, packets xturn relayed.
fn cell(nat_a: &str, nat_b: &str, script: &str, extra: &[&str]) -> (serde_json::Value, u64) {
    let lab = IceLab::new(nat_a, nat_b);
    let xturn = lab.start_xturn();
    let dir =
        std::env::temp_dir().join(format!("xturn-ice-{}-{nat_a}-{nat_b}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let agent = |ns: &str, role: &str| {
        Command::new("ip")
            .args([
                "netns", "exec", ns, "timeout", "90", "python3", script, role,
            ])
            .arg(&dir)
            .args(["203.0.113.10", "3478", "alice", "wonderland"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = agent(&lab.ns_a, "controlling");
    let b = agent(&lab.ns_b, "controlled");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    let (ta, tb) = (xturn_tests::output_text(&a), xturn_tests::output_text(&b));
    assert!(
        a.status.success() && b.status.success(),
        "{nat_a} x {nat_b}: the agents failed\ncontrolling: {ta}\ncontrolled: {tb}\nxturn: {}",
        xturn.output()
    );
    // The agent's result is the last JSON line of its standard output (output_text puts
    // its standard error after that: a browser's log line there was once taken for it).
    let v: serde_json::Value = String::from_utf8_lossy(&a.stdout)
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.is_object())
        })
        .unwrap_or_else(|| panic!("{nat_a} x {nat_b}: no JSON result from the agent\n{ta}"));
    if std::env::var_os("XTURN_NATLAB_VERBOSE").is_some() {
        eprintln!("{nat_a} x {nat_b}:\n{ta}\n{tb}");
    }
    (v, relayed_packets(xturn.child.id()))
}

/// A browser in the lab: two headless Chromiums, each behind its own symmetric NAT, open
/// a data channel with xturn as STUN and TURN server: no hole can be punched, they fall
/// back to xturn's relay, which carries the messages. (Where a hole can be punched,
/// Chromium may still settle on a relay pair that answered first: which pair wins is its
/// timing, not the NATs'; the aioice matrix asserts those cells.)
#[test]
fn chromium_falls_back_to_the_relay_behind_two_symmetric_nats() {
    if !root_or_skip("natlab") {
        return;
    }
    let _turn = ICE_TURN.lock().unwrap_or_else(|e| e.into_inner());
    assert!(have("nft"), "nftables is missing: tests/run.sh installs it");
    assert!(
        have("chromium"),
        "chromium is missing: tests/run.sh installs it"
    );
    let (v, relayed) = cell("symmetric", "symmetric", BROWSER_AGENT, &[]);
    let (local, remote) = (
        v["pair"]["local"].as_str().unwrap_or("?"),
        v["pair"]["remote"].as_str().unwrap_or("?"),
    );
    eprintln!("chromium, symmetric x symmetric: {local}/{remote}, xturn relayed {relayed} packets");
    assert!(
        local == "relay" || remote == "relay",
        "the selected pair has no relayed candidate: {v}"
    );
    // 50 messages each way through xturn (SCTP adds packets of its own).
    assert!(relayed >= 100, "xturn relayed only {relayed} packets: {v}");
}

/// The article's story, as two real ICE agents (aioice) behind every pair of the lab's
/// NATs live it, with xturn as their STUN and TURN server: cones punch through (the
/// nominated pair is direct and xturn carries no data), and where both mappings or
/// filters depend on the far port (symmetric against symmetric or port-restricted cone)
/// the agents fall back to xturn's relay, which then carries every datagram.
#[test]
fn ice_punches_through_cones_and_falls_back_to_the_relay_otherwise() {
    if !root_or_skip("natlab") {
        return;
    }
    let _turn = ICE_TURN.lock().unwrap_or_else(|e| e.into_inner());
    assert!(have("nft"), "nftables is missing: tests/run.sh installs it");
    const COUNT: u64 = 200;
    let nats = [
        "none",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
    ];
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for (i, a) in nats.iter().enumerate() {
        for b in &nats[i..] {
            let expect_relay = *a == "symmetric"
                && (*b == "symmetric" || *b == "port-restricted-cone")
                || *b == "symmetric" && *a == "port-restricted-cone";
            let (local, remote, relayed) = ice_cell(a, b, COUNT);
            let relay = local == "relay" || remote == "relay";
            // Relayed data: every datagram each way; a direct pair leaves xturn only the
            // checks it saw on relay pairs.
            let carried = relayed >= 2 * COUNT;
            let line = format!(
                "| {a} | {b} | {local}/{remote} | {} | {relayed} |",
                if relay { "relay" } else { "direct" }
            );
            eprintln!("{line}");
            if relay != expect_relay
                || carried != expect_relay
                || (!expect_relay && relayed >= COUNT / 2)
            {
                wrong.push(format!(
                    "{line} (expected {})",
                    if expect_relay { "relay" } else { "direct" }
                ));
            }
            rows.push(line);
        }
    }
    let table = format!(
        "| A (controlling) | B (controlled) | nominated pair (A's local/remote) | path | packets xturn relayed |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    eprintln!("{table}");
    // bench/natlab.sh keeps the matrix (XTURN_NATLAB_OUT=bench/NATLAB.md).
    if let Some(out) = std::env::var_os("XTURN_NATLAB_OUT") {
        std::fs::write(out, table).unwrap();
    }
    assert!(
        wrong.is_empty(),
        "cells that differ from the article:\n{}",
        wrong.join("\n")
    );
}
