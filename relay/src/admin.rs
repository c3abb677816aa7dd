//! The admin socket: `xturn sessions` lists the allocations of a running server and
//! `xturn kill RELAYED-ADDRESS | --user NAME` ends them, through a Unix stream socket at
//! `/run/xturn/PID/admin.sock` (mode 0660, inside the status directory: root, the user
//! xturn runs as and the `--status-group` reach it, nobody else). One JSON request line,
//! one JSON reply line, then the server closes the connection.
//!
//! The server side is a thread of its own ([`spawn`]) that answers with a handler the
//! driver gives it (the server lock and the latest status); the client side is
//! [`sessions`] and [`kill`].

use crate::status::STATUS_DIR;
use crate::{stats, status};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xturn_control::dataplane::Counters;

/// The socket's name inside the server's status directory.
pub const SOCKET: &str = "admin.sock";
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 4096;
/// A client that does not send its request, or read the reply, within this is dropped.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Sessions,
    /// End the allocation with this relayed address.
    Kill {
        relay: SocketAddr,
    },
    /// End every allocation of this user (REST names carrying it included).
    KillUser {
        user: String,
    },
}

/// One allocation: who, where, how old, and what it relayed per path (as of the last
/// status report, at most half a second old).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub user: String,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub relay: SocketAddr,
    /// `udp` or `tcp` (TLS included) between the client and the server.
    pub transport: String,
    pub age_secs: u64,
    pub expires_in_secs: u64,
    pub permissions: usize,
    pub channels: usize,
    pub afxdp: Counters,
    pub sockets: Counters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Sessions(Vec<SessionRow>),
    Killed(Vec<SessionRow>),
    Error(String),
}

/// What answers a request (the driver's: it holds the server).
pub type Handler = Box<dyn Fn(Request) -> Reply + Send>;

/// The socket path of the server `pid`.
pub fn socket_path(pid: u32) -> PathBuf {
    Path::new(STATUS_DIR).join(pid.to_string()).join(SOCKET)
}

/// Bind the socket in `dir` (the server's status directory, already created) for `owner`
/// (uid, gid), mode 0660. Before privileges are dropped.
pub fn bind(dir: &Path, owner: Option<(u32, u32)>) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

fn answer(stream: UnixStream, handler: &Handler) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_DEADLINE))?;
    stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = if !line.ends_with('\n') {
        Reply::Error(format!(
            "a request is one JSON line of at most {MAX_REQUEST} bytes"
        ))
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(r) => handler(r),
            Err(e) => Reply::Error(format!("bad request: {e}")),
        }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    (&stream).write_all(&out)?;
    Ok(())
}

/// Answer on `listener` until `shutdown`, one connection at a time (each bounded by
/// [`CLIENT_DEADLINE`]).
pub fn spawn(
    listener: UnixListener,
    handler: Handler,
    shutdown: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let t = std::thread::Builder::new()
        .name("xturn-admin".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = answer(s, &handler) {
                            tracing::debug!("admin socket: {e:#}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!("admin socket: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;
    Ok(t)
}

/// The pid of the one xturn server running here, or `pid` after checking it is one.
pub fn running_server(pid: Option<u32>) -> Result<u32> {
    let comm = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let pid = match pid {
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
    Ok(pid)
}

/// Send `request` to the server `pid` and read its reply.
pub fn ask(pid: u32, request: &Request) -> Result<Reply> {
    let path = socket_path(pid);
    let mut s = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach xturn (pid {pid}) at {} (root, its user and its --status-group may)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).with_context(|| format!("bad reply from xturn: {reply:?}"))
}

#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// The server's process id; needed only when several xturn servers run here.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print JSON: {"sessions": [{user, client, server, relay, transport, age_secs,
    /// expires_in_secs, permissions, channels, afxdp, sockets}]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The server's process id; needed only when several xturn servers run here.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The relayed address of the allocation to end (as `xturn sessions` shows it).
    #[arg(required_unless_present = "user", conflicts_with = "user")]
    pub allocation: Option<SocketAddr>,
    /// End every allocation of this user (TURN REST names carrying it included).
    #[arg(long)]
    pub user: Option<String>,
}

fn counters(c: &Counters) -> String {
    format!(
        "{}/{} pkts {}/{} B",
        c.to_peer_packets, c.to_client_packets, c.to_peer_bytes, c.to_client_bytes
    )
}

/// The table `xturn sessions` prints.
pub fn table(rows: &[SessionRow]) -> String {
    let mut out = format!(
        "{:<24} {:<28} {:<24} {:>7} {:>7}  {:<32} {}\n",
        "USER", "CLIENT", "RELAYED", "AGE_S", "LEFT_S", "AF_XDP (to peer/to client)", "SOCKETS"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<28} {:<24} {:>7} {:>7}  {:<32} {}\n",
            r.user,
            format!("{}/{}", r.transport, r.client),
            r.relay,
            r.age_secs,
            r.expires_in_secs,
            counters(&r.afxdp),
            counters(&r.sockets)
        ));
    }
    out.push_str(&format!("{} allocations\n", rows.len()));
    out
}

