//! RFC 3489 ("classic STUN") Binding requests: no magic cookie, a 128-bit transaction id
//! (bytes 4..20), attributes as in RFC 8489 but none of the new ones. RFC 8489 section 11
//! asks servers to answer them (SHOULD) with MAPPED-ADDRESS and the transaction id
//! copied; old NAT-type tools (pystun3, the `stun` client) still send them.
//!
//! Refused here, silently: RESPONSE-ADDRESS (answer to another address: a reflector an
//! attacker could aim), CHANGE-REQUEST with a flag set (the answer would come from an
//! address this server has not got, and the client would misread the silence anyway; RFC
//! 5780 NAT discovery is the RFC 8489 way), and unknown comprehension-required attributes.

use super::stun::{HEADER_LEN, MAGIC_COOKIE};
use std::net::{IpAddr, SocketAddr};

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_RESPONSE: u16 = 0x0101;
const MAPPED_ADDRESS: u16 = 0x0001;
const RESPONSE_ADDRESS: u16 = 0x0002;
const CHANGE_REQUEST: u16 = 0x0003;
const SOURCE_ADDRESS: u16 = 0x0004;
const CHANGED_ADDRESS: u16 = 0x0005;

/// With an alternate address (RFC 3489's CHANGED-ADDRESS, RFC 5780's OTHER-ADDRESS): where
/// the answer to a request with these CHANGE-REQUEST flags comes from, and the changed
/// address to name.
pub struct Alternate {
    pub source: SocketAddr,
    pub changed: SocketAddr,
}

/// What a datagram is, classic-wise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classic {
    /// Not an RFC 3489 Binding request (an RFC 8489 message, or anything else).
    No,
    /// An RFC 3489 Binding request this server does not answer (see the module docs).
    Refused,
    /// The Binding response to send back.
    Answer(Vec<u8>),
    /// The Binding response to send from this address (a CHANGE-REQUEST honoured, or
    /// from the address it came to).
    AnswerFrom(SocketAddr, Vec<u8>),
}

/// Classify `bytes` from `from`; answer a classic Binding request.
pub fn binding(from: SocketAddr, bytes: &[u8]) -> Classic {
    binding_via(from, bytes, None)
}

/// [`binding`] with an alternate address: CHANGE-REQUEST honoured, SOURCE-ADDRESS and
/// CHANGED-ADDRESS in the answer. `alt` maps the request's CHANGE-REQUEST flags to the
/// answer's source and the changed address.
pub fn binding_via(
    from: SocketAddr,
    bytes: &[u8],
    alt: Option<&dyn Fn(u8) -> Alternate>,
) -> Classic {
    if bytes.len() < HEADER_LEN || bytes[0] & 0xC0 != 0 {
        return Classic::No;
    }
    if u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) == MAGIC_COOKIE {
        return Classic::No;
    }
    let typ = u16::from_be_bytes([bytes[0], bytes[1]]);
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    if typ != BINDING_REQUEST || len != bytes.len() - HEADER_LEN || !len.is_multiple_of(4) {
        return Classic::No;
    }
    let mut at = HEADER_LEN;
    let mut flags = 0u8;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 4) else {
            return Classic::Refused;
        };
        let t = u16::from_be_bytes([head[0], head[1]]);
        let l = u16::from_be_bytes([head[2], head[3]]) as usize;
        let Some(value) = bytes.get(at + 4..at + 4 + l) else {
            return Classic::Refused;
        };
        match t {
            CHANGE_REQUEST if l != 4 || (value[3] & 0x06 != 0 && alt.is_none()) => {
                return Classic::Refused
            }
            CHANGE_REQUEST => flags = value[3] & 0x06,
            RESPONSE_ADDRESS => return Classic::Refused,
            t if t < 0x8000 => return Classic::Refused,
            _ => {}
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 24);
    out.extend_from_slice(&BINDING_RESPONSE.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&bytes[4..HEADER_LEN]);
    address(&mut out, MAPPED_ADDRESS, from);
    let via = alt.map(|alt| {
        let a = alt(flags);
        address(&mut out, SOURCE_ADDRESS, a.source);
        address(&mut out, CHANGED_ADDRESS, a.changed);
        a.source
    });
    let body = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&body.to_be_bytes());
    match via {
        Some(source) => Classic::AnswerFrom(source, out),
        None => Classic::Answer(out),
    }
}

/// An RFC 3489 address attribute (not XOR'd).
fn address(out: &mut Vec<u8>, typ: u16, a: SocketAddr) {
    out.extend_from_slice(&typ.to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 2]);
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attrs: &[u8]) -> Vec<u8> {
        let mut r = vec![0x00, 0x01];
        r.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        r.extend_from_slice(&[0x5a; 16]);
        r.extend_from_slice(attrs);
        r
    }

    #[test]
    fn answers_with_mapped_address_and_the_whole_transaction_id() {
        let from: SocketAddr = "192.0.2.7:54320".parse().unwrap();
        let Classic::Answer(a) = binding(from, &request(&[])) else {
            panic!("no answer")
        };
        assert_eq!(
            a,
            [
                &[0x01, 0x01, 0x00, 0x0c][..],
                &[0x5a; 16],
                &[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0xd4, 0x30, 192, 0, 2, 7],
            ]
            .concat()
        );
        // CHANGE-REQUEST without flags is a plain request.
        let no_change = request(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0]);
        assert!(matches!(binding(from, &no_change), Classic::Answer(_)));
        let v6: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
        let Classic::Answer(a) = binding(v6, &request(&[])) else {
            panic!("no answer")
        };
        assert_eq!(&a[20..26], &[0x00, 0x01, 0x00, 0x14, 0x00, 0x02]);
    }

    #[test]
    fn refuses_what_it_cannot_honour_and_ignores_the_rest() {
        let from: SocketAddr = "192.0.2.7:54320".parse().unwrap();
        for attrs in [
            &[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6][..], // change IP and port
            &[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 2][..], // change port
            &[0x00, 0x02, 0x00, 0x08, 0, 1, 0, 9, 1, 2, 3, 4][..], // RESPONSE-ADDRESS
            &[0x00, 0x0f, 0x00, 0x00][..],             // unknown, comprehension-required
            &[0x00, 0x03, 0x00, 0x08, 0, 0, 0, 0][..], // overruns the message
        ] {
            assert_eq!(
                binding(from, &request(attrs)),
                Classic::Refused,
                "{attrs:?}"
            );
        }
        let optional = request(&[0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0]);
        assert!(matches!(binding(from, &optional), Classic::Answer(_)));
        // RFC 8489 messages, other types, bad lengths, junk: not classic.
        let mut modern = request(&[]);
        modern[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(binding(from, &modern), Classic::No);
        let mut other = request(&[]);
        other[1] = 0x03;
        assert_eq!(binding(from, &other), Classic::No);
        let mut short = request(&[]);
        short[3] = 4;
        assert_eq!(binding(from, &short), Classic::No);
        assert_eq!(binding(from, &[0x80; 20]), Classic::No);
        assert_eq!(binding(from, &[0; 19]), Classic::No);
    }
}
