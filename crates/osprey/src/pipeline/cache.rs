//! The process cache: seeded from /proc at start, kept current by exec/fork/exit events,
//! bounded, and keeping exited processes for a grace period so late events still resolve.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serialize;

use super::event::{Event, Payload};
use crate::container::{Container, Containers};
use crate::wire::text::json_text;

const MAX_ANCESTRY: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: Vec<u8>,
    pub exe: Vec<u8>,
    /// argv of the last exec joined by spaces (`/proc/PID/cmdline` for processes seen first
    /// in /proc); a fork inherits its parent's.
    pub cmdline: Vec<u8>,
    pub cgroup_id: u64,
    /// CLOCK_BOOTTIME ns at which the exit was seen.
    pub exited_at: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ProcessCache {
    /// Looked up several times per event (the process and its ancestry): a fast hash.
    entries: HashMap<u32, Entry, foldhash::fast::RandomState>,
    capacity: usize,
    grace_ns: u64,
    pub evictions: u64,
    pub misses: u64,
    /// Which container each cgroup is, and what its runtime says about it.
    pub containers: Containers,
    /// See [`ProcessContext::cache_generation`]; 0 until the first change.
    generation: u64,
}

/// Generations are unique across every cache of the process, so that two caches never
/// share one.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// The process context attached to every event, borrowed from the event and the cache
/// (no copies on the hot path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessContext<'a> {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: &'a [u8],
    pub exe: &'a [u8],
    /// See [`Entry::cmdline`].
    pub cmdline: &'a [u8],
    pub cgroup_id: u64,
    /// The container (id `host` outside any); `None` when the cgroup is unknown.
    pub container: Option<&'a Arc<Container>>,
    /// Parent first, up to init or an unknown process.
    pub ancestry: Vec<&'a Entry>,
    /// Changes whenever an entry of the cache the context came from changes; 0: unknown
    /// (a context not made by a cache). Two contexts of equal non-zero generation and equal
    /// ids, comm, cgroup and container have equal exe, cmdline and ancestry.
    pub cache_generation: u64,
}

