use super::*;
use crate::pipeline::cache::ProcessContext;
use crate::pipeline::event::{Event, Header, Payload};

fn load_one(src: &str) -> Result<RuleSet, RuleErrors> {
    load(&[("r.yaml", src)])
}

fn first_error(src: &str) -> RuleError {
    load_one(src).expect_err("should fail").0.remove(0)
}

#[test]
fn default_rules_load() {
    let set = load(&[(DEFAULT_RULES_NAME, DEFAULT_RULES)]).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.rules.len() >= 15, "{}", set.rules.len());
    for r in &set.rules {
        assert!(!r.tags.is_empty(), "{} has MITRE tags", r.name);
        assert!(r.tags.iter().all(|t| t.starts_with('T')), "{}", r.name);
    }
}

#[test]
fn unknown_field_has_position_and_suggestion() {
    let src =
        "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = open and file.pth = /x\n";
    let e = first_error(src);
    assert_eq!((e.pos.line, e.pos.col), (4, 34), "{e}");
    assert!(
        e.message
            .contains("unknown field `file.pth` (did you mean `file.path`?)"),
        "{e}"
    );
    assert!(e.to_string().starts_with("r.yaml:4:34: "), "{e}");
}

#[test]
fn type_error_in_block_scalar_points_into_the_block() {
    let src = "- rule: r\n  desc: d\n  severity: low\n  condition: >\n    evt.kind = open\n    and proc.pid = abc\n";
    let e = first_error(src);
    assert_eq!((e.pos.line, e.pos.col), (6, 20), "{e}");
    assert!(e.message.contains("integer"), "{e}");
}

#[test]
fn syntax_error_and_undefined_macro() {
    let e = first_error("- rule: r\n  desc: d\n  severity: low\n  condition: (proc.name = a\n");
    assert_eq!(e.pos.line, 4);
    assert!(e.message.contains("expected `)`"), "{e}");
    let e = first_error(
        "- macro: is_shell\n  condition: proc.name = sh\n- rule: r\n  desc: d\n  severity: low\n  condition: is_shel and evt.kind = exec\n",
    );
    assert_eq!((e.pos.line, e.pos.col), (6, 14), "{e}");
    assert!(e.message.contains("did you mean `is_shell`"), "{e}");
}

#[test]
fn yaml_errors_unknown_keys_and_values() {
    let e = first_error("- rule: r\n  desc: [unclosed\n");
    assert!(e.message.starts_with("YAML syntax error"), "{e}");
    let e = first_error("- rule: r\n  desc: d\n  severty: low\n  condition: evt.kind = exec\n");
    assert_eq!((e.pos.line, e.pos.col), (3, 3));
    assert!(e.message.contains("did you mean `severity`"), "{e}");
    let e = first_error("- rule: r\n  desc: d\n  severity: hgh\n  condition: evt.kind = exec\n");
    assert!(e.message.contains("did you mean `high`"), "{e}");
    let e = first_error(
        "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = exec\n  output: \"%proc.nam ran\"\n",
    );
    assert_eq!((e.pos.line, e.pos.col), (5, 12), "{e}");
    let e = first_error(
        "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = exec\n  exceptions: [nope]\n",
    );
    assert!(e.message.contains("undefined exception"), "{e}");
    let e = first_error("- macro: a\n  condition: b\n- macro: b\n  condition: a\n");
    assert!(e.message.contains("refers to itself"), "{e}");
}

pub(crate) fn view_event(comm: &str, payload: Payload) -> Event {
    Event {
        header: Header {
            kind: 0,
            ts_boot_ns: 0,
            pid: 7,
            tid: 7,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            cgroup_id: 0,
            comm: comm.as_bytes().to_vec(),
        },
        payload,
    }
}

