//! `osprey syscalls`: counts, errors by errno and latency per process and syscall, counted
//! in the kernel and printed when the run ends. Each process's container is looked up at
//! the end (`--by container`, `--by container-syscall`, a CONTAINER column once any is seen).

use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use osprey::kernel::loader::{KernelConfig, LoadOptions};
use osprey::pipeline::cache::{ProcessCache, ProcessContext};
use osprey::pipeline::event::Event;
use osprey::pipeline::run::{run_blocking, Pipeline, RunHooks, RunOptions, StopReason};
use osprey::pipeline::sink::Sink;
use osprey::syscalls::{self, output, Counts, GroupBy};

use crate::trace::{load, report_degraded, require_tracing_privileges, TargetArgs};
use crate::{Failure, Output};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// One row per process and syscall.
    ProcessSyscall,
    /// One row per syscall over all traced processes (like syscount).
    Syscall,
    /// One row per process over all its syscalls (like syscount -P).
    Process,
    /// One row per container and syscall (the host's processes are container `host`).
    ContainerSyscall,
    /// One row per container over all its syscalls.
    Container,
}

#[derive(Args, Debug)]
pub struct SyscallsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_positive_secs)]
    pub duration: Option<f64>,
    /// Rows to print, most calls first (default: 20 in a table, all in JSON).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub top: Option<u64>,
    /// How rows are grouped.
    #[arg(long, value_enum, default_value_t = By::ProcessSyscall)]
    pub by: By,
    /// `table`: aligned columns; `json`: one object per row (docs/events.md).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub containers: crate::trace::ContainerArgs,
    #[command(flatten)]
    pub run_time: crate::RunTimeStatsArg,
}

/// How often the counted processes' cgroups are read while they live (their containers are
/// named at the end, when some are gone).
const CAPTURE_EVERY: Duration = Duration::from_secs(1);

/// Reads the cgroups of processes counted since the last tick.
struct Capture<'c> {
    counts: &'c Counts,
    seen: syscalls::Cgroups,
}

impl RunHooks for Capture<'_> {
    type Request = ();

    fn tick(&mut self, _: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        self.seen.capture(self.counts.pids());
        ControlFlow::Continue(())
    }
}

/// Nothing is streamed by this capability; the run loop only needs somewhere to write.
struct NoEvents;

impl Sink for NoEvents {
    fn write(&mut self, _: &Event, _: &ProcessContext<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn run(args: SyscallsArgs) -> Result<ExitCode, Failure> {
    crate::trace::validate_pids_and_comm(args.target.pid.as_slice(), args.target.comm.as_deref())?;
    require_tracing_privileges("syscalls")?;
    let mut cap = load(
        syscalls::SPEC,
        &LoadOptions {
            config: KernelConfig {
                pid: args.target.pid,
                uid: args.target.uid,
                comm: args.target.comm.clone(),
                ..Default::default()
            },
            denied_programs: LoadOptions::denied_from_env(),
            ..Default::default()
        },
    )?;
    report_degraded(&cap);
    let counts = Counts::new(&mut cap).map_err(|e| Failure::Runtime(e.into()))?;
    let hooks: Vec<String> = cap.hook_labels().collect();

    let _run_time_stats = args.run_time.enable(false);
    let mut sink = NoEvents;
    let pipeline = Pipeline::new(
        vec![cap],
        ProcessCache::new(16, 5_000_000_000),
        &mut sink,
        Box::new(|_, _| false),
    );
    let run_options = RunOptions {
        duration: args.duration.map(Duration::from_secs_f64),
        // Nothing to drain: wake rarely.
        drain_interval: Duration::from_millis(200),
        tick_every: Some(CAPTURE_EVERY),
        ..Default::default()
    };
    // Scripts and tests wait for this line: everything is attached once it is printed.
    eprintln!(
        "osprey: tracing syscalls via {}; Ctrl-C to stop",
        hooks.join(", ")
    );
    let mut capture = Capture {
        counts: &counts,
        seen: syscalls::Cgroups::default(),
    };
    let summary = run_blocking(pipeline, &run_options, &mut capture)?;

    let by = match args.by {
        By::ProcessSyscall => GroupBy::ProcessSyscall,
        By::Syscall => GroupBy::Syscall,
        By::Process => GroupBy::Process,
        By::ContainerSyscall => GroupBy::ContainerSyscall,
        By::Container => GroupBy::Container,
    };
    let mut counted = counts.read();
    syscalls::tag_containers(&mut counted, &capture.seen, &args.containers.filter());
    let mut rows = syscalls::group(&counted, by);
    let top = args.top.or(match args.output {
        Output::Table => Some(20),
        Output::Json => None,
    });
    if let Some(n) = top {
        rows.truncate(n as usize);
    }
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    match args.output {
        Output::Json => output::write_json(&rows, by, &mut stdout)?,
        Output::Table => output::write_table(&rows, by, &mut stdout)?,
    }
    stdout.flush()?;

    let mut stderr = std::io::stderr().lock();
    let _ = match args.output {
        Output::Json => writeln!(stderr, "{}", summary.to_json()),
        Output::Table => write!(stderr, "{}", summary.render()),
    };
    let lost = summary.stats.total_dropped();
    if lost > 0 {
        let _ = writeln!(
            stderr,
            "osprey: warning: {lost} calls were not counted because a count map was full"
        );
    }
    Ok(ExitCode::SUCCESS)
}
