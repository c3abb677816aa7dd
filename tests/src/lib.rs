//! End-to-end test harness for xturn: starts the real `xturn` binary (and third-party
//! programs) as child processes on loopback, and gives tests a blocking TURN client built
//! on `xturn_control::client`. Every wait is bounded; children are killed by PID on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xturn_control::client::{self, Answer, TurnClient};
use xturn_control::wire::{attr, Method, TransactionId};

/// Path of the `xturn` binary of this workspace. The first call in a test process runs
/// `cargo build` for it (a no-op when up to date), so a test never runs a stale binary.
/// Options that let xturn relay to the lab's peers: they live in documentation ranges
/// (../shared/NETLAB.md), which xturn's peer filter denies by default like every block that
/// is not globally reachable. An operator of such a lab gives the same.
pub const LAB_PEERS: [&str; 8] = [
    "--allowed-peer-ip",
    "198.51.100.0/24",
    "--allowed-peer-ip",
    "192.0.2.0/24",
    "--allowed-peer-ip",
    "203.0.113.0/24",
    "--allowed-peer-ip",
    "2001:db8::/32",
];

pub fn xturn_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/<test-exe> -> target/<profile>/xturn
            let exe = std::env::current_exe().expect("current exe");
            let dir = exe
                .parent()
                .and_then(|d| d.parent())
                .expect("target dir")
                .to_path_buf();
            let mut c = Command::new(env!("CARGO"));
            c.args(["build", "--quiet", "-p", "xturn-relay", "--bin", "xturn"]);
            if dir.ends_with("release") {
                c.arg("--release");
            }
            let st = c.status().expect("run cargo build");
            assert!(st.success(), "cargo build -p xturn-relay failed");
            dir.join("xturn")
        })
        .clone()
}

/// A UDP port that was free a moment ago on 127.0.0.1, on TCP too (and, for
/// turnutils_peer, UDP port+1 too).
pub fn free_udp_port_pair() -> u16 {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().unwrap().port();
        // xturn also listens on TCP at its port.
        let tcp_free = std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if p < 65535 && tcp_free && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free UDP port pair");
}

/// A running child process, killed (by its PID) and reaped on drop; its output lines are
/// collected for assertions.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        Proc {
            child,
            lines,
            name: name.to_string(),
        }
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Wait until a line containing `needle` appears (bounded).
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY-free: signal our own child by PID; SIGTERM first for a clean stop.
            let pid = self.child.id() as i32;
            unsafe_kill(pid, 15);
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("{} did not stop on SIGTERM; killed", self.name);
        }
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The xturn server under test.
pub struct Xturn {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Xturn {
    /// Start xturn on 127.0.0.1 at a free port with `args`; waits until it answers a
    /// Binding request.
    pub fn start(args: &[&str]) -> Xturn {
        Self::start_with(args, |_| {})
    }

    /// [`Xturn::start`], with `configure` applied to the command first (environment).
    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Xturn {
        let port = free_udp_port_pair();
        let mut cmd = Command::new(xturn_bin());
        cmd.args([
            "--listening-ip",
            "127.0.0.1",
            "--listening-port",
            &port.to_string(),
        ]);
        cmd.args(args);
        configure(&mut cmd);
        let proc = Proc::spawn("xturn", cmd);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            let _ = s.send_to(&client::binding_request(TransactionId([1; 12]), true), addr);
            if s.recv_from(&mut buf).is_ok() {
                return Xturn { proc, addr };
            }
        }
        panic!(
            "xturn did not answer within 10 s; output:\n{}",
            proc.output()
        );
    }
}

/// A blocking TURN client over one UDP socket.
pub struct TestClient {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub turn: TurnClient,
    next_tid: u64,
}

