//! Property tests: nothing a network peer sends may panic the server or the wire parsers.
//!
//! Case counts are kept small enough for the whole file to run in a few seconds in a
//! debug build; `PROPTEST_CASES` raises them for a longer soak.

use proptest::prelude::*;
use proptest::sample::Index;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use xturn_control::auth::{self, long_term_key, Credentials, Key, NonceKey, PasswordAlgorithm};
use xturn_control::client::{self, TurnClient};
use xturn_control::wire::{
    attr, channel_data, ChannelData, Class, Message, MessageBuilder, Method, TransactionId,
};
use xturn_control::{Config, Output, PeerAddr, RelayAddr, Server};

mod common;
use common::{client_addr, filter_with, peer, relay_ip, relay_ipv6, sa, server_addr, REALM};

fn config() -> Config {
    let mut creds = common::credentials();
    creds.add_secret("rest-secret").unwrap();
    let mut cfg = Config::new(creds, relay_ip(), filter_with(&[], &[]));
    cfg.relay_ipv6 = Some(relay_ipv6());
    cfg.min_port = 50000;
    cfg.max_port = 50009;
    cfg.unauth_rate = 0;
    cfg
}

/// A server with alice's allocation (a permission and channel 0x4000 to `peer()`), and
/// what it takes to sign more requests.
struct Env {
    server: Server,
    now: Instant,
    relay: RelayAddr,
    nonce: String,
    key: Key,
    next_tid: u32,
}

impl Env {
    fn new() -> Self {
        let now = Instant::now();
        let server = common::server(config(), now, common::UNIX0, 7);
        let mut env = Env {
            server,
            now,
            relay: RelayAddr(sa("0.0.0.0:0")),
            nonce: String::new(),
            key: long_term_key(PasswordAlgorithm::Md5, "alice", REALM, "alice-pw"),
            next_tid: 1,
        };
        let tid = env.tid();
        let mut b = MessageBuilder::new(Method::Allocate, Class::Request, tid);
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        let r = env.exchange(&b.finish());
        let m = Message::new_checked(&r[..]).unwrap();
        env.nonce = String::from_utf8(m.attribute(attr::NONCE).unwrap().value.to_vec()).unwrap();

        let req = env.signed(Method::Allocate, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let r = env.exchange(&req);
        env.relay =
            RelayAddr(client::xor_address(&r, attr::XOR_RELAYED_ADDRESS).expect("allocated"));
        let req = env.signed(Method::ChannelBind, |b| {
            client::channel_bind_body(0x4000, peer())(b)
        });
        let r = env.exchange(&req);
        assert_eq!(client::error_code(&r), None);
        env
    }

    fn tid(&mut self) -> TransactionId {
        let mut t = [0x11u8; 12];
        t[8..].copy_from_slice(&self.next_tid.to_be_bytes());
        self.next_tid += 1;
        TransactionId(t)
    }

    /// A request signed as alice, with FINGERPRINT.
    fn signed(&mut self, method: Method, body: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let tid = self.tid();
        let mut b = MessageBuilder::new(method, Class::Request, tid);
        body(&mut b);
        b.attr(attr::USERNAME, b"alice");
        b.attr(attr::REALM, REALM.as_bytes());
        b.attr(attr::NONCE, self.nonce.as_bytes());
        b.message_integrity(self.key.as_bytes());
        b.fingerprint();
        b.finish()
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Transmit(t) => out.push(t.payload),
                Output::BindRelay { token, .. } => self.server.relay_bound(self.now, token, true),
                Output::DataPlane(_) | Output::Tcp(_) => {}
            }
        }
        out
    }

    fn exchange(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.server
            .handle_input(self.now, client_addr(), server_addr(), bytes);
        self.drain().pop().expect("a response")
    }

    fn input(&mut self, bytes: &[u8]) {
        self.server
            .handle_input(self.now, client_addr(), server_addr(), bytes);
        self.drain();
    }

    /// Move time and fire timers, to exercise expiry after whatever the input did.
    fn later(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now);
        self.drain();
    }
}

