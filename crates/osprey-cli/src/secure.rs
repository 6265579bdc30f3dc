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
use osprey::security::rules::prefilter::{self, OpenPrefilter};
use osprey::security::rules::{self, RuleSet, DEFAULT_RULES, DEFAULT_RULES_NAME};
use osprey::security::{detect::RulesDetector, enforce, kernel_maps, lsm};
use osprey::{files, process, security};

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
    if set.rules.is_empty() {
        return Err(Failure::Usage(
            "no rules to run (--no-default-rules and no --rules)".into(),
        ));
    }
    let kill_entries = enforce::kill_entries(&set).map_err(joined)?;
    let deny_marks = enforce::deny_marks(&set).map_err(joined)?;
    require_tracing_privileges("secure")?;

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
    match prefilter::for_rules(&set) {
        OpenPrefilter::Patterns(p) if p.is_empty() => {
            eprintln!("osprey: no rule looks at file opens: not tracing them");
        }
        OpenPrefilter::Patterns(p) => {
            let mut files_cap = load(
                files::SPEC,
                &LoadOptions {
                    config: config.clone(),
                    denied_programs: denied.clone(),
                    extra_globals: kernel_maps::prefilter_globals(),
                    ..Default::default()
                },
            )?;
            let (inodes, names) = kernel_maps::fill_prefilter(&mut files_cap, &p)
                .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
            eprintln!(
                "osprey: file opens prefiltered in the kernel by {inodes} inodes and {names} names from the rules"
            );
            capabilities.push(files_cap);
        }
        OpenPrefilter::Unfiltered { rule } => {
            eprintln!("osprey: note: rule `{rule}` may match an open of any path: every file open reaches user space");
            capabilities.push(load(
                files::SPEC,
                &LoadOptions {
                    config: config.clone(),
                    denied_programs: denied.clone(),
                    ..Default::default()
                },
            )?);
        }
    }
    let kill_in_kernel = args.enforce && !kill_entries.is_empty();
    let mut security_cap = load(
        security::SPEC,
        &LoadOptions {
            config,
            ring_bytes: args.run.ring_mib.map(|m| m << 20),
            denied_programs: denied,
            extra_globals: if kill_in_kernel {
                kernel_maps::kill_globals()
            } else {
                Vec::new()
            },
            ..Default::default()
        },
    )?;
    report_degraded(&security_cap);
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
    if args.enforce && !kill_entries.is_empty() {
        eprintln!("osprey: enforcing {} kill rule entries with SIGKILL from the kernel (after the syscall completes)", kill_entries.len());
    }
    eprintln!("osprey: {} rules loaded", set.rules.len());
    let sink = Box::new(DetectSink {
        detectors: vec![Box::new(RulesDetector {
            rules: set,
            enforcing: args.enforce,
            kernel_deny,
        })],
        alerts,
    });
    let filter: EventFilter =
        Box::new(|event, _| !matches!(event.payload, Payload::Fork(_) | Payload::Exit(_)));
    run_pipeline_into(capabilities, filter, &args.run, sink, "security events")
}
