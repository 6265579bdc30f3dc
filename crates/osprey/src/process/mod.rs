//! `osprey exec` and the process cache's feed: exec (successful and failed), fork of new
//! processes, and exit with its code or signal.
//!
//! argv: successful execs copy up to 4095 bytes of the new image's argument area; failed
//! execs copy up to 32 arguments of up to 255 bytes each from the caller's argv array.
//! Beyond that `args_truncated` is true and `argc` still tells how many there were.

pub mod env;

use serde::ser::SerializeMap;

use crate::abi::{self, kind, status};
use crate::files::errno_name;
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, Role};
use crate::wire::text::{escape_for_terminal, join_components_leaf_first, write_bytes_field};
use crate::wire::{split_tail, DecodeError};

/// Roles the process cache needs; `exec-failed` is only attached by `osprey exec`.
pub const CACHE_ROLES: &[&str] = &["exec", "fork", "exit"];

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "process",
    object: osprey_bpf::PROCESS,
    roles: &[
        Role {
            name: "exec",
            required: true,
            hooks: &[
                Hook {
                    program: "process_exec_btf",
                    attach: Attach::BtfTracepoint("sched_process_exec"),
                },
                Hook {
                    program: "process_exec_raw",
                    attach: Attach::RawTracepoint("sched_process_exec"),
                },
            ],
        },
        Role {
            name: "fork",
            required: true,
            hooks: &[
                Hook {
                    program: "process_fork_btf",
                    attach: Attach::BtfTracepoint("sched_process_fork"),
                },
                Hook {
                    program: "process_fork_raw",
                    attach: Attach::RawTracepoint("sched_process_fork"),
                },
            ],
        },
        Role {
            name: "exit",
            required: true,
            hooks: &[
                Hook {
                    program: "process_exit_btf",
                    attach: Attach::BtfTracepoint("sched_process_exit"),
                },
                Hook {
                    program: "process_exit_raw",
                    attach: Attach::RawTracepoint("sched_process_exit"),
                },
            ],
        },
        Role {
            name: "exec-failed",
            required: false,
            hooks: crate::sys_exit_hooks!("process_exec_failed", &["execve", "execveat"]),
        },
    ],
    kinds: &[
        (kind::EXEC, "exec"),
        (kind::FORK, "fork"),
        (kind::EXIT, "exit"),
    ],
    default_ring_bytes: 8 << 20,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exec {
    /// 0, or -errno for a failed exec.
    pub ret: i64,
    pub filename: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub argc: u32,
    pub args_truncated: bool,
    /// Absolute path of the executable file (successful execs).
    pub exe: Vec<u8>,
    pub ino: u64,
    pub dev: u32,
    pub old_tid: u32,
    /// Bit i: fd i (0, 1, 2) was a socket at exec.
    pub stdio_sockets: u16,
    /// Allow-listed environment variables (`NAME=value`), when a rule asked for them.
    pub env: Vec<Vec<u8>>,
    /// The environment was not scanned to its end (too many or too long variables).
    pub env_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub child_pid: u32,
    pub child_start_boot_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub start_boot_ns: u64,
    /// Wait status as the parent would see it.
    pub status: u32,
}

fn fixed<T: abi::Plain>(bytes: &[u8], kind: &'static str) -> Result<T, DecodeError> {
    abi::read(bytes).ok_or(DecodeError::Malformed {
        kind,
        len: bytes.len(),
        why: "short",
    })
}

pub fn decode_exec(bytes: &[u8]) -> Result<Exec, DecodeError> {
    let raw: abi::Exec = fixed(bytes, "exec")?;
    let [filename, _nul, args, exe, env] = split_tail(
        bytes,
        std::mem::size_of::<abi::Exec>(),
        [
            raw.filename_len as usize,
            1,
            raw.args_len as usize,
            raw.exe_len as usize,
            raw.env_len as usize,
        ],
        "exec",
    )?;
    let mut args: Vec<Vec<u8>> = args
        .strip_suffix(&[0])
        .unwrap_or(args)
        .split(|&b| b == 0)
        .map(<[u8]>::to_vec)
        .collect();
    if args.len() == 1 && args[0].is_empty() {
        args.clear();
    }
    Ok(Exec {
        ret: raw.ret,
        filename: filename.to_vec(),
        args,
        argc: raw.argc,
        args_truncated: raw.status & status::ARGS_TRUNCATED != 0,
        exe: if raw.exe_depth > 0 {
            join_components_leaf_first(exe)
        } else {
            Vec::new()
        },
        ino: raw.ino,
        dev: raw.dev,
        old_tid: raw.old_tid,
        stdio_sockets: raw.stdio_sockets,
        env: env::allowed(env),
        env_truncated: raw.status & status::ENV_TRUNCATED != 0,
    })
}

