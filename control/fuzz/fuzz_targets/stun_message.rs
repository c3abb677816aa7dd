//! A STUN message view, every attribute decoder and the stateless answers (RFC 3489 and
//! RFC 5780 included) on whatever the bytes hold: no panic,
//! and a message that parses re-parses from its own bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xturn_control::stateless::{Rfc5780, Stateless};
use xturn_control::wire::{attr, Message};

fuzz_target!(|data: &[u8]| {
    let t0 = std::time::Instant::now();
    let s = Stateless::new(Some("fuzz".into()), 0, 1, t0);
    let from = "192.0.2.2:4000".parse().unwrap();
    let _ = s.classify(t0, from, data);
    // RFC 5780 discovery and RFC 3489 requests with an alternate address.
    let alt = Stateless::new(None, 0, 1, t0).with_rfc5780(Rfc5780 {
        ips: ["192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap()],
        ports: [3478, 3479],
    });
    let _ = alt.classify_at(t0, from, "192.0.2.9:3479".parse().unwrap(), data);
    let Ok(m) = Message::new_checked(data) else {
        return;
    };
    assert!(Message::new_checked(m.as_bytes()).is_ok());
    let _ = m.check_fingerprint();
    let _ = m.verify_integrity(b"key");
    let tid = m.transaction_id();
    for a in m.attributes() {
        let v = a.value;
        let _ = attr::decode_xor_address(v, &tid);
        let _ = attr::decode_address(v);
        let _ = attr::decode_u32(v);
        let _ = attr::decode_channel_number(v);
        let _ = attr::decode_requested_transport(v);
        let _ = attr::decode_family(v);
        let _ = attr::decode_even_port(v);
        let _ = attr::decode_error_code(v);
        let _ = attr::decode_password_algorithms(v);
        let _ = attr::decode_password_algorithm(v);
        let _ = attr::decode_text(v, 127, 763);
    }
});
