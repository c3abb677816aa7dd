//! Tiny XDP programs written as raw BPF instructions, and the three `bpf(2)` commands the
//! XDP benchmark needs for them (BPF_PROG_LOAD, BPF_PROG_TEST_RUN, BPF_LINK_CREATE).
//! All `unsafe` code of the XDP benchmark is in this file.
//!
//! Why raw instructions: the benchmark needs programs that xturn's committed object does
//! not have and should not carry (a bare XDP_TX reflector to compare the responder with,
//! a drop sink, and a frame generator for BPF_PROG_RUN's live-frame mode). Each is a few
//! instructions; building them here keeps the BPF toolchain out of the bench and the
//! object byte-identical to its source. xturn's own programs are loaded from the object
//! with aya (see `xdp_bench.rs`), and are run with [`test_run`] the same way.
//!
//! Layouts follow include/uapi/linux/bpf.h (`union bpf_attr`, `struct bpf_insn`,
//! `struct xdp_md`); every attribute buffer is zeroed first, so fields not set are 0, as
//! the kernel requires.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// XDP actions.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP only, no fallback to generic mode.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One `struct bpf_insn` (8 bytes: code, dst:4 | src:4, off, imm; little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn(pub [u8; 8]);

/// Registers used below: r0 return value, r1 context, r2-r8 scratch.
pub mod reg {
    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;
    pub const R6: u8 = 6;
    pub const R7: u8 = 7;
    pub const R8: u8 = 8;
    /// The read-only frame pointer (stack).
    pub const R10: u8 = 10;
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let o = off.to_le_bytes();
        let i = imm.to_le_bytes();
        Insn([code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]])
    }
    /// dst = *(u32 *)(src + off)
    pub const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x61, dst, src, off, 0)
    }
    /// dst = *(u16 *)(src + off)
    pub const fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x69, dst, src, off, 0)
    }
    /// *(u32 *)(dst + off) = src
    pub const fn stx_w(dst: u8, off: i16, src: u8) -> Insn {
        Insn::new(0x63, dst, src, off, 0)
    }
    /// *(u16 *)(dst + off) = src
    pub const fn stx_h(dst: u8, off: i16, src: u8) -> Insn {
        Insn::new(0x6b, dst, src, off, 0)
    }
    /// *(u32 *)(dst + off) = imm
    pub const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(0x62, dst, 0, off, imm)
    }
    /// *(u16 *)(dst + off) = imm
    pub const fn st_h(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(0x6a, dst, 0, off, imm)
    }
    /// *(u8 *)(dst + off) = imm
    pub const fn st_b(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(0x72, dst, 0, off, imm)
    }
    /// dst = src (64-bit)
    pub const fn mov(dst: u8, src: u8) -> Insn {
        Insn::new(0xbf, dst, src, 0, 0)
    }
    /// dst = imm (64-bit)
    pub const fn mov_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0xb7, dst, 0, 0, imm)
    }
    /// dst += imm (64-bit)
    pub const fn add_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x07, dst, 0, 0, imm)
    }
    /// if dst > src (unsigned) goto pc + 1 + off
    pub const fn jgt(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x2d, dst, src, off, 0)
    }
    pub const fn exit() -> Insn {
        Insn::new(0x95, 0, 0, 0, 0)
    }
    /// dst = *(u64 *)(src + off)
    pub const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x79, dst, src, off, 0)
    }
    /// *(u64 *)(dst + off) = src
    pub const fn stx_dw(dst: u8, off: i16, src: u8) -> Insn {
        Insn::new(0x7b, dst, src, off, 0)
    }
    /// dst %= imm (64-bit, unsigned; imm must not be 0)
    pub const fn mod_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x97, dst, 0, 0, imm)
    }
    /// if dst == imm goto pc + 1 + off
    pub const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(0x15, dst, 0, off, imm)
    }
    /// dst = *(u8 *)(src + off)
    pub const fn ldx_b(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x71, dst, src, off, 0)
    }
    /// if dst != imm goto pc + 1 + off
    pub const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(0x55, dst, 0, off, imm)
    }
    /// if dst >= imm (unsigned) goto pc + 1 + off
    pub const fn jge_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(0x35, dst, 0, off, imm)
    }
    /// dst &= imm, dst |= imm, dst ^= imm, dst >>= imm (64-bit; imm sign-extended)
    pub const fn and_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x57, dst, 0, 0, imm)
    }
    pub const fn or_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x47, dst, 0, 0, imm)
    }
    pub const fn xor_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0xa7, dst, 0, 0, imm)
    }
    pub const fn rsh_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x77, dst, 0, 0, imm)
    }
    /// dst += src (64-bit)
    pub const fn add(dst: u8, src: u8) -> Insn {
        Insn::new(0x0f, dst, src, 0, 0)
    }
    /// lock *(u64 *)(dst + off) += src (BPF_ATOMIC | BPF_DW, BPF_ADD)
    pub const fn atomic_add_dw(dst: u8, off: i16, src: u8) -> Insn {
        Insn::new(0xdb, dst, src, off, 0)
    }
    /// call helper `id`
    pub const fn call(id: i32) -> Insn {
        Insn::new(0x85, 0, 0, 0, id)
    }
    /// dst = the map with file descriptor `fd` (ld_imm64 with BPF_PSEUDO_MAP_FD: two
    /// instruction slots).
    pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [Insn::new(0x18, dst, 1, 0, fd), Insn([0; 8])]
    }
}

