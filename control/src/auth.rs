//! Long-term credentials (RFC 8489 section 9.2): keys derived from static users and from
//! TURN REST API shared secrets (coturn's `use-auth-secret`), stateless nonces with the
//! nonce cookie, PASSWORD-ALGORITHMS and USERHASH.
//!
//! Invariant: nothing here stores per-client state. A nonce is an HMAC over its own
//! timestamp and the client's transport address, so checking it needs only the server key.

use crate::wire::integrity::{hmac_sha1, hmac_sha256};
use crate::wire::WireError;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use md5::{Digest, Md5};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The nonce cookie prefix of RFC 8489 section 9.2 ("obMatJos2").
pub const NONCE_COOKIE: &str = "obMatJos2";

/// Security feature bits of the nonce cookie, 24 bits written as 4 base64 characters.
/// RFC 8489 section 18.1 as corrected by erratum 6290: bit 0 is the rightmost (least
/// significant) bit, so "Password algorithms" is 0x000001 and "Username anonymity"
/// 0x000002; both set encode as "AAAD" (as libjuice sends).
pub const FEATURE_PASSWORD_ALGORITHMS: u32 = 1;
pub const FEATURE_USERNAME_ANONYMITY: u32 = 1 << 1;

/// The algorithms this server offers, in its order of preference (RFC 8489 section 14.11).
pub const OFFERED_ALGORITHMS: [u16; 2] = [
    crate::wire::attr::ALGORITHM_SHA256,
    crate::wire::attr::ALGORITHM_MD5,
];

/// Password algorithm of RFC 8489 section 18.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    pub fn from_code(c: u16) -> Option<Self> {
        match c {
            crate::wire::attr::ALGORITHM_MD5 => Some(PasswordAlgorithm::Md5),
            crate::wire::attr::ALGORITHM_SHA256 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// A long-term key: MD5 (16 bytes) or SHA-256 (32 bytes) of "username:realm:password".
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Errors in credential configuration (never from the network).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("user name {0:?} is not a valid OpaqueString (RFC 8265)")]
    BadUsername(String),
    #[error("password of user {0:?} is not a valid OpaqueString (RFC 8265)")]
    BadPassword(String),
    #[error("realm {0:?} is not a valid OpaqueString (RFC 8265) or is longer than 127 characters")]
    BadRealm(String),
    #[error("user name {0:?} is 509 bytes or longer")]
    UsernameTooLong(String),
    #[error("empty shared secret")]
    EmptySecret,
}

/// OpaqueString preparation (RFC 8265 section 4.2), used for user names, realms and
/// passwords before hashing (RFC 8489 section 9.2.2).
pub fn opaque_string(s: &str) -> Option<String> {
    use precis_core::profile::Profile;
    precis_profiles::OpaqueString::new()
        .enforce(s)
        .ok()
        .map(|c| c.into_owned())
}

/// The long-term key for already-prepared strings.
pub fn long_term_key(alg: PasswordAlgorithm, username: &str, realm: &str, password: &str) -> Key {
    let input = [
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]
    .concat();
    match alg {
        PasswordAlgorithm::Md5 => Key(Md5::digest(&input).to_vec()),
        PasswordAlgorithm::Sha256 => Key(Sha256::digest(&input).to_vec()),
    }
}

/// USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)) (RFC 8489 section 14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let input = [username.as_bytes(), b":", realm.as_bytes()].concat();
    Sha256::digest(&input).into()
}

/// coturn's TURN REST API password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    STANDARD.encode(hmac_sha1(secret, username.as_bytes()))
}

/// The expiry timestamp (unix seconds) of a TURN REST API user name. coturn writes
/// "expiry:user" and also accepts "user:expiry" and a bare "expiry"; so do we.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let ts = match username.split_once(':') {
        None => username,
        Some((a, _)) if digits(a) => a,
        Some(_) => username.rsplit_once(':').map(|(_, b)| b)?,
    };
    if !digits(ts) {
        return None;
    }
    ts.parse().ok()
}

#[derive(Clone)]
struct UserKeys {
    md5: Key,
    sha256: Key,
}

/// The credentials a server accepts: static users and REST API secrets together.
#[derive(Clone, Default)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, UserKeys>,
    by_userhash: HashMap<[u8; 32], String>,
    secrets: Vec<Vec<u8>>,
}

