//! `osprey syscalls`: per-process and per-syscall counts, errors by errno and latency,
//! aggregated per CPU in the kernel (bpf/syscalls.bpf.c) and read from its maps at the end.

pub mod output;

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{MapData, PerCpuHashMap};
use serde::Serialize;

use crate::abi::{kind, SyscallKey, SyscallStats};
use crate::container::pids::Tag;
use crate::kernel::loader::{CapabilitySpec, LoadError, LoadedCapability, Role};
use crate::wire::text::until_nul;

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "syscalls",
    object: osprey_bpf::SYSCALLS,
    roles: &[
        Role {
            name: "syscall-exit",
            required: true,
            hooks: crate::sys_exit_hooks!("syscalls_exit"),
        },
        // Without it calls are still counted, but without latency (and exit/exit_group not at all).
        Role {
            name: "syscall-enter",
            required: false,
            hooks: crate::sys_enter_hooks!("syscalls_enter"),
        },
    ],
    kinds: &[(kind::SYSCALL_COUNT, "syscall_count")],
    // Nothing is streamed; the smallest ring the kernel accepts.
    default_ring_bytes: 4096,
};

/// x86-64 syscall name, or `syscall_N` for numbers this table does not know.
pub fn syscall_name(nr: u32) -> String {
    syscall_names::Sysno::new(nr as usize)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// x86-64 syscall number of a name (`getppid`), for baselines and filters.
pub fn syscall_number(name: &str) -> Option<u32> {
    name.parse::<syscall_names::Sysno>()
        .ok()
        .map(|s| s.id() as u32)
}

pub fn errno_name(errno: u32) -> String {
    syscall_names::Errno::new(errno as i32)
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("E{errno}"))
}

/// Counts of one syscall by one process (or, aggregated, by all of them: pid 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    pub nr: u32,
    pub syscall: String,
    pub count: u64,
    pub errors: u64,
    /// Failed calls by errno name.
    pub errnos: BTreeMap<String, u64>,
    /// Calls whose entry was seen (latency known).
    pub timed: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// The process's container (`None`: the host, or a process gone before the end).
    pub container: Option<Tag>,
}

impl Row {
    pub fn avg_ns(&self) -> u64 {
        self.total_ns.checked_div(self.timed).unwrap_or(0)
    }

    fn add(&mut self, other: &Row) {
        self.count += other.count;
        self.errors += other.errors;
        for (e, n) in &other.errnos {
            *self.errnos.entry(e.clone()).or_default() += n;
        }
        self.timed += other.timed;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// How rows are grouped for output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One row per process and syscall.
    ProcessSyscall,
    /// One row per syscall over all processes.
    Syscall,
    /// One row per process over all its syscalls.
    Process,
    /// One row per container (the host is one) and syscall.
    ContainerSyscall,
    /// One row per container over all its syscalls.
    Container,
}

impl GroupBy {
    pub fn has_process(self) -> bool {
        matches!(self, GroupBy::ProcessSyscall | GroupBy::Process)
    }

    pub fn has_syscall(self) -> bool {
        !matches!(self, GroupBy::Process | GroupBy::Container)
    }

    pub fn has_container(self) -> bool {
        matches!(self, GroupBy::ContainerSyscall | GroupBy::Container)
    }
}

/// Each counted process's cgroup, read while it lived.
pub use crate::container::pids::Cgroups;

/// Keeps the rows whose process's container `filter` wants (`--container`, `--pod`,
/// `--namespace`; all rows when it is empty) and puts each row's container on it: the
/// process's cgroup as `seen` captured it, else as read now (a process gone by the end and
/// never captured has none); the runtimes' answers are awaited at most `pids::WAIT`.
pub fn tag_containers(
    rows: &mut Vec<Row>,
    seen: &Cgroups,
    filter: &crate::container::filter::ContainerFilter,
) {
    use crate::container::pids;
    let containers = seen.containers(rows.iter().map(|r| r.pid), pids::WAIT);
    rows.retain(|r| filter.matches_pid(&containers, r.pid));
    for row in rows {
        row.container = containers.get(&row.pid).map(|c| pids::Tag::of(c));
    }
}

/// The tag of the host's processes in container rows.
fn host_tag() -> Tag {
    Tag::of(crate::container::host())
}

/// The kernel's count map, taken out of the loaded capability.
pub struct Counts {
    counts: PerCpuHashMap<MapData, SyscallKey, SyscallStats>,
}

fn map_error(cap: &LoadedCapability, what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Map {
        capability: cap.spec.name,
        reason: format!("{what}: {e}"),
    }
}

impl Counts {
    pub fn new(cap: &mut LoadedCapability) -> Result<Self, LoadError> {
        let counts = PerCpuHashMap::try_from(cap.take_map("syscall_counts")?)
            .map_err(|e| map_error(cap, "syscall_counts", e))?;
        Ok(Self { counts })
    }

