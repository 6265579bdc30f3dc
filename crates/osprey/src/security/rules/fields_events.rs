//! Fields of the event classes added for detection breadth: extended attributes (file
//! capabilities), socket creation, the L4 protocol and networks of connects, cross-process
//! memory access (process_vm_readv/writev, /proc/PID/mem) and exec environment variables.

use std::borrow::Cow;

use crate::pipeline::event::Payload;
use crate::process::env;
use crate::security::classes::{family_name, type_name, FileCaps};
use crate::security::syscall::SockAddr;

use super::fields::{Value, View};

const EINPROGRESS: i64 = 115;

/// The target of an open of `/proc/N/mem` or `/proc/N/task/T/mem`: N, as the opener's
/// /proc shows it.
fn proc_mem_pid(path: &[u8]) -> Option<i64> {
    let rest = path.strip_prefix(b"/proc/")?;
    let mut parts = rest.split(|&b| b == b'/');
    let pid = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let tail: Vec<&[u8]> = parts.collect();
    let mem = match tail.as_slice() {
        [m] => *m == b"mem",
        [t, _, m] => *t == b"task" && *m == b"mem",
        _ => false,
    };
    mem.then_some(pid)
}

/// N of a path `/proc/N` or below it (a mount target hiding process N).
fn proc_pid_dir(path: &[u8]) -> Option<i64> {
    let rest = path.strip_prefix(b"/proc/")?;
    let first = rest.split(|&b| b == b'/').next()?;
    std::str::from_utf8(first).ok()?.parse().ok()
}

/// The process's ids in its own pid namespace (the last NSpid entries), from /proc.
fn ns_ids(pid: u32) -> Vec<i64> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    ["NSpid:", "NStgid:"]
        .iter()
        .filter_map(|key| status.lines().find_map(|l| l.strip_prefix(key)))
        .filter_map(|v| v.split_whitespace().last()?.parse().ok())
        .collect()
}

impl<'a> View<'a> {
    /// `Some(value)` for the fields of this file, `None` for any other field.
    pub(super) fn class_field(&self, field: &str) -> Option<Option<Value<'a>>> {
        let owned = |s: String| Some(Value::Str(Cow::Owned(s.into_bytes())));
        let sec = self.security();
        Some(match field {
            "xattr.name" => sec
                .and_then(|s| s.xattr_name())
                .map(|n| Value::Str(Cow::Borrowed(n))),
            "xattr.cap_permitted" => sec
                .and_then(|s| s.file_caps())
                .and_then(|c| owned(FileCaps::names(c.permitted))),
            "xattr.cap_effective" => sec
                .and_then(|s| s.file_caps())
                .and_then(|c| owned(FileCaps::names(c.effective_set()))),
            "socket.family" => sec
                .filter(|s| s.name() == "socket")
                .and_then(|s| owned(family_name(s.args[0]).into_owned())),
            "socket.type" => sec
                .filter(|s| s.name() == "socket")
                .and_then(|s| owned(type_name(s.args[1]).into_owned())),
            "socket.protocol" => sec
                .filter(|s| s.name() == "socket")
                .map(|s| Value::Int(s.args[2] as u32 as i64)),
            "net.l4proto" => sec
                .and_then(|s| s.l4proto())
                .map(|p| Value::Str(Cow::Borrowed(p.as_bytes()))),
            "net.connected" => sec
                .filter(|s| s.name() == "connect")
                .map(|s| Value::Bool(s.ret == 0)),
            "net.name_changed" => sec
                .filter(|s| matches!(s.name(), "connect" | "bind"))
                .map(|s| Value::Bool(s.ret == 0 || s.ret == -EINPROGRESS)),
            "net.ipnet" => match sec.and_then(|s| s.addr.as_ref()) {
                Some(SockAddr::Inet { ip, .. }) => owned(ip.to_string()),
                _ => None,
            },
            "target.pid" => match &self.event.payload {
                Payload::FileOpen(_) => self.path().and_then(proc_mem_pid).map(Value::Int),
                Payload::Security(s) if s.class() == "mount" => {
                    self.path().and_then(proc_pid_dir).map(Value::Int)
                }
                _ => sec.and_then(|s| s.target_pid()).map(Value::Int),
            },
            "target.self" => self.target_self().map(Value::Bool),
            "proc.env" => match &self.event.payload {
                Payload::Exec(x) => Some(Value::Str(Cow::Owned(x.env.join(&b' ')))),
                _ => None,
            },
            _ if field.starts_with("proc.env[") => match &self.event.payload {
                Payload::Exec(x) => env::value(&x.env, &field[9..field.len() - 1])
                    .map(|v| Value::Str(Cow::Borrowed(v))),
                _ => None,
            },
            _ => return None,
        })
    }

    /// process_vm_readv/writev on the caller, or an open of the opener's own /proc/N/mem.
    fn target_self(&self) -> Option<bool> {
        let h = &self.event.header;
        match &self.event.payload {
            Payload::Security(s) if s.class() == "process_vm" => Some(s.targets_self()),
            Payload::FileOpen(f) => {
                let path = self.path()?;
                let named_self = |p: &[u8]| {
                    (p.starts_with(b"/proc/self/") || p.starts_with(b"/proc/thread-self/"))
                        && p.ends_with(b"/mem")
                };
                if named_self(path) || named_self(&f.path) {
                    return Some(true);
                }
                let target = proc_mem_pid(path)?;
                Some(
                    target == i64::from(h.pid)
                        || target == i64::from(h.tid)
                        || ns_ids(h.tid).contains(&target),
                )
            }
            _ => None,
        }
    }
}

