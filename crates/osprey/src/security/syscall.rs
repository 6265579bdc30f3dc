//! Security-relevant syscall events (kind 32, bpf/security.bpf.c): decoding, names and
//! their JSON shape.

use serde::ser::SerializeMap;

use crate::abi::{self, status};
use crate::files::errno_name;
use crate::wire::text::write_bytes_field;
use crate::wire::{split_tail, DecodeError};

/// (x86-64 number, name, class used as `evt.kind` by rules)
pub const SYSCALLS: &[(u32, &str, &str)] = &[
    (41, "socket", "socket"),
    (42, "connect", "connect"),
    (49, "bind", "bind"),
    (50, "listen", "listen"),
    (62, "kill", "kill"),
    (76, "truncate", "truncate"),
    (77, "ftruncate", "truncate"),
    (82, "rename", "rename"),
    (86, "link", "link"),
    (87, "unlink", "unlink"),
    (88, "symlink", "symlink"),
    (90, "chmod", "chmod"),
    (91, "fchmod", "chmod"),
    (92, "chown", "chown"),
    (93, "fchown", "chown"),
    (94, "lchown", "chown"),
    (101, "ptrace", "ptrace"),
    (105, "setuid", "setid"),
    (106, "setgid", "setid"),
    (113, "setreuid", "setid"),
    (114, "setregid", "setid"),
    (117, "setresuid", "setid"),
    (119, "setresgid", "setid"),
    (122, "setfsuid", "setid"),
    (123, "setfsgid", "setid"),
    (126, "capset", "capset"),
    (165, "mount", "mount"),
    (166, "umount2", "umount"),
    (188, "setxattr", "xattr"),
    (189, "lsetxattr", "xattr"),
    (190, "fsetxattr", "xattr"),
    (197, "removexattr", "xattr"),
    (198, "lremovexattr", "xattr"),
    (199, "fremovexattr", "xattr"),
    (175, "init_module", "module"),
    (176, "delete_module", "module"),
    (200, "tkill", "kill"),
    (234, "tgkill", "kill"),
    (260, "fchownat", "chown"),
    (263, "unlinkat", "unlink"),
    (264, "renameat", "rename"),
    (265, "linkat", "link"),
    (266, "symlinkat", "symlink"),
    (268, "fchmodat", "chmod"),
    (272, "unshare", "unshare"),
    (308, "setns", "setns"),
    (310, "process_vm_readv", "process_vm"),
    (311, "process_vm_writev", "process_vm"),
    (313, "finit_module", "module"),
    (316, "renameat2", "rename"),
    (319, "memfd_create", "memfd"),
    (321, "bpf", "bpf"),
    (452, "fchmodat2", "chmod"),
    (463, "setxattrat", "xattr"),
    (466, "removexattrat", "xattr"),
];

/// The names of `SYSCALLS`, in its order.
pub const SYSCALL_NAMES: [&str; SYSCALLS.len()] = {
    let mut names = [""; SYSCALLS.len()];
    let mut i = 0;
    while i < SYSCALLS.len() {
        names[i] = SYSCALLS[i].1;
        i += 1;
    }
    names
};

pub fn syscall_name(nr: u32) -> &'static str {
    SYSCALLS.iter().find(|s| s.0 == nr).map_or("?", |s| s.1)
}

pub fn syscall_class(nr: u32) -> &'static str {
    SYSCALLS.iter().find(|s| s.0 == nr).map_or("?", |s| s.2)
}

pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|s| s.1 == name).map(|s| s.0)
}

