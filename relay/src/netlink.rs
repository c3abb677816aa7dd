//! Which XDP program is attached to which interface of this network namespace: one
//! rtnetlink `RTM_GETLINK` dump (what `ip link show` reads), parsed here. Safe code only:
//! the socket is socket2's, and the parser works on bytes (with fixtures in the tests).
//!
//! Layout (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h): messages are an
//! `nlmsghdr` (len u32, type u16, flags u16, seq u32, pid u32) followed by, for
//! `RTM_NEWLINK`, an `ifinfomsg` (16 bytes, `ifi_index` at offset 4) and attributes
//! (`rtattr`: len u16, type u16, value), each padded to 4 bytes. `IFLA_XDP` is nested.

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::Read;
use std::time::Duration;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300; // NLM_F_ROOT | NLM_F_MATCH
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
/// Attribute type without the NLA_F_NESTED and NLA_F_NET_BYTEORDER bits.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// How an XDP program is attached (`XDP_ATTACHED_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native, in the driver.
    Driver,
    /// Generic, on the socket buffer.
    Generic,
    /// Offloaded to the NIC.
    Hardware,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Driver => "driver",
            XdpMode::Generic => "generic",
            XdpMode::Hardware => "hardware",
        }
    }
}

/// An interface of this network namespace and the XDP programs attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// (program id, mode); empty when no XDP program is attached.
    pub xdp: Vec<(u32, XdpMode)>,
}

/// Every interface of the calling thread's network namespace with its XDP programs.
pub fn interfaces() -> Result<Vec<Interface>> {
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW.cloexec(),
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )
    .context("cannot open a netlink socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let seq = 1u32;
    sock.send(&dump_request(seq))
        .context("cannot send the RTM_GETLINK request")?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // A dump ends with NLMSG_DONE; the bound only stops a kernel that never sends it.
    for _ in 0..10_000 {
        let n = (&sock)
            .read(&mut buf)
            .context("no answer to the RTM_GETLINK dump")?;
        if parse_dump(&buf[..n], seq, &mut out)? {
            return Ok(out);
        }
    }
    bail!("the RTM_GETLINK dump did not end")
}

/// An `RTM_GETLINK` dump request for every interface.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + IFINFOMSG_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, everything else zero.
    m.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
    m
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `b`: (type without flag bits, value). Stops at the first malformed one.
fn attributes(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let len = u16_at(b, at) as usize;
        if len < 4 || at + len > b.len() {
            break;
        }
        out.push((u16_at(b, at + 2) & NLA_TYPE_MASK, &b[at + 4..at + len]));
        at += align4(len);
    }
    out
}

/// Parse one datagram of the dump into `out`; true when it holds the final NLMSG_DONE.
pub fn parse_dump(b: &[u8], seq: u32, out: &mut Vec<Interface>) -> Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= b.len() {
        let len = u32_at(b, at) as usize;
        if len < NLMSG_HDRLEN || at + len > b.len() {
            bail!(
                "malformed netlink message (length {len} at {at} of {})",
                b.len()
            );
        }
        let kind = u16_at(b, at + 4);
        let msg_seq = u32_at(b, at + 8);
        let body = &b[at + NLMSG_HDRLEN..at + len];
        at += align4(len);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = if body.len() >= 4 {
                    -(u32_at(body, 0) as i32)
                } else {
                    0
                };
                if errno != 0 {
                    return Err(std::io::Error::from_raw_os_error(errno))
                        .context("RTM_GETLINK failed");
                }
            }
            RTM_NEWLINK if body.len() >= IFINFOMSG_LEN => {
                out.push(parse_link(body));
            }
            _ => {}
        }
    }
    Ok(false)
}

/// One `RTM_NEWLINK` body: ifinfomsg, then attributes.
fn parse_link(body: &[u8]) -> Interface {
    let mut iface = Interface {
        index: u32_at(body, 4),
        name: String::new(),
        xdp: Vec::new(),
    };
    for (kind, value) in attributes(&body[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => {
                let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
                iface.name = String::from_utf8_lossy(&value[..end]).into_owned();
            }
            IFLA_XDP => iface.xdp = parse_xdp(value),
            _ => {}
        }
    }
    iface
}

