//! Real-BPF tests of `osprey files`: real opens, exact fields.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use base64::Engine;
use common::*;

fn workload_open(path: &OsStr) -> u32 {
    let (pid, status) = run(Command::new(WORKLOAD).arg("open").arg("1").arg(path));
    assert!(status.success());
    pid
}

#[test]
fn open_of_a_unique_path_and_a_failed_open() {
    if !bpf_available("open_of_a_unique_path_and_a_failed_open") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("open");
    let file = dir.path().join("present.txt");
    std::fs::write(&file, b"x").unwrap();
    let missing = dir.path().join("missing.txt");

    let tracer = Tracer::start(&["files", "--output", "json", "--comm", "osprey-workload"]);
    let ok_pid = workload_open(file.as_os_str());
    let fail_pid = workload_open(missing.as_os_str());
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let events = done.events();

    let ok: Vec<_> = of(&events, "file_open", ok_pid)
        .into_iter()
        .filter(|e| e["path"] == file.to_str().unwrap())
        .collect();
    assert_eq!(ok.len(), 1, "exactly one open of {file:?}: {ok:?}");
    let e = &ok[0];
    assert_eq!(e["process"]["comm"], "osprey-workload");
    assert_eq!(e["process"]["tid"], ok_pid);
    assert_eq!(e["syscall"], "openat");
    assert_eq!(e["flags_text"], "O_RDONLY");
    assert_eq!(e["errno"], 0);
    assert!(e["fd"].as_i64().unwrap() >= 3, "fd {}", e["fd"]);
    assert_eq!(e["abs_path"], file.to_str().unwrap());
    assert!(e["inode"].as_u64().unwrap() > 0);
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert!(e["process"]["exe"]
        .as_str()
        .unwrap()
        .ends_with("/osprey-workload"));

    let failed: Vec<_> = of(&events, "file_open", fail_pid)
        .into_iter()
        .filter(|e| e["path"] == missing.to_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["errno"], libc::ENOENT);
    assert_eq!(failed[0]["error"], "ENOENT");
    assert!(failed[0]["fd"].is_null());
    assert_eq!(failed[0]["abs_path"], missing.to_str().unwrap());
    assert!(
        done.stop_latency < std::time::Duration::from_secs(1) * slowdown(),
        "stopped in {:?}",
        done.stop_latency
    );
}

#[test]
fn relative_opens_from_a_short_lived_child_resolve_to_absolute_paths() {
    relative_opens_resolve(&[]);
}

/// The path walks without bpf_loop, as on kernels before 5.17.
#[test]
fn relative_opens_resolve_with_bounded_loops() {
    relative_opens_resolve(&[("OSPREY_NO_BPF_LOOP", "1")]);
}

fn relative_opens_resolve(env: &[(&str, &str)]) {
    if !bpf_available("relative_opens") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("rel");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("target"), b"x").unwrap();
    let tracer = Tracer::start_with_env(
        &["files", "--output", "json", "--comm", "osprey-workload"],
        env,
    );
    // The child opens and exits at once: resolution must not depend on it still living.
    let (ok_pid, _) = run(Command::new(WORKLOAD)
        .args(["open-relative"])
        .arg(dir.path())
        .arg("sub/../target"));
    let (fail_pid, _) = run(Command::new(WORKLOAD)
        .args(["open-relative"])
        .arg(dir.path())
        .arg("sub/./nope"));
    let done = tracer.stop();
    let events = done.events();
    let ok = of(&events, "file_open", ok_pid);
    let ok: Vec<_> = ok.iter().filter(|e| e["path"] == "sub/../target").collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0]["syscall"], "open");
    assert_eq!(
        ok[0]["abs_path"],
        dir.path().join("target").to_str().unwrap()
    );
    let fail = of(&events, "file_open", fail_pid);
    let fail: Vec<_> = fail.iter().filter(|e| e["path"] == "sub/./nope").collect();
    assert_eq!(fail.len(), 1);
    assert_eq!(fail[0]["error"], "ENOENT");
    assert_eq!(
        fail[0]["abs_path"],
        dir.path().join("sub/nope").to_str().unwrap()
    );
}

#[test]
fn openat2_is_traced() {
    if !bpf_available("openat2_is_traced") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("openat2");
    let file = dir.path().join("o2");
    std::fs::write(&file, b"x").unwrap();
    let tracer = Tracer::start(&["files", "--output", "json", "--comm", "osprey-workload"]);
    let (pid, _) = run(Command::new(WORKLOAD).arg("openat2").arg(&file));
    let events = tracer.stop().events();
    let e: Vec<_> = of(&events, "file_open", pid)
        .into_iter()
        .filter(|e| e["syscall"] == "openat2")
        .collect();
    assert_eq!(e.len(), 1, "{events:?}");
    assert_eq!(e[0]["path"], file.to_str().unwrap());
    assert_eq!(e[0]["flags_text"], "O_RDONLY|O_CLOEXEC");
    assert_eq!(e[0]["resolve"], 0);
    assert!(e[0]["fd"].as_i64().unwrap() >= 3);
}

