//! STUN message header and attribute walk (RFC 8489 section 5 and 14), as a typed view
//! over a byte buffer in the style of smoltcp's `wire` module.
//!
//! [`Message::new_checked`] validates everything the rest of the crate relies on: the
//! header, the length field against the buffer, and that every attribute header and value
//! lies inside the message. After that, attribute iteration cannot index out of bounds.

use super::{attr, WireError};

/// The fixed magic cookie of RFC 5389/8489 (section 5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the fixed STUN header.
pub const HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..2;
    pub const LENGTH: Range<usize> = 2..4;
    pub const COOKIE: Range<usize> = 4..8;
    pub const TRANSACTION_ID: Range<usize> = 8..20;
}

/// STUN message class (RFC 8489 section 5: the C1/C0 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// STUN/TURN methods known to xturn (RFC 8489 section 18.2, RFC 8656 section 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
    /// RFC 6062 TCP allocations: Connect, ConnectionBind, ConnectionAttempt.
    Connect,
    ConnectionBind,
    ConnectionAttempt,
    /// A method number xturn does not implement.
    Other(u16),
}

impl Method {
    pub fn from_u16(m: u16) -> Method {
        match m {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            0x00A => Method::Connect,
            0x00B => Method::ConnectionBind,
            0x00C => Method::ConnectionAttempt,
            other => Method::Other(other),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Connect => 0x00A,
            Method::ConnectionBind => 0x00B,
            Method::ConnectionAttempt => 0x00C,
            Method::Other(m) => m & 0x0FFF,
        }
    }
}

/// Encode method and class into the 14-bit STUN message type (RFC 8489 figure 3).
pub fn message_type(method: Method, class: Class) -> u16 {
    let m = method.as_u16();
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Decode a 16-bit message type into method and class.
pub fn split_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let c = ((t >> 4) & 1) | ((t >> 7) & 2);
    let class = match c {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (Method::from_u16(m), class)
}

/// A 96-bit STUN transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub [u8; 12]);

/// A read-only (or, with `AsMut`, writable) view of a STUN message.
#[derive(Debug, Clone)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

/// Quick demultiplexing test (RFC 8489 section 6.3/RFC 7983): could this datagram be STUN?
/// Only checks the first two bits and the magic cookie; parsing still validates the rest.
pub fn looks_like_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN
        && b[0] & 0xC0 == 0
        && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == MAGIC_COOKIE
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wrap without checks. Accessors may panic on a short buffer: use for buffers this
    /// process built itself.
    pub fn new_unchecked(buffer: T) -> Self {
        Message { buffer }
    }

    /// Wrap and validate untrusted input: header bits, magic cookie, the length field equal
    /// to the rest of the buffer and a multiple of 4, and every attribute inside bounds.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] & 0xC0 != 0 {
            return Err(WireError::NotStun);
        }
        if u32::from_be_bytes([b[4], b[5], b[6], b[7]]) != MAGIC_COOKIE {
            return Err(WireError::NotStun);
        }
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        if !len.is_multiple_of(4) {
            return Err(WireError::BadLength);
        }
        if HEADER_LEN + len != b.len() {
            return Err(WireError::BadLength);
        }
        // Walk the attributes once so that later iteration is infallible.
        let mut off = HEADER_LEN;
        while off < b.len() {
            if off + 4 > b.len() {
                return Err(WireError::Truncated);
            }
            let alen = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
            let padded = (alen + 3) & !3;
            if off + 4 + padded > b.len() {
                return Err(WireError::Truncated);
            }
            off += 4 + padded;
        }
        Ok(Message { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn raw_type(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::TYPE.start], b[field::TYPE.start + 1]])
    }

    pub fn method(&self) -> Method {
        split_type(self.raw_type()).0
    }

    pub fn class(&self) -> Class {
        split_type(self.raw_type()).1
    }

    /// The length field: bytes after the 20-byte header.
    pub fn length(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::LENGTH.start], b[field::LENGTH.start + 1]])
    }

    pub fn cookie(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::COOKIE];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buffer.as_ref()[field::TRANSACTION_ID]);
        TransactionId(t)
    }

    /// Iterate over the raw attributes in order.
    pub fn attributes(&self) -> RawAttributes<'_> {
        RawAttributes {
            buf: self.buffer.as_ref(),
            off: HEADER_LEN,
        }
    }

    /// The first attribute of the given type, if any.
    pub fn attribute(&self, typ: u16) -> Option<RawAttribute<'_>> {
        self.attributes().find(|a| a.typ == typ)
    }
}

/// One attribute as it sits in the message: its type, value and byte offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub typ: u16,
    pub value: &'a [u8],
    /// Offset of the attribute header from the start of the message.
    pub offset: usize,
}

impl RawAttribute<'_> {
    /// RFC 8489 section 14: types 0x0000-0x7FFF are comprehension-required.
    pub fn comprehension_required(&self) -> bool {
        self.typ < 0x8000
    }
}

