//! Batched UDP I/O for the load generator, sink and reflector: socket set-up,
//! recvmmsg/sendmmsg batches, epoll, a timerfd for pacing, the monotonic clock, timer
//! slack and process CPU time. All `unsafe` syscall code of the bench is in this file.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Datagrams per recvmmsg/sendmmsg call.
pub use xturn_relay::mmsg::BATCH;
/// Bytes per batch slot: a whole datagram of a 1500-byte MTU (and then some). Longer
/// datagrams are flagged truncated by the kernel and counted as invalid.
pub const SLOT: usize = 2048;

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC, the clock of `Instant` and timerfd).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Let this thread's sleeps and timers fire within 1 µs of their deadline instead of the
/// default 50 µs slack: pacing and latency measurement depend on it.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long by value; no pointers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

/// CPU time (user + system) used by this process so far, in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let mut ru: libc::rusage = unsafe_zeroed();
    // SAFETY: valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for libc structs that are plain old data (all-zero is valid).
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// A non-blocking UDP socket bound to `bind`, optionally with SO_REUSEPORT (several sockets
/// on one port, the kernel spreads flows over them) and connected to `connect` (the
/// generator's sockets: one 5-tuple each, no destination per datagram).
pub fn udp_socket(
    bind: SocketAddr,
    reuse_port: bool,
    connect: Option<SocketAddr>,
) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    // Best effort: larger buffers absorb bursts; the kernel caps them at rmem_max/wmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&bind.into())?;
    if let Some(c) = connect {
        s.connect(&c.into())?;
    }
    Ok(s.into())
}

/// The local address the kernel would use to reach `dest` (route look-up via a connected
/// probe socket; nothing is sent).
pub fn local_addr_towards(dest: SocketAddr) -> io::Result<std::net::IpAddr> {
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(dest)?;
    Ok(s.local_addr()?.ip())
}

/// Wait until `fd` is readable or `timeout_ms` passes. Returns true if readable.
pub fn wait_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms.max(0)) };
    r > 0 && p.revents & (libc::POLLIN | libc::POLLERR) != 0
}

/// Raise the open-file limit to its hard maximum: one socket per allocation needs more
/// than the usual 1024 descriptors. Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

pub use xturn_relay::mmsg::RecvBatch;

/// Receive buffers for the generator and sinks: [`BATCH`] slots of [`SLOT`] bytes (the
/// relay's batched receive, `xturn_relay::mmsg`).
pub fn recv_batch() -> RecvBatch {
    RecvBatch::with_slot(SLOT)
}

pub use xturn_relay::mmsg::SendBatch;
pub use xturn_relay::net::Epoll;

/// A CLOCK_MONOTONIC timerfd armed at absolute times: wakes an epoll wait exactly when the
/// next paced datagram is due, so the thread can block on replies and timer together.
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(TimerFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fire once at `at_ns` on the [`now_ns`] clock (a time in the past fires at once).
    pub fn arm_at(&self, at_ns: u64) {
        let at_ns = at_ns.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid pointers; old value not requested.
        unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }

    /// Consume an expiry so the descriptor stops being readable.
    pub fn clear(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when not expired is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }
}

/// An AF_PACKET socket that sends whole Ethernet frames out of one interface: the
/// spoofed-source generator's (its frames carry whatever source address they say).
pub struct PacketSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    pub fn new(ifindex: u32) -> io::Result<PacketSocket> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                0, // send only: receive no protocol
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(PacketSocket { fd, addr })
    }

    /// Send one frame; `Ok(false)` when the interface's queue is full (ENOBUFS).
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        // SAFETY: the frame and the address are valid for the call's duration.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) => Ok(false),
            _ => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_on_loopback() {
        let a = udp_socket("127.0.0.1:0".parse().unwrap(), false, None).unwrap();
        let b_addr = {
            let b = udp_socket("127.0.0.1:0".parse().unwrap(), false, None).unwrap();
            let ad = b.local_addr().unwrap();
            (b, ad)
        };
        let (b, baddr) = b_addr;
        a.connect(baddr).unwrap();
        let mut sb = SendBatch::new();
        for i in 0..5 {
            sb.push_with(None, SLOT, |buf| {
                buf[..3].copy_from_slice(&[i as u8, 1, 2]);
                3
            });
        }
        assert_eq!(sb.send_once(a.as_raw_fd()).unwrap(), 5);
        assert!(sb.is_empty());
        let mut rb = recv_batch();
        let mut got = 0;
        for _ in 0..1000 {
            let n = rb.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                assert_eq!(rb.data(i).unwrap(), &[got as u8, 1, 2]);
                assert_eq!(rb.source(i).unwrap(), a.local_addr().unwrap());
                got += 1;
            }
            if got == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, 5);
    }
}