pub(crate) fn context(event: &Event) -> ProcessContext<'_> {
    ProcessContext {
        pid: event.header.pid,
        tid: event.header.tid,
        ppid: 1,
        uid: event.header.uid,
        gid: event.header.gid,
        comm: &event.header.comm,
        exe: b"/usr/bin/x",
        cmdline: b"",
        cgroup_id: 0,
        container: None,
        ancestry: Vec::new(),
        cache_generation: 0,
    }
}

/// Names of the rules of `set` that match `event`.
pub(super) fn matching(set: &RuleSet, event: &Event) -> Vec<String> {
    let ctx = context(event);
    let view = View {
        event,
        process: &ctx,
        facts: Default::default(),
    };
    set.rules
        .iter()
        .filter(|r| r.matches(&view))
        .map(|r| r.name.clone())
        .collect()
}

pub(crate) fn open_event(comm: &str, path: &str, flags: u64) -> Event {
    view_event(
        comm,
        Payload::FileOpen(crate::files::FileOpen {
            op: 2,
            ret: 3,
            flags,
            mode: 0,
            resolve: 0,
            dirfd: -100,
            ino: 1,
            dev: 1,
            status: 0,
            path: path.as_bytes().to_vec(),
            abs_path: path.as_bytes().to_vec(),
        }),
    )
}

#[test]
fn default_rules_match_and_exceptions_apply() {
    let set = load(&[(DEFAULT_RULES_NAME, DEFAULT_RULES)]).unwrap();
    let fired = |e: &Event| -> Vec<String> { matching(&set, e) };
    assert_eq!(
        fired(&open_event("evil", "/etc/shadow", 0)),
        ["credential_file_read"]
    );
    assert!(fired(&open_event("sshd", "/etc/shadow", 0)).is_empty());
    assert!(fired(&open_event("dpkg", "/etc/shadow", 0)).is_empty());
    assert_eq!(
        fired(&open_event("x", "/root/.ssh/id_ed25519", 0)),
        ["credential_file_read"]
    );
    assert!(fired(&open_event("x", "/root/.ssh/id_ed25519.pub", 0)).is_empty());
    assert_eq!(
        fired(&open_event("x", "/etc/passwd", 0o2001)),
        ["account_file_write"]
    );
    assert!(fired(&open_event("x", "/etc/passwd", 0)).is_empty());
    assert_eq!(
        fired(&open_event("x", "/proc/42/mem", 2)),
        ["proc_mem_write"]
    );
    assert_eq!(
        fired(&open_event("x", "/home/u/.bashrc", 0o101)),
        ["shell_profile_write"]
    );
    assert_eq!(
        fired(&open_event("x", "/var/log/syslog", 0o1001)),
        ["log_tampering"]
    );
    let rule = set
        .rules
        .iter()
        .find(|r| r.name == "credential_file_read")
        .unwrap();
    let e = open_event("evil", "/etc/shadow", 0);
    let ctx = context(&e);
    assert_eq!(
        rule.render_output(&View {
            event: &e,
            process: &ctx,
            facts: Default::default(),
        }),
        "evil (pid 7, exe /usr/bin/x, parent <NA>) read /etc/shadow"
    );
}

/// A cheap, deterministic stand-in for the cargo-fuzz target (fuzz/): mutations of the
/// default rules never panic and every error points inside the input.
#[test]
fn mutated_rules_never_panic_and_errors_point_inside() {
    let base = DEFAULT_RULES.as_bytes();
    let replacements: &[&[u8]] = &[
        b"", b"(", b")", b"\"", b"'", b":", b"- ", b"\n", b"not ", b"%", b"\t", b"\xc3",
    ];
    for (step, at) in (0..base.len()).step_by(13).enumerate() {
        let r = replacements[step % replacements.len()];
        let mut m = base[..at].to_vec();
        m.extend_from_slice(r);
        m.extend_from_slice(&base[(at + 1).min(base.len())..]);
        let Ok(text) = std::str::from_utf8(&m) else {
            continue;
        };
        if let Err(errors) = load(&[("m.yaml", text)]) {
            let lines = text.lines().count() + 1;
            for e in errors.0 {
                assert!(e.pos.line >= 1 && e.pos.line <= lines, "{e}");
            }
        }
    }
}

