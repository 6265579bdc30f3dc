//! `osprey agent`: the always-on daemon. Runs modules (capabilities) through the shared
//! pipeline into a rotating event log, serves Prometheus metrics, watches the health of its
//! own probes, and takes runtime control (enable/disable modules, reload) over a unix socket
//! and SIGHUP without restarting or losing state.

pub mod config;
pub mod control;
pub mod eventlog;
pub mod flows;
pub mod health;
pub mod instance;
pub mod metrics;
pub mod modules;
mod observe;
pub mod profiler;
mod running;
pub mod security;
mod server;
pub mod sink;
pub mod syslog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::mpsc;

use crate::kernel::stats::RunTimeStats;
use crate::pipeline::cache::ProcessCache;
use crate::pipeline::run::{Pipeline, RunOptions, Signals, StopReason, IDLE_BACKSTOP};
use crate::pipeline::sink::Clock;
use config::AgentConfig;
use control::Envelope;
use eventlog::LogTarget;
use health::Health;
use metrics::Metrics;
pub use modules::MODULES;
use running::Running;
use sink::AgentSink;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{module}: {source}")]
    Module {
        module: &'static str,
        source: crate::kernel::loader::LoadError,
    },
    /// A module's settings or files (rules, baselines, interfaces) are unusable.
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

pub struct Agent {
    pub config: AgentConfig,
    /// Re-read on SIGHUP / `osprey ctl reload`; none: the embedded defaults.
    pub config_path: Option<PathBuf>,
    /// Applied on top of every (re)loaded file: the command line wins.
    pub overrides: Box<dyn Fn(&mut AgentConfig)>,
}

impl Agent {
    /// `run` on a runtime of its own, until SIGTERM or SIGINT.
    pub fn run_blocking(self) -> Result<(), AgentError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("runtime"))?
            .block_on(self.run())
    }

    pub async fn run(self) -> Result<(), AgentError> {
        let started = Instant::now();
        share_one_malloc_arena();
        // Before anything is loaded: a SIGTERM during start-up (or right after the "started"
        // line) is then a clean stop with the log flushed, not the default death.
        let options = run_options();
        let mut signals = Signals::install(options.catch_hangup).map_err(io_err("signals"))?;
        let config = self.config.clone();
        let _stats = config.metrics.run_time_stats.then(RunTimeStats::enable);
        // Refuses (naming its pid) while another agent owns the state dir or the socket.
        let _instance = instance::Instance::claim(&config.state_dir, &config.control_socket)?;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let mut sink = open_sink(&config, &metrics)?;
        let mut running = Running {
            health: Health::new(
                Duration::from_secs(config.health.window_secs),
                config.health.max_drop_ratio,
            ),
            metrics,
            config: config.clone(),
            enabled: Vec::new(),
            detection: sink.detection.clone(),
            logged: sink.logged.clone(),
            config_path: self.config_path,
            overrides: self.overrides,
        };
        let mut pipeline = Pipeline::new(
            Vec::new(),
            ProcessCache::new(65536, 5_000_000_000),
            &mut sink,
            Box::new(|_, _| true),
        );
        let wanted: Vec<_> = MODULES
            .iter()
            .copied()
            .filter(|m| modules::wanted(*m, &config))
            .collect();
        running.load_modules(&mut pipeline, &wanted)?;
        let attached_ms = started.elapsed().as_millis();
        // Everything is loaded: the parsed kernel BTF is MiBs the agent need not keep.
        crate::kernel::release_kernel_btf();
        pipeline.cache.seed_from_proc();

        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Envelope>(16);
        let _control = control::serve(&config.control_socket, ctl_tx).map_err(io_err(format!(
            "control socket {}",
            config.control_socket.display()
        )))?;
        if config.metrics.enabled {
            server::serve_metrics(config.metrics.listen, Arc::new(registry))
                .await
                .map_err(io_err(format!("metrics on {}", config.metrics.listen)))?;
        }
        let modules: Vec<_> = running.enabled.iter().map(|e| e.module.name()).collect();
        running.record(&mut pipeline, json!({"kind": "agent", "level": "info", "message": "started",
            "modules": modules, "attached_ms": attached_ms,
            "metrics": config.metrics.enabled.then(|| format!("http://{}/metrics", config.metrics.listen))}));

        let reason = pipeline
            .run_loop(&options, &mut signals, &mut running, Some(&mut ctl_rx))
            .await
            .map_err(io_err("event log"))?;
        stop(&mut running, &mut pipeline, reason, &options)?;
        let _ = std::fs::remove_file(&config.control_socket);
        Ok(())
    }
}

/// One malloc arena for every thread: the loader threads allocate much while loading (the
/// parsed kernel BTF among it), and in arenas of their own that memory stayed resident after
/// being freed (the agent sat at 40-60 MiB instead of 22). The agent's threads rarely allocate at the same time, so
/// sharing costs nothing measurable. Large blocks (the kernel BTF's tables) always get
/// mappings of their own: growing one then moves no bytes and keeps no second copy, and
/// freeing it returns it at once (glibc would otherwise raise that threshold after the
/// first such free and keep later ones on its heap).
fn share_one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any extra thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn run_options() -> RunOptions {
    RunOptions {
        // While events flow, a drain every 25 ms keeps alert latency well under 50 ms; an
        // idle agent sleeps until the kernel wakes it with the next record (or the tick).
        drain_interval: Duration::from_millis(25),
        idle_backstop: Some(IDLE_BACKSTOP),
        final_drain_budget: Duration::from_millis(400),
        tick_every: Some(Duration::from_secs(1)),
        flush_each_batch: false,
        catch_hangup: true,
        // Metrics, control requests and the health tick keep running through a flood.
        yield_between_passes: true,
        ..Default::default()
    }
}

/// The event log (and syslog when asked), with the metrics events feed on their way.
fn open_sink(config: &AgentConfig, metrics: &Metrics) -> Result<AgentSink, AgentError> {
    let log = LogTarget::open(&config.log.path, config.log.max_bytes, config.log.keep)
        .map_err(io_err(format!("event log {}", config.log.path)))?;
    let mut sink = AgentSink::new(log, Clock::now(), metrics.event_metrics());
    if config.log.syslog {
        sink.syslog = Some(
            syslog::Syslog::new(config.log.syslog_socket.clone())
                .map_err(io_err("syslog socket"))?,
        );
    }
    Ok(sink)
}

/// Drains what is queued (bounded), lets modules finish (the last flows), detaches them
/// by dropping everything (with any qdisc they added), and flushes.
fn stop(
    running: &mut Running,
    pipeline: &mut Pipeline<'_>,
    reason: StopReason,
    options: &RunOptions,
) -> Result<(), AgentError> {
    pipeline.final_drain(reason, options.final_drain_budget, None);
    running.unload_all(pipeline);
    let events_written = running.logged.get();
    running.record(
        pipeline,
        json!({"kind": "agent", "level": "info", "message": "stopped", "events_written": events_written}),
    );
    pipeline.sink.flush().map_err(io_err("event log"))
}
