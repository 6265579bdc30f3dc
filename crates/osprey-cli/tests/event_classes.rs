//! Real-BPF tests of the detection-breadth event classes (issue 14): for every default rule
//! on them, the behaviour performed for real with the exact alert asserted, and a benign
//! near miss that must not alert; and the two Falco stable rules these classes let load.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Runs `cmd` to completion, asserting success: its pid and the pid after `target ` in
/// its output (0 when it printed none).
fn run_target(cmd: &mut Command) -> (u32, u32) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", out.status);
    let target = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("target ")?.trim().parse().ok())
        .unwrap_or(0);
    (pid, target)
}

fn workload(args: &[&str]) -> (u32, u32) {
    run_target(Command::new(WORKLOAD).args(args))
}

/// Alerts by the pid of the triggering process.
fn alerts_by_pid(events: &[Value]) -> BTreeMap<u64, Vec<&Value>> {
    let mut out: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for a in events.iter().filter(|e| e["kind"] == "alert") {
        let pid = a["event"]["process"]["pid"].as_u64().unwrap();
        out.entry(pid).or_default().push(a);
    }
    out
}

fn rules_of(by_pid: &BTreeMap<u64, Vec<&Value>>, pid: u32) -> BTreeSet<String> {
    by_pid
        .get(&u64::from(pid))
        .map(|v| {
            v.iter()
                .map(|a| a["rule"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The one alert of `rule` raised by `pid`.
fn alert<'a>(by_pid: &'a BTreeMap<u64, Vec<&'a Value>>, pid: u32, rule: &str) -> &'a Value {
    let of_rule: Vec<&&Value> = by_pid
        .get(&u64::from(pid))
        .into_iter()
        .flatten()
        .filter(|a| a["rule"] == rule)
        .collect();
    assert_eq!(
        of_rule.len(),
        1,
        "one {rule} alert from pid {pid}: {by_pid:#?}"
    );
    of_rule[0]
}

/// A scratch directory outside /tmp (a disk file system: user.* attributes work there).
fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn default_rules_on_the_new_event_classes_fire_and_near_misses_do_not() {
    if !bpf_available("default_rules_on_the_new_event_classes") {
        return;
    }
    let _serial = serial();
    let dir = scratch("event-classes");
    let file = dir.join("capable");
    std::fs::write(&file, b"").unwrap();
    let file = file.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();

    let tracer = Tracer::start(&["secure", "--output", "json"]);
    let mem_other = workload(&["proc-mem-read", "other"]);
    let mem_self = workload(&["proc-mem-read", "self"]);
    let vm_other = workload(&["process-vm", "other"]);
    let vm_self = workload(&["process-vm", "self"]);
    let cap = workload(&["setxattr", "cap", file]);
    let user = workload(&["setxattr", "user", file]);
    let packet = workload(&["socket", "packet"]);
    let raw = workload(&["socket", "raw"]);
    let udp = workload(&["socket", "udp"]);
    let tcp = workload(&["socket", "tcp"]);
    let over_proc = workload(&["mount-over", "proc", dir_s]);
    let over_dir = workload(&["mount-over", "dir", dir_s]);
    let exec_env = |var: &str, value: &str| run_target(Command::new("/bin/true").env(var, value)).0;
    let preload = exec_env("LD_PRELOAD", "/tmp/osprey-missing.so");
    let audit = exec_env("LD_AUDIT", "/dev/shm/osprey-missing.so");
    let libpath = exec_env("LD_LIBRARY_PATH", "/usr/lib:/usr/local/lib");
    let preload_system = exec_env("LD_PRELOAD", "/usr/lib/osprey-missing.so");
    let done = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(done.status.success(), "{}", done.stderr);
    let events = done.events();
    let by_pid = alerts_by_pid(&events);
    let output = |pid: u32, rule: &str| {
        let a = alert(&by_pid, pid, rule);
        assert_eq!(a["outcome"], "alerted", "{a}");
        assert!(a["tags"][0].as_str().unwrap().starts_with('T'), "{a}");
        a["output"].as_str().unwrap().to_string()
    };
    let none = BTreeSet::new();
    let only = |r: &str| BTreeSet::from([r.to_string()]);

    let (pid, child) = mem_other;
    assert_eq!(rules_of(&by_pid, pid), only("proc_mem_read"));
    assert_eq!(
        output(pid, "proc_mem_read"),
        format!("osprey-workload (pid {pid}) opened /proc/{child}/mem (pid {child}) for reading")
    );
    assert_eq!(
        rules_of(&by_pid, mem_self.0),
        none,
        "/proc/self/mem is not another process"
    );

    let (pid, child) = vm_other;
    assert_eq!(rules_of(&by_pid, pid), only("process_vm_access"));
    assert_eq!(
        output(pid, "process_vm_access"),
        format!("osprey-workload (pid {pid}) called process_vm_readv on pid {child} (result 8)")
    );
    assert_eq!(rules_of(&by_pid, vm_self.0), none, "reading itself");

    assert_eq!(rules_of(&by_pid, cap.0), only("file_capabilities_set"));
    assert_eq!(
        output(cap.0, "file_capabilities_set"),
        format!(
            "osprey-workload (pid {}) gave {file} the capabilities cap_setuid (effective at exec: cap_setuid)",
            cap.0
        )
    );
    assert_eq!(rules_of(&by_pid, user.0), none, "a user.* attribute");

    for ((pid, _), what) in [
        (packet, "AF_PACKET SOCK_RAW socket (protocol 768)"),
        (raw, "AF_INET SOCK_RAW socket (protocol 1)"),
    ] {
        assert_eq!(rules_of(&by_pid, pid), only("packet_socket_created"));
        assert_eq!(
            output(pid, "packet_socket_created"),
            format!("osprey-workload (pid {pid}) opened a {what}")
        );
    }
    assert_eq!(rules_of(&by_pid, udp.0), none, "a UDP socket");
    assert_eq!(rules_of(&by_pid, tcp.0), none, "a TCP socket");

    // The workload's private mount namespace is itself a namespace change.
    let (pid, child) = over_proc;
    assert_eq!(
        rules_of(&by_pid, pid),
        BTreeSet::from(["namespace_change".to_string(), "proc_pid_mount".to_string()])
    );
    assert_eq!(
        output(pid, "proc_pid_mount"),
        format!(
            "osprey-workload (pid {pid}) mounted {dir_s} over /proc/{child} (hiding pid {child})"
        )
    );
    assert_eq!(
        rules_of(&by_pid, over_dir.0),
        only("namespace_change"),
        "a mount elsewhere"
    );

    for (pid, env) in [
        (preload, "LD_PRELOAD=/tmp/osprey-missing.so"),
        (audit, "LD_AUDIT=/dev/shm/osprey-missing.so"),
    ] {
        assert_eq!(
            rules_of(&by_pid, pid),
            only("loader_env_from_writable_location")
        );
        let text = output(pid, "loader_env_from_writable_location");
        // The rest of the allow-listed environment (cargo's LD_LIBRARY_PATH) comes along.
        let (head, vars) = text.split_once(") started with ").unwrap();
        assert!(
            head.starts_with(&format!("true (pid {pid}, parent ")),
            "{text}"
        );
        assert!(vars.split(' ').any(|v| v == env), "{text}");
    }
    assert_eq!(rules_of(&by_pid, libpath), none, "LD_LIBRARY_PATH=/usr/lib");
    assert_eq!(
        rules_of(&by_pid, preload_system),
        none,
        "a preload from /usr/lib"
    );
}

/// The shared community rule sets (as tests/rulesets.rs finds them).
fn falco_stable() -> PathBuf {
    let dir = std::env::var_os("OSPREY_RULESETS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/rulesets"),
        PathBuf::from,
    );
    let file = dir.join("falco/falco_rules.yaml");
    assert!(
        file.is_file(),
        "{} not found (set OSPREY_RULESETS)",
        file.display()
    );
    file
}

fn falco_tracer() -> Tracer {
    let rules = falco_stable();
    Tracer::start(&[
        "secure",
        "--no-default-rules",
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        "json",
    ])
}

const SSH_RULE: &str = "Disallowed SSH Connection Non Standard Port";

/// Outbound TCP from an executable called `ssh` to a public address: port 4444 is one of
/// the rule's non-standard ports, 22 is not. The address lives on `lo` of the workload's
/// own network namespace, so nothing leaves the machine.
#[test]
fn falco_ssh_to_a_non_standard_port_fires() {
    if !bpf_available("falco_ssh_to_a_non_standard_port") {
        return;
    }
    let _serial = serial();
    let dir = scratch("falco-ssh");
    let ssh = dir.join("ssh");
    std::fs::copy(WORKLOAD.path(), &ssh).unwrap();
    let tracer = falco_tracer();
    let (odd, _) = run_target(Command::new(&ssh).args(["net-connect", "198.51.100.7", "4444"]));
    let (standard, _) = run_target(Command::new(&ssh).args(["net-connect", "198.51.100.7", "22"]));
    let done = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(done.status.success(), "{}", done.stderr);
    let events = done.events();
    let by_pid = alerts_by_pid(&events);
    let a = alert(&by_pid, odd, SSH_RULE);
    assert_eq!(a["source"], "falco", "{a}");
    let text = a["output"].as_str().unwrap();
    assert!(text.starts_with("Disallowed SSH Connection | "), "{text}");
    assert!(text.contains(" rport=4444 "), "{text}");
    assert!(text.contains(" fd_proto=tcp evt_type=connect "), "{text}");
    assert!(text.contains(" process=ssh "), "{text}");
    assert!(
        !rules_of(&by_pid, standard).contains(SSH_RULE),
        "port 22: {by_pid:#?}"
    );
}

/// busybox's `arping` opens an AF_PACKET socket first thing: in a podman container the Falco
/// rule fires; the same socket on the host does not. The container lives through the test
/// (its runtime state stays readable) and arping runs in it until an alert carries the
/// container's name: the runtime's answer arrives in the background, whatever the load.
#[test]
fn falco_packet_socket_in_a_container_fires() {
    if !bpf_available("falco_packet_socket_in_a_container") {
        return;
    }
    let Some(podman) = common::podman::Podman::new("falco_packet_socket_in_a_container") else {
        return;
    };
    let _serial = serial();
    let tracer = falco_tracer();
    let (name, id) = podman.run("packet", &["--network", "none"]);
    let rule = "Packet socket created in container";
    let named = format!("\"name\":\"{name}\"");
    let mut runs = 0;
    let alerted = (0..15).any(|_| {
        // arping's own exit status does not matter (lo has no ARP): its socket() is the
        // behaviour. Podman's (125 to 127) says the command never ran.
        let ran = podman.exec(
            &name,
            &[
                "/bin/busybox",
                "arping",
                "-c",
                "1",
                "-w",
                "1",
                "-I",
                "lo",
                "127.0.0.1",
            ],
        );
        assert!(
            !matches!(ran.status.code(), Some(125..=127) | None),
            "podman exec: {}\n{}",
            ran.status,
            String::from_utf8_lossy(&ran.stderr)
        );
        runs += 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match tracer.next_line(left) {
                Some((_, l)) if l.contains(rule) && l.contains(&named) => return true,
                Some(_) => {}
                None => break,
            }
        }
        false
    });
    assert!(alerted, "no alert named {name} after {runs} arping runs");
    let (host, _) = workload(&["socket", "packet"]);
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let events = done.events();
    let fired: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["rule"] == rule)
        .collect();
    let ours: Vec<&&Value> = fired
        .iter()
        .filter(|a| a["event"]["process"]["container"]["id"] == id.as_str())
        .collect();
    assert_eq!(ours.len(), runs, "one alert per arping run: {fired:#?}");
    let a = ours.last().unwrap();
    assert_eq!(
        a["event"]["process"]["container"]["name"],
        name.as_str(),
        "{a}"
    );
    assert_eq!(a["event"]["process"]["comm"], "busybox", "{a}");
    assert!(
        a["output"]
            .as_str()
            .unwrap()
            .starts_with("Packet socket was created in a container | "),
        "{a}"
    );
    assert!(
        !fired.iter().any(|a| a["event"]["process"]["pid"] == host),
        "a packet socket on the host: {fired:#?}"
    );
}
