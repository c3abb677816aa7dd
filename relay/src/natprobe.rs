//! `xturn nat-type SERVER`: the RFC 5780 NAT behaviour tests against a STUN server with an
//! alternate address (xturn with `--alt-listening-ip`), printing the RFC 4787 terms and
//! the name the classic NAT taxonomy gives the result (full cone, restricted cone,
//! port-restricted cone, symmetric).
//!
//! Mapping (RFC 5780 section 4.3), from one socket: Binding to the primary address (X1),
//! to the alternate address at the primary port (X2), to the alternate address and port
//! (X3): X1 = X2 endpoint-independent, else X2 = X3 address-dependent, else address- and
//! port-dependent. Filtering (section 4.4), from a fresh socket (the mapping tests opened
//! the NAT towards the alternate address): CHANGE-REQUEST change IP and port answered:
//! endpoint-independent; else change port answered: address-dependent; else address- and
//! port-dependent. Hairpinning (section 4.5): a datagram from the client to its own mapped
//! address comes back. The decision is [`classify`], apart from the sockets.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use xturn_control::client;
use xturn_control::wire::{attr, Class, Message, MessageBuilder, Method, TransactionId};

#[derive(Debug, clap::Args)]
pub struct NatTypeArgs {
    /// The STUN server (IP or IP:PORT; port 3478 by default). It must have an alternate
    /// address (RFC 5780 OTHER-ADDRESS), as xturn has with --alt-listening-ip.
    pub server: String,
    /// Local address to send from (default: any).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// What the tests saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub local: SocketAddr,
    /// Mapped addresses: to the primary, to the alternate IP at the primary port, to the
    /// alternate IP and port.
    pub mapped: [SocketAddr; 3],
    /// Answered: CHANGE-REQUEST change IP and port; change port only.
    pub changed_ip_and_port: bool,
    pub changed_port: bool,
    pub hairpin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub nat: bool,
    pub mapping: Behaviour,
    pub filtering: Behaviour,
    pub hairpinning: bool,
    /// The classic name: "no NAT", "full cone", "restricted cone", "port-restricted cone",
    /// "symmetric".
    pub name: &'static str,
}

/// RFC 5780's decision from what was observed.
pub fn classify(o: &Observed) -> Verdict {
    let [x1, x2, x3] = o.mapped;
    let mapping = if x1 == x2 {
        Behaviour::EndpointIndependent
    } else if x2 == x3 {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    };
    let filtering = if o.changed_ip_and_port {
        Behaviour::EndpointIndependent
    } else if o.changed_port {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    };
    let nat = x1 != o.local;
    let name = match (nat, mapping, filtering) {
        (false, _, _) => "no NAT",
        (true, Behaviour::EndpointIndependent, Behaviour::EndpointIndependent) => "full cone",
        (true, Behaviour::EndpointIndependent, Behaviour::AddressDependent) => "restricted cone",
        (true, Behaviour::EndpointIndependent, Behaviour::AddressAndPortDependent) => {
            "port-restricted cone"
        }
        (true, _, _) => "symmetric",
    };
    Verdict {
        nat,
        mapping,
        filtering,
        hairpinning: o.hairpin,
        name,
    }
}

/// A Binding request to `to` (with CHANGE-REQUEST `flags` when not 0); the response's
/// (XOR-MAPPED-ADDRESS, OTHER-ADDRESS), or `None` after three tries of 500 ms.
fn binding(
    s: &UdpSocket,
    to: SocketAddr,
    flags: u8,
) -> Result<Option<(SocketAddr, Option<SocketAddr>)>> {
    let tid = TransactionId(rand::random());
    let mut b = MessageBuilder::new(Method::Binding, Class::Request, tid);
    if flags != 0 {
        b.attr(attr::CHANGE_REQUEST, &[0, 0, 0, flags]);
    }
    b.fingerprint();
    let req = b.finish();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        s.send_to(&req, to)?;
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            let Ok((n, _)) = s.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = Message::new_checked(&buf[..n]) else {
                continue;
            };
            if m.transaction_id() != tid || m.class() != Class::Success {
                continue;
            }
            let mapped = client::xor_address(&buf[..n], attr::XOR_MAPPED_ADDRESS)
                .context("a Binding response without XOR-MAPPED-ADDRESS")?;
            let other = m
                .attribute(attr::OTHER_ADDRESS)
                .and_then(|a| attr::decode_address(a.value).ok());
            return Ok(Some((mapped, other)));
        }
    }
    Ok(None)
}

fn socket(bind: IpAddr) -> Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(bind, 0))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(s)
}

