//! The security module: `osprey secure`'s rules (the embedded defaults and rule files) and
//! the syscall baselines kept in the state directory, evaluated by the same detectors on
//! the security events, the file opens the rules name (prefiltered in the kernel) and the
//! process module's execs. Alerts are event-log records of kind "alert"; rules are only
//! reported here (`deny`/`kill` show as would_block/would_kill: the agent does not enforce).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::modules::{
    degraded_notes, load_capability, load_options, LoadedModule, ModuleEnv, ModuleState,
};
use super::sink::{Detection, DetectionSlot};
use super::AgentError;
use crate::kernel::loader::CapabilitySpec;
use crate::pipeline::detect::Detector;
use crate::security::baseline::{self, BaselineDetector, BaselineFile, BaselineMap};
use crate::security::detect::RulesDetector;
use crate::security::fim::FimStart;
use crate::security::kernel_maps::{load_rule_opens, RuleOpens};
use crate::security::rules::{self, RuleSet, DEFAULT_RULES, DEFAULT_RULES_NAME};

/// The files object loaded for the rules' opens, under its own name so that its counters
/// and its events stay apart from the `files` module's.
pub const OPENS_SPEC: CapabilitySpec = CapabilitySpec {
    name: "security-opens",
    ..crate::files::SPEC
};

/// Other modules' capabilities whose events the detectors see.
const SHARED_SOURCES: &[&str] = &["process"];

/// What the module would load, checked without BPF (a reload validates this first).
pub struct Prepared {
    pub rules: RuleSet,
    pub baselines: Option<(PathBuf, BaselineFile)>,
    /// The FIM baseline of the watched paths, diffed against the previous run's database.
    pub fim: Option<FimStart>,
}

pub fn prepare(config: &super::config::AgentConfig) -> Result<Prepared, AgentError> {
    let cfg = &config.modules.security;
    let mut sources = Vec::new();
    if cfg.default_rules {
        sources.push((DEFAULT_RULES_NAME.to_string(), DEFAULT_RULES.to_string()));
    }
    for path in &cfg.rules {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::Invalid(format!("rules {}: {e}", path.display())))?;
        sources.push((path.display().to_string(), text));
    }
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let rules =
        rules::load(&refs).map_err(|e| AgentError::Invalid(format!("invalid rules:\n{e}")))?;
    let baselines = if cfg.baselines {
        let path = BaselineFile::path_in(&config.state_dir);
        match BaselineFile::load(&path).map_err(AgentError::Invalid)? {
            Some(file) => {
                baseline::validate(&file)
                    .map_err(|e| AgentError::Invalid(format!("{}: {e}", path.display())))?;
                Some((path, file))
            }
            None => None,
        }
    } else {
        None
    };
    let fim = if cfg.watch.is_empty() {
        None
    } else {
        Some(FimStart::scan(&cfg.watch, &config.state_dir).map_err(AgentError::Invalid)?)
    };
    Ok(Prepared {
        rules,
        baselines,
        fim,
    })
}

pub fn load(env: &ModuleEnv<'_>) -> Result<LoadedModule, AgentError> {
    let Prepared {
        rules,
        baselines,
        fim,
    } = prepare(env.config)?;
    let cfg = &env.config.modules.security;
    let opens_options = load_options(cfg.rate_limit, cfg.ring_mib, None);
    // The two objects load side by side: each one's verification and relocation is a good
    // part of the agent's start-up.
    let (object, opens) = std::thread::scope(|scope| {
        let opens = scope.spawn(|| load_rule_opens(&rules, OPENS_SPEC, opens_options));
        let object = load_object(env, baselines, fim);
        (object, opens.join())
    });
    let SecurityObject {
        security,
        mut notes,
        mut detectors,
        watched,
        baseline_map,
        loaded_baselines,
    } = object?;
    let rule_count = rules.rules.len();
    let mut capabilities = vec![security];
    let opens =
        opens.map_err(|_| AgentError::Invalid("security: the opens loader panicked".into()))?;
    match opens.map_err(|source| AgentError::Module {
        module: "security",
        source,
    })? {
        RuleOpens::NotNeeded => {}
        RuleOpens::Prefiltered { cap, .. } => capabilities.push(cap),
        RuleOpens::Unfiltered { cap, rule } => {
            notes.push((
                "warning",
                format!("rule `{rule}` may match an open of any path: every file open reaches the agent"),
            ));
            capabilities.push(cap);
        }
    }
    // The rules go first: baseline alerts about an exec come after the rules' ones.
    detectors.insert(
        0,
        Box::new(RulesDetector {
            rules,
            enforcing: false,
            kernel_deny: false,
        }),
    );
    *env.detection.borrow_mut() = Some(Detection {
        detectors,
        own_sources: capabilities.iter().map(|c| c.spec.name).collect(),
        shared_sources: SHARED_SOURCES,
        alerts: env.metrics.alerts.clone(),
    });
    Ok(LoadedModule {
        capabilities,
        notes,
        state: Some(Box::new(SecurityState {
            slot: env.detection.clone(),
            rules: rule_count,
            baselines: loaded_baselines,
            watched,
            baseline_gauge: env.metrics.baseline_executables.clone(),
            _baseline_map: baseline_map,
        })),
    })
}

