//! Per-flow sequence tracking: tells new, reordered, duplicate and too-old datagrams apart
//! with a 1024-entry sliding window, so loss is "sent minus distinct received", never
//! inflated by duplicates.

const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// What one received sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// Higher than anything seen so far.
    New,
    /// Below the highest seen but not seen before (reordered in flight).
    Reordered,
    /// Seen before.
    Duplicate,
    /// More than the window below the highest seen: cannot tell; counted as received.
    TooOld,
}

#[derive(Debug, Clone, Default)]
pub struct SeqWindow {
    highest: Option<u64>,
    bits: [u64; WORDS],
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub too_old: u64,
}

impl SeqWindow {
    fn bit(&mut self, seq: u64) -> (usize, u64) {
        let i = (seq % WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub fn record(&mut self, seq: u64) -> SeqOutcome {
        let outcome = match self.highest {
            None => {
                self.highest = Some(seq);
                let (w, m) = self.bit(seq);
                self.bits[w] |= m;
                SeqOutcome::New
            }
            Some(h) if seq > h => {
                if seq - h >= WINDOW {
                    self.bits = [0; WORDS];
                } else {
                    for s in h + 1..seq {
                        let (w, m) = self.bit(s);
                        self.bits[w] &= !m;
                    }
                }
                let (w, m) = self.bit(seq);
                self.bits[w] |= m;
                self.highest = Some(seq);
                SeqOutcome::New
            }
            Some(h) if h - seq >= WINDOW => SeqOutcome::TooOld,
            Some(_) => {
                let (w, m) = self.bit(seq);
                if self.bits[w] & m != 0 {
                    SeqOutcome::Duplicate
                } else {
                    self.bits[w] |= m;
                    SeqOutcome::Reordered
                }
            }
        };
        match outcome {
            SeqOutcome::New => self.unique += 1,
            SeqOutcome::Reordered => {
                self.unique += 1;
                self.reordered += 1
            }
            SeqOutcome::Duplicate => self.duplicates += 1,
            SeqOutcome::TooOld => {
                self.unique += 1;
                self.too_old += 1
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SeqOutcome::*;

    #[test]
    fn in_order_reordered_duplicates() {
        let mut w = SeqWindow::default();
        assert_eq!(w.record(0), New);
        assert_eq!(w.record(1), New);
        assert_eq!(w.record(3), New);
        assert_eq!(w.record(2), Reordered);
        assert_eq!(w.record(2), Duplicate);
        assert_eq!(w.record(3), Duplicate);
        assert_eq!(w.record(0), Duplicate);
        assert_eq!((w.unique, w.duplicates, w.reordered), (4, 3, 1));
        assert_eq!(w.highest(), Some(3));
    }

    #[test]
    fn window_slides_and_forgets() {
        let mut w = SeqWindow::default();
        assert_eq!(w.record(5), New);
        // A jump clears the slots between, so 5 + 1024 reuses slot 5 cleanly.
        assert_eq!(w.record(5 + WINDOW), New);
        assert_eq!(w.record(5), TooOld);
        assert_eq!(w.record(6), Reordered);
        assert_eq!(w.record(6), Duplicate);
        // A jump larger than the window clears everything.
        assert_eq!(w.record(10 * WINDOW), New);
        assert_eq!(w.record(10 * WINDOW - 1), Reordered);
        assert_eq!(w.unique, 6);
        assert_eq!(w.too_old, 1);
    }

    #[test]
    fn first_datagram_may_be_any_number() {
        let mut w = SeqWindow::default();
        assert_eq!(w.record(50_000), New);
        assert_eq!(w.record(49_999), Reordered);
    }
}