impl core::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Credentials {
    pub fn new(realm: &str) -> Result<Self, CredentialError> {
        let realm_p =
            opaque_string(realm).ok_or_else(|| CredentialError::BadRealm(realm.into()))?;
        if realm_p.chars().count() >= 128 || realm_p.len() > 763 {
            return Err(CredentialError::BadRealm(realm.into()));
        }
        Ok(Credentials {
            realm: realm_p,
            ..Default::default()
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Add a static user. Only the derived keys are kept, never the password.
    pub fn add_user(&mut self, name: &str, password: &str) -> Result<(), CredentialError> {
        let n = opaque_string(name).ok_or_else(|| CredentialError::BadUsername(name.into()))?;
        if n.len() >= 509 {
            return Err(CredentialError::UsernameTooLong(name.into()));
        }
        let p = opaque_string(password).ok_or_else(|| CredentialError::BadPassword(name.into()))?;
        let keys = UserKeys {
            md5: long_term_key(PasswordAlgorithm::Md5, &n, &self.realm, &p),
            sha256: long_term_key(PasswordAlgorithm::Sha256, &n, &self.realm, &p),
        };
        self.by_userhash
            .insert(userhash(&n, &self.realm), n.clone());
        self.users.insert(n, keys);
        Ok(())
    }

    /// Add a REST API shared secret. Several may be active at once (rotation).
    pub fn add_secret(&mut self, secret: &str) -> Result<(), CredentialError> {
        if secret.is_empty() {
            return Err(CredentialError::EmptySecret);
        }
        self.secrets.push(secret.as_bytes().to_vec());
        Ok(())
    }

    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    pub fn has_secrets(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The user name a USERHASH stands for, among static users.
    pub fn user_for_hash(&self, h: &[u8]) -> Option<&str> {
        let h: [u8; 32] = h.try_into().ok()?;
        self.by_userhash.get(&h).map(String::as_str)
    }

    /// Candidate keys for `username` at unix time `unix_now`: the static user's key, and
    /// for a REST user name that has not expired one key per configured secret. The
    /// caller tries each against the message integrity.
    pub fn candidate_keys(
        &self,
        username: &str,
        alg: PasswordAlgorithm,
        unix_now: u64,
    ) -> Vec<Key> {
        let mut out = Vec::new();
        if let Some(k) = self.users.get(username) {
            out.push(match alg {
                PasswordAlgorithm::Md5 => k.md5.clone(),
                PasswordAlgorithm::Sha256 => k.sha256.clone(),
            });
        }
        if !self.secrets.is_empty() {
            if let Some(exp) = rest_expiry(username) {
                if exp > unix_now {
                    for s in &self.secrets {
                        let pw = rest_password(s, username);
                        out.push(long_term_key(alg, username, &self.realm, &pw));
                    }
                }
            }
        }
        out
    }
}

/// Stateless nonce issuer and checker.
#[derive(Clone)]
pub struct NonceKey {
    key: [u8; 32],
}

/// Why a nonce was refused; both lead to 438 (RFC 8489 section 9.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    Malformed,
    Expired,
}

const NONCE_TS_LEN: usize = 8;
const NONCE_MAC_LEN: usize = 12;

fn features_b64() -> String {
    let f = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY;
    let b = [(f >> 16) as u8, (f >> 8) as u8, f as u8];
    STANDARD.encode(b)
}

fn addr_bytes(a: SocketAddr) -> Vec<u8> {
    let mut v = match a.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

impl NonceKey {
    pub fn new(key: [u8; 32]) -> Self {
        NonceKey { key }
    }

    fn mac(&self, ts: u64, client: SocketAddr) -> [u8; 32] {
        let mut data = ts.to_be_bytes().to_vec();
        data.extend_from_slice(&addr_bytes(client));
        hmac_sha256(&self.key, &data)
    }

    /// A nonce for `client` issued at unix time `unix_now`:
    /// "obMatJos2" + 4 feature characters + base64url(timestamp || HMAC[..12]).
    pub fn issue(&self, unix_now: u64, client: SocketAddr) -> String {
        let mut raw = unix_now.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.mac(unix_now, client)[..NONCE_MAC_LEN]);
        format!(
            "{}{}{}",
            NONCE_COOKIE,
            features_b64(),
            URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// Check a nonce presented by `client`; valid for `lifetime_secs` after issue.
    pub fn check(
        &self,
        nonce: &str,
        unix_now: u64,
        client: SocketAddr,
        lifetime_secs: u64,
    ) -> Result<(), NonceError> {
        let rest = nonce
            .strip_prefix(NONCE_COOKIE)
            .ok_or(NonceError::Malformed)?;
        let f = features_b64();
        let rest = rest.strip_prefix(f.as_str()).ok_or(NonceError::Malformed)?;
        if rest.len() > 64 {
            return Err(NonceError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|_| NonceError::Malformed)?;
        if raw.len() != NONCE_TS_LEN + NONCE_MAC_LEN {
            return Err(NonceError::Malformed);
        }
        let ts = u64::from_be_bytes(raw[..NONCE_TS_LEN].try_into().expect("8 bytes"));
        let mac = self.mac(ts, client);
        let mut d = 0u8;
        for (a, b) in mac[..NONCE_MAC_LEN].iter().zip(&raw[NONCE_TS_LEN..]) {
            d |= a ^ b;
        }
        if d != 0 {
            return Err(NonceError::Malformed);
        }
        if ts > unix_now.saturating_add(5) || unix_now.saturating_sub(ts) >= lifetime_secs {
            return Err(NonceError::Expired);
        }
        Ok(())
    }
}

/// The feature bits a nonce advertises, if it carries the cookie.
pub fn nonce_features(nonce: &str) -> Option<u32> {
    let rest = nonce.strip_prefix(NONCE_COOKIE)?;
    let b = STANDARD.decode(rest.get(..4)?).ok()?;
    // Four characters with '=' padding decode to fewer than 3 bytes: not a cookie.
    let &[b0, b1, b2] = &b[..] else {
        return None;
    };
    Some(((b0 as u32) << 16) | ((b1 as u32) << 8) | b2 as u32)
}

impl From<base64::DecodeError> for WireError {
    fn from(_: base64::DecodeError) -> Self {
        WireError::BadAttribute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_roundtrip_and_expiry() {
        let k = NonceKey::new([9; 32]);
        let c: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        let n = k.issue(1_000, c);
        assert!(n.starts_with("obMatJos2AAAD"), "{n}");
        assert!(n.len() < 128);
        assert_eq!(
            nonce_features(&n),
            Some(FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY)
        );
        assert_eq!(k.check(&n, 1_000, c, 600), Ok(()));
        assert_eq!(k.check(&n, 1_599, c, 600), Ok(()));
        assert_eq!(k.check(&n, 1_600, c, 600), Err(NonceError::Expired));
        // Bound to the client transport address.
        let other: SocketAddr = "192.0.2.2:5001".parse().unwrap();
        assert_eq!(k.check(&n, 1_000, other, 600), Err(NonceError::Malformed));
        // Another server key does not accept it.
        assert_eq!(
            NonceKey::new([8; 32]).check(&n, 1_000, c, 600),
            Err(NonceError::Malformed)
        );
        assert_eq!(
            k.check("garbage", 1_000, c, 600),
            Err(NonceError::Malformed)
        );
    }

    #[test]
    fn rest_api_credentials() {
        let mut c = Credentials::new("example.org").unwrap();
        c.add_secret("s3cret").unwrap();
        c.add_secret("next").unwrap();
        let user = "2000:alice";
        // Two secrets active: two candidate keys, until expiry.
        assert_eq!(
            c.candidate_keys(user, PasswordAlgorithm::Md5, 1999).len(),
            2
        );
        assert!(c
            .candidate_keys(user, PasswordAlgorithm::Md5, 2000)
            .is_empty());
        let pw = rest_password(b"s3cret", user);
        let expect = long_term_key(PasswordAlgorithm::Md5, user, "example.org", &pw);
        assert_eq!(
            c.candidate_keys(user, PasswordAlgorithm::Md5, 10)[0],
            expect
        );
        assert!(c
            .candidate_keys("alice", PasswordAlgorithm::Md5, 10)
            .is_empty());
        assert_eq!(rest_expiry("1795558649:alice"), Some(1795558649));
        assert_eq!(rest_expiry("alice:1795558649"), Some(1795558649));
        assert_eq!(rest_expiry("1795558649"), Some(1795558649));
        assert_eq!(rest_expiry("alice:bob"), None);
        // coturn's documented example: secret s3cret, user 1795558649:alice.
        assert_eq!(
            rest_password(b"s3cret", "1795558649:alice"),
            "0JsLQsX1sgBfU39bl+h3sygylA8="
        );
    }

    #[test]
    fn static_users_store_keys() {
        let mut c = Credentials::new("example.org").unwrap();
        c.add_user("bob", "pw").unwrap();
        let k = c.candidate_keys("bob", PasswordAlgorithm::Md5, 0);
        assert_eq!(
            k,
            vec![long_term_key(
                PasswordAlgorithm::Md5,
                "bob",
                "example.org",
                "pw"
            )]
        );
        let h = userhash("bob", "example.org");
        assert_eq!(c.user_for_hash(&h), Some("bob"));
        assert!(c.add_user("", "x").is_err());
    }
}
