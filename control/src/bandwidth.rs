//! Bandwidth limits (`max-bps`, coturn's name and meaning: bytes per second, each
//! direction on its own) per allocation and per user.
//!
//! Every thread that relays data keeps its own [`crate::DataPlane`] copy, and one
//! allocation's packets may be relayed by several of them (the socket worker of the
//! client's flow, the one owning the relay socket, an AF_XDP forwarder per queue, the XDP
//! program's in-kernel relay). So the token buckets live in one shared table of atomics,
//! [`Limits`], that every copy holds: a limit holds whatever path and thread carries the
//! traffic. With the in-kernel relay the table is the XDP program's `XT_LIMITS` map,
//! mapped into the process ([`Limits::with_memory`]). Buckets are indexed, never hashed,
//! as `xturn_xdp_common::limits` lays them out: an allocation's by its relayed port (one
//! relay address per family), a user's by the slot the server gives it while it has
//! allocations.

use crate::limit::AtomicBucket;
use crate::types::RelayAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xturn_xdp_common::limits;

/// How much a bucket holds beyond the steady rate: 200 ms of traffic (at least two
/// full-size datagrams), so that packet spacing jitter is not punished and a measurement
/// over a few seconds stays within a few per cent of the limit.
pub const BURST: Duration = Duration::from_millis(limits::BURST_MS);

/// Direction of relayed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToPeer = limits::TO_PEER as isize,
    ToClient = limits::TO_CLIENT as isize,
}

/// What was dropped for being over a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub packets: u64,
    pub bytes: u64,
}

/// Memory holding the buckets, one `u64` each, laid out as `xturn_xdp_common::limits`
/// says: this process's own, or memory it shares with the XDP program.
pub trait BucketMemory: Send + Sync {
    fn words(&self) -> &[AtomicU64];
}

impl BucketMemory for Box<[AtomicU64]> {
    fn words(&self) -> &[AtomicU64] {
        self
    }
}

pub struct Limits {
    per_allocation: u64,
    per_user: u64,
    users: u32,
    epoch: Instant,
    memory: Box<dyn BucketMemory>,
    dropped_packets: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl core::fmt::Debug for Limits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Limits")
            .field("per_allocation", &self.per_allocation)
            .field("per_user", &self.per_user)
            .field("users", &self.users)
            .finish()
    }
}

fn take(b: &AtomicBucket, rate: u64, now_ms: u32, bytes: u64) -> bool {
    b.take(now_ms, rate, limits::burst(rate), bytes)
}

impl Limits {
    /// `per_allocation` and `per_user` in bytes per second each way (0: no limit); up to
    /// `users` users with allocations at once (the server's total quota bounds it).
    pub fn new(per_allocation: u64, per_user: u64, users: usize, epoch: Instant) -> Self {
        let users = users.min(limits::MAX_USERS as usize) as u32;
        let n = if per_allocation == 0 && per_user == 0 {
            0
        } else {
            limits::entries(users) as usize
        };
        let memory: Box<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        Self::with_memory(per_allocation, per_user, users, epoch, Box::new(memory))
            .expect("memory of the size the limits need")
    }

    /// The same with the buckets in `memory` (at least `limits::entries(users)` words when
    /// any limit is set), which this fills: the XDP program's `XT_LIMITS` map, mapped into
    /// the process, whose program then takes from the same buckets. Its clock is
    /// `CLOCK_MONOTONIC` less `epoch`, in ms.
    pub fn with_memory(
        per_allocation: u64,
        per_user: u64,
        users: u32,
        epoch: Instant,
        memory: Box<dyn BucketMemory>,
    ) -> Result<Self, String> {
        let users = users.min(limits::MAX_USERS);
        let l = Limits {
            per_allocation,
            per_user,
            users,
            epoch,
            memory,
            dropped_packets: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        };
        if l.is_unlimited() {
            return Ok(l);
        }
        let have = l.memory.words().len();
        let need = limits::entries(users) as usize;
        if have < need {
            return Err(format!(
                "bandwidth limits for {users} users need {need} buckets, the memory holds {have}"
            ));
        }
        let buckets = AtomicBucket::in_words(l.memory.words());
        for (i, b) in buckets[..need].iter().enumerate() {
            let rate = if (i as u32) < limits::ALLOCATION_BUCKETS {
                per_allocation
            } else {
                per_user
            };
            b.fill(limits::burst(rate));
        }
        Ok(l)
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::new(0, 0, 0, Instant::now())
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_allocation == 0 && self.per_user == 0
    }

