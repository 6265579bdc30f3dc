//! Container runtimes for the container tests: a busybox image built here (no registry),
//! a containerd of the test's own with its CRI plugin, commands and their cleanup.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use crate::common::podman::{busybox_root, installed, out, tar_of};
use crate::common::*;
use serde_json::{json, Value};

/// `osprey files` of the pod `shop/web-0` both container tests make.
pub const POD_FILES: [&str; 7] = [
    "files",
    "--output",
    "json",
    "--pod",
    "web-0",
    "--namespace",
    "shop",
];

/// A busybox root filesystem as a tarball (`podman import` / `docker import` take it).
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let root = busybox_root(dir, &["sh", "cat", "sleep", "true"]);
    tar_of(&root, dir.join("busybox.tar"))
}

/// Reads tracer lines until one satisfies `pred` (false after `limit`).
pub fn saw(tracer: &Tracer, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tracer.next_line(left) {
            Some((_, line)) if pred(&line) => return true,
            Some(_) => {}
            None => return false,
        }
    }
    false
}

/// Runs `exec_cat` until the exec tracer shows a `cat` from the container with its name
/// (the runtime's answer arrives in the background; events never wait for it).
pub fn exec_until_named(exec: &Tracer, name: &str, exec_cat: &dyn Fn()) {
    let named = format!("\"name\":\"{name}\"");
    for _ in 0..10 {
        exec_cat();
        if saw(exec, Duration::from_secs(2), |l| {
            l.contains(&named) && l.contains("\"comm\":\"cat\"")
        }) {
            return;
        }
    }
    panic!("no exec event named {name} within 10 tries");
}

/// Removes a container when the test ends, however it ends.
pub struct Cleanup(pub Vec<Command>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cmd in &mut self.0 {
            let _ = cmd.output();
        }
    }
}

/// containerd with a configuration of its own (root, state and socket in a scratch
/// directory), stopped at the end.
pub struct Containerd {
    pub dir: PathBuf,
    daemon: Child,
}

impl Containerd {
    /// Starts containerd; its CRI plugin uses `sandbox_image` for pod sandboxes and CNI
    /// directories of its own (host-network pods need no CNI plugin).
    pub fn start(dir: &Path, sandbox_image: &str) -> Self {
        let config = dir.join("containerd.toml");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{sandbox_image}\"\n  disable_apparmor = true\n  restrict_oom_score_adj = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{d}/cni/bin\"\n  conf_dir = \"{d}/cni/conf\"\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new(installed("containerd").unwrap())
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            dir: dir.to_path_buf(),
            daemon,
        };
        eventually(Duration::from_secs(30), || {
            c.ctr()
                .arg("version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
                .ok_or_else(|| {
                    std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                })
        });
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// `ctr` in namespace `osprey`.
    pub fn ctr(&self) -> Command {
        self.ctr_in("osprey")
    }

    pub fn ctr_in(&self, namespace: &str) -> Command {
        let mut c = Command::new(installed("ctr").unwrap());
        c.arg("-a").arg(self.socket()).args(["-n", namespace]);
        c
    }
}

impl Drop for Containerd {
    /// Deletes every task (stopping the shims, unmounting the root filesystems) and
    /// container this daemon has, then stops it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("containerd's log, last lines first:\n{}", tail.join("\n"));
        }
        for ns in ["osprey", "k8s.io"] {
            for (list, delete) in [
                (["tasks", "ls"], &["tasks", "delete", "-f"][..]),
                (["containers", "ls"], &["containers", "delete"][..]),
            ] {
                let listed = self.ctr_in(ns).args(list).arg("-q").output();
                let ids = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                for id in ids.unwrap_or_default().split_whitespace() {
                    let _ = self.ctr_in(ns).args(delete).arg(id).output();
                }
            }
        }
        // SAFETY: signalling the daemon this test started, by its pid.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The busybox root filesystem as an OCI image archive named `name` (for `ctr images
/// import`), whose default command sleeps (so it can be a pod sandbox); with its image id
/// (the config's digest, hex).
pub fn oci_archive(dir: &Path, name: &str) -> (PathBuf, String) {
    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = sha256_hex(bytes);
        std::fs::write(blobs.join(&digest), bytes).unwrap();
        serde_json::json!({"digest": format!("sha256:{digest}"), "size": bytes.len()})
    };
    let layer = blob(&std::fs::read(busybox_tar(dir)).unwrap());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "100000"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    });
    let config = blob(config.to_string().as_bytes());
    let with_type = |mut d: serde_json::Value, media: &str| {
        d["mediaType"] = media.into();
        d
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": with_type(config.clone(), "application/vnd.oci.image.config.v1+json"),
        "layers": [with_type(layer, "application/vnd.oci.image.layer.v1.tar")],
    });
    let mut entry = with_type(
        blob(manifest.to_string().as_bytes()),
        "application/vnd.oci.image.manifest.v1+json",
    );
    entry["annotations"] = serde_json::json!({"io.containerd.image.name": name});
    entry["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let tar = dir.join("oci.tar");
    out(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let id = config["digest"].as_str().unwrap();
    (tar, id.trim_start_matches("sha256:").to_string())
}

pub fn container_of(event: &Value) -> &Value {
    &event["process"]["container"]
}

/// The cat execs from container `id`: all carry the id and runtime; every one after the
/// runtime answered carries exactly `expected`, the earlier ones say `pending`.
pub fn assert_execs(events: &[Value], id: &str, expected: &Value) {
    let cats: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["process"]["comm"] == "cat")
        .filter(|e| container_of(e)["id"] == id)
        .collect();
    assert!(!cats.is_empty(), "no cat exec from {id}");
    let mut known = 0;
    for e in &cats {
        let c = container_of(e);
        if c.get("metadata").is_some() {
            assert_eq!(c["metadata"], "pending", "{e}");
            assert_eq!(c["runtime"], expected["runtime"], "{e}");
            assert!(known == 0, "pending after known: {e}");
        } else {
            assert_eq!(c, expected, "{e}");
            known += 1;
        }
        assert_eq!(e["argv"], json!(["/bin/cat", "/etc/passwd"]));
    }
    assert!(known > 0, "no exec with the runtime's metadata: {cats:?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "exec" && container_of(e) == &json!({"id": "host"})),
        "host processes are container `host`"
    );
}

