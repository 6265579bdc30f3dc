//! `osprey files`: open, openat, openat2 and creat, each seen once at syscall exit with
//! its arguments, result and resolved absolute path.
//!
//! Path resolution (docs/events.md): for a successful open the kernel program walks the
//! opened file's own dentries and mounts up to the global root, so the path is right even
//! if the process exits at once, and symlinks are resolved. For a failed open of a relative
//! path it walks the directory the lookup started from (dirfd or the cwd) and user space
//! joins the path as passed lexically (`..` folded; nothing exists to resolve further).

use serde::ser::SerializeMap;

use crate::abi::{self, kind, open_op, status};
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, Role};
use crate::wire::text::{
    escape_for_terminal, join_components_leaf_first, join_lexically, write_bytes_field,
};
use crate::wire::{split_tail, DecodeError};

/// The syscalls whose exit `files_open_*` handles.
pub const OPEN_SYSCALLS: &[&str] = &["open", "creat", "openat", "openat2"];

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "files",
    object: osprey_bpf::FILES,
    roles: &[Role {
        name: "open-exit",
        required: true,
        hooks: &[
            Hook {
                program: "files_open_fexit",
                attach: Attach::FExit("do_sys_openat2"),
            },
            Hook {
                program: "files_open_sc",
                attach: Attach::Syscalls {
                    event: "sys_exit",
                    syscalls: OPEN_SYSCALLS,
                    filter: "files_open_nrs",
                },
            },
            Hook {
                program: "files_open_btf",
                attach: Attach::BtfTracepoint("sys_exit"),
            },
            Hook {
                program: "files_open_raw",
                attach: Attach::RawTracepoint("sys_exit"),
            },
            Hook {
                program: "files_open_kretprobe",
                attach: Attach::KRetProbe("do_sys_openat2"),
            },
            Hook {
                program: "files_open_tp",
                attach: Attach::Tracepoint("raw_syscalls", "sys_exit"),
            },
        ],
    }],
    kinds: &[(kind::FILE_OPEN, "file_open")],
    default_ring_bytes: 32 << 20,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOpen {
    pub op: u16,
    pub ret: i64,
    pub flags: u64,
    pub mode: u32,
    pub resolve: u64,
    pub dirfd: i32,
    pub ino: u64,
    pub dev: u32,
    pub status: u16,
    /// The path exactly as the process passed it.
    pub path: Vec<u8>,
    /// The absolute path (see the module docs for how it is derived).
    pub abs_path: Vec<u8>,
}

pub fn decode(bytes: &[u8]) -> Result<FileOpen, DecodeError> {
    let raw: abi::FileOpen = abi::read(bytes).ok_or(DecodeError::Malformed {
        kind: "file_open",
        len: bytes.len(),
        why: "short",
    })?;
    let [path, _nul, resolved] = split_tail(
        bytes,
        std::mem::size_of::<abi::FileOpen>(),
        [raw.path_len as usize, 1, raw.resolved_len as usize],
        "file_open",
    )?;
    let abs_path = absolute_path(raw.status, path, resolved).unwrap_or_default();
    Ok(FileOpen {
        op: raw.op,
        ret: raw.ret,
        flags: raw.flags,
        mode: raw.mode,
        resolve: raw.resolve,
        dirfd: raw.dirfd,
        ino: raw.ino,
        dev: raw.dev,
        status: raw.status,
        path: path.to_vec(),
        abs_path,
    })
}

/// The absolute path from a path as passed and the resolved components the kernel walked
/// (`status` says whether they are the file's own path or the base directory); `None` for a
/// relative path with no base.
pub fn absolute_path(st: u16, path: &[u8], resolved: &[u8]) -> Option<Vec<u8>> {
    if st & status::RESOLVED_FROM_FILE != 0 {
        Some(join_components_leaf_first(resolved))
    } else if path.starts_with(b"/") {
        Some(join_lexically(b"/", path))
    } else if st & status::RESOLVED_BASE_DIR != 0 {
        Some(join_lexically(&join_components_leaf_first(resolved), path))
    } else {
        None
    }
}

