//! TURN over TCP on the client leg (RFC 8656 section 3.1): TCP listeners on the listening
//! addresses and port, one thread (`xturn-tcp`) that owns every connection, with mio
//! (non-blocking sockets on epoll; never a thread per connection).
//!
//! A connection is a 5-tuple ([`Transport::Tcp`]): its bytes are framed here into whole
//! STUN and ChannelData messages ([`frame`]: ChannelData padded to 4 bytes on a stream,
//! RFC 8656 section 12.5; partial reads and pipelined messages), which the control plane
//! takes as it takes datagrams ([`Control`]); what goes back to the client (responses,
//! peer data from the socket workers) arrives through the [`Outbox`]. The allocation ends
//! when the connection closes. Relaying to peers stays UDP.
//!
//! With `--cert`/`--pkey`, TLS listeners (`--tls-listening-port`, [`crate::tls`]) take
//! the same path: rustls decrypts what is read and encrypts what is written, in this
//! thread; the handshake counts into the first-message deadline.
//!
//! RFC 6062 TCP allocations live here too: the relayed address is a listening socket
//! ([`Cmd::Listen`], bound by the driver with `SO_REUSEPORT` so that connections to
//! peers can leave from the same address), peers connect to it or are connected to
//! ([`TcpRelay::Connect`]), and a client connection that bound itself to one with
//! ConnectionBind ([`StreamVerdict::Data`]) stops being framed: from the next byte on,
//! the two connections are joined, byte for byte. Each direction is bounded by
//! [`MAX_QUEUED`] with back-pressure (the sending side is not read while the other's
//! queue is full); when one side ends, what is queued for the other is written (for at
//! most [`LINGER`]) and it is closed too.
//!
//! Bounds: a connection must send a whole first message within [`FIRST_MESSAGE`] and,
//! while it has no allocation, is closed after [`IDLE_WITHOUT_ALLOCATION`] without input
//! and at [`LIFE_WITHOUT_ALLOCATION`] in any case; only a connection with an allocation
//! may have more than [`MAX_STUN`] bytes of a message pending;
//! connections are limited per source address and in total; a STUN message longer than
//! [`MAX_STUN`], junk, or ChannelData without an allocation closes the connection; what
//! waits to be written to a client is bounded by [`MAX_QUEUED`] (beyond it, peer data is
//! dropped and counted, as a full socket buffer drops datagrams).

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xturn_control::{
    ClientAddr, ConnectionId, FiveTuple, RelayAddr, StreamVerdict, TcpRelay, Transport,
};

/// Longest STUN message taken from a stream (no TURN request comes near it).
pub const MAX_STUN: usize = 8192;
/// Bytes waiting to be written to one client at most.
pub const MAX_QUEUED: usize = 256 * 1024;
/// A connection must have sent one whole message this long after it was accepted.
pub const FIRST_MESSAGE: Duration = Duration::from_secs(5);
/// A connection without an allocation that sends nothing for this long is closed.
pub const IDLE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(10);
/// A connection that has no allocation this long after it was accepted is closed, input
/// or not (a trickle cannot hold it).
pub const LIFE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(30);
/// A joined connection whose other side ended is closed when its queue is written, or
/// after this.
pub const LINGER: Duration = Duration::from_secs(5);
/// How often deadlines are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
const WAKE: Token = Token(usize::MAX);
/// Tokens below this are listeners.
const FIRST_CONN: usize = 1024;

/// What the front of a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of `len` bytes; `consumed` (with ChannelData padding) are taken.
    Message { len: usize, consumed: usize },
    /// Not yet a whole message.
    Incomplete,
    /// Not STUN, not ChannelData, or too long: close the connection.
    Bad(&'static str),
}

/// Frame the front of `buf` (RFC 8656 section 12.5: STUN messages and ChannelData, the
/// latter padded to a multiple of 4 bytes over TCP).
pub fn frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    match first >> 6 {
        0 => {
            if buf.len() < 4 {
                return Frame::Incomplete;
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if !len.is_multiple_of(4) {
                return Frame::Bad("a STUN length that is not a multiple of 4");
            }
            let total = 20 + len;
            if total > MAX_STUN {
                return Frame::Bad("a STUN message too long");
            }
            if buf.len() < total {
                return Frame::Incomplete;
            }
            Frame::Message {
                len: total,
                consumed: total,
            }
        }
        1 => {
            if buf.len() < 4 {
                return Frame::Incomplete;
            }
            let len = 4 + u16::from_be_bytes([buf[2], buf[3]]) as usize;
            let consumed = (len + 3) & !3;
            if buf.len() < consumed {
                return Frame::Incomplete;
            }
            Frame::Message { len, consumed }
        }
        _ => Frame::Bad("neither STUN nor ChannelData"),
    }
}

