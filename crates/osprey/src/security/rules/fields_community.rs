//! Fields added for community rule sets (Sigma, Falco): command lines, ancestors by
//! depth, user names, created files, socket type and the container of a process.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::pipeline::event::Payload;
use crate::security::syscall::SockAddr;

use super::fields::{Value, View};

const O_CREAT: u64 = 0o100;
const O_ACCMODE: u64 = 0o3;
const O_WRONLY: u64 = 0o1;

/// User names by uid, looked up once per uid.
static USERS: Mutex<Option<HashMap<u32, Option<Vec<u8>>>>> = Mutex::new(None);

/// The passwd database's name for `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<Vec<u8>> {
    let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
    users
        .get_or_insert_with(HashMap::new)
        .entry(uid)
        .or_insert_with(|| lookup_user(uid))
        .clone()
}

fn lookup_user(uid: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the size given; the name is copied out
    // of `buf` before it is dropped.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_bytes().to_vec())
}

fn parent_dir(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b"",
    }
}

impl<'a> View<'a> {
    /// The fields of [`fields_community`](self), or `None` for a field this event lacks.
    pub(super) fn community_field(&self, field: &str) -> Option<Value<'a>> {
        let str_ = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        let p = self.process;
        match field {
            "proc.cmdline" => Some(self.cmdline()),
            "proc.args" => {
                let cmdline = self.cmdline();
                let Value::Str(c) = cmdline else { return None };
                let rest = match c.iter().position(|&b| b == b' ') {
                    Some(i) => c[i + 1..].to_vec(),
                    None => Vec::new(),
                };
                Some(Value::Str(Cow::Owned(rest)))
            }
            "proc.pcmdline" => p.ancestry.first().and_then(|a| str_(&a.cmdline)),
            "user.name" => user_name(p.uid).map(|n| Value::Str(Cow::Owned(n))),
            "container.privileged" | "proc.is_exe_upper_layer" => {
                let c = p.container.unwrap_or(crate::container::host());
                if c.is_host() {
                    return Some(Value::Bool(false));
                }
                let fact = if field == "container.privileged" {
                    super::fields_proc::privileged(&c.id, p.pid)
                } else {
                    super::fields_proc::exe_upper_layer(&c.id, p.pid, p.exe)
                };
                fact.map(Value::Bool)
            }
            // Executed through its descriptor (fexecve), a memfd's exe path is /dev/fd/N and
            // the kernel names the process after the file: `memfd:NAME`.
            "proc.is_exe_from_memfd" => Some(Value::Bool(
                p.exe.starts_with(b"/memfd:")
                    || (p.exe.starts_with(b"/dev/fd/") && p.comm.starts_with(b"memfd:")),
            )),
            "evt.num" => Some(Value::Int(self.event.header.ts_boot_ns.max(1) as i64)),
            "file.flagnames" => match &self.event.payload {
                Payload::FileOpen(f) => Some(Value::Str(Cow::Owned(
                    crate::files::open_flags_text(f.flags).into_bytes(),
                ))),
                _ => None,
            },
            "ptrace.request_name" => self.security().filter(|s| s.name() == "ptrace").map(|s| {
                Value::Str(Cow::Owned(super::fields_proc::ptrace_request_name(
                    s.args[0],
                )))
            }),
            "evt.res" => {
                let ret = match &self.event.payload {
                    Payload::FileOpen(f) => f.ret,
                    Payload::Exec(x) => x.ret,
                    Payload::Security(s) => s.ret,
                    _ => return None,
                };
                let name = if ret >= 0 {
                    "SUCCESS"
                } else {
                    crate::files::errno_name(i32::try_from(-ret).unwrap_or(0))
                };
                str_(name.as_bytes())
            }
            "net.ip" => match self.security().and_then(|s| s.addr.as_ref()) {
                Some(SockAddr::Inet { ip, .. }) => {
                    Some(Value::Str(Cow::Owned(ip.to_string().into_bytes())))
                }
                _ => None,
            },
            _ if field.starts_with("proc.aname[") => {
                let n: usize = field["proc.aname[".len()..field.len() - 1].parse().ok()?;
                p.ancestry
                    .get(n.checked_sub(1)?)
                    .and_then(|a| str_(&a.comm))
            }
            _ if field.starts_with("proc.") || field == "user.loginuid" => {
                super::fields_proc::live(p.pid, self.event.header.ts_boot_ns, field)
            }
            _ => self.created_field(field),
        }
    }

    /// The command line: this exec's argv, else the process's last exec.
    fn cmdline(&self) -> Value<'a> {
        match &self.event.payload {
            Payload::Exec(x) => Value::Str(Cow::Owned(x.args.join(&b' '))),
            _ => Value::Str(Cow::Borrowed(self.process.cmdline)),
        }
    }

    /// Files and sockets: directory, creation, read/write and type.
    fn created_field(&self, field: &str) -> Option<Value<'a>> {
        let payload = &self.event.payload;
        let open_flags = match payload {
            Payload::FileOpen(f) => Some(f.flags),
            _ => None,
        };
        match field {
            "file.directory" => self
                .path()
                .map(|p| Value::Str(Cow::Borrowed(parent_dir(p)))),
            "file.raw_path" => match payload {
                Payload::FileOpen(f) => Some(borrowed(&f.path)),
                Payload::Security(s) if !s.path.is_empty() => Some(borrowed(&s.path)),
                _ => None,
            },
            "file.create" => open_flags.map(|f| Value::Bool(f & O_CREAT != 0)),
            "file.read" => open_flags.map(|f| Value::Bool(f & O_ACCMODE != O_WRONLY)),
            "file.target" => match payload {
                Payload::FileOpen(f) if f.flags & O_CREAT != 0 => self.path().map(borrowed),
                Payload::Security(s) if !s.path2.is_empty() => {
                    matches!(s.class(), "rename" | "link" | "symlink").then(|| borrowed(&s.path2))
                }
                _ => None,
            },
            "file.typechar" => match payload {
                Payload::FileOpen(_) => Some(Value::Str(Cow::Borrowed(b"f"))),
                Payload::Security(s) => match s.addr.as_ref()? {
                    SockAddr::Inet { ip, .. } if ip.is_ipv4() => Some(borrowed(b"4")),
                    SockAddr::Inet { .. } => Some(borrowed(b"6")),
                    SockAddr::Unix(_) => Some(borrowed(b"u")),
                    SockAddr::Other(_) => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
}

fn borrowed(b: &[u8]) -> Value<'_> {
    Value::Str(Cow::Borrowed(b))
}
