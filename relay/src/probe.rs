//! What the fast path can do on an interface, read from the kernel without sending a frame
//! or changing anything: `xturn check --xdp IFACES` prints it, and `xturn --xdp` logs the
//! same lines at start, refuses only what cannot work, and keeps re-reading what can change
//! while it runs (whether an XDP_TX'd frame arrives).
//!
//! ```text
//!  sysfs (index, queues, MTU, forwarding) ─┐
//!  ethtool ioctl (driver, TX checksum)    ─┼─► Facts ─► assess(Facts, Plan) ─► Assessment
//!  netlink (XDP features, veth peer's XDP) ┘           (pure: unit-tested)    (lines, flags,
//!                                                                               refusals)
//! ```
//!
//! The facts that decide a path:
//! - XDP_TX from a veth arrives only when the veth's peer has an XDP program in driver
//!   mode (the kernel drops it, or leaves it queued, otherwise); from a native XDP driver
//!   of a NIC, and in generic mode (the frame takes the kernel's transmit path), it does.
//! - The AF_XDP forwarder gets steered frames only where the XDP program's FIB lookup
//!   works: IP forwarding on on the receiving interface.
//! - Zero-copy AF_XDP needs the driver's XSK_ZEROCOPY feature and native mode.

use crate::afxdp::ring::{frame_size_for_mtu, RX_HEADROOM};
use crate::host::{ifindex, read_u32};
use crate::netlink::{self, xdp_act, XdpMode};
use crate::xdp::{AttachMode, ModeChoice};
use anyhow::{bail, Result};
use std::path::Path;
use xturn_xdp_common::iface_flags;

/// Receive queues served per interface (the XSK map's layout).
const MAX_QUEUES: u32 = xturn_xdp_common::capacity::MAX_QUEUES;
/// Largest MTU at which a veth takes a native XDP program that is not multi-buffer aware
/// (PAGE_SIZE minus the headroom and the skb_shared_info, measured: 3506).
const VETH_NATIVE_MAX_MTU: u32 = 3506;

/// The longest frame the AF_XDP path takes at MTU `mtu`: a UMEM frame minus its headroom.
pub fn steer_limit(mtu: u32) -> usize {
    frame_size_for_mtu(mtu as usize) - RX_HEADROOM
}

fn read_flag(p: &str) -> Option<bool> {
    std::fs::read_to_string(p).ok().map(|s| s.trim() != "0")
}

/// A veth's peer, as this namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPeer {
    pub ifindex: u32,
    /// The peer's namespace id in this namespace; `None`: this namespace.
    pub netnsid: Option<i32>,
    /// Its name (in its namespace); empty when it could not be read.
    pub name: String,
    /// An XDP program is attached to it in driver mode. `None`: could not be read.
    pub native_program: Option<bool>,
}

/// What the kernel says about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub name: String,
    pub ifindex: u32,
    /// The driver's name (ETHTOOL_GDRVINFO), e.g. `veth`, `ice`, `mlx5_core`.
    pub driver: Option<String>,
    pub queues: u32,
    pub mtu: u32,
    /// The driver's XDP features ([`xdp_act`] bits); `None` before Linux 6.3.
    pub xdp_features: Option<u64>,
    pub forwarding_v4: Option<bool>,
    pub forwarding_v6: Option<bool>,
    /// TX checksum offload (ETHTOOL_GTXCSUM).
    pub tx_checksum: Option<bool>,
    /// For a veth: its peer.
    pub veth_peer: Option<VethPeer>,
    /// XDP programs attached now: (id, mode).
    pub programs: Vec<(u32, XdpMode)>,
}