pub fn decode_fork(bytes: &[u8]) -> Result<Fork, DecodeError> {
    let raw: abi::Fork = fixed(bytes, "fork")?;
    Ok(Fork {
        child_pid: raw.child_pid,
        child_start_boot_ns: raw.child_start_boot_ns,
    })
}

pub fn decode_exit(bytes: &[u8]) -> Result<Exit, DecodeError> {
    let raw: abi::Exit = fixed(bytes, "exit")?;
    Ok(Exit {
        start_boot_ns: raw.start_boot_ns,
        status: raw.exit_code,
    })
}

impl Exec {
    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("ret", &self.ret)?;
        if self.ret < 0 {
            map.serialize_entry("error", errno_name((-self.ret) as i32))?;
        }
        write_bytes_field(map, "filename", "filename_b64", &self.filename)?;
        if !self.exe.is_empty() {
            write_bytes_field(map, "exe", "exe_b64", &self.exe)?;
        }
        map.serialize_entry("argc", &self.argc)?;
        map.serialize_entry("argv", &JsonArgs(&self.args))?;
        map.serialize_entry("args_truncated", &self.args_truncated)?;
        let sockets: Vec<u8> = (0..3)
            .filter(|i| self.stdio_sockets & (1 << i) != 0)
            .collect();
        map.serialize_entry("stdio_sockets", &sockets)?;
        if !self.env.is_empty() {
            map.serialize_entry("env", &JsonArgs(&self.env))?;
        }
        if self.env_truncated {
            map.serialize_entry("env_truncated", &true)?;
        }
        Ok(())
    }

    pub fn table_details(&self) -> String {
        let mut out = String::new();
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&crate::wire::text::quote_arg_for_terminal(a));
        }
        if self.args.is_empty() {
            out.push_str(&escape_for_terminal(&self.filename));
        }
        if self.args_truncated {
            out.push_str(" ...");
        }
        out
    }
}

/// argv as a JSON array; an argument that is not UTF-8 becomes {"b64": "..."}.
struct JsonArgs<'a>(&'a [Vec<u8>]);

impl serde::Serialize for JsonArgs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for arg in self.0 {
            match std::str::from_utf8(arg) {
                Ok(text) => seq.serialize_element(text)?,
                Err(_) => {
                    let (text, b64) = crate::wire::text::json_text(arg);
                    let mut m = std::collections::BTreeMap::new();
                    m.insert("text", text.into_owned());
                    m.insert("b64", b64.unwrap_or_default());
                    seq.serialize_element(&m)?
                }
            }
        }
        seq.end()
    }
}

impl Fork {
    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("child_pid", &self.child_pid)
    }
}

impl Exit {
    /// (exit code, terminating signal, core dumped)
    pub fn decoded(&self) -> (Option<u32>, Option<u32>, bool) {
        let signal = self.status & 0x7f;
        if signal == 0 {
            (Some((self.status >> 8) & 0xff), None, false)
        } else {
            (None, Some(signal), self.status & 0x80 != 0)
        }
    }

    pub fn lifetime_ns(&self, exit_boot_ns: u64) -> u64 {
        exit_boot_ns.saturating_sub(self.start_boot_ns)
    }

    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let (code, signal, core) = self.decoded();
        map.serialize_entry("exit_code", &code)?;
        map.serialize_entry("signal", &signal)?;
        map.serialize_entry("signal_name", &signal.map(signal_name))?;
        map.serialize_entry("core_dumped", &core)
    }

    pub fn table_details(&self, exit_boot_ns: u64) -> String {
        let lifetime = self.lifetime_ns(exit_boot_ns) as f64 / 1e9;
        match self.decoded() {
            (Some(code), _, _) => format!("code={code} lifetime={lifetime:.3}s"),
            (_, Some(sig), core) => format!(
                "signal={}{} lifetime={lifetime:.3}s",
                signal_name(sig),
                if core { " (core dumped)" } else { "" }
            ),
            _ => String::new(),
        }
    }
}

/// The process (thread group) a task id belongs to, from /proc/ID/status; `None` if
/// there is no such task.
pub fn thread_group_of(id: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn signal_name(sig: u32) -> &'static str {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(sig as usize).copied().unwrap_or("SIGRT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_belongs_to_its_process() {
        let me = std::process::id();
        assert_eq!(thread_group_of(me), Some(me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(thread_group_of(tid), Some(me));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(thread_group_of(u32::MAX), None);
    }

    #[test]
    fn exit_status_decodes_code_and_signal() {
        let code = Exit {
            start_boot_ns: 0,
            status: 3 << 8,
        };
        assert_eq!(code.decoded(), (Some(3), None, false));
        let killed = Exit {
            start_boot_ns: 0,
            status: 9,
        };
        assert_eq!(killed.decoded(), (None, Some(9), false));
        assert_eq!(signal_name(9), "SIGKILL");
    }
}
