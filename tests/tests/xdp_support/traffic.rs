//! Traffic for the end-to-end tests in network namespaces: sockets bound inside a
//! namespace, ChannelData framing, paced senders and checking receivers (every loop
//! bounded in count and time).

use super::in_netns;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xturn_tests::TestClient;

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

/// One allocation of a test: its client, its relayed address, the peer socket its channel
/// leads to, and the channel number.
pub struct Flow {
    pub client: TestClient,
    pub relay: SocketAddr,
    pub peer: UdpSocket,
    pub channel: u16,
}

/// The sequence number of a correct datagram of a run of `count` each way, or what is
/// wrong with it: it must start with its number `n` and be exactly `data(n, count)`.
pub fn seq_of(d: &[u8], count: u64, data: fn(u64, u64) -> Vec<u8>) -> Result<u64, String> {
    let head: [u8; 8] = d
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} bytes: too short", d.len()))?;
    let n = u64::from_be_bytes(head);
    if n >= 2 * count || d != data(n, count).as_slice() {
        return Err(format!("datagram {n}: wrong bytes ({} bytes)", d.len()));
    }
    Ok(n)
}

/// `count` datagrams each way over `flows` at `rate`/s per direction, both directions at
/// once: datagram `n` (0..count to the peers, count..2*count to the clients) carries
/// `data(n, count)` on flow `n % flows.len()`. Asserts that every one arrived exactly
/// once, byte-exact, from the relayed address (at the peer) or as ChannelData on the
/// flow's channel from `server` (at the client). A failure shows the kernel drop counters
/// of `namespaces` that moved during the run ([`KernelDrops`]), then `diag`.
pub fn relay_each_way(
    flows: &[Flow],
    count: u64,
    rate: u64,
    server: SocketAddr,
    data: fn(u64, u64) -> Vec<u8>,
    namespaces: &[&str],
    diag: &dyn Fn() -> String,
) {
    let drops = KernelDrops::of(namespaces);
    let deadline = Instant::now() + Duration::from_secs(60);
    let stop = Arc::new(AtomicBool::new(false));
    let n_flows = flows.len() as u64;
    let (mut at_peers, mut at_clients) = (Vec::new(), Vec::new());
    for (i, f) in flows.iter().enumerate() {
        let (relay, channel, i) = (f.relay, f.channel, i as u64);
        at_peers.push(receive(
            f.peer.try_clone().unwrap(),
            stop.clone(),
            deadline,
            move |from, d| {
                let n = seq_of(d, count, data)?;
                if from != relay || n % n_flows != i || n >= count {
                    return Err(format!("datagram {n} from {from} on flow {i} ({relay})"));
                }
                Ok(n)
            },
        ));
        at_clients.push(receive(
            f.client.sock.try_clone().unwrap(),
            stop.clone(),
            deadline,
            move |from, d| {
                if from != server || d.len() < 4 {
                    return Err(format!("{} bytes from {from}", d.len()));
                }
                let len = u16::from_be_bytes([d[2], d[3]]) as usize;
                if u16::from_be_bytes([d[0], d[1]]) != channel || d.len() != 4 + len {
                    return Err(format!("bad ChannelData header {:02x?}", &d[..4]));
                }
                let n = seq_of(&d[4..], count, data)?;
                if n % n_flows != i || n < count {
                    return Err(format!("datagram {n} on flow {i}"));
                }
                Ok(n)
            },
        ));
    }
    let to_peers: Vec<(UdpSocket, u16)> = flows
        .iter()
        .map(|f| (f.client.sock.try_clone().unwrap(), f.channel))
        .collect();
    let sender_c = std::thread::spawn(move || {
        paced(0..count, rate, |n| {
            let (s, ch) = &to_peers[(n % n_flows) as usize];
            s.send_to(&channel_data(*ch, &data(n, count)), server)
                .unwrap();
        })
    });
    let to_clients: Vec<(UdpSocket, SocketAddr)> = flows
        .iter()
        .map(|f| (f.peer.try_clone().unwrap(), f.relay))
        .collect();
    let sender_p = std::thread::spawn(move || {
        paced(count..2 * count, rate, |n| {
            let (s, relay) = &to_clients[(n % n_flows) as usize];
            s.send_to(&data(n, count), *relay).unwrap();
        })
    });
    sender_c.join().unwrap();
    sender_p.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for (what, handles, start) in [("peers", at_peers, 0), ("clients", at_clients, count)] {
        let mut got = vec![0u32; count as usize];
        let mut bad = Vec::new();
        for h in handles {
            let s = h.join().unwrap();
            bad.extend(s.bad);
            for n in s.ok {
                got[(n - start) as usize] += 1;
            }
        }
        let missing: Vec<u64> = (0..count)
            .filter(|&k| got[k as usize] == 0)
            .map(|k| k + start)
            .collect();
        let dups = got.iter().filter(|&&c| c > 1).count();
        assert!(
            bad.is_empty() && missing.is_empty() && dups == 0,
            "at the {what}: {} missing (first {:?}), {dups} duplicated, wrong: {bad:?}\n{}\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            drops.moved(),
            diag()
        );
    }
}

