//! `xturn drain`: ask a running server to drain, the same as `kill -USR1 PID`: it takes no
//! new allocations (300 Try Alternate with `--alternate-server`, else 508), keeps serving
//! the ones it has, and exits 0 when the last ends or after `--drain-timeout`.

use crate::stats;
use crate::status::STATUS_DIR;
use anyhow::{bail, Context, Result};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The server's process id; needed only when several xturn servers run here.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// The process name of `pid`, if it runs.
fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn run(a: &DrainArgs) -> Result<()> {
    let pid = match a.pid {
        Some(p) => p,
        None => {
            let running: Vec<u32> = stats::servers(Path::new(STATUS_DIR), None)
                .iter()
                .map(|s| s.pid)
                .filter(|p| comm(*p).as_deref() == Some("xturn"))
                .collect();
            match running.as_slice() {
                [p] => *p,
                [] => bail!(
                    "no running xturn server publishes its status under {STATUS_DIR}: give --pid"
                ),
                many => bail!(
                    "{} xturn servers run here (pids {}): give --pid",
                    many.len(),
                    many.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let name = comm(pid).with_context(|| format!("no process {pid}"))?;
    if name != "xturn" {
        bail!("process {pid} is {name:?}, not an xturn server");
    }
    let Ok(p) = i32::try_from(pid) else {
        bail!("--pid {pid} is out of range");
    };
    // SAFETY: kill(2) with a process id checked above and a signal number.
    if unsafe { libc::kill(p, libc::SIGUSR1) } != 0 {
        bail!(
            "cannot signal xturn (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    println!(
        "xturn drain: asked xturn (pid {pid}) to drain: it takes no new allocations and \
         exits when the last one ends or after its --drain-timeout"
    );
    Ok(())
}
