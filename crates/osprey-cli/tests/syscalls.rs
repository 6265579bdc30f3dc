//! Real-BPF tests of `osprey syscalls`: a workload making a known number of known syscalls
//! gets exactly those counts, errnos and plausible latencies.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;

use common::*;
use serde_json::Value;

fn rows_by_syscall(done: &Finished, pid: u32) -> BTreeMap<String, Value> {
    done.events()
        .into_iter()
        .filter(|r| r["kind"] == "syscall_count" && r["pid"] == pid)
        .map(|r| (r["syscall"].as_str().unwrap().to_string(), r))
        .collect()
}

/// `syscall-mix` waiting at its gate: `getppids` getppid, then `failing_opens` ENOENT opens.
fn gated_mix(getppids: u32, failing_opens: u32) -> Gated {
    let (a, b) = (getppids.to_string(), failing_opens.to_string());
    Gated::spawn(&[
        OsStr::new("syscall-mix"),
        OsStr::new(&a),
        OsStr::new(&b),
        OsStr::new("--gate"),
    ])
}

#[test]
fn counts_errnos_and_latency_of_a_known_workload_are_exact() {
    if !bpf_available("counts_errnos_and_latency_of_a_known_workload_are_exact") {
        return;
    }
    let _serial = serial();
    // The best hooks here (tp_btf), and the classic tracepoints other kernels may only have.
    let classic = "syscalls_enter_btf,syscalls_enter_raw,syscalls_exit_btf,syscalls_exit_raw";
    for (deny, via) in [
        ("", "tp_btf/sys_exit, tp_btf/sys_enter"),
        (
            classic,
            "tracepoint/raw_syscalls/sys_exit, tracepoint/raw_syscalls/sys_enter",
        ),
    ] {
        exact_counts_via(&[("OSPREY_DENY_PROGRAMS", deny)], via);
    }
}

fn exact_counts_via(env: &[(&str, &str)], via: &str) {
    let work = gated_mix(1000, 500);
    let pid = work.pid();
    let pid_arg = pid.to_string();
    let tracer = Tracer::start_with_env(&["syscalls", "--pid", &pid_arg, "--output", "json"], env);
    assert!(work.release_and_wait().success());
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stderr.contains(via), "{}", done.stderr);
    let rows = rows_by_syscall(&done, pid);
    let all = done.events();
    assert!(
        all.iter().all(|r| r["pid"] == pid),
        "--pid filter leaked other processes: {all:?}"
    );

    let getppid = &rows["getppid"];
    assert_eq!(getppid["count"], 1000, "{getppid}");
    assert_eq!(getppid["errors"], 0);
    assert_eq!(getppid["comm"], "osprey-workload");
    assert_eq!(getppid["nr"], 110);
    let openat = &rows["openat"];
    assert_eq!(openat["count"], 500, "{openat}");
    assert_eq!(openat["errors"], 500);
    assert_eq!(openat["errnos"], serde_json::json!({"ENOENT": 500}));

    for row in [getppid, openat] {
        let lat = &row["latency"];
        assert_eq!(
            lat["timed"], row["count"],
            "every call started after attach: {row}"
        );
        let avg = lat["avg_ns"].as_u64().unwrap();
        let max = lat["max_ns"].as_u64().unwrap();
        // A syscall takes at least tens of ns; these ones far less than a millisecond on average.
        assert!(
            (20..1_000_000).contains(&avg),
            "implausible average {avg} ns: {row}"
        );
        assert!(
            max >= avg && max < 5_000_000_000,
            "implausible max {max} ns: {row}"
        );
        assert_eq!(
            lat["total_ns"].as_u64().unwrap() / lat["timed"].as_u64().unwrap(),
            avg
        );
    }
    // The gate's read was in progress at attach: counted at exit, without a latency.
    assert_eq!(rows["read"]["latency"]["timed"], 0, "{}", rows["read"]);
    assert_eq!(rows["read"]["latency"]["avg_ns"], Value::Null);
    // exit_group never returns: counted at entry.
    assert_eq!(rows["exit_group"]["count"], 1);
    let (_, dropped, _) = done.counters("syscall_count");
    assert_eq!(dropped, 0);
}

#[test]
fn grouping_by_syscall_and_top_limit_rows() {
    if !bpf_available("grouping_by_syscall_and_top_limit_rows") {
        return;
    }
    let _serial = serial();
    let work = gated_mix(300, 200);
    let pid_arg = work.pid().to_string();
    let tracer = Tracer::start(&[
        "syscalls", "--pid", &pid_arg, "--by", "syscall", "--top", "2", "-o", "json",
    ]);
    assert!(work.release_and_wait().success());
    let done = tracer.stop();
    let rows = done.events();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["syscall"].as_str(), rows[0]["count"].as_u64()),
        (Some("getppid"), Some(300))
    );
    assert_eq!(
        (rows[1]["syscall"].as_str(), rows[1]["count"].as_u64()),
        (Some("openat"), Some(200))
    );
    assert!(
        rows[0].get("pid").is_none(),
        "no pid when grouped by syscall"
    );

    // The table has the same numbers.
    let work = gated_mix(300, 200);
    let pid_arg = work.pid().to_string();
    let tracer = Tracer::start(&["syscalls", "--pid", &pid_arg, "--duration", "30"]);
    assert!(work.release_and_wait().success());
    let done = tracer.stop();
    let text = String::from_utf8(done.stdout.clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(" openat "))
        .unwrap_or_else(|| panic!("no openat row:\n{text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[0], pid_arg);
    assert_eq!(&cols[3..5], &["200", "200"], "{line}");
    assert_eq!(cols.last(), Some(&"ENOENT:200"), "{line}");
}

#[test]
fn bad_targets_are_usage_errors() {
    let out = std::process::Command::new(OSPREY)
        .args(["syscalls", "--comm", "a-name-longer-than-15"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--comm"));
    let out = std::process::Command::new(OSPREY)
        .args(["syscalls", "--top", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
