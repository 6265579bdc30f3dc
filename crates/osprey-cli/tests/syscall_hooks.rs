//! What Osprey's syscall programs cost other syscalls: a capability that needs only some
//! syscalls runs on those only (per-syscall tracepoints), and where it falls back to the
//! raw hooks of every syscall it still sees exactly its own.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const BURST: u64 = 200_000;

/// (hook, run count) of a capability's role, from the JSON summary.
fn role_runs(summary: &Value, capability: &str, role: &str) -> (String, u64) {
    let programs = summary["programs"].as_array().expect("programs in summary");
    let p = programs
        .iter()
        .find(|p| p["capability"] == capability && p["role"] == role)
        .unwrap_or_else(|| panic!("no {capability}/{role} in {summary}"));
    (
        p["hook"].as_str().unwrap().to_string(),
        p["run_count"].as_u64().unwrap(),
    )
}

fn workload(args: &[&str]) {
    let (_, status) = run(Command::new(WORKLOAD).args(args));
    assert!(status.success(), "osprey-workload {args:?}: {status}");
}

/// `osprey secure` with run-time statistics and `args`, around a getppid burst and then
/// each of `workloads`; stopped, and checked to have exited cleanly.
fn secure_run(args: &[&str], workloads: &[&[&str]]) -> Finished {
    let state = TempDir::new("syscall-hooks");
    let mut all = vec!["secure", "--state-dir", state.path().to_str().unwrap()];
    all.extend(["--run-time-stats", "--output", "json"]);
    all.extend(args);
    let tracer = Tracer::start(&all);
    workload(&["bench-getppid", &BURST.to_string()]);
    for w in workloads {
        workload(w);
    }
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    done
}

/// A getppid burst, then opens of a file a default rule names: the rules' open program (on
/// the per-syscall tracepoints of the open syscalls) runs for the opens and not for the
/// burst. Run counts are machine-wide (others' opens count too), but far below the burst
/// unless the program ran on every syscall. The security syscalls are more than
/// per-syscall tracepoints are worth: their program is on tp_btf and runs on every syscall,
/// returning at once for the others. The entry program that remembers the uids before
/// setuid, setreuid and setresuid runs on those three only.
#[test]
fn the_rules_open_program_does_not_run_on_a_syscall_no_rule_needs() {
    if !bpf_available("the_rules_open_program_does_not_run_on_a_syscall_no_rule_needs") {
        return;
    }
    let _serial = serial();
    let done = secure_run(
        &[],
        &[&["open", "100", "/etc/shadow"], &["setuid-escalate"]],
    );
    let summary = done.summary();
    let (hook, runs) = role_runs(&summary, "files", "open-exit");
    assert_eq!(hook, "tracepoint/syscalls/sys_exit_*");
    assert!(runs >= 100, "{runs} runs for 100 opens");
    assert!(runs < BURST / 2, "{runs} runs during {BURST} getppid calls");
    let (hook, runs) = role_runs(&summary, "security", "syscall-exit");
    assert_eq!(hook, "tp_btf/sys_exit");
    assert!(runs >= BURST, "{runs} runs during {BURST} getppid calls");
    let (hook, runs) = role_runs(&summary, "security", "setid-enter");
    assert_eq!(hook, "tracepoint/syscalls/sys_enter_*");
    assert!(runs >= 2, "{runs} runs for two setresuid calls");
    assert!(runs < BURST / 2, "{runs} runs during {BURST} getppid calls");
}

/// `osprey files` traces opens at a high rate, so it prefers its hook on every sys_exit
/// (tp_btf, else raw_tp), filtered in the kernel by its syscall bitmap, to the per-syscall
/// tracepoints the always-on modules use: the open is still reported, exactly once, and the
/// getppid burst ran the program (which returned at once). The raw_tp run (tp_btf denied)
/// checks that variant's registers too.
#[test]
fn osprey_files_hooks_every_sys_exit_filters_by_syscall_and_sees_the_open() {
    if !bpf_available("osprey_files_hooks_every_sys_exit_filters_by_syscall_and_sees_the_open") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("syscall-hooks");
    let path = dir.path().join("opened-through-every-sys-exit");
    std::fs::write(&path, b"x").unwrap();
    for (denied, expected_hook) in [
        ("files_open_fexit", "tp_btf/sys_exit"),
        ("files_open_fexit,files_open_btf", "raw_tp/sys_exit"),
    ] {
        let tracer = Tracer::start_with_env(
            &["files", "--output", "json", "--run-time-stats"],
            &[("OSPREY_DENY_PROGRAMS", denied)],
        );
        workload(&["open", "1", path.to_str().unwrap()]);
        workload(&["bench-getppid", &BURST.to_string()]);
        let done = tracer.stop();
        assert!(done.status.success(), "{}", done.stderr);
        let wanted = path.to_str().unwrap();
        let opens: Vec<Value> = done
            .events()
            .into_iter()
            .filter(|e| e["abs_path"] == wanted || e["path"] == wanted)
            .collect();
        assert_eq!(opens.len(), 1, "{}", String::from_utf8_lossy(&done.stdout));
        assert_eq!(opens[0]["syscall"], "openat", "{}", opens[0]);
        assert_eq!(opens[0]["errno"], 0, "{}", opens[0]);
        let (hook, runs) = role_runs(&done.summary(), "files", "open-exit");
        assert_eq!(hook, expected_hook);
        assert!(runs >= BURST, "{runs} runs during {BURST} getppid calls");
    }
}

/// Rules that name few security syscalls (here ptrace alone) put the security exit program
/// on those syscalls' own tracepoints: a getppid burst does not run it, and the rule still
/// fires.
#[test]
fn rules_that_name_few_security_syscalls_attach_to_those_only() {
    if !bpf_available("rules_that_name_few_security_syscalls_attach_to_those_only") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("syscall-hooks-rules");
    let rules = dir.path().join("ptrace.yaml");
    std::fs::write(
        &rules,
        "- rule: ptrace_seen\n  desc: d\n  severity: low\n  condition: evt.kind = ptrace and evt.ret = 0\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let done = secure_run(
        &["--no-default-rules", "--rules", rules],
        &[&["ptrace-attach"]],
    );
    assert!(
        done.stderr.contains("security syscalls traced: 1 of "),
        "{}",
        done.stderr
    );
    let (hook, runs) = role_runs(&done.summary(), "security", "syscall-exit");
    assert_eq!(hook, "tracepoint/syscalls/sys_exit_*");
    assert!(runs >= 1, "{runs} runs for a ptrace attach");
    assert!(runs < BURST / 2, "{runs} runs during {BURST} getppid calls");
    let seen = common::alerts::alerts(&done)
        .iter()
        .filter(|a| {
            a["rule"] == "ptrace_seen" && a["event"]["process"]["comm"] == "osprey-workload"
        })
        .count();
    assert!(seen >= 1, "{}", String::from_utf8_lossy(&done.stdout));
}
