//! Interop with Python's aioice TURN client (used by aiortc): it speaks RFC 8656 channel
//! numbers, so xturn runs with its strict defaults. Over UDP and over TCP. `tests/run.sh`
//! installs aioice.

use std::process::Command;
use xturn_tests::Xturn;

/// aioice over `transport` (udp, tcp): 500 datagrams each way, byte-exact.
fn aioice_relays(transport: &str) {
    let ok = Command::new("python3")
        .args(["-c", "import aioice.turn"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 module aioice is missing: run tests/run.sh (it installs it with pip)"
    );
    let server = Xturn::start(&["--user", "carol:aio-secret", "--allow-loopback-peers"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioice_relay.py");
    let out = Command::new("timeout")
        .env("TURN_TRANSPORT", transport)
        .args([
            "120",
            "python3",
            script,
            &server.addr.port().to_string(),
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