    /// The processes counted so far.
    pub fn pids(&self) -> BTreeSet<u32> {
        self.counts
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.pid)
            .collect()
    }

    /// Per process and syscall, summed over CPUs and errnos.
    pub fn read(&self) -> Vec<Row> {
        let entries = self.counts.iter().filter_map(Result::ok);
        rows_of(entries.map(|(key, per_cpu)| (key, per_cpu.to_vec())))
    }
}

/// One row per process and syscall from the map's entries (key, value of each CPU).
fn rows_of(entries: impl Iterator<Item = (SyscallKey, Vec<SyscallStats>)>) -> Vec<Row> {
    let mut rows: BTreeMap<(u32, u32), Row> = BTreeMap::new();
    for (key, per_cpu) in entries {
        let row = rows.entry((key.pid, key.nr)).or_insert_with(|| Row {
            pid: key.pid,
            nr: key.nr,
            syscall: syscall_name(key.nr),
            ..Default::default()
        });
        let mut count = 0;
        for st in &per_cpu {
            if row.comm.is_empty() && st.comm[0] != 0 {
                row.comm = String::from_utf8_lossy(until_nul(&st.comm)).into_owned();
            }
            count += st.count;
            row.errors += st.errors;
            row.timed += st.timed;
            row.total_ns += st.total_ns;
            row.max_ns = row.max_ns.max(st.max_ns);
        }
        row.count += count;
        if key.err != 0 && count > 0 {
            *row.errnos.entry(errno_name(key.err)).or_default() += count;
        }
    }
    rows.into_values().collect()
}