/// Every open shown under a container filter is from that container; `cat` read the
/// container's /etc/passwd.
pub fn assert_opens(events: &[Value], id: &str, name: &str) {
    assert!(
        !events.is_empty(),
        "the container filter let nothing through"
    );
    for e in events {
        assert_eq!(container_of(e)["id"], id, "{e}");
        assert_eq!(container_of(e)["name"], name, "{e}");
    }
    assert!(
        events.iter().any(|e| e["process"]["comm"] == "cat"
            && e["path"] == "/etc/passwd"
            && e["errno"] == 0),
        "cat's open of /etc/passwd"
    );
    // The same file as the host sees it (the container's root filesystem).
    // A cat that ends before its mount table is read has none: one of them must.
    let host_path = events
        .iter()
        .filter(|e| e["process"]["comm"] == "cat" && e["path"] == "/etc/passwd")
        .find_map(|e| e["host_path"].as_str())
        .unwrap_or_else(|| panic!("no host_path on cat's opens: {events:?}"));
    assert_ne!(host_path, "/etc/passwd");
    // Opens the runtime made before moving the root name host paths already: kept as they are.
    for e in events {
        if let (Some(path), Some(host)) = (e["abs_path"].as_str(), e["host_path"].as_str()) {
            assert!(
                host.matches("/merged/").count() <= 1,
                "host path {host} of {path}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(host_path).unwrap(),
        "root:x:0:0:root:/:/bin/sh\n"
    );
}

pub fn assert_alerts(alerts: &[Value], rule: &str, id: &str, name: &str) {
    let ours: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == rule).collect();
    assert!(!ours.is_empty(), "no {rule} alert: {alerts:?}");
    for a in ours {
        let c = &a["event"]["process"]["container"];
        assert_eq!(
            (c["id"].as_str(), c["name"].as_str()),
            (Some(id), Some(name)),
            "{a}"
        );
    }
}

pub fn rule_file(dir: &Path, rule: &str, condition: &str) -> String {
    let path = dir.join("rules.yaml");
    std::fs::write(
        &path,
        format!(
            "- rule: {rule}\n  desc: test\n  severity: low\n  condition: {condition}\n  output: \"%proc.name in %container.name\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// `osprey secure` with only the rules of `rules`.
pub fn start_secure(rules: &str, env: &[(&str, &str)]) -> Tracer {
    let args = [
        "secure",
        "--no-default-rules",
        "--rules",
        rules,
        "--output",
        "json",
    ];
    Tracer::start_with_env(&args, env)
}
