//! The gRPC runtimes: the Kubernetes CRI (containerd's CRI plugin, CRI-O) for containers of
//! pods, and containerd's own API (every namespace, `k8s.io` included) for the rest. Both
//! over a Unix socket with tonic's generic client and the hand-written messages of
//! `grpc_messages` (the build needs no protoc).

use std::path::Path;

pub use tonic::transport::Channel;
use tonic::transport::Endpoint;
use tonic::{Code, IntoRequest, Status};

use super::grpc_messages::*;
use super::metadata::{strip_sha, K8s, Metadata};

/// A channel to the gRPC service on `socket` (the caller bounds the wait).
pub async fn connect(socket: &Path) -> Result<Channel, String> {
    if !socket.exists() {
        return Err(format!("{}: no such socket", socket.display()));
    }
    let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    endpoint
        .connect()
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))
}

/// One unary call of `method` (`/package.Service/Method`) on `channel`: the decoded answer,
/// or the status the service (or the transport) gave.
pub async fn call<Req, Resp>(
    channel: &Channel,
    method: &'static str,
    request: impl IntoRequest<Req>,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut client = tonic::client::Grpc::new(channel.clone());
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let answer = client.unary(request.into_request(), path, codec).await?;
    Ok(answer.into_inner())
}

fn failed(socket: &Path, what: &str, status: &Status) -> String {
    format!("{}: {what}: {}", socket.display(), status.message())
}

/// A container as the CRI service describes it, with its pod sandbox; `None` when the
/// service does not know it (not a container of a pod, or the service is not a CRI).
pub async fn cri(socket: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let channel = connect(socket).await?;
    let filter = ContainerFilter { id: id.to_string() };
    let request = ListContainersRequest {
        filter: Some(filter),
    };
    let listed = call(&channel, CRI_LIST_CONTAINERS, request).await;
    let containers = match listed {
        Ok(ListContainersResponse { containers }) => containers,
        Err(s) if s.code() == Code::Unimplemented => return Ok(None),
        Err(s) => return Err(failed(socket, "CRI ListContainers", &s)),
    };
    let Some(c) = containers.into_iter().find(|c| c.id == id) else {
        return Ok(None);
    };
    let request = PodSandboxStatusRequest {
        pod_sandbox_id: c.pod_sandbox_id.clone(),
    };
    let pod = call::<_, PodSandboxStatusResponse>(&channel, CRI_POD_SANDBOX_STATUS, request)
        .await
        .map_err(|s| failed(socket, "CRI PodSandboxStatus", &s))?
        .status
        .unwrap_or_default();
    let name = c.metadata.map(|m| m.name).unwrap_or_default();
    let pod_meta = pod.metadata.unwrap_or_default();
    Ok(Some(Metadata {
        image: c.image.map(|i| i.image).unwrap_or_default(),
        image_id: strip_sha(&c.image_ref),
        labels: c.labels,
        runtime: None,
        k8s: Some(K8s {
            pod: pod_meta.name,
            namespace: pod_meta.namespace,
            pod_uid: pod_meta.uid,
            container: name.clone(),
            labels: pod.labels,
        }),
        name,
    }))
}

