//! containerd (Debian's package) with its CRI plugin, started by each test with a
//! configuration of its own: a container run with `ctr` gets its metadata from containerd's
//! API; a pod sandbox and a container created through the CRI API get their pod, namespace
//! and names, on exec and open events and on alerts from inside.

mod common;
mod containers_support;
mod cri_api;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use containers_support::*;
use cri_api::*;
use serde_json::json;

/// The busybox image, as both the sandbox and the container image.
const IMAGE: &str = "docker.io/library/osprey-busybox:test";
const POD_UID: &str = "5d0c8f1e-6a2b-4c3d-9e4f-a0b1c2d3e4f5";
const POD_PARENT: &str = "kubepods/besteffort";

fn containerd_installed(test: &str) -> bool {
    if !bpf_available(test) {
        return false;
    }
    let there = installed("containerd").is_some() && installed("ctr").is_some();
    osprey_workload::require(test, there, "containerd is not installed");
    there
}

/// The environment that points osprey at the test's containerd (API and CRI).
fn env_of(containerd: &Containerd) -> [(String, String); 2] {
    let socket = containerd.socket().display().to_string();
    [
        ("CONTAINERD_ADDRESS".to_string(), socket.clone()),
        (
            "CONTAINER_RUNTIME_ENDPOINT".to_string(),
            format!("unix://{socket}"),
        ),
    ]
}

fn start(args: &[&str], env: &[(String, String)]) -> Tracer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
    Tracer::start_with_env(args, &env)
}

#[test]
fn containerd_containers_get_containerd_metadata() {
    if !containerd_installed("containerd_containers") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("containerd");
    let containerd = Containerd::start(dir.path(), IMAGE);
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    out(std::process::Command::new("tar")
        .arg("-xf")
        .arg(busybox_tar(dir.path()))
        .arg("-C")
        .arg(&root));
    let id = format!("{:x}", std::process::id()).repeat(64)[..64].to_string();
    let exec = start(&["exec", "--output", "json"], &env_of(&containerd));
    let mut run = containerd.ctr();
    run.args(["run", "-d", "--label", "app=osprey-test", "--rootfs"])
        .arg(&root);
    // The container's main process spins, for the profile.
    out(run.args([id.as_str(), "/bin/sh", "-c", "while :; do :; done"]));
    let exec_cat = || {
        out(containerd.ctr().args([
            "tasks",
            "exec",
            "--exec-id",
            &format!("cat{}", rand_suffix()),
            &id,
            "/bin/cat",
            "/etc/passwd",
        ]));
    };
    // containerd has no names: the id is the container's name.
    exec_until_named(&exec, &id, &exec_cat);
    let exec = exec.stop();
    let expected = json!({
        "id": id, "name": id, "image": "", "image_id": "", "runtime": "containerd",
        "labels": {"app": "osprey-test"},
    });
    assert_execs(&exec.events(), &id, &expected);
    for e in exec.events() {
        assert!(
            container_of(&e)["id"] != id || e["process"].get("k8s").is_none(),
            "{e}"
        );
    }
    assert_profile_tagged(&containerd, dir.path(), &id);
}

/// `osprey profile` of the container's spinning process: every stack carries the
/// container (JSON), and folded stacks begin with its name under `--folded-container`.
fn assert_profile_tagged(containerd: &Containerd, dir: &Path, id: &str) {
    let tasks = out(containerd.ctr().args(["tasks", "ls"]));
    let pid = tasks
        .lines()
        .find_map(|l| l.strip_prefix(id))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no task {id}: {tasks}"))
        .to_string();
    let folded = dir.join("profile.folded");
    let profile = std::process::Command::new(OSPREY)
        .args([
            "profile",
            "--pid",
            &pid,
            "--duration",
            "2",
            "--output",
            "json",
        ])
        .arg("--folded")
        .arg(&folded)
        .arg("--folded-container")
        .envs(env_of(containerd))
        .output()
        .unwrap();
    assert!(profile.status.success(), "{}", stderr(&profile));
    let json: serde_json::Value = serde_json::from_slice(&profile.stdout).unwrap();
    let stacks = json["stacks"].as_array().unwrap();
    assert!(
        !stacks.is_empty(),
        "no samples of the spinning process: {json}"
    );
    for s in stacks {
        assert_eq!(s["container"], json!({"id": id, "name": id}), "{s}");
    }
    let lines = std::fs::read_to_string(&folded).unwrap();
    assert!(!lines.is_empty());
    for line in lines.lines() {
        assert!(line.starts_with(&format!("{id};sh;")), "{line}");
    }
}

/// A distinct suffix for each `ctr tasks exec` of a test.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The namespaces of a host-network pod (no CNI needed).
fn host_network() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
    }
}

fn sandbox_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            uid: POD_UID.into(),
            namespace: "shop".into(),
        }),
        labels: BTreeMap::from([("app".to_string(), "osprey-test".to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{POD_PARENT}/pod{POD_UID}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(host_network()),
            }),
        }),
    }
}

