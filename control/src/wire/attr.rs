//! Attribute codepoints and typed decoders (RFC 8489 section 14 and 18.3, RFC 8656
//! section 18). Each decoder checks the value length before reading it.

use super::{TransactionId, WireError, MAGIC_COOKIE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// Comprehension-required range (0x0000-0x7FFF).
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// RFC 6062 section 6.2.1.
pub const CONNECTION_ID: u16 = 0x002A;
/// RFC 5780 NAT behaviour discovery.
pub const CHANGE_REQUEST: u16 = 0x0003;
pub const PADDING: u16 = 0x0026;
pub const RESPONSE_PORT: u16 = 0x0027;
pub const RESPONSE_ORIGIN: u16 = 0x802B;
pub const OTHER_ADDRESS: u16 = 0x802C;
// Comprehension-optional range (0x8000-0xFFFF).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;

/// PASSWORD-ALGORITHM values (RFC 8489 section 18.5).
pub const ALGORITHM_MD5: u16 = 0x0001;
pub const ALGORITHM_SHA256: u16 = 0x0002;

/// Address family codes of XOR-*-ADDRESS and REQUESTED-ADDRESS-FAMILY.
pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;

/// Comprehension-required attributes that xturn's TURN server understands. Anything else
/// below 0x8000 in a request gets 420 with UNKNOWN-ATTRIBUTES.
pub const UNDERSTOOD_REQUIRED: &[u16] = &[
    MAPPED_ADDRESS,
    USERNAME,
    MESSAGE_INTEGRITY,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    CHANNEL_NUMBER,
    LIFETIME,
    XOR_PEER_ADDRESS,
    DATA,
    REALM,
    NONCE,
    XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY,
    EVEN_PORT,
    REQUESTED_TRANSPORT,
    DONT_FRAGMENT,
    CONNECTION_ID,
    MESSAGE_INTEGRITY_SHA256,
    PASSWORD_ALGORITHM,
    USERHASH,
    XOR_MAPPED_ADDRESS,
    RESERVATION_TOKEN,
];

/// XOR an address with the magic cookie (and, for IPv6, the transaction id).
pub fn encode_xor_address(addr: SocketAddr, tid: &TransactionId) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            let mut v = vec![0, FAMILY_IPV4];
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&x.to_be_bytes());
            v
        }
        IpAddr::V6(ip) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(&tid.0);
            let o = ip.octets();
            let mut v = vec![0, FAMILY_IPV6];
            v.extend_from_slice(&port.to_be_bytes());
            for i in 0..16 {
                v.push(o[i] ^ key[i]);
            }
            v
        }
    }
}

