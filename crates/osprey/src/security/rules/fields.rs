//! The typed fields rule conditions may use, and how each is read from an enriched event.
//! A field that does not apply to an event (e.g. `file.path` of a kill) makes every
//! comparison on it false.

use std::borrow::Cow;

use crate::pipeline::cache::ProcessContext;
use crate::pipeline::event::{Event, Payload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Str,
    Int,
    Bool,
    /// A list of strings: `contains` tests membership, `in` any overlap.
    StrList,
    /// An IP address compared with networks: `=`, `!=` and `in` test containment in
    /// `a.b.c.d/n` (a bare address is a /32 or /128).
    Net,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Str => "a string",
            Type::Int => "an integer",
            Type::Bool => "a boolean",
            Type::StrList => "a string list",
            Type::Net => "a network (a.b.c.d/n)",
        }
    }
}

/// Every field: name, type, description (for `osprey rules fields` and errors).
pub const FIELDS: &[(&str, Type, &str)] = &[
    ("evt.kind", Type::Str, "open, exec, setid, capset, ptrace, module, bpf, chmod, chown, unlink, rename, truncate, link, symlink, memfd, connect, bind, listen, setns, unshare, mount, umount, kill, xattr, socket, process_vm"),
    ("evt.syscall", Type::Str, "syscall name (openat, execve, setresuid, ...)"),
    ("evt.ret", Type::Int, "syscall result (fd, 0, or -errno)"),
    ("evt.failed", Type::Bool, "the syscall returned an error"),
    ("proc.name", Type::Str, "command name (comm)"),
    ("proc.exe", Type::Str, "executable path"),
    ("proc.pid", Type::Int, "process id"),
    ("proc.ppid", Type::Int, "parent process id"),
    ("proc.uid", Type::Int, "real uid (after the syscall)"),
    ("proc.gid", Type::Int, "real gid"),
    ("proc.pname", Type::Str, "parent's command name"),
    ("proc.pexe", Type::Str, "parent's executable path"),
    ("proc.anames", Type::StrList, "command names of all ancestors"),
    ("proc.aexes", Type::StrList, "executable paths of all ancestors"),
    ("container.id", Type::Str, "container id, first 12 digits (`host` outside containers)"),
    ("container.full_id", Type::Str, "container id, all 64 digits (`host` outside containers)"),
    ("container.name", Type::Str, "container name (`host` outside containers)"),
    ("container.image", Type::Str, "image the container was created from (repo:tag); empty for host processes"),
    ("container.image.repository", Type::Str, "image without its tag or digest; empty for host processes"),
    ("k8s.pod.name", Type::Str, "Kubernetes pod name"),
    ("k8s.ns.name", Type::Str, "Kubernetes namespace"),
    ("file.path", Type::Str, "absolute path (open, exec, chmod, chown, unlink, rename source, truncate, link, symlink, mount target)"),
    ("file.name", Type::Str, "last component of file.path"),
    ("file.newpath", Type::Str, "rename/link target, symlink contents, mount source"),
    ("file.flags", Type::Int, "open flags"),
    ("file.write", Type::Bool, "opened for writing, truncation or creation"),
    ("file.mode", Type::Int, "mode of chmod, or of a created file"),
    ("file.trunc", Type::Bool, "opened with O_TRUNC"),
    ("file.suid", Type::Bool, "chmod sets the setuid or setgid bit"),
    ("exec.args", Type::Str, "argv joined by spaces"),
    ("exec.stdin_socket", Type::Bool, "fd 0 was a socket at exec"),
    ("exec.stdout_socket", Type::Bool, "fd 1 was a socket at exec"),
    ("setid.old_uid", Type::Int, "real uid before a setid-family call (absent when unknown)"),
    ("setid.old_euid", Type::Int, "effective uid before a setid-family call (absent when unknown)"),
    ("setid.to_root", Type::Bool, "a setid-family call asks for id 0"),
    ("chown.uid", Type::Int, "uid argument of chown (-1: unchanged)"),
    ("chown.gid", Type::Int, "gid argument of chown (-1: unchanged)"),
    ("ptrace.request", Type::Int, "ptrace request (16 PTRACE_ATTACH, 0x4206 PTRACE_SEIZE, ...)"),
    ("target.pid", Type::Int, "target of ptrace, kill, process_vm_readv/writev; PID of an open of /proc/PID/mem or of a mount over /proc/PID"),
    ("kill.signal", Type::Int, "signal of kill/tkill/tgkill"),
    ("bpf.cmd", Type::Int, "bpf() command (0 MAP_CREATE, 5 PROG_LOAD, ...)"),
    ("ns.flags", Type::Int, "CLONE_NEW* flags of setns/unshare"),
    ("net.addr", Type::Str, "connect/bind address (ip:port or unix path)"),
    ("net.port", Type::Int, "connect/bind port"),
    ("net.family", Type::Str, "inet, inet6, unix"),
    ("net.ip", Type::Str, "connect/bind IP address"),
    ("proc.cmdline", Type::Str, "argv joined by spaces: of this exec, else of the process's last exec"),
    ("proc.args", Type::Str, "proc.cmdline without argv[0]"),
    ("proc.pcmdline", Type::Str, "parent's command line"),
    ("proc.aname[2]", Type::Str, "grandparent's command name"),
    ("proc.aname[3]", Type::Str, "command name of the 3rd ancestor"),
    ("proc.aname[4]", Type::Str, "command name of the 4th ancestor"),
    ("proc.aname[5]", Type::Str, "command name of the 5th ancestor"),
    ("proc.aname[6]", Type::Str, "command name of the 6th ancestor"),
    ("proc.aname[7]", Type::Str, "command name of the 7th ancestor"),
    ("user.name", Type::Str, "name of proc.uid in the passwd database"),
    ("file.directory", Type::Str, "directory of file.path"),
    ("file.create", Type::Bool, "opened with O_CREAT"),
    ("file.read", Type::Bool, "opened for reading"),
    ("file.target", Type::Str, "path a file is created at: an O_CREAT open's path, a rename/link/symlink target"),
    ("file.typechar", Type::Str, "f (file open), 4 / 6 (inet socket), u (unix socket)"),
    ("evt.dir", Type::Str, "`<`: every event is seen at syscall exit"),
    ("evt.res", Type::Str, "SUCCESS, or the error's name (ENOENT, EPERM, ...)"),
    ("evt.num", Type::Int, "the event's boot-time timestamp in ns (never 0)"),
    ("file.flagnames", Type::Str, "open flags by name: O_WRONLY|O_CREAT|O_TRUNC ..."),
    ("ptrace.request_name", Type::Str, "ptrace request by name: PTRACE_ATTACH, PTRACE_POKETEXT, ..."),
    ("proc.is_exe_from_memfd", Type::Bool, "the executable is a memfd (exe path /memfd:..., or /dev/fd/N with the name memfd:...)"),
    ("proc.is_exe_upper_layer", Type::Bool, "the executable is on a container's overlay upper (writable) layer, not from its image; false for host processes (read from /proc when asked)"),
    ("proc.tty", Type::Int, "controlling terminal number, 0 for none (read from /proc when asked: absent once the process has exited)"),
    ("proc.cwd", Type::Str, "working directory with a trailing / (read from /proc when asked)"),
    ("proc.duration", Type::Int, "ns since the process started (read from /proc when asked)"),
    ("proc.cap_effective", Type::Str, "effective capabilities by name, space separated (read from /proc when asked)"),
    ("proc.cap_permitted", Type::Str, "permitted capabilities by name (read from /proc when asked)"),
    ("user.loginuid", Type::Int, "audit login uid, -1 when unset (read from /proc when asked)"),
    ("file.raw_path", Type::Str, "the path as the syscall was given it (relative, or with `..`): open and path syscalls"),
    ("container.privileged", Type::Bool, "privileged container (every capability of the host's bounding set, no seccomp filter; read from /proc when asked); false for host processes"),
    ("fs.path.target", Type::Str, "the path the event changes: an open for writing's path, a rename/link destination, a symlink's new name, a truncated, chmod-ed or chown-ed file"),
    ("exec.dropped", Type::Bool, "the executed file was written or made executable in /tmp, /var/tmp or /dev/shm by something other than a toolchain, or downloaded there"),
    ("exec.dropper", Type::Str, "command name of the process that dropped the executed file"),
    ("exec.deleted", Type::Bool, "the executed file was deleted while the program ran (seen in /proc when the exec is processed)"),
    ("exec.drop_how", Type::Str, "written, downloaded (by a process with a network connection) or made executable"),
    ("account.name", Type::Str, "an account a rename or link onto /etc/passwd or /etc/group created or changed"),
    ("account.uid", Type::Int, "that account's uid"),
    ("account.gid", Type::Int, "that account's primary gid"),
    ("account.groups", Type::StrList, "groups the account joined in the change (its primary group when new or changed)"),
    ("account.new", Type::Bool, "the account did not exist before the change"),
    // Event classes of fields_events.rs.
    ("xattr.name", Type::Str, "attribute name of setxattr/removexattr and their l/f/at forms"),
    ("xattr.cap_permitted", Type::Str, "setxattr of security.capability: permitted capabilities by name (cap_setuid cap_net_raw)"),
    ("xattr.cap_effective", Type::Str, "setxattr of security.capability: capabilities effective at exec (the permitted ones with the +e flag, else empty)"),
    ("socket.family", Type::Str, "socket(): address family (AF_INET, AF_PACKET, ...)"),
    ("socket.type", Type::Str, "socket(): SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, ..."),
    ("socket.protocol", Type::Int, "socket(): protocol argument"),
    ("net.l4proto", Type::Str, "tcp, udp, icmp or raw: of socket() (inet families) and of the socket of connect/bind/listen"),
    ("net.connected", Type::Bool, "connect: the call connected (returned 0)"),
    ("net.name_changed", Type::Bool, "connect/bind: the call named the socket's address (true when it succeeded or is in progress)"),
    ("net.ipnet", Type::Net, "connect/bind IP address, compared with networks (= != in: a.b.c.d/n)"),
    ("target.self", Type::Bool, "process_vm_readv/writev or an open of /proc/PID/mem names the caller itself"),
    ("proc.env", Type::Str, "exec: the allow-listed environment variables (NAME=value, space separated)"),
    ("proc.env[LD_PRELOAD]", Type::Str, "exec: value of LD_PRELOAD (absent when unset)"),
    ("proc.env[LD_LIBRARY_PATH]", Type::Str, "exec: value of LD_LIBRARY_PATH"),
    ("proc.env[LD_AUDIT]", Type::Str, "exec: value of LD_AUDIT"),
    ("proc.env[PYTHONPATH]", Type::Str, "exec: value of PYTHONPATH"),
    ("proc.env[PYTHONHOME]", Type::Str, "exec: value of PYTHONHOME"),
    ("proc.env[PYTHONSTARTUP]", Type::Str, "exec: value of PYTHONSTARTUP"),
    ("proc.env[PERL5LIB]", Type::Str, "exec: value of PERL5LIB"),
    ("proc.env[PERL5OPT]", Type::Str, "exec: value of PERL5OPT"),
    ("proc.env[RUBYLIB]", Type::Str, "exec: value of RUBYLIB"),
    ("proc.env[RUBYOPT]", Type::Str, "exec: value of RUBYOPT"),
    ("proc.env[NODE_OPTIONS]", Type::Str, "exec: value of NODE_OPTIONS"),
    ("proc.env[JAVA_TOOL_OPTIONS]", Type::Str, "exec: value of JAVA_TOOL_OPTIONS"),
    ("proc.env[BASH_ENV]", Type::Str, "exec: value of BASH_ENV"),
    ("proc.env[GCONV_PATH]", Type::Str, "exec: value of GCONV_PATH"),
    ("proc.env[GLIBC_TUNABLES]", Type::Str, "exec: value of GLIBC_TUNABLES"),
    ("proc.env[HTTP_PROXY]", Type::Str, "exec: value of HTTP_PROXY"),
    ("proc.env[HTTPS_PROXY]", Type::Str, "exec: value of HTTPS_PROXY"),
    ("proc.env[http_proxy]", Type::Str, "exec: value of http_proxy"),
    ("proc.env[https_proxy]", Type::Str, "exec: value of https_proxy"),
];

