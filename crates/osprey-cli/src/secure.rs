//! `osprey secure` (rules on live events, optional enforcement) and `osprey rules`
//! (check rule files without BPF, show the embedded defaults).

use std::io::BufWriter;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use osprey::kernel::loader::LoadOptions;
use osprey::pipeline::detect::{AlertFormat, AlertWriter, DetectSink};
use osprey::pipeline::event::Payload;
use osprey::pipeline::run::EventFilter;
use osprey::pipeline::sink::Clock;
use osprey::security::baseline::{self, BaselineDetector, BaselineFile};
use osprey::security::kernel_maps::RuleOpens;
use osprey::security::rules::{self, RuleSet, DEFAULT_RULES, DEFAULT_RULES_NAME};
use osprey::security::{connect_deny, detect::RulesDetector, enforce, kernel_maps, lsm};
use osprey::{files, process, security};

use crate::fim;
use crate::trace::{load, report_degraded, require_tracing_privileges, run_pipeline_into};
use crate::{Failure, Output, RunArgs};

#[derive(Args, Debug)]
pub struct SecureArgs {
    /// Extra rule file (repeatable); loaded after the defaults, whose lists and macros it may use.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<std::path::PathBuf>,
    /// Do not load the embedded default rules.
    #[arg(long)]
    pub no_default_rules: bool,
    /// Carry out `deny` (fanotify: the open/exec fails with EPERM) and `kill` (SIGKILL from
    /// the kernel after the syscall) actions; without it they are only reported.
    #[arg(long)]
    pub enforce: bool,
    /// Learn per-executable syscall baselines for SECS seconds, merge them into the state
    /// directory and exit. Without it, baselines found there are enforced as detections.
    #[arg(long, value_name = "SECS", value_parser = crate::parse_positive_secs, conflicts_with = "no_baselines")]
    pub learn: Option<f64>,
    /// Where baselines are kept.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/osprey")]
    pub state_dir: std::path::PathBuf,
    /// Do not load syscall baselines from the state directory.
    #[arg(long)]
    pub no_baselines: bool,
    /// File integrity monitoring of PATH (repeatable; directories recursively): a baseline
    /// of each file is kept in the state directory and every change raises one alert with
    /// the before/after SHA-256 and metadata diff.
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Validate rule files (no BPF needed): exit 0 if all load, 2 with file:line:col otherwise.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Print the embedded default rule set.
    Show,
}

fn read_sources(
    paths: &[std::path::PathBuf],
    defaults: bool,
) -> Result<Vec<(String, String)>, Failure> {
    let mut sources = Vec::new();
    if defaults {
        sources.push((DEFAULT_RULES_NAME.to_string(), DEFAULT_RULES.to_string()));
    }
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))?;
        sources.push((p.display().to_string(), text));
    }
    Ok(sources)
}

fn load_rules(sources: &[(String, String)]) -> Result<RuleSet, Failure> {
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    rules::load(&refs).map_err(|e| Failure::Usage(format!("invalid rules:\n{e}")))
}