/// After the permission of flow `f` expired (its channel lives on): 50 datagrams each
/// way, from the peer to the relayed address and as ChannelData from the client, and none
/// arrives within a second.
pub fn nothing_passes(f: &Flow, server: SocketAddr) {
    let mut buf = [0u8; 4096];
    for k in 0..50u8 {
        let d = vec![k; 100];
        f.peer.send_to(&d, f.relay).unwrap();
        f.client
            .sock
            .send_to(&channel_data(f.channel, &d), server)
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if let Ok((n, from)) = f.client.sock.recv_from(&mut buf) {
            panic!("the client got {n} bytes from {from} after the permission expired");
        }
        if let Ok((n, from)) = f.peer.recv_from(&mut buf) {
            panic!("the peer got {n} bytes from {from} after the permission expired");
        }
    }
}

/// The kernel's drop and error counters of some namespaces (every interface's dropped and
/// errors, the IP/UDP MIB counters that count a discarded datagram) and of every CPU's
/// backlog, so that a datagram missing after a run can be placed: lost in a queue or
/// stack outside the relay, or not sent on by the relay at all.
pub struct KernelDrops {
    namespaces: Vec<String>,
    before: std::collections::BTreeMap<String, u64>,
}

impl KernelDrops {
    /// A snapshot of the counters of `namespaces` now.
    pub fn of(namespaces: &[&str]) -> KernelDrops {
        let namespaces: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
        let before = drop_counters(&namespaces);
        KernelDrops { namespaces, before }
    }

    /// The counters that moved since the snapshot, one `name +delta` per line.
    pub fn moved(&self) -> String {
        let now = drop_counters(&self.namespaces);
        let moved: Vec<String> = now
            .iter()
            .filter_map(|(k, &v)| {
                let d = v.saturating_sub(self.before.get(k).copied().unwrap_or(0));
                (d > 0).then(|| format!("  {k} +{d}"))
            })
            .collect();
        if moved.is_empty() {
            "kernel drop counters: none moved".to_string()
        } else {
            format!("kernel drop counters that moved:\n{}", moved.join("\n"))
        }
    }
}

fn drop_counters(namespaces: &[String]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    for (cpu, line) in softnet.lines().enumerate() {
        // The second column: frames dropped because the CPU's backlog was full.
        if let Some(v) = line.split_whitespace().nth(1) {
            let v = u64::from_str_radix(v, 16).unwrap_or(0);
            out.insert(format!("cpu{cpu}/backlog_dropped"), v);
        }
    }
    for ns in namespaces {
        let links = std::process::Command::new("ip")
            .args(["-n", ns, "-j", "-s", "link", "show"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let links: serde_json::Value = serde_json::from_slice(&links).unwrap_or_default();
        for l in links.as_array().into_iter().flatten() {
            let name = l["ifname"].as_str().unwrap_or("?");
            for dir in ["rx", "tx"] {
                for what in ["dropped", "errors"] {
                    if let Some(v) = l["stats64"][dir][what].as_u64() {
                        out.insert(format!("{ns}/{name}/{dir}_{what}"), v);
                    }
                }
            }
        }
        // nstat: -a absolute values, -s without touching its history file, -z zeros too.
        let mib = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "nstat", "-asz"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in mib.lines() {
            let mut f = line.split_whitespace();
            let (Some(name), Some(v)) = (f.next(), f.next()) else {
                continue;
            };
            let dropping = [
                "Err", "Discard", "Drop", "NoPorts", "NoRoutes", "Csum", "Fail",
            ]
            .iter()
            .any(|s| name.contains(s));
            if dropping && (name.starts_with("Ip") || name.starts_with("Udp")) {
                if let Ok(v) = v.parse::<u64>() {
                    out.insert(format!("{ns}/{name}"), v);
                }
            }
        }
    }
    out
}
