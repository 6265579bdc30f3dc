//! The flows module: `osprey flows`' XDP + tcx accounting on the configured interfaces
//! only. Once a second it exports ended and idle flows (as event-log records, if asked)
//! and turns the kernel's per-flow counts into packets and bytes by interface and
//! direction for the metrics. Counts of a flow the LRU evicts between two scans are lost
//! from those metrics (and counted in osprey_flows_evicted_total).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Value};

use super::metrics::{InterfaceLabels, ModuleMetrics};
use super::modules::{degraded_notes, LoadedModule, ModuleEnv, ModuleState};
use super::AgentError;
use crate::abi::{flow_direction, FlowKey};
use crate::net::flow_session::{self, FlowOptions, FlowSession};
use crate::net::flows::{FlowTable, FlowTotals};
use crate::pipeline::sink::Clock;

pub fn load(env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
    let cfg = &env.config.modules.flows;
    if cfg.interfaces.is_empty() {
        return Err(AgentError::Invalid(
            "flows: no interfaces configured ([modules.flows] interfaces)".into(),
        ));
    }
    let names = flow_session::resolve_interfaces(&cfg.interfaces).map_err(|name| {
        AgentError::Invalid(format!(
            "modules.flows.interfaces: no interface `{name}` in the agent's network namespace"
        ))
    })?;
    let options = FlowOptions {
        interfaces: cfg.interfaces.clone(),
        xdp_mode: None,
        max_flows: cfg.max_flows,
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
    };
    let FlowSession {
        capability,
        table,
        names,
        ..
    } = FlowSession::load(&options, names).map_err(|source| AgentError::Module {
        module: "flows",
        source,
    })?;
    // Every interface and direction is exposed at zero from the start.
    for interface in names.values() {
        for direction in ["ingress", "egress"] {
            let labels = InterfaceLabels {
                interface: interface.clone(),
                direction: direction.into(),
            };
            let _ = env.metrics.flow_packets.get_or_create(&labels);
            let _ = env.metrics.flow_bytes.get_or_create(&labels);
        }
    }
    Ok(LoadedModule {
        notes: degraded_notes(&capability),
        capabilities: vec![capability],
        state: Some(Box::new(Flows {
            table,
            names,
            idle_ns: cfg.idle_timeout_secs * 1_000_000_000,
            log_records: cfg.log_records,
            clock: Clock::now(),
            counted: HashMap::new(),
            metrics: env.metrics.clone(),
            evicted_before: 0,
            totals: FlowTotals::default(),
            containers: Default::default(),
        })),
    })
}

struct Flows {
    /// The containers of egress flows' sockets, for the records.
    containers: crate::container::Containers,
    table: FlowTable,
    names: BTreeMap<u32, String>,
    idle_ns: u64,
    log_records: bool,
    clock: Clock,
    /// Packets and bytes of each live flow already added to the metrics.
    counted: HashMap<FlowKey, (u64, u64)>,
    metrics: ModuleMetrics,
    evicted_before: u64,
    totals: FlowTotals,
}

impl Flows {
    fn labels(&self, key: &FlowKey) -> InterfaceLabels {
        InterfaceLabels {
            interface: self.names.get(&key.ifindex).cloned().unwrap_or_default(),
            direction: if key.direction == flow_direction::INGRESS {
                "ingress".into()
            } else {
                "egress".into()
            },
        }
    }

    /// Adds what a flow counted since it was last seen.
    fn count(&mut self, key: &FlowKey, packets: u64, bytes: u64, ended: bool) {
        let (p0, b0) = if ended {
            self.counted.remove(key)
        } else {
            self.counted.insert(*key, (packets, bytes))
        }
        .unwrap_or((0, 0));
        let labels = self.labels(key);
        let add = |family: &Family<InterfaceLabels, Counter>, n: u64| {
            family.get_or_create(&labels).inc_by(n);
        };
        add(&self.metrics.flow_packets, packets.saturating_sub(p0));
        add(&self.metrics.flow_bytes, bytes.saturating_sub(b0));
    }

    fn export(&mut self, all: bool, record: &mut dyn FnMut(Value)) {
        let now = crate::kernel::boot_time_ns();
        let done = self.table.export_due(self.idle_ns, all);
        for r in &done {
            self.count(&r.key, r.stats.packets, r.stats.bytes, true);
            if self.log_records {
                let clock = self.clock;
                let wall = move |ns: u64| {
                    clock
                        .wall(ns)
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                };
                let ifname = self.names.get(&r.key.ifindex).map_or("?", String::as_str);
                let mut line = r.to_json(&wall, ifname);
                r.add_container(&mut line, &mut self.containers);
                line["time"] = json!(wall(now));
                record(line);
            }
        }
        self.metrics.flows_exported.inc_by(done.len() as u64);
        for (key, stats) in self.table.live() {
            self.count(&key, stats.packets, stats.bytes, false);
        }
        self.totals = self.table.totals();
        // Live flows the LRU dropped are gone from `counted` only when seen again: forget
        // keys no longer in the table once the table is known to have evicted.
        if self.totals.evicted > self.evicted_before {
            self.metrics
                .flows_evicted
                .inc_by(self.totals.evicted - self.evicted_before);
            self.evicted_before = self.totals.evicted;
            let live: std::collections::HashSet<FlowKey> =
                self.table.live().into_iter().map(|(k, _)| k).collect();
            self.counted.retain(|k, _| live.contains(k));
        }
    }
}

impl ModuleState for Flows {
    fn tick(&mut self, record: &mut dyn FnMut(Value)) {
        self.export(false, record);
    }

    fn describe(&self) -> Value {
        json!({"interfaces": self.names.values().collect::<Vec<_>>(), "flows": self.totals})
    }

    fn unload(&mut self, record: &mut dyn FnMut(Value)) {
        // Every flow still in the table is exported: none disappears uncounted.
        self.export(true, record);
    }
}
