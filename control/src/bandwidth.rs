//! Bandwidth limits (`max-bps`, coturn's name and meaning: bytes per second, each
//! direction on its own) per allocation and per user.
//!
//! Every thread that relays data keeps its own [`crate::DataPlane`] copy, and one
//! allocation's packets may be relayed by several of them (the socket worker of the
//! client's flow, the one owning the relay socket, an AF_XDP forwarder per queue). So the
//! token buckets live in one shared table of atomics, [`Limits`], that every copy holds:
//! a limit holds whatever path and thread carries the traffic. Buckets are indexed, never
//! hashed: an allocation's by its relayed port (one relay address per family), a user's
//! by the slot the server gives it while it has allocations.

use crate::limit::AtomicBucket;
use crate::types::RelayAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much a bucket holds beyond the steady rate: 200 ms of traffic (at least two
/// full-size datagrams), so that packet spacing jitter is not punished and a measurement
/// over a few seconds stays within a few per cent of the limit.
pub const BURST: Duration = Duration::from_millis(200);
const MIN_BURST: u64 = 3000;

/// Direction of relayed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToPeer = 0,
    ToClient = 1,
}

/// What was dropped for being over a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub packets: u64,
    pub bytes: u64,
}

pub struct Limits {
    per_allocation: u64,
    per_user: u64,
    epoch: Instant,
    /// `[family * 65536 + port][direction]`, in bytes.
    allocations: Box<[[AtomicBucket; 2]]>,
    users: Box<[[AtomicBucket; 2]]>,
    dropped_packets: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl core::fmt::Debug for Limits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Limits")
            .field("per_allocation", &self.per_allocation)
            .field("per_user", &self.per_user)
            .finish()
    }
}

fn burst(rate: u64) -> u64 {
    (rate * BURST.as_millis() as u64 / 1000).max(MIN_BURST)
}

fn table(n: usize, rate: u64) -> Box<[[AtomicBucket; 2]]> {
    if rate == 0 {
        return Box::new([]);
    }
    (0..n)
        .map(|_| {
            [
                AtomicBucket::full(burst(rate)),
                AtomicBucket::full(burst(rate)),
            ]
        })
        .collect()
}

fn take(b: &AtomicBucket, rate: u64, now_ms: u32, bytes: u64) -> bool {
    b.take(now_ms, rate, burst(rate), bytes)
}

fn refill(b: &[AtomicBucket; 2], rate: u64) {
    for d in b {
        d.fill(burst(rate));
    }
}

impl Limits {
    /// `per_allocation` and `per_user` in bytes per second each way (0: no limit); up to
    /// `users` users with allocations at once (the server's total quota bounds it).
    pub fn new(per_allocation: u64, per_user: u64, users: usize, epoch: Instant) -> Self {
        Limits {
            per_allocation,
            per_user,
            epoch,
            allocations: table(2 * 65536, per_allocation),
            users: table(users, per_user),
            dropped_packets: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::new(0, 0, 0, Instant::now())
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_allocation == 0 && self.per_user == 0
    }

    fn alloc_index(relay: RelayAddr) -> usize {
        (relay.0.is_ipv6() as usize) << 16 | relay.0.port() as usize
    }

    /// A new allocation on `relay`: its buckets start full (the port may have served
    /// another allocation before).
    pub fn reset_allocation(&self, relay: RelayAddr) {
        if let Some(b) = self.allocations.get(Self::alloc_index(relay)) {
            refill(b, self.per_allocation);
        }
    }

    /// A user who had no allocation has one again in `slot`.
    pub fn reset_user(&self, slot: u32) {
        if let Some(b) = self.users.get(slot as usize) {
            refill(b, self.per_user);
        }
    }

    /// May `bytes` of payload be relayed now for the allocation on `relay` of user slot
    /// `user` in direction `d`? Counts what it refuses.
    pub fn admit(
        &self,
        now: Instant,
        relay: RelayAddr,
        user: u32,
        d: Direction,
        bytes: usize,
    ) -> bool {
        if self.is_unlimited() {
            return true;
        }
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        let bytes = bytes as u64;
        let ok = self
            .allocations
            .get(Self::alloc_index(relay))
            .is_none_or(|b| take(&b[d as usize], self.per_allocation, now_ms, bytes))
            && self
                .users
                .get(user as usize)
                .is_none_or(|b| take(&b[d as usize], self.per_user, now_ms, bytes));
        if !ok {
            self.dropped_packets.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        ok
    }

    pub fn dropped(&self) -> Dropped {
        Dropped {
            packets: self.dropped_packets.load(Ordering::Relaxed),
            bytes: self.dropped_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(port: u16) -> RelayAddr {
        RelayAddr(std::net::SocketAddr::new([198, 51, 100, 1].into(), port))
    }

    /// 1,000-byte packets offered at twice the limit for 10 s of virtual time: what is
    /// admitted is the limit within 10 %, each direction on its own.
    #[test]
    fn holds_a_flow_to_its_limit() {
        let t0 = Instant::now();
        let l = Limits::new(100_000, 0, 16, t0);
        let mut admitted = [0u64; 2];
        for i in 0..2000u64 {
            let now = t0 + Duration::from_millis(i * 5);
            for d in [Direction::ToPeer, Direction::ToClient] {
                if l.admit(now, relay(50000), 0, d, 1000) {
                    admitted[d as usize] += 1000;
                }
            }
        }
        for a in admitted {
            let rate = a as f64 / 10.0;
            assert!((90_000.0..=110_000.0).contains(&rate), "{rate} B/s");
        }
        let d = l.dropped();
        assert_eq!(d.bytes, 2 * 2000 * 1000 - admitted[0] - admitted[1]);
        // Another allocation has its own budget.
        assert!(l.admit(
            t0 + Duration::from_secs(10),
            relay(50002),
            0,
            Direction::ToPeer,
            1000
        ));
    }

    #[test]
    fn a_user_limit_spans_its_allocations() {
        let t0 = Instant::now();
        let l = Limits::new(0, 50_000, 4, t0);
        let mut admitted = 0u64;
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            for port in [50000, 50002, 50004] {
                if l.admit(now, relay(port), 1, Direction::ToPeer, 500) {
                    admitted += 500;
                }
            }
        }
        let rate = admitted as f64 / 10.0;
        assert!((45_000.0..=55_000.0).contains(&rate), "{rate} B/s");
        // User slot 2 is not limited by slot 1's traffic.
        assert!(l.admit(
            t0 + Duration::from_secs(10),
            relay(50006),
            2,
            Direction::ToPeer,
            500
        ));
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = Limits::unlimited();
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.admit(t0, relay(1), 0, Direction::ToClient, 65_000)));
        assert_eq!(l.dropped(), Dropped::default());
    }
}
