//! Command line and TOML configuration. Option names follow coturn's `turnserver` where
//! both servers have the option, so an operator's habits (and most of a turnserver.conf's
//! keys) carry over. The TOML file uses the same names as keys; the command line wins.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use xturn_control::auth::Credentials;
use xturn_control::filter::{IpRange, Nat64Prefix, PeerFilter};
use xturn_control::server::MAX_CONFIG_LIFETIME;

use xturn_xdp_common::capacity;

/// Largest size accepted for an XDP map (entries): far beyond any quota, small enough that
/// a typo does not ask the kernel for gigabytes.
const MAX_XDP_MAP_ENTRIES: u32 = 1 << 24;

/// `--external-ip PUBLIC[/PRIVATE]` values: at most one per family, PRIVATE (by default the
/// --relay-ip of PUBLIC's family) the relay address of that family.
fn external_ips(
    values: &[String],
    relay_ipv4: Option<IpAddr>,
    relay_ipv6: Option<IpAddr>,
) -> Result<xturn_control::ExternalIps> {
    let mut pairs: Vec<(IpAddr, IpAddr)> = Vec::new();
    for v in values {
        let (public, private) = match v.split_once('/') {
            Some((p, q)) => (p, Some(q)),
            None => (v.as_str(), None),
        };
        let public: IpAddr = public
            .trim()
            .parse()
            .with_context(|| format!("--external-ip {v:?}: {public:?} is not an IP address"))?;
        let relay = if public.is_ipv4() {
            relay_ipv4
        } else {
            relay_ipv6
        };
        let Some(relay) = relay else {
            bail!(
                "--external-ip {v}: no --relay-ip of its family to stand for (give one, e.g. the \
                 private address)"
            );
        };
        let private = match private {
            Some(q) => q
                .trim()
                .parse::<IpAddr>()
                .with_context(|| format!("--external-ip {v:?}: {q:?} is not an IP address"))?,
            None => relay,
        };
        if private.is_ipv4() != public.is_ipv4() {
            bail!("--external-ip {v}: PUBLIC and PRIVATE are of different families");
        }
        if private != relay {
            bail!(
                "--external-ip {v}: {private} is not the --relay-ip of its family ({relay}); \
                 xturn relays from one address per family"
            );
        }
        if public.is_unspecified() || public.is_multicast() || public == private {
            bail!("--external-ip {v}: {public} cannot be a public address of {private}");
        }
        if pairs.iter().any(|(p, _)| p.is_ipv4() == public.is_ipv4()) {
            bail!("--external-ip given twice for one address family ({v})");
        }
        pairs.push((public, private));
    }
    Ok(xturn_control::ExternalIps::new(pairs))
}

/// TLS listeners and the files their certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Every listening IP at every `--tls-listening-port`.
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub pkey: PathBuf,
}

/// Largest --total-quota: a million sockets is far beyond one host's port ranges.
const MAX_TOTAL_QUOTA: u32 = 1_000_000;