fn rows(reply: Reply) -> Result<Vec<SessionRow>> {
    match reply {
        Reply::Sessions(r) | Reply::Killed(r) => Ok(r),
        Reply::Error(e) => bail!("xturn: {e}"),
    }
}

/// `xturn sessions`.
pub fn sessions(a: &SessionsArgs) -> Result<()> {
    let pid = running_server(a.pid)?;
    let r = rows(ask(pid, &Request::Sessions)?)?;
    if a.json {
        println!("{}", serde_json::json!({ "sessions": r }));
    } else {
        print!("{}", table(&r));
    }
    Ok(())
}

/// `xturn kill`: exits non-zero when nothing matched.
pub fn kill(a: &KillArgs) -> Result<()> {
    let pid = running_server(a.pid)?;
    let request = match (&a.allocation, &a.user) {
        (Some(relay), None) => Request::Kill { relay: *relay },
        (None, Some(user)) => Request::KillUser { user: user.clone() },
        _ => bail!("give a relayed address or --user NAME"),
    };
    let killed = rows(ask(pid, &request)?)?;
    if killed.is_empty() {
        match request {
            Request::KillUser { user } => bail!("no allocation of user {user:?}"),
            _ => bail!(
                "no allocation with relayed address {}",
                a.allocation.map(|r| r.to_string()).unwrap_or_default()
            ),
        }
    }
    for r in &killed {
        println!(
            "killed the allocation {} of {} (user {})",
            r.relay, r.client, r.user
        );
    }
    Ok(())
}

/// A session joined with its per-path counters from the last status report.
pub fn row(s: &xturn_control::server::Session, status: &status::Status) -> SessionRow {
    let counted = status.allocations.iter().find(|a| a.relay == s.relay);
    SessionRow {
        user: s.user.clone(),
        client: s.client,
        server: s.server,
        relay: s.relay,
        transport: match s.transport {
            xturn_control::Transport::Udp => "udp".into(),
            xturn_control::Transport::Tcp => "tcp".into(),
        },
        age_secs: s.age.as_secs(),
        expires_in_secs: s.expires_in.as_secs(),
        permissions: s.permissions,
        channels: s.channels,
        afxdp: counted.map(|a| a.afxdp).unwrap_or_default(),
        sockets: counted.map(|a| a.sockets).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_line_each() {
        let kill: Request =
            serde_json::from_str(r#"{"op":"kill","relay":"192.0.2.1:50000"}"#).expect("kill");
        assert_eq!(
            kill,
            Request::Kill {
                relay: "192.0.2.1:50000".parse().unwrap()
            }
        );
        let user: Request =
            serde_json::from_str(r#"{"op":"kill_user","user":"alice"}"#).expect("kill_user");
        assert_eq!(
            user,
            Request::KillUser {
                user: "alice".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"shutdown"}"#).is_err());
        let e = serde_json::to_string(&Reply::Error("x".into())).unwrap();
        assert_eq!(e, r#"{"error":"x"}"#);
    }

    #[test]
    fn a_connection_gets_one_answer_and_junk_an_error() {
        let dir = std::env::temp_dir().join(format!("xturn-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = bind(&dir, None).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let handler: Handler = Box::new(|r| match r {
            Request::Sessions => Reply::Sessions(Vec::new()),
            _ => Reply::Killed(Vec::new()),
        });
        let t = spawn(l, handler, shutdown.clone()).unwrap();
        let talk = |req: &[u8]| {
            let mut s = UnixStream::connect(dir.join(SOCKET)).unwrap();
            s.write_all(req).unwrap();
            let mut reply = String::new();
            BufReader::new(s).read_line(&mut reply).unwrap();
            reply
        };
        assert_eq!(talk(b"{\"op\":\"sessions\"}\n"), "{\"sessions\":[]}\n");
        assert!(talk(b"junk\n").starts_with("{\"error\":\"bad request"));
        // Longer than a request may be, without a newline: refused, not buffered.
        let long = vec![b'x'; 10_000];
        assert!(talk(&long).starts_with("{\"error\":\"a request is one JSON line"));
        shutdown.store(true, Ordering::Relaxed);
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
