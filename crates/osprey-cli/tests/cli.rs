//! Bad input, missing privileges, missing hooks, and how runs end.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["files", "--no-such-flag"], "--no-such-flag"),
        (&["files", "--pid", "abc"], "--pid"),
        (&["files", "--pid", "0"], "--pid"),
        (&["files", "--pid", "4000000"], "no such process"),
        (&["files", "--failed", "--succeeded"], "cannot be used with"),
        (&["exec", "--failed", "--lifecycle"], "cannot be used with"),
        (&["files", "--duration", "0"], "positive"),
        (
            &["files", "--comm", "a-name-longer-than-15"],
            "1 to 15 bytes",
        ),
        (&["files", "--ring-mib", "3"], "power of two"),
        (&["files", "--output", "xml"], "xml"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let out = osprey(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn non_root_user_gets_exit_77_naming_missing_capabilities() {
    if !bpf_available("non_root_user") {
        return;
    }
    for cmd in [&["files"][..], &["exec"], &["check"]] {
        let out = as_unprivileged_user(cmd).expect("could not run as another user");
        assert_eq!(out.status.code(), Some(77), "{cmd:?}: {}", stderr(&out));
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert!(
            text.contains("CAP_BPF") && text.contains("CAP_PERFMON"),
            "{cmd:?}: {text}"
        );
    }
}

#[test]
fn without_bpf_loop_every_capability_still_loads_with_bounded_loops() {
    if !bpf_available("check_bounded_loops") {
        return;
    }
    let _serial = serial();
    let (code, stderr, doc) = check_report(&[("OSPREY_NO_BPF_LOOP", "1")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["ok"], true, "{doc:#}");
    let bpf_loop = named(&doc["features"], "bpf_loop");
    assert_eq!(bpf_loop["available"], false, "{bpf_loop}");
    assert!(
        bpf_loop["detail"]
            .as_str()
            .unwrap()
            .contains("OSPREY_NO_BPF_LOOP is set"),
        "{bpf_loop}"
    );
}

/// The builds for 5.10-class kernels (bpf/Makefile's compat objects) load here too, and
/// check names the build each capability uses and why.
#[test]
fn compat_builds_of_every_capability_load_and_check_names_them() {
    if !bpf_available("check_compat_builds") {
        return;
    }
    let _serial = serial();
    let (code, stderr, doc) = check_report(&[("OSPREY_BPF_VARIANT", "compat")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["ok"], true, "{doc:#}");
    let capabilities = &doc["capabilities"];
    let compat = [
        "process", "files", "memory", "profile", "security", "flows", "syscalls", "tcp",
    ];
    for name in compat {
        let variant = &named(capabilities, name)["variant"];
        assert_eq!(variant["variant"], "compat", "{name}: {variant}");
        assert_eq!(variant["reason"], "OSPREY_BPF_VARIANT=compat", "{name}");
    }
    let enforce = &named(capabilities, "enforce-connect")["variant"];
    assert_eq!(enforce["variant"], "modern", "one build: {enforce}");
    // Left to itself, each capability says why it took the build it did.
    let (code, stderr, doc) = check_report(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    let files = &named(&doc["capabilities"], "files")["variant"];
    let reason = files["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bpf_get_current_task_btf"), "{files}");
}

#[test]
fn check_reports_chosen_hooks_and_features() {
    if !bpf_available("check") {
        return;
    }
    let _serial = serial();
    let (code, stderr, doc) = check_report(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["ok"], true);
    let feature = |name: &str| named(&doc["features"], name);
    for name in ["btf", "tp_btf", "raw_tp", "ringbuf", "run_time_stats"] {
        assert_eq!(feature(name)["available"], true, "{name}");
    }
    // fentry, kprobe and bpf_loop (5.17) are reported either way, with a reason when
    // unavailable.
    for name in [
        "bpf_loop",
        "fentry",
        "kprobe",
        "lsm",
        "tracepoint",
        "xdp",
        "tcx",
        "uprobe",
        "bpffs",
        "perf_event_cpu_clock",
    ] {
        let f = feature(name);
        assert!(!f["detail"].as_str().unwrap().is_empty(), "{name}");
    }
    let files = named(&doc["capabilities"], "files");
    let hook = files["roles"][0]["hook"].as_str().unwrap();
    // The loader must pick the best hook the kernel offers, whatever the kernel.
    let preference = [
        ("fentry", "fexit/do_sys_openat2"),
        ("tracepoint", "tracepoint/syscalls/sys_exit_*"),
        ("tp_btf", "tp_btf/sys_exit"),
        ("raw_tp", "raw_tp/sys_exit"),
        ("kprobe", "kretprobe/do_sys_openat2"),
        ("tracepoint", "tracepoint/raw_syscalls/sys_exit"),
    ];
    let best_available = preference
        .iter()
        .find(|(f, _)| feature(f)["available"] == true)
        .map(|(_, hook)| *hook)
        .unwrap();
    assert_eq!(hook, best_available);
    // On a kernel where the VM suite expects particular hooks, hold it to that.
    if let Ok(expected) = std::env::var("OSPREY_EXPECT_FILES_HOOK") {
        assert_eq!(hook, expected);
    }
    if let Ok(expected) = std::env::var("OSPREY_EXPECT_FEATURES") {
        for name in expected.split(',') {
            assert_eq!(
                feature(name)["available"],
                true,
                "{name}: {}",
                feature(name)["detail"]
            );
        }
    }
}

#[test]
fn a_missing_hook_degrades_only_its_capability() {
    if !bpf_available("missing_hook") {
        return;
    }
    let _serial = serial();
    // One alternative gone: the next one is picked and the reason shown.
    let (_, _, doc) = check_report(&[(
        "OSPREY_DENY_PROGRAMS",
        "files_open_fexit,files_open_sc,files_open_btf",
    )]);
    let files = named(&doc["capabilities"], "files");
    assert_eq!(files["roles"][0]["hook"], "raw_tp/sys_exit");
    let rejected = files["roles"][0]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert_eq!(rejected[1]["hook"], "tracepoint/syscalls/sys_exit_*");
    assert_eq!(rejected[2]["hook"], "tp_btf/sys_exit");
    assert!(rejected[2]["reason"]
        .as_str()
        .unwrap()
        .contains("OSPREY_DENY_PROGRAMS"));

    // Every alternative gone: files says why, process still works.
    let all = "files_open_fexit,files_open_sc,files_open_btf,files_open_raw,files_open_kretprobe,files_open_tp";
    let (code, _, doc) = check_report(&[("OSPREY_DENY_PROGRAMS", all)]);
    assert_eq!(code, Some(77));
    let files = named(&doc["capabilities"], "files");
    let process = named(&doc["capabilities"], "process");
    assert_eq!(files["ok"], false);
    let why = files["error"].as_str().unwrap();
    for hook in [
        "tracepoint/syscalls/sys_exit_*",
        "tp_btf/sys_exit",
        "raw_tp/sys_exit",
        "tracepoint/raw_syscalls/sys_exit",
    ] {
        assert!(why.contains(hook), "{why}");
    }
    assert_eq!(process["ok"], true);

    let out = Command::new(OSPREY)
        .args(["files", "--duration", "1"])
        .env("OSPREY_DENY_PROGRAMS", all)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    assert!(
        stderr(&out).contains("files: no hook for open-exit"),
        "{}",
        stderr(&out)
    );

    // exec keeps running without its optional failed-exec hook, and says so.
    let tracer = Tracer::start_with_env(
        &["exec", "--output", "json"],
        &[(
            "OSPREY_DENY_PROGRAMS",
            "process_exec_failed_sc,process_exec_failed_btf,process_exec_failed_raw,process_exec_failed_tp",
        )],
    );
    let (pid, _) = run(&mut Command::new("/bin/true"));
    let done = tracer.stop();
    assert!(done.status.success());
    assert!(
        done.stderr.contains("exec-failed unavailable"),
        "{}",
        done.stderr
    );
    assert_eq!(of(&done.events(), "exec", pid).len(), 1);
}

#[test]
fn duration_count_and_sigterm_end_the_run() {
    if !bpf_available("run_endings") {
        return;
    }
    let _serial = serial();
    let t = Tracer::start(&["files", "--output", "json", "--duration", "1"]);
    let done = t.wait(Duration::from_secs(5));
    assert!(done.status.success());
    assert_eq!(done.summary()["reason"], "duration");

    let t = Tracer::start(&[
        "files",
        "--output",
        "json",
        "--count",
        "3",
        "--comm",
        "osprey-workload",
    ]);
    for _ in 0..3 {
        run(Command::new(WORKLOAD).args(["open", "5", "/nonexistent/osprey-count"]));
    }
    let done = t.wait(Duration::from_secs(5));
    assert!(done.status.success());
    assert_eq!(done.events().len(), 3);
    assert_eq!(done.summary()["reason"], "count");

    let tracer = Tracer::start(&["exec", "--output", "json"]);
    let sent = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGTERM) };
    let done = tracer.wait(Duration::from_secs(5));
    assert!(done.status.success(), "SIGTERM exits 0: {}", done.stderr);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "exited in {:?}",
        sent.elapsed()
    );
}