impl TestClient {
    pub fn new(server: SocketAddr, user: &str, pass: &str) -> TestClient {
        Self::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap(), server, user, pass)
    }

    /// A client on a socket made elsewhere (e.g. inside a network namespace).
    pub fn with_socket(sock: UdpSocket, server: SocketAddr, user: &str, pass: &str) -> TestClient {
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        TestClient {
            sock,
            server,
            turn: TurnClient::new(user, pass),
            next_tid: 1,
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&self.next_tid.to_be_bytes());
        t[0] = 0x78;
        TransactionId(t)
    }

    /// Send a request (retransmitting up to 5 times, handling 401/438) and return the
    /// final response bytes. Datagrams that are not the response are skipped.
    pub fn request<F>(&mut self, method: Method, body: F) -> Vec<u8>
    where
        F: Fn(&mut xturn_control::wire::MessageBuilder),
    {
        for _ in 0..3 {
            let tid = self.tid();
            let req = self.turn.request(method, tid, &body);
            let resp = self.exchange(&req, tid);
            match self.turn.answer(&resp) {
                Answer::Retry => continue,
                _ => return resp,
            }
        }
        panic!("{method:?}: too many 401/438 rounds");
    }

    fn exchange(&mut self, req: &[u8], tid: TransactionId) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        for _ in 0..5 {
            self.sock.send_to(req, self.server).unwrap();
            let end = Instant::now() + Duration::from_millis(500);
            while Instant::now() < end {
                if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                    if let Ok(m) = xturn_control::wire::Message::new_checked(&buf[..n]) {
                        if m.transaction_id() == tid {
                            return buf[..n].to_vec();
                        }
                    }
                }
            }
        }
        panic!("no response from {}", self.server);
    }

    /// Allocate; returns the relayed address.
    pub fn allocate(&mut self) -> SocketAddr {
        self.allocate_family(false)
    }

    /// Allocate an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY 0x02) if `v6`, else the
    /// default IPv4 one; returns the relayed address.
    pub fn allocate_family(&mut self, v6: bool) -> SocketAddr {
        let r = self.request(Method::Allocate, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            if v6 {
                b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
            }
        });
        assert_eq!(
            self.turn.answer(&r),
            Answer::Success,
            "allocate failed: {:?}",
            client::error_code(&r)
        );
        client::xor_address(&r, attr::XOR_RELAYED_ADDRESS).expect("XOR-RELAYED-ADDRESS")
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Answer {
        let r = self.request(Method::ChannelBind, |b| {
            b.attr(
                attr::CHANNEL_NUMBER,
                &[(channel >> 8) as u8, channel as u8, 0, 0],
            );
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        });
        self.turn.answer(&r)
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Answer {
        let r = self.request(Method::CreatePermission, |b| {
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        });
        self.turn.answer(&r)
    }
}

/// A client of `server` (as `user`/`pass`) with an allocation and channel 0x4000 bound to a
/// new peer socket on 127.0.0.1 (read timeouts of 2 s on both): (client, peer, relayed
/// address), ready for [`relay_lockstep`].
pub fn channel_to_loopback_peer(
    server: SocketAddr,
    user: &str,
    pass: &str,
) -> (TestClient, UdpSocket, SocketAddr) {
    let mut c = TestClient::new(server, user, pass);
    let relay = c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        c.channel_bind(0x4000, peer.local_addr().unwrap()),
        Answer::Success
    );
    (c, peer, relay)
}

/// What a monitoring system sees at `url` (an xturn `--metrics-listen` endpoint), from
/// `tests/interop/scrape_metrics.py` (prometheus_client's OpenMetrics parser), run inside
/// network namespace `ns` when given: {"status", "content_type", and "samples" for
/// /metrics or "body" for the other paths}.
pub fn scrape(ns: Option<&str>, url: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/scrape_metrics.py");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    let out = cmd.arg(script).arg(url).output().expect("run python3");
    assert!(
        out.status.success(),
        "scrape_metrics.py {url} failed (prometheus_client missing? tests/run.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("scrape_metrics.py JSON")
}

/// The samples of a [`scrape`] of /metrics: "name{label=value,...}" to value.
pub fn samples(v: &serde_json::Value) -> BTreeMap<String, f64> {
    v["samples"]
        .as_object()
        .expect("parsed samples")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().expect("a number")))
        .collect()
}

