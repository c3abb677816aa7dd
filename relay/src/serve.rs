//! Start-up of the whole server: configuration, resource limits, logging, signals and
//! the XDP program, then the [`driver`](crate::driver); and `xturn check`.

use crate::{config, driver, host, probe, xdp};
use anyhow::Result;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The log filter for `--log-level L`.
fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::new(format!("xturn={level},xturn_relay={level}"))
}

fn xdp_plan(settings: &config::Settings) -> probe::Plan {
    probe::Plan {
        mode: settings.xdp_mode,
        afxdp: settings.afxdp,
        ipv4: settings.relay_ipv4.is_some(),
        ipv6: settings.relay_ipv6.is_some(),
    }
}

/// `xturn check`: what `xturn --xdp IFACES` would run on each interface, or why not.
pub fn check(args: config::Args) -> Result<()> {
    let settings = config::Settings::load(args)?;
    if settings.xdp.is_empty() {
        anyhow::bail!("give the interfaces to check: xturn check --xdp IFACE[,IFACE]");
    }
    let plan = xdp_plan(&settings);
    let mut refusals = Vec::new();
    for name in &settings.xdp {
        match probe::facts(name) {
            Ok(f) => {
                let a = probe::assess(&f, &plan, None);
                for l in &a.lines {
                    println!("{l}");
                }
                refusals.extend(a.refusals);
            }
            Err(e) => refusals.push(format!("{name}: {e:#}")),
        }
    }
    probe::refuse(&refusals)?;
    println!(
        "xturn check: ok, xturn --xdp can serve {}",
        settings.xdp.join(", ")
    );
    Ok(())
}

/// Run the server until SIGINT or SIGTERM, or until a drain (SIGUSR1) ends; SIGHUP reloads
/// the configuration (the same command line and the file again).
pub fn serve(args: config::Args) -> Result<()> {
    // One malloc arena: glibc's per-thread arenas kept 10-12 MB of a 10,000-allocation
    // peak resident after the last allocation was gone (malloc_trim did not give their
    // pages back; bench/soak.sh), one arena about 2 MB. The packet paths allocate little,
    // and that from the per-thread cache, which needs no arena lock.
    // SAFETY: mallopt with integer arguments, before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let mut settings = config::Settings::load(args.clone())?;
    // Every allocation holds a relay socket: the quota must fit the open-file limit.
    let fds = settings.server.total_quota as u64
        + (settings.threads * settings.listen.len()) as u64
        + host::FD_SLACK;
    let quota = format!("--total-quota {}", settings.server.total_quota);
    // TCP connections too, where the limit can be raised for them; else fewer of them.
    // (Said when --max-tcp-connections was given; the default quietly fits the limit.)
    let mut tcp_clamped = None;
    let nofile = match settings.tcp {
        Some(t) => match host::raise_nofile(fds + t.total as u64, &quota) {
            Ok(n) => n,
            Err(_) => {
                let n = host::raise_nofile(fds, &quota)?;
                let fit = (n.saturating_sub(fds) as usize).max(64).min(t.total);
                tcp_clamped = Some((t.total, fit));
                settings.tcp_fit = Some(fit);
                n
            }
        },
        None => host::raise_nofile(fds, &quota)?,
    };
    let (filter, log_level) =
        tracing_subscriber::reload::Layer::new(log_filter(&settings.log_level));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let shutdown = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, shutdown.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, shutdown.clone())?;
    let drain = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, drain.clone())?;
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
    let reload = driver::Reload {
        asked: reload,
        load: Box::new(move || config::Settings::load(args.clone())),
        set_log_level: Box::new(move |level| {
            log_level
                .reload(log_filter(level))
                .map_err(|e| anyhow::anyhow!("log level not changed: {e}"))
        }),
    };
    let listen: Vec<String> = settings.listen.iter().map(|a| a.to_string()).collect();
    let relay: Vec<String> = settings
        .relay_ipv4
        .iter()
        .chain(settings.relay_ipv6.iter())
        .map(|a| a.to_string())
        .collect();
    tracing::info!(
        "xturn {} listening on udp {} relaying from {} ports {}-{}, realm {:?}, {} threads",
        env!("CARGO_PKG_VERSION"),
        listen.join(", "),
        relay.join(", "),
        settings.server.min_port,
        settings.server.max_port,
        settings.server.credentials.realm(),
        settings.threads
    );
    tracing::debug!("open-file limit {nofile}");
    if let Some((asked, fit)) = tcp_clamped.filter(|_| settings.tcp_total_given) {
        tracing::warn!(
            "--max-tcp-connections {asked} does not fit the open-file limit {nofile} beside \
             {quota}: at most {fit} TCP connections (raise LimitNOFILE for more)"
        );
    }
    if let Some((u, p)) = &settings.demo_user {
        tracing::info!("no --user or --static-auth-secret given: demo user {u:?} password {p:?}");
        // Also on stdout, for scripts and humans who read the first line.
        println!(
            "demo user: {u} password: {p} realm: {}",
            settings.server.credentials.realm()
        );
    }
    // Attached before the sockets serve and detached (on drop) after they stop, so the
    // socket path covers every datagram the program passes, from start to end.
    let xdp = if settings.xdp.is_empty() {
        None
    } else {
        let plan = xdp_plan(&settings);
        probe::preflight(&settings.xdp, &plan)?;
        let mut x = xdp::XdpPath::start(
            &settings.xdp,
            &settings.listen,
            settings.xdp_mode,
            settings.xdp_maps,
            settings.fast_path == crate::config::FastPath::Xdp,
            settings.xdp_limit_users(),
        )?;
        let watch = probe::Watch::start(plan, &mut x)?;
        Some((x, watch))
    };
    let signals = driver::Signals {
        shutdown,
        drain,
        reload,
    };
    driver::run(settings, signals, xdp)
}
