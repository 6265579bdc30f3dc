//! Real-BPF tests of `osprey secure`: every default rule fires on a harmless trigger with
//! the right rule and process, a benign workload raises nothing, deny blocks with EPERM,
//! kill kills with SIGKILL. And `osprey rules check/show` without BPF.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use common::*;
use serde_json::Value;

fn alerts(done: &Finished) -> Vec<Value> {
    done.events()
        .into_iter()
        .filter(|e| e["kind"] == "alert" && !is_build_tree_exec_alert(e))
        .collect()
}

/// Rule names of the alerts, by the pid of the triggering process.
fn rules_by_pid(alerts: &[Value]) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in alerts {
        let pid = a["event"]["process"]["pid"].as_u64().unwrap();
        out.entry(pid)
            .or_default()
            .insert(a["rule"].as_str().unwrap().to_string());
    }
    out
}

fn sh(script: &str) -> u32 {
    let (pid, status) = run(Command::new("/bin/sh").arg("-c").arg(script));
    assert!(status.success(), "sh -c {script:?}: {status}");
    pid
}

fn workload(args: &[&str]) -> u32 {
    let (pid, status) = run(Command::new(WORKLOAD).args(args));
    assert!(status.success(), "osprey-workload {args:?}: {status}");
    pid
}

/// `osprey secure --enforce` with only the rules in `rules`, JSON output.
fn enforcing(rules: &std::path::Path) -> Tracer {
    Tracer::start(&[
        "secure",
        "--no-default-rules",
        "--rules",
        rules.to_str().unwrap(),
        "--enforce",
        "--output",
        "json",
    ])
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_default_rule_fires_on_its_trigger() {
    every_default_rule_fires(&[]);
}

/// The open prefilter's ancestor walk and the path walks without bpf_loop, as on kernels
/// before 5.17.
#[test]
fn every_default_rule_fires_with_bounded_loops() {
    every_default_rule_fires(&[("OSPREY_NO_BPF_LOOP", "1")]);
}

fn every_default_rule_fires(env: &[(&str, &str)]) {
    if !bpf_available("every_default_rule_fires_on_its_trigger") {
        return;
    }
    let _serial = serial();
    let tmp = TempDir::new("secure"); // under /tmp: exec from here is suspicious
    let home = TempDir::new("secure-home");
    // Outside /tmp, so that running it is not itself an alert.
    let bin_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("secure-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let reader = bin_dir.join("osprey-reader");
    std::fs::copy("/bin/cat", &reader).unwrap();
    let tmp_true = tmp.path().join("osprey-tmp-true");
    std::fs::copy("/bin/true", &tmp_true).unwrap();
    let suid_file = tmp.path().join("suid-me");
    std::fs::write(&suid_file, b"").unwrap();
    let unique = format!("osprey-test-{}", std::process::id());
    let cron = format!("/etc/cron.d/{unique}");
    let unit = format!("/etc/systemd/system/{unique}.service");
    let log = format!("/var/log/{unique}.log");

    let tracer = Tracer::start_with_env(&["secure", "--output", "json"], env);
    let mut expected: Vec<(u32, BTreeSet<String>, &str)> = Vec::new();
    let (pid, status) = run(Command::new(&reader).arg("/etc/shadow"));
    assert!(status.success());
    expected.push((pid, set(&["credential_file_read"]), "osprey-reader"));
    expected.push((
        workload(&["setuid-escalate"]),
        set(&["setuid_to_root_by_non_root"]),
        "osprey-workload",
    ));
    expected.push((
        workload(&["proc-mem"]),
        set(&["proc_mem_write"]),
        "osprey-workload",
    ));
    expected.push((
        workload(&["ptrace-attach"]),
        set(&["ptrace_attach"]),
        "osprey-workload",
    ));
    expected.push((
        workload(&["module"]),
        set(&["kernel_module_load"]),
        "osprey-workload",
    ));
    expected.push((
        workload(&["bpf-map"]),
        set(&["bpf_by_unexpected_program"]),
        "osprey-workload",
    ));
    let (pid, status) = run(&mut Command::new(&tmp_true));
    assert!(status.success());
    expected.push((
        pid,
        set(&["exec_from_temporary_location"]),
        "osprey-tmp-true",
    ));
    expected.push((
        workload(&["unshare"]),
        set(&["namespace_change"]),
        "osprey-workload",
    ));
    expected.push((
        workload(&["open-write", "/etc/passwd"]),
        set(&["account_file_write"]),
        "osprey-workload",
    ));
    expected.push((
        sh(&format!(": > {}/ld.so.preload", tmp.path().display())),
        set(&["ld_preload_write"]),
        "sh",
    ));
    expected.push((sh(&format!(": > {cron}")), set(&["cron_write"]), "sh"));
    std::fs::remove_file(&cron).unwrap();
    expected.push((
        sh(&format!(": > {unit}")),
        set(&["systemd_unit_write"]),
        "sh",
    ));
    std::fs::remove_file(&unit).unwrap();
    expected.push((
        sh(&format!(
            "echo '# osprey' >> {}/.bashrc",
            home.path().display()
        )),
        set(&["shell_profile_write"]),
        "sh",
    ));
    expected.push((
        sh(&format!(": > {}/.bash_history", home.path().display())),
        set(&["log_tampering"]),
        "sh",
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&log)
        .unwrap();
    let (pid, status) = run(Command::new("truncate").args(["-s", "0", &log]));
    assert!(status.success());
    expected.push((pid, set(&["log_tampering"]), "truncate"));
    let (pid, status) = run(Command::new("rm").arg(&log));
    assert!(status.success());
    expected.push((pid, set(&["log_tampering"]), "rm"));
    let (pid, status) = run(Command::new("chmod").arg("u+s").arg(&suid_file));
    assert!(status.success());
    expected.push((pid, set(&["setuid_bit_set"]), "chmod"));
    workload(&["reverse-shell"]);
    workload(&["memfd-exec"]);
    let done = tracer.stop();
    let _ = std::fs::remove_dir_all(&bin_dir);
    assert!(done.status.success(), "{}", done.stderr);
    let alerts = alerts(&done);
    let by_pid = rules_by_pid(&alerts);

    for (pid, rules, comm) in &expected {
        assert_eq!(
            by_pid.get(&(*pid as u64)),
            Some(rules),
            "pid {pid} ({comm}); all alerts: {by_pid:?}"
        );
        let a = alerts
            .iter()
            .find(|a| a["event"]["process"]["pid"] == *pid)
            .unwrap();
        assert_eq!(a["event"]["process"]["comm"], *comm, "{a}");
        assert_eq!(a["outcome"], "alerted");
        assert!(a["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_str().unwrap().starts_with('T')));
        assert!(
            !a["event"]["process"]["ancestry"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{a}"
        );
    }
    // Triggers whose process is a child we do not know the pid of: match by comm.
    let shell = alerts
        .iter()
        .find(|a| a["rule"] == "reverse_shell")
        .expect("reverse_shell alert");
    assert_eq!(shell["event"]["process"]["comm"], "sh");
    assert_eq!(
        shell["event"]["process"]["ancestry"][0]["comm"],
        "osprey-workload"
    );
    alerts
        .iter()
        .find(|a| {
            // Newer kernels name the process after the memfd ("memfd:..."), older ones after
            // the fd ("3", exec of /dev/fd/3): the workload's child is the one either way.
            a["rule"] == "exec_from_temporary_location"
                && a["event"]["process"]["ancestry"][0]["comm"] == "osprey-workload"
        })
        .unwrap_or_else(|| panic!("memfd exec alert in {alerts:#?}"));

    // Every default rule was exercised.
    let fired: BTreeSet<&str> = alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    let shown = Command::new(OSPREY)
        .args(["rules", "show"])
        .output()
        .unwrap();
    let defaults: Vec<String> = String::from_utf8(shown.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("- rule: ").map(str::to_string))
        .collect();
    assert_eq!(defaults.len(), 16);
    for d in &defaults {
        assert!(
            fired.contains(d.as_str()),
            "default rule {d} never fired: {fired:?}"
        );
    }
    let latency_ms: Vec<f64> = alerts
        .iter()
        .map(|a| a["detect_latency_ns"].as_f64().unwrap() / 1e6)
        .collect();
    let limit_ms = 1000.0 * f64::from(slowdown());
    assert!(latency_ms.iter().all(|&l| l < limit_ms), "{latency_ms:?}");
}

#[test]
fn benign_workload_raises_no_alerts() {
    if !bpf_available("benign_workload_raises_no_alerts") {
        return;
    }
    let _serial = serial();
    let tracer = Tracer::start(&["secure", "--output", "json"]);
    benign::run_benign_workload();
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let alerts = alerts(&done);
    assert!(
        alerts.is_empty(),
        "benign activity raised alerts: {alerts:#?}"
    );
    // The run saw the activity (not silence for lack of events).
    let (exec_emitted, _, _) = done.counters("exec");
    assert!(exec_emitted >= 8, "{exec_emitted}");
    let (security_emitted, dropped, _) = done.counters("security");
    assert!(security_emitted > 0 && dropped == 0);
}

#[test]
fn deny_rule_blocks_the_open_with_eperm() {
    if !bpf_available("deny_rule_blocks_the_open_with_eperm") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("deny");
    let secret = dir.path().join("secret");
    let other = dir.path().join("other");
    std::fs::write(&secret, b"s").unwrap();
    std::fs::write(&other, b"o").unwrap();
    let rules = dir.path().join("deny.yaml");
    std::fs::write(
        &rules,
        format!(
            "- rule: deny_secret\n  desc: nobody reads the secret\n  severity: high\n  tags: [T1005]\n  condition: evt.kind = open and file.path = {}\n  action: deny\n",
            secret.display()
        ),
    )
    .unwrap();
    let tracer = enforcing(&rules);
    let blocked = Command::new("cat").arg(&secret).output().unwrap();
    let allowed = Command::new("cat").arg(&other).output().unwrap();
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(!blocked.status.success());
    assert!(
        String::from_utf8_lossy(&blocked.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&blocked.stderr)
    );
    assert_eq!(allowed.stdout, b"o");
    let alerts = alerts(&done);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["rule"], "deny_secret");
    assert_eq!(alerts[0]["outcome"], "blocked");
    assert_eq!(alerts[0]["action"], "deny");
    assert_eq!(alerts[0]["event"]["abs_path"], secret.to_str().unwrap());
    assert_eq!(alerts[0]["event"]["errno"], libc::EPERM);
    assert_eq!(alerts[0]["event"]["process"]["comm"], "cat");
    // The VM suite (BPF LSM available) holds the backend to the kernel one.
    if let Ok(backend) = std::env::var("OSPREY_EXPECT_DENY_BACKEND") {
        assert!(
            done.stderr
                .contains(&format!("enforcing deny rules with {backend}")),
            "{}",
            done.stderr
        );
    }
}

#[test]
fn deny_rule_refuses_the_connect_before_any_packet() {
    if !bpf_available("deny_rule_refuses_the_connect") {
        return;
    }
    let _serial = serial();
    let blocked4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocked4.local_addr().unwrap().port();
    let blocked6 = std::net::TcpListener::bind(("::1", port)).unwrap();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for l in [&blocked4, &blocked6] {
        l.set_nonblocking(true).unwrap();
    }
    let dir = TempDir::new("deny-connect");
    let rules = dir.path().join("deny.yaml");
    std::fs::write(
        &rules,
        format!("- rule: deny_port\n  desc: nothing talks to this port\n  severity: high\n  tags: [T1071]\n  condition: evt.kind = connect and net.port = {port}\n  action: deny\n"),
    )
    .unwrap();
    let tracer = enforcing(&rules);
    let try_connect = |to: String| {
        let out = Command::new(WORKLOAD)
            .args(["connect-try", &to])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let v4 = try_connect(format!("127.0.0.1:{port}"));
    let v6 = try_connect(format!("[::1]:{port}"));
    let allowed = try_connect(open.local_addr().unwrap().to_string());
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(v4, format!("errno {}", libc::EPERM));
    assert_eq!(v6, format!("errno {}", libc::EPERM));
    assert_eq!(allowed, "connected");
    for l in [&blocked4, &blocked6] {
        let e = l.accept().unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "nothing reached {l:?}"
        );
    }
    let alerts = alerts(&done);
    let addrs: BTreeSet<String> = alerts
        .iter()
        .map(|a| a["event"]["addr"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(
        addrs,
        set(&[&format!("127.0.0.1:{port}"), &format!("[::1]:{port}")])
    );
    for a in &alerts {
        assert_eq!(a["rule"], "deny_port");
        assert_eq!(a["outcome"], "blocked");
        assert_eq!(a["event"]["ret"], -libc::EPERM);
        assert_eq!(a["event"]["denied"], true);
        assert_eq!(a["event"]["syscall"], "connect");
        assert_eq!(a["event"]["process"]["comm"], "osprey-workload");
        assert!(a["note"].as_str().unwrap().contains("before any packet"));
    }
}

#[test]
fn kill_rule_kills_the_process_with_sigkill_after_the_syscall() {
    if !bpf_available("kill_rule_kills") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("kill");
    let target = dir.path().join("target");
    std::fs::write(&target, b"").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rules = dir.path().join("kill.yaml");
    std::fs::write(
        &rules,
        "- rule: kill_chmod\n  desc: chmod by the workload is fatal\n  severity: critical\n  tags: [T1222]\n  condition: evt.syscall in (chmod, fchmodat) and proc.name = osprey-workload\n  action: kill\n",
    )
    .unwrap();
    let tracer = enforcing(&rules);
    let started = std::time::Instant::now();
    let (pid, status) = run(Command::new(WORKLOAD)
        .arg("chmod-then-sleep")
        .arg(&target)
        .arg("5000"));
    let elapsed = started.elapsed();
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(
        elapsed.as_millis() < 2000,
        "killed before its sleep ended: {elapsed:?}"
    );
    // Honest: the syscall completed before the signal.
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let alerts = alerts(&done);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["rule"], "kill_chmod");
    assert_eq!(alerts[0]["outcome"], "killed");
    assert_eq!(alerts[0]["event"]["killed"], true);
    assert_eq!(alerts[0]["event"]["process"]["pid"], pid);
    assert!(alerts[0]["note"]
        .as_str()
        .unwrap()
        .contains("syscall itself had completed"));
}

fn rules_check(text: &str) -> (i32, String) {
    let dir = TempDir::new("rules-check");
    let file = dir.path().join("r.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(OSPREY)
        .args(["rules", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(file.to_str().unwrap(), "FILE");
    (out.status.code().unwrap(), stderr)
}

#[test]
fn rules_check_reports_bad_rules_with_file_line_col() {
    let head = "- rule: r\n  desc: d\n  severity: low\n";
    let (code, err) = rules_check(&format!(
        "{head}  condition: evt.kind = open and (proc.name = x\n"
    ));
    assert_eq!(code, 2);
    assert!(err.contains("FILE:4:47: expected `)`"), "{err}");
    let (code, err) = rules_check(&format!("{head}  condition: proc.nam = x\n"));
    assert_eq!(code, 2);
    assert!(
        err.contains("FILE:4:14: unknown field `proc.nam` (did you mean `proc.name`?)"),
        "{err}"
    );
    let (code, err) = rules_check(&format!("{head}  condition: proc.pid > many\n"));
    assert_eq!(code, 2);
    assert!(err.contains("FILE:4:25: `many` is not an integer"), "{err}");
    let (code, err) = rules_check(&format!("{head}  condition: opened_for_writ\n"));
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "FILE:4:14: undefined macro `opened_for_writ` (did you mean `opened_for_write`?)"
        ),
        "{err}"
    );
    let (code, err) = rules_check("- rule: r\n  desc: [x\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("FILE:") && err.contains("YAML syntax error"),
        "{err}"
    );
    let (code, _) = rules_check(&format!(
        "{head}  condition: opened_for_write and file.path startswith /srv/\n"
    ));
    assert_eq!(code, 0);
    let show = Command::new(OSPREY)
        .args(["rules", "show"])
        .output()
        .unwrap();
    assert!(show.status.success());
    assert!(String::from_utf8_lossy(&show.stdout).contains("- rule: reverse_shell"));
}

/// Issue 18's reproduction: a condition nested `n` brackets deep.
fn bracketed_rule(n: usize) -> String {
    format!(
        "- rule: d\n  desc: x\n  severity: high\n  condition: \"{}evt.kind = open{}\"\n  output: x\n",
        "(".repeat(n),
        ")".repeat(n)
    )
}

#[test]
fn deeply_nested_conditions_are_refused_with_exit_2_not_a_stack_overflow() {
    let (code, err) = rules_check(&bracketed_rule(10_000));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("FILE:4:115: condition nested deeper than 100 levels"),
        "{err}"
    );
    let nots = format!(
        "- rule: d\n  desc: x\n  severity: high\n  condition: \"{}evt.kind = open\"\n  output: x\n",
        "not ".repeat(100_000)
    );
    let (code, err) = rules_check(&nots);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FILE:4:415: condition nested deeper"), "{err}");
    let (code, err) = rules_check(&format!("{}x\n", "- ".repeat(100_000)));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("FILE:1:") && err.contains("nested deeper than 32"),
        "{err}"
    );
    // `osprey secure` refuses the file before it needs any privilege.
    let dir = TempDir::new("secure-deep");
    let file = dir.path().join("deep.yaml");
    std::fs::write(&file, bracketed_rule(10_000)).unwrap();
    let out = Command::new(OSPREY)
        .args(["secure", "--no-baselines", "--rules"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:4:115: ", file.display())),
        "{err}"
    );
}

#[test]
fn oversized_rule_files_are_refused_before_reading_them_whole() {
    let (code, err) = rules_check(&format!("# {}\n", "x".repeat(5 << 20)));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FILE:1:1: rule file larger than"), "{err}");
}
