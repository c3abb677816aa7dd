//! In-place rewriting of the frames the AF_XDP forwarder relays: ChannelData to UDP
//! (client -> peer) and UDP to ChannelData (peer -> client), RFC 8656 section 12.5.
//!
//! A frame lives in a UMEM chunk `buf`, at `buf[start..start + len]`, with headroom before
//! `start`. It is Ethernet II (no VLAN) + IPv4 (no options, not a fragment) or IPv6 (UDP as
//! the first next header) + UDP. Only the L2-L4 headers move (4 bytes forward to strip a
//! ChannelData header, 4 bytes back into the headroom to add one); the payload stays where
//! it is.
//!
//! Invariants:
//! - Nothing in a frame can make these functions panic: every length is checked, and all
//!   arithmetic on lengths from the wire is checked or bounded by a preceding check.
//! - Every check runs before the first write: a rejected frame is left untouched, so the
//!   forwarder can hand it to the slow path as received.
//! - A frame is only rewritten after both checksums were verified (AF_XDP does not verify
//!   them), and the UDP payload is read once: the outgoing UDP checksum is derived from the
//!   one's-complement sum taken while verifying. A UDP checksum field that holds only the
//!   pseudo-header sum is a checksum left to offload (CHECKSUM_PARTIAL: a local sender on a
//!   veth with TX checksum offload on, the default); the kernel trusts such a frame and
//!   would deliver it, so it is accepted too, and the rewritten frame always leaves with a
//!   full checksum. (A corrupt frame passes for such one only when its checksum field
//!   happens to equal that sum: about 1 in 65536 of corrupt frames.)
//!
//! The headers are accessed through typed views (`EthernetFrame`, `Ipv4Packet`,
//! `Ipv6Packet`, `UdpPacket`, `ChannelData`) over the byte ranges of `mod field`, smoltcp
//! style.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use self::checksum::Sum;

/// Why a frame cannot take the fast path (the forwarder counts each and either drops the
/// frame or hands it to the kernel-socket slow path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// Not Ethernet + IPv4 (IHL 5, not a fragment) / IPv6 (next header UDP directly) + UDP,
    /// or a length field inconsistent with the frame (IP total/payload length, UDP length).
    Malformed,
    /// IPv4 header checksum or UDP checksum wrong (AF_XDP does not verify incoming checksums;
    /// a corrupt frame must never be forwarded as valid). UDP checksum 0 over IPv6 is invalid;
    /// over IPv4 it means "none" and is accepted.
    BadChecksum,
    /// TTL / hop limit would reach 0 after the decrement (<= 1 on arrival).
    TtlExceeded,
    /// The rewrite changes the IP family (IPv4 <-> IPv6): slow path.
    FamilyChange,
    /// Client -> peer: the UDP payload is not a ChannelData message (first byte 0x40-0x7F,
    /// 4-byte header, length field <= payload length - 4).
    NotChannelData,
    /// Peer -> client: fewer than 4 bytes of headroom before `start`, or the grown frame does
    /// not fit into `buf`.
    NoRoom,
}

/// A parsed UDP datagram in a frame (checksums verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Offset of the UDP payload from the frame start, and its length (from the UDP header).
    pub payload_off: usize,
    pub payload_len: usize,
    /// IPv4 TOS byte / IPv6 traffic class (DSCP + ECN).
    pub tos: u8,
    /// TTL / hop limit as received.
    pub ttl: u8,
}

/// Addresses of the rewritten frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// New IP source and UDP source port.
    pub src: SocketAddr,
    /// New IP destination and UDP destination port.
    pub dst: SocketAddr,
}

