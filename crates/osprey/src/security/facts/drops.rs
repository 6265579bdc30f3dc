//! Drop-and-execute: files written or made executable in a temporary location, and by
//! whom, so that an exec of one can say it was dropped there. A toolchain (compiler,
//! linker, package manager) writing its output is not a drop, unless the writer has a
//! network connection (a download).

use std::collections::{HashMap, VecDeque};

use crate::pipeline::cache::ProcessContext;
use crate::pipeline::event::{Event, Payload};

use super::target::changed_path;

/// Fields that need this state.
pub const FIELDS: &[&str] = &[
    "exec.dropped",
    "exec.dropper",
    "exec.drop_how",
    "exec.deleted",
];

/// World-writable locations where programs are dropped; opens below them must reach user
/// space when a rule uses the fields above.
pub const TEMP_DIRS: &[&str] = &["/tmp/", "/var/tmp/", "/dev/shm/"];

/// Command names whose output in a temporary location is not a drop: compilers, linkers
/// and package managers.
pub const TOOLCHAIN: &[&str] = &[
    "cc", "c++", "gcc", "g++", "cc1", "cc1plus", "cc1obj", "as", "ld", "ld.bfd", "ld.gold",
    "ld.lld", "lld", "rust-lld", "mold", "collect2", "clang", "clang++", "rustc", "cargo",
    "rustdoc", "go", "compile", "link", "asm", "cgo", "javac", "ghc", "tcc", "zig", "nasm",
    "objcopy", "strip", "dpkg", "dpkg-deb", "apt", "apt-get", "rpm", "dnf", "yum", "apk", "pacman",
    "pip", "pip3",
];

/// Files (and processes) remembered at most (the oldest files are forgotten first).
const CAPACITY: usize = 8192;

/// Who dropped a file, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropper {
    pub comm: Vec<u8>,
    pub pid: u32,
    /// `written`, `downloaded` (written by a process with a network connection), `made
    /// executable`, or `deleted` (the executable was deleted; no dropper known).
    pub how: &'static str,
}

/// The last write or chmod +x of a file in a temporary directory.
#[derive(Debug, Clone)]
struct Write {
    comm: Vec<u8>,
    pid: u32,
    how: &'static str,
    toolchain: bool,
    at_ns: u64,
    /// When it was deleted: an exec seen later may still have run it before.
    deleted_ns: Option<u64>,
}

/// Events arrive on several rings, not always in the order they happened: every decision
/// compares the events' own times.
#[derive(Default)]
pub struct Drops {
    files: HashMap<Vec<u8>, Write>,
    order: VecDeque<Vec<u8>>,
    /// pid -> time of its first connection to an IP address.
    connected: HashMap<u32, u64>,
    /// pid -> time it exited (a later process may reuse the pid).
    exited: HashMap<u32, u64>,
    /// Time of the latest file open and security event seen: each ring delivers in order,
    /// so a write made before an exec can no longer arrive once both are past it.
    latest_open_ns: u64,
    latest_security_ns: u64,
}

/// `how` of an exec whose file was deleted (no dropper is known).
pub const DELETED: &str = "deleted";

/// Whether the executable of `pid` is a deleted file, as /proc says while it runs.
fn exe_deleted(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|p| p.as_os_str().as_encoded_bytes().ends_with(b" (deleted)"))
}

pub fn in_temp_dir(path: &[u8]) -> bool {
    TEMP_DIRS.iter().any(|d| path.starts_with(d.as_bytes()))
}

/// A toolchain process: by name, or Python creating a virtual environment or installing
/// with pip (it writes the environment's scripts).
fn is_toolchain(ctx: &ProcessContext<'_>) -> bool {
    let comm = ctx.comm;
    if TOOLCHAIN.iter().any(|t| t.as_bytes() == comm) {
        return true;
    }
    let has = |needle: &[u8]| ctx.cmdline.windows(needle.len()).any(|w| w == needle);
    comm.starts_with(b"python") && (has(b" -m venv") || has(b"pip") || has(b"-m ensurepip"))
}

