//! The sans-IO TURN server (RFC 8656 over UDP, RFC 8489 authentication).
//!
//! Drain contract: after each `handle_*` call (and after [`Server::relay_bound`]) the
//! caller drains [`Server::poll_output`] until `None`, applies data-plane outputs to its
//! tables in order, sends transmits, and calls [`Server::handle_timeout`] no later than
//! [`Server::poll_timeout`]. Time is always an argument; randomness comes from the RNG
//! given to [`Server::new`].

use crate::auth::{Credentials, Key, NonceKey};
use crate::bandwidth::Limits;
use crate::dataplane::DataPlane;
use crate::error::{BadRequest, TurnError};
use crate::filter::PeerFilter;
use crate::limit::{PrefixBudget, DEFAULT_SLOTS};
use crate::output::{BindToken, Change, Output, Transmit};
use crate::stateless::{unknown_attributes_value, unknown_required, Stateless, Verdict};
use crate::types::{
    ChannelNumber, ClientAddr, ConnectionId, ExternalIps, FiveTuple, PeerAddr, RelayAddr, Transport,
};
use crate::wire::{
    attr, looks_like_channel_data, Class, IntegrityKind, Message, MessageBuilder, Method,
    TransactionId,
};
use authenticate::up_to_integrity;
use rand_core::RngCore;
use request::{Family, OnAllocation};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod admin;
mod authenticate;
mod request;
pub mod stats;
mod tcp_relay;

pub use admin::Session;
pub use stats::{AuthFailure, ControlStats, Quota};
use tcp_relay::PeerConn;
pub use tcp_relay::{StreamVerdict, BIND_DEADLINE, CONNECT_DEADLINE};

/// Server configuration. [`Config::new`] gives the RFC defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: Credentials,
    /// SOFTWARE attribute in responses, if any.
    pub software: Option<String>,
    /// Relay address for IPv4 allocations (the default family).
    pub relay_ipv4: Option<IpAddr>,
    /// Relay address for IPv6 allocations (REQUESTED-ADDRESS-FAMILY IPv6).
    pub relay_ipv6: Option<IpAddr>,
    /// The public addresses of the relay addresses behind a 1:1 NAT (`--external-ip`).
    pub external: ExternalIps,
    pub min_port: u16,
    pub max_port: u16,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid (coturn's `stale-nonce`).
    pub nonce_lifetime: Duration,
    /// Allocations per user name (486 beyond it); 0 = no per-user limit.
    pub user_quota: u32,
    /// Allocations per client address (IPv4 address, IPv6 /64; 486 beyond it); 0 = no
    /// per-address limit.
    pub ip_quota: u32,
    /// Allocations in total (486 beyond it); 0 = unlimited (the driver refuses it: every
    /// allocation holds a socket).
    pub total_quota: u32,
    /// Permissions per allocation (bounds memory); beyond it CreatePermission gets 508.
    pub max_permissions: usize,
    /// Channels per allocation (bounds memory: every forwarder holds a copy); beyond it
    /// ChannelBind gets 508.
    pub max_channels: usize,
    /// Unauthenticated (401) answers per second, server-wide; 0 = unlimited.
    pub unauth_rate: u32,
    /// Unauthenticated (401) answers per second per source prefix (IPv4 /24, IPv6 /56),
    /// taken before the server-wide budget; 0 = unlimited.
    pub unauth_rate_per_prefix: u32,
    /// Stateless answers (Binding, 400 and 420 to requests without state) per second per
    /// source prefix; 0 = unlimited.
    pub stateless_rate_per_prefix: u32,
    /// Bytes per second each way per allocation (coturn's `max-bps`); 0 = no limit.
    pub max_bps: u64,
    /// Bytes per second each way for all of one user's allocations; 0 = no limit.
    pub user_max_bps: u64,
    /// Accept RFC 5766's channel range 0x4000-0x7FFE instead of RFC 8656's 0x4000-0x4FFF
    /// (for older clients such as coturn's `turnutils_uclient`).
    pub rfc5766_channels: bool,
    pub filter: PeerFilter,
    /// Other servers new allocations are sent to with 300 Try Alternate (RFC 8489
    /// ALTERNATE-SERVER) while this one drains ([`Server::set_draining`]) or holds
    /// [`Config::alternate_above`] allocations; one of the client's family is taken, in
    /// turn. Without one, a draining server answers Allocate with 508.
    pub alternate_servers: Vec<SocketAddr>,
    /// With alternate servers: allocations (live and being bound) from which new ones are
    /// sent to them; 0 = only while draining.
    pub alternate_above: u32,
}

impl Config {
    pub fn new(credentials: Credentials, relay_ipv4: IpAddr, filter: PeerFilter) -> Self {
        Config {
            credentials,
            software: Some(concat!("xturn ", env!("CARGO_PKG_VERSION")).to_string()),
            relay_ipv4: Some(relay_ipv4),
            relay_ipv6: None,
            external: ExternalIps::default(),
            min_port: 49152,
            max_port: 65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            user_quota: DEFAULT_USER_QUOTA,
            ip_quota: DEFAULT_IP_QUOTA,
            total_quota: DEFAULT_TOTAL_QUOTA,
            max_permissions: DEFAULT_MAX_PERMISSIONS,
            max_channels: DEFAULT_MAX_CHANNELS,
            unauth_rate: 20_000,
            unauth_rate_per_prefix: DEFAULT_UNAUTH_RATE_PER_PREFIX,
            stateless_rate_per_prefix: DEFAULT_STATELESS_RATE_PER_PREFIX,
            max_bps: 0,
            user_max_bps: 0,
            rfc5766_channels: false,
            filter,
            alternate_servers: Vec::new(),
            alternate_above: 0,
        }
    }
}

/// Default allocations per user name.
pub const DEFAULT_USER_QUOTA: u32 = 1000;
/// Default allocations per client IPv4 address or IPv6 /64.
pub const DEFAULT_IP_QUOTA: u32 = 1000;
/// Default allocations in total: one relay port range (49152-65535) of one address.
pub const DEFAULT_TOTAL_QUOTA: u32 = 16384;
/// Default permissions per allocation.
pub const DEFAULT_MAX_PERMISSIONS: usize = 128;
/// Default channels per allocation.
pub const DEFAULT_MAX_CHANNELS: usize = 128;
/// Default 401 answers per second per source prefix.
pub const DEFAULT_UNAUTH_RATE_PER_PREFIX: u32 = 1000;
/// Default stateless answers (Binding, 400, 420) per second per source prefix.
pub const DEFAULT_STATELESS_RATE_PER_PREFIX: u32 = 20_000;
/// Longest lifetime (allocation, permission, channel, nonce) a server accepts; longer
/// configured values are clamped by [`Server::new`] (and refused by the relay's config),
/// so that no deadline computation can overflow.
pub const MAX_CONFIG_LIFETIME: Duration = Duration::from_secs(86_400);

