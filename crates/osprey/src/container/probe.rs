//! `osprey check`: which container runtimes are on this host and whether Osprey reaches
//! them for metadata (a runtime found but not reached still gives container ids).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::grpc;
use super::grpc_messages::{
    ContainerdVersion, CriVersion, CriVersionRequest, CONTAINERD_VERSION, CRI_VERSION,
};
use super::metadata::Sources;

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeProbe {
    pub runtime: &'static str,
    pub endpoint: String,
    /// The socket or state directory exists.
    pub found: bool,
    /// It answered: metadata (names, images, labels) will be on events.
    pub reached: bool,
    pub detail: String,
}

pub fn probe(sources: &Sources) -> Vec<RuntimeProbe> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let api = |name: &'static str, socket: &Path| {
        let found = socket.exists();
        let answer = match (&runtime, found) {
            (Ok(rt), true) => rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    super::runtimes::get(socket, "/version"),
                )
                .await
                .map_err(|_| "no answer within 2 s".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            }),
            (Err(e), true) => Err(e.to_string()),
            (_, false) => Err("no such socket".to_string()),
        };
        let version = |body: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["Version"].as_str().map(|s| format!("version {s}")))
                .unwrap_or_default()
        };
        RuntimeProbe {
            runtime: name,
            endpoint: socket.display().to_string(),
            found,
            reached: matches!(answer, Ok(Some(_))),
            detail: match answer {
                Ok(Some(body)) => version(&body),
                Ok(None) => "no /version".to_string(),
                Err(e) => e,
            },
        }
    };
    let mut out = vec![
        api("docker", &sources.docker_socket),
        api("podman", &sources.podman_socket),
    ];
    let storage = &sources.podman_storage;
    out.push(RuntimeProbe {
        runtime: "podman",
        endpoint: storage.display().to_string(),
        found: storage.exists(),
        reached: std::fs::read_dir(storage).is_ok(),
        detail: "storage state: names and images, no labels".to_string(),
    });
    if let Ok(rt) = &runtime {
        out.push(rt.block_on(grpc_probe("containerd", &sources.containerd_socket, false)));
        for socket in &sources.cri_sockets {
            out.push(rt.block_on(grpc_probe("cri", socket, true)));
        }
    }
    out
}

/// containerd's API (`cri`: false) or a CRI service: its version, or why not.
async fn grpc_probe(runtime: &'static str, socket: &Path, cri: bool) -> RuntimeProbe {
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let channel = grpc::connect(socket).await?;
        let message = |s: tonic::Status| s.message().to_string();
        if cri {
            let v: CriVersion = grpc::call(&channel, CRI_VERSION, CriVersionRequest {})
                .await
                .map_err(message)?;
            Ok(format!("{} {}", v.runtime_name, v.runtime_version))
        } else {
            let v: ContainerdVersion = grpc::call(&channel, CONTAINERD_VERSION, ())
                .await
                .map_err(message)?;
            Ok(format!("version {}", v.version))
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 2 s".to_string()));
    RuntimeProbe {
        runtime,
        endpoint: socket.display().to_string(),
        found: socket.exists(),
        reached: answer.is_ok(),
        detail: answer.unwrap_or_else(|e| e),
    }
}
