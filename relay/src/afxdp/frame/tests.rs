//! Tests of the frame parser and rewrites (relay/src/afxdp/frame.rs).

use super::*;
use etherparse::{
    EtherType, Ethernet2Header, IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
    LinkHeader, NetHeaders, PacketHeaders, TransportHeader, UdpHeader,
};
use proptest::prelude::*;

// Incoming frames: gateway -> us.
const IN_SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const IN_DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
// Rewritten frames: us -> next hop.
const OUT_SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 3];
const OUT_DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 4];
const HEADROOM: usize = 256;
const ETH: usize = 14;
const V4_HEADERS: usize = 42;
const V6_HEADERS: usize = 62;
const LENGTHS: [usize; 13] = [0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 1199, 1200, 1201];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Client, server (listening), relayed and peer addresses of one family.
struct Addrs {
    client: SocketAddr,
    server: SocketAddr,
    relayed: SocketAddr,
    peer: SocketAddr,
}

fn addrs(v6: bool) -> Addrs {
    if v6 {
        Addrs {
            client: sa("[2001:db8::1]:50000"),
            server: sa("[2001:db8::3478:1]:3478"),
            relayed: sa("[2001:db8::3478:1]:49153"),
            peer: sa("[2001:db8:ffff::5]:7000"),
        }
    } else {
        Addrs {
            client: sa("192.0.2.1:50000"),
            server: sa("198.51.100.1:3478"),
            relayed: sa("198.51.100.1:49152"),
            peer: sa("203.0.113.5:6000"),
        }
    }
}

fn rewrite(src: SocketAddr, dst: SocketAddr) -> Rewrite {
    Rewrite {
        src_mac: OUT_SRC_MAC,
        dst_mac: OUT_DST_MAC,
        src,
        dst,
    }
}

/// Header fields of a built frame.
#[derive(Clone, Copy)]
struct Opts {
    tos: u8,
    ttl: u8,
    ident: u16,
    df: bool,
    flow: u32,
}

const OPTS: Opts = Opts {
    tos: 0xB9,
    ttl: 64,
    ident: 0x1234,
    df: true,
    flow: 0x12345,
};

fn ipv4_header(src: SocketAddrV4, dst: SocketAddrV4, o: &Opts, udp_len: usize) -> Ipv4Header {
    let mut ip = Ipv4Header {
        dscp: IpDscp::try_new(o.tos >> 2).unwrap(),
        ecn: IpEcn::try_new(o.tos & 3).unwrap(),
        total_len: (20 + udp_len) as u16,
        identification: o.ident,
        dont_fragment: o.df,
        time_to_live: o.ttl,
        protocol: IpNumber::UDP,
        source: src.ip().octets(),
        destination: dst.ip().octets(),
        ..Default::default()
    };
    ip.header_checksum = ip.calc_header_checksum();
    ip
}

fn ipv6_header(src: SocketAddrV6, dst: SocketAddrV6, o: &Opts, udp_len: usize) -> Ipv6Header {
    Ipv6Header {
        traffic_class: o.tos,
        flow_label: Ipv6FlowLabel::try_new(o.flow).unwrap(),
        payload_length: udp_len as u16,
        next_header: IpNumber::UDP,
        hop_limit: o.ttl,
        source: src.ip().octets(),
        destination: dst.ip().octets(),
    }
}

/// An Ethernet/IP/UDP frame built with etherparse.
fn build(src: SocketAddr, dst: SocketAddr, o: &Opts, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let udp_len = 8 + payload.len();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let eth = Ethernet2Header {
                source: IN_SRC_MAC,
                destination: IN_DST_MAC,
                ether_type: EtherType::IPV4,
            };
            let ip = ipv4_header(s, d, o, udp_len);
            let udp = UdpHeader::with_ipv4_checksum(s.port(), d.port(), &ip, payload).unwrap();
            eth.write(&mut out).unwrap();
            ip.write(&mut out).unwrap();
            udp.write(&mut out).unwrap();
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            let eth = Ethernet2Header {
                source: IN_SRC_MAC,
                destination: IN_DST_MAC,
                ether_type: EtherType::IPV6,
            };
            let ip = ipv6_header(s, d, o, udp_len);
            let udp = UdpHeader::with_ipv6_checksum(s.port(), d.port(), &ip, payload).unwrap();
            eth.write(&mut out).unwrap();
            ip.write(&mut out).unwrap();
            udp.write(&mut out).unwrap();
        }
        _ => panic!("mixed families"),
    }
    out.extend_from_slice(payload);
    out
}

fn channel_data(channel: u16, data: &[u8], padding: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&channel.to_be_bytes());
    m.extend_from_slice(&(data.len() as u16).to_be_bytes());
    m.extend_from_slice(data);
    m.extend_from_slice(padding);
    m
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A UMEM chunk holding `frame` at `HEADROOM`, followed by `trailer` bytes of Ethernet
/// padding (part of the frame) and some unused bytes.
fn chunk(frame: &[u8], trailer: usize) -> (Vec<u8>, usize, usize) {
    let mut buf = vec![0x5A; HEADROOM + frame.len() + trailer + 32];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    buf[HEADROOM + frame.len()..HEADROOM + frame.len() + trailer].fill(0xA5);
    (buf, HEADROOM, frame.len() + trailer)
}

/// What an output frame must be.
struct Expect<'a> {
    rw: Rewrite,
    tos: u8,
    ttl: u8,
    ident: u16,
    df: bool,
    payload: &'a [u8],
}

