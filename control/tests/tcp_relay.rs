//! RFC 6062 TCP allocations in the sans-IO server: Allocate with REQUESTED-TRANSPORT
//! TCP, Connect (answered when the driver's attempt ends), ConnectionAttempt for a peer
//! that connects in, ConnectionBind on a new connection, and every way a connection
//! ends: bind deadline, connect deadline, a closed side, the allocation's end.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xturn_control::client::{self, Answer, TurnClient};
use xturn_control::server::{BIND_DEADLINE, CONNECT_DEADLINE};
use xturn_control::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use xturn_control::{
    ClientAddr, ConnectionId, FiveTuple, Output, RelayAddr, Server, StreamVerdict, TcpRelay,
    Transmit, Transport,
};

struct Lab {
    server: Server,
    now: Instant,
    next_tid: u32,
    /// TCP relay operations seen, in order.
    ops: Vec<TcpRelay>,
    /// Listeners bound (TCP transport).
    tcp_binds: Vec<RelayAddr>,
}

fn conn(port: u16) -> FiveTuple {
    FiveTuple::tcp(ClientAddr(client_port(port)), server_addr())
}

fn attr_u32(bytes: &[u8], typ: u16) -> Option<u32> {
    let m = Message::new_checked(bytes).ok()?;
    let a = m.attribute(typ)?;
    Some(u32::from_be_bytes(a.value.try_into().ok()?))
}

impl Lab {
    fn new() -> Lab {
        let now = Instant::now();
        Lab {
            server: server(config(), now, UNIX0, 7),
            now,
            next_tid: 1,
            ops: Vec::new(),
            tcp_binds: Vec::new(),
        }
    }

    fn drain(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Transmit(t) => out.push(t),
                Output::BindRelay {
                    token,
                    relay,
                    transport,
                    ..
                } => {
                    if transport == Transport::Tcp {
                        self.tcp_binds.push(relay);
                    }
                    self.server.relay_bound(self.now, token, true);
                }
                Output::DataPlane(c) => {
                    assert!(
                        !self.tcp_binds.contains(&c.relay()),
                        "a TCP allocation has no data-plane state: {c:?}"
                    );
                }
                Output::Tcp(t) => self.ops.push(t),
            }
        }
        out
    }

    fn stream(&mut self, ft: FiveTuple, bytes: &[u8]) -> (StreamVerdict, Vec<Transmit>) {
        let v = self.server.handle_stream_message(self.now, ft, bytes);
        (v, self.drain())
    }

    fn tid(&mut self) -> TransactionId {
        let mut t = [0x6au8; 12];
        t[8..].copy_from_slice(&self.next_tid.to_be_bytes());
        self.next_tid += 1;
        TransactionId(t)
    }

    /// A request on `ft`, retried after the 401 that teaches the nonce; the last
    /// answer's bytes (None: no answer yet), the verdict and everything sent.
    fn request(
        &mut self,
        c: &mut TurnClient,
        ft: FiveTuple,
        method: Method,
        body: &dyn Fn(&mut MessageBuilder),
    ) -> (Option<Vec<u8>>, StreamVerdict, Vec<Transmit>) {
        for _ in 0..3 {
            let tid = self.tid();
            let req = c.request(method, tid, |b| body(b));
            let (v, out) = self.stream(ft, &req);
            let resp = out
                .iter()
                .find(|t| {
                    t.destination == ft.client.0
                        && Message::new_checked(&t.payload[..])
                            .is_ok_and(|m| m.transaction_id() == tid)
                })
                .map(|t| t.payload.clone());
            match resp {
                Some(r) if c.answer(&r) == Answer::Retry => continue,
                r => return (r, v, out),
            }
        }
        panic!("{method:?}: still retrying");
    }

    fn allocate_tcp(&mut self, c: &mut TurnClient, ft: FiveTuple) -> RelayAddr {
        let (r, _, _) = self.request(c, ft, Method::Allocate, &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        });
        let r = r.expect("an answer");
        assert_eq!(
            c.answer(&r),
            Answer::Success,
            "{:?}",
            client::error_code(&r)
        );
        let relay = RelayAddr(client::xor_address(&r, attr::XOR_RELAYED_ADDRESS).unwrap());
        assert_eq!(self.tcp_binds.last(), Some(&relay), "a TCP listener bound");
        relay
    }

    fn permit(&mut self, c: &mut TurnClient, ft: FiveTuple, peer: SocketAddr) {
        let (r, _, _) = self.request(
            c,
            ft,
            Method::CreatePermission,
            &client::permission_body(vec![peer]),
        );
        assert_eq!(c.answer(&r.unwrap()), Answer::Success);
    }

    fn later(&mut self, d: Duration) -> Vec<Transmit> {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.drain()
    }
}