/// The security object with what hangs on it: FIM, the baselines and their detectors.
struct SecurityObject {
    security: crate::kernel::loader::LoadedCapability,
    notes: Vec<(&'static str, String)>,
    detectors: Vec<Box<dyn Detector>>,
    watched: Option<usize>,
    baseline_map: Option<BaselineMap>,
    loaded_baselines: Option<(PathBuf, usize)>,
}

fn load_object(
    env: &ModuleEnv<'_>,
    baselines: Option<(PathBuf, BaselineFile)>,
    fim: Option<FimStart>,
) -> Result<SecurityObject, AgentError> {
    let cfg = &env.config.modules.security;
    let mut options = load_options(cfg.rate_limit, cfg.ring_mib, None);
    if baselines.is_some() {
        options.extra_globals = baseline::globals(baseline::Mode::Detect);
    }
    if fim.is_some() {
        options
            .extra_globals
            .extend(crate::security::fim::kernel::globals());
    }
    let mut security = load_capability("security", crate::security::SPEC, &options)?;
    let mut notes = degraded_notes(&security);
    let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
    let mut watched = None;
    if let Some(start) = fim {
        notes.extend(fim_notes(&start));
        watched = Some(start.db.files.len());
        let detector = start.attach(&mut security).map_err(AgentError::Invalid)?;
        detectors.push(Box::new(detector));
    }
    let mut baseline_map = None;
    let mut loaded_baselines = None;
    if let Some((path, file)) = baselines {
        let entered = security
            .outcomes
            .iter()
            .any(|o| o.role == "setid-enter" && o.chosen.is_some());
        if entered {
            let (map, detector, mut warnings) = start_baselines(&mut security, &file)?;
            notes.append(&mut warnings);
            notes.push((
                "info",
                format!(
                    "syscall baselines of {} executables loaded from {}",
                    file.executables.len(),
                    path.display()
                ),
            ));
            env.metrics
                .baseline_executables
                .set(file.executables.len() as i64);
            detectors.push(Box::new(detector));
            baseline_map = Some(map);
            loaded_baselines = Some((path, file.executables.len()));
        } else {
            notes.push((
                "warning",
                "syscall baselines need a sys_enter hook (tp_btf or raw_tp), unavailable here: not enforced".into(),
            ));
        }
    }
    Ok(SecurityObject {
        security,
        notes,
        detectors,
        watched,
        baseline_map,
        loaded_baselines,
    })
}

/// What FIM start-up says in the log: scan warnings, and every path that changed while
/// nothing watched it (the restored database against the disk now).
fn fim_notes(start: &FimStart) -> Vec<(&'static str, String)> {
    let mut notes: Vec<(&'static str, String)> = start
        .warnings
        .iter()
        .map(|w| ("warning", format!("FIM: {w}")))
        .collect();
    notes.extend(start.changed_while_unwatched.iter().map(|c| {
        (
            "warning",
            format!(
                "FIM: {} changed while not watched ({})",
                c.path.display(),
                c.fields().join(",")
            ),
        )
    }));
    notes.push((
        "info",
        format!(
            "FIM: watching {} paths (baseline in {})",
            start.db.files.len(),
            start.db_path.display()
        ),
    ));
    notes
}

type BaselineStart = (BaselineMap, BaselineDetector, Vec<(&'static str, String)>);

/// Fills the kernel's baseline map from the file; the detector names executables by path.
fn start_baselines(
    security: &mut crate::kernel::loader::LoadedCapability,
    file: &BaselineFile,
) -> Result<BaselineStart, AgentError> {
    let mut map = baseline::take_map(security).map_err(|source| AgentError::Module {
        module: "security",
        source,
    })?;
    let warnings = baseline::fill(&mut map, file)
        .map_err(AgentError::Invalid)?
        .into_iter()
        .map(|w| ("warning", w))
        .collect();
    let paths = baseline::SharedPaths::default();
    for exe in &file.executables {
        paths.borrow_mut().insert(exe.key(), exe.path.clone());
    }
    let detector = BaselineDetector {
        mode: baseline::Mode::Detect,
        paths,
    };
    Ok((map, detector, warnings))
}

struct SecurityState {
    slot: DetectionSlot,
    rules: usize,
    /// The baseline file and how many executables it put in the kernel.
    baselines: Option<(PathBuf, usize)>,
    /// Paths under file integrity monitoring.
    watched: Option<usize>,
    baseline_gauge: prometheus_client::metrics::gauge::Gauge,
    /// Kept while loaded: the kernel map the baselines live in.
    _baseline_map: Option<BaselineMap>,
}

impl ModuleState for SecurityState {
    fn describe(&self) -> Value {
        json!({
            "rules": self.rules,
            "baselines": self.baselines.as_ref().map(|(path, n)| json!({"file": path, "executables": n})),
            "fim_watched_paths": self.watched,
        })
    }

    fn unload(&mut self, _record: &mut dyn FnMut(Value)) {
        *self.slot.borrow_mut() = None;
        self.baseline_gauge.set(0);
    }
}
