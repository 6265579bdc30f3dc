//! The agent's modules. Each implements `AgentModule` (whether its configuration asks for
//! it, whether a reload must restart it, how it loads) and, once loaded, keeps a
//! `ModuleState` (its periodic work and metrics, its line in `osprey ctl list`, its stop).
//! The capabilities it loads are those the registry (`crate::capabilities`) gives it.
//! Adding one (e.g. `fim`) is: a section in `ModulesConfig`, an `AgentModule` in `MODULES`,
//! its capabilities' `agent` entry (and defaults) in the registry.

use serde_json::{json, Value};

use super::config::{AgentConfig, ModuleConfig};
use super::metrics::ModuleMetrics;
use super::sink::DetectionSlot;
use super::AgentError;
use crate::kernel::loader::{CapabilitySpec, KernelConfig, LoadOptions, LoadedCapability};
use crate::{files, process};

/// What modules may use while loading.
pub struct ModuleEnv<'a> {
    pub config: &'a AgentConfig,
    pub detection: &'a DetectionSlot,
    pub metrics: &'a ModuleMetrics,
}

/// One agent module, as the agent drives it: enabled from the configuration, loaded (on a
/// thread of its own where it can), restarted on a reload that changed it, stopped by
/// dropping its `ModuleState` and capabilities.
pub trait AgentModule: Sync {
    fn name(&self) -> &'static str;
    /// Its section's `enabled`.
    fn enabled(&self, config: &AgentConfig) -> bool;
    /// Its settings differ: a reload restarts it.
    fn changed(&self, old: &AgentConfig, new: &AgentConfig) -> bool;
    /// Why it cannot run although enabled (said in `osprey ctl list`); none: it can.
    fn unusable(&self, config: &AgentConfig) -> Option<&'static str> {
        let _ = config;
        None
    }
    /// Checks its files and settings; a reload that fails here changes nothing.
    fn prepare(&self, config: &AgentConfig) -> Result<(), AgentError> {
        let _ = config;
        Ok(())
    }
    /// Whether `load_detached` can run on another thread (it needs nothing of the agent's).
    fn detached(&self) -> bool {
        false
    }
    /// Loads on another thread; only called when `detached`.
    fn load_detached(
        &self,
        config: &AgentConfig,
        metrics: &ModuleMetrics,
    ) -> Result<DetachedModule, AgentError> {
        let _ = (config, metrics);
        Err(AgentError::Invalid(format!(
            "{}: does not load on a thread of its own",
            self.name()
        )))
    }
    /// Loads on the agent's thread.
    fn load(&self, env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
        self.load_detached(env.config, env.metrics)
            .map(LoadedModule::from)
    }
}

/// What a loaded module keeps besides its capabilities.
pub trait ModuleState {
    /// Once a second (its work and metrics); `record` writes a line to the event log.
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

/// The modules the agent knows, in drain order (process first: it feeds the cache).
pub static MODULES: &[&dyn AgentModule] = &[
    &Simple {
        name: "process",
        spec: process::SPEC,
        settings: |c| &c.modules.process,
        // The security module's rules may read exec environments (proc.env): the default
        // rules do.
        globals: |c| {
            if c.modules.security.enabled {
                process::env::globals()
            } else {
                Vec::new()
            }
        },
    },
    &Security,
    &Simple {
        name: "files",
        spec: files::SPEC,
        settings: |c| &c.modules.files,
        globals: |_| Vec::new(),
    },
    &Simple {
        name: "tcp",
        spec: crate::net::tcp::SPEC,
        settings: |c| &c.modules.tcp,
        globals: |_| Vec::new(),
    },
    &Profile,
    &Flows,
];

/// A module by name.
pub fn find(name: &str) -> Option<&'static dyn AgentModule> {
    MODULES.iter().copied().find(|m| m.name() == name)
}

/// The names of all modules, for messages.
pub fn names() -> Vec<&'static str> {
    MODULES.iter().map(|m| m.name()).collect()
}

