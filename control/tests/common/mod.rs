//! Fixtures shared by `server.rs` and `proptest.rs`: the lab's addresses (documentation
//! ranges), its users, the peer filter a lab operator would configure, and a server with
//! a seeded RNG so that every run is the same.

#![allow(dead_code, reason = "each test crate uses a part of the fixtures")]

use rand::SeedableRng;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use xturn_control::auth::{long_term_key, Credentials, Key, PasswordAlgorithm};
use xturn_control::filter::PeerFilter;
use xturn_control::{ClientAddr, Config, FiveTuple, Server};

pub const REALM: &str = "example.org";
/// Unix time at the start of every test.
pub const UNIX0: u64 = 1_700_000_000;

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
pub fn client_addr() -> SocketAddr {
    sa("192.0.2.2:50000")
}
pub fn client_port(port: u16) -> SocketAddr {
    SocketAddr::new(ip("192.0.2.2"), port)
}
pub fn server_addr() -> SocketAddr {
    sa("192.0.2.1:3478")
}
pub fn relay_ip() -> IpAddr {
    ip("198.51.100.1")
}
pub fn relay_ipv6() -> IpAddr {
    ip("2001:db8::1")
}
pub fn peer() -> SocketAddr {
    sa("198.51.100.2:7000")
}
pub fn peer2() -> SocketAddr {
    sa("198.51.100.3:7000")
}
pub fn ft(client: SocketAddr) -> FiveTuple {
    FiveTuple::udp(ClientAddr(client), server_addr())
}

/// The peers of these tests live in documentation ranges, denied by default like every
/// special-purpose block: the tests allow them as a lab operator would.
pub const LAB_PEERS: &[&str] = &["198.51.100.0/24", "2001:db8::/32"];

/// The default-deny filter with the lab's peers and `allowed` allowed, `denied` denied;
/// the server's listening endpoint and relay address as the server's own.
pub fn filter_with(allowed: &[&str], denied: &[&str]) -> PeerFilter {
    PeerFilter::new(
        allowed
            .iter()
            .chain(LAB_PEERS)
            .map(|s| s.parse().unwrap())
            .collect(),
        denied.iter().map(|s| s.parse().unwrap()).collect(),
        true,
        vec![server_addr()],
        vec![relay_ip()],
    )
}

/// Static users alice (alice-pw) and bob (bob-pw) in [`REALM`].
pub fn credentials() -> Credentials {
    let mut c = Credentials::new(REALM).unwrap();
    c.add_user("alice", "alice-pw").unwrap();
    c.add_user("bob", "bob-pw").unwrap();
    c
}

/// The RFC defaults with the lab's credentials, relay address and filter.
pub fn config() -> Config {
    Config::new(credentials(), relay_ip(), filter_with(&[], &[]))
}

pub fn md5_key(user: &str, pw: &str) -> Key {
    long_term_key(PasswordAlgorithm::Md5, user, REALM, pw)
}

/// A server started at `now` (unix time `unix0`) with an RNG seeded by `seed`.
pub fn server(cfg: Config, now: Instant, unix0: u64, seed: u64) -> Server {
    Server::new(
        cfg,
        now,
        unix0,
        Box::new(rand::rngs::StdRng::seed_from_u64(seed)),
    )
}

pub fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}