/// Classes (`evt.kind` values) this event kind can have.
pub fn classes() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = SYSCALLS.iter().map(|s| s.2).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.into_iter()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecSyscall {
    pub nr: u32,
    pub ret: i64,
    pub args: [u64; 4],
    pub old_uid: u32,
    pub old_euid: u32,
    pub status: u16,
    /// First path argument as passed (or the name of memfd_create/delete_module).
    pub path: Vec<u8>,
    /// Absolute form of `path`, or of the fd's file for fd-based calls.
    pub abs_path: Vec<u8>,
    /// Second path: rename/link target, symlink contents, mount source; the attribute
    /// name of the xattr calls.
    pub path2: Vec<u8>,
    pub addr: Option<SockAddr>,
    /// The value of a setxattr-family call (at most 128 bytes).
    pub xattr_value: Vec<u8>,
    /// connect/bind/listen: the socket's SOCK_* type and protocol (0 when unknown).
    pub sock_type: u8,
    pub sock_proto: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockAddr {
    Inet { ip: std::net::IpAddr, port: u16 },
    Unix(Vec<u8>),
    Other(u16),
}

impl SockAddr {
    fn parse(b: &[u8]) -> Option<Self> {
        let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
        Some(match family as i32 {
            libc::AF_INET if b.len() >= 8 => SockAddr::Inet {
                port: u16::from_be_bytes([b[2], b[3]]),
                ip: std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]).into(),
            },
            libc::AF_INET6 if b.len() >= 24 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[8..24]);
                SockAddr::Inet {
                    port: u16::from_be_bytes([b[2], b[3]]),
                    ip: std::net::Ipv6Addr::from(ip).into(),
                }
            }
            libc::AF_UNIX => {
                let path = &b[2..];
                // Abstract sockets start with a NUL; shown with a leading '@'.
                let path = if path.first() == Some(&0) {
                    let mut p = b"@".to_vec();
                    p.extend_from_slice(crate::wire::text::until_nul(&path[1..]));
                    p
                } else {
                    crate::wire::text::until_nul(path).to_vec()
                };
                SockAddr::Unix(path)
            }
            _ => SockAddr::Other(family),
        })
    }

    pub fn text(&self) -> Vec<u8> {
        match self {
            SockAddr::Inet { ip, port } => match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}").into_bytes(),
                std::net::IpAddr::V4(v4) => format!("{v4}:{port}").into_bytes(),
            },
            SockAddr::Unix(p) => p.clone(),
            SockAddr::Other(f) => format!("family {f}").into_bytes(),
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            SockAddr::Inet { port, .. } => Some(*port),
            _ => None,
        }
    }

    pub fn family(&self) -> &'static str {
        match self {
            SockAddr::Inet {
                ip: std::net::IpAddr::V4(_),
                ..
            } => "inet",
            SockAddr::Inet { .. } => "inet6",
            SockAddr::Unix(_) => "unix",
            SockAddr::Other(_) => "other",
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<SecSyscall, DecodeError> {
    let raw: abi::SecSyscall = abi::read(bytes).ok_or(DecodeError::Malformed {
        kind: "security",
        len: bytes.len(),
        why: "short",
    })?;
    let [path, _nul, path2, _nul2, resolved, addr] = split_tail(
        bytes,
        std::mem::size_of::<abi::SecSyscall>(),
        [
            raw.path_len as usize,
            1,
            raw.path2_len as usize,
            1,
            raw.resolved_len as usize,
            raw.addr_len as usize,
        ],
        "security",
    )?;
    let abs_path =
        crate::files::absolute_path(raw.status, path, resolved).unwrap_or_else(|| path.to_vec());
    let xattr = syscall_class(raw.nr) == "xattr";
    Ok(SecSyscall {
        nr: raw.nr,
        ret: raw.ret,
        args: raw.args,
        old_uid: raw.old_uid,
        old_euid: raw.old_euid,
        status: raw.status,
        path: path.to_vec(),
        abs_path,
        path2: path2.to_vec(),
        addr: if addr.is_empty() || xattr {
            None
        } else {
            SockAddr::parse(addr)
        },
        xattr_value: if xattr { addr.to_vec() } else { Vec::new() },
        sock_type: raw.sock_type,
        sock_proto: raw.sock_proto,
    })
}

impl SecSyscall {
    pub fn name(&self) -> &'static str {
        syscall_name(self.nr)
    }

    pub fn class(&self) -> &'static str {
        syscall_class(self.nr)
    }

    pub fn killed(&self) -> bool {
        self.status & status::KILLED != 0
    }

    /// The real and effective uid before a setid-family call; `None` when unknown (the
    /// entry hook of a uid-changing call did not run): never the ids after the call.
    pub fn old_ids(&self) -> Option<(u32, u32)> {
        (self.class() == "setid" && self.status & status::OLD_IDS != 0)
            .then_some((self.old_uid, self.old_euid))
    }

    /// Refused in the kernel before it happened (a connect deny).
    pub fn denied(&self) -> bool {
        self.status & status::DENIED != 0
    }

    /// Signed argument `i` as the syscall saw it (int-sized arguments sign-extended).
    pub fn arg_i32(&self, i: usize) -> i64 {
        i64::from(self.args[i] as u32 as i32)
    }

    /// The ids a setid-family call asks for (-1: unchanged), as (real, effective, saved).
    pub fn requested_ids(&self) -> (i64, i64, i64) {
        let a = |i| self.arg_i32(i);
        match self.name() {
            "setuid" | "setgid" => (a(0), a(0), a(0)),
            "setreuid" | "setregid" => (a(0), a(1), -1),
            "setresuid" | "setresgid" => (a(0), a(1), a(2)),
            "setfsuid" | "setfsgid" => (-1, a(0), -1),
            _ => (-1, -1, -1),
        }
    }

    /// The mode argument of the chmod family.
    pub fn mode(&self) -> Option<u32> {
        match self.name() {
            "chmod" | "fchmod" => Some(self.args[1] as u32 & 0o7777),
            "fchmodat" | "fchmodat2" => Some(self.args[2] as u32 & 0o7777),
            _ => None,
        }
    }

    /// The (uid, gid) arguments of the chown family.
    pub fn owner(&self) -> Option<(i64, i64)> {
        match self.name() {
            "chown" | "fchown" | "lchown" => Some((self.arg_i32(1), self.arg_i32(2))),
            "fchownat" => Some((self.arg_i32(2), self.arg_i32(3))),
            _ => None,
        }
    }

    /// Target process of kill/tkill/tgkill, ptrace and process_vm_readv/writev.
    pub fn target_pid(&self) -> Option<i64> {
        match self.name() {
            "kill" | "tkill" | "tgkill" | "process_vm_readv" | "process_vm_writev" => {
                Some(self.arg_i32(0))
            }
            "ptrace" => Some(self.arg_i32(1)),
            _ => None,
        }
    }

    pub fn signal(&self) -> Option<i64> {
        match self.name() {
            "kill" | "tkill" => Some(self.arg_i32(1)),
            "tgkill" => Some(self.arg_i32(2)),
            _ => None,
        }
    }

    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("syscall", self.name())?;
        map.serialize_entry("class", self.class())?;
        map.serialize_entry("ret", &self.ret)?;
        if self.ret < 0 {
            map.serialize_entry("error", errno_name((-self.ret) as i32))?;
        }
        map.serialize_entry("args", &self.args)?;
        if !self.path.is_empty() {
            write_bytes_field(map, "path", "path_b64", &self.path)?;
            write_bytes_field(map, "abs_path", "abs_path_b64", &self.abs_path)?;
        } else if !self.abs_path.is_empty() {
            write_bytes_field(map, "abs_path", "abs_path_b64", &self.abs_path)?;
        }
        if self.class() == "xattr" {
            write_bytes_field(map, "xattr_name", "xattr_name_b64", &self.path2)?;
        } else if !self.path2.is_empty() {
            write_bytes_field(map, "path2", "path2_b64", &self.path2)?;
        }
        super::classes::write_json(self, map)?;
        if let Some(addr) = &self.addr {
            write_bytes_field(map, "addr", "addr_b64", &addr.text())?;
        }
        if let Some((uid, euid)) = self.old_ids() {
            map.serialize_entry("old_uid", &uid)?;
            map.serialize_entry("old_euid", &euid)?;
        }
        if let Some(mode) = self.mode() {
            map.serialize_entry("mode", &format!("{mode:04o}"))?;
        }
        if self.killed() {
            map.serialize_entry("killed", &true)?;
        }
        if self.denied() {
            map.serialize_entry("denied", &true)?;
        }
        Ok(())
    }

    pub fn table_details(&self) -> String {
        let mut out = self.name().to_string();
        let shown = if self.abs_path.is_empty() {
            &self.path
        } else {
            &self.abs_path
        };
        if !shown.is_empty() {
            out.push(' ');
            out.push_str(&crate::wire::text::escape_for_terminal(shown));
        }
        if self.class() == "xattr" {
            out.push(' ');
            out.push_str(&crate::wire::text::escape_for_terminal(&self.path2));
        } else if !self.path2.is_empty() {
            out.push_str(" -> ");
            out.push_str(&crate::wire::text::escape_for_terminal(&self.path2));
        }
        if let Some(a) = &self.addr {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&a.text()));
        }
        super::classes::table_details(self, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_inet_and_unix() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(SockAddr::parse(&v4).unwrap().text(), b"127.0.0.1:8080");
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"\0abstract\0");
        assert_eq!(SockAddr::parse(&un).unwrap().text(), b"@abstract");
    }

    #[test]
    fn names_and_classes() {
        assert_eq!(syscall_name(105), "setuid");
        assert_eq!(syscall_class(263), "unlink");
        assert_eq!(syscall_number("ptrace"), Some(101));
        assert!(classes().any(|c| c == "setid"));
    }

    #[test]
    fn old_ids_are_known_only_when_the_kernel_says_so() {
        let event = |name: &str, status: u16| SecSyscall {
            nr: syscall_number(name).unwrap(),
            old_uid: 1000,
            old_euid: 1000,
            status,
            ..Default::default()
        };
        assert_eq!(event("setresuid", 0).old_ids(), None, "never the ids after");
        assert_eq!(
            event("setresuid", status::OLD_IDS).old_ids(),
            Some((1000, 1000))
        );
        assert_eq!(
            event("setgid", status::OLD_IDS).old_ids(),
            Some((1000, 1000))
        );
        assert_eq!(event("chmod", status::OLD_IDS).old_ids(), None);
    }
}