/// Byte ranges of the header fields, relative to the start of each header.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub const IP_PROTO_UDP: u8 = 17;

    pub mod ethernet {
        use super::Field;
        pub const DESTINATION: Field = 0..6;
        pub const SOURCE: Field = 6..12;
        pub const ETHERTYPE: Field = 12..14;
        pub const HEADER_LEN: usize = 14;

        pub const ETHERTYPE_IPV4: u16 = 0x0800;
        pub const ETHERTYPE_IPV6: u16 = 0x86DD;
    }

    pub mod ipv4 {
        use super::Field;
        pub const VER_IHL: usize = 0;
        pub const DSCP_ECN: usize = 1;
        pub const LENGTH: Field = 2..4;
        /// Left as received by the rewrite.
        #[expect(dead_code, reason = "the header's layout, named for the reader")]
        pub const IDENT: Field = 4..6;
        pub const FLG_OFF: Field = 6..8;
        pub const TTL: usize = 8;
        pub const PROTOCOL: usize = 9;
        pub const CHECKSUM: Field = 10..12;
        pub const SRC_ADDR: Field = 12..16;
        pub const DST_ADDR: Field = 16..20;
        pub const HEADER_LEN: usize = 20;

        /// Version 4, IHL 5 (no options).
        pub const VER_IHL_NO_OPTIONS: u8 = 0x45;
        pub const FLAG_DF: u16 = 0x4000;
        pub const FLAG_MF: u16 = 0x2000;
        pub const FRAG_OFFSET_MASK: u16 = 0x1FFF;
    }

    pub mod ipv6 {
        use super::Field;
        /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
        pub const VER_TC_FLOW: Field = 0..4;
        pub const PAYLOAD_LEN: Field = 4..6;
        pub const NEXT_HEADER: usize = 6;
        pub const HOP_LIMIT: usize = 7;
        pub const SRC_ADDR: Field = 8..24;
        pub const DST_ADDR: Field = 24..40;
        pub const HEADER_LEN: usize = 40;

        pub const VERSION: u8 = 6;
        pub const TC_SHIFT: u32 = 20;
    }

    pub mod udp {
        use super::Field;
        pub const SRC_PORT: Field = 0..2;
        pub const DST_PORT: Field = 2..4;
        pub const LENGTH: Field = 4..6;
        pub const CHECKSUM: Field = 6..8;
        pub const HEADER_LEN: usize = 8;
    }

    /// RFC 8656 section 12.4.
    pub mod channel_data {
        use super::Field;
        pub const NUMBER: Field = 0..2;
        pub const LENGTH: Field = 2..4;
        pub const HEADER_LEN: usize = 4;

        /// Channel numbers are 0x4000-0x4FFF (RFC 8656), or up to 0x7FFE with RFC 5766's
        /// range (`--rfc5766-channels`), so the first byte is 0x40-0x7F (RFC 7983). Whether
        /// a number is bound is the data plane's decision, made before any rewrite.
        pub const FIRST_BYTE: core::ops::RangeInclusive<u8> = 0x40..=0x7F;
    }
}

/// The Internet checksum (RFC 1071): one's-complement sums.
mod checksum {
    /// An unfolded one's-complement sum. Bytes are summed 8 at a time as big-endian `u64`
    /// words into a `u128`; since 2^16 = 1 (mod 2^16 - 1), that is the same sum modulo
    /// 2^16 - 1 as the 16-bit words, and [`Sum::fold`] reduces it.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Sum(pub(super) u128);

    impl Sum {
        /// Adds `data` as if it started at an even offset (a trailing odd byte is the high
        /// byte of a word padded with zero).
        #[inline]
        pub fn bytes(self, data: &[u8]) -> Sum {
            let mut acc = self.0;
            let mut chunks = data.chunks_exact(8);
            for chunk in &mut chunks {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                acc += u128::from(u64::from_be_bytes(word));
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut word = [0u8; 8];
                word[..rest.len()].copy_from_slice(rest);
                acc += u128::from(u64::from_be_bytes(word));
            }
            Sum(acc)
        }

        #[inline]
        pub fn word(self, word: u16) -> Sum {
            Sum(self.0 + u128::from(word))
        }

        /// Subtracts a folded sum: adding the one's complement is subtraction.
        #[inline]
        pub fn minus(self, folded: u16) -> Sum {
            self.word(!folded)
        }

        /// The 16-bit one's-complement sum. Never 0 unless everything added was 0, so a
        /// valid checksummed range folds to 0xFFFF.
        #[inline]
        pub fn fold(self) -> u16 {
            // Halves added with end-around carry: 2^64 = 2^32 = 2^16 = 1 (mod 2^16 - 1),
            // and the result is 0 only if both halves were. Straight-line, as this runs
            // several times per relayed frame.
            let (lo, carry) = (self.0 as u64).overflowing_add((self.0 >> 64) as u64);
            let s = lo + u64::from(carry);
            let (lo, carry) = (s as u32).overflowing_add((s >> 32) as u32);
            let s = lo + u32::from(carry);
            let s = (s & 0xFFFF) + (s >> 16);
            let s = (s & 0xFFFF) + (s >> 16);
            // s <= 0xFFFF here.
            s as u16
        }

