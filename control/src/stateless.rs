//! What a listening socket can answer, or throw away, without the server's state.
//!
//! The socket path's workers classify every datagram that is not ChannelData here before
//! anything takes the server lock: junk and malformed STUN are dropped, Binding requests
//! and requests of unknown methods are answered from the datagram alone (within a budget
//! per source prefix, [`PrefixBudget`]), and only TURN requests and Send indications reach
//! [`crate::Server`]. A Binding flood therefore never serialises the workers, and the
//! answers it gets are bounded per source range.

use crate::error::{BadRequest, TurnError};
use crate::limit::{PrefixBudget, DEFAULT_SLOTS};
use crate::wire::classic::{self, Classic};
use crate::wire::{attr, looks_like_stun, Class, Message, MessageBuilder, Method};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What to do with a datagram to a listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send this answer back to the source.
    Answer(Vec<u8>),
    /// Not STUN, malformed, a wrong FINGERPRINT, a response or indication the server has
    /// no use for, or an answer over its prefix's budget: nothing to do.
    Drop(DropReason),
    /// A TURN request or a Send indication: the server decides.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    NotStun,
    Malformed,
    Unwanted,
    OverBudget,
}

#[derive(Debug)]
pub struct Stateless {
    software: Option<String>,
    budget: PrefixBudget,
    /// Answers sent, by [`Answered`]'s fields in order.
    answered: [AtomicU64; 4],
}

/// What [`Stateless`] answered since it was made (the metrics' Binding responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answered {
    /// Binding success responses.
    pub binding: u64,
    /// Binding requests with unknown comprehension-required attributes: 420.
    pub binding_unknown_attribute: u64,
    /// Requests of methods the server does not know: 400.
    pub unknown_method: u64,
    /// RFC 3489 Binding requests (no magic cookie) answered with MAPPED-ADDRESS.
    pub classic_binding: u64,
}

/// Attributes of a request that the server must understand (RFC 8489 section 7.3.1):
/// comprehension-required ones it does not know, sorted, deduplicated.
pub fn unknown_required(msg: &Message<&[u8]>) -> Vec<u16> {
    let mut unknown: Vec<u16> = msg
        .attributes()
        .filter(|a| a.comprehension_required() && !attr::UNDERSTOOD_REQUIRED.contains(&a.typ))
        .map(|a| a.typ)
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
}

/// The UNKNOWN-ATTRIBUTES value for `unknown` (at most 32 types).
pub fn unknown_attributes_value(unknown: &[u16]) -> Vec<u8> {
    unknown
        .iter()
        .take(32)
        .flat_map(|t| t.to_be_bytes())
        .collect()
}

impl Stateless {
    /// `rate`: answers per second per source prefix (0: unlimited); `seed` keys the
    /// budget table's hash.
    pub fn new(software: Option<String>, rate: u32, seed: u64, epoch: Instant) -> Self {
        Stateless {
            software,
            budget: PrefixBudget::new(rate, DEFAULT_SLOTS, seed, epoch),
            answered: Default::default(),
        }
    }

    /// Classify a datagram from `from` to the listening address `local` (not ChannelData:
    /// the caller has checked that first).
    pub fn classify(&self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Verdict {
        if !looks_like_stun(bytes) {
            return match classic::binding(from, bytes) {
                Classic::Answer(b) => {
                    if !self.budget.take(now, from.ip()) {
                        return Verdict::Drop(DropReason::OverBudget);
                    }
                    self.answered[3].fetch_add(1, Ordering::Relaxed);
                    Verdict::Answer(b)
                }
                Classic::Refused => Verdict::Drop(DropReason::Unwanted),
                Classic::No => Verdict::Drop(DropReason::NotStun),
            };
        }
        let Ok(msg) = Message::new_checked(bytes) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // A FINGERPRINT that is present must be right (RFC 8489 section 7.3).
        let Ok(fingerprint) = msg.check_fingerprint() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let (answer, kind) = match (msg.class(), msg.method()) {
            (Class::Request, Method::Binding) => {
                let unknown = unknown_required(&msg);
                if unknown.is_empty() {
                    let mut b =
                        MessageBuilder::new(Method::Binding, Class::Success, msg.transaction_id());
                    b.xor_addr(attr::XOR_MAPPED_ADDRESS, from);
                    (b, 0)
                } else {
                    let b = self.error(
                        &msg,
                        TurnError::UnknownAttribute,
                        &[(attr::UNKNOWN_ATTRIBUTES, unknown_attributes_value(&unknown))],
                    );
                    (b, 1)
                }
            }
            (Class::Request, Method::Allocate)
            | (Class::Request, Method::Refresh)
            | (Class::Request, Method::CreatePermission)
            | (Class::Request, Method::ChannelBind)
            | (Class::Indication, Method::Send) => return Verdict::Server,
            (Class::Request, _) => (
                self.error(&msg, TurnError::BadRequest(BadRequest::UnknownMethod), &[]),
                2,
            ),
            _ => return Verdict::Drop(DropReason::Unwanted),
        };
        if !self.budget.take(now, from.ip()) {
            return Verdict::Drop(DropReason::OverBudget);
        }
        self.answered[kind].fetch_add(1, Ordering::Relaxed);
        Verdict::Answer(self.finish(answer, fingerprint))
    }

    /// What this classifier answered so far.
    pub fn answered(&self) -> Answered {
        let n = |i: usize| self.answered[i].load(Ordering::Relaxed);
        Answered {
            binding: n(0),
            binding_unknown_attribute: n(1),
            unknown_method: n(2),
            classic_binding: n(3),
        }
    }

    fn error(
        &self,
        msg: &Message<&[u8]>,
        e: TurnError,
        extra: &[(u16, Vec<u8>)],
    ) -> MessageBuilder {
        let (code, reason) = e.code();
        let mut b = MessageBuilder::new(msg.method(), Class::Error, msg.transaction_id());
        b.error_code(code, reason);
        for (t, v) in extra {
            b.attr(*t, v);
        }
        b
    }

    fn finish(&self, mut b: MessageBuilder, fingerprint: bool) -> Vec<u8> {
        if let Some(s) = &self.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        if fingerprint {
            b.fingerprint();
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::binding_request;
    use crate::wire::TransactionId;

    #[test]
    fn answers_are_counted_by_kind_and_only_when_sent() {
        let now = Instant::now();
        // One answer per second per prefix: the second Binding from 192.0.2.1 is dropped.
        let s = Stateless::new(None, 1, 7, now);
        let from: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let req = binding_request(TransactionId([1; 12]), true);
        assert!(matches!(s.classify(now, from, &req), Verdict::Answer(_)));
        assert_eq!(
            s.classify(now, from, &req),
            Verdict::Drop(DropReason::OverBudget)
        );
        let other: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let mut b =
            MessageBuilder::new(Method::Other(0x0FF), Class::Request, TransactionId([2; 12]));
        b.fingerprint();
        assert!(matches!(
            s.classify(now, other, &b.finish()),
            Verdict::Answer(_)
        ));
        assert_eq!(
            s.answered(),
            Answered {
                binding: 1,
                binding_unknown_attribute: 0,
                unknown_method: 1,
                classic_binding: 0,
            }
        );
    }
}
