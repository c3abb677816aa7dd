//! Result accounting shared by every mode: why a datagram was invalid, live counters for
//! the once-a-second progress line, loss and rate arithmetic, latency histograms and their
//! summary, and the JSON report shapes.

use crate::cpu::CpuReport;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a received datagram did not count as a valid answer. Unexpected datagrams are
/// counted here and otherwise ignored; nothing panics on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Truncated by the kernel (larger than a batch slot).
    Truncated,
    /// Neither ChannelData nor a STUN message we expect.
    NotOurs,
    /// ChannelData on another channel than the flow's.
    WrongChannel,
    /// ChannelData length field inconsistent with the datagram.
    BadChannelData,
    /// Payload magic or fill wrong.
    BadPayload,
    /// Payload length differs from what was sent.
    WrongLength,
    /// Payload of another flow.
    WrongFlow,
    /// Sequence number never sent.
    BadSeq,
    /// Sequence number received before.
    Duplicate,
    /// A STUN message that is not a Binding success response (e.g. an error response).
    NotBindingSuccess,
    /// Transaction id not one of ours.
    UnknownTransaction,
    NoMappedAddress,
    /// XOR-MAPPED-ADDRESS differs from the socket's own address.
    WrongMappedAddress,
    NoFingerprint,
    BadFingerprint,
}

impl Invalid {
    pub const ALL: [Invalid; 15] = [
        Invalid::Truncated,
        Invalid::NotOurs,
        Invalid::WrongChannel,
        Invalid::BadChannelData,
        Invalid::BadPayload,
        Invalid::WrongLength,
        Invalid::WrongFlow,
        Invalid::BadSeq,
        Invalid::Duplicate,
        Invalid::NotBindingSuccess,
        Invalid::UnknownTransaction,
        Invalid::NoMappedAddress,
        Invalid::WrongMappedAddress,
        Invalid::NoFingerprint,
        Invalid::BadFingerprint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invalid::Truncated => "truncated",
            Invalid::NotOurs => "not_ours",
            Invalid::WrongChannel => "wrong_channel",
            Invalid::BadChannelData => "bad_channel_data",
            Invalid::BadPayload => "bad_payload",
            Invalid::WrongLength => "wrong_length",
            Invalid::WrongFlow => "wrong_flow",
            Invalid::BadSeq => "bad_seq",
            Invalid::Duplicate => "duplicate",
            Invalid::NotBindingSuccess => "not_binding_success",
            Invalid::UnknownTransaction => "unknown_transaction",
            Invalid::NoMappedAddress => "no_mapped_address",
            Invalid::WrongMappedAddress => "wrong_mapped_address",
            Invalid::NoFingerprint => "no_fingerprint",
            Invalid::BadFingerprint => "bad_fingerprint",
        }
    }
}

/// Invalid datagrams by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidCounts([u64; Invalid::ALL.len()]);

impl InvalidCounts {
    pub fn add(&mut self, why: Invalid) {
        self.0[why as usize] += 1;
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn get(&self, why: Invalid) -> u64 {
        self.0[why as usize]
    }
    pub fn merge(&mut self, o: &InvalidCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }
    /// Non-zero reasons by name (for JSON and the summary).
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        Invalid::ALL
            .iter()
            .filter(|w| self.get(**w) > 0)
            .map(|w| (w.name().to_string(), self.get(*w)))
            .collect()
    }
}

/// Counters one worker thread publishes for the progress line (relaxed atomics; the
/// final figures come from the thread's own result, not from these).
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub invalid: AtomicU64,
}

impl Live {
    pub fn add(&self, sent: u64, received: u64, invalid: u64) {
        if sent > 0 {
            self.sent.fetch_add(sent, Ordering::Relaxed);
        }
        if received > 0 {
            self.received.fetch_add(received, Ordering::Relaxed);
        }
        if invalid > 0 {
            self.invalid.fetch_add(invalid, Ordering::Relaxed);
        }
    }
    pub fn snapshot(all: &[std::sync::Arc<Live>]) -> (u64, u64, u64) {
        all.iter().fold((0, 0, 0), |(s, r, i), l| {
            (
                s + l.sent.load(Ordering::Relaxed),
                r + l.received.load(Ordering::Relaxed),
                i + l.invalid.load(Ordering::Relaxed),
            )
        })
    }
}

/// Loss as a fraction of what was sent: 1 - received/sent, never below 0 (duplicates are
/// removed before this) and None when nothing was sent.
pub fn loss(sent: u64, received: u64) -> Option<f64> {
    if sent == 0 {
        return None;
    }
    Some(sent.saturating_sub(received) as f64 / sent as f64)
}

