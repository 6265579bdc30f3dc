//! The lookup thread: asks runtimes about containers one at a time, off the event path,
//! each question bounded by a timeout, and sends the answers back to the registry.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::grpc;
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

/// How often the thread sends a tick while idle: when the registry looks at what is due
/// (so the event path reads no clock).
pub const TICK: Duration = Duration::from_secs(1);

impl Update {
    /// Not an answer: time to look at the containers due (an empty id).
    pub fn tick() -> Self {
        Self {
            id: String::new(),
            state: MetadataState::Pending,
        }
    }

    pub fn is_tick(&self) -> bool {
        self.id.is_empty()
    }
}

/// The sending side of the lookup thread's updates: every update sent also raises `unread`,
/// which the registry loads (one plain read) before it touches the channel, so the event path
/// pays for the channel only when something waits in it.
pub struct Updates {
    sender: Sender<Update>,
    unread: Arc<AtomicBool>,
}

impl Updates {
    pub fn new(sender: Sender<Update>, unread: Arc<AtomicBool>) -> Self {
        Self { sender, unread }
    }

    pub fn send(&self, update: Update) -> Result<(), mpsc::SendError<Update>> {
        self.sender.send(update)?;
        self.unread.store(true, Ordering::Release);
        Ok(())
    }
}

/// Starts the lookup thread; it ends when the request side is dropped.
/// `tick_in_flight`: set by the thread when it sends a tick, cleared by the registry when it
/// takes it, so that a registry left without events never has more than one queued.
/// `unread`: see `Updates`.
pub fn spawn(
    sources: Sources,
    tick_in_flight: Arc<AtomicBool>,
    unread: Arc<AtomicBool>,
) -> (Sender<Request>, Receiver<Update>) {
    let (requests, to_thread) = mpsc::channel();
    let (from_thread, updates) = mpsc::channel();
    let from_thread = Updates::new(from_thread, unread);
    let started = std::thread::Builder::new()
        .name("osprey-containers".into())
        .spawn(move || serve(sources, to_thread, from_thread, tick_in_flight));
    if let Err(e) = started {
        eprintln!("osprey: warning: container metadata lookups unavailable: {e}");
    }
    (requests, updates)
}

fn serve(
    sources: Sources,
    requests: Receiver<Request>,
    updates: Updates,
    tick_in_flight: Arc<AtomicBool>,
) {
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
    loop {
        let request = match requests.recv_timeout(TICK) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let queued = tick_in_flight.swap(true, Ordering::AcqRel);
                if !queued && updates.send(Update::tick()).is_err() {
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
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

/// One place a runtime may answer, and the runtime it speaks for.
enum Ask {
    /// The Docker Engine API (docker, podman's service).
    Engine(PathBuf, Runtime),
    /// A CRI service (containerd's CRI plugin, CRI-O).
    Cri(PathBuf),
    /// containerd's own API.
    Containerd(PathBuf),
}

impl Ask {
    fn socket(&self) -> &Path {
        match self {
            Ask::Engine(s, _) | Ask::Cri(s) | Ask::Containerd(s) => s,
        }
    }

    fn runtime(&self) -> Runtime {
        match self {
            Ask::Engine(_, r) => *r,
            Ask::Cri(s) if s.to_string_lossy().contains("crio") => Runtime::CriO,
            Ask::Cri(_) | Ask::Containerd(_) => Runtime::Containerd,
        }
    }

    async fn ask(&self, id: &str) -> Result<Option<Metadata>, String> {
        let socket = self.socket();
        let answer = async {
            match self {
                Ask::Engine(s, _) => inspect(s, id).await,
                Ask::Cri(s) => grpc::cri(s, id).await,
                Ask::Containerd(s) => grpc::containerd(s, id).await,
            }
        };
        tokio::time::timeout(TIMEOUT, answer)
            .await
            .map_err(|_| format!("{}: no answer within {TIMEOUT:?}", socket.display()))?
    }
}

/// Where to ask about a container the cgroup path says `runtime` owns, most likely first:
/// the CRI before containerd's API, so containers of pods get their pod.
fn plan(sources: &Sources, runtime: Runtime) -> Vec<Ask> {
    let cri = sources.cri_sockets.iter().map(|s| Ask::Cri(s.clone()));
    let containerd = Ask::Containerd(sources.containerd_socket.clone());
    let docker = Ask::Engine(sources.docker_socket.clone(), Runtime::Docker);
    match runtime {
        Runtime::Docker => vec![docker],
        Runtime::Podman => vec![Ask::Engine(sources.podman_socket.clone(), Runtime::Podman)],
        Runtime::Containerd => cri.chain([containerd]).collect(),
        Runtime::CriO => cri.collect(),
        Runtime::Cri => cri.chain([containerd, docker]).collect(),
    }
}

/// Asks the runtimes that may own the container, most likely first.
async fn lookup(sources: &Sources, request: &Request) -> Result<Metadata, String> {
    let mut errors = Vec::new();
    for ask in plan(sources, request.runtime) {
        match ask.ask(&request.id).await {
            Ok(Some(mut m)) => {
                m.runtime = Some(ask.runtime());
                return Ok(m);
            }
            Ok(None) => errors.push(format!("{} does not know it", ask.socket().display())),
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
    Err(errors.join("; "))
}

/// `GET /containers/{id}/json` of the Docker Engine API; `None` when the runtime does not
/// know the container.
async fn inspect(socket: &Path, id: &str) -> Result<Option<Metadata>, String> {
    let path = format!("/containers/{id}/json");
    let answer = get(socket, &path)
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Sources {
        Sources {
            docker_socket: "/d.sock".into(),
            podman_socket: "/p.sock".into(),
            podman_storage: "/storage".into(),
            containerd_socket: "/c.sock".into(),
            cri_sockets: vec!["/c.sock".into(), "/var/run/crio/crio.sock".into()],
        }
    }

    /// Each ask as `kind socket -> runtime`.
    fn asks(runtime: Runtime) -> Vec<String> {
        plan(&sources(), runtime)
            .iter()
            .map(|a| {
                let kind = match a {
                    Ask::Engine(..) => "engine",
                    Ask::Cri(_) => "cri",
                    Ask::Containerd(_) => "containerd",
                };
                format!("{kind} {} -> {}", a.socket().display(), a.runtime().name())
            })
            .collect()
    }

    #[test]
    fn pods_are_asked_of_the_cri_before_containerd_and_docker() {
        assert_eq!(asks(Runtime::Docker), ["engine /d.sock -> docker"]);
        assert_eq!(asks(Runtime::Podman), ["engine /p.sock -> podman"]);
        assert_eq!(
            asks(Runtime::Containerd),
            [
                "cri /c.sock -> containerd",
                "cri /var/run/crio/crio.sock -> cri-o",
                "containerd /c.sock -> containerd"
            ]
        );
        assert_eq!(
            asks(Runtime::CriO),
            [
                "cri /c.sock -> containerd",
                "cri /var/run/crio/crio.sock -> cri-o"
            ]
        );
        assert_eq!(
            asks(Runtime::Cri),
            [
                "cri /c.sock -> containerd",
                "cri /var/run/crio/crio.sock -> cri-o",
                "containerd /c.sock -> containerd",
                "engine /d.sock -> docker"
            ]
        );
    }
}
