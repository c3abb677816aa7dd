//! What the kernel says about interfaces, over netlink: which XDP program is attached to
//! which interface of this network namespace (one rtnetlink `RTM_GETLINK` dump, what `ip
//! link show` reads), one interface by index, also in another namespace (a veth's peer),
//! and an interface's XDP features (the `netdev` generic netlink family, what `ynl
//! --family netdev --do dev-get` reads, Linux 6.3+). Safe code only: the socket is
//! socket2's, and the parsers work on bytes (with fixtures in the tests).
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
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;
const IFLA_TARGET_NETNSID: u16 = 46;
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
    /// IFLA_LINK: the index of the interface this one is linked to (a veth's peer), in the
    /// namespace `link_netnsid` names, or in this one.
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the id, in this namespace, of the namespace `link` is in, when
    /// that is another one.
    pub link_netnsid: Option<i32>,
}

fn socket(protocol: i32) -> Result<Socket> {
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW.cloexec(),
        Some(Protocol::from(protocol)),
    )
    .context("cannot open a netlink socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(sock)
}

/// Send `request` (sequence number `seq`) and return the body of the one answer of type
/// `reply`; an NLMSG_ERROR answer is the error it carries.
fn transact(sock: &Socket, request: &[u8], seq: u32, reply: u16, what: &str) -> Result<Vec<u8>> {
    sock.send(request)
        .with_context(|| format!("cannot send the {what} request"))?;
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: other messages (of other sequence numbers) are skipped, not waited for.
    for _ in 0..100 {
        let n = (&*sock)
            .read(&mut buf)
            .with_context(|| format!("no answer to {what}"))?;
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32_at(&buf, at) as usize;
            if len < NLMSG_HDRLEN || at + len > n {
                bail!("malformed netlink answer to {what}");
            }
            let (kind, msg_seq) = (u16_at(&buf, at + 4), u32_at(&buf, at + 8));
            let body = &buf[at + NLMSG_HDRLEN..at + len];
            at += align4(len);
            if msg_seq != seq {
                continue;
            }
            if kind == NLMSG_ERROR {
                let errno = if body.len() >= 4 {
                    -(u32_at(body, 0) as i32)
                } else {
                    0
                };
                return Err(std::io::Error::from_raw_os_error(errno))
                    .with_context(|| format!("{what} failed"));
            }
            if kind == reply {
                return Ok(body.to_vec());
            }
        }
    }
    bail!("no answer to {what}")
}

/// A netlink message header followed by `body`.
fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + body.len()) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// One attribute, padded to 4 bytes.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(align4(4 + value.len()));
    a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align4(a.len()), 0);
    a
}

/// An `RTM_GETLINK` request for interface `index`, in the namespace with id `netnsid` (as
/// this namespace numbers it) when given.
pub fn link_request(seq: u32, index: u32, netnsid: Option<i32>) -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    if let Some(id) = netnsid {
        body.extend(attribute(IFLA_TARGET_NETNSID, &id.to_ne_bytes()));
    }
    message(RTM_GETLINK, NLM_F_REQUEST, seq, &body)
}

/// Interface `index` of this namespace, or of the namespace `netnsid` names (a veth's
/// peer: its `link` and `link_netnsid`).
pub fn link(index: u32, netnsid: Option<i32>) -> Result<Interface> {
    let sock = socket(libc::NETLINK_ROUTE)?;
    let body = transact(
        &sock,
        &link_request(1, index, netnsid),
        1,
        RTM_NEWLINK,
        "RTM_GETLINK",
    )?;
    if body.len() < IFINFOMSG_LEN {
        bail!("short RTM_NEWLINK answer");
    }
    Ok(parse_link(&body))
}

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const GENLMSG_HDRLEN: usize = 4;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// Bits of an interface's XDP features (`enum netdev_xdp_act`, include/uapi/linux/netdev.h).
pub mod xdp_act {
    /// XDP_PASS, XDP_DROP, XDP_ABORTED and XDP_TX in the driver (native XDP).
    pub const BASIC: u64 = 1 << 0;
    /// XDP_REDIRECT in the driver (AF_XDP, devmaps).
    pub const REDIRECT: u64 = 1 << 1;
    /// Frames redirected into this interface can be sent (ndo_xdp_xmit). A veth has it
    /// only while its peer has an XDP program or GRO on.
    pub const NDO_XMIT: u64 = 1 << 2;
    /// AF_XDP zero-copy.
    pub const XSK_ZEROCOPY: u64 = 1 << 3;
    /// Multi-buffer (fragmented) frames in the driver.
    pub const RX_SG: u64 = 1 << 5;
}

/// A generic netlink request: header, genlmsghdr (cmd, version 1), attributes.
fn genl_request(family: u16, seq: u32, cmd: u8, attrs: &[u8]) -> Vec<u8> {
    let mut body = vec![cmd, 1, 0, 0];
    body.extend_from_slice(attrs);
    message(family, NLM_F_REQUEST, seq, &body)
}