/// Checks an output frame with etherparse: every field, the IPv4 header checksum and
/// the UDP checksum; then that `parse` accepts it.
fn check_out(out: &[u8], e: &Expect) {
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(LinkHeader::Ethernet2(eth)) = h.link else {
        panic!("no ethernet header")
    };
    assert_eq!(eth.source, e.rw.src_mac);
    assert_eq!(eth.destination, e.rw.dst_mac);
    let Some(TransportHeader::Udp(udp)) = h.transport else {
        panic!("no udp header")
    };
    assert_eq!(udp.source_port, e.rw.src.port());
    assert_eq!(udp.destination_port, e.rw.dst.port());
    match h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(eth.ether_type, EtherType::IPV4);
            assert_eq!(out.len(), V4_HEADERS + e.payload.len());
            assert_eq!(out[ETH], 0x45);
            assert!(ip.options.is_empty());
            assert_eq!((ip.dscp.value() << 2) | ip.ecn.value(), e.tos);
            assert_eq!(ip.total_len as usize, out.len() - ETH);
            assert_eq!(ip.identification, e.ident);
            assert_eq!(ip.dont_fragment, e.df);
            assert!(!ip.more_fragments);
            assert_eq!(ip.fragment_offset.value(), 0);
            assert_eq!(ip.time_to_live, e.ttl);
            assert_eq!(ip.protocol, IpNumber::UDP);
            assert_eq!(IpAddr::from(ip.source), e.rw.src.ip());
            assert_eq!(IpAddr::from(ip.destination), e.rw.dst.ip());
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            let payload = &out[V4_HEADERS..];
            assert_eq!(payload, e.payload);
            assert_eq!(udp.length as usize, 8 + payload.len());
            assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(eth.ether_type, EtherType::IPV6);
            assert_eq!(out.len(), V6_HEADERS + e.payload.len());
            assert_eq!(ip.traffic_class, e.tos);
            assert_eq!(ip.flow_label.value(), 0);
            assert_eq!(ip.payload_length as usize, out.len() - V6_HEADERS + 8);
            assert_eq!(ip.next_header, IpNumber::UDP);
            assert_eq!(ip.hop_limit, e.ttl);
            assert_eq!(IpAddr::from(ip.source), e.rw.src.ip());
            assert_eq!(IpAddr::from(ip.destination), e.rw.dst.ip());
            let payload = &out[V6_HEADERS..];
            assert_eq!(payload, e.payload);
            assert_eq!(udp.length as usize, 8 + payload.len());
            assert_eq!(udp.checksum, udp.calc_checksum_ipv6(&ip, payload).unwrap());
        }
        _ => panic!("no ip header"),
    }
    assert_ne!(udp.checksum, 0);
    let d = parse(out).unwrap();
    assert_eq!(
        (d.src, d.dst, d.tos, d.ttl),
        (e.rw.src, e.rw.dst, e.tos, e.ttl)
    );
    assert_eq!(d.payload_len, e.payload.len());
}

/// Runs channel_data_to_udp on a client -> server frame and checks the output.
fn run_c2u(v6: bool, o: &Opts, data: &[u8], padding: &[u8], trailer: usize) {
    let a = addrs(v6);
    let frame = build(a.client, a.server, o, &channel_data(0x4001, data, padding));
    let (mut buf, start, len) = chunk(&frame, trailer);
    let before = buf.clone();
    let rw = rewrite(a.relayed, a.peer);
    let (s, l) = channel_data_to_udp(&mut buf, start, len, &rw).unwrap();
    assert_eq!(s, start + 4);
    check_out(
        &buf[s..s + l],
        &Expect {
            rw,
            tos: o.tos,
            ttl: o.ttl - 1,
            ident: o.ident,
            df: o.df || v6,
            payload: data,
        },
    );
    // The payload did not move; nothing outside the new frame but the old headers
    // changed.
    assert_eq!(buf[..start], before[..start]);
    assert_eq!(buf[s + l..], before[s + l..]);
}

/// Runs udp_to_channel_data on a peer -> relayed frame and checks the output.
fn run_u2c(v6: bool, o: &Opts, data: &[u8], trailer: usize) {
    let a = addrs(v6);
    let frame = build(a.peer, a.relayed, o, data);
    let (mut buf, start, len) = chunk(&frame, trailer);
    let before = buf.clone();
    let rw = rewrite(a.server, a.client);
    let (s, l) = udp_to_channel_data(&mut buf, start, len, 0x4FFE, &rw).unwrap();
    assert_eq!(s, start - 4);
    check_out(
        &buf[s..s + l],
        &Expect {
            rw,
            tos: o.tos,
            ttl: o.ttl - 1,
            ident: o.ident,
            df: o.df || v6,
            payload: &channel_data(0x4FFE, data, &[]),
        },
    );
    assert_eq!(buf[..s], before[..s]);
    assert_eq!(buf[s + l..], before[s + l..]);
}

