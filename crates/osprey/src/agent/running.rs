//! The running agent: its modules (loaded, enabled and disabled at run time, restarted by
//! a reload), the control requests, and the hooks it gives the shared run loop.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::config::AgentConfig;
use super::control::{Envelope, Request};
use super::health::Health;
use super::metrics::{Metrics, ModuleLabels};
use super::modules::{self, AgentModule, LoadedModule, ModuleEnv, ModuleState, MODULES};
use super::sink::DetectionSlot;
use super::AgentError;
use crate::kernel::object_loader::SharedLoads;
use crate::kernel::stats::Snapshot;
use crate::pipeline::run::{Pipeline, RunHooks, StopReason};

/// A module while it is loaded.
pub(super) struct Enabled {
    pub module: &'static dyn AgentModule,
    pub state: Option<Box<dyn ModuleState>>,
}

pub(super) struct Running {
    pub metrics: Metrics,
    pub health: Health,
    pub config: AgentConfig,
    /// Modules currently loaded, in `MODULES` order.
    pub enabled: Vec<Enabled>,
    pub detection: DetectionSlot,
    pub logged: Rc<Cell<u64>>,
    /// Re-read on SIGHUP / `osprey ctl reload`; none: the embedded defaults.
    pub config_path: Option<PathBuf>,
    /// Applied on top of every (re)loaded file: the command line wins.
    pub overrides: Box<dyn Fn(&mut AgentConfig)>,
}

fn rank(module: &dyn AgentModule) -> usize {
    MODULES
        .iter()
        .position(|m| m.name() == module.name())
        .unwrap_or(MODULES.len())
}

