//! `osprey top`: live CPU cost of Osprey's BPF programs (or, with `--all`, of every BPF
//! program on the host) from the kernel's run-time statistics, plus event and drop rates
//! per capability when an agent is running.

mod ui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use osprey::kernel::privileges;
use osprey::kernel::stats::RunTimeStats;

use crate::{parse_positive_secs, Failure, Output};
use osprey::top::{CapabilityRow, Interval, Row, Sample, SampleError};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Every BPF program on the host, not only Osprey's.
    #[arg(long)]
    pub all: bool,
    /// Seconds between samples.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_positive_secs)]
    pub interval: f64,
    /// A running agent's control socket, for events/s and drops per capability.
    #[arg(long, value_name = "PATH", default_value = "/run/osprey/agent.sock")]
    pub socket: PathBuf,
    /// Print one snapshot (after one interval) as plain text and exit.
    #[arg(long)]
    pub once: bool,
    /// Format of the --once snapshot.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, requires = "once")]
    pub output: Output,
}

pub fn run(args: TopArgs) -> Result<ExitCode, Failure> {
    let missing = privileges::missing_for_tracing(privileges::effective());
    if !missing.is_empty() {
        return Err(Failure::Privilege(format!(
            "osprey top needs {} to read BPF program statistics",
            missing.join(" and ")
        )));
    }
    // Run counts and times only move while someone holds the stats fd.
    let stats = RunTimeStats::enable();
    if !stats.enabled {
        return Err(Failure::Privilege(
            "osprey top: this kernel refused to enable BPF run-time statistics (BPF_ENABLE_STATS)"
                .to_string(),
        ));
    }
    let interval = Duration::from_secs_f64(args.interval);
    if args.once {
        let before = take(&args)?;
        std::thread::sleep(interval);
        let snapshot = Interval::between(&before, &take(&args)?, args.all);
        match args.output {
            Output::Json => println!("{}", snapshot.to_json()),
            Output::Table => print!("{}", render_text(&snapshot)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    ui::run(&args, interval)?;
    Ok(ExitCode::SUCCESS)
}

fn take(args: &TopArgs) -> Result<Sample, Failure> {
    Sample::take(&args.socket).map_err(|e| match e {
        SampleError::Privilege(msg) => Failure::Privilege(msg),
        SampleError::Other(msg) => Failure::Runtime(anyhow::anyhow!(msg)),
    })
}

/// Column titles and widths shared by the text snapshot and the terminal UI (the widths
/// add up to 80 columns with the separating spaces; CAP fits every capability name).
const COLUMNS: [(&str, u16); 7] = [
    ("ID", 6),
    ("TYPE", 13),
    ("NAME", 15),
    ("CAP", 15),
    ("CPU%", 7),
    ("RUNS/s", 10),
    ("AVG ns", 8),
];

/// Whether a column holds numbers (right-aligned).
fn numeric(column: usize) -> bool {
    column == 0 || column >= 4
}

fn cells(row: &Row) -> [String; 7] {
    [
        row.id.to_string(),
        row.kind.clone(),
        row.name.clone(),
        row.capability.unwrap_or("-").to_string(),
        format!("{:.2}", row.cpu_percent),
        format!("{:.0}", row.runs_per_sec),
        row.avg_ns.to_string(),
    ]
}

fn render_line(values: &[String]) -> String {
    let mut line = String::new();
    for (i, (value, (_, width))) in values.iter().zip(COLUMNS).enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let width = width as usize;
        if numeric(i) {
            line.push_str(&format!("{value:>width$}"));
        } else {
            line.push_str(&format!("{value:<width$}"));
        }
    }
    line.trim_end().to_string()
}

fn render_text(snapshot: &Interval) -> String {
    let mut out = String::new();
    let titles: Vec<String> = COLUMNS.iter().map(|(t, _)| t.to_string()).collect();
    out.push_str(&render_line(&titles));
    out.push('\n');
    for row in &snapshot.rows {
        out.push_str(&render_line(&cells(row)));
        out.push('\n');
    }
    match &snapshot.capabilities {
        None => out.push_str("(no agent: events/s and drops per capability need `osprey agent`)\n"),
        Some(caps) => {
            out.push('\n');
            for line in capability_lines(caps, usize::MAX) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// The per-capability table (from the agent), header first, in at most `max_lines` lines:
/// when the rows do not all fit, the last line says how many were left out.
fn capability_lines(caps: &[CapabilityRow], max_lines: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<15} {:>12} {:>10} {:>12}",
        "CAPABILITY", "EVENTS/s", "DROPS/s", "THROTTLED/s"
    )];
    let room = max_lines.saturating_sub(1).max(1);
    let shown = if caps.len() > room {
        room - 1
    } else {
        caps.len()
    };
    lines.extend(caps[..shown].iter().map(|c| {
        format!(
            "{:<15} {:>12.0} {:>10.0} {:>12.0}",
            c.capability, c.events_per_sec, c.drops_per_sec, c.throttled_per_sec
        )
    }));
    if shown < caps.len() {
        lines.push(format!(
            "... {} more capabilities (osprey top --once shows all)",
            caps.len() - shown
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> CapabilityRow {
        CapabilityRow {
            capability: name.into(),
            events_per_sec: 1.0,
            drops_per_sec: 0.0,
            throttled_per_sec: 0.0,
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_counted_not_dropped() {
        let caps: Vec<_> = [
            "files",
            "process",
            "security",
            "security-opens",
            "tcp",
            "flows",
        ]
        .map(row)
        .to_vec();
        let lines = capability_lines(&caps, 5);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[4],
            "... 3 more capabilities (osprey top --once shows all)"
        );
        assert_eq!(
            capability_lines(&caps[..4], 5).len(),
            5,
            "four fit with the header"
        );
        assert_eq!(capability_lines(&caps, usize::MAX).len(), 7);
    }

    #[test]
    fn columns_fit_80_and_the_longest_capability_name() {
        let width: u16 = COLUMNS.iter().map(|(_, w)| w).sum::<u16>() + COLUMNS.len() as u16 - 1;
        assert!(width <= 80, "{width}");
        let cap = COLUMNS.iter().find(|(t, _)| *t == "CAP").unwrap().1 as usize;
        assert!(osprey::capabilities::REGISTRY
            .iter()
            .all(|c| c.spec.name.len() <= cap));
        let lines = capability_lines(&[row("enforce-connect")], 5);
        assert_eq!(lines[0].len(), lines[1].len(), "{lines:?}");
    }
}
