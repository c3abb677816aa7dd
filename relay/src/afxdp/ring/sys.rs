//! [`XskSet`]: real AF_XDP sockets, one per (interface, queue), sharing one UMEM.
//!
//! Set-up (libxdp's `xsk_socket__create_shared` sequence): the first socket registers
//! the UMEM (XDP_UMEM_REG); every socket gets its own fill and completion ring plus RX
//! and TX rings, maps them, and binds; the first with XDP_ZEROCOPY (else XDP_COPY) and
//! XDP_USE_NEED_WAKEUP, the others with XDP_SHARED_UMEM and the first socket's fd. The
//! kernel forbids mode flags on a shared bind: the other sockets inherit the first one's
//! mode, so a set is zero-copy on every port or on none, and if any port cannot do
//! zero-copy the whole set is rebuilt in copy mode.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::raw::{self, Ring, Umem};
use super::{
    delegate_xsk, transient, BindMode, Core, Desc, Driver, Mode, PortCounters, PortRings,
    QueueStats, TxKick, XskConfig,
};

/// An interface given by name (resolved in the calling thread's network namespace) or
/// by index.
pub trait IfRef {
    fn ifindex(&self) -> io::Result<u32>;
}

impl IfRef for u32 {
    fn ifindex(&self) -> io::Result<u32> {
        Ok(*self)
    }
}

impl IfRef for &str {
    fn ifindex(&self) -> io::Result<u32> {
        raw::ifindex(self)
    }
}

impl IfRef for String {
    fn ifindex(&self) -> io::Result<u32> {
        raw::ifindex(self)
    }
}

struct Sock {
    fd: OwnedFd,
    ifindex: u32,
    queue: u32,
    mode: Mode,
}

struct Sockets {
    socks: Vec<Sock>,
    raw_fds: Vec<RawFd>,
    need_wakeup: bool,
}

impl Driver for Sockets {
    fn tx_kick(&self, port: usize) -> TxKick {
        match (self.socks[port].mode, self.need_wakeup) {
            (Mode::Copy, _) => TxKick::UntilDrained,
            (Mode::ZeroCopy, true) => TxKick::WhenFlagged,
            (Mode::ZeroCopy, false) => TxKick::Always,
        }
    }

    fn kick_tx(&mut self, port: usize, _umem: &Umem) -> io::Result<()> {
        match raw::kick_tx(self.socks[port].fd.as_fd()) {
            Err(e) if !transient(&e) => Err(e),
            _ => Ok(()),
        }
    }

    fn wake_rx(&mut self, port: usize) {
        // Errors only mean there was nothing to do.
        let _ = raw::wake_rx(self.socks[port].fd.as_fd());
    }

    fn wait(&mut self, timeout: Duration) {
        // An error (EINTR is already 0) means a broken fd: the next recv shows nothing
        // either, and the caller's loop is bounded by its own clock.
        let _ = raw::poll_in(&self.raw_fds, timeout);
    }

    fn stats(&self, port: usize) -> QueueStats {
        raw::statistics(self.socks[port].fd.as_fd()).unwrap_or_default()
    }
}

/// AF_XDP sockets on (interface, queue) pairs sharing one UMEM: see the module
/// documentation of [`super`]. Not `Sync`: one forwarder thread owns it.
pub struct XskSet {
    core: Core<Sockets>,
}

delegate_xsk!(XskSet);

impl XskSet {
    /// Sockets on `ports` (interface, queue) with a UMEM of `frames` frames of
    /// `frame_size` bytes (2048, or 4096 for an MTU above what 2048 holds:
    /// [`super::frame_size_for_mtu`]), rings of [`super::DEFAULT_RING_SIZE`], zero-copy
    /// if every port supports it, else copy mode. Interface names are resolved in the
    /// calling thread's network namespace. Needs CAP_NET_RAW (and CAP_IPC_LOCK or a
    /// large enough RLIMIT_MEMLOCK for the pinned UMEM).
    pub fn new<I: IfRef>(ports: &[(I, u32)], frame_size: usize, frames: usize) -> io::Result<Self> {
        Self::with_config(ports, XskConfig::new(frame_size, frames))
    }

