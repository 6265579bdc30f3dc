//! Real-BPF tests of community rules: `osprey secure` runs unchanged Sigma and Falco rules,
//! the test performs each rule's behaviour for real (an exec with a matching name and
//! command line, the creation of a matching file, a connect) and asserts the alert, with
//! the rule's source, id and level. Executables a rule names are copies of harmless
//! programs (true, touch, cat, sh) under that name, outside /tmp.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::*;
use super::{rule_set, rulesets, FALCO_HOST_LIVE};
use serde_json::Value;

/// A directory of harmless executables named as the rules expect.
struct Bins(PathBuf);

impl Bins {
    fn new() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("rulesets-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Bins(dir)
    }

    /// `name` as a copy of `program`.
    fn get(&self, name: &str, program: &str) -> PathBuf {
        let path = self.0.join(name);
        if !path.exists() {
            std::fs::copy(program, &path).unwrap();
        }
        path
    }

    /// Runs `name` (a copy of `program`) with `args`; its pid.
    fn run(&self, name: &str, program: &str, args: &[&str]) -> u32 {
        run(Command::new(self.get(name, program)).args(args)).0
    }
}

impl Drop for Bins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `osprey secure` with only `rules` (no defaults, no baselines).
pub fn secure(rules: &[PathBuf]) -> Tracer {
    let mut args = vec![
        "secure",
        "--no-default-rules",
        "--no-baselines",
        "--output",
        "json",
    ];
    let paths: Vec<String> = rules.iter().map(|p| p.display().to_string()).collect();
    for p in &paths {
        args.extend(["--rules", p.as_str()]);
    }
    Tracer::start(&args)
}

pub fn alerts(done: &Finished) -> Vec<Value> {
    done.events()
        .into_iter()
        .filter(|e| e["kind"] == "alert")
        .collect()
}

/// The alert of `rule` (a Sigma id or a Falco rule name) for `pid`, if raised.
fn raised<'a>(alerts: &'a [Value], key: &str, rule: &str, pid: u32) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a[key] == rule && a["event"]["process"]["pid"] == pid)
}

/// (Sigma rule file under rules/linux, how to trigger it): the trigger returns the pid.
type Trigger = Box<dyn Fn(&Bins, &Path) -> u32>;