#[derive(Debug, Parser, Default, Clone)]
#[command(
    name = "xturn",
    version,
    about = "xturn: a STUN/TURN relay (RFC 8489/8656)"
)]
pub struct Args {
    /// TOML configuration file; keys are the long option names below (e.g. `realm = "x"`,
    /// `user = ["alice:secret"]`). Command-line options override it.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeatable). Default 127.0.0.1.
    #[arg(short = 'L', long = "listening-ip")]
    pub listening_ip: Vec<IpAddr>,
    /// UDP port to listen on. Default 3478.
    #[arg(short = 'p', long = "listening-port")]
    pub listening_port: Option<u16>,
    /// Relayed address for allocations (one IPv4 and/or one IPv6). Default: the first
    /// listening address.
    #[arg(short = 'E', long = "relay-ip")]
    pub relay_ip: Vec<IpAddr>,
    /// Behind a 1:1 NAT (cloud VMs, Kubernetes nodes): PUBLIC[/PRIVATE], one per address
    /// family (coturn's syntax). Relayed addresses are advertised with PUBLIC; sockets and
    /// the fast path use PRIVATE, the --relay-ip of that family (the default).
    #[arg(short = 'X', long = "external-ip")]
    pub external_ip: Vec<String>,
    /// Authentication realm. Default "xturn".
    #[arg(short = 'r', long)]
    pub realm: Option<String>,
    /// Static long-term user NAME:PASSWORD (repeatable). Works together with REST secrets.
    #[arg(short = 'u', long = "user")]
    pub user: Vec<String>,
    /// Accept TURN REST API credentials (user name "expiry:user", password
    /// base64(HMAC-SHA1(secret, user name))) made with a --static-auth-secret.
    #[arg(long = "use-auth-secret")]
    pub use_auth_secret: bool,
    /// Shared secret for the TURN REST API (repeatable: several are valid at once, for rotation).
    #[arg(long = "static-auth-secret")]
    pub static_auth_secret: Vec<String>,
    /// Allocations per user name (486 beyond it; 0 = no per-user limit). Default 1000.
    #[arg(long = "user-quota")]
    pub user_quota: Option<u32>,
    /// Allocations per client IPv4 address or IPv6 /64 (486 beyond it; 0 = no
    /// per-address limit). Default 1000.
    #[arg(long = "ip-quota")]
    pub ip_quota: Option<u32>,
    /// Allocations in total (486 beyond it), 1 to 1000000. Each holds a socket: the
    /// open-file limit is raised to fit at start. Default 16384.
    #[arg(long = "total-quota")]
    pub total_quota: Option<u32>,
    /// Permissions per allocation (508 beyond it), 1 to 65536. Default 128.
    #[arg(long = "permission-quota")]
    pub permission_quota: Option<u32>,
    /// Channels per allocation (508 beyond it), 1 to 32767. Default 128.
    #[arg(long = "channel-quota")]
    pub channel_quota: Option<u32>,
    /// Lowest relay port. Default 49152.
    #[arg(long = "min-port")]
    pub min_port: Option<u16>,
    /// Highest relay port. Default 65535.
    #[arg(long = "max-port")]
    pub max_port: Option<u16>,
    /// Peer addresses to refuse (CIDR, address, or A-B range; repeatable).
    #[arg(long = "denied-peer-ip")]
    pub denied_peer_ip: Vec<String>,
    /// Peer addresses to allow even if denied by default or by --denied-peer-ip (repeatable).
    #[arg(long = "allowed-peer-ip")]
    pub allowed_peer_ip: Vec<String>,
    /// Allow peers on loopback addresses (127.0.0.0/8, ::1), as coturn's option of that name.
    #[arg(long = "allow-loopback-peers")]
    pub allow_loopback_peers: bool,
    /// Unauthenticated (401) answers per second, server-wide; beyond it requests without
    /// credentials are dropped (they cost the server nothing then). 0 = unlimited.
    /// Default 20000: every new client needs one.
    #[arg(long = "unauth-rate")]
    pub unauth_rate: Option<u32>,
    /// Unauthenticated (401) answers per second per source prefix (IPv4 /24, IPv6 /56),
    /// so that a flood from one range cannot use up --unauth-rate for everyone. 0 =
    /// unlimited. Default 1000.
    #[arg(long = "unauth-rate-per-prefix")]
    pub unauth_rate_per_prefix: Option<u32>,
    /// Binding responses and 400/420 answers to requests needing no state, per second per
    /// source prefix (they reflect traffic at spoofed sources). 0 = unlimited. Default
    /// 20000. The XDP responder (--xdp) does not apply it.
    #[arg(long = "binding-rate-per-prefix")]
    pub binding_rate_per_prefix: Option<u32>,
    /// A network-specific NAT64 prefix in use here (RFC 6052: length 32, 40, 48, 56, 64 or
    /// 96; repeatable): peers under it are judged by the IPv4 address they carry. The
    /// well-known 64:ff9b::/96 is always decoded.
    #[arg(long = "nat64-prefix")]
    pub nat64_prefix: Vec<String>,
    /// Seconds a nonce stays valid. Default 600.
    #[arg(long = "stale-nonce")]
    pub stale_nonce: Option<u64>,
    /// Default allocation lifetime in seconds. Default 600.
    #[arg(long = "default-allocate-lifetime")]
    pub default_allocate_lifetime: Option<u64>,
    /// Maximum allocation lifetime in seconds. Default 3600.
    #[arg(long = "max-allocate-lifetime")]
    pub max_allocate_lifetime: Option<u64>,
    /// Permission lifetime in seconds. Default 300 (RFC 8656).
    #[arg(long = "permission-lifetime")]
    pub permission_lifetime: Option<u64>,
    /// Channel lifetime in seconds. Default 600 (RFC 8656).
    #[arg(long = "channel-lifetime")]
    pub channel_lifetime: Option<u64>,
    /// Accept channel numbers 0x4000-0x7FFE (RFC 5766, as coturn does) instead of
    /// RFC 8656's 0x4000-0x4FFF. Needed by older clients such as coturn's turnutils_uclient.
    #[arg(long = "rfc5766-channels")]
    pub rfc5766_channels: bool,
    /// Worker threads (one SO_REUSEPORT socket each, pinned to a core). Default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Bytes per second each way an allocation may relay (coturn's max-bps: bytes, despite
    /// the name); beyond it datagrams are dropped and counted, on every path. 0 = no
    /// limit (the default).
    #[arg(long = "max-bps")]
    pub max_bps: Option<u64>,
    /// Bytes per second each way all of one user's allocations may relay together. 0 = no
    /// limit (the default).
    #[arg(long = "user-max-bps")]
    pub user_max_bps: Option<u64>,
    /// User to run as once sockets are bound and XDP is attached (a name or a number; coturn's
    /// option). Default when started as root: nobody. `root` keeps root (not advised).
    #[arg(long = "proc-user")]
    pub proc_user: Option<String>,
    /// Group to run as (a name or a number). Default: the --proc-user's primary group.
    #[arg(long = "proc-group")]
    pub proc_group: Option<String>,
    /// Group that may read the status file (/run/xturn/PID/status.json, mode 0640: it names
    /// every client's address) and use the admin socket beside it (xturn sessions, xturn
    /// kill). Default: the group xturn runs as.
    #[arg(long = "status-group")]
    pub status_group: Option<String>,
    /// Log level: error, warn, info, debug, trace. Default info.
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// Attach the XDP program to these interfaces (comma-separated or repeated): STUN
    /// Binding requests to the listening addresses are answered in the driver, and TURN
    /// data of live channels and permissions is relayed by AF_XDP forwarder threads
    /// (one socket per receive queue); everything else still reaches the socket path.
    /// Needs root, and IP forwarding on these interfaces for the AF_XDP path. Default: off.
    #[arg(long = "xdp", value_delimiter = ',')]
    pub xdp: Vec<String>,
    /// With --xdp: no AF_XDP forwarder, TURN data takes the socket path (STUN Binding is
    /// still answered in the driver).
    #[arg(long = "no-afxdp")]
    pub no_afxdp: bool,
    /// With --xdp: what relays TURN data. afxdp (default): the XDP program steers it to
    /// the AF_XDP forwarder threads. xdp: the XDP program relays in the driver what its
    /// maps fully describe (ChannelData on a live channel <-> the peer's UDP, XDP_TX or a
    /// redirect to another attached interface) and steers the rest to AF_XDP (or, with
    /// --no-afxdp, passes it to the sockets). --max-bps and --user-max-bps hold there too:
    /// the program takes from the same buckets as user space.
    #[arg(long = "fast-path")]
    pub fast_path: Option<String>,
    /// Nice value of the AF_XDP forwarder threads, -20 to 19. Below 0 (the default, -10)
    /// a forwarder runs before the NAPI poll that feeds it on a shared core, so under
    /// overload the core drains the frames it already received instead of receiving more
    /// that the full socket would drop (receive livelock). 0 shares the core equally.
    #[arg(long = "afxdp-nice", allow_negative_numbers = true)]
    pub afxdp_nice: Option<i32>,
    /// With --xdp: how to attach the XDP program. auto (default): native (driver) mode
    /// where the driver has it, else generic; native: driver mode or fail; generic: SKB
    /// mode on every interface (slower; works on any driver).
    #[arg(long = "xdp-mode")]
    pub xdp_mode: Option<String>,
    /// With --xdp: entries of the XDP program's allocation map. Allocations beyond it are
    /// relayed by the socket path. Default 16384.
    #[arg(long = "xdp-max-allocations")]
    pub xdp_max_allocations: Option<u32>,
    /// With --xdp: entries of the permission map, shared by all allocations. Beyond it, the
    /// peer data of the allocations concerned is checked by the socket path. Default 65536.
    #[arg(long = "xdp-max-permissions")]
    pub xdp_max_permissions: Option<u32>,
    /// With --xdp: entries of the channel map. Channels beyond it are relayed by the
    /// socket path. Default 65536.
    #[arg(long = "xdp-max-channels")]
    pub xdp_max_channels: Option<u32>,
    /// Another TURN server, IP or IP:PORT (port 3478 if not given; repeatable), that new
    /// allocations are sent to with 300 Try Alternate (RFC 8489 ALTERNATE-SERVER) while
    /// this server drains (SIGUSR1, `xturn drain`) or holds --alternate-above allocations.
    /// One of the client's address family is named, in turn. Without one a draining
    /// server answers new allocations with 508.
    #[arg(long = "alternate-server", value_parser = parse_alternate)]
    pub alternate_server: Vec<SocketAddr>,
    /// With --alternate-server: from this many allocations on, new ones are sent to an
    /// alternate server (0 = only while draining). Default 0.
    #[arg(long = "alternate-above")]
    pub alternate_above: Option<u32>,
    /// How long a drain (SIGUSR1, `xturn drain`) waits for the last allocation to end
    /// before the server exits anyway, in seconds. Default 3600.
    #[arg(long = "drain-timeout")]
    pub drain_timeout: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, and /healthz and /readyz
    /// (off by default; never on a TURN listening port). Peers cannot reach it through
    /// the relay: it is one of the server's own endpoints.
    #[arg(long = "metrics-listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not listen on TCP (TURN over TCP is served on the listening addresses and port
    /// by default, RFC 8656 section 3.1).
    #[arg(long = "no-tcp")]
    pub no_tcp: bool,
    /// TCP connections open at once, in total (beyond it new ones are closed). Default 4096.
    #[arg(long = "max-tcp-connections")]
    pub max_tcp_connections: Option<u32>,
    /// TCP connections open at once from one IP address (0 = no per-address limit).
    /// Default 64.
    #[arg(long = "max-tcp-connections-per-ip")]
    pub max_tcp_connections_per_ip: Option<u32>,
    /// TLS certificate chain, PEM (leaf first). With --pkey, TURN over TLS is served on the
    /// --tls-listening-port(s) of the listening addresses.
    #[arg(long = "cert")]
    pub cert: Option<PathBuf>,
    /// TLS private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "pkey")]
    pub pkey: Option<PathBuf>,
    /// TLS port (repeatable, e.g. 5349 and 443). Default 5349.
    #[arg(long = "tls-listening-port")]
    pub tls_listening_port: Vec<u16>,
    /// No TLS listener even with --cert.
    #[arg(long = "no-tls")]
    pub no_tls: bool,
    /// A second address of the host, of the family of a listening address: RFC 5780 NAT
    /// behaviour discovery (OTHER-ADDRESS, RESPONSE-ORIGIN, CHANGE-REQUEST answered from
    /// the other address and/or port). The server also listens there.
    #[arg(long = "alt-listening-ip")]
    pub alt_listening_ip: Option<IpAddr>,
    /// With --alt-listening-ip: the second port. Default: the listening port + 1.
    #[arg(long = "alt-listening-port")]
    pub alt_listening_port: Option<u16>,
}

