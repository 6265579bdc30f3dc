//! Prometheus metrics of the agent: per-program runs and run time, events by outcome, ring
//! fill, process cache, health, module state, and the agent's own RSS and CPU.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::kernel::stats::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub capability: String,
    pub role: String,
    pub program: String,
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub capability: String,
    pub kind: String,
    /// emitted, dropped (ring full), throttled (rate limit), filtered (target filter).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityLabels {
    pub capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub capability: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub capability: String,
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    /// The map's name as the kernel has it (several objects have maps of the same name).
    pub map: String,
    pub id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// active/passive for connections, sent/received for bytes.
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub rule: String,
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
    /// ingress or egress.
    pub direction: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// Metrics the modules keep themselves (security, flows, profile): handles they clone.
#[derive(Clone, Default)]
pub struct ModuleMetrics {
    pub alerts: Family<AlertLabels, Counter>,
    pub container_alerts: crate::container::labels::ContainerAlerts,
    pub baseline_executables: Gauge,
    pub flow_packets: Family<InterfaceLabels, Counter>,
    pub flow_bytes: Family<InterfaceLabels, Counter>,
    pub flows_exported: Counter,
    pub flows_evicted: Counter,
    pub profiles_written: Counter,
    pub profile_samples: Counter,
}

impl ModuleMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "alerts",
            "Alerts raised, by rule and severity",
            self.alerts.clone(),
        );
        r.register(
            "container_alerts",
            "Alerts raised, by rule, container name and Kubernetes namespace (64 container and 32 namespace values at most, the rest as `other`)",
            self.container_alerts.family.clone(),
        );
        r.register(
            "baseline_executables",
            "Executables whose syscall baselines are loaded in the kernel",
            self.baseline_executables.clone(),
        );
        r.register(
            "flow_packets",
            "Packets counted by the flows module, by interface and direction",
            self.flow_packets.clone(),
        );
        r.register_with_unit(
            "flow",
            "Layer-2 bytes counted by the flows module, by interface and direction",
            Unit::Bytes,
            self.flow_bytes.clone(),
        );
        r.register(
            "flows_exported",
            "Flow records exported (ended or idle)",
            self.flows_exported.clone(),
        );
        r.register(
            "flows_evicted",
            "Flows evicted from the full LRU flow table before export",
            self.flows_evicted.clone(),
        );
        r.register(
            "profiles_written",
            "Continuous-profiling pprof files written",
            self.profiles_written.clone(),
        );
        r.register(
            "profile_samples",
            "CPU samples in the pprof files written",
            self.profile_samples.clone(),
        );
    }
}

/// Metrics measured from events as they pass (TCP connections at close).
#[derive(Clone, Default)]
pub struct EventMetrics {
    pub tcp_connections: Family<DirectionLabels, Counter>,
    pub tcp_bytes: Family<DirectionLabels, Counter>,
    pub tcp_retransmits: Counter,
}

impl EventMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "tcp_connections",
            "TCP connections closed, by who opened them",
            self.tcp_connections.clone(),
        );
        r.register_with_unit(
            "tcp",
            "TCP payload bytes of closed connections",
            Unit::Bytes,
            self.tcp_bytes.clone(),
        );
        r.register(
            "tcp_retransmits",
            "TCP segments retransmitted (closed connections)",
            self.tcp_retransmits.clone(),
        );
    }

    pub fn observe(&self, event: &crate::pipeline::event::Event) {
        if let crate::pipeline::event::Payload::TcpClose(c) = &event.payload {
            let dir = |d: &str| DirectionLabels {
                direction: d.into(),
            };
            let side = if c.endpoints.active {
                "active"
            } else {
                "passive"
            };
            self.tcp_connections.get_or_create(&dir(side)).inc();
            self.tcp_bytes
                .get_or_create(&dir("sent"))
                .inc_by(c.bytes_sent);
            self.tcp_bytes
                .get_or_create(&dir("received"))
                .inc_by(c.bytes_received);
            self.tcp_retransmits.inc_by(u64::from(c.retransmits));
        }
    }
}
type FloatGauge = Gauge<f64, AtomicU64>;

