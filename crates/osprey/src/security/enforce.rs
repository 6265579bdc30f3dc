//! Enforcement, honest about what this kernel allows (off unless `--enforce`).
//!
//! | action | mechanism here | effect |
//! |---|---|---|
//! | `deny` on open/exec | fanotify permission events (FAN_OPEN_PERM, FAN_OPEN_EXEC_PERM) on marks for the rule's literal paths | the open or exec fails with EPERM before it happens |
//! | `deny` on connect | cgroup connect4/connect6 programs on the root cgroup (`connect_deny`) | connect() fails with EPERM before any packet is sent |
//! | `kill` | `bpf_send_signal(SIGKILL)` at syscall exit, from a kernel map of (syscall, comm) | the process dies, but the syscall has completed |
//!
//! Where BPF LSM programs load (not on this kernel: EPERM), `Backend::BpfLsm` is the place
//! to deny any hooked operation before it happens; `backends()` probes and reports it.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::pipeline::cache::{ProcessCache, ProcessContext};
use crate::pipeline::detect::SharedAlerts;
use crate::pipeline::event::{Event, Header, Payload};

use super::detect::alert_for;
use super::rules::fields::View;
use super::rules::prefilter::{required_paths, PathPattern};
use super::rules::{Action, Rule, RuleError, RuleSet};
use super::syscall::{syscall_number, SYSCALLS};

/// Enforcement mechanisms, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// BPF LSM: deny in the kernel before the operation (needs CONFIG_BPF_LSM and
    /// `lsm=bpf`; refused here like fentry).
    BpfLsm,
    /// fanotify permission events: deny opens and execs of marked files.
    Fanotify,
    /// bpf_send_signal at syscall exit: kill after the fact.
    Signal,
}

pub(super) fn rule_error(rule: &Rule, message: String) -> RuleError {
    let mut parts = rule.origin.rsplitn(3, ':');
    let col = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let line = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    RuleError {
        file: parts.next().unwrap_or("").to_string(),
        pos: super::rules::yaml::Pos { line, col },
        message,
    }
}

/// One (syscall number, comm) entry of the kernel's kill map; an empty comm is any process.
pub type KillEntry = (u32, Vec<u8>);

/// Compiles `kill` rules for the kernel. They must be a conjunction of `evt.kind` /
/// `evt.syscall` (security syscalls) and optionally `proc.name` conditions, because the
/// kernel decides alone.
pub fn kill_entries(rules: &RuleSet) -> Result<Vec<KillEntry>, Vec<RuleError>> {
    use super::rules::expr::Literal;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for rule in rules.rules.iter().filter(|r| r.action == Action::Kill) {
        let terms = rule.condition.conjuncts();
        let mut syscalls: Option<BTreeSet<u32>> = None;
        let mut comms: Option<Vec<Vec<u8>>> = None;
        let mut bad = None;
        for t in terms {
            let Some((field, values)) = t.equality() else {
                bad = Some("only `=` and `in` comparisons joined by `and`".to_string());
                break;
            };
            let strings: Vec<&[u8]> = values
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => Some(s.as_slice()),
                    _ => None,
                })
                .collect();
            match field {
                "evt.syscall" | "evt.kind" => {
                    let mut set = BTreeSet::new();
                    for s in strings {
                        let s = String::from_utf8_lossy(s);
                        let nrs: Vec<u32> = if field == "evt.syscall" {
                            syscall_number(&s).into_iter().collect()
                        } else {
                            SYSCALLS.iter().filter(|x| x.2 == s).map(|x| x.0).collect()
                        };
                        if nrs.is_empty() {
                            bad = Some(format!(
                                "`{s}` is not a security syscall the kernel side sees"
                            ));
                        }
                        set.extend(nrs);
                    }
                    syscalls = Some(match syscalls {
                        Some(prev) => prev.intersection(&set).copied().collect(),
                        None => set,
                    });
                }
                "proc.name" => comms = Some(strings.iter().map(|s| s.to_vec()).collect()),
                other => bad = Some(format!("`{other}` cannot be decided in the kernel")),
            }
        }
        let message = match (bad, &syscalls) {
            (Some(b), _) => Some(b),
            (None, None) => Some("it names no `evt.syscall` or `evt.kind`".to_string()),
            _ => None,
        };
        if let Some(m) = message {
            errors.push(rule_error(
                rule,
                format!(
                    "kill rule `{}` must be decidable in the kernel (evt.syscall/evt.kind and proc.name joined by `and`): {m}",
                    rule.name
                ),
            ));
            continue;
        }
        for nr in syscalls.unwrap_or_default() {
            match &comms {
                None => out.push((nr, Vec::new())),
                Some(c) => out.extend(c.iter().map(|comm| (nr, comm.clone()))),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Paths to mark for `deny` rules: literal files and directories (their direct children).
pub fn deny_marks(rules: &RuleSet) -> Result<Vec<String>, Vec<RuleError>> {
    let mut marks = BTreeSet::new();
    let mut errors = Vec::new();
    let file_denies = rules
        .rules
        .iter()
        .filter(|r| r.action == Action::Deny && !super::connect_deny::is_connect_rule(r));
    for rule in file_denies {
        match required_paths(&rule.condition) {
            Some(p) if !p.is_empty() && p.iter().all(|x| matches!(x, PathPattern::Under(_))) => {
                for x in p {
                    if let PathPattern::Under(path) = x {
                        marks.insert(path);
                    }
                }
            }
            _ => errors.push(rule_error(
                rule,
                format!(
                    "deny rule `{}` needs literal paths for fanotify to mark (file.path = / in / startswith \"/dir/\" on evt.kind open or exec)",
                    rule.name
                ),
            )),
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

    /// Runs forever on a new thread, denying what the deny rules match.
    pub fn spawn(self, rules: RuleSet, alerts: SharedAlerts) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let deny: Vec<Rule> = rules
                .rules
                .into_iter()
                .filter(|r| r.action == Action::Deny)
                .collect();
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
        };
        let alert = alert_for(
            &deny[i],
            &view,
            ("blocked", Some("denied before it happened (fanotify)")),
        );
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

    fn rules(src: &str) -> RuleSet {
        super::super::rules::load_for_test("k.yaml", src)
    }

    #[test]
    fn kill_rules_compile_for_the_kernel_or_are_rejected() {
        let ok = rules("- rule: k\n  desc: d\n  severity: high\n  action: kill\n  condition: evt.syscall in (chmod, fchmodat) and proc.name = evil\n");
        assert_eq!(
            kill_entries(&ok).unwrap(),
            vec![(90, b"evil".to_vec()), (268, b"evil".to_vec())]
        );
        let bad = rules("- rule: k\n  desc: d\n  severity: high\n  action: kill\n  condition: evt.kind = ptrace and file.path = /x\n");
        let e = kill_entries(&bad).unwrap_err();
        assert!(e[0].to_string().starts_with("k.yaml:1:9: "), "{}", e[0]);
        assert!(
            e[0].message.contains("`file.path` cannot be decided"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn deny_rules_need_literal_paths() {
        let ok = rules("- rule: d\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = open and file.path in (/srv/a, /srv/b)\n");
        assert_eq!(
            deny_marks(&ok).unwrap(),
            vec!["/srv/a".to_string(), "/srv/b".to_string()]
        );
        let bad = rules("- rule: d\n  desc: d\n  severity: high\n  action: deny\n  condition: evt.kind = open and proc.name = x\n");
        assert!(deny_marks(&bad).is_err());
    }
}
