//! Answer budgets per source prefix, in a fixed-size table.
//!
//! Answers to unauthenticated requests (401 challenges, Binding responses, 400/420 errors)
//! cost the server work and, sent to a spoofed source, reflect traffic at a third party.
//! A single server-wide bucket lets one flood empty it for everybody; a bucket per source
//! address lets a flood of spoofed sources grow memory without bound. [`PrefixBudget`]
//! keeps one token bucket per hash slot of the source prefix (IPv4 /24, IPv6 /56): the
//! table never grows, a flood from one range empties only its own slot (and, with
//! probability 1/slots, one other range's), and the slot a prefix lands in is keyed by a
//! random seed so that nobody can aim at another range's slot.
//!
//! The buckets are atomics: the socket path's workers share one table without a lock.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use xturn_xdp_common::limits;

/// Fixed-point scale of the token count (1/16 token).
const SCALE: u64 = 16;

/// Slots of a budget table by default: 4096 prefixes tracked at once, 32 KiB.
pub const DEFAULT_SLOTS: usize = 4096;

/// The prefix an address is budgeted under: IPv4 /24, IPv6 /56 (an end site's allocation).
/// IPv4-mapped IPv6 sources count as IPv4.
pub fn source_prefix(ip: IpAddr) -> (bool, u64) {
    match ip {
        IpAddr::V4(v4) => (false, (u32::from(v4) >> 8) as u64),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, (u32::from(v4) >> 8) as u64),
            None => (true, (u128::from(v6) >> 72) as u64),
        },
    }
}

/// A token bucket in one `AtomicU64`: the time of its last refill (ms since some epoch,
/// upper 32 bits) and the tokens left then (lower 32 bits), updated with
/// [`xturn_xdp_common::limits::take`], the arithmetic the XDP program shares. Shared by
/// threads without a lock; [`PrefixBudget`] and the bandwidth limits
/// ([`crate::bandwidth`]) are tables of these.
#[derive(Debug)]
#[repr(transparent)]
pub struct AtomicBucket(AtomicU64);

impl AtomicBucket {
    /// A full bucket of `cap` tokens (at most `u32::MAX`).
    pub fn full(cap: u64) -> Self {
        AtomicBucket(AtomicU64::new(limits::full(cap)))
    }

    /// The buckets in `words` (memory shared with the XDP program, for example).
    pub fn in_words(words: &[AtomicU64]) -> &[AtomicBucket] {
        // SAFETY: AtomicBucket is a transparent wrapper of AtomicU64.
        unsafe { &*(words as *const [AtomicU64] as *const [AtomicBucket]) }
    }

    /// Fill it up again (at time 0: the next refill only adds up to `cap`).
    pub fn fill(&self, cap: u64) {
        self.0.store(limits::full(cap), Ordering::Relaxed);
    }

    /// Refill at `rate` tokens per second up to `cap`, then take `cost`; false (nothing
    /// taken, nothing stored) when fewer than `cost` are left.
    pub fn take(&self, now_ms: u32, rate: u64, cap: u64, cost: u64) -> bool {
        let mut old = self.0.load(Ordering::Relaxed);
        loop {
            let Some(new) = limits::take(old, now_ms, rate, cap, cost) else {
                return false;
            };
            match self
                .0
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(cur) => old = cur,
            }
        }
    }
}

pub struct PrefixBudget {
    /// Tokens per second per prefix; the bucket holds one second's worth. 0: unlimited.
    rate: u32,
    epoch: Instant,
    hasher: foldhash::fast::FixedState,
    /// Per slot, tokens in 1/16.
    slots: Box<[AtomicBucket]>,
}

impl core::fmt::Debug for PrefixBudget {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PrefixBudget")
            .field("rate", &self.rate)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl PrefixBudget {
    /// `rate` answers per second per prefix (0: unlimited), `slots` buckets (at least 1),
    /// `seed` for the slot hash (random in a server), `epoch` any instant not after the
    /// first `take`.
    pub fn new(rate: u32, slots: usize, seed: u64, epoch: Instant) -> Self {
        PrefixBudget {
            rate,
            epoch,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            slots: (0..slots.max(1))
                .map(|_| AtomicBucket::full(Self::capacity(rate)))
                .collect(),
        }
    }

    fn capacity(rate: u32) -> u64 {
        rate as u64 * SCALE
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn slot(&self, ip: IpAddr) -> &AtomicBucket {
        let (v6, prefix) = source_prefix(ip);
        let mut h = self.hasher.build_hasher();
        h.write_u8(v6 as u8);
        h.write_u64(prefix);
        &self.slots[(h.finish() % self.slots.len() as u64) as usize]
    }

    /// Take one answer from `ip`'s prefix budget; false: over budget, send nothing.
    pub fn take(&self, now: Instant, ip: IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        let cap = Self::capacity(self.rate);
        self.slot(ip).take(now_ms, cap, cap, SCALE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_prefix_cannot_empty_another() {
        let t0 = Instant::now();
        let b = PrefixBudget::new(10, DEFAULT_SLOTS, 7, t0);
        let answered = (0..1000)
            .filter(|i| b.take(t0, ip(&format!("198.51.100.{}", i % 250))))
            .count();
        assert_eq!(answered, 10, "one /24 gets one second's worth");
        assert!(b.take(t0, ip("203.0.113.9")), "another /24 is served");
        assert!(b.take(t0, ip("2001:db8:0:100::1")));
        // The same /56, another address: same budget.
        let v6: Vec<bool> = (0..20)
            .map(|i| b.take(t0, ip(&format!("2001:db8:0:1{i:02x}::1"))))
            .collect();
        assert_eq!(v6.iter().filter(|x| **x).count(), 9, "{v6:?}");
        // Refill at the rate, never beyond one second's worth.
        assert!(!b.take(t0, ip("198.51.100.1")));
        let t1 = t0 + Duration::from_millis(300);
        let n = (0..10).filter(|_| b.take(t1, ip("198.51.100.1"))).count();
        assert_eq!(n, 3);
        let t2 = t1 + Duration::from_secs(60);
        let n = (0..100).filter(|_| b.take(t2, ip("198.51.100.1"))).count();
        assert_eq!(n, 10);
        // Mapped sources are their IPv4 prefix.
        assert!(!b.take(t2, ip("::ffff:198.51.100.77")));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let b = PrefixBudget::new(0, 1, 0, t0);
        assert!((0..10_000).all(|_| b.take(t0, ip("192.0.2.1"))));
    }

    #[test]
    fn shared_by_threads_without_losing_tokens() {
        let t0 = Instant::now();
        let b = std::sync::Arc::new(PrefixBudget::new(1000, 16, 1, t0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| b.take(t0, ip("192.0.2.1"))).count()
                })
            })
            .collect();
        let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
