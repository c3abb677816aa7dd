//! TURN requests parsed once into typed values (firezone's `client_message.rs` is the
//! model): the handlers in [`super`] see decoded fields, never raw attributes.
//!
//! Parsing is pure: it needs the message and the options that change what is valid
//! (`--rfc5766-channels`), not the server's state. Its errors are the RFC's 400/442/443
//! answers; the caller returns them in the RFC's order, after the state checks that come
//! first (437 for a request on a 5-tuple without an allocation, 441 for another user's).

use crate::error::{BadRequest, TurnError};
use crate::types::{ChannelNumber, ConnectionId};
use crate::wire::{attr, Message, Method};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The family of a relayed address (REQUESTED-ADDRESS-FAMILY, RFC 8656 section 18.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(a: SocketAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn decode(v: &[u8]) -> Result<Option<Family>, TurnError> {
        Ok(match attr::decode_family(v)? {
            attr::FAMILY_IPV4 => Some(Family::V4),
            attr::FAMILY_IPV6 => Some(Family::V6),
            _ => None,
        })
    }
}

/// An Allocate request (RFC 8656 section 7.2, steps 3-6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Allocate {
    /// The family of the relayed address.
    pub family: Family,
    /// ADDITIONAL-ADDRESS-FAMILY IPv6 was asked for: xturn relays one family per
    /// allocation, so it answers IPv4 and reports IPv6 as unavailable.
    pub ipv6_unavailable: bool,
    pub lifetime: Option<Duration>,
    pub dont_fragment: bool,
    /// RESERVATION-TOKEN: the port reserved by an earlier EVEN-PORT allocation.
    pub reservation: Option<[u8; 8]>,
    /// EVEN-PORT, with its R bit (reserve the next port too).
    pub even_port: Option<bool>,
    /// REQUESTED-TRANSPORT TCP: an RFC 6062 TCP allocation.
    pub tcp: bool,
}

/// A Refresh request (RFC 8656 section 7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refresh {
    /// `Some(ZERO)` deletes the allocation.
    pub lifetime: Option<Duration>,
    pub family: Option<Family>,
}

/// The XOR-PEER-ADDRESS attributes of a request, decoded (IPv4-mapped IPv6 unmapped);
/// never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peers(Vec<SocketAddr>);

impl Peers {
    pub(super) fn as_slice(&self) -> &[SocketAddr] {
        &self.0
    }

    fn parse(msg: &Message<&[u8]>) -> Result<Peers, TurnError> {
        let tid = msg.transaction_id();
        let mut out = Vec::new();
        for a in msg.attributes().filter(|a| a.typ == attr::XOR_PEER_ADDRESS) {
            out.push(unmap(attr::decode_xor_address(a.value, &tid)?));
        }
        if out.is_empty() {
            return Err(TurnError::BadRequest(BadRequest::MissingPeer));
        }
        Ok(Peers(out))
    }
}

/// A CreatePermission request (RFC 8656 section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CreatePermission {
    pub peers: Peers,
}

/// A ChannelBind request (RFC 8656 section 11). Exactly one peer is valid; the count is
/// checked after the peer filter (a denied peer gets 403 however many there are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChannelBind {
    pub channel: ChannelNumber,
    pub peers: Peers,
}

/// A request that needs an existing allocation on its 5-tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OnAllocation {
    Refresh(Refresh),
    CreatePermission(CreatePermission),
    ChannelBind(ChannelBind),
    Connect(Connect),
}

/// A Send indication (RFC 8656 section 10.2): both attributes present and decodable, or
/// nothing (indications are never answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Send<'a> {
    pub peer: SocketAddr,
    pub data: &'a [u8],
}

impl Allocate {
    pub(super) fn parse(msg: &Message<&[u8]>) -> Result<Allocate, TurnError> {
        let transport = msg
            .attribute(attr::REQUESTED_TRANSPORT)
            .ok_or(TurnError::BadRequest(BadRequest::MissingTransport))?;
        let tcp = match attr::decode_requested_transport(transport.value)? {
            17 => false,
            6 => true,
            _ => return Err(TurnError::UnsupportedTransport),
        };
        let dont_fragment = msg.attribute(attr::DONT_FRAGMENT).is_some();
        let raf = msg.attribute(attr::REQUESTED_ADDRESS_FAMILY);
        let aaf = msg.attribute(attr::ADDITIONAL_ADDRESS_FAMILY);
        let token = msg.attribute(attr::RESERVATION_TOKEN);
        let even = msg.attribute(attr::EVEN_PORT);
        // RFC 6062 section 5.1: none of these mean anything for a TCP relay.
        if tcp && (dont_fragment || token.is_some() || even.is_some()) {
            return Err(TurnError::BadRequest(BadRequest::Tcp));
        }
        if raf.is_some() && aaf.is_some() {
            return Err(TurnError::BadRequest(BadRequest::BothAddressFamilies));
        }
        if token.is_some() && (even.is_some() || raf.is_some()) {
            return Err(TurnError::BadRequest(BadRequest::ReservationWithEvenPort));
        }
        let bad_family = TurnError::BadRequest(BadRequest::BadAddressFamily);
        let (family, ipv6_unavailable) = match (raf, aaf) {
            (Some(r), _) => (Family::decode(r.value)?.ok_or(bad_family)?, false),
            (None, Some(a)) => {
                if Family::decode(a.value)? != Some(Family::V6) {
                    return Err(bad_family);
                }
                (Family::V4, true)
            }
            (None, None) => (Family::V4, false),
        };
        let lifetime = lifetime(msg)?;
        let reservation = match token {
            Some(t) => Some(
                <[u8; 8]>::try_from(t.value)
                    .map_err(|_| TurnError::BadRequest(BadRequest::Malformed))?,
            ),
            None => None,
        };
        let even_port = match even {
            Some(e) => Some(attr::decode_even_port(e.value)?),
            None => None,
        };
        Ok(Allocate {
            family,
            ipv6_unavailable,
            lifetime,
            dont_fragment,
            reservation,
            even_port,
            tcp,
        })
    }
}

