//! The arguments of the newer security event classes by name: socket() family, type and
//! protocol, a socket's L4 protocol, and `security.capability` values (file capabilities,
//! as `setcap` writes them).

use std::borrow::Cow;

use serde::ser::SerializeMap;

use super::syscall::{SecSyscall, SockAddr};

const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const SOCK_STREAM: u8 = 1;
const SOCK_DGRAM: u8 = 2;
const SOCK_RAW: u8 = 3;

/// An address family as `AF_*` (the number when not named here).
pub fn family_name(family: u64) -> Cow<'static, str> {
    Cow::Borrowed(match family {
        0 => "AF_UNSPEC",
        1 => "AF_UNIX",
        2 => "AF_INET",
        4 => "AF_IPX",
        5 => "AF_APPLETALK",
        9 => "AF_X25",
        10 => "AF_INET6",
        16 => "AF_NETLINK",
        17 => "AF_PACKET",
        29 => "AF_CAN",
        31 => "AF_BLUETOOTH",
        38 => "AF_ALG",
        40 => "AF_VSOCK",
        44 => "AF_XDP",
        _ => return Cow::Owned(family.to_string()),
    })
}

/// A socket type as `SOCK_*`, without SOCK_NONBLOCK and SOCK_CLOEXEC.
pub fn type_name(ty: u64) -> Cow<'static, str> {
    Cow::Borrowed(match ty & 0xf {
        1 => "SOCK_STREAM",
        2 => "SOCK_DGRAM",
        3 => "SOCK_RAW",
        4 => "SOCK_RDM",
        5 => "SOCK_SEQPACKET",
        6 => "SOCK_DCCP",
        10 => "SOCK_PACKET",
        t => return Cow::Owned(t.to_string()),
    })
}

/// Falco's `fd.l4proto` of an inet socket of (type, protocol): tcp, udp, icmp or raw.
fn l4(ty: u8, proto: u8) -> Option<&'static str> {
    match (ty, proto) {
        (SOCK_STREAM, 0 | 6) => Some("tcp"),
        (SOCK_DGRAM, 0 | 17) => Some("udp"),
        (SOCK_DGRAM | SOCK_RAW, 1 | 58) => Some("icmp"),
        (SOCK_RAW, _) => Some("raw"),
        _ => None,
    }
}

impl SecSyscall {
    /// The L4 protocol of socket() (inet families) and of connect/bind/listen's socket.
    pub fn l4proto(&self) -> Option<&'static str> {
        match self.name() {
            "socket" if matches!(self.args[0], AF_INET | AF_INET6) => {
                l4((self.args[1] & 0xf) as u8, self.args[2] as u8)
            }
            "connect" | "bind" if !matches!(self.addr, Some(SockAddr::Inet { .. })) => None,
            "connect" | "bind" | "listen" if self.sock_proto != 0 => {
                l4(self.sock_type, self.sock_proto)
            }
            _ => None,
        }
    }

    /// The process of process_vm_readv/writev is the caller itself.
    pub fn targets_self(&self) -> bool {
        self.status & crate::abi::status::TARGET_SELF != 0
    }

    /// The attribute name of the xattr calls.
    pub fn xattr_name(&self) -> Option<&[u8]> {
        (self.class() == "xattr").then_some(self.path2.as_slice())
    }

    /// File capabilities being set (`security.capability`).
    pub fn file_caps(&self) -> Option<FileCaps> {
        if self.xattr_name()? != b"security.capability" {
            return None;
        }
        FileCaps::parse(&self.xattr_value)
    }
}

/// A `security.capability` value (struct vfs_cap_data, revisions 1 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCaps {
    pub permitted: u64,
    pub inheritable: u64,
    /// VFS_CAP_FLAGS_EFFECTIVE: the permitted set becomes effective at exec.
    pub effective: bool,
}

impl FileCaps {
    pub fn parse(v: &[u8]) -> Option<FileCaps> {
        let word = |i: usize| -> Option<u64> {
            let b = v.get(i * 4..i * 4 + 4)?;
            Some(u64::from(u32::from_le_bytes(b.try_into().ok()?)))
        };
        let magic = word(0)?;
        let words = match magic & 0xff00_0000 {
            0x0100_0000 => 1,
            0x0200_0000 | 0x0300_0000 => 2,
            _ => return None,
        };
        let (mut permitted, mut inheritable) = (0, 0);
        for i in 0..words {
            permitted |= word(1 + 2 * i)? << (32 * i);
            inheritable |= word(2 + 2 * i)? << (32 * i);
        }
        Some(FileCaps {
            permitted,
            inheritable,
            effective: magic & 1 != 0,
        })
    }

    /// Capabilities by lower-case name (`cap_setuid cap_net_raw`), as setcap writes them.
    pub fn names(bits: u64) -> String {
        crate::security::rules::fields_proc::cap_names(bits).to_ascii_lowercase()
    }

    pub fn effective_set(&self) -> u64 {
        if self.effective {
            self.permitted
        } else {
            0
        }
    }
}

/// The JSON members of the newer classes (socket, process_vm, xattr, the socket's protocol).
pub(super) fn write_json<M: SerializeMap>(s: &SecSyscall, map: &mut M) -> Result<(), M::Error> {
    if s.name() == "socket" {
        map.serialize_entry("family", &family_name(s.args[0]))?;
        map.serialize_entry("type", &type_name(s.args[1]))?;
        map.serialize_entry("protocol", &(s.args[2] as u32))?;
    }
    if let Some(l4) = s.l4proto() {
        map.serialize_entry("l4proto", l4)?;
    }
    if s.class() == "process_vm" {
        map.serialize_entry("target_pid", &s.arg_i32(0))?;
        map.serialize_entry("target_self", &s.targets_self())?;
    }
    if let Some(caps) = s.file_caps() {
        map.serialize_entry("cap_permitted", &FileCaps::names(caps.permitted))?;
        map.serialize_entry("cap_effective", &FileCaps::names(caps.effective_set()))?;
    }
    Ok(())
}

/// The table's details of the newer classes, after the syscall name and paths.
pub(super) fn table_details(s: &SecSyscall, out: &mut String) {
    if s.name() == "socket" {
        out.push_str(&format!(
            " {} {}",
            family_name(s.args[0]),
            type_name(s.args[1])
        ));
    }
    if s.class() == "process_vm" {
        out.push_str(&format!(" pid {}", s.arg_i32(0)));
    }
    if let Some(caps) = s.file_caps() {
        out.push_str(&format!(" {}", FileCaps::names(caps.permitted)));
        if caps.effective {
            out.push_str("+ep");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setcap_value_decodes() {
        // setcap cap_setuid,cap_net_raw+ep: revision 2, effective, permitted bits 7 and 13.
        let mut v = (0x0200_0001u32).to_le_bytes().to_vec();
        for w in [(1u32 << 7) | (1 << 13), 0, 0, 0] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        let caps = FileCaps::parse(&v).unwrap();
        assert!(caps.effective);
        assert_eq!(FileCaps::names(caps.permitted), "cap_setuid cap_net_raw");
        assert_eq!(FileCaps::parse(b"junk"), None);
    }

    #[test]
    fn socket_names() {
        assert_eq!(family_name(17), "AF_PACKET");
        assert_eq!(type_name(3 | 0o2000000), "SOCK_RAW");
        assert_eq!(l4(SOCK_STREAM, 6), Some("tcp"));
        assert_eq!(l4(SOCK_RAW, 255), Some("raw"));
    }
}