/// `--alternate-server`: IP:PORT, or IP for port 3478.
pub fn parse_alternate(s: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 3478)),
        Err(_) => Err(format!(
            "{s:?} is not IP:PORT or IP (e.g. 203.0.113.7:3478, [2001:db8::7]:3478)"
        )),
    }
}

/// The same keys in a TOML file.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub listening_ip: Option<Vec<IpAddr>>,
    pub listening_port: Option<u16>,
    pub relay_ip: Option<Vec<IpAddr>>,
    pub external_ip: Option<Vec<String>>,
    pub realm: Option<String>,
    pub user: Option<Vec<String>>,
    pub use_auth_secret: Option<bool>,
    pub static_auth_secret: Option<Vec<String>>,
    pub user_quota: Option<u32>,
    pub ip_quota: Option<u32>,
    pub total_quota: Option<u32>,
    pub permission_quota: Option<u32>,
    pub channel_quota: Option<u32>,
    pub min_port: Option<u16>,
    pub max_port: Option<u16>,
    pub denied_peer_ip: Option<Vec<String>>,
    pub allowed_peer_ip: Option<Vec<String>>,
    pub allow_loopback_peers: Option<bool>,
    pub unauth_rate: Option<u32>,
    pub unauth_rate_per_prefix: Option<u32>,
    pub binding_rate_per_prefix: Option<u32>,
    pub nat64_prefix: Option<Vec<String>>,
    pub stale_nonce: Option<u64>,
    pub default_allocate_lifetime: Option<u64>,
    pub max_allocate_lifetime: Option<u64>,
    pub permission_lifetime: Option<u64>,
    pub channel_lifetime: Option<u64>,
    pub rfc5766_channels: Option<bool>,
    pub threads: Option<usize>,
    pub max_bps: Option<u64>,
    pub user_max_bps: Option<u64>,
    pub proc_user: Option<String>,
    pub proc_group: Option<String>,
    pub status_group: Option<String>,
    pub log_level: Option<String>,
    pub xdp: Option<Vec<String>>,
    pub afxdp: Option<bool>,
    pub fast_path: Option<String>,
    pub afxdp_nice: Option<i32>,
    pub xdp_mode: Option<String>,
    pub xdp_max_allocations: Option<u32>,
    pub xdp_max_permissions: Option<u32>,
    pub xdp_max_channels: Option<u32>,
    pub alternate_server: Option<Vec<String>>,
    pub alternate_above: Option<u32>,
    pub drain_timeout: Option<u64>,
    pub metrics_listen: Option<String>,
    pub no_tcp: Option<bool>,
    pub max_tcp_connections: Option<u32>,
    pub max_tcp_connections_per_ip: Option<u32>,
    pub cert: Option<PathBuf>,
    pub pkey: Option<PathBuf>,
    pub tls_listening_port: Option<Vec<u16>>,
    pub no_tls: Option<bool>,
    pub alt_listening_ip: Option<IpAddr>,
    pub alt_listening_port: Option<u16>,
}

/// Everything the running server needs, validated.
#[derive(Debug)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    pub relay_ipv4: Option<IpAddr>,
    pub relay_ipv6: Option<IpAddr>,
    pub threads: usize,
    /// Who to become after setup (`--proc-user`, `--proc-group`), by name or number.
    pub proc_user: Option<String>,
    pub proc_group: Option<String>,
    pub status_group: Option<String>,
    pub log_level: String,
    /// Interfaces to attach the XDP program to (empty: sockets only).
    pub xdp: Vec<String>,
    /// With `xdp`: relay TURN data with the AF_XDP forwarder.
    pub afxdp: bool,
    /// With `xdp`: relay in the driver too (`--fast-path xdp`).
    pub fast_path: FastPath,
    /// Nice value of the forwarder threads.
    pub afxdp_nice: i32,
    /// How the XDP program is attached.
    pub xdp_mode: ModeChoice,
    /// Sizes of the XDP program's control-plane maps.
    pub xdp_maps: MapSizes,
    pub server: xturn_control::Config,
    /// Set when no credentials were configured: (user, password) of the demo user.
    pub demo_user: Option<(String, String)>,
    /// How long a drain waits for the last allocation (`--drain-timeout`).
    pub drain_timeout: Duration,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The TCP thread's connection limits: `None` when neither TCP nor TLS is served.
    pub tcp: Option<crate::stream::ConnLimits>,
    /// Plain TCP on the listening addresses and port (not `--no-tcp`).
    pub tcp_plain: bool,
    /// TLS listeners: the addresses (listening IPs at the TLS ports) and the files.
    pub tls: Option<TlsSettings>,
    /// The TLS configuration read from `tls`'s files.
    pub tls_config: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// TCP connections that fit the open-file limit, when fewer than `tcp` asks (set at
    /// start, not configured).
    pub tcp_fit: Option<usize>,
    /// `--max-tcp-connections` was given (not the default).
    pub tcp_total_given: bool,
    /// RFC 5780 discovery endpoints (`--alt-listening-ip`); all four are in `listen`.
    pub rfc5780: Option<xturn_control::stateless::Rfc5780>,
}

/// Default `--drain-timeout`: the default longest allocation lifetime.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// What relays TURN data with `--xdp` (`--fast-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FastPath {
    /// The XDP program steers it to the AF_XDP forwarder threads.
    #[default]
    Afxdp,
    /// The XDP program relays in the driver what its maps fully describe, and steers the
    /// rest as with `Afxdp`.
    Xdp,
}

impl std::str::FromStr for FastPath {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<FastPath, String> {
        match s {
            "afxdp" => Ok(FastPath::Afxdp),
            "xdp" => Ok(FastPath::Xdp),
            other => Err(format!("{other:?}: use xdp or afxdp")),
        }
    }
}

/// The forwarder threads' default nice value (see `--afxdp-nice`).
pub const DEFAULT_AFXDP_NICE: i32 = -10;

fn pick<T>(cli: Option<T>, file: Option<T>, default: T) -> T {
    cli.or(file).unwrap_or(default)
}

fn pick_vec<T>(cli: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if cli.is_empty() {
        file.unwrap_or_default()
    } else {
        cli
    }
}

fn ranges(list: &[String], what: &str) -> Result<Vec<IpRange>> {
    list.iter()
        .map(|s| {
            s.parse::<IpRange>()
                .with_context(|| format!("bad {what} value"))
        })
        .collect()
}

