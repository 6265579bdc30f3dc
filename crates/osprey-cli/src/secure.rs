//! `osprey secure` (rules on live events, optional enforcement) and `osprey rules`
//! (check rule files without BPF, show the embedded defaults).

use std::io::BufWriter;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use osprey::kernel::loader::{KernelConfig, LoadError, LoadOptions};
use osprey::pipeline::detect::{AlertFormat, AlertWriter, DetectSink};
use osprey::pipeline::event::Payload;
use osprey::pipeline::run::EventFilter;
use osprey::pipeline::sink::Clock;
use osprey::security::rules::{self, RuleSet, Status, DEFAULT_RULES, DEFAULT_RULES_NAME};
use osprey::security::session::{
    self, Baselines, Enforcement, EnforcementPlan, Level, LoadPlan, Note, Session, SessionError,
};

use crate::trace::{require_tracing_privileges, run_pipeline_into};
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
    /// Validate rule files or directories (no BPF needed): Osprey, Sigma and Falco rules,
    /// one line per rule (loaded, unsupported with the reason, disabled) and counts per
    /// source and status; exit 2 with file:line:col on a malformed file.
    Check {
        #[arg(required = true, value_name = "PATH")]
        files: Vec<std::path::PathBuf>,
        /// `json`: one object per rule {source, file, rule, id, status, reason}.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print the embedded default rule set.
    Show,
}

/// The exit a session error calls for: bad input 2, a missing kernel feature 77.
fn failure(e: SessionError) -> Failure {
    match e {
        SessionError::Invalid(m) => Failure::Usage(m),
        SessionError::Load(e @ LoadError::Map { .. }) => Failure::Runtime(e.into()),
        SessionError::Load(e) => Failure::Privilege(e.to_string()),
        SessionError::Unsupported(m) => Failure::Privilege(m),
        SessionError::Runtime(m) => Failure::Runtime(anyhow::anyhow!(m)),
    }
}

pub fn run_rules(cmd: RulesCommand) -> Result<ExitCode, Failure> {
    match cmd {
        RulesCommand::Show => {
            print!("{DEFAULT_RULES}");
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Check { files, output } => {
            let sources = session::read_rule_sources(&files, true).map_err(failure)?;
            let set = session::load_rules(&sources).map_err(failure)?;
            EnforcementPlan::compile(&set).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                Failure::Usage(lines.join("\n"))
            })?;
            print_check(&set, output, sources.len() - 1);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Every rule of the checked files (not the embedded defaults) and the counts.
fn print_check(set: &RuleSet, output: Output, files: usize) {
    let report = set.report.iter().filter(|r| r.file != DEFAULT_RULES_NAME);
    if output == Output::Json {
        for r in report {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return;
    }
    println!(
        "{:<7} {:<12} {:<40} RULE / REASON",
        "SOURCE", "STATUS", "FILE"
    );
    for r in report {
        let file = r.file.rsplit('/').next().unwrap_or(&r.file);
        println!(
            "{:<7} {:<12} {:<40} {}{}",
            r.source.name(),
            r.status.name(),
            file,
            r.rule,
            r.reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        );
    }
    let counts = rules::counts(set.report.iter().filter(|r| r.file != DEFAULT_RULES_NAME));
    for ((source, status), n) in &counts {
        println!("{}: {n} {}", source.name(), status.name());
    }
    let loaded: usize = counts
        .iter()
        .filter(|((_, status), _)| *status == Status::Loaded)
        .map(|(_, n)| n)
        .sum();
    println!("ok: {loaded} rules in {files} file(s)");
}

fn session_options(args: &SecureArgs) -> session::Options {
    session::Options {
        default_rules: !args.no_default_rules,
        rule_files: args.rules.clone(),
        state_dir: args.state_dir.clone(),
        baselines: match (args.learn, args.no_baselines) {
            (Some(_), _) => Baselines::Learn,
            (None, true) => Baselines::Off,
            (None, false) => Baselines::Detect,
        },
        watch: args.watch.clone(),
        enforcement: if args.enforce {
            Enforcement::Enforce
        } else {
            Enforcement::Checked
        },
    }
}

fn load_plan(args: &SecureArgs) -> LoadPlan {
    let denied = LoadOptions::denied_from_env();
    let config = KernelConfig {
        rate_per_process: args.run.rate_limit,
        rate_global: args.run.global_rate_limit,
        ..Default::default()
    };
    LoadPlan {
        process: Some(LoadOptions {
            denied_programs: denied.clone(),
            ..Default::default()
        }),
        opens_spec: osprey::files::SPEC,
        opens: LoadOptions {
            config: config.clone(),
            denied_programs: denied.clone(),
            ..Default::default()
        },
        security: LoadOptions {
            config,
            ring_bytes: args.run.ring_bytes(),
            denied_programs: denied,
            ..Default::default()
        },
        baselines_need_enter: true,
    }
}

pub(crate) fn render_notes(notes: &[Note]) {
    for note in notes {
        match note.level {
            Level::Info => eprintln!("osprey: {}", note.text),
            Level::Warning => eprintln!("osprey: warning: {}", note.text),
        }
    }
}

/// Checks, loads and starts the session, saying what it did.
fn start(args: &SecureArgs) -> Result<Session, Failure> {
    // Before any state is read: a user who may not trace gets 77, not an error about files.
    require_tracing_privileges("secure")?;
    if let Some(why) = osprey::state_dir::file_in_the_way(&args.state_dir) {
        return Err(Failure::Usage(why));
    }
    if args.learn.is_some() {
        let baselines = osprey::security::baseline::BaselineFile::path_in(&args.state_dir);
        crate::outfile::check_writable("--state-dir", &baselines, true)?;
    }
    let prepared = session::prepare(&session_options(args)).map_err(failure)?;
    if prepared.rules.rules.is_empty() && args.watch.is_empty() {
        return Err(Failure::Usage(
            "no rules to run (--no-default-rules and no --rules or --watch)".into(),
        ));
    }
    let session = prepared.start(load_plan(args)).map_err(failure)?;
    render_notes(&session.notes);
    if let Some(secs) = args.learn {
        eprintln!("osprey: learning syscall baselines for {secs} s");
    }
    eprintln!("osprey: {} rules loaded", session.summary.rules);
    Ok(session)
}

pub fn run_secure(args: SecureArgs) -> Result<ExitCode, Failure> {
    let mut session = start(&args)?;
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
    session.spawn_enforcers(&alerts);
    let detectors = std::mem::take(&mut session.detectors);
    let sink = Box::new(DetectSink { detectors, alerts });
    let filter: EventFilter =
        Box::new(|event, _| !matches!(event.payload, Payload::Fork(_) | Payload::Exit(_)));
    let mut run = args.run.clone();
    if let Some(secs) = args.learn {
        run.duration = Some(secs);
    }
    let capabilities = std::mem::take(&mut session.capabilities);
    let code = run_pipeline_into(capabilities, filter, &run, sink, "security events")?;
    if let Some(learned) = session.finish().map_err(failure)? {
        eprintln!(
            "osprey: learned syscall baselines of {} executables; {} in {}",
            learned.executables,
            learned.total,
            learned.path.display()
        );
    }
    Ok(code)
}
