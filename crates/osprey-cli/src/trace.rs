//! `osprey files` and `osprey exec`: load the capability (and the process capability that
//! feeds the cache), then run the shared pipeline into a table or JSON lines.

use std::cell::RefCell;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use osprey::container::filter::ContainerFilter;
use osprey::container::gate::KernelGate;
use osprey::kernel::loader::{KernelConfig, LoadOptions, LoadedCapability};
use osprey::kernel::privileges;
use osprey::pipeline::cache::ProcessCache;
use osprey::pipeline::event::Payload;
use osprey::pipeline::run::{EventFilter, Pipeline, RunOptions};
use osprey::pipeline::sink::{Clock, JsonSink, Layout, Sink, TableSink};
use osprey::{files, process};

use crate::{Failure, Output, RunArgs};

/// Who to trace; for `files` these filters run in the kernel.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Only this process (thread group id).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only processes with this command name (as in /proc/PID/comm, at most 15 bytes).
    #[arg(long)]
    pub comm: Option<String>,
    /// Only this user id.
    #[arg(long)]
    pub uid: Option<u32>,
}

/// Which containers to trace (decided on each event's cgroup: for `files`, in the kernel
/// once a container's verdict is final).
#[derive(Args, Debug, Clone, Default)]
pub struct ContainerArgs {
    /// Only this container: its name, full id or an id prefix of 12+ digits (repeatable).
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Only containers of this Kubernetes pod (repeatable).
    #[arg(long = "pod", value_name = "NAME")]
    pub pods: Vec<String>,
    /// Only containers in this Kubernetes namespace (repeatable).
    #[arg(long = "namespace", value_name = "NAME")]
    pub namespaces: Vec<String>,
}

impl ContainerArgs {
    pub fn filter(&self) -> ContainerFilter {
        ContainerFilter {
            containers: self.containers.clone(),
            pods: self.pods.clone(),
            namespaces: self.namespaces.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub containers: ContainerArgs,
    /// Only opens whose absolute path starts with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub path_prefix: Option<String>,
    /// Only failed opens.
    #[arg(long, conflicts_with = "succeeded")]
    pub failed: bool,
    /// Only successful opens.
    #[arg(long)]
    pub succeeded: bool,
    /// Also show Osprey's own opens (left out by default, like its reads of /proc).
    #[arg(long)]
    pub include_self: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub containers: ContainerArgs,
    /// Only failed execs (no forks or exits).
    #[arg(long)]
    pub failed: bool,
    /// Also show forks and exits.
    #[arg(long, conflicts_with = "failed")]
    pub lifecycle: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

fn validate_target(t: &TargetArgs) -> Result<(), Failure> {
    validate_pids_and_comm(t.pid.as_slice(), t.comm.as_deref())
}

/// `--pid` must name a live process and `--comm` fit the kernel's 15 bytes.
pub(crate) fn validate_pids_and_comm(pids: &[u32], comm: Option<&str>) -> Result<(), Failure> {
    for pid in pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Failure::Usage(format!("--pid {pid}: no such process")));
        }
        // Events carry the process (thread group) id: a thread's own id would match nothing.
        if let Some(tgid) = osprey::process::thread_group_of(*pid).filter(|t| t != pid) {
            return Err(Failure::Usage(format!(
                "--pid {pid} is a thread of process {tgid}; give the process id (--pid {tgid})"
            )));
        }
    }
    if let Some(comm) = comm {
        if comm.is_empty() || comm.len() > 15 {
            return Err(Failure::Usage(format!(
                "--comm `{comm}`: a command name is 1 to 15 bytes (the kernel truncates longer ones)"
            )));
        }
    }
    Ok(())
}

pub(crate) fn require_tracing_privileges(command: &str) -> Result<(), Failure> {
    let missing = privileges::missing_for_tracing(privileges::effective());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::Privilege(format!(
            "osprey {command} needs {} to load and attach tracing programs (run as root or grant them)",
            missing.join(" and ")
        )))
    }
}

pub(crate) fn load(
    spec: osprey::kernel::loader::CapabilitySpec,
    options: &LoadOptions,
) -> Result<LoadedCapability, Failure> {
    LoadedCapability::load(spec, options).map_err(|e| {
        if privileges::effective() == 0 {
            Failure::Privilege(e.to_string())
        } else {
            Failure::Privilege(format!("{e}; see `osprey check`"))
        }
    })
}

/// The process capability with only what feeds the process cache (exec, fork, exit).
pub(crate) fn load_process_cache(
    denied: &std::collections::BTreeSet<String>,
) -> Result<LoadedCapability, Failure> {
    load(
        process::SPEC,
        &LoadOptions {
            roles: Some(process::CACHE_ROLES.to_vec()),
            denied_programs: denied.clone(),
            ..Default::default()
        },
    )
}

pub(crate) fn report_degraded(cap: &LoadedCapability) {
    for outcome in &cap.outcomes {
        if outcome.chosen.is_none() {
            eprintln!(
                "osprey: warning: {} {} unavailable: {}",
                cap.spec.name,
                outcome.role,
                outcome.reason()
            );
        }
    }
}

fn kernel_config(t: &TargetArgs, run: &RunArgs) -> KernelConfig {
    KernelConfig {
        pid: t.pid,
        uid: t.uid,
        comm: t.comm.clone(),
        rate_per_process: run.rate_limit,
        rate_global: run.global_rate_limit,
        cgroup_filter: false,
    }
}

fn user_target_matches(t: &TargetArgs, ctx: &osprey::pipeline::cache::ProcessContext<'_>) -> bool {
    t.pid.is_none_or(|p| p == ctx.pid)
        && t.uid.is_none_or(|u| u == ctx.uid)
        && t.comm.as_ref().is_none_or(|c| c.as_bytes() == ctx.comm)
}