/// A Connect request (RFC 6062 section 5.2): exactly one XOR-PEER-ADDRESS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Connect {
    pub peer: SocketAddr,
}

impl Connect {
    pub(super) fn parse(msg: &Message<&[u8]>) -> Result<Connect, TurnError> {
        match Peers::parse(msg)?.as_slice() {
            &[peer] => Ok(Connect { peer }),
            _ => Err(TurnError::BadRequest(BadRequest::Malformed)),
        }
    }
}

/// The CONNECTION-ID of a ConnectionBind request (RFC 6062 section 5.4).
pub(super) fn connection_id(msg: &Message<&[u8]>) -> Result<ConnectionId, TurnError> {
    let a = msg
        .attribute(attr::CONNECTION_ID)
        .ok_or(TurnError::BadRequest(BadRequest::Tcp))?;
    Ok(ConnectionId(attr::decode_u32(a.value)?))
}

impl OnAllocation {
    /// `msg` is a Refresh, CreatePermission or ChannelBind request (other methods are
    /// malformed here).
    pub(super) fn parse(
        msg: &Message<&[u8]>,
        rfc5766_channels: bool,
    ) -> Result<OnAllocation, TurnError> {
        match msg.method() {
            Method::Refresh => {
                let lifetime = lifetime(msg)?;
                let family = match msg.attribute(attr::REQUESTED_ADDRESS_FAMILY) {
                    // A family that is not IPv4 or IPv6 matches no allocation.
                    Some(a) => {
                        Some(Family::decode(a.value)?.ok_or(TurnError::PeerAddressFamilyMismatch)?)
                    }
                    None => None,
                };
                Ok(OnAllocation::Refresh(Refresh { lifetime, family }))
            }
            Method::CreatePermission => Ok(OnAllocation::CreatePermission(CreatePermission {
                peers: Peers::parse(msg)?,
            })),
            Method::ChannelBind => {
                let bad = TurnError::BadRequest(BadRequest::ChannelNumber);
                let cn = msg.attribute(attr::CHANNEL_NUMBER).ok_or(bad)?;
                let channel =
                    ChannelNumber::new_in(attr::decode_channel_number(cn.value)?, rfc5766_channels)
                        .ok_or(bad)?;
                Ok(OnAllocation::ChannelBind(ChannelBind {
                    channel,
                    peers: Peers::parse(msg)?,
                }))
            }
            Method::Connect => Ok(OnAllocation::Connect(Connect::parse(msg)?)),
            _ => Err(TurnError::BadRequest(BadRequest::Malformed)),
        }
    }
}

