//! Real-BPF tests of syscall baselines: learn on a helper program, then make it call a
//! syscall it never made → exactly one anomaly alert naming it; a burst far above its
//! learned rate → exactly one envelope alert.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn helper(extra: bool) -> u32 {
    let mut cmd = Command::new(WORKLOAD);
    cmd.arg("baseline-helper");
    if extra {
        cmd.arg("--extra");
    }
    let (pid, status) = run(&mut cmd);
    assert!(status.success(), "baseline-helper: {status}");
    pid
}

#[test]
fn a_new_syscall_and_a_burst_above_the_envelope_raise_one_alert_each() {
    if !bpf_available("a_new_syscall_and_a_burst_above_the_envelope_raise_one_alert_each") {
        return;
    }
    let _serial = serial();
    let state = TempDir::new("baseline-state");
    let state_dir = state.path().join("osprey");
    let state_arg = state_dir.to_str().unwrap();

    // Learn: the helper runs three times while osprey learns for 3 s.
    let learner = Tracer::start(&[
        "secure",
        "--learn",
        "3",
        "--state-dir",
        state_arg,
        "-o",
        "json",
    ]);
    let learned_pids: Vec<u32> = (0..3).map(|_| helper(false)).collect();
    let done = learner.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.contains("osprey: learned syscall baselines of"),
        "{}",
        done.stderr
    );
    let file = state_dir.join("baselines.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "baselines are private");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let workload = std::fs::canonicalize(WORKLOAD).unwrap();
    let entry = saved["executables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == workload.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} not learned: {saved}", workload.display()));
    let calls = &entry["syscalls"];
    assert_eq!(calls["getppid"]["nr"], 110);
    // 100 per run, three runs: at least one window saw a whole run.
    let peak = calls["getppid"]["peak_per_window"].as_u64().unwrap();
    assert!((100..=300).contains(&peak), "getppid peak {peak}");
    assert!(calls.get("openat").is_some());
    assert!(
        calls.get("sysinfo").is_none(),
        "the helper never called sysinfo while learning"
    );
    // Learning raises no baseline alerts.
    assert!(
        !done
            .events()
            .iter()
            .any(|a| a["event"]["kind"] == "baseline"),
        "learn mode raised baseline alerts"
    );

    // Detect: the same helper again is quiet; with --extra it calls sysinfo once; a burst
    // of 20,000 getppid in one rate window crosses the learned envelope once.
    let limit = peak.saturating_mul(10).max(peak + 1000);
    let tracer = Tracer::start(&["secure", "--state-dir", state_arg, "-o", "json"]);
    let quiet = helper(false);
    let noisy = helper(true);
    let (burst, status) = run(Command::new(WORKLOAD).args(["baseline-helper", "--burst", "20000"]));
    assert!(status.success(), "{status}");
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.contains("syscall baselines of"),
        "{}",
        done.stderr
    );
    let mine: Vec<Value> = done
        .events()
        .into_iter()
        .filter(|a| a["kind"] == "alert" && !is_build_tree_exec_alert(a))
        .filter(|a| {
            let pid = a["event"]["process"]["pid"].as_u64().unwrap() as u32;
            pid == quiet || pid == noisy || pid == burst || learned_pids.contains(&pid)
        })
        .collect();
    assert_eq!(mine.len(), 2, "expected exactly two alerts: {mine:#?}");
    let rate = mine
        .iter()
        .find(|a| a["event"]["process"]["pid"] == burst)
        .unwrap_or_else(|| panic!("no alert for the burst: {mine:#?}"));
    assert_eq!(rate["rule"], "syscall_rate_outside_baseline");
    assert_eq!(rate["event"]["op"], "rate_outside_envelope");
    assert_eq!(rate["event"]["syscall"], "getppid");
    assert_eq!(rate["event"]["limit"], limit);
    assert_eq!(rate["event"]["count"], limit + 1);
    let alert = mine
        .iter()
        .find(|a| a["event"]["process"]["pid"] == noisy)
        .unwrap_or_else(|| panic!("no alert for the new syscall: {mine:#?}"));
    assert_eq!(alert["rule"], "syscall_outside_baseline");
    assert_eq!(alert["event"]["process"]["pid"], noisy);
    assert_eq!(alert["event"]["kind"], "baseline");
    assert_eq!(alert["event"]["syscall"], "sysinfo");
    assert_eq!(alert["event"]["nr"], 99);
    let output = alert["output"].as_str().unwrap();
    assert!(output.contains("called sysinfo(0x"), "{output}");
    assert!(output.contains(workload.to_str().unwrap()), "{output}");
    let (_, dropped, _) = done.counters("baseline");
    assert_eq!(dropped, 0);
}

#[test]
fn a_malformed_baseline_file_is_a_usage_error_with_its_position() {
    let state = TempDir::new("baseline-bad");
    std::fs::write(
        state.path().join("baselines.json"),
        "{\"version\": 1,\n  \"executables\": [{\"path\": 3}]}",
    )
    .unwrap();
    let out = Command::new(OSPREY)
        .args(["secure", "--state-dir", state.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("baselines.json:2:"), "{err}");
}
