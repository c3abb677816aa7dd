//! `spoof`: a flood of unauthenticated Allocate requests from spoofed IPv4 sources, sent
//! as raw Ethernet frames out of the client's interface (AF_PACKET), so that every
//! datagram has a new source address and port within the given /24 prefixes. It measures
//! what such a flood costs the server: the bench's soak reads the server's memory before
//! and after, and its status file says how many answers the per-prefix budgets shed. The
//! server's answers go to addresses that do not exist (in the lab's namespaces only).

use crate::cli::SpoofArgs;
use crate::net::{now_ns, PacketSocket};
use crate::pacing::Pacer;
use crate::xdp_bench::{parse_mac, udp_frame};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;
use xturn_control::client;
use xturn_control::wire::{Class, MessageBuilder, Method, TransactionId};

#[derive(Debug, Serialize)]
pub struct SpoofReport {
    pub sent: u64,
    /// Frames the interface queue refused (sent again).
    pub queue_full: u64,
    pub seconds: f64,
    pub rate: f64,
    pub prefixes: Vec<String>,
}

impl SpoofReport {
    pub fn human(&self) -> String {
        format!(
            "spoof: {} unauthenticated Allocate requests from {} in {:.1} s ({:.0}/s)\n",
            self.sent,
            self.prefixes.join(", "),
            self.seconds,
            self.rate
        )
    }
}

/// A /24 given as `A.B.C.0/24` (or `A.B.C`).
fn prefix24(s: &str) -> Result<[u8; 3]> {
    let head = s.trim_end_matches("/24").trim_end_matches(".0");
    let parts: Vec<u8> = head
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--prefix {s}: use A.B.C.0/24"))?;
    match parts[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => bail!("--prefix {s}: use A.B.C.0/24"),
    }
}

pub fn run_spoof(a: &SpoofArgs) -> Result<SpoofReport> {
    let SocketAddr::V4(server) = a.server else {
        bail!("--server must be IPv4");
    };
    if a.prefix.is_empty() {
        bail!("give at least one --prefix");
    }
    let prefixes: Vec<[u8; 3]> = a
        .prefix
        .iter()
        .map(|p| prefix24(p))
        .collect::<Result<_>>()?;
    let ifindex =
        crate::bpf::ifindex(&a.iface).with_context(|| format!("no interface {}", a.iface))?;
    let src_mac =
        parse_mac(std::fs::read_to_string(format!("/sys/class/net/{}/address", a.iface))?.trim())?;
    let dst_mac = parse_mac(&a.dst_mac)?;
    let sock = PacketSocket::new(ifindex).context("AF_PACKET socket (root needed)")?;
    let pacer = Pacer::new(a.rate, now_ns());
    let start = Instant::now();
    let (mut sent, mut full) = (0u64, 0u64);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while sent < a.count {
        // xorshift: a new host and port per datagram.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = prefixes[(x % prefixes.len() as u64) as usize];
        let host = ((x >> 8) % 254) as u8 + 1;
        let port = 1024 + ((x >> 16) % 60_000) as u16;
        let src = SocketAddrV4::new(Ipv4Addr::new(p[0], p[1], p[2], host), port);
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&x.to_be_bytes());
        let mut b = MessageBuilder::new(Method::Allocate, Class::Request, TransactionId(tid));
        client::allocate_body(None)(&mut b);
        let frame = udp_frame(src_mac, dst_mac, src, server, &b.finish());
        let due = pacer.next_due_ns(sent);
        let now = now_ns();
        if due > now {
            std::thread::sleep(std::time::Duration::from_nanos(due - now));
        }
        while !sock.send(&frame)? {
            full += 1;
            std::thread::yield_now();
        }
        sent += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(SpoofReport {
        sent,
        queue_full: full,
        seconds,
        rate: sent as f64 / seconds,
        prefixes: a.prefix.clone(),
    })
}
