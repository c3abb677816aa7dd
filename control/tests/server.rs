//! Deterministic virtual-time tests of the sans-IO TURN [`Server`], checked against
//! RFC 8489 (STUN), RFC 8656 (TURN) and shared/STANDARDS.md, not against what the code
//! happens to do.
//!
//! The harness owns a `Server`, a virtual clock and the driver side of the drain
//! contract: it completes every `Output::BindRelay` (success or injected failure),
//! collects transmits and data-plane outputs, and moves time through every
//! `poll_timeout` deadline on the way to the target.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use xturn_control::auth::{self, long_term_key, Key, PasswordAlgorithm};
use xturn_control::client::{self, Answer, TurnClient};
use xturn_control::wire::{
    attr, channel_data, Class, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
};
use xturn_control::{BindToken, Change, Config, Output, PeerAddr, RelayAddr, Server, Transmit};

mod common;
use common::*;

fn alice() -> TurnClient {
    TurnClient::new("alice", "alice-pw")
}
fn bob() -> TurnClient {
    TurnClient::new("bob", "bob-pw")
}

// ------------------------------------------------------------------------- harness

/// What one step produced, in order.
#[derive(Debug, Default)]
struct Out {
    transmits: Vec<Transmit>,
    /// Install*/Remove* outputs in emission order.
    data: Vec<Change>,
    /// Relayed addresses of every `BindRelay` seen.
    binds: Vec<RelayAddr>,
    /// Their `dont_fragment` flags.
    dont_fragment: Vec<bool>,
}

impl Out {
    fn extend(&mut self, o: Out) {
        self.transmits.extend(o.transmits);
        self.data.extend(o.data);
        self.binds.extend(o.binds);
        self.dont_fragment.extend(o.dont_fragment);
    }

    /// The single transmit of this step.
    fn one(&self) -> &Transmit {
        assert_eq!(
            self.transmits.len(),
            1,
            "expected exactly one transmit: {:?}",
            self.transmits
        );
        &self.transmits[0]
    }

    fn is_empty(&self) -> bool {
        self.transmits.is_empty() && self.data.is_empty() && self.binds.is_empty()
    }
}

/// The result of a request made through [`TurnClient`].
#[derive(Debug)]
struct Resp {
    /// Every response received, in order (401/438 challenges first).
    all: Vec<Vec<u8>>,
    /// Outputs of the last exchange.
    out: Out,
    answer: Answer,
}

impl Resp {
    fn last(&self) -> &[u8] {
        self.all.last().expect("at least one response")
    }
    fn code(&self) -> Option<u16> {
        client::error_code(self.last())
    }
    fn codes(&self) -> Vec<Option<u16>> {
        self.all.iter().map(|r| client::error_code(r)).collect()
    }
}

struct Harness {
    server: Server,
    t0: Instant,
    now: Instant,
    /// Decides the outcome of each `BindRelay`; `None` leaves it pending in `deferred`.
    bind_ok: Box<dyn FnMut(RelayAddr) -> Option<bool>>,
    deferred: Vec<(BindToken, RelayAddr)>,
    next_tid: u32,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        Self::with_unix(cfg, UNIX0)
    }

    fn with_unix(cfg: Config, unix0: u64) -> Self {
        let t0 = Instant::now();
        Harness {
            server: common::server(cfg, t0, unix0, 1),
            t0,
            now: t0,
            bind_ok: Box::new(|_| Some(true)),
            deferred: Vec::new(),
            next_tid: 1,
        }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn tid(&mut self) -> TransactionId {
        let mut t = [0x5au8; 12];
        t[8..].copy_from_slice(&self.next_tid.to_be_bytes());
        self.next_tid += 1;
        TransactionId(t)
    }

    fn drain(&mut self) -> Out {
        let mut out = Out::default();
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Transmit(t) => out.transmits.push(t),
                Output::BindRelay {
                    token,
                    relay,
                    dont_fragment,
                    ..
                } => {
                    out.binds.push(relay);
                    out.dont_fragment.push(dont_fragment);
                    match (self.bind_ok)(relay) {
                        Some(ok) => self.server.relay_bound(self.now, token, ok),
                        None => self.deferred.push((token, relay)),
                    }
                }
                Output::DataPlane(c) => out.data.push(c),
                Output::Tcp(t) => panic!("no TCP allocation here: {t:?}"),
            }
        }
        out
    }

    fn send_from(&mut self, from: SocketAddr, bytes: &[u8]) -> Out {
        self.server
            .handle_input(self.now, from, server_addr(), bytes);
        self.drain()
    }

    fn send(&mut self, bytes: &[u8]) -> Out {
        self.send_from(client_addr(), bytes)
    }

    fn peer_sends(&mut self, relay: RelayAddr, peer: SocketAddr, bytes: &[u8]) -> Out {
        self.server
            .handle_peer_input(self.now, relay, PeerAddr(peer), bytes);
        self.drain()
    }

    fn complete_deferred(&mut self, ok: bool) -> Out {
        let pending = std::mem::take(&mut self.deferred);
        for (token, _) in pending {
            self.server.relay_bound(self.now, token, ok);
        }
        self.drain()
    }

    /// Move the clock to `t0 + target`, firing `handle_timeout` at every deadline the
    /// server announces on the way and at the target itself.
    fn advance_to(&mut self, target: Duration) -> Out {
        let target = self.t0 + target;
        assert!(target >= self.now, "time only moves forward");
        let mut out = Out::default();
        while let Some(t) = self.server.poll_timeout() {
            if t > target {
                break;
            }
            assert!(
                t >= self.now,
                "poll_timeout in the past: {t:?} < {:?}",
                self.now
            );
            self.now = t;
            self.server.handle_timeout(t);
            let o = self.drain();
            let done = o.is_empty() && self.server.poll_timeout() == Some(t);
            out.extend(o);
            if done {
                break; // a deadline that produces nothing and stays put
            }
        }
        self.now = target;
        self.server.handle_timeout(target);
        out.extend(self.drain());
        out
    }

    fn advance(&mut self, d: Duration) -> Out {
        let t = self.now - self.t0 + d;
        self.advance_to(t)
    }

    /// A request through `c`, retrying after a 401/438 that taught a new nonce.
    fn request(
        &mut self,
        c: &mut TurnClient,
        from: SocketAddr,
        method: Method,
        body: &dyn Fn(&mut MessageBuilder),
    ) -> Resp {
        let mut all = Vec::new();
        for _ in 0..3 {
            let tid = self.tid();
            let req = c.request(method, tid, |b| body(b));
            let out = self.send_from(from, &req);
            let resp = response_to(&out, from, tid)
                .unwrap_or_else(|| panic!("no response to {method:?} from {from}: {out:?}"));
            all.push(resp.clone());
            let answer = c.answer(&resp);
            if answer != Answer::Retry {
                return Resp { all, out, answer };
            }
        }
        panic!("{method:?}: still retrying after 3 attempts");
    }

    fn allocate_with(
        &mut self,
        c: &mut TurnClient,
        from: SocketAddr,
        body: &dyn Fn(&mut MessageBuilder),
    ) -> Resp {
        self.request(c, from, Method::Allocate, body)
    }

    /// Allocate and return the relayed address, asserting success.
    fn allocate(&mut self, c: &mut TurnClient, from: SocketAddr) -> RelayAddr {
        let r = self.allocate_with(c, from, &transport_udp);
        assert_eq!(
            r.answer,
            Answer::Success,
            "allocate failed: {:?}",
            r.codes()
        );
        RelayAddr(
            client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS).expect("XOR-RELAYED-ADDRESS"),
        )
    }

    /// A fresh nonce for `from`, learnt from a 401.
    fn nonce_for(&mut self, from: SocketAddr) -> String {
        let tid = self.tid();
        let req = build(Method::Allocate, tid, transport_udp);
        let out = self.send_from(from, &req);
        let r = response_to(&out, from, tid).expect("401");
        assert_eq!(client::error_code(&r), Some(401));
        text_attr(&r, attr::NONCE).expect("NONCE")
    }
}

fn response_to(out: &Out, to: SocketAddr, tid: TransactionId) -> Option<Vec<u8>> {
    out.transmits
        .iter()
        .find(|t| {
            t.destination == to
                && Message::new_checked(&t.payload[..]).is_ok_and(|m| m.transaction_id() == tid)
        })
        .map(|t| {
            assert_eq!(
                t.source,
                server_addr(),
                "responses come from the listening address"
            );
            t.payload.clone()
        })
}

// ------------------------------------------------------------------------- message helpers

fn transport_udp(b: &mut MessageBuilder) {
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

fn build(method: Method, tid: TransactionId, body: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let mut b = MessageBuilder::new(method, Class::Request, tid);
    body(&mut b);
    b.finish()
}

/// USERNAME, REALM, NONCE then MESSAGE-INTEGRITY with `key`.
fn sign(b: &mut MessageBuilder, user: &str, nonce: &str, key: &Key) {
    b.attr(attr::USERNAME, user.as_bytes());
    b.attr(attr::REALM, REALM.as_bytes());
    b.attr(attr::NONCE, nonce.as_bytes());
    b.message_integrity(key.as_bytes());
}

fn parse(b: &[u8]) -> Message<&[u8]> {
    Message::new_checked(b).expect("a valid STUN message")
}

fn attr_value(b: &[u8], typ: u16) -> Option<Vec<u8>> {
    parse(b).attribute(typ).map(|a| a.value.to_vec())
}

fn has(b: &[u8], typ: u16) -> bool {
    attr_value(b, typ).is_some()
}

fn text_attr(b: &[u8], typ: u16) -> Option<String> {
    attr_value(b, typ).map(|v| String::from_utf8(v).unwrap())
}

fn error_code(b: &[u8]) -> Option<u16> {
    client::error_code(b)
}

fn assert_success(b: &[u8], method: Method) {
    let m = parse(b);
    assert_eq!(
        (m.method(), m.class()),
        (method, Class::Success),
        "expected success, got error {:?}",
        error_code(b)
    );
}

fn assert_error(b: &[u8], method: Method, code: u16) {
    let m = parse(b);
    assert_eq!((m.method(), m.class()), (method, Class::Error));
    assert_eq!(error_code(b), Some(code));
}

fn lifetime_attr(b: &[u8]) -> u32 {
    client::lifetime(b).expect("LIFETIME")
}

fn permission_body(peers: Vec<SocketAddr>) -> impl Fn(&mut MessageBuilder) {
    move |b| {
        for p in &peers {
            b.xor_addr(attr::XOR_PEER_ADDRESS, *p);
        }
    }
}

fn channel_body(channel: u16, peer: SocketAddr) -> impl Fn(&mut MessageBuilder) {
    move |b| client::channel_bind_body(channel, peer)(b)
}

fn lifetime_body(l: u32) -> impl Fn(&mut MessageBuilder) {
    move |b| {
        b.u32_attr(attr::LIFETIME, l);
    }
}

fn allocate_lifetime_body(l: u32) -> impl Fn(&mut MessageBuilder) {
    move |b| {
        transport_udp(b);
        b.u32_attr(attr::LIFETIME, l);
    }
}

/// A server with alice's allocation on `client_addr()` (lifetime `lifetime` seconds).
fn allocated(cfg: Config, lifetime: u32) -> (Harness, TurnClient, RelayAddr) {
    let mut h = Harness::new(cfg);
    let mut c = alice();
    let r = h.allocate_with(&mut c, client_addr(), &allocate_lifetime_body(lifetime));
    assert_eq!(r.answer, Answer::Success, "{:?}", r.codes());
    let relay = RelayAddr(client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS).unwrap());
    (h, c, relay)
}

fn baseline_state() -> usize {
    // One allocation: its entry, by_relay, used port, user count, user's bandwidth slot,
    // client address count, its timer.
    7
}

// ========================================================================= STUN Binding

