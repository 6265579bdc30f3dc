//! Fields read from /proc when a rule asks for them (terminal, working directory, age,
//! capabilities, login uid, whether a container is privileged, whether an executable is on
//! a container's writable layer), and ptrace requests by name.
//! A /proc field of a process that has already exited is absent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::fields::Value;

/// `/proc/PID/stat` fields after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split(' ').map(str::to_string).collect())
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A hexadecimal capability set (`CapEff:`, `CapBnd:`, ...) of /proc/PID/status.
fn cap_bits(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix(key))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// A capability set from /proc/PID/status (`CapEff:` or `CapPrm:`) by name.
fn caps(pid: u32, key: &str) -> Option<String> {
    cap_bits(pid, key).map(cap_names)
}

/// The capabilities of a set (bit i: capability i) by name, space separated.
pub fn cap_names(bits: u64) -> String {
    let names: Vec<&str> = CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join(" ")
}

/// A field read from /proc for `pid` at the time of an event at `ts_boot_ns`.
pub fn live(pid: u32, ts_boot_ns: u64, field: &str) -> Option<Value<'static>> {
    let owned = |s: String| Value::Str(Cow::Owned(s.into_bytes()));
    match field {
        "proc.tty" => stat_fields(pid)?.get(4)?.parse().ok().map(Value::Int),
        "proc.cwd" => {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            let mut text = cwd.to_string_lossy().into_owned();
            if !text.ends_with('/') {
                text.push('/');
            }
            Some(owned(text))
        }
        "proc.duration" => {
            let ticks: u64 = stat_fields(pid)?.get(19)?.parse().ok()?;
            // SAFETY: sysconf has no memory effects.
            let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
            let start_ns = ticks.checked_mul(1_000_000_000)? / hz.max(1);
            Some(Value::Int(ts_boot_ns.saturating_sub(start_ns) as i64))
        }
        "proc.cap_effective" => caps(pid, "CapEff:").map(owned),
        "proc.cap_permitted" => caps(pid, "CapPrm:").map(owned),
        "user.loginuid" => {
            let text = std::fs::read_to_string(format!("/proc/{pid}/loginuid")).ok()?;
            let uid: u32 = text.trim().parse().ok()?;
            Some(Value::Int(if uid == u32::MAX { -1 } else { uid.into() }))
        }
        _ => None,
    }
}

/// Per container id: a fact learnt from the first of its processes read while alive.
type PerContainer<T> = Mutex<Option<HashMap<String, T>>>;

fn per_container<T: Clone>(
    cache: &PerContainer<T>,
    container: &str,
    read: impl FnOnce() -> Option<T>,
) -> Option<T> {
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(v) = map.get(container) {
        return Some(v.clone());
    }
    let v = read()?;
    map.insert(container.to_string(), v.clone());
    Some(v)
}

static PRIVILEGED: PerContainer<bool> = Mutex::new(None);

/// Whether `container` (with process `pid`) runs privileged, as `--privileged` makes it:
/// every capability the host's init may hold is in its bounding set, and no seccomp filter.
pub fn privileged(container: &str, pid: u32) -> Option<bool> {
    per_container(&PRIVILEGED, container, || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let seccomp = status.lines().find_map(|l| l.strip_prefix("Seccomp:"))?;
        let bounding = cap_bits(pid, "CapBnd:")?;
        let host = cap_bits(1, "CapBnd:")?;
        Some(bounding & host == host && seccomp.trim() == "0")
    })
}

static UPPER_DIRS: PerContainer<PathBuf> = Mutex::new(None);

/// The overlay upper (writable) directory of `pid`'s root filesystem, as the host names it.
fn root_upper_dir(pid: u32) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    mountinfo.lines().rev().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let point = mount.split(' ').nth(4)?;
        let mut fs = fs.split(' ');
        if point != "/" || fs.next()? != "overlay" {
            return None;
        }
        let options = fs.nth(1)?;
        let upper = options
            .split(',')
            .find_map(|o| o.strip_prefix("upperdir="))?;
        Some(PathBuf::from(crate::kernel::cgroup::unescape(upper)))
    })
}

/// Whether executable `exe` of `pid` in `container` is on the container's writable layer
/// (written or changed since the container started), not from its image.
pub fn exe_upper_layer(container: &str, pid: u32, exe: &[u8]) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let upper = per_container(&UPPER_DIRS, container, || root_upper_dir(pid))?;
    let inside = exe.strip_prefix(b"/")?;
    Some(
        upper
            .join(std::ffi::OsStr::from_bytes(inside))
            .symlink_metadata()
            .is_ok(),
    )
}

/// A ptrace request by name (the number when unknown).
pub fn ptrace_request_name(request: u64) -> Vec<u8> {
    let name = match request {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSR",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSR",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4206 => "PTRACE_SEIZE",
        _ => return request.to_string().into_bytes(),
    };
    name.as_bytes().to_vec()
}
