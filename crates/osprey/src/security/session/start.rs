//! Starting a prepared session: the objects it loads, in order, and what hangs on them.

use std::path::PathBuf;

use super::plan::{EnforcementPlan, Enforcers};
use super::{BaselineStart, Note, Prepared, SessionError};
use crate::kernel::loader::{CapabilitySpec, LoadOptions, LoadedCapability, SyscallSet};
use crate::pipeline::detect::{Detector, SharedAlerts};
use crate::security::baseline::{self, BaselineDetector, BaselineFile, BaselineMap};
use crate::security::detect::RulesDetector;
use crate::security::fim::FimStart;
use crate::security::kernel_maps::{load_rule_opens, RuleOpens};
use crate::security::kill;
use crate::security::rules::security_syscalls;

/// How the caller wants the objects loaded.
pub struct LoadPlan {
    /// Load the process capability too (with its cache roles only, unless enforcing: then
    /// failed execs too, so that an exec denied in the kernel raises its alert). `None`
    /// when the caller's process events reach the detectors otherwise (the agent).
    pub process: Option<LoadOptions>,
    /// The files object for the opens the rules look at, under the caller's name.
    pub opens_spec: CapabilitySpec,
    pub opens: LoadOptions,
    pub security: LoadOptions,
    /// Without a sys_enter hook, baselines are an error (true) or a warning, unused.
    pub baselines_need_enter: bool,
}

/// What a running session holds, for `osprey ctl list` and the like.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub rules: usize,
    /// The baseline file and how many executables it put in the kernel (detecting).
    pub baselines: Option<(PathBuf, usize)>,
    /// Paths under file integrity monitoring.
    pub watched: Option<usize>,
    /// Deny rules are carried out in the kernel (BPF LSM).
    pub kernel_deny: bool,
}

/// Baselines learned by a session, merged into the file.
pub struct Learned {
    pub executables: usize,
    pub total: usize,
    pub path: PathBuf,
}

pub struct Session {
    /// For the pipeline: take them with `std::mem::take`.
    pub capabilities: Vec<LoadedCapability>,
    /// For the detect stage, rules first: take them.
    pub detectors: Vec<Box<dyn Detector>>,
    /// Said while starting, in order.
    pub notes: Vec<Note>,
    pub summary: Summary,
    enforcers: Enforcers,
    /// Kept while running: the kernel map the baselines live in.
    baseline_map: Option<BaselineMap>,
    learning: Option<Learning>,
}

struct Learning {
    paths: baseline::SharedPaths,
    before: Option<BaselineFile>,
    path: PathBuf,
}

/// What hangs on the security object: baselines and FIM, their detectors.
#[derive(Default)]
struct Attached {
    detectors: Vec<Box<dyn Detector>>,
    baseline_map: Option<BaselineMap>,
    learning: Option<Learning>,
    summary: Summary,
}

impl Prepared {
    /// Loads the kernel side: the process capability if asked, the rules' opens and the
    /// security object (side by side: each one's verification is a good part of the
    /// start-up), then the enforcement mechanisms.
    pub fn start(self, load: LoadPlan) -> Result<Session, SessionError> {
        let Prepared {
            rules,
            plan,
            enforce,
            baselines,
            fim,
        } = self;
        let plan = plan.filter(|_| enforce);
        let mut notes = Vec::new();
        let mut capabilities = Vec::new();
        if let Some(mut options) = load.process {
            if plan.is_none() {
                options.roles = Some(crate::process::CACHE_ROLES.to_vec());
            }
            if crate::security::rules::fields_events::rules_read_env(&rules) {
                options.extra_globals.extend(crate::process::env::globals());
            }
            capabilities.push(LoadedCapability::load(crate::process::SPEC, &options)?);
        }
        let kill = plan.as_ref().map(|p| p.kill.as_slice()).unwrap_or_default();
        let exit = exit_syscalls(&rules, fim.is_some(), &mut notes);
        let (object, opens) = std::thread::scope(|scope| {
            let opens = scope.spawn(|| load_rule_opens(&rules, load.opens_spec, load.opens));
            let object = load_object(
                load.security,
                exit,
                kill,
                baselines,
                fim,
                load.baselines_need_enter,
                &mut notes,
            );
            (object, opens.join())
        });
        let (security, object) = object?;
        let opens = opens.map_err(|_| SessionError::Runtime("the opens loader panicked".into()))?;
        capabilities.extend(opens_capability(opens?, &mut notes));
        capabilities.push(security);
        let mut enforcers = match &plan {
            Some(plan) => plan.start(&mut notes)?,
            None => Enforcers::default(),
        };
        capabilities.append(&mut enforcers.capabilities);
        let mut summary = object.summary;
        summary.rules = rules.rules.len();
        summary.kernel_deny = enforcers.kernel_deny;
        let mut detectors: Vec<Box<dyn Detector>> = vec![Box::new(RulesDetector {
            facts: crate::security::facts::Facts::for_rules(&rules),
            deferred: Vec::new(),
            rules,
            enforcing: plan.is_some(),
            kernel_deny: enforcers.kernel_deny,
        })];
        detectors.extend(object.detectors);
        Ok(Session {
            capabilities,
            detectors,
            notes,
            summary,
            enforcers,
            baseline_map: object.baseline_map,
            learning: object.learning,
        })
    }
}

