//! Deterministic activity for Osprey's real-BPF tests and benchmarks.
//!
//! osprey-workload open COUNT PATH [--gate]   openat(PATH) COUNT times (close on success);
//!                                             with --gate, first wait for a line on stdin
//! osprey-workload open-relative DIR REL       chdir(DIR), open(2) REL, exit at once
//! osprey-workload openat2 PATH                openat2(AT_FDCWD, PATH, O_RDONLY)
//! osprey-workload bench-open COUNT PATH       like open, then print ns per call
//! osprey-workload tcp-serve ADDR REPLY         comm "tcp-server": listen on ADDR:0, print
//!                                             the port, accept one connection, read until
//!                                             EOF or REQUEST bytes (--expect N), send REPLY
//!                                             bytes, close; prints bytes received
//! osprey-workload tcp-send ADDR PORT BYTES     comm "tcp-client": connect, send BYTES, read
//!                                             the whole reply, close; prints bytes received
//! osprey-workload udp-send ADDR PORT COUNT SIZE  COUNT datagrams of SIZE bytes
//! osprey-workload udp-recv ADDR PORT COUNT     receive COUNT datagrams, print their bytes
//! osprey-workload ping ADDR COUNT              COUNT ICMP/ICMPv6 echo requests, one at a
//!                                             time, each waiting for its reply
//! osprey-workload udp-blast ADDR PORT SECS SIZE  send as fast as possible; print packets/s
//! osprey-workload connect-loop ADDR PORT COUNT   COUNT connect+close; print ns per connection

use std::ffi::{CString, OsString};
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

pub(crate) fn usage() -> ! {
    eprintln!("usage: osprey-workload open|open-relative|openat2|bench-open ARGS (see source)");
    std::process::exit(2);
}

/// Paths are taken as raw bytes so tests can pass names that are not UTF-8.
fn cpath(s: &OsString) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| usage())
}

fn number(s: Option<&OsString>) -> u64 {
    s.and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn open_loop(count: u64, path: &CString) {
    for _ in 0..count {
        // SAFETY: valid NUL-terminated path.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            // SAFETY: fd was just opened by us.
            unsafe { libc::close(fd) };
        }
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("open") => {
            let count = number(args.get(1));
            let path = cpath(args.get(2).unwrap_or_else(|| usage()));
            if args.get(3).and_then(|a| a.to_str()) == Some("--gate") {
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
            }
            open_loop(count, &path);
        }
        Some("bench-open") => {
            let count = number(args.get(1));
            let path = cpath(args.get(2).unwrap_or_else(|| usage()));
            let start = Instant::now();
            open_loop(count, &path);
            println!("{:.1}", start.elapsed().as_nanos() as f64 / count as f64);
        }
        Some("open-relative") => {
            let dir = args.get(1).unwrap_or_else(|| usage());
            let rel = cpath(args.get(2).unwrap_or_else(|| usage()));
            std::env::set_current_dir(dir).unwrap_or_else(|e| {
                eprintln!("chdir {}: {e}", dir.to_string_lossy());
                std::process::exit(1)
            });
            // The raw open(2) syscall, not libc's open() (which is openat), so it is covered.
            // SAFETY: valid path.
            unsafe { libc::syscall(libc::SYS_open, rel.as_ptr(), libc::O_RDONLY) };
        }
        Some("openat2") => {
            let path = cpath(args.get(1).unwrap_or_else(|| usage()));
            // struct open_how { u64 flags, mode, resolve; }
            let how: [u64; 3] = [libc::O_RDONLY as u64 | libc::O_CLOEXEC as u64, 0, 0];
            // SAFETY: valid path and open_how of the size passed.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    how.as_ptr(),
                    std::mem::size_of_val(&how),
                )
            };
            println!("{fd}");
        }
        Some(cmd) if net::run(cmd, &args[1..]) => {}
        _ => usage(),
    }
}

mod net;