fn connect_body(peer: SocketAddr) -> impl Fn(&mut MessageBuilder) {
    move |b| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, peer);
    }
}

fn bind_body(id: u32) -> impl Fn(&mut MessageBuilder) {
    move |b| {
        b.u32_attr(attr::CONNECTION_ID, id);
    }
}

#[test]
fn connect_then_connection_bind_joins_a_new_connection() {
    let mut lab = Lab::new();
    let mut c = TurnClient::new("alice", "alice-pw");
    let control = conn(40000);
    let relay = lab.allocate_tcp(&mut c, control);

    let (r, v, _) = lab.request(&mut c, control, Method::Connect, &connect_body(peer()));
    assert!(r.is_none(), "answered when the attempt ends");
    assert_eq!(v, StreamVerdict::Keep);
    let Some(TcpRelay::Connect {
        id,
        relay: from,
        peer: to,
    }) = lab.ops.pop()
    else {
        panic!("{:?}", lab.ops);
    };
    assert_eq!((from, to), (relay, peer()));
    // A second Connect to the same peer while the first is in progress: 446.
    let (r, _, _) = lab.request(&mut c, control, Method::Connect, &connect_body(peer()));
    assert_eq!(client::error_code(&r.unwrap()), Some(446));

    lab.server.peer_connected(lab.now, id, true);
    let out = lab.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].destination, client_port(40000));
    assert_eq!(out[0].transport, Transport::Tcp);
    let m = Message::new_checked(&out[0].payload[..]).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Connect, Class::Success));
    assert_eq!(attr_u32(&out[0].payload, attr::CONNECTION_ID), Some(id.0));

    // ConnectionBind on the control connection itself: 400.
    let (r, v, _) = lab.request(&mut c, control, Method::ConnectionBind, &bind_body(id.0));
    assert_eq!(client::error_code(&r.unwrap()), Some(400));
    assert_eq!(v, StreamVerdict::Keep);
    // Another user's data connection cannot take alice's peer connection: 441.
    let mut bob = TurnClient::new("bob", "bob-pw");
    let (r, v, _) = lab.request(
        &mut bob,
        conn(40002),
        Method::ConnectionBind,
        &bind_body(id.0),
    );
    assert_eq!(client::error_code(&r.unwrap()), Some(441));
    assert_eq!(v, StreamVerdict::Keep);
    // An unknown id: 400.
    let data = conn(40001);
    let (r, _, _) = lab.request(&mut c, data, Method::ConnectionBind, &bind_body(id.0 ^ 1));
    assert_eq!(client::error_code(&r.unwrap()), Some(400));
    // The right one: success, and the connection is now data.
    let (r, v, _) = lab.request(&mut c, data, Method::ConnectionBind, &bind_body(id.0));
    assert_eq!(c.answer(&r.unwrap()), Answer::Success);
    assert_eq!(v, StreamVerdict::Data(id));
    // A bound connection has no bind deadline.
    assert!(lab.later(BIND_DEADLINE + Duration::from_secs(1)).is_empty());
    assert!(lab.ops.is_empty(), "{:?}", lab.ops);

    // The control connection closes: the allocation, its connections and its listener go.
    lab.server.connection_closed(control);
    lab.drain();
    assert_eq!(
        lab.ops,
        vec![TcpRelay::Close { id }, TcpRelay::CloseListener { relay }]
    );
    assert_eq!(lab.server.tcp_connection_count(), 0);
    assert_eq!(lab.server.allocation_count(), 0);
}

