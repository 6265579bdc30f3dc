//! Facts from event sequences, in whatever order the rings deliver them.

use crate::pipeline::event::{Event, Payload};
use crate::process::Exec;
use crate::security::rules::tests::{context, open_event, view_event};
use crate::security::syscall::{syscall_number, SecSyscall, SockAddr};

use super::drops::Drops;
use super::target::changed_path;

fn event(pid: u32, comm: &str, ts: u64, payload: Payload) -> Event {
    let mut e = view_event(comm, payload);
    e.header.pid = pid;
    e.header.tid = pid;
    e.header.ts_boot_ns = ts;
    e
}

/// O_WRONLY | O_CREAT | O_TRUNC
fn write(path: &str) -> Payload {
    open_event("", path, 0o1101).payload
}

fn syscall(name: &str, ret: i64, args: [u64; 4], path: &str, abs: &str, path2: &str) -> SecSyscall {
    SecSyscall {
        nr: syscall_number(name).unwrap(),
        ret,
        args,
        path: path.as_bytes().to_vec(),
        abs_path: abs.as_bytes().to_vec(),
        path2: path2.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn exec(path: &str) -> Payload {
    Payload::Exec(Exec {
        filename: path.as_bytes().to_vec(),
        exe: path.as_bytes().to_vec(),
        ..Default::default()
    })
}

fn observe(d: &mut Drops, e: &Event) -> Option<super::drops::Dropper> {
    d.observe(e, &context(e))
}

#[test]
fn a_rename_with_a_relative_destination_changes_the_destination() {
    // sed -i in /etc/pam.d: renameat(AT_FDCWD, "sedAb12", AT_FDCWD, "login") from /etc/pam.d.
    let cwd = -100i64 as u64;
    let s = syscall(
        "renameat",
        0,
        [cwd, 0, cwd, 0],
        "sedAb12",
        "/etc/pam.d/sedAb12",
        "login",
    );
    let p = Payload::Security(s);
    assert_eq!(changed_path(&p).as_deref(), Some(&b"/etc/pam.d/login"[..]));
    // Different directories: not resolvable from the source.
    let s = syscall("renameat", 0, [cwd, 0, 5, 0], "a", "/tmp/a", "b");
    assert_eq!(changed_path(&Payload::Security(s)), None);
    let s = syscall(
        "symlink",
        0,
        [0; 4],
        "/root/.bash_history",
        "/root/.bash_history",
        "/dev/null",
    );
    assert_eq!(
        changed_path(&Payload::Security(s)).as_deref(),
        Some(&b"/root/.bash_history"[..])
    );
}

#[test]
fn toolchain_output_is_not_a_drop_unless_its_writer_downloaded() {
    let mut d = Drops::default();
    let built = event(10, "ld", 100, write("/tmp/a.out"));
    observe(&mut d, &built);
    assert_eq!(
        observe(&mut d, &event(11, "a.out", 200, exec("/tmp/a.out"))),
        None
    );
    let copied = event(12, "cp", 300, write("/tmp/x"));
    observe(&mut d, &copied);
    let run = event(13, "x", 400, exec("/tmp/x"));
    assert_eq!(observe(&mut d, &run).unwrap().how, "written");
    // A toolchain-named writer whose connect is seen after its write (another ring).
    observe(&mut d, &event(20, "cc", 500, write("/tmp/y")));
    let mut connect = syscall("connect", 0, [0; 4], "", "", "");
    connect.addr = Some(SockAddr::Inet {
        ip: [127, 0, 0, 1].into(),
        port: 80,
    });
    observe(&mut d, &event(20, "cc", 450, Payload::Security(connect)));
    let run = event(21, "y", 600, exec("/tmp/y"));
    let dropper = d.dropper_of(&run).unwrap();
    assert_eq!(
        (dropper.how, dropper.comm.as_slice()),
        ("downloaded", &b"cc"[..])
    );
    // A write seen before an exec but made after it does not count.
    observe(&mut d, &event(30, "cp", 900, write("/tmp/z")));
    assert_eq!(d.dropper_of(&event(31, "z", 800, exec("/tmp/z"))), None);
    // Deleted after the exec, and the deletion seen before the exec: still a drop.
    observe(&mut d, &event(40, "cp", 1000, write("/tmp/w")));
    let rm = syscall("unlink", 0, [0; 4], "/tmp/w", "/tmp/w", "");
    observe(&mut d, &event(41, "rm", 1200, Payload::Security(rm)));
    assert!(d
        .dropper_of(&event(42, "w", 1100, exec("/tmp/w")))
        .is_some());
    d.sweep();
    assert_eq!(d.dropper_of(&event(42, "w", 1100, exec("/tmp/w"))), None);
}
