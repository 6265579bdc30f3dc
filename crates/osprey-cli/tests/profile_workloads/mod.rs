//! Workloads of the profile tests, built at test time so their call chains are known:
//! C with frame pointers (several modes) and a Rust release binary without them.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{Finished, Tracer};

/// Waits for a line on stdin, then by mode:
/// - `N`: burns CPU in leaf ← mid ← top ← main N times;
/// - `sleep`: blocks 1 s in sleepy_leaf ← sleepy_top (a raw syscall: no libc frame hides
///   the caller);
/// - `fork N`: the child burns N times, the parent N/4 times, then reaps the child;
/// - `sys N`: N rounds of reading /dev/zero in zero_reader (kernel time) and of mid (user);
/// - `jit N`: copies a counting loop into an executable anonymous page, names it
///   osprey_jit_spin in /tmp/perf-PID.map and runs it N times.
pub const C_WORKLOAD: &str = r#"
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
volatile uint64_t sink;
__attribute__((noinline)) void leaf(void) { uint64_t x = 0; for (int i = 0; i < 1000000; i++) x += (uint64_t)i * i; sink = x; }
__attribute__((noinline)) void mid(void) { for (int i = 0; i < 10; i++) leaf(); }
__attribute__((noinline)) void top(void) { for (int i = 0; i < 10; i++) mid(); }
__attribute__((noinline)) void sleepy_leaf(void) {
    struct timespec ts = {1, 0}; long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(35), "D"(&ts), "S"(0) : "rcx", "r11", "memory");
}
__attribute__((noinline)) void sleepy_top(void) { sleepy_leaf(); }
static char zeros[1 << 20];
__attribute__((noinline)) void zero_reader(int fd) {
    for (int i = 0; i < 2000; i++) if (read(fd, zeros, sizeof zeros) < 0) exit(3);
}
/* mov rax, rdi; 1: dec rax; jnz 1b; ret */
static const unsigned char spin_code[] = {0x48, 0x89, 0xf8, 0x48, 0xff, 0xc8, 0x75, 0xfb, 0xc3};
static int run_jit(int n) {
    unsigned char *page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 4;
    memcpy(page, spin_code, sizeof spin_code);
    if (mprotect(page, 4096, PROT_READ | PROT_EXEC)) return 5;
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map) return 6;
    fprintf(map, "%lx %zx osprey_jit_spin\n", (unsigned long)page, sizeof spin_code);
    fclose(map);
    uint64_t (*spin)(uint64_t) = (uint64_t (*)(uint64_t))page;
    for (int i = 0; i < n; i++) sink = spin(200000000);
    return 0;
}
int main(int argc, char **argv) {
    getchar();
    const char *mode = argc > 1 ? argv[1] : "10";
    int n = argc > 2 ? atoi(argv[2]) : 10;
    if (strcmp(mode, "sleep") == 0) { sleepy_top(); return 0; }
    if (strcmp(mode, "jit") == 0) return run_jit(n);
    if (strcmp(mode, "sys") == 0) {
        int fd = open("/dev/zero", O_RDONLY);
        if (fd < 0) return 2;
        for (int i = 0; i < n; i++) { zero_reader(fd); mid(); }
        return 0;
    }
    if (strcmp(mode, "fork") == 0) {
        pid_t child = fork();
        if (child < 0) return 2;
        for (int i = 0; i < (child == 0 ? n : n / 4); i++) top();
        if (child == 0) return 0;
        int status = 0;
        waitpid(child, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    n = atoi(mode);
    for (int i = 0; i < n; i++) top();
    return 0;
}
"#;

/// Burns CPU in leaf ← mid ← top ← burn ← main (`N deep`: with big_frame between burn and
/// main).
pub const RUST_WORKLOAD: &str = r#"
use std::hint::black_box;
#[inline(never)] fn leaf(n: u64) -> u64 { let mut x = 0u64; for i in 0..n { x = x.wrapping_add(black_box(i).wrapping_mul(i)); } x }
#[inline(never)] fn mid(n: u64) -> u64 { let mut s = 0; for _ in 0..10 { s ^= leaf(black_box(n)); } s }
#[inline(never)] fn top(n: u64) -> u64 { let mut s = 0; for _ in 0..10 { s ^= mid(black_box(n)); } s }
#[inline(never)] fn burn(reps: u64) -> u64 { let mut s = 0; for _ in 0..reps { s ^= top(2_000_000); } s }
// 40 KB of locals between the burning frames and main, like a big future on the stack.
#[inline(never)] fn big_frame(reps: u64) -> u64 { let mut pad = [0u8; 40_000]; black_box(&mut pad); burn(reps) ^ pad[black_box(7)] as u64 }
fn main() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let reps: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let deep = std::env::args().nth(2).is_some_and(|a| a == "deep");
    black_box(if deep { big_frame(reps) } else { burn(reps) });
}
"#;

/// The C workload as `dir/name` (the name becomes the process's comm).
pub fn build_c_named(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join("cburn.c");
    std::fs::write(&src, C_WORKLOAD).unwrap();
    let out = dir.join(name);
    let status = Command::new("cc")
        // -O0: gcc 12 omits the frame of leaf functions at -O1 even when told not to.
        .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc (gcc) is needed for the profile tests");
    assert!(status.success());
    out
}

pub fn build_c(dir: &Path) -> PathBuf {
    build_c_named(dir, "cburn")
}

/// A release build without frame pointers: only DWARF unwinding recovers its chain.
pub fn build_rust(dir: &Path) -> PathBuf {
    let src = dir.join("osprey_burn.rs");
    std::fs::write(&src, RUST_WORKLOAD).unwrap();
    let out = dir.join("osprey_burn");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "force-frame-pointers=no",
            "-g",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("rustc");
    assert!(status.success());
    out
}

/// Starts `program ARGS`, waiting for a line on stdin before it does anything.
pub fn spawn_gated(program: &Path, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn workload")
}

pub fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
}

