//! The gRPC runtimes: the Kubernetes CRI (containerd's CRI plugin, CRI-O) for containers of
//! pods, and containerd's own API (every namespace, `k8s.io` included) for the rest. Both
//! over a Unix socket with the `k8s-cri` and `containerd-client` bindings.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::{GetContainerRequest, ListNamespacesRequest};
use containerd_client::tonic::{self, transport::Channel, Code};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ContainerFilter, ListContainersRequest, PodSandboxStatusRequest};

use super::metadata::{strip_sha, K8s, Metadata};

/// A channel to the gRPC service on `socket` (the caller bounds the wait).
pub async fn connect(socket: &Path) -> Result<Channel, String> {
    if !socket.exists() {
        return Err(format!("{}: no such socket", socket.display()));
    }
    containerd_client::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))
}

fn sorted(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

fn failed(socket: &Path, what: &str, status: &tonic::Status) -> String {
    format!("{}: {what}: {}", socket.display(), status.message())
}

/// A container as the CRI service describes it, with its pod sandbox; `None` when the
/// service does not know it (not a container of a pod, or the service is not a CRI).
pub async fn cri(socket: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let mut client = RuntimeServiceClient::new(connect(socket).await?);
    let filter = ContainerFilter {
        id: id.to_string(),
        ..Default::default()
    };
    let listed = client
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await;
    let containers = match listed {
        Ok(r) => r.into_inner().containers,
        Err(s) if s.code() == Code::Unimplemented => return Ok(None),
        Err(s) => return Err(failed(socket, "CRI ListContainers", &s)),
    };
    let Some(c) = containers.into_iter().find(|c| c.id == id) else {
        return Ok(None);
    };
    let pod = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: c.pod_sandbox_id.clone(),
            verbose: false,
        })
        .await
        .map_err(|s| failed(socket, "CRI PodSandboxStatus", &s))?
        .into_inner()
        .status
        .unwrap_or_default();
    let name = c.metadata.map(|m| m.name).unwrap_or_default();
    let pod_meta = pod.metadata.unwrap_or_default();
    Ok(Some(Metadata {
        image: c.image.map(|i| i.image).unwrap_or_default(),
        image_id: strip_sha(&c.image_ref),
        labels: sorted(c.labels),
        runtime: None,
        k8s: Some(K8s {
            pod: pod_meta.name,
            namespace: pod_meta.namespace,
            pod_uid: pod_meta.uid,
            container: name.clone(),
            labels: sorted(pod.labels),
        }),
        name,
    }))
}

/// A container as containerd describes it, from whichever namespace holds it; `None` when
/// none does. containerd has no container names: the id is the name (as `ctr` uses it),
/// unless kubelet's labels name it.
pub async fn containerd(socket: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let channel = connect(socket).await?;
    let namespaces = NamespacesClient::new(channel.clone())
        .list(ListNamespacesRequest::default())
        .await
        .map_err(|s| failed(socket, "containerd namespaces", &s))?
        .into_inner()
        .namespaces;
    let mut containers = ContainersClient::new(channel);
    for ns in namespaces {
        let mut request = tonic::Request::new(GetContainerRequest { id: id.to_string() });
        let Ok(value) = ns.name.parse() else {
            continue;
        };
        request.metadata_mut().insert("containerd-namespace", value);
        let c = match containers.get(request).await {
            Ok(r) => r.into_inner().container.unwrap_or_default(),
            Err(s) if s.code() == Code::NotFound => continue,
            Err(s) => return Err(failed(socket, "containerd containers", &s)),
        };
        let labels = sorted(c.labels);
        let k8s = K8s::from_labels(&labels);
        let name = k8s
            .as_ref()
            .map(|k| k.container.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or(c.id);
        return Ok(Some(Metadata {
            name,
            image: c.image,
            image_id: String::new(),
            k8s,
            labels,
            runtime: None,
        }));
    }
    Ok(None)
}