/// Read everything [`Facts`] holds about `name`; fails only when the interface is missing.
pub fn facts(name: &str) -> Result<Facts> {
    let dir = Path::new("/sys/class/net").join(name);
    let ifindex = ifindex(name)?;
    let mtu = read_u32(&dir.join("mtu"))?;
    let queues = std::fs::read_dir(dir.join("queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(0);
    let driver = ethtool::driver(name).ok();
    let link = netlink::link(ifindex, None).ok();
    let veth_peer = match (&driver, &link) {
        (Some(d), Some(l)) if d == "veth" => l.link.map(|peer| veth_peer(peer, l.link_netnsid)),
        _ => None,
    };
    Ok(Facts {
        name: name.to_string(),
        ifindex,
        driver,
        queues,
        mtu,
        xdp_features: netlink::xdp_features(ifindex).ok().flatten(),
        forwarding_v4: read_flag(&format!("/proc/sys/net/ipv4/conf/{name}/forwarding")),
        forwarding_v6: read_flag(&format!("/proc/sys/net/ipv6/conf/{name}/forwarding")),
        tx_checksum: ethtool::tx_checksum(name).ok(),
        veth_peer,
        programs: link.map(|l| l.xdp).unwrap_or_default(),
    })
}

fn veth_peer(ifindex: u32, netnsid: Option<i32>) -> VethPeer {
    match netlink::link(ifindex, netnsid) {
        Ok(l) => VethPeer {
            ifindex,
            netnsid,
            name: l.name,
            native_program: Some(l.xdp.iter().any(|(_, m)| *m == XdpMode::Driver)),
        },
        Err(e) => {
            tracing::debug!("cannot read the veth peer {ifindex} (netns id {netnsid:?}): {e:#}");
            VethPeer {
                ifindex,
                netnsid,
                name: String::new(),
                native_program: None,
            }
        }
    }
}

/// What the server will run on the interfaces (from its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub mode: ModeChoice,
    /// The AF_XDP forwarder relays TURN data (not `--no-afxdp`).
    pub afxdp: bool,
    /// Relayed address families.
    pub ipv4: bool,
    pub ipv6: bool,
}

/// Whether a frame sent back out with XDP_TX arrives, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpTx {
    pub arrives: bool,
    pub why: String,
    /// How to make it arrive, when it does not.
    pub fix: Option<String>,
}

/// Does an XDP_TX'd frame leave interface `f` in `mode`?
pub fn xdp_tx(f: &Facts, mode: AttachMode) -> XdpTx {
    if mode == AttachMode::Generic {
        return XdpTx {
            arrives: true,
            why: "generic mode: XDP_TX takes the kernel's transmit path".into(),
            fix: None,
        };
    }
    let Some(peer) = &f.veth_peer else {
        if f.driver.as_deref() == Some("veth") {
            return XdpTx {
                arrives: false,
                why: "a veth whose peer could not be read".into(),
                fix: Some("run xturn where it can read the veth's peer".into()),
            };
        }
        return XdpTx {
            arrives: true,
            why: format!(
                "native XDP_TX in the {} driver",
                f.driver.as_deref().unwrap_or("interface's")
            ),
            fix: None,
        };
    };
    let peer_name = if peer.name.is_empty() {
        format!("ifindex {}", peer.ifindex)
    } else {
        peer.name.clone()
    };
    let ns = match peer.netnsid {
        Some(id) => format!(" (netns id {id})"),
        None => String::new(),
    };
    match peer.native_program {
        Some(true) => XdpTx {
            arrives: true,
            why: format!("the veth peer {peer_name}{ns} has an XDP program in driver mode"),
            fix: None,
        },
        Some(false) => XdpTx {
            arrives: false,
            why: format!(
                "the veth peer {peer_name}{ns} has no XDP program in driver mode, so the kernel \
                 does not deliver XDP_TX'd frames there"
            ),
            fix: Some(format!(
                "attach an XDP program to {peer_name} in driver mode (e.g. `ip link set dev \
                 {peer_name} xdp obj xturn-xdp.bpf.o sec xdp program xturn_xdp_pass` in its \
                 namespace), or use --xdp-mode generic"
            )),
        },
        None => XdpTx {
            arrives: false,
            why: format!("the XDP programs of the veth peer {peer_name}{ns} could not be read"),
            fix: Some("run xturn where it can read the veth's peer".into()),
        },
    }
}