impl Settings {
    /// User slots of the XDP program's bandwidth buckets: the total quota when the
    /// in-kernel relay has limits to honour, else 0 (no buckets in the program).
    pub fn xdp_limit_users(&self) -> u32 {
        let limited = self.server.max_bps != 0 || self.server.user_max_bps != 0;
        if self.fast_path == FastPath::Xdp && limited {
            self.server.total_quota
        } else {
            0
        }
    }

    pub fn load(args: Args) -> Result<Settings> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("bad config file {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    pub fn merge(a: Args, f: FileConfig) -> Result<Settings> {
        let port = pick(a.listening_port, f.listening_port, 3478);
        if port == 0 {
            bail!("--listening-port must not be 0");
        }
        let mut ips = pick_vec(a.listening_ip, f.listening_ip);
        if ips.is_empty() {
            ips.push(IpAddr::from([127, 0, 0, 1]));
        }
        let mut listen: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let rfc5780 = match a.alt_listening_ip.or(f.alt_listening_ip) {
            None => {
                if a.alt_listening_port.or(f.alt_listening_port).is_some() {
                    bail!("--alt-listening-port needs --alt-listening-ip");
                }
                None
            }
            Some(alt) => {
                let Some(primary) = ips
                    .iter()
                    .find(|ip| ip.is_ipv4() == alt.is_ipv4() && !ip.is_unspecified())
                else {
                    bail!(
                        "--alt-listening-ip {alt}: give a specific --listening-ip of its family \
                         to pair it with"
                    );
                };
                if alt.is_unspecified() || alt == *primary {
                    bail!("--alt-listening-ip {alt}: another specific address than {primary}");
                }
                let alt_port = match a.alt_listening_port.or(f.alt_listening_port) {
                    Some(p) => p,
                    None => port
                        .checked_add(1)
                        .context("--listening-port 65535 needs an --alt-listening-port")?,
                };
                if alt_port == 0 || alt_port == port {
                    bail!("--alt-listening-port {alt_port}: not 0 and not the listening port");
                }
                let r = xturn_control::stateless::Rfc5780 {
                    ips: [*primary, alt],
                    ports: [port, alt_port],
                };
                for e in r.endpoints() {
                    if !listen.contains(&e) {
                        listen.push(e);
                    }
                }
                Some(r)
            }
        };

        let relay_ips = pick_vec(a.relay_ip, f.relay_ip);
        let mut relay_ipv4 = None;
        let mut relay_ipv6 = None;
        for ip in &relay_ips {
            if ip.is_unspecified() {
                bail!("--relay-ip {ip} is a wildcard: give the address peers will see");
            }
            let slot = if ip.is_ipv4() {
                &mut relay_ipv4
            } else {
                &mut relay_ipv6
            };
            if slot.is_some() {
                bail!("--relay-ip given twice for one address family ({ip}); xturn relays from one address per family");
            }
            *slot = Some(*ip);
        }
        if relay_ips.is_empty() {
            let first = ips[0];
            if first.is_unspecified() {
                bail!("listening on {first} needs an explicit --relay-ip (the address peers will see)");
            }
            if first.is_ipv4() {
                relay_ipv4 = Some(first);
            } else {
                relay_ipv6 = Some(first);
            }
        }

        let external = external_ips(
            &pick_vec(a.external_ip, f.external_ip),
            relay_ipv4,
            relay_ipv6,
        )?;

        let realm = pick(a.realm, f.realm, "xturn".to_string());
        let mut creds = Credentials::new(&realm).with_context(|| "bad --realm")?;
        let users = pick_vec(a.user, f.user);
        for u in &users {
            let (name, pw) = u
                .split_once(':')
                .with_context(|| format!("--user {u:?} must be NAME:PASSWORD"))?;
            if name.is_empty() || pw.is_empty() {
                bail!("--user {u:?}: empty name or password");
            }
            creds
                .add_user(name, pw)
                .with_context(|| format!("--user {name:?}"))?;
        }
        let use_secret = a.use_auth_secret || f.use_auth_secret.unwrap_or(false);
        let secrets = pick_vec(a.static_auth_secret, f.static_auth_secret);
        match (use_secret, secrets.is_empty()) {
            (true, true) => bail!("--use-auth-secret needs at least one --static-auth-secret"),
            (false, false) => bail!(
                "--static-auth-secret is only used with --use-auth-secret (as in coturn): add it"
            ),
            _ => {}
        }
        for s in &secrets {
            creds.add_secret(s).context("--static-auth-secret")?;
        }
        let mut demo_user = None;
        if users.is_empty() && secrets.is_empty() {
            use rand::Rng;
            let pw: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(12)
                .map(char::from)
                .collect();
            creds
                .add_user("demo", &pw)
                .expect("alphanumeric password is valid");
            demo_user = Some(("demo".to_string(), pw));
        }

        let min_port = pick(a.min_port, f.min_port, 49152);
        let max_port = pick(a.max_port, f.max_port, 65535);
        if min_port == 0 || min_port > max_port {
            bail!("relay port range --min-port {min_port} .. --max-port {max_port} is empty or starts at 0");
        }
        let secs = |v: u64, name: &str| -> Result<Duration> {
            let max = MAX_CONFIG_LIFETIME.as_secs();
            if v == 0 || v > max {
                bail!("--{name} {v}: use 1 to {max} seconds");
            }
            Ok(Duration::from_secs(v))
        };
        let max_lifetime = secs(
            pick(a.max_allocate_lifetime, f.max_allocate_lifetime, 3600),
            "max-allocate-lifetime",
        )?;
        let default_lifetime = secs(
            pick(
                a.default_allocate_lifetime,
                f.default_allocate_lifetime,
                600,
            ),
            "default-allocate-lifetime",
        )?;
        if default_lifetime > max_lifetime {
            bail!("--default-allocate-lifetime exceeds --max-allocate-lifetime");
        }
        let permission_lifetime = secs(
            pick(a.permission_lifetime, f.permission_lifetime, 300),
            "permission-lifetime",
        )?;
        let channel_lifetime = secs(
            pick(a.channel_lifetime, f.channel_lifetime, 600),
            "channel-lifetime",
        )?;
        let nonce_lifetime = secs(pick(a.stale_nonce, f.stale_nonce, 600), "stale-nonce")?;

        let allowed = ranges(
            &pick_vec(a.allowed_peer_ip, f.allowed_peer_ip),
            "--allowed-peer-ip",
        )?;
        let allow_loopback = a.allow_loopback_peers || f.allow_loopback_peers.unwrap_or(false);
        let denied = ranges(
            &pick_vec(a.denied_peer_ip, f.denied_peer_ip),
            "--denied-peer-ip",
        )?;
        let nat64 = pick_vec(a.nat64_prefix, f.nat64_prefix)
            .iter()
            .map(|p| p.parse::<Nat64Prefix>().context("bad --nat64-prefix value"))
            .collect::<Result<Vec<_>>>()?;
        let metrics_listen = match (a.metrics_listen, f.metrics_listen) {
            (Some(m), _) => Some(m),
            (None, Some(m)) => Some(
                m.parse::<SocketAddr>()
                    .with_context(|| format!("metrics-listen {m:?}: use ADDR:PORT"))?,
            ),
            (None, None) => None,
        };
        if let Some(m) = metrics_listen {
            let overlaps = |l: &SocketAddr| {
                l.port() == m.port()
                    && l.is_ipv4() == m.is_ipv4()
                    && (l.ip() == m.ip() || l.ip().is_unspecified() || m.ip().is_unspecified())
            };
            if let Some(l) = listen.iter().find(|l| overlaps(l)) {
                bail!("--metrics-listen {m} overlaps the TURN listening address {l}: use another port");
            }
        }
        let tcp_plain = !(a.no_tcp || f.no_tcp.unwrap_or(false));
        let cert = a.cert.or(f.cert);
        let pkey = a.pkey.or(f.pkey);
        let no_tls = a.no_tls || f.no_tls.unwrap_or(false);
        let tls_ports = pick_vec(a.tls_listening_port, f.tls_listening_port);
        let (tls, tls_config) = match (cert, pkey) {
            (Some(_), None) | (None, Some(_)) => {
                bail!("--cert and --pkey go together: give both for TLS")
            }
            (None, None) => {
                if !tls_ports.is_empty() && !no_tls {
                    bail!("--tls-listening-port needs --cert and --pkey");
                }
                (None, None)
            }
            (Some(_), Some(_)) if no_tls => (None, None),
            (Some(cert), Some(pkey)) => {
                let ports = if tls_ports.is_empty() {
                    vec![5349]
                } else {
                    tls_ports
                };
                if let Some(p) = ports.iter().find(|p| **p == port || **p == 0) {
                    bail!("--tls-listening-port {p}: not 0 and not the --listening-port");
                }
                let config = crate::tls::server_config(&cert, &pkey)?;
                let listen = ips
                    .iter()
                    .flat_map(|ip| ports.iter().map(|p| SocketAddr::new(*ip, *p)))
                    .collect();
                (Some(TlsSettings { listen, cert, pkey }), Some(config))
            }
        };
        if let (Some(m), Some(t)) = (metrics_listen, &tls) {
            if let Some(l) = t.listen.iter().find(|l| {
                l.port() == m.port()
                    && (l.ip() == m.ip() || l.ip().is_unspecified() || m.ip().is_unspecified())
            }) {
                bail!(
                    "--metrics-listen {m} overlaps the TLS listening address {l}: use another port"
                );
            }
        }
        let tcp_total_given = a.max_tcp_connections.or(f.max_tcp_connections).is_some();
        let tcp = if !tcp_plain && tls.is_none() {
            None
        } else {
            let total = pick(a.max_tcp_connections, f.max_tcp_connections, 4096);
            if total == 0 || total > MAX_TOTAL_QUOTA {
                bail!("--max-tcp-connections {total}: use 1 to {MAX_TOTAL_QUOTA}");
            }
            let per_ip = pick(
                a.max_tcp_connections_per_ip,
                f.max_tcp_connections_per_ip,
                64,
            );
            Some(crate::stream::ConnLimits {
                total: total as usize,
                per_ip: per_ip as usize,
            })
        };
        let relay_list: Vec<IpAddr> = relay_ipv4.into_iter().chain(relay_ipv6).collect();
        let own: Vec<SocketAddr> = listen.iter().copied().chain(metrics_listen).collect();
        let filter = PeerFilter::new(allowed, denied, true, own, relay_list)
            .with_loopback_allowed(allow_loopback)
            .with_nat64_prefixes(nat64);

        let threads = pick(
            a.threads,
            f.threads,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        );
        if threads == 0 || threads > 256 {
            bail!("--threads must be between 1 and 256");
        }
        let log_level = pick(a.log_level, f.log_level, "info".to_string());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            bail!("--log-level {log_level:?}: use error, warn, info, debug or trace");
        }
        let xdp = pick_vec(a.xdp, f.xdp);
        if let Some(bad) = xdp.iter().find(|i| i.is_empty() || i.len() > 15) {
            bail!("--xdp {bad:?}: not an interface name");
        }

