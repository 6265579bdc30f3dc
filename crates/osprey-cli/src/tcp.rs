//! `osprey tcp`: TCP connection records at close (and transitions with --states), through
//! the shared pipeline; filters by owner pid, port and remote network in user space,
//! because the owner is only known after the kernel program has seen the connection. A
//! record's container is its owner's (`--container`, `--pod`, `--namespace`); a connection
//! without a known owner is in none.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Args;
use osprey::kernel::loader::LoadOptions;
use osprey::net::{tcp, Cidr};
use osprey::pipeline::event::Payload;
use osprey::pipeline::run::EventFilter;
use osprey::pipeline::sink::Layout;

use crate::trace::{
    load, load_process_cache, report_degraded, require_tracing_privileges, run_pipeline,
};
use crate::{Failure, Output, RunArgs};

#[derive(Args, Debug)]
pub struct TcpArgs {
    /// Only connections owned by this process (the one that connected or accepted).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only connections with this local or remote port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only connections whose remote address is in this network (ADDR[/LEN], v4 or v6).
    #[arg(long, value_name = "CIDR")]
    pub remote: Option<Cidr>,
    #[command(flatten)]
    pub containers: crate::trace::ContainerArgs,
    /// Also show every state transition.
    #[arg(long)]
    pub states: bool,
    /// At exit, print a histogram of smoothed RTT at close per remote address.
    #[arg(long)]
    pub rtt_hist: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run_tcp(args: TcpArgs) -> Result<ExitCode, Failure> {
    crate::trace::validate_pids_and_comm(args.pid.as_slice(), None)?;
    require_tracing_privileges("tcp")?;
    let denied = LoadOptions::denied_from_env();
    let process = load_process_cache(&denied)?;
    let tcp_cap = load(
        tcp::SPEC,
        &LoadOptions {
            ring_bytes: args.run.ring_bytes(),
            denied_programs: denied,
            extra_globals: vec![tcp::states_global(args.states)],
            ..Default::default()
        },
    )?;
    report_degraded(&tcp_cap);

    let histograms = Rc::new(RefCell::new(tcp::RttHistograms::default()));
    let (pid, port, remote, hist) = (args.pid, args.port, args.remote, args.rtt_hist);
    let containers = args.containers.filter();
    let seen = histograms.clone();
    let filter: EventFilter = Box::new(move |event, ctx| {
        let endpoints = match &event.payload {
            Payload::TcpClose(c) => &c.endpoints,
            Payload::TcpState(s) => &s.endpoints,
            _ => return false,
        };
        let wanted = pid.is_none_or(|p| p == ctx.pid)
            && port.is_none_or(|p| endpoints.involves_port(p))
            && remote.is_none_or(|net| net.contains(endpoints.remote))
            && containers.matches(ctx.container.map(|c| &**c));
        if let (true, true, Payload::TcpClose(c)) = (wanted, hist, &event.payload) {
            seen.borrow_mut().add(c);
        }
        wanted
    });
    let output = args.run.output;
    let code = run_pipeline(
        vec![process, tcp_cap],
        filter,
        &args.run,
        Layout::Tcp,
        "TCP connections",
    )?;
    let histograms = histograms.borrow();
    if hist && !histograms.is_empty() {
        match output {
            Output::Json => {
                for h in histograms.to_json() {
                    println!("{h}");
                }
            }
            Output::Table => print!("{}", histograms.render()),
        }
    }
    Ok(code)
}