        /// The checksum field value covering this sum (IPv4 header checksum).
        #[inline]
        pub fn checksum(self) -> u16 {
            !self.fold()
        }

        /// The UDP checksum field value: a computed 0 is sent as 0xFFFF (RFC 768).
        #[inline]
        pub fn udp_checksum(self) -> u16 {
            match self.checksum() {
                0 => 0xFFFF,
                c => c,
            }
        }
    }

    /// The folded sum of `data` starting at an even offset.
    #[inline]
    pub fn of(data: &[u8]) -> u16 {
        Sum::default().bytes(data).fold()
    }

    /// The folded sum of `data` starting at an odd offset (its first byte is the low byte
    /// of a word): the byte-swapped even-offset sum, as x * 256 = swap(x) (mod 2^16 - 1).
    #[inline]
    pub fn of_at_odd(data: &[u8]) -> u16 {
        of(data).swap_bytes()
    }
}

#[inline]
fn get_u16(data: &[u8], f: field::Field) -> u16 {
    u16::from_be_bytes([data[f.start], data[f.start + 1]])
}

#[inline]
fn set_u16(data: &mut [u8], f: field::Field, value: u16) {
    data[f].copy_from_slice(&value.to_be_bytes());
}

/// The length check of every view's `new_checked`: its accessors index within the first
/// `header_len` bytes, so a view exists only over at least that many.
fn check_len<T: AsRef<[u8]>>(buffer: &T, header_len: usize, err: Reject) -> Result<(), Reject> {
    if buffer.as_ref().len() < header_len {
        Err(err)
    } else {
        Ok(())
    }
}

/// View of an Ethernet II header.
struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    fn new_checked(buffer: T) -> Result<Self, Reject> {
        check_len(&buffer, field::ethernet::HEADER_LEN, Reject::Malformed)?;
        Ok(EthernetFrame { buffer })
    }

    fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ethernet::ETHERTYPE)
    }

    fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ethernet::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    fn set_destination(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::ethernet::DESTINATION].copy_from_slice(&mac);
    }

    fn set_source(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::ethernet::SOURCE].copy_from_slice(&mac);
    }
}

/// View of an IPv4 header without options (the 20 fixed bytes).
struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    fn new_checked(buffer: T) -> Result<Self, Reject> {
        check_len(&buffer, field::ipv4::HEADER_LEN, Reject::Malformed)?;
        Ok(Ipv4Packet { buffer })
    }

    fn ver_ihl(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::VER_IHL]
    }

    fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::DSCP_ECN]
    }

    fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ipv4::LENGTH)
    }

    fn flags_frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ipv4::FLG_OFF)
    }

    fn is_fragment(&self) -> bool {
        let f = self.flags_frag_offset();
        f & field::ipv4::FLAG_MF != 0 || f & field::ipv4::FRAG_OFFSET_MASK != 0
    }

    fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::TTL]
    }

    fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::ipv4::PROTOCOL]
    }

    fn src_addr(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::ipv4::SRC_ADDR]);
        a
    }

    fn dst_addr(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::ipv4::DST_ADDR]);
        a
    }

    fn header_checksum_ok(&self) -> bool {
        checksum::of(&self.buffer.as_ref()[..field::ipv4::HEADER_LEN]) == 0xFFFF
    }

    fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ipv4::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_ver_ihl(&mut self, value: u8) {
        self.buffer.as_mut()[field::ipv4::VER_IHL] = value;
    }

    fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::ipv4::DSCP_ECN] = value;
    }

    fn set_total_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::ipv4::LENGTH, value);
    }

    fn set_flags_frag_offset(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::ipv4::FLG_OFF, value);
    }

    fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::ipv4::TTL] = value;
    }

    fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::ipv4::PROTOCOL] = value;
    }

    fn set_src_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::ipv4::SRC_ADDR].copy_from_slice(&addr);
    }

    fn set_dst_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::ipv4::DST_ADDR].copy_from_slice(&addr);
    }

    fn fill_checksum(&mut self) {
        set_u16(self.buffer.as_mut(), field::ipv4::CHECKSUM, 0);
        let c = Sum::default()
            .bytes(&self.buffer.as_ref()[..field::ipv4::HEADER_LEN])
            .checksum();
        set_u16(self.buffer.as_mut(), field::ipv4::CHECKSUM, c);
    }
}

