//! Per-executable syscall baselines (`osprey secure --learn SECS`, then detection).
//!
//! The kernel keys everything by the executable's device and inode (current->mm->exe_file),
//! so a baseline follows the binary, not a pid. Learning lets the kernel fill the set of
//! syscalls and the most calls per ~1 s window of each; detection loads the sets (a bitmap
//! per executable) and envelopes into the same map, so only calls outside them reach user
//! space. Baselines persist as JSON in the state directory, written atomically with mode 0600.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::abi::{self, baseline_op, Baseline, BaselineKey, BASELINE_NR_MAX};
use crate::kernel::loader::{LoadError, LoadedCapability};
use crate::pipeline::cache::ProcessContext;
use crate::pipeline::detect::{Alert, AlertOrigin, Detector};
use crate::pipeline::event::{DecodeError, Event, Payload};
use crate::syscalls::{syscall_name, syscall_number};

pub const FILE_NAME: &str = "baselines.json";
/// Calls per window above the learned peak that count as "far outside": both must be exceeded.
pub const RATE_FACTOR: u32 = 10;
pub const RATE_FLOOR: u32 = 1000;

pub const RULE_OUTSIDE: &str = "syscall_outside_baseline";
pub const RULE_RATE: &str = "syscall_rate_outside_baseline";
pub const RULE_NEW_EXE: &str = "executable_without_baseline";

/// `.rodata` value of `baseline_mode` in security.bpf.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Learn = 1,
    Detect = 2,
}

