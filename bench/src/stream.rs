//! `xturn-bench stream`: TURN over TCP or TLS (RFC 8656 section 3.1) one way, clients to a
//! UDP peer: `--flows` connections each allocate and bind a channel to a UDP socket of
//! this process, then send ChannelData (padded to 4 bytes on the stream) at `--rate` in
//! all for `--duration` seconds; the peer counts what arrives. Reports the delivered rate
//! and, with `--relay-pid`, the server threads' CPU time per delivered datagram (their
//! exact runtime from schedstat).

use crate::cpu;
use crate::turn::Credentials;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xturn_control::client::{self, Answer, TurnClient};
use xturn_control::wire::{attr, channel_data, Message, Method, TransactionId};

#[derive(Debug, clap::Args, Clone)]
pub struct StreamArgs {
    /// The server's TCP or TLS address.
    #[arg(long)]
    pub server: SocketAddr,
    /// TLS, verifying the server against this CA file (PEM).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Static long-term user NAME:PASSWORD.
    #[arg(long)]
    pub user: String,
    /// Connections (one allocation and channel each).
    #[arg(long, default_value_t = 4)]
    pub flows: usize,
    /// Datagrams per second over all connections; 0 = as fast as the streams take them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of traffic, at most 240.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// ChannelData payload bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// The server's PID: its threads' CPU time per delivered datagram.
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// A label for the report (e.g. the server's name).
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long)]
    pub json: bool,
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub label: String,
    pub transport: &'static str,
    pub flows: usize,
    pub size: usize,
    pub offered_rate: u64,
    pub duration_s: f64,
    pub sent: u64,
    /// Everything that arrived, the tail after the clients stopped included.
    pub received: u64,
    /// What arrived while the clients sent, per second.
    pub received_per_s: f64,
    /// Server threads' CPU time per delivered datagram, microseconds.
    pub relay_cpu_us_per_datagram: Option<f64>,
    /// Server threads' CPU, share of one core over the run.
    pub relay_cpu_share: Option<f64>,
}