pub fn run_files(args: FilesArgs) -> Result<ExitCode, Failure> {
    validate_target(&args.target)?;
    require_tracing_privileges("files")?;
    let denied = LoadOptions::denied_from_env();
    let process = load_process_cache(&denied)?;
    let containers = args.containers.filter();
    let mut files_cap = load(
        files::SPEC,
        &LoadOptions {
            config: KernelConfig {
                cgroup_filter: !containers.is_empty(),
                ..kernel_config(&args.target, &args.run)
            },
            ring_bytes: args.run.ring_bytes(),
            denied_programs: denied,
            // This tracer exists for opens: a hook on every syscall exit costs less per open.
            prefer_every_syscall_hook: true,
            ..Default::default()
        },
    )?;
    let gate = (!containers.is_empty())
        .then(|| RefCell::new(KernelGate::new(&mut files_cap, containers.clone())));
    let prefix = args.path_prefix.clone().map(String::into_bytes);
    let (failed, succeeded) = (args.failed, args.succeeded);
    let me = (!args.include_self).then(std::process::id);
    let filter: EventFilter = Box::new(move |event, ctx| match &event.payload {
        Payload::FileOpen(f) => {
            let container = ctx.container.map(|c| &**c);
            let in_container = match &gate {
                Some(gate) => gate.borrow_mut().wants(ctx.cgroup_id, container),
                None => containers.matches(container),
            };
            me != Some(ctx.pid)
                && in_container
                && prefix
                    .as_ref()
                    .is_none_or(|p| f.abs_path.starts_with(p) || f.path.starts_with(p))
                && (!failed || f.failed())
                && (!succeeded || !f.failed())
        }
        _ => {
            // Exec, fork and exit events keep coming when every file open is dropped:
            // containers renamed or described late are reopened on them too.
            if let Some(gate) = &gate {
                gate.borrow_mut().refresh();
            }
            false
        }
    });
    run_pipeline(
        vec![process, files_cap],
        filter,
        &args.run,
        Layout::Files,
        "file opens",
    )
}

pub fn run_exec(args: ExecArgs) -> Result<ExitCode, Failure> {
    validate_target(&args.target)?;
    require_tracing_privileges("exec")?;
    if args.run.rate_limit.is_some() || args.run.global_rate_limit.is_some() {
        eprintln!("osprey: note: exec, fork and exit events are never rate limited");
    }
    let process = load(
        process::SPEC,
        &LoadOptions {
            ring_bytes: args.run.ring_bytes(),
            denied_programs: LoadOptions::denied_from_env(),
            ..Default::default()
        },
    )?;
    report_degraded(&process);
    let target = args.target.clone();
    let (failed, lifecycle) = (args.failed, args.lifecycle);
    let containers = args.containers.filter();
    let filter: EventFilter = Box::new(move |event, ctx| {
        let kind_wanted = match &event.payload {
            Payload::Exec(x) => !failed || x.ret < 0,
            Payload::Fork(_) | Payload::Exit(_) => lifecycle,
            _ => false,
        };
        kind_wanted
            && user_target_matches(&target, ctx)
            && containers.matches(ctx.container.map(|c| &**c))
    });
    run_pipeline(vec![process], filter, &args.run, Layout::Exec, "execs")
}

pub(crate) fn run_pipeline(
    capabilities: Vec<LoadedCapability>,
    filter: EventFilter,
    run: &RunArgs,
    layout: Layout,
    what: &str,
) -> Result<ExitCode, Failure> {
    let clock = Clock::now();
    let stdout = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let sink: Box<dyn Sink + '_> = match run.output {
        Output::Json => Box::new(JsonSink::new(stdout, clock)),
        Output::Table => Box::new(TableSink::new(stdout, clock, layout)),
    };
    run_pipeline_into(capabilities, filter, run, sink, what)
}

/// Runs the shared pipeline into any sink (e.g. the detect stage of `osprey secure`).
pub(crate) fn run_pipeline_into(
    capabilities: Vec<LoadedCapability>,
    filter: EventFilter,
    run: &RunArgs,
    mut sink: Box<dyn Sink + '_>,
    what: &str,
) -> Result<ExitCode, Failure> {
    // `--stats` reports ns per run: it needs them on.
    let _run_time_stats = run.run_time.enable(run.stats.is_some());
    let mut cache = ProcessCache::new(65536, 5_000_000_000);
    cache.seed_from_proc();
    let options = RunOptions {
        duration: run.duration.map(Duration::from_secs_f64),
        count: run.count,
        stats_every: run.stats.map(Duration::from_secs_f64),
        ..Default::default()
    };
    let pipeline = Pipeline::new(capabilities, cache, sink.as_mut(), filter);
    let hooks: Vec<String> = pipeline
        .capabilities
        .iter()
        .flat_map(LoadedCapability::hook_labels)
        .collect();
    // Scripts and tests wait for this line: everything is attached once it is printed.
    eprintln!(
        "osprey: tracing {what} via {}; Ctrl-C to stop",
        hooks.join(", ")
    );
    let summary = pipeline.run_blocking(&options)?;
    drop(sink);
    let mut stderr = std::io::stderr().lock();
    let _ = match run.output {
        Output::Json => writeln!(stderr, "{}", summary.to_json()),
        Output::Table => write!(stderr, "{}", summary.render()),
    };
    if summary.stats.total_dropped() > 0 {
        let _ = writeln!(
            stderr,
            "osprey: warning: {} events were dropped because a ring buffer was full (try --ring-mib)",
            summary.stats.total_dropped()
        );
    }
    Ok(ExitCode::SUCCESS)
}