fn alignment_padding(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[test]
fn c2u_all_lengths_paddings_trailers() {
    for v6 in [false, true] {
        for n in LENGTHS {
            let data = pattern(n, 7);
            for pad in [0, alignment_padding(n), 1, 7, 13] {
                for trailer in [0, 5] {
                    run_c2u(v6, &OPTS, &data, &pattern(pad, 200), trailer);
                }
            }
        }
    }
}

#[test]
fn u2c_all_lengths_trailers() {
    for v6 in [false, true] {
        for n in LENGTHS {
            for trailer in [0, 1, 5, 18] {
                run_u2c(v6, &OPTS, &pattern(n, 9), trailer);
            }
        }
    }
}

#[test]
fn dscp_ecn_copied_ttl_decremented_df_kept() {
    for v6 in [false, true] {
        for (tos, ttl, df) in [(0x00, 2, false), (0xB9, 64, true), (0xFF, 255, false)] {
            let o = Opts {
                tos,
                ttl,
                ident: 0xBEEF,
                df,
                flow: 0xFFFFF,
            };
            // run_* check tos == input tos, ttl == input ttl - 1, ident and DF kept.
            run_c2u(v6, &o, b"data", &[], 0);
            run_u2c(v6, &o, b"data", 0);
        }
    }
}

/// A client -> server ChannelData frame (`c2u`) or a peer -> relayed UDP frame with
/// `n` bytes of data, whose UDP checksum field `set_checksum` changes (given the frame
/// and the field's offset); it must be accepted, and relayed with a full checksum.
/// Returns what `check` said of the incoming frame.
fn relayed_with_full_checksum(
    v6: bool,
    c2u: bool,
    n: usize,
    set_checksum: impl FnOnce(&mut Vec<u8>, usize, SocketAddr, SocketAddr),
) -> Checked {
    let a = addrs(v6);
    let (src, dst, payload) = if c2u {
        (
            a.client,
            a.server,
            channel_data(0x4000, &pattern(n, 1), &[0; 3]),
        )
    } else {
        (a.peer, a.relayed, pattern(n, 1))
    };
    let mut frame = build(src, dst, &OPTS, &payload);
    set_checksum(&mut frame, if v6 { 60 } else { 40 }, src, dst);
    let checked = check(&frame, 0, frame.len()).unwrap();
    let (mut buf, start, len) = chunk(&frame, 0);
    let (rw, expected) = if c2u {
        (rewrite(a.relayed, a.peer), pattern(n, 1))
    } else {
        (
            rewrite(a.server, a.client),
            channel_data(0x4000, &pattern(n, 1), &[]),
        )
    };
    let (s, l) = if c2u {
        channel_data_to_udp(&mut buf, start, len, &rw).unwrap()
    } else {
        udp_to_channel_data(&mut buf, start, len, 0x4000, &rw).unwrap()
    };
    // check_out verifies the outgoing UDP checksum in full with etherparse.
    check_out(
        &buf[s..s + l],
        &Expect {
            rw,
            tos: OPTS.tos,
            ttl: OPTS.ttl - 1,
            ident: OPTS.ident,
            df: true,
            payload: &expected,
        },
    );
    assert!(!check(&buf, s, l).unwrap().partial_checksum());
    checked
}

const CHECKSUM_CASES: [(bool, usize); 5] =
    [(true, 5), (true, 0), (false, 3), (false, 1200), (false, 0)];

#[test]
fn ipv4_without_udp_checksum_gets_one() {
    for (c2u, n) in CHECKSUM_CASES {
        // UDP checksum 0: none.
        let c = relayed_with_full_checksum(false, c2u, n, |f, at, _, _| f[at..at + 2].fill(0));
        assert!(!c.partial_checksum());
    }
}

/// The pseudo-header sum a sender's stack leaves in the UDP checksum field for the NIC
/// to finish (CHECKSUM_PARTIAL), computed here independently of the code under test.
fn pending_offload_checksum(src: IpAddr, dst: IpAddr, udp_len: usize) -> u16 {
    let mut words: Vec<u32> = Vec::new();
    let mut push = |b: &[u8]| {
        for c in b.chunks(2) {
            words.push(u32::from(u16::from_be_bytes([c[0], c[1]])));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            push(&s.octets());
            push(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            push(&s.octets());
            push(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    let mut sum: u32 = words.iter().sum::<u32>() + 17 + udp_len as u32;
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// Frames from a local socket on a veth with TX checksum offload on carry only the
/// pseudo-header sum: accepted, and relayed with a full checksum both ways; any other
/// wrong value is still a bad checksum.
#[test]
fn checksum_left_to_offload_is_accepted_and_completed() {
    let partial = |f: &mut Vec<u8>, at: usize, src: SocketAddr, dst: SocketAddr| {
        let udp_len = f.len() - at + 6;
        let c = pending_offload_checksum(src.ip(), dst.ip(), udp_len);
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    };
    for v6 in [false, true] {
        for (c2u, n) in CHECKSUM_CASES {
            let c = relayed_with_full_checksum(v6, c2u, n, partial);
            assert!(c.partial_checksum());
            // Off by one bit: a bad checksum, not a partial one.
            let mut wrong = Vec::new();
            relayed_with_full_checksum(v6, c2u, n, |f, at, s, d| {
                partial(f, at, s, d);
                wrong = f.clone();
            });
            let at = if v6 { 60 } else { 40 };
            wrong[at] ^= 0x01;
            assert_eq!(parse(&wrong).unwrap_err(), Reject::BadChecksum);
        }
    }
}

#[test]
fn computed_zero_udp_checksum_is_sent_as_ffff() {
    for v6 in [false, true] {
        let a = addrs(v6);
        let rw = rewrite(a.relayed, a.peer);
        // The output checksum with the first data word 0 is c = !S; with that word set
        // to c the sum is S + !S = 0xFFFF, whose complement 0 must be sent as 0xFFFF.
        let mut data = vec![0, 0, 1, 2, 3];
        let probe = build(a.relayed, a.peer, &OPTS, &data);
        let udp_off = if v6 { V6_HEADERS - 8 } else { V4_HEADERS - 8 };
        let c = u16::from_be_bytes([probe[udp_off + 6], probe[udp_off + 7]]);
        data[..2].copy_from_slice(&c.to_be_bytes());
        let frame = build(
            a.client,
            a.server,
            &OPTS,
            &channel_data(0x4123, &data, &[0; 3]),
        );
        let (mut buf, start, len) = chunk(&frame, 0);
        let (s, l) = channel_data_to_udp(&mut buf, start, len, &rw).unwrap();
        let out = &buf[s..s + l];
        assert_eq!(out[udp_off + 6..udp_off + 8], [0xFF, 0xFF]);
        check_out(
            out,
            &Expect {
                rw,
                tos: OPTS.tos,
                ttl: OPTS.ttl - 1,
                ident: OPTS.ident,
                df: true,
                payload: &data,
            },
        );
    }
}

#[test]
fn parse_fixture() {
    let a = addrs(false);
    let frame = build(a.peer, a.relayed, &OPTS, b"abc");
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0; 9]);
    let expected = Datagram {
        src: a.peer,
        dst: a.relayed,
        payload_off: V4_HEADERS,
        payload_len: 3,
        tos: 0xB9,
        ttl: 64,
    };
    assert_eq!(parse(&frame), Ok(expected));
    assert_eq!(parse(&padded), Ok(expected));

    let a = addrs(true);
    let o = Opts { ttl: 1, ..OPTS };
    let frame = build(a.client, a.server, &o, &[]);
    // parse reports the TTL; only the rewrites refuse to decrement it to 0.
    assert_eq!(
        parse(&frame),
        Ok(Datagram {
            src: a.client,
            dst: a.server,
            payload_off: V6_HEADERS,
            payload_len: 0,
            tos: 0xB9,
            ttl: 1,
        })
    );
}

// Exact output bytes, written out field by field; the checksums were computed with an
// independent script (Python, RFC 1071 over 16-bit words).

#[test]
fn exact_bytes_c2u_ipv4() {
    let a = addrs(false);
    let o = Opts {
        tos: 0xB9,
        ttl: 64,
        ident: 0x1234,
        df: true,
        flow: 0,
    };
    let frame = build(
        a.client,
        a.server,
        &o,
        &channel_data(0x4001, b"hello", &[0; 3]),
    );
    #[rustfmt::skip]
    assert_eq!(frame[ETH..V4_HEADERS + 4], [
        0x45, 0xb9, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x3b, 0xa2,
        192, 0, 2, 1, 198, 51, 100, 1,
        0xc3, 0x50, 0x0d, 0x96, 0x00, 0x14, 0xbe, 0xd0,
        0x40, 0x01, 0x00, 0x05,
    ]);
    let (mut buf, start, len) = chunk(&frame, 0);
    let (s, l) = channel_data_to_udp(&mut buf, start, len, &rewrite(a.relayed, a.peer)).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        // Ethernet: destination, source, IPv4
        2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, 0x08, 0x00,
        // IPv4: 0x45, TOS, total length 33, ident, DF, TTL 63, UDP, checksum
        0x45, 0xb9, 0x00, 0x21, 0x12, 0x34, 0x40, 0x00, 0x3f, 0x11, 0xc2, 0xa4,
        // 198.51.100.1 -> 203.0.113.5
        198, 51, 100, 1, 203, 0, 113, 5,
        // UDP: 49152 -> 6000, length 13, checksum
        0xc0, 0x00, 0x17, 0x70, 0x00, 0x0d, 0x7e, 0x56,
        b'h', b'e', b'l', b'l', b'o',
    ];
    assert_eq!((s, l), (start + 4, expected.len()));
    assert_eq!(&buf[s..s + l], expected);
}

#[test]
fn exact_bytes_u2c_ipv4() {
    let a = addrs(false);
    let o = Opts {
        tos: 0x02,
        ttl: 10,
        ident: 0xBEEF,
        df: false,
        flow: 0,
    };
    let frame = build(a.peer, a.relayed, &o, b"hi!");
    let (mut buf, start, len) = chunk(&frame, 11);
    let rw = rewrite(a.server, a.client);
    let (s, l) = udp_to_channel_data(&mut buf, start, len, 0x4FFF, &rw).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, 0x08, 0x00,
        // IPv4: total length 35, ident 0xbeef, no flags, TTL 9
        0x45, 0x02, 0x00, 0x23, 0xbe, 0xef, 0x00, 0x00, 0x09, 0x11, 0x06, 0xa3,
        198, 51, 100, 1, 192, 0, 2, 1,
        // UDP: 3478 -> 50000, length 15, checksum
        0x0d, 0x96, 0xc3, 0x50, 0x00, 0x0f, 0x69, 0x47,
        // ChannelData: channel 0x4fff, length 3, no padding
        0x4f, 0xff, 0x00, 0x03, b'h', b'i', b'!',
    ];
    assert_eq!((s, l), (start - 4, expected.len()));
    assert_eq!(&buf[s..s + l], expected);
}

#[test]
fn exact_bytes_c2u_ipv6() {
    let a = addrs(true);
    let o = Opts {
        tos: 0xB8,
        ttl: 2,
        ident: 0,
        df: false,
        flow: 0x12345,
    };
    let frame = build(
        a.client,
        a.server,
        &o,
        &channel_data(0x4000, &[0xAB], &[0; 3]),
    );
    let (mut buf, start, len) = chunk(&frame, 0);
    let rw = rewrite(a.relayed, a.peer);
    let (s, l) = channel_data_to_udp(&mut buf, start, len, &rw).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, 0x86, 0xdd,
        // IPv6: version 6, traffic class 0xb8, flow label 0; payload length 9, UDP,
        // hop limit 1
        0x6b, 0x80, 0x00, 0x00, 0x00, 0x09, 0x11, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x78, 0x00, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x05,
        // UDP: 49153 -> 7000, length 9, checksum
        0xc0, 0x01, 0x1b, 0x58, 0x00, 0x09, 0xe9, 0x91,
        0xab,
    ];
    assert_eq!((s, l), (start + 4, expected.len()));
    assert_eq!(&buf[s..s + l], expected);
}

#[test]
fn exact_bytes_u2c_ipv6() {
    let a = addrs(true);
    let o = Opts {
        tos: 0x01,
        ttl: 255,
        ident: 0,
        df: false,
        flow: 0,
    };
    let frame = build(a.peer, a.relayed, &o, &[1, 2, 3, 4]);
    let (mut buf, start, len) = chunk(&frame, 0);
    let rw = rewrite(a.server, a.client);
    let (s, l) = udp_to_channel_data(&mut buf, start, len, 0x4002, &rw).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, 0x86, 0xdd,
        // IPv6: traffic class 0x01, payload length 16, UDP, hop limit 254
        0x60, 0x10, 0x00, 0x00, 0x00, 0x10, 0x11, 0xfe,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x78, 0x00, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01,
        // UDP: 3478 -> 50000, length 16, checksum
        0x0d, 0x96, 0xc3, 0x50, 0x00, 0x10, 0x5a, 0xef,
        // ChannelData 0x4002, length 4
        0x40, 0x02, 0x00, 0x04, 1, 2, 3, 4,
    ];
    assert_eq!((s, l), (start - 4, expected.len()));
    assert_eq!(&buf[s..s + l], expected);
}

