//! What an operator asks of a running server (`xturn sessions`, `xturn kill`): the live
//! allocations, and ending one, or all of a user's, at once. A killed allocation is
//! deleted as an expired one is: every data-plane copy and the XDP maps get the same
//! `Remove*` outputs, its port and quota are freed, and its client's next request gets 437.

use super::{Allocation, Server};
use crate::types::{FiveTuple, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One allocation as `xturn sessions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub client: SocketAddr,
    /// The listening address the client talks to.
    pub server: SocketAddr,
    pub relay: SocketAddr,
    /// UDP, or TCP (plain or TLS) on the client leg.
    pub transport: Transport,
    pub age: Duration,
    pub expires_in: Duration,
    pub permissions: usize,
    pub channels: usize,
}

fn session(now: Instant, ft: &FiveTuple, a: &Allocation) -> Session {
    Session {
        user: a.auth.username.clone(),
        client: ft.client.0,
        server: ft.server,
        relay: a.relay.0,
        transport: ft.transport,
        age: now.saturating_duration_since(a.created),
        expires_in: a.expires.saturating_duration_since(now),
        permissions: a.permissions.len(),
        channels: a.channels.len(),
    }
}

/// `username` (as authenticated) is `user`, or a TURN REST name for it.
fn names_user(username: &str, user: &str) -> bool {
    if username == user {
        return true;
    }
    let stamp = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match username.split_once(':') {
        Some((a, b)) if stamp(a) && b == user => true,
        _ => username
            .rsplit_once(':')
            .is_some_and(|(a, b)| a == user && stamp(b)),
    }
}

impl Server {
    /// Every allocation, by relayed address.
    pub fn sessions(&self, now: Instant) -> Vec<Session> {
        let mut v: Vec<Session> = self
            .allocations
            .iter()
            .map(|(ft, a)| session(now, ft, a))
            .collect();
        v.sort_by_key(|s| (s.relay.is_ipv6(), s.relay));
        v
    }

    /// End the allocation whose relayed address is `relay` (embedded IPv4 forms decoded,
    /// as for peers); what it was, or `None` if there is none.
    pub fn kill(&mut self, now: Instant, relay: SocketAddr) -> Option<Session> {
        let ft = *self.by_relay.get(&self.as_relay(relay))?;
        let s = session(now, &ft, self.allocations.get(&ft)?);
        self.delete_allocation(ft);
        Some(s)
    }

    /// End every allocation of `user`: that name as authenticated, or a TURN REST name
    /// carrying it (`expiry:user`, `user:expiry`); what they were.
    pub fn kill_user(&mut self, now: Instant, user: &str) -> Vec<Session> {
        let mut doomed: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| names_user(&a.auth.username, user))
            .map(|(ft, _)| *ft)
            .collect();
        doomed.sort_by_key(|ft| (ft.client.0, ft.server));
        let mut killed = Vec::new();
        for ft in doomed {
            if let Some(a) = self.allocations.get(&ft) {
                killed.push(session(now, &ft, a));
                self.delete_allocation(ft);
            }
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::names_user;

    #[test]
    fn rest_names_carry_their_user() {
        assert!(names_user("alice", "alice"));
        assert!(names_user("1700000000:alice", "alice"));
        assert!(names_user("alice:1700000000", "alice"));
        assert!(!names_user("1700000000:alice", "1700000000"));
        assert!(!names_user("mallory:alice", "alice"));
        assert!(!names_user("alicex", "alice"));
        assert!(!names_user(":alice", "alice"));
    }
}
