//! One agent per state directory and control socket. Before an agent touches anything
//! (programs, `fim.json`, the log, the socket) it takes an exclusive lock on
//! `<state_dir>/agent.lock` (which then holds its pid) and makes sure no live agent answers
//! on its control socket. A socket left by an agent that was killed is stale: nobody
//! accepts on it, and the new agent replaces it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{io_err, AgentError};

/// Held for the agent's lifetime; the kernel drops the lock when the process ends.
pub struct Instance {
    _lock: File,
    path: PathBuf,
}

impl Instance {
    /// Claims `state_dir` and `control_socket` for this process, or says which live agent
    /// holds them (an [`AgentError::Invalid`]: the command exits 2).
    pub fn claim(state_dir: &Path, control_socket: &Path) -> Result<Self, AgentError> {
        if let Some(why) = crate::state_dir::file_in_the_way(state_dir) {
            return Err(AgentError::Invalid(why));
        }
        std::fs::create_dir_all(state_dir)
            .map_err(|e| AgentError::Invalid(crate::state_dir::explain(state_dir, &e)))?;
        let path = state_dir.join("agent.lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(format!("lock file {}", path.display())))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            return Err(AgentError::Invalid(format!(
                "another osprey agent (pid {}) is running with state directory {}; stop it first",
                pid.trim(),
                state_dir.display()
            )));
        }
        if let Some(pid) = live_peer(control_socket) {
            return Err(AgentError::Invalid(format!(
                "another osprey agent (pid {pid}) answers on control socket {}; stop it first",
                control_socket.display()
            )));
        }
        let write_pid = |lock: &mut File| -> std::io::Result<()> {
            lock.set_len(0)?;
            lock.rewind()?;
            writeln!(lock, "{}", std::process::id())
        };
        write_pid(&mut lock).map_err(io_err(format!("lock file {}", path.display())))?;
        Ok(Self { _lock: lock, path })
    }

    /// The lock file (it holds the pid of the agent that owns the state directory).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of a process accepting on `socket`, if one does (0 when the kernel cannot say).
/// A socket file nobody accepts on (ECONNREFUSED) is stale: `None`.
fn live_peer(socket: &Path) -> Option<u32> {
    let stream = UnixStream::connect(socket).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the given length on a connected unix socket.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    Some(if rc == 0 { cred.pid as u32 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("osprey-inst-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_claim_on_the_state_dir_names_the_holder() {
        let dir = scratch("lock");
        let sock = dir.join("ctl.sock");
        let first = Instance::claim(&dir, &sock).unwrap();
        let held = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(held.trim(), std::process::id().to_string());
        let err = Instance::claim(&dir, &sock)
            .err()
            .expect("second claim refused");
        assert!(matches!(err, AgentError::Invalid(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        Instance::claim(&dir, &sock).expect("free again once released");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_socket_that_answers_is_refused_and_a_stale_one_is_not() {
        let dir = scratch("sock");
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ctl.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = Instance::claim(&dir.join("a"), &sock)
            .err()
            .expect("live socket");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // Closed listener, file left behind: stale.
        drop(listener);
        assert!(sock.exists());
        Instance::claim(&dir.join("b"), &sock).expect("stale socket is no obstacle");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
