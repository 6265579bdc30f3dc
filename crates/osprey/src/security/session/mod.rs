//! One security session: rules, syscall baselines, file integrity monitoring and
//! enforcement, set up the same way for `osprey secure` and for the agent's security module.
//!
//! Two steps. [`prepare`] reads and checks everything without BPF (rule files within their
//! limits, the enforcement plan, the baseline file, the FIM scan): an agent reload runs only
//! this step to accept or reject a configuration. [`Prepared::start`] loads the kernel side
//! and returns a [`Session`]: its capabilities for the pipeline, its detectors, what it said
//! while starting ([`Note`]s, rendered by the caller) and, when learning, what to save at the
//! end. A new source of rules (another rule format) plugs into `prepare`; a new detector or
//! enrichment into `start`; callers do not change.

mod plan;
mod start;

use std::path::PathBuf;

use super::baseline::{self, BaselineFile};
use super::fim::FimStart;
use super::rules::{self, RuleSet, DEFAULT_RULES, DEFAULT_RULES_NAME};
use crate::kernel::loader::LoadError;

pub use plan::EnforcementPlan;
pub use start::{Learned, LoadPlan, Session, Summary};

/// Whether syscall baselines are used, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baselines {
    Off,
    /// Enforce the baselines found in the state directory, if there are any.
    Detect,
    /// Learn baselines, to merge into the state directory at the end ([`Session::finish`]).
    Learn,
}

/// What happens to `deny` and `kill` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Reported as would_block / would_kill; not compiled for the kernel.
    ReportOnly,
    /// Compiled for the kernel, so that rules that could not be enforced are refused, but
    /// only reported.
    Checked,
    /// Carried out (BPF LSM or fanotify, cgroup connect programs, SIGKILL from the kernel).
    Enforce,
}

/// What a session is built from.
#[derive(Debug, Clone)]
pub struct Options {
    /// Load the embedded default rules before the files.
    pub default_rules: bool,
    pub rule_files: Vec<PathBuf>,
    /// Where baselines and the FIM database are kept.
    pub state_dir: PathBuf,
    pub baselines: Baselines,
    /// Paths under file integrity monitoring (directories recursively).
    pub watch: Vec<PathBuf>,
    pub enforcement: Enforcement,
}

/// Something the session says while starting, for the caller to render (stderr, event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
        }
    }
}

impl Note {
    pub fn info(text: impl Into<String>) -> Self {
        Note {
            level: Level::Info,
            text: text.into(),
        }
    }

    pub fn warning(text: impl Into<String>) -> Self {
        Note {
            level: Level::Warning,
            text: text.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Rules, baselines or watched paths are unusable (file:line:col where known).
    #[error("{0}")]
    Invalid(String),
    /// A capability did not load.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The kernel lacks what was asked for.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Runtime(String),
}

/// Everything checked, nothing loaded yet.
pub struct Prepared {
    pub rules: RuleSet,
    /// Present unless enforcement is [`Enforcement::ReportOnly`].
    pub plan: Option<EnforcementPlan>,
    enforce: bool,
    baselines: Option<BaselineStart>,
    /// The FIM baseline of the watched paths, diffed against the previous run's database.
    pub fim: Option<FimStart>,
}

/// The baselines to use: the mode, the file's path and what it held before.
struct BaselineStart {
    mode: baseline::Mode,
    path: PathBuf,
    before: Option<BaselineFile>,
}

/// Reads rule files (each within the size limit; directories for their `*.yaml`/`*.yml`
/// files) after the embedded defaults if asked.
pub fn read_rule_sources(
    files: &[PathBuf],
    defaults: bool,
) -> Result<Vec<(String, String)>, SessionError> {
    let mut sources = Vec::new();
    if defaults {
        sources.push((DEFAULT_RULES_NAME.to_string(), DEFAULT_RULES.to_string()));
    }
    for path in &rules::expand_paths(files).map_err(SessionError::Invalid)? {
        let text = rules::read_file(path).map_err(SessionError::Invalid)?;
        sources.push((path.display().to_string(), text));
    }
    Ok(sources)
}

/// Loads rule sources (name, text) into one set.
pub fn load_rules(sources: &[(String, String)]) -> Result<RuleSet, SessionError> {
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    rules::load(&refs).map_err(|e| SessionError::Invalid(format!("invalid rules:\n{e}")))
}

/// Checks rules, the enforcement plan, baselines and watched paths; loads nothing.
pub fn prepare(options: &Options) -> Result<Prepared, SessionError> {
    let sources = read_rule_sources(&options.rule_files, options.default_rules)?;
    let rules = load_rules(&sources)?;
    let plan = match options.enforcement {
        Enforcement::ReportOnly => None,
        _ => Some(EnforcementPlan::compile(&rules).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            SessionError::Invalid(lines.join("\n"))
        })?),
    };
    let baselines = prepare_baselines(options)?;
    let fim = if options.watch.is_empty() {
        None
    } else {
        let start =
            FimStart::scan(&options.watch, &options.state_dir).map_err(SessionError::Invalid)?;
        Some(start)
    };
    Ok(Prepared {
        rules,
        plan,
        enforce: options.enforcement == Enforcement::Enforce,
        baselines,
        fim,
    })
}

/// The baseline file, checked; learning starts from it, detection needs it.
fn prepare_baselines(options: &Options) -> Result<Option<BaselineStart>, SessionError> {
    if options.baselines == Baselines::Off {
        return Ok(None);
    }
    let path = BaselineFile::path_in(&options.state_dir);
    let before = BaselineFile::load(&path).map_err(SessionError::Invalid)?;
    if let Some(file) = &before {
        baseline::validate(file)
            .map_err(|e| SessionError::Invalid(format!("{}: {e}", path.display())))?;
    }
    let mode = match (options.baselines, &before) {
        (Baselines::Learn, _) => baseline::Mode::Learn,
        (_, Some(_)) => baseline::Mode::Detect,
        _ => return Ok(None),
    };
    Ok(Some(BaselineStart { mode, path, before }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &std::path::Path, rules: PathBuf, enforcement: Enforcement) -> Options {
        Options {
            default_rules: false,
            rule_files: vec![rules],
            state_dir: dir.to_path_buf(),
            baselines: Baselines::Detect,
            watch: Vec::new(),
            enforcement,
        }
    }

    #[test]
    fn only_sessions_that_may_enforce_refuse_rules_the_kernel_cannot_carry_out() {
        let dir = std::env::temp_dir().join(format!("osprey-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k.yaml");
        std::fs::write(
            &file,
            "- rule: k\n  desc: d\n  severity: high\n  action: kill\n  condition: evt.kind = ptrace and file.path = /x\n",
        )
        .unwrap();
        let report = prepare(&options(&dir, file.clone(), Enforcement::ReportOnly)).unwrap();
        assert!(report.plan.is_none());
        assert!(
            report.baselines.is_none(),
            "no baseline file: nothing to detect"
        );
        let Err(SessionError::Invalid(e)) =
            prepare(&options(&dir, file.clone(), Enforcement::Checked))
        else {
            panic!("checked sessions compile the plan")
        };
        assert!(
            e.starts_with(&format!("{}:1:9: kill rule", file.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
