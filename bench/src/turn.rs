//! TURN sessions for the generator: credentials (static or coturn's REST scheme) and a
//! blocking, bounded request/response exchange over one connected socket, built on the
//! sans-IO `xturn_control::client::TurnClient` (which learns REALM/NONCE from 401/438).

use crate::net;
use anyhow::{anyhow, bail, Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;
use xturn_control::auth::rest_password;
use xturn_control::client::{self, Answer, TurnClient};
use xturn_control::wire::{attr, Message, MessageBuilder, Method, TransactionId};

/// A user name and password for the long-term credential mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// `NAME:PASSWORD` (the password may contain ':').
    pub fn parse_user(s: &str) -> Result<Self> {
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("--user must be NAME:PASSWORD, got {s:?}"))?;
        if u.is_empty() {
            bail!("--user has an empty name");
        }
        Ok(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    /// coturn's TURN REST API credentials: user name `expiry:user`, password
    /// base64(HMAC-SHA1(secret, user name)), with expiry in unix seconds.
    pub fn rest(secret: &str, user: &str, expiry_unix: u64) -> Self {
        let username = format!("{expiry_unix}:{user}");
        let password = rest_password(secret.as_bytes(), &username);
        Credentials { username, password }
    }
}

/// An error response from the server, with its code (for callers that react to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorResponse(pub u16);

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error response {}", self.0)
    }
}

impl std::error::Error for ErrorResponse {}

/// The error code of a failed request, if the server answered with one.
pub fn error_code(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<ErrorResponse>().map(|c| c.0)
}

/// A fresh random transaction id.
pub fn random_tid() -> TransactionId {
    TransactionId(rand::random())
}

/// One client transport address (a connected UDP socket) with its credential state.
pub struct Session {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    pub client: TurnClient,
    pub relay: Option<SocketAddr>,
}

/// First retransmission timeout; doubled on each retransmission (RFC 8489 section 6.2.1
/// uses 500 ms for the Internet; this is a lab).
const RTO: Duration = Duration::from_millis(200);
const TRANSMISSIONS: u32 = 4;
/// 401/438 rounds per request: the first teaches REALM/NONCE, a second covers a nonce
/// the server replaced (coturn issues a new nonce per allocation).
const AUTH_ROUNDS: u32 = 3;

impl Session {
    /// A new non-blocking socket on `bind_ip` (ephemeral port) connected to `server`.
    pub fn open(
        bind_ip: std::net::IpAddr,
        server: SocketAddr,
        creds: &Credentials,
    ) -> Result<Self> {
        Self::open_at(SocketAddr::new(bind_ip, 0), server, creds)
    }

    /// A new non-blocking socket bound to `bind` (a fixed port, or port 0 for an
    /// ephemeral one) connected to `server`.
    pub fn open_at(bind: SocketAddr, server: SocketAddr, creds: &Credentials) -> Result<Self> {
        let sock = net::udp_socket(bind, false, Some(server))
            .with_context(|| format!("cannot open a UDP socket on {bind} towards {server}"))?;
        let local = sock.local_addr()?;
        Ok(Session {
            sock,
            local,
            client: TurnClient::new(&creds.username, &creds.password),
            relay: None,
        })
    }

