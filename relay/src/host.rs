//! What the server needs from the host around it: enough file descriptors for its quota,
//! the host's own addresses (which the peer filter denies like the server itself) and its
//! interfaces as sysfs describes them.

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    read_u32(&Path::new("/sys/class/net").join(name).join("ifindex"))
        .with_context(|| format!("no interface {name:?} in this network namespace"))
}

/// A number in a sysfs (or procfs) file.
pub fn read_u32(p: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{}: not a number: {s:?}", p.display()))
}

/// File descriptors the server needs beyond one per allocation: listeners (one per worker
/// and listening address), epoll instances, AF_XDP sockets, netlink, the status file, and
/// room for the ones a library opens.
pub const FD_SLACK: u64 = 1024;

/// Raise RLIMIT_NOFILE to hold `needed` descriptors: the soft limit up to the hard one, and
/// the hard one too when the process may (CAP_SYS_RESOURCE). Refuse, naming the limit and
/// the fixes, when neither works. Returns the soft limit in force.
pub fn raise_nofile(needed: u64, what: &str) -> Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        bail!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if r.rlim_cur >= needed {
        return Ok(r.rlim_cur);
    }
    let want = libc::rlimit {
        rlim_cur: needed,
        rlim_max: r.rlim_max.max(needed),
    };
    // SAFETY: setrlimit reads the struct; failure leaves the limits as they were.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(needed);
    }
    let err = std::io::Error::last_os_error();
    if r.rlim_max >= needed {
        bail!(
            "cannot raise the open-file limit to {needed} ({err}) for {what}: raise it \
             (ulimit -n {needed}, LimitNOFILE={needed} in the systemd unit) or lower the quota"
        );
    }
    bail!(
        "{what} needs {needed} open files but the hard limit is {} and cannot be raised \
         ({err}): raise it (ulimit -Hn {needed}, LimitNOFILE={needed} in the systemd unit) \
         or lower the quota",
        r.rlim_max
    )
}

/// Every address configured on the host's interfaces (all namespaces' views are their own:
/// this is the network namespace the server runs in).
pub fn local_addresses() -> Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list and stores its head in `head`; it is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        bail!(
            "cannot list the host's addresses: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            match family {
                libc::AF_INET => {
                    // SAFETY: AF_INET: the sockaddr is a sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    // SAFETY: AF_INET6: the sockaddr is a sockaddr_in6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_a_local_address() {
        let a = local_addresses().unwrap();
        assert!(a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{a:?}");
    }

    #[test]
    fn nofile_within_the_current_limit_is_kept() {
        let n = raise_nofile(16, "a test").unwrap();
        assert!(n >= 16);
    }
}
