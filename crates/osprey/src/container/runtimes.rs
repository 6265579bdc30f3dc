//! The lookup thread: asks runtimes about containers one at a time, off the event path,
//! each question bounded by a timeout, and sends the answers back to the registry.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::metadata::{from_inspect, from_podman_storage, Metadata, Sources};
use super::{MetadataState, Runtime};

/// Longest wait for one runtime's answer: a hung socket delays only later lookups.
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct Request {
    pub id: String,
    pub runtime: Runtime,
}

pub struct Update {
    pub id: String,
    pub state: MetadataState,
}

/// Starts the lookup thread; it ends when the request side is dropped.
pub fn spawn(sources: Sources) -> (Sender<Request>, Receiver<Update>) {
    let (requests, to_thread) = mpsc::channel();
    let (from_thread, updates) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name("osprey-containers".into())
        .spawn(move || serve(sources, to_thread, from_thread));
    if let Err(e) = started {
        eprintln!("osprey: warning: container metadata lookups unavailable: {e}");
    }
    (requests, updates)
}

fn serve(sources: Sources, requests: Receiver<Request>, updates: Sender<Update>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("osprey: warning: container metadata lookups unavailable: {e}");
            return;
        }
    };
    let mut warned = HashSet::new();
    while let Ok(request) = requests.recv() {
        let state = match runtime.block_on(lookup(&sources, &request)) {
            Ok(m) => MetadataState::Known(Arc::new(m)),
            Err(why) => {
                if warned.insert(why.clone()) {
                    eprintln!(
                        "osprey: note: container {}: {why}; events carry its id alone",
                        &request.id[..12.min(request.id.len())]
                    );
                }
                MetadataState::Unavailable(why.into())
            }
        };
        let update = Update {
            id: request.id,
            state,
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}

/// Asks the runtimes that may own the container, most likely first.
async fn lookup(sources: &Sources, request: &Request) -> Result<Metadata, String> {
    let mut errors = Vec::new();
    let sockets: &[(&PathBuf, Runtime)] = match request.runtime {
        Runtime::Docker | Runtime::Cri => &[(&sources.docker_socket, Runtime::Docker)],
        Runtime::Podman => &[(&sources.podman_socket, Runtime::Podman)],
        Runtime::Containerd | Runtime::CriO => &[],
    };
    for (socket, runtime) in sockets {
        match inspect(socket, &request.id).await {
            Ok(Some(mut m)) => {
                m.runtime = Some(*runtime);
                return Ok(m);
            }
            Ok(None) => errors.push(format!("{} does not know it", socket.display())),
            Err(e) => errors.push(e),
        }
    }
    if request.runtime == Runtime::Podman {
        match from_podman_storage(&sources.podman_storage, &request.id) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => errors.push(format!(
                "not in podman's state under {}",
                sources.podman_storage.display()
            )),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        errors.push(format!(
            "no {} client in this build",
            request.runtime.name()
        ));
    }
    Err(errors.join("; "))
}

/// `GET /containers/{id}/json` of the Docker Engine API; `None` when the runtime does not
/// know the container.
async fn inspect(socket: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let path = format!("/containers/{id}/json");
    let answer = tokio::time::timeout(TIMEOUT, get(socket, &path))
        .await
        .map_err(|_| format!("{}: no answer within {TIMEOUT:?}", socket.display()))?
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    match answer {
        None => Ok(None),
        Some(body) => from_inspect(&body).map(Some),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/1.1 GET over a Unix socket: the body on success, `None` on 404.
pub(super) async fn get(socket: &Path, path: &str) -> Result<Option<Vec<u8>>, BoxError> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(format!(
            "{path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )
        .into());
    }
    Ok(Some(body.to_vec()))
}
