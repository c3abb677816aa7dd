//! Traffic for the end-to-end tests in network namespaces: sockets bound inside a
//! namespace, ChannelData framing, paced senders and checking receivers (every loop
//! bounded in count and time).

use super::in_netns;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A UDP socket bound in namespace `ns`, with a large receive buffer and a short timeout.
pub fn socket_in(ns: &str, local: SocketAddr) -> UdpSocket {
    in_netns(ns, move || {
        let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on a live socket with a pointer to a local int of the size given.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    })
}

pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + data.len());
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Send datagrams `seqs` with `send`, paced at `rate`/s.
pub fn paced(seqs: std::ops::Range<u64>, rate: u64, mut send: impl FnMut(u64)) {
    let start = Instant::now();
    for (k, n) in seqs.enumerate() {
        send(n);
        if k % 32 == 31 {
            let due = start + Duration::from_secs_f64((k + 1) as f64 / rate as f64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }
}

/// What one receiving socket saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub ok: Vec<u64>,
    pub bad: Vec<String>,
}

/// Receive on `sock` until `stop` is set and the socket has been quiet for a moment, or
/// `deadline`; `check` returns the sequence number of a correct datagram or why not.
pub fn receive(
    sock: UdpSocket,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    check: impl Fn(SocketAddr, &[u8]) -> Result<u64, String> + Send + 'static,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => match check(from, &buf[..n]) {
                    Ok(seq) => seen.ok.push(seq),
                    Err(e) if seen.bad.len() < 10 => seen.bad.push(e),
                    Err(_) => {}
                },
                Err(_) if stop.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        seen
    })
}