/// The opens capability, if the rules look at opens, saying how it is filtered.
fn opens_capability(opens: RuleOpens, notes: &mut Vec<Note>) -> Option<LoadedCapability> {
    match opens {
        RuleOpens::NotNeeded => {
            notes.push(Note::info("no rule looks at file opens: not tracing them"));
            None
        }
        RuleOpens::Prefiltered {
            cap,
            inodes,
            names,
            flags,
        } => {
            let writes = if flags == 0 {
                String::new()
            } else {
                format!(
                    ", and opens with any of {}",
                    crate::security::rules::prefilter::flag_names(flags)
                )
            };
            notes.push(Note::info(format!(
                "file opens prefiltered in the kernel by {inodes} inodes and {names} names from the rules{writes}"
            )));
            Some(cap)
        }
        RuleOpens::Unfiltered { cap, rule } => {
            notes.push(Note::warning(format!(
                "rule `{rule}` may match an open of any path: every file open reaches user space"
            )));
            Some(cap)
        }
    }
}

/// Roles that could not attach, as warnings.
pub fn degraded(cap: &LoadedCapability) -> impl Iterator<Item = Note> + '_ {
    cap.outcomes.iter().filter(|o| o.chosen.is_none()).map(|o| {
        Note::warning(format!(
            "{} {} unavailable: {}",
            cap.spec.name,
            o.role,
            o.reason()
        ))
    })
}

/// The syscalls the security object's exit hook handles: those the rules can match (all
/// when a rule does not say), and FIM's.
fn exit_syscalls(
    rules: &crate::security::rules::RuleSet,
    fim: bool,
    notes: &mut Vec<Note>,
) -> SyscallSet {
    let all = crate::security::EXIT_SYSCALLS;
    let mut exit: Vec<&'static str> = match security_syscalls::needed(rules) {
        Some(needed) => {
            notes.push(Note::info(format!(
                "security syscalls traced: {} of {}, those the rules name",
                needed.len(),
                all.len()
            )));
            needed.into_iter().collect()
        }
        None => all.to_vec(),
    };
    if fim {
        exit.extend(crate::security::fim::kernel::SYSCALLS);
    }
    exit.sort_unstable();
    exit.dedup();
    SyscallSet::Only(exit)
}

/// Loads the security object with the globals its users need, then fills its maps: FIM,
/// baselines, the kill map.
fn load_object(
    mut options: LoadOptions,
    exit: SyscallSet,
    kill: &[kill::KillEntry],
    baselines: Option<BaselineStart>,
    fim: Option<FimStart>,
    need_enter: bool,
    notes: &mut Vec<Note>,
) -> Result<(LoadedCapability, Attached), SessionError> {
    if !kill.is_empty() {
        options.extra_globals.extend(kill::globals());
    }
    if let Some(b) = &baselines {
        options.extra_globals.extend(baseline::globals(b.mode));
        // Baselines learn and judge every syscall at entry.
        options
            .syscalls
            .push((crate::security::SETID_ENTER, SyscallSet::Every));
    }
    if fim.is_some() {
        options
            .extra_globals
            .extend(crate::security::fim::kernel::globals());
    }
    options.syscalls.push((crate::security::SYSCALL_EXIT, exit));
    let mut cap = LoadedCapability::load(crate::security::SPEC, &options)?;
    notes.extend(degraded(&cap));
    let mut object = Attached::default();
    if let Some(start) = baselines {
        start_baselines(&mut cap, start, need_enter, &mut object, notes)?;
    }
    if let Some(start) = fim {
        notes.extend(fim_notes(&start));
        object.summary.watched = Some(start.db.files.len());
        let detector = start.attach(&mut cap).map_err(SessionError::Runtime)?;
        object.detectors.push(Box::new(detector));
    }
    if !kill.is_empty() {
        kill::fill_map(&mut cap, kill).map_err(SessionError::Runtime)?;
    }
    Ok((cap, object))
}

