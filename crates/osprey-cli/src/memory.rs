//! `osprey memory`: page faults per process and per mapping (heap, stack, anonymous, file
//! path, vDSO) with per-second rates, as a table or JSON, and an SVG heat map of faulting
//! addresses over time.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use osprey::kernel::loader::LoadOptions;
use osprey::memory::session::{MemoryRun, MemorySession};
use osprey::memory::{self, heatmap, pmu, MemoryOptions, MemoryReport};
use osprey::pipeline::run::Summary;

use crate::trace::{load, report_degraded, require_tracing_privileges};
use crate::{Failure, Output};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MemoryEvent {
    /// Minor and major page faults (always analysed).
    PageFaults,
    /// Last-level cache misses with data addresses: needs a hardware PMU.
    CacheMisses,
}

#[derive(Args, Debug)]
pub struct MemoryArgs {
    /// Only this process.
    #[arg(long, short = 'p', value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only processes with this command name (at most 15 bytes).
    #[arg(long)]
    pub comm: Option<String>,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_positive_secs)]
    pub duration: Option<f64>,
    /// Processes shown, and mappings per process (busiest first).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,
    /// Write an SVG heat map of faulting addresses over time for the busiest mappings.
    #[arg(long, value_name = "FILE")]
    pub heatmap: Option<PathBuf>,
    /// Mappings drawn in the heat map.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=20))]
    pub heatmap_mappings: u64,
    /// What to sample (comma-separated or repeated); page faults are always analysed.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub events: Vec<MemoryEvent>,
    /// `table`: per process and mapping; `json`: the whole report (docs/events.md).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Every process is counted; at the end, processes outside these containers are left
    /// out of the report, the totals and the heat map. Last: the heading applies to every
    /// option after it.
    #[command(flatten, next_help_heading = crate::profile::CONTAINER_HEADING)]
    pub containers: crate::trace::ContainerArgs,
}