fn joined(errors: Vec<rules::RuleError>) -> Failure {
    Failure::Usage(
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

pub fn run_rules(cmd: RulesCommand) -> Result<ExitCode, Failure> {
    match cmd {
        RulesCommand::Show => {
            print!("{DEFAULT_RULES}");
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Check { files } => {
            let sources = read_sources(&files, true)?;
            let set = load_rules(&sources)?;
            enforce::kill_entries(&set).map_err(joined)?;
            enforce::deny_marks(&set).map_err(joined)?;
            connect_deny::connect_denies(&set).map_err(joined)?;
            let own = set
                .rules
                .iter()
                .filter(|r| !r.origin.starts_with(DEFAULT_RULES_NAME))
                .count();
            println!("ok: {own} rules in {} file(s)", files.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn run_secure(args: SecureArgs) -> Result<ExitCode, Failure> {
    let sources = read_sources(&args.rules, !args.no_default_rules)?;
    let set = load_rules(&sources)?;
    if set.rules.is_empty() && args.watch.is_empty() {
        return Err(Failure::Usage(
            "no rules to run (--no-default-rules and no --rules or --watch)".into(),
        ));
    }
    let kill_entries = enforce::kill_entries(&set).map_err(joined)?;
    let deny_marks = enforce::deny_marks(&set).map_err(joined)?;
    let connect_denies = connect_deny::connect_denies(&set).map_err(joined)?;
    // Before any state is read: a user who may not trace gets 77, not an error about files.
    require_tracing_privileges("secure")?;
    if let Some(why) = osprey::state_dir::file_in_the_way(&args.state_dir) {
        return Err(Failure::Usage(why));
    }
    let baseline_path = BaselineFile::path_in(&args.state_dir);
    if args.learn.is_some() {
        crate::outfile::check_writable("--state-dir", &baseline_path, true)?;
    }
    let learned_before = BaselineFile::load(&baseline_path).map_err(Failure::Usage)?;
    if let Some(file) = &learned_before {
        baseline::validate(file)
            .map_err(|e| Failure::Usage(format!("{}: {e}", baseline_path.display())))?;
    }
    let baseline_mode = match (&args.learn, &learned_before) {
        (Some(_), _) => Some(baseline::Mode::Learn),
        (None, Some(_)) if !args.no_baselines => Some(baseline::Mode::Detect),
        _ => None,
    };
    let fim_db = if args.watch.is_empty() {
        None
    } else {
        Some(fim::start_database(&args.watch, &args.state_dir)?)
    };

    let denied = LoadOptions::denied_from_env();
    let mut capabilities = vec![load(
        process::SPEC,
        &LoadOptions {
            // Enforcing: failed execs too, so an exec denied in the kernel raises its alert.
            roles: (!args.enforce).then(|| process::CACHE_ROLES.to_vec()),
            denied_programs: denied.clone(),
            ..Default::default()
        },
    )?];
    let config = osprey::kernel::loader::KernelConfig {
        rate_per_process: args.run.rate_limit,
        rate_global: args.run.global_rate_limit,
        ..Default::default()
    };
    let opens = kernel_maps::load_rule_opens(
        &set,
        files::SPEC,
        LoadOptions {
            config: config.clone(),
            denied_programs: denied.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| match e {
        osprey::kernel::loader::LoadError::Map { .. } => Failure::Runtime(e.into()),
        e => Failure::Privilege(e.to_string()),
    })?;
    match opens {
        RuleOpens::NotNeeded => {
            eprintln!("osprey: no rule looks at file opens: not tracing them");
        }
        RuleOpens::Prefiltered { cap, inodes, names } => {
            eprintln!(
                "osprey: file opens prefiltered in the kernel by {inodes} inodes and {names} names from the rules"
            );
            capabilities.push(cap);
        }
        RuleOpens::Unfiltered { cap, rule } => {
            eprintln!("osprey: note: rule `{rule}` may match an open of any path: every file open reaches user space");
            capabilities.push(cap);
        }
    }
    let kill_in_kernel = args.enforce && !kill_entries.is_empty();
    let mut security_cap = load(
        security::SPEC,
        &LoadOptions {
            config,
            ring_bytes: args.run.ring_bytes(),
            denied_programs: denied,
            extra_globals: [
                if kill_in_kernel {
                    kernel_maps::kill_globals()
                } else {
                    Vec::new()
                },
                baseline_mode.map(baseline::globals).unwrap_or_default(),
                if fim_db.is_some() {
                    security::fim::kernel::globals()
                } else {
                    Vec::new()
                },
            ]
            .concat(),
            ..Default::default()
        },
    )?;
    report_degraded(&security_cap);
    let baseline_map = match baseline_mode {
        Some(mode) => Some(start_baselines(
            &mut security_cap,
            mode,
            learned_before.as_ref(),
            &args,
        )?),
        None => None,
    };
    let fim_detector = match fim_db {
        Some(start) => Some(fim::start_detector(&mut security_cap, start)?),
        None => None,
    };
    if kill_in_kernel {
        kernel_maps::fill_kill_map(&mut security_cap, &kill_entries)
            .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
    }
    capabilities.push(security_cap);

    let format = match args.run.output {
        Output::Json => AlertFormat::Json,
        Output::Table => AlertFormat::Table,
    };
    let alerts = AlertWriter::new(
        Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout())),
        Clock::now(),
        format,
    )
    .shared();
    // Deny in the kernel with BPF LSM where it loads and every deny rule is decidable there;
    // otherwise fanotify permission events.
    let mut kernel_deny = false;
    if args.enforce && !deny_marks.is_empty() {
        match lsm::kernel_denies(&set) {
            None => eprintln!(
                "osprey: deny rules use conditions the kernel cannot decide alone: fanotify enforces them"
            ),
            Some(denies) => match lsm::start(&denies) {
                Ok(cap) => {
                    let paths: Vec<&str> = denies.iter().map(|d| d.path.as_str()).collect();
                    eprintln!(
                        "osprey: enforcing deny rules with BPF LSM on {}",
                        paths.join(", ")
                    );
                    capabilities.push(cap);
                    kernel_deny = true;
                }
                Err(why) => eprintln!("osprey: BPF LSM unavailable ({why}): fanotify enforces deny rules"),
            },
        }
    }
    if args.enforce && !deny_marks.is_empty() && !kernel_deny {
        let fan = enforce::Fanotify::new(&deny_marks).map_err(|e| {
            Failure::Privilege(format!("deny rules need fanotify permission events: {e}"))
        })?;
        eprintln!(
            "osprey: enforcing deny rules with fanotify on {}",
            fan.marked.join(", ")
        );
        fan.spawn(set.clone(), alerts.clone());
    }
    if args.enforce && !connect_denies.is_empty() {
        let cap = connect_deny::start(&connect_denies).map_err(|why| {
            Failure::Runtime(anyhow::anyhow!(
                "deny rules on connect need cgroup connect4/connect6 programs: {why}"
            ))
        })?;
        eprintln!(
            "osprey: enforcing {} connect deny entries with cgroup connect4/connect6",
            connect_denies.len()
        );
        capabilities.push(cap);
    }
    if args.enforce && !kill_entries.is_empty() {
        eprintln!("osprey: enforcing {} kill rule entries with SIGKILL from the kernel (after the syscall completes)", kill_entries.len());
    }
    eprintln!("osprey: {} rules loaded", set.rules.len());
    let paths = baseline::SharedPaths::default();
    if let (Some(baseline::Mode::Detect), Some(file)) = (baseline_mode, &learned_before) {
        let mut known = paths.borrow_mut();
        for exe in &file.executables {
            known.insert(exe.key(), exe.path.clone());
        }
    }
    let mut detectors: Vec<Box<dyn osprey::pipeline::detect::Detector>> =
        vec![Box::new(RulesDetector {
            rules: set,
            enforcing: args.enforce,
            kernel_deny,
        })];
    if let Some(mode) = baseline_mode {
        detectors.push(Box::new(BaselineDetector {
            mode,
            paths: paths.clone(),
        }));
    }
    if let Some(d) = fim_detector {
        detectors.push(Box::new(d));
    }
    let sink = Box::new(DetectSink { detectors, alerts });
    let filter: EventFilter =
        Box::new(|event, _| !matches!(event.payload, Payload::Fork(_) | Payload::Exit(_)));
    let mut run = args.run.clone();
    if let Some(secs) = args.learn {
        run.duration = Some(secs);
    }
    let code = run_pipeline_into(capabilities, filter, &run, sink, "security events")?;
    if let (Some(baseline::Mode::Learn), Some(map)) = (baseline_mode, baseline_map) {
        let learned = baseline::harvest(&map, &paths.borrow());
        let count = learned.len();
        let mut file = learned_before.unwrap_or(BaselineFile {
            version: 1,
            executables: Vec::new(),
        });
        file.merge(learned);
        if let Err(e) = file.save(&baseline_path) {
            crate::outfile::rescued("--state-dir", &baseline_path, e, |p| file.save(p))?;
        }
        eprintln!(
            "osprey: learned syscall baselines of {count} executables; {} in {}",
            file.executables.len(),
            baseline_path.display()
        );
    }
    Ok(code)
}

/// Takes the baseline map out of the security object and, to detect, fills it.
fn start_baselines(
    security_cap: &mut osprey::kernel::loader::LoadedCapability,
    mode: baseline::Mode,
    file: Option<&BaselineFile>,
    args: &SecureArgs,
) -> Result<baseline::BaselineMap, Failure> {
    let entered = security_cap
        .outcomes
        .iter()
        .any(|o| o.role == "setid-enter" && o.chosen.is_some());
    if !entered {
        return Err(Failure::Privilege(
            "syscall baselines need a sys_enter hook (tp_btf or raw_tp), unavailable here; run with --no-baselines".into(),
        ));
    }
    let mut map = baseline::take_map(security_cap).map_err(|e| Failure::Runtime(e.into()))?;
    match (mode, file) {
        (baseline::Mode::Detect, Some(file)) => {
            for warning in
                baseline::fill(&mut map, file).map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?
            {
                eprintln!("osprey: warning: {warning}");
            }
            eprintln!(
                "osprey: syscall baselines of {} executables loaded from {}",
                file.executables.len(),
                BaselineFile::path_in(&args.state_dir).display()
            );
        }
        _ => eprintln!(
            "osprey: learning syscall baselines for {} s",
            args.learn.unwrap_or_default()
        ),
    }
    Ok(map)
}
