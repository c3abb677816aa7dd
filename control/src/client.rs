//! A small sans-IO TURN client: builds authenticated requests and learns REALM/NONCE from
//! 401 and 438 answers. Used by the bench load generator and the tests; it owns no socket.

use crate::auth::{self, long_term_key, opaque_string, Key, PasswordAlgorithm};
use crate::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use std::net::SocketAddr;
use std::time::Duration;

/// Long-term credential state of one client.
#[derive(Debug, Clone)]
pub struct TurnClient {
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<Key>,
    /// Use PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256 when the server offers it.
    pub prefer_sha256: bool,
    /// Send USERHASH instead of USERNAME when the server offers anonymity.
    pub use_userhash: bool,
    /// Add FINGERPRINT to requests.
    pub fingerprint: bool,
    offered: Vec<u16>,
    features: u32,
}

/// What an answer means for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Success response (verified if the client had a key).
    Success,
    /// 401 or 438 that taught a new nonce: send the request again.
    Retry,
    /// Any other error, with its code.
    Error(u16),
    /// Not a response, or integrity failed.
    Invalid,
}

impl TurnClient {
    pub fn new(username: &str, password: &str) -> Self {
        TurnClient {
            username: username.to_string(),
            password: password.to_string(),
            realm: None,
            nonce: None,
            key: None,
            prefer_sha256: false,
            use_userhash: false,
            fingerprint: true,
            offered: Vec::new(),
            features: 0,
        }
    }

    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    fn algorithm(&self) -> PasswordAlgorithm {
        if self.prefer_sha256
            && self.features & auth::FEATURE_PASSWORD_ALGORITHMS != 0
            && self.offered.contains(&attr::ALGORITHM_SHA256)
        {
            PasswordAlgorithm::Sha256
        } else {
            PasswordAlgorithm::Md5
        }
    }

    /// Build a request; authenticated once REALM and NONCE are known.
    pub fn request(
        &self,
        method: Method,
        tid: TransactionId,
        body: impl FnOnce(&mut MessageBuilder),
    ) -> Vec<u8> {
        let mut b = MessageBuilder::new(method, Class::Request, tid);
        body(&mut b);
        if let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) {
            let alg = self.algorithm();
            if self.use_userhash && self.features & auth::FEATURE_USERNAME_ANONYMITY != 0 {
                b.attr(attr::USERHASH, &auth::userhash(&self.username, realm));
            } else {
                b.attr(attr::USERNAME, self.username.as_bytes());
            }
            b.attr(attr::REALM, realm.as_bytes());
            b.attr(attr::NONCE, nonce.as_bytes());
            if alg == PasswordAlgorithm::Sha256 {
                b.attr(
                    attr::PASSWORD_ALGORITHMS,
                    &attr::encode_password_algorithms(&self.offered),
                );
                b.attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
                b.message_integrity_sha256(key.as_bytes());
            } else {
                b.message_integrity(key.as_bytes());
            }
        }
        if self.fingerprint {
            b.fingerprint();
        }
        b.finish()
    }

    /// Look at a response to a request of ours.
    pub fn answer(&mut self, bytes: &[u8]) -> Answer {
        let Ok(msg) = Message::new_checked(bytes) else {
            return Answer::Invalid;
        };
        match msg.class() {
            Class::Success => {
                if let Some(k) = &self.key {
                    if msg.integrity_kind().is_some() && msg.verify_integrity(k.as_bytes()).is_err()
                    {
                        return Answer::Invalid;
                    }
                }
                Answer::Success
            }
            Class::Error => {
                let code = msg
                    .attribute(attr::ERROR_CODE)
                    .and_then(|a| attr::decode_error_code(a.value).ok())
                    .map(|(c, _)| c)
                    .unwrap_or(0);
                if code == 401 || code == 438 {
                    let realm = msg
                        .attribute(attr::REALM)
                        .and_then(|a| core::str::from_utf8(a.value).ok());
                    let nonce = msg
                        .attribute(attr::NONCE)
                        .and_then(|a| core::str::from_utf8(a.value).ok());
                    if let (Some(r), Some(n)) = (realm, nonce) {
                        let retry =
                            code == 438 || self.nonce.is_none() || self.realm.as_deref() != Some(r);
                        self.realm = Some(r.to_string());
                        self.nonce = Some(n.to_string());
                        self.features = auth::nonce_features(n).unwrap_or(0);
                        self.offered = msg
                            .attribute(attr::PASSWORD_ALGORITHMS)
                            .and_then(|a| attr::decode_password_algorithms(a.value).ok())
                            .unwrap_or_default();
                        let user =
                            opaque_string(&self.username).unwrap_or_else(|| self.username.clone());
                        let pass =
                            opaque_string(&self.password).unwrap_or_else(|| self.password.clone());
                        self.key = Some(long_term_key(self.algorithm(), &user, r, &pass));
                        if retry {
                            return Answer::Retry;
                        }
                    }
                }
                Answer::Error(code)
            }
            _ => Answer::Invalid,
        }
    }
}

