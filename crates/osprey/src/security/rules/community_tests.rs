//! Community formats on synthetic events: Sigma's modifiers and conditions, Falco's
//! lists, macros, append/override, exceptions and operators, and what is reported.

use super::fields::View;
use super::tests::{context, matching as fired, open_event, view_event};
use super::*;
use crate::pipeline::event::{Event, Payload};

fn exec_event(comm: &str, exe: &str, args: &[&str]) -> Event {
    view_event(
        comm,
        Payload::Exec(crate::process::Exec {
            ret: 0,
            filename: exe.as_bytes().to_vec(),
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            argc: args.len() as u32,
            args_truncated: false,
            exe: exe.as_bytes().to_vec(),
            ino: 1,
            dev: 1,
            old_tid: 7,
            stdio_sockets: 0,
            env: Vec::new(),
            env_truncated: false,
        }),
    )
}

const SIGMA: &str = r#"
title: Suspicious thing
id: 11111111-2222-3333-4444-555555555555
status: test
level: high
tags: [attack.execution, attack.t1059.004]
references: [https://example.com/a]
logsource:
  product: linux
  category: process_creation
detection:
  selection_img:
    Image|endswith: ['/CURL', '/wget']
  selection_cli:
    CommandLine|contains|all: ['-o', 'http']
  selection_b64:
    CommandLine|base64offset|contains: 'bash -i'
  filter_main:
    CommandLine|re: '127\.0\.0\.1'
  condition: (all of selection_i* and selection_cli or 1 of selection_b*) and not 1 of filter_*
"#;

#[test]
fn sigma_rule_matches_case_insensitively_with_its_condition() {
    let set = load(&[("s.yml", SIGMA)]).unwrap();
    let rule = &set.rules[0];
    assert_eq!(rule.severity, Severity::High);
    assert_eq!(rule.tags, ["attack.execution", "T1059.004"]);
    assert_eq!(rule.meta.source, Source::Sigma);
    assert_eq!(rule.meta.references, ["https://example.com/a"]);
    let hit = exec_event("curl", "/usr/bin/curl", &["curl", "-O", "HTTP://x"]);
    assert_eq!(fired(&set, &hit), ["Suspicious thing"]);
    let filtered = exec_event(
        "curl",
        "/usr/bin/curl",
        &["curl", "-o", "http://127.0.0.1/"],
    );
    assert!(fired(&set, &filtered).is_empty());
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "x; bash -i");
    let b64 = exec_event("sh", "/bin/sh", &["sh", "-c", &format!("echo {encoded}")]);
    assert_eq!(fired(&set, &b64), ["Suspicious thing"]);
    // An open is no process creation.
    assert!(fired(&set, &open_event("curl", "/usr/bin/curl", 0)).is_empty());
}

#[test]
fn sigma_unsupported_and_malformed_rules() {
    let unsupported = SIGMA.replace("CommandLine|re", "CurrentDirectory");
    let set = load(&[("u.yml", &unsupported)]).unwrap();
    assert!(set.rules.is_empty());
    assert_eq!(set.report[0].status, Status::Unsupported);
    assert!(set.report[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("CurrentDirectory"));
    let bad = SIGMA.replace("and not 1 of filter_*", "and not 1 of nothing_*");
    let e = load(&[("b.yml", &bad)]).unwrap_err();
    assert!(
        e.0[0].message.contains("no search matches `nothing_*`"),
        "{e}"
    );
    assert_eq!(e.0[0].pos.line, 20, "{e}");
}

const FALCO: &str = r#"
- required_engine_version: 0.26.0
- list: shells
  items: [bash, sh]
- list: more_shells
  items: [shells, zsh]
- macro: spawned_process
  condition: evt.type in (execve, execveat)
- macro: never_true
  condition: (evt.num=0)
- macro: shell_procs
  condition: proc.name in (more_shells)
- rule: Shell spawned
  desc: a shell
  condition: spawned_process and shell_procs and not never_true and proc.cmdline icontains "-C EVIL"
  output: shell %proc.name (%proc.aname[2]) cmd=%proc.cmdline env=%proc.env
  priority: WARNING
  tags: [T1059]
  exceptions:
    - name: trusted
      fields: [proc.name, proc.cmdline]
      comps: [=, startswith]
      values:
        - [zsh, "zsh -c evil ok"]
- rule: Shell spawned
  override:
    condition: append
  condition: and not proc.pname exists
- macro: shell_procs
  append: true
  condition: or (proc.name = x and proc.exe pmatch (/usr/bin))
- rule: Needs tty
  desc: d
  condition: spawned_process and proc.sname = x
  output: o
  priority: INFO
- rule: Off
  desc: d
  condition: spawned_process
  output: o
  priority: INFO
  enabled: false
"#;

#[test]
fn falco_lists_macros_overrides_and_exceptions() {
    let set = load(&[("f.yaml", FALCO)]).unwrap();
    let statuses: Vec<(String, Status)> = set
        .report
        .iter()
        .map(|r| (r.rule.clone(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("Shell spawned".to_string(), Status::Loaded),
            ("Needs tty".to_string(), Status::Unsupported),
            ("Off".to_string(), Status::Disabled),
        ]
    );
    assert!(set.report[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("proc.sname"));
    let rule = &set.rules[0];
    assert_eq!(rule.severity, Severity::Medium);
    assert_eq!(rule.meta.level.as_deref(), Some("WARNING"));
    // The test context has no parent, so `not proc.pname exists` holds.
    let hit = exec_event("zsh", "/usr/bin/zsh", &["zsh", "-c", "evil"]);
    assert_eq!(fired(&set, &hit), ["Shell spawned"]);
    let excepted = exec_event("zsh", "/usr/bin/zsh", &["zsh", "-c", "evil", "ok"]);
    assert!(fired(&set, &excepted).is_empty());
    let appended = exec_event("x", "/usr/bin/x", &["x", "-c", "evil"]);
    assert_eq!(fired(&set, &appended), ["Shell spawned"]);
    assert!(fired(&set, &exec_event("cat", "/bin/cat", &["cat", "-c", "evil"])).is_empty());
    let ctx = context(&hit);
    let view = View {
        event: &hit,
        process: &ctx,
        facts: Default::default(),
    };
    assert_eq!(
        rule.render_output(&view),
        "shell zsh (<NA>) cmd=zsh -c evil env="
    );
}

#[test]
fn falco_syntax_errors_are_located() {
    let bad = FALCO.replace("proc.name in (more_shells)", "proc.name in (more_shells");
    let e = load(&[("f.yaml", &bad)]).unwrap_err();
    assert_eq!(e.0[0].file, "f.yaml");
    assert_eq!(e.0[0].pos.line, 12, "{e}");
}