/// The nested IFLA_XDP attribute: one program (IFLA_XDP_PROG_ID with the mode of
/// IFLA_XDP_ATTACHED), or with XDP_ATTACHED_MULTI one id per mode.
fn parse_xdp(b: &[u8]) -> Vec<(u32, XdpMode)> {
    let mut attached = 0u8;
    let mut single = None;
    let mut per_mode = Vec::new();
    for (kind, v) in attributes(b) {
        match (kind, v.len()) {
            (IFLA_XDP_ATTACHED, 1..) => attached = v[0],
            (IFLA_XDP_PROG_ID, 4..) => single = Some(u32_at(v, 0)),
            (IFLA_XDP_DRV_PROG_ID, 4..) => per_mode.push((u32_at(v, 0), XdpMode::Driver)),
            (IFLA_XDP_SKB_PROG_ID, 4..) => per_mode.push((u32_at(v, 0), XdpMode::Generic)),
            (IFLA_XDP_HW_PROG_ID, 4..) => per_mode.push((u32_at(v, 0), XdpMode::Hardware)),
            _ => {}
        }
    }
    // XDP_ATTACHED_NONE 0, DRV 1, SKB 2, HW 3, MULTI 4.
    let mode = match attached {
        1 => Some(XdpMode::Driver),
        2 => Some(XdpMode::Generic),
        3 => Some(XdpMode::Hardware),
        _ => None,
    };
    match (mode, single) {
        (Some(m), Some(id)) => vec![(id, m)],
        _ if attached == 4 => per_mode,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn msg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    fn link(index: u32, name: &str, xdp: Option<Vec<u8>>) -> Vec<u8> {
        let mut b = vec![0u8; IFINFOMSG_LEN];
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        b.extend(attr(IFLA_IFNAME, &n));
        b.extend(attr(4, &1500u32.to_ne_bytes())); // IFLA_MTU, ignored
        if let Some(x) = xdp {
            b.extend(attr(IFLA_XDP | 0x8000, &x)); // NLA_F_NESTED set, as the kernel does
        }
        b
    }

    #[test]
    fn request_is_a_getlink_dump() {
        let r = dump_request(7);
        assert_eq!(r.len(), 32);
        assert_eq!(u32_at(&r, 0), 32);
        assert_eq!(u16_at(&r, 4), RTM_GETLINK);
        assert_eq!(u16_at(&r, 6), 0x301);
        assert_eq!(u32_at(&r, 8), 7);
    }

    #[test]
    fn dump_with_single_and_multi_attachments() {
        let single = [
            attr(IFLA_XDP_ATTACHED, &[1]),
            attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes()),
        ]
        .concat();
        let multi = [
            attr(IFLA_XDP_ATTACHED, &[4]),
            attr(IFLA_XDP_DRV_PROG_ID, &5u32.to_ne_bytes()),
            attr(IFLA_XDP_SKB_PROG_ID, &6u32.to_ne_bytes()),
        ]
        .concat();
        let none = attr(IFLA_XDP_ATTACHED, &[0]);
        let mut dgram = msg(RTM_NEWLINK, 9, &link(1, "lo", Some(none)));
        dgram.extend(msg(RTM_NEWLINK, 9, &link(7, "xt1b", Some(single))));
        dgram.extend(msg(RTM_NEWLINK, 3, &link(8, "other-seq", None)));
        dgram.extend(msg(RTM_NEWLINK, 9, &link(9, "eth0", Some(multi))));
        let mut out = Vec::new();
        assert!(!parse_dump(&dgram, 9, &mut out).unwrap());
        assert_eq!(
            out,
            vec![
                Interface {
                    index: 1,
                    name: "lo".into(),
                    xdp: vec![]
                },
                Interface {
                    index: 7,
                    name: "xt1b".into(),
                    xdp: vec![(42, XdpMode::Driver)]
                },
                Interface {
                    index: 9,
                    name: "eth0".into(),
                    xdp: vec![(5, XdpMode::Driver), (6, XdpMode::Generic)]
                },
            ]
        );
        assert!(parse_dump(&msg(NLMSG_DONE, 9, &[0; 4]), 9, &mut out).unwrap());
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn errors_and_garbage() {
        let mut out = Vec::new();
        let eperm = msg(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        let e = format!("{:#}", parse_dump(&eperm, 1, &mut out).unwrap_err());
        assert!(e.contains("RTM_GETLINK failed"), "{e}");
        // An acknowledgement (error 0) is not an error.
        assert!(!parse_dump(&msg(NLMSG_ERROR, 1, &[0; 4]), 1, &mut out).unwrap());
        let mut bad = msg(RTM_NEWLINK, 1, &link(2, "x", None));
        bad[0] = 200; // length beyond the datagram
        assert!(parse_dump(&bad, 1, &mut out).is_err());
        // A truncated attribute ends the attribute list without panicking.
        let mut l = link(3, "y", None);
        l.extend_from_slice(&[40, 0, 43, 0, 1]);
        parse_dump(&msg(RTM_NEWLINK, 1, &l), 1, &mut out).unwrap();
        assert_eq!(out.last().unwrap().name, "y");
    }

    #[test]
    fn this_namespace_has_loopback() {
        let all = interfaces().unwrap();
        assert!(
            all.iter().any(|i| i.name == "lo" && i.index == 1),
            "{all:?}"
        );
    }
}
