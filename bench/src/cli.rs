//! Command-line options of `xturn-bench` and their validation.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "xturn-bench",
    version,
    about = "Load generator, UDP sink and reflector for benchmarking TURN servers (xturn, coturn)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Binding request flood: responses/s; every answer's XOR-MAPPED-ADDRESS and
    /// FINGERPRINT are checked.
    Stun(StunArgs),
    /// ChannelData one way through the relay to a `sink` (loss from the sink's JSON).
    Relay(TrafficArgs),
    /// ChannelData round trips through the relay and an echoing `sink`: latency percentiles.
    Echo(TrafficArgs),
    /// Allocate / refresh / delete cycles per second.
    Churn(ChurnArgs),
    /// Peer side: count (and optionally echo) every datagram, per flow.
    Sink(SinkArgs),
    /// TURN over TCP or TLS: ChannelData one way from stream clients to a UDP peer of this
    /// process; delivered rate and the server threads' CPU per datagram.
    Stream(crate::stream::StreamArgs),
    /// A trivial ChannelData reflector, to measure the generator's own ceiling.
    Reflect(ReflectArgs),
    /// Wait until a STUN server answers a Binding request (for scripts).
    Ping(PingArgs),
    /// Write RESULTS.md and the latency plot from a directory of JSON results.
    Report(ReportArgs),
    /// Compare runs of compare.sh before and after a change (bench/regression.md).
    Regress(RegressArgs),
    /// Hold xturn's XDP_PASS program on IFACE (the far end of a veth the relay answers
    /// into with XDP_TX) until SIGINT/SIGTERM or --duration.
    XdpPass(XdpHoldArgs),
    /// Hold a bare XDP_TX reflector (swaps Ethernet addresses) on IFACE until
    /// SIGINT/SIGTERM or --duration: the yardstick for xturn's XDP responder.
    XdpReflect(XdpHoldArgs),
    /// Kernel-bypass Binding load: live-frame BPF_PROG_RUN XDP_TX's one Binding request
    /// per frame out of --iface (millions per second), a drop program there takes the
    /// answers; reports sent, answered (interface counters) and the relay core's cost.
    XdpLoad(XdpLoadArgs),
    /// Kernel-bypass ChannelData load: sets up allocations and channels from fixed local
    /// ports with TURN, then live-frame BPF_PROG_RUN XDP_TX's ChannelData frames with
    /// exactly those 5-tuples out of --iface, flat out; counts what reaches the far side
    /// (--deliver-iface) and the relay core's cost per relayed frame.
    XdpRelayLoad(XdpRelayLoadArgs),
    /// Hold an XDP program that drops every frame but ARP on IFACE until SIGINT/SIGTERM or
    /// --duration: the peer's veth under `xdp-relay-load`.
    XdpDrop(XdpHoldArgs),
    /// Hold the closed-loop echo on IFACE until SIGINT/SIGTERM or --duration: every
    /// IPv4/UDP frame is sent back with XDP_TX as a peer's answer (addresses and ports
    /// swapped, TTL 64), ARP passes, at most --budget frames (then UDP is dropped): the
    /// peer's veth under `xdp-relay-load --loop`.
    XdpEcho(XdpEchoArgs),
    /// Micro-benchmark: BPF_PROG_TEST_RUN of xturn's responder, a bare XDP_TX reflector
    /// and XDP_PASS on one Binding request (kernel-timed single runs).
    XdpCost(XdpCostArgs),
    /// Spoofed-source flood: unauthenticated Allocate requests as raw frames out of
    /// --iface, each from a new address and port in the --prefix /24s (soak tests).
    Spoof(SpoofArgs),
    /// Bare AF_XDP reflector on IFACE (xturn's ring module): a raw XDP program redirects
    /// every frame but ARP to the AF_XDP socket of its queue, one pinned thread per queue
    /// swaps Ethernet/IP/UDP source and destination and sends it back; counts as JSON.
    XskReflect(XskReflectArgs),
}