/// A pod `shop/web-0` with one container `web` (sleeping), through the CRI: the sandbox
/// and container ids.
async fn run_pod(cri: &Channel) -> (String, String) {
    let sandbox = sandbox_config();
    let request = RunPodSandboxRequest {
        config: Some(sandbox.clone()),
    };
    let sandbox_id = call::<_, RunPodSandboxResponse>(cri, RUN_POD_SANDBOX, request)
        .await
        .expect("RunPodSandbox")
        .pod_sandbox_id;
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata { name: "web".into() }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
        }),
        command: vec!["/bin/sleep".into()],
        args: vec!["600".into()],
        labels: BTreeMap::from([("tier".to_string(), "front".to_string())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(host_network()),
            }),
        }),
    };
    let request = CreateContainerRequest {
        pod_sandbox_id: sandbox_id.clone(),
        config: Some(config),
        sandbox_config: Some(sandbox),
    };
    let id = call::<_, CreateContainerResponse>(cri, CREATE_CONTAINER, request)
        .await
        .expect("CreateContainer")
        .container_id;
    let request = StartContainerRequest {
        container_id: id.clone(),
    };
    call::<_, ()>(cri, START_CONTAINER, request)
        .await
        .expect("StartContainer");
    (sandbox_id, id)
}

/// Removes the pod's cgroup directories runc leaves (best effort), however the test ends.
struct PodCgroups;

impl Drop for PodCgroups {
    fn drop(&mut self) {
        remove_pod_cgroups();
    }
}

fn remove_pod_cgroups() {
    let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for m in mounts.flatten() {
        let pod = m.path().join(POD_PARENT).join(format!("pod{POD_UID}"));
        let _ = std::fs::remove_dir(&pod);
        let _ = std::fs::remove_dir(m.path().join(POD_PARENT));
        let _ = std::fs::remove_dir(m.path().join("kubepods"));
    }
}

fn pod_rules(dir: &Path) -> String {
    rule_file(
        dir,
        "pod_passwd",
        "evt.kind = open and file.path = /etc/passwd and k8s.ns.name = shop and k8s.pod.name = web-0 and container.name = web",
    )
}

#[test]
fn cri_pods_on_exec_open_events_and_alerts() {
    if !containerd_installed("cri_pods") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("cri");
    let _cgroups = PodCgroups;
    let containerd = Containerd::start(dir.path(), IMAGE);
    let (archive, image_id) = oci_archive(dir.path(), IMAGE);
    out(containerd
        .ctr_in("k8s.io")
        .args(["images", "import"])
        .arg(&archive));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cri = rt
        .block_on(connect(&containerd.socket()))
        .expect("CRI socket");
    let env = env_of(&containerd);
    let exec = start(&["exec", "--output", "json"], &env);
    let files = start(&POD_FILES, &env);
    let rules = pod_rules(dir.path());
    let secure = start(
        &[
            "secure",
            "--no-default-rules",
            "--rules",
            &rules,
            "--output",
            "json",
        ],
        &env,
    );
    let (sandbox_id, id) = rt.block_on(run_pod(&cri));
    let exec_cat = || {
        let request = ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/bin/cat".into(), "/etc/passwd".into()],
            timeout: 10,
        };
        let answer: ExecSyncResponse = rt
            .block_on(call(&cri, EXEC_SYNC, request))
            .expect("ExecSync");
        assert_eq!(answer.exit_code, 0, "{answer:?}");
    };
    exec_until_named(&exec, "web", &exec_cat);
    exec_cat();
    let (exec, files, secure) = (exec.stop(), files.stop(), secure.stop());
    let (_, _, report) = check_report(&[
        ("CONTAINERD_ADDRESS", &env[0].1),
        ("CONTAINER_RUNTIME_ENDPOINT", &env[1].1),
    ]);

    let expected = json!({
        "id": id, "name": "web", "image": IMAGE, "image_id": image_id,
        "runtime": "containerd", "labels": {"tier": "front"},
    });
    assert_execs(&exec.events(), &id, &expected);
    let pod = json!({
        "pod": "web-0", "namespace": "shop", "pod_uid": POD_UID, "container": "web",
        "labels": {"app": "osprey-test"},
    });
    for e in exec.events().iter().filter(|e| container_of(e)["id"] == id) {
        let k8s = &e["process"]["k8s"];
        if container_of(e).get("name").is_some() {
            assert_eq!(k8s, &pod, "{e}");
        } else {
            // Before the CRI answered: the pod uid from the kubepods cgroup path.
            assert_eq!(k8s, &json!({"pod_uid": POD_UID}), "{e}");
        }
    }
    assert_opens(&files.events(), &id, "web");
    // Opens of the host and of other containers were dropped in the kernel once decided.
    let summary = files.summary();
    let opens = summary["events"]
        .as_array()
        .and_then(|kinds| kinds.iter().find(|k| k["kind"] == "file_open"))
        .unwrap_or_else(|| panic!("no file_open counters in {summary}"));
    assert!(opens["filtered"].as_u64() > Some(0), "{summary}");
    assert_alerts(&secure.events(), "pod_passwd", &id, "web");
    let probes = report["container_runtimes"].as_array().unwrap();
    for runtime in ["containerd", "cri"] {
        let probe = probes
            .iter()
            .find(|p| p["runtime"] == runtime && p["endpoint"] == env[0].1)
            .unwrap_or_else(|| panic!("no {runtime} probe in {report}"));
        assert_eq!(probe["reached"], true, "{probe}");
    }
    rt.block_on(async {
        let sandbox = || PodSandboxIdRequest {
            pod_sandbox_id: sandbox_id.clone(),
        };
        call::<_, ()>(&cri, STOP_POD_SANDBOX, sandbox())
            .await
            .expect("StopPodSandbox");
        call::<_, ()>(&cri, REMOVE_POD_SANDBOX, sandbox())
            .await
            .expect("RemovePodSandbox");
    });
}