/// The XDP features the driver of interface `index` (this namespace) announces
/// ([`xdp_act`] bits); `None` on kernels without the `netdev` family (before 6.3).
pub fn xdp_features(index: u32) -> Result<Option<u64>> {
    let sock = socket(libc::NETLINK_GENERIC)?;
    let mut name = b"netdev".to_vec();
    name.push(0);
    let family = transact(
        &sock,
        &genl_request(
            GENL_ID_CTRL,
            1,
            CTRL_CMD_GETFAMILY,
            &attribute(CTRL_ATTR_FAMILY_NAME, &name),
        ),
        1,
        GENL_ID_CTRL,
        "CTRL_CMD_GETFAMILY netdev",
    );
    let family = match family {
        Ok(body) => attributes(body.get(GENLMSG_HDRLEN..).unwrap_or_default())
            .into_iter()
            .find(|(k, v)| *k == CTRL_ATTR_FAMILY_ID && v.len() >= 2)
            .map(|(_, v)| u16_at(v, 0))
            .context("CTRL_CMD_GETFAMILY answer without a family id")?,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                == Some(libc::ENOENT) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let body = transact(
        &sock,
        &genl_request(
            family,
            2,
            NETDEV_CMD_DEV_GET,
            &attribute(NETDEV_A_DEV_IFINDEX, &index.to_ne_bytes()),
        ),
        2,
        family,
        "netdev dev-get",
    )?;
    Ok(parse_xdp_features(
        body.get(GENLMSG_HDRLEN..).unwrap_or_default(),
    ))
}

/// NETDEV_A_DEV_XDP_FEATURES from the attributes of a `dev-get` answer.
fn parse_xdp_features(attrs: &[u8]) -> Option<u64> {
    attributes(attrs)
        .into_iter()
        .find(|(k, v)| *k == NETDEV_A_DEV_XDP_FEATURES && v.len() >= 8)
        .map(|(_, v)| u64::from_ne_bytes(v[..8].try_into().expect("8 bytes")))
}

/// Every interface of the calling thread's network namespace with its XDP programs.
pub fn interfaces() -> Result<Vec<Interface>> {
    let sock = socket(libc::NETLINK_ROUTE)?;
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
    // ifinfomsg: family AF_UNSPEC, everything else zero.
    message(
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[0u8; IFINFOMSG_LEN],
    )
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
        link: None,
        link_netnsid: None,
    };
    for (kind, value) in attributes(&body[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => {
                let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
                iface.name = String::from_utf8_lossy(&value[..end]).into_owned();
            }
            IFLA_XDP => iface.xdp = parse_xdp(value),
            IFLA_LINK if value.len() >= 4 => iface.link = Some(u32_at(value, 0)),
            IFLA_LINK_NETNSID if value.len() >= 4 => {
                iface.link_netnsid = Some(u32_at(value, 0) as i32)
            }
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
                    xdp: vec![],
                    link: None,
                    link_netnsid: None,
                },
                Interface {
                    index: 7,
                    name: "xt1b".into(),
                    xdp: vec![(42, XdpMode::Driver)],
                    link: None,
                    link_netnsid: None,
                },
                Interface {
                    index: 9,
                    name: "eth0".into(),
                    xdp: vec![(5, XdpMode::Driver), (6, XdpMode::Generic)],
                    link: None,
                    link_netnsid: None,
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
    fn a_veth_names_its_peer_and_the_peer_namespace() {
        let mut l = link(4, "xt1rc", None);
        l.extend(attr(IFLA_LINK, &9u32.to_ne_bytes()));
        l.extend(attr(IFLA_LINK_NETNSID, &2i32.to_ne_bytes()));
        let mut out = Vec::new();
        parse_dump(&msg(RTM_NEWLINK, 1, &l), 1, &mut out).unwrap();
        assert_eq!((out[0].link, out[0].link_netnsid), (Some(9), Some(2)));
        let r = link_request(5, 9, Some(2));
        assert_eq!(u16_at(&r, 4), RTM_GETLINK);
        assert_eq!(u16_at(&r, 6), NLM_F_REQUEST);
        assert_eq!(u32_at(&r, NLMSG_HDRLEN + 4), 9);
        assert_eq!(
            &r[NLMSG_HDRLEN + IFINFOMSG_LEN..],
            attr(IFLA_TARGET_NETNSID, &2i32.to_ne_bytes()).as_slice()
        );
    }

    #[test]
    fn xdp_features_attribute() {
        let a = [
            attr(NETDEV_A_DEV_IFINDEX, &3u32.to_ne_bytes()),
            attr(NETDEV_A_DEV_XDP_FEATURES, &0x67u64.to_ne_bytes()),
        ]
        .concat();
        assert_eq!(parse_xdp_features(&a), Some(0x67));
        assert_eq!(parse_xdp_features(&a[..8]), None);
        assert_eq!(parse_xdp_features(&[1, 2]), None);
    }

    #[test]
    fn loopback_has_xdp_features_or_the_kernel_predates_them() {
        // Loopback has no native XDP: BASIC is not among its features.
        if let Some(f) = xdp_features(1).unwrap() {
            assert_eq!(f & xdp_act::BASIC, 0, "{f:#x}");
        }
        let lo = super::link(1, None).unwrap();
        assert_eq!(lo.name, "lo");
        assert!(super::link(0x7fff_fff0, None).is_err());
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