/// ChannelData written to a stream is padded to 4 bytes; STUN messages already are.
pub fn pad_for_stream(msg: &mut Vec<u8>) {
    if msg.first().is_some_and(|b| b >> 6 == 1) {
        msg.resize((msg.len() + 3) & !3, 0);
    }
}

/// What the TCP thread asks of the control plane.
pub trait Control: Send {
    /// A whole message from `ft`: what the connection is now.
    fn message(&mut self, now: Instant, ft: FiveTuple, bytes: &[u8]) -> StreamVerdict;
    /// A connection attempt of [`TcpRelay::Connect`] ended.
    fn peer_connected(&mut self, now: Instant, id: ConnectionId, ok: bool);
    /// A peer connected to the TCP relayed address `relay`: its id, or `None` to refuse it.
    fn peer_incoming(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: SocketAddr,
    ) -> Option<ConnectionId>;
    /// Peer connection `id` (or its data connection) ended.
    fn tcp_closed(&mut self, id: ConnectionId);
    /// The connection `ft` closed (its allocation ends).
    fn closed(&mut self, ft: FiveTuple);
    /// Of `fts`, those that have an allocation.
    fn with_allocation(&mut self, fts: &[FiveTuple]) -> Vec<bool>;
    /// What the messages of one poll's reads queued goes out now (batched sends).
    fn flush(&mut self);
    /// Every turn of the thread's loop (at least every 50 ms).
    fn tick(&mut self, now: Instant);
}

/// What the control plane asks of the TCP thread for TCP allocations.
pub enum Cmd {
    /// Serve this listening socket (bound to a TCP allocation's relayed address).
    Listen(RelayAddr, std::net::TcpListener),
    Relay(TcpRelay),
}

/// Messages for TCP clients, from any thread.
pub struct Outbox {
    tx: Sender<(FiveTuple, Vec<u8>)>,
    cmds: Sender<Cmd>,
    waker: Waker,
    dropped: AtomicU64,
}

/// A TCP allocation's listening socket at `relay`: `SO_REUSEPORT`, so that connections
/// to peers can be bound to the same address ([`TcpRelay::Connect`]).
pub fn relay_listener(relay: RelayAddr) -> std::io::Result<std::net::TcpListener> {
    let s = relay_socket(relay)?;
    s.listen(128)?;
    Ok(s.into())
}