impl Running {
    fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|e| e.module.name() == name)
    }

    fn load_module(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        module: &'static dyn AgentModule,
    ) -> Result<(), AgentError> {
        let env = ModuleEnv {
            config: &self.config,
            detection: &self.detection,
            metrics: &self.metrics.modules,
        };
        let loaded = module.load(&env)?;
        self.add_module(pipeline, module, loaded);
        Ok(())
    }

    /// Loads several modules at once: those that allow it on threads of their own, the
    /// rest here meanwhile. Reports the first failure (what loaded stays loaded).
    pub fn load_modules(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        wanted: &[&'static dyn AgentModule],
    ) -> Result<(), AgentError> {
        let (config, metrics) = (&self.config, &self.metrics.modules);
        let mut results = Vec::new();
        // Shared aya loaders (one kernel BTF parse, not one per object) until all are in.
        let shared_loads = SharedLoads::start();
        std::thread::scope(|scope| {
            let (detached, here): (Vec<&'static dyn AgentModule>, Vec<_>) =
                wanted.iter().partition(|m| m.detached());
            let threads: Vec<_> = detached
                .into_iter()
                .map(|m| (m, scope.spawn(move || m.load_detached(config, metrics))))
                .collect();
            let env = ModuleEnv {
                config,
                detection: &self.detection,
                metrics,
            };
            for m in here {
                results.push((m, m.load(&env)));
            }
            for (m, handle) in threads {
                let loaded = handle.join().unwrap_or_else(|_| {
                    Err(AgentError::Invalid(format!(
                        "{}: loader panicked",
                        m.name()
                    )))
                });
                results.push((m, loaded.map(LoadedModule::from)));
            }
        });
        drop(shared_loads);
        let mut first_error = None;
        for (module, loaded) in results {
            match loaded {
                Ok(loaded) => self.add_module(pipeline, module, loaded),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn add_module(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        module: &'static dyn AgentModule,
        loaded: LoadedModule,
    ) {
        let name = module.name();
        for (level, message) in loaded.notes {
            self.record(
                pipeline,
                json!({"kind": "agent", "level": level, "module": name, "message": message}),
            );
        }
        // Drain order: module order (lifecycle first keeps the process cache current).
        pipeline.add_capabilities(loaded.capabilities, |c| modules::drain_rank(c.spec.name));
        self.enabled.push(Enabled {
            module,
            state: loaded.state,
        });
        self.enabled.sort_by_key(|e| rank(e.module));
        self.set_module_metric(name, 1);
    }

    /// Stops a module: what is queued reaches the log, its state finishes (the last
    /// flows), then its capabilities are dropped (detached, their qdiscs removed).
    fn unload_module(&mut self, pipeline: &mut Pipeline<'_>, name: &'static str) {
        let _ = pipeline.drain(None);
        if let Some(i) = self.enabled.iter().position(|e| e.module.name() == name) {
            let enabled = self.enabled.remove(i);
            if let Some(mut state) = enabled.state {
                let mut records = Vec::new();
                state.unload(&mut |r| records.push(r));
                for r in records {
                    self.record(pipeline, r);
                }
            }
        }
        let names: Vec<&str> = crate::capabilities::of_module(name).collect();
        pipeline.remove_capabilities(&names);
        for n in names {
            self.metrics.forget(n);
            self.health.forget(n);
        }
        self.set_module_metric(name, 0);
    }

    /// Stops every module, last first.
    pub fn unload_all(&mut self, pipeline: &mut Pipeline<'_>) {
        while let Some(last) = self.enabled.last() {
            let name = last.module.name();
            self.unload_module(pipeline, name);
        }
    }

    fn set_module_metric(&self, module: &str, value: i64) {
        self.metrics
            .module_enabled
            .get_or_create(&ModuleLabels {
                module: module.into(),
            })
            .set(value);
    }

    /// Writes an agent record to the log (and, unless it is a flow, to stderr).
    pub fn record(&mut self, pipeline: &mut Pipeline<'_>, value: serde_json::Value) {
        let mut value = value;
        // Flow records say so on stderr only through their count in the metrics.
        if value["kind"] != "flow" {
            eprintln!("osprey agent: {value}");
        }
        if value.get("time").is_none() {
            value["time"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        }
        let _ = pipeline.sink.write_record(&value);
    }

    fn list(&self, pipeline: &Pipeline<'_>) -> serde_json::Value {
        let snap = Snapshot::take(&pipeline.capabilities);
        json!({
            "ok": true,
            "modules": MODULES.iter().map(|m| self.describe(*m)).collect::<Vec<_>>(),
            "programs": snap.programs,
            // Program runs and run time are counted only while they are on.
            "run_time_stats": self.config.metrics.run_time_stats,
            "events": snap.kinds,
        })
    }

    fn describe(&self, module: &dyn AgentModule) -> serde_json::Value {
        let name = module.name();
        let state = self.enabled.iter().find(|e| e.module.name() == name);
        let mut out = json!({"module": name, "enabled": state.is_some()});
        if let Some(detail) = state.and_then(|e| e.state.as_ref()).map(|s| s.describe()) {
            if let (Some(out), Some(detail)) = (out.as_object_mut(), detail.as_object()) {
                out.extend(detail.clone());
            }
        }
        if let (None, Some(reason)) = (state, module.unusable(&self.config)) {
            out["reason"] = json!(reason);
        }
        out
    }

    fn set_module(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        name: &str,
        on: bool,
    ) -> serde_json::Value {
        let Some(module) = modules::find(name) else {
            return json!({"ok": false, "error": format!("unknown module `{name}` (modules: {})", modules::names().join(", "))});
        };
        let name = module.name();
        let result = match (on, self.is_enabled(name)) {
            (true, false) => self.load_module(pipeline, module),
            (false, true) => {
                self.unload_module(pipeline, name);
                Ok(())
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                let message = format!("module {name} {}", if on { "enabled" } else { "disabled" });
                self.record(
                    pipeline,
                    json!({"kind": "agent", "level": "info", "message": message}),
                );
                json!({"ok": true, "module": name, "enabled": on})
            }
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        }
    }

    /// The configuration file again (with the overrides), checked by every wanted module.
    fn read_config(&self) -> Result<AgentConfig, AgentError> {
        let mut new = match &self.config_path {
            Some(p) => AgentConfig::load(p)?,
            None => AgentConfig::default(),
        };
        (self.overrides)(&mut new);
        // Rule files and baselines are checked before anything is unloaded.
        for m in MODULES.iter().filter(|m| modules::wanted(**m, &new)) {
            m.prepare(&new)?;
        }
        Ok(new)
    }

    /// Re-reads the configuration; an invalid one is rejected and the old one keeps running.
    fn reload(&mut self, pipeline: &mut Pipeline<'_>) -> serde_json::Value {
        let new = match self.read_config() {
            Ok(c) => c,
            Err(e) => {
                self.record(pipeline, json!({"kind": "agent", "level": "error", "message": format!("configuration rejected, keeping the running one: {e}")}));
                return json!({"ok": false, "error": e.to_string()});
            }
        };
        let old = std::mem::replace(&mut self.config, new.clone());
        for &module in MODULES {
            let name = module.name();
            let (running, wanted) = (self.is_enabled(name), modules::wanted(module, &new));
            if running && (!wanted || module.changed(&old, &new)) {
                self.unload_module(pipeline, name);
            }
            if wanted && !self.is_enabled(name) {
                if let Err(e) = self.load_module(pipeline, module) {
                    self.record(
                        pipeline,
                        json!({"kind": "agent", "level": "error", "message": e.to_string()}),
                    );
                }
            }
        }
        self.health = Health::new(
            Duration::from_secs(new.health.window_secs),
            new.health.max_drop_ratio,
        );
        self.record(
            pipeline,
            json!({"kind": "agent", "level": "info", "message": "configuration reloaded"}),
        );
        json!({"ok": true})
    }
}

impl RunHooks for Running {
    type Request = Envelope;

    /// Once a second: module work, metrics, health; the log flushed.
    fn tick(&mut self, pipeline: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        self.observe(pipeline, Instant::now());
        let _ = pipeline.sink.flush();
        ControlFlow::Continue(())
    }

    fn request(&mut self, pipeline: &mut Pipeline<'_>, (request, reply): Envelope) {
        let answer = match request {
            Request::List => self.list(pipeline),
            Request::Enable { module } => self.set_module(pipeline, &module, true),
            Request::Disable { module } => self.set_module(pipeline, &module, false),
            Request::Reload => self.reload(pipeline),
        };
        let _ = reply.send(answer);
    }

    fn hangup(&mut self, pipeline: &mut Pipeline<'_>) {
        self.reload(pipeline);
    }
}
