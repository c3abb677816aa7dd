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
    /// Send this answer from `source` (another of the server's addresses) to
    /// `destination` (RFC 5780 CHANGE-REQUEST and RESPONSE-PORT).
    AnswerVia {
        source: SocketAddr,
        destination: SocketAddr,
        bytes: Vec<u8>,
    },
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
    /// RFC 5780 NAT behaviour discovery, with a second address and port.
    rfc5780: Option<Rfc5780>,
}

/// The four endpoints of RFC 5780 discovery: two addresses (of one family) times two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc5780 {
    pub ips: [std::net::IpAddr; 2],
    pub ports: [u16; 2],
}

impl Rfc5780 {
    /// The four endpoints, primary first.
    pub fn endpoints(&self) -> [SocketAddr; 4] {
        let [a, b] = self.ips;
        let [p, q] = self.ports;
        [
            SocketAddr::new(a, p),
            SocketAddr::new(a, q),
            SocketAddr::new(b, p),
            SocketAddr::new(b, q),
        ]
    }

    /// (address index, port index) of `local`, if it is one of the four.
    fn position(&self, local: SocketAddr) -> Option<(usize, usize)> {
        let i = self.ips.iter().position(|ip| *ip == local.ip())?;
        let j = self.ports.iter().position(|p| *p == local.port())?;
        Some((i, j))
    }

    /// `local` with its address and/or port changed (CHANGE-REQUEST flags 0x04, 0x02).
    fn changed(&self, (i, j): (usize, usize), flags: u8) -> SocketAddr {
        let i = if flags & 0x04 != 0 { 1 - i } else { i };
        let j = if flags & 0x02 != 0 { 1 - j } else { j };
        SocketAddr::new(self.ips[i], self.ports[j])
    }
}

/// A MAPPED-ADDRESS-format value (RESPONSE-ORIGIN, OTHER-ADDRESS).
fn plain_address(a: SocketAddr) -> Vec<u8> {
    let mut v = vec![0, if a.is_ipv4() { 1 } else { 2 }];
    v.extend_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        std::net::IpAddr::V4(ip) => v.extend_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => v.extend_from_slice(&ip.octets()),
    }
    v
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
            rfc5780: None,
        }
    }

    /// Serve RFC 5780 NAT behaviour discovery on these endpoints (the driver listens on
    /// all four): Binding responses carry RESPONSE-ORIGIN and OTHER-ADDRESS, and
    /// CHANGE-REQUEST, RESPONSE-PORT and PADDING are honoured; RFC 3489 requests get
    /// SOURCE-ADDRESS and CHANGED-ADDRESS and their CHANGE-REQUEST honoured too.
    pub fn with_rfc5780(mut self, alt: Rfc5780) -> Self {
        self.rfc5780 = Some(alt);
        self
    }

    /// [`Stateless::classify`] of a datagram that came to the server's address `local`:
    /// with RFC 5780 configured and `local` one of its endpoints, Binding requests are
    /// answered as RFC 5780 asks (possibly from another endpoint).
    pub fn classify_at(
        &self,
        now: Instant,
        from: SocketAddr,
        local: SocketAddr,
        bytes: &[u8],
    ) -> Verdict {
        let Some(alt) = self.rfc5780 else {
            return self.classify(now, from, bytes);
        };
        let Some(at) = alt.position(local) else {
            return self.classify(now, from, bytes);
        };
        if !looks_like_stun(bytes) {
            let via = |flags: u8| classic::Alternate {
                source: alt.changed(at, flags),
                changed: alt.changed(at, 0x06),
            };
            return match classic::binding_via(from, bytes, Some(&via)) {
                Classic::AnswerFrom(source, b) => {
                    if !self.budget.take(now, from.ip()) {
                        return Verdict::Drop(DropReason::OverBudget);
                    }
                    self.answered[3].fetch_add(1, Ordering::Relaxed);
                    Verdict::AnswerVia {
                        source,
                        destination: from,
                        bytes: b,
                    }
                }
                Classic::Answer(_) | Classic::Refused => Verdict::Drop(DropReason::Unwanted),
                Classic::No => Verdict::Drop(DropReason::NotStun),
            };
        }
        let Ok(msg) = Message::new_checked(bytes) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if (msg.class(), msg.method()) != (Class::Request, Method::Binding) {
            return self.classify(now, from, bytes);
        }
        let Ok(fingerprint) = msg.check_fingerprint() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let discovery = [attr::CHANGE_REQUEST, attr::RESPONSE_PORT, attr::PADDING];
        let unknown: Vec<u16> = unknown_required(&msg)
            .into_iter()
            .filter(|t| !discovery.contains(t))
            .collect();
        if !unknown.is_empty() {
            return self.classify(now, from, bytes);
        }
        let mut flags = 0u8;
        let mut destination = from;
        let mut padding = None;
        for a in msg.attributes() {
            match a.typ {
                attr::CHANGE_REQUEST => match a.value {
                    [_, _, _, f] => flags = f & 0x06,
                    _ => return Verdict::Drop(DropReason::Malformed),
                },
                attr::RESPONSE_PORT => match a.value {
                    [h, l, _, _] => {
                        let p = u16::from_be_bytes([*h, *l]);
                        if p == 0 {
                            return Verdict::Drop(DropReason::Malformed);
                        }
                        destination = SocketAddr::new(from.ip(), p);
                    }
                    _ => return Verdict::Drop(DropReason::Malformed),
                },
                attr::PADDING => padding = Some(a.value.len()),
                _ => {}
            }
        }
        let source = alt.changed(at, flags);
        let mut b = MessageBuilder::new(Method::Binding, Class::Success, msg.transaction_id());
        b.xor_addr(attr::XOR_MAPPED_ADDRESS, from);
        b.attr(attr::RESPONSE_ORIGIN, &plain_address(source));
        b.attr(attr::OTHER_ADDRESS, &plain_address(alt.changed(at, 0x06)));
        if let Some(n) = padding {
            // As long as the request's: nothing is amplified.
            b.attr(attr::PADDING, &vec![0; n]);
        }
        if !self.budget.take(now, from.ip()) {
            return Verdict::Drop(DropReason::OverBudget);
        }
        self.answered[0].fetch_add(1, Ordering::Relaxed);
        let bytes = self.finish(b, fingerprint);
        if source == local && destination == from {
            Verdict::Answer(bytes)
        } else {
            Verdict::AnswerVia {
                source,
                destination,
                bytes,
            }
        }
    }

    /// Classify a datagram from `from` to the listening address `local` (not ChannelData:
    /// the caller has checked that first).
    pub fn classify(&self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Verdict {
        if !looks_like_stun(bytes) {
            return match classic::binding(from, bytes) {
                // (Without an alternate, never from another address.)
                Classic::Answer(b) | Classic::AnswerFrom(_, b) => {
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
            | (Class::Request, Method::Connect)
            | (Class::Request, Method::ConnectionBind)
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
