//! Shared by the XDP tests (`xdp_*.rs`): the committed object, a root check, network
//! namespaces with a Drop guard, a minimal AF_XDP socket, and a frame builder with its
//! own checksum code (independent of the program's) to build inputs and verify outputs.

#![allow(
    dead_code,
    reason = "each xdp_*.rs test binary uses its own part of these helpers"
)]

pub mod traffic;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The object `xturn --xdp` loads (the same file, included the same way).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../../../xdp-ebpf/xturn-xdp.bpf.o");

/// The XDP_PASS program (`program_names::PASS`) on `dev` in namespace `ns`, in driver
/// mode, detached when the returned object drops: on the far end of a veth, it makes
/// frames XDP_TX'd or redirected into the near end arrive.
pub fn attach_pass(ns: &str, dev: &str) -> aya::Ebpf {
    let dev = dev.to_string();
    in_netns(ns, move || {
        let mut ebpf = aya::Ebpf::load(OBJECT).expect("load object");
        let p: &mut aya::programs::Xdp = ebpf
            .program_mut(xturn_xdp_common::program_names::PASS)
            .unwrap()
            .try_into()
            .unwrap();
        p.load().expect("load pass program");
        p.attach(&dev, aya::programs::XdpMode::Driver)
            .expect("attach pass program");
        ebpf
    })
}

/// True when running as root; otherwise prints why `test` is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        eprintln!(
            "SKIPPED {test}: needs root (loading XDP programs, BPF_PROG_TEST_RUN, network namespaces)"
        );
    }
    root
}

/// Run a command; panic with its output unless it succeeds.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let text = xturn_tests::output_text(&out);
    assert!(out.status.success(), "{args:?} failed: {text}");
    text
}

/// A name prefix unique to this test process and call: `xt<pid%10000><n>` (NETLAB.md).
pub fn unique_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "xt{}{}",
        std::process::id() % 10000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted (with its interfaces) on drop, also on panic.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Run `f` on a thread that has entered network namespace `ns` (setns affects only the
/// calling thread; sockets and attachments made there keep their namespace).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid namespace fd; setns(2) changes only this thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// An AF_XDP socket bound (copy mode) to `queue` of interface `ifname`, with a UMEM and
/// fill, completion and RX rings: enough to stand in an XSKMAP slot. Frames are never
/// read from it (no ring is mapped).
pub struct Xsk {
    pub fd: OwnedFd,
    umem: *mut libc::c_void,
    umem_len: usize,
}

impl Xsk {
    pub fn bind(ifname: &str, queue: u32) -> std::io::Result<Xsk> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r)
            }
        };
        let umem_len = 16 * 4096;
        // SAFETY: plain syscalls on values owned here; every pointer passed points to a
        // live local of the size given; the mapping is unmapped in Drop.
        unsafe {
            let fd = OwnedFd::from_raw_fd(check(libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0))?);
            let umem = libc::mmap(
                std::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if umem == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let xsk = Xsk { fd, umem, umem_len };
            let reg = libc::xdp_umem_reg {
                addr: umem as u64,
                len: umem_len as u64,
                chunk_size: 4096,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            let raw = xsk.fd.as_raw_fd();
            let set = |opt: libc::c_int, v: *const libc::c_void, len: usize| {
                check(libc::setsockopt(
                    raw,
                    libc::SOL_XDP,
                    opt,
                    v,
                    len as libc::socklen_t,
                ))
            };
            set(
                libc::XDP_UMEM_REG,
                (&raw const reg).cast(),
                std::mem::size_of_val(&reg),
            )?;
            let entries: u32 = 16;
            for opt in [
                libc::XDP_UMEM_FILL_RING,
                libc::XDP_UMEM_COMPLETION_RING,
                libc::XDP_RX_RING,
            ] {
                set(opt, (&raw const entries).cast(), 4)?;
            }
            let name = std::ffi::CString::new(ifname).unwrap();
            let ifindex = libc::if_nametoindex(name.as_ptr());
            if ifindex == 0 {
                return Err(std::io::Error::last_os_error());
            }
            let sa = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: libc::XDP_COPY,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            check(libc::bind(
                raw,
                (&raw const sa).cast(),
                std::mem::size_of_val(&sa) as libc::socklen_t,
            ))?;
            Ok(xsk)
        }
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `bind`, unmapped once; the socket (closed after this
        // by OwnedFd) holds its own pin on the pages.
        unsafe { libc::munmap(self.umem, self.umem_len) };
    }
}

// SAFETY: the UMEM pointer is only unmapped in Drop; the kernel owns the data path.
unsafe impl Send for Xsk {}

pub const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// RFC 1071 one's complement sum of big-endian 16-bit words (odd length padded).
pub fn ones_sum(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    s
}

pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo_header(src: IpAddr, dst: IpAddr, udp_len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, 17]);
            p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(udp_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => panic!("mixed families"),
    }
    p
}