/// View of an IPv6 fixed header.
struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    fn new_checked(buffer: T) -> Result<Self, Reject> {
        check_len(&buffer, field::ipv6::HEADER_LEN, Reject::Malformed)?;
        Ok(Ipv6Packet { buffer })
    }

    fn ver_tc_flow(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::ipv6::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> field::ipv6::TC_SHIFT) as u8
    }

    fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ipv6::PAYLOAD_LEN)
    }

    fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::ipv6::NEXT_HEADER]
    }

    fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::ipv6::HOP_LIMIT]
    }

    fn src_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::ipv6::SRC_ADDR]);
        a
    }

    fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::ipv6::DST_ADDR]);
        a
    }

    fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ipv6::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Version 6, the given traffic class, flow label 0.
    fn set_ver_tc_flow(&mut self, traffic_class: u8) {
        let v = (u32::from(field::ipv6::VERSION) << 28)
            | (u32::from(traffic_class) << field::ipv6::TC_SHIFT);
        self.buffer.as_mut()[field::ipv6::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }

    fn set_payload_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::ipv6::PAYLOAD_LEN, value);
    }

    fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::ipv6::NEXT_HEADER] = value;
    }

    fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::ipv6::HOP_LIMIT] = value;
    }

    fn set_src_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::ipv6::SRC_ADDR].copy_from_slice(&addr);
    }

    fn set_dst_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::ipv6::DST_ADDR].copy_from_slice(&addr);
    }
}

/// View of a UDP header.
struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    fn new_checked(buffer: T) -> Result<Self, Reject> {
        check_len(&buffer, field::udp::HEADER_LEN, Reject::Malformed)?;
        Ok(UdpPacket { buffer })
    }

    fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::udp::SRC_PORT)
    }

    fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::udp::DST_PORT)
    }

    fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::udp::LENGTH)
    }

    fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::udp::CHECKSUM)
    }

    /// The sum of the header words, checksum field included.
    fn header_sum(&self) -> Sum {
        Sum::default().bytes(&self.buffer.as_ref()[..field::udp::HEADER_LEN])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn set_src_port(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::udp::SRC_PORT, value);
    }

    fn set_dst_port(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::udp::DST_PORT, value);
    }

    fn set_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::udp::LENGTH, value);
    }

    fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::udp::CHECKSUM, value);
    }
}

/// View of a ChannelData message (RFC 8656 section 12.4).
struct ChannelData<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ChannelData<T> {
    /// Checks the header and that the length field fits in the buffer (anything after the
    /// application data is padding).
    fn new_checked(buffer: T) -> Result<Self, Reject> {
        check_len(
            &buffer,
            field::channel_data::HEADER_LEN,
            Reject::NotChannelData,
        )?;
        let cd = ChannelData { buffer };
        let b = cd.buffer.as_ref();
        if !field::channel_data::FIRST_BYTE.contains(&b[field::channel_data::NUMBER.start])
            || usize::from(cd.len()) > b.len() - field::channel_data::HEADER_LEN
        {
            return Err(Reject::NotChannelData);
        }
        Ok(cd)
    }

    fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::channel_data::LENGTH)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ChannelData<T> {
    /// A view over a buffer of at least `HEADER_LEN` bytes that is about to be written.
    fn new_for_emit(buffer: T) -> Result<Self, Reject> {
        check_len(&buffer, field::channel_data::HEADER_LEN, Reject::NoRoom)?;
        Ok(ChannelData { buffer })
    }

    fn set_number(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::channel_data::NUMBER, value);
    }

    fn set_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::channel_data::LENGTH, value);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn ip_header_len(self) -> usize {
        match self {
            Family::V4 => field::ipv4::HEADER_LEN,
            Family::V6 => field::ipv6::HEADER_LEN,
        }
    }

    /// Ethernet + IP + UDP header length: the bytes that move.
    fn headers_len(self) -> usize {
        field::ethernet::HEADER_LEN + self.ip_header_len() + field::udp::HEADER_LEN
    }

    /// The largest UDP payload whose IP packet still fits the 16-bit length fields.
    fn max_udp_payload(self) -> usize {
        let max = usize::from(u16::MAX) - field::udp::HEADER_LEN;
        match self {
            Family::V4 => max - field::ipv4::HEADER_LEN,
            Family::V6 => max,
        }
    }
}

