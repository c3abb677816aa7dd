//! Dropping root after setup.
//!
//! A TURN server parses whatever the Internet sends it. Once its sockets are bound, its XDP
//! program attached and its AF_XDP sockets open, it needs almost nothing of root: it
//! becomes an unprivileged user (`--proc-user`/`--proc-group`, coturn's names; `nobody` by
//! default when started as root) and keeps only the capabilities a feature still uses:
//!
//! | feature | capability kept | why |
//! |---|---|---|
//! | UDP on ports >= 1024 | none | |
//! | relay ports below 1024 (`--min-port`) | CAP_NET_BIND_SERVICE | relay sockets are bound per allocation |
//! | `--xdp` | CAP_BPF, CAP_NET_ADMIN | map updates where the kernel still checks `unprivileged_bpf_disabled` on every bpf(2) call (before 6.5); detaching a netlink-attached program at exit |
//! | `--xdp` with `--afxdp-nice` below 0 | CAP_SYS_NICE | the forwarder threads set their nice value when they start |
//!
//! Order (the process has one thread here, so every later thread inherits the result):
//! bounding set reduced, keep-caps on, supplementary groups, GID, UID (real, effective,
//! saved), permitted and effective sets set to the kept ones, inheritable and ambient
//! emptied, keep-caps off, no-new-privs on. Then it checks that setuid(0) fails.

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use std::ffi::{CStr, CString};

/// Who to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

fn is_number(s: &str) -> Option<u32> {
    s.parse().ok()
}

/// The user `user` (a name or a number) and the group `group` (default: the user's
/// primary group).
pub fn resolve(user: &str, group: Option<&str>) -> Result<Target> {
    let (uid, primary, name) = match is_number(user) {
        Some(uid) => (uid, passwd_by_uid(uid).map(|p| p.1), user.to_string()),
        None => {
            let (uid, gid) = passwd_by_name(user)
                .with_context(|| format!("--proc-user {user:?}: no such user"))?;
            (uid, Some(gid), user.to_string())
        }
    };
    let gid = match group {
        Some(g) => group_id(g)?,
        None => primary.with_context(|| {
            format!("--proc-user {user}: no primary group known, give --proc-group")
        })?,
    };
    Ok(Target { uid, gid, name })
}

/// A group name or number.
pub fn group_id(g: &str) -> Result<u32> {
    if let Some(n) = is_number(g) {
        return Ok(n);
    }
    let c = CString::new(g).context("group name with a NUL byte")?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r fills `grp` using `buf`, both ours and sized as given.
    let r = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() {
        bail!("no such group {g:?}");
    }
    Ok(grp.gr_gid)
}

fn passwd_by_name(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r fills `pw` using `buf`, both ours and sized as given.
    let r = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    (r == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

fn passwd_by_uid(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r fills `pw` using `buf`, both ours and sized as given.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((name, pw.pw_gid))
}

/// What the features in use still need (see the module's table).
pub fn needed(low_relay_ports: bool, xdp: bool, negative_nice: bool) -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    if low_relay_ports {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    if xdp {
        keep.insert(Capability::CAP_BPF);
        keep.insert(Capability::CAP_NET_ADMIN);
        if negative_nice {
            keep.insert(Capability::CAP_SYS_NICE);
        }
    }
    keep
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

fn os(what: &str, r: libc::c_int) -> Result<()> {
    if r != 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn names(c: &CapsHashSet) -> String {
    let mut v: Vec<String> = c.iter().map(|c| c.to_string().to_lowercase()).collect();
    v.sort();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Become `target` keeping `keep`; returns the line to log. Must run before any other
/// thread exists (capabilities are per thread).
pub fn drop_to(target: &Target, keep: &CapsHashSet) -> Result<String> {
    let n = threads();
    if n != 1 {
        bail!("privileges must be dropped before threads start ({n} threads exist)");
    }
    // Only what the kernel knows can be kept (CAP_BPF is 5.8+).
    let known = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    let keep: CapsHashSet = keep.intersection(&known).copied().collect();
    for c in known.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *c)
            .with_context(|| format!("cannot drop {c} from the bounding set"))?;
    }
    // SAFETY: prctl with integer arguments; no memory is passed.
    os("PR_SET_KEEPCAPS", unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)
    })?;
    let groups = [target.gid as libc::gid_t];
    // SAFETY: setgroups reads `groups`, one entry long.
    os("setgroups", unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: plain system calls with integer arguments; glibc applies them to every thread
    // (there is one).
    os("setresgid", unsafe {
        libc::setresgid(target.gid, target.gid, target.gid)
    })?;
    // SAFETY: as above.
    os("setresuid", unsafe {
        libc::setresuid(target.uid, target.uid, target.uid)
    })?;
    caps::set(None, CapSet::Permitted, &keep).context("cannot set the permitted capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("cannot set the effective capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("cannot clear inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    // SAFETY: prctl with integer arguments.
    os("PR_SET_KEEPCAPS", unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0)
    })?;
    // SAFETY: as above. No exec'd program can gain privileges either (setuid binaries).
    os("PR_SET_NO_NEW_PRIVS", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    // Prove it: root cannot come back.
    // SAFETY: setuid with an integer argument; it must fail.
    if target.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        bail!("setuid(0) succeeded after dropping privileges: refusing to run");
    }
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    if effective != keep {
        bail!(
            "capabilities after the drop are {} instead of {}",
            names(&effective),
            names(&keep)
        );
    }
    Ok(format!(
        "running as user {} (uid {}, gid {}), capabilities: {}; setuid(0) refused",
        target.name,
        target.uid,
        target.gid,
        names(&keep)
    ))
}

/// For a process that did not start as root: give up every capability not in `keep` (a
/// binary with file capabilities may have more), nothing else changes.
pub fn narrow(keep: &CapsHashSet) -> Result<String> {
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let missing: CapsHashSet = keep.difference(&permitted).copied().collect();
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &keep).context("cannot set the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("cannot set the permitted capabilities")?;
    // Nothing passes through an exec (systemd's AmbientCapabilities= put them there).
    caps::clear(None, CapSet::Ambient).context("cannot clear ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("cannot clear inheritable capabilities")?;
    // SAFETY: prctl with integer arguments.
    os("PR_SET_NO_NEW_PRIVS", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    let mut line = format!(
        "running as uid {}, capabilities: {}",
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() },
        names(&keep)
    );
    if !missing.is_empty() {
        line.push_str(&format!(
            " (not given, though the features in use need them: {})",
            names(&missing)
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve() {
        let t = resolve("nobody", None).unwrap();
        assert_eq!(t.uid, 65534);
        assert_eq!(resolve("65534", Some("0")).unwrap().gid, 0);
        assert!(resolve("no-such-user-xturn", None).is_err());
        assert!(group_id("no-such-group-xturn").is_err());
        assert_eq!(group_id("0").unwrap(), 0);
    }

    #[test]
    fn features_need_few_capabilities() {
        assert!(needed(false, false, false).is_empty());
        assert_eq!(
            needed(true, false, true),
            [Capability::CAP_NET_BIND_SERVICE].into_iter().collect()
        );
        assert_eq!(needed(false, true, true).len(), 3);
        assert_eq!(needed(false, true, false).len(), 2);
    }
}