/// Groups rows and sorts them by count, largest first (then by pid and syscall).
pub fn group(rows: &[Row], by: GroupBy) -> Vec<Row> {
    let mut out: Vec<Row> = if by == GroupBy::ProcessSyscall {
        rows.to_vec()
    } else {
        let mut grouped: BTreeMap<(String, u32, u32), Row> = BTreeMap::new();
        for r in rows {
            let container = by
                .has_container()
                .then(|| r.container.clone().unwrap_or_else(host_tag));
            let pid = if by.has_process() { r.pid } else { 0 };
            let nr = if by.has_syscall() { r.nr } else { 0 };
            let key = (
                container.as_ref().map_or(String::new(), |c| c.id.clone()),
                pid,
                nr,
            );
            let g = grouped.entry(key).or_insert_with(|| Row {
                pid,
                comm: if by.has_process() {
                    r.comm.clone()
                } else {
                    String::new()
                },
                nr,
                syscall: if by.has_syscall() {
                    r.syscall.clone()
                } else {
                    String::new()
                },
                container: container.or_else(|| r.container.clone()),
                ..Default::default()
            });
            g.add(r);
        }
        grouped.into_values().collect()
    };
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.pid.cmp(&b.pid))
            .then(a.nr.cmp(&b.nr))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, nr: u32, count: u64, errors: &[(&str, u64)]) -> Row {
        Row {
            pid,
            comm: format!("p{pid}"),
            nr,
            syscall: syscall_name(nr),
            count,
            errors: errors.iter().map(|e| e.1).sum(),
            errnos: errors.iter().map(|(e, n)| (e.to_string(), *n)).collect(),
            timed: count,
            total_ns: count * 100,
            max_ns: 100 + u64::from(pid),
            container: None,
        }
    }

    #[test]
    fn names_come_from_the_x86_64_table() {
        assert_eq!(syscall_name(110), "getppid");
        assert_eq!(syscall_name(257), "openat");
        assert_eq!(syscall_name(9999), "syscall_9999");
        assert_eq!(syscall_number("openat"), Some(257));
        assert_eq!(syscall_number("no_such_call"), None);
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(4000), "E4000");
    }

    fn stats(count: u64, failed: bool, max_ns: u64, comm: &[u8]) -> SyscallStats {
        let mut st = SyscallStats {
            count,
            errors: if failed { count } else { 0 },
            timed: count,
            total_ns: count * 10,
            max_ns,
            ..Default::default()
        };
        st.comm[..comm.len()].copy_from_slice(comm);
        st
    }

    #[test]
    fn entries_by_errno_fold_into_one_row_per_process_and_syscall() {
        let key = |pid, nr, err| SyscallKey {
            pid,
            nr,
            err,
            _pad: 0,
        };
        let none = SyscallStats::default();
        let rows = rows_of(
            vec![
                (key(7, 257, 0), vec![stats(3, false, 50, b"cat"), none]),
                (
                    key(7, 257, 2),
                    vec![stats(4, true, 90, b"cat"), stats(1, true, 5, b"cat")],
                ),
                (key(7, 257, 13), vec![none, stats(2, true, 20, b"cat")]),
                (key(7, 110, 0), vec![stats(6, false, 10, b"cat"), none]),
            ]
            .into_iter(),
        );
        assert_eq!(rows.len(), 2);
        let openat = rows.iter().find(|r| r.nr == 257).unwrap();
        assert_eq!((openat.pid, openat.comm.as_str()), (7, "cat"));
        assert_eq!((openat.count, openat.errors, openat.timed), (10, 7, 10));
        assert_eq!(openat.max_ns, 90);
        assert_eq!(openat.total_ns, 100);
        let errnos: Vec<_> = openat
            .errnos
            .iter()
            .map(|(e, n)| (e.as_str(), *n))
            .collect();
        assert_eq!(errnos, vec![("EACCES", 2), ("ENOENT", 5)]);
        let getppid = rows.iter().find(|r| r.nr == 110).unwrap();
        assert_eq!((getppid.count, getppid.errors), (6, 0));
        assert!(getppid.errnos.is_empty());
    }

    #[test]
    fn grouping_sums_counts_errnos_and_keeps_the_max() {
        let rows = vec![
            row(10, 257, 5, &[("ENOENT", 2)]),
            row(11, 257, 7, &[("ENOENT", 1), ("EACCES", 3)]),
            row(11, 110, 9, &[]),
        ];
        let by_syscall = group(&rows, GroupBy::Syscall);
        assert_eq!(by_syscall[0].syscall, "openat");
        assert_eq!(by_syscall[0].count, 12);
        assert_eq!(by_syscall[0].errors, 6);
        assert_eq!(by_syscall[0].errnos["ENOENT"], 3);
        assert_eq!(by_syscall[0].max_ns, 111);
        assert_eq!(by_syscall[0].pid, 0);
        let by_process = group(&rows, GroupBy::Process);
        assert_eq!((by_process[0].pid, by_process[0].count), (11, 16));
        assert_eq!(by_process[0].comm, "p11");
        assert_eq!(by_process[0].avg_ns(), 100);
        let pairs = group(&rows, GroupBy::ProcessSyscall);
        assert_eq!(
            pairs.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![9, 7, 5]
        );
    }

    #[test]
    fn a_container_filter_keeps_only_the_processes_of_containers_it_names() {
        use crate::container::filter::ContainerFilter;
        let me = std::process::id();
        let mut seen = Cgroups::default();
        seen.capture([me]);
        let mut rows = vec![row(me, 110, 3, &[])];
        tag_containers(&mut rows, &seen, &ContainerFilter::default());
        assert_eq!(rows.len(), 1, "no filter: every row stays");
        let only = ContainerFilter {
            containers: vec!["osprey-no-such-container".into()],
            ..Default::default()
        };
        tag_containers(&mut rows, &seen, &only);
        assert!(rows.is_empty(), "not in that container: {rows:?}");
    }

    #[test]
    fn container_rows_sum_their_processes_and_the_host_is_one() {
        let web = Tag {
            id: "a".repeat(64),
            name: "web".into(),
            pod: None,
            namespace: None,
        };
        let mut rows = vec![
            row(10, 257, 5, &[]),
            row(11, 257, 7, &[("ENOENT", 1)]),
            row(12, 257, 2, &[]),
            row(11, 110, 9, &[]),
        ];
        rows[1].container = Some(web.clone());
        rows[2].container = Some(web.clone());
        rows[3].container = Some(web.clone());
        let by_container = group(&rows, GroupBy::Container);
        let summary: Vec<(&str, u64, u32, &str)> = by_container
            .iter()
            .map(|r| {
                let c = r.container.as_ref().unwrap();
                (c.name.as_str(), r.count, r.pid, r.syscall.as_str())
            })
            .collect();
        assert_eq!(summary, [("web", 18, 0, ""), ("host", 5, 0, "")]);
        let pairs = group(&rows, GroupBy::ContainerSyscall);
        let summary: Vec<(&str, &str, u64, u64)> = pairs
            .iter()
            .map(|r| {
                let c = r.container.as_ref().unwrap();
                (c.name.as_str(), r.syscall.as_str(), r.count, r.errors)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("web", "getppid", 9, 0),
                ("web", "openat", 9, 1),
                ("host", "openat", 5, 0)
            ]
        );
        assert_eq!(
            group(&rows, GroupBy::Process)[0].container.as_ref(),
            Some(&web),
            "process rows keep their container"
        );
    }
}