#[test]
fn a_failed_or_late_connect_gets_447_and_frees_the_peer() {
    let mut lab = Lab::new();
    let mut c = TurnClient::new("alice", "alice-pw");
    let control = conn(40010);
    lab.allocate_tcp(&mut c, control);
    lab.request(&mut c, control, Method::Connect, &connect_body(peer()));
    let Some(TcpRelay::Connect { id, .. }) = lab.ops.pop() else {
        panic!()
    };
    lab.server.peer_connected(lab.now, id, false);
    let out = lab.drain();
    assert_eq!(client::error_code(&out[0].payload), Some(447));
    assert!(
        lab.ops.is_empty(),
        "the driver closed its own failed socket"
    );

    // The same peer again (the slot is free), and this time no answer from the driver.
    lab.request(&mut c, control, Method::Connect, &connect_body(peer()));
    let Some(TcpRelay::Connect { id, .. }) = lab.ops.pop() else {
        panic!()
    };
    assert!(lab
        .later(CONNECT_DEADLINE - Duration::from_millis(1))
        .is_empty());
    let out = lab.later(Duration::from_millis(1));
    assert_eq!(client::error_code(&out[0].payload), Some(447));
    assert_eq!(lab.ops, vec![TcpRelay::Close { id }]);
    // A late success report changes nothing.
    lab.server.peer_connected(lab.now, id, true);
    assert!(lab.drain().is_empty());
    assert_eq!(lab.server.tcp_connection_count(), 0);
}

#[test]
fn incoming_connections_need_a_permission_and_a_bind_in_30_s() {
    let mut lab = Lab::new();
    let mut c = TurnClient::new("alice", "alice-pw");
    let control = conn(40020);
    let relay = lab.allocate_tcp(&mut c, control);
    // No permission: refused.
    assert_eq!(
        lab.server.peer_connection_incoming(lab.now, relay, peer()),
        None
    );
    lab.permit(&mut c, control, peer());
    let id = lab
        .server
        .peer_connection_incoming(lab.now, relay, peer())
        .expect("permitted");
    let out = lab.drain();
    assert_eq!(out.len(), 1);
    let m = Message::new_checked(&out[0].payload[..]).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    assert_eq!(attr_u32(&out[0].payload, attr::CONNECTION_ID), Some(id.0));
    assert_eq!(
        client::xor_address(&out[0].payload, attr::XOR_PEER_ADDRESS),
        Some(peer())
    );
    assert_eq!(out[0].destination, client_port(40020));
    // Another relayed address (none there) or another peer: refused.
    let other = RelayAddr(SocketAddr::new(relay_ip(), relay.0.port() ^ 1));
    assert_eq!(
        lab.server.peer_connection_incoming(lab.now, other, peer()),
        None
    );
    assert_eq!(
        lab.server.peer_connection_incoming(lab.now, relay, peer2()),
        None
    );
    // Not bound within 30 s: closed.
    assert!(lab
        .later(BIND_DEADLINE - Duration::from_millis(1))
        .is_empty());
    lab.later(Duration::from_millis(1));
    assert_eq!(lab.ops, vec![TcpRelay::Close { id }]);
    let (r, _, _) = lab.request(
        &mut c,
        conn(40021),
        Method::ConnectionBind,
        &bind_body(id.0),
    );
    assert_eq!(client::error_code(&r.unwrap()), Some(400));

    // Bound in time, then the peer side closes: the server forgets it.
    let id = lab
        .server
        .peer_connection_incoming(lab.now, relay, SocketAddr::new(peer().ip(), 7001))
        .unwrap();
    lab.drain();
    let (_, v, _) = lab.request(
        &mut c,
        conn(40022),
        Method::ConnectionBind,
        &bind_body(id.0),
    );
    assert_eq!(v, StreamVerdict::Data(id));
    lab.server.tcp_connection_closed(id);
    assert_eq!(lab.server.tcp_connection_count(), 0);
}

