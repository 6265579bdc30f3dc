//! Deterministic activity for Osprey's real-BPF tests and benchmarks.
//!
//! osprey-workload open COUNT PATH [--gate]   openat(PATH) COUNT times (close on success);
//!                                             with --gate, first wait for a line on stdin
//! osprey-workload open-relative DIR REL       chdir(DIR), open(2) REL, exit at once
//! osprey-workload openat2 PATH                openat2(AT_FDCWD, PATH, O_RDONLY)
//! osprey-workload bench-open COUNT PATH       like open, then print ns per call
//! osprey-workload bench-getppid COUNT         COUNT raw getppid syscalls; prints ns per call
//!
//! Harmless triggers for the security rules (tests/secure.rs):
//! osprey-workload setuid-escalate             as root: drop the real uid to 1000 keeping saved
//!                                             uid 0, then setresuid(0,0,0) back (the pattern of
//!                                             an exploited setuid program)
//! osprey-workload ptrace-attach               PTRACE_ATTACH to a child of its own, then detach
//! osprey-workload module [MS]                 finit_module(-1) and delete_module of a missing
//!                                             module: both fail, nothing is loaded; then
//!                                             sleeps MS milliseconds (default 0)
//! osprey-workload ptrace-traceme              PTRACE_TRACEME (the anti-debugger idiom)
//! osprey-workload bpf-map                     creates (and closes) a one-entry BPF array map
//! osprey-workload reverse-shell               sh with stdin/stdout on a loopback TCP socket
//! osprey-workload proc-mem                    opens its own /proc/self/mem for writing
//! osprey-workload unshare                     unshare(CLONE_NEWUTS) of itself
//! osprey-workload memfd-exec                  runs /bin/true from a memfd
//! osprey-workload exec-deleted COPY           copies /bin/sleep to COPY, opens and deletes
//!                                             it, runs it (`sleep 2`) from the open fd
//! osprey-workload fetch-write ADDR SRC DEST   connects to ADDR (`-`: no connection), reads
//!                                             it to EOF, writes SRC's bytes to DEST (0755)
//! osprey-workload finit-module PATH           finit_module of PATH (not a module: fails)
//! osprey-workload open-write PATH             open(PATH, O_WRONLY|O_APPEND), writes nothing
//! osprey-workload chmod-then-sleep PATH MS    chmod(PATH, 0644), then sleeps MS milliseconds
//! (the detection-breadth triggers are listed in breadth.rs)
//! osprey-workload tcp-serve ADDR REPLY         comm "tcp-server": listen on ADDR:0, print
//!                                             the port, accept one connection, read until
//!                                             EOF or REQUEST bytes (--expect N), send REPLY
//!                                             bytes, close; prints bytes received
//! osprey-workload tcp-send ADDR PORT BYTES     comm "tcp-client": connect, send BYTES, read
//!                                             the whole reply, close; prints bytes received
//! osprey-workload udp-send ADDR PORT COUNT SIZE  COUNT datagrams of SIZE bytes (IPv6 with
//!                                             UDP_SEND_DSTOPTS=1: each with an 8-byte
//!                                             Destination Options header)
//! osprey-workload vlan-udp-send IF VLAN SRC DST PORT COUNT SIZE  COUNT 802.1Q-tagged
//!                                             IPv4/UDP frames written on IF (packet socket)
//! osprey-workload udp-recv ADDR PORT COUNT     receive COUNT datagrams, print their bytes
//! osprey-workload ping ADDR COUNT              COUNT ICMP/ICMPv6 echo requests, one at a
//!                                             time, each waiting for its reply
//! osprey-workload udp-blast ADDR PORT SECS SIZE  send as fast as possible; print packets/s
//! osprey-workload connect-loop ADDR PORT COUNT   COUNT connect+close; print ns per connection
//! osprey-workload attach-pass OBJECT IF IN OUT  attach do-nothing XDP (native|generic|
//!                                             tcx|none) and egress (tcx|none) programs until
//!                                             SIGINT; then print their run counts and times
//!
//! Syscall counting and baselines:
//! osprey-workload syscall-mix N M [--gate|--hold]  N getppid, then M openat of a missing
//!                                             path (each fails with ENOENT); --gate waits
//!                                             for a stdin line first, --hold prints `done`
//!                                             after and lives until stdin closes
//! osprey-workload baseline-helper [--extra]   a fixed small set of syscalls; with --extra
//!                                             also one sysinfo(2), which the set lacks
//! osprey-workload bench-syscalls N PATH       N rounds of getppid, openat(PATH)+close and
//!                                             write(/dev/null); prints ns per syscall
//!
//! osprey-workload spin SECS                   prints `spinning`, then busy in user space for
//!                                             SECS seconds (profiles); prints its rounds
//!
//! Page faults (tests/memory.rs); both print `START END` (hex) of the mapping, wait for a
//! line on stdin, fault, and exit:
//! osprey-workload fault-anon PAGES [MS]       mmap PAGES fresh anonymous pages (no huge
//!                                             pages) and write one byte in each, spread
//!                                             evenly over MS milliseconds (default: at once)
//! osprey-workload fault-file PATH PAGES       write PATH (PAGES pages), fsync, drop it from
//!                                             the page cache (POSIX_FADV_DONTNEED), mmap it
//!                                             with MADV_RANDOM (no read-ahead) and read one
//!                                             byte per page: one major fault each; prints
//!                                             `START END RESIDENT` (pages still cached)

