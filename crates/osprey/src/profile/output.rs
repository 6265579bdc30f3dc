//! Presentations of a profile: folded stacks, flame graph SVG (inferno), and the top-N
//! table of functions with self and total shares.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use super::{Frame, Profile, ProfileKind, StackSample};

/// A frame as named in folded stacks: kernel frames carry the usual `_[k]` suffix.
pub fn folded_name(frame: &Frame) -> String {
    // ';' separates frames and a newline ends the record: neither may appear in a name.
    let name = frame.name.replace([';', '\n'], ":");
    if frame.kernel {
        format!("{name}_[k]")
    } else {
        name
    }
}

/// The container a folded stack is prefixed with: its name (or short id), `host` outside any.
fn folded_container(stack: &StackSample) -> String {
    let name = stack.container.as_ref().map_or("host", |c| c.name.as_str());
    name.replace([';', '\n', ' '], "_")
}

fn folded_stack(stack: &StackSample, with_container: bool) -> String {
    let mut line = String::new();
    if with_container {
        line.push_str(&folded_container(stack));
        line.push(';');
    }
    let comm = stack.comm.replace([';', '\n', ' '], "_");
    line.push_str(if comm.is_empty() { "[unknown]" } else { &comm });
    for f in &stack.frames {
        line.push(';');
        line.push_str(&folded_name(f));
    }
    line
}

/// Brendan Gregg's folded format: `comm;outer;...;leaf VALUE`, one line per stack;
/// `container;comm;...` with `with_container`.
pub fn folded_lines(profile: &Profile, with_container: bool) -> Vec<String> {
    // Stacks that differ only in lines or addresses fold into one line.
    let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
    for stack in &profile.stacks {
        *merged
            .entry(folded_stack(stack, with_container))
            .or_default() += stack.value;
    }
    merged
        .into_iter()
        .map(|(stack, value)| format!("{stack} {value}"))
        .collect()
}

pub fn write_folded(
    profile: &Profile,
    with_container: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    for line in folded_lines(profile, with_container) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

pub fn write_svg(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    let what = match profile.kind {
        ProfileKind::Cpu => format!("{} samples at {} Hz", profile.total, profile.frequency_hz),
        ProfileKind::OffCpu => format!("{:.3} s off-CPU", profile.total as f64 / 1e9),
    };
    options.title = format!(
        "{} ({:.1} s, {what})",
        profile.command, profile.duration_secs
    );
    options.count_name = match profile.kind {
        ProfileKind::Cpu => "samples".into(),
        ProfileKind::OffCpu => "ns".into(),
    };
    let lines = folded_lines(profile, false);
    if lines.is_empty() {
        // inferno refuses empty input; an idle target is a normal result: a valid SVG
        // that says no samples were taken.
        return write_empty_svg(&options.title, out);
    }
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)
}

/// A flame graph without stacks: the title and "no samples were taken".
fn write_empty_svg(title: &str, out: &mut dyn Write) -> io::Result<()> {
    let title = crate::wire::text::escape_xml(title);
    write!(
        out,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"70\" viewBox=\"0 0 1200 70\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"600\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">{title}</text>\n\
         <text x=\"600\" y=\"52\" text-anchor=\"middle\" font-size=\"14\">no samples were taken</text>\n\
         </svg>\n"
    )
}

/// One row of the top-N table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    pub function: String,
    pub module: String,
    pub self_value: u64,
    pub total_value: u64,
}

/// Functions by self value (the leaf of a stack), with their inclusive value.
pub fn top_functions(profile: &Profile) -> Vec<TopRow> {
    let mut rows: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for stack in &profile.stacks {
        let mut seen = HashSet::new();
        for f in &stack.frames {
            let key = (folded_name(f), f.module.clone());
            if seen.insert(key.clone()) {
                rows.entry(key).or_default().1 += stack.value;
            }
        }
        if let Some(leaf) = stack.frames.last() {
            rows.entry((folded_name(leaf), leaf.module.clone()))
                .or_default()
                .0 += stack.value;
        }
    }
    let mut out: Vec<TopRow> = rows
        .into_iter()
        .map(|((function, module), (s, t))| TopRow {
            function,
            module,
            self_value: s,
            total_value: t,
        })
        .collect();
    out.sort_by(|a, b| {
        b.self_value
            .cmp(&a.self_value)
            .then(b.total_value.cmp(&a.total_value))
            .then_with(|| a.function.cmp(&b.function))
    });
    out
}

