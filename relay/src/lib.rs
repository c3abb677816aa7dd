//! `xturn-relay`: everything of the `xturn` binary but its command line, so that the
//! benchmark, the tests and the fuzz targets drive the same code.
//!
//! - [`serve`]: start-up of the whole server (limits, logging, signals, the XDP program),
//!   then [`driver`]: the socket workers around the sans-IO control plane of
//!   `xturn-control`, and the supervision loop.
//! - [`afxdp`]: the AF_XDP fast path: frame rewriting, the ring/UMEM module, the forwarder
//!   loop and its threads inside the server.
//! - [`xdp`] (loader and maps of the XDP program), [`probe`] (what each interface can do),
//!   [`netlink`], [`net`] and [`mmsg`] (sockets and batched UDP I/O), [`host`],
//!   [`privileges`], [`config`] (command line and configuration file).
//! - [`status`]: the status file's schema, written by the server and read by
//!   [`stats`] (`xturn stats`) and the benchmark's report.
//! - [`update`]: what the control plane tells the workers and forwarders.
//! - [`drain`]: `xturn drain`, which asks a running server to drain; [`admin`]: the admin
//!   socket and `xturn sessions` / `xturn kill`.
//! - [`metrics`] (`--metrics-listen`: `/metrics`, `/healthz`, `/readyz`) and [`systemd`]
//!   (sd_notify: ready, reloading, stopping, watchdog pings while every thread serves).
//! - [`natprobe`]: `xturn nat-type`, the RFC 5780 NAT behaviour tests as a client.
//! - [`stream`] and [`tls`]: TURN over TCP and TLS on the client leg.

pub mod admin;
pub mod afxdp;
pub mod config;
pub mod drain;
pub mod driver;
pub mod host;
pub mod metrics;
pub mod mmsg;
pub mod natprobe;
pub mod net;
pub mod netlink;
pub mod privileges;
pub mod probe;
pub mod serve;
pub mod spawn;
pub mod stats;
pub mod status;
pub mod stream;
pub mod systemd;
pub mod tls;
pub mod update;
pub mod xdp;
