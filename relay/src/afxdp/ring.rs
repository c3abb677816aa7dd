//! AF_XDP sockets, their UMEM and rings, behind the small [`Xsk`] API the forwarder
//! loop uses; [`XskSet`] is the real thing, [`MemRings`] an in-memory stand-in for tests
//! (no root, no NIC).
//!
//! One [`XskSet`] belongs to one forwarder thread: one UMEM shared by all its sockets
//! ("ports": one per (interface, queue), e.g. the client-side and the peer-side NIC
//! queue the thread serves), each socket with its own fill and completion ring
//! (`XDP_SHARED_UMEM` across devices), so a frame received on any port can be sent,
//! rewritten in place, on any other port without a copy.
//!
//! Invariant: every UMEM frame has exactly one owner at any time (the free list, one
//! port's fill ring, the caller, or one port's TX/completion ring) and the total never
//! changes. `Frames` tracks the owner of each frame; the checks that protect memory
//! safety (the kernel never writes a frame the caller holds) are `assert!`s, the full
//! recount is [`XskSet::check_accounting`] / [`MemRings::check_accounting`].
//!
//! Layout: this file is safe code (API, accounting, the ring policy shared by both
//! implementations); `raw` holds every `unsafe` block (mmaps, ring indices, syscalls);
//! `sys` builds the real sockets; `mem` emulates the kernel for tests.
//!
//! Kernel facts the policy follows (Documentation/networking/af_xdp.rst, net/xdp/xsk.c):
//! - received data starts [`RX_HEADROOM`] (XDP_PACKET_HEADROOM, 256) bytes into a chunk,
//!   (xturn's XDP program puts its `XskMeta` first in the data, the frame after it);
//! - a TX descriptor may start anywhere in a chunk (not crossing its end), so the
//!   forwarder can grow a frame into the headroom; the completion ring returns the
//!   descriptor's address;
//! - copy mode (veth, or a NIC without zero-copy support) transmits only inside
//!   `sendto`, at most [`TX_BATCH`] frames per call; zero-copy drivers transmit from
//!   NAPI and need a `sendto` only when the TX ring's need_wakeup flag is set;
//! - a TX descriptor the kernel finds invalid is skipped without a completion (the frame
//!   would be lost), so [`Xsk::send`] validates every descriptor first.

use std::io;
use std::time::Duration;

mod mem;
mod raw;
mod sys;
#[cfg(test)]
mod veth_tests;

pub use mem::MemRings;
pub use sys::{IfRef, XskSet};

use raw::{RawDesc, Ring, Umem};

/// Where received data starts in a chunk (XDP_PACKET_HEADROOM): the room in front of it
/// for metadata and for headers the forwarder prepends.
pub const RX_HEADROOM: usize = 256;

/// Frames a copy-mode `sendto` transmits at most (the kernel's TX_BATCH_SIZE).
pub const TX_BATCH: usize = 32;

/// Entries per ring (RX, TX, fill, completion) unless configured otherwise.
pub const DEFAULT_RING_SIZE: u32 = 2048;

/// A descriptor: `addr` is the UMEM offset of the first byte of the frame data, `len` its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
}

/// XDP_STATISTICS of one socket plus what the module counts itself.
///
/// For [`XskSet`] these are the kernel's counters; [`MemRings`] counts the same events
/// in its emulated kernel. The module's own per-port counts are [`PortCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QueueStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// The (producer, consumer) indices of a socket's four rings: entries in flight are
/// producer - consumer (wrapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RingIndices {
    pub fill: (u32, u32),
    pub rx: (u32, u32),
    pub tx: (u32, u32),
    pub completion: (u32, u32),
}

/// What the module counts per port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PortCounters {
    /// Descriptors handed to the caller by `recv`.
    pub rx: u64,
    /// Descriptors queued by `send`.
    pub tx: u64,
    /// TX completions reaped.
    pub completed: u64,
    /// Descriptors `send` could not queue (TX or completion ring full), left to the caller.
    pub tx_full: u64,
    /// `sendto` kicks, and those that failed with an unexpected error.
    pub tx_kicks: u64,
    pub tx_kick_errors: u64,
    /// `recvfrom` wake-ups for a fill ring with need_wakeup set.
    pub rx_wakeups: u64,
}

/// How a socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The NIC DMAs straight into the UMEM (XDP_ZEROCOPY).
    ZeroCopy,
    /// The kernel copies frames between its buffers and the UMEM (XDP_COPY; veth).
    Copy,
}