pub fn write_top(profile: &Profile, n: usize, out: &mut dyn Write) -> io::Result<()> {
    let pct = |v: u64| {
        if profile.total == 0 {
            0.0
        } else {
            v as f64 * 100.0 / profile.total as f64
        }
    };
    writeln!(
        out,
        "{:>7} {:>7}  {:<48} MODULE",
        "SELF%", "TOTAL%", "FUNCTION"
    )?;
    for row in top_functions(profile).into_iter().take(n) {
        let module = row.module.rsplit('/').next().unwrap_or(&row.module);
        writeln!(
            out,
            "{:>6.2}% {:>6.2}%  {:<48} {module}",
            pct(row.self_value),
            pct(row.total_value),
            crate::wire::text::escape_for_terminal(row.function.as_bytes()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::{Losses, UnwindMode};

    fn frame(name: &str, kernel: bool) -> Frame {
        Frame {
            name: name.into(),
            module: if kernel { "[kernel]" } else { "/bin/w" }.into(),
            file: None,
            line: None,
            kernel,
        }
    }

    pub fn sample_profile() -> Profile {
        let stack = |names: &[&str], value| StackSample {
            pid: 7,
            comm: "w".into(),
            frames: names
                .iter()
                .map(|n| frame(n.trim_end_matches("_k"), n.ends_with("_k")))
                .collect(),
            unwinder: None,
            value,
            container: None,
        };
        let stacks = vec![
            stack(&["main", "top", "mid", "leaf"], 90),
            stack(&["main", "top", "mid"], 6),
            stack(&["main", "top", "mid", "leaf", "irq_k"], 4),
        ];
        Profile {
            kind: ProfileKind::Cpu,
            command: "w".into(),
            duration_secs: 1.0,
            frequency_hz: 99,
            unwind: UnwindMode::FramePointer,
            total: 100,
            unit: "samples",
            losses: Losses::default(),
            unwinders: Vec::new(),
            stacks,
        }
    }

    #[test]
    fn an_empty_profile_gives_an_svg_and_pprof_saying_no_samples() {
        let mut profile = sample_profile();
        profile.stacks.clear();
        profile.total = 0;
        profile.command = "idle <&> target".into();
        let mut svg = Vec::new();
        write_svg(&profile, &mut svg).expect("an idle target is not an error");
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("no samples were taken"), "{svg}");
        assert!(svg.contains("idle &lt;&amp;&gt; target"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        let mut gz = Vec::new();
        crate::profile::pprof::write(&profile, 1, &mut gz).expect("empty pprof");
        assert!(!gz.is_empty());
    }

    #[test]
    fn folded_lines_are_root_first_with_kernel_suffix() {
        let lines = folded_lines(&sample_profile(), false);
        assert_eq!(
            lines,
            vec![
                "w;main;top;mid 6",
                "w;main;top;mid;leaf 90",
                "w;main;top;mid;leaf;irq_[k] 4",
            ]
        );
    }

    #[test]
    fn top_counts_self_at_the_leaf_and_total_once_per_stack() {
        let rows = top_functions(&sample_profile());
        assert_eq!(rows[0].function, "leaf");
        assert_eq!((rows[0].self_value, rows[0].total_value), (90, 94));
        let main = rows.iter().find(|r| r.function == "main").unwrap();
        assert_eq!((main.self_value, main.total_value), (0, 100));
    }

    #[test]
    fn svg_names_every_function() {
        let mut out = Vec::new();
        write_svg(&sample_profile(), &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        for name in ["leaf", "mid", "top", "main", "irq"] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.contains("100 samples at 99 Hz"));
    }
}
