//! `--metrics-listen`: Prometheus metrics at `/metrics` (OpenMetrics text, rendered by the
//! `prometheus-client` crate), liveness at `/healthz` (every thread turning its loop) and
//! readiness at `/readyz` (healthy and not draining), served by `tiny_http` on a thread
//! of its own, never on a TURN port.
//!
//! The supervising loop publishes a [`Snapshot`] with each status report (twice a
//! second); a scrape renders the latest one, so it never takes the server lock. Labels
//! are bounded sets (method, code, reason, path, direction): no user or address labels.

use crate::status::Status;
use crate::xdp;
use anyhow::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xturn_control::dataplane::Counters;
use xturn_control::server::{AuthFailure, ControlStats, Quota};
use xturn_control::stateless::Answered;
use xturn_xdp_common::Counter as XdpCounter;

/// What a scrape shows: the status file's content and the control plane's counts.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: Status,
    pub control: ControlStats,
    pub answered: Answered,
    /// The XDP program's outcome counters, with `--xdp`.
    pub xdp: Option<xdp::Counters>,
    /// TCP/TLS: (connections open, messages to TCP clients dropped for full queues).
    pub tcp: Option<Tcp>,
}

/// The TCP thread's figures (see [`crate::stream::TcpGauges`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tcp {
    pub open: u64,
    pub dropped: u64,
    pub peer_connections: u64,
    pub to_peer_bytes: u64,
    pub to_client_bytes: u64,
}

/// A thread's heartbeat: milliseconds since [`Health::epoch`] at its last loop turn.
pub struct Beat {
    pub name: String,
    pub millis: Arc<AtomicU64>,
    /// Older than this: the thread is not serving.
    pub stale: Duration,
}

/// What `/healthz` and `/readyz` look at.
pub struct Health {
    pub epoch: Instant,
    pub beats: Vec<Beat>,
    /// Draining: not ready.
    pub draining: Arc<AtomicBool>,
}

impl Health {
    /// The threads that did not turn their loop recently, with the milliseconds since
    /// their last turn.
    pub fn late(&self) -> Vec<(&str, u64)> {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.beats
            .iter()
            .filter_map(|b| {
                let age = now.saturating_sub(b.millis.load(Ordering::Relaxed));
                (age > b.stale.as_millis() as u64).then_some((b.name.as_str(), age))
            })
            .collect()
    }