#[test]
fn binding_returns_source_as_xor_mapped_address() {
    let mut h = Harness::new(config());
    for (from, fp) in [
        (client_addr(), false),
        (client_addr(), true),
        (sa("[2001:db8::2]:40000"), false),
    ] {
        let tid = h.tid();
        let out = h.send_from(from, &client::binding_request(tid, fp));
        let t = out.one();
        assert_eq!((t.source, t.destination), (server_addr(), from));
        assert_success(&t.payload, Method::Binding);
        let m = parse(&t.payload);
        assert_eq!(m.transaction_id(), tid);
        assert_eq!(
            client::xor_address(&t.payload, attr::XOR_MAPPED_ADDRESS),
            Some(from)
        );
        // FINGERPRINT only in answer to a request that had one (RFC 8489 section 7.3).
        assert_eq!(has(&t.payload, attr::FINGERPRINT), fp);
        assert_eq!(m.check_fingerprint(), Ok(fp));
        assert!(!has(&t.payload, attr::MESSAGE_INTEGRITY));
        assert!(out.data.is_empty());
    }
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn binding_with_unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new(config());
    let tid = h.tid();
    let req = build(Method::Binding, tid, |b| {
        b.attr(0x8030, b"optional, ignored");
        b.attr(0x0030, &[1, 2, 3, 4]);
        b.fingerprint();
    });
    let out = h.send(&req);
    let r = &out.one().payload;
    assert_error(r, Method::Binding, 420);
    assert_eq!(
        attr_value(r, attr::UNKNOWN_ATTRIBUTES),
        Some(vec![0x00, 0x30])
    );
    assert_eq!(parse(r).check_fingerprint(), Ok(true));

    // Only comprehension-optional unknowns: ignored.
    let tid = h.tid();
    let out = h.send(&build(Method::Binding, tid, |b| {
        b.attr(0x8030, b"x");
    }));
    assert_success(&out.one().payload, Method::Binding);

    // A wrong FINGERPRINT: silently discarded.
    let tid = h.tid();
    let mut req = client::binding_request(tid, true);
    let n = req.len();
    req[n - 1] ^= 1;
    assert!(h.send(&req).is_empty());
    assert_eq!(h.server.state_size(), 0);
}

// ========================================================================= authentication

#[test]
fn allocate_without_integrity_gets_401_and_creates_no_state() {
    let mut h = Harness::new(config());
    assert_eq!(h.server.state_size(), 0);
    let tid = h.tid();
    let out = h.send(&build(Method::Allocate, tid, transport_udp));
    let r = &out.one().payload;
    assert_error(r, Method::Allocate, 401);
    assert_eq!(text_attr(r, attr::REALM).as_deref(), Some(REALM));
    let nonce = text_attr(r, attr::NONCE).unwrap();
    assert!(nonce.starts_with("obMatJos2"), "{nonce}");
    assert!(nonce.chars().count() < 128);
    let algs = attr::decode_password_algorithms(&attr_value(r, attr::PASSWORD_ALGORITHMS).unwrap())
        .unwrap();
    assert!(
        algs.contains(&attr::ALGORITHM_MD5) && algs.contains(&attr::ALGORITHM_SHA256),
        "{algs:?}"
    );
    assert!(!has(r, attr::MESSAGE_INTEGRITY) && !has(r, attr::MESSAGE_INTEGRITY_SHA256));
    assert!(out.data.is_empty() && out.binds.is_empty());
    assert_eq!(h.server.state_size(), 0);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn ten_thousand_unauthenticated_allocates_leave_no_state() {
    let mut cfg = config();
    cfg.unauth_rate = 0; // unlimited: every one of them is answered
    cfg.unauth_rate_per_prefix = 0;
    let mut h = Harness::new(cfg);
    let mut answered = 0;
    for i in 0..10_000u16 {
        let tid = h.tid();
        let out = h.send_from(
            client_port(10_000 + i),
            &build(Method::Allocate, tid, transport_udp),
        );
        assert_eq!(error_code(&out.one().payload), Some(401));
        answered += 1;
    }
    assert_eq!(answered, 10_000);
    assert_eq!(h.server.state_size(), 0);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unauthenticated_answers_are_rate_limited_and_refill_with_time() {
    let mut cfg = config();
    cfg.unauth_rate = 5;
    let mut h = Harness::new(cfg);
    let mut c = alice();
    // Learn a nonce first (uses one token).
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_eq!(c.answer(&out.one().payload), Answer::Retry);

    let unauth = |h: &mut Harness, n: u16| -> usize {
        (0..n)
            .map(|i| {
                let tid = h.tid();
                h.send_from(
                    client_port(20_000 + i),
                    &build(Method::Allocate, tid, transport_udp),
                )
                .transmits
                .len()
            })
            .sum()
    };
    assert_eq!(
        unauth(&mut h, 10),
        4,
        "the bucket holds unauth_rate answers"
    );
    assert_eq!(unauth(&mut h, 3), 0, "beyond the budget 401s are dropped");
    h.advance(Duration::from_millis(400));
    assert_eq!(unauth(&mut h, 5), 2, "0.4 s refills 2 tokens at 5/s");
    h.advance(secs(10));
    assert_eq!(
        unauth(&mut h, 20),
        5,
        "the bucket never holds more than one second"
    );
    assert_eq!(h.server.state_size(), 0);

    // The bucket is empty, yet an authenticated request still goes through.
    assert_eq!(unauth(&mut h, 1), 0);
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_success(&out.one().payload, Method::Allocate);
}

#[test]
fn integrity_without_realm_nonce_or_username_gets_400() {
    let mut h = Harness::new(config());
    let nonce = h.nonce_for(client_addr());
    let key = md5_key("alice", "alice-pw");
    for missing in [attr::USERNAME, attr::REALM, attr::NONCE] {
        let tid = h.tid();
        let req = build(Method::Allocate, tid, |b| {
            transport_udp(b);
            if missing != attr::USERNAME {
                b.attr(attr::USERNAME, b"alice");
            }
            if missing != attr::REALM {
                b.attr(attr::REALM, REALM.as_bytes());
            }
            if missing != attr::NONCE {
                b.attr(attr::NONCE, nonce.as_bytes());
            }
            b.message_integrity(key.as_bytes());
        });
        let out = h.send(&req);
        let r = &out.one().payload;
        assert_error(r, Method::Allocate, 400);
        assert!(out.binds.is_empty() && out.data.is_empty());
    }
    // The same request with all three succeeds (so the 400s were about the missing one).
    let tid = h.tid();
    let out = h.send(&build(Method::Allocate, tid, |b| {
        transport_udp(b);
        sign(b, "alice", &nonce, &key);
    }));
    assert_success(&out.one().payload, Method::Allocate);
}

#[test]
fn wrong_password_or_unknown_user_gets_401() {
    let mut h = Harness::new(config());
    for mut c in [
        TurnClient::new("alice", "wrong"),
        TurnClient::new("mallory", "x"),
    ] {
        let r = h.allocate_with(&mut c, client_addr(), &transport_udp);
        assert_eq!(r.codes(), vec![Some(401), Some(401)]);
        assert_eq!(r.answer, Answer::Error(401));
        // The second 401 still challenges: REALM and NONCE, no integrity.
        assert!(has(r.last(), attr::REALM) && has(r.last(), attr::NONCE));
        assert!(!has(r.last(), attr::MESSAGE_INTEGRITY));
    }
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn stale_nonce_gets_438_with_fresh_nonce_and_retry_succeeds() {
    let (mut h, mut c, _relay) = allocated(config(), 3600);
    // Within the nonce lifetime (600 s): accepted as is.
    h.advance_to(secs(599));
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(3600));
    assert_eq!(r.codes(), vec![None]);
    // At the nonce lifetime: 438 with a fresh NONCE, then the retry succeeds.
    h.advance_to(secs(600));
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(3600));
    assert_eq!(r.codes(), vec![Some(438), None]);
    let stale = &r.all[0];
    assert_error(stale, Method::Refresh, 438);
    let fresh = text_attr(stale, attr::NONCE).unwrap();
    assert!(fresh.starts_with("obMatJos2"));
    assert!(has(stale, attr::REALM) && has(stale, attr::PASSWORD_ALGORITHMS));
    assert!(!has(stale, attr::MESSAGE_INTEGRITY));
    assert_success(r.last(), Method::Refresh);
    assert_eq!(lifetime_attr(r.last()), 3600);
}

#[test]
fn stale_nonce_with_wrong_password_gets_401_not_438() {
    let mut h = Harness::new(config());
    let nonce = h.nonce_for(client_addr());
    h.advance_to(secs(700));
    let key = md5_key("alice", "wrong");
    let tid = h.tid();
    let out = h.send(&build(Method::Allocate, tid, |b| {
        transport_udp(b);
        sign(b, "alice", &nonce, &key);
    }));
    // RFC 8489 section 9.2.4: the integrity check comes before the nonce check.
    assert_error(&out.one().payload, Method::Allocate, 401);
    // The right password with the stale nonce: 438.
    let key = md5_key("alice", "alice-pw");
    let tid = h.tid();
    let out = h.send(&build(Method::Allocate, tid, |b| {
        transport_udp(b);
        sign(b, "alice", &nonce, &key);
    }));
    assert_error(&out.one().payload, Method::Allocate, 438);
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn nonce_is_bound_to_the_client_address() {
    let mut h = Harness::new(config());
    let nonce = h.nonce_for(client_addr());
    let key = md5_key("alice", "alice-pw");
    let tid = h.tid();
    let other = client_port(50001);
    let out = h.send_from(
        other,
        &build(Method::Allocate, tid, |b| {
            transport_udp(b);
            sign(b, "alice", &nonce, &key);
        }),
    );
    assert_error(&out.one().payload, Method::Allocate, 438);
}

#[test]
fn nonce_with_short_feature_field_is_refused_not_a_panic() {
    // "obMatJos2" followed by a base64 group that decodes to fewer than 3 bytes: the
    // nonce cookie parser must not index past the decoded bytes (remote panic).
    let mut h = Harness::new(config());
    let key = md5_key("alice", "alice-pw");
    for nonce in [
        "obMatJos2AA==rest",
        "obMatJos2AAA=rest",
        "obMatJos2",
        "obMatJos2AA",
    ] {
        let tid = h.tid();
        let out = h.send(&build(Method::Allocate, tid, |b| {
            transport_udp(b);
            sign(b, "alice", nonce, &key);
        }));
        assert_error(&out.one().payload, Method::Allocate, 438);
    }
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn unknown_comprehension_required_attribute_in_authenticated_allocate_gets_420() {
    let mut h = Harness::new(config());
    let mut c = alice();
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(0x0031, &[0; 4]);
        b.attr(0x0032, &[0; 8]);
    });
    assert_eq!(r.answer, Answer::Error(420));
    assert_error(r.last(), Method::Allocate, 420);
    assert_eq!(
        attr_value(r.last(), attr::UNKNOWN_ATTRIBUTES),
        Some(vec![0x00, 0x31, 0x00, 0x32])
    );
    // The error is authenticated with the user's key.
    let key = md5_key("alice", "alice-pw");
    assert_eq!(
        parse(r.last()).verify_integrity(key.as_bytes()),
        Ok(IntegrityKind::Sha1)
    );
    assert!(r.out.binds.is_empty() && r.out.data.is_empty());
    assert_eq!(h.server.state_size(), 0);

    // Unknown comprehension-optional attributes are ignored.
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(0xC001, b"whatever");
    });
    assert_eq!(r.answer, Answer::Success);
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    // RFC 8489 section 14.5: everything after MESSAGE-INTEGRITY except
    // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT is not covered by the HMAC and MUST be
    // ignored. Otherwise anyone on the path can add permissions to a signed request.
    let (mut h, _c, relay) = allocated(config(), 600);
    let nonce = h.nonce_for(client_addr());
    let key = md5_key("alice", "alice-pw");
    let tid = h.tid();
    let mut b = MessageBuilder::new(Method::CreatePermission, Class::Request, tid);
    b.xor_addr(attr::XOR_PEER_ADDRESS, peer());
    sign(&mut b, "alice", &nonce, &key);
    b.xor_addr(attr::XOR_PEER_ADDRESS, peer2()); // injected after the integrity
    b.attr(0x0033, &[0; 4]); // an unknown comprehension-required one, also ignored
    let out = h.send(&b.finish());
    assert_success(&out.one().payload, Method::CreatePermission);
    assert_eq!(
        out.data,
        vec![Change::InstallPermission {
            relay,
            peer: peer().ip(),
            expires: h.now + secs(300)
        }]
    );
    // peer2 has no permission: its data does not reach the client.
    assert!(h.peer_sends(relay, peer2(), b"x").is_empty());

    // The same for an Allocate: a LIFETIME after the integrity is not the client's.
    let from = client_port(50001);
    let nonce = h.nonce_for(from);
    let tid = h.tid();
    let mut b = MessageBuilder::new(Method::Allocate, Class::Request, tid);
    transport_udp(&mut b);
    sign(&mut b, "alice", &nonce, &key);
    b.u32_attr(attr::LIFETIME, 3600);
    let out = h.send_from(from, &b.finish());
    let r = &out.one().payload;
    assert_success(r, Method::Allocate);
    assert_eq!(lifetime_attr(r), 600);
}

