//! Collects the fault analysis: mapping descriptions as they arrive on the ring, then the
//! kernel's count and heat maps at the end, turned into per-process and per-mapping
//! counts with per-second rates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};

use super::{
    FaultMapping, Faults, HeatCell, Losses, MappingClass, MappingFaults, MemoryReport,
    ProcessFaults, Second,
};
use crate::abi::{fault_error as ferr, FaultCounts, FaultHeatKey, FaultKey};
use crate::container::filter::ContainerFilter;
use crate::container::pids::{self, Cgroups, Tag};
use crate::container::Container;
use crate::kernel::loader::{LoadError, LoadedCapability};
use crate::wire::Header;

pub struct Collector {
    counts: BpfHashMap<MapData, FaultKey, FaultCounts>,
    heat: BpfHashMap<MapData, FaultHeatKey, FaultCounts>,
    errors: PerCpuArray<MapData, u64>,
    mappings: HashMap<FaultKey, FaultMapping>,
    comms: HashMap<u32, String>,
    /// Each reporting process's cgroup, read at its first reported fault and again when it
    /// reports under a new name (`Cgroups::observe`).
    cgroups: Cgroups,
}

/// What the report includes.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub duration_secs: f64,
    /// Processes, and mappings per process, to keep (busiest first); `None`: all.
    pub top: Option<usize>,
    pub minor_source: Option<String>,
    pub major_source: Option<String>,
    pub minor_derived: bool,
    pub ring_dropped: u64,
    /// Processes kept (all when empty); see `MemoryOptions::containers`.
    pub containers: ContainerFilter,
}

impl Collector {
    pub fn new(cap: &mut LoadedCapability) -> Result<Self, LoadError> {
        let name = cap.spec.name;
        let err = |what: &str, e: aya::maps::MapError| LoadError::Map {
            capability: name,
            reason: format!("{what}: {e}"),
        };
        Ok(Self {
            counts: BpfHashMap::try_from(cap.take_map("fault_counts")?)
                .map_err(|e| err("fault_counts", e))?,
            heat: BpfHashMap::try_from(cap.take_map("fault_heat")?)
                .map_err(|e| err("fault_heat", e))?,
            errors: PerCpuArray::try_from(cap.take_map("fault_errors")?)
                .map_err(|e| err("fault_errors", e))?,
            mappings: HashMap::new(),
            comms: HashMap::new(),
            cgroups: Cgroups::default(),
        })
    }

    pub fn on_mapping(&mut self, header: &Header, mapping: &FaultMapping) {
        // The latest name: a process exec'd by a container runtime starts with the runtime's.
        let comm = String::from_utf8_lossy(&header.comm);
        if self.comms.get(&header.pid).is_none_or(|c| *c != comm) {
            self.comms.insert(header.pid, comm.into_owned());
        }
        self.cgroups.observe(header.pid, &header.comm);
        self.mappings.insert(mapping.key, mapping.clone());
    }

    /// Faults counted so far over all processes (reads the whole count map).
    pub fn total(&self) -> Faults {
        let mut total = Faults::default();
        for (_, c) in self.counts.iter().filter_map(Result::ok) {
            total.add(Faults::from_counts(&c));
        }
        total
    }

