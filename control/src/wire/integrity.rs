//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT computation and checks
//! (RFC 8489 sections 14.5-14.7).

use super::{attr, Message, WireError, HEADER_LEN};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

const FINGERPRINT_XOR: u32 = 0x5354_554E;

pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// CRC-32 of `data` XOR 0x5354554E.
pub fn fingerprint(data: &[u8]) -> u32 {
    crc32fast::hash(data) ^ FINGERPRINT_XOR
}

/// Which integrity attribute a message carries (the first one present decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

/// Bytes the HMAC covers: everything before the attribute at `offset`, with the header
/// length field rewritten to end just after that attribute (`attr_total` bytes long).
fn covered(bytes: &[u8], offset: usize, attr_total: usize) -> Vec<u8> {
    let mut c = bytes[..offset].to_vec();
    let len = (offset - HEADER_LEN + attr_total) as u16;
    c[2..4].copy_from_slice(&len.to_be_bytes());
    c
}

impl<T: AsRef<[u8]>> Message<T> {
    /// The integrity attribute that protects this message, if any: MESSAGE-INTEGRITY
    /// takes precedence when both are present, matching RFC 8489 section 9.2.4 which
    /// lets the server use either; we verify the first one that occurs, and ignore
    /// everything after it except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
    pub fn integrity_kind(&self) -> Option<IntegrityKind> {
        for a in self.attributes() {
            match a.typ {
                attr::MESSAGE_INTEGRITY => return Some(IntegrityKind::Sha1),
                attr::MESSAGE_INTEGRITY_SHA256 => return Some(IntegrityKind::Sha256),
                _ => {}
            }
        }
        None
    }

    /// Verify the message's integrity attribute with `key`. Constant-time comparison.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, WireError> {
        let bytes = self.as_bytes();
        for a in self.attributes() {
            match a.typ {
                attr::MESSAGE_INTEGRITY => {
                    if a.value.len() != 20 {
                        return Err(WireError::BadAttribute);
                    }
                    let mac = hmac_sha1(key, &covered(bytes, a.offset, 24));
                    return if ct_eq(&mac, a.value) {
                        Ok(IntegrityKind::Sha1)
                    } else {
                        Err(WireError::IntegrityMismatch)
                    };
                }
                attr::MESSAGE_INTEGRITY_SHA256 => {
                    // 16 to 32 bytes in steps of 4: a truncated HMAC-SHA256.
                    let n = a.value.len();
                    if !(16..=32).contains(&n) || n % 4 != 0 {
                        return Err(WireError::BadAttribute);
                    }
                    let mac = hmac_sha256(key, &covered(bytes, a.offset, 4 + n));
                    return if ct_eq(&mac[..n], a.value) {
                        Ok(IntegrityKind::Sha256)
                    } else {
                        Err(WireError::IntegrityMismatch)
                    };
                }
                _ => {}
            }
        }
        Err(WireError::MissingIntegrity)
    }

    /// If a FINGERPRINT attribute is present it must be last and correct.
    /// Returns Ok(true) if present and valid, Ok(false) if absent.
    pub fn check_fingerprint(&self) -> Result<bool, WireError> {
        let bytes = self.as_bytes();
        let mut found = None;
        for a in self.attributes() {
            if found.is_some() {
                // FINGERPRINT must be the last attribute.
                return Err(WireError::BadFingerprint);
            }
            if a.typ == attr::FINGERPRINT {
                found = Some(a);
            }
        }
        match found {
            None => Ok(false),
            Some(a) => {
                let v = attr::decode_u32(a.value).map_err(|_| WireError::BadFingerprint)?;
                if fingerprint(&bytes[..a.offset]) == v {
                    Ok(true)
                } else {
                    Err(WireError::BadFingerprint)
                }
            }
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    d == 0
}
