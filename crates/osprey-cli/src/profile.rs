//! `osprey profile`: on-CPU (or off-CPU) profile of every CPU or of chosen processes,
//! written as a top-N table, JSON, folded stacks, flame graph SVG and/or pprof.

use std::cell::RefCell;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use osprey::kernel::loader::LoadedCapability;
use osprey::profile::{
    self, output, pprof, Profile, ProfileKind, ProfileOptions, Session, UnwindMode,
};

use crate::trace::{load, require_tracing_privileges};
use crate::{Failure, Output};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Unwind {
    /// Per process: frame pointers where they agree with dwarf on its first samples,
    /// dwarf otherwise.
    Auto,
    /// Frame pointers, walked in the kernel, the first frame checked with .eh_frame
    /// (cheapest; truncated without frame pointers).
    Fp,
    /// Copy the user stack per sample and unwind with .eh_frame in user space.
    Dwarf,
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Samples per second on each CPU (1 to 10000).
    #[arg(long, short = 'F', value_name = "HZ", default_value_t = 99, value_parser = parse_frequency)]
    pub freq: u64,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_positive_secs)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub run_time: crate::RunTimeStatsArg,
    /// Only these processes (repeatable).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Vec<u32>,
    /// With --pid: also the processes they start from now on.
    #[arg(long, requires = "pid")]
    pub children: bool,
    /// Only processes with this command name (at most 15 bytes).
    #[arg(long)]
    pub comm: Option<String>,
    /// Only processes in this cgroup v2 directory or below it (in the kernel).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Kernel stacks only.
    #[arg(long, conflicts_with = "user_only")]
    pub kernel_only: bool,
    /// User stacks only.
    #[arg(long)]
    pub user_only: bool,
    /// How user stacks are unwound.
    #[arg(long, value_enum, default_value_t = Unwind::Auto)]
    pub unwind: Unwind,
    /// Bytes of user stack first copied per sample for dwarf unwinding (1024 to 65536);
    /// doubled (up to 65536) for a process whose stacks do not fit.
    #[arg(long, value_name = "BYTES", default_value_t = profile::DEFAULT_STACK_WINDOW,
          value_parser = clap::value_parser!(u32).range(1024..=profile::MAX_STACK_WINDOW as i64))]
    pub stack_bytes: u32,
    /// Time blocked per stack (sched_switch) instead of CPU samples.
    #[arg(long)]
    pub off_cpu: bool,
    /// Write folded stacks here.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Begin each folded stack with the process's container (name, or short id; `host`
    /// outside any).
    #[arg(long, requires = "folded")]
    pub folded_container: bool,
    /// Write an interactive flame graph here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write a gzipped pprof profile here.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Rows of the function table.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// `table`: top functions; `json`: the aggregated profile.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Every process is sampled; at the end, the stacks of processes outside these
    /// containers are left out of every output and of the totals. Last: the heading
    /// applies to every option after it.
    #[command(flatten, next_help_heading = CONTAINER_HEADING)]
    pub containers: crate::trace::ContainerArgs,
}

/// The help heading of `--container`, `--pod` and `--namespace` (profile, memory).
pub(crate) const CONTAINER_HEADING: &str =
    "Containers (decided in user space at the end, on each process's cgroup as read while it ran)";

fn parse_frequency(s: &str) -> Result<u64, String> {
    let hz: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of samples per second"))?;
    if (1..=profile::MAX_FREQUENCY_HZ).contains(&hz) {
        Ok(hz)
    } else {
        Err(format!(
            "{hz} Hz is out of range: use 1 to {} samples per second per CPU",
            profile::MAX_FREQUENCY_HZ
        ))
    }
}