/// Iterator over attributes of a message that passed [`Message::new_checked`].
pub struct RawAttributes<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = RawAttribute<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.buf;
        if self.off + 4 > b.len() {
            return None;
        }
        let typ = u16::from_be_bytes([b[self.off], b[self.off + 1]]);
        let len = u16::from_be_bytes([b[self.off + 2], b[self.off + 3]]) as usize;
        let start = self.off + 4;
        let end = start + len;
        if end > b.len() {
            // Only reachable for an unchecked view over a malformed buffer.
            self.off = b.len();
            return None;
        }
        let a = RawAttribute {
            typ,
            value: &b[start..end],
            offset: self.off,
        };
        self.off = start + ((len + 3) & !3);
        Some(a)
    }
}

/// Builds a STUN message into a `Vec<u8>`, keeping the header length up to date.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    pub fn new(method: Method, class: Class, tid: TransactionId) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageBuilder { buf }
    }

    fn set_length(&mut self, len: usize) {
        let l = (len as u16).to_be_bytes();
        self.buf[2] = l[0];
        self.buf[3] = l[1];
    }

    /// Append an attribute with zero padding to a 4-byte boundary.
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        debug_assert!(value.len() <= u16::MAX as usize);
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        let l = self.buf.len() - HEADER_LEN;
        self.set_length(l);
        self
    }

    pub fn u32_attr(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    /// XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (RFC 8489 section 14.2).
    pub fn xor_addr(&mut self, typ: u16, addr: std::net::SocketAddr) -> &mut Self {
        let tid = self.tid();
        let v = attr::encode_xor_address(addr, &tid);
        self.attr(typ, &v)
    }

    /// ERROR-CODE (RFC 8489 section 14.8).
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    pub fn tid(&self) -> TransactionId {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buf[8..20]);
        TransactionId(t)
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1 over the message so far with the length adjusted to
    /// include this attribute; RFC 8489 section 14.5).
    pub fn message_integrity(&mut self, key: &[u8]) -> &mut Self {
        let l = self.buf.len() - HEADER_LEN + 24;
        self.set_length(l);
        let mac = super::integrity::hmac_sha1(key, &self.buf);
        self.attr(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// MESSAGE-INTEGRITY-SHA256 with the full 32-byte HMAC (RFC 8489 section 14.6).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let l = self.buf.len() - HEADER_LEN + 36;
        self.set_length(l);
        let mac = super::integrity::hmac_sha256(key, &self.buf);
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// FINGERPRINT: CRC-32 of the message so far (length including this attribute) XOR
    /// 0x5354554E (RFC 8489 section 14.7). Must be the last attribute.
    pub fn fingerprint(&mut self) -> &mut Self {
        let l = self.buf.len() - HEADER_LEN + 8;
        self.set_length(l);
        let crc = super::integrity::fingerprint(&self.buf);
        self.u32_attr(attr::FINGERPRINT, crc)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_roundtrip() {
        // Known values: Binding request 0x0001, success 0x0101, Allocate error 0x0113,
        // Send indication 0x0016, Data indication 0x0017, ChannelBind success 0x0109.
        assert_eq!(message_type(Method::Binding, Class::Request), 0x0001);
        assert_eq!(message_type(Method::Binding, Class::Success), 0x0101);
        assert_eq!(message_type(Method::Allocate, Class::Error), 0x0113);
        assert_eq!(message_type(Method::Send, Class::Indication), 0x0016);
        assert_eq!(message_type(Method::Data, Class::Indication), 0x0017);
        assert_eq!(message_type(Method::ChannelBind, Class::Success), 0x0109);
        for m in 0..0x1000u16 {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(Method::from_u16(m), c);
                assert_eq!(split_type(t), (Method::from_u16(m), c));
            }
        }
    }

    #[test]
    fn checked_rejects_bad_input() {
        assert_eq!(
            Message::new_checked(&[0u8; 10][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut m =
            MessageBuilder::new(Method::Binding, Class::Request, TransactionId([7; 12])).finish();
        assert!(Message::new_checked(&m[..]).is_ok());
        m[4] = 0; // break the cookie
        assert_eq!(
            Message::new_checked(&m[..]).unwrap_err(),
            WireError::NotStun
        );
        let mut b = MessageBuilder::new(Method::Binding, Class::Request, TransactionId([7; 12]));
        b.attr(0x8022, b"abcde");
        let mut m = b.finish();
        assert_eq!(m.len(), 20 + 12);
        assert!(Message::new_checked(&m[..]).is_ok());
        // Attribute length pointing past the end.
        m[23] = 200;
        assert_eq!(
            Message::new_checked(&m[..]).unwrap_err(),
            WireError::Truncated
        );
        // Header length not matching the datagram.
        let mut m2 =
            MessageBuilder::new(Method::Binding, Class::Request, TransactionId([7; 12])).finish();
        m2.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            Message::new_checked(&m2[..]).unwrap_err(),
            WireError::BadLength
        );
    }

    #[test]
    fn attributes_iterate_with_padding() {
        let mut b = MessageBuilder::new(Method::Binding, Class::Request, TransactionId([1; 12]));
        b.attr(0x8022, b"x").attr(0x0006, b"user").attr(0x8023, b"");
        let m = b.finish();
        let msg = Message::new_checked(&m[..]).unwrap();
        let v: Vec<_> = msg
            .attributes()
            .map(|a| (a.typ, a.value.to_vec()))
            .collect();
        assert_eq!(
            v,
            vec![
                (0x8022, b"x".to_vec()),
                (0x0006, b"user".to_vec()),
                (0x8023, vec![])
            ]
        );
    }
}
