//! RFC 3489 ("classic") Binding requests, without the magic cookie, from two clients nobody
//! here wrote: pystun3 (PyPI) and the `stun` client of Debian's stun-client package. xturn
//! answers with MAPPED-ADDRESS and the 128-bit transaction id copied (RFC 8489 section 11),
//! and leaves CHANGE-REQUEST tests unanswered (no alternate address to answer from).
//! tests/run.sh installs both.

use std::process::Command;
use xturn_tests::{have, output_text, Xturn};

#[test]
fn pystun3_classic_binding_gets_mapped_address() {
    let server = Xturn::start(&["--user", "alice:wonderland"]);
    let script = format!(
        "import json, socket, stun\n\
         stun._initialize()\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(2)\n\
         s.bind(('127.0.0.1', 0))\n\
         r = stun.stun_test(s, '127.0.0.1', {port}, '127.0.0.1', s.getsockname()[1])\n\
         c = stun.stun_test(s, '127.0.0.1', {port}, '127.0.0.1', s.getsockname()[1], '00030004' + '00000006')\n\
         print(json.dumps({{'first': r, 'local': list(s.getsockname()), 'change': c['Resp']}}))\n",
        port = server.addr.port()
    );
    let out = Command::new("timeout")
        .args(["30", "python3", "-c", &script])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "pystun3 (pip install pystun3; tests/run.sh does): {text}"
    );
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(v["first"]["Resp"], true, "{v}");
    assert_eq!(v["first"]["ExternalIP"], "127.0.0.1", "{v}");
    assert_eq!(v["first"]["ExternalPort"], v["local"][1], "{v}");
    assert_eq!(
        v["change"], false,
        "a change request answered from the same address: {v}"
    );
}

#[test]
fn debian_stun_client_test_one_is_answered() {
    assert!(
        have("stun"),
        "the stun client is missing: tests/run.sh installs Debian's stun-client"
    );
    let server = Xturn::start(&["--user", "alice:wonderland"]);
    let out = Command::new("timeout")
        .args([
            "30",
            "stun",
            &format!("127.0.0.1:{}", server.addr.port()),
            "-v",
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        text.contains("test I = 1"),
        "{text}\n{}",
        server.proc.output()
    );
    assert!(text.contains("mapped IP same = 1"), "{text}");
    // Change requests: not answered.
    assert!(text.contains("test II = 0"), "{text}");
}