/// Takes the baseline map out of the security object; to detect, fills it from the file.
fn start_baselines(
    cap: &mut LoadedCapability,
    start: BaselineStart,
    need_enter: bool,
    object: &mut Attached,
    notes: &mut Vec<Note>,
) -> Result<(), SessionError> {
    let entered = cap
        .outcomes
        .iter()
        .any(|o| o.role == crate::security::SETID_ENTER && o.chosen.is_some());
    if !entered {
        let why = "syscall baselines need a sys_enter hook (tp_btf or raw_tp), unavailable here";
        if need_enter {
            return Err(SessionError::Unsupported(format!(
                "{why}; run with --no-baselines"
            )));
        }
        notes.push(Note::warning(format!("{why}: not enforced")));
        return Ok(());
    }
    let mut map = baseline::take_map(cap)?;
    let paths = baseline::SharedPaths::default();
    // Learning starts empty; the caller says for how long.
    if let (baseline::Mode::Detect, Some(file)) = (start.mode, &start.before) {
        let warnings = baseline::fill(&mut map, file).map_err(SessionError::Runtime)?;
        notes.extend(warnings.into_iter().map(Note::warning));
        notes.push(Note::info(format!(
            "syscall baselines of {} executables loaded from {}",
            file.executables.len(),
            start.path.display()
        )));
        let mut known = paths.borrow_mut();
        for exe in &file.executables {
            known.insert(exe.key(), exe.path.clone());
        }
        object.summary.baselines = Some((start.path.clone(), file.executables.len()));
    }
    object.detectors.push(Box::new(BaselineDetector {
        mode: start.mode,
        paths: paths.clone(),
    }));
    object.baseline_map = Some(map);
    if start.mode == baseline::Mode::Learn {
        object.learning = Some(Learning {
            paths,
            before: start.before,
            path: start.path,
        });
    }
    Ok(())
}

/// What FIM start-up says: scan warnings, every path that changed while nothing watched it
/// (the restored database against the disk now), and what is watched.
fn fim_notes(start: &FimStart) -> Vec<Note> {
    let mut notes: Vec<Note> = start
        .warnings
        .iter()
        .map(|w| Note::warning(format!("FIM: {w}")))
        .collect();
    notes.extend(start.changed_while_unwatched.iter().map(|c| {
        Note::warning(format!(
            "FIM: {} changed while not watched ({})",
            c.path.display(),
            c.fields().join(",")
        ))
    }));
    let roots: Vec<String> = start
        .db
        .roots
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    notes.push(Note::info(format!(
        "FIM: watching {} paths under {} (baseline in {})",
        start.db.files.len(),
        roots.join(", "),
        start.db_path.display()
    )));
    notes
}

impl Session {
    /// Starts what enforces in user space (fanotify), writing its alerts to `alerts`.
    pub fn spawn_enforcers(&mut self, alerts: &SharedAlerts) {
        EnforcementPlan::spawn(&mut self.enforcers, alerts);
    }

    /// After the run: when learning, merges what was learned into the baseline file.
    pub fn finish(self) -> Result<Option<Learned>, SessionError> {
        let (Some(learning), Some(map)) = (self.learning, &self.baseline_map) else {
            return Ok(None);
        };
        let learned = baseline::harvest(map, &learning.paths.borrow());
        let executables = learned.len();
        let mut file = learning.before.unwrap_or(BaselineFile {
            version: 1,
            executables: Vec::new(),
        });
        file.merge(learned);
        // What was learned is never lost: saved elsewhere, and the error says where.
        if let Err(e) = file.save(&learning.path) {
            let rescue = crate::state_dir::rescue_path(&learning.path);
            let outcome = match file.save(&rescue) {
                Ok(()) => format!("the baselines were saved to {} instead", rescue.display()),
                Err(e2) => format!("saving them to {} failed too: {e2}", rescue.display()),
            };
            return Err(SessionError::Runtime(format!(
                "writing {}: {e}; {outcome}",
                learning.path.display()
            )));
        }
        Ok(Some(Learned {
            executables,
            total: file.executables.len(),
            path: learning.path,
        }))
    }
}
