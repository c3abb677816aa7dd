//! `report`: turn a directory of JSON results (`<server>-<test>.json`, written by
//! bench/compare.sh) into RESULTS.md and an SVG latency percentile plot. Every figure in
//! the Markdown comes from those files; nothing is typed in by hand.
//!
//! - [`schema`]: the result files and how they load;
//! - [`format`]: number formats and table rows;
//! - [`markdown`]: the document;
//! - [`defaults`], [`xdp`], [`afxdp`], [`inkernel`], [`closed_loop`]: its sections;
//! - [`regress`]: before/after runs of a change compared figure by figure.

use crate::churn::ChurnReport;
use crate::cli::ReportArgs;
use crate::plot::{self, Series};
use crate::stats::{fmt_pct, TrafficReport};
use crate::xdp_bench::{XdpCostReport, XdpLoadReport};
use crate::xdp_relay_load::XdpRelayLoadReport;
use crate::xsk_reflect::XskReflectReport;
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use xturn_relay::afxdp::forwarder::ForwarderStats;
use xturn_relay::afxdp::ring::{PortCounters, QueueStats};
use xturn_relay::stats::StatsOutput;
use xturn_relay::xdp::Counters as XdpCounters;
use xturn_xdp_common::Counter;

mod afxdp;
mod closed_loop;
mod defaults;
mod format;
mod inkernel;
mod markdown;
mod regress;
mod schema;
#[cfg(test)]
mod tests;
mod xdp;

pub use afxdp::*;
pub use closed_loop::*;
pub use defaults::*;
use format::*;
pub use inkernel::*;
pub use markdown::*;
pub use regress::run_regress;
pub use schema::*;
pub use xdp::*;

pub fn run_report(a: &ReportArgs) -> Result<()> {
    let res = load_dir(&a.dir)?;
    let svg_name = a
        .svg
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "latency.svg".into());
    let disturbed = std::fs::read_to_string(a.dir.join("interference.txt"))
        .map(|t| parse_interference(&t))
        .unwrap_or_default();
    let meta = Meta::resolve(a)?;
    let (mut md, svg) = render_markdown(&res, &disturbed, &meta, &svg_name, &machine());
    // The soak (bench/soak.sh) is its own run: its last report, beside RESULTS.md, is kept.
    if let Ok(soak) = std::fs::read_to_string(a.out.with_file_name("soak.md")) {
        md.push_str("\n## Hardening soak (bench/soak.sh, a run of its own)\n\n");
        md.push_str(&soak);
    }
    // And TURN over TCP and TLS (bench/stream.sh).
    if let Ok(stream) = std::fs::read_to_string(a.out.with_file_name("stream.md")) {
        md.push_str("\n## TURN over TCP and TLS (bench/stream.sh, a run of its own)\n\n");
        md.push_str(&stream);
    }
    // So is a before/after check of a change (`xturn-bench regress`).
    if let Ok(check) = std::fs::read_to_string(a.out.with_file_name("regression.md")) {
        md.push_str("\n## Before/after check (xturn-bench regress, runs of their own)\n\n");
        md.push_str(&check);
    }
    std::fs::write(&a.out, md).with_context(|| format!("cannot write {}", a.out.display()))?;
    if !svg.is_empty() {
        std::fs::write(&a.svg, svg).with_context(|| format!("cannot write {}", a.svg.display()))?;
    }
    Ok(())
}