/// Body of an Allocate request for UDP with an optional lifetime.
pub fn allocate_body(lifetime: Option<Duration>) -> impl Fn(&mut MessageBuilder) + Clone {
    move |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        if let Some(l) = lifetime {
            b.u32_attr(attr::LIFETIME, l.as_secs() as u32);
        }
    }
}

/// Body of a Refresh request.
pub fn refresh_body(lifetime: Duration) -> impl Fn(&mut MessageBuilder) + Clone {
    move |b| {
        b.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
    }
}

/// Body of a CreatePermission request.
pub fn permission_body(peers: Vec<SocketAddr>) -> impl Fn(&mut MessageBuilder) + Clone {
    move |b| {
        for p in &peers {
            b.xor_addr(attr::XOR_PEER_ADDRESS, *p);
        }
    }
}

/// Body of a ChannelBind request.
pub fn channel_bind_body(channel: u16, peer: SocketAddr) -> impl Fn(&mut MessageBuilder) + Clone {
    move |b| {
        b.attr(
            attr::CHANNEL_NUMBER,
            &[(channel >> 8) as u8, channel as u8, 0, 0],
        );
        b.xor_addr(attr::XOR_PEER_ADDRESS, peer);
    }
}

/// A Send indication (unauthenticated, RFC 8656 section 10.1).
pub fn send_indication(tid: TransactionId, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new(Method::Send, Class::Indication, tid);
    b.xor_addr(attr::XOR_PEER_ADDRESS, peer);
    b.attr(attr::DATA, data);
    b.finish()
}

/// A Binding request, optionally with FINGERPRINT.
pub fn binding_request(tid: TransactionId, fingerprint: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid);
    if fingerprint {
        b.fingerprint();
    }
    b.finish()
}

/// An address attribute (XOR-MAPPED/RELAYED/PEER-ADDRESS) from a message.
pub fn xor_address(bytes: &[u8], typ: u16) -> Option<SocketAddr> {
    let m = Message::new_checked(bytes).ok()?;
    let a = m.attribute(typ)?;
    attr::decode_xor_address(a.value, &m.transaction_id()).ok()
}

/// The (peer, data) of a Data indication.
pub fn data_indication(bytes: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
    let m = Message::new_checked(bytes).ok()?;
    if m.method() != Method::Data || m.class() != Class::Indication {
        return None;
    }
    let peer = attr::decode_xor_address(
        m.attribute(attr::XOR_PEER_ADDRESS)?.value,
        &m.transaction_id(),
    )
    .ok()?;
    Some((peer, m.attribute(attr::DATA)?.value.to_vec()))
}

/// The LIFETIME of a response, in seconds.
pub fn lifetime(bytes: &[u8]) -> Option<u32> {
    let m = Message::new_checked(bytes).ok()?;
    attr::decode_u32(m.attribute(attr::LIFETIME)?.value).ok()
}

/// The ERROR-CODE of a response.
pub fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = Message::new_checked(bytes).ok()?;
    attr::decode_error_code(m.attribute(attr::ERROR_CODE)?.value)
        .ok()
        .map(|(c, _)| c)
}
