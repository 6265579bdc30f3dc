//! Triggers of the drop-and-execute and module rules: programs run from a memfd or a
//! deleted file, a file written after a download, a module load from an arbitrary file.

use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::check;

/// Runs `cmd` if it is one of this module's; false otherwise.
pub fn run(cmd: &str, args: &[OsString]) -> bool {
    let arg = |i: usize| args.get(i).unwrap_or_else(|| crate::usage());
    match cmd {
        "memfd-exec" => {
            let image = std::fs::read("/bin/true").expect("read /bin/true");
            let name = CString::new("osprey-memfd").unwrap();
            // SAFETY: a name for our own new fd.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
            check(fd, "memfd_create");
            // SAFETY: our fd and our buffer.
            let written = unsafe { libc::write(fd, image.as_ptr().cast(), image.len()) };
            check(written as i32, "write memfd");
            exec_fd(fd, &["true"]);
        }
        "exec-deleted" => {
            std::fs::copy("/bin/sleep", arg(0)).expect("copy /bin/sleep");
            let file = std::fs::File::open(arg(0)).expect("open the copy");
            std::fs::remove_file(arg(0)).expect("delete the copy");
            exec_fd(file.as_raw_fd(), &["sleep", "2"]);
        }
        "fetch-write" => {
            if arg(0).as_os_str() != "-" {
                let to: std::net::SocketAddr = arg(0)
                    .to_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| crate::usage());
                let mut peer = std::net::TcpStream::connect(to).expect("connect");
                let mut sink = Vec::new();
                peer.read_to_end(&mut sink).expect("read");
            }
            let bytes = std::fs::read(arg(1)).expect("read SRC");
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(arg(2))
                .expect("create DEST");
            std::io::Write::write_all(&mut out, &bytes).expect("write DEST");
        }
        "finit-module" => {
            let file = std::fs::File::open(arg(0)).expect("open the module file");
            let empty = CString::new("").unwrap();
            // SAFETY: a valid fd and params string; the file is not a module, the load fails.
            let rc = unsafe {
                libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), empty.as_ptr(), 0)
            };
            println!("finit_module: {rc}");
        }
        _ => return false,
    }
    true
}

/// Runs the program open at `fd` (execveat with AT_EMPTY_PATH) in a child, and waits.
fn exec_fd(fd: i32, argv: &[&str]) {
    let empty = CString::new("").unwrap();
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: fork, then only execveat and _exit in the child; the parent waits.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                empty.as_ptr(),
                ptrs.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
    }
}