/// Options every generator mode has.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// The server (or reflector) address.
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub server: SocketAddr,
    /// Local IP to send from; default: the address the route to the server uses.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Seconds of traffic (after set-up), at most 240 (permissions last 300 s and are
    /// not refreshed).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Target rate in datagrams (or cycles) per second over all threads; 0 = flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pin worker i to CPU LIST[i % len], e.g. `0` or `0,2-3`.
    #[arg(long)]
    pub cpus: Option<String>,
    /// The relay's CPUs: report their busy share (from /proc/stat) and CPU per packet.
    #[arg(long = "relay-cpus")]
    pub relay_cpus: Option<String>,
    /// The server's PID: datagrams dropped for full socket buffers in its network
    /// namespace (UDP RcvbufErrors of /proc/PID/net/snmp) are reported as drops at the relay.
    #[arg(long = "relay-pid")]
    pub relay_pid: Option<u32>,
    /// More of the relay's threads (e.g. its NAPI kthreads), comma-separated PIDs: with
    /// --relay-pid their exact runtime is reported as the relay's attributed CPU.
    #[arg(long = "relay-threads", value_delimiter = ',')]
    pub relay_threads: Vec<u32>,
    /// Print the result as JSON on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file.
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
    /// No progress line each second.
    #[arg(long)]
    pub quiet: bool,
}

impl Common {
    pub fn validate(&self) -> Result<()> {
        self.validate_up_to(240.0)
    }

    /// [`Common::validate`] for modes without permissions to outlive (churn).
    pub fn validate_up_to(&self, max_duration: f64) -> Result<()> {
        if !(self.duration > 0.0 && self.duration <= max_duration) {
            bail!("--duration must be in (0, {max_duration}] seconds");
        }
        if self.threads == 0 || self.threads > 256 {
            bail!("--threads must be 1..=256");
        }
        Ok(())
    }
}

/// Credentials: a static user or a REST API secret.
#[derive(Debug, Args, Clone)]
pub struct Auth {
    /// Static long-term user NAME:PASSWORD.
    #[arg(long, conflicts_with = "secret")]
    pub user: Option<String>,
    /// TURN REST API shared secret (coturn's static-auth-secret): the user name is
    /// `expiry:REST_USER`, the password base64(HMAC-SHA1(secret, user name)).
    #[arg(long)]
    pub secret: Option<String>,
    /// User part of REST API user names.
    #[arg(long = "rest-user", default_value = "bench")]
    pub rest_user: String,
    /// Validity of REST API credentials in seconds from now.
    #[arg(long = "rest-ttl", default_value_t = 86_400)]
    pub rest_ttl: u64,
}