/// Handles to every metric; the registry is shared with the HTTP server for encoding.
#[derive(Default)]
pub struct Metrics {
    pub program_runs: Family<ProgramLabels, Counter>,
    pub program_run_time: Family<ProgramLabels, FloatCounter>,
    pub events: Family<EventLabels, Counter>,
    pub ring_fill: Family<CapabilityLabels, FloatGauge>,
    pub cache_entries: Gauge,
    pub cache_evictions: Counter,
    pub events_written: Counter,
    pub health_warnings: Family<HealthLabels, Counter>,
    pub probe_healthy: Family<ProbeLabels, Gauge>,
    pub module_enabled: Family<ModuleLabels, Gauge>,
    pub agent_rss: Gauge,
    pub agent_peak_rss: Gauge,
    pub agent_cpu: FloatCounter,
    pub map_memory: Gauge,
    pub map_memory_by_map: Family<MapLabels, Gauge>,
    /// Map names already looked up, by id.
    map_names: HashMap<u32, String>,
    events_measured: EventMetrics,
    pub modules: ModuleMetrics,
    /// Last absolute value seen per counter, to turn kernel totals into increments
    /// (a module reloaded starts its kernel counters from zero again).
    last: HashMap<String, u64>,
    last_cpu_ticks: u64,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("osprey");
        r.register(
            "program_runs",
            "Runs of each BPF program (BPF run-time stats)",
            m.program_runs.clone(),
        );
        r.register_with_unit(
            "program_run_time",
            "Time spent in each BPF program",
            Unit::Seconds,
            m.program_run_time.clone(),
        );
        r.register(
            "events",
            "Events by capability, kind and outcome",
            m.events.clone(),
        );
        r.register(
            "ring_buffer_fill_ratio",
            "Largest fraction of the ring buffer found queued at one drain since the last scrape",
            m.ring_fill.clone(),
        );
        r.register(
            "process_cache_entries",
            "Processes in the cache",
            m.cache_entries.clone(),
        );
        r.register(
            "process_cache_evictions",
            "Processes evicted from the cache",
            m.cache_evictions.clone(),
        );
        r.register(
            "events_written",
            "Events written to the event log",
            m.events_written.clone(),
        );
        r.register(
            "health_warnings",
            "Health warnings raised",
            m.health_warnings.clone(),
        );
        r.register(
            "probe_healthy",
            "1 when the probe is within its health limits",
            m.probe_healthy.clone(),
        );
        r.register(
            "module_enabled",
            "1 when the module is loaded and attached",
            m.module_enabled.clone(),
        );
        r.register_with_unit(
            "agent_resident_memory",
            "Resident memory of the agent",
            Unit::Bytes,
            m.agent_rss.clone(),
        );
        r.register_with_unit(
            "agent_peak_resident_memory",
            "Largest resident memory of the agent since it started (VmHWM), start-up included",
            Unit::Bytes,
            m.agent_peak_rss.clone(),
        );
        r.register_with_unit(
            "bpf_map_memory",
            "Kernel memory charged for the agent's BPF maps (memlock), all maps",
            Unit::Bytes,
            m.map_memory.clone(),
        );
        r.register_with_unit(
            "bpf_map_memory_by_map",
            "Kernel memory charged for each of the agent's BPF maps (memlock)",
            Unit::Bytes,
            m.map_memory_by_map.clone(),
        );
        r.register_with_unit(
            "agent_cpu",
            "CPU time used by the agent",
            Unit::Seconds,
            m.agent_cpu.clone(),
        );
        m.events_measured.register(r);
        m.modules.register(r);
        m
    }

    /// Handles for counting from events (shared with the pipeline's filter).
    pub fn event_metrics(&self) -> EventMetrics {
        self.events_measured.clone()
    }

    fn delta(&mut self, key: String, now: u64) -> u64 {
        let last = self.last.insert(key, now).unwrap_or(0);
        if now >= last {
            now - last
        } else {
            now
        }
    }

    /// Folds a statistics snapshot into the counters.
    pub fn observe(&mut self, snap: &Snapshot) {
        self.expose_health_at_zero(snap);
        for p in &snap.programs {
            let labels = ProgramLabels {
                capability: p.capability.into(),
                role: p.role.into(),
                program: p.program.into(),
                hook: p.hook.clone(),
            };
            let runs = self.delta(format!("runs/{}/{}", p.capability, p.program), p.run_count);
            self.program_runs.get_or_create(&labels).inc_by(runs);
            let ns = self.delta(format!("ns/{}/{}", p.capability, p.program), p.run_time_ns);
            self.program_run_time
                .get_or_create(&labels)
                .inc_by(ns as f64 / 1e9);
        }
        for k in &snap.kinds {
            for (outcome, value) in [
                ("emitted", k.emitted),
                ("dropped", k.dropped),
                ("throttled", k.throttled),
                ("filtered", k.filtered),
            ] {
                let d = self.delta(format!("ev/{}/{}/{outcome}", k.capability, k.kind), value);
                self.events
                    .get_or_create(&EventLabels {
                        capability: k.capability.into(),
                        kind: k.kind.into(),
                        outcome: outcome.into(),
                    })
                    .inc_by(d);
            }
        }
    }

    /// Every health warning the snapshot's probes could raise, at zero until raised, so
    /// that rates and alerts on the family work from the start.
    fn expose_health_at_zero(&self, snap: &Snapshot) {
        let zero = |capability: &str, kind: &str, reason: &str| {
            let _ = self.health_warnings.get_or_create(&HealthLabels {
                capability: capability.into(),
                kind: kind.into(),
                reason: reason.into(),
            });
        };
        for k in &snap.kinds {
            zero(k.capability, k.kind, "drops");
        }
        for p in &snap.programs {
            if super::health::ALWAYS_ACTIVE.contains(&(p.capability, p.role)) {
                zero(p.capability, p.role, "silent");
            }
        }
    }

    /// Forgets the kernel totals of a capability (its object was unloaded).
    pub fn forget(&mut self, capability: &str) {
        self.last
            .retain(|k, _| !k.contains(&format!("/{capability}/")));
    }

    /// Updates the agent's own RSS and CPU from /proc/self/stat.
    pub fn observe_self(&mut self) {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return;
        };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            return;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        // After "pid (comm) ": state is field 0; utime 11, stime 12, rss 21 (pages).
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // SAFETY: sysconf has no preconditions.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = num(11) + num(12);
        let d = ticks.saturating_sub(self.last_cpu_ticks);
        self.last_cpu_ticks = ticks;
        self.agent_cpu.inc_by(d as f64 / tick.max(1) as f64);
        self.agent_rss.set(num(21) as i64 * page);
        if let Some((_, peak)) = crate::kernel::map_memory::own_rss_bytes() {
            self.agent_peak_rss.set(peak as i64);
        }
        self.observe_maps();
    }

    /// The BPF maps' kernel memory: the total and each map (maps gone leave the family).
    fn observe_maps(&mut self) {
        let maps = crate::kernel::map_memory::own_maps(&mut self.map_names);
        self.map_memory_by_map.clear();
        for m in &maps {
            let labels = MapLabels {
                map: m.name.clone(),
                id: m.id.to_string(),
            };
            self.map_memory_by_map
                .get_or_create(&labels)
                .set(m.bytes as i64);
        }
        self.map_memory
            .set(maps.iter().map(|m| m.bytes).sum::<u64>() as i64);
    }
}

/// Converts OpenMetrics text to the Prometheus text format 0.0.4: counters are named with
/// their `_total` suffix in HELP/TYPE, and UNIT/EOF lines go.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_warnings_are_exposed_at_zero_before_the_first() {
        let mut registry = Registry::default();
        let mut m = Metrics::new(&mut registry);
        let snap = Snapshot {
            kinds: vec![crate::kernel::stats::KindStats {
                capability: "files",
                kind: "file_open",
                ..Default::default()
            }],
            ..Default::default()
        };
        m.observe(&snap);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "osprey_health_warnings_total{capability=\"files\",kind=\"file_open\",reason=\"drops\"} 0"
            ),
            "{text}"
        );
    }

    #[test]
    fn text_format_names_counters_with_total() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total{k=\"x\"} 3\n# HELP g Gauge.\n# TYPE g gauge\n# UNIT g bytes\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_events_total Events.\n# TYPE a_events_total counter\na_events_total{k=\"x\"} 3\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