/// Scrape /metrics at `url` until `ready` holds of its samples (the server publishes
/// twice a second), for at most 10 s; returns the last samples.
pub fn scrape_until(
    ns: Option<&str>,
    url: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = samples(&scrape(ns, url));
        if ready(&s) || Instant::now() > end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Datagrams `from..from + n` each way through channel 0x4000 of `c`'s allocation on
/// `relay` and `peer`, one at a time, each awaited: a lost or changed one fails the test.
pub fn relay_lockstep(c: &mut TestClient, peer: &UdpSocket, relay: SocketAddr, from: u64, n: u64) {
    use xturn_control::wire::{channel_data, ChannelData};
    let mut buf = vec![0u8; 2048];
    for k in from..from + n {
        c.sock
            .send_to(&channel_data::encode(0x4000, &payload(k)), c.server)
            .unwrap();
        let (len, src) = peer
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {k} to the peer lost: {e}"));
        assert_eq!(
            (src, &buf[..len]),
            (relay, &payload(k)[..]),
            "datagram {k} to the peer"
        );
        peer.send_to(&payload(k), relay).unwrap();
        let (len, _) = c
            .sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {k} to the client lost: {e}"));
        let cd = ChannelData::new_checked(&buf[..len]).expect("ChannelData");
        assert_eq!(cd.payload(), &payload(k)[..], "datagram {k} to the client");
    }
}

/// Deterministic payload for datagram `i`: 8-byte sequence number then pseudo-random
/// bytes; the length varies from 8 to 1207 bytes (odd and even).
pub fn payload(i: u64) -> Vec<u8> {
    let len = 8 + (i.wrapping_mul(2654435761) % 1200) as usize;
    let mut v = i.to_be_bytes().to_vec();
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// A finished command's standard output followed by its standard error, as text.
pub fn output_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Is a program on PATH?
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when the tests run as root (effective UID 0).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// Offer `offered` bytes per second of `size`-byte payloads for `secs` seconds: `send(n)`
/// sends datagram `n`, `recv` is the receiving socket (a clone is read in a thread) and
/// `payload_len` says how many payload bytes a received datagram carried. Returns the
/// received payload rate in bytes per second over the sending window. Bounded: the
/// receiver stops half a second after the last datagram.
pub fn received_rate(
    offered: u64,
    size: usize,
    secs: u64,
    mut send: impl FnMut(u64),
    recv: &UdpSocket,
    payload_len: fn(usize) -> usize,
) -> f64 {
    let sock = recv.try_clone().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut bytes = 0usize;
        let end = Instant::now() + Duration::from_secs(secs + 10);
        while Instant::now() < end {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => bytes += payload_len(n),
                Err(_) if st.load(std::sync::atomic::Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        bytes
    });
    let pps = (offered / size as u64).max(1);
    let start = Instant::now();
    let total = pps * secs;
    for n in 0..total {
        send(n);
        let due = start + Duration::from_secs_f64((n + 1) as f64 / pps as f64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let window = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap() as f64 / window
}

/// PTRACE_SEIZE + PTRACE_INTERRUPT stop one thread of another process (and no other);
/// the guard detaches (the thread runs again) when dropped.
pub struct StoppedThread(libc::pid_t);

impl StoppedThread {
    pub fn stop(tid: libc::pid_t) -> StoppedThread {
        // SAFETY: ptrace on a thread id of a child we started; no memory is passed.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                0,
                "PTRACE_SEIZE {tid}: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        }
        StoppedThread(tid)
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        // SAFETY: as above; detaching resumes the thread.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// The thread of process `pid` called `name`.
pub fn thread_id(pid: u32, name: &str) -> libc::pid_t {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return t.file_name().to_string_lossy().parse().unwrap();
        }
    }
    panic!("no thread {name} in process {pid}");
}

/// The value of `key` in the `[Service]` section of the systemd unit relay/dist/xturn.service.
pub fn unit_value(key: &str) -> Option<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/dist/xturn.service");
    let text = std::fs::read_to_string(path).expect("relay/dist/xturn.service");
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

/// Headless Chromium (Debian's) in network namespace `ns` (or this one), two relay-only
/// RTCPeerConnections through `turn_url` as alice/wonderland (tests/interop/
/// webrtc_relay.py): asserts that every message arrived and that both selected pairs are
/// relay/relay, and returns the page's result (`a`/`b`: candidate types and addresses).
/// `diag` is added to a failure.
pub fn chromium_relay_only(
    ns: Option<&str>,
    turn_url: &str,
    diag: &dyn Fn() -> String,
) -> serde_json::Value {
    let chromium = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(chromium).exists(),
        "Debian's chromium is needed: run tests/run.sh"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/webrtc_relay.py");
    let mut cmd = Command::new("timeout");
    if let Some(ns) = ns {
        cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "timeout"]);
    }
    let out = cmd
        .args(["120", "python3", script])
        .args([turn_url, "alice", "wonderland", chromium])
        .output()
        .expect("run python3");
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "Chromium through xturn ({turn_url}):\n{text}\n{}",
        diag()
    );
    let r: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("the page's result");
    for pc in ["a", "b"] {
        assert_eq!(
            (r[pc]["local"].as_str(), r[pc]["remote"].as_str()),
            (Some("relay"), Some("relay")),
            "{r:#}"
        );
    }
    r
}

/// Certificates made at test time with Debian's openssl: a CA, a server certificate it
/// signs for 127.0.0.1 and localhost, and a second CA with its own server certificate
/// (a client trusting one CA rejects the other's). Removed on drop.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub other_ca: PathBuf,
    pub other_cert: PathBuf,
    pub other_key: PathBuf,
}