// ========================================================================= Allocate

#[test]
fn allocate_success_response() {
    let mut h = Harness::new(config());
    let mut c = alice();
    let r = h.allocate_with(&mut c, client_addr(), &transport_udp);
    assert_eq!(r.codes(), vec![Some(401), None]);
    assert_eq!(r.answer, Answer::Success);
    let resp = r.last();
    assert_success(resp, Method::Allocate);
    let relay = client::xor_address(resp, attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.ip(), relay_ip());
    assert!((49152..=65535).contains(&relay.port()), "{relay}");
    assert_eq!(lifetime_attr(resp), 600);
    assert_eq!(
        client::xor_address(resp, attr::XOR_MAPPED_ADDRESS),
        Some(client_addr())
    );
    let m = parse(resp);
    assert_eq!(
        m.verify_integrity(md5_key("alice", "alice-pw").as_bytes()),
        Ok(IntegrityKind::Sha1)
    );
    assert!(m
        .verify_integrity(md5_key("alice", "other").as_bytes())
        .is_err());
    assert_eq!(
        m.check_fingerprint(),
        Ok(true),
        "the client sent FINGERPRINT"
    );
    // Exactly one bind, then the allocation is installed with its absolute expiry.
    assert_eq!(r.out.binds, vec![RelayAddr(relay)]);
    assert_eq!(
        r.out.data,
        vec![Change::InstallAllocation {
            five_tuple: ft(client_addr()),
            relay: RelayAddr(relay),
            expires: h.now + secs(600),
            user: 0,
        }]
    );
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.poll_timeout(), Some(h.now + secs(600)));
    assert_eq!(h.server.state_size(), baseline_state());
}

#[test]
fn allocate_lifetime_is_clamped_between_default_and_max() {
    let mut h = Harness::new(config());
    for (port, requested, granted) in [
        (50000, 30, 600),
        (50001, 10_000, 3600),
        (50002, 1200, 1200),
        (50003, 0, 600),
    ] {
        let mut c = alice();
        let r = h.allocate_with(
            &mut c,
            client_port(port),
            &allocate_lifetime_body(requested),
        );
        assert_eq!(r.answer, Answer::Success);
        assert_eq!(lifetime_attr(r.last()), granted, "requested {requested}");
        match &r.out.data[..] {
            [Change::InstallAllocation { expires, .. }] => {
                assert_eq!(*expires, h.now + secs(granted as u64))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn refresh_extends_and_zero_deletes() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    h.advance_to(secs(500));
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(1000));
    assert_success(r.last(), Method::Refresh);
    assert_eq!(lifetime_attr(r.last()), 1000);
    assert_eq!(
        r.out.data,
        vec![Change::InstallAllocation {
            five_tuple: ft(client_addr()),
            relay,
            expires: h.at(secs(1500)),
            user: 0
        }]
    );
    // Refresh without LIFETIME: the default.
    let r = h.request(&mut c, client_addr(), Method::Refresh, &|_| {});
    assert_eq!(lifetime_attr(r.last()), 600);
    // Not expired at the old expiry.
    assert!(h.advance_to(secs(1099)).is_empty());

    // Give it a permission and a channel, then delete with LIFETIME 0.
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    let r = h.request(
        &mut c,
        client_addr(),
        Method::CreatePermission,
        &permission_body(vec![peer2()]),
    );
    assert_success(r.last(), Method::CreatePermission);
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(0));
    assert_success(r.last(), Method::Refresh);
    assert_eq!(lifetime_attr(r.last()), 0);
    let mut perms = [peer().ip(), peer2().ip()];
    perms.sort();
    assert_eq!(
        r.out.data,
        vec![
            Change::RemoveChannel {
                five_tuple: ft(client_addr()),
                relay,
                channel: xturn_control::ChannelNumber::new(0x4000).unwrap(),
                peer: PeerAddr(peer())
            },
            Change::RemovePermission {
                relay,
                peer: perms[0]
            },
            Change::RemovePermission {
                relay,
                peer: perms[1]
            },
            Change::RemoveAllocation {
                five_tuple: ft(client_addr()),
                relay
            },
        ]
    );
    assert_eq!(h.server.allocation_count(), 0);
    // Deleting frees everything, timers included.
    assert_eq!(h.server.state_size(), 0);
    for (method, body) in [
        (
            Method::Refresh,
            Box::new(lifetime_body(600)) as Box<dyn Fn(&mut MessageBuilder)>,
        ),
        (
            Method::CreatePermission,
            Box::new(permission_body(vec![peer()])),
        ),
        (Method::ChannelBind, Box::new(channel_body(0x4001, peer()))),
    ] {
        let r = h.request(&mut c, client_addr(), method, &*body);
        assert_error(r.last(), method, 437);
    }
    // Nothing fires later for the deleted allocation.
    assert!(h.advance_to(secs(5000)).is_empty());
    // A new allocation on the same 5-tuple is fine.
    h.allocate(&mut c, client_addr());
}

#[test]
fn allocation_expires_exactly_at_its_lifetime_and_data_does_not_refresh_it() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    // Data every 100 s, both ways, until just before the end; it refreshes nothing.
    for t in (100..=500).step_by(100) {
        let o = h.advance_to(secs(t));
        if t == 300 {
            assert_eq!(
                o.data,
                vec![Change::RemovePermission {
                    relay,
                    peer: peer().ip()
                }]
            );
            let r = h.request(
                &mut c,
                client_addr(),
                Method::CreatePermission,
                &permission_body(vec![peer()]),
            );
            assert_success(r.last(), Method::CreatePermission);
        } else {
            assert!(o.is_empty(), "t={t}: {o:?}");
        }
        assert_eq!(
            h.send(&channel_data::encode(0x4000, b"up"))
                .one()
                .destination,
            peer()
        );
        assert_eq!(
            h.peer_sends(relay, peer(), b"down").one().destination,
            client_addr()
        );
    }
    assert!(h.advance_to(Duration::from_millis(599_999)).is_empty());
    assert_eq!(
        h.send(&channel_data::encode(0x4000, b"up")).transmits.len(),
        1
    );
    let o = h.advance_to(secs(600));
    assert_eq!(
        o.data,
        vec![
            Change::RemoveChannel {
                five_tuple: ft(client_addr()),
                relay,
                channel: xturn_control::ChannelNumber::new(0x4000).unwrap(),
                peer: PeerAddr(peer())
            },
            Change::RemovePermission {
                relay,
                peer: peer().ip()
            },
            Change::RemoveAllocation {
                five_tuple: ft(client_addr()),
                relay
            },
        ]
    );
    assert!(h.send(&channel_data::encode(0x4000, b"up")).is_empty());
    assert!(h.peer_sends(relay, peer(), b"down").is_empty());
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(600));
    assert_error(r.last(), Method::Refresh, 437);
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn refresh_to_a_shorter_lifetime_expires_at_the_new_time() {
    let (mut h, mut c, relay) = allocated(config(), 3600);
    h.advance_to(secs(100));
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(600));
    assert_eq!(lifetime_attr(r.last()), 600);
    assert_eq!(h.server.poll_timeout(), Some(h.at(secs(700))));
    assert!(h.advance_to(Duration::from_millis(699_999)).is_empty());
    let o = h.advance_to(secs(700));
    assert_eq!(
        o.data,
        vec![Change::RemoveAllocation {
            five_tuple: ft(client_addr()),
            relay
        }]
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn state_stays_bounded_over_many_permission_cycles() {
    let (mut h, mut c, _relay) = allocated(config(), 3600);
    let base = h.server.state_size();
    assert_eq!(base, baseline_state());
    for i in 0..10u64 {
        let r = h.request(
            &mut c,
            client_addr(),
            Method::CreatePermission,
            &permission_body(vec![peer()]),
        );
        assert_success(r.last(), Method::CreatePermission);
        assert_eq!(h.server.state_size(), base + 1, "cycle {i}");
        let o = h.advance(secs(301));
        assert_eq!(o.data.len(), 1, "cycle {i}: {o:?}");
        assert_eq!(
            h.server.state_size(),
            base,
            "cycle {i}: timers must not pile up"
        );
    }
}

#[test]
fn reallocate_on_live_five_tuple_gets_437_but_retransmission_gets_same_success() {
    let mut h = Harness::new(config());
    let mut c = alice();
    // Learn the nonce, then send the authenticated Allocate ourselves to keep its bytes.
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_eq!(c.answer(&out.one().payload), Answer::Retry);
    let tid = h.tid();
    let req = c.request(Method::Allocate, tid, transport_udp);
    let first = h.send(&req);
    let first_resp = first.one().payload.clone();
    assert_success(&first_resp, Method::Allocate);
    let relay = client::xor_address(&first_resp, attr::XOR_RELAYED_ADDRESS).unwrap();

    // Retransmission (same transaction id): the same success, no new bind or install.
    let again = h.send(&req);
    assert!(again.binds.is_empty() && again.data.is_empty(), "{again:?}");
    let again_resp = &again.one().payload;
    assert_success(again_resp, Method::Allocate);
    assert_eq!(parse(again_resp).transaction_id(), tid);
    assert_eq!(
        client::xor_address(again_resp, attr::XOR_RELAYED_ADDRESS),
        Some(relay)
    );
    assert_eq!(
        client::xor_address(again_resp, attr::XOR_MAPPED_ADDRESS),
        Some(client_addr())
    );
    assert_eq!(lifetime_attr(again_resp), 600);
    assert_eq!(c.answer(again_resp), Answer::Success);

    // A new transaction on the live 5-tuple: 437, authenticated.
    let r = h.allocate_with(&mut c, client_addr(), &transport_udp);
    assert_error(r.last(), Method::Allocate, 437);
    assert!(parse(r.last())
        .verify_integrity(md5_key("alice", "alice-pw").as_bytes())
        .is_ok());
    // Another user on the same 5-tuple: also 437 for Allocate.
    let r = h.allocate_with(&mut bob(), client_addr(), &transport_udp);
    assert_error(r.last(), Method::Allocate, 437);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn allocate_retransmitted_while_bind_pending_gets_one_answer() {
    let mut h = Harness::new(config());
    h.bind_ok = Box::new(|_| None);
    let mut c = alice();
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_eq!(c.answer(&out.one().payload), Answer::Retry);
    let tid = h.tid();
    let req = c.request(Method::Allocate, tid, transport_udp);
    let o = h.send(&req);
    assert!(o.transmits.is_empty() && o.data.is_empty());
    assert_eq!(o.binds.len(), 1);
    let o = h.send(&req);
    assert!(o.is_empty(), "retransmission during the bind: {o:?}");
    let o = h.complete_deferred(true);
    assert_success(&o.one().payload, Method::Allocate);
    assert_eq!(o.data.len(), 1);
}

#[test]
fn requests_without_allocation_get_437() {
    let mut h = Harness::new(config());
    let mut c = alice();
    for (method, body) in [
        (
            Method::Refresh,
            Box::new(lifetime_body(600)) as Box<dyn Fn(&mut MessageBuilder)>,
        ),
        (
            Method::CreatePermission,
            Box::new(permission_body(vec![peer()])),
        ),
        (Method::ChannelBind, Box::new(channel_body(0x4000, peer()))),
    ] {
        let r = h.request(&mut c, client_addr(), method, &*body);
        assert_error(r.last(), method, 437);
        assert!(parse(r.last())
            .verify_integrity(md5_key("alice", "alice-pw").as_bytes())
            .is_ok());
        assert!(r.out.data.is_empty());
    }
    // Indications and ChannelData on an unknown 5-tuple are ignored.
    let tid = h.tid();
    assert!(h
        .send(&client::send_indication(tid, peer(), b"x"))
        .is_empty());
    assert!(h.send(&channel_data::encode(0x4000, b"x")).is_empty());
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn request_on_allocation_of_another_user_gets_441() {
    let (mut h, _alice, _relay) = allocated(config(), 600);
    let mut b = bob();
    for (method, body) in [
        (
            Method::Refresh,
            Box::new(lifetime_body(600)) as Box<dyn Fn(&mut MessageBuilder)>,
        ),
        (
            Method::CreatePermission,
            Box::new(permission_body(vec![peer()])),
        ),
        (Method::ChannelBind, Box::new(channel_body(0x4000, peer()))),
        (Method::Refresh, Box::new(lifetime_body(0))),
    ] {
        let r = h.request(&mut b, client_addr(), method, &*body);
        assert_error(r.last(), method, 441);
        assert!(r.out.data.is_empty());
    }
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn requested_transport_missing_unknown_or_tcp_over_udp() {
    let mut h = Harness::new(config());
    let mut c = alice();
    let r = h.allocate_with(&mut c, client_addr(), &|_| {});
    assert_error(r.last(), Method::Allocate, 400);
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[132, 0, 0, 0]);
    });
    assert_error(r.last(), Method::Allocate, 442);
    // RFC 6062 section 5.1: a TCP allocation over UDP is a bad request.
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_error(r.last(), Method::Allocate, 400);
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0]);
    });
    assert_error(r.last(), Method::Allocate, 400);
    assert_eq!(h.server.state_size(), 0);
}