use std::ffi::{CString, OsString};
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

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

/// The time of `clock` in ns.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Mean ns per call of `calls` made by `run`: wall clock, or with OSPREY_BENCH_CPU_TIME set
/// this thread's CPU time (user + system: what the calls cost, without the time spent
/// waiting for a CPU on a busy machine).
fn ns_per_call(calls: u64, run: impl FnOnce()) -> f64 {
    let cpu = std::env::var_os("OSPREY_BENCH_CPU_TIME").is_some();
    let thread_cpu_ns = || clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) as u128;
    let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
    run();
    let ns = if cpu {
        thread_cpu_ns() - cpu_start
    } else {
        start.elapsed().as_nanos()
    };
    ns as f64 / calls as f64
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
            println!("{:.1}", ns_per_call(count, || open_loop(count, &path)));
        }
        Some("bench-getppid") => {
            let count = number(args.get(1));
            let ns = ns_per_call(count, || {
                for _ in 0..count {
                    // SAFETY: getppid has no arguments and no side effects. The raw syscall,
                    // so no libc cache can answer it.
                    std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
                }
            });
            println!("{ns:.1}");
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
        Some("setuid-escalate") => {
            // SAFETY: plain syscalls on our own credentials.
            unsafe {
                check(libc::setresuid(1000, 1000, 0), "setresuid(1000,1000,0)");
                check(libc::setresuid(0, 0, 0), "setresuid(0,0,0)");
            }
        }
        Some("ptrace-attach") => ptrace_attach(),
        Some("module") => {
            let empty = CString::new("").unwrap();
            let name = CString::new("osprey_no_such_module").unwrap();
            // SAFETY: invalid fd and a missing module: both calls fail without effect.
            unsafe {
                libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0);
                libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK);
            }
            if args.len() > 1 {
                std::thread::sleep(Duration::from_millis(number(args.get(1))));
            }
        }
        Some("ptrace-traceme") => {
            // SAFETY: makes our parent our tracer; we exit at once without stopping.
            check(
                unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } as i32,
                "PTRACE_TRACEME",
            );
        }
        Some("bpf-map") => {
            // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries
            let mut attr = [0u32; 32];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4;
            attr[2] = 8;
            attr[3] = 1;
            // Before 5.11 maps are charged to RLIMIT_MEMLOCK, against everything the user
            // has locked (a running osprey's maps too): lift it, as BPF tools do. Failing
            // to is not fatal (newer kernels do not need it).
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: a valid rlimit for the call.
            unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
            // SAFETY: attr is large enough for the command.
            let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 128) };
            check(fd as i32, "bpf(BPF_MAP_CREATE)");
            // SAFETY: our fd.
            unsafe { libc::close(fd as i32) };
        }
        Some("reverse-shell") => reverse_shell(),
        Some("connect-try") => {
            // Prints the outcome instead of failing: tests assert on refusals.
            let to: std::net::SocketAddr = args
                .get(1)
                .and_then(|a| a.to_str())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| usage());
            match std::net::TcpStream::connect(to) {
                Ok(_) => println!("connected"),
                Err(e) => println!("errno {}", e.raw_os_error().unwrap_or(0)),
            }
        }
        Some("proc-mem") => {
            let path = CString::new("/proc/self/mem").unwrap();
            // SAFETY: valid path; our own memory, nothing is written.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
            check(fd, "open /proc/self/mem");
        }
        Some("unshare") => {
            // SAFETY: affects only this process.
            check(unsafe { libc::unshare(libc::CLONE_NEWUTS) }, "unshare");
        }
        Some("open-write") => {
            let path = cpath(args.get(1).unwrap_or_else(|| usage()));
            // SAFETY: valid path; nothing is written.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_APPEND) };
            check(fd, "open for writing");
        }
        Some("chmod-then-sleep") => {
            let path = cpath(args.get(1).unwrap_or_else(|| usage()));
            let ms = number(args.get(2));
            // SAFETY: valid path.
            check(unsafe { libc::chmod(path.as_ptr(), 0o644) }, "chmod");
            std::thread::sleep(Duration::from_millis(ms));
        }
        Some(cmd) if net::run(cmd, &args[1..]) => {}
        Some(cmd) if drops::run(cmd, &args[1..]) => {}
        Some(cmd) if attach::run(cmd, &args[1..]) => {}
        Some(cmd) if breadth::run(cmd, &args[1..]) => {}
        Some("syscall-mix") => {
            let getppids = number(args.get(1));
            let failing_opens = number(args.get(2));
            let flag = args.get(3).and_then(|a| a.to_str());
            if flag == Some("--gate") {
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
            }
            syscall_mix(getppids, failing_opens);
            if flag == Some("--hold") {
                println!("done");
                let _ = std::io::stdout().flush();
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            }
        }
        Some("baseline-helper") => match args.get(1).and_then(|a| a.to_str()) {
            Some("--burst") => getppid_burst(
                args.get(2)
                    .and_then(|a| a.to_str()?.parse().ok())
                    .unwrap_or_else(|| usage()),
            ),
            flag => baseline_helper(flag == Some("--extra")),
        },
        Some("bench-syscalls") => {
            let rounds = number(args.get(1));
            let path = cpath(args.get(2).unwrap_or_else(|| usage()));
            let start = Instant::now();
            bench_syscalls(rounds, &path);
            // getppid, openat, close, write
            let calls = rounds * 4;
            println!("{:.1}", start.elapsed().as_nanos() as f64 / calls as f64);
        }
        Some("spin") => spin(Duration::from_secs(number(args.get(1)))),
        Some("fault-anon") => fault_anon(
            number(args.get(1)),
            args.get(2).map(|_| number(args.get(2))),
        ),
        Some("fault-file") => fault_file(
            &cpath(args.get(1).unwrap_or_else(|| usage())),
            number(args.get(2)),
        ),
        _ => usage(),
    }
}