/// Which modes [`XskSet`] may bind in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy, else copy mode.
    #[default]
    Auto,
    ZeroCopyOnly,
    CopyOnly,
}

/// Frame size for an interface MTU: 2048-byte chunks hold frames up to 1792 bytes
/// (2048 minus [`RX_HEADROOM`]); a larger MTU (plus the Ethernet header and one VLAN
/// tag) needs 4096-byte chunks, or the kernel drops the larger frames.
/// Run the calling thread (the one that drains the rings) at nice value `nice`, -20..=19.
///
/// In copy mode the interface's NAPI poll (a softirq or a `napi/*` kthread) fills the RX
/// ring and the draining thread empties it; on a shared core both compete for the CPU.
/// When the producer wins, it keeps running the XDP program and copying frames that the
/// full socket then drops (receive livelock): the consumer should run first, and a
/// negative nice value lets it. Needs CAP_SYS_NICE for values below 0.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    if !(-20..=19).contains(&nice) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nice value {nice} is not in -20..=19"),
        ));
    }
    raw::set_thread_nice(nice)
}

pub fn frame_size_for_mtu(mtu: usize) -> usize {
    if mtu + 18 <= 2048 - RX_HEADROOM {
        2048
    } else {
        4096
    }
}

/// Sizes and options of an [`XskSet`] (and [`MemRings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// Chunk size: 2048 or 4096 ([`frame_size_for_mtu`]).
    pub frame_size: usize,
    /// Frames in the UMEM, shared by all ports. Enough for every port's fill ring plus
    /// the frames in flight: e.g. 2 x ports x ring_size.
    pub frames: usize,
    /// Entries of each of the four rings of each socket (power of two).
    pub ring_size: u32,
    /// Frames kept in each port's fill ring; 0: min(ring_size, frames / (2 x ports)).
    pub fill_per_port: u32,
    pub bind: BindMode,
    /// Bind with XDP_USE_NEED_WAKEUP (the kernel says when it needs a syscall).
    pub need_wakeup: bool,
}

impl XskConfig {
    pub fn new(frame_size: usize, frames: usize) -> XskConfig {
        XskConfig {
            frame_size,
            frames,
            ring_size: DEFAULT_RING_SIZE,
            fill_per_port: 0,
            bind: BindMode::Auto,
            need_wakeup: true,
        }
    }

    fn validate(&self, ports: usize) -> io::Result<u32> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return bad(format!("frame size {} (2048 or 4096)", self.frame_size));
        }
        if ports == 0 || ports > u16::MAX as usize {
            return bad(format!("{ports} ports"));
        }
        if !self.ring_size.is_power_of_two() || !(8..=1 << 16).contains(&self.ring_size) {
            return bad(format!(
                "ring size {} (a power of two, 8..=65536)",
                self.ring_size
            ));
        }
        if self.frames < ports || self.frames > u32::MAX as usize {
            return bad(format!("{} frames for {ports} ports", self.frames));
        }
        let fill = match self.fill_per_port {
            0 => (self.frames / (2 * ports)).clamp(1, self.ring_size as usize) as u32,
            n if n <= self.ring_size && n as usize * ports <= self.frames => n,
            n => {
                return bad(format!(
                    "fill_per_port {n} above the ring size or the frames"
                ))
            }
        };
        Ok(fill)
    }
}