#[test]
fn address_family_rules() {
    let mut h = Harness::new(config());
    let mut c = alice();
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    assert_error(r.last(), Method::Allocate, 440);
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV4, 0, 0, 0],
        );
        b.attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    assert_error(r.last(), Method::Allocate, 400);
    assert_eq!(h.server.state_size(), 0);
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV4, 0, 0, 0],
        );
    });
    assert_success(r.last(), Method::Allocate);
    assert!(client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .is_ipv4());

    // With an IPv6 relay address the IPv6 family works.
    let mut cfg = config();
    cfg.relay_ipv6 = Some(ip("2001:db8::1"));
    let mut h = Harness::new(cfg);
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    assert_success(r.last(), Method::Allocate);
    assert_eq!(
        client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .ip(),
        ip("2001:db8::1")
    );
}

#[test]
fn additional_address_family_and_refresh_family_checks() {
    let mut h = Harness::new(config());
    let mut c = alice();
    // ADDITIONAL-ADDRESS-FAMILY must say IPv6 (RFC 8656 section 7.2).
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV4, 0, 0, 0],
        );
    });
    assert_error(r.last(), Method::Allocate, 400);
    // Dual allocation without an IPv6 relay: IPv4 relayed address, and
    // ADDRESS-ERROR-CODE for IPv6 with 440.
    let r = h.allocate_with(&mut c, client_addr(), &|b| {
        transport_udp(b);
        b.attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    assert_success(r.last(), Method::Allocate);
    assert!(client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .is_ipv4());
    let aec = attr_value(r.last(), attr::ADDRESS_ERROR_CODE).expect("ADDRESS-ERROR-CODE");
    assert_eq!(aec[0], attr::FAMILY_IPV6);
    assert_eq!((aec[2] & 7, aec[3]), (4, 40));
    // Refresh naming the other family: 443 (RFC 8656 section 7.3); the same family is fine.
    let r = h.request(&mut c, client_addr(), Method::Refresh, &|b| {
        b.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    assert_error(r.last(), Method::Refresh, 443);
    assert!(r.out.data.is_empty());
    let r = h.request(&mut c, client_addr(), Method::Refresh, &|b| {
        b.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV4, 0, 0, 0],
        );
    });
    assert_success(r.last(), Method::Refresh);
}

#[test]
fn dont_fragment_is_passed_to_the_driver() {
    let mut h = Harness::new(config());
    let r = h.allocate_with(&mut alice(), client_port(50000), &|b| {
        transport_udp(b);
        b.attr(attr::DONT_FRAGMENT, &[]);
    });
    assert_success(r.last(), Method::Allocate);
    assert_eq!(r.out.dont_fragment, vec![true]);
    let r = h.allocate_with(&mut alice(), client_port(50001), &transport_udp);
    assert_eq!(r.out.dont_fragment, vec![false]);
}

#[test]
fn permissions_per_allocation_are_bounded() {
    let mut cfg = config();
    cfg.max_permissions = 2;
    let (mut h, mut c, _relay) = allocated(cfg, 600);
    assert_eq!(permission_code(&mut h, &mut c, peer()), None);
    assert_eq!(permission_code(&mut h, &mut c, peer2()), None);
    assert_eq!(
        permission_code(&mut h, &mut c, sa("198.51.100.4:1")),
        Some(508)
    );
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, sa("198.51.100.4:1")),
        Some(508)
    );
    // Refreshing an existing one, or a channel to a permitted IP, is fine.
    assert_eq!(permission_code(&mut h, &mut c, sa("198.51.100.2:1")), None);
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer2()), None);
}

// ========================================================================= quotas and ports

#[test]
fn user_quota() {
    let mut cfg = config();
    cfg.user_quota = 1;
    let mut h = Harness::new(cfg);
    let mut a = alice();
    h.allocate(&mut a, client_port(50000));
    let mut a2 = alice();
    let r = h.allocate_with(&mut a2, client_port(50001), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    assert!(r.out.binds.is_empty());
    h.allocate(&mut bob(), client_port(50002));
    // Deleting alice's allocation frees her quota.
    let r = h.request(
        &mut a,
        client_port(50000),
        Method::Refresh,
        &lifetime_body(0),
    );
    assert_success(r.last(), Method::Refresh);
    h.allocate(&mut a2, client_port(50001));
}

#[test]
fn total_quota() {
    let mut cfg = config();
    cfg.total_quota = 2;
    let mut h = Harness::new(cfg);
    let mut a = alice();
    h.allocate(&mut a, client_port(50000));
    h.allocate(&mut bob(), client_port(50001));
    let r = h.allocate_with(&mut alice(), client_port(50002), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    let r = h.allocate_with(&mut bob(), client_port(50003), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    // Expiry frees quota too.
    h.advance_to(secs(600));
    assert_eq!(h.server.allocation_count(), 0);
    h.allocate(&mut alice(), client_port(50002));
}

#[test]
fn single_port_range_gives_508_for_the_second_allocation() {
    let mut cfg = config();
    cfg.min_port = 50000;
    cfg.max_port = 50000;
    let mut h = Harness::new(cfg);
    let mut a = alice();
    let relay = h.allocate(&mut a, client_port(40000));
    assert_eq!(relay.0, SocketAddr::new(relay_ip(), 50000));
    let r = h.allocate_with(&mut bob(), client_port(40001), &transport_udp);
    assert_error(r.last(), Method::Allocate, 508);
    let r = h.request(
        &mut a,
        client_port(40000),
        Method::Refresh,
        &lifetime_body(0),
    );
    assert_success(r.last(), Method::Refresh);
    assert_eq!(h.allocate(&mut bob(), client_port(40001)), relay);
}

#[test]
fn bind_failure_makes_the_server_try_another_port() {
    let mut cfg = config();
    cfg.min_port = 50000;
    cfg.max_port = 50001;
    let mut h = Harness::new(cfg);
    // Whatever port the server tries first is taken by someone else.
    let failed = std::rc::Rc::new(std::cell::Cell::new(None::<RelayAddr>));
    for i in 0..20u16 {
        let f = failed.clone();
        f.set(None);
        h.bind_ok = Box::new(move |r| {
            if f.get().is_none() {
                f.set(Some(r));
                Some(false)
            } else {
                Some(true)
            }
        });
        let mut c = alice();
        let from = client_port(40000 + i);
        let r = h.allocate_with(&mut c, from, &transport_udp);
        assert_success(r.last(), Method::Allocate);
        assert_eq!(r.out.binds.len(), 2, "{:?}", r.out.binds);
        assert_ne!(
            r.out.binds[0], r.out.binds[1],
            "the port that failed is not retried"
        );
        assert_eq!(
            client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS),
            Some(r.out.binds[1].0)
        );
        let r = h.request(&mut c, from, Method::Refresh, &lifetime_body(0));
        assert_success(r.last(), Method::Refresh);
        assert_eq!(h.server.state_size(), 0, "iteration {i}");
    }
}

#[test]
fn bind_failure_on_a_single_port_range_gives_508_and_releases_everything() {
    let mut cfg = config();
    cfg.min_port = 50000;
    cfg.max_port = 50000;
    cfg.user_quota = 1;
    let mut h = Harness::new(cfg);
    h.bind_ok = Box::new(|_| Some(false));
    let mut c = alice();
    let r = h.allocate_with(&mut c, client_addr(), &transport_udp);
    assert_error(r.last(), Method::Allocate, 508);
    assert!(parse(r.last())
        .verify_integrity(md5_key("alice", "alice-pw").as_bytes())
        .is_ok());
    assert_eq!(
        r.out.binds,
        vec![RelayAddr(SocketAddr::new(relay_ip(), 50000))]
    );
    assert!(r.out.data.is_empty());
    assert_eq!(h.server.state_size(), 0);
    // Port and quota are free again.
    h.bind_ok = Box::new(|_| Some(true));
    h.allocate(&mut c, client_addr());
}

#[test]
fn even_port_reservation_and_its_release_on_bind_failure() {
    let mut cfg = config();
    cfg.min_port = 50000;
    cfg.max_port = 50003;
    let mut h = Harness::new(cfg);
    let even_r = |b: &mut MessageBuilder| {
        transport_udp(b);
        b.attr(attr::EVEN_PORT, &[0x80]);
    };
    // Every bind fails: 508, and neither the port nor its reserved neighbour stays used.
    h.bind_ok = Box::new(|_| Some(false));
    let r = h.allocate_with(&mut alice(), client_addr(), &even_r);
    assert_error(r.last(), Method::Allocate, 508);
    assert!(
        r.out.binds.iter().all(|b| b.0.port() % 2 == 0),
        "{:?}",
        r.out.binds
    );
    assert_eq!(h.server.state_size(), 0);

    h.bind_ok = Box::new(|_| Some(true));
    let r = h.allocate_with(&mut alice(), client_addr(), &even_r);
    assert_success(r.last(), Method::Allocate);
    let relay = client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.port() % 2, 0);
    let token = attr_value(r.last(), attr::RESERVATION_TOKEN).expect("RESERVATION-TOKEN");
    assert_eq!(token.len(), 8);
    // The reserved port goes to the allocation that presents the token.
    let r = h.allocate_with(&mut bob(), client_port(50001), &|b| {
        transport_udp(b);
        b.attr(attr::RESERVATION_TOKEN, &token);
    });
    assert_success(r.last(), Method::Allocate);
    assert_eq!(
        client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .port(),
        relay.port() + 1
    );
    // A token can be used once.
    let r = h.allocate_with(&mut bob(), client_port(50002), &|b| {
        transport_udp(b);
        b.attr(attr::RESERVATION_TOKEN, &token);
    });
    assert_error(r.last(), Method::Allocate, 508);
}

#[test]
fn an_unused_reservation_lapses_after_30_seconds() {
    let mut cfg = config();
    cfg.min_port = 50000;
    cfg.max_port = 50001;
    let mut h = Harness::new(cfg);
    let r = h.allocate_with(&mut alice(), client_addr(), &|b| {
        transport_udp(b);
        b.attr(attr::EVEN_PORT, &[0x80]);
    });
    assert_success(r.last(), Method::Allocate);
    let token = attr_value(r.last(), attr::RESERVATION_TOKEN).unwrap();
    // The reserved port is not given to anyone else meanwhile.
    let r = h.allocate_with(&mut bob(), client_port(50001), &transport_udp);
    assert_error(r.last(), Method::Allocate, 508);
    assert_eq!(h.server.poll_timeout(), Some(h.at(secs(30))));
    h.advance_to(secs(30));
    assert_eq!(h.server.state_size(), baseline_state());
    let r = h.allocate_with(&mut bob(), client_port(50002), &|b| {
        transport_udp(b);
        b.attr(attr::RESERVATION_TOKEN, &token);
    });
    assert_error(r.last(), Method::Allocate, 508);
    // The port is free for anyone now.
    assert_eq!(h.allocate(&mut bob(), client_port(50001)).0.port(), 50001);
}

// ========================================================================= peer filtering

fn permission_code(h: &mut Harness, c: &mut TurnClient, p: SocketAddr) -> Option<u16> {
    let r = h.request(
        c,
        client_addr(),
        Method::CreatePermission,
        &permission_body(vec![p]),
    );
    if r.code().is_some() {
        assert!(
            r.out.data.is_empty(),
            "a refused permission installs nothing"
        );
    }
    r.code()
}

fn channel_code(h: &mut Harness, c: &mut TurnClient, ch: u16, p: SocketAddr) -> Option<u16> {
    let r = h.request(c, client_addr(), Method::ChannelBind, &channel_body(ch, p));
    if r.code().is_some() {
        assert!(r.out.data.is_empty(), "a refused channel installs nothing");
    }
    r.code()
}

#[test]
fn default_deny_list_and_embedded_ipv4_forms_get_403() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    for bad in [
        "[::ffff:127.0.0.1]:7000",
        "0.0.0.0:7000",
        "10.0.0.1:7000",
        "127.0.0.1:7000",
        "172.16.0.1:7000",
        "192.168.1.1:7000",
        "100.64.0.1:7000",
        "169.254.169.254:80",
        "224.0.0.1:7000",
        "[::ffff:10.0.0.1]:7000",
    ] {
        assert_eq!(
            permission_code(&mut h, &mut c, sa(bad)),
            Some(403),
            "CreatePermission {bad}"
        );
        assert_eq!(
            channel_code(&mut h, &mut c, 0x4000, sa(bad)),
            Some(403),
            "ChannelBind {bad}"
        );
    }
    // IPv6 forms carrying a denied IPv4 address: never a success (403 preferred).
    for bad in [
        "[64:ff9b::7f00:1]:7000",
        "[2002:a9fe:a9fe::]:80",
        "[::127.0.0.1]:7000",
        "[::1]:7000",
        "[fe80::1]:7000",
    ] {
        let code = permission_code(&mut h, &mut c, sa(bad));
        assert!(
            matches!(code, Some(403) | Some(443)),
            "CreatePermission {bad}: {code:?}"
        );
        let code = channel_code(&mut h, &mut c, 0x4000, sa(bad));
        assert!(
            matches!(code, Some(403) | Some(443)),
            "ChannelBind {bad}: {code:?}"
        );
    }
    assert_eq!(
        permission_code(&mut h, &mut c, sa("[64:ff9b::7f00:1]:7000")),
        Some(403)
    );
    // A request with one good and one bad peer installs nothing at all.
    let r = h.request(
        &mut c,
        client_addr(),
        Method::CreatePermission,
        &permission_body(vec![peer(), sa("10.0.0.1:1")]),
    );
    assert_eq!(r.code(), Some(403));
    assert!(r.out.data.is_empty());
    assert!(h.peer_sends(relay, peer(), b"x").is_empty());
    // An IPv6 peer on an IPv4 relay: 443.
    assert_eq!(
        permission_code(&mut h, &mut c, sa("[2001:db8::2]:7000")),
        Some(443)
    );
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, sa("[2001:db8::2]:7000")),
        Some(443)
    );
    // A public peer written as IPv4-mapped is that IPv4 peer.
    assert_eq!(
        permission_code(&mut h, &mut c, sa("[::ffff:198.51.100.2]:7000")),
        None
    );
}

