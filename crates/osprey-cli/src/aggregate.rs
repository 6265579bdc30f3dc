//! The run of a capability that aggregates in the kernel (`profile`): the shared pipeline
//! over its ring until `--duration` or a signal, events handed to a closure, and a tick
//! after every drain for reading the kernel's maps.

use std::time::Duration;

use osprey::kernel::loader::LoadedCapability;
use osprey::pipeline::cache::ProcessCache;
use osprey::pipeline::event::Event;
use osprey::pipeline::run::{run_blocking, AfterDrain, Pipeline, RunOptions, Summary};
use osprey::pipeline::sink::EventFn;

use crate::Failure;

const PROFILE_DRAIN_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) fn run(
    cap: LoadedCapability,
    duration_secs: Option<f64>,
    run_time: &crate::RunTimeStatsArg,
    on_event: impl FnMut(&Event),
    tick: impl FnMut(&[LoadedCapability]),
) -> Result<Summary, Failure> {
    let _run_time_stats = run_time.enable(false);
    let mut sink = EventFn(on_event);
    let pipeline = Pipeline::new(
        vec![cap],
        ProcessCache::new(1024, 5_000_000_000),
        &mut sink,
        Box::new(|_, _| true),
    );
    let run_options = RunOptions {
        duration: duration_secs.map(Duration::from_secs_f64),
        // The tick reads the kernel's maps (and new processes' mappings) at this pace. Samples
        // are aggregated, not shown one by one: draining ten times a second instead of a
        // hundred keeps the profiler's own wake-ups (most of its CPU) low, and the ring holds
        // far more than 100 ms of samples.
        drain_interval: PROFILE_DRAIN_INTERVAL,
        idle_backstop: None,
        ..Default::default()
    };
    Ok(run_blocking(pipeline, &run_options, &mut AfterDrain(tick))?)
}