/// Busy in user space (no syscalls but the clock's vDSO reads) for `secs` of wall clock:
/// prints `spinning` first, then the rounds made.
#[inline(never)]
fn spin(secs: Duration) {
    println!("spinning");
    let start = Instant::now();
    let mut rounds: u64 = 0;
    while start.elapsed() < secs {
        for i in 0..10_000u64 {
            rounds = std::hint::black_box(rounds.wrapping_add(i));
        }
    }
    println!("{rounds}");
}

fn syscall_mix(getppids: u64, failing_opens: u64) {
    let missing = CString::new("/osprey-no-such-dir/osprey-no-such-file").unwrap();
    for _ in 0..getppids {
        // SAFETY: no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    for _ in 0..failing_opens {
        // SAFETY: valid path; the open fails with ENOENT.
        unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, missing.as_ptr(), 0) };
    }
}

/// The same calls every run (so a baseline learned on it is complete), and with `extra`
/// one more that it never makes otherwise.
fn baseline_helper(extra: bool) {
    let missing = CString::new("/osprey-no-such-dir/osprey-no-such-file").unwrap();
    for _ in 0..100 {
        // SAFETY: harmless calls with valid arguments.
        unsafe {
            libc::syscall(libc::SYS_getppid);
            libc::syscall(libc::SYS_openat, libc::AT_FDCWD, missing.as_ptr(), 0);
        }
    }
    if extra {
        let mut info = std::mem::MaybeUninit::<libc::sysinfo>::uninit();
        // SAFETY: info is large enough.
        unsafe { libc::syscall(libc::SYS_sysinfo, info.as_mut_ptr()) };
    }
}