/// Position of a capability's module in `MODULES` (drain order).
pub fn drain_rank(capability: &str) -> usize {
    let module = crate::capabilities::module_of(capability);
    MODULES
        .iter()
        .position(|m| Some(m.name()) == module)
        .unwrap_or(MODULES.len())
}

/// A module of one event capability with the common settings (ring, rate, comm).
struct Simple {
    name: &'static str,
    spec: CapabilitySpec,
    settings: fn(&AgentConfig) -> &ModuleConfig,
    /// `.rodata` settings the object needs under this configuration.
    globals: fn(&AgentConfig) -> Globals,
}

/// `.rodata` settings: (global's name, bytes).
type Globals = Vec<(&'static str, Vec<u8>)>;

impl Simple {
    fn settings<'c>(&self, config: &'c AgentConfig) -> &'c ModuleConfig {
        (self.settings)(config)
    }
}

impl AgentModule for Simple {
    fn name(&self) -> &'static str {
        self.name
    }
    fn enabled(&self, config: &AgentConfig) -> bool {
        self.settings(config).enabled
    }
    fn changed(&self, old: &AgentConfig, new: &AgentConfig) -> bool {
        self.settings(old) != self.settings(new)
    }
    fn detached(&self) -> bool {
        true
    }
    fn load_detached(
        &self,
        config: &AgentConfig,
        _: &ModuleMetrics,
    ) -> Result<DetachedModule, AgentError> {
        let module = self.settings(config);
        let mut options = load_options(module.rate_limit, module.ring_mib, module.comm.clone());
        options.extra_globals.extend((self.globals)(config));
        let cap = load_capability(self.name, self.spec, &options)?;
        Ok(LoadedModule {
            notes: degraded_notes(&cap),
            capabilities: vec![cap],
            state: None,
        })
    }
}

struct Security;

impl AgentModule for Security {
    fn name(&self) -> &'static str {
        "security"
    }
    fn enabled(&self, config: &AgentConfig) -> bool {
        config.modules.security.enabled
    }
    fn changed(&self, old: &AgentConfig, new: &AgentConfig) -> bool {
        old.modules.security != new.modules.security || old.state_dir != new.state_dir
    }
    fn prepare(&self, config: &AgentConfig) -> Result<(), AgentError> {
        super::security::prepare(config).map(drop)
    }
    fn load(&self, env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
        super::security::load(env)
    }
}

struct Profile;

impl AgentModule for Profile {
    fn name(&self) -> &'static str {
        "profile"
    }
    fn enabled(&self, config: &AgentConfig) -> bool {
        config.modules.profile.enabled
    }
    fn changed(&self, old: &AgentConfig, new: &AgentConfig) -> bool {
        old.modules.profile != new.modules.profile
    }
    fn detached(&self) -> bool {
        true
    }
    fn load_detached(
        &self,
        config: &AgentConfig,
        metrics: &ModuleMetrics,
    ) -> Result<DetachedModule, AgentError> {
        super::profiler::load(config, metrics)
    }
}

struct Flows;

impl AgentModule for Flows {
    fn name(&self) -> &'static str {
        "flows"
    }
    fn enabled(&self, config: &AgentConfig) -> bool {
        config.modules.flows.enabled
    }
    fn changed(&self, old: &AgentConfig, new: &AgentConfig) -> bool {
        old.modules.flows != new.modules.flows
    }
    fn unusable(&self, config: &AgentConfig) -> Option<&'static str> {
        config
            .modules
            .flows
            .interfaces
            .is_empty()
            .then_some("no interfaces configured ([modules.flows] interfaces)")
    }
    fn load(&self, env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
        super::flows::load(env)
    }
}

/// Whether the configuration asks for the module and it can run.
pub fn wanted(module: &dyn AgentModule, config: &AgentConfig) -> bool {
    module.enabled(config) && module.unusable(config).is_none()
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