#[test]
fn operator_deny_and_allow_lists() {
    let mut cfg = config();
    cfg.filter = filter_with(&["10.0.0.0/8"], &["203.0.113.0/24"]);
    let (mut h, mut c, _relay) = allocated(cfg, 600);
    assert_eq!(
        permission_code(&mut h, &mut c, sa("203.0.113.5:7000")),
        Some(403)
    );
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, sa("203.0.113.5:7000")),
        Some(403)
    );
    assert_eq!(
        permission_code(&mut h, &mut c, sa("203.0.114.5:7000")),
        None
    );
    // The allow list overrides the default list.
    assert_eq!(permission_code(&mut h, &mut c, sa("10.0.0.1:7000")), None);
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4001, sa("10.0.0.1:7000")),
        None
    );
    assert_eq!(
        h.send(&channel_data::encode(0x4001, b"hi"))
            .one()
            .destination,
        sa("10.0.0.1:7000")
    );
    // Other private ranges stay denied.
    assert_eq!(
        permission_code(&mut h, &mut c, sa("192.168.0.1:7000")),
        Some(403)
    );
}

#[test]
fn own_listening_endpoint_is_denied_even_when_allowed() {
    let mut cfg = config();
    cfg.filter = filter_with(&["192.0.2.0/24"], &[]);
    let (mut h, mut c, relay) = allocated(cfg, 600);
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, server_addr()),
        Some(403)
    );
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, sa("[::ffff:192.0.2.1]:3478")),
        Some(403)
    );
    // The listening address is an address of the host: no port of it is reachable, and
    // it gets no permission, although the operator allowed its subnet.
    assert_eq!(permission_code(&mut h, &mut c, server_addr()), Some(403));
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, sa("192.0.2.1:9999")),
        Some(403)
    );
    let tid = h.tid();
    assert!(h
        .send(&client::send_indication(tid, server_addr(), b"loop"))
        .is_empty());
    // Another address of the subnet is fine.
    assert_eq!(permission_code(&mut h, &mut c, sa("192.0.2.9:1")), None);
    let tid = h.tid();
    let o = h.send(&client::send_indication(tid, sa("192.0.2.9:9999"), b"ok"));
    assert_eq!(o.one().source, relay.0);
}

#[test]
fn hairpin_between_two_allocations_of_the_server() {
    let mut h = Harness::new(config());
    let (a_addr, b_addr) = (client_port(50000), client_port(50001));
    let (mut a, mut b) = (alice(), bob());
    let relay_a = h.allocate(&mut a, a_addr);
    let relay_b = h.allocate(&mut b, b_addr);
    // A binds a channel to B's relayed address; B permits A's relay IP.
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4000, relay_b.0),
    );
    assert_success(r.last(), Method::ChannelBind);
    let r = h.request(
        &mut b,
        b_addr,
        Method::CreatePermission,
        &permission_body(vec![relay_a.0]),
    );
    assert_success(r.last(), Method::CreatePermission);
    // Another port on the relay IP is not an allocation: 403.
    let other = (49152..=65535u16)
        .find(|p| *p != relay_a.0.port() && *p != relay_b.0.port())
        .unwrap();
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4001, SocketAddr::new(relay_ip(), other)),
    );
    assert_error(r.last(), Method::ChannelBind, 403);

    // A -> B: ChannelData leaves relay A for relay B, which delivers a Data indication.
    let o = h.send_from(a_addr, &channel_data::encode(0x4000, b"ping"));
    assert_eq!(
        o.one(),
        &Transmit {
            source: relay_a.0,
            destination: relay_b.0,
            payload: b"ping".to_vec(),
            transport: xturn_control::Transport::Udp,
        }
    );
    let o = h.peer_sends(relay_b, relay_a.0, b"ping");
    assert_eq!(o.one().destination, b_addr);
    assert_eq!(
        client::data_indication(&o.one().payload),
        Some((relay_a.0, b"ping".to_vec()))
    );
    // B -> A: a Send indication, delivered to A over its channel.
    let tid = h.tid();
    let o = h.send_from(b_addr, &client::send_indication(tid, relay_a.0, b"pong"));
    assert_eq!(
        o.one(),
        &Transmit {
            source: relay_b.0,
            destination: relay_a.0,
            payload: b"pong".to_vec(),
            transport: xturn_control::Transport::Udp,
        }
    );
    let o = h.peer_sends(relay_a, relay_b.0, b"pong");
    assert_eq!(o.one().destination, a_addr);
    assert_eq!(o.one().payload, channel_data::encode(0x4000, b"pong"));
    // Send indications to a non-allocated port on the relay IP are dropped.
    let tid = h.tid();
    assert!(h
        .send_from(
            b_addr,
            &client::send_indication(tid, SocketAddr::new(relay_ip(), other), b"x")
        )
        .is_empty());

    // Once B's allocation is gone its address is just another port of the host.
    let r = h.request(&mut b, b_addr, Method::Refresh, &lifetime_body(0));
    assert_success(r.last(), Method::Refresh);
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4002, relay_b.0),
    );
    assert_error(r.last(), Method::ChannelBind, 403);
    // And the channel A had to it is gone with it: removed from every table, and its
    // ChannelData is relayed no more (the port may belong to another process now).
    assert!(
        r.out.data.is_empty(),
        "a refused ChannelBind installs nothing"
    );
    let o = h.send_from(a_addr, &channel_data::encode(0x4000, b"late"));
    assert!(o.is_empty(), "{o:?}");
}

#[test]
fn a_deleted_allocation_takes_the_channels_to_it_along() {
    let mut h = Harness::new(config());
    let (a_addr, b_addr) = (client_port(50000), client_port(50001));
    let (mut a, mut b) = (alice(), bob());
    let relay_a = h.allocate(&mut a, a_addr);
    let relay_b = h.allocate(&mut b, b_addr);
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4000, relay_b.0),
    );
    assert_success(r.last(), Method::ChannelBind);
    let r = h.request(&mut b, b_addr, Method::Refresh, &lifetime_body(0));
    assert_success(r.last(), Method::Refresh);
    let removed: Vec<_> = r
        .out
        .data
        .iter()
        .filter(|o| matches!(o, Change::RemoveChannel { relay, .. } if *relay == relay_a))
        .collect();
    assert_eq!(
        removed,
        vec![&Change::RemoveChannel {
            five_tuple: ft(a_addr),
            relay: relay_a,
            channel: xturn_control::ChannelNumber::new(0x4000).unwrap(),
            peer: PeerAddr(relay_b.0),
        }],
        "{:?}",
        r.out.data
    );
    assert!(h
        .send_from(a_addr, &channel_data::encode(0x4000, b"late"))
        .is_empty());
    // The channel number is free again; A's allocation is otherwise intact.
    assert_eq!(
        channel_code(&mut h, &mut a, 0x4000, peer()),
        None,
        "channel number reusable"
    );
    // A's own expiry afterwards leaves nothing behind.
    h.advance_to(secs(700));
    assert_eq!(h.server.state_size(), 0);
}

// ========================================================================= hardening

#[test]
fn channels_per_allocation_are_bounded() {
    let mut cfg = config();
    cfg.max_channels = 2;
    let (mut h, mut c, _relay) = allocated(cfg, 600);
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer()), None);
    assert_eq!(channel_code(&mut h, &mut c, 0x4001, peer2()), None);
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4002, sa("198.51.100.4:1")),
        Some(508)
    );
    // Refreshing a bound channel is not a new one.
    assert_eq!(channel_code(&mut h, &mut c, 0x4001, peer2()), None);
    // Another user's allocation has its own budget.
    let mut b = bob();
    let from = client_port(50010);
    h.allocate(&mut b, from);
    let r = h.request(
        &mut b,
        from,
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
}

#[test]
fn allocations_per_client_address_are_bounded() {
    let mut cfg = config();
    cfg.ip_quota = 2;
    let mut h = Harness::new(cfg);
    h.allocate(&mut alice(), client_port(50000));
    h.allocate(&mut bob(), client_port(50001));
    let r = h.allocate_with(&mut alice(), client_port(50002), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    // Another client address is unaffected.
    h.allocate(&mut alice(), sa("192.0.2.3:50002"));
    // An IPv6 client is counted by its /64.
    let mut cfg = config();
    cfg.ip_quota = 1;
    let mut h = Harness::new(cfg);
    h.allocate(&mut alice(), sa("[2001:db8:1:2::10]:4000"));
    let r = h.allocate_with(&mut bob(), sa("[2001:db8:1:2::11]:4000"), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    h.allocate(&mut bob(), sa("[2001:db8:1:3::11]:4000"));
}

#[test]
fn default_quotas_are_finite() {
    let c = config();
    assert!(c.user_quota > 0 && c.ip_quota > 0 && c.total_quota > 0);
    assert!(c.max_permissions > 0 && c.max_channels > 0);
    assert!(c.unauth_rate > 0 && c.unauth_rate_per_prefix > 0);
    assert!(c.stateless_rate_per_prefix > 0);
}

#[test]
fn huge_configured_lifetimes_are_clamped_not_a_panic() {
    let mut cfg = config();
    cfg.permission_lifetime = Duration::from_secs(u64::MAX / 4);
    cfg.channel_lifetime = Duration::MAX;
    cfg.max_lifetime = Duration::MAX;
    cfg.default_lifetime = Duration::MAX;
    cfg.nonce_lifetime = Duration::MAX;
    let (mut h, mut c, _relay) = allocated(cfg, u32::MAX);
    assert_eq!(permission_code(&mut h, &mut c, peer()), None);
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer2()), None);
    assert_eq!(
        h.server.config().permission_lifetime,
        xturn_control::server::MAX_CONFIG_LIFETIME
    );
}

