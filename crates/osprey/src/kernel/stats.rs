//! Health of our own programs: per-program run count and run time (BPF run-time stats,
//! enabled only while Osprey runs) and per-kind emitted/dropped/throttled counters.

use std::os::fd::OwnedFd;

use serde::Serialize;

use super::loader::LoadedCapability;

/// Holds the BPF_ENABLE_STATS fd: run-time accounting is on exactly while this lives.
pub struct RunTimeStats {
    _fd: Option<OwnedFd>,
    pub enabled: bool,
}

impl RunTimeStats {
    pub fn enable() -> Self {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
        Self {
            enabled: fd.is_some(),
            _fd: fd,
        }
    }
}

/// One row of the statistics report: a program and the events it emits.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProbeStats {
    pub capability: &'static str,
    pub role: &'static str,
    pub program: &'static str,
    pub hook: String,
    /// The kernel's id of the loaded program (as `bpftool prog show` lists it).
    pub id: u32,
    pub run_count: u64,
    pub run_time_ns: u64,
    pub avg_ns_per_run: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct KindStats {
    pub capability: &'static str,
    pub kind: &'static str,
    pub emitted: u64,
    pub dropped: u64,
    pub throttled: u64,
    pub filtered: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    pub programs: Vec<ProbeStats>,
    pub kinds: Vec<KindStats>,
}

impl Snapshot {
    pub fn take(capabilities: &[LoadedCapability]) -> Self {
        let mut snap = Snapshot::default();
        for cap in capabilities {
            for (role, program, hook) in cap.programs() {
                let (id, run_count, run_time_ns) = program
                    .info()
                    .map(|i| (i.id(), i.run_count(), i.run_time().as_nanos() as u64))
                    .unwrap_or((0, 0, 0));
                snap.programs.push(ProbeStats {
                    capability: cap.spec.name,
                    role,
                    program: hook.program,
                    hook: hook.attach.label(),
                    id,
                    run_count,
                    run_time_ns,
                    avg_ns_per_run: run_time_ns.checked_div(run_count).unwrap_or(0),
                });
            }
            for &(kind, name) in cap.spec.kinds {
                let c = cap.counters_for(kind);
                snap.kinds.push(KindStats {
                    capability: cap.spec.name,
                    kind: name,
                    emitted: c.emitted,
                    dropped: c.dropped,
                    throttled: c.throttled,
                    filtered: c.filtered,
                });
            }
        }
        snap
    }

    pub fn total_dropped(&self) -> u64 {
        self.kinds.iter().map(|k| k.dropped).sum()
    }

    /// A human-readable report for stderr: programs, then event counters.
    pub fn render(&self) -> String {
        use crate::pipeline::table::{render, Align::*};
        let programs: Vec<Vec<String>> = self
            .programs
            .iter()
            .map(|p| {
                vec![
                    p.capability.to_string(),
                    p.role.to_string(),
                    p.hook.clone(),
                    p.run_count.to_string(),
                    p.avg_ns_per_run.to_string(),
                ]
            })
            .collect();
        let kinds: Vec<Vec<String>> = self
            .kinds
            .iter()
            .map(|k| {
                vec![
                    k.capability.to_string(),
                    k.kind.to_string(),
                    k.emitted.to_string(),
                    k.dropped.to_string(),
                    k.throttled.to_string(),
                    k.filtered.to_string(),
                ]
            })
            .collect();
        let program_header = [
            ("CAPABILITY", Left),
            ("ROLE", Left),
            ("HOOK", Left),
            ("RUNS", Right),
            ("AVG_NS", Right),
        ];
        let kind_header = [
            ("CAPABILITY", Left),
            ("KIND", Left),
            ("EMITTED", Right),
            ("DROPPED", Right),
            ("THROTTLED", Right),
            ("FILTERED", Right),
        ];
        render(&program_header, &programs) + &render(&kind_header, &kinds)
    }
}
