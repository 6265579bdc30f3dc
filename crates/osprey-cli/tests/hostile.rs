//! Hostile input and hostile circumstances (issue 18): huge values, a second agent,
//! unwritable outputs, missing privileges. Each case ends with a clear message and the
//! documented exit code, never a panic.

mod agent_support;
mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use agent_support::*;
use common::*;

fn osprey(args: &[&str]) -> Output {
    Command::new(OSPREY)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run osprey")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn huge_second_values_exit_2_with_a_range_message() {
    let cases: &[&[&str]] = &[
        &["files", "--duration", "1e19"],
        &["files", "--stats", "1e300"],
        &["exec", "--duration", "1e300"],
        &["top", "--once", "--interval", "1e300"],
        &["profile", "--duration", "1e300"],
        &["secure", "--learn", "1e300"],
        &["memory", "--duration", "1e19"],
        &["syscalls", "--duration", "1e19"],
        &["flows", "--idle-timeout", "1e300"],
    ];
    for args in cases {
        let out = osprey(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("out of range"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Modification times of every file in `dir` (recursively one level).
fn mtimes(dir: &std::path::Path) -> Vec<(String, SystemTime)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().modified().unwrap())
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_second_agent_refuses_naming_the_first_and_a_killed_one_is_replaced() {
    if !bpf_available("second_agent") {
        return;
    }
    let _serial = serial();
    let a = AgentRun::new("second-agent", "");
    let first = a.start();
    assert_eq!(a.ctl(&["list"])["ok"], true);
    let state_before = mtimes(&a.state());

    let config = a.config();
    let second = osprey(&["agent", "--config", config.to_str().unwrap()]);
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(!err.contains("started"), "it loaded modules: {err}");
    // Nothing of the first agent's was touched: its state files, its control socket.
    assert_eq!(mtimes(&a.state()), state_before);
    assert_eq!(
        a.ctl(&["list"])["ok"],
        true,
        "the first agent is still reachable"
    );

    // A SIGKILLed agent leaves its socket behind; the next agent takes over.
    signal(&first, libc::SIGKILL);
    let killed = first.wait(Duration::from_secs(5));
    assert!(!killed.status.success());
    assert!(
        std::path::Path::new(&a.socket()).exists(),
        "stale socket left"
    );
    let third = a.start();
    assert_eq!(a.ctl(&["list"])["ok"], true);
    signal(&third, libc::SIGTERM);
    assert!(third.wait(Duration::from_secs(5)).status.success());
}