/// `calls` getppid in a row inside one of the kernel's rate windows (boot-time ns >> 30),
/// waiting for a fresh window first so that exactly one envelope crossing is seen. It spins
/// on the vDSO clock instead of sleeping: a sleep is a syscall the baseline never learned.
fn getppid_burst(calls: u64) {
    let boot_ns = || clock_ns(libc::CLOCK_BOOTTIME);
    let window = 1u64 << 30;
    if boot_ns() % window > window / 2 {
        let next = boot_ns() / window + 1;
        while boot_ns() / window < next {
            std::hint::spin_loop();
        }
    }
    for _ in 0..calls {
        // SAFETY: no arguments, no side effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

fn bench_syscalls(rounds: u64, path: &CString) {
    let null = CString::new("/dev/null").unwrap();
    // SAFETY: valid path.
    let out = unsafe { libc::open(null.as_ptr(), libc::O_WRONLY) };
    check(out, "open /dev/null");
    let byte = [0u8; 1];
    for _ in 0..rounds {
        // SAFETY: valid arguments; fds are ours.
        unsafe {
            libc::syscall(libc::SYS_getppid);
            let fd = libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::close(fd);
            }
            libc::write(out, byte.as_ptr().cast(), 1);
        }
    }
}

const PAGE: usize = 4096;

fn wait_for_go() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn map_or_exit(len: usize, prot: i32, flags: i32, fd: i32) -> *mut u8 {
    // SAFETY: a fresh mapping of our own; the result is checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        eprintln!("mmap: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    p.cast()
}

fn fault_anon(pages: u64, spread_ms: Option<u64>) {
    let len = pages as usize * PAGE;
    let p = map_or_exit(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    // Huge pages would serve 512 pages with one fault.
    // SAFETY: our own mapping.
    check(
        unsafe { libc::madvise(p.cast(), len, libc::MADV_NOHUGEPAGE) },
        "madvise(MADV_NOHUGEPAGE)",
    );
    println!("{:#x} {:#x}", p as usize, p as usize + len);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wait_for_go();
    let start = Instant::now();
    for i in 0..pages as usize {
        if let Some(ms) = spread_ms {
            let due = std::time::Duration::from_micros(ms * 1000 * i as u64 / pages);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        // SAFETY: inside the mapping; the first write to each page faults it in.
        unsafe { std::ptr::write_volatile(p.add(i * PAGE), 1) };
    }
}

fn fault_file(path: &CString, pages: u64) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let len = pages as usize * PAGE;
    let name = std::ffi::OsStr::from_bytes(path.as_bytes());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(name)
        .unwrap_or_else(|e| {
            eprintln!("create: {e}");
            std::process::exit(1)
        });
    let chunk: Vec<u8> = (0..PAGE).map(|i| (i % 251) as u8).collect();
    for _ in 0..pages {
        file.write_all(&chunk).expect("write");
    }
    // Dirty pages cannot be dropped: write them back first.
    file.sync_all().expect("fsync");
    let fd = file.as_raw_fd();
    // SAFETY: plain syscalls on our own fd and mapping.
    unsafe {
        check(
            libc::posix_fadvise(fd, 0, len as i64, libc::POSIX_FADV_DONTNEED),
            "posix_fadvise(DONTNEED)",
        );
    }
    let p = map_or_exit(len, libc::PROT_READ, libc::MAP_SHARED, fd);
    let mut resident = vec![0u8; pages as usize];
    // SAFETY: our own mapping; one status byte per page.
    unsafe {
        check(
            libc::madvise(p.cast(), len, libc::MADV_RANDOM),
            "madvise(MADV_RANDOM)",
        );
        check(
            libc::mincore(p.cast(), len, resident.as_mut_ptr()),
            "mincore",
        );
    }
    let cached = resident.iter().filter(|&&b| b & 1 != 0).count();
    println!("{:#x} {:#x} {cached}", p as usize, p as usize + len);
    let _ = std::io::stdout().flush();
    wait_for_go();
    let mut sum = 0u64;
    for i in 0..pages as usize {
        // SAFETY: inside the mapping.
        sum += u64::from(unsafe { std::ptr::read_volatile(p.add(i * PAGE)) });
    }
    std::hint::black_box(sum);
}

fn check(rc: i32, what: &str) {
    if rc < 0 {
        eprintln!("{what}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

fn ptrace_attach() {
    // SAFETY: fork in a single-threaded program; the child only sleeps.
    let child = unsafe { libc::fork() };
    if child == 0 {
        std::thread::sleep(std::time::Duration::from_secs(5));
        std::process::exit(0);
    }
    // SAFETY: tracing our own child, then detaching and ending it.
    unsafe {
        check(
            libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) as i32,
            "PTRACE_ATTACH",
        );
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        libc::ptrace(libc::PTRACE_DETACH, child, 0, 0);
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, &mut status, 0);
    }
}

fn reverse_shell() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let conn = std::net::TcpStream::connect(addr).expect("connect loopback");
    let (_peer, _) = listener.accept().expect("accept");
    let sh = CString::new("/bin/sh").unwrap();
    let c = CString::new("-c").unwrap();
    let cmd = CString::new("exit 0").unwrap();
    let argv = [sh.as_ptr(), c.as_ptr(), cmd.as_ptr(), std::ptr::null()];
    // SAFETY: fork, then dup2 and exec in the child only; the parent waits.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            libc::dup2(conn.as_raw_fd(), 0);
            libc::dup2(conn.as_raw_fd(), 1);
            libc::execv(sh.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
    }
}

mod attach;
mod breadth;
mod drops;
mod net;