/// The rule of issue 18's reproductions: `condition` written between double quotes.
fn quoted_condition(condition: &str) -> String {
    format!("- rule: d\n  desc: x\n  severity: high\n  condition: \"{condition}\"\n  output: x\n")
}

#[test]
fn ten_thousand_brackets_are_refused_at_the_first_too_deep() {
    let n = 10_000;
    let src = quoted_condition(&format!(
        "{}evt.kind = open{}",
        "(".repeat(n),
        ")".repeat(n)
    ));
    let e = first_error(&src);
    // The condition's first character is at column 15; the 101st bracket is too deep.
    assert_eq!((e.pos.line, e.pos.col), (4, 15 + 100), "{e}");
    assert!(e.message.contains("nested deeper than 100 levels"), "{e}");
}

#[test]
fn a_hundred_thousand_nots_are_refused() {
    let src = quoted_condition(&format!("{}evt.kind = open", "not ".repeat(100_000)));
    let e = first_error(&src);
    assert_eq!((e.pos.line, e.pos.col), (4, 15 + 400), "{e}");
    assert!(e.message.contains("nested deeper"), "{e}");
    // At the limit it loads.
    let ok = quoted_condition(&format!("{}evt.kind = open", "not ".repeat(100)));
    load_one(&ok).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn macros_cannot_nest_or_grow_past_the_limits() {
    // A chain of macros, each using the next.
    let mut chain = String::new();
    for i in 0..5_000 {
        chain.push_str(&format!("- macro: m{i}\n  condition: m{}\n", i + 1));
    }
    chain.push_str("- macro: m5000\n  condition: evt.kind = open\n");
    let e = first_error(&chain);
    assert!(
        e.message
            .contains("refer to one another more than 100 deep"),
        "{e}"
    );
    // Each macro used twice by the next: the expansion doubles at each step.
    let mut doubling = "- macro: d0\n  condition: proc.name = a\n".to_string();
    for i in 1..40 {
        doubling.push_str(&format!(
            "- macro: d{i}\n  condition: d{0} or d{0}\n",
            i - 1
        ));
    }
    let e = first_error(&doubling);
    assert!(e.message.contains("larger than 100000 terms"), "{e}");
    // Deep macros used inside brackets count their own depth.
    let mut deep = format!(
        "- macro: deep\n  condition: {}proc.name = a\n",
        "not ".repeat(60)
    );
    deep.push_str(&quoted_condition(&format!(
        "{}deep{}",
        "(".repeat(60),
        ")".repeat(60)
    )));
    let e = first_error(&deep);
    assert!(
        e.message
            .contains("macro `deep` nests this condition deeper"),
        "{e}"
    );
}

#[test]
fn deep_yaml_long_lists_and_large_files_are_refused() {
    let block = format!("{}x\n", "- ".repeat(100_000));
    let e = first_error(&block);
    assert!(e.message.contains("nested deeper than 32 levels"), "{e}");
    assert_eq!(e.pos.line, 1, "{e}");
    let flow = format!("- list: l\n  items: {}\n", "[".repeat(200));
    assert!(load_one(&flow).is_err());
    let items = vec!["a"; limits::MAX_LIST_ITEMS + 1].join(", ");
    let e = first_error(&format!("- list: l\n  items: [{items}]\n"));
    assert!(e.message.contains("list longer than"), "{e}");
    let big = format!("# {}\n", "x".repeat(limits::MAX_FILE_BYTES));
    let e = first_error(&big);
    assert_eq!((e.pos.line, e.pos.col), (1, 1), "{e}");
    assert!(e.message.contains("rule file larger than"), "{e}");
}