/// UDP checksum of `udp` (header with a zero checksum field, then payload).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut all = pseudo_header(src, dst, udp.len());
    all.extend_from_slice(udp);
    let c = !fold(ones_sum(&all));
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// How to build a frame.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TOS / traffic class; IPv4 only: identification, flags+fragment offset, options.
    /// `ttl` is the TTL / hop limit.
    pub tos: u8,
    /// IPv6 only: the flow label.
    pub flow: u32,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub ipv4_options: Vec<u8>,
    /// Bytes after the IP packet (Ethernet padding).
    pub trailer: Vec<u8>,
    /// Corrupt the UDP checksum.
    pub bad_udp_checksum: bool,
    /// Send a zero UDP checksum ("none" over IPv4, invalid over IPv6).
    pub zero_udp_checksum: bool,
    /// Leave the UDP checksum to offload, as a local socket on a veth with TX checksum
    /// offload on does (CHECKSUM_PARTIAL): the field holds the folded pseudo-header sum.
    pub partial_udp_checksum: bool,
    pub protocol: u8,
}

impl FrameSpec {
    pub fn new(src: SocketAddr, dst: SocketAddr) -> FrameSpec {
        FrameSpec {
            src_mac: MAC_CLIENT,
            dst_mac: MAC_SERVER,
            src,
            dst,
            tos: 0,
            flow: 0,
            id: 0x1234,
            frag: 0x4000,
            ttl: 63,
            ipv4_options: Vec::new(),
            trailer: Vec::new(),
            bad_udp_checksum: false,
            zero_udp_checksum: false,
            partial_udp_checksum: false,
            protocol: 17,
        }
    }

    /// The Ethernet frame carrying `payload` in UDP (or in `protocol`).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut udp = Vec::new();
        udp.extend_from_slice(&self.src.port().to_be_bytes());
        udp.extend_from_slice(&self.dst.port().to_be_bytes());
        udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let mut c = udp_checksum(self.src.ip(), self.dst.ip(), &udp);
        if self.bad_udp_checksum {
            c ^= 0x0101;
        }
        if self.zero_udp_checksum {
            c = 0;
        }
        if self.partial_udp_checksum {
            c = fold(ones_sum(&pseudo_header(
                self.src.ip(),
                self.dst.ip(),
                udp.len(),
            )));
        }
        udp[6..8].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let ihl = 5 + self.ipv4_options.len() / 4;
                let mut ip = vec![(0x40 | ihl) as u8, self.tos];
                ip.extend_from_slice(&((ihl * 4 + udp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&self.id.to_be_bytes());
                ip.extend_from_slice(&self.frag.to_be_bytes());
                ip.extend_from_slice(&[self.ttl, self.protocol, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&self.ipv4_options);
                let c = !fold(ones_sum(&ip));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd]);
                // Traffic class `tos`, flow label `flow` (20 bits).
                let w = 0x6000_0000 | u32::from(self.tos) << 20 | (self.flow & 0xf_ffff);
                f.extend_from_slice(&w.to_be_bytes());
                f.extend_from_slice(&(udp.len() as u16).to_be_bytes());
                f.extend_from_slice(&[self.protocol, self.ttl]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed families"),
        }
        f.extend_from_slice(&udp);
        f.extend_from_slice(&self.trailer);
        f
    }
}

/// A parsed frame: addresses, ports and UDP payload, with every checksum verified
/// (panics with `what` on a bad one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

pub fn parse_checked(f: &[u8], what: &str) -> Parsed {
    assert!(f.len() >= 14, "{what}: short frame");
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    let (src_ip, dst_ip, l4): (IpAddr, IpAddr, &[u8]) = match [f[12], f[13]] {
        [0x08, 0x00] => {
            let ip = &f[14..];
            let ihl = (ip[0] & 0x0f) as usize * 4;
            assert_eq!(
                fold(ones_sum(&ip[..ihl])),
                0xffff,
                "{what}: bad IPv4 header checksum"
            );
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            assert_eq!(ip[9], 17, "{what}: not UDP");
            let s: [u8; 4] = ip[12..16].try_into().unwrap();
            let d: [u8; 4] = ip[16..20].try_into().unwrap();
            (s.into(), d.into(), &ip[ihl..total])
        }
        [0x86, 0xdd] => {
            let ip = &f[14..];
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            assert_eq!(ip[6], 17, "{what}: not UDP");
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let d: [u8; 16] = ip[24..40].try_into().unwrap();
            (s.into(), d.into(), &ip[40..40 + plen])
        }
        t => panic!("{what}: ethertype {t:?}"),
    };
    let udp_len = u16::from_be_bytes([l4[4], l4[5]]) as usize;
    assert_eq!(udp_len, l4.len(), "{what}: UDP length");
    let mut zeroed = l4.to_vec();
    zeroed[6..8].copy_from_slice(&[0, 0]);
    let want = udp_checksum(src_ip, dst_ip, &zeroed);
    assert_eq!(
        u16::from_be_bytes([l4[6], l4[7]]),
        want,
        "{what}: bad UDP checksum"
    );
    Parsed {
        src_mac,
        dst_mac,
        src: SocketAddr::new(src_ip, u16::from_be_bytes([l4[0], l4[1]])),
        dst: SocketAddr::new(dst_ip, u16::from_be_bytes([l4[2], l4[3]])),
        payload: l4[8..].to_vec(),
    }
}
