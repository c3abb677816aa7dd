//! `xturn sessions` and `xturn kill` against the real binary on loopback, through its admin
//! socket (/run/xturn/PID/admin.sock): the list shows each allocation's user, client,
//! relayed address, age and what it relayed; a kill by relayed address stops that
//! allocation relaying at once, both ways (its client then gets 437), `--user` ends all of
//! a user's, the others relay on without a lost datagram; a user outside root, xturn's user
//! and its status group cannot reach the socket. The AF_XDP path's kill is in
//! afxdp_relay.rs.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use xturn_control::client;
use xturn_control::wire::{channel_data, Method};
use xturn_tests::{
    channel_to_loopback_peer, output_text, payload, relay_lockstep, xturn_bin, TestClient, Xturn,
};

fn xturn(args: &[&str]) -> Output {
    Command::new(xturn_bin()).args(args).output().unwrap()
}

/// `xturn sessions --json` of `pid`, once its status report counts `want_to_peer` packets
/// relayed to peers in all (bounded wait: the counters are those of the last report).
fn sessions(pid: u32, want_to_peer: u64) -> Vec<serde_json::Value> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let out = xturn(&["sessions", "--pid", &pid.to_string(), "--json"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = v["sessions"].as_array().unwrap().clone();
        let sum: u64 = rows
            .iter()
            .map(|r| r["sockets"]["to_peer_packets"].as_u64().unwrap_or(0))
            .sum();
        if sum == want_to_peer || Instant::now() > end {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Neither way passes: a ChannelData from the client reaches no peer, a datagram from the
/// peer reaches no client (500 ms each).
fn relays_nothing(c: &mut TestClient, peer: &UdpSocket, relay: SocketAddr) {
    let mut buf = [0u8; 2048];
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.sock
        .send_to(&channel_data::encode(0x4000, &payload(7)), c.server)
        .unwrap();
    assert!(peer.recv_from(&mut buf).is_err(), "relayed after the kill");
    peer.send_to(&payload(8), relay).unwrap();
    assert!(
        c.sock.recv_from(&mut buf).is_err(),
        "relayed after the kill"
    );
}

#[test]
fn sessions_lists_and_kill_stops_an_allocation_or_a_users_all_at_once() {
    let server = Xturn::start(&[
        "--user",
        "alice:wonderland",
        "--user",
        "bob:builder",
        "--allow-loopback-peers",
    ]);
    let pid = server.proc.child.id();
    let (mut a1, p1, r1) = channel_to_loopback_peer(server.addr, "alice", "wonderland");
    let (mut a2, p2, r2) = channel_to_loopback_peer(server.addr, "alice", "wonderland");
    let (mut b, pb, rb) = channel_to_loopback_peer(server.addr, "bob", "builder");
    relay_lockstep(&mut a1, &p1, r1, 0, 30);
    relay_lockstep(&mut a2, &p2, r2, 0, 20);
    relay_lockstep(&mut b, &pb, rb, 0, 10);

    let rows = sessions(pid, 60);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for (relay, client, user, n) in [
        (r1, &a1, "alice", 30),
        (r2, &a2, "alice", 20),
        (rb, &b, "bob", 10),
    ] {
        let row = rows
            .iter()
            .find(|r| r["relay"] == relay.to_string())
            .unwrap_or_else(|| panic!("no row for {relay}: {rows:#?}"));
        assert_eq!(row["user"], user);
        assert_eq!(row["transport"], "udp");
        assert_eq!(row["client"], client.sock.local_addr().unwrap().to_string());
        assert_eq!(row["server"], server.addr.to_string());
        assert_eq!(row["channels"], 1);
        assert!(row["age_secs"].as_u64().unwrap() < 60);
        let bytes: u64 = (0..n).map(|k| payload(k).len() as u64).sum();
        let s = &row["sockets"];
        assert_eq!(
            (
                s["to_peer_packets"].as_u64(),
                s["to_client_packets"].as_u64(),
                s["to_peer_bytes"].as_u64(),
                s["to_client_bytes"].as_u64()
            ),
            (Some(n), Some(n), Some(bytes), Some(bytes)),
            "{row:#}"
        );
        assert_eq!(row["afxdp"]["to_peer_packets"], 0);
    }
    // The table names every allocation.
    let out = xturn(&["sessions", "--pid", &pid.to_string()]);
    let table = output_text(&out);
    assert!(
        out.status.success() && table.contains("3 allocations"),
        "{table}"
    );
    for r in [r1, r2, rb] {
        assert!(table.contains(&r.to_string()), "{table}");
    }

    // Kill one by its relayed address: it stops both ways at once, the others go on.
    let out = xturn(&["kill", "--pid", &pid.to_string(), &r1.to_string()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains(&format!("killed the allocation {r1}")));
    relays_nothing(&mut a1, &p1, r1);
    let refresh = a1.request(Method::Refresh, |_| {});
    assert_eq!(client::error_code(&refresh), Some(437));
    relay_lockstep(&mut a2, &p2, r2, 20, 20);
    relay_lockstep(&mut b, &pb, rb, 10, 20);
    // Nothing left to kill there.
    let out = xturn(&["kill", "--pid", &pid.to_string(), &r1.to_string()]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("no allocation with relayed address"));

    // Every allocation of a user.
    let out = xturn(&["kill", "--pid", &pid.to_string(), "--user", "alice"]);
    assert!(out.status.success(), "{}", output_text(&out));
    relays_nothing(&mut a2, &p2, r2);
    relay_lockstep(&mut b, &pb, rb, 30, 20);
    let out = xturn(&["kill", "--pid", &pid.to_string(), "--user", "carol"]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("no allocation of user \"carol\""));
    let rows = sessions(pid, 50);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["user"], "bob");
    assert!(server
        .proc
        .wait_for_line(
            &format!("killed by an admin: the allocation {r2}"),
            Duration::from_secs(2)
        )
        .is_some());

    // Another user cannot reach the socket (setpriv as uid 12345, no groups).
    if xturn_tests::is_root() && xturn_tests::have("setpriv") {
        let out = Command::new("setpriv")
            .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
            .arg(xturn_bin())
            .args(["sessions", "--pid", &pid.to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            output_text(&out).contains("cannot reach xturn"),
            "{}",
            output_text(&out)
        );
    }
}