/// Index into FIELDS.
pub type FieldId = usize;

pub fn lookup(name: &str) -> Option<(FieldId, Type)> {
    FIELDS
        .iter()
        .position(|f| f.0 == name)
        .map(|i| (i, FIELDS[i].1))
}

pub fn name(id: FieldId) -> &'static str {
    FIELDS[id].0
}

/// The closest known name to `wanted`, if any is close enough to be a likely typo.
pub fn nearest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Str(Cow<'a, [u8]>),
    Int(i64),
    Bool(bool),
    StrList(Vec<&'a [u8]>),
}

/// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
const WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000;

/// An event as rules see it.
pub struct View<'a> {
    pub event: &'a Event,
    pub process: &'a ProcessContext<'a>,
    /// What earlier events say about this one (drops, account changes).
    pub facts: crate::security::facts::FactsView<'a>,
}

fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

impl<'a> View<'a> {
    pub fn kind(&self) -> &'static str {
        match &self.event.payload {
            Payload::FileOpen(_) => "open",
            Payload::Exec(_) => "exec",
            Payload::Fork(_) => "fork",
            Payload::Exit(_) => "exit",
            Payload::Security(s) => s.class(),
            Payload::ProfileUserStack(_) => "user_stack",
            Payload::TcpState(_) => "tcp_state",
            Payload::TcpClose(_) => "tcp_close",
            Payload::Baseline(_) => "baseline",
            Payload::FaultMapping(_) => "fault_mapping",
            Payload::Fim(_) => "fim",
        }
    }

    pub(super) fn path(&self) -> Option<&'a [u8]> {
        match &self.event.payload {
            Payload::FileOpen(f) if !f.abs_path.is_empty() => Some(&f.abs_path),
            Payload::FileOpen(f) => Some(&f.path),
            Payload::Exec(x) if !x.exe.is_empty() => Some(&x.exe),
            Payload::Exec(x) => Some(&x.filename),
            Payload::Security(s) if !s.abs_path.is_empty() => Some(&s.abs_path),
            _ => None,
        }
    }

    pub fn get(&self, id: FieldId) -> Option<Value<'a>> {
        let field = name(id);
        if let Some(value) = self.class_field(field) {
            return value;
        }
        match field.split_once('.').map_or(field, |(family, _)| family) {
            "evt" => self.event_field(field),
            "proc" => self.process_field(field),
            "file" => self.file_field(field),
            "exec" => self.exec_field(field),
            "container" | "k8s" => self
                .container_field(field)
                .or_else(|| self.community_field(field)),
            "user" => self.community_field(field),
            "fs" | "account" => self.facts_field(field),
            _ => self.syscall_field(field),
        }
    }

    pub(super) fn security(&self) -> Option<&'a crate::security::syscall::SecSyscall> {
        match &self.event.payload {
            Payload::Security(s) => Some(s),
            _ => None,
        }
    }

    /// `evt.*`: the event itself.
    fn event_field(&self, field: &str) -> Option<Value<'a>> {
        let str_ = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        let int = |i: i64| Some(Value::Int(i));
        let payload = &self.event.payload;
        match field {
            "evt.kind" => str_(self.kind().as_bytes()),
            "evt.syscall" => match payload {
                Payload::FileOpen(f) => str_(f.syscall().as_bytes()),
                Payload::Exec(_) => str_(b"execve"),
                Payload::Security(s) => str_(s.name().as_bytes()),
                _ => None,
            },
            "evt.ret" => match payload {
                Payload::FileOpen(f) => int(f.ret),
                Payload::Exec(x) => int(x.ret),
                Payload::Security(s) => int(s.ret),
                _ => None,
            },
            "evt.dir" => str_(b"<"),
            "evt.failed" => match payload {
                Payload::FileOpen(f) => Some(Value::Bool(f.ret < 0)),
                Payload::Exec(x) => Some(Value::Bool(x.ret < 0)),
                Payload::Security(s) => Some(Value::Bool(s.ret < 0)),
                _ => None,
            },
            _ => self.community_field(field),
        }
    }

    /// `proc.*`: the process and its ancestry.
    fn process_field(&self, field: &str) -> Option<Value<'a>> {
        let p = self.process;
        let str_ = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        let int = |i: i64| Some(Value::Int(i));
        match field {
            "proc.name" => str_(p.comm),
            "proc.exe" => str_(p.exe),
            "proc.pid" => int(p.pid.into()),
            "proc.ppid" => int(p.ppid.into()),
            "proc.uid" => int(p.uid.into()),
            "proc.gid" => int(p.gid.into()),
            "proc.pname" => p.ancestry.first().and_then(|a| str_(&a.comm)),
            "proc.pexe" => p.ancestry.first().and_then(|a| str_(&a.exe)),
            "proc.anames" => Some(Value::StrList(
                p.ancestry.iter().map(|a| a.comm.as_slice()).collect(),
            )),
            "proc.aexes" => Some(Value::StrList(
                p.ancestry.iter().map(|a| a.exe.as_slice()).collect(),
            )),
            _ => self.community_field(field),
        }
    }

    /// `container.*` and `k8s.*`: the process's container and pod.
    fn container_field(&self, field: &str) -> Option<Value<'a>> {
        let str_ = |b: &'a str| Some(Value::Str(Cow::Borrowed(b.as_bytes())));
        // An unresolved cgroup (gone before it was looked up) counts as the host, as before
        // containers were known.
        let c = self.process.container.unwrap_or(crate::container::host());
        let known = c.known();
        match field {
            "container.id" => str_(c.short_id()),
            "container.full_id" => str_(&c.id),
            "container.name" if c.is_host() => str_(&c.id),
            "container.name" => c.name().and_then(str_),
            "container.image" | "container.image.repository" if c.is_host() => str_(""),
            "container.image" => known.and_then(|m| str_(&m.image)),
            "container.image.repository" => {
                known.and_then(|m| str_(crate::container::metadata::image_repository(&m.image)))
            }
            "k8s.pod.name" => c.pod_name().and_then(str_),
            "k8s.ns.name" => c.pod_namespace().and_then(str_),
            _ => None,
        }
    }

    /// `file.*`: the path and the open's flags and mode.
    fn file_field(&self, field: &str) -> Option<Value<'a>> {
        let str_ = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        let int = |i: i64| Some(Value::Int(i));
        let payload = &self.event.payload;
        let sec = self.security();
        match field {
            "file.path" => self.path().map(|b| Value::Str(Cow::Borrowed(b))),
            "file.name" => self.path().and_then(|b| str_(base_name(b))),
            "file.newpath" => sec
                .filter(|s| !s.path2.is_empty() && s.class() != "xattr")
                .and_then(|s| str_(&s.path2)),
            "file.flags" => match payload {
                Payload::FileOpen(f) => int(f.flags as i64),
                _ => None,
            },
            "file.write" => match payload {
                Payload::FileOpen(f) => Some(Value::Bool(f.flags & WRITE_FLAGS != 0)),
                _ => None,
            },
            "file.mode" => match payload {
                Payload::FileOpen(f) if f.flags & 0o100 != 0 => int(f.mode.into()),
                Payload::Security(s) => s.mode().map(|m| Value::Int(m.into())),
                _ => None,
            },
            "file.trunc" => match payload {
                Payload::FileOpen(f) => Some(Value::Bool(f.flags & 0o1000 != 0)),
                _ => None,
            },
            "file.suid" => sec
                .and_then(|s| s.mode())
                .map(|m| Value::Bool(m & 0o6000 != 0)),
            _ => self.community_field(field),
        }
    }

    /// `exec.*`: an exec's arguments and standard streams.
    fn exec_field(&self, field: &str) -> Option<Value<'a>> {
        let payload = &self.event.payload;
        match field {
            "exec.args" => match payload {
                Payload::Exec(x) => Some(Value::Str(Cow::Owned(x.args.join(&b' ')))),
                _ => None,
            },
            "exec.stdin_socket" => match payload {
                Payload::Exec(x) => Some(Value::Bool(x.stdio_sockets & 1 != 0)),
                _ => None,
            },
            "exec.stdout_socket" => match payload {
                Payload::Exec(x) => Some(Value::Bool(x.stdio_sockets & 2 != 0)),
                _ => None,
            },
            _ => self.facts_field(field),
        }
    }

    /// The security syscalls' own fields (setid, chown, ptrace, kill, bpf, ns, net).
    fn syscall_field(&self, field: &str) -> Option<Value<'a>> {
        let str_ = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        let sec = self.security();
        match field {
            "setid.old_uid" => sec
                .and_then(|s| s.old_ids())
                .map(|(uid, _)| Value::Int(uid.into())),
            "setid.old_euid" => sec
                .and_then(|s| s.old_ids())
                .map(|(_, euid)| Value::Int(euid.into())),
            "setid.to_root" => sec.filter(|s| s.class() == "setid").map(|s| {
                let (r, e, su) = s.requested_ids();
                Value::Bool(r == 0 || e == 0 || su == 0)
            }),
            "chown.uid" => sec.and_then(|s| s.owner()).map(|o| Value::Int(o.0)),
            "chown.gid" => sec.and_then(|s| s.owner()).map(|o| Value::Int(o.1)),
            "ptrace.request" => sec
                .filter(|s| s.name() == "ptrace")
                .map(|s| Value::Int(s.args[0] as i64)),
            "target.pid" => sec.and_then(|s| s.target_pid()).map(Value::Int),
            "kill.signal" => sec.and_then(|s| s.signal()).map(Value::Int),
            "bpf.cmd" => sec
                .filter(|s| s.name() == "bpf")
                .map(|s| Value::Int(s.args[0] as i64)),
            "ns.flags" => sec
                .filter(|s| s.name() == "setns" || s.name() == "unshare")
                .map(|s| {
                    Value::Int(if s.name() == "setns" {
                        s.args[1]
                    } else {
                        s.args[0]
                    } as i64)
                }),
            "net.addr" => sec
                .and_then(|s| s.addr.as_ref())
                .map(|a| Value::Str(Cow::Owned(a.text()))),
            "net.port" => sec
                .and_then(|s| s.addr.as_ref())
                .and_then(|a| a.port())
                .map(|p| Value::Int(p.into())),
            "net.family" => sec
                .and_then(|s| s.addr.as_ref())
                .and_then(|a| str_(a.family().as_bytes())),
            _ => self.community_field(field),
        }
    }
}
