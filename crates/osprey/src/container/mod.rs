//! Container and Kubernetes context: which container each event's cgroup belongs to
//! (decided at once, from the cgroup path), and what its runtime says about it (name,
//! image, labels, pod), fetched by a background thread and cached. Events never wait for
//! a runtime: until its answer arrives a container shows its id and `"metadata": "pending"`.

pub mod cgroup_path;
pub mod filter;
pub mod gate;
pub mod grpc;
pub mod grpc_messages;
pub mod labels;
pub mod metadata;
pub mod paths;
pub mod pids;
pub mod probe;
mod registry;
pub mod resolve;
mod retry;
mod runtimes;

use std::sync::{Arc, LazyLock};

use serde::ser::SerializeMap;
use serde::Serialize;

pub use metadata::{Metadata, Sources};
#[cfg(test)]
use registry::announce;
pub use registry::{watch, Containers, REFRESH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    CriO,
    /// Under `kubepods` without a runtime prefix: containerd or CRI-O.
    Cri,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Cri => "cri",
        }
    }
}

/// What is known of the runtime's description of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataState {
    Pending,
    Known(Arc<Metadata>),
    /// No runtime answered for it (the reason, for the JSON).
    Unavailable(Arc<str>),
}

/// One container (or the host, id `host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub runtime: Option<Runtime>,
    pub pod_uid: Option<String>,
    pub metadata: MetadataState,
}

/// Falco's convention: host processes are in container `host`.
pub const HOST_ID: &str = "host";

static HOST: LazyLock<Arc<Container>> = LazyLock::new(|| {
    Arc::new(Container {
        id: HOST_ID.to_string(),
        runtime: None,
        pod_uid: None,
        metadata: MetadataState::Pending,
    })
});

/// The host's container (id `host`).
pub fn host() -> &'static Arc<Container> {
    LazyLock::force(&HOST)
}

impl Container {
    pub fn is_host(&self) -> bool {
        self.runtime.is_none()
    }

    pub fn known(&self) -> Option<&Metadata> {
        match &self.metadata {
            MetadataState::Known(m) => Some(m),
            _ => None,
        }
    }

    /// Falco's `container.id`: the first 12 hex digits (or `host`).
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    pub fn name(&self) -> Option<&str> {
        self.known()
            .map(|m| m.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The name if known, else the short id: what tables show.
    pub fn label(&self) -> &str {
        self.name().unwrap_or(self.short_id())
    }

    /// `--container NAME|ID`: the name, the full id, or an id prefix of 12 or more digits.
    pub fn matches(&self, wanted: &str) -> bool {
        self.name() == Some(wanted)
            || (wanted.len() >= 12 && self.id.starts_with(wanted))
            || self.id == wanted
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.known()
            .and_then(|m| m.k8s.as_ref())
            .map(|k| k.pod.as_str())
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.known()
            .and_then(|m| m.k8s.as_ref())
            .map(|k| k.namespace.as_str())
    }
}

impl Serialize for Container {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        let Some(runtime) = self.runtime else {
            return map.end();
        };
        match &self.metadata {
            MetadataState::Known(m) => {
                map.serialize_entry("name", &m.name)?;
                map.serialize_entry("image", &m.image)?;
                map.serialize_entry("image_id", &m.image_id)?;
                map.serialize_entry("runtime", m.runtime.unwrap_or(runtime).name())?;
                map.serialize_entry("labels", &m.labels)?;
            }
            MetadataState::Pending => {
                map.serialize_entry("runtime", runtime.name())?;
                map.serialize_entry("metadata", "pending")?;
            }
            MetadataState::Unavailable(why) => {
                map.serialize_entry("runtime", runtime.name())?;
                map.serialize_entry("metadata", "unavailable")?;
                map.serialize_entry("metadata_error", &**why)?;
            }
        }
        map.end()
    }
}

/// `process.k8s`: what is known of the pod (`None` outside Kubernetes).
pub fn k8s_json(c: &Container) -> Option<K8sJson<'_>> {
    let k8s = c.known().and_then(|m| m.k8s.as_ref());
    if k8s.is_none() && c.pod_uid.is_none() {
        return None;
    }
    Some(K8sJson {
        k8s,
        pod_uid: c.pod_uid.as_deref(),
    })
}

/// The JSON of `process.k8s`: the runtime's answer, or only the pod uid of the cgroup path.
pub struct K8sJson<'a> {
    k8s: Option<&'a metadata::K8s>,
    pod_uid: Option<&'a str>,
}

impl Serialize for K8sJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.k8s {
            Some(k) => {
                map.serialize_entry("pod", &k.pod)?;
                map.serialize_entry("namespace", &k.namespace)?;
                map.serialize_entry("pod_uid", &k.pod_uid)?;
                map.serialize_entry("container", &k.container)?;
                if !k.labels.is_empty() {
                    map.serialize_entry("labels", &k.labels)?;
                }
            }
            None => map.serialize_entry("pod_uid", &self.pod_uid)?,
        }
        map.end()
    }
}