    pub fn with_config<I: IfRef>(ports: &[(I, u32)], cfg: XskConfig) -> io::Result<Self> {
        let fill = cfg.validate(ports.len())?;
        let ifs = ports
            .iter()
            .map(|(i, q)| Ok((i.ifindex()?, *q)))
            .collect::<io::Result<Vec<_>>>()?;
        let umem = Umem::map(cfg.frames, cfg.frame_size)?;
        let modes: &[Mode] = match cfg.bind {
            BindMode::Auto => &[Mode::ZeroCopy, Mode::Copy],
            BindMode::ZeroCopyOnly => &[Mode::ZeroCopy],
            BindMode::CopyOnly => &[Mode::Copy],
        };
        let mut errors = Vec::new();
        for &mode in modes {
            match open(&umem, &ifs, mode, &cfg) {
                Ok((socks, rings)) => {
                    let raw_fds = socks.iter().map(|s| s.fd.as_raw_fd()).collect();
                    let driver = Sockets {
                        socks,
                        raw_fds,
                        need_wakeup: cfg.need_wakeup,
                    };
                    return Ok(XskSet {
                        core: Core::new(rings, driver, umem, &cfg, fill),
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        let last = errors.pop().expect("at least one mode was tried");
        let mut msg = last.to_string();
        for e in errors {
            msg = format!("{msg} (after: {e})");
        }
        Err(io::Error::new(last.kind(), msg))
    }

    /// How `port` is bound.
    pub fn mode(&self, port: usize) -> Mode {
        self.core.driver.socks[port].mode
    }

    /// The socket of `port`, for the XSKMAP slot of its queue.
    pub fn fd(&self, port: usize) -> RawFd {
        self.core.driver.socks[port].fd.as_raw_fd()
    }

    pub fn ifindex(&self, port: usize) -> u32 {
        self.core.driver.socks[port].ifindex
    }

    pub fn queue(&self, port: usize) -> u32 {
        self.core.driver.socks[port].queue
    }
}

fn ctx(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// bind(2), retried for up to [`BIND_BUSY_WAIT`] while the queue is still held by a
/// socket that was just closed (EBUSY: the kernel releases a socket's buffer pool from a
/// workqueue after close, e.g. when a relay restarts).
fn bind_retrying(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    queue: u32,
    flags: u16,
    shared: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let start = Instant::now();
    loop {
        match raw::bind(fd, ifindex, queue, flags, shared) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < BIND_BUSY_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// How long [`bind_retrying`] waits for a busy queue.
const BIND_BUSY_WAIT: Duration = Duration::from_secs(1);

/// Create, map and bind one socket per port in `mode`.
fn open(
    umem: &Umem,
    ifs: &[(u32, u32)],
    mode: Mode,
    cfg: &XskConfig,
) -> io::Result<(Vec<Sock>, Vec<PortRings>)> {
    let size = cfg.ring_size;
    let mut socks: Vec<Sock> = Vec::with_capacity(ifs.len());
    let mut rings = Vec::with_capacity(ifs.len());
    for (i, &(ifindex, queue)) in ifs.iter().enumerate() {
        let what = format!("AF_XDP socket on ifindex {ifindex} queue {queue} ({mode:?})");
        let fd = raw::xsk_socket().map_err(|e| ctx(e, what.clone()))?;
        let b = fd.as_fd();
        if i == 0 {
            raw::umem_reg(b, umem).map_err(|e| ctx(e, format!("{what}: XDP_UMEM_REG")))?;
        }
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            raw::set_ring_size(b, opt, size).map_err(|e| ctx(e, format!("{what}: ring size")))?;
        }
        let [rx, tx, fr, cr] = raw::mmap_offsets(b)?;
        let map_err = |e| ctx(e, format!("{what}: mmap of a ring"));
        rings.push(PortRings {
            fill: Ring::map(b, raw::PGOFF_FILL, fr, size).map_err(map_err)?,
            comp: Ring::map(b, raw::PGOFF_COMP, cr, size).map_err(map_err)?,
            rx: Ring::map(b, raw::PGOFF_RX, rx, size).map_err(map_err)?,
            tx: Ring::map(b, raw::PGOFF_TX, tx, size).map_err(map_err)?,
        });
        let (flags, shared) = match socks.first() {
            None => {
                let m = match mode {
                    Mode::ZeroCopy => libc::XDP_ZEROCOPY,
                    Mode::Copy => libc::XDP_COPY,
                };
                let w = if cfg.need_wakeup {
                    libc::XDP_USE_NEED_WAKEUP
                } else {
                    0
                };
                (m | w, None)
            }
            Some(first) => (libc::XDP_SHARED_UMEM, Some(first.fd.as_fd())),
        };
        bind_retrying(b, ifindex, queue, flags, shared)
            .map_err(|e| ctx(e, format!("{what}: bind")))?;
        let zc = raw::zero_copy(b)?;
        socks.push(Sock {
            fd,
            ifindex,
            queue,
            mode: if zc { Mode::ZeroCopy } else { Mode::Copy },
        });
    }
    Ok((socks, rings))
}