    /// Send `req` and wait for the response with transaction id `tid`, retransmitting.
    /// Other datagrams (late ChannelData, stray responses) are skipped.
    fn exchange(&self, req: &[u8], tid: TransactionId) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        let mut rto = RTO;
        for _ in 0..TRANSMISSIONS {
            let _ = self.sock.send(req);
            let end = std::time::Instant::now() + rto;
            loop {
                let left = end.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                if !net::wait_readable(self.sock.as_raw_fd(), left.as_millis() as i32 + 1) {
                    continue;
                }
                match self.sock.recv(&mut buf) {
                    Ok(n) => {
                        if let Ok(m) = Message::new_checked(&buf[..n]) {
                            if m.transaction_id() == tid {
                                return Ok(buf[..n].to_vec());
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => bail!("socket error waiting for the server: {e}"),
                }
            }
            rto *= 2;
        }
        bail!("no response after {TRANSMISSIONS} transmissions")
    }

    /// A request with authentication rounds; returns the success response.
    pub fn transact<F>(&mut self, method: Method, body: F) -> Result<Vec<u8>>
    where
        F: Fn(&mut MessageBuilder),
    {
        for round in 0..AUTH_ROUNDS {
            let tid = random_tid();
            let req = self.client.request(method, tid, &body);
            let resp = self
                .exchange(&req, tid)
                .with_context(|| format!("{method:?} from {}", self.local))?;
            match self.client.answer(&resp) {
                Answer::Success => return Ok(resp),
                Answer::Retry => continue,
                // A 401 after credentials were sent: the server replaced the nonce.
                Answer::Error(401) if round + 1 < AUTH_ROUNDS => continue,
                Answer::Error(c) => {
                    return Err(anyhow::Error::new(ErrorResponse(c))
                        .context(format!("{method:?} from {} failed", self.local)))
                }
                Answer::Invalid => bail!("{method:?} from {}: invalid response", self.local),
            }
        }
        bail!(
            "{method:?} from {}: too many 401/438 rounds (wrong credentials?)",
            self.local
        )
    }

    /// Allocate a UDP relayed address; returns it.
    pub fn allocate(&mut self) -> Result<SocketAddr> {
        let resp = self.transact(Method::Allocate, client::allocate_body(None))?;
        let relay = client::xor_address(&resp, attr::XOR_RELAYED_ADDRESS)
            .ok_or_else(|| anyhow!("Allocate success without XOR-RELAYED-ADDRESS"))?;
        self.relay = Some(relay);
        Ok(relay)
    }

    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<()> {
        self.transact(
            Method::CreatePermission,
            client::permission_body(peers.to_vec()),
        )
        .map(|_| ())
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<()> {
        self.transact(
            Method::ChannelBind,
            client::channel_bind_body(channel, peer),
        )
        .map(|_| ())
    }

    /// Delete the allocation (Refresh with LIFETIME 0).
    pub fn delete(&mut self) -> Result<()> {
        if self.relay.is_none() {
            return Ok(());
        }
        self.transact(Method::Refresh, client::refresh_body(Duration::ZERO))?;
        self.relay = None;
        Ok(())
    }
}

/// Wait until `server` answers a Binding request (bounded by `timeout`).
pub fn ping(bind_ip: std::net::IpAddr, server: SocketAddr, timeout: Duration) -> Result<Duration> {
    let sock = net::udp_socket(SocketAddr::new(bind_ip, 0), false, Some(server))?;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < timeout {
        let tid = random_tid();
        let t0 = std::time::Instant::now();
        let _ = sock.send(&client::binding_request(tid, true));
        while t0.elapsed() < Duration::from_millis(100) {
            if !net::wait_readable(sock.as_raw_fd(), 20) {
                continue;
            }
            if let Ok(n) = sock.recv(&mut buf) {
                if let Ok(m) = Message::new_checked(&buf[..n]) {
                    if m.transaction_id() == tid {
                        return Ok(t0.elapsed());
                    }
                }
            }
        }
    }
    bail!("{server} did not answer a Binding request within {timeout:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_survive_context() {
        let e = anyhow::Error::new(ErrorResponse(437)).context("Allocate from x failed");
        assert_eq!(error_code(&e), Some(437));
        assert!(format!("{e:#}").contains("error response 437"));
        assert_eq!(error_code(&anyhow!("other")), None);
    }

    #[test]
    fn user_parsing() {
        let c = Credentials::parse_user("bench:pa:ss").unwrap();
        assert_eq!(c.username, "bench");
        assert_eq!(c.password, "pa:ss");
        assert!(Credentials::parse_user("nocolon").is_err());
        assert!(Credentials::parse_user(":x").is_err());
    }

    #[test]
    fn rest_credentials_match_coturn_scheme() {
        // Value computed independently with:
        // printf '%s' 1700000000:bench | openssl dgst -sha1 -hmac s3cret -binary | base64
        let c = Credentials::rest("s3cret", "bench", 1_700_000_000);
        assert_eq!(c.username, "1700000000:bench");
        assert_eq!(c.password, "a5A18PtwcZP8Oh0MnGLghTN3knM=");
        assert_eq!(
            xturn_control::auth::rest_expiry(&c.username),
            Some(1_700_000_000)
        );
    }
}