/// Names with a newline, an ANSI escape, invalid UTF-8, and a 4,000-byte path.
fn hostile_paths(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let base = dir.as_os_str().as_bytes().to_vec();
    let mut out = Vec::new();
    for name in [&b"new\nline"[..], b"esc\x1b[31mred", b"bad\xff\xfeutf8"] {
        let mut p = base.clone();
        p.push(b'/');
        p.extend_from_slice(name);
        out.push(p);
    }
    let mut long = base.clone();
    while long.len() < 4000 - 201 {
        long.push(b'/');
        long.extend(std::iter::repeat_n(b'd', 199));
        std::fs::create_dir(OsStr::from_bytes(&long)).unwrap();
    }
    long.push(b'/');
    long.extend(std::iter::repeat_n(b'f', 4000 - long.len()));
    assert_eq!(long.len(), 4000);
    out.push(long);
    for p in &out {
        std::fs::write(OsStr::from_bytes(p), b"x").unwrap();
    }
    out
}

#[test]
fn hostile_file_names_are_escaped_in_tables_and_lossless_in_json() {
    if !bpf_available("hostile_file_names") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("names");
    let paths = hostile_paths(dir.path());
    let prefix = dir.path().to_str().unwrap();

    let json = Tracer::start(&[
        "files",
        "--output",
        "json",
        "--comm",
        "osprey-workload",
        "--path-prefix",
        prefix,
    ]);
    let pids: Vec<u32> = paths
        .iter()
        .map(|p| workload_open(OsStr::from_bytes(p)))
        .collect();
    let events = json.stop().events();
    for (path, pid) in paths.iter().zip(&pids) {
        let e = of(&events, "file_open", *pid);
        assert_eq!(
            e.len(),
            1,
            "one event for {:?}",
            String::from_utf8_lossy(path)
        );
        // JSON: the exact bytes come back, from the string or from its base64 copy.
        let decoded = match e[0].get("path_b64") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap())
                .unwrap(),
            None => e[0]["path"].as_str().unwrap().as_bytes().to_vec(),
        };
        assert_eq!(&decoded, path);
        let abs = match e[0].get("abs_path_b64") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap())
                .unwrap(),
            None => e[0]["abs_path"].as_str().unwrap().as_bytes().to_vec(),
        };
        assert_eq!(&abs, path, "resolved path is exact too");
        assert_eq!(e[0]["path_truncated"], false);
    }
    assert!(of(&events, "file_open", pids[2])[0]
        .get("path_b64")
        .is_some());

    let table = Tracer::start(&[
        "files",
        "--comm",
        "osprey-workload",
        "--path-prefix",
        prefix,
    ]);
    for p in &paths {
        workload_open(OsStr::from_bytes(p));
    }
    let done = table.stop();
    let text = String::from_utf8(done.stdout).expect("table output is UTF-8");
    assert!(!text.contains('\x1b'), "raw escape reached the terminal");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        4,
        "one line per open, none split by a newline: {text}"
    );
    assert!(rows[0].ends_with("/new\\nline"), "{}", rows[0]);
    assert!(rows[1].ends_with("/esc\\e[31mred"), "{}", rows[1]);
    assert!(rows[2].ends_with("/bad\\xff\\xfeutf8"), "{}", rows[2]);
    assert!(
        rows[3].ends_with(&"f".repeat(100)),
        "long path printed whole"
    );
}

#[test]
fn rate_limiter_accounts_for_every_open() {
    if !bpf_available("rate_limiter") {
        return;
    }
    let _serial = serial();
    let gated = Gated::spawn(&[
        OsStr::new("open"),
        OsStr::new("10000"),
        OsStr::new("/nonexistent/osprey-rate"),
        OsStr::new("--gate"),
    ]);
    let pid = gated.pid().to_string();
    let tracer = Tracer::start(&[
        "files",
        "--output",
        "json",
        "--pid",
        &pid,
        "--rate-limit",
        "100",
    ]);
    assert!(gated.release_and_wait().success());
    let done = tracer.stop();
    let (emitted, dropped, throttled) = done.counters("file_open");
    assert!(throttled > 0, "nothing throttled");
    assert_eq!(emitted + dropped + throttled, 10_000);
    assert!(
        (100..1_000).contains(&emitted),
        "burst of ~100 then ~100/s: {emitted}"
    );
    assert_eq!(
        done.events().len() as u64,
        emitted,
        "every emitted event was written"
    );
}

#[test]
fn two_hundred_thousand_opens_at_full_speed_lose_nothing() {
    if !bpf_available("two_hundred_thousand_opens") {
        return;
    }
    let _serial = serial();
    let gated = Gated::spawn(&[
        OsStr::new("open"),
        OsStr::new("200000"),
        OsStr::new("/nonexistent/osprey-flood"),
        OsStr::new("--gate"),
    ]);
    let pid = gated.pid().to_string();
    let tracer = Tracer::start(&["files", "--output", "json", "--pid", &pid]);
    assert!(gated.release_and_wait().success());
    let done = tracer.stop();
    let (emitted, dropped, throttled) = done.counters("file_open");
    assert_eq!((emitted, dropped, throttled), (200_000, 0, 0));
    let lines = done.stdout.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(lines, 200_000, "every event delivered to the output");
}