/// A verified frame: what the rewrite needs beyond [`Datagram`].
#[derive(Debug, Clone, Copy)]
struct Verified {
    dgram: Datagram,
    family: Family,
    /// Folded one's-complement sum of the UDP payload (taken even when an IPv4 datagram
    /// carries no checksum, as the outgoing one needs it).
    payload_sum: u16,
    /// The UDP checksum was left to offload (the field held the pseudo-header sum).
    partial: bool,
}

fn verify(frame: &[u8]) -> Result<Verified, Reject> {
    let eth = EthernetFrame::new_checked(frame)?;
    match eth.ethertype() {
        field::ethernet::ETHERTYPE_IPV4 => verify_ipv4(eth.payload()),
        field::ethernet::ETHERTYPE_IPV6 => verify_ipv6(eth.payload()),
        _ => Err(Reject::Malformed),
    }
}

fn verify_ipv4(l3: &[u8]) -> Result<Verified, Reject> {
    let ip = Ipv4Packet::new_checked(l3)?;
    if ip.ver_ihl() != field::ipv4::VER_IHL_NO_OPTIONS {
        return Err(Reject::Malformed);
    }
    if !ip.header_checksum_ok() {
        return Err(Reject::BadChecksum);
    }
    if ip.is_fragment() || ip.protocol() != field::IP_PROTO_UDP {
        return Err(Reject::Malformed);
    }
    let udp_len = usize::from(ip.total_len())
        .checked_sub(field::ipv4::HEADER_LEN)
        .ok_or(Reject::Malformed)?;
    let udp_bytes = ip.payload().get(..udp_len).ok_or(Reject::Malformed)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let pseudo = Sum::default()
        .bytes(&src)
        .bytes(&dst)
        .word(u16::from(field::IP_PROTO_UDP));
    // RFC 768: checksum 0 means none was computed.
    verify_udp(udp_bytes, pseudo, false).map(|(udp, payload_sum, partial)| Verified {
        dgram: Datagram {
            src: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(src)), udp.src_port()),
            dst: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(dst)), udp.dst_port()),
            payload_off: Family::V4.headers_len(),
            payload_len: udp_len - field::udp::HEADER_LEN,
            tos: ip.dscp_ecn(),
            ttl: ip.ttl(),
        },
        family: Family::V4,
        payload_sum,
        partial,
    })
}

fn verify_ipv6(l3: &[u8]) -> Result<Verified, Reject> {
    let ip = Ipv6Packet::new_checked(l3)?;
    if ip.version() != field::ipv6::VERSION || ip.next_header() != field::IP_PROTO_UDP {
        return Err(Reject::Malformed);
    }
    let udp_len = usize::from(ip.payload_len());
    let udp_bytes = ip.payload().get(..udp_len).ok_or(Reject::Malformed)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    // The upper-layer packet length is 32 bits in the IPv6 pseudo-header (RFC 8200 section
    // 8.1); it fits 16 here, so it is the same word as the UDP length.
    let pseudo = Sum::default()
        .bytes(&src)
        .bytes(&dst)
        .word(u16::from(field::IP_PROTO_UDP));
    // RFC 8200 section 8.1: a zero UDP checksum over IPv6 is invalid.
    verify_udp(udp_bytes, pseudo, true).map(|(udp, payload_sum, partial)| Verified {
        dgram: Datagram {
            src: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(src)), udp.src_port()),
            dst: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(dst)), udp.dst_port()),
            payload_off: Family::V6.headers_len(),
            payload_len: udp_len - field::udp::HEADER_LEN,
            tos: ip.traffic_class(),
            ttl: ip.hop_limit(),
        },
        family: Family::V6,
        payload_sum,
        partial,
    })
}