fn options(args: &ProfileArgs) -> Result<ProfileOptions, Failure> {
    crate::trace::validate_pids_and_comm(&args.pid, args.comm.as_deref())?;
    let cgroup = match &args.cgroup {
        Some(path) => Some(
            profile::cgroup_target(path).map_err(|e| Failure::Usage(format!("--cgroup {e}")))?,
        ),
        None => None,
    };
    if args.off_cpu && args.unwind == Unwind::Dwarf {
        return Err(Failure::Usage(
            "--unwind dwarf works for CPU samples only; off-CPU stacks use frame pointers".into(),
        ));
    }
    Ok(ProfileOptions {
        kind: if args.off_cpu {
            ProfileKind::OffCpu
        } else {
            ProfileKind::Cpu
        },
        frequency_hz: args.freq,
        pids: args.pid.clone(),
        children: args.children,
        comm: args.comm.clone(),
        cgroup,
        kernel: !args.user_only,
        user: !args.kernel_only,
        unwind: match args.unwind {
            Unwind::Auto => UnwindMode::Auto,
            Unwind::Fp => UnwindMode::FramePointer,
            Unwind::Dwarf => UnwindMode::Dwarf,
        },
        user_stack_bytes: args.stack_bytes,
        fix_first_frame: true,
        python: true,
        containers: args.containers.filter(),
    })
}

/// What the title of the flame graph names.
fn target_label(args: &ProfileArgs) -> String {
    let target = if let Some(&pid) = args.pid.first() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        Some(format!("{} (pid {pid})", comm.trim()))
    } else {
        match (&args.comm, &args.cgroup) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(g)) => Some(format!("cgroup {}", g.display())),
            (None, None) => None,
        }
    };
    match (target, containers_label(&args.containers)) {
        (Some(t), Some(c)) => format!("{t} in {c}"),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => "all processes".into(),
    }
}

