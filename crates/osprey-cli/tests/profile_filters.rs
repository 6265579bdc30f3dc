//! Real-BPF tests of `osprey profile` targeting and symbolization: --pid with and without
//! --children, --comm, --cgroup, --kernel-only / --user-only, JIT code named by a perf map,
//! and a process that exits before the profile ends.

mod common;
mod profile_workloads;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;
use profile_workloads::*;
use serde_json::Value;

/// The JSON profile of one run: `osprey profile ARGS --output json` while `drive` runs.
fn profile_json(args: &[&str], drive: impl FnOnce()) -> (Value, Finished) {
    let mut all = vec!["profile", "--output", "json", "--freq", "299"];
    all.extend_from_slice(args);
    let tracer = Tracer::start(&all);
    drive();
    let done = tracer.stop();
    assert!(done.status.success(), "osprey failed: {}", done.stderr);
    let json: Value = serde_json::from_slice(&done.stdout).expect("profile JSON");
    (json, done)
}

fn stacks(profile: &Value) -> &[Value] {
    profile["stacks"].as_array().unwrap()
}

/// Samples per pid.
fn samples_by_pid(profile: &Value) -> std::collections::BTreeMap<u64, u64> {
    let mut by_pid = std::collections::BTreeMap::new();
    for s in stacks(profile) {
        *by_pid.entry(s["pid"].as_u64().unwrap()).or_default() += s["value"].as_u64().unwrap();
    }
    by_pid
}

fn frame_names(stack: &Value) -> Vec<&str> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect()
}

/// Samples whose user frames contain `chain` (outermost first) in a row.
fn samples_with_chain(profile: &Value, chain: &[&str]) -> u64 {
    stacks(profile)
        .iter()
        .filter(|s| frame_names(s).windows(chain.len()).any(|w| w == chain))
        .map(|s| s["value"].as_u64().unwrap())
        .sum()
}

fn total(profile: &Value) -> u64 {
    profile["total"].as_u64().unwrap()
}

#[test]
fn pid_with_children_follows_a_forked_child_and_without_it_does_not() {
    if !bpf_available("profile_children") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-children");
    let program = build_c(dir.path());
    let burn = ["main", "top", "mid", "leaf"];
    for children in [true, false] {
        let child = spawn_gated(&program, &["fork", "8"]);
        let parent = child.id() as u64;
        let pid = parent.to_string();
        let mut args = vec!["--pid", pid.as_str()];
        if children {
            args.push("--children");
        }
        let (profile, done) = profile_json(&args, || release_and_wait(child));
        let by_pid = samples_by_pid(&profile);
        let forked: u64 = by_pid
            .iter()
            .filter(|(p, _)| **p != parent)
            .map(|(_, v)| v)
            .sum();
        let ctx = format!("children={children}: {by_pid:?}\n{}", done.stderr);
        // Named while it lived, for the flame graph's title.
        assert_eq!(profile["command"], format!("cburn (pid {parent})"));
        // The parent burns 2 of 8 rounds, the child all 8.
        assert!(by_pid.get(&parent).copied().unwrap_or(0) >= 20, "{ctx}");
        if children {
            assert!(forked >= 80, "{ctx}");
            assert!(by_pid.len() == 2, "one forked child expected: {ctx}");
            assert!(
                samples_with_chain(&profile, &burn) * 100 >= total(&profile) * 80,
                "{ctx}"
            );
        } else {
            assert_eq!(forked, 0, "{ctx}");
        }
    }
}

#[test]
fn comm_selects_processes_by_name() {
    if !bpf_available("profile_comm") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-comm");
    let wanted = build_c_named(dir.path(), "prf_wanted");
    let other = build_c_named(dir.path(), "prf_other");
    let (mut a, mut b) = (spawn_gated(&wanted, &["8"]), spawn_gated(&other, &["8"]));
    let a_pid = a.id() as u64;
    let (profile, done) = profile_json(&["--comm", "prf_wanted"], || {
        release(&mut a);
        release(&mut b);
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    });
    let by_pid = samples_by_pid(&profile);
    assert_eq!(
        by_pid.keys().copied().collect::<Vec<_>>(),
        vec![a_pid],
        "{by_pid:?}\n{}",
        done.stderr
    );
    assert!(total(&profile) >= 50, "{by_pid:?}");
    assert!(stacks(&profile).iter().all(|s| s["comm"] == "prf_wanted"));
    assert!(
        samples_with_chain(&profile, &["main", "top", "mid", "leaf"]) * 100 >= total(&profile) * 80
    );
}