/// Runs all three entry points on `frame`; returns the results of the two rewrites
/// (with `rw` of the frame's family when `v6` matches it).
fn run_all(
    frame: &[u8],
    v6: bool,
) -> (
    Result<Datagram, Reject>,
    Result<(), Reject>,
    Result<(), Reject>,
) {
    let a = addrs(v6);
    let p = parse(frame);
    let (mut buf, start, len) = chunk(frame, 0);
    let before = buf.clone();
    let c = channel_data_to_udp(&mut buf, start, len, &rewrite(a.relayed, a.peer));
    if c.is_err() {
        assert_eq!(buf, before, "rejected frame modified");
    }
    let (mut buf, start, len) = chunk(frame, 0);
    let u = udp_to_channel_data(&mut buf, start, len, 0x4000, &rewrite(a.server, a.client));
    if u.is_err() {
        assert_eq!(buf, before, "rejected frame modified");
    }
    (p, c.map(drop), u.map(drop))
}

fn assert_rejected(frame: &[u8], v6: bool, err: Reject) {
    let (p, c, u) = run_all(frame, v6);
    assert_eq!(p, Err(err));
    assert_eq!(c, Err(err));
    assert_eq!(u, Err(err));
}

fn valid(v6: bool) -> Vec<u8> {
    let a = addrs(v6);
    build(
        a.client,
        a.server,
        &OPTS,
        &channel_data(0x4001, b"hello", &[0; 3]),
    )
}

