//! Presentation of syscall counts: an aligned table or one JSON object per row.

use std::io::{self, Write};

use super::{GroupBy, Row};
use crate::wire::text::escape_for_terminal;

/// A row as JSON (`"kind": "syscall_count"`, docs/events.md); fields that do not apply to
/// the grouping are left out.
pub fn row_json(row: &Row, by: GroupBy) -> serde_json::Value {
    let mut v = serde_json::json!({
        "kind": "syscall_count",
        "count": row.count,
        "errors": row.errors,
        "errnos": row.errnos,
        // Calls in progress at attach (and exit/exit_group, counted at entry) have no latency.
        "latency": if row.timed == 0 {
            serde_json::json!({"timed": 0, "total_ns": null, "avg_ns": null, "max_ns": null})
        } else {
            serde_json::json!({
                "timed": row.timed,
                "total_ns": row.total_ns,
                "avg_ns": row.avg_ns(),
                "max_ns": row.max_ns,
            })
        },
    });
    if by != GroupBy::Syscall {
        v["pid"] = row.pid.into();
        v["comm"] = row.comm.clone().into();
    }
    if by != GroupBy::Process {
        v["syscall"] = row.syscall.clone().into();
        v["nr"] = row.nr.into();
    }
    v
}

pub fn write_json(rows: &[Row], by: GroupBy, out: &mut dyn Write) -> io::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, &row_json(row, by))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn micros(row: &Row, ns: u64) -> String {
    if row.timed == 0 {
        "-".into()
    } else {
        format!("{:.3}", ns as f64 / 1000.0)
    }
}

/// The most frequent errnos of a row, e.g. `ENOENT:500 EACCES:2`.
fn errnos_text(row: &Row) -> String {
    let mut e: Vec<(&String, &u64)> = row.errnos.iter().collect();
    e.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    e.iter()
        .take(3)
        .map(|(name, n)| format!("{name}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn write_table(rows: &[Row], by: GroupBy, out: &mut dyn Write) -> io::Result<()> {
    let who = |r: &Row| {
        format!(
            "{:>7} {:<16} ",
            r.pid,
            escape_for_terminal(r.comm.as_bytes())
        )
    };
    let head = match by {
        GroupBy::Syscall => format!("{:<20} ", "SYSCALL"),
        GroupBy::Process => format!("{:>7} {:<16} ", "PID", "COMM"),
        GroupBy::ProcessSyscall => format!("{:>7} {:<16} {:<20} ", "PID", "COMM", "SYSCALL"),
    };
    writeln!(
        out,
        "{head}{:>10} {:>8} {:>10} {:>10} ERRNOS",
        "COUNT", "ERRORS", "AVG_US", "MAX_US"
    )?;
    for r in rows {
        let lead = match by {
            GroupBy::Syscall => format!("{:<20} ", r.syscall),
            GroupBy::Process => who(r),
            GroupBy::ProcessSyscall => format!("{}{:<20} ", who(r), r.syscall),
        };
        writeln!(
            out,
            "{lead}{:>10} {:>8} {:>10} {:>10} {}",
            r.count,
            r.errors,
            micros(r, r.avg_ns()),
            micros(r, r.max_ns),
            errnos_text(r)
        )?;
    }
    Ok(())
}
