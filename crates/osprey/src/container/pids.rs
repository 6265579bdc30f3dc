//! Containers of processes by pid, for outputs built after the events (profile samples,
//! syscall counts): each pid's cgroup from /proc (read while the process lives with
//! `Cgroups`, or at the end), its runtime asked once per container, answers awaited for a
//! bounded time. A process gone before its cgroup was read has no container.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{resolve, Container, Containers, MetadataState};

/// How long outputs built at the end wait for the runtimes' answers.
pub const WAIT: Duration = Duration::from_secs(2);

/// What a profile sample (or a syscall count) says of its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    pub id: String,
    /// The name, or the short id when the runtime did not answer.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Tag {
    pub fn of(c: &Container) -> Self {
        Self {
            id: c.id.clone(),
            name: c.label().to_string(),
            pod: c.pod_name().map(str::to_string),
            namespace: c.pod_namespace().map(str::to_string),
        }
    }
}

/// The cgroup v2 id of a live process.
pub fn cgroup_of(pid: u32) -> Option<u64> {
    resolve::v2_path_of_pid(pid).and_then(|p| resolve::id_of_path(&p))
}

/// Each process's cgroup, read while it lived, so that a process that exits before the
/// output is built keeps its container.
#[derive(Debug, Default, Clone)]
pub struct Cgroups(HashMap<u32, Reading>);

/// A process's cgroup as last read, and the command names it was seen with until then.
#[derive(Debug, Clone)]
struct Reading {
    cgroup: u64,
    comms: Vec<Vec<u8>>,
}

impl Cgroups {
    /// Reads the cgroup of every pid not seen before (one /proc read each); the first
    /// reading stands.
    pub fn capture(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            if let Entry::Vacant(e) = self.0.entry(pid) {
                if let Some(cgroup) = cgroup_of(pid) {
                    e.insert(Reading {
                        cgroup,
                        comms: Vec::new(),
                    });
                }
            }
        }
    }

    /// Reads the cgroup of `pid` the first time it is seen and again with each command name
    /// (`comm`, up to a NUL) not seen for it before: a container runtime's child moves into
    /// the container's cgroup and then execs the container's program, whose events come
    /// with its own name. Threads with names of their own cost one read each.
    pub fn observe(&mut self, pid: u32, comm: &[u8]) {
        let comm = crate::wire::text::until_nul(comm);
        if let Some(r) = self.0.get(&pid) {
            if r.comms.iter().any(|c| c == comm) {
                return;
            }
        }
        let Some(cgroup) = cgroup_of(pid) else {
            return;
        };
        let reading = self.0.entry(pid).or_insert(Reading {
            cgroup,
            comms: Vec::new(),
        });
        reading.cgroup = cgroup;
        reading.comms.push(comm.to_vec());
    }

    /// The cgroup of `pid` as captured, else as read now (None: never captured and gone).
    pub fn of(&self, pid: u32) -> Option<u64> {
        self.0
            .get(&pid)
            .map(|r| r.cgroup)
            .or_else(|| cgroup_of(pid))
    }

    /// `containers_of_cgroups` for `pids`, each with its cgroup as `of` gives it.
    pub fn containers(
        &self,
        pids: impl IntoIterator<Item = u32>,
        wait: Duration,
    ) -> HashMap<u32, Arc<Container>> {
        containers_of_cgroups(
            pids.into_iter()
                .filter_map(|pid| Some((pid, self.of(pid)?))),
            wait,
        )
    }
}

/// The container of each pid of `pids` (with the cgroup read while it lived) that is in one,
/// for filters (`ContainerFilter::matches`) and tags alike.
pub fn containers_of_cgroups(
    pids: impl IntoIterator<Item = (u32, u64)>,
    wait: Duration,
) -> HashMap<u32, Arc<Container>> {
    let mut registry = Containers::default();
    let mut cgroups = HashMap::new();
    for (pid, cgroup) in pids {
        registry.note(cgroup, pid);
        cgroups.insert(pid, cgroup);
    }
    let deadline = Instant::now() + wait;
    let pending = |r: &Containers| {
        r.containers()
            .any(|c| matches!(c.metadata, MetadataState::Pending))
    };
    while pending(&registry) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        registry.poll();
    }
    cgroups
        .into_iter()
        .filter_map(|(pid, cgroup)| {
            let c = registry.get(cgroup).filter(|c| !c.is_host())?;
            Some((pid, c.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_are_captured_once_per_live_process() {
        let me = std::process::id();
        let mut seen = Cgroups::default();
        seen.capture([me, u32::MAX]);
        assert_eq!(seen.0.get(&me).map(|r| r.cgroup), cgroup_of(me));
        assert!(!seen.0.contains_key(&u32::MAX), "no such process");
        seen.0.get_mut(&me).unwrap().cgroup = 7;
        seen.capture([me]);
        assert_eq!(seen.of(me), Some(7), "the first reading stands");
        seen.observe(u32::MAX, b"gone");
        assert_eq!(seen.of(u32::MAX), None, "never captured and gone");
        seen.0.insert(
            u32::MAX,
            Reading {
                cgroup: 9,
                comms: Vec::new(),
            },
        );
        assert_eq!(seen.of(u32::MAX), Some(9), "captured while it lived");
    }

    #[test]
    fn a_new_command_name_reads_the_cgroup_again() {
        let me = std::process::id();
        let Some(now) = cgroup_of(me) else {
            return;
        };
        let mut seen = Cgroups::default();
        seen.observe(me, b"runc:[2:INIT]\0\0");
        seen.0.get_mut(&me).unwrap().cgroup = 7;
        seen.observe(me, b"runc:[2:INIT]");
        assert_eq!(seen.of(me), Some(7), "the same name: not read again");
        seen.observe(me, b"web\0");
        assert_eq!(seen.of(me), Some(now), "read again after the exec");
        seen.0.get_mut(&me).unwrap().cgroup = 8;
        seen.observe(me, b"runc:[2:INIT]");
        assert_eq!(seen.of(me), Some(8), "names seen before are not read again");
    }

    #[test]
    fn host_processes_have_no_container() {
        let me = std::process::id();
        let in_container = resolve::v2_path_of_pid(me)
            .and_then(|p| super::super::cgroup_path::identify(&p))
            .is_some();
        let containers = Cgroups::default().containers([me, u32::MAX], Duration::from_millis(10));
        assert_eq!(containers.contains_key(&me), in_container);
        assert!(!containers.contains_key(&u32::MAX), "no such process");
    }
}
