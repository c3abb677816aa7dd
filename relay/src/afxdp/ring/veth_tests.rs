//! Privileged tests of [`XskSet`] over real veth pairs in network namespaces (NETLAB.md
//! names, addresses and guards). They skip with a note when not root.
//!
//! The XDP program that steers frames to the sockets is a raw BPF program built here
//! (redirect to the XSKMAP slot of the receive queue, XDP_PASS if the slot is empty;
//! ARP is passed so the kernel answers it), loaded and attached with `bpf(2)`.

use super::*;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

// ---- lab: namespaces, links, threads in a namespace ------------------------------------

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED {test}: needs root (network namespaces, XDP, AF_XDP)");
    }
    root
}

/// `xr<pid%10000><n>`: unique per test run and call (NETLAB.md).
fn unique_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "xr{}{}",
        std::process::id() % 10000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted (with its interfaces) on drop, also on panic.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A veth pair with one queue each way, end `a` (MAC `mac_a`, address `ip_a`) in
/// namespace `ns_a`, end `b` likewise; IPv6 off (no stray frames), TX checksum offload
/// off (NETLAB.md), both up.
#[allow(clippy::too_many_arguments)]
fn veth(
    a: &str,
    ns_a: &Netns,
    mac_a: &str,
    ip_a: &str,
    b: &str,
    ns_b: &Netns,
    mac_b: &str,
    ip_b: &str,
) {
    run(&[
        "ip",
        "link",
        "add",
        a,
        "address",
        mac_a,
        "netns",
        &ns_a.0,
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        b,
        "address",
        mac_b,
        "netns",
        &ns_b.0,
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
    ]);
    for (ns, dev, ip) in [(&ns_a.0, a, ip_a), (&ns_b.0, b, ip_b)] {
        let sysctl = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
        run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &sysctl]);
        run(&["ip", "-n", ns, "addr", "add", ip, "dev", dev]);
        run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
}

/// Run `f` on a new thread inside namespace `ns` (setns changes only that thread).
fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid namespace fd; setns(2) changes only the calling thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
}

// ---- a raw XDP program: redirect to the XSKMAP slot of the receive queue ----------------

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<RawFd> {
    // SAFETY: `attr` is a zeroed buffer at least as large as the part of union bpf_attr
    // the command reads; every pointer in it points to a live local of the caller.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: a descriptor bpf(2) just returned to us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn put32(attr: &mut [u64], at: usize, v: u32) {
    let w = &mut attr[at / 8];
    let s = (at % 8) * 8;
    *w = (*w & !(0xffff_ffffu64 << s)) | ((v as u64) << s);
}

/// A BPF_MAP_TYPE_XSKMAP of `n` slots.
fn xskmap(n: u32) -> OwnedFd {
    let mut a = [0u64; 16];
    put32(&mut a, 0, 17); // BPF_MAP_TYPE_XSKMAP
    put32(&mut a, 4, 4);
    put32(&mut a, 8, 4);
    put32(&mut a, 12, n);
    owned(bpf(0, &mut a).expect("BPF_MAP_CREATE xskmap"))
}

fn xskmap_set(map: BorrowedFd<'_>, slot: u32, sock: RawFd) {
    let mut a = [0u64; 8];
    put32(&mut a, 0, map.as_raw_fd() as u32);
    a[1] = &slot as *const u32 as u64;
    a[2] = &sock as *const RawFd as u64;
    bpf(2, &mut a).expect("BPF_MAP_UPDATE_ELEM");
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    u64::from_le_bytes([code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]])
}

