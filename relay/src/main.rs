//! `xturn`: the TURN server binary, a command line over the `xturn_relay` library: the
//! server ([`xturn_relay::serve`]), `xturn stats` ([`xturn_relay::stats`]), `xturn check`,
//! `xturn drain` and the admin commands `xturn sessions` and `xturn kill`
//! ([`xturn_relay::admin`]).

use anyhow::Result;
use clap::Parser;
use xturn_relay::{admin, config, drain, natprobe, serve, stats};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xturn: {e:#}");
        std::process::exit(2);
    }
}

/// `xturn [OPTIONS]` runs the server; `xturn stats` reads the XDP counters.
#[derive(Debug, Parser)]
#[command(
    name = "xturn",
    version,
    about = "xturn: a STUN/TURN relay (RFC 8489/8656)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: config::Args,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the XDP program's counters (summed over CPUs) for every xturn XDP program
    /// attached on this machine, or the one on --xdp IFACE. Needs root.
    Stats(stats::StatsArgs),
    /// Say what `xturn --xdp IFACES` (with the same options) would run on each interface
    /// and which traffic would take which path, without sending a frame or changing
    /// anything. Exits 2, with the fix, when the server would refuse to start.
    Check(Box<config::Args>),
    /// Ask the running server (or --pid) to drain: no new allocations (300 Try Alternate
    /// with --alternate-server, else 508), the existing ones keep working, and it exits 0
    /// when the last ends or after --drain-timeout. The same as `kill -USR1 PID`.
    Drain(drain::DrainArgs),
    /// List the running server's allocations: user, client, relayed address, age, time
    /// left, and packets and bytes relayed per path (AF_XDP, sockets). Through its admin
    /// socket (/run/xturn/PID/admin.sock: root, xturn's user, its --status-group).
    Sessions(admin::SessionsArgs),
    /// End an allocation of the running server (by its relayed address) or all of a
    /// user's, on every path at once; the client's next request gets 437.
    Kill(admin::KillArgs),
    /// Tell the NAT this host is behind: the RFC 5780 mapping, filtering and hairpinning
    /// tests against a STUN server with an alternate address (xturn --alt-listening-ip),
    /// in RFC 4787's terms and the classic names (full cone, restricted cone,
    /// port-restricted cone, symmetric).
    NatType(natprobe::NatTypeArgs),
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Stats(a)) => stats::run(&a),
        Some(Command::Check(a)) => serve::check(*a),
        Some(Command::Drain(a)) => drain::run(&a),
        Some(Command::Sessions(a)) => admin::sessions(&a),
        Some(Command::Kill(a)) => admin::kill(&a),
        Some(Command::NatType(a)) => natprobe::run(&a),
        None => serve::serve(cli.server),
    }
}
