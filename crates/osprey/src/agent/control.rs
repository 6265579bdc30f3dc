//! Runtime control over a unix socket (root only, mode 0600): one JSON request line, one
//! JSON response line. Used by `osprey ctl`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Modules, their programs and statistics.
    List,
    Enable {
        module: String,
    },
    Disable {
        module: String,
    },
    /// Re-read the configuration file (as SIGHUP does).
    Reload,
}

pub type Response = serde_json::Value;

/// A request with the channel its answer goes back on.
pub type Envelope = (Request, oneshot::Sender<Response>);

/// Binds the socket (replacing a stale one) and serves requests until the agent stops.
pub fn serve(
    path: &Path,
    requests: mpsc::Sender<Envelope>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let _ = handle(stream, requests).await;
            });
        }
    }))
}

async fn handle(stream: UnixStream, requests: mpsc::Sender<Envelope>) -> std::io::Result<()> {
    let root = stream.peer_cred().map(|c| c.uid() == 0).unwrap_or(false);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = if !root {
        serde_json::json!({"ok": false, "error": "only root may control the agent"})
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    serde_json::json!({"ok": false, "error": "agent is stopping"})
                } else {
                    rx.await
                        .unwrap_or_else(|_| serde_json::json!({"ok": false, "error": "no answer"}))
                }
            }
        }
    };
    write.write_all(format!("{response}\n").as_bytes()).await?;
    write.shutdown().await
}

/// Client side: sends one request, returns the response.
pub fn call(socket: &PathBuf, request: &Request) -> std::io::Result<Response> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.write_all(format!("{}\n", serde_json::to_string(request)?).as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}
