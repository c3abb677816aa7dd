//! The sans-IO server driven by the input: each chunk (a length byte, then that many
//! bytes) is a datagram from a client or a peer, a bind completion or a step of time. No
//! panic, whatever the sequence; the unauthenticated traffic leaves no state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xturn_control::auth::Credentials;
use xturn_control::filter::PeerFilter;
use xturn_control::{BindToken, Config, Output, PeerAddr, RelayAddr, Server};

fuzz_target!(|data: &[u8]| {
    let mut creds = Credentials::new("fuzz").unwrap();
    creds.add_user("alice", "pw").unwrap();
    let relay: std::net::IpAddr = "198.51.100.1".parse().unwrap();
    let server_addr: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let filter = PeerFilter::new(vec![], vec![], true, vec![server_addr], vec![relay]);
    let cfg = Config::new(creds, relay, filter);
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Server::new(
        cfg,
        t0,
        1_700_000_000,
        Box::new(rand::rngs::StdRng::seed_from_u64(1)),
    );
    let mut binds: Vec<(BindToken, RelayAddr)> = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let n = (op as usize >> 2).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        let from: SocketAddr = SocketAddr::new([192, 0, 2, 2].into(), 4000 + (op as u16 & 3));
        match op & 3 {
            0 => s.handle_input(now, from, server_addr, chunk),
            1 => {
                let r = binds
                    .first()
                    .map(|b| b.1)
                    .unwrap_or(RelayAddr(SocketAddr::new(relay, 50000)));
                s.handle_peer_input(
                    now,
                    r,
                    PeerAddr("198.51.100.2:7000".parse().unwrap()),
                    chunk,
                )
            }
            2 => {
                if let Some((t, _)) = binds.pop() {
                    s.relay_bound(now, t, chunk.first().is_some_and(|b| b & 1 == 1));
                }
            }
            _ => {
                now += Duration::from_secs(chunk.first().copied().unwrap_or(1) as u64 * 10);
                s.handle_timeout(now);
            }
        }
        while let Some(o) = s.poll_output() {
            if let Output::BindRelay { token, relay, .. } = o {
                binds.push((token, relay));
            }
        }
    }
});