impl StreamReport {
    pub fn human(&self) -> String {
        format!(
            "{} over {}: {} flows, {} B, offered {}/s: sent {}, received {} ({:.0}/s){}",
            self.label,
            self.transport,
            self.flows,
            self.size,
            if self.offered_rate == 0 {
                "max".to_string()
            } else {
                self.offered_rate.to_string()
            },
            self.sent,
            self.received,
            self.received_per_s,
            match (self.relay_cpu_us_per_datagram, self.relay_cpu_share) {
                (Some(us), Some(share)) => format!(
                    "; relay threads {:.1} % of a core, {us:.2} us per datagram",
                    share * 100.0
                ),
                _ => String::new(),
            }
        ) + "\n"
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A TURN client over one stream.
struct Conn {
    s: Box<dyn Stream>,
    turn: TurnClient,
    buf: Vec<u8>,
}

impl Conn {
    fn read_msg(&mut self) -> Result<Vec<u8>> {
        use xturn_relay::stream::{frame, Frame};
        loop {
            match frame(&self.buf) {
                Frame::Message { len, consumed } => {
                    let m = self.buf[..len].to_vec();
                    self.buf.drain(..consumed);
                    return Ok(m);
                }
                Frame::Bad(why) => bail!("from the server: {why}"),
                Frame::Incomplete => {}
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).context("reading from the server")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn request(
        &mut self,
        method: Method,
        body: &dyn Fn(&mut xturn_control::wire::MessageBuilder),
    ) -> Result<Vec<u8>> {
        for _ in 0..3 {
            let tid = TransactionId(rand::random());
            let req = self.turn.request(method, tid, body);
            self.s.write_all(&req)?;
            let resp = loop {
                let m = self.read_msg()?;
                if Message::new_checked(&m[..]).is_ok_and(|m| m.transaction_id() == tid) {
                    break m;
                }
            };
            match self.turn.answer(&resp) {
                Answer::Retry => continue,
                Answer::Success => return Ok(resp),
                other => bail!("{method:?}: {other:?} ({:?})", client::error_code(&resp)),
            }
        }
        bail!("{method:?}: too many 401/438 rounds")
    }
}

fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("--tls-ca {}", ca.display()))?
    {
        roots.add(c?)?;
    }
    #[allow(deprecated, reason = "the ring provider, as xturn uses")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"stun.turn".to_vec()];
    Ok(Arc::new(cfg))
}

fn connect(
    a: &StreamArgs,
    creds: &Credentials,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Conn> {
    let sock =
        TcpStream::connect(a.server).with_context(|| format!("connecting to {}", a.server))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let s: Box<dyn Stream> = match tls {
        None => Box::new(sock),
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::from(a.server.ip());
            let c = rustls::ClientConnection::new(cfg.clone(), name)?;
            Box::new(rustls::StreamOwned::new(c, sock))
        }
    };
    Ok(Conn {
        s,
        turn: TurnClient::new(&creds.username, &creds.password),
        buf: Vec::new(),
    })
}

pub fn run_stream(a: &StreamArgs) -> Result<StreamReport> {
    if a.flows == 0 || a.flows > 1000 {
        bail!("--flows {}: use 1 to 1000", a.flows);
    }
    if !(0.1..=240.0).contains(&a.duration) {
        bail!("--duration {}: use 0.1 to 240 seconds", a.duration);
    }
    if a.size < 8 || a.size > 1400 {
        bail!("--size {}: use 8 to 1400 bytes", a.size);
    }
    let creds = Credentials::parse_user(&a.user)?;
    let tls = a.tls_ca.as_deref().map(tls_config).transpose()?;
    let peer = UdpSocket::bind(SocketAddr::new(a.server.ip(), 0))?;
    peer.set_read_timeout(Some(Duration::from_millis(100)))?;
    let peer_addr = peer.local_addr()?;
    let mut conns = Vec::new();
    for _ in 0..a.flows {
        let mut c = connect(a, &creds, tls.as_ref())?;
        c.request(Method::Allocate, &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        })?;
        c.request(Method::ChannelBind, &|b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
        })?;
        conns.push(c);
    }
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if peer.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut msg = channel_data::encode(0x4000, &vec![0x5a; a.size]);
    msg.resize((msg.len() + 3) & !3, 0);
    // Ten messages per write: a TURN client over TCP writes what it has.
    let burst: Vec<u8> = msg.iter().copied().cycle().take(msg.len() * 10).collect();
    let per_flow_rate = a.rate as f64 / a.flows as f64;
    let duration = Duration::from_secs_f64(a.duration);
    let cpu0 = a.relay_pid.and_then(cpu::runtime_ns);
    let t0 = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (burst, sent) = (burst.clone(), sent.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut n = 0u64;
                while t0.elapsed() < duration {
                    if per_flow_rate > 0.0 {
                        let due = (t0.elapsed().as_secs_f64() * per_flow_rate) as u64;
                        if n >= due {
                            std::thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                    }
                    c.s.write_all(&burst)?;
                    n += 10;
                    sent.fetch_add(10, Ordering::Relaxed);
                }
                c.s.flush()?;
                Ok(())
            })
        })
        .collect();
    for s in senders {
        s.join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let elapsed = t0.elapsed();
    // The rate is what arrived while the clients sent (a stream's buffers hold more).
    let in_window = received.load(Ordering::Relaxed);
    // What is in flight arrives within half a second (bounded wait).
    let end = Instant::now() + Duration::from_millis(2000);
    let mut last = received.load(Ordering::Relaxed);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let cpu1 = a.relay_pid.and_then(cpu::runtime_ns);
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    let received = received.load(Ordering::Relaxed);
    let sent = sent.load(Ordering::Relaxed);
    let cpu_ns = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(StreamReport {
        label: a.label.clone(),
        transport: if a.tls_ca.is_some() { "tls" } else { "tcp" },
        flows: a.flows,
        size: a.size,
        offered_rate: a.rate,
        duration_s: elapsed.as_secs_f64(),
        sent,
        received,
        received_per_s: in_window as f64 / elapsed.as_secs_f64(),
        relay_cpu_us_per_datagram: cpu_ns
            .filter(|_| received > 0)
            .map(|ns| ns as f64 / 1000.0 / received as f64),
        relay_cpu_share: cpu_ns.map(|ns| ns as f64 / 1e9 / elapsed.as_secs_f64()),
    })
}