impl ProcessCache {
    pub fn new(capacity: usize, grace_ns: u64) -> Self {
        Self {
            capacity,
            grace_ns,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Entry> {
        self.entries.get(&pid)
    }

    /// Fills the cache from /proc (processes that started before us).
    pub fn seed_from_proc(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for d in dir.flatten() {
            if let Some(pid) = d.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(e) = read_proc(pid) {
                    self.insert(e);
                }
            }
        }
    }

    /// Called on every change of `entries`.
    fn changed(&mut self) {
        self.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    fn insert(&mut self, entry: Entry) {
        self.changed();
        self.containers.note(entry.cgroup_id, entry.pid);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&entry.pid) {
            self.evict_one();
        }
        self.entries.insert(entry.pid, entry);
    }

    /// Evicts the longest-exited entry, or any entry when none has exited.
    fn evict_one(&mut self) {
        let victim = self
            .entries
            .values()
            .filter_map(|e| e.exited_at.map(|t| (t, e.pid)))
            .min()
            .map(|(_, pid)| pid)
            .or_else(|| self.entries.keys().next().copied());
        if let Some(pid) = victim {
            self.changed();
            self.entries.remove(&pid);
            self.evictions += 1;
        }
    }

    /// Drops exited processes whose grace period has passed.
    pub fn expire(&mut self, now_boot_ns: u64) {
        let grace = self.grace_ns;
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.exited_at
                .is_none_or(|t| now_boot_ns.saturating_sub(t) < grace)
        });
        if self.entries.len() != before {
            self.changed();
        }
        self.evictions += (before - self.entries.len()) as u64;
    }

    /// Updates the cache from an event (lifecycle events change it; all refresh identity).
    pub fn observe(&mut self, event: &Event) {
        let h = &event.header;
        self.containers.note(h.cgroup_id, h.pid);
        match &event.payload {
            Payload::Fork(f) => {
                let parent = self.entries.get(&h.pid);
                let child = Entry {
                    pid: f.child_pid,
                    ppid: h.pid,
                    uid: h.uid,
                    gid: h.gid,
                    comm: h.comm.clone(),
                    exe: parent.map(|p| p.exe.clone()).unwrap_or_default(),
                    cmdline: parent.map(|p| p.cmdline.clone()).unwrap_or_default(),
                    cgroup_id: h.cgroup_id,
                    exited_at: None,
                };
                self.insert(child);
            }
            Payload::Exec(x) if x.ret == 0 => {
                let exe = if x.exe.is_empty() {
                    x.filename.clone()
                } else {
                    x.exe.clone()
                };
                self.insert(Entry {
                    pid: h.pid,
                    ppid: h.ppid,
                    uid: h.uid,
                    gid: h.gid,
                    comm: h.comm.clone(),
                    exe,
                    cmdline: x.args.join(&b' '),
                    cgroup_id: h.cgroup_id,
                    exited_at: None,
                });
            }
            Payload::Exit(_) => {
                if let Some(e) = self.entries.get_mut(&h.pid) {
                    e.exited_at = Some(h.ts_boot_ns);
                    self.changed();
                }
            }
            _ => {
                if !self.entries.contains_key(&h.pid) {
                    self.misses += 1;
                    // Started between seeding and the first lifecycle event, or missed:
                    // /proc still knows it if it lives.
                    if let Some(e) = read_proc(h.pid) {
                        self.insert(e);
                    }
                }
            }
        }
    }

    /// Makes sure `pid` and its ancestors are known, reading /proc for those that are not
    /// (for events that do not come through the rings, e.g. fanotify permission events).
    pub fn ensure_lineage(&mut self, pid: u32) {
        let mut next = pid;
        for _ in 0..MAX_ANCESTRY {
            if next == 0 {
                break;
            }
            let entry = match self.entries.get(&next) {
                Some(e) if e.exited_at.is_none() => e.clone(),
                _ => match read_proc(next) {
                    Some(e) => {
                        self.insert(e.clone());
                        e
                    }
                    None => break,
                },
            };
            if entry.ppid == next {
                break;
            }
            next = entry.ppid;
        }
    }

    /// The context for an event: identity from the event itself, exe and ancestry from here.
    pub fn context<'a>(&'a self, event: &'a Event) -> ProcessContext<'a> {
        let h = &event.header;
        let mut ancestry = Vec::new();
        let mut next = h.ppid;
        while next > 0 && ancestry.len() < MAX_ANCESTRY {
            let Some(e) = self.entries.get(&next) else {
                break;
            };
            ancestry.push(e);
            if e.ppid == next {
                break;
            }
            next = e.ppid;
        }
        let own = self.entries.get(&h.pid);
        ProcessContext {
            pid: h.pid,
            tid: h.tid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            comm: &h.comm,
            exe: own.map_or(&[][..], |e| &e.exe),
            cmdline: own.map_or(&[][..], |e| &e.cmdline),
            cgroup_id: h.cgroup_id,
            container: self.containers.get(h.cgroup_id),
            ancestry,
            cache_generation: self.generation,
        }
    }
}

/// Reads what /proc says about one process; `None` if it is gone.
fn read_proc(pid: u32) -> Option<Entry> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself contain ") ": split at the last one.
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let ppid = rest.split(' ').nth(1)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let id_field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().nth(1)) // effective id
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_default();
    let mut cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.last() == Some(&0) {
        cmdline.pop();
    }
    cmdline
        .iter_mut()
        .filter(|b| **b == 0)
        .for_each(|b| *b = b' ');
    Some(Entry {
        pid,
        ppid,
        uid: id_field("Uid:"),
        gid: id_field("Gid:"),
        comm,
        exe,
        cmdline,
        cgroup_id: cgroup_id(pid).unwrap_or(0),
        exited_at: None,
    })
}

