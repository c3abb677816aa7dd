//! RFC 6062 TCP allocations: the relayed address is a TCP listening socket; a client asks
//! for a connection to a peer with Connect, or is told of a peer's connection with a
//! ConnectionAttempt indication; either way it opens a new connection to the server and
//! binds it to that peer connection with ConnectionBind, after which the driver joins the
//! two byte streams. The server keeps the state and the deadlines; the driver owns the
//! sockets ([`TcpRelay`]).
//!
//! Deadlines: a connection attempt is answered with 447 after [`CONNECT_DEADLINE`] at
//! the latest; a peer connection not bound within [`BIND_DEADLINE`] (RFC 6062: 30 s) is
//! closed. A TCP allocation has at most `max_permissions` peer connections (508 and a
//! refused incoming connection beyond it). When the allocation ends (its control
//! connection closes, it expires, is deleted or killed), every connection of it closes.

use super::{Auth, Ctx, Quota, Server};
use crate::error::{BadRequest, TurnError};
use crate::output::{Output, TcpRelay};
use crate::types::{ConnectionId, FiveTuple, RelayAddr, Transport};
use crate::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A Connect is answered (447 if nothing else) within this.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// A peer connection must be bound by the client within this (RFC 6062 section 5.2/5.3).
pub const BIND_DEADLINE: Duration = Duration::from_secs(30);

/// What a whole message from a client's stream made of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamVerdict {
    /// Go on framing messages.
    Keep,
    /// Close the connection.
    Close,
    /// The connection is now the data connection of peer connection `id`: join them.
    Data(ConnectionId),
}

#[derive(Debug)]
pub(super) struct PeerConn {
    /// The control connection of the allocation it belongs to.
    owner: FiveTuple,
    peer: SocketAddr,
    state: State,
    /// Its entry in `conn_deadlines`, while connecting or waiting for a bind.
    deadline: Option<Instant>,
}

#[derive(Debug)]
enum State {
    /// The driver is connecting; the Connect request is answered when it is done.
    Connecting {
        tid: TransactionId,
        fingerprint: bool,
        auth: Auth,
    },
    /// Connected (or accepted), waiting for the client's ConnectionBind.
    Unbound,
    /// Joined to the client's data connection.
    Bound,
}

