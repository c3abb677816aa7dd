//! Interop with software nobody here wrote: coturn's `turnutils_uclient` relays through
//! xturn (static user and REST shared secret; channels and Send indications; client to
//! client through two relayed addresses) and `turnutils_stunclient` decodes our
//! XOR-MAPPED-ADDRESS. `tests/run.sh` installs the Debian package `coturn` when missing.

use std::process::Command;
use std::time::Duration;
use xturn_tests::{have, Proc, Xturn};

fn require_coturn() {
    assert!(
        have("turnutils_uclient") && have("turnutils_peer") && have("turnutils_stunclient"),
        "coturn's turnutils_* are not installed: run tests/run.sh (it installs the Debian package coturn)"
    );
}

fn xturn_with(extra: &[&str]) -> Xturn {
    let mut args = vec![
        "--user",
        "alice:wonderland",
        "--use-auth-secret",
        "--static-auth-secret",
        "retired-secret",
        "--static-auth-secret",
        "current-secret",
        // turnutils_uclient picks channel numbers from RFC 5766's 0x4000-0x7FFE.
        "--rfc5766-channels",
        "--log-level",
        "trace",
    ];
    args.extend_from_slice(extra);
    Xturn::start(&args)
}

/// turnutils_peer listens on loopback, which xturn denies by default.
fn xturn() -> Xturn {
    xturn_with(&["--allow-loopback-peers"])
}

fn uclient(server: &Xturn, args: &[&str], expect_msgs: u64) {
    xturn_tests::uclient(server.addr.port(), args, expect_msgs);
}

fn peer() -> (Proc, u16) {
    xturn_tests::turnutils_peer()
}

#[test]
fn uclient_static_user_channels_and_send_indications() {
    require_coturn();
    let server = xturn();
    let (_peer, port) = peer();
    let port = port.to_string();
    // Channels (RTP+RTCP pairs: EVEN-PORT with a reservation, 2 sessions x 500 messages).
    uclient(
        &server,
        &[
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-e",
            "127.0.0.1",
            "-r",
            &port,
            "-n",
            "500",
            "-l",
            "200",
            "-X",
        ],
        1000,
    );
    // Send/Data indications.
    uclient(
        &server,
        &[
            "-s",
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-e",
            "127.0.0.1",
            "-r",
            &port,
            "-n",
            "500",
            "-l",
            "171",
            "-X",
        ],
        1000,
    );
}

#[test]
fn uclient_rest_api_secret_channels_and_send_indications() {
    require_coturn();
    let server = xturn();
    let (_peer, port) = peer();
    let port = port.to_string();
    uclient(
        &server,
        &[
            "-c",
            "-u",
            "bob",
            "-W",
            "current-secret",
            "-e",
            "127.0.0.1",
            "-r",
            &port,
            "-n",
            "500",
            "-l",
            "120",
            "-X",
        ],
        500,
    );
    uclient(
        &server,
        &[
            "-s",
            "-c",
            "-u",
            "bob",
            "-W",
            "retired-secret",
            "-e",
            "127.0.0.1",
            "-r",
            &port,
            "-n",
            "500",
            "-l",
            "99",
            "-X",
        ],
        500,
    );
    // A secret the server does not know is refused.
    let out = Command::new("timeout")
        .args([
            "30",
            "turnutils_uclient",
            "-p",
            &server.addr.port().to_string(),
        ])
        .args([
            "-c",
            "-u",
            "bob",
            "-W",
            "wrong-secret",
            "-e",
            "127.0.0.1",
            "-r",
            &port,
            "-n",
            "5",
            "-X",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong REST secret was accepted");
}

#[test]
fn uclient_client_to_client_through_two_relayed_addresses() {
    require_coturn();
    // Loopback peers stay denied: the relayed addresses of this server are allowed anyway.
    let server = xturn_with(&[]);
    // -y: the client's sessions send to each other's relayed addresses (hairpin);
    // 2 clients x 2 RTP/RTCP pairs x 200 messages.
    uclient(
        &server,
        &[
            "-y",
            "-m",
            "2",
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-n",
            "200",
            "-l",
            "150",
        ],
        800,
    );
}

#[test]
fn stunclient_decodes_our_xor_mapped_address() {
    require_coturn();
    let server = xturn();
    // A distinct loopback source address, so the IP in the answer is not a coincidence.
    let out = Command::new("timeout")
        .args([
            "10",
            "turnutils_stunclient",
            "-L",
            "127.0.0.7",
            "-p",
            &server.addr.port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("run turnutils_stunclient");
    let text = xturn_tests::output_text(&out);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("UDP reflexive addr:"))
        .unwrap_or_else(|| panic!("{text}"));
    let mapped = line.rsplit(' ').next().unwrap().trim();
    assert!(mapped.starts_with("127.0.0.7:"), "{line}");
    // The port must be the one the datagram came from, as xturn's trace log saw it.
    let seen = server
        .proc
        .wait_for_line(&format!("from {mapped} "), Duration::from_secs(3));
    assert!(
        seen.is_some(),
        "xturn never saw a datagram from {mapped}:\n{}",
        server.proc.output()
    );
}

/// TURN over TCP (`-t`): channels and Send indications down one connection per client.
#[test]
fn uclient_over_tcp_channels_and_send_indications() {
    require_coturn();
    let server = xturn();
    xturn_tests::uclient_channels_and_send(server.addr.port(), &["-t"]);
}