#[test]
fn rejects_bad_ipv4_header_checksum() {
    let mut f = valid(false);
    f[ETH + 11] ^= 1;
    assert_rejected(&f, false, Reject::BadChecksum);
    // A corrupted address is caught by the header checksum too.
    let mut f = valid(false);
    f[ETH + 12] ^= 0x80;
    assert_rejected(&f, false, Reject::BadChecksum);
}

#[test]
fn rejects_bad_udp_checksum() {
    for v6 in [false, true] {
        let mut f = valid(v6);
        let last = f.len() - 4; // a data byte
        f[last] ^= 0x10;
        assert_rejected(&f, v6, Reject::BadChecksum);
        let mut f = valid(v6);
        *f.last_mut().unwrap() ^= 1; // a padding byte
        assert_rejected(&f, v6, Reject::BadChecksum);
    }
}

#[test]
fn rejects_zero_udp_checksum_over_ipv6() {
    let mut f = valid(true);
    f[V6_HEADERS - 2..V6_HEADERS].fill(0);
    assert_rejected(&f, true, Reject::BadChecksum);
}

#[test]
fn rejects_ttl_1_and_0() {
    for v6 in [false, true] {
        for ttl in [0, 1] {
            let a = addrs(v6);
            let o = Opts { ttl, ..OPTS };
            let f = build(a.client, a.server, &o, &channel_data(0x4001, b"x", &[]));
            let (p, c, u) = run_all(&f, v6);
            assert!(p.is_ok());
            assert_eq!(c, Err(Reject::TtlExceeded));
            assert_eq!(u, Err(Reject::TtlExceeded));
        }
    }
}

#[test]
fn stun_with_ttl_1_is_not_channel_data() {
    // A STUN message to the server goes to the slow path whatever its TTL.
    let a = addrs(false);
    let o = Opts { ttl: 1, ..OPTS };
    let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    let f = build(a.client, a.server, &o, &stun);
    assert_eq!(run_all(&f, false).1, Err(Reject::NotChannelData));
}

#[test]
fn rejects_ipv4_options() {
    let a = addrs(false);
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (a.client, a.server) else {
        unreachable!()
    };
    let payload = channel_data(0x4001, b"hi", &[0, 0]);
    let mut ip = ipv4_header(s, d, &OPTS, 8 + payload.len());
    ip.options = [1, 1, 1, 0].into(); // NOP NOP NOP EOL
    ip.total_len += 4;
    ip.header_checksum = ip.calc_header_checksum();
    let udp = UdpHeader::with_ipv4_checksum(s.port(), d.port(), &ip, &payload).unwrap();
    let mut f = Vec::new();
    Ethernet2Header {
        source: IN_SRC_MAC,
        destination: IN_DST_MAC,
        ether_type: EtherType::IPV4,
    }
    .write(&mut f)
    .unwrap();
    ip.write(&mut f).unwrap();
    udp.write(&mut f).unwrap();
    f.extend_from_slice(&payload);
    assert_eq!(f[ETH], 0x46);
    assert!(etherparse::SlicedPacket::from_ethernet(&f).is_ok());
    assert_rejected(&f, false, Reject::Malformed);
}

/// Sets the IPv4 flags/fragment offset and fixes the header checksum.
fn with_flags(flags: u16) -> Vec<u8> {
    let mut f = valid(false);
    f[ETH + 6..ETH + 8].copy_from_slice(&flags.to_be_bytes());
    fix_ipv4_checksum(&mut f);
    f
}