/// `r2 = ctx->data; r3 = ctx->data_end; if r2 + len > r3 goto fail`, with the jump
/// offset patched by [`finish`]. Returns the index of the jump.
fn bounds_check(p: &mut Vec<Insn>, len: usize) -> usize {
    use reg::*;
    p.push(Insn::ldx_w(R2, R1, 0)); // xdp_md.data
    p.push(Insn::ldx_w(R3, R1, 4)); // xdp_md.data_end
    p.push(Insn::mov(R4, R2));
    p.push(Insn::add_imm(R4, len as i32));
    p.push(Insn::jgt(R4, R3, 0));
    p.len() - 1
}

/// `return ok;` then the `fail:` label (`return fail;`) the bounds check jumps to.
fn finish(mut p: Vec<Insn>, jump: usize, ok: u32, fail: u32) -> Vec<Insn> {
    p.push(Insn::mov_imm(reg::R0, ok as i32));
    p.push(Insn::exit());
    let off = (p.len() - jump - 1) as i16;
    p[jump] = Insn::jgt(reg::R4, reg::R3, off);
    p.push(Insn::mov_imm(reg::R0, fail as i32));
    p.push(Insn::exit());
    p
}

/// `return bpf_redirect(ifindex, 0);`: every frame to interface `ifindex`, as an XDP
/// frame (its `ndo_xdp_xmit`).
pub fn redirect_all(ifindex: u32) -> Vec<Insn> {
    vec![
        Insn::mov_imm(reg::R1, ifindex as i32),
        Insn::mov_imm(reg::R2, 0),
        Insn::new(0x85, 0, 0, 0, 23), // call bpf_redirect
        Insn::exit(),
    ]
}

/// `return action;`
pub fn constant(action: u32) -> Vec<Insn> {
    vec![Insn::mov_imm(reg::R0, action as i32), Insn::exit()]
}

/// The bare XDP_TX reflector: swap the Ethernet addresses and send the frame back out of
/// the interface it came in on (what `xdp-bench tx` does); frames shorter than an
/// Ethernet header are passed.
pub fn mac_swap_tx() -> Vec<Insn> {
    use reg::*;
    let mut p = Vec::new();
    let j = bounds_check(&mut p, 14);
    p.push(Insn::ldx_w(R5, R2, 0));
    p.push(Insn::ldx_h(R6, R2, 4));
    p.push(Insn::ldx_w(R7, R2, 6));
    p.push(Insn::ldx_h(R8, R2, 10));
    p.push(Insn::stx_w(R2, 0, R7));
    p.push(Insn::stx_h(R2, 4, R8));
    p.push(Insn::stx_w(R2, 6, R5));
    p.push(Insn::stx_h(R2, 10, R6));
    finish(p, j, XDP_TX, XDP_PASS)
}

