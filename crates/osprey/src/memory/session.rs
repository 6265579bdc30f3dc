//! One run of `osprey memory`: the loaded capability's fault counts read at the end, the
//! mappings it reports described as they arrive, progress once a second, and the report.

use std::cell::RefCell;
use std::io;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::collect::ReportOptions;
use super::{Collector, Faults, MemoryOptions, MemoryReport};
use crate::container::filter::ContainerFilter;
use crate::kernel::loader::{LoadError, LoadedCapability};
use crate::pipeline::cache::ProcessCache;
use crate::pipeline::event::{Event, Payload};
use crate::pipeline::run::{run_blocking, Pipeline, RunHooks, RunOptions, StopReason, Summary};
use crate::pipeline::sink::EventFn;

/// Where the fault counts come from, for the report.
#[derive(Debug, Clone)]
pub struct Sources {
    pub minor: Option<String>,
    pub major: Option<String>,
    /// Minor faults are all faults minus major ones (no minor-fault event was usable).
    pub minor_derived: bool,
}

impl Sources {
    fn of(cap: &LoadedCapability) -> Self {
        let source = |role: &str| {
            cap.outcomes
                .iter()
                .find(|o| o.role == role)
                .and_then(|o| o.chosen)
                .map(|h| h.attach.label())
        };
        let minor = source("minor-faults");
        let minor_derived = minor
            .as_deref()
            .is_some_and(|s| !s.starts_with("perf_event/"));
        Sources {
            minor,
            major: source("major-faults"),
            minor_derived,
        }
    }
}

pub struct MemorySession {
    pub capability: LoadedCapability,
    collector: Collector,
    pub sources: Sources,
    containers: ContainerFilter,
}

/// How a run ended: the report and the pipeline's summary (losses, programs).
pub struct MemoryRun {
    pub report: MemoryReport,
    pub summary: Summary,
}

/// Progress once a second: time since the start and faults so far.
pub type Progress<'p> = &'p mut dyn FnMut(Duration, Faults);

impl MemorySession {
    /// The run of a capability loaded with `options` (their container filter is applied
    /// to the report).
    pub fn new(
        mut capability: LoadedCapability,
        options: &MemoryOptions,
    ) -> Result<Self, LoadError> {
        let collector = Collector::new(&mut capability)?;
        Ok(Self {
            sources: Sources::of(&capability),
            capability,
            collector,
            containers: options.containers.clone(),
        })
    }

    /// Runs until `duration` or a signal; `top` processes (and mappings each) in the report.
    pub fn run(
        self,
        duration: Option<Duration>,
        top: usize,
        progress: Progress<'_>,
    ) -> io::Result<MemoryRun> {
        let started = Instant::now();
        let collector = Rc::new(RefCell::new(self.collector));
        let mappings = collector.clone();
        let mut sink = EventFn(move |event: &Event| {
            if let Payload::FaultMapping(mapping) = &event.payload {
                mappings.borrow_mut().on_mapping(&event.header, mapping);
            }
        });
        let pipeline = Pipeline::new(
            vec![self.capability],
            ProcessCache::new(1024, 5_000_000_000),
            &mut sink,
            Box::new(|_, _| true),
        );
        let options = RunOptions {
            duration,
            tick_every: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let mut hooks = ProgressHooks {
            collector: &collector,
            started,
            progress,
        };
        let summary = run_blocking(pipeline, &options, &mut hooks)?;
        drop(sink);
        let collector = Rc::try_unwrap(collector)
            .map_err(|_| io::Error::other("memory collector still shared"))?
            .into_inner();
        let report = collector.finish(&ReportOptions {
            duration_secs: started.elapsed().as_secs_f64(),
            top: Some(top),
            minor_source: self.sources.minor,
            major_source: self.sources.major,
            minor_derived: self.sources.minor_derived,
            ring_dropped: summary.stats.total_dropped(),
            containers: self.containers,
        });
        Ok(MemoryRun { report, summary })
    }
}

struct ProgressHooks<'c, 'p> {
    collector: &'c RefCell<Collector>,
    started: Instant,
    progress: Progress<'p>,
}

impl RunHooks for ProgressHooks<'_, '_> {
    type Request = ();

    fn tick(&mut self, _: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        let total = self.collector.borrow().total();
        (self.progress)(self.started.elapsed(), total);
        ControlFlow::Continue(())
    }
}