/// A spoofed-source flood of unauthenticated Allocates from one /24 empties that range's
/// budget, not everyone's: another range still gets its 401s (and so its nonces).
#[test]
fn a_401_flood_from_one_prefix_leaves_other_prefixes_served() {
    let mut cfg = config();
    cfg.unauth_rate = 20_000;
    cfg.unauth_rate_per_prefix = 50;
    let mut h = Harness::new(cfg);
    let answers = |h: &mut Harness, from: &dyn Fn(u32) -> SocketAddr, n: u32| -> usize {
        (0..n)
            .map(|i| {
                let tid = h.tid();
                h.send_from(from(i), &build(Method::Allocate, tid, transport_udp))
                    .transmits
                    .len()
            })
            .sum()
    };
    let flood = |i: u32| {
        SocketAddr::new(
            IpAddr::from([203, 0, 113, (i % 254) as u8 + 1]),
            1024 + (i % 50000) as u16,
        )
    };
    assert_eq!(
        answers(&mut h, &flood, 100_000),
        50,
        "the flooding /24 gets its budget"
    );
    let other = |i: u32| SocketAddr::new(IpAddr::from([192, 0, 2, (i % 200) as u8 + 1]), 3000);
    assert_eq!(
        answers(&mut h, &other, 40),
        40,
        "another /24 is answered in full"
    );
    // ... and can authenticate and allocate.
    h.allocate(&mut alice(), client_port(50000));
    // A flood spread over many prefixes is bounded by the server-wide budget instead.
    let mut cfg = config();
    cfg.unauth_rate = 100;
    cfg.unauth_rate_per_prefix = 50;
    let mut h = Harness::new(cfg);
    let spread = |i: u32| SocketAddr::new(IpAddr::from([203, 0, (i % 250) as u8, 1]), 1024);
    assert_eq!(answers(&mut h, &spread, 10_000), 100);
    assert_eq!(h.server.state_size(), 0);
}

/// Binding answers and 400s to unknown methods are budgeted per source prefix too (they
/// reflect traffic at a spoofed source); TURN requests from that prefix are not affected.
#[test]
fn stateless_answers_are_budgeted_per_prefix() {
    let mut cfg = config();
    cfg.stateless_rate_per_prefix = 10;
    let mut h = Harness::new(cfg);
    let n: usize = (0..100u16)
        .map(|i| {
            let tid = h.tid();
            h.send_from(client_port(1000 + i), &build(Method::Binding, tid, |_| {}))
                .transmits
                .len()
        })
        .sum();
    assert_eq!(n, 10);
    let tid = h.tid();
    let o = h.send_from(sa("198.51.100.200:9"), &build(Method::Binding, tid, |_| {}));
    assert_eq!(o.transmits.len(), 1, "another prefix is answered");
    h.allocate(&mut alice(), client_addr());
    h.advance(secs(1));
    let tid = h.tid();
    assert_eq!(
        h.send_from(client_port(999), &build(Method::Binding, tid, |_| {}))
            .transmits
            .len(),
        1,
        "refilled"
    );
}

// ========================================================================= channels

#[test]
fn channel_bind_number_and_uniqueness_rules() {
    let (mut h, mut c, relay) = allocated(config(), 3600);
    assert_eq!(channel_code(&mut h, &mut c, 0x5000, peer()), Some(400));
    assert_eq!(channel_code(&mut h, &mut c, 0x3FFF, peer()), Some(400));
    assert_eq!(channel_code(&mut h, &mut c, 0xFFFF, peer()), Some(400));
    // Missing CHANNEL-NUMBER or XOR-PEER-ADDRESS, or two peers: 400.
    for body in [
        Box::new(|b: &mut MessageBuilder| {
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer());
        }) as Box<dyn Fn(&mut MessageBuilder)>,
        Box::new(|b: &mut MessageBuilder| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]);
        }),
        Box::new(|b: &mut MessageBuilder| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]);
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer());
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer2());
        }),
    ] {
        let r = h.request(&mut c, client_addr(), Method::ChannelBind, &*body);
        assert_error(r.last(), Method::ChannelBind, 400);
        assert!(r.out.data.is_empty());
    }

    let ch = xturn_control::ChannelNumber::new(0x4000).unwrap();
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    // The permission first, then the channel (a driver never has a channel without one).
    assert_eq!(
        r.out.data,
        vec![
            Change::InstallPermission {
                relay,
                peer: peer().ip(),
                expires: h.now + secs(300)
            },
            Change::InstallChannel {
                five_tuple: ft(client_addr()),
                relay,
                channel: ch,
                peer: PeerAddr(peer()),
                expires: h.now + secs(600)
            },
        ]
    );
    // Same channel to another peer, or same peer to another channel: 400.
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer2()), Some(400));
    assert_eq!(channel_code(&mut h, &mut c, 0x4001, peer()), Some(400));
    // Another port of the same peer IP is another peer transport address.
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4000, sa("198.51.100.2:7001")),
        Some(400)
    );
    assert_eq!(
        channel_code(&mut h, &mut c, 0x4FFF, sa("198.51.100.2:7001")),
        None
    );

    // Rebinding the same pair at t=100 refreshes channel and permission.
    h.advance_to(secs(100));
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    assert_eq!(
        r.out.data,
        vec![
            Change::InstallPermission {
                relay,
                peer: peer().ip(),
                expires: h.at(secs(400))
            },
            Change::InstallChannel {
                five_tuple: ft(client_addr()),
                relay,
                channel: ch,
                peer: PeerAddr(peer()),
                expires: h.at(secs(700))
            },
        ]
    );
    // Keep the permission alive with CreatePermission (to 650); the 0x4FFF channel
    // bound at 0 goes at 600, the refreshed 0x4000 one lives to 700.
    h.advance_to(secs(350));
    let r = h.request(
        &mut c,
        client_addr(),
        Method::CreatePermission,
        &permission_body(vec![peer()]),
    );
    assert_success(r.last(), Method::CreatePermission);
    let o = h.advance_to(secs(640));
    assert_eq!(
        o.data,
        vec![Change::RemoveChannel {
            five_tuple: ft(client_addr()),
            relay,
            channel: xturn_control::ChannelNumber::new(0x4FFF).unwrap(),
            peer: PeerAddr(sa("198.51.100.2:7001"))
        }]
    );
    assert_eq!(
        h.send(&channel_data::encode(0x4000, b"x")).transmits.len(),
        1
    );
    let o = h.advance_to(secs(700));
    assert_eq!(
        o.data,
        vec![
            Change::RemovePermission {
                relay,
                peer: peer().ip()
            },
            Change::RemoveChannel {
                five_tuple: ft(client_addr()),
                relay,
                channel: ch,
                peer: PeerAddr(peer())
            }
        ]
    );
    assert!(h.send(&channel_data::encode(0x4000, b"x")).is_empty());
    // After expiry the channel number can go to another peer.
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer2()), None);
}

#[test]
fn rfc5766_channel_range_is_opt_in() {
    let mut cfg = config();
    cfg.rfc5766_channels = true;
    let (mut h, mut c, relay) = allocated(cfg, 600);
    assert_eq!(channel_code(&mut h, &mut c, 0x7FFF, peer()), Some(400));
    assert_eq!(channel_code(&mut h, &mut c, 0x7FFE, peer()), None);
    assert_eq!(
        h.send(&channel_data::encode(0x7FFE, b"old")).one().payload,
        b"old"
    );
    assert_eq!(
        h.peer_sends(relay, peer(), b"back").one().payload,
        channel_data::encode(0x7FFE, b"back")
    );
    // Strict by default (checked in channel_bind_number_and_uniqueness_rules).
    let (mut h, mut c, _) = allocated(config(), 600);
    assert_eq!(channel_code(&mut h, &mut c, 0x7FFE, peer()), Some(400));
}

#[test]
fn invalid_channel_data_is_silently_discarded() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer()), None);
    assert!(h.send(&channel_data::encode(0x5000, b"x")).is_empty());
    assert!(h.send(&channel_data::encode(0x7FFF, b"x")).is_empty());
    assert!(h.send(&channel_data::encode(0x4001, b"x")).is_empty());
    // Bound channel, but from another client port: another 5-tuple.
    assert!(h
        .send_from(client_port(50001), &channel_data::encode(0x4000, b"x"))
        .is_empty());
    // Shorter than 4 + Length.
    let mut short = channel_data::encode(0x4000, b"abcd");
    short.truncate(7);
    assert!(h.send(&short).is_empty());
    assert!(h.send(&[0x40, 0x00, 0x00]).is_empty());
    // Zero length is valid; padding is not payload.
    let o = h.send(&channel_data::encode(0x4000, b""));
    assert_eq!(
        o.one(),
        &Transmit {
            source: relay.0,
            destination: peer(),
            payload: vec![],
            transport: xturn_control::Transport::Udp,
        }
    );
    let mut padded = channel_data::encode(0x4000, b"abcde");
    padded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(h.send(&padded).one().payload, b"abcde");
}

// ========================================================================= data path

#[test]
fn data_path_through_the_server() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    // Nothing without a permission, either way.
    assert!(h.peer_sends(relay, peer(), b"early").is_empty());
    let tid = h.tid();
    assert!(h
        .send(&client::send_indication(tid, peer(), b"early"))
        .is_empty());

    // Permission only: Data indication to the client, Send indication to the peer.
    assert_eq!(permission_code(&mut h, &mut c, peer()), None);
    let o = h.peer_sends(relay, peer(), b"hello");
    let t = o.one();
    assert_eq!((t.source, t.destination), (server_addr(), client_addr()));
    let m = parse(&t.payload);
    assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
    assert_eq!(
        client::data_indication(&t.payload),
        Some((peer(), b"hello".to_vec()))
    );
    // Permissions match the IP only.
    let o = h.peer_sends(relay, sa("198.51.100.2:9"), b"other port");
    assert_eq!(
        client::data_indication(&o.one().payload),
        Some((sa("198.51.100.2:9"), b"other port".to_vec()))
    );
    assert!(h.peer_sends(relay, peer2(), b"no permission").is_empty());
    let tid = h.tid();
    let o = h.send(&client::send_indication(tid, peer(), b"via send"));
    assert_eq!(
        o.one(),
        &Transmit {
            source: relay.0,
            destination: peer(),
            payload: b"via send".to_vec(),
            transport: xturn_control::Transport::Udp,
        }
    );
    let tid = h.tid();
    assert!(h
        .send(&client::send_indication(tid, peer2(), b"x"))
        .is_empty());

    // With a channel: ChannelData both ways.
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer()), None);
    let payload: Vec<u8> = (0..=255u8).collect();
    let o = h.send(&channel_data::encode(0x4000, &payload));
    assert_eq!(
        o.one(),
        &Transmit {
            source: relay.0,
            destination: peer(),
            payload: payload.clone(),
            transport: xturn_control::Transport::Udp,
        }
    );
    let o = h.peer_sends(relay, peer(), &payload);
    assert_eq!(
        o.one(),
        &Transmit {
            source: server_addr(),
            destination: client_addr(),
            payload: channel_data::encode(0x4000, &payload),
            transport: xturn_control::Transport::Udp,
        }
    );
    // The same IP from a port without a channel still gets a Data indication.
    let o = h.peer_sends(relay, sa("198.51.100.2:9"), b"x");
    assert!(client::data_indication(&o.one().payload).is_some());
    // Data to an unknown relayed address goes nowhere.
    assert!(h
        .peer_sends(RelayAddr(sa("198.51.100.1:1")), peer(), b"x")
        .is_empty());
}

#[test]
fn data_does_not_refresh_a_permission() {
    let (mut h, mut c, relay) = allocated(config(), 3600);
    assert_eq!(permission_code(&mut h, &mut c, peer()), None);
    for t in [100, 200, 299] {
        assert!(h.advance_to(secs(t)).is_empty());
        let o = h.peer_sends(relay, peer(), b"in");
        assert_eq!(
            client::data_indication(&o.one().payload),
            Some((peer(), b"in".to_vec()))
        );
        let tid = h.tid();
        assert_eq!(
            h.send(&client::send_indication(tid, peer(), b"out"))
                .one()
                .destination,
            peer()
        );
    }
    let o = h.advance_to(secs(300));
    assert_eq!(
        o.data,
        vec![Change::RemovePermission {
            relay,
            peer: peer().ip()
        }]
    );
    assert!(h.peer_sends(relay, peer(), b"in").is_empty());
    let tid = h.tid();
    assert!(h
        .send(&client::send_indication(tid, peer(), b"out"))
        .is_empty());
}