/// A frame generator for live-frame test runs: write `frame` over the start of the packet
/// and XDP_TX it. Pages are recycled without being reset (a frame the responder turned
/// into an answer comes back as that answer), so every run rewrites the whole frame.
pub fn write_frame_tx(frame: &[u8]) -> Vec<Insn> {
    use reg::*;
    let mut p = Vec::new();
    let j = bounds_check(&mut p, frame.len());
    let mut at = 0;
    while at < frame.len() {
        let left = frame.len() - at;
        let off = at as i16;
        if left >= 4 {
            let v = u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
            p.push(Insn::st_w(R2, off, v as i32));
            at += 4;
        } else if left >= 2 {
            p.push(Insn::st_h(
                R2,
                off,
                u16::from_le_bytes([frame[at], frame[at + 1]]) as i32,
            ));
            at += 2;
        } else {
            p.push(Insn::st_b(R2, off, frame[at] as i32));
            at += 1;
        }
    }
    finish(p, j, XDP_TX, XDP_ABORTED)
}

/// `bpf_map_lookup_elem` helper id.
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;

/// Bytes of one flow's entry in the map of [`write_flows_tx`]: three 16-bit fields, as
/// they appear in the frame (network order), and padding.
pub const FLOW_ENTRY_LEN: usize = 8;

/// Where [`write_flows_tx`] writes the three 16-bit fields of a flow's map entry (entry
/// bytes 0..2, 2..4, 4..6) into the frame.
pub type FlowPatch = [i16; 3];

/// A frame generator for many flows: like [`write_frame_tx`] it writes `template` over
/// the start of the packet, then takes the next flow in turn (a counter at key `flows`
/// of the array map `map_fd`, whose keys 0..flows hold one [`FLOW_ENTRY_LEN`]-byte entry
/// per flow) and writes that flow's three 16-bit fields at the offsets `patch`
/// (e.g. the UDP source port, the UDP checksum and the ChannelData channel number), then
/// XDP_TX's it. Frames shorter than the template, or a missing map entry, abort.
///
/// ```text
///  write template; r7 = data
///  key = flows; r0 = lookup(map, &key); if !r0 goto fail; n = *r0; *r0 = n + 1
///  key = n % flows; r0 = lookup(map, &key); if !r0 goto fail
///  *(u16 *)(r7 + patch[i]) = *(u16 *)(r0 + 2 i)   for i in 0..3
///  return XDP_TX;  fail: return XDP_ABORTED
/// ```
pub fn write_flows_tx(template: &[u8], patch: FlowPatch, map_fd: i32, flows: u32) -> Vec<Insn> {
    use reg::*;
    assert!(flows > 0, "at least one flow");
    let mut p = write_frame_tx(template);
    // Drop the `return XDP_TX; fail: return XDP_ABORTED` tail, keep the bounds check.
    p.truncate(p.len() - 4);
    let bounds = p.iter().position(|i| i.0[0] == 0x2d).expect("bounds check");
    let mut to_fail = vec![bounds];
    p.push(Insn::mov(R7, R2));
    // The counter.
    p.push(Insn::st_w(R10, -4, flows as i32));
    p.extend(Insn::ld_map_fd(R1, map_fd));
    p.push(Insn::mov(R2, R10));
    p.push(Insn::add_imm(R2, -4));
    p.push(Insn::call(HELPER_MAP_LOOKUP_ELEM));
    to_fail.push(p.len());
    p.push(Insn::jeq_imm(R0, 0, 0));
    p.push(Insn::ldx_dw(R8, R0, 0));
    p.push(Insn::mov(R1, R8));
    p.push(Insn::add_imm(R1, 1));
    p.push(Insn::stx_dw(R0, 0, R1));
    p.push(Insn::mod_imm(R8, flows as i32));
    // The flow's entry.
    p.push(Insn::stx_w(R10, -8, R8));
    p.extend(Insn::ld_map_fd(R1, map_fd));
    p.push(Insn::mov(R2, R10));
    p.push(Insn::add_imm(R2, -8));
    p.push(Insn::call(HELPER_MAP_LOOKUP_ELEM));
    to_fail.push(p.len());
    p.push(Insn::jeq_imm(R0, 0, 0));
    for (i, at) in patch.iter().enumerate() {
        p.push(Insn::ldx_h(R1, R0, 2 * i as i16));
        p.push(Insn::stx_h(R7, *at, R1));
    }
    p.push(Insn::mov_imm(R0, XDP_TX as i32));
    p.push(Insn::exit());
    let fail = p.len();
    for j in to_fail {
        let off = (fail - j - 1) as i16;
        let mut insn = p[j];
        insn.0[2..4].copy_from_slice(&off.to_le_bytes());
        p[j] = insn;
    }
    p.push(Insn::mov_imm(R0, XDP_ABORTED as i32));
    p.push(Insn::exit());
    p
}

