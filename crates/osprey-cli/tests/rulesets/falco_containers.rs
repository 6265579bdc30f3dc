//! Falco stable rules that need a container, run for real in podman containers: one
//! ordinary container and one `--privileged`, from an image built here (busybox,
//! osprey-workload). Every behaviour is also performed in the container the rule must not
//! fire for, and the test asserts that it does not.
//!
//! Two behaviours are performed harmlessly, as far as the rules look: the release_agent
//! write goes to a file of that name in the container's /tmp (a real cgroup v1
//! release_agent would make the host run a command as root at the next cgroup release),
//! and the module load is a finit_module that fails (a real module would change the
//! shared kernel); the rules match the syscall and path, not their effect.
//!
//! Conditions read from /proc (proc.tty, thread.cap_effective, container.privileged,
//! proc.is_exe_upper_layer) need the process alive when osprey evaluates its event: each
//! trigger keeps its process alive two seconds after the behaviour.

use std::process::Command;

use super::common::podman::Podman;
use super::common::*;
use super::live::{alerts, secure};
use super::{rule_set, rulesets, FALCO_CONTAINER_LIVE};
use serde_json::Value;

/// Alerts of `rule` from the container with full id `id`.
fn of_container<'a>(alerts: &'a [Value], rule: &str, id: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["event"]["process"]["container"]["id"] == id)
        .collect()
}

/// A shell line that runs `action`, then keeps the shell alive two seconds.
fn then_linger(action: &str) -> String {
    format!("{action}; sleep 2; true")
}

#[test]
fn falco_container_rules_fire_in_podman() {
    if !bpf_available("falco_container_rules_fire_in_podman") {
        return;
    }
    let script_installed = std::path::Path::new("/usr/bin/script").exists();
    let why = "script (util-linux) is not installed";
    if !osprey_workload::require(
        "falco_container_rules_fire_in_podman",
        script_installed,
        why,
    ) {
        return;
    }
    let Some(podman) = Podman::new("falco_container_rules") else {
        return;
    };
    let _serial = serial();
    let (plain, plain_id) = podman.run("falco-plain", &[]);
    let (privileged, privileged_id) = podman.run("falco-privileged", &["--privileged"]);
    let tracer = secure(&[rulesets().join("falco/falco_rules.yaml")]);
    let mut children = Vec::new();
    // Ordinary container: netcat with -e, an executable written into the container and run.
    children.push(podman.spawn_exec(&plain, &["/bin/nc", "-e", "/bin/true", "127.0.0.1", "9"]));
    let drop_and_run =
        then_linger("mkdir -p /usr/bin && cp /bin/busybox /usr/bin/sleep && /usr/bin/sleep 1");
    children.push(podman.spawn_exec(&plain, &["/bin/sh", "-c", &drop_and_run]));
    // Both containers: debugfs, a write to a file named release_agent, a module load
    // (finit_module fails: nothing is loaded); the rules need the privileged one.
    let release_agent = then_linger(": > /tmp/release_agent");
    for c in [&plain, &privileged] {
        children.push(podman.spawn_exec(c, &["/bin/debugfs"]));
        children.push(podman.spawn_exec(c, &["/bin/sh", "-c", &release_agent]));
        children.push(podman.spawn_exec(c, &["/bin/osprey-workload", "module", "2000"]));
    }
    // A shell with a terminal as the entry point of `podman exec -t`: `script` gives
    // podman the pseudo-terminal.
    let terminal = format!(
        "{} exec -it {plain} /bin/sh -c '{}'",
        podman.cmd_line(),
        then_linger("true")
    );
    let script = Command::new("/usr/bin/script")
        .args(["-qec", &terminal, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(script.status.success(), "{script:?}");
    for mut c in children {
        c.wait().unwrap();
    }
    let done = tracer.stop();
    let alerts = alerts(&done);
    let expected = [
        ("Terminal shell in container", &plain_id),
        ("Netcat Remote Code Execution in Container", &plain_id),
        ("Drop and execute new binary in container", &plain_id),
        ("Debugfs Launched in Privileged Container", &privileged_id),
        (
            "Detect release_agent File Container Escapes",
            &privileged_id,
        ),
        ("Linux Kernel Module Injection Detected", &privileged_id),
    ];
    assert_eq!(
        rule_set(expected.iter().map(|e| e.0)),
        rule_set(FALCO_CONTAINER_LIVE.iter().copied())
    );
    let mut missing = Vec::new();
    for (rule, id) in expected {
        match of_container(&alerts, rule, id).first() {
            Some(a) => {
                assert_eq!(a["source"], "falco", "{a}");
                assert!(a["level"].is_string(), "{a}");
            }
            None => missing.push(rule),
        }
    }
    assert!(
        missing.is_empty(),
        "no alert for {missing:?}; alerts: {alerts:#?}\nstderr: {}",
        done.stderr
    );
    // Not without privileges; and the image's own executables were not dropped there.
    for rule in &expected[3..] {
        let wrong = of_container(&alerts, rule.0, &plain_id);
        assert!(
            wrong.is_empty(),
            "{} without privileges: {wrong:#?}",
            rule.0
        );
    }
    for a in of_container(&alerts, expected[2].0, &plain_id) {
        assert_eq!(a["event"]["process"]["exe"], "/usr/bin/sleep", "{a}");
    }
}
