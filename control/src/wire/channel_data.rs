//! ChannelData messages (RFC 8656 section 12.4): a 4-byte header (channel number,
//! length) followed by exactly `length` bytes of application data. Over UDP the padding
//! is optional; the datagram may be longer than `4 + length` but never shorter.

use super::WireError;

mod field {
    use core::ops::Range;
    pub const CHANNEL: Range<usize> = 0..2;
    pub const LENGTH: Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

pub const HEADER_LEN: usize = 4;

/// First byte 0x40-0x4F (channel numbers 0x4000-0x4FFF): RFC 8656 section 12 and
/// RFC 7983 demultiplexing: a first byte 0x40-0x7F is ChannelData-shaped. Channels
/// 0x4000-0x4FFF are valid (RFC 8656); 0x5000-0x7FFF only with `--rfc5766-channels`
/// (RFC 5766 allowed them), so whether one is valid is the data plane's decision.
pub fn looks_like_channel_data(b: &[u8]) -> bool {
    matches!(b.first(), Some(0x40..=0x7F))
}

/// A view of a ChannelData message.
#[derive(Debug, Clone)]
pub struct ChannelData<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ChannelData<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        ChannelData { buffer }
    }

    /// Validate untrusted input: at least 4 bytes and the length field within the buffer.
    /// The channel number is returned as is; range checks belong to the caller, which
    /// silently discards 0x5000-0xFFFF (RFC 8656 section 12.4).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        if HEADER_LEN + len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(ChannelData { buffer })
    }

    pub fn channel(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHANNEL];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Exactly `length` bytes of application data, without padding.
    pub fn payload(&self) -> &[u8] {
        let l = self.length() as usize;
        &self.buffer.as_ref()[field::PAYLOAD..field::PAYLOAD + l]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ChannelData<T> {
    pub fn set_channel(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHANNEL].copy_from_slice(&c.to_be_bytes());
    }
    pub fn set_length(&mut self, l: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&l.to_be_bytes());
    }
}

/// Write a ChannelData header for `payload_len` bytes into the first 4 bytes of `out`.
pub fn write_header(out: &mut [u8], channel: u16, payload_len: u16) {
    out[0..2].copy_from_slice(&channel.to_be_bytes());
    out[2..4].copy_from_slice(&payload_len.to_be_bytes());
}

/// Build a ChannelData message (no padding: UDP).
pub fn encode(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HEADER_LEN + payload.len()];
    write_header(&mut v, channel, payload.len() as u16);
    v[HEADER_LEN..].copy_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deconstruct() {
        let b = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0x00];
        let c = ChannelData::new_checked(&b[..]).unwrap();
        assert_eq!(c.channel(), 0x4001);
        assert_eq!(c.length(), 3);
        assert_eq!(c.payload(), b"abc");
    }

    #[test]
    fn construct() {
        assert_eq!(encode(0x4fff, b"xy"), vec![0x4f, 0xff, 0, 2, b'x', b'y']);
        assert_eq!(encode(0x4000, b""), vec![0x40, 0, 0, 0]);
    }

    #[test]
    fn rejects_short() {
        assert!(ChannelData::new_checked(&[0x40, 0x00, 0x00][..]).is_err());
        assert!(ChannelData::new_checked(&[0x40, 0x00, 0x00, 0x02, 1][..]).is_err());
        assert!(ChannelData::new_checked(&[0x40, 0x00, 0x00, 0x00][..]).is_ok());
    }
}
