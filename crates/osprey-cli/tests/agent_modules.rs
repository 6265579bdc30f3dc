//! Real-BPF tests of the agent's default and optional modules: security rules (alerts in
//! the log, the alerts metric, syslog), continuous profiling, flows on a veth between
//! namespaces, syscall baselines restored across restarts.

mod agent_support;
mod common;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::*;
use common::*;
use prost::Message;
use serde_json::Value;

fn module<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == name)
        .unwrap_or_else(|| panic!("no module {name} in {list}"))
}

/// A program copied outside /tmp, so that running it raises no alert of its own.
fn copied_program(from: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let to = dir.join(format!("{name}-{}", std::process::id()));
    std::fs::copy(from, &to).unwrap();
    to
}

#[test]
fn default_rules_alert_into_the_log_the_metrics_and_syslog() {
    if !bpf_available("agent_default_rules") {
        return;
    }
    let _serial = serial();
    let sockets = TempDir::new("agt-syslog");
    let syslog_path = sockets.path().join("log.sock");
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log_extra = format!(
        "syslog = true\nsyslog_socket = \"{}\"",
        syslog_path.display()
    );
    let a = AgentRun::with("agent-rules", &log_extra, None, "");
    let agent = a.start();

    // With no module settings: process, security, tcp and profile; files and flows off.
    let list = a.ctl(&["list"]);
    for (name, on) in [
        ("process", true),
        ("security", true),
        ("tcp", true),
        ("profile", true),
        ("files", false),
        ("flows", false),
    ] {
        assert_eq!(module(&list, name)["enabled"], on, "{name}: {list}");
    }
    assert!(module(&list, "security")["rules"].as_u64().unwrap() >= 10);
    assert!(module(&list, "flows")["reason"]
        .as_str()
        .unwrap()
        .contains("interfaces"));

    let reader = copied_program("/bin/cat", "agt-reader");
    let (pid, status) = run(Command::new(&reader).arg("/etc/shadow"));
    assert!(status.success());
    let alerts = "osprey_alerts_total{rule=\"credential_file_read\",severity=\"high\"}";
    // The same alert by container: the reader runs on the host.
    let by_container = "osprey_container_alerts_total{rule=\"credential_file_read\",container=\"host\",namespace=\"\"}";
    eventually(Duration::from_secs(20), || {
        let metrics = a.scrape();
        (metric(&metrics, alerts) >= 1.0 && metric(&metrics, by_container) >= 1.0)
            .then_some(())
            .ok_or(format!("{alerts} and {by_container} in\n{metrics}"))
    });

    // Syslog: the start notice (info, 30) and the alert (high: err, 27).
    let mut datagrams = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        if let Ok(n) = syslog.recv(&mut buf) {
            datagrams.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let alerted = datagrams.iter().any(|d| {
            d.starts_with("<27>")
                && d.contains("credential_file_read")
                && d.contains(&format!("\"pid\":{pid}"))
        });
        if alerted {
            break;
        }
    }
    let tag = format!(" osprey[{}]: {{", agent.pid());
    assert!(datagrams.iter().all(|d| d.contains(&tag)), "{datagrams:#?}");
    assert!(datagrams
        .iter()
        .any(|d| d.starts_with("<30>") && d.contains("\"message\":\"started\"")));
    assert!(
        datagrams.iter().any(|d| d.starts_with("<27>")
            && d.contains("credential_file_read")
            && d.contains(&format!("\"pid\":{pid}"))),
        "{datagrams:#?}"
    );

    signal(&agent, libc::SIGTERM);
    assert!(agent.wait(Duration::from_secs(5)).status.success());
    let _ = std::fs::remove_file(&reader);
    let lines = a.log_lines();
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|e| e["kind"] == "alert" && e["event"]["process"]["pid"] == pid)
        // A checkout under /tmp makes the copied program an exec from /tmp as well.
        .filter(|e| !is_build_tree_exec_alert(e))
        .collect();
    assert_eq!(mine.len(), 1, "one alert, no duplicate: {mine:#?}");
    let alert = mine[0];
    assert_eq!(alert["rule"], "credential_file_read");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["event"]["kind"], "file_open");
    assert_eq!(alert["event"]["path"], "/etc/shadow");
    assert!(
        !lines
            .iter()
            .any(|e| e["kind"] == "file_open" && e["process"]["pid"] == pid),
        "the rules' opens are for detection, not the log (the files module is off)"
    );
    assert!(lines
        .iter()
        .any(|e| e["kind"] == "exec" && e["process"]["pid"] == pid));
}