/// `if frame too short or ARP: XDP_PASS; return bpf_redirect_map(map, rx_queue_index,
/// XDP_PASS)`.
fn redirect_prog(map: BorrowedFd<'_>) -> OwnedFd {
    let p = [
        insn(0xbf, 6, 1, 0, 0),               // r6 = ctx
        insn(0x61, 2, 1, 0, 0),               // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),               // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),               // r4 = r2
        insn(0x07, 4, 0, 0, 14),              // r4 += 14
        insn(0x2d, 4, 3, 8, 0),               // if r4 > r3 goto pass
        insn(0x69, 5, 2, 12, 0),              // r5 = ethertype (as loaded, LE)
        insn(0x15, 5, 0, 6, 0x0608),          // if ARP goto pass
        insn(0x61, 2, 6, 16, 0),              // r2 = ctx->rx_queue_index
        insn(0x18, 1, 1, 0, map.as_raw_fd()), // r1 = map (BPF_PSEUDO_MAP_FD)
        0,                                    //   (second half of ld_imm64)
        insn(0xb7, 3, 0, 0, 2),               // r3 = XDP_PASS (fallback)
        insn(0x85, 0, 0, 0, 51),              // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),               // exit
        insn(0xb7, 0, 0, 0, 2),               // pass: r0 = XDP_PASS
        insn(0x95, 0, 0, 0, 0),               // exit
    ];
    let license = b"GPL\0";
    let mut log = vec![0u8; 16384];
    let mut a = [0u64; 18];
    put32(&mut a, 0, 6); // BPF_PROG_TYPE_XDP
    put32(&mut a, 4, p.len() as u32);
    a[1] = p.as_ptr() as u64;
    a[2] = license.as_ptr() as u64;
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    a[4] = log.as_mut_ptr() as u64;
    match bpf(5, &mut a) {
        Ok(fd) => owned(fd),
        Err(e) => panic!(
            "BPF_PROG_LOAD: {e}: {}",
            String::from_utf8_lossy(&log).trim_end_matches('\0')
        ),
    }
}

/// Attach `prog` to `ifindex` in driver mode with a BPF link (detached on drop).
fn attach(prog: BorrowedFd<'_>, ifindex: u32) -> OwnedFd {
    let mut a = [0u64; 8];
    put32(&mut a, 0, prog.as_raw_fd() as u32);
    put32(&mut a, 4, ifindex);
    put32(&mut a, 8, 37); // BPF_XDP
    put32(&mut a, 12, 1 << 2); // XDP_FLAGS_DRV_MODE
    owned(bpf(28, &mut a).expect("BPF_LINK_CREATE xdp"))
}

// ---- frames -----------------------------------------------------------------------------

fn csum(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The IPv4 header length of an Ethernet/IPv4/UDP frame, if that is what it is.
fn ipv4_udp(f: &[u8]) -> Option<usize> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 || f[23] != 17 {
        return None;
    }
    let ihl = (f[14] & 0xf) as usize * 4;
    (ihl >= 20 && f.len() >= 14 + ihl + 8).then_some(ihl)
}

/// Swap Ethernet addresses, IPv4 addresses and UDP ports (checksums stay valid).
fn reflect(f: &mut [u8]) -> bool {
    let Some(ihl) = ipv4_udp(f) else {
        return false;
    };
    for i in 0..6 {
        f.swap(i, 6 + i);
    }
    for i in 0..4 {
        f.swap(26 + i, 30 + i);
    }
    let u = 14 + ihl;
    for i in 0..2 {
        f.swap(u + i, u + 2 + i);
    }
    true
}

/// Readdress an IPv4/UDP frame (MACs, addresses, destination port) and redo both
/// checksums.
fn readdress(
    f: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: SocketAddrV4,
) -> bool {
    let Some(ihl) = ipv4_udp(f) else {
        return false;
    };
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.ip().octets());
    f[24..26].fill(0);
    let c = fold(csum(&f[14..14 + ihl], 0));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let u = 14 + ihl;
    let udp_len = u16::from_be_bytes([f[u + 4], f[u + 5]]) as usize;
    assert!(u + udp_len <= f.len());
    f[u + 2..u + 4].copy_from_slice(&dst.port().to_be_bytes());
    f[u + 6..u + 8].fill(0);
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&f[26..34]);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let c = match fold(csum(&f[u..u + udp_len], csum(&pseudo, 0))) {
        0 => 0xffff,
        c => c,
    };
    f[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    true
}

