//! What `osprey top` measures: BPF run-time statistics of loaded programs sampled at two
//! instants, matched to capabilities through the registry, plus (when an agent answers) its
//! per-capability event counters, turned into per-second rates.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::agent::control::{self, Request};

/// The capability a kernel program name belongs to, if it is one of Osprey's.
pub fn capability_of(kernel_name: &str) -> Option<&'static str> {
    crate::capabilities::by_program(kernel_name).map(|c| c.spec.name)
}

/// One loaded program's cumulative counters.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub kind: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Cumulative event counters of one capability as the agent reports them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Events {
    pub emitted: u64,
    pub dropped: u64,
    /// Refused by the in-kernel rate limiter.
    pub throttled: u64,
}

/// Everything read at one instant.
pub struct Sample {
    pub at: Instant,
    pub programs: HashMap<u32, Program>,
    /// None: no agent answered on the control socket.
    pub agent: Option<HashMap<String, Events>>,
    /// The capability the agent loaded each program id for (names alone are ambiguous:
    /// the security module loads the files programs too, as `security-opens`).
    pub owners: HashMap<u32, &'static str>,
}

/// Why sampling failed.
#[derive(Debug)]
pub enum SampleError {
    /// Listing programs needs CAP_SYS_ADMIN (or CAP_BPF): exit 77.
    Privilege(String),
    Other(String),
}

impl Sample {
    pub fn take(agent_socket: &Path) -> Result<Self, SampleError> {
        let mut programs = HashMap::new();
        for info in aya::programs::loaded_programs() {
            let info = match info {
                Ok(info) => info,
                // A program unloaded between listing its id and reading it: skip it.
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    continue
                }
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EPERM) =>
                {
                    return Err(SampleError::Privilege(format!(
                        "osprey top needs CAP_SYS_ADMIN to list BPF programs: {}",
                        e.io_error
                    )))
                }
                Err(e) => return Err(SampleError::Other(format!("listing BPF programs: {e}"))),
            };
            programs.insert(
                info.id(),
                Program {
                    name: String::from_utf8_lossy(info.name()).into_owned(),
                    kind: type_label(&format!("{:?}", info.program_type())),
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                },
            );
        }
        let response = control::call(&agent_socket.to_path_buf(), &Request::List).ok();
        Ok(Sample {
            at: Instant::now(),
            programs,
            agent: response.as_ref().and_then(agent_events),
            owners: response.as_ref().map(program_owners).unwrap_or_default(),
        })
    }
}

/// `BPF_PROG_TYPE_RAW_TRACEPOINT` → `raw_tracepoint`.
fn type_label(debug: &str) -> String {
    debug
        .strip_prefix("BPF_PROG_TYPE_")
        .unwrap_or(debug)
        .to_ascii_lowercase()
}

/// Program id to capability from the agent's `list` answer.
fn program_owners(response: &Value) -> HashMap<u32, &'static str> {
    let programs = response["programs"].as_array().into_iter().flatten();
    programs
        .filter_map(|p| {
            let id = u32::try_from(p["id"].as_u64()?).ok()?;
            let capability = p["capability"].as_str()?;
            let entry = crate::capabilities::REGISTRY
                .iter()
                .find(|c| c.spec.name == capability)?;
            Some((id, entry.spec.name))
        })
        .collect()
}

/// Per-capability totals from the agent's `list` answer.
fn agent_events(response: &Value) -> Option<HashMap<String, Events>> {
    let kinds = response.get("events")?.as_array()?;
    let mut totals: HashMap<String, Events> = HashMap::new();
    for kind in kinds {
        let Some(capability) = kind["capability"].as_str() else {
            continue;
        };
        let entry = totals.entry(capability.to_string()).or_default();
        entry.emitted += kind["emitted"].as_u64().unwrap_or(0);
        entry.dropped += kind["dropped"].as_u64().unwrap_or(0);
        entry.throttled += kind["throttled"].as_u64().unwrap_or(0);
    }
    Some(totals)
}

