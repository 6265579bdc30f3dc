//! `osprey flows`: attaches flow accounting to interfaces and exports IPFIX-like records;
//! on a terminal, a refreshing top-N table by bytes/s.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use osprey::kernel::loader::{is_attach_conflict, XdpAttachMode};
use osprey::kernel::privileges;
use osprey::net::flow_session::{self, FlowOptions, FlowSession, Scan};
use osprey::net::flows::{self, FlowRecord, FlowTable, RateTracker};
use osprey::pipeline::run::RunOptions;
use osprey::pipeline::sink::Clock;
use osprey::wire::text::escape_for_terminal;

use crate::trace::require_tracing_privileges;
use crate::{Failure, Output};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) where the driver supports it, else generic.
    Auto,
    Native,
    Generic,
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// Interface to watch, both directions (repeat for more).
    #[arg(long = "interface", short = 'i', value_name = "IF", required = true)]
    pub interfaces: Vec<String>,
    /// How the ingress XDP program runs.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,
    /// Export a flow after this many seconds without a packet.
    #[arg(long, value_name = "SECS", default_value_t = 15.0, value_parser = crate::parse_positive_secs)]
    pub idle_timeout: f64,
    /// Size of the kernel's LRU flow table; beyond it the least recent flows are evicted.
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_flows: u32,
    /// Rows of the live table.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Seconds between scans of the flow table.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = crate::parse_positive_secs)]
    pub interval: f64,
    #[command(flatten)]
    pub run_time: crate::RunTimeStatsArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = crate::parse_positive_secs)]
    pub duration: Option<f64>,
}

fn require_net_admin() -> Result<(), Failure> {
    require_tracing_privileges("flows")?;
    let caps = privileges::effective();
    if !privileges::has(caps, privileges::CAP_NET_ADMIN)
        && !privileges::has(caps, privileges::CAP_SYS_ADMIN)
    {
        return Err(Failure::Privilege(
            "osprey flows needs CAP_NET_ADMIN to attach XDP and tc programs to interfaces (run as root or grant it)".into(),
        ));
    }
    Ok(())
}

fn load(args: &FlowsArgs) -> Result<FlowSession, Failure> {
    let names = flow_session::resolve_interfaces(&args.interfaces).map_err(|name| {
        Failure::Usage(format!(
            "--interface {name}: no such network interface in this network namespace"
        ))
    })?;
    require_net_admin()?;
    let options = FlowOptions {
        interfaces: names.values().cloned().collect(),
        xdp_mode: match args.xdp_mode {
            XdpModeArg::Auto => None,
            XdpModeArg::Native => Some(XdpAttachMode::Native),
            XdpModeArg::Generic => Some(XdpAttachMode::Generic),
        },
        max_flows: args.max_flows,
        idle_timeout: Duration::from_secs_f64(args.idle_timeout),
    };
    FlowSession::load(&options, names).map_err(|e| {
        if is_attach_conflict(&e) {
            Failure::Usage(format!(
                "{e} (detach it first, e.g. `ip link set dev IF xdp off`)"
            ))
        } else {
            Failure::Privilege(e.to_string())
        }
    })
}

fn announce(session: &FlowSession, interfaces: &[String]) {
    let skb_backed: Vec<String> = session
        .names
        .values()
        .filter_map(|n| flows::skb_backed_xdp_driver(n).map(|d| format!("{n} ({d})")))
        .collect();
    let cap = &session.capability;
    if cap.hook_labels().any(|h| h == "xdp/native") && !skb_backed.is_empty() {
        eprintln!(
            "osprey: note: native XDP on {} converts every received packet and turns GSO off on the peer (costly: see bench/net.sh); --xdp-mode generic is cheaper there but counts a GRO/GSO aggregate as one packet",
            skb_backed.join(", ")
        );
    }
    let hooks: Vec<String> = cap.hook_labels().collect();
    eprintln!(
        "osprey: tracing flows on {} via {}; Ctrl-C to stop",
        interfaces.join(", "),
        hooks.join(", ")
    );
}