/// One valid message of every kind the server handles.
fn valid_messages(env: &mut Env) -> Vec<Vec<u8>> {
    let tid = env.tid();
    let mut v = vec![
        client::binding_request(tid, true),
        env.signed(Method::Allocate, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            b.u32_attr(attr::LIFETIME, 1200);
            b.attr(attr::DONT_FRAGMENT, &[]);
            b.attr(attr::EVEN_PORT, &[0x80]);
        }),
        env.signed(Method::Allocate, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
        }),
        env.signed(Method::Allocate, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            b.attr(attr::RESERVATION_TOKEN, &[1, 2, 3, 4, 5, 6, 7, 8]);
        }),
        env.signed(Method::Refresh, |b| {
            b.u32_attr(attr::LIFETIME, 600);
        }),
        env.signed(Method::Refresh, |b| {
            b.u32_attr(attr::LIFETIME, 0);
        }),
        env.signed(Method::CreatePermission, |b| {
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer());
            b.xor_addr(attr::XOR_PEER_ADDRESS, sa("[2001:db8::2]:9"));
        }),
        env.signed(Method::ChannelBind, |b| {
            client::channel_bind_body(0x4001, sa("198.51.100.3:1"))(b)
        }),
        env.signed(Method::Other(0x00B), |_| {}),
        channel_data::encode(0x4000, b"channel data payload"),
    ];
    let tid = env.tid();
    v.push(client::send_indication(
        tid,
        peer(),
        b"send indication payload",
    ));
    // SHA-256 flavour: PASSWORD-ALGORITHMS echo, PASSWORD-ALGORITHM, MI-SHA256.
    let key = long_term_key(PasswordAlgorithm::Sha256, "alice", REALM, "alice-pw");
    let tid = env.tid();
    let mut b = MessageBuilder::new(Method::Refresh, Class::Request, tid);
    b.u32_attr(attr::LIFETIME, 600);
    b.attr(attr::USERHASH, &auth::userhash("alice", REALM));
    b.attr(attr::REALM, REALM.as_bytes());
    b.attr(attr::NONCE, env.nonce.as_bytes());
    b.attr(
        attr::PASSWORD_ALGORITHMS,
        &attr::encode_password_algorithms(&auth::OFFERED_ALGORITHMS),
    );
    b.attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
    b.message_integrity_sha256(key.as_bytes());
    b.fingerprint();
    v.push(b.finish());
    v
}

/// Offsets of the attribute headers of a valid message.
fn attribute_offsets(bytes: &[u8]) -> Vec<usize> {
    Message::new_checked(bytes)
        .map(|m| m.attributes().map(|a| a.offset).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Cut the datagram short.
    Truncate(Index),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Rewrite the STUN header length field.
    HeaderLength(u16),
    /// Rewrite the length field of one attribute (of the original layout).
    AttrLength(Index, u16),
    /// Rewrite the type of one attribute.
    AttrType(Index, u16),
    /// Change both the length field and the datagram size consistently (grow by 4n).
    Grow(u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..12).prop_map(Mutation::Extend),
        any::<u16>().prop_map(Mutation::HeaderLength),
        (any::<Index>(), prop_oneof![any::<u16>(), 0u16..40])
            .prop_map(|(i, l)| Mutation::AttrLength(i, l)),
        (
            any::<Index>(),
            prop_oneof![
                Just(attr::MESSAGE_INTEGRITY),
                Just(attr::FINGERPRINT),
                Just(attr::USERNAME),
                Just(attr::LIFETIME),
                Just(attr::XOR_PEER_ADDRESS),
                any::<u16>()
            ]
        )
            .prop_map(|(i, t)| Mutation::AttrType(i, t)),
        (1u8..4).prop_map(Mutation::Grow),
    ]
}

fn apply(bytes: &mut Vec<u8>, offsets: &[usize], m: &Mutation) {
    match m {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << b;
        }
        Mutation::Set(i, v) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *v;
        }
        Mutation::Truncate(i) if !bytes.is_empty() => {
            let n = i.index(bytes.len());
            bytes.truncate(n);
        }
        Mutation::Extend(v) => bytes.extend_from_slice(v),
        Mutation::HeaderLength(l) if bytes.len() >= 4 => {
            bytes[2..4].copy_from_slice(&l.to_be_bytes());
        }
        Mutation::AttrLength(i, l) if !offsets.is_empty() => {
            let o = offsets[i.index(offsets.len())];
            if o + 4 <= bytes.len() {
                bytes[o + 2..o + 4].copy_from_slice(&l.to_be_bytes());
            }
        }
        Mutation::AttrType(i, t) if !offsets.is_empty() => {
            let o = offsets[i.index(offsets.len())];
            if o + 4 <= bytes.len() {
                bytes[o..o + 2].copy_from_slice(&t.to_be_bytes());
            }
        }
        Mutation::Grow(n) if bytes.len() >= 4 => {
            let extra = 4 * *n as usize;
            bytes.extend(std::iter::repeat_n(0xAB, extra));
            let l = u16::from_be_bytes([bytes[2], bytes[3]]).wrapping_add(extra as u16);
            bytes[2..4].copy_from_slice(&l.to_be_bytes());
        }
        _ => {}
    }
}

