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
    if by.has_process() {
        v["pid"] = row.pid.into();
        v["comm"] = row.comm.clone().into();
    }
    if by.has_syscall() {
        v["syscall"] = row.syscall.clone().into();
        v["nr"] = row.nr.into();
    }
    if let Some(c) = &row.container {
        v["container"] = serde_json::to_value(c).unwrap_or_default();
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
    use crate::pipeline::table::{render, Align::*};
    let mut header = Vec::new();
    // A CONTAINER column when grouped by container, or once any process is in one.
    let containers = by.has_container() || rows.iter().any(|r| r.container.is_some());
    if by.has_process() {
        header.extend([("PID", Right), ("COMM", Left)]);
    }
    if containers {
        header.push(("CONTAINER", Left));
    }
    if by.has_syscall() {
        header.push(("SYSCALL", Left));
    }
    header.extend([
        ("COUNT", Right),
        ("ERRORS", Right),
        ("AVG_US", Right),
        ("MAX_US", Right),
        ("ERRNOS", Left),
    ]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = Vec::new();
            if by.has_process() {
                row.push(r.pid.to_string());
                row.push(escape_for_terminal(r.comm.as_bytes()));
            }
            if containers {
                let name = r.container.as_ref().map_or("host", |c| c.name.as_str());
                row.push(escape_for_terminal(name.as_bytes()));
            }
            if by.has_syscall() {
                row.push(r.syscall.clone());
            }
            row.extend([
                r.count.to_string(),
                r.errors.to_string(),
                micros(r, r.avg_ns()),
                micros(r, r.max_ns),
                errnos_text(r),
            ]);
            row
        })
        .collect();
    out.write_all(render(&header, &cells).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_average_keeps_the_columns_in_line() {
        let row = |syscall: &str, max_ns: u64| Row {
            pid: 1,
            comm: "c".into(),
            nr: 0,
            syscall: syscall.into(),
            count: 1,
            errors: 0,
            errnos: Default::default(),
            timed: 1,
            total_ns: max_ns,
            max_ns,
            container: None,
        };
        let rows = [row("read", 1_000), row("futex", 987_654_321_000_000)];
        let mut out = Vec::new();
        write_table(&rows, GroupBy::Syscall, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let end = |l: &str, what: &str| l.find(what).unwrap() + what.len();
        assert_eq!(
            end(lines[0], "AVG_US"),
            end(lines[2], "987654321000.000"),
            "{text}"
        );
        // Without errnos a row ends with MAX_US.
        assert_eq!(end(lines[0], "MAX_US"), lines[1].len(), "{text}");
        assert_eq!(lines[1].len(), lines[2].len(), "{text}");
    }
}