/// What the forwarder loop needs from a set of AF_XDP sockets sharing one UMEM (one thread).
/// Ports are indices 0..n of the sockets of this set. Implemented by the real sockets and
/// by `MemRings` (tests).
pub trait Xsk {
    fn ports(&self) -> usize;
    /// Frame size of the UMEM (2048 or 4096); chunk of a desc = addr & !(frame_size-1) in aligned mode.
    fn frame_size(&self) -> usize;
    /// Move up to `max` received descriptors of `port` into `out` (appends). Non-blocking.
    fn recv(&mut self, port: usize, out: &mut Vec<Desc>, max: usize) -> usize;
    /// The whole UMEM chunk holding `addr`, and the offset of `addr` in it: the forwarder
    /// rewrites frames in place, using the headroom before the data (and the room the
    /// program's `XskMeta` took in front of the frame).
    ///
    /// Panics if the caller does not own the frame (it was not received, or was already
    /// sent or freed): the kernel may be writing it.
    fn chunk_mut(&mut self, addr: u64) -> (&mut [u8], usize);
    /// Queue descriptors for transmission on `port` (a desc received on any port of this
    /// set may be sent on any port: shared UMEM). Returns how many were queued; the rest
    /// stay owned by the caller (it must `free` or retry them). Kicks the kernel (sendto)
    /// when needed: need_wakeup set, and at least every 32 descriptors (veth sends at most
    /// 32 per kick).
    ///
    /// Panics if a descriptor's frame is not owned by the caller, if `len` is 0, or if
    /// the data would cross the end of its chunk (the kernel would drop such a
    /// descriptor without completing it, losing the frame).
    fn send(&mut self, port: usize, descs: &[Desc]) -> usize;
    /// Give a frame back (a dropped frame): it returns to the fill rings.
    /// Panics if the caller does not own it (a double free).
    fn free(&mut self, addr: u64);
    /// Housekeeping, called once per loop iteration: reap completion rings, refill every
    /// port's fill ring from free frames (keep fill rings populated), kick TX that is still
    /// pending, wake RX if need_wakeup is set on a fill ring.
    fn service(&mut self);
    /// Block until a port has something to receive or `timeout` passes (poll(2) on the
    /// sockets; MemRings returns at once).
    fn wait(&mut self, timeout: Duration);
    fn stats(&self, port: usize) -> QueueStats;
}

// ---- frame accounting -----------------------------------------------------------------

/// Who owns a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// On the free list.
    Free,
    /// Given to the kernel in this port's fill ring (until it comes back on its RX ring).
    Fill(u16),
    /// Handed to the caller by `recv`.
    User,
    /// Queued on this port's TX ring (until it comes back on its completion ring).
    Tx(u16),
}

/// The owner of every frame, and the free list.
struct Frames {
    owner: Vec<Owner>,
    /// Chunk addresses of the free frames (a stack: recently used frames are warm).
    free: Vec<u64>,
    shift: u32,
    in_fill: Vec<u32>,
    in_tx: Vec<u32>,
    user: usize,
}

impl Frames {
    fn new(frames: usize, frame_size: usize, ports: usize) -> Frames {
        let shift = frame_size.trailing_zeros();
        Frames {
            owner: vec![Owner::Free; frames],
            // Reversed, so that frame 0 is handed out first.
            free: (0..frames as u64).rev().map(|i| i << shift).collect(),
            shift,
            in_fill: vec![0; ports],
            in_tx: vec![0; ports],
            user: 0,
        }
    }

    fn total(&self) -> usize {
        self.owner.len()
    }

    fn index(&self, addr: u64) -> usize {
        let i = (addr >> self.shift) as usize;
        assert!(i < self.owner.len(), "address {addr:#x} beyond the UMEM");
        i
    }

    fn set(&mut self, addr: u64, from: Owner, to: Owner, what: &str) -> usize {
        let i = self.index(addr);
        let o = self.owner[i];
        assert!(
            o == from,
            "{what}: frame {i} (address {addr:#x}) is owned by {o:?}, not {from:?}"
        );
        self.owner[i] = to;
        i
    }

    /// A free frame for `port`'s fill ring.
    fn take_for_fill(&mut self, port: usize) -> Option<u64> {
        let a = self.free.pop()?;
        self.set(a, Owner::Free, Owner::Fill(port as u16), "fill");
        self.in_fill[port] += 1;
        Some(a)
    }

    /// A free frame handed straight to the caller (a frame to transmit that was not
    /// received: a traffic generator's).
    fn take_for_user(&mut self) -> Option<u64> {
        let a = self.free.pop()?;
        self.set(a, Owner::Free, Owner::User, "alloc");
        self.user += 1;
        Some(a)
    }

    /// The kernel delivered `addr` on `port`'s RX ring.
    fn received(&mut self, port: usize, addr: u64) {
        self.set(
            addr,
            Owner::Fill(port as u16),
            Owner::User,
            "kernel RX descriptor",
        );
        self.in_fill[port] -= 1;
        self.user += 1;
    }

    fn is_user(&self, addr: u64) -> bool {
        self.owner[self.index(addr)] == Owner::User
    }

    fn mark_tx(&mut self, port: usize, addr: u64) {
        self.set(addr, Owner::User, Owner::Tx(port as u16), "send");
        self.user -= 1;
        self.in_tx[port] += 1;
    }

