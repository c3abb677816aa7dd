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
use xturn_control::{ClientAddr, FiveTuple, Transport};

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
    /// A whole message from `ft`; `false` closes the connection.
    fn message(&mut self, now: Instant, ft: FiveTuple, bytes: &[u8]) -> bool;
    /// The connection `ft` closed (its allocation ends).
    fn closed(&mut self, ft: FiveTuple);
    /// Of `fts`, those that have an allocation.
    fn with_allocation(&mut self, fts: &[FiveTuple]) -> Vec<bool>;
    /// What the messages of one poll's reads queued goes out now (batched sends).
    fn flush(&mut self);
    /// Every turn of the thread's loop (at least every 50 ms).
    fn tick(&mut self, now: Instant);
}

/// Messages for TCP clients, from any thread.
pub struct Outbox {
    tx: Sender<(FiveTuple, Vec<u8>)>,
    waker: Waker,
    dropped: AtomicU64,
}

impl Outbox {
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
}

/// The TCP listeners and connections, run by [`TcpThread::run`] on a thread of its own.
pub struct TcpThread {
    poll: Poll,
    /// (address, socket, TLS?)
    listeners: Vec<(SocketAddr, TcpListener, bool)>,
    tls: Option<crate::tls::Shared>,
    rx: Receiver<(FiveTuple, Vec<u8>)>,
    limits: ConnLimits,
    conns: HashMap<Token, Conn>,
    by_ft: HashMap<FiveTuple, Token>,
    per_ip: HashMap<IpAddr, usize>,
    next: usize,
    pub refused: u64,
    /// Connections open, for the metrics.
    open: Arc<AtomicU64>,
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
    let outbox = Arc::new(Outbox {
        tx,
        waker,
        dropped: AtomicU64::new(0),
    });
    Ok((
        TcpThread {
            poll,
            listeners,
            tls,
            rx,
            limits,
            conns: HashMap::new(),
            by_ft: HashMap::new(),
            per_ip: HashMap::new(),
            next: FIRST_CONN,
            refused: 0,
            open: Arc::default(),
        },
        outbox,
    ))
}

impl TcpThread {
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The number of connections open, kept up to date by [`TcpThread::run`].
    pub fn open_gauge(&self) -> Arc<AtomicU64> {
        self.open.clone()
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
                        }
                    }
                }
            }
            control.flush();
            self.deliver();
            self.open.store(self.conns.len() as u64, Ordering::Relaxed);
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
            if self.conns.len() >= self.limits.total
                || (self.limits.per_ip != 0 && n >= self.limits.per_ip)
            {
                self.refused += 1;
                continue; // dropped: closed
            }
            let t = Token(self.next);
            self.next = if self.next == usize::MAX - 1 {
                FIRST_CONN
            } else {
                self.next + 1
            };
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
                },
            );
        }
    }

    /// Read what is there and hand every whole message over; `false`: close.
    fn read(&mut self, t: Token, now: Instant, control: &mut impl Control) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return true;
        };
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
                        if !control.message(now, c.ft, &c.inbuf[..len]) {
                            return false;
                        }
                        c.inbuf.drain(..consumed);
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
                            if !control.message(now, c.ft, &c.inbuf[..len]) {
                                return false;
                            }
                            c.inbuf.drain(..consumed);
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
                while !c.out.is_empty() {
                    match c.stream.write(&c.out) {
                        Ok(0) => return false,
                        Ok(n) => {
                            c.out.drain(..n);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
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
        if want != c.writing {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, t, interest)
                .is_err()
            {
                return false;
            }
            c.writing = want;
        }
        true
    }

    /// Queue what the outbox holds on its connections and write it.
    fn deliver(&mut self) {
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
        let mut late: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.framed && now.duration_since(c.accepted) >= FIRST_MESSAGE)
            .map(|(t, _)| *t)
            .collect();
        // (Disjoint from `late`: those never sent a whole message.)
        let idle: Vec<(Token, FiveTuple)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.framed
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