/// One program over one interval.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u32,
    pub name: String,
    pub kind: String,
    pub capability: Option<&'static str>,
    /// Share of one CPU spent in the program.
    pub cpu_percent: f64,
    pub runs_per_sec: f64,
    /// Over the interval; 0 when it did not run.
    pub avg_ns: u64,
}

/// One capability's events over one interval (from the agent).
#[derive(Debug, Clone)]
pub struct CapabilityRow {
    pub capability: String,
    pub events_per_sec: f64,
    pub drops_per_sec: f64,
    pub throttled_per_sec: f64,
}

/// The difference between two samples.
pub struct Interval {
    pub seconds: f64,
    pub rows: Vec<Row>,
    /// None: no agent answered at both ends of the interval.
    pub capabilities: Option<Vec<CapabilityRow>>,
}

impl Interval {
    /// Programs loaded at both instants (counters of a newer one have no baseline);
    /// only Osprey's unless `all`.
    pub fn between(before: &Sample, after: &Sample, all: bool) -> Self {
        let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let mut rows: Vec<Row> = after
            .programs
            .iter()
            .filter_map(|(&id, now)| {
                let then = before.programs.get(&id)?;
                let capability = after
                    .owners
                    .get(&id)
                    .copied()
                    .or_else(|| capability_of(&now.name));
                if !all && capability.is_none() {
                    return None;
                }
                let runs = now.run_count.saturating_sub(then.run_count);
                let time_ns = now.run_time_ns.saturating_sub(then.run_time_ns);
                Some(Row {
                    id,
                    name: now.name.clone(),
                    kind: now.kind.clone(),
                    capability,
                    cpu_percent: time_ns as f64 / (seconds * 1e9) * 100.0,
                    runs_per_sec: runs as f64 / seconds,
                    avg_ns: time_ns.checked_div(runs).unwrap_or(0),
                })
            })
            .collect();
        Sort::Cpu.apply(&mut rows);
        let capabilities = match (&before.agent, &after.agent) {
            (Some(then), Some(now)) => {
                let mut caps: Vec<CapabilityRow> = now
                    .iter()
                    .map(|(name, n)| {
                        let t = then.get(name).copied().unwrap_or_default();
                        CapabilityRow {
                            capability: name.clone(),
                            events_per_sec: n.emitted.saturating_sub(t.emitted) as f64 / seconds,
                            drops_per_sec: n.dropped.saturating_sub(t.dropped) as f64 / seconds,
                            throttled_per_sec: n.throttled.saturating_sub(t.throttled) as f64
                                / seconds,
                        }
                    })
                    .collect();
                caps.sort_by(|a, b| a.capability.cmp(&b.capability));
                Some(caps)
            }
            _ => None,
        };
        Interval {
            seconds,
            rows,
            capabilities,
        }
    }