/// A sink that keeps ARP working: XDP_PASS for ARP (and frames shorter than Ethernet),
/// XDP_DROP for everything else. On the peer's veth it takes the relayed frames of a
/// kernel-bypass load while the relay can still resolve the peer's address.
pub fn drop_but_arp() -> Vec<Insn> {
    use reg::*;
    let mut p = Vec::new();
    let j = bounds_check(&mut p, 14);
    p.push(Insn::ldx_h(R5, R2, 12)); // ethertype as loaded (little-endian)
    p.push(Insn::jeq_imm(R5, 0x0608, 2)); // ARP: goto pass
    p.push(Insn::mov_imm(R0, XDP_DROP as i32));
    p.push(Insn::exit());
    // pass: (also the bounds check's target)
    let off = (p.len() - j - 1) as i16;
    p[j] = Insn::jgt(R4, R3, off);
    p.push(Insn::mov_imm(R0, XDP_PASS as i32));
    p.push(Insn::exit());
    p
}

/// The TTL the echo program gives every frame it sends back (a fresh datagram's).
pub const ECHO_TTL: u8 = 64;

/// The far end of a closed-loop load: every IPv4/UDP frame without IP options is sent
/// back as the answer of a peer that echoes (Ethernet, IP and UDP source and destination
/// swapped, which leaves both checksums right; the TTL set to [`ECHO_TTL`], the IP
/// checksum updated for it as RFC 1624 does), XDP_TX. ARP, IPv6 and anything shorter
/// pass. The loop is bounded in count: the program counts what it sends back in the
/// 8-byte value at key 0 of the array map `map_fd`, and drops once that reaches `budget`.
///
/// ```text
///  bounds 42; if ethertype != IPv4 || ip[0] != 0x45 || protocol != UDP goto pass
///  r0 = lookup(map, &0); if !r0 goto pass; if *r0 >= budget goto drop; lock *r0 += 1
///  swap MACs, IP addresses, UDP ports; ttl = ECHO_TTL; fix the IP checksum
///  return XDP_TX;  drop: return XDP_DROP;  pass: return XDP_PASS
/// ```
pub fn udp_echo_tx(map_fd: i32, budget: u32) -> Vec<Insn> {
    use reg::*;
    let budget = i32::try_from(budget).unwrap_or(i32::MAX);
    let mut p = Vec::new();
    let bounds = bounds_check(&mut p, 14 + 20 + 8);
    let mut to_pass = vec![bounds];
    p.push(Insn::mov(R7, R2));
    p.push(Insn::ldx_h(R5, R7, 12)); // ethertype as loaded (little-endian)
    to_pass.push(p.len());
    p.push(Insn::jne_imm(R5, 0x0008, 0));
    p.push(Insn::ldx_b(R5, R7, 14)); // version 4, IHL 5: no options
    to_pass.push(p.len());
    p.push(Insn::jne_imm(R5, 0x45, 0));
    p.push(Insn::ldx_b(R5, R7, 23));
    to_pass.push(p.len());
    p.push(Insn::jne_imm(R5, 17, 0));
    // The budget.
    p.push(Insn::st_w(R10, -4, 0));
    p.extend(Insn::ld_map_fd(R1, map_fd));
    p.push(Insn::mov(R2, R10));
    p.push(Insn::add_imm(R2, -4));
    p.push(Insn::call(HELPER_MAP_LOOKUP_ELEM));
    to_pass.push(p.len());
    p.push(Insn::jeq_imm(R0, 0, 0));
    p.push(Insn::ldx_dw(R1, R0, 0));
    let to_drop = p.len();
    p.push(Insn::jge_imm(R1, budget, 0));
    p.push(Insn::mov_imm(R1, 1));
    p.push(Insn::atomic_add_dw(R0, 0, R1));
    // Ethernet addresses.
    p.push(Insn::ldx_w(R3, R7, 0));
    p.push(Insn::ldx_h(R4, R7, 4));
    p.push(Insn::ldx_w(R5, R7, 6));
    p.push(Insn::ldx_h(R6, R7, 10));
    p.push(Insn::stx_w(R7, 0, R5));
    p.push(Insn::stx_h(R7, 4, R6));
    p.push(Insn::stx_w(R7, 6, R3));
    p.push(Insn::stx_h(R7, 10, R4));
    // IP addresses and UDP ports.
    p.push(Insn::ldx_w(R3, R7, 26));
    p.push(Insn::ldx_w(R4, R7, 30));
    p.push(Insn::stx_w(R7, 26, R4));
    p.push(Insn::stx_w(R7, 30, R3));
    p.push(Insn::ldx_h(R3, R7, 34));
    p.push(Insn::ldx_h(R4, R7, 36));
    p.push(Insn::stx_h(R7, 34, R4));
    p.push(Insn::stx_h(R7, 36, R3));
    // TTL: the 16-bit word TTL|protocol as loaded (little-endian: ttl | protocol << 8),
    // m' = (m & 0xff00) | ECHO_TTL, HC' = ~(~HC + ~m + m'), folded twice. One's
    // complement sums are the same in either byte order.
    p.push(Insn::ldx_h(R3, R7, 22)); // m
    p.push(Insn::ldx_h(R4, R7, 24)); // HC
    p.push(Insn::mov(R5, R3));
    p.push(Insn::and_imm(R5, 0xff00));
    p.push(Insn::or_imm(R5, ECHO_TTL as i32)); // m'
    p.push(Insn::xor_imm(R4, 0xffff));
    p.push(Insn::xor_imm(R3, 0xffff));
    p.push(Insn::add(R4, R3));
    p.push(Insn::add(R4, R5));
    for _ in 0..2 {
        p.push(Insn::mov(R3, R4));
        p.push(Insn::rsh_imm(R3, 16));
        p.push(Insn::and_imm(R4, 0xffff));
        p.push(Insn::add(R4, R3));
    }
    p.push(Insn::xor_imm(R4, 0xffff));
    p.push(Insn::stx_h(R7, 22, R5));
    p.push(Insn::stx_h(R7, 24, R4));
    p.push(Insn::mov_imm(R0, XDP_TX as i32));
    p.push(Insn::exit());
    let patch = |p: &mut Vec<Insn>, j: usize, to: usize| {
        let off = (to - j - 1) as i16;
        p[j].0[2..4].copy_from_slice(&off.to_le_bytes());
    };
    let drop = p.len();
    patch(&mut p, to_drop, drop);
    p.push(Insn::mov_imm(R0, XDP_DROP as i32));
    p.push(Insn::exit());
    let pass = p.len();
    for j in to_pass {
        patch(&mut p, j, pass);
    }
    p.push(Insn::mov_imm(R0, XDP_PASS as i32));
    p.push(Insn::exit());
    p
}