impl TestPki {
    pub fn new(tag: &str) -> TestPki {
        let dir = std::env::temp_dir().join(format!("xturn-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl (Debian's openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                output_text(&out)
            );
        };
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        for p in ["", "other-"] {
            let (ca_key, ca) = (format!("{p}ca.key"), format!("{p}ca.pem"));
            let (key, csr, cert) = (
                format!("{p}server.key"),
                format!("{p}server.csr"),
                format!("{p}server.pem"),
            );
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
                "-days",
                "2",
                "-subj",
                &format!("/CN=xturn test {p}CA"),
            ]);
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ]);
        }
        TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            other_ca: dir.join("other-ca.pem"),
            other_cert: dir.join("other-server.pem"),
            other_key: dir.join("other-server.key"),
            dir,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TURN client over a new TCP connection to `server`.
pub fn tcp_turn(server: SocketAddr, user: &str, pass: &str) -> StreamTurn<TcpStream> {
    let s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    StreamTurn::new(s, user, pass)
}

/// Closed by the server within `limit`?
pub fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => matches!(s.read(&mut b), Ok(0)),
    }
}

/// A TURN client over one stream (TCP, or TLS over it): requests and answers through
/// `xturn_control::client::TurnClient`, messages framed by RFC 8656 section 12.5 (STUN by
/// its length, ChannelData padded to 4 bytes), written here from the RFC.
pub struct StreamTurn<S: std::io::Read + std::io::Write> {
    pub s: S,
    pub turn: TurnClient,
    buf: Vec<u8>,
    next_tid: u32,
}

impl<S: std::io::Read + std::io::Write> StreamTurn<S> {
    pub fn new(s: S, user: &str, pass: &str) -> StreamTurn<S> {
        StreamTurn {
            s,
            turn: TurnClient::new(user, pass),
            buf: Vec::new(),
            next_tid: 0,
        }
    }

