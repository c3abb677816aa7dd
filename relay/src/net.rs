//! Thin, batched UDP I/O of the socket path: SO_REUSEPORT listeners, relay sockets, the
//! socket a datagram leaves by, sendmmsg batches and epoll. Its `unsafe` syscalls are here
//! and in [`crate::mmsg`] (recvmmsg, sendmmsg).

pub use crate::mmsg::RecvBatch;
use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use xturn_control::RelayAddr;

/// The socket a datagram from `source` leaves by: the listener bound to it, else the
/// relayed address's socket. `None` when neither exists (the allocation just ended).
pub fn source_socket<'a>(
    listeners: &'a [(SocketAddr, UdpSocket)],
    relays: &'a HashMap<RelayAddr, Arc<UdpSocket>>,
    source: SocketAddr,
) -> Option<&'a UdpSocket> {
    match listeners.iter().find(|(a, _)| *a == source) {
        Some((_, s)) => Some(s),
        None => relays.get(&RelayAddr(source)).map(|s| &**s),
    }
}

/// A non-blocking UDP socket bound with SO_REUSEPORT, one per worker thread.
pub fn reuseport_listener(addr: SocketAddr) -> Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())
        .with_context(|| format!("cannot bind the listening address {addr}"))?;
    Ok(s.into())
}

/// A relay socket bound exactly to `addr` (no address reuse: a port in use fails, and the
/// control plane picks another).
pub fn relay_socket(addr: SocketAddr, dont_fragment: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(1 << 20);
    if dont_fragment {
        let (level, opt, val) = if addr.is_ipv4() {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            )
        } else {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )
        };
        // SAFETY: valid fd, pointer to a live c_int and its exact size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                level,
                opt,
                &val as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Largest datagram the socket path's receive slots hold; longer ones are flagged
/// truncated and dropped.
pub const SLOT: usize = 65536;
pub use crate::mmsg::BATCH;

/// Receive buffers for the socket path: [`BATCH`] slots of [`SLOT`] bytes.
pub fn recv_batch() -> RecvBatch {
    RecvBatch::with_slot(SLOT)
}

pub use crate::mmsg::{SendBatch, SocketBatches};

/// A minimal epoll wrapper; tokens are u64 chosen by the caller. Registration works from
/// any thread (epoll_ctl is thread-safe), so one thread may add sockets to another's.
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Register `fd` for input with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid pointer to an epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn del(&self, fd: RawFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer on modern kernels; pass a valid one.
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Wait up to `timeout_ms` (0: poll) and put the ready tokens (at most 256) in `ready`.
    pub fn wait(&self, timeout_ms: i32, ready: &mut Vec<u64>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        ready.clear();
        // SAFETY: events is a valid writable buffer of the given length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        ready.extend(events.iter().take(n.max(0) as usize).map(|e| e.u64));
    }
}