    /// The kernel completed `addr` on `port`'s completion ring.
    fn completed(&mut self, port: usize, addr: u64) {
        let i = self.set(
            addr,
            Owner::Tx(port as u16),
            Owner::Free,
            "kernel completion",
        );
        self.in_tx[port] -= 1;
        self.free.push((i as u64) << self.shift);
    }

    fn release(&mut self, addr: u64) {
        let i = self.set(addr, Owner::User, Owner::Free, "free");
        self.user -= 1;
        self.free.push((i as u64) << self.shift);
    }

    /// The counters add up to the total (O(ports)).
    fn counts_add_up(&self) -> bool {
        let k: usize = self
            .in_fill
            .iter()
            .chain(&self.in_tx)
            .map(|&n| n as usize)
            .sum();
        self.free.len() + self.user + k == self.total()
    }

    /// Full recount (O(frames)): every frame has one owner and the counters match.
    fn check(&self) -> Result<(), String> {
        let ports = self.in_fill.len();
        let (mut fill, mut tx) = (vec![0u32; ports], vec![0u32; ports]);
        let (mut free, mut user) = (0usize, 0usize);
        for o in &self.owner {
            match *o {
                Owner::Free => free += 1,
                Owner::Fill(p) => fill[p as usize] += 1,
                Owner::User => user += 1,
                Owner::Tx(p) => tx[p as usize] += 1,
            }
        }
        let mut seen = vec![false; self.owner.len()];
        for &a in &self.free {
            let i = self.index(a);
            if a != (i as u64) << self.shift || seen[i] || self.owner[i] != Owner::Free {
                return Err(format!("free list entry {a:#x} is wrong or repeated"));
            }
            seen[i] = true;
        }
        if free != self.free.len() || user != self.user || fill != self.in_fill || tx != self.in_tx
        {
            return Err(format!(
                "owners: free {free} user {user} fill {fill:?} tx {tx:?}; counters: free list {} \
                 user {} fill {:?} tx {:?}",
                self.free.len(),
                self.user,
                self.in_fill,
                self.in_tx
            ));
        }
        Ok(())
    }
}

// ---- the ring policy, shared by XskSet and MemRings -----------------------------------

/// The four rings of one socket (user-space ends).
struct PortRings {
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<RawDesc>,
    tx: Ring<RawDesc>,
}

/// When a port's TX ring needs a `sendto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKick {
    /// Copy mode: the kernel transmits only inside `sendto`, [`TX_BATCH`] per call, so
    /// kick until the ring is drained.
    UntilDrained,
    /// Zero-copy with need_wakeup: one kick when the TX ring's flag asks for it.
    WhenFlagged,
    /// Zero-copy without need_wakeup: one kick whenever something is pending.
    Always,
}

/// What differs between the real kernel and the emulated one.
trait Driver {
    fn tx_kick(&self, port: usize) -> TxKick;
    /// One `sendto`. Errors that only mean "try again later" (EAGAIN, EBUSY, ENOBUFS,
    /// ENETDOWN) are `Ok`.
    fn kick_tx(&mut self, port: usize, umem: &Umem) -> io::Result<()>;
    fn wake_rx(&mut self, port: usize);
    fn wait(&mut self, timeout: Duration);
    fn stats(&self, port: usize) -> QueueStats;
}

/// Whether a kick error only means "try again later" (as libxdp's kick_tx treats them).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::EINTR)
    )
}

struct Core<D: Driver> {
    // Field order is drop order: rings are unmapped, then the sockets closed, then the
    // UMEM unmapped.
    rings: Vec<PortRings>,
    driver: D,
    umem: Umem,
    frames: Frames,
    counters: Vec<PortCounters>,
    frame_size: usize,
    fill_per_port: u32,
    /// Port refilled first by the next `refill` (round robin when frames are scarce).
    next_fill: usize,
}

impl<D: Driver> Core<D> {
    fn new(rings: Vec<PortRings>, driver: D, umem: Umem, cfg: &XskConfig, fill: u32) -> Self {
        let ports = rings.len();
        let mut c = Core {
            rings,
            driver,
            umem,
            frames: Frames::new(cfg.frames, cfg.frame_size, ports),
            counters: vec![PortCounters::default(); ports],
            frame_size: cfg.frame_size,
            fill_per_port: fill,
            next_fill: 0,
        };
        c.refill();
        c
    }

    /// Move completed TX frames of `port` to the free list.
    fn reap(&mut self, port: usize) {
        let Core { rings, frames, .. } = self;
        let r = &mut rings[port];
        let n = r.comp.consume(r.comp.size(), |a| frames.completed(port, a));
        self.counters[port].completed += n as u64;
    }