/// Run the tests against `server`.
pub fn observe(server: SocketAddr, bind: Option<IpAddr>) -> Result<Observed> {
    let bind = bind.unwrap_or(if server.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    });
    let s = socket(bind)?;
    let Some((x1, other)) = binding(&s, server, 0)? else {
        bail!("no answer from {server}: UDP blocked, or no STUN server there");
    };
    let Some(other) = other else {
        bail!("{server} names no OTHER-ADDRESS: it cannot run RFC 5780 tests (xturn needs --alt-listening-ip)");
    };
    let alt_ip_primary_port = SocketAddr::new(other.ip(), server.port());
    let x2 = binding(&s, alt_ip_primary_port, 0)?
        .with_context(|| format!("no answer from the alternate address {alt_ip_primary_port}"))?
        .0;
    let x3 = binding(&s, other, 0)?
        .with_context(|| format!("no answer from the alternate address {other}"))?
        .0;
    // The local address as the server would see it without a NAT.
    let mut local = s.local_addr()?;
    if local.ip().is_unspecified() {
        let probe = UdpSocket::bind(SocketAddr::new(bind, 0))?;
        probe.connect(server)?;
        local.set_ip(probe.local_addr()?.ip());
    }
    // Hairpinning: a datagram to our own mapped address.
    s.send_to(b"xturn hairpin probe", x1)?;
    let mut hairpin = false;
    let end = Instant::now() + Duration::from_millis(500);
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if &buf[..n] == b"xturn hairpin probe" {
                hairpin = true;
                break;
            }
        }
    }
    // Filtering, from a fresh mapping.
    let f = socket(bind)?;
    binding(&f, server, 0)?.context("no answer to the filtering tests' first request")?;
    let changed_ip_and_port = binding(&f, server, 0x06)?.is_some();
    let changed_port = changed_ip_and_port || binding(&f, server, 0x02)?.is_some();
    Ok(Observed {
        local,
        mapped: [x1, x2, x3],
        changed_ip_and_port,
        changed_port,
        hairpin,
    })
}

pub fn run(a: &NatTypeArgs) -> Result<()> {
    let server: SocketAddr = match a.server.parse() {
        Ok(s) => s,
        Err(_) => SocketAddr::new(
            a.server
                .parse()
                .with_context(|| format!("{:?}: give IP or IP:PORT", a.server))?,
            3478,
        ),
    };
    let o = observe(server, a.bind)?;
    let v = classify(&o);
    if a.json {
        println!("{}", serde_json::json!({ "observed": o, "verdict": v }));
    } else {
        let term = |b: Behaviour| match b {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address and port-dependent",
        };
        println!("NAT type: {}", v.name);
        println!(
            "mapping: {} ({} -> {}, {}, {})",
            term(v.mapping),
            o.local,
            o.mapped[0],
            o.mapped[1],
            o.mapped[2]
        );
        println!("filtering: {}", term(v.filtering));
        println!("hairpinning: {}", if v.hairpinning { "yes" } else { "no" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_article_names_follow_rfc_4787_behaviour() {
        let local = sa("192.0.2.2:5000");
        let m = |a: &str, b: &str, c: &str| [sa(a), sa(b), sa(c)];
        let eim = m("203.0.113.2:5000", "203.0.113.2:5000", "203.0.113.2:5000");
        let cases = [
            (
                m("192.0.2.2:5000", "192.0.2.2:5000", "192.0.2.2:5000"),
                true,
                true,
                "no NAT",
            ),
            (eim, true, true, "full cone"),
            (eim, false, true, "restricted cone"),
            (eim, false, false, "port-restricted cone"),
            (
                m("203.0.113.2:5000", "203.0.113.2:5001", "203.0.113.2:5002"),
                false,
                false,
                "symmetric",
            ),
            (
                m("203.0.113.2:5000", "203.0.113.2:5001", "203.0.113.2:5001"),
                false,
                false,
                "symmetric",
            ),
        ];
        for (mapped, both, port, name) in cases {
            let v = classify(&Observed {
                local,
                mapped,
                changed_ip_and_port: both,
                changed_port: port,
                hairpin: false,
            });
            assert_eq!(v.name, name, "{mapped:?} {both} {port}");
        }
        let v = classify(&Observed {
            local,
            mapped: m("203.0.113.2:5000", "203.0.113.2:5001", "203.0.113.2:5001"),
            changed_ip_and_port: false,
            changed_port: true,
            hairpin: true,
        });
        assert_eq!(
            (v.mapping, v.filtering, v.hairpinning),
            (
                Behaviour::AddressDependent,
                Behaviour::AddressDependent,
                true
            )
        );
    }
}
