//! The application payload the generator puts inside ChannelData (and the sink sees as the
//! UDP payload at the peer). Every byte is checkable by a receiver that knows nothing of
//! the sender's configuration:
//!
//! ```text
//!  0..4   magic "XTB1"
//!  4..8   flow id (u32, big-endian): the allocation's index in the generator
//!  8..16  sequence number (u64) within the flow, from 0
//! 16..24  send time (u64 ns, the sender's monotonic clock; only the sender reads it)
//! 24..    fill: a xorshift64 stream seeded from (flow, seq), so a corrupted, truncated
//!         or misplaced byte is detected
//! ```

pub const MAGIC: [u8; 4] = *b"XTB1";
pub const HEADER_LEN: usize = 24;

/// What the header of a valid payload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flow: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Why a payload is not one of ours, or damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than the header.
    Short,
    /// Magic mismatch: not a bench payload.
    Magic,
    /// The fill differs from what (flow, seq) determines.
    Corrupt,
}

fn seed(flow: u32, seq: u64) -> u64 {
    // Odd multipliers are bijections, so a change in flow or in seq alone changes the seed.
    let s = (flow as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ seq.wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ 0xD1B5_4A32_D192_ED03;
    if s == 0 {
        1
    } else {
        s
    }
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Write a payload of `buf.len()` bytes (at least [`HEADER_LEN`]).
pub fn write(buf: &mut [u8], flow: u32, seq: u64, sent_ns: u64) {
    debug_assert!(buf.len() >= HEADER_LEN);
    buf[0..4].copy_from_slice(&MAGIC);
    buf[4..8].copy_from_slice(&flow.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_be_bytes());
    let mut x = seed(flow, seq);
    for chunk in buf[HEADER_LEN..].chunks_mut(8) {
        let v = next(&mut x).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Read the header only (no fill check).
pub fn header(buf: &[u8]) -> Result<Header, PayloadError> {
    if buf.len() < HEADER_LEN {
        return Err(PayloadError::Short);
    }
    if buf[0..4] != MAGIC {
        return Err(PayloadError::Magic);
    }
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[o..o + 8]);
        u64::from_be_bytes(b)
    };
    Ok(Header {
        flow: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        seq: u64_at(8),
        sent_ns: u64_at(16),
    })
}

/// Check a whole payload: header and every fill byte.
pub fn check(buf: &[u8]) -> Result<Header, PayloadError> {
    let h = header(buf)?;
    let mut x = seed(h.flow, h.seq);
    for chunk in buf[HEADER_LEN..].chunks(8) {
        let v = next(&mut x).to_le_bytes();
        if chunk != &v[..chunk.len()] {
            return Err(PayloadError::Corrupt);
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_sizes() {
        for len in HEADER_LEN..200 {
            let mut b = vec![0u8; len];
            write(&mut b, 7, 123_456, 99);
            assert_eq!(
                check(&b),
                Ok(Header {
                    flow: 7,
                    seq: 123_456,
                    sent_ns: 99
                })
            );
        }
    }

    #[test]
    fn fixture_bytes() {
        let mut b = [0u8; 26];
        write(&mut b, 1, 2, 3);
        assert_eq!(
            &b[..24],
            &[b'X', b'T', b'B', b'1', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
        );
        // The fill depends on flow and seq: another seq gives other bytes.
        let mut c = [0u8; 26];
        write(&mut c, 1, 3, 3);
        assert_ne!(b[24..], c[24..]);
    }

    #[test]
    fn detects_damage() {
        let mut b = vec![0u8; 100];
        write(&mut b, 3, 4, 5);
        assert_eq!(check(&b[..10]), Err(PayloadError::Short));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x01;
            let r = check(&d);
            if i < 4 {
                assert_eq!(r, Err(PayloadError::Magic), "byte {i}");
            } else if (16..24).contains(&i) {
                // The timestamp is not covered (only the sender interprets it).
                assert!(r.is_ok());
            } else {
                // A flipped flow/seq byte changes the expected fill: corrupt too.
                assert_eq!(r, Err(PayloadError::Corrupt), "byte {i}");
            }
        }
        // A truncated payload passes the header but its fill ends early: still a valid
        // prefix, so the receiver must compare the length separately.
        assert!(check(&b[..50]).is_ok());
    }
}
