//! Real-BPF tests of `osprey profile`: workloads with known call chains (C with frame
//! pointers, Rust release without them), every output format, off-CPU time, bad input.

mod common;
mod profile_workloads;

use std::io::Read;
use std::process::Command;

use common::*;
use profile_workloads::*;
use prost::Message;

fn assert_outputs_agree(run: &Profiled, names: &[&str]) {
    let folded_total: u64 = run.folded.iter().map(|(_, v)| v).sum();
    // The aggregated profile, the folded file and the kernel's own sample counters agree.
    assert_eq!(run.json["total"].as_u64(), Some(folded_total));
    let (cpu, cpu_dropped, _) = run.done.counters("cpu_sample");
    let (copied, copied_dropped, _) = run.done.counters("user_stack");
    assert_eq!((cpu_dropped, copied_dropped), (0, 0));
    assert_eq!(cpu + copied, folded_total, "{}", run.done.stderr);
    assert_eq!(
        run.done.summary()["profile"]["losses"]["count_map_full"],
        0,
        "{}",
        run.done.stderr
    );

    // SVG: well-formed XML naming every function.
    assert_well_formed_xml(&run.svg);
    for name in names {
        assert!(run.svg.contains(name), "SVG lacks {name}");
    }
    assert!(run.svg.contains(&format!("{folded_total} samples")));

    // pprof: gzip + profile.proto, same total, every sample's locations resolve.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(run.pprof.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let p = osprey::profile::pprof::PprofProfile::decode(raw.as_slice()).expect("pprof decodes");
    assert_eq!(p.string_table[0], "");
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total as u64, folded_total);
    for s in &p.sample {
        assert_eq!(s.value[1], s.value[0] * p.period);
        for id in &s.location_id {
            assert!(p.location.iter().any(|l| l.id == *id));
        }
    }
    let function_names: Vec<&str> = p
        .function
        .iter()
        .map(|f| p.string_table[f.name as usize].as_str())
        .collect();
    for name in names {
        assert!(
            function_names.iter().any(|f| f == name),
            "pprof lacks {name}"
        );
    }
}

#[test]
fn c_with_frame_pointers_profiles_its_call_chain_in_every_format() {
    if !bpf_available("profile_c_frame_pointers") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-c");
    let program = build_c(dir.path());
    let run = profile_run(
        dir.path(),
        &program,
        "12",
        &["--freq", "299", "--unwind", "fp"],
    );
    assert_chain(&run, "main;top;mid;leaf", "leaf");
    assert_outputs_agree(&run, &["leaf", "mid", "top", "main"]);
    let frames = run.json["stacks"][0]["frames"].as_array().unwrap();
    let leaf = frames.iter().find(|f| f["name"] == "leaf").unwrap();
    assert!(
        leaf["file"].as_str().unwrap().ends_with("cburn.c"),
        "{leaf}"
    );
    assert_eq!(leaf["line"].as_u64().map(|l| l > 0), Some(true), "{leaf}");
}

#[test]
fn python_functions_are_named_with_file_and_line_between_native_frames() {
    if !bpf_available("profile_python") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-python");
    let Some((python, script)) = python_workload(dir.path()) else {
        eprintln!("SKIP profile_python: no /usr/bin/python3.11");
        assert!(
            std::env::var_os("OSPREY_REQUIRE_BPF").is_none(),
            "python3.11 missing"
        );
        return;
    };
    let run = profile_run_args(
        dir.path(),
        &python,
        &[script.to_str().unwrap(), "40"],
        &["--freq", "299"],
    );
    assert_chain(&run, "<module>;top;mid;leaf", "leaf");
    assert_outputs_agree(&run, &["leaf", "mid", "top"]);
    // Native frames stay around the Python ones: the interpreter's entry below them.
    assert!(
        run.folded
            .iter()
            .any(|(s, _)| s.contains("main;") && s.contains(";top;mid;leaf")),
        "{:?}",
        run.folded
    );
    let frames = run.json["stacks"][0]["frames"].as_array().unwrap();
    for (name, lines) in [("leaf", 4..=7), ("mid", 10..=14), ("top", 17..=21)] {
        let f = frames.iter().find(|f| f["name"] == name).unwrap();
        assert!(f["file"].as_str().unwrap().ends_with("chain.py"), "{f}");
        let line = f["line"].as_u64().unwrap();
        assert!(lines.contains(&line), "{f}");
    }
}