        let afxdp = !a.no_afxdp && f.afxdp.unwrap_or(true);
        if !xdp.is_empty() && afxdp {
            if let Some(w) = listen.iter().find(|l| l.ip().is_unspecified()) {
                bail!(
                    "--xdp relays data with AF_XDP, which needs specific listening addresses \
                     (a frame carries the address the client sent to), not {w}: give \
                     --listening-ip, or add --no-afxdp"
                );
            }
        }

        let fast_path = match a.fast_path.or(f.fast_path) {
            Some(p) => {
                let p = p
                    .parse::<FastPath>()
                    .map_err(|e| anyhow::anyhow!("--fast-path {e}"))?;
                if xdp.is_empty() {
                    bail!("--fast-path chooses the XDP fast path: it needs --xdp INTERFACES");
                }
                p
            }
            None => FastPath::Afxdp,
        };

        let xdp_mode = match a.xdp_mode.or(f.xdp_mode) {
            Some(m) => m
                .parse::<ModeChoice>()
                .map_err(|e| anyhow::anyhow!("--xdp-mode {e}"))?,
            None => ModeChoice::Auto,
        };
        let defaults = MapSizes::default();
        let map_size = |cli: Option<u32>, file: Option<u32>, default: u32, name: &str| {
            let n = pick(cli, file, default);
            if n == 0 || n > MAX_XDP_MAP_ENTRIES {
                bail!("--{name} {n}: use 1 to {MAX_XDP_MAP_ENTRIES}");
            }
            Ok(n)
        };
        let xdp_maps = MapSizes {
            allocations: map_size(
                a.xdp_max_allocations,
                f.xdp_max_allocations,
                defaults.allocations,
                "xdp-max-allocations",
            )?,
            permissions: map_size(
                a.xdp_max_permissions,
                f.xdp_max_permissions,
                defaults.permissions,
                "xdp-max-permissions",
            )?,
            channels: map_size(
                a.xdp_max_channels,
                f.xdp_max_channels,
                defaults.channels,
                "xdp-max-channels",
            )?,
        };

        let afxdp_nice = pick(a.afxdp_nice, f.afxdp_nice, DEFAULT_AFXDP_NICE);
        if !(-20..=19).contains(&afxdp_nice) {
            bail!("--afxdp-nice {afxdp_nice}: use a nice value from -20 to 19");
        }