fn fix_ipv4_checksum(f: &mut [u8]) {
    f[ETH + 10..ETH + 12].fill(0);
    let c = naive_checksum(&f[ETH..ETH + 20]);
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn rejects_fragments() {
    assert_rejected(&with_flags(0x2000), false, Reject::Malformed); // MF, offset 0
    assert_rejected(&with_flags(0x0001), false, Reject::Malformed); // offset 8
    assert_rejected(&with_flags(0x4000 | 0x1FFF), false, Reject::Malformed);
    // No flags, DF, or the reserved bit are fine; only DF is kept on output.
    for (flags, out_flags) in [
        (0x0000, 0x0000),
        (0x4000, 0x4000),
        (0xC000, 0x4000),
        (0x8000, 0),
    ] {
        let (mut buf, start, len) = chunk(&with_flags(flags), 0);
        let rw = rewrite(addrs(false).relayed, addrs(false).peer);
        let (s, l) = channel_data_to_udp(&mut buf, start, len, &rw).unwrap();
        let out = &buf[s..s + l];
        assert_eq!(out[ETH + 6..ETH + 8], u16::to_be_bytes(out_flags));
        check_valid(out);
    }
}

#[test]
fn rejects_truncated_frames() {
    for v6 in [false, true] {
        let f = valid(v6);
        for n in 0..f.len() {
            assert_rejected(&f[..n], v6, Reject::Malformed);
        }
    }
}

#[test]
fn rejects_other_protocols_and_inconsistent_lengths() {
    for v6 in [false, true] {
        // Ethertype VLAN / ARP.
        for ethertype in [[0x81, 0x00], [0x08, 0x06]] {
            let mut f = valid(v6);
            f[12..14].copy_from_slice(&ethertype);
            assert_rejected(&f, v6, Reject::Malformed);
        }
        // UDP length one byte short or long (checked before the UDP checksum).
        let udp_len_at = if v6 { V6_HEADERS - 4 } else { V4_HEADERS - 4 };
        for delta in [-1i32, 1, -8] {
            let mut f = valid(v6);
            let l = u16::from_be_bytes([f[udp_len_at], f[udp_len_at + 1]]) as i32 + delta;
            f[udp_len_at..udp_len_at + 2].copy_from_slice(&(l as u16).to_be_bytes());
            assert_rejected(&f, v6, Reject::Malformed);
        }
    }
    // IPv4: not UDP; total length beyond the frame; total length below 28.
    for (at, value) in [
        (ETH + 9, &[6u8][..]),
        (ETH + 2, &[0, 200]),
        (ETH + 2, &[0, 27]),
    ] {
        let mut f = valid(false);
        f[at..at + value.len()].copy_from_slice(value);
        fix_ipv4_checksum(&mut f);
        assert_rejected(&f, false, Reject::Malformed);
    }
    // IPv4: version 6 in an IPv4 ethertype.
    let mut f = valid(false);
    f[ETH] = 0x65;
    assert_rejected(&f, false, Reject::Malformed);
    // IPv6: hop-by-hop options first; payload length beyond the frame; version 4.
    for (at, value) in [(ETH + 6, &[0u8][..]), (ETH + 4, &[0, 200]), (ETH, &[0x4b])] {
        let mut f = valid(true);
        f[at..at + value.len()].copy_from_slice(value);
        assert_rejected(&f, true, Reject::Malformed);
    }
}

#[test]
fn rejects_bad_frame_bounds() {
    let f = valid(false);
    let (mut buf, start, len) = chunk(&f, 0);
    let rw = rewrite(addrs(false).relayed, addrs(false).peer);
    let total = buf.len();
    for (s, l) in [
        (total - 10, 20),
        (usize::MAX, 1),
        (1, usize::MAX),
        (total, 0),
    ] {
        assert_eq!(
            channel_data_to_udp(&mut buf, s, l, &rw),
            Err(Reject::Malformed)
        );
        assert_eq!(
            udp_to_channel_data(&mut buf, s, l, 0x4000, &rw),
            Err(Reject::Malformed)
        );
    }
    assert!(channel_data_to_udp(&mut buf, start, len, &rw).is_ok());
}

#[test]
fn rejects_non_channel_data() {
    for v6 in [false, true] {
        let a = addrs(v6);
        let mut cd_len_too_big = channel_data(0x4001, b"abcd", &[]);
        cd_len_too_big[3] = 5;
        let cases: [Vec<u8>; 6] = [
            vec![],
            vec![0x40, 0x00, 0x00],
            cd_len_too_big,
            channel_data(0x3FFF, b"abcd", &[]),
            channel_data(0x8000, b"abcd", &[]),
            vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42], // STUN
        ];
        for payload in cases {
            let f = build(a.client, a.server, &OPTS, &payload);
            let (p, c, u) = run_all(&f, v6);
            assert!(p.is_ok());
            assert_eq!(c, Err(Reject::NotChannelData), "{payload:x?}");
            assert!(u.is_ok());
        }
        // Boundaries: 0x4000, 0x4FFF and RFC 5766's 0x7FFE, length exactly the rest.
        for ch in [0x4000, 0x4FFF, 0x7FFE] {
            run_c2u(v6, &OPTS, b"abcd", &[], 0);
            let f = build(a.client, a.server, &OPTS, &channel_data(ch, b"", &[]));
            assert!(run_all(&f, v6).1.is_ok());
        }
    }
}

#[test]
fn rejects_family_change() {
    for v6 in [false, true] {
        let f = valid(v6);
        let (a, other) = (addrs(v6), addrs(!v6));
        for rw in [
            rewrite(other.relayed, other.peer),
            rewrite(a.relayed, other.peer),
            rewrite(other.relayed, a.peer),
        ] {
            let (mut buf, start, len) = chunk(&f, 0);
            let before = buf.clone();
            assert_eq!(
                channel_data_to_udp(&mut buf, start, len, &rw),
                Err(Reject::FamilyChange)
            );
            assert_eq!(
                udp_to_channel_data(&mut buf, start, len, 0x4000, &rw),
                Err(Reject::FamilyChange)
            );
            assert_eq!(buf, before);
        }
    }
}