pub fn globals(mode: Mode) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("baseline_mode", vec![mode as u8]),
        (
            "baseline_self_tgid",
            std::process::id().to_ne_bytes().to_vec(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Events (kind 41)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    NewExecutable,
    Outside,
    Rate { count: u32, limit: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineEvent {
    pub key: BaselineKey,
    pub nr: u32,
    pub args: [u64; 6],
    pub finding: Finding,
}

impl BaselineEvent {
    pub fn op_name(&self) -> &'static str {
        match self.finding {
            Finding::NewExecutable => "new_executable",
            Finding::Outside => "syscall_outside_baseline",
            Finding::Rate { .. } => "rate_outside_envelope",
        }
    }

    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("op", self.op_name())?;
        map.serialize_entry("syscall", &syscall_name(self.nr))?;
        map.serialize_entry("nr", &self.nr)?;
        map.serialize_entry("args", &self.args)?;
        map.serialize_entry("exe_dev", &dev_text(self.key.dev))?;
        map.serialize_entry("exe_ino", &self.key.ino)?;
        if let Finding::Rate { count, limit } = self.finding {
            map.serialize_entry("count", &count)?;
            map.serialize_entry("limit", &limit)?;
        }
        Ok(())
    }
}

pub fn decode(bytes: &[u8]) -> Result<BaselineEvent, DecodeError> {
    let malformed = |why| DecodeError::Malformed {
        kind: "baseline",
        len: bytes.len(),
        why,
    };
    let raw: abi::BaselineEvent = abi::read(bytes).ok_or_else(|| malformed("short"))?;
    let finding = match raw.op {
        baseline_op::NEW_EXE => Finding::NewExecutable,
        baseline_op::OUTSIDE => Finding::Outside,
        baseline_op::RATE => Finding::Rate {
            count: raw.count,
            limit: raw.limit,
        },
        _ => return Err(malformed("unknown op")),
    };
    Ok(BaselineEvent {
        key: BaselineKey {
            ino: raw.ino,
            dev: raw.dev,
            _pad: 0,
        },
        nr: raw.nr,
        args: raw.args,
        finding,
    })
}

/// Kernel device encoding (MKDEV: major << 20 | minor) as `major:minor`.
fn dev_text(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

// ---------------------------------------------------------------------------------------
// The file

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    pub version: u32,
    pub executables: Vec<Executable>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executable {
    pub path: String,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub ino: u64,
    /// By syscall name: the most calls seen in one ~1.07 s window (all processes of it).
    pub syscalls: BTreeMap<String, Envelope>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub nr: u32,
    pub peak_per_window: u32,
}

impl Executable {
    pub fn key(&self) -> BaselineKey {
        BaselineKey {
            ino: self.ino,
            dev: (self.dev_major << 20) | self.dev_minor,
            _pad: 0,
        }
    }
}

/// The calls per window above which a rate event is sent.
pub fn envelope_limit(peak: u32) -> u32 {
    peak.saturating_mul(RATE_FACTOR)
        .max(peak.saturating_add(RATE_FLOOR))
}

impl BaselineFile {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// `Ok(None)` when there is no file; a malformed one is an error naming line and column.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        let Some(file) = super::state::read_json::<BaselineFile>(path)? else {
            return Ok(None);
        };
        if file.version != 1 {
            return Err(format!(
                "{}: baseline version {} is not supported (1 is)",
                path.display(),
                file.version
            ));
        }
        Ok(Some(file))
    }

    /// Writes the file atomically with mode 0600 (see `state::write_private_json`).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        super::state::write_private_json(path, self)
    }

    /// Adds what was learned: sets are united and peaks kept at their maximum.
    pub fn merge(&mut self, learned: Vec<Executable>) {
        for exe in learned {
            match self.executables.iter_mut().find(|e| e.key() == exe.key()) {
                Some(old) => {
                    old.path = exe.path;
                    for (name, env) in exe.syscalls {
                        let slot = old.syscalls.entry(name).or_insert(env);
                        slot.peak_per_window = slot.peak_per_window.max(env.peak_per_window);
                    }
                }
                None => self.executables.push(exe),
            }
        }
        self.executables.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

// ---------------------------------------------------------------------------------------
// The kernel map

pub type BaselineMap = BpfHashMap<MapData, BaselineKey, Baseline>;

pub fn take_map(cap: &mut LoadedCapability) -> Result<BaselineMap, LoadError> {
    let map = cap.take_map("sec_baselines")?;
    BpfHashMap::try_from(map).map_err(|e| LoadError::Map {
        capability: cap.spec.name,
        reason: format!("sec_baselines: {e}"),
    })
}

/// The kernel value for a learned executable: its set and its envelopes.
pub fn kernel_value(exe: &Executable) -> Baseline {
    let mut value = Baseline::default();
    for env in exe.syscalls.values() {
        let nr = env.nr as usize;
        if nr < BASELINE_NR_MAX {
            value.allowed[nr / 64] |= 1 << (nr % 64);
            value.peak[nr] = envelope_limit(env.peak_per_window);
        }
    }
    value
}

/// Loads every baseline into the kernel map; returns warnings (e.g. a replaced binary).
pub fn fill(map: &mut BaselineMap, file: &BaselineFile) -> Result<Vec<String>, String> {
    use std::os::unix::fs::MetadataExt;
    let mut warnings = Vec::new();
    for exe in &file.executables {
        if let Ok(m) = std::fs::metadata(&exe.path) {
            if (m.ino(), libc::major(m.dev()), libc::minor(m.dev()))
                != (exe.ino, exe.dev_major, exe.dev_minor)
            {
                warnings.push(format!(
                    "{} was replaced since it was learned: its baseline applies to the old inode only",
                    exe.path
                ));
            }
        }
        map.insert(exe.key(), kernel_value(exe), 0)
            .map_err(|e| format!("sec_baselines: {e}"))?;
    }
    Ok(warnings)
}

/// What the kernel learned, for executables whose path is known.
pub fn harvest(map: &BaselineMap, paths: &HashMap<BaselineKey, String>) -> Vec<Executable> {
    let mut out = Vec::new();
    for (key, value) in map.iter().filter_map(Result::ok) {
        let Some(path) = paths.get(&key) else {
            continue;
        };
        let mut syscalls = BTreeMap::new();
        for nr in 0..BASELINE_NR_MAX {
            if value.allowed[nr / 64] & (1 << (nr % 64)) != 0 {
                let peak = value.peak[nr].max(value.slots[nr].count);
                syscalls.insert(
                    syscall_name(nr as u32),
                    Envelope {
                        nr: nr as u32,
                        peak_per_window: peak,
                    },
                );
            }
        }
        out.push(Executable {
            path: path.clone(),
            dev_major: key.dev >> 20,
            dev_minor: key.dev & 0xfffff,
            ino: key.ino,
            syscalls,
        });
    }
    out
}

/// Checks that names and numbers in a file agree (a file edited by hand).
pub fn validate(file: &BaselineFile) -> Result<(), String> {
    for exe in &file.executables {
        for (name, env) in &exe.syscalls {
            if syscall_number(name) != Some(env.nr) && !name.starts_with("syscall_") {
                return Err(format!(
                    "{}: syscall {name} is number {:?} on x86-64, not {}",
                    exe.path,
                    syscall_number(name),
                    env.nr
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Detection and learning in the pipeline

/// Executable paths by key: from successful execs (which carry the inode) and, for
/// processes started before osprey, from /proc/PID/exe when its inode matches.
pub type SharedPaths = std::rc::Rc<std::cell::RefCell<HashMap<BaselineKey, String>>>;

pub struct BaselineDetector {
    pub mode: Mode,
    /// Filled as execs are seen; `harvest` names learned executables with it.
    pub paths: SharedPaths,
}

/// The executable of `pid` if it is the file `key` names (the cache may still hold the
/// image before an exec whose event has not been drained yet).
fn proc_exe_matching(pid: u32, key: &BaselineKey) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let link = format!("/proc/{pid}/exe");
    let m = std::fs::metadata(&link).ok()?;
    let dev = (libc::major(m.dev()) << 20) | libc::minor(m.dev());
    if m.ino() != key.ino || dev != key.dev {
        return None;
    }
    std::fs::read_link(&link)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl BaselineDetector {
    fn path_of(&self, key: &BaselineKey, pid: u32) -> String {
        if let Some(p) = self.paths.borrow().get(key) {
            return p.clone();
        }
        let found = proc_exe_matching(pid, key);
        if let Some(p) = &found {
            self.paths.borrow_mut().insert(*key, p.clone());
        }
        found.unwrap_or_else(|| format!("(inode {} on {})", key.ino, dev_text(key.dev)))
    }
}

fn call_text(nr: u32, args: &[u64; 6]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:#x}")).collect();
    format!("{}({})", syscall_name(nr), args.join(", "))
}

static NO_TAGS: [String; 0] = [];

impl Detector for BaselineDetector {
    fn detect(
        &mut self,
        event: &Event,
        ctx: &ProcessContext<'_>,
        raise: &mut dyn FnMut(Alert<'_>),
    ) {
        let b = match &event.payload {
            Payload::Exec(x) if x.ret == 0 && !x.exe.is_empty() => {
                let key = BaselineKey {
                    ino: x.ino,
                    dev: x.dev,
                    _pad: 0,
                };
                let path = String::from_utf8_lossy(&x.exe).into_owned();
                self.paths.borrow_mut().insert(key, path);
                return;
            }
            Payload::Baseline(b) => b,
            _ => return,
        };
        let exe = self.path_of(&b.key, ctx.pid);
        let who = format!(
            "{} (pid {}, exe {exe})",
            crate::wire::text::escape_for_terminal(ctx.comm),
            ctx.pid,
        );
        let (rule, severity, output) = match (self.mode, b.finding) {
            (Mode::Learn, _) => return,
            (Mode::Detect, Finding::NewExecutable) => (
                RULE_NEW_EXE,
                "low",
                format!("{who} has no syscall baseline (reported once per run)"),
            ),
            (Mode::Detect, Finding::Outside) => (
                RULE_OUTSIDE,
                "medium",
                format!(
                    "{who} called {} outside its baseline",
                    call_text(b.nr, &b.args)
                ),
            ),
            (Mode::Detect, Finding::Rate { count, limit }) => (
                RULE_RATE,
                "medium",
                format!(
                    "{who} made more than {limit} {} calls in one ~1 s window (learned peak x{RATE_FACTOR}, at least +{RATE_FLOOR}); {count} so far",
                    syscall_name(b.nr)
                ),
            ),
        };
        raise(Alert {
            rule,
            severity,
            tags: &NO_TAGS,
            action: "alert",
            outcome: "alerted",
            note: None,
            output,
            origin: AlertOrigin::OSPREY,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(path: &str, ino: u64, calls: &[(&str, u32)]) -> Executable {
        Executable {
            path: path.into(),
            dev_major: 8,
            dev_minor: 1,
            ino,
            syscalls: calls
                .iter()
                .map(|(n, peak)| {
                    (
                        n.to_string(),
                        Envelope {
                            nr: syscall_number(n).unwrap(),
                            peak_per_window: *peak,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn kernel_value_sets_bits_and_limits() {
        let v = kernel_value(&exe("/bin/x", 5, &[("getppid", 100), ("read", 0)]));
        assert_eq!(v.allowed[110 / 64] & (1 << (110 % 64)), 1 << (110 % 64));
        assert_eq!(v.allowed[0] & 1, 1, "read is syscall 0");
        assert_eq!(v.peak[110], 1100);
        assert_eq!(v.peak[0], 1000);
        assert_eq!(v.allowed[2], 0);
        assert_eq!(exe("/bin/x", 5, &[]).key().dev, (8 << 20) | 1);
        assert_eq!(envelope_limit(500), 5000);
        assert_eq!(envelope_limit(u32::MAX), u32::MAX);
    }

    #[test]
    fn merge_unites_sets_and_keeps_peaks() {
        let mut file = BaselineFile {
            version: 1,
            executables: vec![exe("/bin/x", 5, &[("getppid", 100), ("read", 7)])],
        };
        file.merge(vec![
            exe("/bin/x", 5, &[("getppid", 50), ("write", 3)]),
            exe("/bin/y", 6, &[("read", 1)]),
        ]);
        assert_eq!(file.executables.len(), 2);
        let x = &file.executables[0].syscalls;
        assert_eq!(x["getppid"].peak_per_window, 100);
        assert_eq!(x["write"].peak_per_window, 3);
        assert_eq!(x["read"].peak_per_window, 7);
    }

    #[test]
    fn save_is_atomic_0600_and_load_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("osprey-baseline-{}", std::process::id()));
        let path = BaselineFile::path_in(&dir);
        let file = BaselineFile {
            version: 1,
            executables: vec![exe("/bin/x", 5, &[("getppid", 100)])],
        };
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(BaselineFile::load(&path).unwrap(), Some(file));
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
        std::fs::write(&path, "{\"version\": 1,\n \"executables\": 3}").unwrap();
        let err = BaselineFile::load(&path).unwrap_err();
        assert!(err.contains(":2:"), "{err}");
        assert_eq!(BaselineFile::load(&dir.join("none")).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
