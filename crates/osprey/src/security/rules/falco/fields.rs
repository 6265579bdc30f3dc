//! Falco's field names on Osprey's events: the fields Osprey provides under another name,
//! and for the rest, why Osprey cannot provide them.

use super::super::expr::FieldRef;
use super::super::fields;

/// Falco field → Osprey field.
const SAME_AS: &[(&str, &str)] = &[
    ("evt.type", "evt.syscall"),
    ("evt.dir", "evt.dir"),
    ("evt.res", "evt.res"),
    ("evt.rawres", "evt.ret"),
    ("evt.failed", "evt.failed"),
    ("evt.is_open_read", "file.read"),
    ("evt.is_open_write", "file.write"),
    ("evt.arg.newpath", "file.newpath"),
    ("evt.arg.linkpath", "file.newpath"),
    ("evt.arg.target", "file.newpath"),
    ("evt.arg.oldpath", "file.path"),
    ("evt.arg.path", "file.path"),
    ("evt.arg.name", "file.path"),
    ("proc.name", "proc.name"),
    ("proc.exe", "proc.exe"),
    ("proc.exepath", "proc.exe"),
    ("proc.pname", "proc.pname"),
    ("proc.pexe", "proc.pexe"),
    ("proc.pexepath", "proc.pexe"),
    ("proc.cmdline", "proc.cmdline"),
    ("proc.pcmdline", "proc.pcmdline"),
    ("proc.args", "proc.args"),
    ("proc.pid", "proc.pid"),
    ("proc.ppid", "proc.ppid"),
    ("proc.aname", "proc.anames"),
    ("proc.aname[1]", "proc.pname"),
    ("proc.aexe", "proc.aexes"),
    ("proc.aexepath", "proc.aexes"),
    ("user.uid", "proc.uid"),
    ("user.name", "user.name"),
    ("group.gid", "proc.gid"),
    ("fd.name", "file.path"),
    ("fd.nameraw", "file.raw_path"),
    ("fd.directory", "file.directory"),
    ("fd.filename", "file.name"),
    ("fd.typechar", "file.typechar"),
    ("fd.num", "evt.ret"),
    ("fd.sip", "net.ip"),
    ("fd.rip", "net.ip"),
    ("fd.sport", "net.port"),
    ("fd.rport", "net.port"),
    ("container.id", "container.id"),
    ("container.name", "container.name"),
    ("container.image", "container.image"),
    ("container.image.repository", "container.image.repository"),
    ("container.privileged", "container.privileged"),
    ("evt.num", "evt.num"),
    ("evt.arg.flags", "file.flagnames"),
    ("evt.arg.request", "ptrace.request_name"),
    ("proc.is_exe_from_memfd", "proc.is_exe_from_memfd"),
    ("proc.is_exe_upper_layer", "proc.is_exe_upper_layer"),
    ("proc.tty", "proc.tty"),
    ("proc.cwd", "proc.cwd"),
    ("proc.duration", "proc.duration"),
    ("thread.cap_effective", "proc.cap_effective"),
    ("thread.cap_permitted", "proc.cap_permitted"),
    ("user.loginuid", "user.loginuid"),
    ("evt.arg.domain", "socket.family"),
    ("evt.arg.proto", "socket.protocol"),
    ("fd.l4proto", "net.l4proto"),
    ("fd.connected", "net.connected"),
    ("fd.name_changed", "net.name_changed"),
    ("fd.ip", "net.ip"),
    ("fd.net", "net.ipnet"),
    ("fd.snet", "net.ipnet"),
    ("fd.rnet", "net.ipnet"),
    ("proc.env", "proc.env"),
];

/// Field name prefixes Osprey cannot provide, and why.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("proc.sname", "session leaders are not tracked"),
    ("proc.sid", "session leaders are not tracked"),
    ("proc.vpgid", "process group leaders are not tracked"),
    ("proc.is_vpgid_leader", "process group leaders are not tracked"),
    ("proc.ppid.duration", "process start times are not kept"),
    ("proc.exe_ino", "executable inode times are not recorded"),
    ("proc.is_exe", "executable origin other than memfd/upper layer is not recorded"),
    ("thread.", "thread fields other than cap_effective/cap_permitted are not recorded"),
    ("user.loginname", "the audit login uid is not recorded"),
    ("group.name", "group names are not looked up"),
    ("k8s.", "Kubernetes metadata is not available"),
    ("container.", "container metadata other than id, name, image and privileged is not available"),
    ("fd.l", "the local address of a socket is not recorded"),
    ("fd.c", "the client side of a socket is not recorded"),
    ("fd.type", "descriptor types other than fd.typechar are not recorded"),
    ("fd.sip.name", "DNS names of addresses are not known"),
    ("evt.arg.", "Falco's rendered argument text is not produced; Osprey's typed fields (ptrace.request, file.mode, chown.uid, ...) hold the values"),
    ("evt.hostname", "the host name is not an event field"),
    ("evt.args", "raw argument text is not kept"),
];

/// What a Falco field name means on Osprey's events.
pub fn resolve(name: &str) -> FieldRef {
    let mapped = SAME_AS
        .iter()
        .find(|m| m.0 == name)
        .map(|m| m.1)
        .or_else(|| {
            // proc.aname[2..7] and proc.env[NAME] are Osprey fields of the same name.
            (name.starts_with("proc.aname[") || name.starts_with("proc.env[")).then_some(name)
        });
    if let Some((id, ty)) = mapped.and_then(fields::lookup) {
        return FieldRef::Known(id, ty);
    }
    match UNSUPPORTED.iter().find(|u| name.starts_with(u.0)) {
        Some((_, why)) => FieldRef::Unsupported(format!("field {name}: {why}")),
        None => FieldRef::Unsupported(format!("field {name} is not provided by Osprey")),
    }
}
