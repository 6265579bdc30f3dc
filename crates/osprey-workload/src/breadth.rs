//! Harmless triggers (and near misses) of the detection-breadth event classes
//! (tests/event_classes.rs). Each prints what the test asserts, then exits 0.
//!
//! osprey-workload proc-mem-read other|self    open /proc/PID/mem read-only: of a child of
//!                                             its own (prints `target PID`) or of itself
//! osprey-workload process-vm other|self       process_vm_readv of 8 bytes from a child of
//!                                             its own (prints `target PID`) or from itself
//! osprey-workload setxattr cap|user PATH      setxattr security.capability (cap_setuid,
//!                                             permitted and effective) or user.osprey
//! osprey-workload socket packet|raw|udp|tcp   socket(): AF_PACKET/SOCK_RAW, AF_INET/SOCK_RAW
//!                                             (ICMP), AF_INET/SOCK_DGRAM, AF_INET/SOCK_STREAM
//! osprey-workload mount-over proc|dir DIR     in a private mount namespace, bind-mount DIR
//!                                             over /proc/PID of a child (prints `target PID`)
//!                                             or over DIR/over (a near miss)
//! osprey-workload net-connect ADDR PORT       in a new network namespace whose lo carries
//!                                             ADDR: listen on ADDR:PORT, TCP connect to it

use std::ffi::{CString, OsString};
use std::time::Duration;

use super::check;

pub fn run(cmd: &str, args: &[OsString]) -> bool {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or("");
    match cmd {
        "proc-mem-read" => proc_mem_read(arg(0) == "self"),
        "process-vm" => process_vm(arg(0) == "self"),
        "setxattr" => set_xattr(arg(0) == "cap", arg(1)),
        "socket" => socket(arg(0)),
        "mount-over" => mount_over(arg(0) == "proc", arg(1)),
        "net-connect" => net_connect(arg(0), arg(1).parse().unwrap_or_else(|_| super::usage())),
        _ => return false,
    }
    true
}

/// A child that sleeps until killed; its pid.
fn sleeping_child() -> i32 {
    // SAFETY: fork in a single-threaded program; the child only sleeps.
    let child = unsafe { libc::fork() };
    check(child, "fork");
    if child == 0 {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(0);
    }
    child
}

fn end_child(child: i32) {
    // SAFETY: our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
}

fn proc_mem_read(itself: bool) {
    let child = if itself { 0 } else { sleeping_child() };
    let path = if itself {
        "/proc/self/mem".to_string()
    } else {
        format!("/proc/{child}/mem")
    };
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    drop(f);
    if !itself {
        println!("target {child}");
        end_child(child);
    }
}

fn process_vm(itself: bool) {
    let data = [7u8; 8];
    let child = if itself {
        std::process::id() as i32
    } else {
        sleeping_child()
    };
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // The child is a fork: `data` is at the same address in its memory.
    let remote = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: both iovecs describe live buffers of their stated lengths.
    let n = unsafe { libc::process_vm_readv(child, &local, 1, &remote, 1, 0) };
    check(n as i32, "process_vm_readv");
    if !itself {
        println!("target {child}");
        end_child(child);
    }
}

fn set_xattr(cap: bool, path: &str) {
    let path = CString::new(path).unwrap_or_else(|_| super::usage());
    let (name, value): (&str, Vec<u8>) = if cap {
        // struct vfs_cap_data, revision 2, effective: permitted = cap_setuid (bit 7).
        let words = [0x0200_0001u32, 1 << 7, 0, 0, 0];
        (
            "security.capability",
            words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        )
    } else {
        ("user.osprey", b"benign".to_vec())
    };
    let name = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(rc, "setxattr");
}

fn socket(kind: &str) {
    let (family, ty, proto) = match kind {
        "packet" => (
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        ),
        "raw" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        "udp" => (libc::AF_INET, libc::SOCK_DGRAM, 0),
        "tcp" => (libc::AF_INET, libc::SOCK_STREAM, 0),
        _ => super::usage(),
    };
    // SAFETY: plain syscalls on our own fd.
    unsafe {
        let fd = libc::socket(family, ty, proto);
        check(fd, "socket");
        libc::close(fd);
    }
}

fn mount_over(proc: bool, dir: &str) {
    let none = CString::new("none").unwrap();
    let root = CString::new("/").unwrap();
    // SAFETY: a private mount namespace of our own: nothing leaks to the host's.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)");
        check(
            libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "make / private",
        );
    }
    let child = proc.then(sleeping_child);
    let target = match child {
        Some(pid) => format!("/proc/{pid}"),
        None => {
            let t = format!("{dir}/over");
            std::fs::create_dir_all(&t).expect("create the mount point");
            t
        }
    };
    let source = CString::new(dir).unwrap_or_else(|_| super::usage());
    let target_c = CString::new(target.as_str()).unwrap();
    // SAFETY: NUL-terminated paths; the namespace is ours.
    unsafe {
        check(
            libc::mount(
                source.as_ptr(),
                target_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ),
            "bind mount",
        );
        libc::umount2(target_c.as_ptr(), libc::MNT_DETACH);
    }
    if let Some(pid) = child {
        println!("target {pid}");
        end_child(pid);
    }
}

/// Gives `lo` of a new network namespace the address `addr` (and brings it up).
fn netns_with_address(addr: std::net::Ipv4Addr) {
    // SAFETY: ioctls on a socket of our own with a zeroed, filled ifreq.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNET), "unshare(CLONE_NEWNET)");
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        check(fd, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let sin = &mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in;
        (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
        (*sin).sin_addr.s_addr = u32::from(addr).to_be();
        check(libc::ioctl(fd, libc::SIOCSIFADDR, &req), "SIOCSIFADDR");
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), "SIOCSIFFLAGS");
        libc::close(fd);
    }
}

fn net_connect(addr: &str, port: u16) {
    let ip: std::net::Ipv4Addr = addr.parse().unwrap_or_else(|_| super::usage());
    netns_with_address(ip);
    let listener = std::net::TcpListener::bind((ip, port)).expect("bind");
    let conn = std::net::TcpStream::connect((ip, port)).expect("connect");
    drop(listener.accept().expect("accept"));
    drop(conn);
}