fn payload(seq: u32) -> [u8; 64] {
    let mut p = [0u8; 64];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (seq as usize * 31 + i) as u8;
    }
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// What a forwarding thread reports when it stops.
#[derive(Debug)]
struct LoopReport {
    modes: Vec<Mode>,
    counters: Vec<PortCounters>,
    stats: Vec<QueueStats>,
    accounting: Result<(), String>,
    caller_frames: usize,
    in_tx: usize,
}

/// Bind an XskSet on `ports` in the calling thread's namespace, steer `steer`'s queue 0
/// to port 0, then until `stop` (at most 60 s): receive on port 0, `rewrite` each frame
/// (false: drop it), send it on port `out`.
fn forward_loop(
    ports: Vec<String>,
    out: usize,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
    mut rewrite: impl FnMut(&mut [u8]) -> bool,
) -> LoopReport {
    let specs: Vec<(&str, u32)> = ports.iter().map(|p| (p.as_str(), 0)).collect();
    let mut set = XskSet::new(&specs, 2048, 4096).expect("XskSet");
    let map = xskmap(1);
    xskmap_set(map.as_fd(), 0, set.fd(0));
    let prog = redirect_prog(map.as_fd());
    let _link = attach(prog.as_fd(), set.ifindex(0));
    ready.send(()).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let mut descs = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        descs.clear();
        set.recv(0, &mut descs, 64);
        let mut keep = Vec::with_capacity(descs.len());
        for d in &descs {
            let (chunk, off) = set.chunk_mut(d.addr);
            if rewrite(&mut chunk[off..off + d.len as usize]) {
                keep.push(*d);
            } else {
                set.free(d.addr);
            }
        }
        let q = set.send(out, &keep);
        for d in &keep[q..] {
            set.free(d.addr);
        }
        set.service();
        if descs.is_empty() {
            set.wait(Duration::from_millis(1));
        }
    }
    // Let the last transmissions complete.
    for _ in 0..100 {
        set.service();
        if (0..set.ports()).all(|p| set.tx_frames(p) == 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    LoopReport {
        modes: (0..set.ports()).map(|p| set.mode(p)).collect(),
        counters: (0..set.ports()).map(|p| set.counters(p)).collect(),
        stats: (0..set.ports()).map(|p| set.stats(p)).collect(),
        accounting: set.check_accounting(),
        caller_frames: set.caller_frames(),
        in_tx: (0..set.ports()).map(|p| set.tx_frames(p)).sum(),
    }
}

#[test]
fn veth_reflector_returns_every_datagram() {
    if !root_or_skip("veth_reflector_returns_every_datagram") {
        return;
    }
    const N: u32 = 10_000;
    let t = unique_tag();
    let far = Netns::new(format!("{t}f"));
    let mid = Netns::new(format!("{t}r"));
    let (a, b) = (format!("{t}a"), format!("{t}b"));
    veth(
        &a,
        &far,
        "02:00:00:00:01:02",
        "192.0.2.2/24",
        &b,
        &mid,
        "02:00:00:00:01:01",
        "192.0.2.1/24",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = mpsc::channel();
    let s = stop.clone();
    let reflector = spawn_in(&mid.0, move || {
        forward_loop(vec![b], 0, s, ready_tx, reflect)
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("reflector ready");

    // The far side: at most 64 datagrams in flight (a moderate, self-clocked rate), each
    // checked byte for byte when it comes back; bounded by a 30 s deadline.
    let client = spawn_in(&far.0, move || {
        let sock = UdpSocket::bind("192.0.2.2:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let server: SocketAddrV4 = "192.0.2.1:9999".parse().unwrap();
        let mut seen = vec![false; N as usize];
        let (mut sent, mut back, mut bad) = (0u32, 0u32, 0u32);
        let end = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 2048];
        while back < N && Instant::now() < end {
            while sent < N && sent - back < 64 {
                sock.send_to(&payload(sent), server).unwrap();
                sent += 1;
            }
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    let ok = from == server.into()
                        && seq < N
                        && !seen[seq as usize]
                        && buf[..n] == payload(seq)[..];
                    if ok {
                        seen[seq as usize] = true;
                        back += 1;
                    } else {
                        bad += 1;
                    }
                }
                // A lost datagram would stall the window: stop, the assert below says so.
                Err(_) => break,
            }
        }
        (sent, back, bad)
    });
    let (sent, back, bad) = client.join().expect("client thread");
    stop.store(true, Ordering::Relaxed);
    let r = reflector.join().expect("reflector thread");
    eprintln!("reflector: {r:?}");
    assert_eq!((sent, back, bad), (N, N, 0), "sent, came back, bad");
    assert_eq!(r.modes, vec![Mode::Copy], "veth has no zero-copy");
    assert_eq!(r.counters[0].rx, N as u64);
    assert_eq!(r.counters[0].tx, N as u64);
    assert_eq!(r.counters[0].completed, N as u64);
    assert_eq!(r.counters[0].tx_kick_errors, 0);
    assert_eq!(r.accounting, Ok(()));
    assert_eq!((r.caller_frames, r.in_tx), (0, 0));
    assert_eq!(r.stats[0].rx_dropped, 0);
}

#[test]
fn shared_umem_forwards_between_two_veths() {
    if !root_or_skip("shared_umem_forwards_between_two_veths") {
        return;
    }
    const N: u32 = 3000;
    let t = unique_tag();
    let client = Netns::new(format!("{t}c"));
    let relay = Netns::new(format!("{t}r"));
    let peer = Netns::new(format!("{t}p"));
    let (ca, rc, rp, pa) = (
        format!("{t}ca"),
        format!("{t}rc"),
        format!("{t}rp"),
        format!("{t}pa"),
    );
    veth(
        &ca,
        &client,
        "02:00:00:00:02:02",
        "192.0.2.2/24",
        &rc,
        &relay,
        "02:00:00:00:02:01",
        "192.0.2.1/24",
    );
    veth(
        &rp,
        &relay,
        "02:00:00:00:03:01",
        "198.51.100.1/24",
        &pa,
        &peer,
        "02:00:00:00:03:02",
        "198.51.100.2/24",
    );

    // The peer counts what arrives on 198.51.100.2:5000 (bounded by a deadline).
    let (peer_ready_tx, peer_ready) = mpsc::channel();
    let receiver = spawn_in(&peer.0, move || {
        let sock = UdpSocket::bind("198.51.100.2:5000").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        peer_ready_tx.send(()).unwrap();
        let mut seen = vec![false; N as usize];
        let (mut got, mut bad) = (0u32, 0u32);
        let end = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 2048];
        while got < N && Instant::now() < end {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    let ok = from.ip() == Ipv4Addr::new(198, 51, 100, 1)
                        && seq < N
                        && !seen[seq as usize]
                        && buf[..n] == payload(seq)[..];
                    if ok {
                        seen[seq as usize] = true;
                        got += 1;
                    } else {
                        bad += 1;
                    }
                }
                Err(_) if got > 0 => break,
                Err(_) => {}
            }
        }
        (got, bad)
    });
    peer_ready
        .recv_timeout(Duration::from_secs(10))
        .expect("peer ready");

    // The relay: in on rc (port 0), rewritten for the peer network, out on rp (port 1).
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = mpsc::channel();
    let s = stop.clone();
    let dst: SocketAddrV4 = "198.51.100.2:5000".parse().unwrap();
    let forwarder = spawn_in(&relay.0, move || {
        forward_loop(vec![rc, rp], 1, s, ready_tx, move |f| {
            readdress(
                f,
                [2, 0, 0, 0, 3, 1],
                [2, 0, 0, 0, 3, 2],
                Ipv4Addr::new(198, 51, 100, 1),
                dst,
            )
        })
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("forwarder ready");

    // The client: N datagrams, 32 per millisecond at most.
    let sender = spawn_in(&client.0, move || {
        let sock = UdpSocket::bind("192.0.2.2:0").unwrap();
        for seq in 0..N {
            sock.send_to(&payload(seq), "192.0.2.1:4000").unwrap();
            if seq % 32 == 31 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    sender.join().expect("sender thread");
    let (got, bad) = receiver.join().expect("receiver thread");
    stop.store(true, Ordering::Relaxed);
    let r = forwarder.join().expect("forwarder thread");
    eprintln!("forwarder: {r:?}");
    assert_eq!((got, bad), (N, 0), "arrived at the peer, bad");
    assert_eq!(r.modes, vec![Mode::Copy, Mode::Copy]);
    assert_eq!(r.counters[0].rx, N as u64);
    assert_eq!(r.counters[1].tx, N as u64);
    assert_eq!(r.counters[1].completed, N as u64);
    assert_eq!((r.counters[0].tx, r.counters[1].rx), (0, 0));
    assert_eq!(r.accounting, Ok(()));
    assert_eq!((r.caller_frames, r.in_tx), (0, 0));
}

#[test]
fn frame_helpers() {
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    f[0..6].copy_from_slice(&[1; 6]);
    f[6..12].copy_from_slice(&[2; 6]);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&32u16.to_be_bytes());
    f[23] = 17;
    f[26..30].copy_from_slice(&[192, 0, 2, 2]);
    f[30..34].copy_from_slice(&[192, 0, 2, 1]);
    f[34..36].copy_from_slice(&1000u16.to_be_bytes());
    f[36..38].copy_from_slice(&2000u16.to_be_bytes());
    f[38..40].copy_from_slice(&12u16.to_be_bytes());
    let orig = f.clone();
    assert!(reflect(&mut f));
    assert_eq!((&f[0..6], &f[6..12]), (&orig[6..12], &orig[0..6]));
    assert_eq!((&f[26..30], &f[30..34]), (&orig[30..34], &orig[26..30]));
    assert_eq!((&f[34..36], &f[36..38]), (&orig[36..38], &orig[34..36]));
    let dst: SocketAddrV4 = "198.51.100.2:5000".parse().unwrap();
    assert!(readdress(
        &mut f,
        [3; 6],
        [4; 6],
        Ipv4Addr::new(198, 51, 100, 1),
        dst
    ));
    assert_eq!(fold(csum(&f[14..34], 0)), 0, "IPv4 header checksum");
    let mut pseudo = f[26..34].to_vec();
    pseudo.extend_from_slice(&[0, 17, 0, 12]);
    assert_eq!(fold(csum(&f[34..46], csum(&pseudo, 0))), 0, "UDP checksum");
    f[12] = 0x86;
    assert!(!reflect(&mut f));
}

#[test]
fn rebinding_a_queue_right_after_close_succeeds() {
    if !root_or_skip("rebinding_a_queue_right_after_close_succeeds") {
        return;
    }
    let t = unique_tag();
    let a_ns = Netns::new(format!("{t}f"));
    let b_ns = Netns::new(format!("{t}r"));
    let (a, b) = (format!("{t}a"), format!("{t}b"));
    veth(
        &a,
        &a_ns,
        "02:00:00:00:04:02",
        "192.0.2.2/24",
        &b,
        &b_ns,
        "02:00:00:00:04:01",
        "192.0.2.1/24",
    );
    // The kernel releases a closed socket's pool from a workqueue: binding the same queue
    // at once can see EBUSY, which XskSet waits out.
    let r = spawn_in(&b_ns.0, move || {
        (0..5)
            .map(|_| XskSet::new(&[(b.as_str(), 0)], 2048, 256).map(|s| s.mode(0)))
            .collect::<Vec<_>>()
    })
    .join()
    .expect("bind thread");
    for m in r {
        assert_eq!(m.expect("bind after close"), Mode::Copy);
    }
}
