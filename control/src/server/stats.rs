//! What the control plane counted since it started, for the metrics endpoint: requests and
//! responses by method and code, authentication failures by reason, quota rejections by
//! quota. No per-user or per-address keys: the maps are bounded by the enums below.

use crate::wire::Method;
use std::collections::BTreeMap;

/// Why a request failed authentication (RFC 8489 section 9.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthFailure {
    /// No integrity attribute: answered 401 with a nonce (every client's first try).
    NoCredentials,
    /// Integrity without USERNAME/USERHASH, REALM or NONCE, malformed values, or a
    /// PASSWORD-ALGORITHMS mismatch: 400.
    BadRequest,
    /// A user name the server does not know, an expired REST name, or a USERHASH that
    /// matches nobody: 401.
    UnknownUser,
    /// A known user whose MESSAGE-INTEGRITY does not verify: 401.
    BadIntegrity,
    /// A nonce that is expired or was issued to another address: 438.
    StaleNonce,
    /// Authenticated as another user than the allocation's: 441.
    WrongUser,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 6] = [
        AuthFailure::NoCredentials,
        AuthFailure::BadRequest,
        AuthFailure::UnknownUser,
        AuthFailure::BadIntegrity,
        AuthFailure::StaleNonce,
        AuthFailure::WrongUser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AuthFailure::NoCredentials => "no_credentials",
            AuthFailure::BadRequest => "bad_request",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::WrongUser => "wrong_user",
        }
    }
}

/// Which quota refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quota {
    /// `--user-quota`: 486.
    User,
    /// `--ip-quota` (per client address): 486.
    Client,
    /// `--total-quota`: 486.
    Total,
    /// Permissions per allocation: 508.
    Permissions,
    /// Channels per allocation: 508.
    Channels,
    /// TCP peer connections per TCP allocation (RFC 6062): 508.
    Connections,
}

impl Quota {
    pub const ALL: [Quota; 6] = [
        Quota::User,
        Quota::Client,
        Quota::Total,
        Quota::Permissions,
        Quota::Channels,
        Quota::Connections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Quota::User => "user",
            Quota::Client => "client",
            Quota::Total => "total",
            Quota::Permissions => "permissions",
            Quota::Channels => "channels",
            Quota::Connections => "connections",
        }
    }
}

/// The name of a method the server handles, as the metrics label it.
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Binding => "binding",
        Method::Allocate => "allocate",
        Method::Refresh => "refresh",
        Method::Send => "send",
        Method::Data => "data",
        Method::CreatePermission => "create_permission",
        Method::ChannelBind => "channel_bind",
        Method::Connect => "connect",
        Method::ConnectionBind => "connection_bind",
        Method::ConnectionAttempt => "connection_attempt",
        Method::Other(_) => "other",
    }
}

/// The control plane's counts and its tables' sizes now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Requests (and Send indications) handed to the server, by method name.
    pub requests: BTreeMap<&'static str, u64>,
    /// Responses sent, by method name and code (200: success).
    pub responses: BTreeMap<(&'static str, u16), u64>,
    pub auth_failures: BTreeMap<AuthFailure, u64>,
    /// 401 answers not sent: over the per-prefix or server-wide budget.
    pub unauth_shed: u64,
    pub quota_rejections: BTreeMap<Quota, u64>,
    /// Gauges, filled by [`super::Server::stats`].
    pub allocations: u64,
    pub permissions: u64,
    pub channels: u64,
}

impl ControlStats {
    pub(super) fn request(&mut self, m: Method) {
        *self.requests.entry(method_name(m)).or_default() += 1;
    }

    pub(super) fn response(&mut self, m: Method, code: u16) {
        *self.responses.entry((method_name(m), code)).or_default() += 1;
    }

    pub(super) fn auth_failure(&mut self, f: AuthFailure) {
        *self.auth_failures.entry(f).or_default() += 1;
    }

    pub(super) fn quota(&mut self, q: Quota) {
        *self.quota_rejections.entry(q).or_default() += 1;
    }
}