/// The verdict on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The mode the program will run in (`Auto`: native where the driver has it).
    pub mode: AttachMode,
    pub xdp_tx: XdpTx,
    /// AF_XDP zero-copy (else copy mode), when the forwarder runs.
    pub zero_copy: bool,
    /// `XT_IFACES` flags for the program.
    pub flags: u32,
    /// Human-readable lines: the facts, then which traffic takes which path.
    pub lines: Vec<String>,
    /// What cannot work, each with its fix. Empty: the interface can be served.
    pub refusals: Vec<String>,
}

fn yes_no(v: Option<bool>, on: &str, off: &str) -> String {
    match v {
        Some(true) => on.to_string(),
        Some(false) => off.to_string(),
        None => "unknown".to_string(),
    }
}

fn feature_names(f: u64) -> String {
    let names = [
        (xdp_act::BASIC, "basic"),
        (xdp_act::REDIRECT, "redirect"),
        (xdp_act::NDO_XMIT, "ndo-xmit"),
        (xdp_act::XSK_ZEROCOPY, "xsk-zerocopy"),
        (xdp_act::RX_SG, "rx-sg"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// Judge interface `f` for `plan`, with the program in `running` mode when it is already
/// attached (else the mode `plan.mode` will give).
pub fn assess(f: &Facts, plan: &Plan, running: Option<AttachMode>) -> Assessment {
    let mut refusals = Vec::new();
    let veth = f.driver.as_deref() == Some("veth");
    let native_ok = match f.xdp_features {
        Some(x) => x & xdp_act::BASIC != 0,
        // Unknown (old kernel): attaching will tell.
        None => true,
    };
    let native_mtu_ok = !(veth && f.mtu > VETH_NATIVE_MAX_MTU);
    let mode = running.unwrap_or(match plan.mode {
        ModeChoice::Generic => AttachMode::Generic,
        ModeChoice::Native => AttachMode::Native,
        ModeChoice::Auto if native_ok && native_mtu_ok => AttachMode::Native,
        ModeChoice::Auto => AttachMode::Generic,
    });
    if running.is_none() && plan.mode == ModeChoice::Native {
        if !native_ok {
            refusals.push(format!(
                "{}: the {} driver has no native XDP: use --xdp-mode generic (or auto)",
                f.name,
                f.driver.as_deref().unwrap_or("interface's")
            ));
        } else if !native_mtu_ok {
            refusals.push(format!(
                "{}: a veth takes a native XDP program only up to MTU {VETH_NATIVE_MAX_MTU} \
                 (it has {}): lower the MTU or use --xdp-mode generic",
                f.name, f.mtu
            ));
        }
    }
    let zero_copy = mode == AttachMode::Native
        && f.xdp_features
            .is_some_and(|x| x & xdp_act::XSK_ZEROCOPY != 0);
    if plan.afxdp && f.queues > MAX_QUEUES {
        refusals.push(format!(
            "{}: {} receive queues; the AF_XDP fast path serves at most {MAX_QUEUES} (reduce \
             them with ethtool -L {} combined {MAX_QUEUES}, or add --no-afxdp)",
            f.name, f.queues, f.name
        ));
    }
    if plan.afxdp && f.queues == 0 {
        refusals.push(format!(
            "{}: no receive queues in sysfs: run without the fast path (--no-afxdp)",
            f.name
        ));
    }
    let tx = xdp_tx(f, mode);
    let mut flags = 0;
    if tx.arrives {
        flags |= iface_flags::XDP_TX;
    }
    if mode == AttachMode::Generic {
        flags |= iface_flags::GENERIC;
    }

    let mut lines = vec![format!(
        "{}: driver {}, {} receive queue(s), MTU {}, XDP {} mode (driver features {}), \
         {}, IPv4 forwarding {}, IPv6 forwarding {}, TX checksum offload {}",
        f.name,
        f.driver.as_deref().unwrap_or("unknown"),
        f.queues,
        f.mtu,
        mode.name(),
        f.xdp_features
            .map_or_else(|| "unknown".into(), feature_names),
        if !plan.afxdp {
            "no AF_XDP (--no-afxdp)".to_string()
        } else if zero_copy {
            "AF_XDP zero-copy".to_string()
        } else {
            "AF_XDP copy mode".to_string()
        },
        yes_no(f.forwarding_v4, "on", "off"),
        yes_no(f.forwarding_v6, "on", "off"),
        yes_no(f.tx_checksum, "on", "off"),
    )];
    lines.push(format!(
        "{}: XDP_TX {}: {}",
        f.name,
        if tx.arrives {
            "arrives"
        } else {
            "does not arrive"
        },
        tx.why
    ));
    lines.push(if tx.arrives {
        format!("{}: STUN Binding requests: answered in the driver", f.name)
    } else {
        format!(
            "{}: STUN Binding requests: answered by the socket path{}",
            f.name,
            tx.fix.as_ref().map_or(String::new(), |fix| format!(
                " (to answer them in the driver: {fix})"
            ))
        )
    });
    if plan.afxdp {
        for (on, fam, relayed) in [
            (f.forwarding_v4, "ipv4", plan.ipv4),
            (f.forwarding_v6, "ipv6", plan.ipv6),
        ] {
            if !relayed {
                continue;
            }
            lines.push(if on == Some(false) {
                format!(
                    "{}: TURN data over {fam} received here: socket path, because IP forwarding \
                     is off and the XDP program's next-hop lookup needs it (sysctl -w \
                     net.{fam}.conf.{}.forwarding=1, with a drop policy in the forward chain \
                     if the host must not route)",
                    f.name, f.name
                )
            } else {
                format!(
                    "{}: TURN data over {fam} received here: AF_XDP forwarder ({}) once the next \
                     hop is resolved; family changes, Data indications, frames over the egress \
                     MTU and relay-to-relay traffic take the socket path",
                    f.name,
                    if zero_copy { "zero-copy" } else { "copy mode" }
                )
            });
        }
        let frame = steer_limit(f.mtu);
        if frame < f.mtu as usize + 14 {
            lines.push(format!(
                "{}: frames over {frame} bytes (the UMEM frame) take the socket path",
                f.name
            ));
        }
    } else {
        lines.push(format!("{}: TURN data: socket path (--no-afxdp)", f.name));
    }
    if veth {
        lines.push(format!(
            "{}: UDP checksums left to offload by local senders on the far end (veth TX \
             checksum offload) are recognised and completed on the fast path",
            f.name
        ));
    }
    Assessment {
        mode,
        xdp_tx: tx,
        zero_copy,
        flags,
        lines,
        refusals,
    }
}

/// Refuse, before anything is attached, what cannot work on `names` for `plan`.
pub fn preflight(names: &[String], plan: &Plan) -> Result<()> {
    let mut refusals = Vec::new();
    for n in names {
        match facts(n) {
            Ok(f) => refusals.extend(assess(&f, plan, None).refusals),
            Err(e) => refusals.push(format!("{n}: {e:#}")),
        }
    }
    refuse(&refusals)
}

/// One attached interface as last assessed.
#[derive(Debug, Clone)]
struct Watched {
    name: String,
    ifindex: u32,
    mode: AttachMode,
    flags: u32,
    why: String,
    mtu: u32,
}

/// Keeps the program's interface flags true while the server runs: a veth peer's XDP
/// program may come or go, an MTU may change.
pub struct Watch {
    plan: Plan,
    ifaces: Vec<Watched>,
}

impl Watch {
    /// Assess every interface `xdp` is attached to, log what takes which path, and set the
    /// program's flags.
    pub fn start(plan: Plan, xdp: &mut crate::xdp::XdpPath) -> Result<Watch> {
        let mut ifaces = Vec::new();
        for (name, ifindex, mode) in xdp.attachments() {
            let f = facts(&name)?;
            let a = assess(&f, &plan, Some(mode));
            for l in &a.lines {
                tracing::info!("{l}");
            }
            xdp.set_iface_flags(ifindex, a.flags)?;
            ifaces.push(Watched {
                name,
                ifindex,
                mode,
                flags: a.flags,
                why: a.xdp_tx.why,
                mtu: f.mtu,
            });
        }
        let s = xdp.sizes();
        tracing::info!(
            "XDP maps hold {} allocations, {} permissions and {} channels (--xdp-max-*); what \
             does not fit takes the socket path",
            s.allocations,
            s.permissions,
            s.channels
        );
        Ok(Watch { plan, ifaces })
    }

    /// Read the facts again; update the flags that changed (and log it). Returns the
    /// interfaces whose MTU changed, with the new MTU.
    /// The kernel is asked without holding `xdp`'s lock; it is taken only to write a flag.
    pub fn recheck(&mut self, xdp: &std::sync::Mutex<crate::xdp::XdpPath>) -> Vec<(u32, u32)> {
        let mut mtus = Vec::new();
        for w in &mut self.ifaces {
            let Ok(f) = facts(&w.name) else {
                continue;
            };
            let a = assess(&f, &self.plan, Some(w.mode));
            if a.flags != w.flags {
                let set = xdp
                    .lock()
                    .expect("xdp lock")
                    .set_iface_flags(w.ifindex, a.flags);
                match set {
                    Ok(()) => {
                        tracing::info!(
                            "{}: XDP_TX {} now ({}): Binding requests are answered {}",
                            w.name,
                            if a.xdp_tx.arrives {
                                "arrives"
                            } else {
                                "does not arrive"
                            },
                            a.xdp_tx.why,
                            if a.xdp_tx.arrives {
                                "in the driver"
                            } else {
                                "by the socket path"
                            }
                        );
                        w.flags = a.flags;
                        w.why = a.xdp_tx.why;
                    }
                    Err(e) => tracing::warn!("{}: cannot update XT_IFACES: {e:#}", w.name),
                }
            }
            if f.mtu != w.mtu {
                tracing::info!("{}: MTU {} -> {}", w.name, w.mtu, f.mtu);
                w.mtu = f.mtu;
                mtus.push((w.ifindex, f.mtu));
            }
        }
        mtus
    }

    /// The interfaces for the status file.
    pub fn report(&self) -> Vec<crate::status::XdpInterface> {
        self.ifaces
            .iter()
            .map(|w| crate::status::XdpInterface {
                name: w.name.clone(),
                ifindex: w.ifindex,
                mode: w.mode,
                xdp_tx: w.flags & iface_flags::XDP_TX != 0,
                xdp_tx_why: w.why.clone(),
            })
            .collect()
    }
}

/// ETHTOOL ioctls on an interface of this namespace (include/uapi/linux/ethtool.h).
mod ethtool {
    use anyhow::{bail, Result};
    use std::os::fd::AsRawFd;

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    const ETHTOOL_GTXCSUM: u32 = 0x16;

    /// `struct ethtool_drvinfo`.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }

    /// `struct ethtool_value`.
    #[repr(C)]
    struct Value {
        cmd: u32,
        data: u32,
    }

    /// `struct ifreq` with `ifr_data`.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _rest: [u8; 16],
    }

    /// SIOCETHTOOL on `name` with the command block `block` (which starts with its cmd).
    fn ioctl<T>(name: &str, block: &mut T) -> Result<()> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            bail!("{name:?}: not an interface name");
        }
        // Any socket of the namespace will do; an unbound one needs no address.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .or_else(|_| socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: (block as *mut T).cast(),
            _rest: [0; 16],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: SIOCETHTOOL reads the interface name and writes at most size_of::<T>()
        // bytes of the command block `data` points to, which lives for the call; `req` is
        // a valid ifreq.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
        if r < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    pub fn driver(name: &str) -> Result<String> {
        let mut d = DrvInfo {
            cmd: ETHTOOL_GDRVINFO,
            driver: [0; 32],
            version: [0; 32],
            fw_version: [0; 32],
            bus_info: [0; 32],
            erom_version: [0; 32],
            reserved2: [0; 12],
            n_priv_flags: 0,
            n_stats: 0,
            testinfo_len: 0,
            eedump_len: 0,
            regdump_len: 0,
        };
        ioctl(name, &mut d)?;
        let end = d.driver.iter().position(|&c| c == 0).unwrap_or(32);
        Ok(String::from_utf8_lossy(&d.driver[..end]).into_owned())
    }

    pub fn tx_checksum(name: &str) -> Result<bool> {
        let mut v = Value {
            cmd: ETHTOOL_GTXCSUM,
            data: 0,
        };
        ioctl(name, &mut v)?;
        Ok(v.data != 0)
    }
}

/// Refuse with every reason at once.
pub fn refuse(refusals: &[String]) -> Result<()> {
    if refusals.is_empty() {
        return Ok(());
    }
    bail!("cannot serve with --xdp:\n  {}", refusals.join("\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(peer_prog: Option<bool>) -> Facts {
        Facts {
            name: "xt1rc".into(),
            ifindex: 5,
            driver: Some("veth".into()),
            queues: 1,
            mtu: 1500,
            xdp_features: Some(xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::RX_SG),
            forwarding_v4: Some(true),
            forwarding_v6: Some(false),
            tx_checksum: Some(true),
            veth_peer: Some(VethPeer {
                ifindex: 2,
                netnsid: Some(0),
                name: "xt1ca".into(),
                native_program: peer_prog,
            }),
            programs: vec![],
        }
    }

    fn nic() -> Facts {
        Facts {
            name: "eth0".into(),
            driver: Some("ice".into()),
            queues: 8,
            xdp_features: Some(
                xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::NDO_XMIT | xdp_act::XSK_ZEROCOPY,
            ),
            veth_peer: None,
            ..veth(None)
        }
    }

    const AUTO: Plan = Plan {
        mode: ModeChoice::Auto,
        afxdp: true,
        ipv4: true,
        ipv6: false,
    };

    fn text(a: &Assessment) -> String {
        a.lines.join("\n")
    }

    #[test]
    fn veth_without_a_program_on_its_peer_answers_binding_in_user_space() {
        let a = assess(&veth(Some(false)), &AUTO, None);
        assert_eq!(a.mode, AttachMode::Native);
        assert!(!a.xdp_tx.arrives);
        assert_eq!(a.flags, 0);
        assert!(a.refusals.is_empty());
        let t = text(&a);
        assert!(t.contains("XDP_TX does not arrive"), "{t}");
        assert!(
            t.contains("Binding requests: answered by the socket path (to answer them in the driver: attach an XDP program to xt1ca"),
            "{t}"
        );
        assert!(t.contains("AF_XDP copy mode"), "{t}");
        assert!(
            t.contains("over ipv4 received here: AF_XDP forwarder"),
            "{t}"
        );
        assert!(!t.contains("over ipv6"), "{t}");
    }

    #[test]
    fn veth_with_a_native_program_on_its_peer_answers_binding_in_the_driver() {
        let a = assess(&veth(Some(true)), &AUTO, None);
        assert!(a.xdp_tx.arrives);
        assert_eq!(a.flags, iface_flags::XDP_TX);
        assert!(text(&a).contains("Binding requests: answered in the driver"));
    }

    #[test]
    fn unreadable_veth_peer_is_taken_as_no_xdp_tx() {
        let a = assess(&veth(None), &AUTO, None);
        assert!(!a.xdp_tx.arrives);
        assert_eq!(a.flags, 0);
        let mut f = veth(None);
        f.veth_peer = None;
        assert!(!assess(&f, &AUTO, None).xdp_tx.arrives);
    }

    #[test]
    fn generic_mode_always_has_xdp_tx_and_says_so_in_the_flags() {
        let plan = Plan {
            mode: ModeChoice::Generic,
            ..AUTO
        };
        let a = assess(&veth(Some(false)), &plan, None);
        assert_eq!(a.mode, AttachMode::Generic);
        assert!(a.xdp_tx.arrives);
        assert_eq!(a.flags, iface_flags::XDP_TX | iface_flags::GENERIC);
        assert!(!a.zero_copy);
        // A running attachment's mode wins over the plan.
        let a = assess(&veth(Some(false)), &AUTO, Some(AttachMode::Generic));
        assert_eq!(a.flags, iface_flags::XDP_TX | iface_flags::GENERIC);
    }

    #[test]
    fn a_nic_with_zero_copy_gets_native_xdp_tx_and_zero_copy() {
        let a = assess(&nic(), &AUTO, None);
        assert_eq!(a.mode, AttachMode::Native);
        assert!(a.xdp_tx.arrives && a.zero_copy);
        assert!(text(&a).contains("AF_XDP zero-copy"), "{}", text(&a));
        assert!(!text(&a).contains("checksums left to offload"));
    }

    #[test]
    fn forwarding_off_sends_that_family_to_the_socket_path() {
        let mut f = veth(Some(false));
        f.forwarding_v4 = Some(false);
        let plan = Plan { ipv6: true, ..AUTO };
        let t = text(&assess(&f, &plan, None));
        assert!(
            t.contains("over ipv4 received here: socket path, because IP forwarding is off"),
            "{t}"
        );
        assert!(t.contains("net.ipv4.conf.xt1rc.forwarding=1"), "{t}");
        assert!(t.contains("over ipv6 received here: socket path"), "{t}");
    }

    #[test]
    fn refusals_name_the_fix() {
        let mut f = nic();
        f.xdp_features = Some(0);
        let native = Plan {
            mode: ModeChoice::Native,
            ..AUTO
        };
        let a = assess(&f, &native, None);
        assert!(
            a.refusals[0].contains("--xdp-mode generic"),
            "{:?}",
            a.refusals
        );
        // Auto falls back to generic instead.
        let a = assess(&f, &AUTO, None);
        assert_eq!((a.mode, a.refusals.len()), (AttachMode::Generic, 0));

        let mut f = veth(Some(false));
        f.mtu = 9000;
        let a = assess(&f, &native, None);
        assert!(a.refusals[0].contains("lower the MTU"), "{:?}", a.refusals);
        let a = assess(&f, &AUTO, None);
        assert_eq!(a.mode, AttachMode::Generic);
        assert!(text(&a).contains("take the socket path"), "{}", text(&a));

        let mut f = nic();
        f.queues = 96;
        let a = assess(&f, &AUTO, None);
        assert!(
            a.refusals[0].contains("ethtool -L eth0"),
            "{:?}",
            a.refusals
        );
        let no_afxdp = Plan {
            afxdp: false,
            ..AUTO
        };
        assert!(assess(&f, &no_afxdp, None).refusals.is_empty());
        let e = refuse(&a.refusals).unwrap_err().to_string();
        assert!(e.contains("ethtool -L"), "{e}");
        assert!(refuse(&[]).is_ok());
    }

    #[test]
    fn loopback_facts_are_read() {
        let f = facts("lo").unwrap();
        assert_eq!(f.ifindex, 1);
        assert!(f.mtu >= 1280 && f.queues >= 1, "{f:?}");
        assert_eq!(f.veth_peer, None);
        assert!(facts("xt-no-such-if").is_err());
    }
}
