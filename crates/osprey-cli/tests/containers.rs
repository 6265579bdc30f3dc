//! Real runtimes: containers started with podman and docker (Debian's packages) from a
//! busybox image built here (no registry), and the container context Osprey puts on exec
//! and open events and alerts from inside them: exact ids, names, images, labels, pod and
//! namespace. A runtime socket that is missing or never answers leaves events flowing with
//! the id alone.

mod common;
mod containers_support;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use containers_support::*;
use serde_json::{json, Value};

const IMAGE_REPO: &str = "osprey-busybox";

#[test]
fn podman_containers_on_exec_open_events_and_alerts() {
    if !bpf_available("podman_containers") {
        return;
    }
    let Some(podman) = installed("podman") else {
        osprey_workload::require("podman_containers", false, "podman is not installed");
        return;
    };
    let _serial = serial();
    let dir = TempDir::new("podman");
    let podman = move || {
        let mut c = Command::new(&podman);
        // crun refuses hybrid cgroup hosts; runc (docker.io's dependency) handles both.
        if installed("runc").is_some() {
            c.args(["--runtime", "runc"]);
        }
        c
    };
    let image = format!("localhost/{IMAGE_REPO}:test");
    let image_id = out(podman()
        .arg("import")
        .arg(busybox_tar(dir.path()))
        .arg(&image));
    let image_id = image_id
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let name = format!("osprey-podman-{}", std::process::id());
    let _cleanup = Cleanup(vec![{
        let mut c = podman();
        c.args(["rm", "-f", "-t", "0", &name]);
        c
    }]);
    let rules = rule_file(
        dir.path(),
        "container_passwd",
        &format!("evt.kind = open and file.path = /etc/passwd and container.name = {name} and container.image.repository = localhost/{IMAGE_REPO}"),
    );
    let exec = Tracer::start(&["exec", "--output", "json"]);
    let tcp = Tracer::start(&["tcp", "--output", "json"]);
    let files = Tracer::start(&["files", "--output", "json", "--container", &name]);
    let secure = start_secure(&rules, &[]);
    // The default open-file and process limits are refused by the kernel policy of some hosts.
    let id = out(podman().args([
        "run",
        "-d",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "--name",
        &name,
        &image,
        "/bin/sleep",
        "600",
    ]));
    let exec_cat = || {
        out(podman().args(["exec", &name, "/bin/cat", "/etc/passwd"]));
    };
    exec_until_named(&exec, &name, &exec_cat);
    exec_cat();
    // A TCP connection inside the container's network namespace.
    out(podman().args([
        "exec",
        "-d",
        &name,
        "/bin/busybox",
        "nc",
        "-l",
        "-p",
        "7000",
    ]));
    eventually(Duration::from_secs(10), || {
        let o = podman()
            .args(["exec", &name, "/bin/busybox", "nc", "127.0.0.1", "7000"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        o.status
            .success()
            .then_some(())
            .ok_or("nc refused".to_string())
    });
    let tcp_id = id.clone();
    assert!(
        saw(&tcp, Duration::from_secs(10), |l| l.contains(&tcp_id)
            && l.contains("7000")),
        "tcp record from the container"
    );
    let (exec, files, secure) = (exec.stop(), files.stop(), secure.stop());
    let tcp = tcp.stop();
    let records: Vec<Value> = tcp
        .events()
        .into_iter()
        .filter(|e| container_of(e)["id"] == id)
        .collect();
    assert!(!records.is_empty(), "no tcp record from {id}");
    for r in &records {
        assert_eq!(container_of(r)["name"], name, "{r}");
    }
    let expected = json!({
        "id": id, "name": name, "image": image, "image_id": image_id,
        "runtime": "podman", "labels": {},
    });
    assert_execs(&exec.events(), &id, &expected);
    assert_opens(&files.events(), &id, &name);
    assert_alerts(&secure.events(), "container_passwd", &id, &name);
}

/// A docker daemon: the host's when one answers, else one started here (private data,
/// exec root and socket; no iptables, no bridge) and stopped at the end.
struct Docker {
    socket: PathBuf,
    daemon: Option<Child>,
}

impl Docker {
    fn cli(&self) -> Command {
        let mut c = Command::new(installed("docker").unwrap());
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    fn answers(&self) -> bool {
        self.cli()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(dir: &Path) -> Self {
        let host = Docker {
            socket: PathBuf::from("/var/run/docker.sock"),
            daemon: None,
        };
        if host.answers() {
            return host;
        }
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let daemon = Command::new(installed("dockerd").unwrap())
            .args(["--iptables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let docker = Docker {
            socket,
            daemon: Some(daemon),
        };
        eventually(Duration::from_secs(60), || {
            docker
                .answers()
                .then_some(())
                .ok_or_else(|| std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default())
        });
        docker
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(daemon) = &mut self.daemon {
            // SAFETY: signalling the daemon this test started, by its pid.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let _ = daemon.wait();
        }
    }
}

#[test]
fn docker_containers_with_pod_labels_and_unreachable_sockets() {
    if !bpf_available("docker_containers") {
        return;
    }
    if installed("dockerd").is_none() || installed("docker").is_none() {
        osprey_workload::require("docker_containers", false, "docker.io is not installed");
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("docker");
    let docker = Docker::start(dir.path());
    let docker_host = format!("unix://{}", docker.socket.display());
    let env = [("DOCKER_HOST", docker_host.as_str())];
    let image = format!("{IMAGE_REPO}:test");
    let image_id = out(docker
        .cli()
        .arg("import")
        .arg(busybox_tar(dir.path()))
        .arg(&image));
    let image_id = image_id.trim_start_matches("sha256:").to_string();
    let name = format!("osprey-docker-{}", std::process::id());
    let _cleanup = Cleanup(vec![{
        let mut c = docker.cli();
        c.args(["rm", "-f", &name]);
        c
    }]);
    // The labels kubelet puts on the containers of a pod.
    let pod_uid = "0b1c6d5e-2f3a-4b5c-8d7e-9f0a1b2c3d4e";
    let labels = [
        ("app", "osprey-test"),
        ("io.kubernetes.container.name", "web"),
        ("io.kubernetes.pod.name", "web-0"),
        ("io.kubernetes.pod.namespace", "shop"),
        ("io.kubernetes.pod.uid", pod_uid),
    ];
    let rules = rule_file(
        dir.path(),
        "pod_passwd",
        &format!("evt.kind = open and file.path = /etc/passwd and k8s.ns.name = shop and k8s.pod.name = web-0 and container.image.repository = {IMAGE_REPO}"),
    );
    let exec = Tracer::start_with_env(&["exec", "--output", "json"], &env);
    let files = Tracer::start_with_env(&POD_FILES, &env);
    let secure = start_secure(&rules, &env);
    let mut run = docker.cli();
    run.args(["run", "-d", "--name", &name]);
    for (k, v) in labels {
        run.arg("--label").arg(format!("{k}={v}"));
    }
    let id = out(run.args([image.as_str(), "/bin/sleep", "600"]));
    let exec_cat = || {
        out(docker
            .cli()
            .args(["exec", &name, "/bin/cat", "/etc/passwd"]));
    };
    exec_until_named(&exec, &name, &exec_cat);

    // A socket that accepts and never answers, and one that does not exist: events still
    // flow, with the id alone.
    let silent_path = dir.path().join("silent.sock");
    let _silent = UnixListener::bind(&silent_path).unwrap();
    let silent_host = format!("unix://{}", silent_path.display());
    let silent = Tracer::start_with_env(
        &["exec", "--output", "json"],
        &[("DOCKER_HOST", &silent_host)],
    );
    let missing = Tracer::start_with_env(
        &["exec", "--output", "json"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let started = Instant::now();
    exec_cat();
    let unnamed = |t: &Tracer| {
        saw(t, Duration::from_secs(10), |l| {
            l.contains(&id) && l.contains("\"comm\":\"cat\"") && l.contains("\"metadata\":")
        })
    };
    assert!(unnamed(&silent), "exec with a silent docker socket");
    assert!(unnamed(&missing), "exec with no docker socket");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "events waited for a runtime: {:?}",
        started.elapsed()
    );
    // The silent socket's lookup times out; later events say the metadata is unavailable.
    let unavailable = (0..10).any(|_| {
        exec_cat();
        saw(&silent, Duration::from_secs(1), |l| {
            l.contains(&id) && l.contains("\"metadata\":\"unavailable\"")
        })
    });
    assert!(unavailable, "the silent socket's lookup never gave up");

    let (exec, files, secure) = (exec.stop(), files.stop(), secure.stop());
    let (silent, missing) = (silent.stop(), missing.stop());
    for (host, reached) in [
        (docker_host.as_str(), true),
        ("unix:///nonexistent/d.sock", false),
    ] {
        let (_, _, report) = check_report(&[("DOCKER_HOST", host)]);
        let probe = report["container_runtimes"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["runtime"] == "docker"))
            .unwrap_or_else(|| panic!("no docker in {report}"))
            .clone();
        assert_eq!(
            probe["endpoint"],
            host.trim_start_matches("unix://"),
            "{probe}"
        );
        assert_eq!(
            (probe["found"].clone(), probe["reached"].clone()),
            (json!(reached), json!(reached)),
            "{probe}"
        );
    }
    let expected = json!({
        "id": id, "name": name, "image": image, "image_id": image_id, "runtime": "docker",
        "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    assert_execs(&exec.events(), &id, &expected);
    let k8s = exec
        .events()
        .into_iter()
        .find(|e| container_of(e)["id"] == id && container_of(e).get("name").is_some())
        .unwrap()["process"]["k8s"]
        .clone();
    assert_eq!(
        k8s,
        json!({"pod": "web-0", "namespace": "shop", "pod_uid": pod_uid, "container": "web"})
    );
    assert_opens(&files.events(), &id, &name);
    assert_alerts(&secure.events(), "pod_passwd", &id, &name);
    for (tracer, why) in [(&silent, "no answer within"), (&missing, "nonexistent")] {
        assert!(
            tracer.stderr.contains(why),
            "note on stderr: {}",
            tracer.stderr
        );
        for e in tracer
            .events()
            .iter()
            .filter(|e| container_of(e)["id"] == id)
        {
            let c = container_of(e);
            assert_eq!(c["runtime"], "docker", "{e}");
            assert!(c.get("name").is_none(), "{e}");
        }
    }
}

/// `osprey files --container NAME` while the docker socket does not exist yet: the
/// container's first events leave it unnamed (not NAME), so the kernel drops its cgroup;
/// once the socket appears, a retry names it, the kernel filter lets it through again and
/// its opens arrive with the name.
#[test]
fn a_container_named_late_is_let_through_the_kernel_filter_again() {
    if !bpf_available("container_named_late") {
        return;
    }
    if installed("dockerd").is_none() || installed("docker").is_none() {
        osprey_workload::require("container_named_late", false, "docker.io is not installed");
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("docker-late");
    let docker = Docker::start(dir.path());
    let image = format!("{IMAGE_REPO}:late");
    out(docker
        .cli()
        .arg("import")
        .arg(busybox_tar(dir.path()))
        .arg(&image));
    let name = format!("osprey-late-{}", std::process::id());
    let _cleanup = Cleanup(vec![{
        let mut c = docker.cli();
        c.args(["rm", "-f", &name]);
        c
    }]);
    let late = dir.path().join("late.sock");
    let late_host = format!("unix://{}", late.display());
    let files = Tracer::start_with_env(
        &["files", "--output", "json", "--container", &name],
        &[("DOCKER_HOST", &late_host)],
    );
    // Started after the tracer: its lookup's note comes after the ready line.
    let id = out(docker
        .cli()
        .args(["run", "-d", "--name", &name, &image, "/bin/sleep", "600"]));
    let cat = || {
        out(docker
            .cli()
            .args(["exec", &name, "/bin/cat", "/etc/passwd"]));
    };
    cat();
    // The lookup failed: the container is unnamed for now.
    let short = &id[..12];
    let noted = (0..20).any(|_| {
        files
            .next_stderr_line(Duration::from_secs(1))
            .is_some_and(|l| l.contains(short) && l.contains("events carry its id alone"))
    });
    assert!(noted, "no note of the failed lookup");
    // Opens now: decided not to match (no name), dropped in the kernel from here on.
    cat();
    std::os::unix::fs::symlink(&docker.socket, &late).unwrap();
    let opened = format!("\"name\":\"{name}\"");
    let through = (0..40).any(|_| {
        cat();
        saw(&files, Duration::from_secs(1), |l| {
            l.contains(&opened) && l.contains("/etc/passwd")
        })
    });
    let done = files.stop();
    assert!(
        through,
        "the container's opens never came through: {}",
        done.stderr
    );
    for e in done.events() {
        assert_eq!(
            container_of(&e)["id"],
            id.as_str(),
            "only the container: {e}"
        );
    }
    let opens = done.event_row("file_open");
    assert!(
        opens["filtered"].as_u64() > Some(0),
        "the kernel filtered nothing: {opens}"
    );
}