/// Verifies a UDP datagram that fills `udp_bytes` (the IP payload), given the pseudo-header
/// sum without the length. Returns the header view, the folded payload sum, and whether
/// the checksum was left to offload (the field holds the folded pseudo-header sum).
fn verify_udp(
    udp_bytes: &[u8],
    pseudo_without_len: Sum,
    checksum_required: bool,
) -> Result<(UdpPacket<&[u8]>, u16, bool), Reject> {
    let udp = UdpPacket::new_checked(udp_bytes)?;
    if usize::from(udp.len()) != udp_bytes.len() {
        return Err(Reject::Malformed);
    }
    // The one pass over the payload; the rewrite reuses its result.
    let payload_sum = checksum::of(&udp_bytes[field::udp::HEADER_LEN..]);
    if udp.checksum() == 0 {
        return if checksum_required {
            Err(Reject::BadChecksum)
        } else {
            Ok((udp, payload_sum, false))
        };
    }
    let pseudo = pseudo_without_len.word(udp.len());
    let total = pseudo.word(udp.header_sum().fold()).word(payload_sum);
    if total.fold() == 0xFFFF {
        return Ok((udp, payload_sum, false));
    }
    // CHECKSUM_PARTIAL: the sender's stack wrote ~csum_tcpudp_magic(.., 0), the folded
    // pseudo-header sum, and left the rest to the NIC (RFC 768 sums; include/net/udp.h).
    if udp.checksum() == pseudo.fold() {
        return Ok((udp, payload_sum, true));
    }
    Err(Reject::BadChecksum)
}

/// Parse and verify a frame (checksums included). Trailing bytes after the IP packet
/// (Ethernet padding) are allowed and ignored.
pub fn parse(frame: &[u8]) -> Result<Datagram, Reject> {
    verify(frame).map(|v| v.dgram)
}

/// The verified frame at `buf[start..start + len]`.
fn verify_in(buf: &[u8], start: usize, len: usize) -> Result<Verified, Reject> {
    let end = start.checked_add(len).ok_or(Reject::Malformed)?;
    verify(buf.get(start..end).ok_or(Reject::Malformed)?)
}

/// The frame at `buf[start..start + len]` parsed and verified once ([`check`]): the
/// `*_checked` rewrites take it instead of verifying the frame again, so a relayed frame's
/// payload is summed once. Only valid for the same `buf`, `start` and `len`, unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    v: Verified,
    start: usize,
}

impl Checked {
    pub fn datagram(&self) -> &Datagram {
        &self.v.dgram
    }

    /// The UDP checksum was left to offload (CHECKSUM_PARTIAL); the rewrite writes a full one.
    pub fn partial_checksum(&self) -> bool {
        self.v.partial
    }
}

/// Parse and verify the frame at `buf[start..start + len]` like [`parse`].
pub fn check(buf: &[u8], start: usize, len: usize) -> Result<Checked, Reject> {
    verify_in(buf, start, len).map(|v| Checked { v, start })
}

/// The new addresses of a rewrite, of one family.
#[derive(Debug, Clone, Copy)]
enum Endpoints {
    V4(SocketAddrV4, SocketAddrV4),
    V6(SocketAddrV6, SocketAddrV6),
}

fn check_family_and_ttl(v: &Verified, rw: &Rewrite) -> Result<Endpoints, Reject> {
    let endpoints = match (v.family, rw.src, rw.dst) {
        (Family::V4, SocketAddr::V4(src), SocketAddr::V4(dst)) => Endpoints::V4(src, dst),
        (Family::V6, SocketAddr::V6(src), SocketAddr::V6(dst)) => Endpoints::V6(src, dst),
        _ => return Err(Reject::FamilyChange),
    };
    if v.dgram.ttl <= 1 {
        return Err(Reject::TtlExceeded);
    }
    Ok(endpoints)
}

/// Client -> peer (RFC 8656 section 12.5): the frame's UDP payload is a ChannelData message;
/// the result is a UDP datagram carrying its application data from `rw.src` (the relayed
/// address) to `rw.dst` (the peer). Strips the 4-byte ChannelData header by MOVING THE
/// L2-L4 HEADERS 4 BYTES FORWARD (not the payload), drops any padding after the ChannelData
/// data, writes the new MACs/addresses/ports, copies DSCP/ECN, decrements TTL, sets IP
/// and UDP lengths and both checksums. Returns the new (start, len): start + 4.
/// Verifies the incoming frame like `parse` first. `rw.src`/`rw.dst` must be of the frame's
/// family, else FamilyChange.
///
/// Checks run in this order, all before the first write: [`Reject::Malformed`] /
/// [`Reject::BadChecksum`], [`Reject::NotChannelData`] (a STUN message to the server must
/// reach the slow path whatever its TTL), [`Reject::FamilyChange`], [`Reject::TtlExceeded`].
pub fn channel_data_to_udp(
    buf: &mut [u8],
    start: usize,
    len: usize,
    rw: &Rewrite,
) -> Result<(usize, usize), Reject> {
    let c = check(buf, start, len)?;
    channel_data_to_udp_checked(buf, &c, rw)
}

