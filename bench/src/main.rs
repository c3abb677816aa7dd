//! `xturn-bench`: see the crate documentation of `xturn_bench` and bench/README.md.

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use xturn_bench::cli::{Cli, Cmd};
use xturn_bench::{
    churn, net, report, sink, spoof, traffic, turn, xdp_bench, xdp_relay_load, xsk_reflect,
};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xturn-bench: {e:#}");
        std::process::exit(2);
    }
}

/// Write `text` to `path` atomically (a reader never sees half a file).
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
}

/// Print the human summary or JSON, and write the JSON file if asked.
fn emit<T: Serialize>(r: &T, human: String, json: bool, out: Option<&Path>) -> Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    if let Some(p) = out {
        write_atomic(p, &text)?;
    }
    if json {
        println!("{text}");
    } else {
        print!("{human}");
    }
    Ok(())
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Stun(a) => {
            let r = traffic::run_stun(a)?;
            emit(&r, r.human(), a.common.json, a.common.json_out.as_deref())
        }
        Cmd::Relay(a) => {
            let r = traffic::run_traffic(a, false)?;
            emit(&r, r.human(), a.common.json, a.common.json_out.as_deref())
        }
        Cmd::Echo(a) => {
            let r = traffic::run_traffic(a, true)?;
            emit(&r, r.human(), a.common.json, a.common.json_out.as_deref())
        }
        Cmd::Spoof(a) => {
            let r = spoof::run_spoof(a)?;
            emit(&r, r.human(), a.json, None)
        }
        Cmd::Churn(a) => {
            let r = churn::run_churn(a)?;
            emit(&r, r.human(), a.common.json, a.common.json_out.as_deref())
        }
        Cmd::Stream(a) => {
            let r = xturn_bench::stream::run_stream(a)?;
            emit(&r, r.human(), a.json, a.json_out.as_deref())
        }
        Cmd::Sink(a) => {
            let r = sink::run_sink(a)?;
            emit(&r, r.human(), a.json, a.json_out.as_deref())
        }
        Cmd::Reflect(a) => {
            let r = sink::run_reflect(a)?;
            emit(&r, r.human(), a.json, a.json_out.as_deref())
        }
        Cmd::Ping(a) => {
            let bind = match a.bind {
                Some(ip) => ip,
                None => net::local_addr_towards(a.server)?,
            };
            let rtt = turn::ping(
                bind,
                a.server,
                Duration::from_secs_f64(a.timeout.clamp(0.1, 300.0)),
            )?;
            println!("{} answered in {} µs", a.server, rtt.as_micros());
            Ok(())
        }
        Cmd::Report(a) => report::run_report(a),
        Cmd::Regress(a) => report::run_regress(a),
        Cmd::XdpPass(a) => xdp_bench::run_xdp_pass(a),
        Cmd::XdpReflect(a) => xdp_bench::run_xdp_reflect(a),
        Cmd::XdpLoad(a) => {
            let r = xdp_bench::run_xdp_load(a)?;
            emit(&r, r.human(), a.common.json, a.common.json_out.as_deref())
        }
        Cmd::XdpRelayLoad(a) => {
            let r = xdp_relay_load::run_xdp_relay_load(a)?;
            emit(&r, r.human(), a.common.json, a.common.json_out.as_deref())
        }
        Cmd::XdpDrop(a) => xdp_bench::run_xdp_drop(a),
        Cmd::XdpEcho(a) => xdp_bench::run_xdp_echo(a),
        Cmd::XdpCost(a) => {
            let r = xdp_bench::run_xdp_cost(a)?;
            emit(&r, r.human(), a.json, a.json_out.as_deref())
        }
        Cmd::XskReflect(a) => {
            let r = xsk_reflect::run_xsk_reflect(a)?;
            emit(&r, r.human(), a.json, a.json_out.as_deref())
        }
    }
}