#[test]
fn rejects_no_headroom() {
    for v6 in [false, true] {
        let a = addrs(v6);
        let f = build(a.peer, a.relayed, &OPTS, b"data");
        let rw = rewrite(a.server, a.client);
        for start in 0..4 {
            let mut buf = vec![0; start + f.len()];
            buf[start..].copy_from_slice(&f);
            let before = buf.clone();
            assert_eq!(
                udp_to_channel_data(&mut buf, start, f.len(), 0x4000, &rw),
                Err(Reject::NoRoom)
            );
            assert_eq!(buf, before);
        }
        let mut buf = vec![0; 4 + f.len()];
        buf[4..].copy_from_slice(&f);
        assert_eq!(
            udp_to_channel_data(&mut buf, 4, f.len(), 0x4000, &rw),
            Ok((0, f.len() + 4))
        );
    }
}

#[test]
fn rejects_growth_beyond_64k() {
    for v6 in [false, true] {
        let a = addrs(v6);
        let max = if v6 { 65535 - 8 } else { 65535 - 28 };
        for (n, ok) in [(max, false), (max - 3, false), (max - 4, true)] {
            let f = build(a.peer, a.relayed, &OPTS, &pattern(n, 3));
            let (mut buf, start, len) = chunk(&f, 0);
            let r = udp_to_channel_data(&mut buf, start, len, 0x4000, &rewrite(a.server, a.client));
            assert_eq!(r.is_ok(), ok, "{n}");
            if !ok {
                assert_eq!(r, Err(Reject::NoRoom));
            }
        }
    }
}

/// Peer -> client, then the client's ChannelData back to the original addresses: the
/// original frame again, with TTL - 2 (and flow label 0).
fn round_trip(v6: bool, data: &[u8], channel: u16) {
    let a = addrs(v6);
    let o = Opts { flow: 0, ..OPTS };
    let original = build(a.peer, a.relayed, &o, data);
    let (mut buf, start, len) = chunk(&original, 0);
    let (s, l) =
        udp_to_channel_data(&mut buf, start, len, channel, &rewrite(a.server, a.client)).unwrap();
    let back = Rewrite {
        src_mac: IN_SRC_MAC,
        dst_mac: IN_DST_MAC,
        src: a.peer,
        dst: a.relayed,
    };
    let (s, l) = channel_data_to_udp(&mut buf, s, l, &back).unwrap();
    assert_eq!((s, l), (start, original.len()));
    let out = &buf[s..s + l];
    let headers = if v6 { V6_HEADERS } else { V4_HEADERS };
    assert_eq!(&out[headers..], data);
    let expected = build(
        a.peer,
        a.relayed,
        &Opts {
            ttl: o.ttl - 2,
            ..o
        },
        data,
    );
    assert_eq!(out, expected);
}

#[test]
fn round_trips() {
    for v6 in [false, true] {
        for n in LENGTHS {
            round_trip(v6, &pattern(n, 42), 0x4321);
        }
    }
}

/// RFC 1071 over 16-bit words, one at a time, for comparison.
fn naive_sum(data: &[u8]) -> u32 {
    let mut s: u32 = 0;
    for pair in data.chunks(2) {
        let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        s += u32::from(w);
        s = (s & 0xFFFF) + (s >> 16);
    }
    s
}

fn naive_checksum(data: &[u8]) -> u16 {
    !(naive_sum(data) as u16)
}

#[test]
fn checksum_known_values() {
    // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert_eq!(
        checksum::of(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0xddf2
    );
    assert_eq!(checksum::of(&[]), 0);
    assert_eq!(checksum::of(&[0xFF; 64 * 1024]), 0xFFFF);
    assert_eq!(Sum::default().word(0xFFFF).udp_checksum(), 0xFFFF);
    assert_eq!(Sum::default().word(0x1234).minus(0x1234).fold(), 0xFFFF);
}

/// Fixes the IPv4 header checksum and the UDP checksum of a (possibly mutated) frame
/// where its fields allow, so that mutations reach the checks behind the checksums.
fn fix_checksums(f: &mut [u8]) {
    let Some(ethertype) = f.get(12..14) else {
        return;
    };
    let (udp_at, pseudo): (usize, Vec<u8>) = match ethertype {
        [0x08, 0x00] if f.len() >= 34 => {
            fix_ipv4_checksum(f);
            (34, [&f[26..34], &[0, f[23]][..]].concat())
        }
        [0x86, 0xdd] if f.len() >= 54 => (54, [&f[22..54], &[0, f[20]][..]].concat()),
        _ => return,
    };
    let Some(len) = f.get(udp_at + 4..udp_at + 6) else {
        return;
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len < 8 || udp_at + len > f.len() {
        return;
    }
    f[udp_at + 6..udp_at + 8].fill(0);
    let mut all = pseudo;
    all.extend_from_slice(&(len as u16).to_be_bytes());
    all.extend_from_slice(&f[udp_at..udp_at + len]);
    let c = match naive_checksum(&all) {
        0 => 0xFFFF,
        c => c,
    };
    f[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
}

/// Every successful rewrite yields a frame etherparse and `parse` accept with correct
/// checksums; every rejection leaves the chunk untouched (checked in run_all).
fn check_any_output(frame: &[u8], v6: bool, channel: u16) {
    let a = addrs(v6);
    let (mut buf, start, len) = chunk(frame, 0);
    if let Ok((s, l)) = channel_data_to_udp(&mut buf, start, len, &rewrite(a.relayed, a.peer)) {
        check_valid(&buf[s..s + l]);
    }
    let (mut buf, start, len) = chunk(frame, 0);
    if let Ok((s, l)) =
        udp_to_channel_data(&mut buf, start, len, channel, &rewrite(a.server, a.client))
    {
        check_valid(&buf[s..s + l]);
    }
}

fn check_valid(out: &[u8]) {
    let d = parse(out).unwrap();
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(TransportHeader::Udp(udp)) = h.transport else {
        panic!("no udp")
    };
    let payload = &out[d.payload_off..d.payload_off + d.payload_len];
    match h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(udp.checksum, udp.calc_checksum_ipv6(&ip, payload).unwrap());
        }
        _ => panic!("no ip"),
    }
}