/// Loss at or before the relay: of `sent`, those neither received at the peer nor dropped
/// after leaving the relay (`dropped_after`). None when nothing was sent.
pub fn relay_loss(sent: u64, received: u64, dropped_after: u64) -> Option<f64> {
    loss(sent, received.saturating_add(dropped_after))
}

/// Rate over an interval; 0 for an empty interval.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Megabits per second of `bytes` over `seconds`.
pub fn mbps(bytes: u64, seconds: f64) -> f64 {
    per_second(bytes, seconds) * 8.0 / 1e6
}

/// A latency histogram in nanoseconds, 1 ns to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Quantiles at which the percentile plot is sampled: 1 - 10^(-k/10) for k = 0..=60
/// (0 % to 99.9999 %), as far as the sample count supports them.
pub fn plot_quantiles(count: u64) -> Vec<f64> {
    (0..=60)
        .map(|k| 1.0 - 10f64.powf(-(k as f64) / 10.0))
        .filter(|q| count > 0 && 1.0 / (1.0 - q) <= count as f64 * (1.0 + 1e-9))
        .collect()
}

/// Latency distribution summary in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (quantile, µs) points of the percentile distribution, for plots.
    pub percentiles: Vec<(f64, f64)>,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            percentiles: plot_quantiles(h.len())
                .into_iter()
                .map(|q| (q, us(h.value_at_quantile(q))))
                .chain(std::iter::once((1.0, us(h.max()))))
                .collect(),
        })
    }
}

/// The parameters a traffic run was given (echoed into its report).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Params {
    pub server: String,
    pub reflector: bool,
    pub flows: usize,
    pub threads: usize,
    pub cpus: Vec<usize>,
    /// Target rate in datagrams per second; 0 = flat out.
    pub rate: u64,
    /// ChannelData payload bytes (0 for STUN).
    pub size: usize,
    pub duration_s: f64,
}

/// Result of a `stun`, `relay` or `echo` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TrafficReport {
    pub mode: String,
    pub params: Params,
    /// Allocations set up (0 for STUN / reflector) and how long that took.
    pub setup_allocations: usize,
    pub setup_seconds: f64,
    /// The measured interval: from the first datagram sent to the last.
    pub elapsed_s: f64,
    pub sent: u64,
    pub sent_pps: f64,
    /// sendmmsg errors (other than a full buffer, which just delays sending).
    pub send_errors: u64,
    /// Datagrams the pacer gave up on because the generator fell behind its schedule.
    pub pacing_skipped: u64,
    /// Distinct valid datagrams counted where `received_basis` says.
    pub received: u64,
    pub received_pps: f64,
    pub received_basis: String,
    pub loss: Option<f64>,
    /// Highest loss of a single flow (relay mode with the sink's per-flow counts).
    pub worst_flow_loss: Option<f64>,
    /// Application payload megabits per second at the receiving end.
    pub payload_mbps: Option<f64>,
    /// Of the loss, datagrams the sink's kernel dropped for full socket buffers (the sink
    /// was too slow, not the relay), from the sink's JSON.
    pub sink_rcvbuf_drops: Option<u64>,
    /// Datagrams dropped for full socket buffers in the relay's network namespace (with
    /// --relay-pid): the server did not read its sockets fast enough.
    pub relay_rcvbuf_drops: Option<u64>,
    /// Transmit drops in the generator's namespace: on veth, datagrams that found the
    /// relay end's receive ring full (the relay core's NAPI did not keep up).
    pub client_if_drops: Option<u64>,
    /// Transmit drops in the relay's namespace (with --relay-pid): on veth, datagrams the
    /// relay sent that found the peer end's receive ring full (the peer side's NAPI, on
    /// the generator's core here, did not keep up).
    pub relay_if_drops: Option<u64>,
    /// Loss at or before the relay: sent minus received at the peer minus the drops on
    /// the way out of the relay (`relay_if_drops`), over sent. What the relay itself lost.
    pub relay_loss: Option<f64>,
    pub duplicates: u64,
    pub reordered: u64,
    pub invalid: u64,
    pub invalid_reasons: BTreeMap<String, u64>,
    pub latency: Option<LatencySummary>,
    /// Relay core busy over the measured interval (with --relay-cpus).
    pub cpu: Option<CpuReport>,
    /// The generator's own CPU time per datagram sent (µs), over the measured interval.
    pub generator_us_per_packet: Option<f64>,
}

