//! Interop with Python's aioice TURN client (used by aiortc): it speaks RFC 8656 channel
//! numbers, so xturn runs with its strict defaults. Over UDP, TCP and TLS (a CA made at
//! test time). `tests/run.sh` installs aioice.

use std::process::Command;
use xturn_tests::Xturn;

/// aioice over `transport` (udp, tcp): 500 datagrams each way, byte-exact.
fn aioice_relays(transport: &str) {
    let server = Xturn::start(&["--user", "carol:aio-secret", "--allow-loopback-peers"]);
    aioice_relays_through(&server, server.addr.port(), transport, &[]);
}

/// aioice through `server` at `port` over `transport` with `env`.
fn aioice_relays_through(server: &Xturn, port: u16, transport: &str, env: &[(&str, &str)]) {
    let ok = Command::new("python3")
        .args(["-c", "import aioice.turn"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 module aioice is missing: run tests/run.sh (it installs it with pip)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioice_relay.py");
    let out = Command::new("timeout")
        .env("TURN_TRANSPORT", transport)
        .envs(env.iter().copied())
        .args([
            "120",
            "python3",
            script,
            &port.to_string(),
            "carol",
            "aio-secret",
            "500",
        ])
        .output()
        .expect("run python3");
    let text = xturn_tests::output_text(&out);
    assert!(
        out.status.success(),
        "aioice relay over {transport} failed:\n{text}\nxturn:\n{}",
        server.proc.output()
    );
    assert!(text.contains("\"sent\": 500, \"received\": 500"), "{text}");
}

#[test]
fn aioice_allocates_binds_and_relays_both_ways() {
    aioice_relays("udp");
}

/// TURN over TCP (RFC 8656 section 3.1): aioice frames the stream itself.
#[test]
fn aioice_over_tcp_allocates_binds_and_relays_both_ways() {
    aioice_relays("tcp");
}

/// TURN over TLS: aioice verifies xturn's certificate against the tests' CA.
#[test]
fn aioice_over_tls_allocates_binds_and_relays_both_ways() {
    let pki = xturn_tests::TestPki::new("aioice");
    let tls_port = xturn_tests::free_tcp_port();
    let server = Xturn::start(&[
        "--user",
        "carol:aio-secret",
        "--allow-loopback-peers",
        "--cert",
        pki.cert.to_str().unwrap(),
        "--pkey",
        pki.key.to_str().unwrap(),
        "--tls-listening-port",
        &tls_port.to_string(),
    ]);
    let ca = pki.ca.to_str().unwrap();
    aioice_relays_through(&server, tls_port, "tls", &[("TURN_CAFILE", ca)]);
}
