//! Long-term credential authentication of TURN requests (RFC 8489 section 9.2.4) and the
//! budgets that bound the 401 answers unauthenticated sources can draw.

use super::{Auth, AuthFailure, Ctx, Server};
use crate::auth::{self, PasswordAlgorithm};
use crate::error::{BadRequest, TurnError};
use crate::wire::{attr, Message, HEADER_LEN};
use std::net::IpAddr;
use std::time::Instant;

impl Server {
    /// RFC 8489 section 9.2.4, in its order.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        msg: &Message<&[u8]>,
        ctx: &Ctx,
    ) -> Option<Auth> {
        let Some(kind) = msg.integrity_kind() else {
            self.stats.auth_failure(AuthFailure::NoCredentials);
            self.challenge(now, ctx, TurnError::Unauthorized);
            return None;
        };
        let username = msg.attribute(attr::USERNAME);
        let userhash = msg.attribute(attr::USERHASH);
        let realm = msg.attribute(attr::REALM);
        let nonce = msg.attribute(attr::NONCE);
        let (Some(realm), Some(nonce), true) =
            (realm, nonce, username.is_some() || userhash.is_some())
        else {
            self.stats.auth_failure(AuthFailure::BadRequest);
            self.error(
                ctx,
                None,
                TurnError::BadRequest(BadRequest::MissingCredentials),
                &[],
            );
            return None;
        };
        let (Ok(_realm), Ok(nonce)) = (
            attr::decode_text(realm.value, 127, 763),
            attr::decode_text(nonce.value, 127, 763),
        ) else {
            self.stats.auth_failure(AuthFailure::BadRequest);
            self.error(ctx, None, TurnError::BadRequest(BadRequest::Malformed), &[]);
            return None;
        };
        // PASSWORD-ALGORITHMS bid-down protection (RFC 8489 section 9.2.4), only for
        // nonces that advertise the feature.
        let features = auth::nonce_features(nonce).unwrap_or(0);
        let mut alg = PasswordAlgorithm::Md5;
        let pas = msg.attribute(attr::PASSWORD_ALGORITHMS);
        let pa = msg.attribute(attr::PASSWORD_ALGORITHM);
        if features & auth::FEATURE_PASSWORD_ALGORITHMS != 0 && (pas.is_some() || pa.is_some()) {
            let ok = match (pas, pa) {
                (Some(pas), Some(pa)) => {
                    match (
                        attr::decode_password_algorithms(pas.value),
                        attr::decode_password_algorithm(pa.value),
                    ) {
                        (Ok(list), Ok(chosen))
                            if list == auth::OFFERED_ALGORITHMS && list.contains(&chosen) =>
                        {
                            alg = PasswordAlgorithm::from_code(chosen)
                                .unwrap_or(PasswordAlgorithm::Md5);
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
            if !ok {
                self.stats.auth_failure(AuthFailure::BadRequest);
                self.error(
                    ctx,
                    None,
                    TurnError::BadRequest(BadRequest::PasswordAlgorithms),
                    &[],
                );
                return None;
            }
        }
        // Resolve the user name (USERHASH only with the username-anonymity feature).
        let name = match (username, userhash) {
            (Some(u), _) => attr::decode_text(u.value, usize::MAX, 508)
                .ok()
                .map(str::to_string),
            (None, Some(h)) => self
                .cfg
                .credentials
                .user_for_hash(h.value)
                .filter(|_| features & auth::FEATURE_USERNAME_ANONYMITY != 0)
                .map(str::to_string),
            (None, None) => None,
        };
        let Some(name) = name else {
            self.stats.auth_failure(AuthFailure::UnknownUser);
            self.challenge(now, ctx, TurnError::Unauthorized);
            return None;
        };
        let unix = self.unix(now);
        let keys = self.cfg.credentials.candidate_keys(&name, alg, unix);
        let known = !keys.is_empty();
        let Some(key) = keys
            .into_iter()
            .find(|k| msg.verify_integrity(k.as_bytes()).is_ok())
        else {
            self.stats.auth_failure(if known {
                AuthFailure::BadIntegrity
            } else {
                AuthFailure::UnknownUser
            });
            self.challenge(now, ctx, TurnError::Unauthorized);
            return None;
        };
        let lifetime = self.cfg.nonce_lifetime.as_secs().max(1);
        if self
            .nonce_key
            .check(nonce, unix, nonce_subject(ctx.five_tuple), lifetime)
            .is_err()
        {
            self.stats.auth_failure(AuthFailure::StaleNonce);
            self.challenge(now, ctx, TurnError::StaleNonce);
            return None;
        }
        Some(Auth {
            username: name,
            key,
            kind,
        })
    }

    /// 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
    pub(super) fn challenge(&mut self, now: Instant, ctx: &Ctx, e: TurnError) {
        if e == TurnError::Unauthorized
            && !self.take_unauth_token(now, ctx.five_tuple.client.0.ip())
        {
            self.stats.unauth_shed += 1;
            return;
        }
        let nonce = self
            .nonce_key
            .issue(self.unix(now), nonce_subject(ctx.five_tuple));
        let realm = self.cfg.credentials.realm().as_bytes().to_vec();
        self.error(
            ctx,
            None,
            e,
            &[
                (attr::REALM, realm),
                (attr::NONCE, nonce.into_bytes()),
                (
                    attr::PASSWORD_ALGORITHMS,
                    attr::encode_password_algorithms(&auth::OFFERED_ALGORITHMS),
                ),
            ],
        );
    }

    /// The source prefix's budget first (a flood from one range empties only its own), then
    /// the server-wide token bucket. Neither keeps per-source state.
    fn take_unauth_token(&mut self, now: Instant, source: IpAddr) -> bool {
        if !self.unauth_prefix.take(now, source) {
            return false;
        }
        let rate = self.cfg.unauth_rate as f64;
        if rate == 0.0 {
            return true;
        }
        let dt = now
            .saturating_duration_since(self.unauth_last)
            .as_secs_f64();
        self.unauth_last = now;
        self.unauth_tokens = (self.unauth_tokens + dt * rate).min(rate);
        if self.unauth_tokens >= 1.0 {
            self.unauth_tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The message up to and including its first integrity attribute, with the length field
/// rewritten to end there; `None` if there is no integrity attribute or nothing follows it.
pub(super) fn up_to_integrity(msg: &Message<&[u8]>) -> Option<Vec<u8>> {
    let a = msg
        .attributes()
        .find(|a| a.typ == attr::MESSAGE_INTEGRITY || a.typ == attr::MESSAGE_INTEGRITY_SHA256)?;
    let end = a.offset + 4 + ((a.value.len() + 3) & !3);
    let bytes = msg.as_bytes();
    if end >= bytes.len() {
        return None;
    }
    let mut v = bytes[..end].to_vec();
    v[2..4].copy_from_slice(&((end - HEADER_LEN) as u16).to_be_bytes());
    Some(v)
}

/// What a nonce is bound to: a UDP client's transport address; for TCP (and TLS) the
/// client's IP address only. A TCP connection cannot be spoofed, so its port adds nothing,
/// and RFC 6062 clients (coturn's, pion's) present the control connection's nonce on
/// their data connections, which come from other ports (coturn accepts it; a 438 there
/// ends `turnutils_uclient`'s ConnectionBind).
fn nonce_subject(ft: crate::types::FiveTuple) -> std::net::SocketAddr {
    match ft.transport {
        crate::types::Transport::Udp => ft.client.0,
        crate::types::Transport::Tcp => std::net::SocketAddr::new(ft.client.0.ip(), 0),
    }
}