impl Server {
    fn new_connection_id(&mut self) -> ConnectionId {
        loop {
            let id = ConnectionId(self.rng.next_u32());
            if id.0 != 0 && !self.peer_conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn set_deadline(&mut self, id: ConnectionId, at: Option<Instant>) {
        let Some(c) = self.peer_conns.get_mut(&id) else {
            return;
        };
        if let Some(old) = c.deadline.take() {
            self.conn_deadlines.remove(&(old, id));
        }
        if let Some(at) = at {
            c.deadline = Some(at);
            self.conn_deadlines.insert((at, id));
        }
    }

    /// Forget connection `id` (its socket is closed or being closed by the driver); a
    /// Connect still in progress is answered with 447.
    fn forget_connection(&mut self, id: ConnectionId) {
        self.set_deadline(id, None);
        let Some(c) = self.peer_conns.remove(&id) else {
            return;
        };
        if let Some(set) = self
            .allocations
            .get_mut(&c.owner)
            .and_then(|a| a.tcp.as_mut())
        {
            set.remove(&id);
        }
        if let State::Connecting {
            tid,
            fingerprint,
            auth,
        } = c.state
        {
            let ctx = Ctx {
                tid,
                method: Method::Connect,
                five_tuple: c.owner,
                fingerprint,
            };
            self.error(&ctx, Some(&auth), TurnError::ConnectionFailure, &[]);
        }
    }

    /// Connect (RFC 6062 section 5.2) on the TCP allocation `a` of `ctx.five_tuple`.
    pub(super) fn connect(
        &mut self,
        now: Instant,
        ctx: &Ctx,
        a: &mut super::Allocation,
        auth: &Auth,
        r: super::request::Connect,
    ) -> Result<(), TurnError> {
        let Some(conns) = a.tcp.as_mut() else {
            return Err(TurnError::BadRequest(BadRequest::Tcp));
        };
        let peer = self.inward(r.peer);
        self.check_peers(&[peer], a.relay, true)?;
        for id in conns.iter() {
            let Some(c) = self.peer_conns.get(id) else {
                continue;
            };
            if c.peer == peer {
                return match &c.state {
                    // A retransmission: the answer comes when the attempt ends.
                    State::Connecting { tid, .. } if *tid == ctx.tid => Ok(()),
                    _ => Err(TurnError::ConnectionAlreadyExists),
                };
            }
        }
        if conns.len() >= self.cfg.max_permissions {
            self.stats.quota(Quota::Connections);
            return Err(TurnError::InsufficientCapacity);
        }
        let id = self.new_connection_id();
        if let Some(c) = a.tcp.as_mut() {
            c.insert(id);
        }
        self.peer_conns.insert(
            id,
            PeerConn {
                owner: ctx.five_tuple,
                peer,
                state: State::Connecting {
                    tid: ctx.tid,
                    fingerprint: ctx.fingerprint,
                    auth: auth.clone(),
                },
                deadline: None,
            },
        );
        self.set_deadline(id, Some(now + CONNECT_DEADLINE));
        self.outputs.push_back(Output::Tcp(TcpRelay::Connect {
            id,
            relay: a.relay,
            peer,
        }));
        Ok(())
    }

    /// Completion of a [`TcpRelay::Connect`]: `ok` when the connection to the peer is
    /// established (the Connect is answered with its CONNECTION-ID), else 447. A failed
    /// attempt's socket is the driver's to close.
    pub fn peer_connected(&mut self, now: Instant, id: ConnectionId, ok: bool) {
        let Some(c) = self.peer_conns.get_mut(&id) else {
            return; // its allocation went meanwhile (a Close was sent)
        };
        if !matches!(c.state, State::Connecting { .. }) {
            return;
        }
        if !ok {
            self.forget_connection(id);
            return;
        }
        let State::Connecting {
            tid,
            fingerprint,
            auth,
        } = std::mem::replace(&mut c.state, State::Unbound)
        else {
            unreachable!("matched above");
        };
        let ctx = Ctx {
            tid,
            method: Method::Connect,
            five_tuple: c.owner,
            fingerprint,
        };
        self.set_deadline(id, Some(now + BIND_DEADLINE));
        let mut b = MessageBuilder::new(Method::Connect, Class::Success, tid);
        b.u32_attr(attr::CONNECTION_ID, id.0);
        self.finish_response(&ctx, Some(&auth), b, 200);
    }

    /// A peer connected to the relayed address `relay` from `peer` (RFC 6062 section
    /// 5.3). With a live TCP allocation there and a permission for the peer's address,
    /// the client is sent a ConnectionAttempt and the connection is `Some` id; `None`:
    /// the driver closes it.
    pub fn peer_connection_incoming(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: SocketAddr,
    ) -> Option<ConnectionId> {
        let peer = SocketAddr::new(self.cfg.filter.normalise(peer.ip()), peer.port());
        let owner = *self.by_relay.get(&relay)?;
        let a = self.allocations.get(&owner)?;
        let conns = a.tcp.as_ref()?;
        if a.expires <= now || a.permissions.get(&peer.ip()).is_none_or(|e| *e <= now) {
            return None;
        }
        if conns.len() >= self.cfg.max_permissions {
            self.stats.quota(Quota::Connections);
            return None;
        }
        let fingerprint = a.fingerprint;
        let id = self.new_connection_id();
        if let Some(c) = self
            .allocations
            .get_mut(&owner)
            .and_then(|a| a.tcp.as_mut())
        {
            c.insert(id);
        }
        self.peer_conns.insert(
            id,
            PeerConn {
                owner,
                peer,
                state: State::Unbound,
                deadline: None,
            },
        );
        self.set_deadline(id, Some(now + BIND_DEADLINE));
        let tid = self.random_tid();
        let mut b = MessageBuilder::new(Method::ConnectionAttempt, Class::Indication, tid);
        b.xor_addr(attr::XOR_PEER_ADDRESS, self.cfg.external.public(peer));
        b.u32_attr(attr::CONNECTION_ID, id.0);
        if let Some(s) = &self.cfg.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        if fingerprint {
            b.fingerprint();
        }
        let bytes = b.finish();
        self.transmit(owner.server, owner.client.0, bytes, Transport::Tcp);
        Some(id)
    }

    /// The driver closed peer connection `id` or its data connection (one side ended;
    /// the driver closes the other).
    pub fn tcp_connection_closed(&mut self, id: ConnectionId) {
        self.forget_connection(id);
    }

    /// ConnectionBind (RFC 6062 section 5.4) on a new connection `ctx.five_tuple`.
    pub(super) fn connection_bind(
        &mut self,
        msg: &Message<&[u8]>,
        ctx: &Ctx,
        auth: &Auth,
    ) -> Result<MessageBuilder, TurnError> {
        let ft = ctx.five_tuple;
        if ft.transport != Transport::Tcp || self.has_allocation(&ft) {
            return Err(TurnError::BadRequest(BadRequest::Tcp));
        }
        let id = super::request::connection_id(msg)?;
        let c = self
            .peer_conns
            .get(&id)
            .filter(|c| matches!(c.state, State::Unbound))
            .ok_or(TurnError::BadRequest(BadRequest::Tcp))?;
        let owner = self
            .allocations
            .get(&c.owner)
            .ok_or(TurnError::BadRequest(BadRequest::Tcp))?;
        if owner.auth.username != auth.username {
            self.stats.auth_failure(super::AuthFailure::WrongUser);
            return Err(TurnError::WrongCredentials);
        }
        self.set_deadline(id, None);
        if let Some(c) = self.peer_conns.get_mut(&id) {
            c.state = State::Bound;
        }
        self.spliced = Some(id);
        Ok(MessageBuilder::new(
            Method::ConnectionBind,
            Class::Success,
            ctx.tid,
        ))
    }

    /// Connection attempts and binds past their deadlines: 447 for a Connect, and the
    /// peer connection closed.
    pub(super) fn expire_connections(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.conn_deadlines.first() {
            if t > now {
                break;
            }
            self.forget_connection(id);
            self.outputs.push_back(Output::Tcp(TcpRelay::Close { id }));
        }
    }

    /// The TCP allocation at `relay` ended: close its connections and its listener.
    pub(super) fn close_tcp_allocation(
        &mut self,
        relay: RelayAddr,
        conns: &BTreeSet<ConnectionId>,
    ) {
        for &id in conns {
            self.set_deadline(id, None);
            // (A Connect in progress gets no answer: its allocation is gone.)
            self.peer_conns.remove(&id);
            self.outputs.push_back(Output::Tcp(TcpRelay::Close { id }));
        }
        self.outputs
            .push_back(Output::Tcp(TcpRelay::CloseListener { relay }));
        self.tcp_relays.remove(&relay);
    }

    /// TCP peer connections open or being opened (for tests and the metrics).
    pub fn tcp_connection_count(&self) -> usize {
        self.peer_conns.len()
    }
}