/// The counter map of [`udp_echo_tx`]: an array of one 8-byte value (0).
pub fn echo_counter() -> io::Result<EchoCounter> {
    let map = aya::maps::MapData::create(
        aya_obj::Map::new_from_params(2, 4, 8, 1, 0),
        "xtb_echo",
        None,
    )
    .map_err(|e| io::Error::other(format!("cannot create the echo counter map: {e}")))?;
    let fd = {
        use std::os::fd::AsFd;
        map.fd().as_fd().as_raw_fd()
    };
    let mut a: aya::maps::Array<aya::maps::MapData, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(map)).map_err(io::Error::other)?;
    a.set(0, 0, 0).map_err(io::Error::other)?;
    Ok(EchoCounter { map: a, fd })
}

/// The echo program's counter: what it sent back.
pub struct EchoCounter {
    map: aya::maps::Array<aya::maps::MapData, u64>,
    /// The map's descriptor, for [`udp_echo_tx`] (valid while this lives).
    pub fd: i32,
}

impl EchoCounter {
    pub fn get(&self) -> u64 {
        self.map.get(&0, 0).unwrap_or(0)
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised buffer at least as large as the part of union
    // bpf_attr the command reads, with every pointer inside it pointing to memory that
    // outlives the call (the callers' locals); the kernel writes only within `attr`'s size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr() as *mut libc::c_void,
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Write a u32 at byte offset `at` of an attribute buffer.
fn put32(attr: &mut [u64], at: usize, v: u32) {
    let w = &mut attr[at / 8];
    let shift = (at % 8) * 8;
    *w = (*w & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
}

fn get32(attr: &[u64], at: usize) -> u32 {
    (attr[at / 8] >> ((at % 8) * 8)) as u32
}

/// A loaded program; unloaded when dropped (and no link holds it).
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
}

impl Prog {
    /// Load `insns` as an XDP program named `name` (at most 15 bytes). The verifier's log
    /// is in the error if it refuses the program.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<Prog> {
        let license = b"GPL\0";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u64; 18];
        put32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put32(&mut attr, 4, insns.len() as u32);
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        put32(&mut attr, 24, 1); // log_level
        put32(&mut attr, 28, log.len() as u32);
        attr[4] = log.as_mut_ptr() as u64;
        let mut n = [0u8; 16];
        for (d, s) in n.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        attr[6] = u64::from_le_bytes(n[..8].try_into().expect("8 bytes"));
        attr[7] = u64::from_le_bytes(n[8..].try_into().expect("8 bytes"));
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor we own.
            Ok(fd) => Ok(Prog {
                fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            }),
            Err(e) => {
                let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(
                    e.kind(),
                    format!("BPF_PROG_LOAD {name}: {e}; verifier: {}", text.trim()),
                ))
            }
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// What one BPF_PROG_TEST_RUN call reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Mean kernel-measured time per run, ns (the kernel's own timer around the runs).
    pub duration_ns: u32,
    /// Bytes written to `data_out`.
    pub data_out_len: u32,
}