/// The pprof files in the agent's profile directory, oldest first.
fn profile_files(a: &AgentRun) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(a.state().join("profiles"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn decode_pprof(path: &Path) -> osprey::profile::pprof::PprofProfile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    osprey::profile::pprof::PprofProfile::decode(raw.as_slice()).expect("pprof decodes")
}

/// A CPU-bound child, killed on drop (also when the test fails).
struct Burner(std::process::Child);

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn continuous_profiles_are_written_per_interval_bounded_and_decode() {
    if !bpf_available("agent_profiles") {
        return;
    }
    let _serial = serial();
    let a = AgentRun::new(
        "agent-profile",
        "[modules.profile]\ninterval_secs = 1\nkeep = 2\n",
    );
    let burner = Burner(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent = a.start();
    let written = |a: &AgentRun| {
        a.log_lines()
            .iter()
            .filter(|e| e["message"] == "profile written")
            .count()
    };
    // Symbolizing takes a while in a debug build on a busy machine: one writer at a time
    // stretches the intervals, so allow for it.
    eventually(Duration::from_secs(60), || {
        let n = written(&a);
        (n >= 3)
            .then_some(())
            .ok_or(format!("{n} of 3 profiles written"))
    });
    let burner_pid = burner.0.id();
    drop(burner);
    let files = profile_files(&a);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Two kept (a third may be between its rename and the pruning); none half-written.
    assert!(
        (2..=3).contains(&files.len()),
        "keep = 2 bounds the directory: {names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("cpu-") && n.ends_with(".pb.gz")),
        "{names:?}"
    );
    let profile = decode_pprof(&files[0]);
    let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    assert!(total > 0, "samples in {}", names[0]);
    let pid_key = profile
        .string_table
        .iter()
        .position(|s| s == "pid")
        .unwrap() as i64;
    let burner_samples: i64 = profile
        .sample
        .iter()
        .filter(|s| {
            s.label
                .iter()
                .any(|l| l.key == pid_key && l.num == i64::from(burner_pid))
        })
        .map(|s| s.value[0])
        .sum();
    assert!(burner_samples > 0, "the burner was sampled at 19 Hz");
    assert!(profile.duration_nanos > 500_000_000);
    let metrics = a.scrape();
    assert!(metric(&metrics, "osprey_profiles_written_total") >= 3.0);
    assert!(metric(&metrics, "osprey_profile_samples_total") > 0.0);
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait(Duration::from_secs(5)).status.success());
}

/// The qdiscs on `dev` in `ns`, as `tc qdisc show` prints them.
fn qdiscs(ns: &str, dev: &str) -> String {
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", "show", "dev", dev])
        .output()
        .unwrap();
    assert!(out.status.success(), "tc qdisc show: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The flows module on the tc fallback adds a clsact qdisc; disabling the module and
/// stopping the agent each remove it again (the interface had none).
#[test]
fn flows_module_removes_the_clsact_qdisc_it_added() {
    if !bpf_available("agent_flows_clsact") {
        return;
    }
    let _serial = serial();
    let net = Namespaces::new();
    assert!(!qdiscs(&net.a, &net.veth).contains("clsact"));
    let a = AgentRun::with(
        "agent-flows-clsact",
        "",
        Some(&net.a),
        &format!("[modules.flows]\ninterfaces = [\"{}\"]\n", net.veth),
    );
    // Denying the tcx program forces the tc clsact one (what kernels before 6.6 get).
    let agent = a.start_with_env(&[("OSPREY_DENY_PROGRAMS", "flows_egress")]);
    let list = a.ctl(&["list"]);
    assert_eq!(module(&list, "flows")["enabled"], true, "{list}");
    let hooks: Vec<&str> = list["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["capability"] == "flows")
        .filter_map(|p| p["hook"].as_str())
        .collect();
    assert!(hooks.contains(&"tc/clsact/egress"), "{list}");
    assert!(qdiscs(&net.a, &net.veth).contains("clsact"));

    assert_eq!(a.ctl(&["disable", "flows"])["ok"], true);
    let left = qdiscs(&net.a, &net.veth);
    assert!(!left.contains("clsact"), "disabled module left {left}");

    assert_eq!(a.ctl(&["enable", "flows"])["ok"], true);
    assert!(qdiscs(&net.a, &net.veth).contains("clsact"));
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait(Duration::from_secs(5)).status.success());
    let left = qdiscs(&net.a, &net.veth);
    assert!(!left.contains("clsact"), "stopped agent left {left}");
}

/// Two namespaces joined by a veth pair (agent side `a`), deleted on drop.
struct Namespaces {
    a: String,
    b: String,
    veth: String,
}

impl Namespaces {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let n = Namespaces {
            a: format!("agtfa{id}"),
            b: format!("agtfb{id}"),
            veth: format!("agtva{id}"),
        };
        let peer = format!("agtvb{id}");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &n.a],
            vec!["netns", "add", &n.b],
            vec![
                "link", "add", &n.veth, "netns", &n.a, "type", "veth", "peer", "name", &peer,
                "netns", &n.b,
            ],
            vec!["-n", &n.a, "addr", "add", "10.203.0.1/24", "dev", &n.veth],
            vec!["-n", &n.b, "addr", "add", "10.203.0.2/24", "dev", &peer],
            vec!["-n", &n.a, "link", "set", &n.veth, "up"],
            vec!["-n", &n.b, "link", "set", &peer, "up"],
            vec!["-n", &n.a, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = Command::new("ip").args(&step).output().unwrap();
            assert!(out.status.success(), "ip {step:?}: {out:?}");
        }
        n
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn flows_module_counts_packets_on_the_configured_interface() {
    if !bpf_available("agent_flows") {
        return;
    }
    let _serial = serial();
    let net = Namespaces::new();
    let a = AgentRun::with(
        "agent-flows",
        "",
        Some(&net.a),
        &format!(
            "[modules.flows]\ninterfaces = [\"{}\"]\nidle_timeout_secs = 1\n",
            net.veth
        ),
    );
    let agent = a.start();
    let list = a.ctl(&["list"]);
    assert_eq!(module(&list, "flows")["enabled"], true, "{list}");
    assert_eq!(module(&list, "flows")["interfaces"][0], net.veth.as_str());
    // Before the traffic: every interface and direction exposed (IPv6 neighbour discovery
    // may already have counted a few packets).
    let at_start = a.scrape();
    for family in ["flow_packets_total", "flow_bytes_total"] {
        for direction in ["egress", "ingress"] {
            let key = format!(
                "osprey_{family}{{interface=\"{}\",direction=\"{direction}\"}} ",
                net.veth
            );
            assert!(at_start.contains(&key), "{key} in\n{at_start}");
        }
    }
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.a,
            WORKLOAD.as_str(),
            "ping",
            "10.203.0.2",
            "5",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "ping: {out:?}");
    // Idle after 1 s, exported at the next scan.
    eventually(Duration::from_secs(20), || {
        let metrics = a.scrape();
        for direction in ["egress", "ingress"] {
            let key = format!(
                "osprey_flow_packets_total{{interface=\"{}\",direction=\"{direction}\"}}",
                net.veth
            );
            let bytes = key.replace("flow_packets_total", "flow_bytes_total");
            if metric(&metrics, &key) < 5.0 || metric(&metrics, &bytes) < 5.0 * 98.0 {
                return Err(format!("{key} or {bytes} short in\n{metrics}"));
            }
        }
        (metric(&metrics, "osprey_flows_exported_total") >= 2.0)
            .then_some(())
            .ok_or(format!("fewer than 2 flows exported in\n{metrics}"))
    });
    signal(&agent, libc::SIGTERM);
    assert!(agent.wait(Duration::from_secs(5)).status.success());
    let icmp: Vec<Value> = a
        .log_lines()
        .into_iter()
        .filter(|e| e["kind"] == "flow" && e["protocol"] == "icmp")
        .collect();
    assert!(
        icmp.iter()
            .any(|f| f["direction"] == "egress" && f["packets"].as_u64() >= Some(5)),
        "{icmp:#?}"
    );
}

fn baseline_helper(extra: bool) -> u32 {
    let mut cmd = Command::new(WORKLOAD);
    cmd.arg("baseline-helper").args(extra.then_some("--extra"));
    let (pid, status) = run(&mut cmd);
    assert!(status.success());
    pid
}

#[test]
fn syscall_baselines_in_the_state_dir_are_enforced_again_after_a_restart() {
    if !bpf_available("agent_baselines") {
        return;
    }
    let _serial = serial();
    let a = AgentRun::new("agent-baselines", "");
    let state = a.state();
    let learner = Tracer::start(&[
        "secure",
        "--learn",
        "3",
        "--state-dir",
        state.to_str().unwrap(),
        "-o",
        "json",
    ]);
    for _ in 0..3 {
        baseline_helper(false);
    }
    let learned = learner.wait(Duration::from_secs(30));
    assert!(learned.status.success(), "{}", learned.stderr);

    // First run killed hard, second stopped: each start loads the baselines again.
    let mut noisy = Vec::new();
    for stop in [libc::SIGKILL, libc::SIGTERM] {
        let agent = a.start();
        let list = a.ctl(&["list"]);
        let loaded = module(&list, "security")["baselines"]["executables"]
            .as_u64()
            .unwrap_or(0);
        assert!(loaded >= 1, "baselines reported as loaded: {list}");
        baseline_helper(false);
        let pid = baseline_helper(true);
        noisy.push(pid);
        // The alert must be in the log (flushed once a second) before a SIGKILL.
        eventually(Duration::from_secs(20), || {
            a.log_lines()
                .iter()
                .any(|e| {
                    e["rule"] == "syscall_outside_baseline" && e["event"]["process"]["pid"] == pid
                })
                .then_some(())
                .ok_or(format!("no baseline alert for {pid} logged yet"))
        });
        let got = metric(&a.scrape(), "osprey_baseline_executables");
        assert_eq!(got, loaded as f64);
        signal(&agent, stop);
        let _ = agent.wait(Duration::from_secs(5));
    }
    let lines = a.log_lines();
    let loaded_notes = lines
        .iter()
        .filter(|e| {
            e["kind"] == "agent"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("syscall baselines of"))
        })
        .count();
    assert_eq!(loaded_notes, 2);
    for pid in noisy {
        let alerts: Vec<&Value> = lines
            .iter()
            .filter(|e| e["kind"] == "alert" && e["event"]["process"]["pid"] == pid)
            .filter(|e| e["rule"] == "syscall_outside_baseline")
            .collect();
        assert_eq!(alerts.len(), 1, "pid {pid}: {alerts:#?}");
        assert_eq!(alerts[0]["event"]["syscall"], "sysinfo");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

#[test]
fn fim_alerts_while_running_and_reports_changes_made_while_stopped() {
    if !bpf_available("agent_fim") {
        return;
    }
    let _serial = serial();
    let tree = TempDir::new("agent-fim-tree");
    let watched = tree.path().join("app.conf");
    let quiet = tree.path().join("quiet.conf");
    std::fs::write(&watched, b"v1\n").unwrap();
    std::fs::write(&quiet, b"same\n").unwrap();
    let a = AgentRun::new(
        "agent-fim",
        &format!(
            "[modules.security]\nwatch = [\"{}\"]\n",
            tree.path().display()
        ),
    );

    // Running: a change is one fim.modify alert with the hashes, in the log and the metric.
    let agent = a.start();
    std::fs::write(&watched, b"v2\n").unwrap();
    let modified = eventually(Duration::from_secs(20), || {
        a.log_lines()
            .into_iter()
            .find(|e| e["rule"] == "fim.modify")
            .ok_or("no fim.modify alert yet".to_string())
    });
    assert_eq!(modified["fim"]["path"], watched.to_str().unwrap());
    assert_eq!(modified["fim"]["before"]["sha256"], sha256_hex(b"v1\n"));
    assert_eq!(modified["fim"]["after"]["sha256"], sha256_hex(b"v2\n"));
    let labels = format!(
        "osprey_alerts_total{{rule=\"fim.modify\",severity=\"{}\"}}",
        modified["severity"].as_str().unwrap()
    );
    assert_eq!(metric(&a.scrape(), &labels), 1.0, "{labels}");
    // The directory and its two files.
    assert_eq!(
        module(&a.ctl(&["list"]), "security")["fim_watched_paths"],
        3
    );
    signal(&agent, libc::SIGKILL);
    let _ = agent.wait(Duration::from_secs(5));

    // Stopped: the next start diffs the saved database against the disk.
    std::fs::write(&watched, b"v3 while nobody watched\n").unwrap();
    let agent = a.start();
    signal(&agent, libc::SIGTERM);
    let second = agent.wait(Duration::from_secs(5));
    assert!(second.status.success(), "{}", second.stderr);
    let notes: Vec<String> = a
        .log_lines()
        .iter()
        .filter(|e| e["kind"] == "agent")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .filter(|m| m.contains("changed while not watched"))
        .collect();
    assert_eq!(
        notes,
        vec![format!(
            "FIM: {} changed while not watched (sha256,size,mtime)",
            watched.display()
        )],
    );
    let alerts = a
        .log_lines()
        .iter()
        .filter(|e| e["kind"] == "alert" && e["rule"].as_str().unwrap_or("").starts_with("fim."))
        .count();
    assert_eq!(alerts, 1, "the quiet file and the restart raised nothing");
}

#[test]
fn deeply_nested_rules_are_refused_at_start_and_on_reload_and_the_agent_keeps_running() {
    if !bpf_available("agent_deep_rules") {
        return;
    }
    let _serial = serial();
    let rules_dir = TempDir::new("agent-deep-rules");
    let rules = rules_dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = open and file.path = /nonexistent-osprey\n",
    )
    .unwrap();
    let a = AgentRun::new(
        "agent-deep",
        &format!("[modules.security]\nrules = [\"{}\"]\n", rules.display()),
    );
    let agent = a.start();
    let rules_before = module(&a.ctl(&["list"]), "security")["rules"].clone();
    assert!(rules_before.as_u64().unwrap() > 1, "{rules_before}");
    // Issue 18's reproduction: 8,000 levels of brackets.
    let deep = format!(
        "- rule: d\n  desc: x\n  severity: high\n  condition: \"{}evt.kind = open{}\"\n  output: x\n",
        "(".repeat(8_000),
        ")".repeat(8_000)
    );
    std::fs::write(&rules, &deep).unwrap();
    let at = format!("{}:4:115: condition nested deeper", rules.display());
    let reload = a.ctl(&["reload"]);
    assert_eq!(reload["ok"], false, "{reload}");
    assert!(reload["error"].as_str().unwrap().contains(&at), "{reload}");
    signal(&agent, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = |lines: &[Value]| {
        lines
            .iter()
            .filter(|e| {
                e["level"] == "error"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("configuration rejected") && m.contains(&at))
            })
            .count()
    };
    while rejected(&a.log_lines()) < 2 {
        assert!(Instant::now() < deadline, "SIGHUP's rejection never logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = a.ctl(&["list"]);
    assert_eq!(list["ok"], true, "still answering: {list}");
    assert_eq!(module(&list, "security")["rules"], rules_before, "{list}");
    signal(&agent, libc::SIGTERM);
    let done = agent.wait(Duration::from_secs(5));
    assert!(done.status.success(), "{}", done.stderr);

    // Started with the file: refused with exit 2 and the position, not aborted.
    let out = Command::new(OSPREY)
        .args(["agent", "--config", a.config().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&at), "{err}");
}