    /// Top every port's fill ring up to `fill_per_port` from the free list.
    fn refill(&mut self) {
        let ports = self.rings.len();
        for k in 0..ports {
            let port = (self.next_fill + k) % ports;
            let want = self.fill_per_port - self.frames.in_fill[port];
            let n = want.min(self.frames.free.len() as u32);
            if n == 0 {
                continue;
            }
            let Core { rings, frames, .. } = self;
            rings[port].fill.produce(n, || {
                frames
                    .take_for_fill(port)
                    .expect("n is at most the free frames")
            });
        }
        self.next_fill = (self.next_fill + 1) % ports;
    }

    /// Make the kernel transmit what is on `port`'s TX ring. Copy mode: `sendto` until the
    /// ring is drained (each sends at most TX_BATCH) or no longer drains (completion ring
    /// full, device busy: `service` tries again). Zero-copy: one `sendto` if the kernel
    /// asks for it (need_wakeup).
    fn kick_tx(&mut self, port: usize) {
        let mut pending = self.rings[port].tx.unconsumed();
        if pending == 0 {
            return;
        }
        match self.driver.tx_kick(port) {
            TxKick::UntilDrained => {}
            TxKick::WhenFlagged => {
                if self.rings[port].tx.needs_wakeup() {
                    self.kick_once(port);
                }
                return;
            }
            TxKick::Always => {
                self.kick_once(port);
                return;
            }
        }
        let mut tries = pending / TX_BATCH as u32 + 2;
        while tries > 0 {
            tries -= 1;
            if !self.kick_once(port) {
                return;
            }
            let now = self.rings[port].tx.unconsumed();
            if now == 0 || now >= pending {
                return;
            }
            pending = now;
        }
    }

    fn kick_once(&mut self, port: usize) -> bool {
        self.counters[port].tx_kicks += 1;
        match self.driver.kick_tx(port, &self.umem) {
            Ok(()) => true,
            Err(_) => {
                self.counters[port].tx_kick_errors += 1;
                false
            }
        }
    }

    fn recv(&mut self, port: usize, out: &mut Vec<Desc>, max: usize) -> usize {
        let Core { rings, frames, .. } = self;
        let fs = self.frame_size as u64;
        let n = rings[port]
            .rx
            .consume(max.min(u32::MAX as usize) as u32, |d| {
                debug_assert!(d.len > 0 && (d.addr & (fs - 1)) + d.len as u64 <= fs);
                frames.received(port, d.addr);
                out.push(Desc {
                    addr: d.addr,
                    len: d.len,
                });
            });
        self.counters[port].rx += n as u64;
        // Start loading every received frame (and the line right before it) now,
        // so that the caller's first touches of the batch overlap instead of stalling one
        // after the other: the line before the frame and its first 256 bytes (headers and
        // a small datagram; the hardware prefetcher follows longer ones).
        for d in &out[out.len() - n as usize..] {
            let a = d.addr as usize;
            self.umem.prefetch(a.saturating_sub(64));
            for off in (0..(d.len as usize).min(256)).step_by(64) {
                self.umem.prefetch(a + off);
            }
        }
        n as usize
    }

    fn chunk_mut(&mut self, addr: u64) -> (&mut [u8], usize) {
        assert!(
            self.frames.is_user(addr),
            "chunk_mut: frame at {addr:#x} is not owned by the caller"
        );
        let fs = self.frame_size as u64;
        let i = (addr / fs) as usize;
        (self.umem.chunk_mut(i), (addr & (fs - 1)) as usize)
    }

    fn send(&mut self, port: usize, descs: &[Desc]) -> usize {
        if descs.is_empty() {
            return 0;
        }
        let fs = self.frame_size as u64;
        let want = descs.len().min(u32::MAX as usize) as u32;
        // Every frame on the TX ring must find room on the completion ring.
        let room = |c: &mut Self| {
            let comp = c.rings[port].comp.size() - c.frames.in_tx[port];
            c.rings[port].tx.free(want).min(comp)
        };
        let mut n = room(self);
        if n < want {
            self.reap(port);
            n = room(self);
        }
        let n = n.min(want) as usize;
        for d in &descs[..n] {
            assert!(
                d.len > 0 && (d.addr & (fs - 1)) + d.len as u64 <= fs,
                "send: descriptor {d:?} empty or crossing its {fs}-byte chunk"
            );
            assert!(
                self.frames.is_user(d.addr),
                "send: frame at {:#x} is not owned by the caller",
                d.addr
            );
        }
        let Core { rings, frames, .. } = self;
        let mut it = descs[..n].iter();
        let q = rings[port].tx.produce(n as u32, || {
            let d = it.next().expect("produce asks for at most n entries");
            frames.mark_tx(port, d.addr);
            RawDesc {
                addr: d.addr,
                len: d.len,
                options: 0,
            }
        }) as usize;
        debug_assert_eq!(q, n);
        let c = &mut self.counters[port];
        c.tx += q as u64;
        c.tx_full += (descs.len() - q) as u64;
        self.kick_tx(port);
        q
    }