impl TrafficReport {
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} against {}{}: {} flows, {} threads, target {}, {:.2} s\n",
            self.mode,
            self.params.server,
            if self.params.reflector {
                " (reflector)"
            } else {
                ""
            },
            self.params.flows,
            self.params.threads,
            if self.params.rate == 0 {
                "flat out".to_string()
            } else {
                format!("{} pps", self.params.rate)
            },
            self.elapsed_s
        );
        if self.setup_allocations > 0 {
            s += &format!(
                "  setup: {} allocations in {:.2} s\n",
                self.setup_allocations, self.setup_seconds
            );
        }
        s += &format!(
            "  sent {} ({:.0} pps), send errors {}, pacing skipped {}\n",
            self.sent, self.sent_pps, self.send_errors, self.pacing_skipped
        );
        s += &format!(
            "  received {} ({:.0} pps, {}), loss {}{}\n",
            self.received,
            self.received_pps,
            self.received_basis,
            fmt_pct(self.loss),
            self.worst_flow_loss
                .map(|w| format!(" (worst flow {})", fmt_pct(Some(w))))
                .unwrap_or_default()
        );
        if let Some(m) = self.payload_mbps {
            s += &format!("  payload {m:.1} Mbit/s\n");
        }
        if let Some(d) = self.relay_rcvbuf_drops {
            s += &format!("  dropped by full socket buffers at the relay: {d}\n");
        }
        if let Some(d) = self.sink_rcvbuf_drops {
            s += &format!("  dropped by full socket buffers at the sink: {d}\n");
        }
        if self.client_if_drops.is_some() || self.relay_if_drops.is_some() {
            let f = |d: Option<u64>| d.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
            s += &format!(
                "  veth drops: entering the relay {}, leaving the relay {}; loss at or before the relay {}\n",
                f(self.client_if_drops),
                f(self.relay_if_drops),
                fmt_pct(self.relay_loss)
            );
        }
        s += &format!(
            "  invalid {} {:?}, duplicates {}, reordered {}\n",
            self.invalid, self.invalid_reasons, self.duplicates, self.reordered
        );
        if let Some(l) = &self.latency {
            s += &format!(
                "  latency µs: min {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ({} samples)\n",
                l.min_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.count
            );
        }
        if let Some(c) = &self.cpu {
            s += &format!(
                "  relay CPUs {:?} busy {:.1} %, {} per packet ({}){}\n",
                c.cpus,
                c.busy * 100.0,
                c.us_per_packet
                    .map(|u| format!("{u:.2} µs"))
                    .unwrap_or_else(|| "n/a".into()),
                c.packet_basis,
                c.attributed_us_per_packet
                    .map(|u| format!("; relay threads alone {u:.2} µs per packet"))
                    .unwrap_or_default()
            );
        }
        if let Some(g) = self.generator_us_per_packet {
            s += &format!("  generator CPU {g:.2} µs per datagram sent\n");
        }
        s
    }
}

pub fn fmt_pct(f: Option<f64>) -> String {
    match f {
        Some(v) => format!("{:.3} %", v * 100.0),
        None => "n/a".to_string(),
    }
}

/// Counts of one flow at the sink, keyed by its source address (the relayed address).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SinkFlow {
    pub source: String,
    /// The flow id carried in the payloads (the generator's allocation index).
    pub flow_id: Option<u32>,
    pub packets: u64,
    pub bytes: u64,
    /// Valid payloads with distinct sequence numbers.
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub invalid: u64,
    pub highest_seq: Option<u64>,
}

/// Result of a `sink` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SinkReport {
    pub mode: String,
    pub listen: Vec<String>,
    pub threads: usize,
    pub echo: bool,
    /// Time from the first datagram to the last.
    pub active_s: f64,
    pub packets: u64,
    pub bytes: u64,
    pub unique: u64,
    pub invalid: u64,
    pub echoed: u64,
    pub pps: f64,
    pub payload_mbps: f64,
    /// Datagrams the kernel dropped for full socket buffers in the sink's network
    /// namespace during the run (UDP RcvbufErrors of /proc/net/snmp): loss that happened
    /// at the sink, not in the relay.
    pub rcvbuf_errors: Option<u64>,
    /// Interface drops in the sink's namespace during the run (/proc/net/dev).
    pub if_drops: Option<u64>,
    pub flows: Vec<SinkFlow>,
}

