//! The `osprey` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration
//! error, 77 missing privilege or kernel feature.

mod agent;
mod aggregate;
mod check;
mod flows;
mod memory;
mod profile;
mod secure;
mod syscalls;
mod tcp;
mod top;
mod trace;

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
}

pub(crate) fn parse_positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be a positive number of seconds"))
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
            eprintln!("osprey: {e:#}");
            ExitCode::from(1)
        }
    }
}