impl Auth {
    pub fn credentials(&self) -> Result<crate::turn::Credentials> {
        match (&self.user, &self.secret) {
            (Some(u), None) => crate::turn::Credentials::parse_user(u),
            (None, Some(s)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .context("clock before 1970")?
                    .as_secs();
                Ok(crate::turn::Credentials::rest(
                    s,
                    &self.rest_user,
                    now + self.rest_ttl,
                ))
            }
            _ => bail!("give --user NAME:PASSWORD or --secret SECRET"),
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct StunArgs {
    #[command(flatten)]
    pub common: Common,
    /// UDP sockets (client 5-tuples) to send from.
    #[arg(long, default_value_t = 32)]
    pub sockets: usize,
}

#[derive(Debug, Args, Clone)]
pub struct TrafficArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub auth: Auth,
    /// Allocations, one UDP socket (5-tuple) each.
    #[arg(long, default_value_t = 64)]
    pub allocations: usize,
    /// The sink's first address; allocation i binds its channel to port PORT + i % --peer-ports.
    #[arg(long)]
    pub peer: Option<SocketAddr>,
    /// Number of sink ports.
    #[arg(long = "peer-ports", default_value_t = 1)]
    pub peer_ports: u16,
    /// ChannelData payload bytes (24..=1468: a datagram fits a 1500-byte MTU).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// The server is `xturn-bench reflect`: no TURN set-up, ChannelData comes straight back.
    #[arg(long)]
    pub reflector: bool,
    /// relay mode: the sink's --json-out file, read after the run for the received counts.
    #[arg(long = "sink-json")]
    pub sink_json: Option<PathBuf>,
    /// Seconds to wait for the sink's JSON file to appear.
    #[arg(long = "sink-wait", default_value_t = 15.0)]
    pub sink_wait: f64,
    /// Milliseconds to keep receiving after the last datagram was sent.
    #[arg(long = "drain-ms", default_value_t = 500)]
    pub drain_ms: u64,
}

impl TrafficArgs {
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        if !(crate::payload::HEADER_LEN..=1468).contains(&self.size) {
            bail!("--size must be 24..=1468 bytes");
        }
        if self.allocations == 0 || self.allocations > 20_000 {
            bail!("--allocations must be 1..=20000");
        }
        if self.peer_ports == 0 {
            bail!("--peer-ports must be at least 1");
        }
        if !self.reflector && self.peer.is_none() {
            bail!("--peer ADDR (the sink) is required unless --reflector");
        }
        if self.drain_ms > 10_000 || !(0.0..=120.0).contains(&self.sink_wait) {
            bail!("--drain-ms at most 10000, --sink-wait at most 120");
        }
        Ok(())
    }
}

#[derive(Debug, Args, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub auth: Auth,
    /// Cycles (allocate -> refresh -> delete, each from a fresh 5-tuple) in flight at once.
    #[arg(long, default_value_t = 16)]
    pub allocations: usize,
    /// Local ports to take in order for the cycles' sockets.
    #[arg(long = "port-range", default_value = "20000-60999")]
    pub port_range: String,
    /// Seconds each allocation lives between its Allocate and its Refresh (0: none), so
    /// that --allocations of them are live at once (soak tests). With it --duration may
    /// be up to 3600 s.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
}