/// Attribute types worth generating: every one the server reads, plus random ones.
fn attr_type() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![
            attr::MAPPED_ADDRESS,
            attr::USERNAME,
            attr::ERROR_CODE,
            attr::UNKNOWN_ATTRIBUTES,
            attr::CHANNEL_NUMBER,
            attr::LIFETIME,
            attr::XOR_PEER_ADDRESS,
            attr::DATA,
            attr::REALM,
            attr::NONCE,
            attr::XOR_RELAYED_ADDRESS,
            attr::REQUESTED_ADDRESS_FAMILY,
            attr::EVEN_PORT,
            attr::REQUESTED_TRANSPORT,
            attr::DONT_FRAGMENT,
            attr::PASSWORD_ALGORITHM,
            attr::USERHASH,
            attr::XOR_MAPPED_ADDRESS,
            attr::RESERVATION_TOKEN,
            attr::ADDITIONAL_ADDRESS_FAMILY,
            attr::ADDRESS_ERROR_CODE,
            attr::PASSWORD_ALGORITHMS,
            attr::ICMP,
            attr::SOFTWARE,
            attr::ALTERNATE_SERVER,
        ]),
        1 => any::<u16>(),
    ]
}

/// An attribute value: random, or shaped like an address / u32 / family value.
fn attr_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        (any::<u8>(), any::<u16>(), any::<[u8; 4]>()).prop_map(|(f, p, a)| {
            let mut v = vec![0, f & 3];
            v.extend_from_slice(&p.to_be_bytes());
            v.extend_from_slice(&a);
            v
        }),
        (any::<u8>(), any::<u16>(), any::<[u8; 16]>()).prop_map(|(f, p, a)| {
            let mut v = vec![0, f & 3];
            v.extend_from_slice(&p.to_be_bytes());
            v.extend_from_slice(&a);
            v
        }),
        any::<[u8; 4]>().prop_map(|a| a.to_vec()),
        (0u8..4).prop_map(|f| vec![f, 0, 0, 0]),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::Binding,
        Method::Allocate,
        Method::Refresh,
        Method::Send,
        Method::Data,
        Method::CreatePermission,
        Method::ChannelBind,
        Method::Other(0x00A),
    ])
}

/// The bytes of every attribute decoder, fed with `v`: none may panic.
fn decode_all(v: &[u8], tid: &TransactionId) {
    let _ = attr::decode_xor_address(v, tid);
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
    let _ = attr::decode_text(v, usize::MAX, 508);
}

fn parse_everything(bytes: &[u8], key: &[u8]) {
    if let Ok(m) = Message::new_checked(bytes) {
        let _ = (m.method(), m.class(), m.length(), m.cookie(), m.raw_type());
        let tid = m.transaction_id();
        for a in m.attributes() {
            let _ = a.comprehension_required();
            decode_all(a.value, &tid);
        }
        let _ = m.integrity_kind();
        let _ = m.verify_integrity(key);
        let _ = m.verify_integrity(&[]);
        let _ = m.check_fingerprint();
    }
    if let Ok(c) = ChannelData::new_checked(bytes) {
        assert_eq!(c.payload().len(), c.length() as usize);
        let _ = c.channel();
    }
    decode_all(bytes, &TransactionId([3; 12]));
    // The client-side parsers read server answers: also untrusted.
    let _ = client::xor_address(bytes, attr::XOR_MAPPED_ADDRESS);
    let _ = client::data_indication(bytes);
    let _ = client::lifetime(bytes);
    let _ = client::error_code(bytes);
    let _ = TurnClient::new("alice", "pw").answer(bytes);
}

/// A STUN-shaped datagram: valid header and cookie, random attributes with consistent
/// lengths, sometimes with real integrity and fingerprint.
fn stun_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        any::<[u8; 12]>(),
        prop::collection::vec((attr_type(), attr_value()), 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(typ, tid, attrs, mi, fp)| {
            let mut b = MessageBuilder::new(Method::Binding, Class::Request, TransactionId(tid));
            for (t, v) in &attrs {
                b.attr(*t, v);
            }
            if mi {
                b.message_integrity(b"key");
            }
            if fp {
                b.fingerprint();
            }
            let mut v = b.finish();
            let t = (typ & 0x3FFF).to_be_bytes();
            v[0] = t[0];
            v[1] = t[1];
            v
        })
}