        let mut server = xturn_control::Config::new(
            creds,
            relay_ipv4.or(relay_ipv6).expect("set above"),
            filter,
        );
        server.relay_ipv4 = relay_ipv4;
        server.relay_ipv6 = relay_ipv6;
        server.external = external;
        server.min_port = min_port;
        server.max_port = max_port;
        server.default_lifetime = default_lifetime;
        server.max_lifetime = max_lifetime;
        server.permission_lifetime = permission_lifetime;
        server.channel_lifetime = channel_lifetime;
        server.nonce_lifetime = nonce_lifetime;
        let bounded = |v: u32, lo: u32, hi: u32, name: &str| -> Result<u32> {
            if v < lo || v > hi {
                bail!("--{name} {v}: use {lo} to {hi}");
            }
            Ok(v)
        };
        server.user_quota = bounded(
            pick(a.user_quota, f.user_quota, server.user_quota),
            0,
            MAX_TOTAL_QUOTA,
            "user-quota",
        )?;
        server.ip_quota = bounded(
            pick(a.ip_quota, f.ip_quota, server.ip_quota),
            0,
            MAX_TOTAL_QUOTA,
            "ip-quota",
        )?;
        server.total_quota = bounded(
            pick(a.total_quota, f.total_quota, server.total_quota),
            1,
            MAX_TOTAL_QUOTA,
            "total-quota",
        )?;
        server.max_permissions = bounded(
            pick(
                a.permission_quota,
                f.permission_quota,
                server.max_permissions as u32,
            ),
            1,
            65_536,
            "permission-quota",
        )? as usize;
        server.max_channels = bounded(
            pick(a.channel_quota, f.channel_quota, server.max_channels as u32),
            1,
            0x7fff,
            "channel-quota",
        )? as usize;
        server.unauth_rate = pick(a.unauth_rate, f.unauth_rate, server.unauth_rate);
        // A bucket holds up to 4 GiB: far beyond any link.
        let bps = |v: u64, name: &str| -> Result<u64> {
            if v > u32::MAX as u64 {
                bail!("--{name} {v}: use 0 to {} bytes per second", u32::MAX);
            }
            Ok(v)
        };
        server.max_bps = bps(pick(a.max_bps, f.max_bps, 0), "max-bps")?;
        server.user_max_bps = bps(pick(a.user_max_bps, f.user_max_bps, 0), "user-max-bps")?;
        server.unauth_rate_per_prefix = pick(
            a.unauth_rate_per_prefix,
            f.unauth_rate_per_prefix,
            server.unauth_rate_per_prefix,
        );
        server.stateless_rate_per_prefix = pick(
            a.binding_rate_per_prefix,
            f.binding_rate_per_prefix,
            server.stateless_rate_per_prefix,
        );
        server.rfc5766_channels = a.rfc5766_channels || f.rfc5766_channels.unwrap_or(false);
        server.alternate_servers = if a.alternate_server.is_empty() {
            f.alternate_server
                .unwrap_or_default()
                .iter()
                .map(|s| parse_alternate(s).map_err(|e| anyhow::anyhow!("alternate-server: {e}")))
                .collect::<Result<_>>()?
        } else {
            a.alternate_server
        };
        for alt in &server.alternate_servers {
            if alt.ip().is_unspecified() || alt.port() == 0 {
                bail!("--alternate-server {alt}: give the address and port clients can reach");
            }
            if listen.contains(alt) {
                bail!("--alternate-server {alt} is this server's own listening address: clients would be sent back here");
            }
        }
        server.alternate_above = pick(a.alternate_above, f.alternate_above, 0);
        if server.alternate_above > 0 && server.alternate_servers.is_empty() {
            bail!(
                "--alternate-above {} needs an --alternate-server to send allocations to",
                server.alternate_above
            );
        }
        let drain_timeout = pick(
            a.drain_timeout,
            f.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT.as_secs(),
        );
        if drain_timeout == 0 || drain_timeout > MAX_CONFIG_LIFETIME.as_secs() {
            bail!(
                "--drain-timeout {drain_timeout}: use 1 to {} seconds",
                MAX_CONFIG_LIFETIME.as_secs()
            );
        }
        let drain_timeout = Duration::from_secs(drain_timeout);
        let proc_user = a.proc_user.or(f.proc_user);
        let proc_group = a.proc_group.or(f.proc_group);
        let status_group = a.status_group.or(f.status_group);
        if let Some(u) = &proc_user {
            crate::privileges::resolve(u, proc_group.as_deref())?;
        } else if let Some(g) = &proc_group {
            crate::privileges::group_id(g).context("--proc-group")?;
        }
        if let Some(g) = &status_group {
            crate::privileges::group_id(g).context("--status-group")?;
        }
        Ok(Settings {
            listen,
            relay_ipv4,
            relay_ipv6,
            threads,
            proc_user,
            proc_group,
            status_group,
            log_level,
            xdp,
            afxdp,
            fast_path,
            afxdp_nice,
            xdp_mode,
            xdp_maps,
            server,
            demo_user,
            drain_timeout,
            metrics_listen,
            tcp,
            tcp_plain,
            tls,
            tls_config,
            tcp_fit: None,
            tcp_total_given,
            rfc5780,
        })
    }
}

/// Entries of the maps the control plane's outputs fill (`--xdp-max-allocations`,
/// `--xdp-max-permissions`, `--xdp-max-channels`). What does not fit takes the socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    pub allocations: u32,
    pub permissions: u32,
    pub channels: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            allocations: capacity::RELAYS,
            permissions: capacity::PERMISSIONS,
            channels: capacity::CHANNELS,
        }
    }
}

/// How to attach the program (`--xdp-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// Native (driver) mode where the driver has it, else generic.
    #[default]
    Auto,
    /// Native mode only: fail where the driver lacks it.
    Native,
    /// Generic (SKB) mode: works on every interface, slower.
    Generic,
}