#[test]
fn single_bit_flips_are_caught() {
    // Exhaustive: every bit of a valid frame, both directions and families. A flip is
    // only accepted in bytes no checksum covers: the MACs, and for IPv6 the traffic
    // class / flow label and hop limit.
    for v6 in [false, true] {
        for f in [
            valid(v6),
            build(addrs(v6).peer, addrs(v6).relayed, &OPTS, b"xyz"),
        ] {
            for i in 0..f.len() * 8 {
                let mut g = f.clone();
                g[i / 8] ^= 1 << (i % 8);
                let byte = i / 8;
                let unprotected =
                    byte < 12 || (v6 && (ETH..ETH + 4).contains(&byte)) || (v6 && byte == ETH + 7);
                let (p, c, u) = run_all(&g, v6);
                if !unprotected {
                    assert!(p.is_err(), "bit {i} accepted by parse");
                    assert!(c.is_err() && u.is_err(), "bit {i} accepted by a rewrite");
                }
                check_any_output(&g, v6, 0x4000);
            }
        }
    }
}

fn any_frame() -> impl Strategy<Value = (bool, Vec<u8>)> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..80),
        prop::collection::vec(any::<u8>(), 0..6),
        any::<u8>(),
        0x40u8..0x50,
    )
        .prop_map(|(v6, is_cd, data, padding, ttl, ch)| {
            let a = addrs(v6);
            let o = Opts { ttl, ..OPTS };
            let payload = if is_cd {
                channel_data(u16::from_be_bytes([ch, 0x12]), &data, &padding)
            } else {
                data
            };
            (v6, build(a.client, a.server, &o, &payload))
        })
}

proptest! {
    #[test]
    fn sum_matches_naive(data in prop::collection::vec(any::<u8>(), 0..300), split in 0usize..150) {
        let sum = checksum::of(&data);
        prop_assert_eq!(u32::from(sum), naive_sum(&data));
        // Summing in two parts, the second at an odd or even offset.
        let split = split.min(data.len());
        let (x, y) = data.split_at(split);
        let y_sum = if split % 2 == 1 { checksum::of_at_odd(y) } else { checksum::of(y) };
        let parts = Sum::default().word(checksum::of(x)).word(y_sum).fold();
        // 0 and 0xFFFF are the same one's-complement value.
        prop_assert_eq!(parts % 0xFFFF, sum % 0xFFFF);
    }

    #[test]
    fn fold_matches_repeated_halving(x: u128, small: u64, pick in 0u8..3) {
        // Sums as Sum accumulates them (u64 words into a u128) and any u128 at all.
        let s = match pick {
            0 => x,
            1 => u128::from(small),
            _ => x >> 60,
        };
        let mut r = s;
        while r > 0xFFFF {
            r = (r & 0xFFFF) + (r >> 16);
        }
        prop_assert_eq!(Sum(s).fold(), r as u16);
    }

    #[test]
    fn c2u_matches_etherparse(
        v6: bool,
        data in prop::collection::vec(any::<u8>(), 0..300),
        padding in prop::collection::vec(any::<u8>(), 0..9),
        trailer in 0usize..20,
        tos: u8,
        ttl in 2u8..=255,
    ) {
        let o = Opts { tos, ttl, ..OPTS };
        run_c2u(v6, &o, &data, &padding, trailer);
    }

    #[test]
    fn u2c_matches_etherparse(
        v6: bool,
        data in prop::collection::vec(any::<u8>(), 0..300),
        trailer in 0usize..20,
        tos: u8,
        ttl in 2u8..=255,
    ) {
        let o = Opts { tos, ttl, ..OPTS };
        run_u2c(v6, &o, &data, trailer);
    }

    #[test]
    fn round_trip_any(v6: bool, data in prop::collection::vec(any::<u8>(), 0..300), ch in 0x4000u16..0x5000) {
        round_trip(v6, &data, ch);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        ethertype in prop::sample::select(vec![[0x08u8, 0x00], [0x86, 0xdd], [0x12, 0x34]]),
        v6: bool,
        start in 0usize..8,
        extra in 0usize..8,
        channel: u16,
    ) {
        let mut frame = bytes.clone();
        if frame.len() >= 14 {
            frame[12..14].copy_from_slice(&ethertype);
        }
        let _ = run_all(&frame, v6);
        check_any_output(&frame, v6, channel);
        // Arbitrary start/len into a small buffer.
        let mut buf = vec![0u8; start + frame.len() + extra];
        buf[start..start + frame.len()].copy_from_slice(&frame);
        let a = addrs(v6);
        let len = frame.len() + extra;
        let _ = channel_data_to_udp(&mut buf, start, len, &rewrite(a.relayed, a.peer));
        let _ = udp_to_channel_data(&mut buf, start, len, channel, &rewrite(a.server, a.client));
    }

    #[test]
    fn mutated_frames_never_panic(
        (v6, frame) in any_frame(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        fix: bool,
        resize in prop::option::of(0usize..400),
        channel: u16,
    ) {
        let mut f = frame;
        for (i, b) in mutations {
            let at = i.index(f.len());
            f[at] = b;
        }
        if let Some(n) = resize {
            f.resize(n, 0);
        }
        if fix {
            fix_checksums(&mut f);
        }
        let _ = run_all(&f, v6);
        let _ = run_all(&f, !v6);
        check_any_output(&f, v6, channel);
    }
}