/// Some loaded rule reads `proc.env`: the process object must copy environments at exec.
pub fn rules_read_env(rules: &super::RuleSet) -> bool {
    fn reads(e: &super::expr::Expr) -> bool {
        use super::expr::Expr;
        match e {
            Expr::And(parts) | Expr::Or(parts) => parts.iter().any(reads),
            Expr::Not(e) => reads(e),
            Expr::Cmp { field, .. } | Expr::In { field, .. } => {
                super::fields::name(*field).starts_with("proc.env")
            }
        }
    }
    rules
        .rules
        .iter()
        .any(|r| reads(&r.condition) || r.exceptions.iter().any(|(_, e)| reads(e)))
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::super::tests::{matching, view_event};
    use super::{proc_mem_pid, proc_pid_dir};
    use crate::pipeline::event::Payload;
    use crate::security::syscall::{syscall_number, SecSyscall, SockAddr};

    #[test]
    fn proc_mem_paths() {
        assert_eq!(proc_mem_pid(b"/proc/42/mem"), Some(42));
        assert_eq!(proc_mem_pid(b"/proc/42/task/43/mem"), Some(42));
        assert_eq!(proc_mem_pid(b"/proc/42/maps"), None);
        assert_eq!(proc_mem_pid(b"/proc/self/mem"), None);
        assert_eq!(proc_mem_pid(b"/tmp/mem"), None);
        assert_eq!(proc_pid_dir(b"/proc/42"), Some(42));
        assert_eq!(proc_pid_dir(b"/proc/sys/fs/binfmt_misc"), None);
    }

    fn sec(name: &str, args: [u64; 4], addr: Option<SockAddr>, sock: (u8, u8)) -> Payload {
        Payload::Security(SecSyscall {
            nr: syscall_number(name).unwrap(),
            ret: 0,
            args,
            old_uid: 0,
            old_euid: 0,
            status: 0,
            path: Vec::new(),
            abs_path: Vec::new(),
            path2: Vec::new(),
            addr,
            xattr_value: Vec::new(),
            sock_type: sock.0,
            sock_proto: sock.1,
        })
    }

    const FALCO: &str = r#"
- list: rfc_1918_addresses
  items: ['"10.0.0.0/8"', '"172.16.0.0/12"', '"192.168.0.0/16"']
- rule: Public TCP
  desc: d
  condition: >
    evt.type = connect and fd.l4proto = tcp and fd.net != "127.0.0.0/8"
    and not fd.snet in (rfc_1918_addresses) and fd.connected = true
  output: o
  priority: INFO
- rule: Packet
  desc: d
  condition: evt.type = socket and evt.arg.domain contains AF_PACKET
  output: o
  priority: INFO
"#;

    #[test]
    fn falco_networks_protocols_and_socket_domains() {
        let set = load(&[("f.yaml", FALCO)]).unwrap();
        let connect = |ip: [u8; 4], sock| {
            let addr = SockAddr::Inet {
                ip: std::net::Ipv4Addr::from(ip).into(),
                port: 443,
            };
            view_event("c", sec("connect", [3, 0, 16, 0], Some(addr), sock))
        };
        let tcp = (libc::SOCK_STREAM as u8, 6);
        assert_eq!(
            matching(&set, &connect([198, 51, 100, 7], tcp)),
            ["Public TCP"]
        );
        assert!(matching(&set, &connect([192, 168, 1, 1], tcp)).is_empty());
        assert!(matching(&set, &connect([127, 0, 0, 1], tcp)).is_empty());
        let udp = (libc::SOCK_DGRAM as u8, 17);
        assert!(matching(&set, &connect([198, 51, 100, 7], udp)).is_empty());
        let socket = |family: i32| {
            let args = [family as u64, libc::SOCK_RAW as u64, 0, 0];
            view_event("s", sec("socket", args, None, (0, 0)))
        };
        assert_eq!(matching(&set, &socket(libc::AF_PACKET)), ["Packet"]);
        assert!(matching(&set, &socket(libc::AF_INET)).is_empty());
    }
}
