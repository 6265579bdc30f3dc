//! `deny` on opens and execs through fanotify permission events (FAN_OPEN_PERM,
//! FAN_OPEN_EXEC_PERM) on marks for the rules' literal paths: the open or exec fails with
//! EPERM before it happens. Answered in user space, so any condition can be decided.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::pipeline::cache::{ProcessCache, ProcessContext};
use crate::pipeline::detect::SharedAlerts;
use crate::pipeline::event::{Event, Header, Payload};

use super::detect::{alert_for, FANOTIFY_NOTE};
use super::rules::fields::View;
use super::rules::prefilter::{required_paths, PathPattern};
use super::rules::{Rule, RuleError};

/// Paths to mark for the deny rules on opens and execs: literal files and directories
/// (their direct children).
pub fn deny_marks(rules: &[(usize, &Rule)]) -> Result<Vec<String>, Vec<RuleError>> {
    let mut marks = BTreeSet::new();
    let mut errors = Vec::new();
    for &(_, rule) in rules {
        match required_paths(&rule.condition) {
            Some(p) if !p.is_empty() && p.iter().all(|x| matches!(x, PathPattern::Under(_))) => {
                for x in p {
                    if let PathPattern::Under(path) = x {
                        marks.insert(path);
                    }
                }
            }
            _ => errors.push(rule.error(format!(
                "deny rule `{}` needs literal paths for fanotify to mark (file.path = / in / startswith \"/dir/\" on evt.kind open or exec)",
                rule.name
            ))),
        }
    }
    if errors.is_empty() {
        Ok(marks.into_iter().collect())
    } else {
        Err(errors)
    }
}

/// Answers fanotify permission events on a thread of its own: every event gets an answer
/// (an unanswered one would hang the process that opened the file).
pub struct Fanotify {
    fd: OwnedFd,
    pub marked: Vec<String>,
}

impl Fanotify {
    pub fn new(paths: &[String]) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut marked = Vec::new();
        for path in paths {
            let c = CString::new(path.as_bytes()).map_err(std::io::Error::other)?;
            let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
            let mut mask = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;
            if is_dir {
                mask |= libc::FAN_EVENT_ON_CHILD;
            }
            // SAFETY: valid fanotify fd and path.
            let rc = unsafe {
                libc::fanotify_mark(raw, libc::FAN_MARK_ADD, mask, libc::AT_FDCWD, c.as_ptr())
            };
            if rc < 0 {
                return Err(std::io::Error::new(
                    std::io::Error::last_os_error().kind(),
                    format!(
                        "fanotify mark on {path}: {}",
                        std::io::Error::last_os_error()
                    ),
                ));
            }
            marked.push(path.clone());
        }
        Ok(Self { fd, marked })
    }

    /// Runs forever on a new thread, denying what the `deny` rules match.
    pub fn spawn(self, deny: Vec<Rule>, alerts: SharedAlerts) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut cache = ProcessCache::new(4096, 5_000_000_000);
            let me = std::process::id() as i32;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: valid fd and buffer.
                let n =
                    unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                let mut off = 0usize;
                let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
                while off + meta_len <= n as usize {
                    // SAFETY: bounds checked; read_unaligned copes with alignment.
                    let meta: libc::fanotify_event_metadata =
                        unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                    if meta.event_len == 0 {
                        break;
                    }
                    off += meta.event_len as usize;
                    if meta.fd < 0 {
                        continue;
                    }
                    // SAFETY: the kernel gave us this fd; we close it after answering.
                    let file = unsafe { OwnedFd::from_raw_fd(meta.fd) };
                    let allow = meta.pid == me
                        || !self.decide(&deny, &mut cache, &meta, file.as_raw_fd(), &alerts);
                    let response = libc::fanotify_response {
                        fd: meta.fd,
                        response: if allow {
                            libc::FAN_ALLOW
                        } else {
                            libc::FAN_DENY
                        },
                    };
                    // SAFETY: valid fd and response struct.
                    unsafe {
                        libc::write(
                            self.fd.as_raw_fd(),
                            (&response as *const libc::fanotify_response).cast(),
                            std::mem::size_of_val(&response),
                        )
                    };
                    drop(file);
                }
            }
        })
    }

    /// True when a deny rule matches (and the alert was written).
    fn decide(
        &self,
        deny: &[Rule],
        cache: &mut ProcessCache,
        meta: &libc::fanotify_event_metadata,
        fd: i32,
        alerts: &SharedAlerts,
    ) -> bool {
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.into_os_string().into_encoded_bytes())
            .unwrap_or_default();
        let pid = meta.pid as u32;
        cache.ensure_lineage(pid);
        let entry = cache.get(pid).cloned().unwrap_or_default();
        let exec = meta.mask & libc::FAN_OPEN_EXEC_PERM != 0;
        let mut event = Event {
            header: Header {
                kind: 0,
                ts_boot_ns: crate::kernel::boot_time_ns(),
                pid,
                tid: pid,
                ppid: entry.ppid,
                uid: entry.uid,
                gid: entry.gid,
                cgroup_id: entry.cgroup_id,
                comm: entry.comm.clone(),
            },
            payload: permission_payload(exec, &path, 0),
        };
        let matched = {
            let ctx = cache.context(&event);
            let view = View {
                event: &event,
                process: &ctx,
                facts: Default::default(),
            };
            deny.iter().position(|r| r.matches(&view))
        };
        let Some(i) = matched else {
            return false;
        };
        event.payload = permission_payload(exec, &path, -i64::from(libc::EPERM));
        let ctx: ProcessContext<'_> = cache.context(&event);
        let view = View {
            event: &event,
            process: &ctx,
            facts: Default::default(),
        };
        let alert = alert_for(&deny[i], &view, ("blocked", Some(FANOTIFY_NOTE)));
        let mut w = alerts.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.write(&alert, &event, &ctx);
        let _ = w.flush();
        true
    }
}

fn permission_payload(exec: bool, path: &[u8], ret: i64) -> Payload {
    if exec {
        Payload::Exec(crate::process::Exec {
            ret,
            filename: path.to_vec(),
            args: Vec::new(),
            argc: 0,
            args_truncated: false,
            exe: path.to_vec(),
            ino: 0,
            dev: 0,
            old_tid: 0,
            stdio_sockets: 0,
            env: Vec::new(),
            env_truncated: false,
        })
    } else {
        Payload::FileOpen(crate::files::FileOpen {
            op: crate::abi::open_op::OPENAT,
            ret,
            flags: 0,
            mode: 0,
            resolve: 0,
            dirfd: libc::AT_FDCWD,
            ino: 0,
            dev: 0,
            status: 0,
            path: path.to_vec(),
            abs_path: path.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_rules_need_literal_paths() {
        let marks = |src: &str| {
            let set = super::super::rules::load_for_test("d.yaml", src);
            deny_marks(&set.rules.iter().enumerate().collect::<Vec<_>>())
        };
        let ok = marks("- rule: d\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = open and file.path in (/srv/a, /srv/b)\n");
        assert_eq!(
            ok.unwrap(),
            vec!["/srv/a".to_string(), "/srv/b".to_string()]
        );
        let bad = marks("- rule: d\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = open and proc.name = x\n");
        assert!(bad.is_err());
    }
}