impl std::str::FromStr for ModeChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(ModeChoice::Auto),
            "native" | "driver" => Ok(ModeChoice::Native),
            "generic" | "skb" => Ok(ModeChoice::Generic),
            _ => Err(format!("{s:?}: use auto, native or generic")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings> {
        let mut v = vec!["xturn"];
        v.extend_from_slice(args);
        Settings::merge(Args::try_parse_from(v)?, FileConfig::default())
    }

    #[test]
    fn defaults_are_loopback_with_demo_user() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.listen, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(s.relay_ipv4, Some("127.0.0.1".parse().unwrap()));
        assert!(s.demo_user.is_some());
        assert_eq!(s.server.min_port, 49152);
        assert_eq!(s.server.max_lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn afxdp_follows_xdp_and_needs_specific_listeners() {
        let s = parse(&["--listening-ip", "192.0.2.1", "--xdp", "eth0,eth1"]).unwrap();
        assert_eq!(s.xdp, vec!["eth0", "eth1"]);
        assert!(s.afxdp);
        let s = parse(&["--listening-ip", "192.0.2.1", "--xdp", "eth0", "--no-afxdp"]).unwrap();
        assert!(!s.afxdp);
        let any = ["--listening-ip", "0.0.0.0", "--relay-ip", "198.51.100.1"];
        let e = parse(&[&any[..], &["--xdp", "eth0"]].concat()).unwrap_err();
        assert!(e.to_string().contains("--no-afxdp"), "{e}");
        assert!(parse(&[&any[..], &["--xdp", "eth0", "--no-afxdp"]].concat()).is_ok());
        // Without --xdp a wildcard listener is fine.
        assert!(parse(&any).is_ok());
        let s = parse(&["--listening-ip", "192.0.2.1", "--xdp", "eth0"]).unwrap();
        assert_eq!(s.afxdp_nice, DEFAULT_AFXDP_NICE);
        let s = parse(&["--listening-ip", "192.0.2.1", "--afxdp-nice", "-5"]).unwrap();
        assert_eq!(s.afxdp_nice, -5);
        for bad in ["-21", "20"] {
            let e = parse(&["--listening-ip", "192.0.2.1", "--afxdp-nice", bad]).unwrap_err();
            assert!(e.to_string().contains("--afxdp-nice"), "{e}");
        }
        let f: FileConfig = toml::from_str("xdp = [\"eth0\"]\nafxdp = false").unwrap();
        let a = Args::try_parse_from(["xturn", "--listening-ip", "192.0.2.1"]).unwrap();
        assert!(!Settings::merge(a, f).unwrap().afxdp);
    }

    #[test]
    fn fast_path_is_afxdp_unless_asked_and_xdp_sizes_buckets_for_bandwidth_limits() {
        let base = ["--listening-ip", "192.0.2.1", "--xdp", "eth0"];
        assert_eq!(parse(&base).unwrap().fast_path, FastPath::Afxdp);
        let s = parse(&[&base[..], &["--fast-path", "xdp"]].concat()).unwrap();
        assert_eq!(s.fast_path, FastPath::Xdp);
        let e = parse(&[&base[..], &["--fast-path", "bpf"]].concat()).unwrap_err();
        assert!(e.to_string().contains("use xdp or afxdp"), "{e}");
        let e = parse(&["--listening-ip", "192.0.2.1", "--fast-path", "xdp"]).unwrap_err();
        assert!(e.to_string().contains("needs --xdp"), "{e}");
        assert_eq!(
            s.xdp_limit_users(),
            0,
            "no limits, no buckets in the program"
        );
        for limit in ["--max-bps", "--user-max-bps"] {
            let s = parse(&[&base[..], &["--fast-path", "xdp", limit, "100000"]].concat()).unwrap();
            assert_eq!(s.xdp_limit_users(), s.server.total_quota, "{limit}");
            let s = parse(&[&base[..], &["--fast-path", "afxdp", limit, "100000"]].concat());
            assert_eq!(
                s.unwrap().xdp_limit_users(),
                0,
                "{limit} with afxdp: user space only"
            );
        }
    }

    #[test]
    fn metrics_listen_never_on_a_turn_port_and_denied_as_a_peer() {
        assert_eq!(parse(&[]).unwrap().metrics_listen, None);
        let s = parse(&[
            "--metrics-listen",
            "127.0.0.1:9641",
            "--allow-loopback-peers",
        ])
        .unwrap();
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9641".parse().unwrap()));
        let f = &s.server.filter;
        // Loopback peers allowed, but not the metrics endpoint.
        assert!(f
            .check_endpoint("127.0.0.1:9642".parse().unwrap(), false)
            .is_ok());
        assert!(f
            .check_endpoint("127.0.0.1:9641".parse().unwrap(), false)
            .is_err());
        for m in ["127.0.0.1:3478", "0.0.0.0:3478"] {
            let e = parse(&["--metrics-listen", m]).unwrap_err().to_string();
            assert!(e.contains("overlaps the TURN listening address"), "{e}");
        }
        // Another address on the TURN port is fine.
        assert!(parse(&["--metrics-listen", "127.0.0.2:3478"]).is_ok());
    }

    #[test]
    fn alternate_servers_and_drain_timeout() {
        let s = parse(&[]).unwrap();
        assert!(s.server.alternate_servers.is_empty());
        assert_eq!(s.server.alternate_above, 0);
        assert_eq!(s.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        let s = parse(&[
            "--alternate-server",
            "192.0.2.9",
            "--alternate-server",
            "[2001:db8::9]:5000",
            "--alternate-above",
            "100",
            "--drain-timeout",
            "30",
        ])
        .unwrap();
        assert_eq!(
            s.server.alternate_servers,
            vec![
                "192.0.2.9:3478".parse::<SocketAddr>().unwrap(),
                "[2001:db8::9]:5000".parse().unwrap()
            ]
        );
        assert_eq!(s.server.alternate_above, 100);
        assert_eq!(s.drain_timeout, Duration::from_secs(30));
        for (args, needle) in [
            (
                &["--alternate-server", "127.0.0.1:3478"][..],
                "own listening address",
            ),
            (
                &["--alternate-server", "0.0.0.0:3478"][..],
                "clients can reach",
            ),
            (
                &["--alternate-above", "5"][..],
                "needs an --alternate-server",
            ),
            (&["--drain-timeout", "0"][..], "--drain-timeout"),
            (
                &["--alternate-server", "turn.example.org"][..],
                "not IP:PORT",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{args:?}: {e:#}");
        }
        let f: FileConfig =
            toml::from_str("alternate-server = [\"192.0.2.9:3479\"]\ndrain-timeout = 5").unwrap();
        let s = Settings::merge(Args::try_parse_from(["xturn"]).unwrap(), f).unwrap();
        assert_eq!(
            s.server.alternate_servers,
            vec!["192.0.2.9:3479".parse().unwrap()]
        );
        assert_eq!(s.drain_timeout, Duration::from_secs(5));
        let f: FileConfig = toml::from_str("alternate-server = [\"x\"]").unwrap();
        let e = Settings::merge(Args::try_parse_from(["xturn"]).unwrap(), f).unwrap_err();
        assert!(format!("{e:#}").contains("alternate-server"), "{e:#}");
    }

    #[test]
    fn xdp_mode_and_map_sizes() {
        let s = parse(&["--listening-ip", "192.0.2.1"]).unwrap();
        assert_eq!(
            (s.xdp_mode, s.xdp_maps),
            (ModeChoice::Auto, MapSizes::default())
        );
        let s = parse(&[
            "--listening-ip",
            "192.0.2.1",
            "--xdp-mode",
            "generic",
            "--xdp-max-permissions",
            "16",
        ])
        .unwrap();
        assert_eq!(s.xdp_mode, ModeChoice::Generic);
        assert_eq!(s.xdp_maps.permissions, 16);
        assert_eq!(s.xdp_maps.channels, MapSizes::default().channels);
        let e = parse(&["--xdp-mode", "fast"]).unwrap_err();
        assert!(e.to_string().contains("auto, native or generic"), "{e}");
        for bad in ["0", "99999999"] {
            let e = parse(&["--xdp-max-channels", bad]).unwrap_err();
            assert!(e.to_string().contains("--xdp-max-channels"), "{e}");
        }
        let f: FileConfig =
            toml::from_str("xdp-mode = \"native\"\nxdp-max-allocations = 8").unwrap();
        let s = Settings::merge(Args::try_parse_from(["xturn"]).unwrap(), f).unwrap();
        assert_eq!(
            (s.xdp_mode, s.xdp_maps.allocations),
            (ModeChoice::Native, 8)
        );
    }

    #[test]
    fn coturn_option_names() {
        let s = parse(&[
            "--listening-ip",
            "192.0.2.1",
            "--listening-port",
            "3479",
            "--relay-ip",
            "198.51.100.1",
            "--realm",
            "example.org",
            "--user",
            "alice:pw",
            "--user",
            "bob:pw2",
            "--use-auth-secret",
            "--static-auth-secret",
            "old",
            "--static-auth-secret",
            "new",
            "--user-quota",
            "3",
            "--total-quota",
            "100",
            "--min-port",
            "50000",
            "--max-port",
            "50100",
            "--denied-peer-ip",
            "198.51.100.0-198.51.100.9",
            "--allowed-peer-ip",
            "10.1.0.0/16",
            "--stale-nonce",
            "60",
            "--max-allocate-lifetime",
            "1800",
            "--permission-lifetime",
            "120",
            "--channel-lifetime",
            "300",
        ])
        .unwrap();
        assert_eq!(s.listen, vec!["192.0.2.1:3479".parse().unwrap()]);
        assert_eq!(s.relay_ipv4, Some("198.51.100.1".parse().unwrap()));
        assert!(s.demo_user.is_none());
        assert_eq!(s.server.user_quota, 3);
        assert_eq!(s.server.total_quota, 100);
        assert_eq!((s.server.min_port, s.server.max_port), (50000, 50100));
        assert_eq!(s.server.nonce_lifetime, Duration::from_secs(60));
        assert_eq!(s.server.max_lifetime, Duration::from_secs(1800));
        assert_eq!(s.server.permission_lifetime, Duration::from_secs(120));
        assert_eq!(s.server.channel_lifetime, Duration::from_secs(300));
        assert!(s
            .server
            .filter
            .check_ip("10.1.2.3".parse().unwrap())
            .is_ok());
        assert!(s
            .server
            .filter
            .check_ip("198.51.100.5".parse().unwrap())
            .is_err());
        assert!(s.server.credentials.has_users() && s.server.credentials.has_secrets());
    }

    #[test]
    fn quotas_are_finite_by_default_and_configurable() {
        let s = parse(&[]).unwrap();
        assert_eq!(
            (
                s.server.user_quota,
                s.server.ip_quota,
                s.server.total_quota,
                s.server.max_permissions,
                s.server.max_channels
            ),
            (1000, 1000, 16384, 128, 128)
        );
        assert_eq!(
            (
                s.server.unauth_rate_per_prefix,
                s.server.stateless_rate_per_prefix
            ),
            (1000, 20_000)
        );
        let s = parse(&[
            "--ip-quota",
            "0",
            "--user-quota",
            "5",
            "--total-quota",
            "50",
            "--permission-quota",
            "7",
            "--channel-quota",
            "3",
            "--unauth-rate-per-prefix",
            "9",
            "--binding-rate-per-prefix",
            "0",
        ])
        .unwrap();
        assert_eq!(
            (
                s.server.user_quota,
                s.server.ip_quota,
                s.server.total_quota,
                s.server.max_permissions,
                s.server.max_channels,
                s.server.unauth_rate_per_prefix,
                s.server.stateless_rate_per_prefix
            ),
            (5, 0, 50, 7, 3, 9, 0)
        );
        let f: FileConfig =
            toml::from_str("ip-quota = 4\nchannel-quota = 2\nnat64-prefix = [\"64:ff9b:1::/48\"]")
                .unwrap();
        let s = Settings::merge(Args::try_parse_from(["xturn"]).unwrap(), f).unwrap();
        assert_eq!((s.server.ip_quota, s.server.max_channels), (4, 2));
        // The declared NAT64 prefix decodes its peers: 10.0.0.1 under it is private.
        assert!(s
            .server
            .filter
            .check_ip("64:ff9b:1:a00:0:100::".parse().unwrap())
            .is_err());
        assert!(s
            .server
            .filter
            .check_ip("64:ff9b:1:808:8:800::".parse().unwrap())
            .is_ok());
    }

    #[test]
    fn unauth_rate_default_and_option() {
        assert_eq!(parse(&[]).unwrap().server.unauth_rate, 20_000);
        assert_eq!(
            parse(&["--unauth-rate", "5"]).unwrap().server.unauth_rate,
            5
        );
    }

    #[test]
    fn bad_config_is_refused_with_a_reason() {
        for (args, needle) in [
            (&["--user", "nocolon"][..], "NAME:PASSWORD"),
            (&["--static-auth-secret", "x"][..], "--use-auth-secret"),
            (&["--use-auth-secret"][..], "--static-auth-secret"),
            (
                &["--min-port", "6000", "--max-port", "5000"][..],
                "port range",
            ),
            (&["--listening-ip", "0.0.0.0"][..], "--relay-ip"),
            (&["--denied-peer-ip", "300.1.1.1"][..], "--denied-peer-ip"),
            (&["--log-level", "loud"][..], "--log-level"),
            (&["--permission-lifetime", "0"][..], "permission-lifetime"),
            (
                &["--permission-lifetime", "18446744073709551615"][..],
                "permission-lifetime",
            ),
            (&["--max-allocate-lifetime", "86401"][..], "1 to 86400"),
            (&["--stale-nonce", "100000"][..], "stale-nonce"),
            (&["--total-quota", "0"][..], "--total-quota 0: use 1 to"),
            (&["--total-quota", "2000000"][..], "--total-quota"),
            (&["--channel-quota", "0"][..], "--channel-quota"),
            (&["--permission-quota", "70000"][..], "--permission-quota"),
            (&["--nat64-prefix", "64:ff9b:1::/50"][..], "--nat64-prefix"),
        ] {
            let e = format!("{:#}", parse(args).unwrap_err());
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn toml_file_uses_the_same_keys_and_cli_wins() {
        let f: FileConfig = toml::from_str(
            r#"
            listening-ip = ["192.0.2.1"]
            listening-port = 4000
            realm = "file.example"
            user = ["carol:pw"]
            use-auth-secret = true
            static-auth-secret = ["s1"]
            min-port = 40000
            max-port = 40010
            "#,
        )
        .unwrap();
        let a = Args::try_parse_from(["xturn", "--listening-port", "5000"]).unwrap();
        let s = Settings::merge(a, f).unwrap();
        assert_eq!(s.listen, vec!["192.0.2.1:5000".parse().unwrap()]);
        assert_eq!(s.server.credentials.realm(), "file.example");
        assert_eq!((s.server.min_port, s.server.max_port), (40000, 40010));
        assert!(toml::from_str::<FileConfig>("no-such-key = 1").is_err());
    }

    #[test]
    fn external_ip_maps_the_relay_address_per_family_or_says_why_not() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let base = [
            "--listening-ip",
            "198.51.100.1",
            "--relay-ip",
            "198.51.100.1",
        ];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        let s = with(&["--external-ip", "203.0.113.10"]).unwrap();
        assert_eq!(
            s.server.external.pairs(),
            &[(ip("203.0.113.10"), ip("198.51.100.1"))]
        );
        let s = with(&["--external-ip", "203.0.113.10/198.51.100.1"]).unwrap();
        assert_eq!(s.server.external.pairs().len(), 1);
        for (bad, why) in [
            ("203.0.113.10/198.51.100.9", "is not the --relay-ip"),
            ("2001:db8::10", "no --relay-ip of its family"),
            ("203.0.113.10/2001:db8::1", "different families"),
            ("nonsense", "is not an IP address"),
            ("0.0.0.0", "cannot be a public address"),
            ("198.51.100.1", "cannot be a public address"),
        ] {
            let e = with(&["--external-ip", bad]).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{bad}: {e:#}");
        }
        let e = with(&[
            "--external-ip",
            "203.0.113.10",
            "--external-ip",
            "203.0.113.11",
        ])
        .unwrap_err();
        assert!(format!("{e:#}").contains("twice"), "{e:#}");
        assert!(parse(&base).unwrap().server.external.is_empty());
    }

    #[test]
    fn alt_listening_ip_makes_four_endpoints_or_says_why_not() {
        let s = parse(&[
            "--listening-ip",
            "127.0.0.1",
            "--alt-listening-ip",
            "127.0.0.2",
        ])
        .unwrap();
        let r = s.rfc5780.unwrap();
        assert_eq!(r.ports, [3478, 3479]);
        assert_eq!(s.listen.len(), 4);
        for e in r.endpoints() {
            assert!(s.listen.contains(&e));
        }
        for (args, why) in [
            (
                &["--alt-listening-port", "4000"][..],
                "needs --alt-listening-ip",
            ),
            (&["--alt-listening-ip", "::2"][..], "of its family"),
            (
                &["--alt-listening-ip", "127.0.0.1"][..],
                "another specific address",
            ),
            (
                &[
                    "--alt-listening-ip",
                    "127.0.0.2",
                    "--alt-listening-port",
                    "3478",
                ][..],
                "not 0 and not the listening port",
            ),
        ] {
            let e = parse(&[&["--listening-ip", "127.0.0.1"][..], args].concat()).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{args:?}: {e:#}");
        }
    }
}
