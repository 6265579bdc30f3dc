//! SVG heat map of faulting addresses over time: one panel per busy mapping, seconds
//! left to right, the mapping's address range bottom (low) to top (high), cells shaded
//! by faults on a log scale, each with a tooltip.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::{MappingFaults, MemoryReport, HEAT_ROWS};
use crate::wire::text::escape_xml as escape;

const PLOT_WIDTH: f64 = 900.0;
const ROW_HEIGHT: f64 = 5.0;
const LEFT: f64 = 150.0;
const PANEL_GAP: f64 = 70.0;
const TOP: f64 = 40.0;

/// The busiest mappings that have heat cells, with their process: at most `panels`, and
/// none with under 1% of the busiest one's faults (a panel of one fault shows nothing).
pub fn busiest(report: &MemoryReport, panels: usize) -> Vec<(u32, &str, &MappingFaults)> {
    let mut all: Vec<(u32, &str, &MappingFaults)> = report
        .processes
        .iter()
        .flat_map(|p| {
            p.mappings
                .iter()
                .filter(|m| !m.heat.is_empty())
                .map(move |m| (p.pid, p.comm.as_str(), m))
        })
        .collect();
    all.sort_by(|a, b| {
        b.2.faults
            .total()
            .cmp(&a.2.faults.total())
            .then(a.0.cmp(&b.0))
    });
    let floor = all.first().map_or(0, |m| m.2.faults.total() / 100);
    all.retain(|m| m.2.faults.total() >= floor.max(1));
    all.truncate(panels);
    all
}

/// Light yellow (few) to dark red (most), by the fraction `t` in 0..=1.
fn shade(t: f64) -> String {
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(255.0, 140.0),
        lerp(240.0, 0.0),
        lerp(190.0, 0.0)
    )
}

/// Writes the heat map of the `panels` busiest mappings.
pub fn write_svg(report: &MemoryReport, panels: usize, out: &mut impl Write) -> io::Result<()> {
    let chosen = busiest(report, panels);
    let seconds = report.per_second.len().max(1);
    let cell_width = PLOT_WIDTH / seconds as f64;
    let panel_height = f64::from(HEAT_ROWS) * ROW_HEIGHT;
    let width = LEFT + PLOT_WIDTH + 40.0;
    let height = TOP + chosen.len().max(1) as f64 * (panel_height + PANEL_GAP) + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">
<title>osprey memory: page-fault heat map</title>
<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>
<text x="{LEFT}" y="20" font-size="15">Page faults by address over time ({} s, {} minor, {} major in all)</text>"##,
        report.duration_secs.round(),
        report.faults.minor,
        report.faults.major,
    );
    if chosen.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}">no faults were counted</text>"#,
            TOP + 20.0
        );
    }
    for (i, (pid, comm, mapping)) in chosen.iter().enumerate() {
        let y0 = TOP + i as f64 * (panel_height + PANEL_GAP) + 20.0;
        write_panel(&mut svg, *pid, comm, mapping, y0, cell_width, seconds);
    }
    svg.push_str("</svg>\n");
    out.write_all(svg.as_bytes())
}

fn write_panel(
    svg: &mut String,
    pid: u32,
    comm: &str,
    m: &MappingFaults,
    y0: f64,
    cell_width: f64,
    seconds: usize,
) {
    let panel_height = f64::from(HEAT_ROWS) * ROW_HEIGHT;
    let _ = writeln!(
        svg,
        r#"<g class="mapping"><text x="{LEFT}" y="{}">{}</text>"#,
        y0 - 6.0,
        escape(&format!(
            "pid {pid} {comm}: {} {:#x}-{:#x} ({} minor, {} major)",
            m.label, m.start, m.end, m.faults.minor, m.faults.major
        ))
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{y0}\" width=\"{PLOT_WIDTH}\" height=\"{panel_height}\" fill=\"#f4f4f4\" stroke=\"#999999\"/>"
    );
    let max = m
        .heat
        .iter()
        .map(|c| c.faults.total())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let row_bytes = m.end.saturating_sub(m.start) / u64::from(HEAT_ROWS);
    for cell in &m.heat {
        let total = cell.faults.total();
        if total == 0 {
            continue;
        }
        let t = (1.0 + total as f64).ln() / (1.0 + max).ln();
        let x = LEFT + f64::from(cell.second) * cell_width;
        // Row 0 holds the lowest addresses: drawn at the bottom.
        let y = y0 + panel_height - f64::from(cell.row + 1) * ROW_HEIGHT;
        let low = m.start + row_bytes * u64::from(cell.row);
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{cell_width:.2}" height="{ROW_HEIGHT}" fill="{}"><title>second {}, {:#x}-{:#x}: {} minor, {} major</title></rect>"#,
            shade(t),
            cell.second,
            low,
            low + row_bytes,
            cell.faults.minor,
            cell.faults.major
        );
    }
    // Axes: addresses on the left, seconds below.
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">{:#x}</text><text x="{}" y="{}" text-anchor="end">{:#x}</text>"#,
        LEFT - 6.0,
        y0 + 10.0,
        m.end,
        LEFT - 6.0,
        y0 + panel_height,
        m.start
    );
    let step = (seconds / 10).max(1);
    for s in (0..seconds).step_by(step) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{}">{s} s</text>"#,
            LEFT + s as f64 * cell_width,
            y0 + panel_height + 14.0
        );
    }
    svg.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape("a<b>&\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}"
        );
    }

    #[test]
    fn shades_run_from_light_to_dark() {
        assert_eq!(shade(0.0), "#fff0be");
        assert_eq!(shade(1.0), "#8c0000");
    }
}
