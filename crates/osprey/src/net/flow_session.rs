//! Flow accounting on a set of interfaces, as both `osprey flows` and the agent's flows
//! module run it: the interfaces resolved before anything loads, the capability loaded
//! (its qdiscs go with it), the flow table scanned for ended and idle flows, and at the
//! end every flow left exported so none disappears uncounted.

use std::collections::BTreeMap;
use std::io;
use std::ops::ControlFlow;
use std::time::Duration;

use super::flows::{self, FlowRecord, FlowTable, FlowTotals};
use crate::kernel::loader::{LoadError, LoadOptions, LoadedCapability, XdpAttachMode};
use crate::kernel::stats::Snapshot;
use crate::pipeline::cache::ProcessCache;
use crate::pipeline::event::Event;
use crate::pipeline::run::{run_blocking, Pipeline, RunHooks, RunOptions, StopReason};
use crate::pipeline::sink::EventFn;

/// Interface names by index; the error names the first that does not exist here.
pub fn resolve_interfaces(names: &[String]) -> Result<BTreeMap<u32, String>, String> {
    let mut out = BTreeMap::new();
    for name in names {
        let index = std::ffi::CString::new(name.as_str())
            .ok()
            // SAFETY: a valid NUL-terminated name.
            .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) })
            .unwrap_or(0);
        if index == 0 {
            return Err(name.clone());
        }
        out.insert(index, name.clone());
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct FlowOptions {
    pub interfaces: Vec<String>,
    /// None: native where the driver supports it, else generic.
    pub xdp_mode: Option<XdpAttachMode>,
    /// Size of the kernel's LRU flow table.
    pub max_flows: u32,
    /// A flow is exported after this long without a packet.
    pub idle_timeout: Duration,
}

/// The loaded capability and its flow table.
pub struct FlowSession {
    pub capability: LoadedCapability,
    pub table: FlowTable,
    /// Interface names by index, for records.
    pub names: BTreeMap<u32, String>,
    idle_ns: u64,
}

impl FlowSession {
    /// `names` from `resolve_interfaces`.
    pub fn load(options: &FlowOptions, names: BTreeMap<u32, String>) -> Result<Self, LoadError> {
        let load_options = LoadOptions {
            interfaces: options.interfaces.clone(),
            xdp_mode: options.xdp_mode,
            map_max_entries: vec![("flows", options.max_flows)],
            denied_programs: LoadOptions::denied_from_env(),
            ..Default::default()
        };
        let mut capability = LoadedCapability::load(flows::SPEC, &load_options)?;
        let table = FlowTable::take_from(&mut capability).map_err(|reason| LoadError::Map {
            capability: flows::SPEC.name,
            reason,
        })?;
        Ok(Self {
            capability,
            table,
            names,
            idle_ns: options.idle_timeout.as_nanos() as u64,
        })
    }

    /// Removes and returns flows that ended or went idle; with `all`, every flow.
    pub fn export(&mut self, all: bool) -> Vec<FlowRecord> {
        self.table.export_due(self.idle_ns, all)
    }

    pub fn interface_name(&self, ifindex: u32) -> &str {
        self.names.get(&ifindex).map_or("?", String::as_str)
    }
}

/// How a run of `run` ended.
pub struct FlowRun {
    pub reason: StopReason,
    pub totals: FlowTotals,
    pub stats: Snapshot,
}

/// What `run` hands its caller after each scan.
pub struct Scan<'s> {
    pub exported: &'s [FlowRecord],
    pub table: &'s FlowTable,
    /// The last scan, after the stop: every flow left was exported.
    pub last: bool,
}

/// Scans the table every `options.tick_every` until a signal or `options.duration`,
/// handing each scan to `on_scan` (an error there stops the run as a closed output),
/// then exports every flow left and detaches (removing any qdisc it added).
pub fn run(
    mut session: FlowSession,
    options: &RunOptions,
    on_scan: impl FnMut(Scan<'_>) -> io::Result<()>,
) -> io::Result<FlowRun> {
    let mut sink = EventFn(|_: &Event| {});
    let mut hooks = ScanHooks {
        table: &mut session.table,
        idle_ns: session.idle_ns,
        on_scan,
    };
    let pipeline = Pipeline::new(
        vec![session.capability],
        ProcessCache::new(16, 0),
        &mut sink,
        Box::new(|_, _| true),
    );
    let summary = run_blocking(pipeline, options, &mut hooks)?;
    let rest = hooks.table.export_due(hooks.idle_ns, true);
    let _ = (hooks.on_scan)(Scan {
        exported: &rest,
        table: hooks.table,
        last: true,
    });
    Ok(FlowRun {
        reason: summary.reason,
        totals: hooks.table.totals(),
        stats: summary.stats,
    })
}

struct ScanHooks<'t, F> {
    table: &'t mut FlowTable,
    idle_ns: u64,
    on_scan: F,
}

impl<F: FnMut(Scan<'_>) -> io::Result<()>> RunHooks for ScanHooks<'_, F> {
    type Request = ();

    fn tick(&mut self, _: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        let done = self.table.export_due(self.idle_ns, false);
        let scan = Scan {
            exported: &done,
            table: self.table,
            last: false,
        };
        match (self.on_scan)(scan) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(StopReason::OutputClosed),
        }
    }
}
