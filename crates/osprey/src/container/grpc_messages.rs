//! The few protobuf messages Osprey reads from containerd's API and the Kubernetes CRI v1,
//! written by hand (no protoc at build time). Only the fields Osprey uses are declared;
//! protobuf decoding skips the others. Field numbers and types are those of the public API
//! definitions (`containerd.services.*.v1`, `runtime.v1`).

use std::collections::BTreeMap;

/// containerd `Namespaces/List`.
pub const CONTAINERD_NAMESPACES_LIST: &str = "/containerd.services.namespaces.v1.Namespaces/List";
/// containerd `Containers/Get` (in the namespace of the `containerd-namespace` header).
pub const CONTAINERD_CONTAINERS_GET: &str = "/containerd.services.containers.v1.Containers/Get";
/// containerd `Version/Version` (request: `google.protobuf.Empty`).
pub const CONTAINERD_VERSION: &str = "/containerd.services.version.v1.Version/Version";
/// CRI `RuntimeService/Version`.
pub const CRI_VERSION: &str = "/runtime.v1.RuntimeService/Version";
/// CRI `RuntimeService/ListContainers`.
pub const CRI_LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";
/// CRI `RuntimeService/PodSandboxStatus`.
pub const CRI_POD_SANDBOX_STATUS: &str = "/runtime.v1.RuntimeService/PodSandboxStatus";

/// `containerd.services.namespaces.v1.ListNamespacesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListNamespacesRequest {}

/// `containerd.services.namespaces.v1.ListNamespacesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListNamespacesResponse {
    #[prost(message, repeated, tag = "1")]
    pub namespaces: Vec<Namespace>,
}

/// `containerd.services.namespaces.v1.Namespace`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Namespace {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `containerd.services.containers.v1.GetContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `containerd.services.containers.v1.GetContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub container: Option<ContainerdContainer>,
}

/// `containerd.services.containers.v1.Container`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerdContainer {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    #[prost(string, tag = "3")]
    pub image: String,
}

/// `containerd.services.version.v1.VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerdVersion {
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `runtime.v1.VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriVersionRequest {}

/// `runtime.v1.VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriVersion {
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
}

/// `runtime.v1.ListContainersRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ContainerFilter>,
}

/// `runtime.v1.ContainerFilter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerFilter {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `runtime.v1.ListContainersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<CriContainer>,
}

/// `runtime.v1.Container`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CriContainer {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<ImageSpec>,
    #[prost(string, tag = "5")]
    pub image_ref: String,
    #[prost(btree_map = "string, string", tag = "8")]
    pub labels: BTreeMap<String, String>,
}

/// `runtime.v1.ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `runtime.v1.ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `runtime.v1.PodSandboxStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `runtime.v1.PodSandboxStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
}

/// `runtime.v1.PodSandboxStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(btree_map = "string, string", tag = "7")]
    pub labels: BTreeMap<String, String>,
}

/// `runtime.v1.PodSandboxMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
}