fn validate(args: &MemoryArgs) -> Result<(), Failure> {
    let pids: Vec<u32> = args.pid.into_iter().collect();
    crate::trace::validate_pids_and_comm(&pids, args.comm.as_deref())?;
    if let Some(path) = &args.heatmap {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(Failure::Usage(format!(
                "--heatmap {}: directory {} does not exist",
                path.display(),
                parent.display()
            )));
        }
        if path.is_dir() {
            return Err(Failure::Usage(format!(
                "--heatmap {}: is a directory",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Says plainly what happens to `--events cache-misses` on this machine.
fn cache_miss_notice() -> String {
    match pmu::probe_cache_misses() {
        Err(why) => format!(
            "osprey: --events cache-misses: no hardware PMU on this machine ({why}); \
             cache misses are not sampled, page faults are analysed"
        ),
        Ok(()) => "osprey: --events cache-misses: this machine has a hardware PMU, but \
                   cache-miss address sampling is not implemented yet; page faults are analysed"
            .to_string(),
    }
}

pub fn run(args: MemoryArgs) -> Result<ExitCode, Failure> {
    validate(&args)?;
    if let Some(path) = &args.heatmap {
        crate::outfile::check_writable("--heatmap", path, false)?;
    }
    require_tracing_privileges("memory")?;
    let cache_misses = args.events.contains(&MemoryEvent::CacheMisses);
    let notice = cache_misses.then(cache_miss_notice);
    if let Some(n) = &notice {
        eprintln!("{n}");
    }
    let options = MemoryOptions {
        pid: args.pid,
        comm: args.comm.clone(),
        containers: args.containers.filter(),
    };
    let mut load_options = options.load_options(osprey::kernel::boot_time_ns());
    load_options.denied_programs = LoadOptions::denied_from_env();
    let cap = load(memory::SPEC, &load_options)?;
    report_degraded(&cap);
    let session = MemorySession::new(cap, &options).map_err(|e| Failure::Runtime(e.into()))?;
    let hooks: Vec<String> = session.capability.hook_labels().collect();
    // Scripts and tests wait for this line: everything is attached once it is printed.
    eprintln!(
        "osprey: tracing page faults via {}; Ctrl-C to stop",
        hooks.join(", ")
    );
    let progress = std::io::stderr().is_terminal();
    let mut show = |elapsed: Duration, total: memory::Faults| {
        if progress {
            eprint!(
                "\rosprey: {:.0} s, {} minor, {} major faults   ",
                elapsed.as_secs_f64(),
                total.minor,
                total.major
            );
        }
    };
    let duration = args.duration.map(Duration::from_secs_f64);
    let MemoryRun { report, summary } = session.run(duration, args.top as usize, &mut show)?;
    if progress {
        eprintln!();
    }
    // Reported after the summary: the run's figures are printed either way.
    let heatmap_written = args.heatmap.as_ref().map_or(Ok(()), |path| {
        crate::outfile::write_or_rescue("--heatmap", path, |mut f| {
            heatmap::write_svg(&report, args.heatmap_mappings as usize, &mut f)
        })
    });
    let code = write_report(&args, &report, &summary, notice)?;
    heatmap_written.map(|()| code)
}

fn write_report(
    args: &MemoryArgs,
    report: &MemoryReport,
    summary: &Summary,
    notice: Option<String>,
) -> Result<ExitCode, Failure> {
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let mut stderr = std::io::stderr().lock();
    let losses = serde_json::to_value(&report.losses).unwrap_or_default();
    match args.output {
        Output::Json => {
            serde_json::to_writer(&mut stdout, report).map_err(|e| Failure::Runtime(e.into()))?;
            writeln!(stdout)?;
            let mut json = summary.to_json();
            json["memory"] = serde_json::json!({
                "minor": report.faults.minor,
                "major": report.faults.major,
                "processes": report.process_count,
                "losses": losses,
                "cache_misses": notice,
            });
            let _ = writeln!(stderr, "{json}");
        }
        Output::Table => {
            write_table(report, &mut stdout)?;
            let _ = write!(stderr, "{}", summary.render());
            let _ = writeln!(
                stderr,
                "memory: losses: {}",
                crate::words::counters_text(&losses)
            );
        }
    }
    stdout.flush()?;
    if report.losses.counts_map_full > 0 {
        let _ = writeln!(
            stderr,
            "osprey: warning: {} faults were not counted (mapping map full)",
            report.losses.counts_map_full
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rates(per_second: &[memory::Second]) -> String {
    per_second
        .iter()
        .map(|s| {
            if s.major > 0 {
                format!("{}+{}M", s.minor, s.major)
            } else {
                s.minor.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_table(report: &MemoryReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} minor and {} major page faults in {:.1} s from {} processes (minor: {}{}; major: {})",
        report.faults.minor,
        report.faults.major,
        report.duration_secs,
        report.process_count,
        report.minor_source.as_deref().unwrap_or("none"),
        if report.minor_derived {
            ", derived as all faults minus major"
        } else {
            ""
        },
        report.major_source.as_deref().unwrap_or("unavailable"),
    )?;
    writeln!(out, "faults per second: {}", rates(&report.per_second))?;
    // A CONTAINER column once any process is in one (`host` for the others).
    let containers = report.processes.iter().any(|p| p.container.is_some());
    let container = |name: &str| {
        if containers {
            format!(
                " {:<16}",
                osprey::wire::text::escape_for_terminal(name.as_bytes())
            )
        } else {
            String::new()
        }
    };
    writeln!(
        out,
        "\n{:>8} {:<16}{} {:>10} {:>8}  MAPPING",
        "PID",
        "COMM",
        container("CONTAINER"),
        "MINOR",
        "MAJOR"
    )?;
    for p in &report.processes {
        writeln!(
            out,
            "{:>8} {:<16}{} {:>10} {:>8}  (all) per second: {}",
            p.pid,
            p.comm,
            container(p.container.as_ref().map_or("host", |c| c.name.as_str())),
            p.faults.minor,
            p.faults.major,
            rates(&p.per_second)
        )?;
        for m in &p.mappings {
            let range = if m.start == 0 {
                String::new()
            } else {
                format!(" {:#x}-{:#x}", m.start, m.end)
            };
            writeln!(
                out,
                "{:>8} {:<16}{} {:>10} {:>8}  {}{range} {}",
                "",
                "",
                container(""),
                m.faults.minor,
                m.faults.major,
                osprey::wire::text::escape_for_terminal(m.label.as_bytes()),
                m.permissions.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}
