//! `osprey flows`: attaches flow accounting to interfaces and exports IPFIX-like records;
//! on a terminal, a refreshing top-N table by bytes/s.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use osprey::kernel::loader::{is_attach_conflict, LoadOptions, LoadedCapability, XdpAttachMode};
use osprey::kernel::privileges;
use osprey::kernel::stats::{RunTimeStats, Snapshot};
use osprey::net::clsact;
use osprey::net::flows::{self, FlowRecord, FlowTable, RateTracker};
use osprey::pipeline::sink::Clock;
use tokio::signal::unix::{signal, SignalKind};

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
    /// Enable BPF run-time statistics (ns per run of each program, in the summary). They
    /// cost every BPF program on the machine two clock reads per run (~40 ns measured
    /// here), so they are off unless asked for.
    #[arg(long)]
    pub run_time_stats: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = crate::parse_positive_secs)]
    pub duration: Option<f64>,
}

/// Interface names by index, checked before anything is loaded.
fn resolve_interfaces(names: &[String]) -> Result<BTreeMap<u32, String>, Failure> {
    let mut out = BTreeMap::new();
    for name in names {
        let c = std::ffi::CString::new(name.as_str())
            .map_err(|_| Failure::Usage(format!("--interface {name:?}: not a valid name")))?;
        // SAFETY: valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(Failure::Usage(format!(
                "--interface {name}: no such network interface in this network namespace"
            )));
        }
        out.insert(index, name.clone());
    }
    Ok(out)
}

