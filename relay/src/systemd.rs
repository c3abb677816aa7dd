//! systemd's service protocol (sd_notify(3)), for `Type=notify` units: `READY=1` once every
//! thread serves, `STATUS=` (allocations, draining), `RELOADING=1` .. `READY=1` around a
//! SIGHUP reload, `STOPPING=1` when the server stops, and `WATCHDOG=1` every half
//! `WatchdogSec` only while every thread turns its loop ([`Health`]): a stalled worker or
//! forwarder stops the pings and systemd restarts the server (`Restart=on-failure`).
//! Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.
//!
//! The datagrams are sent by the `sd-notify` crate (a connect and a send on a Unix datagram
//! socket per message, from the supervising loop only).

use crate::metrics::Health;
use sd_notify::NotifyState;
use std::time::{Duration, Instant};

/// What the supervising loop tells systemd.
pub struct Notifier {
    /// `$NOTIFY_SOCKET` is set.
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, when systemd asks for pings.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
    /// The names of the late threads last logged, so that a stall is logged once, not
    /// every turn.
    late: Option<String>,
    warned: bool,
}

impl Notifier {
    /// Read `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (at start, before any
    /// thread runs).
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let ping_every = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        if let (true, Some(every)) = (enabled, ping_every) {
            tracing::info!("systemd watchdog: a ping every {every:?} while every thread serves");
        }
        Notifier {
            enabled,
            ping_every: if enabled { ping_every } else { None },
            last_ping: None,
            last_status: String::new(),
            late: None,
            warned: false,
        }
    }

    fn send(&mut self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned {
                tracing::warn!("cannot notify systemd ($NOTIFY_SOCKET): {e}");
                self.warned = true;
            }
        }
    }

    /// Every thread started: systemd may order what depends on xturn after it.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins (`systemctl reload` waits for the [`Notifier::reloaded`] that follows).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is over (applied or refused: the server serves either way).
    pub fn reloaded(&mut self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `STATUS=` for `systemctl status`, sent when it changes.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            self.send(&[NotifyState::Status(status)]);
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// One turn of the supervising loop: ping when due and every thread serves.
    pub fn watchdog(&mut self, now: Instant, health: &Health) {
        let Some(every) = self.ping_every else {
            return;
        };
        let late = health.late();
        if late.is_empty() {
            if self.late.take().is_some() {
                tracing::info!("every thread serves again: systemd watchdog pings resume");
            }
            if self
                .last_ping
                .is_none_or(|t| now.duration_since(t) >= every)
            {
                self.last_ping = Some(now);
                self.send(&[NotifyState::Watchdog]);
            }
            return;
        }
        let names = late
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        if self.late.as_deref() != Some(names.as_str()) {
            let ages: Vec<String> = late
                .iter()
                .map(|(name, age)| format!("{name}: no turn of its loop for {age} ms"))
                .collect();
            tracing::error!(
                "systemd watchdog pings withheld (systemd restarts xturn if this lasts \
                 WatchdogSec): {}",
                ages.join("; ")
            );
            self.late = Some(names);
        }
    }
}
