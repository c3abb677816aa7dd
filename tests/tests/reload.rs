//! Reload (SIGHUP) with the real `xturn` binary on loopback: a user added and a REST
//! secret revoked in the configuration file take effect while an allocation relays, with
//! not one datagram lost; an invalid file keeps the running configuration; options that
//! need a restart are named in the log.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xturn_control::auth::rest_password;
use xturn_control::client::{Answer, TurnClient};
use xturn_control::wire::{attr, Message, Method, TransactionId};
use xturn_tests::{channel_to_loopback_peer, relay_lockstep, Xturn};

/// The final answer to an Allocate from a fresh socket as `user`: `None` for success,
/// else the error code (401 when the second, authenticated attempt is refused as well).
fn allocate_answer(server: SocketAddr, user: &str, pass: &str) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut turn = TurnClient::new(user, pass);
    let mut buf = [0u8; 2048];
    for round in 0..2u8 {
        let tid = TransactionId([round + 1; 12]);
        let req = turn.request(Method::Allocate, tid, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        sock.send_to(&req, server).unwrap();
        let resp = loop {
            let (n, _) = sock.recv_from(&mut buf).expect("an answer to Allocate");
            if Message::new_checked(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                break buf[..n].to_vec();
            }
        };
        match turn.answer(&resp) {
            Answer::Success => return None,
            Answer::Error(c) => return Some(c),
            Answer::Retry if round == 0 => continue,
            Answer::Retry => return Some(401),
            Answer::Invalid => panic!("invalid answer to Allocate"),
        }
    }
    unreachable!()
}

/// REST API credentials made with `secret`, valid for an hour.
fn rest_user(secret: &str) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!("{}:carol", now + 3600);
    let pass = rest_password(secret.as_bytes(), &name);
    (name, pass)
}

fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hup(server: &Xturn) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &server.proc.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Wait for the `n`-th log line containing `needle` (bounded).
fn wait_for_nth(server: &Xturn, needle: &str, n: usize) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = server
            .proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect();
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        assert!(
            std::time::Instant::now() < end,
            "no {needle:?} #{n} in the log:\n{}",
            server.proc.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_adds_a_user_and_revokes_a_secret_while_an_allocation_relays() {
    let dir = std::env::temp_dir().join(format!("xturn-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("xturn.toml");
    let base = "allow-loopback-peers = true\nuse-auth-secret = true\nlog-level = \"info\"\n";
    write_config(
        &conf,
        &format!("{base}user = [\"alice:wonderland\"]\nstatic-auth-secret = [\"old\", \"new\"]\n"),
    );
    let server = Xturn::start(&["--config", conf.to_str().unwrap()]);
    let (rest_old, rest_old_pw) = rest_user("old");
    assert_eq!(allocate_answer(server.addr, &rest_old, &rest_old_pw), None);
    assert_eq!(allocate_answer(server.addr, "bob", "builder"), Some(401));

    let (mut a, peer, relay) = channel_to_loopback_peer(server.addr, "alice", "wonderland");
    relay_lockstep(&mut a, &peer, relay, 0, 500);

    // bob added, the "old" secret revoked; alice's datagrams keep flowing through it.
    write_config(
        &conf,
        &format!(
            "{base}user = [\"alice:wonderland\", \"bob:builder\"]\nstatic-auth-secret = [\"new\"]\n"
        ),
    );
    hup(&server);
    relay_lockstep(&mut a, &peer, relay, 500, 500);
    wait_for_nth(&server, "reloaded the configuration", 1);
    relay_lockstep(&mut a, &peer, relay, 1000, 500);
    assert_eq!(allocate_answer(server.addr, "bob", "builder"), None);
    let (rest_old, rest_old_pw) = rest_user("old");
    assert_eq!(
        allocate_answer(server.addr, &rest_old, &rest_old_pw),
        Some(401)
    );
    let (rest_new, rest_new_pw) = rest_user("new");
    assert_eq!(allocate_answer(server.addr, &rest_new, &rest_new_pw), None);
    // alice's allocation was not re-authenticated or dropped: it refreshes and relays.
    let r = a.request(
        Method::Refresh,
        xturn_control::client::refresh_body(Duration::from_secs(600)),
    );
    assert_eq!(a.turn.answer(&r), Answer::Success);

    // An invalid file: refused, everything stays as it runs.
    write_config(&conf, "user = [\"no-colon\"]\n");
    hup(&server);
    wait_for_nth(&server, "reload refused", 1);
    relay_lockstep(&mut a, &peer, relay, 1500, 200);
    assert_eq!(allocate_answer(server.addr, "bob", "builder"), None);

    // A change that needs a restart is named, and the rest is applied.
    write_config(
        &conf,
        &format!("{base}user = [\"alice:wonderland\"]\nstatic-auth-secret = [\"new\"]\nmin-port = 50000\nthreads = 7\n"),
    );
    hup(&server);
    let line = wait_for_nth(&server, "change only on restart", 1);
    assert!(
        line.contains("min-port") && line.contains("threads"),
        "{line}"
    );
    assert_eq!(allocate_answer(server.addr, "bob", "builder"), Some(401));
    relay_lockstep(&mut a, &peer, relay, 1700, 300);
    let _ = std::fs::remove_dir_all(&dir);
}