    fn bucket(&self, index: u32) -> Option<&AtomicBucket> {
        AtomicBucket::in_words(self.memory.words()).get(index as usize)
    }

    fn allocation_bucket(&self, relay: RelayAddr, d: Direction) -> Option<&AtomicBucket> {
        let index = limits::allocation_bucket(relay.0.is_ipv6(), relay.0.port(), d as u32);
        self.bucket(index)
    }

    fn user_bucket(&self, slot: u32, d: Direction) -> Option<&AtomicBucket> {
        limits::user_bucket(slot, d as u32, self.users).and_then(|i| self.bucket(i))
    }

    /// A new allocation on `relay`: its buckets start full (the port may have served
    /// another allocation before).
    pub fn reset_allocation(&self, relay: RelayAddr) {
        if self.per_allocation != 0 {
            for d in [Direction::ToPeer, Direction::ToClient] {
                if let Some(b) = self.allocation_bucket(relay, d) {
                    b.fill(limits::burst(self.per_allocation));
                }
            }
        }
    }

    /// A user who had no allocation has one again in `slot`.
    pub fn reset_user(&self, slot: u32) {
        if self.per_user != 0 {
            for d in [Direction::ToPeer, Direction::ToClient] {
                if let Some(b) = self.user_bucket(slot, d) {
                    b.fill(limits::burst(self.per_user));
                }
            }
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
        let ok = (self.per_allocation == 0
            || self
                .allocation_bucket(relay, d)
                .is_none_or(|b| take(b, self.per_allocation, now_ms, bytes)))
            && (self.per_user == 0
                || self
                    .user_bucket(user, d)
                    .is_none_or(|b| take(b, self.per_user, now_ms, bytes)));
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

    struct Shared(std::sync::Arc<[AtomicU64]>);
    impl BucketMemory for Shared {
        fn words(&self) -> &[AtomicU64] {
            &self.0
        }
    }

    /// The buckets in memory shared with another taker (the XDP program, whose clock can
    /// read behind the time user space last stored): datagrams alternate between user space and it, one
    /// per ms, ten times the limit, for 10 s; what both admitted together is the limit
    /// within 10 %, because a lagging clock never refills a bucket twice.
    #[test]
    fn a_limit_holds_across_user_space_and_a_lagging_program_sharing_the_buckets() {
        let t0 = Instant::now();
        let words: std::sync::Arc<[AtomicU64]> =
            (0..limits::entries(2)).map(|_| AtomicU64::new(0)).collect();
        assert!(Limits::with_memory(100_000, 0, 4, t0, Box::new(Shared(words.clone()))).is_err());
        let l = Limits::with_memory(100_000, 0, 2, t0, Box::new(Shared(words.clone()))).unwrap();
        let index = limits::allocation_bucket(false, 50000, limits::TO_PEER) as usize;
        assert_eq!(words[index].load(Ordering::Relaxed), 20_000, "filled");
        let program = |now_ms: u32, cost: u64| {
            let w = &words[index];
            let old = w.load(Ordering::Relaxed);
            match limits::take(old, now_ms, 100_000, limits::burst(100_000), cost) {
                Some(new) => w
                    .compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok(),
                None => false,
            }
        };
        let mut admitted = 0u64;
        for ms in 0..10_000u64 {
            let ok = if ms % 2 == 0 {
                l.admit(
                    t0 + Duration::from_millis(ms),
                    relay(50000),
                    0,
                    Direction::ToPeer,
                    1000,
                )
            } else {
                program((ms as u32).saturating_sub(4), 1000)
            };
            admitted += if ok { 1000 } else { 0 };
        }
        let rate = admitted as f64 / 10.0;
        assert!((90_000.0..=110_000.0).contains(&rate), "{rate} B/s");
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = Limits::unlimited();
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.admit(t0, relay(1), 0, Direction::ToClient, 65_000)));
        assert_eq!(l.dropped(), Dropped::default());
    }
}
