//! What a runtime says about a container, and where Osprey asks: the Docker Engine API
//! (docker, and podman's compatible service) over a Unix socket, podman's storage state
//! when no podman service runs, and the gRPC runtimes (containerd, the CRI; `grpc.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Runtime;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    /// The image as the container was created from it (`repo:tag`).
    pub image: String,
    /// The image id (hex digest, without `sha256:`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    /// The runtime that answered, when it differs from what the cgroup path suggests.
    pub runtime: Option<Runtime>,
    pub k8s: Option<K8s>,
}

/// The pod a container belongs to: from the CRI's pod sandbox, or from the labels kubelet
/// puts on every container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8s {
    pub pod: String,
    pub namespace: String,
    pub pod_uid: String,
    pub container: String,
    /// The pod sandbox's labels (known from the CRI only).
    pub labels: BTreeMap<String, String>,
}

impl K8s {
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let pod = labels.get("io.kubernetes.pod.name")?.clone();
        Some(Self {
            pod,
            namespace: get("io.kubernetes.pod.namespace"),
            pod_uid: get("io.kubernetes.pod.uid"),
            container: get("io.kubernetes.container.name"),
            labels: BTreeMap::new(),
        })
    }
}

/// `repository` of `registry/repository:tag@digest` (Falco's `container.image.repository`).
pub fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest[last_slash..].rfind(':') {
        Some(colon) => &no_digest[..last_slash + colon],
        None => no_digest,
    }
}

pub(super) fn strip_sha(id: &str) -> String {
    id.strip_prefix("sha256:").unwrap_or(id).to_string()
}

/// Where runtimes are asked. Defaults: the standard sockets; `DOCKER_HOST` and
/// `CONTAINER_HOST` (`unix://PATH`) as the docker and podman clients read them,
/// `CONTAINERD_ADDRESS` as `ctr` reads it, `CONTAINER_RUNTIME_ENDPOINT` as `crictl` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub docker_socket: PathBuf,
    pub podman_socket: PathBuf,
    /// podman's (containers/storage) graph root.
    pub podman_storage: PathBuf,
    /// containerd's gRPC API.
    pub containerd_socket: PathBuf,
    /// CRI services, asked in order: the configured endpoint, else containerd's (its CRI
    /// plugin) and CRI-O's.
    pub cri_sockets: Vec<PathBuf>,
}

/// CRI-O's socket.
pub const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";

impl Sources {
    pub fn from_env() -> Self {
        let unix = |var: &str, default: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.strip_prefix("unix://").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let containerd_socket = std::env::var_os("CONTAINERD_ADDRESS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/containerd/containerd.sock"));
        let cri_sockets = match std::env::var("CONTAINER_RUNTIME_ENDPOINT") {
            Ok(v) => vec![PathBuf::from(v.strip_prefix("unix://").unwrap_or(&v))],
            Err(_) => vec![containerd_socket.clone(), PathBuf::from(CRIO_SOCKET)],
        };
        Self {
            docker_socket: unix("DOCKER_HOST", "/var/run/docker.sock"),
            podman_socket: unix("CONTAINER_HOST", "/run/podman/podman.sock"),
            podman_storage: PathBuf::from("/var/lib/containers/storage"),
            containerd_socket,
            cri_sockets,
        }
    }
}

/// The parts of `GET /containers/{id}/json` used here.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    name: String,
    image: String,
    config: InspectConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    image: String,
    labels: Option<BTreeMap<String, String>>,
}

/// Parses a Docker Engine API `containers/{id}/json` answer.
pub fn from_inspect(body: &[u8]) -> Result<Metadata, String> {
    let i: Inspect = serde_json::from_slice(body).map_err(|e| format!("inspect answer: {e}"))?;
    let labels = i.config.labels.unwrap_or_default();
    Ok(Metadata {
        name: i.name.trim_start_matches('/').to_string(),
        image: i.config.image,
        image_id: strip_sha(&i.image),
        k8s: K8s::from_labels(&labels),
        labels,
        runtime: None,
    })
}

#[derive(Deserialize)]
struct StoredContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    metadata: String,
}

#[derive(Deserialize, Default)]
struct StoredMetadata {
    #[serde(rename = "image-name", default)]
    image_name: String,
}

/// A container from podman's storage state (`*-containers/containers.json`): name and
/// image, no labels (those live in podman's own database).
pub fn from_podman_storage(root: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let dirs = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for dir in dirs.flatten() {
        if !dir.file_name().to_string_lossy().ends_with("-containers") {
            continue;
        }
        for file in ["containers.json", "volatile-containers.json"] {
            let Ok(text) = std::fs::read(dir.path().join(file)) else {
                continue;
            };
            let list: Vec<StoredContainer> = serde_json::from_slice(&text)
                .map_err(|e| format!("{}: {e}", dir.path().join(file).display()))?;
            if let Some(c) = list.into_iter().find(|c| c.id == id) {
                let meta: StoredMetadata = serde_json::from_str(&c.metadata).unwrap_or_default();
                return Ok(Some(Metadata {
                    name: c.names.into_iter().next().unwrap_or_default(),
                    image: meta.image_name,
                    image_id: strip_sha(&c.image),
                    ..Default::default()
                }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_drop_tag_and_digest_not_the_registry_port() {
        assert_eq!(image_repository("busybox"), "busybox");
        assert_eq!(
            image_repository("localhost/osprey-busybox:test"),
            "localhost/osprey-busybox"
        );
        assert_eq!(image_repository("reg:5000/a/b:1.2"), "reg:5000/a/b");
        assert_eq!(image_repository("reg:5000/a/b@sha256:00"), "reg:5000/a/b");
    }

    #[test]
    fn inspect_answers_and_pod_labels() {
        let body = br#"{"Id":"x","Name":"/web","Image":"sha256:abc","Config":{"Image":"nginx:1",
            "Labels":{"io.kubernetes.pod.name":"p","io.kubernetes.pod.namespace":"ns",
            "io.kubernetes.pod.uid":"u","io.kubernetes.container.name":"c","app":"a"}}}"#;
        let m = from_inspect(body).unwrap();
        assert_eq!(
            (m.name.as_str(), m.image.as_str(), m.image_id.as_str()),
            ("web", "nginx:1", "abc")
        );
        assert_eq!(m.labels.len(), 5);
        let k = m.k8s.unwrap();
        assert_eq!(
            (k.pod, k.namespace, k.pod_uid, k.container),
            ("p".into(), "ns".into(), "u".into(), "c".into())
        );
    }

    #[test]
    fn podman_storage_state() {
        let dir = std::env::temp_dir().join(format!("osprey-podman-state-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("overlay-containers")).unwrap();
        std::fs::write(
            dir.join("overlay-containers/containers.json"),
            r#"[{"id":"c1","names":["web"],"image":"i1","metadata":"{\"image-name\":\"localhost/x:1\"}"}]"#,
        )
        .unwrap();
        let m = from_podman_storage(&dir, "c1").unwrap().unwrap();
        assert_eq!(
            (m.name.as_str(), m.image.as_str(), m.image_id.as_str()),
            ("web", "localhost/x:1", "i1")
        );
        assert_eq!(from_podman_storage(&dir, "c2").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