    /// `Ok` when every thread turned its loop recently, else the ones that did not.
    pub fn check(&self) -> Result<(), String> {
        let late = self.late();
        if late.is_empty() {
            return Ok(());
        }
        Err(late
            .iter()
            .map(|(name, age)| format!("{name}: no turn of its loop for {age} ms"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Store the time since `epoch` in `beat`.
pub fn beat(beat: &AtomicU64, epoch: Instant) {
    beat.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(v as i64);
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

/// A labelled counter family from (labels, value) pairs.
fn family(r: &mut Registry, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    r.register(name, help, f);
}

fn per_direction(path: &str, c: &Counters) -> [(Labels, u64, u64); 2] {
    [
        (
            labels(&[("path", path), ("direction", "to_peer")]),
            c.to_peer_packets,
            c.to_peer_bytes,
        ),
        (
            labels(&[("path", path), ("direction", "to_client")]),
            c.to_client_packets,
            c.to_client_bytes,
        ),
    ]
}

/// The OpenMetrics text of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("xturn");
    let c = &s.control;
    gauge(&mut r, "allocations", "Live allocations.", c.allocations);
    gauge(
        &mut r,
        "permissions",
        "Live permissions, all allocations.",
        c.permissions,
    );
    gauge(
        &mut r,
        "channels",
        "Live channel bindings, all allocations.",
        c.channels,
    );
    gauge(
        &mut r,
        "draining",
        "1 while draining (no new allocations).",
        s.status.draining as u64,
    );
    family(
        &mut r,
        "requests",
        "TURN requests and Send indications handed to the control plane, by method.",
        c.requests
            .iter()
            .map(|(m, n)| (labels(&[("method", m)]), *n)),
    );
    family(
        &mut r,
        "responses",
        "Responses sent by the control plane, by method and code (200: success).",
        c.responses
            .iter()
            .map(|((m, code), n)| (labels(&[("method", m), ("code", &code.to_string())]), *n)),
    );
    let a = s.answered;
    let mut stateless = vec![
        (
            labels(&[("path", "sockets"), ("kind", "binding")]),
            a.binding,
        ),
        (
            labels(&[("path", "sockets"), ("kind", "binding_unknown_attribute")]),
            a.binding_unknown_attribute,
        ),
        (
            labels(&[("path", "sockets"), ("kind", "unknown_method")]),
            a.unknown_method,
        ),
        (
            labels(&[("path", "sockets"), ("kind", "classic_binding")]),
            a.classic_binding,
        ),
    ];
    if let Some(x) = &s.xdp {
        let n = x.0[XdpCounter::TxBindingIpv4 as usize] + x.0[XdpCounter::TxBindingIpv6 as usize];
        stateless.push((labels(&[("path", "xdp"), ("kind", "binding")]), n));
    }
    family(
        &mut r,
        "stateless_answers",
        "Answers sent without server state (Binding, 420, 400), by path: the socket \
         workers or the XDP responder in the driver.",
        stateless,
    );
    family(
        &mut r,
        "auth_failures",
        "Requests that failed authentication, by reason (no_credentials is every \
         client's first, unauthenticated try).",
        AuthFailure::ALL.iter().map(|f| {
            (
                labels(&[("reason", f.name())]),
                c.auth_failures.get(f).copied().unwrap_or(0),
            )
        }),
    );
    counter(
        &mut r,
        "unauthorized_shed",
        "401 answers not sent: over the per-prefix or server-wide budget.",
        c.unauth_shed,
    );
    family(
        &mut r,
        "quota_rejections",
        "Requests refused by a quota, by quota.",
        Quota::ALL.iter().map(|q| {
            (
                labels(&[("quota", q.name())]),
                c.quota_rejections.get(q).copied().unwrap_or(0),
            )
        }),
    );
    let rows: Vec<_> = per_direction("sockets", &s.status.relayed.sockets)
        .into_iter()
        .chain(per_direction("afxdp", &s.status.relayed.afxdp))
        .chain(per_direction("xdp", &s.status.relayed.xdp))
        .collect();
    family(
        &mut r,
        "relayed_packets",
        "Datagrams relayed, by path and direction.",
        rows.iter().map(|(l, p, _)| (l.clone(), *p)),
    );
    family(
        &mut r,
        "relayed_bytes",
        "Payload bytes relayed, by path and direction.",
        rows.iter().map(|(l, _, b)| (l.clone(), *b)),
    );
    let d = &s.status.dropped;
    family(
        &mut r,
        "dropped",
        "Datagrams dropped on purpose, by reason.",
        [
            ("not_stun", d.not_stun),
            ("malformed", d.malformed),
            ("unwanted", d.unwanted),
            ("over_answer_budget", d.over_answer_budget),
            ("over_bandwidth", d.over_bandwidth_packets),
        ]
        .map(|(k, v)| (labels(&[("reason", k)]), v)),
    );
    let mut fallbacks: Vec<(Labels, u64)> = Vec::new();
    if let Some(x) = &s.xdp {
        use XdpCounter::*;
        for k in [
            PassNoXskChannel,
            PassNoXskPeer,
            PassNoNextHop,
            PassNoMetadata,
            PassTooBig,
            PassPermissionNotMirrored,
            PassSteeringDisabled,
            PassNoXdpTx,
        ] {
            fallbacks.push((labels(&[("reason", k.name())]), x.0[k as usize]));
        }
        family(
            &mut r,
            "xdp_frames",
            "Frames the XDP program saw, by outcome (each frame counts once).",
            XdpCounter::ALL
                .iter()
                .map(|k| (labels(&[("outcome", k.name())]), x.0[*k as usize])),
        );
    }
    let (mut mtu, mut tx_full, mut other) = (0, 0, 0);
    for t in &s.status.threads {
        let f = &t.forwarder;
        mtu += f.slow_path_mtu;
        tx_full += f.slow_path_tx_full;
        other += f
            .slow_path
            .saturating_sub(f.slow_path_mtu + f.slow_path_tx_full);
    }
    if !s.status.threads.is_empty() {
        fallbacks.push((labels(&[("reason", "forwarder_mtu")]), mtu));
        fallbacks.push((labels(&[("reason", "forwarder_tx_full")]), tx_full));
        fallbacks.push((labels(&[("reason", "forwarder_slow_path")]), other));
        gauge(
            &mut r,
            "afxdp_threads_alive",
            "AF_XDP forwarder threads serving their queues.",
            s.status.threads.iter().filter(|t| t.alive).count() as u64,
        );
    }
    if let Some(t) = s.tcp {
        gauge(
            &mut r,
            "tcp_connections",
            "TCP and TLS connections open (clients', and TCP allocations' to and from peers).",
            t.open,
        );
        counter(
            &mut r,
            "tcp_dropped",
            "Messages to TCP and TLS clients dropped because their queue was full.",
            t.dropped,
        );
        gauge(
            &mut r,
            "tcp_peer_connections",
            "RFC 6062 TCP allocations' connections to and from peers.",
            t.peer_connections,
        );
        family(
            &mut r,
            "tcp_relayed_bytes",
            "Bytes through joined RFC 6062 connections, by direction.",
            [
                (labels(&[("direction", "to_peer")]), t.to_peer_bytes),
                (labels(&[("direction", "to_client")]), t.to_client_bytes),
            ],
        );
    }
    if !fallbacks.is_empty() {
        family(
            &mut r,
            "fastpath_fallbacks",
            "Traffic the fast path handed to the kernel sockets, by reason.",
            fallbacks,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// What the HTTP thread serves from.
pub struct Endpoint {
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub health: Arc<Health>,
}

/// Bind `addr` (before privileges are dropped).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot listen on --metrics-listen {addr}"))
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub fn spawn(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("metrics listener {addr}: {e}"))?;
    tracing::info!("metrics at http://{addr}/metrics, health at /healthz and /readyz");
    Ok(std::thread::Builder::new()
        .name("xturn-metrics".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(req)) => respond(req, &endpoint),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!("metrics: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?)
}

fn respond(req: tiny_http::Request, e: &Endpoint) {
    use tiny_http::{Header, Method, Response};
    let text = |s: &str| Header::from_bytes("Content-Type", s).expect("a valid header");
    let plain = "text/plain; charset=utf-8";
    let (code, body, kind) = if req.method() != &Method::Get && req.method() != &Method::Head {
        (405, "GET only\n".to_string(), plain)
    } else {
        match req.url().split('?').next().unwrap_or("") {
            "/metrics" => {
                let mut s = e.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // The snapshot is refreshed once per status period; the drain flag is
                // set the moment the signal is taken, and /readyz reads it directly,
                // so the gauge reads it too (a scrape never disagrees with /readyz).
                s.status.draining |= e.health.draining.load(Ordering::Relaxed);
                (
                    200,
                    render(&s),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            }
            "/healthz" => match e.health.check() {
                Ok(()) => (200, "ok\n".into(), plain),
                Err(why) => (503, format!("{why}\n"), plain),
            },
            "/readyz" => match e.health.check() {
                Err(why) => (503, format!("{why}\n"), plain),
                Ok(()) if e.health.draining.load(Ordering::Relaxed) => {
                    (503, "draining\n".into(), plain)
                }
                Ok(()) => (200, "ready\n".into(), plain),
            },
            _ => (404, "/metrics, /healthz or /readyz\n".into(), plain),
        }
    };
    let r = Response::from_string(body)
        .with_status_code(code)
        .with_header(text(kind));
    if let Err(err) = req.respond(r) {
        tracing::debug!("metrics response not sent: {err}");
    }
}