/// `container web or db, pod web-0, namespace shop`; None without a container filter.
fn containers_label(args: &crate::trace::ContainerArgs) -> Option<String> {
    let parts: Vec<String> = [
        ("container", &args.containers),
        ("pod", &args.pods),
        ("namespace", &args.namespaces),
    ]
    .into_iter()
    .filter(|(_, values)| !values.is_empty())
    .map(|(what, values)| format!("{what} {}", values.join(" or ")))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The output files and their flags.
fn output_files(args: &ProfileArgs) -> impl Iterator<Item = (&'static str, &PathBuf)> {
    [
        ("--folded", &args.folded),
        ("--svg", &args.svg),
        ("--pprof", &args.pprof),
    ]
    .into_iter()
    .filter_map(|(flag, path)| Some((flag, path.as_ref()?)))
}

pub fn run(args: ProfileArgs) -> Result<ExitCode, Failure> {
    let opts = options(&args)?;
    for (flag, path) in output_files(&args) {
        crate::outfile::check_writable(flag, path, false)?;
    }
    require_tracing_privileges("profile")?;
    let mut load_options = opts.load_options();
    load_options.denied_programs = osprey::kernel::loader::LoadOptions::denied_from_env();
    let mut cap: LoadedCapability = load(profile::SPEC, &load_options)?;
    let hooks: Vec<String> = cap.hook_labels().collect();
    // Named now: a target process may be gone by the end.
    let label = target_label(&args);
    let what = match opts.kind {
        ProfileKind::Cpu => format!("CPU samples at {} Hz", opts.frequency_hz),
        ProfileKind::OffCpu => "off-CPU time".to_string(),
    };
    let session = Rc::new(RefCell::new(
        Session::new(&mut cap, opts).map_err(|e| Failure::Runtime(e.into()))?,
    ));
    // Scripts and tests wait for this line: everything is attached once it is printed.
    eprintln!(
        "osprey: tracing {what} via {}; Ctrl-C to stop",
        hooks.join(", ")
    );
    let progress = std::io::stderr().is_terminal();
    let (events, ticks) = (session.clone(), session.clone());
    let summary = crate::aggregate::run(
        cap,
        args.duration,
        &args.run_time,
        move |event| events.borrow_mut().on_event(event),
        move |caps| {
            if let Some(p) = ticks.borrow_mut().tick(caps).filter(|_| progress) {
                eprint!("\r{p}   ");
            }
        },
    )?;
    if progress {
        eprintln!();
    }
    let session = Rc::try_unwrap(session)
        .map_err(|_| Failure::Runtime(anyhow::anyhow!("profile session still shared")))?
        .into_inner();
    let elapsed = session.elapsed_secs();
    let finishing = Instant::now();
    let profile = session.finish(label, summary.stats.total_dropped());
    write_outputs(&args, &profile)?;
    let write_secs = finishing.elapsed().as_secs_f64();

    let mut stderr = std::io::stderr().lock();
    let losses = serde_json::to_value(&profile.losses).unwrap_or_default();
    match args.output {
        Output::Json => {
            let mut json = summary.to_json();
            json["profile"] = serde_json::json!({
                "total": profile.total,
                "unit": profile.unit,
                "stacks": profile.stacks.len(),
                "losses": losses,
                "unwinders": profile.unwinders,
                "symbolize_and_write_secs": write_secs,
            });
            let _ = writeln!(stderr, "{json}");
        }
        Output::Table => {
            let _ = write!(stderr, "{}", summary.render());
            let _ = writeln!(
                stderr,
                "profile: {} {} in {} stacks over {elapsed:.1} s; losses: {}",
                profile.total,
                profile.unit,
                profile.stacks.len(),
                crate::words::counters_text(&losses)
            );
            for u in &profile.unwinders {
                let _ = writeln!(
                    stderr,
                    "profile: {}: {} ({} samples)",
                    u.binary,
                    u.unwinder.label(),
                    u.samples
                );
            }
        }
    }
    if profile.stacks.is_empty() {
        let why = match containers_label(&args.containers) {
            Some(c) => format!("no process in {c} ran on a CPU while profiled, or none exists"),
            None => "the target did not run on a CPU while profiled".into(),
        };
        let _ = writeln!(stderr, "osprey: no samples were taken ({why})");
    }
    if profile.losses.total_lost_samples() > 0 {
        let _ = writeln!(
            stderr,
            "osprey: warning: {} samples were lost (count map full or ring full)",
            profile.losses.total_lost_samples()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_outputs(args: &ProfileArgs, profile: &Profile) -> Result<(), Failure> {
    let start_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64 - (profile.duration_secs * 1e9) as i64)
        .unwrap_or(0);
    // Every output is attempted; the first failure is reported after the others.
    let mut failed = Ok(());
    for (flag, path) in output_files(args) {
        let written = crate::outfile::write_or_rescue(flag, path, |f| match flag {
            "--folded" => output::write_folded(profile, args.folded_container, f),
            "--svg" => output::write_svg(profile, f),
            _ => pprof::write(profile, start_ns, f),
        });
        if failed.is_ok() {
            failed = written;
        } else if let Err(Failure::Runtime(e)) = written {
            eprintln!("osprey: {e:#}");
        }
    }
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    match args.output {
        Output::Json => {
            serde_json::to_writer(&mut stdout, profile).map_err(|e| Failure::Runtime(e.into()))?;
            writeln!(stdout)?;
        }
        Output::Table => output::write_top(profile, args.top, &mut stdout)?,
    }
    stdout.flush()?;
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        profile: ProfileArgs,
    }

    fn label(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("profile").chain(args.iter().copied()))
            .expect("valid arguments");
        target_label(&cli.profile)
    }

    #[test]
    fn the_title_names_the_container_filter() {
        assert_eq!(label(&[]), "all processes");
        assert_eq!(label(&["--container", "web"]), "container web");
        assert_eq!(
            label(&[
                "--container",
                "web",
                "--container",
                "db",
                "--namespace",
                "shop"
            ]),
            "container web or db, namespace shop"
        );
        assert_eq!(
            label(&["--comm", "nginx", "--pod", "web-0"]),
            "nginx in pod web-0"
        );
    }
}