/// Decode an XOR-*-ADDRESS value.
pub fn decode_xor_address(v: &[u8], tid: &TransactionId) -> Result<SocketAddr, WireError> {
    let plain = decode_address(v)?;
    let port = plain.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match plain.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ MAGIC_COOKIE)),
        IpAddr::V6(ip) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(&tid.0);
            let mut o = ip.octets();
            for i in 0..16 {
                o[i] ^= key[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// A plain (MAPPED-ADDRESS style) address value: ALTERNATE-SERVER (RFC 8489 section
/// 14.15), MAPPED-ADDRESS.
pub fn encode_address(addr: SocketAddr) -> Vec<u8> {
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(FAMILY_IPV4);
            v.extend_from_slice(&addr.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(FAMILY_IPV6);
            v.extend_from_slice(&addr.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

/// Decode a plain (MAPPED-ADDRESS style) address value.
pub fn decode_address(v: &[u8]) -> Result<SocketAddr, WireError> {
    if v.len() < 4 {
        return Err(WireError::BadAttribute);
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match (v[1], v.len()) {
        (FAMILY_IPV4, 8) => {
            let ip = Ipv4Addr::new(v[4], v[5], v[6], v[7]);
            Ok(SocketAddr::new(ip.into(), port))
        }
        (FAMILY_IPV6, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            Ok(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => Err(WireError::BadAttribute),
    }
}

/// A 32-bit attribute value (LIFETIME, FINGERPRINT).
pub fn decode_u32(v: &[u8]) -> Result<u32, WireError> {
    match v {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(WireError::BadAttribute),
    }
}

/// CHANNEL-NUMBER: 2-byte number and 2 bytes RFFU (RFC 8656 section 18.1).
pub fn decode_channel_number(v: &[u8]) -> Result<u16, WireError> {
    match v {
        [a, b, _, _] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(WireError::BadAttribute),
    }
}

/// REQUESTED-TRANSPORT: protocol number then 3 bytes RFFU (RFC 8656 section 18.7).
pub fn decode_requested_transport(v: &[u8]) -> Result<u8, WireError> {
    match v {
        [p, _, _, _] => Ok(*p),
        _ => Err(WireError::BadAttribute),
    }
}

/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: family then 3 bytes RFFU.
pub fn decode_family(v: &[u8]) -> Result<u8, WireError> {
    match v {
        [f, _, _, _] => Ok(*f),
        _ => Err(WireError::BadAttribute),
    }
}

/// EVEN-PORT: the R bit (RFC 8656 section 18.6).
pub fn decode_even_port(v: &[u8]) -> Result<bool, WireError> {
    match v {
        [b, ..] => Ok(b & 0x80 != 0),
        _ => Err(WireError::BadAttribute),
    }
}

/// ERROR-CODE value into (code, reason).
pub fn decode_error_code(v: &[u8]) -> Result<(u16, &str), WireError> {
    if v.len() < 4 {
        return Err(WireError::BadAttribute);
    }
    let class = (v[2] & 0x07) as u16;
    let number = v[3] as u16;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(WireError::BadAttribute);
    }
    let reason = core::str::from_utf8(&v[4..]).map_err(|_| WireError::BadAttribute)?;
    Ok((class * 100 + number, reason))
}

/// PASSWORD-ALGORITHMS: a list of (algorithm, params) entries, each padded to 4 bytes
/// (RFC 8489 section 14.11). Returns the algorithm numbers.
pub fn decode_password_algorithms(v: &[u8]) -> Result<Vec<u16>, WireError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < v.len() {
        if off + 4 > v.len() {
            return Err(WireError::BadAttribute);
        }
        let alg = u16::from_be_bytes([v[off], v[off + 1]]);
        let plen = u16::from_be_bytes([v[off + 2], v[off + 3]]) as usize;
        let padded = (plen + 3) & !3;
        if off + 4 + padded > v.len() {
            return Err(WireError::BadAttribute);
        }
        out.push(alg);
        off += 4 + padded;
        if out.len() > 16 {
            return Err(WireError::BadAttribute);
        }
    }
    Ok(out)
}

/// Encode PASSWORD-ALGORITHMS for the given algorithms (no parameters).
pub fn encode_password_algorithms(algs: &[u16]) -> Vec<u8> {
    let mut v = Vec::with_capacity(algs.len() * 4);
    for a in algs {
        v.extend_from_slice(&a.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
    }
    v
}

/// PASSWORD-ALGORITHM: algorithm and parameters (RFC 8489 section 14.12).
pub fn decode_password_algorithm(v: &[u8]) -> Result<u16, WireError> {
    if v.len() < 4 {
        return Err(WireError::BadAttribute);
    }
    let alg = u16::from_be_bytes([v[0], v[1]]);
    let plen = u16::from_be_bytes([v[2], v[3]]) as usize;
    if 4 + plen > v.len() {
        return Err(WireError::BadAttribute);
    }
    Ok(alg)
}

/// A UTF-8 text attribute with a maximum length in characters and in bytes
/// (RFC 8489 section 14: REALM, NONCE, SOFTWARE < 128 characters, <= 763 bytes;
/// USERNAME < 509 bytes).
pub fn decode_text(v: &[u8], max_chars: usize, max_bytes: usize) -> Result<&str, WireError> {
    if v.len() > max_bytes {
        return Err(WireError::BadAttribute);
    }
    let s = core::str::from_utf8(v).map_err(|_| WireError::BadAttribute)?;
    if s.chars().count() > max_chars {
        return Err(WireError::BadAttribute);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_address_roundtrip_v4_v6() {
        let tid = TransactionId([
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ]);
        for a in [
            "192.0.2.1:32853".parse::<SocketAddr>().unwrap(),
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap(),
        ] {
            let v = encode_xor_address(a, &tid);
            assert_eq!(decode_xor_address(&v, &tid).unwrap(), a);
        }
        // RFC 5769 2.2: 192.0.2.1:32853 encodes as 0x0001 0xa147 0xe112a643.
        let v = encode_xor_address("192.0.2.1:32853".parse().unwrap(), &tid);
        assert_eq!(v, [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    }

    #[test]
    fn decoders_reject_short_values() {
        let tid = TransactionId::default();
        assert!(decode_xor_address(&[0, 1, 0], &tid).is_err());
        assert!(decode_xor_address(&[0, 1, 0, 0, 1, 2, 3], &tid).is_err());
        assert!(decode_xor_address(&[0, 2, 0, 0, 1, 2, 3, 4], &tid).is_err());
        assert!(decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &tid).is_err());
        assert!(decode_u32(&[1, 2, 3]).is_err());
        assert!(decode_channel_number(&[0x40]).is_err());
        assert!(decode_requested_transport(&[]).is_err());
        assert!(decode_error_code(&[0, 0, 2, 0]).is_err());
        assert_eq!(decode_error_code(&[0, 0, 4, 1, b'x']).unwrap(), (401, "x"));
        assert!(decode_password_algorithms(&[0, 1, 0, 8, 0, 0]).is_err());
        assert_eq!(
            decode_password_algorithms(&encode_password_algorithms(&[1, 2])).unwrap(),
            vec![1, 2]
        );
        assert!(decode_text(&[0xff], 10, 10).is_err());
        assert!(decode_text(&[b'a'; 11], 10, 100).is_err());
    }
}
