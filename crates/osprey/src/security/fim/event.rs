//! FIM events (kind 42, bpf/include/fim.h): decoding and their JSON shape.

use serde::ser::SerializeMap;

use crate::abi::{self, fim_op, status};
use crate::files::absolute_path;
use crate::wire::text::{escape_for_terminal, write_bytes_field};
use crate::wire::{split_tail, DecodeError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FimEvent {
    pub op: u16,
    pub nr: u32,
    pub ret: i64,
    /// The file named by fd or opened (0 for path-based calls).
    pub ino: u64,
    pub dev: u32,
    /// Open flags, chmod mode, unlinkat/renameat2 flags.
    pub arg: u64,
    pub status: u16,
    pub path: Vec<u8>,
    pub path2: Vec<u8>,
    /// Absolute form of `path` (or of the fd's file); empty when it could not be formed.
    pub abs_path: Vec<u8>,
    pub abs_path2: Vec<u8>,
}

pub fn op_name(op: u16) -> &'static str {
    match op {
        fim_op::OPEN_WRITE => "open_write",
        fim_op::CREATE => "create",
        fim_op::WRITE => "write",
        fim_op::TRUNCATE => "truncate",
        fim_op::CHMOD => "chmod",
        fim_op::CHOWN => "chown",
        fim_op::UNLINK => "unlink",
        fim_op::RENAME => "rename",
        fim_op::LINK => "link",
        fim_op::SYMLINK => "symlink",
        fim_op::MKDIR => "mkdir",
        fim_op::MKNOD => "mknod",
        _ => "?",
    }
}

pub fn decode(bytes: &[u8]) -> Result<FimEvent, DecodeError> {
    let raw: abi::FimEvent = abi::read(bytes).ok_or(DecodeError::Malformed {
        kind: "fim",
        len: bytes.len(),
        why: "short",
    })?;
    let [path, _nul, path2, _nul2, resolved, resolved2] = split_tail(
        bytes,
        std::mem::size_of::<abi::FimEvent>(),
        [
            raw.path_len as usize,
            1,
            raw.path2_len as usize,
            1,
            raw.resolved_len as usize,
            raw.resolved2_len as usize,
        ],
        "fim",
    )?;
    let abs_path = absolute_path(raw.status, path, resolved).unwrap_or_default();
    // The second path has its own base directory bit; reuse the first path's rules.
    let status2 = if raw.status & status::RESOLVED2_BASE_DIR != 0 {
        status::RESOLVED_BASE_DIR
    } else {
        0
    };
    let abs_path2 = if path2.is_empty() && status2 == 0 {
        Vec::new()
    } else {
        absolute_path(status2, path2, resolved2).unwrap_or_default()
    };
    Ok(FimEvent {
        op: raw.op,
        nr: raw.nr,
        ret: raw.ret,
        ino: raw.ino,
        dev: raw.dev,
        arg: raw.arg,
        status: raw.status,
        path: path.to_vec(),
        path2: path2.to_vec(),
        abs_path,
        abs_path2,
    })
}

impl FimEvent {
    pub fn op_name(&self) -> &'static str {
        op_name(self.op)
    }

    pub fn syscall(&self) -> String {
        crate::syscalls::syscall_name(self.nr)
    }

    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("op", self.op_name())?;
        map.serialize_entry("syscall", &self.syscall())?;
        map.serialize_entry("ret", &self.ret)?;
        if !self.path.is_empty() {
            write_bytes_field(map, "path", "path_b64", &self.path)?;
        }
        if !self.abs_path.is_empty() {
            write_bytes_field(map, "abs_path", "abs_path_b64", &self.abs_path)?;
        }
        if !self.path2.is_empty() {
            write_bytes_field(map, "path2", "path2_b64", &self.path2)?;
        }
        if !self.abs_path2.is_empty() {
            write_bytes_field(map, "abs_path2", "abs_path2_b64", &self.abs_path2)?;
        }
        if self.ino != 0 {
            map.serialize_entry("dev", &format!("{}:{}", self.dev >> 20, self.dev & 0xfffff))?;
            map.serialize_entry("ino", &self.ino)?;
        }
        match self.op {
            fim_op::OPEN_WRITE | fim_op::CREATE => {
                map.serialize_entry("flags", &format!("{:#o}", self.arg))?
            }
            fim_op::CHMOD if self.nr != 91 => {
                map.serialize_entry("mode", &format!("{:04o}", self.arg & 0o7777))?
            }
            _ => {}
        }
        Ok(())
    }

    pub fn table_details(&self) -> String {
        let mut out = format!("{} ", self.op_name());
        let shown = if self.abs_path.is_empty() {
            &self.path
        } else {
            &self.abs_path
        };
        out.push_str(&escape_for_terminal(shown));
        if !self.path2.is_empty() {
            let shown2 = if self.abs_path2.is_empty() {
                &self.path2
            } else {
                &self.abs_path2
            };
            out.push_str(" -> ");
            out.push_str(&escape_for_terminal(shown2));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(op: u16, status: u16, tail: &[&[u8]]) -> Vec<u8> {
        let mut raw = abi::FimEvent {
            op,
            status,
            nr: 82,
            ..Default::default()
        };
        raw.hdr.kind = abi::kind::FIM;
        raw.path_len = tail[0].len() as u16;
        raw.path2_len = tail[1].len() as u16;
        raw.resolved_len = tail[2].len() as u16;
        raw.resolved2_len = tail[3].len() as u16;
        // SAFETY: FimEvent is plain integers.
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const abi::FimEvent).cast::<u8>(),
                std::mem::size_of::<abi::FimEvent>(),
            )
        }
        .to_vec();
        bytes.extend_from_slice(tail[0]);
        bytes.push(0);
        bytes.extend_from_slice(tail[1]);
        bytes.push(0);
        bytes.extend_from_slice(tail[2]);
        bytes.extend_from_slice(tail[3]);
        bytes
    }

    #[test]
    fn relative_paths_join_their_own_base_directories() {
        let bytes = record(
            fim_op::RENAME,
            status::RESOLVED_BASE_DIR | status::RESOLVED2_BASE_DIR,
            &[b"a", b"../b", b"w\0tmp\0", b"x\0tmp\0"],
        );
        let e = decode(&bytes).unwrap();
        assert_eq!(e.abs_path, b"/tmp/w/a");
        assert_eq!(e.abs_path2, b"/tmp/b");
        assert_eq!(e.op_name(), "rename");
    }

    #[test]
    fn rejects_lengths_past_the_record() {
        let mut bytes = record(fim_op::UNLINK, 0, &[b"/x", b"", b"", b""]);
        bytes.truncate(bytes.len() - 2);
        assert!(decode(&bytes).is_err());
    }
}