#[test]
fn a_channel_outlives_its_permission_but_relays_nothing() {
    let (mut h, mut c, relay) = allocated(config(), 3600);
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer()), None);
    assert_eq!(h.server.poll_timeout(), Some(h.at(secs(300))));
    let o = h.advance_to(secs(300));
    assert_eq!(
        o.data,
        vec![Change::RemovePermission {
            relay,
            peer: peer().ip()
        }]
    );
    let o = h.advance_to(secs(301));
    assert!(o.is_empty());
    // Still bound: the number cannot go to another peer, nor the peer to another number.
    assert_eq!(channel_code(&mut h, &mut c, 0x4000, peer2()), Some(400));
    assert_eq!(channel_code(&mut h, &mut c, 0x4001, peer()), Some(400));
    // Yet neither direction relays.
    assert!(h.send(&channel_data::encode(0x4000, b"up")).is_empty());
    assert!(h.peer_sends(relay, peer(), b"down").is_empty());
    // A new permission revives the channel's traffic.
    assert_eq!(permission_code(&mut h, &mut c, peer()), None);
    assert_eq!(
        h.send(&channel_data::encode(0x4000, b"up")).transmits.len(),
        1
    );
    assert_eq!(
        h.peer_sends(relay, peer(), b"down").one().payload,
        channel_data::encode(0x4000, b"down")
    );
    // The channel goes at 600 exactly (the new permission at 301 lives to 601).
    assert!(h.advance_to(Duration::from_millis(599_999)).is_empty());
    let o = h.advance_to(secs(600));
    assert_eq!(
        o.data,
        vec![Change::RemoveChannel {
            five_tuple: ft(client_addr()),
            relay,
            channel: xturn_control::ChannelNumber::new(0x4000).unwrap(),
            peer: PeerAddr(peer())
        }]
    );
    // Permission only now: Data indication.
    let o = h.peer_sends(relay, peer(), b"down");
    assert!(client::data_indication(&o.one().payload).is_some());
}

// ========================================================================= RFC 8489 extras

#[test]
fn sha256_password_algorithm_and_message_integrity_sha256() {
    let mut h = Harness::new(config());
    let mut c = alice();
    c.prefer_sha256 = true;
    // Look at the request the client sends after the 401.
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_eq!(c.answer(&out.one().payload), Answer::Retry);
    let tid = h.tid();
    let req = c.request(Method::Allocate, tid, transport_udp);
    assert!(has(&req, attr::MESSAGE_INTEGRITY_SHA256) && !has(&req, attr::MESSAGE_INTEGRITY));
    assert_eq!(
        attr::decode_password_algorithm(&attr_value(&req, attr::PASSWORD_ALGORITHM).unwrap()),
        Ok(attr::ALGORITHM_SHA256)
    );
    let out = h.send(&req);
    let resp = &out.one().payload;
    assert_success(resp, Method::Allocate);
    // The response uses the same integrity attribute and the SHA-256 key.
    assert!(has(resp, attr::MESSAGE_INTEGRITY_SHA256) && !has(resp, attr::MESSAGE_INTEGRITY));
    let key = long_term_key(PasswordAlgorithm::Sha256, "alice", REALM, "alice-pw");
    assert_eq!(
        parse(resp).verify_integrity(key.as_bytes()),
        Ok(IntegrityKind::Sha256)
    );
    assert_eq!(c.answer(resp), Answer::Success);
    // Subsequent requests keep working.
    let r = h.request(
        &mut c,
        client_addr(),
        Method::CreatePermission,
        &permission_body(vec![peer()]),
    );
    assert_success(r.last(), Method::CreatePermission);
}

#[test]
fn sha256_key_with_wrong_password_gets_401() {
    let mut h = Harness::new(config());
    let mut c = TurnClient::new("alice", "nope");
    c.prefer_sha256 = true;
    let r = h.allocate_with(&mut c, client_addr(), &transport_udp);
    assert_eq!(r.codes(), vec![Some(401), Some(401)]);
}

#[test]
fn userhash_identifies_the_user() {
    let mut h = Harness::new(config());
    let mut c = alice();
    c.use_userhash = true;
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_eq!(c.answer(&out.one().payload), Answer::Retry);
    let tid = h.tid();
    let req = c.request(Method::Allocate, tid, transport_udp);
    assert!(has(&req, attr::USERHASH) && !has(&req, attr::USERNAME));
    assert_eq!(
        attr_value(&req, attr::USERHASH),
        Some(auth::userhash("alice", REALM).to_vec())
    );
    let out = h.send(&req);
    assert_success(&out.one().payload, Method::Allocate);
    // The allocation belongs to alice: bob (by name) on the same 5-tuple gets 441.
    let r = h.request(
        &mut bob(),
        client_addr(),
        Method::Refresh,
        &lifetime_body(600),
    );
    assert_error(r.last(), Method::Refresh, 441);
    // An unknown user hash: 401.
    let mut m = TurnClient::new("mallory", "x");
    m.use_userhash = true;
    let r = h.allocate_with(&mut m, client_port(50001), &transport_udp);
    assert_eq!(r.codes(), vec![Some(401), Some(401)]);
}

#[test]
fn password_algorithms_bid_down_gets_400() {
    let mut h = Harness::new(config());
    let nonce = h.nonce_for(client_addr());
    let md5 = md5_key("alice", "alice-pw");
    let sha = long_term_key(PasswordAlgorithm::Sha256, "alice", REALM, "alice-pw");
    let offered = attr::encode_password_algorithms(&auth::OFFERED_ALGORITHMS);
    type Case = (Option<Vec<u8>>, Option<[u8; 4]>, Key, u16);
    let cases: Vec<Case> = vec![
        // A list that is not what the server offered (an attacker stripped SHA-256).
        (
            Some(attr::encode_password_algorithms(&[attr::ALGORITHM_MD5])),
            Some([0, 1, 0, 0]),
            md5.clone(),
            400,
        ),
        // The offered list reordered is not the offered list either.
        (
            Some(attr::encode_password_algorithms(&[
                attr::ALGORITHM_MD5,
                attr::ALGORITHM_SHA256,
            ])),
            Some([0, 2, 0, 0]),
            sha.clone(),
            400,
        ),
        // PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS, and the reverse.
        (None, Some([0, 2, 0, 0]), sha.clone(), 400),
        (Some(offered.clone()), None, md5.clone(), 400),
        // An algorithm that is not in the list.
        (Some(offered.clone()), Some([0, 3, 0, 0]), md5.clone(), 400),
        // Correct echo with SHA-256: accepted.
        (Some(offered.clone()), Some([0, 2, 0, 0]), sha.clone(), 0),
    ];
    for (i, (list, chosen, key, expect)) in cases.into_iter().enumerate() {
        let from = client_port(51000 + i as u16);
        let nonce = if expect == 0 {
            h.nonce_for(from)
        } else {
            nonce.clone()
        };
        let tid = h.tid();
        let req = build(Method::Allocate, tid, |b| {
            transport_udp(b);
            if let Some(l) = &list {
                b.attr(attr::PASSWORD_ALGORITHMS, l);
            }
            if let Some(c) = &chosen {
                b.attr(attr::PASSWORD_ALGORITHM, c);
            }
            sign(b, "alice", &nonce, &key);
        });
        let out = h.send_from(from, &req);
        let r = &out.one().payload;
        if expect == 0 {
            assert_success(r, Method::Allocate);
        } else {
            assert_eq!(error_code(r), Some(expect), "case {i}");
            assert!(out.binds.is_empty());
        }
    }
}

#[test]
fn turn_rest_api_with_rotated_secrets_and_static_users() {
    let mut creds = credentials();
    creds.add_secret("old-secret").unwrap();
    creds.add_secret("new-secret").unwrap();
    let cfg = Config::new(creds, relay_ip(), filter_with(&[], &[]));
    let mut h = Harness::new(cfg);
    let user = format!("{}:alice", UNIX0 + 3600);
    for (i, secret) in ["old-secret", "new-secret"].into_iter().enumerate() {
        let pw = auth::rest_password(secret.as_bytes(), &user);
        let mut c = TurnClient::new(&user, &pw);
        h.allocate(&mut c, client_port(52000 + i as u16));
    }
    // A secret the server does not have.
    let pw = auth::rest_password(b"unknown-secret", &user);
    let r = h.allocate_with(
        &mut TurnClient::new(&user, &pw),
        client_port(52010),
        &transport_udp,
    );
    assert_eq!(r.answer, Answer::Error(401));
    // Expired user names are refused even with the right password.
    let expired = format!("{}:alice", UNIX0 - 1);
    let pw = auth::rest_password(b"new-secret", &expired);
    let r = h.allocate_with(
        &mut TurnClient::new(&expired, &pw),
        client_port(52011),
        &transport_udp,
    );
    assert_eq!(r.answer, Answer::Error(401));
    // Static users work on the same server.
    h.allocate(&mut alice(), client_port(52012));
    h.allocate(&mut bob(), client_port(52013));
    assert_eq!(h.server.allocation_count(), 4);

    // A REST user name stops working when its time is up.
    let soon = format!("{}:carol", UNIX0 + 100);
    let pw = auth::rest_password(b"old-secret", &soon);
    let mut c = TurnClient::new(&soon, &pw);
    let from = client_port(52020);
    let r = h.allocate_with(&mut c, from, &allocate_lifetime_body(3600));
    assert_eq!(r.answer, Answer::Success);
    h.advance_to(secs(99));
    let r = h.request(&mut c, from, Method::Refresh, &lifetime_body(3600));
    assert_success(r.last(), Method::Refresh);
    h.advance_to(secs(100));
    let r = h.request(&mut c, from, Method::Refresh, &lifetime_body(3600));
    assert_eq!(r.code(), Some(401));
}

/// A driver that calls `handle_timeout` late must not see a dead allocation revived: a
/// request arriving after the lifetime finds no allocation (437), and its removal is
/// emitted right then.
#[test]
fn expired_allocation_is_gone_even_before_handle_timeout() {
    let mut h = Harness::new(config());
    let mut c = alice();
    let relay = h.allocate(&mut c, client_addr());
    // Jump past the lifetime without firing any timer.
    h.now = h.at(secs(601));
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(600));
    assert_eq!(r.answer, Answer::Error(437));
    assert!(r
        .out
        .data
        .iter()
        .any(|o| matches!(o, Change::RemoveAllocation { relay: rl, .. } if *rl == relay)));
    // And a new Allocate on the same 5-tuple is possible at once.
    h.allocate(&mut c, client_addr());
}

// ------------------------------------------------------------------------- drain

fn alternate_server(r: &[u8]) -> Option<SocketAddr> {
    attr::decode_address(&attr_value(r, attr::ALTERNATE_SERVER)?).ok()
}

#[test]
fn draining_sends_new_allocations_to_an_alternate_of_their_family_and_keeps_the_rest() {
    let mut cfg = config();
    cfg.alternate_servers = vec![
        sa("[2001:db8::9]:3478"),
        sa("192.0.2.9:3478"),
        sa("192.0.2.10:3479"),
    ];
    let (mut h, mut c, relay) = allocated(cfg, 600);
    h.server.set_draining(true);
    assert!(h.server.draining());

    // A new allocation from another client: 300 with an IPv4 alternate (the client's
    // family), authenticated, and nothing bound.
    let mut seen = Vec::new();
    for port in [40_001, 40_002] {
        let r = h.allocate_with(&mut bob(), client_port(port), &transport_udp);
        assert_error(r.last(), Method::Allocate, 300);
        assert!(
            r.out.binds.is_empty() && r.out.data.is_empty(),
            "{:?}",
            r.out
        );
        assert!(parse(r.last())
            .verify_integrity(md5_key("bob", "bob-pw").as_bytes())
            .is_ok());
        let alt = alternate_server(r.last()).expect("ALTERNATE-SERVER");
        assert!(alt.is_ipv4(), "{alt}");
        seen.push(alt);
    }
    // In turn.
    seen.sort();
    assert_eq!(seen, vec![sa("192.0.2.9:3478"), sa("192.0.2.10:3479")]);
    assert_eq!(h.server.allocation_count(), 1);

    // The existing allocation lives on: Refresh, ChannelBind, data.
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(600));
    assert_success(r.last(), Method::Refresh);
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    let out = h.send(&channel_data::encode(0x4000, b"still relayed"));
    assert_eq!(out.one().destination, peer());
    assert_eq!(out.one().source, relay.0);

    // And ends as usual.
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(0));
    assert_success(r.last(), Method::Refresh);
    assert_eq!(h.server.allocation_count() + h.server.pending_count(), 0);

    // Drain off: allocations are taken again.
    h.server.set_draining(false);
    h.allocate(&mut bob(), client_port(40_003));
}