impl Drops {
    /// Records what `event` drops; for an exec, who dropped the executed file.
    pub fn observe(&mut self, event: &Event, ctx: &ProcessContext<'_>) -> Option<Dropper> {
        let pid = event.header.pid;
        let at_ns = event.header.ts_boot_ns;
        let write = |how| Write {
            comm: ctx.comm.to_vec(),
            pid,
            how,
            toolchain: is_toolchain(ctx),
            at_ns,
            deleted_ns: None,
        };
        match &event.payload {
            Payload::FileOpen(_) => self.latest_open_ns = self.latest_open_ns.max(at_ns),
            Payload::Security(_) => self.latest_security_ns = self.latest_security_ns.max(at_ns),
            _ => {}
        }
        match &event.payload {
            Payload::Exec(x) if x.ret == 0 => self.dropper_of(event).or_else(|| {
                exe_deleted(pid).then(|| Dropper {
                    comm: Vec::new(),
                    pid: 0,
                    how: DELETED,
                })
            }),
            Payload::Exit(_) => {
                bounded_insert(&mut self.exited, pid, at_ns);
                None
            }
            Payload::FileOpen(f) if f.ret >= 0 => {
                if let Some(path) = changed_path(&event.payload).filter(|p| in_temp_dir(p)) {
                    self.remember(path.into_owned(), write("written"));
                }
                None
            }
            Payload::Security(s) => {
                match s.class() {
                    // Connected, or connecting without blocking (EINPROGRESS); the first
                    // connection counts.
                    "connect"
                        if s.addr.as_ref().is_some_and(|a| a.port().is_some())
                            && (s.ret == 0 || s.ret == -i64::from(libc::EINPROGRESS))
                            && self.connected.get(&pid).is_none_or(|&t| t > at_ns) =>
                    {
                        bounded_insert(&mut self.connected, pid, at_ns);
                    }
                    "chmod"
                        if s.ret == 0
                            && s.mode().is_some_and(|m| m & 0o111 != 0)
                            && in_temp_dir(&s.abs_path) =>
                    {
                        self.remember(s.abs_path.clone(), write("made executable"));
                    }
                    "rename" if s.ret == 0 => {
                        let moved = self.forget(&s.abs_path);
                        if let Some(to) = changed_path(&event.payload).filter(|p| in_temp_dir(p)) {
                            match moved {
                                Some(w) => self.remember(to.into_owned(), w),
                                None => {
                                    self.forget(&to);
                                }
                            }
                        }
                    }
                    "unlink" if s.ret == 0 => {
                        if let Some(w) = self.files.get_mut(&s.abs_path) {
                            w.deleted_ns = Some(at_ns);
                        }
                    }
                    _ => {}
                }
                None
            }
            _ => None,
        }
    }

    /// Who dropped the file a successful exec runs, if it was dropped before the exec.
    pub fn dropper_of(&self, event: &Event) -> Option<Dropper> {
        let Payload::Exec(x) = &event.payload else {
            return None;
        };
        let w = [&x.exe, &x.filename]
            .into_iter()
            .find_map(|p| self.files.get(p.as_slice()))
            .filter(|w| {
                let at = event.header.ts_boot_ns;
                x.ret == 0 && w.at_ns <= at && w.deleted_ns.is_none_or(|d| d > at)
            })?;
        let how = if self.downloaded(w) {
            "downloaded"
        } else if w.toolchain {
            return None;
        } else {
            w.how
        };
        Some(Dropper {
            comm: w.comm.clone(),
            pid: w.pid,
            how,
        })
    }

    /// The writer had connected to an IP address before the write (the same process: it
    /// had not exited in between).
    fn downloaded(&self, w: &Write) -> bool {
        let Some(&connected) = self.connected.get(&w.pid) else {
            return false;
        };
        let exited_between = self
            .exited
            .get(&w.pid)
            .is_some_and(|&e| connected < e && e < w.at_ns);
        connected <= w.at_ns && !exited_between
    }

    /// Whether every write or chmod made before `at_ns` has been seen.
    pub fn caught_up(&self, at_ns: u64) -> bool {
        self.latest_open_ns > at_ns && self.latest_security_ns > at_ns
    }

    /// A successful exec of a file in a temporary directory that is not known as dropped:
    /// the write may still be queued on another ring (decide again after the drain).
    pub fn undecided(&self, event: &Event) -> bool {
        match &event.payload {
            Payload::Exec(x) if x.ret == 0 => {
                (in_temp_dir(&x.exe) || in_temp_dir(&x.filename))
                    && self.dropper_of(event).is_none()
            }
            _ => false,
        }
    }

    fn remember(&mut self, path: Vec<u8>, write: Write) {
        if self.files.insert(path.clone(), write).is_none() {
            self.order.push_back(path);
        }
        while self.files.len() > CAPACITY {
            match self.order.pop_front() {
                Some(old) => {
                    self.files.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Forgets deleted files, once the execs that may have run them have been judged.
    pub fn sweep(&mut self) {
        let before = self.files.len();
        self.files.retain(|_, w| w.deleted_ns.is_none());
        if self.files.len() != before {
            let files = &self.files;
            self.order.retain(|p| files.contains_key(p));
        }
    }

    fn forget(&mut self, path: &[u8]) -> Option<Write> {
        let d = self.files.remove(path)?;
        self.order.retain(|p| p != path);
        Some(d)
    }
}

/// Inserts, first forgetting everything when the map is full (it only holds recent pids).
fn bounded_insert(map: &mut HashMap<u32, u64>, pid: u32, at_ns: u64) {
    if map.len() >= CAPACITY {
        map.clear();
    }
    map.insert(pid, at_ns);
}