/// cgroup v2 id = inode of the cgroup's directory (wherever the hierarchy is mounted).
fn cgroup_id(pid: u32) -> Option<u64> {
    crate::container::resolve::id_of_path(&crate::container::resolve::v2_path_of_pid(pid)?)
}

fn write_text<M: SerializeMap>(
    map: &mut M,
    name: &'static str,
    b64_name: &'static str,
    bytes: &[u8],
) -> Result<(), M::Error> {
    crate::wire::text::write_bytes_field(map, name, b64_name, bytes)
}

impl Serialize for ProcessContext<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("pid", &self.pid)?;
        map.serialize_entry("tid", &self.tid)?;
        map.serialize_entry("ppid", &self.ppid)?;
        map.serialize_entry("uid", &self.uid)?;
        map.serialize_entry("gid", &self.gid)?;
        write_text(&mut map, "comm", "comm_b64", self.comm)?;
        write_text(&mut map, "exe", "exe_b64", self.exe)?;
        map.serialize_entry("cgroup_id", &self.cgroup_id)?;
        if let Some(c) = self.container {
            map.serialize_entry("container", &**c)?;
            if let Some(k8s) = crate::container::k8s_json(c) {
                map.serialize_entry("k8s", &k8s)?;
            }
        }
        map.serialize_entry("ancestry", &AncestryJson(&self.ancestry))?;
        map.end()
    }
}

struct AncestryJson<'a>(&'a [&'a Entry]);

impl Serialize for AncestryJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(&AncestorJson(a))?;
        }
        seq.end()
    }
}

struct AncestorJson<'a>(&'a Entry);

impl Serialize for AncestorJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("pid", &self.0.pid)?;
        map.serialize_entry("comm", &json_text(&self.0.comm).0)?;
        map.serialize_entry("exe", &json_text(&self.0.exe).0)?;
        map.end()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::process::{Exit, Fork};
    use crate::wire::Header;

    /// An event of `pid` (comm `c`, also its tid), child of `ppid`, stamped `ts`.
    pub(in crate::pipeline) fn ev(pid: u32, ppid: u32, ts: u64, payload: Payload) -> Event {
        Event {
            header: Header {
                kind: 0,
                ts_boot_ns: ts,
                pid,
                tid: pid,
                ppid,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                comm: b"c".to_vec(),
            },
            payload,
        }
    }

    #[test]
    fn fork_exit_grace_and_ancestry() {
        let mut cache = ProcessCache::new(100, 1_000);
        cache.insert(Entry {
            pid: 10,
            ppid: 1,
            exe: b"/bin/p".to_vec(),
            ..Default::default()
        });
        let fork = |parent, child| {
            let payload = Payload::Fork(Fork {
                child_pid: child,
                child_start_boot_ns: 0,
            });
            ev(parent, 1, 0, payload)
        };
        cache.observe(&fork(10, 11));
        cache.observe(&fork(11, 12));
        let grandchild_event = ev(
            12,
            11,
            0,
            Payload::Fork(Fork {
                child_pid: 13,
                child_start_boot_ns: 0,
            }),
        );
        let ctx = cache.context(&grandchild_event);
        let pids: Vec<u32> = ctx.ancestry.iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![11, 10]);
        assert_eq!(ctx.exe, b"/bin/p");
        cache.observe(&ev(
            12,
            11,
            5_000,
            Payload::Exit(Exit {
                start_boot_ns: 0,
                status: 0,
            }),
        ));
        cache.expire(5_500);
        assert!(cache.get(12).is_some(), "kept during grace");
        cache.expire(6_001);
        assert!(cache.get(12).is_none(), "expired after grace");
    }

    #[test]
    fn bounded_capacity_evicts_exited_first() {
        let mut cache = ProcessCache::new(2, 1_000);
        cache.insert(Entry {
            pid: 1,
            exited_at: Some(5),
            ..Default::default()
        });
        cache.insert(Entry {
            pid: 2,
            ..Default::default()
        });
        cache.insert(Entry {
            pid: 3,
            ..Default::default()
        });
        assert!(cache.get(1).is_none());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.evictions, 1);
    }
}