pub fn run_flows(args: FlowsArgs) -> Result<ExitCode, Failure> {
    let names = resolve_interfaces(&args.interfaces)?;
    require_tracing_privileges("flows")?;
    let caps = privileges::effective();
    if !privileges::has(caps, privileges::CAP_NET_ADMIN)
        && !privileges::has(caps, privileges::CAP_SYS_ADMIN)
    {
        return Err(Failure::Privilege(
            "osprey flows needs CAP_NET_ADMIN to attach XDP and tc programs to interfaces (run as root or grant it)".into(),
        ));
    }
    let skb_backed: Vec<String> = names
        .values()
        .filter_map(|n| flows::skb_backed_xdp_driver(n).map(|d| format!("{n} ({d})")))
        .collect();
    let options = LoadOptions {
        interfaces: names.values().cloned().collect(),
        xdp_mode: match args.xdp_mode {
            XdpModeArg::Auto => None,
            XdpModeArg::Native => Some(XdpAttachMode::Native),
            XdpModeArg::Generic => Some(XdpAttachMode::Generic),
        },
        map_max_entries: vec![("flows", args.max_flows)],
        denied_programs: LoadOptions::denied_from_env(),
        ..Default::default()
    };
    // The tc fallback adds a clsact qdisc where there is none: those get it removed at exit.
    let without_clsact = clsact::interfaces_without_clsact(&options.interfaces);
    let remove_added_clsact = || {
        for name in &without_clsact {
            let _ = clsact::delete_clsact(name);
        }
    };
    let loaded = LoadedCapability::load(flows::SPEC, &options);
    if loaded.is_err() {
        remove_added_clsact();
    }
    let mut cap = loaded.map_err(|e| {
        if is_attach_conflict(&e) {
            Failure::Usage(format!(
                "{e} (detach it first, e.g. `ip link set dev IF xdp off`)"
            ))
        } else {
            Failure::Privilege(e.to_string())
        }
    })?;
    let mut table =
        FlowTable::take_from(&mut cap).map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
    let run_time_stats = args.run_time_stats.then(RunTimeStats::enable);
    if cap.hook_labels().any(|h| h == "xdp/native") && !skb_backed.is_empty() {
        eprintln!(
            "osprey: note: native XDP on {} converts every received packet and turns GSO off on the peer (costly: see bench/net.sh); --xdp-mode generic is cheaper there but counts a GRO/GSO aggregate as one packet",
            skb_backed.join(", ")
        );
    }
    let hooks: Vec<String> = cap.hook_labels().collect();
    eprintln!(
        "osprey: tracing flows on {} via {}; Ctrl-C to stop",
        args.interfaces.join(", "),
        hooks.join(", ")
    );

    let clock = Clock::now();
    let wall = move |ns: u64| {
        clock
            .wall(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let live_table = args.output == Output::Table && std::io::stdout().is_terminal();
    let idle_ns = (args.idle_timeout * 1e9) as u64;
    // The final ACK follows a FIN: wait a little so it joins the flow, not a new one.
    let fin_grace_ns = idle_ns.min(1_000_000_000);
    let mut stdout = std::io::stdout().lock();
    let mut header_written = false;
    let mut emit = |records: &[FlowRecord], out: &mut dyn Write| -> std::io::Result<()> {
        for r in records {
            let ifname = names.get(&r.key.ifindex).map_or("?", String::as_str);
            match args.output {
                Output::Json => writeln!(out, "{}", r.to_json(&wall, ifname))?,
                Output::Table if !live_table => {
                    if !header_written {
                        writeln!(out, "{:<8} {}", "END", flows::TABLE_HEADER)?;
                        header_written = true;
                    }
                    writeln!(out, "{:<8} {}", short_reason(r), r.table_columns(ifname))?
                }
                Output::Table => {}
            }
        }
        out.flush()
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let interval = Duration::from_secs_f64(args.interval);
    let mut rates = RateTracker::default();
    let mut last_scan = Instant::now();
    let reason = runtime.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        loop {
            let wake = deadline.map_or(Instant::now() + interval, |d| {
                d.min(Instant::now() + interval)
            });
            tokio::select! {
                _ = sigint.recv() => return Ok::<_, std::io::Error>("signal"),
                _ = sigterm.recv() => return Ok("signal"),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok("duration");
            }
            let now = flows::flow_clock_now_ns();
            let done = table.export(now, idle_ns, fin_grace_ns, false);
            if emit(&done, &mut stdout).is_err() {
                return Ok("output_closed");
            }
            if live_table {
                let secs = last_scan.elapsed().as_secs_f64();
                last_scan = Instant::now();
                let top = rates.top(&table.live(), secs, args.top);
                let _ = write!(stdout, "\x1b[H\x1b[2J{}", render_top(&top, &names, &table));
                let _ = stdout.flush();
            }
        }
    })?;
    // Every flow still in the table is exported: none disappears uncounted.
    let rest = table.export(flows::flow_clock_now_ns(), idle_ns, fin_grace_ns, true);
    let _ = emit(&rest, &mut stdout);
    let totals = table.totals();
    let stats = Snapshot::take(std::slice::from_ref(&cap));
    let used_clsact = cap.hook_labels().any(|h| h == "tc/clsact/egress");
    drop(cap); // detach before reporting
    if used_clsact {
        remove_added_clsact();
    }
    let mut stderr = std::io::stderr().lock();
    let _ = match args.output {
        Output::Json => writeln!(
            stderr,
            "{}",
            serde_json::json!({"kind": "summary", "reason": reason, "flows": totals, "programs": stats.programs,
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

fn short_reason(r: &FlowRecord) -> &'static str {
    match r.reason {
        flows::EndReason::EndOfFlow => "fin/rst",
        flows::EndReason::Idle => "idle",
        flows::EndReason::Exit => "exit",
    }
}

fn render_top(
    top: &[(osprey::abi::FlowKey, osprey::abi::FlowStats, f64)],
    names: &BTreeMap<u32, String>,
    table: &FlowTable,
) -> String {
    let totals = table.totals();
    let mut out = format!(
        "osprey flows: {} live, {} exported, {} evicted\n{:>12} {}\n",
        totals.live,
        totals.exported,
        totals.evicted,
        "BYTES/S",
        flows::TABLE_HEADER
    );
    for (key, stats, rate) in top {
        let record = FlowRecord {
            key: *key,
            stats: *stats,
            reason: flows::EndReason::Exit,
        };
        let ifname = names.get(&key.ifindex).map_or("?", String::as_str);
        out.push_str(&format!("{rate:>12.0} {}\n", record.table_columns(ifname)));
    }
    out
}