/// Every configured lifetime at most [`MAX_CONFIG_LIFETIME`].
fn clamp_lifetimes(cfg: &mut Config) {
    for l in [
        &mut cfg.default_lifetime,
        &mut cfg.max_lifetime,
        &mut cfg.permission_lifetime,
        &mut cfg.channel_lifetime,
        &mut cfg.nonce_lifetime,
    ] {
        *l = (*l).min(MAX_CONFIG_LIFETIME);
    }
}

/// The key allocations are counted under for [`Config::ip_quota`]: an IPv4 address, or the
/// /64 of an IPv6 address (a host has a whole /64 to pick source addresses from).
fn quota_key(ip: IpAddr) -> IpAddr {
    match crate::filter::normalise(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

const BIND_ATTEMPTS: u32 = 8;
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Allocation {
    relay: RelayAddr,
    /// Who created it, with the key and integrity kind of the creating request (for
    /// re-sending the success response to a retransmission).
    auth: Auth,
    tid: TransactionId,
    fingerprint: bool,
    expires: Instant,
    /// The allocation's one entry in the timer set: the earliest of its deadlines.
    scheduled: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<ChannelNumber, (PeerAddr, Instant)>,
    channel_by_peer: HashMap<PeerAddr, ChannelNumber>,
    reservation_token: Option<[u8; 8]>,
    ipv6_unavailable: bool,
    /// When its Allocate succeeded (`xturn sessions` shows the age).
    created: Instant,
    /// An RFC 6062 TCP allocation: its relayed address listens for TCP connections, and
    /// these are its connections to and from peers.
    tcp: Option<BTreeSet<ConnectionId>>,
}

#[derive(Debug)]
struct Pending {
    five_tuple: FiveTuple,
    tid: TransactionId,
    auth: Auth,
    fingerprint: bool,
    lifetime: Duration,
    ip: IpAddr,
    port: u16,
    attempts: u32,
    /// Ports whose bind failed, kept marked used while this allocation keeps trying so
    /// that the next pick is another port; released when the attempt ends.
    failed: Vec<u16>,
    even_port: Option<bool>,
    reserved: bool,
    dont_fragment: bool,
    ipv6_unavailable: bool,
    tcp: bool,
}

#[derive(Debug)]
struct Reservation {
    ip: IpAddr,
    port: u16,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Auth {
    username: String,
    key: Key,
    kind: IntegrityKind,
}

/// What a request handler needs to answer.
struct Ctx {
    tid: TransactionId,
    method: Method,
    five_tuple: FiveTuple,
    fingerprint: bool,
}

pub struct Server {
    cfg: Config,
    nonce_key: NonceKey,
    rng: Box<dyn RngCore + Send>,
    start: Instant,
    unix_at_start: u64,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<RelayAddr, FiveTuple>,
    used_ports: HashSet<(IpAddr, u16)>,
    user_counts: HashMap<String, u32>,
    ip_counts: HashMap<IpAddr, u32>,
    /// Each user with allocations (or binding one) has a slot in the bandwidth limits.
    user_slots: HashMap<String, u32>,
    free_user_slots: Vec<u32>,
    limits: Arc<Limits>,
    /// Channels whose peer is a relayed address of this server, by that address: removed
    /// when that allocation goes, so the port is never sent to once another process may
    /// hold it.
    hairpins: HashMap<RelayAddr, Vec<(FiveTuple, ChannelNumber)>>,
    pending: HashMap<BindToken, Pending>,
    pending_by_tuple: HashMap<FiveTuple, BindToken>,
    reservations: HashMap<[u8; 8], Reservation>,
    /// Exactly one entry per allocation: (its `scheduled` deadline, its 5-tuple).
    timers: BTreeSet<(Instant, FiveTuple)>,
    next_token: u64,
    outputs: VecDeque<Output>,
    data: DataPlane,
    unauth_tokens: f64,
    unauth_last: Instant,
    unauth_prefix: PrefixBudget,
    stateless: Stateless,
    /// 401 answers not sent for being over a budget (per prefix or server-wide).
    /// Counts for the metrics; `unauth_shed` in it counts 401s over their budget.
    stats: ControlStats,
    /// No new allocations (drain): Allocate gets 300 or 508; the rest keeps working.
    draining: bool,
    /// The alternate server to name next (round robin).
    next_alternate: usize,
    /// The relayed addresses of TCP allocations: no data plane relays for them (their
    /// data goes over connections the driver joins), so their changes are not emitted.
    tcp_relays: HashSet<RelayAddr>,
    /// The peer connections of TCP allocations, and their deadlines (connect, bind).
    peer_conns: HashMap<ConnectionId, PeerConn>,
    conn_deadlines: BTreeSet<(Instant, ConnectionId)>,
    /// Set by a successful ConnectionBind, taken by `handle_stream_message`.
    spliced: Option<ConnectionId>,
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("allocations", &self.allocations.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Server {
    /// `now` and `unix_now` (seconds since 1970) are the same moment; unix time is derived
    /// from `now` afterwards, for REST API expiry and nonce timestamps.
    pub fn new(cfg: Config, now: Instant, unix_now: u64, mut rng: Box<dyn RngCore + Send>) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        let mut cfg = cfg;
        clamp_lifetimes(&mut cfg);
        let unauth_tokens = cfg.unauth_rate as f64;
        let unauth_prefix = PrefixBudget::new(
            cfg.unauth_rate_per_prefix,
            DEFAULT_SLOTS,
            rng.next_u64(),
            now,
        );
        let limits = Arc::new(Limits::new(
            cfg.max_bps,
            cfg.user_max_bps,
            cfg.total_quota as usize,
            now,
        ));
        let mut data = DataPlane::new();
        data.set_limits(limits.clone());
        data.set_external(cfg.external.clone());
        let stateless = Stateless::new(
            cfg.software.clone(),
            cfg.stateless_rate_per_prefix,
            rng.next_u64(),
            now,
        );
        Server {
            cfg,
            nonce_key: NonceKey::new(k),
            rng,
            start: now,
            unix_at_start: unix_now,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            used_ports: HashSet::new(),
            user_counts: HashMap::new(),
            ip_counts: HashMap::new(),
            user_slots: HashMap::new(),
            free_user_slots: Vec::new(),
            limits,
            hairpins: HashMap::new(),
            pending: HashMap::new(),
            pending_by_tuple: HashMap::new(),
            reservations: HashMap::new(),
            timers: BTreeSet::new(),
            next_token: 1,
            outputs: VecDeque::new(),
            data,
            unauth_tokens,
            unauth_last: now,
            unauth_prefix,
            stateless,
            stats: ControlStats::default(),
            draining: false,
            next_alternate: 0,
            tcp_relays: HashSet::new(),
            peer_conns: HashMap::new(),
            conn_deadlines: BTreeSet::new(),
            spliced: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Give back the memory of tables that emptied after a peak (see
    /// [`DataPlane::shrink`]).
    pub fn shrink(&mut self) {
        use crate::dataplane::shrink_map;
        shrink_map(&mut self.allocations);
        shrink_map(&mut self.by_relay);
        shrink_map(&mut self.user_counts);
        shrink_map(&mut self.ip_counts);
        shrink_map(&mut self.user_slots);
        shrink_map(&mut self.hairpins);
        shrink_map(&mut self.pending);
        shrink_map(&mut self.pending_by_tuple);
        shrink_map(&mut self.reservations);
        if self.used_ports.capacity() > 16 && self.used_ports.len() * 4 < self.used_ports.capacity()
        {
            self.used_ports.shrink_to(self.used_ports.len() * 2);
        }
        if self.user_slots.is_empty() {
            self.free_user_slots.clear();
        }
        if self.free_user_slots.capacity() > 16
            && self.free_user_slots.len() * 4 < self.free_user_slots.capacity()
        {
            self.free_user_slots.shrink_to_fit();
        }
        self.outputs.shrink_to(64);
        self.data.shrink();
    }

    /// 401 answers shed by the unauthenticated-answer budgets so far.
    pub fn unauth_shed(&self) -> u64 {
        self.stats.unauth_shed
    }

    /// What the control plane counted since it started, and its tables' sizes now.
    pub fn stats(&self) -> ControlStats {
        let mut st = self.stats.clone();
        st.allocations = self.allocations.len() as u64;
        for a in self.allocations.values() {
            st.permissions += a.permissions.len() as u64;
            st.channels += a.channels.len() as u64;
        }
        st
    }

    /// The bandwidth limits: every data-plane copy of a driver must share them
    /// ([`DataPlane::with_limits`]) for a limit to hold whatever thread relays the data.
    /// Take the bandwidth limits' buckets from `limits` (the XDP program's, shared) from
    /// now on. Before the first allocation: buckets in use are not carried over.
    pub fn set_limits(&mut self, limits: Arc<Limits>) {
        self.data.set_limits(limits.clone());
        self.limits = limits;
    }

    pub fn limits(&self) -> Arc<Limits> {
        self.limits.clone()
    }

    /// A new configuration (SIGHUP): credentials, realm, peer lists, quotas, 401 budgets,
    /// lifetimes, limits per allocation, alternate servers and the rest of what a request
    /// reads take effect at once for the next request; allocations, their permissions,
    /// channels and data are untouched (existing ones keep their lifetimes until refreshed).
    /// Returns the options that differ but cannot change while the server runs: they keep
    /// their running values (the relayed addresses and port range: sockets are bound;
    /// `total_quota`: the open-file limit was raised for it; the bandwidth limits: every
    /// forwarder shares their buckets).
    pub fn reload(&mut self, now: Instant, cfg: Config) -> Vec<&'static str> {
        let mut cfg = cfg;
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($field:ident => $name:literal),* $(,)?) => {$(
                if cfg.$field != self.cfg.$field {
                    kept.push($name);
                    cfg.$field = self.cfg.$field.clone();
                }
            )*};
        }
        keep!(
            relay_ipv4 => "relay-ip",
            relay_ipv6 => "relay-ip",
            external => "external-ip",
            min_port => "min-port",
            max_port => "max-port",
            total_quota => "total-quota",
            max_bps => "max-bps",
            user_max_bps => "user-max-bps",
            stateless_rate_per_prefix => "binding-rate-per-prefix",
        );
        kept.dedup();
        clamp_lifetimes(&mut cfg);
        let hosts = self.cfg.filter.host_ips().to_vec();
        cfg.filter.set_host_ips(hosts);
        if cfg.unauth_rate_per_prefix != self.cfg.unauth_rate_per_prefix {
            self.unauth_prefix = PrefixBudget::new(
                cfg.unauth_rate_per_prefix,
                DEFAULT_SLOTS,
                self.rng.next_u64(),
                now,
            );
        }
        if cfg.unauth_rate != self.cfg.unauth_rate {
            self.unauth_tokens = cfg.unauth_rate as f64;
            self.unauth_last = now;
        }
        self.cfg = cfg;
        kept
    }

    /// The host's addresses changed: the peer filter denies the new list (see
    /// [`PeerFilter::set_host_ips`]).
    pub fn set_host_ips(&mut self, ips: Vec<IpAddr>) {
        self.cfg.filter.set_host_ips(ips);
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Allocations whose relayed address the driver is binding.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Drain (or stop draining): while on, Allocate requests for new allocations are
    /// answered 300 Try Alternate with an alternate server of the client's family, or 508
    /// Insufficient Capacity without one; retransmissions, Refresh, CreatePermission,
    /// ChannelBind and data keep working, so existing allocations live out their time.
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// An alternate server of `client`'s family (RFC 8489 section 14.15: the same family
    /// as the request's source), in turn.
    fn alternate_for(&mut self, client: SocketAddr) -> Option<SocketAddr> {
        let same: Vec<SocketAddr> = self
            .cfg
            .alternate_servers
            .iter()
            .filter(|a| a.is_ipv4() == client.is_ipv4())
            .copied()
            .collect();
        if same.is_empty() {
            return None;
        }
        self.next_alternate = self.next_alternate.wrapping_add(1);
        Some(same[self.next_alternate % same.len()])
    }

    /// The data-plane view the server maintains (counters of traffic it relayed itself).
    pub fn data_plane(&self) -> &DataPlane {
        &self.data
    }

    /// Number of entries in every table the server keeps (allocations, permissions,
    /// channels, pending binds, reservations, timers, user counts, used ports). Tests use
    /// it to prove that unauthenticated traffic creates no state.
    pub fn state_size(&self) -> usize {
        let per_alloc: usize = self
            .allocations
            .values()
            .map(|a| 1 + a.permissions.len() + a.channels.len() + a.channel_by_peer.len())
            .sum();
        per_alloc
            + self.by_relay.len()
            + self.used_ports.len()
            + self.user_counts.len()
            + self.ip_counts.len()
            + self.user_slots.len()
            + self.hairpins.values().map(Vec::len).sum::<usize>()
            + self.pending.len()
            + self.pending_by_tuple.len()
            + self.reservations.len()
            + self.timers.len()
            + self.outputs.len()
            + self.tcp_relays.len()
            + self.peer_conns.len()
            + self.conn_deadlines.len()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.start).as_secs()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(t, _)| *t);
        let reservation = self.reservations.values().map(|r| r.expires).min();
        let conn = self.conn_deadlines.first().map(|(t, _)| *t);
        [timer, reservation, conn].into_iter().flatten().min()
    }

    fn emit(&mut self, c: Change) {
        if self.tcp_relays.contains(&c.relay()) {
            return; // a TCP allocation: nothing for a data plane
        }
        self.data.apply(&c);
        self.outputs.push_back(Output::DataPlane(c));
    }

    fn transmit(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        payload: Vec<u8>,
        transport: Transport,
    ) {
        self.outputs.push_back(Output::Transmit(Transmit {
            source,
            destination,
            payload,
            transport,
        }));
    }

    fn random_tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        TransactionId(t)
    }

    /// A datagram from a client (`from`) to one of the server's listening addresses
    /// (`local`). Never panics, whatever the bytes.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: SocketAddr,
        bytes: &[u8],
    ) {
        let five_tuple = FiveTuple::udp(ClientAddr(from), local);
        if looks_like_channel_data(bytes) {
            if let Some(f) = self.data.client_to_peer(now, five_tuple, bytes) {
                let payload = bytes[f.payload].to_vec();
                self.transmit(f.relay.0, f.peer.0, payload, Transport::Udp);
            }
            return;
        }
        match self.stateless.classify(now, from, bytes) {
            Verdict::Server => self.handle_stateful(now, five_tuple, bytes),
            Verdict::Answer(b) => self.transmit(local, from, b, Transport::Udp),
            Verdict::AnswerVia {
                source,
                destination,
                bytes,
            } => self.transmit(source, destination, bytes, Transport::Udp),
            Verdict::Drop(_) => {}
        }
    }

    /// One whole message from a client's TCP (or TLS) connection `five_tuple`
    /// ([`Transport::Tcp`]): a STUN message, or a ChannelData message without its padding
    /// (the driver frames the stream, RFC 8656 section 12.5). Answers go back down the
    /// connection ([`Transmit::transport`]); relaying to peers is UDP.
    ///
    /// The verdict says what the connection is now: [`StreamVerdict::Close`] for
    /// ChannelData on a connection without an allocation (nothing legitimate sends that),
    /// [`StreamVerdict::Data`] after a successful ConnectionBind (RFC 6062): from the
    /// byte after this message on, the connection carries a peer connection's bytes and
    /// the driver joins the two (after sending the success response queued first).
    pub fn handle_stream_message(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        bytes: &[u8],
    ) -> StreamVerdict {
        debug_assert_eq!(five_tuple.transport, Transport::Tcp);
        if looks_like_channel_data(bytes) {
            if !self.allocations.contains_key(&five_tuple) {
                return StreamVerdict::Close;
            }
            if let Some(f) = self.data.client_to_peer(now, five_tuple, bytes) {
                let payload = bytes[f.payload].to_vec();
                self.transmit(f.relay.0, f.peer.0, payload, Transport::Udp);
            }
            return StreamVerdict::Keep;
        }
        let (from, local) = (five_tuple.client.0, five_tuple.server);
        match self.stateless.classify(now, from, bytes) {
            Verdict::Server => self.handle_stateful(now, five_tuple, bytes),
            Verdict::Answer(b) => self.transmit(local, from, b, Transport::Tcp),
            // (RFC 5780's changed origins are UDP's.)
            Verdict::AnswerVia { .. } | Verdict::Drop(_) => {}
        }
        match self.spliced.take() {
            Some(id) => StreamVerdict::Data(id),
            None => StreamVerdict::Keep,
        }
    }

    /// Does `five_tuple` have an allocation (or one being bound)?
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.allocations.contains_key(five_tuple) || self.pending_by_tuple.contains_key(five_tuple)
    }

    /// The client's connection `five_tuple` closed: its allocation ends with it (RFC 8656
    /// section 3.1), as if deleted. (A driver that binds relay addresses asynchronously
    /// must finish a pending bind first; this one binds them inside `drive`.)
    pub fn connection_closed(&mut self, five_tuple: FiveTuple) {
        self.delete_allocation(five_tuple);
    }

    /// A datagram that [`Stateless::classify`] gave [`Verdict::Server`]: a TURN request or
    /// a Send indication. Drivers that classify outside their lock call this directly.
    pub fn handle_stateful(&mut self, now: Instant, five_tuple: FiveTuple, bytes: &[u8]) {
        let Ok(msg) = Message::new_checked(bytes) else {
            return;
        };
        let Ok(fingerprint) = msg.check_fingerprint() else {
            return;
        };
        let ctx = Ctx {
            tid: msg.transaction_id(),
            method: msg.method(),
            five_tuple,
            fingerprint,
        };
        match (msg.class(), msg.method()) {
            (Class::Request, Method::Allocate)
            | (Class::Request, Method::Refresh)
            | (Class::Request, Method::CreatePermission)
            | (Class::Request, Method::ChannelBind)
            | (Class::Request, Method::Connect)
            | (Class::Request, Method::ConnectionBind) => {
                self.stats.request(ctx.method);
                self.authenticated_request(now, &msg, &ctx)
            }
            (Class::Indication, Method::Send) => {
                self.stats.request(Method::Send);
                self.send_indication(now, &msg, five_tuple)
            }
            _ => {}
        }
    }

    /// A datagram from a peer to one of the relayed addresses.
    pub fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        peer: PeerAddr,
        bytes: &[u8],
    ) {
        let tid = self.random_tid();
        let mut out = Vec::new();
        if let Some(to) = self
            .data
            .peer_to_client(now, relay, peer, bytes, tid, &mut out)
        {
            self.transmit(to.server, to.client.0, out, to.transport);
        }
    }

    /// Completion of an [`Output::BindRelay`]: `ok` tells whether the driver could bind
    /// the relayed address.
    pub fn relay_bound(&mut self, now: Instant, token: BindToken, ok: bool) {
        let Some(mut p) = self.pending.remove(&token) else {
            return;
        };
        self.pending_by_tuple.remove(&p.five_tuple);
        let ctx = Ctx {
            tid: p.tid,
            method: Method::Allocate,
            five_tuple: p.five_tuple,
            fingerprint: p.fingerprint,
        };
        if !ok {
            // Someone else holds that port: keep it marked used for this allocation's
            // lifetime of trying and pick another (RFC 8656 section 7.2: 508 if none).
            // The neighbour claimed for an EVEN-PORT reservation is ours: free it.
            p.failed.push(p.port);
            if p.even_port == Some(true) {
                self.used_ports.remove(&(p.ip, p.port + 1));
            }
            p.attempts += 1;
            if p.reserved || p.attempts >= BIND_ATTEMPTS {
                self.release_failed(&p);
                self.release_quota(&p.auth.username, p.five_tuple.client);
                self.error(&ctx, Some(&p.auth), TurnError::InsufficientCapacity, &[]);
                return;
            }
            let Some(port) = self.pick_port(p.ip, p.even_port.is_some(), p.even_port == Some(true))
            else {
                self.release_failed(&p);
                self.release_quota(&p.auth.username, p.five_tuple.client);
                self.error(&ctx, Some(&p.auth), TurnError::InsufficientCapacity, &[]);
                return;
            };
            p.port = port;
            self.start_bind(p);
            return;
        }
        self.release_failed(&p);
        let relay = RelayAddr(SocketAddr::new(p.ip, p.port));
        let expires = now + p.lifetime;
        let mut token_out = None;
        if p.even_port == Some(true) {
            // Reserve the next port (RFC 8656 section 7.2, EVEN-PORT with R=1).
            let mut t = [0u8; 8];
            self.rng.fill_bytes(&mut t);
            self.reservations.insert(
                t,
                Reservation {
                    ip: p.ip,
                    port: p.port + 1,
                    expires: now + RESERVATION_LIFETIME,
                },
            );
            token_out = Some(t);
        }
        let user = self.user_slot(&p.auth.username);
        let lifetime = p.lifetime;
        let ctx = Ctx {
            tid: p.tid,
            method: Method::Allocate,
            five_tuple: p.five_tuple,
            fingerprint: p.fingerprint,
        };
        let alloc = Allocation {
            relay,
            auth: p.auth,
            tid: p.tid,
            fingerprint: p.fingerprint,
            expires,
            scheduled: expires,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_by_peer: HashMap::new(),
            reservation_token: token_out,
            ipv6_unavailable: p.ipv6_unavailable,
            created: now,
            tcp: p.tcp.then(BTreeSet::new),
        };
        if p.tcp {
            self.tcp_relays.insert(relay);
        }
        let response = allocate_success(&ctx, &alloc, lifetime, &self.cfg.external);
        let auth = alloc.auth.clone();
        self.allocations.insert(p.five_tuple, alloc);
        self.by_relay.insert(relay, p.five_tuple);
        self.timers.insert((expires, p.five_tuple));
        // The port may have served another allocation: its buckets start full.
        self.limits.reset_allocation(relay);
        self.emit(Change::InstallAllocation {
            five_tuple: p.five_tuple,
            relay,
            expires,
            user,
        });
        self.finish_response(&ctx, Some(&auth), response, 200);
    }

    /// Expire allocations, permissions, channels and reservations due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let lapsed: Vec<[u8; 8]> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in lapsed {
            if let Some(r) = self.reservations.remove(&t) {
                self.used_ports.remove(&(r.ip, r.port));
            }
        }
        while let Some(&(t, ft)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.expire(now, ft);
        }
        self.expire_connections(now);
    }

    fn expire(&mut self, now: Instant, ft: FiveTuple) {
        let Some(a) = self.allocations.get_mut(&ft) else {
            return;
        };
        if a.expires <= now {
            self.delete_allocation(ft);
            return;
        }
        let relay = a.relay;
        let mut outs = Vec::new();
        let dead_channels: Vec<_> = a
            .channels
            .iter()
            .filter(|(_, (_, e))| *e <= now)
            .map(|(c, (p, _))| (*c, *p))
            .collect();
        let mut unlinked = Vec::new();
        for (c, p) in dead_channels {
            a.channels.remove(&c);
            a.channel_by_peer.remove(&p);
            unlinked.push((p, c));
            outs.push(Change::RemoveChannel {
                five_tuple: ft,
                relay,
                channel: c,
                peer: p,
            });
        }
        let dead_perms: Vec<_> = a
            .permissions
            .iter()
            .filter(|(_, e)| **e <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in dead_perms {
            a.permissions.remove(&ip);
            outs.push(Change::RemovePermission { relay, peer: ip });
        }
        let next = a
            .permissions
            .values()
            .chain(a.channels.values().map(|(_, e)| e))
            .fold(a.expires, |m, e| m.min(*e));
        a.scheduled = next;
        self.timers.insert((next, ft));
        for (p, c) in unlinked {
            self.unlink_hairpin(p, ft, c);
        }
        for o in outs {
            self.emit(o);
        }
    }

    /// Move `a`'s timer to `at` if that is earlier (`a` is the allocation of `ft`, out of
    /// the table while a handler works on it).
    fn schedule(&mut self, ft: FiveTuple, a: &mut Allocation, at: Instant) {
        if at < a.scheduled {
            self.timers.remove(&(a.scheduled, ft));
            a.scheduled = at;
            self.timers.insert((at, ft));
        }
    }

    fn delete_allocation(&mut self, ft: FiveTuple) {
        let Some(a) = self.allocations.remove(&ft) else {
            return;
        };
        self.timers.remove(&(a.scheduled, ft));
        self.by_relay.remove(&a.relay);
        self.used_ports.remove(&(a.relay.0.ip(), a.relay.0.port()));
        if let Some(t) = a.reservation_token {
            if let Some(r) = self.reservations.remove(&t) {
                self.used_ports.remove(&(r.ip, r.port));
            }
        }
        self.release_quota(&a.auth.username, ft.client);
        let mut chans: Vec<_> = a.channels.iter().map(|(c, (p, _))| (*c, *p)).collect();
        chans.sort();
        for (c, p) in chans {
            self.unlink_hairpin(p, ft, c);
            self.emit(Change::RemoveChannel {
                five_tuple: ft,
                relay: a.relay,
                channel: c,
                peer: p,
            });
        }
        let mut perms: Vec<_> = a.permissions.keys().copied().collect();
        perms.sort();
        for ip in perms {
            self.emit(Change::RemovePermission {
                relay: a.relay,
                peer: ip,
            });
        }
        self.emit(Change::RemoveAllocation {
            five_tuple: ft,
            relay: a.relay,
        });
        if let Some(conns) = &a.tcp {
            self.close_tcp_allocation(a.relay, conns);
        }
        // Channels of other allocations to this one's relayed address: that port is not
        // ours any more.
        for (other, c) in self.hairpins.remove(&a.relay).unwrap_or_default() {
            let Some(o) = self.allocations.get_mut(&other) else {
                continue;
            };
            let Some((p, _)) = o.channels.remove(&c) else {
                continue;
            };
            o.channel_by_peer.remove(&p);
            let relay = o.relay;
            self.emit(Change::RemoveChannel {
                five_tuple: other,
                relay,
                channel: c,
                peer: p,
            });
        }
    }

    /// `peer` as a relayed address would be written (embedded IPv4 decoded).
    fn as_relay(&self, peer: SocketAddr) -> RelayAddr {
        RelayAddr(self.cfg.external.private(SocketAddr::new(
            self.cfg.filter.normalise(peer.ip()),
            peer.port(),
        )))
    }

    /// A peer address as a client named it, as the sockets know it: one of our public
    /// relayed addresses (`--external-ip`) is its private one, relayed inside the server.
    fn inward(&self, peer: SocketAddr) -> SocketAddr {
        self.cfg.external.private(peer)
    }

    /// The key of a channel's peer in [`Server::hairpins`], if it is one of our relayed
    /// addresses.
    fn hairpin_key(&self, peer: PeerAddr) -> Option<RelayAddr> {
        let n = self.as_relay(peer.0);
        self.by_relay.contains_key(&n).then_some(n)
    }

    fn unlink_hairpin(&mut self, peer: PeerAddr, ft: FiveTuple, c: ChannelNumber) {
        let n = self.as_relay(peer.0);
        if let Some(v) = self.hairpins.get_mut(&n) {
            v.retain(|e| *e != (ft, c));
            if v.is_empty() {
                self.hairpins.remove(&n);
            }
        }
    }

    fn user_slot(&self, user: &str) -> u32 {
        self.user_slots.get(user).copied().unwrap_or(u32::MAX)
    }

    fn release_failed(&mut self, p: &Pending) {
        for port in &p.failed {
            self.used_ports.remove(&(p.ip, *port));
        }
    }

    fn release_quota(&mut self, user: &str, client: ClientAddr) {
        if let Some(c) = self.user_counts.get_mut(user) {
            *c -= 1;
            if *c == 0 {
                self.user_counts.remove(user);
                if let Some(slot) = self.user_slots.remove(user) {
                    self.free_user_slots.push(slot);
                }
            }
        }
        let key = quota_key(client.0.ip());
        if let Some(c) = self.ip_counts.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.ip_counts.remove(&key);
            }
        }
    }

    // ---------------------------------------------------------------- responses

    /// Send response `b` (code `code`, 200 for a success) to the request of `ctx`.
    fn finish_response(
        &mut self,
        ctx: &Ctx,
        auth: Option<&Auth>,
        mut b: MessageBuilder,
        code: u16,
    ) {
        self.stats.response(ctx.method, code);
        if let Some(s) = &self.cfg.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        if let Some(a) = auth {
            match a.kind {
                IntegrityKind::Sha1 => b.message_integrity(a.key.as_bytes()),
                IntegrityKind::Sha256 => b.message_integrity_sha256(a.key.as_bytes()),
            };
        }
        if ctx.fingerprint {
            b.fingerprint();
        }
        let bytes = b.finish();
        self.transmit(
            ctx.five_tuple.server,
            ctx.five_tuple.client.0,
            bytes,
            ctx.five_tuple.transport,
        );
    }

    fn error(&mut self, ctx: &Ctx, auth: Option<&Auth>, e: TurnError, extra: &[(u16, Vec<u8>)]) {
        let (code, reason) = e.code();
        let mut b = MessageBuilder::new(ctx.method, Class::Error, ctx.tid);
        b.error_code(code, reason);
        for (t, v) in extra {
            b.attr(*t, v);
        }
        self.finish_response(ctx, auth, b, code);
    }

    // ---------------------------------------------------------------- handlers

    fn unknown_attributes_error(&mut self, ctx: &Ctx, auth: Option<&Auth>, unknown: &[u16]) {
        let v = unknown_attributes_value(unknown);
        self.error(
            ctx,
            auth,
            TurnError::UnknownAttribute,
            &[(attr::UNKNOWN_ATTRIBUTES, v)],
        );
    }

    fn authenticated_request(&mut self, now: Instant, msg: &Message<&[u8]>, ctx: &Ctx) {
        // RFC 8489 section 14.5: attributes after the integrity attribute are not covered
        // by it and MUST be ignored (FINGERPRINT was checked already). Work on a view of
        // the message that ends with its integrity attribute.
        let covered = up_to_integrity(msg);
        let view;
        let msg = match &covered {
            Some(bytes) => match Message::new_checked(&bytes[..]) {
                Ok(m) => {
                    view = m;
                    &view
                }
                Err(_) => return,
            },
            None => msg,
        };
        let Some(auth) = self.authenticate(now, msg, ctx) else {
            return;
        };
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            self.unknown_attributes_error(ctx, Some(&auth), &unknown);
            return;
        }
        // An allocation past its lifetime is gone, even if the driver has not called
        // handle_timeout yet.
        if self
            .allocations
            .get(&ctx.five_tuple)
            .is_some_and(|a| a.expires <= now)
        {
            self.delete_allocation(ctx.five_tuple);
        }
        if ctx.method == Method::Allocate {
            if let Err(e) = self.allocate(now, msg, ctx, &auth) {
                self.error(ctx, Some(&auth), e, &[]);
            }
            return;
        }
        if ctx.method == Method::ConnectionBind {
            // On a new connection, without an allocation (RFC 6062 section 5.4).
            match self.connection_bind(msg, ctx, &auth) {
                Ok(b) => self.finish_response(ctx, Some(&auth), b, 200),
                Err(e) => self.error(ctx, Some(&auth), e, &[]),
            }
            return;
        }
        // Every other request needs an allocation on this 5-tuple (RFC 8656 7.3, 9, 11),
        // of the same user; only then do its attributes count. The handler gets the
        // allocation out of the table and it goes back before anything else happens.
        let Some(mut a) = self.allocations.remove(&ctx.five_tuple) else {
            self.error(ctx, Some(&auth), TurnError::AllocationMismatch, &[]);
            return;
        };
        let result = if a.auth.username != auth.username {
            self.stats.auth_failure(AuthFailure::WrongUser);
            Err(TurnError::WrongCredentials)
        } else {
            OnAllocation::parse(msg, self.cfg.rfc5766_channels).and_then(|r| match r {
                OnAllocation::Refresh(r) => self.refresh(now, ctx, &mut a, r).map(Some),
                OnAllocation::CreatePermission(r) => self
                    .create_permission(now, ctx, &mut a, r.peers.as_slice())
                    .map(Some),
                OnAllocation::ChannelBind(r) => self.channel_bind(now, ctx, &mut a, r).map(Some),
                // Answered when the driver's connection attempt ends.
                OnAllocation::Connect(r) => self.connect(now, ctx, &mut a, &auth, r).map(|()| None),
            })
        };
        let ended = a.expires <= now;
        self.allocations.insert(ctx.five_tuple, a);
        if ended {
            // A Refresh with lifetime 0: its data-plane removals go out before the answer.
            self.delete_allocation(ctx.five_tuple);
        }
        match result {
            Ok(Some(b)) => self.finish_response(ctx, Some(&auth), b, 200),
            Ok(None) => {}
            Err(e) => self.error(ctx, Some(&auth), e, &[]),
        }
    }

    /// RFC 8656 section 7.2: desired = max(default, min(requested, max)).
    fn lifetime_for(&self, requested: Option<Duration>) -> Duration {
        match requested {
            None => self.cfg.default_lifetime,
            Some(r) => r
                .min(self.cfg.max_lifetime)
                .max(self.cfg.default_lifetime.min(self.cfg.max_lifetime)),
        }
    }

    /// RFC 8656 section 7.2 in its order: a live 5-tuple first (437, or the same answer
    /// again for a retransmission), then the request's attributes, then quotas and ports.
    /// Success is answered when the driver has bound the relayed address.
    fn allocate(
        &mut self,
        now: Instant,
        msg: &Message<&[u8]>,
        ctx: &Ctx,
        auth: &Auth,
    ) -> Result<(), TurnError> {
        if let Some(a) = self.allocations.get(&ctx.five_tuple) {
            if a.tid == ctx.tid && a.auth.username == auth.username {
                // A retransmission of the request that created it: answer the same way.
                let remaining = a.expires.saturating_duration_since(now);
                let ctx = Ctx {
                    fingerprint: a.fingerprint,
                    ..*ctx
                };
                let b = allocate_success(&ctx, a, remaining, &self.cfg.external);
                let auth = a.auth.clone();
                self.finish_response(&ctx, Some(&auth), b, 200);
                return Ok(());
            }
            return Err(TurnError::AllocationMismatch);
        }
        if self.pending_by_tuple.contains_key(&ctx.five_tuple) {
            return Ok(()); // a retransmission while the bind is in progress
        }
        let req = request::Allocate::parse(msg)?;
        // RFC 6062 section 5.1: a TCP relay for a client on a TCP (or TLS) connection.
        if req.tcp && ctx.five_tuple.transport != Transport::Tcp {
            return Err(TurnError::BadRequest(BadRequest::Tcp));
        }
        // Draining, or as busy as the operator wants this server: another one takes it.
        let busy = self.cfg.alternate_above > 0
            && self.allocations.len() + self.pending.len() >= self.cfg.alternate_above as usize;
        if self.draining || busy {
            if let Some(alt) = self.alternate_for(ctx.five_tuple.client.0) {
                let v = attr::encode_address(alt);
                self.error(
                    ctx,
                    Some(auth),
                    TurnError::TryAlternate,
                    &[(attr::ALTERNATE_SERVER, v)],
                );
                return Ok(());
            }
            if self.draining {
                return Err(TurnError::InsufficientCapacity);
            }
        }
        let ip = match req.family {
            Family::V4 => self.cfg.relay_ipv4,
            Family::V6 => self.cfg.relay_ipv6,
        }
        .ok_or(TurnError::AddressFamilyNotSupported)?;
        let lifetime = self.lifetime_for(req.lifetime);
        // Quotas, counting allocations being bound.
        let user_count = self.user_counts.get(&auth.username).copied().unwrap_or(0);
        if self.cfg.user_quota > 0 && user_count >= self.cfg.user_quota {
            self.stats.quota(Quota::User);
            return Err(TurnError::AllocationQuotaReached);
        }
        let ip_key = quota_key(ctx.five_tuple.client.0.ip());
        let ip_count = self.ip_counts.get(&ip_key).copied().unwrap_or(0);
        if self.cfg.ip_quota > 0 && ip_count >= self.cfg.ip_quota {
            self.stats.quota(Quota::Client);
            return Err(TurnError::AllocationQuotaReached);
        }
        let total = self.allocations.len() + self.pending.len();
        if self.cfg.total_quota > 0 && total >= self.cfg.total_quota as usize {
            self.stats.quota(Quota::Total);
            return Err(TurnError::AllocationQuotaReached);
        }
        // Port: from a reservation, or a fresh (even) one.
        let (port, reserved) = if let Some(t) = req.reservation {
            match self.reservations.remove(&t) {
                Some(r) if r.expires > now && r.ip == ip => (r.port, true),
                Some(r) => {
                    self.used_ports.remove(&(r.ip, r.port));
                    return Err(TurnError::InsufficientCapacity);
                }
                None => return Err(TurnError::InsufficientCapacity),
            }
        } else {
            let even = req.even_port;
            let port = self
                .pick_port(ip, even.is_some(), even == Some(true))
                .ok_or(TurnError::InsufficientCapacity)?;
            (port, false)
        };
        *self.user_counts.entry(auth.username.clone()).or_insert(0) += 1;
        *self.ip_counts.entry(ip_key).or_insert(0) += 1;
        if !self.user_slots.contains_key(&auth.username) {
            let next = self.user_slots.len() as u32;
            let slot = self.free_user_slots.pop().unwrap_or(next);
            self.limits.reset_user(slot);
            self.user_slots.insert(auth.username.clone(), slot);
        }
        self.start_bind(Pending {
            five_tuple: ctx.five_tuple,
            tid: ctx.tid,
            auth: auth.clone(),
            fingerprint: ctx.fingerprint,
            lifetime,
            ip,
            port,
            attempts: 0,
            failed: Vec::new(),
            even_port: req.even_port,
            reserved,
            dont_fragment: req.dont_fragment,
            ipv6_unavailable: req.ipv6_unavailable,
            tcp: req.tcp,
        });
        Ok(())
    }

    fn start_bind(&mut self, p: Pending) {
        let token = BindToken(self.next_token);
        self.next_token += 1;
        self.used_ports.insert((p.ip, p.port));
        self.pending_by_tuple.insert(p.five_tuple, token);
        let relay = RelayAddr(SocketAddr::new(p.ip, p.port));
        let dont_fragment = p.dont_fragment;
        let transport = if p.tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        self.pending.insert(token, p);
        self.outputs.push_back(Output::BindRelay {
            token,
            relay,
            dont_fragment,
            transport,
        });
    }

    /// A free port in the range: random probes first, then a scan from a random start.
    /// `even`: an even port; `pair`: also the next port free (for a reservation).
    fn pick_port(&mut self, ip: IpAddr, even: bool, pair: bool) -> Option<u16> {
        let (lo, hi) = (self.cfg.min_port as u32, self.cfg.max_port as u32);
        if lo > hi {
            return None;
        }
        let span = hi - lo + 1;
        let ok = |s: &Self, p: u32| {
            p <= hi
                && (!even || p.is_multiple_of(2))
                && !s.used_ports.contains(&(ip, p as u16))
                && (!pair || (p < hi && !s.used_ports.contains(&(ip, p as u16 + 1))))
        };
        for _ in 0..16 {
            let p = lo + self.rng.next_u32() % span;
            if ok(self, p) {
                return Some(self.claim(ip, p as u16, pair));
            }
        }
        let start = self.rng.next_u32() % span;
        for i in 0..span {
            let p = lo + (start + i) % span;
            if ok(self, p) {
                return Some(self.claim(ip, p as u16, pair));
            }
        }
        None
    }

    fn claim(&mut self, ip: IpAddr, port: u16, pair: bool) -> u16 {
        if pair {
            self.used_ports.insert((ip, port + 1));
        }
        port
    }

    /// Lifetime 0 ends the allocation: `a.expires` becomes `now` and the caller deletes
    /// it before the answer goes out.
    fn refresh(
        &mut self,
        now: Instant,
        ctx: &Ctx,
        a: &mut Allocation,
        req: request::Refresh,
    ) -> Result<MessageBuilder, TurnError> {
        if req.family.is_some_and(|f| f != Family::of(a.relay.0)) {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        let lifetime = if req.lifetime == Some(Duration::ZERO) {
            a.expires = now;
            Duration::ZERO
        } else {
            let l = self.lifetime_for(req.lifetime);
            let expires = now + l;
            a.expires = expires;
            // A shorter lifetime than before moves the allocation's deadline earlier.
            self.schedule(ctx.five_tuple, a, expires);
            let user = self.user_slot(&a.auth.username);
            self.emit(Change::InstallAllocation {
                five_tuple: ctx.five_tuple,
                relay: a.relay,
                expires,
                user,
            });
            l
        };
        let mut b = MessageBuilder::new(Method::Refresh, Class::Success, ctx.tid);
        b.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
        Ok(b)
    }

    /// Filter first (a denied peer gets 403 whatever its family), then family.
    fn check_peers(
        &self,
        peers: &[SocketAddr],
        relay: RelayAddr,
        endpoint: bool,
    ) -> Result<(), TurnError> {
        for p in peers {
            if endpoint {
                let is_relayed = self.is_relayed(*p);
                self.cfg.filter.check_endpoint(*p, is_relayed)?;
            } else {
                self.cfg.filter.check_ip(p.ip())?;
            }
        }
        if peers.iter().any(|p| p.is_ipv4() != relay.0.is_ipv4()) {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        Ok(())
    }

    fn is_relayed(&self, p: SocketAddr) -> bool {
        self.by_relay.contains_key(&self.as_relay(p))
    }

    fn install_permission(&mut self, now: Instant, ft: FiveTuple, a: &mut Allocation, ip: IpAddr) {
        let expires = now + self.cfg.permission_lifetime;
        a.permissions.insert(ip, expires);
        self.emit(Change::InstallPermission {
            relay: a.relay,
            peer: ip,
            expires,
        });
        self.schedule(ft, a, expires);
    }

    fn create_permission(
        &mut self,
        now: Instant,
        ctx: &Ctx,
        a: &mut Allocation,
        peers: &[SocketAddr],
    ) -> Result<MessageBuilder, TurnError> {
        let peers: Vec<SocketAddr> = peers.iter().map(|p| self.inward(*p)).collect();
        let peers = peers.as_slice();
        self.check_peers(peers, a.relay, false)?;
        let new: HashSet<IpAddr> = peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !a.permissions.contains_key(ip))
            .collect();
        if a.permissions.len() + new.len() > self.cfg.max_permissions {
            self.stats.quota(Quota::Permissions);
            return Err(TurnError::InsufficientCapacity);
        }
        for p in peers {
            self.install_permission(now, ctx.five_tuple, a, p.ip());
        }
        Ok(MessageBuilder::new(
            Method::CreatePermission,
            Class::Success,
            ctx.tid,
        ))
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        ctx: &Ctx,
        a: &mut Allocation,
        req: request::ChannelBind,
    ) -> Result<MessageBuilder, TurnError> {
        if a.tcp.is_some() {
            // RFC 6062: a TCP allocation's data goes over connections, never channels.
            return Err(TurnError::BadRequest(BadRequest::Tcp));
        }
        let channel = req.channel;
        let peers: Vec<SocketAddr> = req
            .peers
            .as_slice()
            .iter()
            .map(|p| self.inward(*p))
            .collect();
        self.check_peers(&peers, a.relay, true)?;
        let &[peer] = peers.as_slice() else {
            return Err(TurnError::BadRequest(BadRequest::Malformed));
        };
        let peer = PeerAddr(peer);
        if let Some((bound, _)) = a.channels.get(&channel) {
            if *bound != peer {
                return Err(TurnError::BadRequest(BadRequest::ChannelInUse));
            }
        }
        if let Some(c) = a.channel_by_peer.get(&peer) {
            if *c != channel {
                return Err(TurnError::BadRequest(BadRequest::PeerInUse));
            }
        }
        if !a.permissions.contains_key(&peer.0.ip())
            && a.permissions.len() >= self.cfg.max_permissions
        {
            self.stats.quota(Quota::Permissions);
            return Err(TurnError::InsufficientCapacity);
        }
        let new = !a.channels.contains_key(&channel);
        if new && a.channels.len() >= self.cfg.max_channels {
            self.stats.quota(Quota::Channels);
            return Err(TurnError::InsufficientCapacity);
        }
        let hairpin = if new { self.hairpin_key(peer) } else { None };
        let expires = now + self.cfg.channel_lifetime;
        a.channels.insert(channel, (peer, expires));
        a.channel_by_peer.insert(peer, channel);
        if let Some(h) = hairpin {
            self.hairpins
                .entry(h)
                .or_default()
                .push((ctx.five_tuple, channel));
        }
        // The permission first, so that a driver never has a channel without one.
        self.install_permission(now, ctx.five_tuple, a, peer.0.ip());
        self.emit(Change::InstallChannel {
            five_tuple: ctx.five_tuple,
            relay: a.relay,
            channel,
            peer,
            expires,
        });
        self.schedule(ctx.five_tuple, a, expires);
        Ok(MessageBuilder::new(
            Method::ChannelBind,
            Class::Success,
            ctx.tid,
        ))
    }

    /// Send indication (RFC 8656 section 10.2): relayed if the peer has a live permission
    /// and passes the filter; otherwise silently dropped. Never refreshes anything.
    fn send_indication(&mut self, now: Instant, msg: &Message<&[u8]>, ft: FiveTuple) {
        let Some(a) = self.allocations.get(&ft) else {
            return;
        };
        if a.expires <= now || a.tcp.is_some() {
            return;
        }
        let Some(request::Send { peer, data }) = request::Send::parse(msg) else {
            return;
        };
        let peer = self.inward(peer);
        if peer.is_ipv4() != a.relay.0.is_ipv4() {
            return;
        }
        match a.permissions.get(&peer.ip()) {
            Some(e) if *e > now => {}
            _ => return,
        }
        if self
            .cfg
            .filter
            .check_endpoint(peer, self.is_relayed(peer))
            .is_err()
        {
            return;
        }
        let relay = a.relay;
        if !self.data.admit_send(now, relay, data.len()) {
            return;
        }
        self.data.count_to_peer(relay, data.len());
        self.transmit(relay.0, peer, data.to_vec(), Transport::Udp);
    }
}

/// The success response to the Allocate request that created `a` (or to its
/// retransmission, with the lifetime left).
/// `external` gives the relayed address's public form.
fn allocate_success(
    ctx: &Ctx,
    a: &Allocation,
    lifetime: Duration,
    external: &ExternalIps,
) -> MessageBuilder {
    let mut b = MessageBuilder::new(Method::Allocate, Class::Success, ctx.tid);
    b.xor_addr(attr::XOR_RELAYED_ADDRESS, external.public(a.relay.0));
    b.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
    if let Some(t) = a.reservation_token {
        b.attr(attr::RESERVATION_TOKEN, &t);
    }
    if a.ipv6_unavailable {
        // ADDRESS-ERROR-CODE: family IPv6, then an ERROR-CODE-shaped value (RFC 8656 18.12).
        let mut v = vec![attr::FAMILY_IPV6, 0, 4, 40];
        v.extend_from_slice(b"Address Family not Supported");
        b.attr(attr::ADDRESS_ERROR_CODE, &v);
    }
    b.xor_addr(attr::XOR_MAPPED_ADDRESS, ctx.five_tuple.client.0);
    b
}