pub fn release_and_wait(mut child: Child) {
    release(&mut child);
    assert!(child.wait().unwrap().success());
}

/// (stack, value) pairs of a folded file.
pub fn folded(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (stack, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            (stack.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Sum of the values of the folded stacks that satisfy `keep`.
pub fn sum_where(stacks: &[(String, u64)], keep: impl Fn(&str) -> bool) -> u64 {
    stacks.iter().filter(|(s, _)| keep(s)).map(|(_, v)| v).sum()
}

/// main → top_fn → mid_fn → leaf_fn, leaf_fn without calls: gcc gives it no frame. Waits
/// for a line on stdin; then `N` burns N rounds, `read` blocks in blocked_reader reading
/// stdin until a second line comes.
pub const CHAIN_WORKLOAD: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
volatile uint64_t sink;
__attribute__((noinline)) void leaf_fn(uint64_t n) { uint64_t x = 0; for (uint64_t i = 0; i < n; i++) x += i * i ^ (x >> 3); sink = x; }
__attribute__((noinline)) void mid_fn(uint64_t n) { for (int i = 0; i < 10; i++) leaf_fn(n); sink++; }
__attribute__((noinline)) void top_fn(uint64_t n) { for (int i = 0; i < 10; i++) mid_fn(n); sink++; }
__attribute__((noinline)) void blocked_reader(void) { char c; if (read(0, &c, 1) != 1) exit(3); sink++; }
int main(int argc, char **argv) {
    char line[16];
    if (read(0, line, 3) != 3) return 2;
    if (argc > 1 && strcmp(argv[1], "read") == 0) { blocked_reader(); return 0; }
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    for (int i = 0; i < reps; i++) top_fn(1000000);
    return 0;
}
"#;

/// The chain workload built by gcc with `flags` as `dir/name`.
pub fn build_chain(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join("chain.c");
    std::fs::write(&src, CHAIN_WORKLOAD).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .args(["-g", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc is needed for the profile tests");
    assert!(status.success());
    out
}

pub struct Profiled {
    pub folded: Vec<(String, u64)>,
    pub svg: String,
    pub pprof: Vec<u8>,
    pub json: serde_json::Value,
    pub done: Finished,
}

/// Profiles one gated run of `program ARG` with extra osprey arguments.
pub fn profile_run(dir: &Path, program: &Path, arg: &str, extra: &[&str]) -> Profiled {
    profile_run_args(dir, program, &[arg], extra)
}

/// `osprey profile --off-cpu --pid PID --folded OUT`, attached.
pub fn off_cpu_tracer(pid: &str, out: &Path) -> Tracer {
    Tracer::start(&[
        "profile",
        "--off-cpu",
        "--pid",
        pid,
        "--folded",
        out.to_str().unwrap(),
    ])
}

/// Profiles one gated run of `program ARGS` with extra osprey arguments.
pub fn profile_run_args(
    dir: &Path,
    program: &Path,
    program_args: &[&str],
    extra: &[&str],
) -> Profiled {
    let child = spawn_gated(program, program_args);
    let pid = child.id().to_string();
    let (f, s, p) = (
        dir.join("out.folded"),
        dir.join("out.svg"),
        dir.join("out.pb.gz"),
    );
    let mut args = vec!["profile", "--pid", &pid, "--output", "json"];
    args.extend_from_slice(extra);
    let paths = [
        f.to_str().unwrap(),
        s.to_str().unwrap(),
        p.to_str().unwrap(),
    ];
    args.extend_from_slice(&["--folded", paths[0], "--svg", paths[1], "--pprof", paths[2]]);
    let tracer = Tracer::start(&args);
    release_and_wait(child);
    let done = tracer.stop();
    assert!(done.status.success(), "osprey failed: {}", done.stderr);
    let json: serde_json::Value = serde_json::from_slice(&done.stdout).expect("profile JSON");
    Profiled {
        folded: folded(&f),
        svg: std::fs::read_to_string(&s).unwrap(),
        pprof: std::fs::read(&p).unwrap(),
        json,
        done,
    }
}

pub fn assert_chain(run: &Profiled, chain: &str, leaf: &str) {
    assert_chain_share(run, chain, leaf, 80);
}

/// `chain` in at least `percent`% of the samples, `leaf` as a frame in as many.
pub fn assert_chain_share(run: &Profiled, chain: &str, leaf: &str, percent: u64) {
    let total = sum_where(&run.folded, |_| true);
    let in_chain = sum_where(&run.folded, |s| s.contains(chain));
    let in_leaf = sum_where(&run.folded, |s| s.split(';').any(|f| f == leaf));
    assert!(total >= 50, "too few samples ({total}): {:?}", run.folded);
    assert!(
        in_chain * 100 >= total * percent && in_leaf * 100 >= total * percent,
        "chain {chain}: {in_chain} of {total} samples, {leaf}: {in_leaf}; {:#?}\n{}",
        run.folded,
        run.done.stderr
    );
}

/// A pure-Python chain top → mid → leaf: waits for a line on stdin, then burns N rounds.
pub const PYTHON_WORKLOAD: &str = r#"import sys


def leaf(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def mid(n):
    s = 0
    for _ in range(10):
        s += leaf(n)
    return s


def top(n):
    s = 0
    for _ in range(10):
        s += mid(n)
    return s


sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    top(20000)
"#;

/// The Python workload as `dir/chain.py`, and the interpreter to run it (Debian's 3.11).
pub fn python_workload(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let python = PathBuf::from("/usr/bin/python3.11");
    if !python.exists() {
        return None;
    }
    let script = dir.join("chain.py");
    std::fs::write(&script, PYTHON_WORKLOAD).unwrap();
    Some((python, script))
}