impl FileOpen {
    pub fn syscall(&self) -> &'static str {
        match self.op {
            open_op::OPEN => "open",
            open_op::OPENAT => "openat",
            open_op::OPENAT2 => "openat2",
            open_op::CREAT => "creat",
            _ => "?",
        }
    }

    pub fn failed(&self) -> bool {
        self.ret < 0
    }

    /// `Some(errno)` for a failed open.
    pub fn errno(&self) -> Option<i32> {
        (self.ret < 0).then(|| (-self.ret) as i32)
    }

    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("syscall", self.syscall())?;
        if let Some(errno) = self.errno() {
            map.serialize_entry("fd", &None::<i64>)?;
            map.serialize_entry("errno", &errno)?;
            map.serialize_entry("error", errno_name(errno))?;
        } else {
            map.serialize_entry("fd", &self.ret)?;
            map.serialize_entry("errno", &0)?;
        }
        map.serialize_entry("flags", &self.flags)?;
        map.serialize_entry("flags_text", &format_args!("{}", OpenFlags(self.flags)))?;
        map.serialize_entry("mode", &format_args!("{:04o}", self.mode))?;
        if self.op == open_op::OPENAT2 {
            map.serialize_entry("resolve", &self.resolve)?;
        }
        if self.op == open_op::OPENAT || self.op == open_op::OPENAT2 {
            map.serialize_entry("dirfd", &self.dirfd)?;
        }
        write_bytes_field(map, "path", "path_b64", &self.path)?;
        write_bytes_field(map, "abs_path", "abs_path_b64", &self.abs_path)?;
        if self.ino != 0 {
            map.serialize_entry("inode", &self.ino)?;
            map.serialize_entry("dev", &self.dev)?;
        }
        map.serialize_entry(
            "path_truncated",
            &(self.status & status::PATH_TRUNCATED != 0),
        )?;
        if self.abs_path_truncated() {
            map.serialize_entry("abs_path_truncated", &true)?;
        }
        Ok(())
    }

    /// The absolute path is incomplete: the kernel's walk stopped early, or it was built
    /// from a path as passed that was itself cut (ENAMETOOLONG: longer than the kernel takes).
    pub fn abs_path_truncated(&self) -> bool {
        let from_passed_path = self.status & status::RESOLVED_FROM_FILE == 0;
        self.status & status::RESOLVED_TRUNCATED != 0
            || (from_passed_path
                && (self.status & status::PATH_TRUNCATED != 0
                    || self.errno() == Some(libc::ENAMETOOLONG)))
    }

    /// FD, ERR, FLAGS and PATH columns of the table.
    pub fn table_columns(&self) -> String {
        let (fd, err) = match self.errno() {
            Some(e) => ("-1".to_string(), errno_name(e).to_string()),
            None => (self.ret.to_string(), "0".to_string()),
        };
        let (shown, cut) = if self.abs_path.is_empty() {
            (&self.path, self.status & status::PATH_TRUNCATED != 0)
        } else {
            (&self.abs_path, self.abs_path_truncated())
        };
        format!(
            "{fd:>4} {err:<12} {:<22} {}{}",
            open_flags_text(self.flags),
            escape_for_terminal(shown),
            if cut { TRUNCATED_MARK } else { "" }
        )
    }
}

/// Follows a path in a table that is not all of the real one.
pub const TRUNCATED_MARK: &str = " [truncated]";

/// ERR fits the longest errno name (ENAMETOOLONG).
pub const TABLE_HEADER: &str = "  FD ERR          FLAGS                  PATH";

/// O_* flag names, `|`-joined, like strace.
pub fn open_flags_text(flags: u64) -> String {
    OpenFlags(flags).to_string()
}

/// `open_flags_text`, written without allocating (JSON output of every open).
pub struct OpenFlags(pub u64);

impl std::fmt::Display for OpenFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMED: &[(u64, &str)] = &[
            (0o100, "O_CREAT"),
            (0o200, "O_EXCL"),
            (0o400, "O_NOCTTY"),
            (0o1000, "O_TRUNC"),
            (0o2000, "O_APPEND"),
            (0o4000, "O_NONBLOCK"),
            (0o10000, "O_DSYNC"),
            (0o20000, "O_ASYNC"),
            (0o40000, "O_DIRECT"),
            (0o200000, "O_DIRECTORY"),
            (0o400000, "O_NOFOLLOW"),
            (0o1000000, "O_NOATIME"),
            (0o2000000, "O_CLOEXEC"),
            (0o10000000, "O_PATH"),
            (0o20200000, "O_TMPFILE"),
        ];
        let flags = self.0;
        f.write_str(match flags & 3 {
            0 => "O_RDONLY",
            1 => "O_WRONLY",
            2 => "O_RDWR",
            _ => "O_ACCMODE",
        })?;
        let mut rest = flags & !3;
        // O_TMPFILE includes O_DIRECTORY's bit: name it once.
        for &(bit, name) in NAMED.iter().rev() {
            if rest & bit == bit {
                write!(f, "|{name}")?;
                rest &= !bit;
            }
        }
        if rest != 0 {
            write!(f, "|0x{rest:x}")?;
        }
        Ok(())
    }
}

/// Symbolic errno names for the common cases; numbers otherwise.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECANCELED => "ECANCELED",
        _ => "E?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_like_strace() {
        assert_eq!(open_flags_text(0), "O_RDONLY");
        assert_eq!(
            open_flags_text(0o1 | 0o100 | 0o1000 | 0o2000000),
            "O_WRONLY|O_CLOEXEC|O_TRUNC|O_CREAT"
        );
        assert_eq!(open_flags_text(0o20200000 | 2), "O_RDWR|O_TMPFILE");
    }

    fn record(op: u16, ret: i64, st: u16, path: &[u8], resolved: &[u8]) -> Vec<u8> {
        let raw = abi::FileOpen {
            hdr: abi::EventHeader {
                kind: kind::FILE_OPEN,
                ..Default::default()
            },
            op,
            ret,
            status: st,
            path_len: path.len() as u16,
            resolved_len: resolved.len() as u16,
            ..Default::default()
        };
        // SAFETY: FileOpen is plain old data.
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const abi::FileOpen).cast::<u8>(),
                std::mem::size_of::<abi::FileOpen>(),
            )
        }
        .to_vec();
        bytes.extend_from_slice(path);
        bytes.push(0);
        bytes.extend_from_slice(resolved);
        bytes
    }

    #[test]
    fn decodes_resolved_and_relative_paths() {
        let ok = decode(&record(2, 3, status::RESOLVED_FROM_FILE, b"x", b"x\0tmp\0")).unwrap();
        assert_eq!(ok.abs_path, b"/tmp/x");
        let rel = decode(&record(
            2,
            -2,
            status::RESOLVED_BASE_DIR,
            b"../y",
            b"b\0a\0",
        ))
        .unwrap();
        assert_eq!(rel.abs_path, b"/a/y");
        assert_eq!(rel.errno(), Some(libc::ENOENT));
        let abs = decode(&record(1, -2, 0, b"/q//./r", b"")).unwrap();
        assert_eq!(abs.abs_path, b"/q/r");
        assert!(decode(&record(1, 0, 0, b"/q", b"")[..70]).is_err());
    }
}
