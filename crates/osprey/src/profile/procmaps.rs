//! Snapshots of /proc/PID/maps (and the cgroup) taken while a process lives, so its
//! samples can be unwound, symbolized and put in their container after it has exited.

use std::collections::HashMap;
use std::path::PathBuf;

/// One file-backed executable mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
    pub path: PathBuf,
    /// The mapped file's (device, inode): names it across processes and paths.
    pub file: FileId,
}

/// A file as the kernel names it in /proc/PID/maps: device (major, minor) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: (u32, u32),
    pub inode: u64,
}

impl FileId {
    fn parse(dev: &str, inode: &str) -> Option<Self> {
        let (major, minor) = dev.split_once(':')?;
        Some(Self {
            dev: (
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ),
            inode: inode.parse().ok()?,
        })
    }
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

/// Parses the executable, file-backed lines of a /proc/PID/maps text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        // The path is the rest of the line and may contain spaces.
        let path = fields.collect::<Vec<_>>().join(" ");
        if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let parse = |s: &str| u64::from_str_radix(s, 16).ok();
        if let (Some(start), Some(end), Some(offset), Some(file)) = (
            parse(start),
            parse(end),
            parse(offset),
            FileId::parse(dev, inode),
        ) {
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
            out.push(Mapping {
                start,
                end,
                offset,
                path: PathBuf::from(path),
                file,
            });
        }
    }
    out
}

/// Executable mappings and the cgroup per process, captured the first time a process is
/// seen.
#[derive(Debug, Default)]
pub struct ProcessMaps {
    by_pid: HashMap<u32, Vec<Mapping>>,
    /// Processes that were gone before we could look (their user frames stay unknown).
    pub missed: u64,
    /// The cgroup of each process sampled (`Cgroups::observe`, by the collector): its
    /// container is named at the end, when the process may be gone (the cgroup usually is
    /// not).
    pub cgroups: crate::container::pids::Cgroups,
}

impl ProcessMaps {
    /// Captures the maps of `pid` unless already known. Returns true when newly captured.
    pub fn observe(&mut self, pid: u32) -> bool {
        if self.by_pid.contains_key(&pid) {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(text) => {
                let mut maps = parse_maps(&text);
                // Binaries may be deleted or live in another mount namespace: reach them
                // through the process's root while it lives.
                for m in &mut maps {
                    if !m.path.exists() {
                        m.path = PathBuf::from(format!("/proc/{pid}/root{}", m.path.display()));
                    }
                }
                self.by_pid.insert(pid, maps);
                true
            }
            Err(_) => {
                self.missed += 1;
                self.by_pid.insert(pid, Vec::new());
                false
            }
        }
    }

    pub fn get(&self, pid: u32) -> &[Mapping] {
        self.by_pid.get(&pid).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn find(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        self.get(pid).iter().find(|m| m.contains(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_executable_file_mappings_only() {
        let text = "\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 1234 /usr/bin/prog
55d0a0001000-55d0a0005000 r-xp 00001000 08:01 1234 /usr/bin/prog
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 [heap]
7f1000000000-7f1000100000 r-xp 00028000 08:01 99 /opt/my lib/libx.so (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].start, 0x55d0a0001000);
        assert_eq!(maps[0].offset, 0x1000);
        assert_eq!(maps[0].file_offset(0x55d0a0001234), 0x1234);
        assert_eq!(maps[1].path, PathBuf::from("/opt/my lib/libx.so"));
        assert_eq!(
            maps[1].file,
            FileId {
                dev: (8, 1),
                inode: 99
            }
        );
    }
}