    fn free(&mut self, addr: u64) {
        self.frames.release(addr);
    }

    fn service(&mut self) {
        let ports = self.rings.len();
        for port in 0..ports {
            self.reap(port);
        }
        self.refill();
        for port in 0..ports {
            self.kick_tx(port);
            if self.rings[port].fill.needs_wakeup() {
                self.counters[port].rx_wakeups += 1;
                self.driver.wake_rx(port);
            }
        }
        debug_assert!(self.frames.counts_add_up(), "frame counters do not add up");
    }

    fn wait(&mut self, timeout: Duration) {
        if self.rings.iter().any(|r| r.rx.has_entries()) {
            return;
        }
        self.driver.wait(timeout);
    }
}

/// Implement [`Xsk`] and the accounting accessors for a wrapper `$t { core: Core<_> }`.
macro_rules! delegate_xsk {
    ($t:ty) => {
        impl $crate::afxdp::ring::Xsk for $t {
            fn ports(&self) -> usize {
                self.core.rings.len()
            }
            fn frame_size(&self) -> usize {
                self.core.frame_size
            }
            fn recv(&mut self, port: usize, out: &mut Vec<Desc>, max: usize) -> usize {
                self.core.recv(port, out, max)
            }
            fn chunk_mut(&mut self, addr: u64) -> (&mut [u8], usize) {
                self.core.chunk_mut(addr)
            }
            fn send(&mut self, port: usize, descs: &[Desc]) -> usize {
                self.core.send(port, descs)
            }
            fn free(&mut self, addr: u64) {
                self.core.free(addr)
            }
            fn service(&mut self) {
                self.core.service()
            }
            fn wait(&mut self, timeout: std::time::Duration) {
                self.core.wait(timeout)
            }
            fn stats(&self, port: usize) -> QueueStats {
                self.core.driver.stats(port)
            }
        }

        impl $t {
            /// A free frame for the caller to fill and send (or free), as if received:
            /// for a sender that transmits frames of its own (the benchmark's
            /// generator). `None` when every frame is in a ring or held.
            pub fn alloc(&mut self) -> Option<u64> {
                self.core.frames.take_for_user()
            }
            /// Frames in the UMEM (constant).
            pub fn frames(&self) -> usize {
                self.core.frames.total()
            }
            /// Frames on the free list (in user space, neither in a ring nor held by the
            /// caller).
            pub fn free_frames(&self) -> usize {
                self.core.frames.free.len()
            }
            /// Frames the caller holds (received, not yet sent or freed).
            pub fn caller_frames(&self) -> usize {
                self.core.frames.user
            }
            /// Frames in `port`'s fill ring and on its way through TX.
            pub fn fill_frames(&self, port: usize) -> usize {
                self.core.frames.in_fill[port] as usize
            }
            pub fn tx_frames(&self, port: usize) -> usize {
                self.core.frames.in_tx[port] as usize
            }
            /// Recount every frame's owner: Err describes the first inconsistency.
            pub fn check_accounting(&self) -> Result<(), String> {
                self.core.frames.check()
            }
            /// What the module counted for `port`.
            pub fn counters(&self, port: usize) -> PortCounters {
                self.core.counters[port]
            }
            /// The shared (producer, consumer) indices of `port`'s rings, as they are now.
            pub fn ring_indices(&self, port: usize) -> $crate::afxdp::ring::RingIndices {
                let r = &self.core.rings[port];
                $crate::afxdp::ring::RingIndices {
                    fill: r.fill.indices(),
                    rx: r.rx.indices(),
                    tx: r.tx.indices(),
                    completion: r.comp.indices(),
                }
            }
        }
    };
}
use delegate_xsk;

#[cfg(test)]
mod tests;