    pub fn total_cpu_percent(&self) -> f64 {
        self.rows.iter().map(|r| r.cpu_percent).sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "interval_s": self.seconds,
            "programs": self.rows.iter().map(|r| json!({
                "id": r.id,
                "name": r.name,
                "type": r.kind,
                "capability": r.capability,
                "cpu_percent": r.cpu_percent,
                "runs_per_sec": r.runs_per_sec,
                "avg_ns": r.avg_ns,
            })).collect::<Vec<_>>(),
            // Always a list (empty without an agent); `agent` says whether one answered.
            "agent": self.capabilities.is_some(),
            "capabilities": self.capabilities.iter().flatten().map(|c| json!({
                "capability": c.capability,
                "events_per_sec": c.events_per_sec,
                "drops_per_sec": c.drops_per_sec,
                "throttled_per_sec": c.throttled_per_sec,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Column the program table is ordered by (largest first, names A to Z).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Cpu,
    Runs,
    Avg,
    Name,
}

impl Sort {
    pub fn label(self) -> &'static str {
        match self {
            Sort::Cpu => "cpu",
            Sort::Runs => "runs/s",
            Sort::Avg => "avg ns",
            Sort::Name => "name",
        }
    }

    pub fn apply(self, rows: &mut [Row]) {
        match self {
            Sort::Cpu => rows.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent)),
            Sort::Runs => rows.sort_by(|a, b| b.runs_per_sec.total_cmp(&a.runs_per_sec)),
            Sort::Avg => rows.sort_by_key(|r| std::cmp::Reverse(r.avg_ns)),
            Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, programs: &[(u32, &str, u64, u64)]) -> Sample {
        Sample {
            at,
            programs: programs
                .iter()
                .map(|&(id, name, run_count, run_time_ns)| {
                    let program = Program {
                        name: name.to_string(),
                        kind: "tracing".to_string(),
                        run_count,
                        run_time_ns,
                    };
                    (id, program)
                })
                .collect(),
            agent: None,
            owners: HashMap::new(),
        }
    }

    #[test]
    fn the_agent_names_the_capability_of_a_shared_program_name() {
        let t0 = Instant::now();
        let before = sample(
            t0,
            &[(7, "files_open_btf", 0, 0), (8, "files_open_btf", 0, 0)],
        );
        let mut after = sample(
            t0 + std::time::Duration::from_secs(1),
            &[(7, "files_open_btf", 1, 1), (8, "files_open_btf", 1, 1)],
        );
        let response = json!({"programs": [
            {"id": 7, "capability": "files"},
            {"id": 8, "capability": "security-opens"},
        ]});
        after.owners = program_owners(&response);
        let mut rows = Interval::between(&before, &after, false).rows;
        rows.sort_by_key(|r| r.id);
        assert_eq!(rows[0].capability, Some("files"));
        assert_eq!(rows[1].capability, Some("security-opens"));
    }

    #[test]
    fn without_an_agent_capabilities_are_an_empty_list() {
        let t0 = Instant::now();
        let s = sample(t0, &[]);
        let json = Interval::between(&s, &s, true).to_json();
        assert_eq!(json["capabilities"], json!([]));
        assert_eq!(json["agent"], false);
    }

    #[test]
    fn rates_come_from_deltas_over_the_interval() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(2);
        let before = sample(
            t0,
            &[(7, "files_open_btf", 100, 10_000), (8, "other", 0, 0)],
        );
        let after = sample(
            t1,
            &[
                (7, "files_open_btf", 300, 210_000),
                (8, "other", 10, 1_000),
                (9, "files_open_raw", 50, 50),
            ],
        );
        let all = Interval::between(&before, &after, true);
        assert_eq!(all.rows.len(), 2, "program 9 has no baseline yet");
        let files = &all.rows[0];
        assert_eq!(files.id, 7);
        assert_eq!(files.runs_per_sec, 100.0);
        assert_eq!(files.avg_ns, 1_000);
        assert!((files.cpu_percent - 0.01).abs() < 1e-9);
        let ours = Interval::between(&before, &after, false);
        assert_eq!(ours.rows.len(), 1);
        assert_eq!(ours.rows[0].capability, Some("files"));
    }

    #[test]
    fn sorting_orders_each_column() {
        let t0 = Instant::now();
        let before = sample(t0, &[(1, "b", 0, 0), (2, "a", 0, 0)]);
        let after = sample(
            t0 + std::time::Duration::from_secs(1),
            &[(1, "b", 10, 100), (2, "a", 1, 500)],
        );
        let mut rows = Interval::between(&before, &after, true).rows;
        Sort::Runs.apply(&mut rows);
        assert_eq!(rows[0].id, 1);
        Sort::Avg.apply(&mut rows);
        assert_eq!(rows[0].id, 2);
        Sort::Name.apply(&mut rows);
        assert_eq!(rows[0].name, "a");
        Sort::Cpu.apply(&mut rows);
        assert_eq!(rows[0].id, 2);
    }
}
