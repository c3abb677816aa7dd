//! Thin, batched UDP I/O: SO_REUSEPORT listeners, relay sockets, recvmmsg/sendmmsg and
//! epoll. All `unsafe` syscall code of the socket path is in this file.

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use xturn_relay::mmsg::send_all;
pub use xturn_relay::mmsg::RecvBatch;

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
pub use xturn_relay::mmsg::BATCH;

/// Receive buffers for the socket path: [`BATCH`] slots of [`SLOT`] bytes.
pub fn recv_batch() -> RecvBatch {
    RecvBatch::with_slot(SLOT)
}

/// Datagrams queued for one socket, sent with sendmmsg.
pub struct SendBatch {
    data: Vec<u8>,
    items: Vec<(SockAddr, usize, usize)>,
}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            data: Vec::with_capacity(SLOT),
            items: Vec::with_capacity(BATCH),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Forget what is queued (its socket is gone).
    pub fn clear(&mut self) {
        self.items.clear();
        self.data.clear();
    }

    pub fn push(&mut self, to: SocketAddr, payload: &[u8]) {
        let off = self.data.len();
        self.data.extend_from_slice(payload);
        self.items.push((to.into(), off, payload.len()));
    }

    /// Send everything queued on `fd`; datagrams the kernel refuses (full buffers,
    /// unreachable) are dropped, as UDP would. Returns how many were sent.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut sent = 0;
        let mut start = 0;
        while start < self.items.len() {
            let end = (start + BATCH).min(self.items.len());
            let mut iovs: Vec<libc::iovec> = self.items[start..end]
                .iter()
                .map(|(_, off, len)| libc::iovec {
                    iov_base: self.data[*off..].as_ptr() as *mut libc::c_void,
                    iov_len: *len,
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(end - start);
            for (k, (addr, _, _)) in self.items[start..end].iter().enumerate() {
                // SAFETY: plain old data, fields set below.
                let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
                h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = addr.len();
                h.msg_hdr.msg_iov = &mut iovs[k];
                h.msg_hdr.msg_iovlen = 1;
                hdrs.push(h);
            }
            // One attempt per datagram: what the kernel refuses (EAGAIN, ECONNREFUSED,
            // EMSGSIZE...) is dropped, as UDP would.
            sent += send_all(fd, &mut hdrs, 1);
            start = end;
        }
        self.items.clear();
        self.data.clear();
        sent
    }
}

/// A minimal epoll wrapper; tokens are u64 chosen by the caller.
pub struct Epoll {
    fd: RawFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    pub fn raw(&self) -> RawFd {
        self.fd
    }

    /// Register `fd` for input with `token` on the epoll instance `epfd`. Callable from
    /// any thread.
    pub fn add(epfd: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid pointer to an epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn del(epfd: RawFd, fd: RawFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer on modern kernels; pass a valid one.
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Wait up to `timeout_ms`; fills `tokens` with ready tokens.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: events is a valid writable slice of the given length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}