/// [`channel_data_to_udp`] of a frame already [`check`]ed.
pub fn channel_data_to_udp_checked(
    buf: &mut [u8],
    c: &Checked,
    rw: &Rewrite,
) -> Result<(usize, usize), Reject> {
    const CD_HEADER: usize = field::channel_data::HEADER_LEN;
    let (v, start) = (&c.v, c.start);
    let headers = v.family.headers_len();
    // In range: verify_in checked start + payload_off + payload_len <= start + len.
    let payload_start = start + v.dgram.payload_off;
    let payload = buf
        .get(payload_start..payload_start + v.dgram.payload_len)
        .ok_or(Reject::Malformed)?;
    let cd = ChannelData::new_checked(payload)?;
    let data_len = usize::from(cd.len());
    let endpoints = check_family_and_ttl(v, rw)?;

    // The sum of the application data alone, from the sum of the whole payload: remove the
    // ChannelData header (even offset) and the padding (odd offset when data_len is odd).
    // The data moves from payload offset 4 to 0, so its own word alignment is unchanged.
    let data = &payload[CD_HEADER..CD_HEADER + data_len];
    let padding = &payload[CD_HEADER + data_len..];
    let data_sum = if padding.len() > data.len() {
        // Only when the padding is longer than the data (never with 0-3 bytes of padding).
        checksum::of(data)
    } else {
        let padding_sum = if data_len % 2 == 1 {
            checksum::of_at_odd(padding)
        } else {
            checksum::of(padding)
        };
        Sum::default()
            .word(v.payload_sum)
            .minus(checksum::of(&payload[..CD_HEADER]))
            .minus(padding_sum)
            .fold()
    };

    // All checks passed; from here on the frame is rewritten.
    let new_start = start + CD_HEADER;
    let new_len = headers + data_len;
    buf.copy_within(start..start + headers, new_start);
    let out = buf
        .get_mut(new_start..new_start + headers)
        .ok_or(Reject::Malformed)?;
    write_headers(out, v, rw, endpoints, data_len, data_sum)?;
    Ok((new_start, new_len))
}

/// Peer -> client: the frame's UDP payload is application data from a peer; the result is
/// a ChannelData message (channel number `channel`, length = payload length, no padding:
/// RFC 8656 section 12.5 allows unpadded ChannelData over UDP) from `rw.src` (the server's
/// listening address) to `rw.dst` (the client). Grows the frame at the head by 4 bytes
/// (moves the L2-L4 headers 4 bytes back into the headroom, writes the ChannelData header
/// in the gap), same rewriting otherwise. Trailing Ethernet padding is dropped. Returns the
/// new (start, len): start - 4.
///
/// `channel` is written as given (the caller's channel binding holds a valid number,
/// 0x4000-0x4FFF, or 0x4000-0x7FFE with RFC 5766's range). Checks run in this order, all before the first write:
/// [`Reject::Malformed`] / [`Reject::BadChecksum`], [`Reject::FamilyChange`],
/// [`Reject::TtlExceeded`], [`Reject::NoRoom`] (also when the grown IP packet would exceed
/// 65535 bytes).
pub fn udp_to_channel_data(
    buf: &mut [u8],
    start: usize,
    len: usize,
    channel: u16,
    rw: &Rewrite,
) -> Result<(usize, usize), Reject> {
    let c = check(buf, start, len)?;
    udp_to_channel_data_checked(buf, &c, channel, rw)
}