/// A cgroup v2 directory created for a test and removed (after its processes left) on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create(tag: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (before, after) = l.split_once(" - ")?;
                (after.starts_with("cgroup2 "))
                    .then(|| before.split(' ').nth(4).unwrap().to_string())
            })
            .expect("a cgroup v2 mount");
        let dir = Path::new(&mount).join(format!("osprey-prf-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup(dir)
    }

    fn adopt(&self, child: &Child) {
        std::fs::write(self.0.join("cgroup.procs"), child.id().to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes still inside go back to the parent cgroup first.
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            let parent = self.0.parent().unwrap().join("cgroup.procs");
            for pid in procs.lines() {
                let _ = std::fs::write(&parent, pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

#[test]
fn cgroup_selects_the_processes_inside_it() {
    if !bpf_available("profile_cgroup") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-cgroup");
    let program = build_c(dir.path());
    let cgroup = TestCgroup::create("cg");
    let (mut inside, mut outside) = (spawn_gated(&program, &["8"]), spawn_gated(&program, &["8"]));
    cgroup.adopt(&inside);
    let inside_pid = inside.id() as u64;
    let path = cgroup.0.to_str().unwrap().to_string();
    let (profile, done) = profile_json(&["--cgroup", &path], || {
        release(&mut inside);
        release(&mut outside);
        assert!(inside.wait().unwrap().success() && outside.wait().unwrap().success());
    });
    let by_pid = samples_by_pid(&profile);
    assert_eq!(
        by_pid.keys().copied().collect::<Vec<_>>(),
        vec![inside_pid],
        "{by_pid:?}\n{}",
        done.stderr
    );
    assert!(total(&profile) >= 50, "{by_pid:?}");
}

fn all_frames(profile: &Value) -> impl Iterator<Item = &Value> {
    stacks(profile)
        .iter()
        .flat_map(|s| s["frames"].as_array().unwrap())
}

#[test]
fn kernel_only_and_user_only_keep_their_side_of_the_stack() {
    if !bpf_available("profile_kernel_user_only") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-sides");
    let program = build_c(dir.path());
    let run = |side: &str| {
        let child = spawn_gated(&program, &["sys", "30"]);
        let pid = child.id().to_string();
        profile_json(&["--pid", &pid, side], || release_and_wait(child))
    };

    let (kernel, done) = run("--kernel-only");
    assert!(total(&kernel) >= 30, "{kernel}\n{}", done.stderr);
    assert!(all_frames(&kernel).all(|f| f["kernel"] == true), "{kernel}");
    // Reading /dev/zero is where this workload spends its kernel time.
    let reads: u64 = stacks(&kernel)
        .iter()
        .filter(|s| frame_names(s).iter().any(|n| n.contains("read")))
        .map(|s| s["value"].as_u64().unwrap())
        .sum();
    assert!(reads * 2 >= total(&kernel), "{kernel}");

    let (user, done) = run("--user-only");
    assert!(total(&user) >= 30, "{user}\n{}", done.stderr);
    assert!(all_frames(&user).all(|f| f["kernel"] == false), "{user}");
    // Both halves show up from user space: the burning loop and the reads.
    assert!(
        samples_with_chain(&user, &["main", "mid", "leaf"]) >= 10,
        "{user}"
    );
    assert!(
        samples_with_chain(&user, &["main", "zero_reader"]) >= 5,
        "{user}"
    );
}

#[test]
fn jit_code_is_named_from_the_perf_map() {
    if !bpf_available("profile_perf_map") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-jit");
    let program = build_c(dir.path());
    for unwind in ["fp", "auto"] {
        let child = spawn_gated(&program, &["jit", "6"]);
        let pid = child.id();
        let perf_map = PathBuf::from(format!("/tmp/perf-{pid}.map"));
        let pid = pid.to_string();
        let (profile, done) = profile_json(&["--pid", &pid, "--unwind", unwind], || {
            release_and_wait(child)
        });
        let _ = std::fs::remove_file(&perf_map);
        let in_jit: u64 =
            stacks(&profile)
                .iter()
                .filter(|s| {
                    s["frames"].as_array().unwrap().last().is_some_and(|f| {
                        f["name"] == "osprey_jit_spin" && f["module"] == "[perf-map]"
                    })
                })
                .map(|s| s["value"].as_u64().unwrap())
                .sum();
        assert!(
            total(&profile) >= 50,
            "{unwind}: {profile}\n{}",
            done.stderr
        );
        assert!(
            in_jit * 100 >= total(&profile) * 80,
            "{unwind}: {in_jit}: {profile}"
        );
    }
}

#[test]
fn a_process_that_exits_before_the_profile_ends_is_still_symbolized() {
    if !bpf_available("profile_short_lived") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-short");
    let c = build_c_named(dir.path(), "prf_short_c");
    let rust = build_rust(dir.path());
    let cases = [
        (c, "prf_short_c", vec!["main", "top", "mid", "leaf"]),
        // No frame pointers: the default switches it to dwarf unwinding while it runs.
        (
            rust,
            "osprey_burn",
            vec![
                "osprey_burn::burn",
                "osprey_burn::top",
                "osprey_burn::mid",
                "osprey_burn::leaf",
            ],
        ),
    ];
    for (program, comm, chain) in cases {
        let (profile, done) = profile_json(&["--comm", comm], || {
            // Started after the profiler, gone well before it stops; long enough (about a
            // second) that auto unwinding's frame-pointer-only start is a minority.
            let status = std::process::Command::new(&program)
                .arg("12")
                .stdin(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            std::thread::sleep(Duration::from_millis(500));
        });
        let ctx = format!("{comm}: {profile}\n{}", done.stderr);
        assert!(total(&profile) >= 30, "{ctx}");
        // Symbolized after it exited: the burning function is named in nearly every sample.
        let leaf = chain[chain.len() - 1];
        assert!(
            samples_with_chain(&profile, &[leaf]) * 100 >= total(&profile) * 80,
            "{ctx}"
        );
        // The whole chain: the Rust one only once auto unwinding switched it to DWARF
        // (its first samples, until the decision, stop after one frame; more under load).
        assert!(
            samples_with_chain(&profile, &chain) * 100 >= total(&profile) * 50,
            "{ctx}"
        );
    }
}

const CPP_WORKLOAD: &str = r#"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
namespace osprey_ns {
template <typename T> struct Spin {
    static volatile T sink;
    __attribute__((noinline)) static void leaf(int n) { T x = 0; for (int i = 0; i < n; i++) x += (T)i * i; sink = x; }
};
template <typename T> volatile T Spin<T>::sink;
}
int main(int argc, char **argv) {
    getchar();
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    for (int r = 0; r < reps; r++) osprey_ns::Spin<uint64_t>::leaf(10000000);
}
"#;

#[test]
fn cpp_names_are_demangled() {
    if !bpf_available("profile_cpp_demangling") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-cpp");
    let src = dir.path().join("cppburn.cpp");
    std::fs::write(&src, CPP_WORKLOAD).unwrap();
    let program = dir.path().join("cppburn");
    let status = std::process::Command::new("g++")
        .args(["-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&program)
        .arg(&src)
        .status()
        .expect("g++ is needed for the C++ profile test");
    assert!(status.success());
    let child = spawn_gated(&program, &["40"]);
    let pid = child.id().to_string();
    let (profile, done) = profile_json(&["--pid", &pid, "--unwind", "fp"], || {
        release_and_wait(child)
    });
    let demangled = samples_with_chain(
        &profile,
        &["main", "osprey_ns::Spin<unsigned long>::leaf(int)"],
    );
    assert!(total(&profile) >= 30, "{profile}\n{}", done.stderr);
    assert!(demangled * 100 >= total(&profile) * 80, "{profile}");
}