impl<'a> Send<'a> {
    pub(super) fn parse(msg: &'a Message<&[u8]>) -> Option<Send<'a>> {
        let tid = msg.transaction_id();
        let peer = msg.attribute(attr::XOR_PEER_ADDRESS)?;
        let data = msg.attribute(attr::DATA)?;
        let peer = attr::decode_xor_address(peer.value, &tid).ok().map(unmap)?;
        Some(Send {
            peer,
            data: data.value,
        })
    }
}

/// LIFETIME, if present.
fn lifetime(msg: &Message<&[u8]>) -> Result<Option<Duration>, TurnError> {
    match msg.attribute(attr::LIFETIME) {
        None => Ok(None),
        Some(a) => Ok(Some(Duration::from_secs(attr::decode_u32(a.value)? as u64))),
    }
}

/// An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is the IPv4 peer a.b.c.d: one permission and
/// one filter decision for both spellings.
fn unmap(p: SocketAddr) -> SocketAddr {
    match p.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), p.port()),
            None => p,
        },
        IpAddr::V4(_) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Class, MessageBuilder, TransactionId};

    fn parsed<T>(
        method: Method,
        body: impl FnOnce(&mut MessageBuilder),
        f: impl FnOnce(&Message<&[u8]>) -> T,
    ) -> T {
        let mut b = MessageBuilder::new(method, Class::Request, TransactionId([7; 12]));
        body(&mut b);
        let bytes = b.finish();
        f(&Message::new_checked(&bytes[..]).unwrap())
    }

    fn allocate(body: impl FnOnce(&mut MessageBuilder)) -> Result<Allocate, TurnError> {
        parsed(Method::Allocate, body, Allocate::parse)
    }

    fn on_allocation(
        method: Method,
        body: impl FnOnce(&mut MessageBuilder),
    ) -> Result<OnAllocation, TurnError> {
        parsed(method, body, |m| OnAllocation::parse(m, false))
    }

    const UDP: [u8; 4] = [17, 0, 0, 0];

    #[test]
    fn allocate_fields_and_their_errors_in_rfc_order() {
        let a = allocate(|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &UDP);
            b.u32_attr(attr::LIFETIME, 1200);
            b.attr(attr::DONT_FRAGMENT, &[]);
            b.attr(attr::EVEN_PORT, &[0x80]);
        })
        .unwrap();
        assert_eq!(
            a,
            Allocate {
                family: Family::V4,
                ipv6_unavailable: false,
                lifetime: Some(Duration::from_secs(1200)),
                dont_fragment: true,
                reservation: None,
                even_port: Some(true),
                tcp: false,
            }
        );
        let dual = allocate(|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &UDP);
            b.attr(
                attr::ADDITIONAL_ADDRESS_FAMILY,
                &[attr::FAMILY_IPV6, 0, 0, 0],
            );
        })
        .unwrap();
        assert_eq!((dual.family, dual.ipv6_unavailable), (Family::V4, true));

        let code = |r: Result<Allocate, TurnError>| r.unwrap_err().code().0;
        assert_eq!(code(allocate(|_| {})), 400);
        assert_eq!(
            code(allocate(|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[1, 0, 0, 0]);
            })),
            442
        );
        // The transport is checked before anything else is decoded.
        assert_eq!(
            code(allocate(|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[132, 0, 0, 0]);
                b.attr(attr::LIFETIME, &[1]);
            })),
            442
        );
        // TCP (RFC 6062): a TCP allocation, without UDP's port and DF options.
        let tcp = allocate(|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        })
        .unwrap();
        assert!(tcp.tcp);
        for extra in [
            attr::DONT_FRAGMENT,
            attr::EVEN_PORT,
            attr::RESERVATION_TOKEN,
        ] {
            let v: &[u8] = match extra {
                attr::EVEN_PORT => &[0],
                attr::RESERVATION_TOKEN => &[1; 8],
                _ => &[],
            };
            assert_eq!(
                allocate(|b| {
                    b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
                    b.attr(extra, v);
                })
                .unwrap_err(),
                TurnError::BadRequest(BadRequest::Tcp),
                "{extra:#x}"
            );
        }
        assert_eq!(
            code(allocate(|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &UDP);
                b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]);
            })),
            400
        );
        assert_eq!(
            code(allocate(|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &UDP);
                b.attr(attr::RESERVATION_TOKEN, &[1, 2, 3]);
            })),
            400
        );
        assert_eq!(
            code(allocate(|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &UDP);
                b.attr(attr::RESERVATION_TOKEN, &[1; 8]);
                b.attr(attr::EVEN_PORT, &[0]);
            })),
            400
        );
    }

    #[test]
    fn peers_are_unmapped_and_required() {
        let mapped: SocketAddr = "[::ffff:198.51.100.2]:7000".parse().unwrap();
        let r = on_allocation(Method::CreatePermission, |b| {
            b.xor_addr(attr::XOR_PEER_ADDRESS, mapped);
        })
        .unwrap();
        let OnAllocation::CreatePermission(p) = r else {
            panic!("{r:?}");
        };
        assert_eq!(
            p.peers.as_slice(),
            &["198.51.100.2:7000".parse::<SocketAddr>().unwrap()]
        );
        let e = on_allocation(Method::CreatePermission, |_| {}).unwrap_err();
        assert_eq!(e, TurnError::BadRequest(BadRequest::MissingPeer));
    }

    #[test]
    fn channel_bind_range_depends_on_the_option() {
        let body = |b: &mut MessageBuilder| {
            b.attr(attr::CHANNEL_NUMBER, &[0x60, 0, 0, 0]);
            b.xor_addr(attr::XOR_PEER_ADDRESS, "198.51.100.2:7000".parse().unwrap());
        };
        assert_eq!(
            on_allocation(Method::ChannelBind, body).unwrap_err(),
            TurnError::BadRequest(BadRequest::ChannelNumber)
        );
        let r = parsed(Method::ChannelBind, body, |m| OnAllocation::parse(m, true));
        assert!(matches!(r, Ok(OnAllocation::ChannelBind(c)) if c.channel.get() == 0x6000));
    }

    #[test]
    fn refresh_with_an_unknown_family_matches_no_allocation() {
        let r = on_allocation(Method::Refresh, |b| {
            b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[9, 0, 0, 0]);
        });
        assert_eq!(r.unwrap_err(), TurnError::PeerAddressFamilyMismatch);
        let r = on_allocation(Method::Refresh, |b| {
            b.u32_attr(attr::LIFETIME, 0);
        })
        .unwrap();
        assert_eq!(
            r,
            OnAllocation::Refresh(Refresh {
                lifetime: Some(Duration::ZERO),
                family: None
            })
        );
    }
}