pub fn run_flows(args: FlowsArgs) -> Result<ExitCode, Failure> {
    let session = load(&args)?;
    let run_time_stats = args.run_time.enable(false);
    announce(&session, &args.interfaces);
    let names = session.names.clone();
    let mut output = FlowOutput::new(&args, &names);
    let options = RunOptions {
        duration: args.duration.map(Duration::from_secs_f64),
        tick_every: Some(Duration::from_secs_f64(args.interval)),
        ..Default::default()
    };
    let run = flow_session::run(session, &options, |scan| output.scan(scan))?;
    let mut stderr = std::io::stderr().lock();
    let (totals, stats) = (run.totals, run.stats);
    let _ = match args.output {
        Output::Json => writeln!(
            stderr,
            "{}",
            serde_json::json!({"kind": "summary", "reason": run.reason, "flows": totals, "programs": stats.programs,
                "run_time_stats": run_time_stats.as_ref().is_some_and(|s| s.enabled)})
        ),
        Output::Table => writeln!(
            stderr,
            "{}flows: inserted {} exported {} evicted {} (LRU full) insert failures {}; frames not IP {} unreadable {}",
            stats.render(),
            totals.inserted,
            totals.exported,
            totals.evicted,
            totals.insert_failed,
            totals.non_ip_frames,
            totals.truncated_frames
        ),
    };
    if totals.evicted > 0 {
        let _ = writeln!(
            stderr,
            "osprey: warning: {} flows were evicted from the full flow table before export (raise --max-flows)",
            totals.evicted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders each scan: exported records as JSON lines or table rows, or on a terminal a
/// refreshing top-N table by bytes/s.
struct FlowOutput<'a> {
    output: Output,
    live_table: bool,
    top: usize,
    names: &'a BTreeMap<u32, String>,
    wall: Box<dyn Fn(u64) -> String>,
    header_written: bool,
    rates: RateTracker,
    last_scan: Instant,
    stdout: std::io::StdoutLock<'static>,
    /// The containers of egress flows' sockets.
    containers: osprey::container::Containers,
    /// Table rows have a CONTAINER column once a flow of a container was seen (the header
    /// is written again when it appears).
    container_column: bool,
}

impl<'a> FlowOutput<'a> {
    fn new(args: &FlowsArgs, names: &'a BTreeMap<u32, String>) -> Self {
        let clock = Clock::now();
        Self {
            output: args.output,
            live_table: args.output == Output::Table && std::io::stdout().is_terminal(),
            top: args.top,
            names,
            wall: Box::new(move |ns: u64| {
                clock
                    .wall(ns)
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            }),
            header_written: false,
            rates: RateTracker::default(),
            last_scan: Instant::now(),
            stdout: std::io::stdout().lock(),
            containers: Default::default(),
            container_column: false,
        }
    }

    fn ifname(&self, ifindex: u32) -> &'a str {
        self.names.get(&ifindex).map_or("?", String::as_str)
    }

    fn scan(&mut self, scan: Scan<'_>) -> std::io::Result<()> {
        for r in scan.exported {
            let ifname = self.ifname(r.key.ifindex);
            match self.output {
                Output::Json => {
                    let mut line = r.to_json(&self.wall, ifname);
                    r.add_container(&mut line, &mut self.containers);
                    writeln!(self.stdout, "{line}")?
                }
                Output::Table if !self.live_table => {
                    let container = r.container(&mut self.containers);
                    let label = container_label(container.as_deref());
                    if label != "-" && !self.container_column {
                        self.container_column = true;
                        self.header_written = false;
                    }
                    let column = |label| self.container_column.then_some(label);
                    if !self.header_written {
                        let header = table_row("END", column("CONTAINER"), flows::TABLE_HEADER);
                        writeln!(self.stdout, "{header}")?;
                        self.header_written = true;
                    }
                    let columns = r.table_columns(ifname);
                    let row = table_row(short_reason(r), column(&label), &columns);
                    writeln!(self.stdout, "{row}")?
                }
                Output::Table => {}
            }
        }
        self.stdout.flush()?;
        if self.live_table && !scan.last {
            let secs = self.last_scan.elapsed().as_secs_f64();
            self.last_scan = Instant::now();
            let top = self.rates.top(&scan.table.live(), secs, self.top);
            let screen = render_top(&top, self.names, scan.table, &mut self.containers);
            let _ = write!(self.stdout, "\x1b[H\x1b[2J{screen}");
            let _ = self.stdout.flush();
        }
        Ok(())
    }
}

fn short_reason(r: &FlowRecord) -> &'static str {
    match r.reason {
        flows::EndReason::EndOfFlow => "fin/rst",
        flows::EndReason::Idle => "idle",
        flows::EndReason::Exit => "exit",
    }
}

/// What a table shows for a flow's container: its name (or short id); `-` for the host, or
/// when the kernel knew no socket (ingress).
fn container_label(container: Option<&osprey::container::Container>) -> String {
    let label = container
        .filter(|c| !c.is_host())
        .map_or("-", |c| c.label());
    escape_for_terminal(label.as_bytes())
}

/// A table row: `first` (END, or BYTES/S right-aligned when numeric), the CONTAINER column
/// when there is one, then the flow's columns.
fn table_row(first: &str, container: Option<&str>, columns: &str) -> String {
    match container {
        Some(label) => format!("{first:<8} {label:<16} {columns}"),
        None => format!("{first:<8} {columns}"),
    }
}

fn render_top(
    top: &[(osprey::abi::FlowKey, osprey::abi::FlowStats, f64)],
    names: &BTreeMap<u32, String>,
    table: &FlowTable,
    containers: &mut osprey::container::Containers,
) -> String {
    let totals = table.totals();
    let rows: Vec<(String, String, String)> = top
        .iter()
        .map(|(key, stats, rate)| {
            let record = FlowRecord {
                key: *key,
                stats: *stats,
                reason: flows::EndReason::Exit,
            };
            let ifname = names.get(&key.ifindex).map_or("?", String::as_str);
            let label = container_label(record.container(containers).as_deref());
            (format!("{rate:>12.0}"), label, record.table_columns(ifname))
        })
        .collect();
    let with_container = rows.iter().any(|(_, label, _)| label != "-");
    let column = |label| with_container.then_some(label);
    let mut out = format!(
        "osprey flows: {} live, {} exported, {} evicted\n{}\n",
        totals.live,
        totals.exported,
        totals.evicted,
        table_row(
            &format!("{:>12}", "BYTES/S"),
            column("CONTAINER"),
            flows::TABLE_HEADER
        )
    );
    for (rate, label, columns) in &rows {
        out.push_str(&table_row(rate, column(label), columns));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_column_lines_up_with_its_header() {
        let header = table_row("END", Some("CONTAINER"), flows::TABLE_HEADER);
        let row = table_row("fin/rst", Some("web"), "lo         out tcp");
        assert_eq!(header.find("CONTAINER"), row.find("web"));
        assert_eq!(header.find("IFACE"), row.find("lo "));
        assert_eq!(table_row("idle", None, "lo"), "idle     lo");
        assert_eq!(container_label(None), "-");
    }
}