/// A nonce with the "obMatJos2" cookie and a feature field of any shape, padded
/// base64 groups included (they decode to fewer than 3 bytes).
fn cookie_nonce() -> impl Strategy<Value = String> {
    let tail = "[A-Za-z0-9_-]{0,30}";
    let re = |r: String| proptest::string::string_regex(&r).expect("regex");
    prop_oneof![
        re("[A-Za-z0-9+/=_-]{0,40}".to_string()),
        re(format!("[A-Za-z0-9+/][AQgw]=={tail}")),
        re(format!("[A-Za-z0-9+/]{{2}}[AEIMQUYcgkosw048]={tail}")),
        re(format!("[A-Za-z0-9+/]{{4}}{tail}")),
    ]
    .prop_map(|s| format!("obMatJos2{s}"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_into_handle_input(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        first in prop_oneof![Just(None), (0u8..=0x7F).prop_map(Some)],
        port in any::<u16>(),
    ) {
        let mut env = Env::new();
        let mut bytes = bytes;
        if let (Some(f), Some(b0)) = (first, bytes.first_mut()) {
            *b0 = f; // steer into the STUN (0-3) and ChannelData (64-79) branches
        }
        let from = SocketAddr::new(client_addr().ip(), port);
        env.server.handle_input(env.now, from, server_addr(), &bytes);
        env.drain();
        env.input(&bytes);
        env.later(400);
        env.later(400);
    }

    #[test]
    fn stun_shaped_bytes_into_handle_input(bytes in stun_shaped()) {
        let mut env = Env::new();
        env.input(&bytes);
        env.later(700);
    }

    #[test]
    fn random_bytes_into_handle_peer_input(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        port in any::<u16>(),
        known_relay in any::<bool>(),
        v6 in any::<bool>(),
    ) {
        let mut env = Env::new();
        let relay = if known_relay { env.relay } else { RelayAddr(sa("198.51.100.1:1")) };
        let peer_ip: IpAddr = if v6 { "::ffff:198.51.100.2".parse().unwrap() } else { peer().ip() };
        let from = PeerAddr(SocketAddr::new(peer_ip, if port % 2 == 0 { peer().port() } else { port }));
        env.server.handle_peer_input(env.now, relay, from, &bytes);
        let out = env.drain();
        // With a permission for the peer IP, IPv4 peers always get through.
        if known_relay && !v6 {
            prop_assert_eq!(out.len(), 1);
        }
        env.later(301);
        env.server.handle_peer_input(env.now, relay, from, &bytes);
        prop_assert!(env.drain().is_empty(), "the permission expired at 300 s");
    }

    #[test]
    fn mutated_valid_messages_into_handle_input(
        which in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut env = Env::new();
        let msgs = valid_messages(&mut env);
        let mut bytes = msgs[which.index(msgs.len())].clone();
        let offsets = attribute_offsets(&bytes);
        for m in &mutations {
            apply(&mut bytes, &offsets, m);
        }
        env.input(&bytes);
        env.input(&bytes); // as a retransmission, too
        env.later(301);
        env.later(3600);
    }

    #[test]
    fn signed_requests_with_random_attributes(
        m in method(),
        attrs in prop::collection::vec((attr_type(), attr_value()), 0..8),
        nonce in prop::option::weighted(0.2, cookie_nonce()),
    ) {
        // Correctly authenticated, so every attribute reaches the method's handler; or
        // signed with a nonce of the attacker's choosing.
        let mut env = Env::new();
        if let Some(n) = nonce {
            env.nonce = n;
        }
        let req = env.signed(m, |b| {
            for (t, v) in &attrs {
                b.attr(*t, v);
            }
        });
        env.input(&req);
        env.later(700);
    }

}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn wire_parsers_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        parse_everything(&bytes, b"key");
    }

    #[test]
    fn wire_parsers_on_stun_shaped_bytes(bytes in stun_shaped(), cut in any::<Index>()) {
        parse_everything(&bytes, b"key");
        let n = cut.index(bytes.len() + 1);
        parse_everything(&bytes[..n], b"key");
    }

    #[test]
    fn nonce_and_credential_parsers(s in ".{0,40}", cookie in cookie_nonce()) {
        let key = NonceKey::new([1; 32]);
        for n in [s.clone(), cookie, format!("obMatJos2{s}")] {
            let _ = auth::nonce_features(&n);
            let _ = key.check(&n, 1_000, client_addr(), 600);
            let _ = auth::rest_expiry(&n);
        }
        let mut c = Credentials::new(REALM).unwrap();
        c.add_secret("x").unwrap();
        let _ = c.candidate_keys(&s, PasswordAlgorithm::Md5, 0);
        let _ = c.user_for_hash(s.as_bytes());
    }
}