fn relay_socket(relay: RelayAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = relay.0;
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

impl Outbox {
    /// Hand `cmd` to the TCP thread.
    pub fn command(&self, cmd: Cmd) {
        if self.cmds.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Queue `msg` for the client of `ft` (dropped, and counted, when the queue is full).
    pub fn send(&self, ft: FiveTuple, mut msg: Vec<u8>) {
        pad_for_stream(&mut msg);
        match self.tx.try_send((ft, msg)) {
            Ok(()) => {
                let _ = self.waker.wake();
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Messages to TCP clients dropped (queues full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How many connections may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub total: usize,
    /// Per source IP address; 0 = no per-address limit.
    pub per_ip: usize,
}

struct Conn {
    stream: TcpStream,
    /// TLS on this connection (a `--tls-listening-port` listener).
    tls: Option<Box<rustls::ServerConnection>>,
    ft: FiveTuple,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    accepted: Instant,
    last_in: Instant,
    framed: bool,
    writing: bool,
    /// A ConnectionBind just succeeded: join with this peer connection next.
    binding: Option<ConnectionId>,
    /// A data connection: the peer connection it is joined to.
    peer: Option<Token>,
    /// Not read: the peer connection's queue is full.
    paused: bool,
    /// The other side ended: close once `out` is written (or at [`LINGER`]).
    closing: Option<Instant>,
}

/// A TCP allocation's connection to or from a peer.
struct PeerConn {
    stream: TcpStream,
    id: ConnectionId,
    /// Connecting ([`TcpRelay::Connect`]), not yet established.
    connecting: bool,
    /// The client's data connection, once bound.
    data: Option<Token>,
    out: Vec<u8>,
    writing: bool,
    paused: bool,
    closing: Option<Instant>,
}

/// The TCP listeners and connections, run by [`TcpThread::run`] on a thread of its own.
pub struct TcpThread {
    poll: Poll,
    /// (address, socket, TLS?)
    listeners: Vec<(SocketAddr, TcpListener, bool)>,
    tls: Option<crate::tls::Shared>,
    rx: Receiver<(FiveTuple, Vec<u8>)>,
    cmds: Receiver<Cmd>,
    limits: ConnLimits,
    /// TCP allocations' listening sockets, and their tokens by address.
    relay_listeners: HashMap<Token, (RelayAddr, TcpListener)>,
    relay_tokens: HashMap<RelayAddr, Token>,
    peers: HashMap<Token, PeerConn>,
    peer_by_id: HashMap<ConnectionId, Token>,
    /// Connections whose partner's queue emptied below half while they were paused.
    resume: Vec<Token>,
    conns: HashMap<Token, Conn>,
    by_ft: HashMap<FiveTuple, Token>,
    per_ip: HashMap<IpAddr, usize>,
    next: usize,
    pub refused: u64,
    /// Gauges and counters for the metrics.
    gauges: Arc<TcpGauges>,
}

/// What the TCP thread counts for the metrics.
#[derive(Debug, Default)]
pub struct TcpGauges {
    /// Connections open: clients' (control and data) and TCP allocations' peers'.
    pub open: AtomicU64,
    /// Of them, TCP allocations' connections to and from peers (RFC 6062).
    pub peer_connections: AtomicU64,
    /// Bytes through joined RFC 6062 connections, client to peer and peer to client.
    pub to_peer_bytes: AtomicU64,
    pub to_client_bytes: AtomicU64,
}

/// A listening socket with a backlog of [`BACKLOG`] (mio's and std's 128 overflowed here
/// under a burst of connections: the kernel then drops SYNs and clients wait a second).
fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(TcpListener::from_std(s.into()))
}

/// Write as much of `out` as the socket takes (what is written leaves `out`); `false`:
/// the connection failed.
fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    while !out.is_empty() {
        match stream.write(out) {
            Ok(0) => return false,
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Ask for writable events on `stream` while `want` (something waits to be written), once
/// per change (`writing` is what is registered); `false`: the registry refused.
fn want_writable(
    registry: &mio::Registry,
    stream: &mut TcpStream,
    t: Token,
    writing: &mut bool,
    want: bool,
) -> bool {
    if want != *writing {
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if registry.reregister(stream, t, interest).is_err() {
            return false;
        }
        *writing = want;
    }
    true
}

/// Connections the kernel may hold for `accept` (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// Bind TCP listeners on `plain` and, with `tls`, TLS listeners on `secure` (before
/// privileges are dropped); the outbox the others write to.
pub fn bind(
    plain: &[SocketAddr],
    secure: &[SocketAddr],
    tls: Option<crate::tls::Shared>,
    limits: ConnLimits,
) -> Result<(TcpThread, Arc<Outbox>)> {
    let poll = Poll::new().context("epoll for the TCP listeners")?;
    let mut listeners = Vec::new();
    let secure = if tls.is_some() { secure } else { &[] };
    for (a, is_tls) in plain
        .iter()
        .map(|a| (a, false))
        .chain(secure.iter().map(|a| (a, true)))
    {
        let what = if is_tls { "tls" } else { "tcp" };
        let mut l = listener(*a).with_context(|| format!("cannot listen on {what} {a}"))?;
        poll.registry()
            .register(&mut l, Token(listeners.len()), Interest::READABLE)?;
        listeners.push((*a, l, is_tls));
    }
    let waker = Waker::new(poll.registry(), WAKE)?;
    let (tx, rx) = crossbeam_channel::bounded(65536);
    // (Commands are bounded by the allocations and connections they are about.)
    let (cmds, cmd_rx) = crossbeam_channel::unbounded();
    let outbox = Arc::new(Outbox {
        tx,
        cmds,
        waker,
        dropped: AtomicU64::new(0),
    });
    Ok((
        TcpThread {
            poll,
            listeners,
            tls,
            rx,
            cmds: cmd_rx,
            limits,
            relay_listeners: HashMap::new(),
            relay_tokens: HashMap::new(),
            peers: HashMap::new(),
            peer_by_id: HashMap::new(),
            resume: Vec::new(),
            conns: HashMap::new(),
            by_ft: HashMap::new(),
            per_ip: HashMap::new(),
            next: FIRST_CONN,
            refused: 0,
            gauges: Arc::default(),
        },
        outbox,
    ))
}

impl TcpThread {
    pub fn connections(&self) -> usize {
        self.conns.len() + self.peers.len()
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next);
        self.next = if self.next == usize::MAX - 1 {
            FIRST_CONN
        } else {
            self.next + 1
        };
        t
    }

    /// Its gauges and counters, kept up to date by [`TcpThread::run`].
    pub fn gauges(&self) -> Arc<TcpGauges> {
        self.gauges.clone()
    }

    /// Serve until `shutdown`; `beat` is called at every turn (heartbeat).
    pub fn run(mut self, mut control: impl Control, shutdown: Arc<AtomicBool>, beat: impl Fn()) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        while !shutdown.load(Ordering::Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(50))) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!("tcp poll: {e}");
                }
            }
            beat();
            let now = Instant::now();
            control.tick(now);
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {}
                    Token(i) if i < FIRST_CONN => self.accept(i, now),
                    t if self.relay_listeners.contains_key(&t) => {
                        self.accept_peer(t, now, &mut control)
                    }
                    t if self.peers.contains_key(&t) => self.peer_event(t, ev, now, &mut control),
                    t => {
                        let mut keep = true;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            keep = self.read(t, now, &mut control);
                        }
                        if keep && ev.is_writable() {
                            keep = self.flush(t);
                        }
                        if !keep {
                            self.close(t, &mut control);
                        } else if let Some(id) =
                            self.conns.get_mut(&t).and_then(|c| c.binding.take())
                        {
                            // The success response first, then the joined bytes.
                            control.flush();
                            self.deliver(&mut control);
                            self.join(t, id, now, &mut control);
                        }
                    }
                }
            }
            control.flush();
            self.deliver(&mut control);
            self.resume_paused(now, &mut control);
            let g = &self.gauges;
            g.open.store(self.connections() as u64, Ordering::Relaxed);
            g.peer_connections
                .store(self.peers.len() as u64, Ordering::Relaxed);
            if now >= next_sweep {
                next_sweep = now + SWEEP_EVERY;
                self.sweep(now, &mut control);
            }
        }
        let all: Vec<Token> = self.conns.keys().copied().collect();
        for t in all {
            self.close(t, &mut control);
        }
    }

    fn accept(&mut self, i: usize, now: Instant) {
        loop {
            let (mut stream, client) = match self.listeners[i].1.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("tcp accept: {e}");
                    return;
                }
            };
            let ip = client.ip();
            let n = self.per_ip.get(&ip).copied().unwrap_or(0);
            if self.connections() >= self.limits.total
                || (self.limits.per_ip != 0 && n >= self.limits.per_ip)
            {
                self.refused += 1;
                continue; // dropped: closed
            }
            let t = self.token();
            if self
                .poll
                .registry()
                .register(&mut stream, t, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let tls = match (self.listeners[i].2, &self.tls) {
                (true, Some(config)) => {
                    let config = config.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    match rustls::ServerConnection::new(config) {
                        Ok(mut c) => {
                            c.set_buffer_limit(Some(MAX_QUEUED));
                            Some(Box::new(c))
                        }
                        Err(e) => {
                            tracing::warn!("tls: {e}");
                            let _ = self.poll.registry().deregister(&mut stream);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let ft = FiveTuple::tcp(ClientAddr(client), self.listeners[i].0);
            *self.per_ip.entry(ip).or_default() += 1;
            self.by_ft.insert(ft, t);
            self.conns.insert(
                t,
                Conn {
                    stream,
                    tls,
                    ft,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    accepted: now,
                    last_in: now,
                    framed: false,
                    writing: false,
                    binding: None,
                    peer: None,
                    paused: false,
                    closing: None,
                },
            );
        }
    }

    /// Read what is there and hand every whole message over; `false`: close.
    fn read(&mut self, t: Token, now: Instant, control: &mut impl Control) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return true;
        };
        if c.peer.is_some() || c.closing.is_some() {
            return self.pump_to_peer(t, now, control);
        }
        if c.binding.is_some() {
            return true; // joined next, by the caller
        }
        let mut buf = [0u8; 16384];
        let open = loop {
            let n = match c.tls.as_mut() {
                None => match c.stream.read(&mut buf) {
                    Ok(0) => break false,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break false,
                },
                Some(tls) => {
                    match tls.read_tls(&mut c.stream) {
                        Ok(0) => break false,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => break false,
                    }
                    if let Err(e) = tls.process_new_packets() {
                        tracing::debug!("tls {}: {e}: closing", c.ft.client.0);
                        // The alert, if rustls has one to send.
                        let _ = tls.write_tls(&mut c.stream);
                        return false;
                    }
                    match tls.reader().read(&mut buf) {
                        Ok(0) => break false, // close_notify
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                        Err(_) => break false,
                    }
                }
            };
            if n == 0 {
                continue; // TLS records without application data (handshake)
            }
            c.inbuf.extend_from_slice(&buf[..n]);
            c.last_in = now;
            loop {
                match frame(&c.inbuf) {
                    Frame::Incomplete => {
                        // Only a connection with an allocation may have more than a STUN
                        // message's worth pending (a ChannelData message on its way).
                        if c.inbuf.len() > MAX_STUN && !control.with_allocation(&[c.ft])[0] {
                            tracing::debug!(
                                "tcp {}: a long message without an allocation: closing",
                                c.ft.client.0
                            );
                            return false;
                        }
                        break;
                    }
                    Frame::Bad(why) => {
                        tracing::debug!("tcp {}: {why}: closing", c.ft.client.0);
                        return false;
                    }
                    Frame::Message { len, consumed } => {
                        c.framed = true;
                        let verdict = control.message(now, c.ft, &c.inbuf[..len]);
                        c.inbuf.drain(..consumed);
                        match verdict {
                            StreamVerdict::Keep => {}
                            StreamVerdict::Close => return false,
                            StreamVerdict::Data(id) => {
                                // What follows in `inbuf` (and the socket) is the
                                // peer's: the caller joins them.
                                c.binding = Some(id);
                                return true;
                            }
                        }
                    }
                }
            }
        };
        // More plaintext may wait in rustls beyond one read: take it all.
        if let Some(tls) = c.tls.as_mut() {
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(n) if n > 0 => {
                        c.inbuf.extend_from_slice(&buf[..n]);
                        while let Frame::Message { len, consumed } = frame(&c.inbuf) {
                            c.framed = true;
                            let verdict = control.message(now, c.ft, &c.inbuf[..len]);
                            c.inbuf.drain(..consumed);
                            match verdict {
                                StreamVerdict::Keep => {}
                                StreamVerdict::Close => return false,
                                StreamVerdict::Data(id) => {
                                    c.binding = Some(id);
                                    return true;
                                }
                            }
                        }
                        if let Frame::Bad(_) = frame(&c.inbuf) {
                            return false;
                        }
                    }
                    _ => break,
                }
            }
        }
        // A handshake answer, or what the messages queued.
        open && self.flush(t)
    }

    /// Write what is queued for `t`; `false`: close.
    fn flush(&mut self, t: Token) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return true;
        };
        let want = match c.tls.as_mut() {
            None => {
                if !write_out(&mut c.stream, &mut c.out) {
                    return false;
                }
                !c.out.is_empty()
            }
            Some(tls) => {
                // Into rustls as far as its buffer limit takes it (after the handshake).
                if !tls.is_handshaking() && !c.out.is_empty() {
                    match tls.writer().write(&c.out) {
                        Ok(n) => {
                            c.out.drain(..n);
                        }
                        Err(_) => return false,
                    }
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut c.stream) {
                        Ok(0) => return false,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
                tls.wants_write() || (!c.out.is_empty() && !tls.is_handshaking())
            }
        };
        if c.closing.is_some() && !want {
            return false; // its other side ended and all it had is written
        }
        if c.out.len() <= MAX_QUEUED / 2 {
            if let Some(pt) = c.peer {
                if self.peers.get(&pt).is_some_and(|p| p.paused) {
                    self.resume.push(pt);
                }
            }
        }
        want_writable(self.poll.registry(), &mut c.stream, t, &mut c.writing, want)
    }

    /// Queue what the outbox holds on its connections and write it; carry out the
    /// control plane's commands.
    fn deliver(&mut self, control: &mut impl Control) {
        while let Ok(cmd) = self.cmds.try_recv() {
            self.command(cmd, control);
        }
        let mut touched = Vec::new();
        while let Ok((ft, msg)) = self.rx.try_recv() {
            let Some(&t) = self.by_ft.get(&ft) else {
                continue; // closed meanwhile
            };
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if c.out.len() + msg.len() > MAX_QUEUED {
                continue;
            }
            c.out.extend_from_slice(&msg);
            touched.push(t);
        }
        touched.sort();
        touched.dedup();
        let mut dead = Vec::new();
        for t in touched {
            if !self.flush(t) {
                dead.push(t);
            }
        }
        // Closing needs the control plane; a failed write shows as an error event next.
        for t in dead {
            if let Some(c) = self.conns.get_mut(&t) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Close connections past their deadlines.
    fn sweep(&mut self, now: Instant, control: &mut impl Control) {
        let lingered = |c: &Option<Instant>| c.is_some_and(|t| now.duration_since(t) >= LINGER);
        let mut late: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                (!c.framed && now.duration_since(c.accepted) >= FIRST_MESSAGE)
                    || lingered(&c.closing)
            })
            .map(|(t, _)| *t)
            .collect();
        let late_peers: Vec<Token> = self
            .peers
            .iter()
            .filter(|(_, p)| lingered(&p.closing))
            .map(|(t, _)| *t)
            .collect();
        for t in late_peers {
            self.drop_peer(t);
        }
        // (Disjoint from `late`: those never sent a whole message. A data connection has
        // no allocation of its own: its peer connection's allocation holds it.)
        let idle: Vec<(Token, FiveTuple)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.framed
                    && c.peer.is_none()
                    && c.closing.is_none()
                    && (now.duration_since(c.last_in) >= IDLE_WITHOUT_ALLOCATION
                        || now.duration_since(c.accepted) >= LIFE_WITHOUT_ALLOCATION)
            })
            .map(|(t, c)| (*t, c.ft))
            .collect();
        if !idle.is_empty() {
            let fts: Vec<FiveTuple> = idle.iter().map(|(_, ft)| *ft).collect();
            let has = control.with_allocation(&fts);
            late.extend(
                idle.iter()
                    .zip(has)
                    .filter(|(_, has)| !has)
                    .map(|((t, _), _)| *t),
            );
        }
        for t in late {
            self.close(t, control);
        }
    }

    fn close(&mut self, t: Token, control: &mut impl Control) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.by_ft.remove(&c.ft);
        let ip = c.ft.client.0.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        debug_assert_eq!(c.ft.transport, Transport::Tcp);
        control.closed(c.ft);
        // A data connection ended: its peer connection gets what is queued, then closes.
        if let Some(pt) = c.peer {
            if let Some(p) = self.peers.get_mut(&pt) {
                control.tcp_closed(p.id);
                p.data = None;
                if p.closing.is_none() {
                    p.closing = Some(Instant::now());
                    if !self.flush_peer(pt) {
                        self.drop_peer(pt);
                    }
                }
            }
        }
    }

    /// A command of the control plane.
    fn command(&mut self, cmd: Cmd, control: &mut impl Control) {
        match cmd {
            Cmd::Listen(relay, l) => {
                let t = self.token();
                let mut l = TcpListener::from_std(l);
                if let Err(e) = self.poll.registry().register(&mut l, t, Interest::READABLE) {
                    tracing::warn!("cannot poll the TCP relay {}: {e}", relay.0);
                    return;
                }
                self.relay_tokens.insert(relay, t);
                self.relay_listeners.insert(t, (relay, l));
            }
            Cmd::Relay(TcpRelay::CloseListener { relay }) => {
                if let Some(t) = self.relay_tokens.remove(&relay) {
                    if let Some((_, mut l)) = self.relay_listeners.remove(&t) {
                        let _ = self.poll.registry().deregister(&mut l);
                    }
                }
            }
            Cmd::Relay(TcpRelay::Close { id }) => {
                let Some(&pt) = self.peer_by_id.get(&id) else {
                    return;
                };
                let data = self.peers.get(&pt).and_then(|p| p.data);
                self.drop_peer(pt);
                if let Some(dt) = data {
                    if let Some(c) = self.conns.get_mut(&dt) {
                        c.peer = None; // (the server knows)
                    }
                    self.close(dt, control);
                }
            }
            Cmd::Relay(TcpRelay::Connect { id, relay, peer }) => {
                let started = relay_socket(relay).and_then(|s| {
                    match s.connect(&peer.into()) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                        Err(e) => return Err(e),
                    }
                    Ok(TcpStream::from_std(s.into()))
                });
                let mut stream = match started {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!("tcp relay {} -> {peer}: {e}", relay.0);
                        control.peer_connected(Instant::now(), id, false);
                        return;
                    }
                };
                let t = self.token();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .register(&mut stream, t, interest)
                    .is_err()
                {
                    control.peer_connected(Instant::now(), id, false);
                    return;
                }
                self.add_peer(t, stream, id, true);
            }
        }
    }

    fn add_peer(&mut self, t: Token, stream: TcpStream, id: ConnectionId, connecting: bool) {
        self.peer_by_id.insert(id, t);
        self.peers.insert(
            t,
            PeerConn {
                stream,
                id,
                connecting,
                data: None,
                out: Vec::new(),
                writing: connecting,
                paused: false,
                closing: None,
            },
        );
    }

    /// Close peer connection `t` (the control plane knows already, or is told by the
    /// caller).
    fn drop_peer(&mut self, t: Token) {
        if let Some(mut p) = self.peers.remove(&t) {
            let _ = self.poll.registry().deregister(&mut p.stream);
            self.peer_by_id.remove(&p.id);
            if let Some(c) = p.data.and_then(|dt| self.conns.get_mut(&dt)) {
                c.peer = None;
            }
        }
    }

    /// Peers connecting to a TCP allocation's relayed address.
    fn accept_peer(&mut self, lt: Token, now: Instant, control: &mut impl Control) {
        loop {
            let Some((relay, l)) = self.relay_listeners.get(&lt) else {
                return;
            };
            let relay = *relay;
            let (mut stream, from) = match l.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("tcp relay {} accept: {e}", relay.0);
                    return;
                }
            };
            if self.connections() >= self.limits.total {
                self.refused += 1;
                continue;
            }
            let Some(id) = control.peer_incoming(now, relay, from) else {
                continue; // no permission (or no room): closed
            };
            let t = self.token();
            if self
                .poll
                .registry()
                .register(&mut stream, t, Interest::READABLE)
                .is_err()
            {
                control.tcp_closed(id);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.add_peer(t, stream, id, false);
        }
    }

    fn peer_event(
        &mut self,
        t: Token,
        ev: &mio::event::Event,
        now: Instant,
        control: &mut impl Control,
    ) {
        let Some(p) = self.peers.get_mut(&t) else {
            return;
        };
        if p.connecting {
            if !(ev.is_writable() || ev.is_error() || ev.is_read_closed()) {
                return;
            }
            let failed = match p.stream.take_error() {
                Ok(Some(_)) | Err(_) => true,
                Ok(None) => match p.stream.peer_addr() {
                    Ok(_) => false,
                    Err(e) if e.kind() == ErrorKind::NotConnected => {
                        if ev.is_error() || ev.is_read_closed() {
                            true
                        } else {
                            return; // not yet
                        }
                    }
                    Err(_) => true,
                },
            };
            let id = p.id;
            if failed {
                self.drop_peer(t);
                control.peer_connected(now, id, false);
                return;
            }
            p.connecting = false;
            let _ = p.stream.set_nodelay(true);
            if self
                .poll
                .registry()
                .reregister(&mut p.stream, t, Interest::READABLE)
                .is_err()
            {
                self.drop_peer(t);
                control.peer_connected(now, id, false);
                return;
            }
            p.writing = false;
            control.peer_connected(now, id, true);
            return;
        }
        if p.data.is_none() && p.closing.is_none() {
            // Not joined yet: what it sends waits in the kernel until then; an end is
            // the end of it.
            if ev.is_error() || ev.is_read_closed() {
                let id = p.id;
                self.drop_peer(t);
                control.tcp_closed(id);
            }
            return;
        }
        let mut keep = true;
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            keep = self.pump_to_client(t, control);
        }
        if keep && ev.is_writable() && !self.flush_peer(t) {
            keep = false;
        }
        if !keep {
            self.end_peer(t, control);
        }
    }

    /// The peer side of a joined pair ended: the data connection gets what is queued for
    /// it, then closes.
    fn end_peer(&mut self, t: Token, control: &mut impl Control) {
        let Some(p) = self.peers.get(&t) else {
            return;
        };
        let (id, data, closing) = (p.id, p.data, p.closing.is_some());
        self.drop_peer(t);
        if !closing {
            control.tcp_closed(id);
        }
        if let Some(dt) = data {
            if let Some(c) = self.conns.get_mut(&dt) {
                c.peer = None;
                if c.closing.is_none() {
                    c.closing = Some(Instant::now());
                }
            }
            if !self.flush(dt) {
                self.close(dt, control);
            }
        }
    }

    /// Join data connection `dt` (its ConnectionBind just answered) with peer connection
    /// `id`: what the client sent after its ConnectionBind goes to the peer, and both are
    /// read from now on.
    fn join(&mut self, dt: Token, id: ConnectionId, now: Instant, control: &mut impl Control) {
        let Some(&pt) = self.peer_by_id.get(&id) else {
            control.tcp_closed(id);
            self.close(dt, control);
            return;
        };
        let (Some(c), Some(p)) = (self.conns.get_mut(&dt), self.peers.get_mut(&pt)) else {
            return;
        };
        c.peer = Some(pt);
        p.data = Some(dt);
        let g = &self.gauges.to_peer_bytes;
        g.fetch_add(c.inbuf.len() as u64, Ordering::Relaxed);
        p.out.append(&mut c.inbuf);
        if !self.flush_peer(pt) {
            self.end_peer(pt, control);
            return;
        }
        // Both may have bytes waiting that no new event will announce.
        if !self.pump_to_client(pt, control) {
            self.end_peer(pt, control);
        }
        if !self.pump_to_peer(dt, now, control) {
            self.close(dt, control);
        }
    }

    /// Read from peer `t` into its data connection's queue (as far as there is room);
    /// `false`: the peer ended.
    fn pump_to_client(&mut self, t: Token, control: &mut impl Control) -> bool {
        let Some(p) = self.peers.get_mut(&t) else {
            return true;
        };
        let Some(dt) = p.data else {
            return true;
        };
        let Some(c) = self.conns.get_mut(&dt) else {
            return true;
        };
        let mut buf = [0u8; 16384];
        let mut open = true;
        loop {
            let room = MAX_QUEUED.saturating_sub(c.out.len()).min(buf.len());
            if room == 0 {
                p.paused = true;
                break;
            }
            match p.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    c.out.extend_from_slice(&buf[..n]);
                    let g = &self.gauges.to_client_bytes;
                    g.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    p.paused = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    open = false;
                    break;
                }
            }
        }
        if !self.flush(dt) {
            self.close(dt, control);
        }
        open
    }

    /// Read from data connection `t` into its peer connection's queue (as far as there
    /// is room); `false`: close `t`.
    fn pump_to_peer(&mut self, t: Token, now: Instant, control: &mut impl Control) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return true;
        };
        let Some(pt) = c.peer else {
            // Its peer ended: what it still sends goes nowhere.
            let mut buf = [0u8; 16384];
            return loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => break false,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break false,
                }
            };
        };
        let Some(p) = self.peers.get_mut(&pt) else {
            return true;
        };
        let mut buf = [0u8; 16384];
        let open = loop {
            let room = MAX_QUEUED.saturating_sub(p.out.len()).min(buf.len());
            if room == 0 {
                c.paused = true;
                break true;
            }
            let n = match c.tls.as_mut() {
                None => match c.stream.read(&mut buf[..room]) {
                    Ok(0) => break false,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        c.paused = false;
                        break true;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break false,
                },
                Some(tls) => match tls.reader().read(&mut buf[..room]) {
                    Ok(0) => break false, // close_notify
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // Nothing decrypted waits: more from the socket.
                        match tls.read_tls(&mut c.stream) {
                            Ok(0) => break false,
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                c.paused = false;
                                break true;
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                            Err(_) => break false,
                        }
                        if tls.process_new_packets().is_err() {
                            let _ = tls.write_tls(&mut c.stream);
                            break false;
                        }
                        continue;
                    }
                    Err(_) => break false,
                },
            };
            c.last_in = now;
            p.out.extend_from_slice(&buf[..n]);
            let g = &self.gauges.to_peer_bytes;
            g.fetch_add(n as u64, Ordering::Relaxed);
        };
        if !self.flush_peer(pt) {
            self.end_peer(pt, control);
        }
        open
    }

    /// Write what is queued for peer `t`; `false`: it failed, or it was closing and is
    /// done.
    fn flush_peer(&mut self, t: Token) -> bool {
        let Some(p) = self.peers.get_mut(&t) else {
            return true;
        };
        if !write_out(&mut p.stream, &mut p.out) {
            return false;
        }
        let want = !p.out.is_empty();
        if p.closing.is_some() && !want {
            return false;
        }
        if p.out.len() <= MAX_QUEUED / 2 {
            if let Some(dt) = p.data {
                if self.conns.get(&dt).is_some_and(|c| c.paused) {
                    self.resume.push(dt);
                }
            }
        }
        want_writable(self.poll.registry(), &mut p.stream, t, &mut p.writing, want)
    }

    /// Read again from connections paused for a full queue that has room now (the
    /// kernel will not tell: its readiness was taken already).
    fn resume_paused(&mut self, now: Instant, control: &mut impl Control) {
        for _ in 0..4 {
            if self.resume.is_empty() {
                return;
            }
            let mut ts = std::mem::take(&mut self.resume);
            ts.sort();
            ts.dedup();
            for t in ts {
                if self.peers.contains_key(&t) {
                    if let Some(p) = self.peers.get_mut(&t) {
                        p.paused = false;
                    }
                    if !self.pump_to_client(t, control) {
                        self.end_peer(t, control);
                    }
                } else if let Some(c) = self.conns.get_mut(&t) {
                    c.paused = false;
                    if !self.pump_to_peer(t, now, control) {
                        self.close(t, control);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stun_and_padded_channel_data_from_a_stream() {
        let mut stun = vec![0x00, 0x01, 0x00, 0x08];
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0; 8]);
        assert_eq!(
            frame(&stun),
            Frame::Message {
                len: 28,
                consumed: 28
            }
        );
        for cut in 0..28 {
            assert_eq!(frame(&stun[..cut]), Frame::Incomplete, "{cut} bytes");
        }
        // ChannelData of 5 bytes: 9, padded to 12 on a stream.
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(frame(&cd[..11]), Frame::Incomplete);
        assert_eq!(
            frame(&cd),
            Frame::Message {
                len: 9,
                consumed: 12
            }
        );
        // Pipelined: the first message only.
        let two = [&cd[..], &stun[..]].concat();
        assert_eq!(
            frame(&two),
            Frame::Message {
                len: 9,
                consumed: 12
            }
        );
        assert!(matches!(frame(&[0x80]), Frame::Bad(_)));
        assert!(matches!(frame(&[0xC0, 0, 0, 0]), Frame::Bad(_)));
        assert!(matches!(frame(&[0x00, 0x01, 0xff, 0xfc]), Frame::Bad(_)));
        assert!(matches!(frame(&[0x00, 0x01, 0x00, 0x03]), Frame::Bad(_)));
        let mut m = cd[..9].to_vec();
        pad_for_stream(&mut m);
        assert_eq!(m, cd);
        let mut s = stun.clone();
        pad_for_stream(&mut s);
        assert_eq!(s, stun);
    }
}