/// How to run: plain (the frame is run in a buffer, nothing is sent; `out` receives the
/// frame after the last run) or live (`BPF_F_TEST_XDP_LIVE_FRAMES`: every run gets a
/// real frame, and XDP_TX sends it out of interface `ifindex`).
#[derive(Debug)]
pub enum Mode<'a> {
    Plain { out: Option<&'a mut [u8]> },
    Live { ifindex: u32, batch: u32 },
}

/// BPF_PROG_TEST_RUN of XDP program `prog` on `data`, `repeat` times.
pub fn test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    mode: Mode<'_>,
) -> io::Result<TestRun> {
    let mut attr = [0u64; 10];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let mut ctx = [0u32; 6];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 8, data.len() as u32);
    attr[2] = data.as_ptr() as u64;
    put32(&mut attr, 32, repeat);
    match mode {
        Mode::Plain { out } => {
            if let Some(out) = out {
                put32(&mut attr, 12, out.len() as u32);
                attr[3] = out.as_mut_ptr() as u64;
            }
        }
        Mode::Live { ifindex, batch } => {
            ctx[1] = data.len() as u32;
            ctx[3] = ifindex;
            put32(&mut attr, 40, std::mem::size_of_val(&ctx) as u32);
            attr[6] = ctx.as_ptr() as u64;
            put32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
            put32(&mut attr, 72, batch);
        }
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: get32(&attr, 4),
        duration_ns: get32(&attr, 36),
        data_out_len: get32(&attr, 12),
    })
}

/// An XDP attachment through a BPF link: detached when dropped (or when the process ends).
#[derive(Debug)]
pub struct XdpLink {
    _fd: OwnedFd,
}