#[derive(Debug, Args, Clone)]
pub struct SinkArgs {
    /// Address to listen on (repeatable); `IP:P1-P2` opens a port range.
    #[arg(long, required = true)]
    pub listen: Vec<String>,
    /// Threads; each gets its own SO_REUSEPORT socket on every listening address.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub cpus: Option<String>,
    /// Send every datagram back to its source, unchanged.
    #[arg(long)]
    pub echo: bool,
    /// Upper bound of the run in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Stop this many seconds after the last datagram (once one arrived); 0 = never.
    #[arg(long = "idle-exit", default_value_t = 0.0)]
    pub idle_exit: f64,
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file (atomically, when the sink stops).
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ReflectArgs {
    /// Address to listen on (repeatable); `IP:P1-P2` opens a port range.
    #[arg(long, required = true)]
    pub listen: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub cpus: Option<String>,
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    #[arg(long = "idle-exit", default_value_t = 0.0)]
    pub idle_exit: f64,
    #[arg(long)]
    pub json: bool,
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PingArgs {
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub server: SocketAddr,
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

#[derive(Debug, Args, Clone)]
pub struct XdpHoldArgs {
    /// Interface (of this network namespace) to attach to, in driver mode.
    pub iface: String,
    /// Detach after this many seconds at the latest (at most 3600).
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
}

#[derive(Debug, Args, Clone)]
pub struct XdpEchoArgs {
    #[command(flatten)]
    pub hold: XdpHoldArgs,
    /// Frames to send back at most (1..=2147483647); after that UDP frames are dropped.
    #[arg(long, default_value_t = 200_000_000)]
    pub budget: u32,
}

#[derive(Debug, Args, Clone)]
pub struct XdpLoadArgs {
    #[command(flatten)]
    pub common: Common,
    /// The client-side interface: frames are sent out of it, answers dropped on it.
    #[arg(long)]
    pub iface: String,
    /// Destination MAC of the requests (the relay-side veth's address).
    #[arg(long = "dst-mac")]
    pub dst_mac: String,
    /// The relay-side interface, in the namespace of --relay-pid: its receive counters
    /// and drops (ring full) are reported.
    #[arg(long = "relay-iface")]
    pub relay_iface: Option<String>,
    /// Frames per live-frame batch (the kernel's batch_size, 1..=256).
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Frames per live-frame run (one BPF_PROG_RUN call). Each run costs tens of
    /// milliseconds of set-up, so long runs are needed to reach millions per second.
    #[arg(long = "frames-per-run", default_value_t = 1 << 22)]
    pub frames_per_run: u32,
}

#[derive(Debug, Args, Clone)]
pub struct XdpRelayLoadArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub auth: Auth,
    /// The client-side interface the frames are sent out of.
    #[arg(long)]
    pub iface: String,
    /// Destination MAC of the frames (the relay-side veth's address).
    #[arg(long = "dst-mac")]
    pub dst_mac: String,
    /// Allocations (5-tuples), from local ports --first-port, --first-port + 1, ...
    #[arg(long, default_value_t = 64)]
    pub allocations: usize,
    /// Local UDP port of the first allocation.
    #[arg(long = "first-port", default_value_t = 30_000)]
    pub first_port: u16,
    /// The peer's first address; allocation i binds channel 0x4000 + i to port
    /// PORT + i % --peer-ports (as `relay` does). Required unless --reflector.
    #[arg(long)]
    pub peer: Option<SocketAddr>,
    #[arg(long = "peer-ports", default_value_t = 1)]
    pub peer_ports: u16,
    /// ChannelData payload bytes (24..=1400).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// No TURN set-up: the same frames go to a reflector on the relay's veth (e.g.
    /// `xsk-reflect`); a drop program on --iface takes what comes back, and what comes
    /// back is what is counted as delivered (unless --deliver-iface says otherwise).
    #[arg(long)]
    pub reflector: bool,
    /// Where live-frame BPF_PROG_RUN is refused: a veth pair NEAR:FAR in this namespace
    /// through which the frames are pumped. They are sent by an AF_XDP socket on NEAR, and
    /// an XDP program on FAR redirects them to --iface, so they reach the relay as XDP
    /// frames (as live frames do) rather than as socket buffers. Without it they are sent
    /// by an AF_XDP socket on --iface itself.
    #[arg(long)]
    pub pump: Option<String>,
    /// The relay-side interface frames arrive on, in the namespace of --relay-pid: its
    /// receive counter (frames handled) and receive drops (ring full) are reported.
    #[arg(long = "relay-iface")]
    pub relay_iface: Option<String>,
    /// The relay-side interface relayed frames leave by (its transmit drops: the far
    /// side's ring full); default --relay-iface.
    #[arg(long = "relay-egress")]
    pub relay_egress: Option<String>,
    /// Where delivered frames are counted (the interface's receive counter): the peer's
    /// veth (with an `xdp-drop` program on it). Default: --iface with --reflector. With
    /// a relay whose peer is on the client's side (one relay interface for both legs,
    /// --relay-egress = --relay-iface): --iface itself, which then counts both directions.
    #[arg(long = "deliver-iface")]
    pub deliver_iface: Option<String>,
    /// A process in --deliver-iface's network namespace (default: this one).
    #[arg(long = "deliver-pid")]
    pub deliver_pid: Option<u32>,
    /// Frames per live-frame batch (the kernel's batch_size, 1..=256).
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Frames per live-frame run (one BPF_PROG_RUN call).
    #[arg(long = "frames-per-run", default_value_t = 1 << 22)]
    pub frames_per_run: u32,
    /// Closed loop, to saturate a relay the generator alone cannot: an echo program on
    /// --iface (`xdp-echo`'s) sends every relayed or reflected frame that comes back
    /// there to the relay again as the client's next datagram, at most BUDGET times;
    /// with a relay, `xdp-echo` on --deliver-iface does the same for the peer. The
    /// generator's frames only fill the loop and make up for what the relay drops;
    /// delivered is then what arrived at --deliver-iface plus what came back to --iface
    /// (once, when they are the same interface: the peer on the client's side, where the
    /// one echo answers for both).
    #[arg(long = "loop", value_name = "BUDGET")]
    pub loop_budget: Option<u32>,
}

#[derive(Debug, Args, Clone)]
pub struct XskReflectArgs {
    /// Interface (of this network namespace): the redirect program is attached to it in
    /// driver mode, the sockets bound to its queues.
    pub iface: String,
    /// Receive queues to serve, e.g. `0` or `0-1` (default: every receive queue).
    #[arg(long)]
    pub queues: Option<String>,
    /// Pin the thread of the i-th queue to CPU LIST[i % len], e.g. `1`.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Reflect for this many seconds (or until SIGINT/SIGTERM), at most 3600.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// UMEM frame size, 2048 or 4096 (default: from the interface MTU).
    #[arg(long = "frame-size")]
    pub frame_size: Option<usize>,
    /// UMEM frames per queue.
    #[arg(long, default_value_t = 4096)]
    pub frames: usize,
    /// Entries of each ring (RX, TX, fill, completion): a power of two.
    #[arg(long = "ring-size", default_value_t = 2048)]
    pub ring_size: u32,
    /// Descriptors per receive/send batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Spin instead of waiting in poll(2) when nothing arrived. Only for a core of its
    /// own: on a core shared with the interface's NAPI thread (copy mode on veth), it
    /// takes the time the kernel needs to deliver frames.
    #[arg(long = "busy-poll")]
    pub busy_poll: bool,
    /// Nice value of the reflecting threads, -20 to 19 (xturn's forwarder threads run at
    /// `--afxdp-nice`, default -10: give the same here for a like-for-like comparison).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub nice: i32,
    /// Bind in copy mode even where zero-copy is available.
    #[arg(long)]
    pub copy: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct XdpCostArgs {
    /// The listening address the responder is configured for (the request goes there).
    #[arg(long, default_value = "192.0.2.1:3478")]
    pub server: SocketAddr,
    /// Kernel-timed runs per program.
    #[arg(long, default_value_t = 200_000)]
    pub runs: u64,
    /// Pin to this CPU (e.g. the relay's core).
    #[arg(long)]
    pub cpus: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(long = "json-out")]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// Directory of `<server>-<test>.json` files written by bench/compare.sh.
    #[arg(long)]
    pub dir: PathBuf,
    /// Markdown file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// SVG latency plot to write (referenced from the Markdown by file name).
    #[arg(long)]
    pub svg: PathBuf,
    /// The command that produced the results (quoted in the report); default: DIR/command.txt.
    #[arg(long)]
    pub command: Option<String>,
    /// Date of the run (quoted in the report); default: DIR/date.txt.
    #[arg(long)]
    pub date: Option<String>,
    /// Free text about the set-up (topology, pinning), quoted in the report; default:
    /// DIR/notes.md if present.
    #[arg(long)]
    pub notes: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RegressArgs {
    /// An OUT_DIR of bench/compare.sh (or its results/) run with the binary before the
    /// change; repeat for each run.
    #[arg(long, required = true)]
    pub before: Vec<PathBuf>,
    /// The same, with the binary after the change.
    #[arg(long, required = true)]
    pub after: Vec<PathBuf>,
    /// What "before" is (quoted in the report), e.g. a commit.
    #[arg(long, default_value = "before")]
    pub before_label: String,
    /// What "after" is.
    #[arg(long, default_value = "after")]
    pub after_label: String,
    /// Markdown file to write (bench/regression.md is included in RESULTS.md).
    #[arg(long)]
    pub out: PathBuf,
}

/// Parse listening addresses: `IP:PORT` or `IP:P1-P2` (at most 1024 ports per range).
pub fn parse_listen(list: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for s in list {
        if let Ok(a) = s.parse::<SocketAddr>() {
            out.push(a);
            continue;
        }
        let (host, ports) = s
            .rsplit_once(':')
            .with_context(|| format!("bad listening address {s:?}"))?;
        let (a, b) = ports
            .split_once('-')
            .with_context(|| format!("bad listening address {s:?}: want IP:PORT or IP:P1-P2"))?;
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("bad IP in {s:?}"))?;
        let a: u16 = a.parse().with_context(|| format!("bad port in {s:?}"))?;
        let b: u16 = b.parse().with_context(|| format!("bad port in {s:?}"))?;
        if a == 0 || a > b || b - a >= 1024 {
            bail!("bad port range in {s:?}");
        }
        out.extend((a..=b).map(|p| SocketAddr::new(ip, p)));
    }
    if out.is_empty() {
        bail!("no listening address");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_ranges() {
        let v = parse_listen(&["198.51.100.2:40000-40002".into(), "127.0.0.1:5".into()]).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2], "198.51.100.2:40002".parse().unwrap());
        assert_eq!(v[3], "127.0.0.1:5".parse().unwrap());
        let v6 = parse_listen(&["[2001:db8::1]:7-8".into()]).unwrap();
        assert_eq!(v6[1], "[2001:db8::1]:8".parse().unwrap());
        assert!(parse_listen(&["1.2.3.4:9-8".into()]).is_err());
        assert!(parse_listen(&["1.2.3.4".into()]).is_err());
        assert!(parse_listen(&["1.2.3.4:1-2000".into()]).is_err());
    }

    #[test]
    fn cli_parses_each_mode() {
        let c = Cli::try_parse_from([
            "xturn-bench",
            "relay",
            "--server",
            "192.0.2.1:3478",
            "--user",
            "bench:bench",
            "--peer",
            "198.51.100.2:40000",
            "--rate",
            "20000",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Relay(a) => {
                a.validate().unwrap();
                assert_eq!(a.common.rate, 20_000);
                assert_eq!(a.auth.credentials().unwrap().username, "bench");
            }
            _ => panic!("wrong subcommand"),
        }
        // --user and --secret exclude each other.
        assert!(
            Cli::try_parse_from(["xturn-bench", "churn", "--user", "a:b", "--secret", "s"])
                .is_err()
        );
        let c = Cli::try_parse_from(["xturn-bench", "churn", "--secret", "s"]).unwrap();
        match c.cmd {
            Cmd::Churn(a) => {
                let cr = a.auth.credentials().unwrap();
                assert!(cr.username.ends_with(":bench"));
                assert_eq!(
                    cr.password,
                    xturn_control::auth::rest_password(b"s", &cr.username)
                );
            }
            _ => panic!("wrong subcommand"),
        }
        // relay without --peer is refused unless against a reflector.
        let c = Cli::try_parse_from(["xturn-bench", "echo", "--user", "a:b"]).unwrap();
        let Cmd::Echo(a) = c.cmd else { panic!() };
        assert!(a.validate().is_err());
        let c =
            Cli::try_parse_from(["xturn-bench", "echo", "--reflector", "--size", "10"]).unwrap();
        let Cmd::Echo(a) = c.cmd else { panic!() };
        assert!(a.validate().is_err(), "size below the payload header");
        // The closed loop: the echo holder's budget, and the load's --loop.
        let c = Cli::try_parse_from(["xturn-bench", "xdp-echo", "pa", "--budget", "5"]).unwrap();
        let Cmd::XdpEcho(a) = c.cmd else { panic!() };
        assert_eq!((a.hold.iface.as_str(), a.budget), ("pa", 5));
        let c = Cli::try_parse_from([
            "xturn-bench",
            "xdp-relay-load",
            "--iface",
            "ca",
            "--dst-mac",
            "02:00:00:00:00:01",
            "--reflector",
            "--loop",
            "1000",
        ])
        .unwrap();
        let Cmd::XdpRelayLoad(a) = c.cmd else {
            panic!()
        };
        assert_eq!(a.loop_budget, Some(1000));
        assert!(Cli::try_parse_from(["xturn-bench", "xdp-echo", "pa", "--budget", "-1"]).is_err());
    }
}

#[derive(Debug, Args, Clone)]
pub struct SpoofArgs {
    /// The server's IPv4 listening address.
    #[arg(long)]
    pub server: SocketAddr,
    /// The interface the frames leave by (the client's veth).
    #[arg(long)]
    pub iface: String,
    /// Destination MAC (the relay-side veth's address).
    #[arg(long = "dst-mac")]
    pub dst_mac: String,
    /// Source prefixes, A.B.C.0/24 (repeatable; documentation ranges only, NETLAB.md).
    #[arg(long)]
    pub prefix: Vec<String>,
    /// Requests to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Requests per second; 0 = flat out.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    #[arg(long)]
    pub json: bool,
}