#[test]
fn tcp_allocation_rules() {
    let mut lab = Lab::new();
    let mut c = TurnClient::new("alice", "alice-pw");
    // A TCP allocation asked over UDP: 400.
    let tid = lab.tid();
    lab.server.handle_input(
        lab.now,
        client_port(40030),
        server_addr(),
        &c.request(Method::Allocate, tid, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        }),
    );
    let out = lab.drain();
    assert_eq!(c.answer(&out[0].payload), Answer::Retry);
    let tid = lab.tid();
    lab.server.handle_input(
        lab.now,
        client_port(40030),
        server_addr(),
        &c.request(Method::Allocate, tid, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        }),
    );
    let out = lab.drain();
    assert_eq!(client::error_code(&out[0].payload), Some(400));
    assert_eq!(lab.server.allocation_count(), 0);

    let control = conn(40031);
    let relay = lab.allocate_tcp(&mut c, control);
    // No channels on a TCP allocation.
    let (r, _, _) = lab.request(
        &mut c,
        control,
        Method::ChannelBind,
        &client::channel_bind_body(0x4000, peer()),
    );
    assert_eq!(client::error_code(&r.unwrap()), Some(400));
    // Connect to a denied peer: 403; to the other family: 443.
    let (r, _, _) = lab.request(
        &mut c,
        control,
        Method::Connect,
        &connect_body(sa("10.0.0.1:80")),
    );
    assert_eq!(client::error_code(&r.unwrap()), Some(403));
    let (r, _, _) = lab.request(
        &mut c,
        control,
        Method::Connect,
        &connect_body(sa("[2001:db8::2]:80")),
    );
    assert_eq!(client::error_code(&r.unwrap()), Some(443));
    // Connect on a UDP allocation: 400.
    let udp = FiveTuple::tcp(ClientAddr(client_port(40032)), server_addr());
    let (r, _, _) = lab.request(&mut c, udp, Method::Allocate, &|b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(c.answer(&r.unwrap()), Answer::Success);
    let (r, _, _) = lab.request(&mut c, udp, Method::Connect, &connect_body(peer()));
    assert_eq!(client::error_code(&r.unwrap()), Some(400));
    // Connections per allocation are bounded (max_permissions, 128 by default).
    let mut ids = Vec::new();
    for port in 0..128u16 {
        let p = SocketAddr::new(peer().ip(), 10000 + port);
        lab.request(&mut c, control, Method::Connect, &connect_body(p));
        match lab.ops.pop() {
            Some(TcpRelay::Connect { id, .. }) => ids.push(id),
            o => panic!("{o:?}"),
        }
    }
    let (r, _, _) = lab.request(&mut c, control, Method::Connect, &connect_body(peer2()));
    assert_eq!(client::error_code(&r.unwrap()), Some(508));
    // A refresh to 0 ends it: every connection, then the listener.
    let (r, _, _) = lab.request(
        &mut c,
        control,
        Method::Refresh,
        &client::refresh_body(Duration::ZERO),
    );
    assert_eq!(c.answer(&r.unwrap()), Answer::Success);
    let closed: Vec<ConnectionId> = lab
        .ops
        .iter()
        .filter_map(|o| match o {
            TcpRelay::Close { id } => Some(*id),
            _ => None,
        })
        .collect();
    ids.sort();
    assert_eq!(closed, ids);
    assert_eq!(lab.ops.last(), Some(&TcpRelay::CloseListener { relay }));
    assert_eq!(lab.server.tcp_connection_count(), 0);
}

#[test]
fn a_data_connection_uses_the_control_connections_nonce() {
    // RFC 6062 clients sign ConnectionBind on a new connection (a new port) with the
    // nonce the control connection learnt: over TCP a nonce is bound to the client's IP.
    let mut lab = Lab::new();
    let mut c = TurnClient::new("alice", "alice-pw");
    let control = conn(40040);
    let relay = lab.allocate_tcp(&mut c, control);
    lab.permit(&mut c, control, peer());
    let id = lab
        .server
        .peer_connection_incoming(lab.now, relay, peer())
        .unwrap();
    lab.drain();
    let tid = lab.tid();
    let req = c.request(Method::ConnectionBind, tid, bind_body(id.0));
    let (v, out) = lab.stream(conn(40041), &req);
    assert_eq!(out.len(), 1);
    assert_eq!(c.answer(&out[0].payload), Answer::Success, "no 438 first");
    assert_eq!(v, StreamVerdict::Data(id));
    // Over UDP a nonce stays bound to the transport address: another port gets 438.
    let tid = lab.tid();
    let req = c.request(Method::Allocate, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    lab.server
        .handle_input(lab.now, client_port(40042), server_addr(), &req);
    let out = lab.drain();
    assert_eq!(client::error_code(&out[0].payload), Some(438));
}

/// What the driver may see happen to a TCP allocation, in any order.
#[derive(Debug, Clone)]
enum Op {
    Connect(u8),
    Connected(prop::sample::Index, bool),
    Incoming(u8),
    Permit(u8),
    Bind(prop::sample::Index, u8),
    Closed(prop::sample::Index),
    Later(u8),
    Refresh(bool),
    ControlClosed,
}

use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Connect),
        (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, ok)| Op::Connected(i, ok)),
        (0u8..4).prop_map(Op::Incoming),
        (0u8..4).prop_map(Op::Permit),
        (any::<prop::sample::Index>(), 0u8..3).prop_map(|(i, p)| Op::Bind(i, p)),
        any::<prop::sample::Index>().prop_map(Op::Closed),
        (0u8..45).prop_map(Op::Later),
        any::<bool>().prop_map(Op::Refresh),
        Just(Op::ControlClosed),
    ]
}

