//! Real-BPF tests of `osprey exec`: argv, failed execs, exit codes, signals, forks, ancestry.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn find(events: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    events.iter().filter(|e| pred(e)).collect()
}

#[test]
fn exec_argv_exit_codes_signals_forks_and_ancestry() {
    if !bpf_available("exec_lifecycle") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("exec");
    let not_executable = dir.path().join("plain-file");
    std::fs::write(&not_executable, b"not a program").unwrap();
    let tracer = Tracer::start(&["exec", "--output", "json", "--lifecycle"]);

    let (echo_pid, _) = run(Command::new("/bin/echo").args(["alpha", "beta gamma", ""]));
    // dash execs the missing program itself: the exec fails in a process we know.
    let (missing_pid, _) =
        run(Command::new("/bin/sh").args(["-c", "exec /nonexistent/osprey-prog one two"]));
    let (noexec_pid, _) = run(Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {} x", not_executable.display())));
    let (code_pid, status) = run(Command::new("/bin/sh").args(["-c", "exit 7"]));
    assert_eq!(status.code(), Some(7));
    let (killed_pid, _) = run(Command::new("/bin/sh").args(["-c", "kill -9 $$"]));
    // outer sh → inner sh → echo: the echo's ancestry names both shells.
    let (outer_pid, _) = run(Command::new("/bin/sh")
        .args(["-c", "/bin/sh -c '/bin/echo osprey-grandchild; true'; true"]));
    let done = tracer.stop();
    assert!(done.status.success());
    let events = done.events();

    let echo = of(&events, "exec", echo_pid);
    assert_eq!(echo.len(), 1, "{echo:?}");
    assert_eq!(echo[0]["ret"], 0);
    assert_eq!(echo[0]["filename"], "/bin/echo");
    assert_eq!(
        echo[0]["argv"],
        serde_json::json!(["/bin/echo", "alpha", "beta gamma", ""])
    );
    assert_eq!(echo[0]["argc"], 4);
    assert_eq!(echo[0]["args_truncated"], false);
    assert!(echo[0]["exe"].as_str().unwrap().ends_with("/echo"));
    assert_eq!(echo[0]["process"]["comm"], "echo");

    let failed = find(&events, |e| {
        e["kind"] == "exec" && e["process"]["pid"] == missing_pid && e["ret"] != 0
    });
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["ret"], -libc::ENOENT as i64);
    assert_eq!(failed[0]["error"], "ENOENT");
    assert_eq!(failed[0]["filename"], "/nonexistent/osprey-prog");
    assert_eq!(
        failed[0]["argv"],
        serde_json::json!(["/nonexistent/osprey-prog", "one", "two"])
    );

    let noexec = find(&events, |e| {
        e["kind"] == "exec" && e["process"]["pid"] == noexec_pid && e["ret"] != 0
    });
    assert_eq!(noexec.len(), 1);
    assert_eq!(noexec[0]["error"], "EACCES");

    let code = of(&events, "exit", code_pid);
    assert_eq!(code.len(), 1);
    assert_eq!(code[0]["exit_code"], 7);
    assert!(code[0]["signal"].is_null());

    let killed = of(&events, "exit", killed_pid);
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0]["signal"], 9);
    assert_eq!(killed[0]["signal_name"], "SIGKILL");
    assert!(killed[0]["exit_code"].is_null());

    // The outer shell forks the inner one; the inner one forks echo.
    let outer_forks = of(&events, "fork", outer_pid);
    assert_eq!(outer_forks.len(), 1, "{outer_forks:?}");
    let inner_pid = outer_forks[0]["child_pid"].as_u64().unwrap() as u32;
    let inner_forks = of(&events, "fork", inner_pid);
    assert_eq!(inner_forks.len(), 1, "{inner_forks:?}");
    let grandchild = inner_forks[0]["child_pid"].as_u64().unwrap() as u32;
    let gexec = of(&events, "exec", grandchild);
    assert_eq!(gexec.len(), 1);
    assert_eq!(
        gexec[0]["argv"],
        serde_json::json!(["/bin/echo", "osprey-grandchild"])
    );
    assert_eq!(gexec[0]["process"]["ppid"], inner_pid);
    let ancestry: Vec<u64> = gexec[0]["process"]["ancestry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        &ancestry[..3],
        &[
            inner_pid as u64,
            outer_pid as u64,
            std::process::id() as u64
        ]
    );
    let exits = of(&events, "exit", grandchild);
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0]["exit_code"], 0);
}

/// An idle tracer sleeps without a timer until the kernel wakes it with the next record:
/// the first exec after a quiet spell is printed within milliseconds, not at the next
/// backstop drain (up to a second later).
#[test]
fn an_idle_tracer_prints_the_first_event_after_a_quiet_spell_at_once() {
    if !bpf_available("idle_wakeup") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("idle-wakeup");
    // A name of its own, filtered in the kernel: nothing else reaches the ring.
    let prog = dir.path().join("idlewake");
    std::fs::copy("/bin/true", &prog).unwrap();
    let tracer = Tracer::start(&["exec", "--output", "json", "--comm", "idlewake"]);
    let mut latencies = Vec::new();
    for _ in 0..7 {
        // Quiet for far longer than the 10 ms drain interval: the reader is idle.
        std::thread::sleep(Duration::from_millis(300));
        let spawned = std::time::Instant::now();
        let (pid, _) = run(&mut Command::new(&prog));
        let (arrived, line) = tracer
            .next_line(Duration::from_secs(5))
            .expect("the exec is printed");
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["kind"], "exec", "{line}");
        assert_eq!(event["process"]["pid"], pid, "{line}");
        latencies.push(arrived.duration_since(spawned));
    }
    latencies.sort();
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    // Without the wake-up these spread evenly over the 1 s backstop.
    assert!(
        latencies[3] < Duration::from_millis(100),
        "median latency {:?} (all {latencies:?})",
        latencies[3]
    );
}