impl SinkReport {
    pub fn human(&self) -> String {
        format!(
            "{} on {}: {} datagrams ({} valid distinct, {} invalid) in {:.2} s = {:.0} pps, {:.1} Mbit/s payload, {} echoed, {} flows, {} dropped by full socket buffers\n",
            self.mode,
            self.listen.join(" "),
            self.packets,
            self.unique,
            self.invalid,
            self.active_s,
            self.pps,
            self.payload_mbps,
            self.echoed,
            self.flows.len(),
            self.rcvbuf_errors
                .map(|d| d.to_string())
                .unwrap_or_else(|| "unknown".into())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_arithmetic() {
        assert_eq!(loss(0, 0), None);
        assert_eq!(loss(100, 100), Some(0.0));
        assert_eq!(loss(100, 75), Some(0.25));
        // More received than sent (cannot happen after duplicate removal) is no gain.
        assert_eq!(loss(100, 120), Some(0.0));
        assert_eq!(per_second(500, 2.0), 250.0);
        // 285,000 sent, 283,533 at the peer, 1,273 dropped leaving the relay: 194 lost
        // at or before the relay.
        let l = relay_loss(285_000, 283_533, 1_273).unwrap();
        assert!((l - 194.0 / 285_000.0).abs() < 1e-12);
        assert_eq!(relay_loss(0, 0, 0), None);
        assert_eq!(per_second(5, 0.0), 0.0);
        // 1,250,000 bytes in 1 s = 10 Mbit/s.
        assert!((mbps(1_250_000, 1.0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn invalid_counts() {
        let mut a = InvalidCounts::default();
        a.add(Invalid::Duplicate);
        a.add(Invalid::Duplicate);
        a.add(Invalid::NotOurs);
        let mut b = InvalidCounts::default();
        b.add(Invalid::BadFingerprint);
        a.merge(&b);
        assert_eq!(a.total(), 4);
        let m = a.to_map();
        assert_eq!(m.get("duplicate"), Some(&2));
        assert_eq!(m.get("bad_fingerprint"), Some(&1));
        assert_eq!(m.len(), 3);
        // Names are distinct.
        let names: std::collections::HashSet<_> = Invalid::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(names.len(), Invalid::ALL.len());
    }

    #[test]
    fn histogram_summary() {
        let mut h = new_histogram();
        assert!(LatencySummary::from_histogram(&h).is_none());
        // 1..=1000 µs, one sample each.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let s = LatencySummary::from_histogram(&h).unwrap();
        assert_eq!(s.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.001;
        assert!(close(s.min_us, 1.0), "{}", s.min_us);
        assert!(close(s.p50_us, 500.0), "{}", s.p50_us);
        assert!(close(s.p99_us, 990.0), "{}", s.p99_us);
        assert!(close(s.p999_us, 999.0), "{}", s.p999_us);
        assert!(close(s.max_us, 1000.0), "{}", s.max_us);
        assert!(close(s.mean_us, 500.5), "{}", s.mean_us);
        // Plot points: non-decreasing, limited to what 1000 samples support, ending at max.
        let qs: Vec<f64> = s.percentiles.iter().map(|p| p.0).collect();
        assert!(qs.windows(2).all(|w| w[0] < w[1]));
        assert!(qs[qs.len() - 2] <= 0.999 + 1e-12);
        assert_eq!(s.percentiles.last().unwrap().0, 1.0);
        assert!(s.percentiles.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn plot_quantiles_follow_count() {
        assert!(plot_quantiles(0).is_empty());
        assert_eq!(plot_quantiles(1), vec![0.0]);
        let q = plot_quantiles(1_000_000);
        assert_eq!(q.len(), 61);
        assert!((q[60] - 0.999999).abs() < 1e-12);
    }

    #[test]
    fn traffic_report_json_shape() {
        let r = TrafficReport {
            mode: "relay".into(),
            sent: 10,
            received: 9,
            loss: loss(10, 9),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "mode",
            "params",
            "elapsed_s",
            "sent",
            "sent_pps",
            "received",
            "received_pps",
            "received_basis",
            "loss",
            "worst_flow_loss",
            "payload_mbps",
            "invalid",
            "invalid_reasons",
            "latency",
            "cpu",
            "generator_us_per_packet",
        ] {
            assert!(v.get(k).is_some(), "missing key {k}");
        }
        assert_eq!(v["loss"].as_f64(), Some(0.1));
        assert!(v["latency"].is_null());
        for k in ["server", "flows", "threads", "rate", "size", "duration_s"] {
            assert!(v["params"].get(k).is_some(), "missing params.{k}");
        }
        // And it reads back (the report command parses these files).
        let back: TrafficReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn sink_report_json_shape() {
        let r = SinkReport {
            mode: "sink".into(),
            flows: vec![SinkFlow {
                source: "198.51.100.1:50000".into(),
                flow_id: Some(3),
                packets: 5,
                unique: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "packets", "bytes", "unique", "invalid", "echoed", "pps", "flows",
        ] {
            assert!(v.get(k).is_some(), "missing key {k}");
        }
        assert_eq!(v["flows"][0]["source"], "198.51.100.1:50000");
        assert_eq!(v["flows"][0]["flow_id"], 3);
    }
}