#[test]
fn draining_without_an_alternate_answers_508_but_not_to_a_retransmission() {
    let mut h = Harness::new(config());
    let mut c = alice();
    let tid = h.tid();
    let out = h.send(&c.request(Method::Allocate, tid, transport_udp));
    assert_eq!(c.answer(&out.one().payload), Answer::Retry);
    let tid = h.tid();
    let req = c.request(Method::Allocate, tid, transport_udp);
    assert_success(&h.send(&req).one().payload, Method::Allocate);
    h.server.set_draining(true);
    // The retransmission of the request that made the allocation still gets its success.
    assert_success(&h.send(&req).one().payload, Method::Allocate);
    let r = h.allocate_with(&mut bob(), client_port(40_001), &transport_udp);
    assert_error(r.last(), Method::Allocate, 508);
    assert!(alternate_server(r.last()).is_none());
    // A request without credentials is challenged as before: the drain shows only to
    // authenticated clients.
    let tid = h.tid();
    let out = h.send_from(
        client_port(40_002),
        &build(Method::Allocate, tid, transport_udp),
    );
    assert_error(&out.one().payload, Method::Allocate, 401);
}

#[test]
fn alternate_above_sheds_allocations_beyond_the_threshold_only() {
    let mut cfg = config();
    cfg.alternate_servers = vec![sa("192.0.2.9:3478")];
    cfg.alternate_above = 2;
    let mut h = Harness::new(cfg);
    h.allocate(&mut alice(), client_port(40_001));
    h.allocate(&mut alice(), client_port(40_002));
    let r = h.allocate_with(&mut alice(), client_port(40_003), &transport_udp);
    assert_error(r.last(), Method::Allocate, 300);
    assert_eq!(alternate_server(r.last()), Some(sa("192.0.2.9:3478")));
    assert_eq!(h.server.allocation_count(), 2);
    // An IPv6 client has no alternate of its family: served while not draining.
    let mut cfg = config();
    cfg.alternate_servers = vec![sa("192.0.2.9:3478")];
    cfg.alternate_above = 1;
    let mut h = Harness::new(cfg);
    h.allocate(&mut alice(), client_port(40_001));
    h.allocate(&mut alice(), sa("[2001:db8::2]:40000"));
    assert_eq!(h.server.allocation_count(), 2);
}

// ------------------------------------------------------------------------- reload

#[test]
fn reload_changes_credentials_and_limits_but_not_allocations_or_bound_state() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    let before = h.server.state_size();

    // bob removed, carol added, a lower user quota, another relay address and bandwidth
    // limit (both kept: sockets are bound, forwarders share the buckets).
    let mut creds = xturn_control::auth::Credentials::new(REALM).unwrap();
    creds.add_user("alice", "alice-pw").unwrap();
    creds.add_user("carol", "carol-pw").unwrap();
    let mut cfg = Config::new(creds, ip("198.51.100.99"), filter_with(&[], &[]));
    cfg.user_quota = 1;
    cfg.max_bps = 1000;
    let kept = h.server.reload(h.now, cfg);
    assert_eq!(kept, vec!["relay-ip", "max-bps"]);
    assert_eq!(h.server.config().relay_ipv4, Some(relay_ip()));
    assert_eq!(h.server.config().max_bps, 0);
    assert_eq!(
        h.server.state_size(),
        before,
        "nothing of the allocation changed"
    );

    // The allocation relays and refreshes as before.
    let out = h.send(&channel_data::encode(0x4000, b"after reload"));
    assert_eq!((out.one().source, out.one().destination), (relay.0, peer()));
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(600));
    assert_success(r.last(), Method::Refresh);
    // The new quota holds for alice's next allocation.
    let r = h.allocate_with(&mut alice(), client_port(40_001), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    // carol is a user now, bob is not.
    let carol = h.allocate(
        &mut TurnClient::new("carol", "carol-pw"),
        client_port(40_002),
    );
    assert_eq!(carol.0.ip(), relay_ip());
    let r = h.allocate_with(&mut bob(), client_port(40_003), &transport_udp);
    assert_eq!(r.codes().last(), Some(&Some(401)));
}

// ========================================================================= counts for metrics

#[test]
fn stats_count_requests_responses_auth_failures_and_quotas_exactly() {
    use xturn_control::server::{AuthFailure, Quota};
    let mut cfg = config();
    cfg.user_quota = 1;
    let mut h = Harness::new(cfg);
    // Alice: 401 (no credentials), then success; then a permission.
    let mut a = alice();
    h.allocate(&mut a, client_port(50000));
    let r = h.request(
        &mut a,
        client_port(50000),
        Method::CreatePermission,
        &permission_body(vec![peer()]),
    );
    assert_success(r.last(), Method::CreatePermission);
    // A second allocation of alice: 401, then 486 (user quota).
    let r = h.allocate_with(&mut alice(), client_port(50001), &transport_udp);
    assert_error(r.last(), Method::Allocate, 486);
    // A wrong password and an unknown user: 401 each time (no credentials, then failure).
    for mut c in [
        TurnClient::new("bob", "wrong"),
        TurnClient::new("mallory", "x"),
    ] {
        let r = h.allocate_with(&mut c, client_port(50002), &transport_udp);
        assert_eq!(r.codes(), vec![Some(401), Some(401)]);
    }
    let s = h.server.stats();
    assert_eq!(s.requests.get("allocate"), Some(&8));
    assert_eq!(s.requests.get("create_permission"), Some(&1));
    assert_eq!(s.responses.get(&("allocate", 200)), Some(&1));
    assert_eq!(s.responses.get(&("allocate", 401)), Some(&6));
    assert_eq!(s.responses.get(&("allocate", 486)), Some(&1));
    assert_eq!(s.responses.get(&("create_permission", 200)), Some(&1));
    assert_eq!(s.responses.values().sum::<u64>(), 9);
    assert_eq!(s.auth_failures.get(&AuthFailure::NoCredentials), Some(&4));
    assert_eq!(s.auth_failures.get(&AuthFailure::BadIntegrity), Some(&1));
    assert_eq!(s.auth_failures.get(&AuthFailure::UnknownUser), Some(&1));
    assert_eq!(s.auth_failures.len(), 3);
    assert_eq!(s.quota_rejections.get(&Quota::User), Some(&1));
    assert_eq!(s.quota_rejections.len(), 1);
    assert_eq!((s.allocations, s.permissions, s.channels), (1, 1, 0));
    assert_eq!(s.unauth_shed, 0);
}

// ========================================================================= admin

#[test]
fn sessions_list_allocations_and_kill_deletes_one_or_a_users_all_at_once() {
    let (mut h, mut c, relay) = allocated(config(), 600);
    let r = h.request(
        &mut c,
        client_addr(),
        Method::ChannelBind,
        &channel_body(0x4000, peer()),
    );
    assert_success(r.last(), Method::ChannelBind);
    h.advance_to(secs(30));
    let mut b = bob();
    let bob_relay = h.allocate(&mut b, client_port(50001));
    let mut c2 = alice();
    let alice2 = h.allocate(&mut c2, client_port(50002));
    h.advance_to(secs(40));

    let now = h.now;
    let s = h.server.sessions(now);
    assert_eq!(s.len(), 3);
    let a = s.iter().find(|s| s.relay == relay.0).unwrap();
    assert_eq!(
        (a.user.as_str(), a.client, a.age, a.expires_in),
        ("alice", client_addr(), secs(40), secs(560))
    );
    assert_eq!((a.permissions, a.channels), (1, 1));
    let bs = s.iter().find(|s| s.relay == bob_relay.0).unwrap();
    assert_eq!((bs.user.as_str(), bs.age), ("bob", secs(10)));

    // One allocation by its relayed address: the same outputs as a Refresh with LIFETIME 0.
    let killed = h
        .server
        .kill(now, relay.0)
        .expect("alice's first allocation");
    assert_eq!(killed.relay, relay.0);
    let out = h.drain();
    assert_eq!(
        out.data,
        vec![
            Change::RemoveChannel {
                five_tuple: ft(client_addr()),
                relay,
                channel: xturn_control::ChannelNumber::new(0x4000).unwrap(),
                peer: PeerAddr(peer())
            },
            Change::RemovePermission {
                relay,
                peer: peer().ip()
            },
            Change::RemoveAllocation {
                five_tuple: ft(client_addr()),
                relay
            },
        ]
    );
    assert!(out.transmits.is_empty());
    assert!(h.server.kill(now, relay.0).is_none(), "killed twice");
    let r = h.request(&mut c, client_addr(), Method::Refresh, &lifetime_body(600));
    assert_error(r.last(), Method::Refresh, 437);

    // Every allocation of a user, the others untouched.
    let killed = h.server.kill_user(now, "alice");
    assert_eq!(
        killed.iter().map(|s| s.relay).collect::<Vec<_>>(),
        vec![alice2.0]
    );
    assert!(h.server.kill_user(now, "alice").is_empty());
    assert_eq!(
        h.server
            .sessions(now)
            .iter()
            .map(|s| s.relay)
            .collect::<Vec<_>>(),
        vec![bob_relay.0]
    );
    // Its port and quota are free again: alice allocates anew; nothing fires later.
    h.drain();
    h.allocate(&mut c2, client_port(50003));
    assert!(h.advance_to(secs(500)).data.is_empty());
}

#[test]
fn behind_a_one_to_one_nat_relayed_addresses_are_public_and_hairpins_stay_inside() {
    let public = ip("203.0.113.10");
    let mut cfg = config();
    cfg.external = xturn_control::ExternalIps::new(vec![(public, relay_ip())]);
    let mut h = Harness::new(cfg);
    let (a_addr, b_addr) = (client_port(50000), client_port(50001));
    let (mut a, mut b) = (alice(), bob());
    // XOR-RELAYED-ADDRESS carries the public address; the socket is the private one.
    let r = h.allocate_with(&mut a, a_addr, &transport_udp);
    assert_eq!(r.answer, Answer::Success);
    let shown_a = client::xor_address(r.last(), attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(shown_a.ip(), public);
    assert_eq!(r.out.binds.len(), 1);
    let relay_a = r.out.binds[0];
    assert_eq!(relay_a.0, SocketAddr::new(relay_ip(), shown_a.port()));
    let shown_b = SocketAddr::new(public, h.allocate(&mut b, b_addr).0.port());
    let relay_b = RelayAddr(SocketAddr::new(relay_ip(), shown_b.port()));

    // Each names the other by its public relayed address: permission and channel are for
    // the private one (the data plane and the XDP maps see private addresses).
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4000, shown_b),
    );
    assert_success(r.last(), Method::ChannelBind);
    assert!(r.out.data.contains(&Change::InstallPermission {
        relay: relay_a,
        peer: relay_ip(),
        expires: h.now + secs(300)
    }));
    let r = h.request(
        &mut b,
        b_addr,
        Method::CreatePermission,
        &permission_body(vec![shown_a]),
    );
    assert_success(r.last(), Method::CreatePermission);
    // Another port of the public address is another port of the host: 403.
    let other = (49152..=65535u16)
        .find(|p| *p != shown_a.port() && *p != shown_b.port())
        .unwrap();
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4001, SocketAddr::new(public, other)),
    );
    assert_error(r.last(), Method::ChannelBind, 403);
    // The listening port at the public address too.
    let r = h.request(
        &mut a,
        a_addr,
        Method::ChannelBind,
        &channel_body(0x4001, SocketAddr::new(public, server_addr().port())),
    );
    assert_error(r.last(), Method::ChannelBind, 403);

    // A -> B: from relay A straight to relay B (never to the NAT); B's client is told the
    // peer is A's public relayed address.
    let o = h.send_from(a_addr, &channel_data::encode(0x4000, b"ping"));
    assert_eq!(
        o.one(),
        &Transmit {
            source: relay_a.0,
            destination: relay_b.0,
            payload: b"ping".to_vec(),
            transport: xturn_control::Transport::Udp,
        }
    );
    let o = h.peer_sends(relay_b, relay_a.0, b"ping");
    assert_eq!(o.one().destination, b_addr);
    assert_eq!(
        client::data_indication(&o.one().payload),
        Some((shown_a, b"ping".to_vec()))
    );
    // B -> A by a Send indication to A's public address.
    let tid = h.tid();
    let o = h.send_from(b_addr, &client::send_indication(tid, shown_a, b"pong"));
    assert_eq!(o.one().destination, relay_a.0);
    let o = h.peer_sends(relay_a, relay_b.0, b"pong");
    assert_eq!(o.one().payload, channel_data::encode(0x4000, b"pong"));
    // An outside peer is shown as it is.
    let r = h.request(
        &mut b,
        b_addr,
        Method::CreatePermission,
        &permission_body(vec![peer()]),
    );
    assert_success(r.last(), Method::CreatePermission);
    let o = h.peer_sends(relay_b, peer(), b"hi");
    assert_eq!(
        client::data_indication(&o.one().payload),
        Some((peer(), b"hi".to_vec()))
    );
}