    fn losses(&self, ring_dropped: u64) -> Losses {
        let slot = |s: u32| -> u64 { self.errors.get(&s, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        Losses {
            vma_lookup_busy: slot(ferr::VMA_BUSY),
            vma_lookup_busy_cached: slot(ferr::VMA_BUSY_CACHED),
            vma_lookup_missing: slot(ferr::VMA_MISSING),
            vma_lookup_failed: slot(ferr::VMA_OTHER),
            counts_map_full: slot(ferr::COUNTS_FULL),
            heat_map_full: slot(ferr::HEAT_FULL),
            ring_dropped,
        }
    }

    fn comm(&self, pid: u32) -> String {
        self.comms.get(&pid).cloned().unwrap_or_else(|| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_else(|_| "?".into())
        })
    }

    fn mapping_row(
        &self,
        key: &FaultKey,
        counts: &FaultCounts,
        heat: Vec<HeatCell>,
    ) -> MappingFaults {
        let described = self.mappings.get(key);
        let class = match described {
            Some(m) => m.class,
            None if key.vma_start == 0 => MappingClass::Unresolved,
            // The description was lost (ring full): the key still tells file from not.
            None if key.ino != 0 => MappingClass::File,
            None => MappingClass::Anonymous,
        };
        let path = described
            .and_then(|m| m.path.as_deref())
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let label = match (&path, class) {
            (Some(p), _) => p.clone(),
            (None, MappingClass::File) => format!("[file {}:{}]", key.dev, key.ino),
            (None, c) => c.label().to_string(),
        };
        MappingFaults {
            class,
            label,
            path,
            start: key.vma_start,
            end: counts.vma_end.max(described.map_or(0, |m| m.vma_end)),
            permissions: described.map(FaultMapping::permissions),
            faults: Faults::from_counts(counts),
            per_second: Vec::new(),
            heat,
        }
    }

    /// Reads the kernel's maps and builds the report.
    pub fn finish(self, options: &ReportOptions) -> MemoryReport {
        let mut heat_by_key: HashMap<FaultKey, Vec<HeatCell>> = HashMap::new();
        let mut last_second = options.duration_secs.floor().max(1.0) as u32 - 1;
        for (k, c) in self.heat.iter().filter_map(Result::ok) {
            last_second = last_second.max(k.second);
            heat_by_key.entry(k.mapping).or_default().push(HeatCell {
                second: k.second,
                row: k.row,
                faults: Faults::from_counts(&c),
            });
        }
        let seconds = last_second as usize + 1;

        let mut by_pid: BTreeMap<u32, Vec<MappingFaults>> = BTreeMap::new();
        for (key, counts) in self.counts.iter().filter_map(Result::ok) {
            let heat = heat_by_key.remove(&key).unwrap_or_default();
            by_pid
                .entry(key.pid)
                .or_default()
                .push(self.mapping_row(&key, &counts, heat));
        }

        let containers = self.cgroups.containers(by_pid.keys().copied(), pids::WAIT);
        keep_containers(&mut by_pid, &containers, &options.containers);
        let mut processes: Vec<ProcessFaults> = by_pid
            .into_iter()
            .map(|(pid, rows)| {
                let mut row = self.process_row(pid, rows, seconds);
                row.container = containers.get(&pid).map(|c| Tag::of(c));
                row
            })
            .collect();
        processes.sort_by(|a, b| {
            b.faults
                .total()
                .cmp(&a.faults.total())
                .then(a.pid.cmp(&b.pid))
        });

        let mut faults = Faults::default();
        let mut per_second = vec![Faults::default(); seconds];
        for p in &processes {
            faults.add(p.faults);
            for s in &p.per_second {
                per_second[s.second as usize].add(Faults {
                    minor: s.minor,
                    major: s.major,
                });
            }
        }
        let process_count = processes.len();
        if let Some(n) = options.top {
            processes.truncate(n);
            for p in &mut processes {
                p.mappings.truncate(n);
            }
        }
        MemoryReport {
            duration_secs: options.duration_secs,
            minor_source: options.minor_source.clone(),
            major_source: options.major_source.clone(),
            minor_derived: options.minor_derived,
            faults,
            per_second: numbered(&per_second),
            process_count,
            processes,
            losses: self.losses(options.ring_dropped),
        }
    }
}

impl Collector {
    /// One process: its mappings (stacks merged, busiest first) with per-second faults,
    /// and its totals.
    fn process_row(&self, pid: u32, rows: Vec<MappingFaults>, seconds: usize) -> ProcessFaults {
        let mut mappings = merge_stacks(rows);
        let mut faults = Faults::default();
        let mut per_second = vec![Faults::default(); seconds];
        for m in &mut mappings {
            faults.add(m.faults);
            let mut mine = vec![Faults::default(); seconds];
            for cell in &m.heat {
                mine[cell.second as usize].add(cell.faults);
                per_second[cell.second as usize].add(cell.faults);
            }
            m.per_second = numbered(&mine);
        }
        mappings.sort_by(|a, b| {
            b.faults
                .total()
                .cmp(&a.faults.total())
                .then(a.start.cmp(&b.start))
        });
        ProcessFaults {
            pid,
            comm: self.comm(pid),
            container: None,
            faults,
            per_second: numbered(&per_second),
            mappings,
        }
    }
}

/// Keeps the processes whose container (from `containers`, by pid; none: the host)
/// `filter` wants.
fn keep_containers<T>(
    by_pid: &mut BTreeMap<u32, T>,
    containers: &HashMap<u32, Arc<Container>>,
    filter: &ContainerFilter,
) {
    by_pid.retain(|&pid, _| filter.matches_pid(containers, pid));
}

fn numbered(per_second: &[Faults]) -> Vec<Second> {
    per_second
        .iter()
        .enumerate()
        .map(|(i, f)| Second {
            second: i as u32,
            minor: f.minor,
            major: f.major,
        })
        .collect()
}

/// The main stack's VMA starts lower each time it grows, so the kernel keys it anew:
/// show it as one mapping.
fn merge_stacks(rows: Vec<MappingFaults>) -> Vec<MappingFaults> {
    let mut out: Vec<MappingFaults> = Vec::with_capacity(rows.len());
    let mut stack: Option<usize> = None;
    for row in rows {
        match (row.class, stack) {
            (MappingClass::Stack, Some(i)) => {
                let s = &mut out[i];
                s.start = s.start.min(row.start);
                s.end = s.end.max(row.end);
                s.faults.add(row.faults);
                s.heat.extend(row.heat);
            }
            (MappingClass::Stack, None) => {
                stack = Some(out.len());
                out.push(row);
            }
            _ => out.push(row),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(class: MappingClass, start: u64, end: u64, minor: u64, second: u32) -> MappingFaults {
        let faults = Faults { minor, major: 0 };
        MappingFaults {
            class,
            label: class.label().into(),
            path: None,
            start,
            end,
            permissions: None,
            faults,
            per_second: Vec::new(),
            heat: vec![HeatCell {
                second,
                row: 0,
                faults,
            }],
        }
    }

    #[test]
    fn a_growing_stack_is_one_mapping() {
        let rows = vec![
            row(MappingClass::Stack, 0x7ff0_0000, 0x7ff1_0000, 3, 0),
            row(MappingClass::Anonymous, 0x1000, 0x2000, 5, 0),
            row(MappingClass::Stack, 0x7fe0_0000, 0x7ff1_0000, 4, 1),
        ];
        let merged = merge_stacks(rows);
        assert_eq!(merged.len(), 2);
        let stack = &merged[0];
        assert_eq!((stack.start, stack.end), (0x7fe0_0000, 0x7ff1_0000));
        assert_eq!(stack.faults.minor, 7);
        assert_eq!(stack.heat.len(), 2);
        assert_eq!(merged[1].faults.minor, 5);
    }

    #[test]
    fn a_container_filter_keeps_the_processes_of_its_containers() {
        use crate::profile::raw::tests::container;
        let containers = HashMap::from([(1, container("web", 'a', "web-0"))]);
        let all: BTreeMap<u32, ()> = [(1, ()), (2, ())].into();
        let kept = |filter: ContainerFilter| {
            let mut by_pid = all.clone();
            keep_containers(&mut by_pid, &containers, &filter);
            by_pid.into_keys().collect::<Vec<_>>()
        };
        assert_eq!(kept(ContainerFilter::default()), [1, 2]);
        let web = ContainerFilter {
            pods: vec!["web-0".into()],
            ..Default::default()
        };
        assert_eq!(kept(web), [1], "pid 2 is on the host");
        let db = ContainerFilter {
            containers: vec!["db".into()],
            ..Default::default()
        };
        assert!(kept(db).is_empty());
    }

    #[test]
    fn seconds_are_numbered_densely() {
        let s = numbered(&[Faults::default(), Faults { minor: 2, major: 1 }]);
        assert_eq!(
            s,
            [
                Second {
                    second: 0,
                    minor: 0,
                    major: 0
                },
                Second {
                    second: 1,
                    minor: 2,
                    major: 1
                }
            ]
        );
    }
}
