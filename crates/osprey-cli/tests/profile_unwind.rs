//! Real-BPF tests of stacks that must not lie: a frameless leaf keeps its caller with
//! frame pointers, `auto` picks the unwinder per process from evidence and says so, and
//! off-CPU stacks end where the task blocked, without Osprey's own frames.

mod common;
mod profile_workloads;

use std::io::Write;

use common::*;
use profile_workloads::*;

const CHAIN: &str = "main;top_fn;mid_fn;leaf_fn";

/// The binaries of the summary's `unwinders` list that went through `unwinder`.
fn binaries_unwound_by(run: &Profiled, unwinder: &str) -> Vec<String> {
    run.done.summary()["profile"]["unwinders"]
        .as_array()
        .expect("unwinders in the summary")
        .iter()
        .filter(|u| u["unwinder"] == unwinder)
        .map(|u| u["binary"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_frameless_leaf_keeps_its_caller_with_frame_pointers() {
    if !bpf_available("profile_frameless_leaf") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-leaf");
    // gcc -O1 sets up no frame in leaf_fn: the frame-pointer walk alone skips mid_fn.
    let program = build_chain(dir.path(), "chain_o1", &["-O1", "-fno-omit-frame-pointer"]);
    let path = program.to_str().unwrap();
    for extra in [&["--unwind", "fp"][..], &[]] {
        let mut args = vec!["--freq", "299"];
        args.extend_from_slice(extra);
        let run = profile_run(dir.path(), &program, "12", &args);
        assert_chain_share(&run, CHAIN, "leaf_fn", 90);
        // Frame pointers agree with the CFI here: auto keeps them.
        let fp = binaries_unwound_by(&run, "frame_pointer");
        assert!(
            fp.iter().any(|b| b == path),
            "{extra:?}: {}",
            run.done.stderr
        );
    }
}

#[test]
fn without_frame_pointers_auto_unwinds_the_whole_chain_with_dwarf() {
    if !bpf_available("profile_no_frame_pointers") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-nofp");
    let program = build_chain(dir.path(), "chain_o2", &["-O2", "-fomit-frame-pointer"]);
    let run = profile_run(dir.path(), &program, "12", &["--freq", "299"]);
    assert_chain_share(&run, CHAIN, "leaf_fn", 90);
    let path = program.to_str().unwrap();
    let dwarf = binaries_unwound_by(&run, "dwarf");
    assert!(dwarf.iter().any(|b| b == path), "{}", run.done.stderr);
    // After the first samples compared both ways, no sample went through frame pointers.
    let fp = binaries_unwound_by(&run, "frame_pointer");
    assert!(!fp.iter().any(|b| b == path), "{}", run.done.stderr);
}

#[test]
fn off_cpu_stacks_of_a_blocked_read_end_in_the_wait_without_osprey_frames() {
    if !bpf_available("profile_off_cpu_read") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-offcpu-read");
    let program = build_chain(dir.path(), "reader", &["-O1", "-fno-omit-frame-pointer"]);
    let mut child = spawn_gated(&program, &["read"]);
    let pid = child.id().to_string();
    let out = dir.path().join("off.folded");
    let tracer = off_cpu_tracer(&pid, &out);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    // The workload: blocked in read for about half a second, then let go.
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(b"x").unwrap();
    assert!(child.wait().unwrap().success());
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let stacks = folded(&out);
    let (line, blocked) = stacks.iter().max_by_key(|(_, v)| *v).expect("a stack");
    assert!(*blocked >= 400_000_000, "{stacks:#?}");
    // The user side is the frame-pointer walk as taken at the switch (libc's read has no
    // frame, so its caller is not named: the first-frame fix covers CPU samples only).
    assert!(line.contains(";main;"), "{line}");
    assert!(line.contains("pipe_read_[k]"), "{line}");
    assert!(line.ends_with(";__schedule_[k]"), "{line}");
    for (stack, _) in &stacks {
        for own in ["bpf_", "__traceiter", "__bpf_trace", "__stop_"] {
            assert!(!stack.contains(own), "{own} in {stack}");
        }
    }
}