/// Attach `prog` to interface `ifindex` in native (driver) mode.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<XdpLink> {
    let mut attr = [0u64; 8];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 4, ifindex);
    put32(&mut attr, 8, BPF_XDP);
    put32(&mut attr, 12, XDP_FLAGS_DRV_MODE);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: a successful BPF_LINK_CREATE returns a new file descriptor we own.
    Ok(XdpLink {
        _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
    })
}

/// Index of interface `name` in this network namespace (the AF_XDP ring module's look-up).
pub fn ifindex(name: &str) -> io::Result<u32> {
    xturn_relay::afxdp::ring::IfRef::ifindex(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let r = unsafe { libc::geteuid() } == 0;
        if !r {
            eprintln!("SKIPPED: loading BPF programs needs root");
        }
        r
    }

    #[test]
    fn encoding() {
        // r0 = 3; exit  (as clang emits it)
        assert_eq!(
            constant(XDP_TX),
            vec![
                Insn([0xb7, 0x00, 0, 0, 3, 0, 0, 0]),
                Insn([0x95, 0, 0, 0, 0, 0, 0, 0])
            ]
        );
        // r2 = *(u32 *)(r1 + 4); *(u16 *)(r2 + 10) = r6; if r4 > r3 goto +7
        assert_eq!(Insn::ldx_w(2, 1, 4).0, [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::stx_h(2, 10, 6).0, [0x6b, 0x62, 10, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::jgt(4, 3, 7).0, [0x2d, 0x34, 7, 0, 0, 0, 0, 0]);
        assert_eq!(
            Insn::st_w(2, 4, -2).0,
            [0x62, 0x02, 4, 0, 0xfe, 0xff, 0xff, 0xff]
        );
        // The bounds check jumps to the fail label, past `r0 = ok; exit`.
        let p = mac_swap_tx();
        let j = p.iter().position(|i| i.0[0] == 0x2d).unwrap();
        let off = i16::from_le_bytes([p[j].0[2], p[j].0[3]]) as usize;
        assert_eq!(p[j + 1 + off], Insn::mov_imm(0, XDP_PASS as i32));
        // 70 bytes: 17 words and a half word.
        let w = write_frame_tx(&[7u8; 70]);
        assert_eq!(w.iter().filter(|i| i.0[0] == 0x62).count(), 17);
        assert_eq!(w.iter().filter(|i| i.0[0] == 0x6a).count(), 1);
    }

    /// An IPv4 header checksum computed here, independently of the bench's.
    fn ip_checksum(h: &[u8]) -> u16 {
        let mut sum: u32 = h
            .chunks(2)
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .map(|(_, w)| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn echo_sends_every_udp_frame_back_as_its_answer_within_its_budget() {
        if !root() {
            return;
        }
        use crate::xdp_bench::{ipv4_udp_checksums_ok, udp_frame};
        let src = "198.51.100.1:50000".parse().unwrap();
        let dst = "198.51.100.2:40001".parse().unwrap();
        let payload: Vec<u8> = (0..101u8).collect();
        let base = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, &payload);
        let counter = echo_counter().unwrap();
        let budget = 9;
        let prog = Prog::load("xtb_test_echo", &udp_echo_tx(counter.fd, budget)).unwrap();
        let run = |f: &[u8]| {
            let mut out = vec![0u8; f.len()];
            let t = test_run(
                prog.fd(),
                f,
                1,
                Mode::Plain {
                    out: Some(&mut out),
                },
            )
            .unwrap();
            (t.retval, out)
        };
        // Every TTL (and so every checksum the update starts from) comes back as 64.
        for ttl in [1u8, 2, 3, 63, 64, 65, 128, 200, 255] {
            let mut f = base.clone();
            f[22] = ttl;
            let c = ip_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_udp_checksums_ok(&f));
            let (rv, out) = run(&f);
            assert_eq!(rv, XDP_TX, "ttl {ttl}");
            assert_eq!(&out[0..6], &f[6..12]);
            assert_eq!(&out[6..12], &f[0..6]);
            assert_eq!(&out[26..30], &f[30..34]);
            assert_eq!(&out[30..34], &f[26..30]);
            assert_eq!(&out[34..36], &f[36..38]);
            assert_eq!(&out[36..38], &f[34..36]);
            assert_eq!(out[22], ECHO_TTL);
            assert_eq!(
                u16::from_be_bytes([out[24], out[25]]),
                ip_checksum(&out[14..34]),
                "ttl {ttl}"
            );
            assert!(ipv4_udp_checksums_ok(&out), "ttl {ttl}");
            assert_eq!(
                &out[38..],
                &f[38..],
                "UDP length, checksum and payload kept"
            );
        }
        assert_eq!(counter.get(), 9);
        // ARP, IPv6, IP options, TCP pass (and are not counted).
        let mut arp = base.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut v6 = base.clone();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut opts = base.clone();
        opts[14] = 0x46;
        let mut tcp = base.clone();
        tcp[23] = 6;
        for f in [&arp, &v6, &opts, &tcp] {
            assert_eq!(run(f).0, XDP_PASS);
        }
        assert_eq!(run(&base[..40]).0, XDP_PASS, "shorter than its headers");
        // The budget is spent: UDP is dropped from now on, and no longer counted.
        assert_eq!(run(&base).0, XDP_DROP);
        assert_eq!(counter.get(), 9);
    }

    #[test]
    fn put_and_get() {
        let mut a = [0u64; 2];
        put32(&mut a, 4, 0xdead_beef);
        put32(&mut a, 8, 7);
        assert_eq!(a[0], 0xdead_beef_0000_0000);
        assert_eq!(
            (get32(&a, 4), get32(&a, 8), get32(&a, 0)),
            (0xdead_beef, 7, 0)
        );
    }

    #[test]
    fn programs_run_in_the_kernel() {
        if !root() {
            return;
        }
        let mut frame: Vec<u8> = (0u8..64).collect();
        // The reflector swaps the Ethernet addresses and returns XDP_TX.
        let r = Prog::load("xtb_test_tx", &mac_swap_tx()).unwrap();
        let mut out = vec![0u8; 64];
        let t = test_run(
            r.fd(),
            &frame,
            1,
            Mode::Plain {
                out: Some(&mut out),
            },
        )
        .unwrap();
        assert_eq!((t.retval, t.data_out_len), (XDP_TX, 64));
        assert_eq!(&out[0..6], &frame[6..12]);
        assert_eq!(&out[6..12], &frame[0..6]);
        assert_eq!(&out[12..], &frame[12..]);
        // (Frames shorter than Ethernet cannot be test-run: the kernel refuses them.)
        // The generator writes its frame over whatever the packet held.
        let want: Vec<u8> = (100u8..171).collect();
        let g = Prog::load("xtb_test_gen", &write_frame_tx(&want)).unwrap();
        frame.resize(80, 0xaa);
        let mut out = vec![0u8; 80];
        let t = test_run(
            g.fd(),
            &frame,
            1,
            Mode::Plain {
                out: Some(&mut out),
            },
        )
        .unwrap();
        assert_eq!(t.retval, XDP_TX);
        assert_eq!(&out[..71], &want[..]);
        assert_eq!(&out[71..], &frame[71..]);
        let t = test_run(g.fd(), &frame[..70], 1, Mode::Plain { out: None }).unwrap();
        assert_eq!(t.retval, XDP_ABORTED, "shorter than the frame it writes");
        let d = Prog::load("xtb_test_drop", &constant(XDP_DROP)).unwrap();
        assert_eq!(
            test_run(d.fd(), &frame, 1000, Mode::Plain { out: None })
                .unwrap()
                .retval,
            XDP_DROP
        );
        // The kernel refuses an out-of-bounds store, and says why.
        let bad = vec![
            Insn::ldx_w(2, 1, 0),
            Insn::st_w(2, 0, 1),
            Insn::mov_imm(0, 2),
            Insn::exit(),
        ];
        let e = Prog::load("xtb_test_bad", &bad).unwrap_err().to_string();
        assert!(e.contains("verifier"), "{e}");
        assert!(ifindex("lo").unwrap() == 1 && ifindex("no-such-if").is_err());
    }
}
