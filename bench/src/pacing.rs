//! Rate pacing arithmetic: how many datagrams should have left by a given time at a target
//! rate, and when the next one is due. Integer nanoseconds only, so the schedule does not
//! drift over a long run.

/// A fixed-rate schedule starting at `start_ns`: datagram `n` (from 0) is due at
/// `start + n / rate` seconds. Rate 0 means "as fast as possible".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    rate: u64,
    start_ns: u64,
    /// Datagrams the schedule gave up on because the sender fell too far behind.
    skipped: u64,
}

/// How far behind the schedule a sender may fall before the backlog is dropped rather
/// than sent as one burst (a burst would distort latency and the offered rate).
pub const MAX_BACKLOG_NS: u64 = 10_000_000;

impl Pacer {
    pub fn new(rate: u64, start_ns: u64) -> Self {
        Pacer {
            rate,
            start_ns,
            skipped: 0,
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Total datagrams due by `now_ns` (the schedule's count, including skipped ones).
    pub fn due_total(&self, now_ns: u64) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        let elapsed = now_ns.saturating_sub(self.start_ns) as u128;
        // floor(elapsed * rate / 1e9), +1 because datagram 0 is due at the start.
        (elapsed * self.rate as u128 / 1_000_000_000) as u64 + 1
    }

    /// Datagrams to send now, given `done` already sent. If the sender is more than
    /// [`MAX_BACKLOG_NS`] behind, the older part of the backlog is skipped (counted).
    pub fn due_now(&mut self, now_ns: u64, done: u64) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        let due = self.due_total(now_ns);
        let owed = due.saturating_sub(done + self.skipped);
        let cap = (MAX_BACKLOG_NS as u128 * self.rate as u128 / 1_000_000_000).max(1) as u64;
        if owed > cap {
            self.skipped += owed - cap;
            return cap;
        }
        owed
    }

    /// When datagram number `done + skipped` (the next one) is due.
    pub fn next_due_ns(&self, done: u64) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        let n = (done + self.skipped) as u128;
        // Smallest t with floor(t * rate / 1e9) + 1 > n, i.e. t >= n * 1e9 / rate.
        let t = (n * 1_000_000_000).div_ceil(self.rate as u128);
        self.start_ns + t as u64
    }
}

/// Split a total rate over `parts` senders so the parts sum to the total exactly.
pub fn split_rate(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts.max(1) as u64;
    let base = total / parts;
    let extra = u64::from((index as u64) < total % parts);
    base + extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_counts_follow_the_rate() {
        let p = Pacer::new(20_000, 1_000);
        assert_eq!(p.due_total(1_000), 1);
        assert_eq!(p.due_total(1_000 + 49_999), 1);
        assert_eq!(p.due_total(1_000 + 50_000), 2);
        assert_eq!(p.due_total(1_000 + 1_000_000_000), 20_001);
        // Before the start nothing more than the first datagram is due.
        assert_eq!(p.due_total(0), 1);
    }

    #[test]
    fn next_due_is_the_inverse_of_due_total() {
        for rate in [1u64, 3, 7, 1000, 20_000, 50_000, 1_000_000, 3_000_001] {
            let p = Pacer::new(rate, 5_000);
            for done in [0u64, 1, 2, 10, 999, 12_345] {
                let t = p.next_due_ns(done);
                assert!(p.due_total(t) > done, "rate {rate} done {done}");
                if t > 5_000 {
                    assert!(p.due_total(t - 1) <= done, "rate {rate} done {done}");
                }
            }
        }
    }

    #[test]
    fn backlog_is_capped_and_counted() {
        let mut p = Pacer::new(100_000, 0);
        // One second behind: 100,001 due, the cap is 10 ms = 1,000 datagrams.
        assert_eq!(p.due_now(1_000_000_000, 0), 1_000);
        assert_eq!(p.skipped(), 99_001);
        // Having sent those, nothing more is due at the same instant.
        assert_eq!(p.due_now(1_000_000_000, 1_000), 0);
        // The schedule continues from there, not from the start.
        assert_eq!(p.due_now(1_000_000_000 + 10_000, 1_000), 1);
    }

    #[test]
    fn unlimited_rate() {
        let mut p = Pacer::new(0, 0);
        assert!(p.unlimited());
        assert_eq!(p.due_now(5, 1_000_000), u64::MAX);
    }

    #[test]
    fn split_rate_sums_to_total() {
        for total in [0u64, 1, 7, 20_000, 50_001] {
            for parts in 1..6 {
                let s: u64 = (0..parts).map(|i| split_rate(total, parts, i)).sum();
                assert_eq!(s, total);
            }
        }
    }
}