#[test]
fn rust_without_frame_pointers_needs_and_gets_dwarf_unwinding() {
    if !bpf_available("profile_rust_dwarf") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-rust");
    let program = build_rust(dir.path());
    let chain =
        "osprey_burn::main;osprey_burn::burn;osprey_burn::top;osprey_burn::mid;osprey_burn::leaf";

    let dwarf = profile_run(
        dir.path(),
        &program,
        "12",
        &["--freq", "299", "--unwind", "dwarf"],
    );
    assert_chain(&dwarf, chain, "osprey_burn::leaf");
    assert_outputs_agree(
        &dwarf,
        &["osprey_burn::leaf", "osprey_burn::mid", "osprey_burn::top"],
    );

    // Frame pointers alone lose the chain: the reason dwarf exists.
    let fp = profile_run(
        dir.path(),
        &program,
        "6",
        &["--freq", "299", "--unwind", "fp"],
    );
    let fp_chain = sum_where(&fp.folded, |s| s.contains(chain));
    assert_eq!(fp_chain, 0, "{:?}", fp.folded);

    // The default recognises the missing frame pointers and switches to dwarf.
    let auto = profile_run(dir.path(), &program, "12", &["--freq", "299"]);
    let total = sum_where(&auto.folded, |_| true);
    let recovered = sum_where(&auto.folded, |s| s.contains(chain));
    assert!(
        recovered * 100 >= total * 70,
        "auto: {recovered} of {total}: {:?}",
        auto.folded
    );
}

#[test]
fn dwarf_windows_widen_for_stacks_deeper_than_the_first_copy() {
    if !bpf_available("profile_dwarf_window") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-window");
    let program = build_rust(dir.path());
    let child = spawn_gated(&program, &["12", "deep"]);
    let pid = child.id().to_string();
    let folded_path = dir.path().join("deep.folded");
    let tracer = Tracer::start(&[
        "profile",
        "--pid",
        &pid,
        "--freq",
        "299",
        "--unwind",
        "dwarf",
        "--output",
        "json",
        "--folded",
        folded_path.to_str().unwrap(),
    ]);
    release_and_wait(child);
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let stacks = folded(&folded_path);
    let total: u64 = stacks.iter().map(|(_, v)| v).sum();
    // 40 KB of locals separate main from the burning frames: the first 8 KB windows cut
    // the stacks there, then the window widens and the whole chain comes back.
    let whole = sum_where(&stacks, |s| {
        s.contains("osprey_burn::main;osprey_burn::big_frame;osprey_burn::burn;osprey_burn::top")
    });
    let losses = &done.summary()["profile"]["losses"];
    assert!(total >= 100, "{stacks:?}");
    assert!(
        whole * 100 >= total * 70,
        "{whole} of {total}: {losses}\n{stacks:#?}"
    );
    assert!(
        losses["dwarf_stacks_cut_by_window"].as_u64().unwrap() > 0,
        "{losses}"
    );
}

#[test]
fn off_cpu_time_of_a_sleeping_function_is_about_one_second() {
    if !bpf_available("profile_off_cpu") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("profile-offcpu");
    let program = build_c(dir.path());
    let child = spawn_gated(&program, &["sleep"]);
    let pid = child.id().to_string();
    let out = dir.path().join("off.folded");
    let tracer = off_cpu_tracer(&pid, &out);
    release_and_wait(child);
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let stacks = folded(&out);
    let slept: u64 = stacks
        .iter()
        .filter(|(s, _)| s.contains("main;sleepy_top;sleepy_leaf;"))
        .map(|(_, v)| v)
        .sum();
    let secs = slept as f64 / 1e9;
    assert!((0.8..=1.2).contains(&secs), "slept {secs} s: {stacks:?}");
    // The kernel side shows where it blocked, without our own program's frames.
    let line = &stacks.iter().max_by_key(|(_, v)| *v).unwrap().0;
    assert!(line.contains("schedule_[k]"), "{line}");
    assert!(!line.contains("bpf_prog"), "{line}");
}

#[test]
fn on_a_terminal_a_progress_line_and_the_top_table_show() {
    if !bpf_available("profile_tty") {
        return;
    }
    let _serial = serial();
    // A burner of known functions, so the table has rows however idle the machine is.
    let dir = TempDir::new("profile-tty");
    let mut burner = spawn_gated(&build_c(dir.path()), &["100000"]);
    release(&mut burner);
    // script(1) gives osprey a pseudo-terminal for stdout and stderr.
    let out = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{OSPREY} profile --duration 2.5 --top 5 --pid {}",
            burner.id()
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux)");
    let _ = burner.kill();
    let _ = burner.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\rosprey: 1 s, "), "{text}");
    assert!(text.contains(" samples, 0 lost"), "{text}");
    let header = text
        .lines()
        .find(|l| l.contains("SELF%"))
        .expect("top table");
    assert!(
        header.contains("TOTAL%") && header.contains("FUNCTION"),
        "{text}"
    );
    let rows = text
        .lines()
        .skip_while(|l| !l.contains("SELF%"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(rows, 5, "{text}");
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let gone = gone_pid();
    for (args, expect) in [
        (vec!["profile", "--freq", "0"], "out of range"),
        (vec!["profile", "--freq", "100000"], "out of range"),
        (vec!["profile", "--pid", gone.as_str()], "no such process"),
        (vec!["profile", "--children"], "--pid"),
        (
            vec!["profile", "--cgroup", "/nonexistent-cgroup"],
            "--cgroup",
        ),
    ] {
        let out = Command::new(OSPREY).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}