    /// The next whole message: STUN (20 + length) or ChannelData (4 + length, padded to
    /// 4 on a stream; returned without the padding). `None` at end of stream or timeout.
    pub fn read_msg(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                let (msg, used) = if self.buf[0] >> 6 == 0 {
                    (20 + len, 20 + len)
                } else {
                    (4 + len, (4 + len + 3) & !3)
                };
                if self.buf.len() >= used {
                    let m = self.buf[..msg].to_vec();
                    self.buf.drain(..used);
                    return Some(m);
                }
            }
            let mut chunk = [0u8; 4096];
            match std::io::Read::read(&mut self.s, &mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn request<F: Fn(&mut xturn_control::wire::MessageBuilder)>(
        &mut self,
        method: Method,
        body: F,
    ) -> Vec<u8> {
        for _ in 0..3 {
            self.next_tid += 1;
            let mut t = [0x54u8; 12];
            t[8..].copy_from_slice(&self.next_tid.to_be_bytes());
            let tid = TransactionId(t);
            let req = self.turn.request(method, tid, &body);
            std::io::Write::write_all(&mut self.s, &req).unwrap();
            let resp = loop {
                let m = self.read_msg().expect("a response");
                if xturn_control::wire::Message::new_checked(&m[..])
                    .is_ok_and(|m| m.transaction_id() == tid)
                {
                    break m;
                }
            };
            if self.turn.answer(&resp) != Answer::Retry {
                return resp;
            }
        }
        panic!("{method:?}: too many 401/438 rounds");
    }

    /// The stream and what was read from it beyond the last message (after a
    /// ConnectionBind, the first bytes of the peer's).
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.s, self.buf)
    }

    pub fn allocate(&mut self) -> SocketAddr {
        self.allocate_transport(17)
    }

    /// Allocate with REQUESTED-TRANSPORT `protocol` (17 UDP, 6 TCP: RFC 6062), asserting
    /// success.
    pub fn allocate_transport(&mut self, protocol: u8) -> SocketAddr {
        let r = self.request(Method::Allocate, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0]);
        });
        assert_eq!(
            self.turn.answer(&r),
            Answer::Success,
            "{:?}",
            client::error_code(&r)
        );
        client::xor_address(&r, attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    pub fn answer(
        &mut self,
        method: Method,
        body: impl Fn(&mut xturn_control::wire::MessageBuilder),
    ) -> Answer {
        let r = self.request(method, body);
        self.turn.answer(&r)
    }
}

/// coturn's `turnutils_uclient` with `args` against 127.0.0.1:`port`: asserts exit 0,
/// 0 lost packets and `expect_msgs` messages sent and received back.
pub fn uclient(port: u16, args: &[&str], expect_msgs: u64) {
    let out = Command::new("timeout")
        .arg("90")
        .arg("turnutils_uclient")
        .args(["-p", &port.to_string()])
        .args(args)
        .arg("127.0.0.1")
        .output()
        .expect("run turnutils_uclient");
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "turnutils_uclient {args:?} failed ({:?}):\n{text}",
        out.status
    );
    assert!(
        text.contains("Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"),
        "loss reported by turnutils_uclient {args:?}:\n{text}"
    );
    let want = format!("tot_send_msgs={expect_msgs}, tot_recv_msgs={expect_msgs}");
    assert!(
        text.contains(&want),
        "expected {want} from {args:?}:\n{text}"
    );
}

/// coturn's `turnutils_peer` (a UDP echo) on 127.0.0.1 at a free port: (process, port).
pub fn turnutils_peer() -> (Proc, u16) {
    let port = free_udp_port_pair();
    let mut c = Command::new("turnutils_peer");
    c.args(["-L", "127.0.0.1", "-p", &port.to_string()]);
    let p = Proc::spawn("turnutils_peer", c);
    std::thread::sleep(Duration::from_millis(300));
    (p, port)
}

/// `turnutils_uclient` as alice/wonderland to 127.0.0.1:`port` with `transport` flags
/// (e.g. `-t`, `-t -S`): channels (200-byte messages), then Send indications (171), 2
/// clients x 500 messages each, echoed by a `turnutils_peer`, 0 lost.
pub fn uclient_channels_and_send(port: u16, transport: &[&str]) {
    let (_peer, peer_port) = turnutils_peer();
    let pp = peer_port.to_string();
    for (extra, len) in [(None, "200"), (Some("-s"), "171")] {
        let mut args = transport.to_vec();
        args.extend(extra);
        args.extend([
            "-u",
            "alice",
            "-w",
            "wonderland",
            "-e",
            "127.0.0.1",
            "-r",
            &pp,
            "-n",
            "500",
            "-l",
            len,
            "-X",
        ]);
        uclient(port, &args, 1000);
    }
}
