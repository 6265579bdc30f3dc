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
pub mod profiler;
pub mod security;
mod server;
pub mod sink;
pub mod syslog;

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::kernel::object_loader::SharedLoads;
use crate::kernel::stats::{RunTimeStats, Snapshot};
use crate::pipeline::cache::ProcessCache;
use crate::pipeline::run::{DrainTimer, Pipeline, RingPoller, IDLE_BACKSTOP};
use crate::pipeline::sink::Clock;
use config::AgentConfig;
use control::{Envelope, Request};
use eventlog::LogTarget;
use health::Health;
use metrics::{CapabilityLabels, HealthLabels, Metrics, ModuleLabels, ProbeLabels};
pub use modules::MODULES;
use modules::{LoadedModule, ModuleEnv, ModuleState};
use sink::{AgentSink, DetectionSlot};

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

struct Running<'a> {
    pipeline: Pipeline<'a>,
    poller: RingPoller,
    metrics: Metrics,
    health: Health,
    config: AgentConfig,
    /// Modules currently loaded, with what they keep.
    enabled: Vec<(&'static str, Option<Box<dyn ModuleState>>)>,
    detection: DetectionSlot,
    logged: Rc<Cell<u64>>,
}

impl Running<'_> {
    fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|(m, _)| *m == name)
    }

    fn load_module(&mut self, name: &'static str) -> Result<(), AgentError> {
        let env = ModuleEnv {
            config: &self.config,
            detection: &self.detection,
            metrics: &self.metrics.modules,
        };
        let loaded = modules::load(name, &env)?;
        self.add_module(name, loaded)
    }

    /// Loads several modules at once: those that allow it on threads of their own, the
    /// rest here meanwhile. Stops at the first failure (what loaded stays loaded).
    fn load_modules(&mut self, names: &[&'static str]) -> Result<(), AgentError> {
        let (config, metrics) = (&self.config, &self.metrics.modules);
        let mut results = Vec::new();
        let mut first_error = None;
        // Shared aya loaders (two kernel BTF parses, not one per object) until all are in.
        let shared_loads = SharedLoads::start();
        std::thread::scope(|scope| {
            let mut threads = Vec::new();
            let mut here = Vec::new();
            for &name in names {
                match modules::detached_loader(name, config, metrics) {
                    Some(load) => threads.push((name, scope.spawn(load))),
                    None => here.push(name),
                }
            }
            let env = ModuleEnv {
                config,
                detection: &self.detection,
                metrics,
            };
            for name in here {
                results.push((name, modules::load(name, &env)));
            }
            for (name, handle) in threads {
                let loaded = handle.join().unwrap_or_else(|_| {
                    Err(AgentError::Invalid(format!("{name}: loader panicked")))
                });
                results.push((name, loaded.map(LoadedModule::from)));
            }
        });
        drop(shared_loads);
        for (name, loaded) in results {
            match loaded {
                Ok(loaded) => self.add_module(name, loaded)?,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn add_module(&mut self, name: &'static str, loaded: LoadedModule) -> Result<(), AgentError> {
        for (level, message) in loaded.notes {
            self.record(
                json!({"kind": "agent", "level": level, "module": name, "message": message}),
            );
        }
        self.pipeline.capabilities.extend(loaded.capabilities);
        // Drain order: module order (lifecycle first keeps the process cache current).
        self.pipeline.capabilities.sort_by_key(|c| {
            MODULES
                .iter()
                .position(|m| modules::capability_names(m).contains(&c.spec.name))
        });
        self.enabled.push((name, loaded.state));
        self.enabled
            .sort_by_key(|(m, _)| MODULES.iter().position(|n| n == m));
        self.metrics
            .module_enabled
            .get_or_create(&ModuleLabels {
                module: name.into(),
            })
            .set(1);
        self.rebuild_poller()
    }

    fn unload_module(&mut self, name: &'static str) -> Result<(), AgentError> {
        let names = modules::capability_names(name);
        // What is queued still reaches the log before the rings go away.
        let _ = self.pipeline.drain(None);
        if let Some(i) = self.enabled.iter().position(|(m, _)| *m == name) {
            let (_, state) = self.enabled.remove(i);
            if let Some(mut state) = state {
                let mut records = Vec::new();
                state.unload(&mut |r| records.push(r));
                for r in records {
                    self.record(r);
                }
            }
        }
        self.pipeline
            .capabilities
            .retain(|c| !names.contains(&c.spec.name));
        for n in names {
            self.metrics.forget(n);
            self.health.forget(n);
        }
        self.metrics
            .module_enabled
            .get_or_create(&ModuleLabels {
                module: name.into(),
            })
            .set(0);
        self.rebuild_poller()
    }

    fn rebuild_poller(&mut self) -> Result<(), AgentError> {
        self.poller =
            RingPoller::new(&self.pipeline.capabilities).map_err(io_err("ring poller"))?;
        Ok(())
    }

    fn record(&mut self, value: serde_json::Value) {
        let mut value = value;
        // Flow records say so on stderr only through their count in the metrics.
        if value["kind"] != "flow" {
            eprintln!("osprey agent: {value}");
        }
        if value.get("time").is_none() {
            value["time"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        }
        let _ = self.pipeline.sink.write_record(&value);
    }

    fn list(&self) -> serde_json::Value {
        let snap = Snapshot::take(&self.pipeline.capabilities);
        json!({
            "ok": true,
            "modules": MODULES.iter().map(|m| self.describe(m)).collect::<Vec<_>>(),
            "programs": snap.programs,
            "events": snap.kinds,
        })
    }

    fn describe(&self, name: &str) -> serde_json::Value {
        let state = self.enabled.iter().find(|(m, _)| *m == name);
        let mut out = json!({"module": name, "enabled": state.is_some()});
        if let Some(detail) = state.and_then(|(_, s)| s.as_ref()).map(|s| s.describe()) {
            if let (Some(out), Some(detail)) = (out.as_object_mut(), detail.as_object()) {
                out.extend(detail.clone());
            }
        }
        if state.is_none() && name == "flows" && self.config.modules.flows.interfaces.is_empty() {
            out["reason"] = json!("no interfaces configured ([modules.flows] interfaces)");
        }
        out
    }

    fn set_module(&mut self, module: &str, on: bool) -> serde_json::Value {
        let Some(&name) = MODULES.iter().find(|m| **m == module) else {
            return json!({"ok": false, "error": format!("unknown module `{module}` (modules: {})", MODULES.join(", "))});
        };
        let result = match (on, self.is_enabled(name)) {
            (true, false) => self.load_module(name),
            (false, true) => self.unload_module(name),
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                self.record(json!({"kind": "agent", "level": "info", "message": format!("module {name} {}", if on {"enabled"} else {"disabled"})}));
                json!({"ok": true, "module": name, "enabled": on})
            }
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        }
    }

    /// Re-reads the configuration; an invalid one is rejected and the old one keeps running.
    fn reload(
        &mut self,
        path: &Option<PathBuf>,
        overrides: &dyn Fn(&mut AgentConfig),
    ) -> serde_json::Value {
        let new = match path {
            Some(p) => AgentConfig::load(p).map_err(AgentError::from),
            None => Ok(AgentConfig::default()),
        }
        .and_then(|mut new| {
            overrides(&mut new);
            // Rule files and baselines are checked before anything is unloaded.
            if modules::wanted(&new, "security") {
                security::prepare(&new)?;
            }
            Ok(new)
        });
        let new = match new {
            Ok(c) => c,
            Err(e) => {
                self.record(json!({"kind": "agent", "level": "error", "message": format!("configuration rejected, keeping the running one: {e}")}));
                return json!({"ok": false, "error": e.to_string()});
            }
        };
        let old = std::mem::replace(&mut self.config, new.clone());
        for &name in MODULES {
            let changed = old.module_section(name) != new.module_section(name)
                || (name == "security" && old.state_dir != new.state_dir);
            let (running, wanted) = (self.is_enabled(name), modules::wanted(&new, name));
            let result = if !wanted && running {
                self.unload_module(name)
            } else if wanted && (!running || changed) {
                if running {
                    let _ = self.unload_module(name);
                }
                self.load_module(name)
            } else {
                Ok(())
            };
            if let Err(e) = result {
                self.record(json!({"kind": "agent", "level": "error", "message": e.to_string()}));
            }
        }
        self.health = Health::new(
            Duration::from_secs(new.health.window_secs),
            new.health.max_drop_ratio,
        );
        self.record(json!({"kind": "agent", "level": "info", "message": "configuration reloaded"}));
        json!({"ok": true})
    }

    /// Once a second: module work, metrics, ring fill, health.
    fn tick(&mut self, now: Instant) {
        let mut records = Vec::new();
        for (_, state) in &mut self.enabled {
            if let Some(state) = state {
                state.tick(&mut |r| records.push(r));
            }
        }
        for r in records {
            self.record(r);
        }
        let snap = Snapshot::take(&self.pipeline.capabilities);
        self.metrics.observe(&snap);
        self.metrics.observe_self();
        self.metrics
            .cache_entries
            .set(self.pipeline.cache.len() as i64);
        let evictions = self.pipeline.cache.evictions;
        let before = self.metrics.cache_evictions.get();
        self.metrics
            .cache_evictions
            .inc_by(evictions.saturating_sub(before));
        let written = self.logged.get();
        let before = self.metrics.events_written.get();
        self.metrics
            .events_written
            .inc_by(written.saturating_sub(before));
        for cap in &self.pipeline.capabilities {
            let peak = self
                .pipeline
                .ring_peak_bytes
                .get(cap.spec.name)
                .copied()
                .unwrap_or(0);
            let size = cap.ring_bytes.max(1) as f64;
            self.metrics
                .ring_fill
                .get_or_create(&CapabilityLabels {
                    capability: cap.spec.name.into(),
                })
                .set(peak as f64 / size);
        }
        self.pipeline.ring_peak_bytes.clear();
        for warning in self.health.observe(&snap, now) {
            if warning.reason != "recovered" {
                self.metrics
                    .health_warnings
                    .get_or_create(&HealthLabels {
                        capability: warning.capability.clone(),
                        kind: warning.kind.clone(),
                        reason: warning.reason.into(),
                    })
                    .inc();
            }
            let level = if warning.reason == "recovered" {
                "info"
            } else {
                "warning"
            };
            self.record(
                json!({"kind": "health", "level": level, "capability": warning.capability,
                "probe": warning.kind, "reason": warning.reason, "detail": warning.detail}),
            );
        }
        for k in &snap.kinds {
            let healthy = self.health.is_healthy(k.capability, k.kind);
            self.metrics
                .probe_healthy
                .get_or_create(&ProbeLabels {
                    capability: k.capability.into(),
                    kind: k.kind.into(),
                })
                .set(i64::from(healthy));
        }
    }
}

impl Agent {
    pub async fn run(self) -> Result<(), AgentError> {
        let started = Instant::now();
        // One malloc arena for every thread: the loader threads each parse tens of MiB of
        // BTF, and in arenas of their own that memory stayed resident after being freed
        // (the agent sat at 40-60 MiB instead of 22). The agent's threads rarely allocate
        // at the same time, so sharing costs nothing measurable.
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt only changes allocator tuning; called before any extra thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        // Before anything is loaded: a SIGTERM during start-up (or right after the "started"
        // line) is then a clean stop with the log flushed, not the default death.
        let mut sighup = signal(SignalKind::hangup()).map_err(io_err("signals"))?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("signals"))?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("signals"))?;
        let _stats = RunTimeStats::enable();
        let config = self.config.clone();
        // Refuses (naming its pid) while another agent owns the state dir or the socket.
        let _instance = instance::Instance::claim(&config.state_dir, &config.control_socket)?;
        let log = LogTarget::open(&config.log.path, config.log.max_bytes, config.log.keep)
            .map_err(io_err(format!("event log {}", config.log.path)))?;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        // Events that carry measurements feed metrics on their way to the log.
        let mut sink = AgentSink::new(log, Clock::now(), metrics.event_metrics());
        if config.log.syslog {
            sink.syslog = Some(
                syslog::Syslog::new(config.log.syslog_socket.clone())
                    .map_err(io_err("syslog socket"))?,
            );
        }
        let detection = sink.detection.clone();
        let logged = sink.logged.clone();
        let pipeline = Pipeline::new(
            Vec::new(),
            ProcessCache::new(65536, 5_000_000_000),
            &mut sink,
            Box::new(|_, _| true),
        );
        let mut running = Running {
            poller: RingPoller::new(&[]).map_err(io_err("ring poller"))?,
            pipeline,
            metrics,
            health: Health::new(
                Duration::from_secs(config.health.window_secs),
                config.health.max_drop_ratio,
            ),
            config: config.clone(),
            enabled: Vec::new(),
            detection,
            logged,
        };
        let wanted: Vec<&'static str> = MODULES
            .iter()
            .copied()
            .filter(|name| modules::wanted(&config, name))
            .collect();
        running.load_modules(&wanted)?;
        let attached_ms = started.elapsed().as_millis();
        // Everything is loaded: the parsed kernel BTF is tens of MiB the agent need not keep.
        crate::kernel::release_kernel_btf();
        running.pipeline.cache.seed_from_proc();

        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Envelope>(16);
        let _control = control::serve(&config.control_socket, ctl_tx).map_err(io_err(format!(
            "control socket {}",
            config.control_socket.display()
        )))?;
        let registry = Arc::new(registry);
        if config.metrics.enabled {
            server::serve_metrics(config.metrics.listen, registry.clone())
                .await
                .map_err(io_err(format!("metrics on {}", config.metrics.listen)))?;
        }
        running.record(json!({"kind": "agent", "level": "info", "message": "started",
            "modules": running.enabled.iter().map(|(m, _)| m).collect::<Vec<_>>(), "attached_ms": attached_ms,
            "metrics": config.metrics.enabled.then(|| format!("http://{}/metrics", config.metrics.listen))}));

        // While events flow, a drain every 25 ms keeps alert latency well under 50 ms; an
        // idle agent sleeps until the kernel wakes it with the next record (or the tick).
        let mut drain_timer = DrainTimer::new(Duration::from_millis(25), Some(IDLE_BACKSTOP));
        let mut second = tokio::time::interval(Duration::from_secs(1));
        loop {
            let more = running.pipeline.more_pending;
            tokio::select! {
                _ = std::future::ready(()), if more => {}
                _ = running.poller.ready() => {}
                _ = drain_timer.due() => {}
                _ = second.tick() => {
                    running.tick(Instant::now());
                    running.pipeline.cache.expire(crate::kernel::boot_time_ns());
                    let _ = running.pipeline.sink.flush();
                }
                Some((request, reply)) = ctl_rx.recv() => {
                    let answer = match request {
                        Request::List => running.list(),
                        Request::Enable { module } => running.set_module(&module, true),
                        Request::Disable { module } => running.set_module(&module, false),
                        Request::Reload => running.reload(&self.config_path, &self.overrides),
                    };
                    let _ = reply.send(answer);
                }
                _ = sighup.recv() => { running.reload(&self.config_path, &self.overrides); }
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
            }
            running.pipeline.drain(None).map_err(io_err("event log"))?;
            drain_timer
                .after_drain(&mut running.pipeline, None)
                .map_err(io_err("event log"))?;
            let _ = running.pipeline.sink.tick(crate::kernel::boot_time_ns());
        }
        // Drain what is queued (bounded), let modules finish (the last flows), flush, detach
        // by dropping everything.
        let deadline = Instant::now() + Duration::from_millis(400);
        while Instant::now() < deadline {
            let before = running.pipeline.counters.decoded;
            running.pipeline.drain(None).map_err(io_err("event log"))?;
            if running.pipeline.counters.decoded == before {
                break;
            }
        }
        // Changes still settling are reported now rather than lost.
        let _ = running.pipeline.sink.tick(u64::MAX);
        while let Some((name, _)) = running.enabled.last() {
            let name = *name;
            let _ = running.unload_module(name);
        }
        running.record(
            json!({"kind": "agent", "level": "info", "message": "stopped",
            "events_written": running.logged.get()}),
        );
        running.pipeline.sink.flush().map_err(io_err("event log"))?;
        let _ = std::fs::remove_file(&config.control_socket);
        Ok(())
    }
}