/// A container as containerd describes it, from whichever namespace holds it; `None` when
/// none does. containerd has no container names: the id is the name (as `ctr` uses it),
/// unless kubelet's labels name it.
pub async fn containerd(socket: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let channel = connect(socket).await?;
    let namespaces = call::<_, ListNamespacesResponse>(
        &channel,
        CONTAINERD_NAMESPACES_LIST,
        ListNamespacesRequest {},
    )
    .await
    .map_err(|s| failed(socket, "containerd namespaces", &s))?
    .namespaces;
    for ns in namespaces {
        let mut request = tonic::Request::new(GetContainerRequest { id: id.to_string() });
        let Ok(value) = ns.name.parse() else {
            continue;
        };
        request.metadata_mut().insert("containerd-namespace", value);
        let answer = call::<GetContainerRequest, GetContainerResponse>(
            &channel,
            CONTAINERD_CONTAINERS_GET,
            request,
        );
        let c = match answer.await {
            Ok(r) => r.container.unwrap_or_default(),
            Err(s) if s.code() == Code::NotFound => continue,
            Err(s) => return Err(failed(socket, "containerd containers", &s)),
        };
        let k8s = K8s::from_labels(&c.labels);
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
            labels: c.labels,
            runtime: None,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A length-delimited field (wire type 2) with a body under 128 bytes.
    fn len_field(field: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    fn string_map_entry(field: u8, key: &str, value: &str) -> Vec<u8> {
        let entry = [len_field(1, key.as_bytes()), len_field(2, value.as_bytes())].concat();
        len_field(field, &entry)
    }

    /// Encodes `message`, compares with `bytes` built from the API's field numbers, and
    /// decodes `bytes` back into `message`.
    fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: M, bytes: &[u8]) {
        assert_eq!(message.encode_to_vec(), bytes, "{message:?}");
        assert_eq!(M::decode(bytes).unwrap(), message);
    }

    #[test]
    fn cri_container_matches_the_cri_field_numbers() {
        let c = CriContainer {
            id: "c1".into(),
            pod_sandbox_id: "p1".into(),
            metadata: Some(ContainerMetadata { name: "web".into() }),
            image: Some(ImageSpec {
                image: "busybox".into(),
            }),
            image_ref: "sha256:ab".into(),
            labels: [("tier".to_string(), "front".to_string())].into(),
        };
        let bytes = [
            len_field(1, b"c1"),
            len_field(2, b"p1"),
            len_field(3, &len_field(1, b"web")),
            len_field(4, &len_field(1, b"busybox")),
            len_field(5, b"sha256:ab"),
            string_map_entry(8, "tier", "front"),
        ]
        .concat();
        round_trip(
            ListContainersResponse {
                containers: vec![c],
            },
            &len_field(1, &bytes),
        );
        let request = ListContainersRequest {
            filter: Some(ContainerFilter { id: "c1".into() }),
        };
        round_trip(request, &len_field(1, &len_field(1, b"c1")));
    }

    #[test]
    fn pod_sandbox_status_matches_the_cri_field_numbers() {
        let metadata = PodSandboxMetadata {
            name: "web-0".into(),
            uid: "u1".into(),
            namespace: "shop".into(),
        };
        let status = PodSandboxStatus {
            metadata: Some(metadata),
            labels: [("app".to_string(), "a".to_string())].into(),
        };
        let meta_bytes = [
            len_field(1, b"web-0"),
            len_field(2, b"u1"),
            len_field(3, b"shop"),
        ]
        .concat();
        let status_bytes = [len_field(2, &meta_bytes), string_map_entry(7, "app", "a")].concat();
        let response = PodSandboxStatusResponse {
            status: Some(status),
        };
        round_trip(response, &len_field(1, &status_bytes));
        let version = CriVersion {
            runtime_name: "containerd".into(),
            runtime_version: "v2".into(),
        };
        round_trip(
            version,
            &[len_field(2, b"containerd"), len_field(3, b"v2")].concat(),
        );
    }

    #[test]
    fn containerd_messages_match_containerd_field_numbers() {
        let c = ContainerdContainer {
            id: "c1".into(),
            labels: [("k".to_string(), "v".to_string())].into(),
            image: "busybox".into(),
        };
        let bytes = [
            len_field(1, b"c1"),
            string_map_entry(2, "k", "v"),
            len_field(3, b"busybox"),
        ]
        .concat();
        let response = GetContainerResponse { container: Some(c) };
        round_trip(response, &len_field(1, &bytes));
        let namespaces = ListNamespacesResponse {
            namespaces: vec![Namespace {
                name: "k8s.io".into(),
            }],
        };
        round_trip(namespaces, &len_field(1, &len_field(1, b"k8s.io")));
    }

    #[test]
    fn fields_osprey_does_not_read_are_skipped() {
        // A containerd Container with a snapshot key (7) and a sandbox (11), unread.
        let bytes = [
            len_field(1, b"c1"),
            len_field(7, b"key"),
            len_field(11, b"sb"),
        ]
        .concat();
        let c = ContainerdContainer::decode(bytes.as_slice()).unwrap();
        assert_eq!(c.id, "c1");
    }
}