fn lab_peer(i: u8) -> SocketAddr {
    SocketAddr::new(peer().ip(), 7000 + i as u16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of requests, driver reports and deadlines: every connection the
    /// driver holds is eventually closed by a `Close` or reported closed by the driver,
    /// and once the allocation is gone the server holds no state at all.
    #[test]
    fn tcp_allocation_sequences_leak_nothing(ops in prop::collection::vec(op(), 1..40)) {
        let mut lab = Lab::new();
        let mut c = TurnClient::new("alice", "alice-pw");
        let control = conn(41000);
        let mut relay = Some(lab.allocate_tcp(&mut c, control));
        // The driver's side: connections it holds (connecting, or open), by id.
        let mut connecting: Vec<ConnectionId> = Vec::new();
        let mut open: Vec<ConnectionId> = Vec::new();
        let take = |ops: &mut Vec<TcpRelay>, connecting: &mut Vec<ConnectionId>, open: &mut Vec<ConnectionId>| {
            for o in ops.drain(..) {
                match o {
                    TcpRelay::Connect { id, .. } => connecting.push(id),
                    TcpRelay::Close { id } => {
                        connecting.retain(|x| *x != id);
                        open.retain(|x| *x != id);
                    }
                    TcpRelay::CloseListener { .. } => {}
                }
            }
        };
        for op in ops {
            match op {
                Op::Connect(p) if relay.is_some() => {
                    lab.request(&mut c, control, Method::Connect, &connect_body(lab_peer(p)));
                }
                Op::Connected(i, ok) if !connecting.is_empty() => {
                    let id = connecting.remove(i.index(connecting.len()));
                    lab.server.peer_connected(lab.now, id, ok);
                    lab.drain();
                    if ok {
                        open.push(id);
                    }
                }
                Op::Incoming(p) => {
                    if let Some(r) = relay {
                        if let Some(id) = lab.server.peer_connection_incoming(lab.now, r, lab_peer(p)) {
                            open.push(id);
                        }
                        lab.drain();
                    }
                }
                Op::Permit(p) if relay.is_some() => {
                    lab.request(&mut c, control, Method::CreatePermission,
                        &client::permission_body(vec![lab_peer(p)]));
                }
                Op::Bind(i, port) if !open.is_empty() => {
                    let id = open[i.index(open.len())];
                    let data = conn(42000 + port as u16);
                    let (_, v, _) = lab.request(&mut c, data, Method::ConnectionBind, &bind_body(id.0));
                    if let StreamVerdict::Data(bound) = v {
                        prop_assert_eq!(bound, id);
                    }
                }
                Op::Closed(i) if !open.is_empty() => {
                    let id = open.remove(i.index(open.len()));
                    lab.server.tcp_connection_closed(id);
                    lab.drain();
                }
                Op::Later(s) => {
                    lab.later(Duration::from_secs(s as u64));
                }
                Op::Refresh(keep) if relay.is_some() => {
                    let l = if keep { Duration::from_secs(600) } else { Duration::ZERO };
                    lab.request(&mut c, control, Method::Refresh, &client::refresh_body(l));
                    if !keep {
                        relay = None;
                    }
                }
                Op::ControlClosed if relay.is_some() => {
                    lab.server.connection_closed(control);
                    lab.drain();
                    relay = None;
                }
                _ => {}
            }
            take(&mut lab.ops, &mut connecting, &mut open);
            prop_assert!(lab.server.tcp_connection_count() <= 128);
            // The server's connections are the driver's (a failed attempt leaves both).
            prop_assert!(lab.server.tcp_connection_count() <= connecting.len() + open.len());
        }
        lab.server.connection_closed(control);
        lab.drain();
        take(&mut lab.ops, &mut connecting, &mut open);
        lab.later(Duration::from_secs(3600));
        take(&mut lab.ops, &mut connecting, &mut open);
        prop_assert!(connecting.is_empty() && open.is_empty(), "left open: {:?} {:?}", connecting, open);
        prop_assert_eq!(lab.server.tcp_connection_count(), 0);
        prop_assert_eq!(lab.server.allocation_count(), 0);
        prop_assert_eq!(lab.server.state_size(), 0);
    }
}
