//! The security module: the security session (`security::session`) as `osprey secure` runs
//! it, on the agent's configuration: the embedded defaults and rule files, the syscall
//! baselines kept in the state directory and FIM, evaluated on the security events, the
//! file opens the rules name (prefiltered in the kernel) and the process module's execs.
//! Alerts are event-log records of kind "alert"; rules are only reported here (`deny`/`kill`
//! show as would_block/would_kill: the agent does not enforce).

use serde_json::{json, Value};

use super::config::AgentConfig;
use super::modules::{load_options, LoadedModule, ModuleEnv, ModuleState};
use super::sink::{Detection, DetectionSlot};
use super::AgentError;
use crate::kernel::loader::{CapabilitySpec, LoadOptions};
use crate::security::session::{self, Baselines, Enforcement, LoadPlan, Session, SessionError};

/// The files object loaded for the rules' opens, under its own name so that its counters
/// and its events stay apart from the `files` module's.
pub const OPENS_SPEC: CapabilitySpec = CapabilitySpec {
    name: "security-opens",
    ..crate::files::SPEC
};

/// Other modules' capabilities whose events the detectors see.
const SHARED_SOURCES: &[&str] = &["process"];

fn agent_error(e: SessionError) -> AgentError {
    match e {
        SessionError::Load(source) => AgentError::Module {
            module: "security",
            source,
        },
        e => AgentError::Invalid(e.to_string()),
    }
}

/// What the module would load, checked without BPF (a reload validates this first).
pub fn prepare(config: &AgentConfig) -> Result<session::Prepared, AgentError> {
    let cfg = &config.modules.security;
    let options = session::Options {
        default_rules: cfg.default_rules,
        rule_files: cfg.rules.clone(),
        state_dir: config.state_dir.clone(),
        baselines: if cfg.baselines {
            Baselines::Detect
        } else {
            Baselines::Off
        },
        watch: cfg.watch.clone(),
        enforcement: Enforcement::ReportOnly,
    };
    session::prepare(&options).map_err(agent_error)
}

/// With nothing watched, the FIM maps of the security object at one entry each (the kernel
/// charges for every entry a map could hold).
fn unwatched_fim_maps(nothing_watched: bool) -> Vec<(&'static str, u32)> {
    if !nothing_watched {
        return Vec::new();
    }
    ["fim_inodes", "fim_roots", "fim_write_seen"]
        .into_iter()
        .map(|name| (name, 1))
        .collect()
}

pub fn load(env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
    let cfg = &env.config.modules.security;
    let plan = LoadPlan {
        process: None,
        opens_spec: OPENS_SPEC,
        opens: load_options(cfg.rate_limit, cfg.ring_mib, None),
        security: LoadOptions {
            map_max_entries: unwatched_fim_maps(cfg.watch.is_empty()),
            ..load_options(cfg.rate_limit, cfg.ring_mib, None)
        },
        baselines_need_enter: false,
    };
    let mut session = prepare(env.config)?.start(plan).map_err(agent_error)?;
    let capabilities = std::mem::take(&mut session.capabilities);
    if let Some((_, n)) = &session.summary.baselines {
        env.metrics.baseline_executables.set(*n as i64);
    }
    *env.detection.borrow_mut() = Some(Detection {
        detectors: std::mem::take(&mut session.detectors),
        own_sources: capabilities.iter().map(|c| c.spec.name).collect(),
        shared_sources: SHARED_SOURCES,
        alerts: env.metrics.alerts.clone(),
        container_alerts: env.metrics.container_alerts.clone(),
    });
    let notes = session
        .notes
        .iter()
        .map(|n| (n.level.name(), n.text.clone()))
        .collect();
    Ok(LoadedModule {
        capabilities,
        notes,
        state: Some(Box::new(SecurityState {
            slot: env.detection.clone(),
            baseline_gauge: env.metrics.baseline_executables.clone(),
            session,
        })),
    })
}

struct SecurityState {
    slot: DetectionSlot,
    baseline_gauge: prometheus_client::metrics::gauge::Gauge,
    /// Kept while loaded (the kernel map the baselines live in).
    session: Session,
}

impl ModuleState for SecurityState {
    fn describe(&self) -> Value {
        let s = &self.session.summary;
        json!({
            "rules": s.rules,
            "baselines": s.baselines.as_ref().map(|(path, n)| json!({"file": path, "executables": n})),
            "fim_watched_paths": s.watched,
        })
    }

    fn unload(&mut self, _record: &mut dyn FnMut(Value)) {
        *self.slot.borrow_mut() = None;
        self.baseline_gauge.set(0);
    }
}
