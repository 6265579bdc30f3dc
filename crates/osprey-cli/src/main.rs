//! The `osprey` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration
//! error, 77 missing privilege or kernel feature.

mod agent;
mod aggregate;
mod check;
mod flows;
mod memory;
mod outfile;
mod profile;
mod secs;
mod secure;
mod syscalls;
mod tcp;
mod top;
mod trace;
mod words;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "osprey",
    version,
    about = "eBPF performance monitoring and runtime security"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which hook each capability uses on this kernel, or why it cannot run.
    Check(check::CheckArgs),
    /// Trace file opens (open, openat, openat2, creat).
    Files(trace::FilesArgs),
    /// Trace process execs (including failed ones), forks and exits.
    Exec(trace::ExecArgs),
    /// Run always-on: modules into a rotating event log, Prometheus metrics, health, control.
    Agent(agent::AgentArgs),
    /// Control a running agent: list, enable/disable modules, reload.
    Ctl(agent::CtlArgs),
    /// Sample stacks on every CPU (or time blocked off-CPU) into flame graphs and pprof.
    Profile(profile::ProfileArgs),
    /// Page faults per process and mapping (heap, stack, anonymous, file, vDSO), rates, heat map.
    Memory(memory::MemoryArgs),
    /// Detect attacks with rules (embedded defaults and --rules files); alerts as a table or JSON.
    Secure(secure::SecureArgs),
    /// Count syscalls per process and syscall, with errors by errno and latency (in-kernel).
    Syscalls(syscalls::SyscallsArgs),
    /// Check rule files or show the default rules.
    #[command(subcommand)]
    Rules(secure::RulesCommand),
    /// TCP connections: one record per connection at close, owner, bytes, RTT, retransmits.
    Tcp(tcp::TcpArgs),
    /// Network flows on interfaces (XDP ingress, tcx egress), IPFIX-like records.
    Flows(flows::FlowsArgs),
    /// Live CPU cost, runs/s and average time of BPF programs (like top; --once for scripts).
    Top(top::TopArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line (docs/events.md).
    Json,
}

/// Options every tracing command shares.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    pub duration: Option<f64>,
    /// Stop after writing this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Print per-probe statistics to stderr every SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    pub stats: Option<f64>,
    /// Most events per second per process, enforced in the kernel (exec/fork/exit exempt).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_limit: Option<u64>,
    /// Most events per second over all processes, enforced in the kernel.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub global_rate_limit: Option<u64>,
    /// Ring buffer size in MiB (power of two) for the traced capability.
    #[arg(long, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_mib: Option<u32>,
    #[command(flatten)]
    pub run_time: RunTimeStatsArg,
}

/// `--run-time-stats`, for the commands whose summary has per-program statistics.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunTimeStatsArg {
    /// Enable BPF run-time statistics (runs and ns per run of each program, in the
    /// summary). They cost every BPF program on the machine two clock reads per run
    /// (bench/syscall-cost.sh measures it), so they are off unless asked for.
    #[arg(long)]
    pub run_time_stats: bool,
}

impl RunTimeStatsArg {
    /// Holds the statistics on while the result lives, when asked for (or `also`).
    pub fn enable(&self, also: bool) -> Option<osprey::kernel::stats::RunTimeStats> {
        (self.run_time_stats || also).then(osprey::kernel::stats::RunTimeStats::enable)
    }
}

pub(crate) use secs::parse_positive_secs;

/// Rings above this many MiB get a warning: kernel memory, and seconds to set up.
const LARGE_RING_MIB: u32 = 256;

impl RunArgs {
    /// `--ring-mib` in bytes; warns on stderr when it is large.
    pub fn ring_bytes(&self) -> Option<u32> {
        let mib = self.ring_mib?;
        if mib > LARGE_RING_MIB {
            eprintln!(
                "osprey: warning: --ring-mib {mib}: each ring buffer takes {mib} MiB of kernel \
                 memory and seconds to set up; up to {LARGE_RING_MIB} is plenty for bursts"
            );
        }
        Some(mib << 20)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn os_errors_are_not_repeated() {
        /// Like the library's errors: prints its source and also returns it as the cause.
        #[derive(Debug)]
        struct Io(std::io::Error);
        impl std::fmt::Display for Io {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "event log /x: {}", self.0)
            }
        }
        impl std::error::Error for Io {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Io(std::io::Error::from_raw_os_error(libc::EROFS)));
        let text = super::error_text(&e.context("agent"));
        assert_eq!(text.matches("os error 30").count(), 1, "{text}");
        assert!(text.starts_with("agent: event log /x: "), "{text}");
    }
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if v.is_power_of_two() && v <= 1024 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be a power of two from 1 to 1024"))
    }
}

/// Errors that map to an exit code.
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Privilege(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(e.into())
    }
}

/// The error and its causes, `: `-joined, leaving out a cause its parent's message already
/// ends with (errors that print their source: "x: EROFS" not "x: EROFS: EROFS").
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

fn main() -> ExitCode {
    if let Err(e) = osprey::pipeline::run::remember_early_stop() {
        eprintln!("osprey: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Files(args) => trace::run_files(args),
        Command::Exec(args) => trace::run_exec(args),
        Command::Agent(args) => agent::run_agent(args),
        Command::Ctl(args) => agent::run_ctl(args),
        Command::Profile(args) => profile::run(args),
        Command::Memory(args) => memory::run(args),
        Command::Secure(args) => secure::run_secure(args),
        Command::Rules(cmd) => secure::run_rules(cmd),
        Command::Tcp(args) => tcp::run_tcp(args),
        Command::Flows(args) => flows::run_flows(args),
        Command::Syscalls(args) => syscalls::run(args),
        Command::Top(args) => top::run(args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            eprintln!("osprey: error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Privilege(msg)) => {
            eprintln!("osprey: {msg}");
            ExitCode::from(77)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("osprey: {}", error_text(&e));
            ExitCode::from(1)
        }
    }
}