/// [`udp_to_channel_data`] of a frame already [`check`]ed.
pub fn udp_to_channel_data_checked(
    buf: &mut [u8],
    c: &Checked,
    channel: u16,
    rw: &Rewrite,
) -> Result<(usize, usize), Reject> {
    const CD_HEADER: usize = field::channel_data::HEADER_LEN;
    let (v, start) = (&c.v, c.start);
    let endpoints = check_family_and_ttl(v, rw)?;
    let new_start = start.checked_sub(CD_HEADER).ok_or(Reject::NoRoom)?;
    let data_len = v.dgram.payload_len;
    let new_payload_len = data_len + CD_HEADER;
    if new_payload_len > v.family.max_udp_payload() {
        return Err(Reject::NoRoom);
    }
    // Fits in 16 bits: new_payload_len <= max_udp_payload.
    let cd_len = data_len as u16;
    let headers = v.family.headers_len();
    // The payload stays in place, so the grown frame ends where the UDP payload ends,
    // inside the old frame: it always fits in `buf`.
    let new_len = headers + new_payload_len;

    // All checks passed; from here on the frame is rewritten.
    buf.copy_within(start..start + headers, new_start);
    let out = buf
        .get_mut(new_start..new_start + headers + CD_HEADER)
        .ok_or(Reject::NoRoom)?;
    let (out_headers, cd_bytes) = out.split_at_mut(headers);
    let mut cd = ChannelData::new_for_emit(cd_bytes)?;
    cd.set_number(channel);
    cd.set_len(cd_len);
    let payload_sum = Sum::default()
        .word(v.payload_sum)
        .word(channel)
        .word(cd_len)
        .fold();
    write_headers(out_headers, v, rw, endpoints, new_payload_len, payload_sum)?;
    Ok((new_start, new_len))
}

/// Rewrites the moved L2-L4 headers in `out` (exactly `v.family.headers_len()` bytes, the
/// incoming headers) for a UDP payload of `payload_len` bytes whose sum is `payload_sum`.
/// The caller has checked that `endpoints` are of `v.family` and that `payload_len` fits.
fn write_headers(
    out: &mut [u8],
    v: &Verified,
    rw: &Rewrite,
    endpoints: Endpoints,
    payload_len: usize,
    payload_sum: u16,
) -> Result<(), Reject> {
    // Views first (their length checks cannot fail here), writes after.
    let (l2, l3_l4) = out
        .split_at_mut_checked(field::ethernet::HEADER_LEN)
        .ok_or(Reject::Malformed)?;
    let (l3, l4) = l3_l4
        .split_at_mut_checked(v.family.ip_header_len())
        .ok_or(Reject::Malformed)?;
    let mut eth = EthernetFrame::new_checked(l2)?;
    let mut udp = UdpPacket::new_checked(l4)?;

    eth.set_destination(rw.dst_mac);
    eth.set_source(rw.src_mac);
    // Fits: payload_len <= Family::max_udp_payload.
    let udp_len = (field::udp::HEADER_LEN + payload_len) as u16;
    let ttl = v.dgram.ttl.saturating_sub(1);
    let (pseudo, src_port, dst_port) = match endpoints {
        Endpoints::V4(src, dst) => {
            let mut ip = Ipv4Packet::new_checked(l3)?;
            ip.set_ver_ihl(field::ipv4::VER_IHL_NO_OPTIONS);
            ip.set_dscp_ecn(v.dgram.tos);
            ip.set_total_len(field::ipv4::HEADER_LEN as u16 + udp_len);
            // The identification stays as received; DF is kept, the rest cleared.
            let df = ip.flags_frag_offset() & field::ipv4::FLAG_DF;
            ip.set_flags_frag_offset(df);
            ip.set_ttl(ttl);
            ip.set_protocol(field::IP_PROTO_UDP);
            ip.set_src_addr(src.ip().octets());
            ip.set_dst_addr(dst.ip().octets());
            ip.fill_checksum();
            let pseudo = Sum::default()
                .bytes(&src.ip().octets())
                .bytes(&dst.ip().octets());
            (pseudo, src.port(), dst.port())
        }
        Endpoints::V6(src, dst) => {
            let mut ip = Ipv6Packet::new_checked(l3)?;
            ip.set_ver_tc_flow(v.dgram.tos);
            ip.set_payload_len(udp_len);
            ip.set_next_header(field::IP_PROTO_UDP);
            ip.set_hop_limit(ttl);
            ip.set_src_addr(src.ip().octets());
            ip.set_dst_addr(dst.ip().octets());
            let pseudo = Sum::default()
                .bytes(&src.ip().octets())
                .bytes(&dst.ip().octets());
            (pseudo, src.port(), dst.port())
        }
    };
    udp.set_src_port(src_port);
    udp.set_dst_port(dst_port);
    udp.set_len(udp_len);
    // Pseudo-header (addresses, protocol, length), header (checksum field 0), payload.
    let sum = pseudo
        .word(u16::from(field::IP_PROTO_UDP))
        .word(udp_len)
        .word(src_port)
        .word(dst_port)
        .word(udp_len)
        .word(payload_sum);
    udp.set_checksum(sum.udp_checksum());
    Ok(())
}

#[cfg(test)]
mod tests;
