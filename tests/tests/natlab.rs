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
/// private one).
fn rules(nat: &str, out: &str, inn: &str) -> String {
    let static_nat = format!(
        "chain post {{
  type nat hook postrouting priority srcnat; policy accept;
  oifname \"{out}\" ip saddr 192.0.2.2 snat to 203.0.113.2
}}
chain pre {{
  type nat hook prerouting priority dstnat; policy accept;
  iifname \"{out}\" ip daddr 203.0.113.2 dnat to 192.0.2.2
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
  oifname \"{out}\" ip saddr 192.0.2.0/24 masquerade fully-random
}}
"
        ),
        other => panic!("no rule set for {other}"),
    };
    format!("table ip {TABLE} {{\n{body}}}\n")
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
        let text = rules(nat, &n1, &n0);
        let path = std::env::temp_dir().join(format!("{tag}.nft"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &n, "nft", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "nft for {nat}: {}\n{text}",
            xturn_tests::output_text(&out)
        );
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
