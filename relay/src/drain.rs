//! `xturn drain`: ask a running server to drain, the same as `kill -USR1 PID`: it takes no
//! new allocations (300 Try Alternate with `--alternate-server`, else 508), keeps serving
//! the ones it has, and exits 0 when the last ends or after `--drain-timeout`.

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The server's process id; needed only when several xturn servers run here.
    #[arg(long)]
    pub pid: Option<u32>,
}

pub fn run(a: &DrainArgs) -> Result<()> {
    let pid = crate::admin::running_server(a.pid)?;
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