fn exec(name: &'static str, args: &'static [&'static str]) -> Trigger {
    Box::new(move |bins, _| bins.run(name, "/bin/true", args))
}

fn sigma_cases() -> Vec<(&'static str, Trigger)> {
    vec![
        (
            "process_creation/proc_creation_lnx_nohup.yml",
            exec("nohup", &["x"]),
        ),
        (
            "process_creation/proc_creation_lnx_base64_decode.yml",
            exec("base64", &["-d"]),
        ),
        (
            "process_creation/proc_creation_lnx_mkfifo_named_pipe_creation.yml",
            exec("mkfifo", &["p"]),
        ),
        (
            "process_creation/proc_creation_lnx_userdel.yml",
            exec("userdel", &["nobody-x"]),
        ),
        (
            "process_creation/proc_creation_lnx_groupdel.yml",
            exec("groupdel", &["g"]),
        ),
        (
            "process_creation/proc_creation_lnx_system_info_discovery.yml",
            exec("uname", &["-a"]),
        ),
        (
            "process_creation/proc_creation_lnx_at_command.yml",
            exec("at", &["now"]),
        ),
        (
            "process_creation/proc_creation_lnx_doas_execution.yml",
            exec("doas", &["id"]),
        ),
        (
            "process_creation/proc_creation_lnx_cap_setuid.yml",
            exec("setcap", &["cap_setuid+ep", "f"]),
        ),
        (
            "process_creation/proc_creation_lnx_capa_discovery.yml",
            exec("getcap", &["-r", "/"]),
        ),
        (
            "process_creation/proc_creation_lnx_chattr_immutable_removal.yml",
            exec("chattr", &["-i", "f"]),
        ),
        (
            "process_creation/proc_creation_lnx_crontab_enumeration.yml",
            exec("crontab", &["-l"]),
        ),
        (
            "process_creation/proc_creation_lnx_susp_find_execution.yml",
            exec("find", &["/", "-perm", "-4000"]),
        ),
        (
            "process_creation/proc_creation_lnx_touch_susp.yml",
            exec("touch", &["-t", "202001010000", "x.service"]),
        ),
        (
            "process_creation/proc_creation_lnx_capsh_shell_invocation.yml",
            exec("capsh", &["--"]),
        ),
        (
            "process_creation/proc_creation_lnx_dd_process_injection.yml",
            exec("dd", &["of=/proc/1/mem"]),
        ),
        (
            "process_creation/proc_creation_lnx_mount_hidepid.yml",
            exec("mount", &["-o", "hidepid=2", "proc"]),
        ),
        (
            "process_creation/proc_creation_lnx_crypto_mining.yml",
            exec("miner", &["--donate-level=0"]),
        ),
        (
            "process_creation/proc_creation_lnx_susp_recon_indicators.yml",
            exec("lookup", &["/", "-name", ".htpasswd"]),
        ),
        // file_event: an O_CREAT open, a rename onto the path, a named creator.
        (
            "file_event/file_event_lnx_triple_cross_rootkit_persistence.yml",
            Box::new(|bins, tmp| {
                let path = tmp.join("x-ebpfbackdoor");
                bins.run("create", "/usr/bin/touch", &[path.to_str().unwrap()])
            }),
        ),
        (
            "file_event/file_event_lnx_susp_filename_with_embedded_base64_command.yml",
            Box::new(|bins, tmp| {
                let from = tmp.join("plain");
                std::fs::write(&from, b"").unwrap();
                let to = tmp.join("{echo,aWQK}");
                bins.run(
                    "mv",
                    "/usr/bin/mv",
                    &[from.to_str().unwrap(), to.to_str().unwrap()],
                )
            }),
        ),
        // Statically linked busybox as `wget` (its `touch` applet): the file's creation is
        // the process's very first open, right after the exec; Image matches only if the
        // exec is handled first although it comes from another ring.
        (
            "file_event/file_event_lnx_wget_download_file_in_tmp_dir.yml",
            Box::new(|bins, tmp| {
                let path = tmp.join("download");
                run(Command::new(bins.get("wget", "/bin/busybox"))
                    .arg0("busybox")
                    .args(["touch", path.to_str().unwrap()]))
                .0
            }),
        ),
        // network_connection: bash connects a UDP socket (no packet is sent) to a
        // documentation address on a callback port.
        (
            "network_connection/net_connection_lnx_back_connect_shell_dev.yml",
            Box::new(|_, _| udp_connect_from_bash()),
        ),
        (
            "network_connection/net_connection_lnx_susp_malware_callback_port.yml",
            Box::new(|_, _| udp_connect_from_bash()),
        ),
    ]
}

/// `/usr/bin/bash` connecting a UDP socket to 198.51.100.7:4444 right after its exec; its
/// pid.
fn udp_connect_from_bash() -> u32 {
    let script = "exec 3<>/dev/udp/198.51.100.7/4444; exec 3>&-";
    run(Command::new("/usr/bin/bash").args(["-c", script])).0
}

fn sigma_id(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text.lines().find(|l| l.starts_with("id:")).unwrap();
    line["id:".len()..].trim().to_string()
}

#[test]
fn sigma_rules_fire_on_their_behaviour() {
    if !bpf_available("sigma_rules_fire_on_their_behaviour") {
        return;
    }
    let _serial = serial();
    let linux = rulesets().join("sigma/rules/linux");
    let cases = sigma_cases();
    let files: Vec<PathBuf> = cases.iter().map(|c| linux.join(c.0)).collect();
    let bins = Bins::new();
    let tmp = TempDir::new("rulesets"); // under /tmp, as the file_event rules want
    let tracer = secure(&files);
    let pids: Vec<u32> = cases.iter().map(|c| (c.1)(&bins, tmp.path())).collect();
    let done = tracer.stop();
    let alerts = alerts(&done);
    let mut missing = Vec::new();
    for ((case, file), pid) in cases.iter().zip(&files).zip(&pids) {
        let id = sigma_id(file);
        match raised(&alerts, "id", &id, *pid) {
            Some(a) => {
                assert_eq!(a["source"], "sigma", "{a}");
                assert!(a["level"].is_string(), "{a}");
                assert!(a["references"].is_array(), "{a}");
            }
            None => {
                let other: Vec<&Value> = alerts.iter().filter(|a| a["id"] == id.as_str()).collect();
                missing.push(format!(
                    "{} (pid {pid}; alerts of the rule: {other:?})",
                    case.0
                ))
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no alert for {missing:#?}\nstderr: {}",
        done.stderr
    );
}

#[test]
fn falco_stable_rules_fire_on_their_behaviour() {
    if !bpf_available("falco_stable_rules_fire_on_their_behaviour") {
        return;
    }
    let _serial = serial();
    let bins = Bins::new();
    let tmp = TempDir::new("rulesets-falco");
    let same_fs = bins.0.join("hard");
    let log = format!("/var/log/osprey-rulesets-{}.log", std::process::id());
    let shm = format!("/dev/shm/osprey-rulesets-{}", std::process::id());
    std::fs::copy("/bin/true", &shm).unwrap();
    let tracer = secure(&[rulesets().join("falco/falco_rules.yaml")]);
    // A web server that reads /etc/shadow once it has run longer than Falco's start-up
    // grace (5 s); the shell stays alive so its age can be read.
    let mut late_reader = Command::new(bins.get("httpd", "/usr/bin/bash"))
        .args(["-c", "sleep 5.5; exec 3</etc/shadow; sleep 1; true"])
        .spawn()
        .unwrap();
    let link = tmp.path().join("link");
    let mut expected: Vec<(&str, u32)> = vec![
        (
            "Read sensitive file untrusted",
            bins.run("osprey-reader", "/bin/cat", &["/etc/shadow"]),
        ),
        (
            "Search Private Keys or Passwords",
            bins.run("find", "/bin/true", &["/", "-name", "id_rsa"]),
        ),
        (
            "Find AWS Credentials",
            bins.run("find", "/bin/true", &["/", "-path", "~/.aws/credentials"]),
        ),
        (
            "Remove Bulk Data from Disk",
            bins.run("shred", "/bin/true", &["f"]),
        ),
        (
            "Clear Log Activities",
            run(Command::new("/bin/sh").args(["-c", &format!(": > {log}")])).0,
        ),
        (
            "Create Symlink Over Sensitive Files",
            bins.run(
                "ln",
                "/usr/bin/ln",
                &["-s", "/etc/shadow", link.to_str().unwrap()],
            ),
        ),
        (
            "Create Hardlink Over Sensitive Files",
            bins.run(
                "ln",
                "/usr/bin/ln",
                &["/etc/shadow", same_fs.to_str().unwrap()],
            ),
        ),
        ("Execution from /dev/shm", run(&mut Command::new(&shm)).0),
        (
            "Run shell untrusted",
            bins.run("nginx", "/bin/sh", &["-c", "/bin/sh -c true; true"]),
        ),
    ];
    expected.push((
        "PTRACE attached to process",
        run(Command::new(WORKLOAD).arg("ptrace-attach")).0,
    ));
    expected.extend(more_falco_host_triggers(&bins));
    late_reader.wait().unwrap();
    expected.push((
        "Read sensitive file trusted after startup",
        late_reader.id(),
    ));
    assert_eq!(
        rule_set(expected.iter().map(|e| e.0)),
        rule_set(FALCO_HOST_LIVE.iter().copied())
    );
    let done = tracer.stop();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&shm);
    let _ = std::fs::remove_file(&same_fs);
    let alerts = alerts(&done);
    let mut missing = Vec::new();
    for (rule, pid) in &expected {
        let found = raised(&alerts, "rule", rule, *pid).or_else(|| {
            // A shell rule's alert is for the shell the trigger spawned.
            alerts
                .iter()
                .find(|a| a["rule"] == *rule && a["event"]["process"]["ppid"] == *pid)
        });
        match found {
            Some(a) => {
                assert_eq!(a["source"], "falco", "{a}");
                assert!(a["level"].is_string(), "priority carried: {a}");
            }
            None => missing.push(format!("{rule} (pid {pid})")),
        }
    }
    assert!(
        missing.is_empty(),
        "no alert for {missing:?}; alerts: {alerts:#?}\nstderr: {}",
        done.stderr
    );
}

/// Falco stable rules on host processes: (rule, pid of the process or of its parent).
fn more_falco_host_triggers(bins: &Bins) -> Vec<(&'static str, u32)> {
    // An interactive login's descendant (an ancestor named sshd) running as `nobody`.
    let as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups /bin/true; true";
    vec![
        (
            "Directory traversal monitored file read",
            bins.run("osprey-reader", "/bin/cat", &["/etc/../etc/../etc/passwd"]),
        ),
        (
            "System user interactive",
            bins.run("sshd", "/usr/bin/bash", &["-c", as_nobody]),
        ),
        (
            "PTRACE anti-debug attempt",
            run(Command::new(WORKLOAD).arg("ptrace-traceme")).0,
        ),
        (
            "Fileless execution via memfd_create",
            run(Command::new(WORKLOAD).arg("memfd-exec")).0,
        ),
    ]
}

#[test]
fn benign_corpus_raises_nothing_from_falco_stable_and_reports_sigma() {
    if !bpf_available("benign_corpus_raises_nothing_from_falco_stable_and_reports_sigma") {
        return;
    }
    let _serial = serial();
    let sets = rulesets();
    let tracer = secure(&[sets.join("sigma"), sets.join("falco/falco_rules.yaml")]);
    benign::run_benign_workload();
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let alerts: Vec<Value> = alerts(&done)
        .into_iter()
        .filter(benign::from_this_test)
        .collect();
    let falco: Vec<&Value> = alerts.iter().filter(|a| a["source"] == "falco").collect();
    assert!(
        falco.is_empty(),
        "Falco stable rules alerted on the benign corpus: {falco:#?}"
    );
    let mut serious: Vec<String> = alerts
        .iter()
        .filter(|a| a["source"] == "sigma" && (a["level"] == "high" || a["level"] == "critical"))
        .map(|a| format!("{} ({})", a["rule"], a["level"]))
        .collect();
    serious.sort();
    serious.dedup();
    eprintln!("Sigma rules of level high or critical on the benign corpus: {serious:?}");
    let (exec_emitted, _, _) = done.counters("exec");
    assert!(
        exec_emitted >= 8,
        "the run saw the corpus: {exec_emitted} execs"
    );
}

/// With the whole Sigma set loaded (file_event rules on created files of any path), opens
/// without O_CREAT stay in the kernel: counted as filtered, never emitted; a creation
/// outside every path the rules name still reaches them.
#[test]
fn sigma_file_event_rules_keep_read_only_opens_in_the_kernel() {
    if !bpf_available("sigma_file_event_rules_keep_read_only_opens_in_the_kernel") {
        return;
    }
    let _serial = serial();
    let bins = Bins::new();
    let plain = bins.0.join("plain-read");
    std::fs::write(&plain, b"x").unwrap();
    let tracer = secure(&[rulesets().join("sigma")]);
    const READS: u64 = 5000;
    run(Command::new(WORKLOAD).args(["open", &READS.to_string(), plain.to_str().unwrap()]));
    let created = bins.0.join("x-ebpfbackdoor");
    let creator = bins.run("create", "/usr/bin/touch", &[created.to_str().unwrap()]);
    let done = tracer.stop();
    assert!(
        done.stderr.contains("and opens with any of O_CREAT"),
        "{}",
        done.stderr
    );
    let summary = done.summary();
    let opens = summary["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "file_open")
        .unwrap_or_else(|| panic!("no file_open counters: {summary}"));
    let (emitted, filtered) = (
        opens["emitted"].as_u64().unwrap(),
        opens["filtered"].as_u64().unwrap(),
    );
    assert!(filtered >= READS, "read-only opens filtered: {opens}");
    assert!(emitted < READS, "read-only opens emitted: {opens}");
    let rule = rulesets()
        .join("sigma/rules/linux/file_event/file_event_lnx_triple_cross_rootkit_persistence.yml");
    let alerts = alerts(&done);
    assert!(
        raised(&alerts, "id", &sigma_id(&rule), creator).is_some(),
        "the creation passed the prefilter: {alerts:#?}"
    );
}

/// An exec and the new process's very first open, with no delay between them, while
/// another process floods the files ring with opens: the rule on the exec'd image (Sigma
/// `Image`) fires for every one, because the exec (process ring) is handled before the
/// open (files ring) whatever the rings' fill.
#[test]
fn image_rules_see_the_exec_before_the_first_open_under_load() {
    if !bpf_available("image_rules_see_the_exec_before_the_first_open_under_load") {
        return;
    }
    let _serial = serial();
    let bins = Bins::new();
    let tmp = TempDir::new("rulesets-order"); // under /tmp, as the rule wants
    let rule = rulesets()
        .join("sigma/rules/linux/file_event/file_event_lnx_wget_download_file_in_tmp_dir.yml");
    let flood = tmp.path().join("flood");
    std::fs::write(&flood, b"").unwrap();
    let tracer = secure(std::slice::from_ref(&rule));
    let mut flooders: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(WORKLOAD)
                .args(["open", "100000000", flood.to_str().unwrap()])
                .spawn()
                .unwrap()
        })
        .collect();
    let wget = bins.get("wget", "/bin/busybox");
    let pids: Vec<u32> = (0..200)
        .map(|i| {
            let path = tmp.path().join(format!("download-{i}"));
            run(Command::new(&wget)
                .arg0("busybox")
                .args(["touch", path.to_str().unwrap()]))
            .0
        })
        .collect();
    for f in &mut flooders {
        f.kill().unwrap();
        f.wait().unwrap();
    }
    let done = tracer.stop();
    let (_, dropped, _) = done.counters("file_open");
    assert_eq!(dropped, 0, "the flood overran the files ring");
    let alerts = alerts(&done);
    let id = sigma_id(&rule);
    let missed: Vec<&u32> = pids
        .iter()
        .filter(|p| raised(&alerts, "id", &id, **p).is_none())
        .collect();
    assert!(
        missed.is_empty(),
        "{} of {} first opens were handled before their exec: {missed:?}",
        missed.len(),
        pids.len()
    );
}
