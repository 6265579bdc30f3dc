//! The agent's modules. A module is a name, a config section under `[modules.NAME]` and a
//! load function returning its capabilities (drained by the pipeline) and, optionally, a
//! state it keeps while loaded (maps it reads, files it writes, detectors). Adding one
//! (e.g. `fim`) is: a section in `ModulesConfig`, a name in `MODULES`, an arm in `load`.

use serde_json::{json, Value};

use super::config::{AgentConfig, ModuleConfig};
use super::metrics::ModuleMetrics;
use super::sink::DetectionSlot;
use super::AgentError;
use crate::kernel::loader::{CapabilitySpec, KernelConfig, LoadOptions, LoadedCapability};
use crate::{files, process};

/// The modules the agent knows, in drain order (process first: it feeds the cache).
pub const MODULES: &[&str] = &["process", "security", "files", "tcp", "profile", "flows"];

/// What modules may use while loading.
pub struct ModuleEnv<'a> {
    pub config: &'a AgentConfig,
    pub detection: &'a DetectionSlot,
    pub metrics: &'a ModuleMetrics,
}

/// What a loaded module keeps besides its capabilities.
pub trait ModuleState {
    /// Once a second; `record` writes a line to the event log.
    fn tick(&mut self, record: &mut dyn FnMut(Value)) {
        let _ = record;
    }
    /// Extra fields for `osprey ctl list`.
    fn describe(&self) -> Value {
        json!({})
    }
    /// Before the module's capabilities go (the last flows, detectors unplugged).
    fn unload(&mut self, record: &mut dyn FnMut(Value)) {
        let _ = record;
    }
}

pub struct LoadedModule<S: ?Sized = dyn ModuleState> {
    pub capabilities: Vec<LoadedCapability>,
    pub state: Option<Box<S>>,
    /// Said once in the event log after loading: (level, message).
    pub notes: Vec<(&'static str, String)>,
}

/// A module loaded on a thread of its own.
pub type DetachedModule = LoadedModule<dyn ModuleState + Send>;

impl From<DetachedModule> for LoadedModule {
    fn from(m: DetachedModule) -> Self {
        LoadedModule {
            capabilities: m.capabilities,
            state: m.state.map(|s| s as Box<dyn ModuleState>),
            notes: m.notes,
        }
    }
}

/// Whether the configuration asks for the module (flows also needs interfaces).
pub fn wanted(config: &AgentConfig, name: &str) -> bool {
    match name {
        "flows" => config.modules.flows.enabled && !config.modules.flows.interfaces.is_empty(),
        _ => config.module_section(name)["enabled"] == true,
    }
}

/// The capability names a module loads (for drain order and forgetting counters).
pub fn capability_names(name: &str) -> &'static [&'static str] {
    match name {
        "process" => &["process"],
        "security" => &["security", super::security::OPENS_SPEC.name],
        "files" => &["files"],
        "tcp" => &["tcp"],
        "profile" => &["profile"],
        "flows" => &["flows"],
        _ => &[],
    }
}

pub fn load(name: &str, env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
    if let Some(load) = detached_loader(name, env.config, env.metrics) {
        return load().map(LoadedModule::from);
    }
    match name {
        "security" => super::security::load(env),
        "flows" => super::flows::load(env),
        _ => Err(AgentError::Io {
            what: format!("module {name}"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "unknown module"),
        }),
    }
}

/// Loads a module that needs nothing of the agent's thread (no detection slot).
pub type DetachedLoad<'a> = Box<dyn FnOnce() -> Result<DetachedModule, AgentError> + Send + 'a>;

/// The loader of a module that can load on a thread of its own: at start-up those load
/// side by side with the others, since verification and relocation dominate the time to
/// attached. None for the other modules.
pub fn detached_loader<'a>(
    name: &str,
    config: &'a AgentConfig,
    metrics: &'a ModuleMetrics,
) -> Option<DetachedLoad<'a>> {
    let m = &config.modules;
    Some(match name {
        "process" => Box::new(move || simple("process", process::SPEC, &m.process)),
        "files" => Box::new(move || simple("files", files::SPEC, &m.files)),
        "tcp" => Box::new(move || simple("tcp", crate::net::tcp::SPEC, &m.tcp)),
        "profile" => Box::new(move || super::profiler::load(config, metrics)),
        _ => return None,
    })
}

/// Ring size and kernel filters common to the event modules.
pub fn load_options(rate_limit: u64, ring_mib: u32, comm: Option<String>) -> LoadOptions {
    LoadOptions {
        config: KernelConfig {
            rate_per_process: (rate_limit > 0).then_some(rate_limit),
            comm,
            ..Default::default()
        },
        ring_bytes: (ring_mib > 0).then_some(ring_mib << 20),
        denied_programs: LoadOptions::denied_from_env(),
        ..Default::default()
    }
}

pub fn load_capability(
    module: &'static str,
    spec: CapabilitySpec,
    options: &LoadOptions,
) -> Result<LoadedCapability, AgentError> {
    LoadedCapability::load(spec, options).map_err(|source| AgentError::Module { module, source })
}

/// Roles that could not attach, as warnings for the log.
pub fn degraded_notes(cap: &LoadedCapability) -> Vec<(&'static str, String)> {
    cap.outcomes
        .iter()
        .filter(|o| o.chosen.is_none())
        .map(|o| {
            let message = format!("{} {} unavailable: {}", cap.spec.name, o.role, o.reason());
            ("warning", message)
        })
        .collect()
}

fn simple(
    name: &str,
    spec: CapabilitySpec,
    module: &ModuleConfig,
) -> Result<DetachedModule, AgentError> {
    let name = MODULES.iter().find(|m| **m == name).copied().unwrap_or("?");
    let options = load_options(module.rate_limit, module.ring_mib, module.comm.clone());
    let cap = load_capability(name, spec, &options)?;
    Ok(LoadedModule {
        notes: degraded_notes(&cap),
        capabilities: vec![cap],
        state: None,
    })
}
