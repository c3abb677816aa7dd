//! # xturn-bench: load generator and benchmark harness for TURN servers
//!
//! This crate owns everything that measures a TURN relay from the outside, over real
//! sockets and real TURN: the `xturn-bench` binary with its modes
//! (`stun`, `relay`, `echo`, `churn`), the peer side (`sink`), the generator's
//! yardstick (`reflect`), and the `report` that turns JSON results into `RESULTS.md` and
//! a latency plot. `bench/compare.sh` runs the same loads against coturn and xturn in
//! network namespaces.
//!
//! Invariants:
//! - every datagram that comes back is checked (STUN: XOR-MAPPED-ADDRESS and FINGERPRINT;
//!   ChannelData: channel, length, every payload byte, a sequence number that was sent)
//!   and anything unexpected is counted as invalid, never trusted and never a panic;
//! - every loop is bounded in time (`--duration`, drain and retransmission limits);
//! - loss is "sent minus distinct valid received", so duplicates never hide loss;
//! - all `unsafe` syscall code is in [`net`] (sockets, packet sockets, clocks) and [`bpf`] (the XDP
//!   benchmark's raw `bpf(2)` calls); the AF_XDP reflector ([`xsk_reflect`]) uses
//!   xturn's own ring module (`xturn_relay::afxdp::ring`), where its `unsafe` lives.
//!
//! The TURN protocol itself (messages, credentials, 401/438 handling) comes from
//! `xturn_control` (its `client` and `wire` modules); this crate adds sockets, pacing,
//! accounting and reporting.

pub mod bpf;
pub mod churn;
pub mod cli;
pub mod cpu;
pub mod engine;
pub mod net;
pub mod pacing;
pub mod payload;
pub mod plot;
pub mod report;
pub mod seq;
pub mod sink;
pub mod spoof;
pub mod stats;
pub mod stream;
pub mod traffic;
pub mod turn;
pub mod workload;
pub mod xdp_bench;
pub mod xdp_relay_load;
pub mod xsk_reflect;
