//! Hostile input and hostile circumstances (issue 18): huge values, a second agent,
//! unwritable outputs, missing privileges. Each case ends with a clear message and the
//! documented exit code, never a panic.

mod agent_support;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use agent_support::*;
use common::*;

#[test]
fn huge_second_values_exit_2_with_a_range_message() {
    let cases: &[&[&str]] = &[
        &["files", "--duration", "1e19"],
        &["files", "--stats", "1e300"],
        &["exec", "--duration", "1e300"],
        &["top", "--once", "--interval", "1e300"],
        &["profile", "--duration", "1e300"],
        &["secure", "--learn", "1e300"],
        &["memory", "--duration", "1e19"],
        &["syscalls", "--duration", "1e19"],
        &["flows", "--idle-timeout", "1e300"],
    ];
    for args in cases {
        let out = osprey(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("out of range"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Modification times of every file in `dir` (recursively one level).
fn mtimes(dir: &std::path::Path) -> Vec<(String, SystemTime)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().modified().unwrap())
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_second_agent_refuses_naming_the_first_and_a_killed_one_is_replaced() {
    if !bpf_available("second_agent") {
        return;
    }
    let _serial = serial();
    let a = AgentRun::new("second-agent", "");
    let first = a.start();
    assert_eq!(a.ctl(&["list"])["ok"], true);
    let state_before = mtimes(&a.state());

    let config = a.config();
    let second = osprey(&["agent", "--config", config.to_str().unwrap()]);
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(!err.contains("started"), "it loaded modules: {err}");
    // Nothing of the first agent's was touched: its state files, its control socket.
    assert_eq!(mtimes(&a.state()), state_before);
    assert_eq!(
        a.ctl(&["list"])["ok"],
        true,
        "the first agent is still reachable"
    );

    // A SIGKILLed agent leaves its socket behind; the next agent takes over.
    signal(&first, libc::SIGKILL);
    let killed = first.wait(Duration::from_secs(5));
    assert!(!killed.status.success());
    assert!(
        std::path::Path::new(&a.socket()).exists(),
        "stale socket left"
    );
    let third = a.start();
    assert_eq!(a.ctl(&["list"])["ok"], true);
    signal(&third, libc::SIGTERM);
    assert!(third.wait(Duration::from_secs(5)).status.success());
}

#[test]
fn unwritable_outputs_are_refused_before_the_work_starts() {
    let file = TempDir::new("outputs");
    let in_the_way = file.path().join("plain-file");
    std::fs::write(&in_the_way, "x").unwrap();
    let state_dir = in_the_way.join("state");
    let cases: &[(&[&str], &str)] = &[
        (
            &["profile", "--duration", "30", "--svg", "/nonexistent/x.svg"],
            "--svg /nonexistent/x.svg",
        ),
        (
            &[
                "profile",
                "--duration",
                "30",
                "--pprof",
                "/nonexistent/x.pb.gz",
            ],
            "--pprof",
        ),
        (
            &["profile", "--duration", "30", "--folded", "/nonexistent/x"],
            "--folded",
        ),
        (
            &[
                "memory",
                "--duration",
                "30",
                "--heatmap",
                "/nonexistent/h.svg",
            ],
            "--heatmap /nonexistent/h.svg",
        ),
        (
            &[
                "secure",
                "--learn",
                "30",
                "--state-dir",
                state_dir.to_str().unwrap(),
            ],
            "is a file, not a directory",
        ),
    ];
    for (args, needle) in cases {
        let started = std::time::Instant::now();
        let out = osprey(args);
        let err = stderr(&out);
        // Exit 2 at once: the 30 s of work never started.
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?}");
        assert!(!err.contains("osprey: tracing"), "{args:?} started: {err}");
    }
}

#[test]
fn missing_privilege_exits_77_before_reading_state() {
    if !bpf_available("privilege_exit_codes") {
        return;
    }
    let a = AgentRun::new("ctl-nobody", "");
    // A root-only socket (mode 0600) as the agent makes it.
    let _listener = {
        std::fs::create_dir_all(a.dir.path()).unwrap();
        let l = std::os::unix::net::UnixListener::bind(a.socket()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(a.socket(), std::fs::Permissions::from_mode(0o600)).unwrap();
        // Others must reach the socket's directory to get as far as the socket.
        std::fs::set_permissions(a.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        l
    };
    let socket = a.socket();
    let cases: &[&[&str]] = &[
        &["ctl", "--socket", &socket, "list"],
        &["secure", "--state-dir", "/root"],
        &[
            "secure",
            "--learn",
            "5",
            "--state-dir",
            "/root/osprey-state",
        ],
    ];
    for args in cases {
        let out = as_unprivileged_user(args).expect("could not run as another user");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(77), "{args:?}: {err}");
    }
}

#[test]
fn an_idle_profile_exits_0_with_a_valid_empty_svg_and_pprof() {
    if !bpf_available("idle_profile") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("idle-profile");
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let svg = dir.path().join("z.svg");
    let pprof = dir.path().join("z.pb.gz");
    let out = osprey(&[
        "profile",
        "--pid",
        &pid,
        "--duration",
        "1",
        "--svg",
        svg.to_str().unwrap(),
        "--pprof",
        pprof.to_str().unwrap(),
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no samples were taken"), "{err}");
    assert!(err.contains("losses: none"), "{err}");
    assert!(!err.contains("{\""), "raw JSON in table mode: {err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_xml(&text);
    assert!(text.contains("no samples were taken"), "{text}");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::read(&pprof).unwrap().as_slice()),
        &mut raw,
    )
    .expect("pprof is gzip");
    let p = <osprey::profile::pprof::PprofProfile as prost::Message>::decode(raw.as_slice())
        .expect("pprof decodes");
    assert!(p.sample.is_empty());
}

#[test]
fn a_thread_id_given_to_pid_is_refused_naming_its_process() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap().to_string();
    for cmd in ["files", "exec", "profile"] {
        let out = osprey(&[cmd, "--pid", &tid, "--duration", "1"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!("thread of process {}", std::process::id())),
            "{cmd}: {err}"
        );
    }
    done_tx.send(()).unwrap();
    thread.join().unwrap();
}

#[test]
fn files_leaves_its_own_process_out_unless_asked() {
    if !bpf_available("files_self") {
        return;
    }
    let _serial = serial();
    for include in [false, true] {
        let mut args = vec!["files", "--output", "json", "--path-prefix", "/proc/"];
        if include {
            args.push("--include-self");
        }
        let tracer = Tracer::start(&args);
        let me = tracer.pid();
        // osprey reads /proc/PID/stat of each new process it learns about.
        for _ in 0..3 {
            run(Command::new(WORKLOAD).args(["open", "1", "/proc/self/stat"]));
        }
        let events = tracer.stop().events();
        let own = of(&events, "file_open", me).len();
        if include {
            assert!(own > 0, "--include-self shows osprey's own opens");
        } else {
            assert_eq!(own, 0, "osprey's own opens are left out");
        }
    }
}

/// Starts `program open COUNT PATH --gate` pinned to `cpu`; it opens once released.
fn pinned_opener(program: &std::path::Path, cpu: usize, count: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(["open", count, "/nonexistent/osprey-global-rate", "--gate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn pinned opener")
}

#[test]
fn the_global_rate_limit_is_one_limit_for_the_machine() {
    if !bpf_available("global_rate_limit") {
        return;
    }
    let _serial = serial();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A name of our own, so that the kernel's --comm filter sees only these openers.
    let dir = TempDir::new("global-rate");
    let comm = format!("grl{}", std::process::id() % 100_000);
    let program = dir.path().join(&comm);
    std::os::unix::fs::symlink(WORKLOAD, &program).unwrap();
    const LIMIT: u64 = 200;
    const EACH: u64 = 5000;
    // One opener alone on one CPU, then one on every CPU at once: both get the whole limit
    // (one second's burst; a run crossing into the next second may get a second one).
    for cpu_set in [vec![0], (0..cpus).collect::<Vec<_>>()] {
        let limit = LIMIT.to_string();
        let tracer = Tracer::start(&[
            "files",
            "--output",
            "json",
            "--comm",
            &comm,
            "--global-rate-limit",
            &limit,
        ]);
        let mut openers: Vec<_> = cpu_set
            .iter()
            .map(|&cpu| pinned_opener(&program, cpu, &EACH.to_string()))
            .collect();
        for o in &mut openers {
            use std::io::Write;
            o.stdin.take().unwrap().write_all(b"\n").unwrap();
        }
        for mut o in openers {
            assert!(o.wait().unwrap().success());
        }
        let done = tracer.stop();
        let (emitted, dropped, throttled) = done.counters("file_open");
        let total = EACH * cpu_set.len() as u64;
        // Each opener's start-up (the dynamic loader) opens a few files of its own.
        let seen = emitted + dropped + throttled;
        assert!(
            (total..total + 100 * cpu_set.len() as u64).contains(&seen),
            "{seen}"
        );
        assert!(
            (LIMIT * 9 / 10..=2 * LIMIT + 20).contains(&emitted),
            "CPUs {cpu_set:?}: {emitted} of {total} emitted with a limit of {LIMIT}/s"
        );
    }
}

#[test]
fn tables_keep_their_columns_mark_truncation_and_escape_bidi_controls() {
    if !bpf_available("table_columns") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("tables");
    let prefix = dir.path().to_str().unwrap().to_string();
    let too_long = format!("{prefix}/{}", "a/".repeat(2100));
    let bidi = format!("{prefix}/evil\u{202e}gnp.exe");
    let open = |p: &str| run(Command::new(WORKLOAD).args(["open", "1", p]));

    let table = Tracer::start(&[
        "files",
        "--comm",
        "osprey-workload",
        "--path-prefix",
        &prefix,
    ]);
    open(&too_long);
    open(&bidi);
    let text = String::from_utf8(table.stop().stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let flags_at = lines[0].find("FLAGS").unwrap();
    let long = lines
        .iter()
        .find(|l| l.contains("ENAMETOOLONG"))
        .expect(&text);
    assert_eq!(
        long.find("O_RDONLY"),
        Some(flags_at),
        "FLAGS column kept:\n{text}"
    );
    assert!(long.ends_with(" [truncated]"), "{long}");
    assert!(text.contains("evil\\u{202e}gnp.exe"), "{text}");
    assert!(!text.contains('\u{202e}'), "raw bidi control printed");

    let json = Tracer::start(&[
        "files",
        "--output",
        "json",
        "--comm",
        "osprey-workload",
        "--path-prefix",
        &prefix,
    ]);
    let (pid, _) = open(&too_long);
    let events = json.stop().events();
    let e = &of(&events, "file_open", pid)[0];
    assert_eq!(e["error"], "ENAMETOOLONG");
    assert_eq!(e["abs_path_truncated"], true, "{e}");

    let exec = Tracer::start(&["exec", "--comm", "osprey-workload"]);
    open(&format!("{prefix}/sp ace"));
    let text = String::from_utf8(exec.stop().stdout).unwrap();
    assert!(
        text.contains(&format!(" open 1 '{prefix}/sp ace'")),
        "{text}"
    );

    // A failed exec: RET holds the errno name without pushing DETAILS out of its column.
    // The forked child carries this thread's name until its exec.
    let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let failed = Tracer::start(&["exec", "--failed", "--comm", comm.trim()]);
    let missing = format!("{prefix}/no-such-program");
    assert!(Command::new(&missing).status().is_err());
    let text = String::from_utf8(failed.stop().stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let details_at = lines[0].find("DETAILS").unwrap();
    assert!(lines[1].contains(" ENOENT "), "{text}");
    assert_eq!(
        lines[1].find(&missing),
        Some(details_at),
        "DETAILS column kept:\n{text}"
    );
}

#[test]
fn a_state_dir_that_is_a_file_is_explained_and_os_errors_are_said_once() {
    if !bpf_available("state_dir_file") {
        return;
    }
    let dir = TempDir::new("statefile");
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let socket = dir.path().join("ctl.sock");
    let (file, socket) = (file.to_str().unwrap(), socket.to_str().unwrap());
    for args in [
        &["agent", "--state-dir", file, "--control-socket", socket][..],
        &["secure", "--watch", "/etc/hostname", "--state-dir", file],
    ] {
        let out = osprey(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{file} is a file, not a directory")),
            "{err}"
        );
    }
    let state = dir.path().join("state");
    let out = osprey(&[
        "agent",
        "--state-dir",
        state.to_str().unwrap(),
        "--control-socket",
        socket,
        "--log",
        "/proc/osprey-no-such/events.jsonl",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn a_huge_ring_and_an_unknown_denied_program_are_warned_about() {
    if !bpf_available("ring_and_deny_warnings") {
        return;
    }
    let _serial = serial();
    let out = Command::new(OSPREY)
        .args(["exec", "--ring-mib", "512", "--duration", "0.2"])
        .env("OSPREY_DENY_PROGRAMS", "files_open_fexit,files_opne_fexit")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: --ring-mib 512"), "{err}");
    assert!(
        err.contains("OSPREY_DENY_PROGRAMS names no program of Osprey's: files_opne_fexit ("),
        "only the unknown name: {err}"
    );
    assert_eq!(
        err.matches("OSPREY_DENY_PROGRAMS").count(),
        1,
        "warned once: {err}"
    );
}

#[test]
fn alert_output_is_escaped_like_comm() {
    use std::os::unix::ffi::OsStrExt;
    if !bpf_available("alert_escaping") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("alert-escape");
    let prefix = dir.path().to_str().unwrap();
    // A program and a file whose names are not UTF-8.
    let program = dir.path().join(std::ffi::OsStr::from_bytes(b"w\xffx"));
    std::os::unix::fs::symlink(WORKLOAD, &program).unwrap();
    let target = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::write(&target, "x").unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "- rule: odd_names\n  desc: d\n  severity: low\n  condition: evt.kind = open and file.path glob \"{prefix}/bad*\"\n  output: \"%proc.name opened %file.path\"\n"
        ),
    )
    .unwrap();
    let tracer = Tracer::start(&[
        "secure",
        "--no-default-rules",
        "--rules",
        rules.to_str().unwrap(),
    ]);
    run(Command::new(&program).arg("open").arg("1").arg(&target));
    let text = String::from_utf8(tracer.stop().stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("odd_names"))
        .unwrap_or_else(|| panic!("no alert:\n{text}"));
    assert!(!line.contains('\u{fffd}'), "{line}");
    assert!(line.contains(" w\\xffx "), "COMM: {line}");
    assert!(
        line.contains(&format!("w\\xffx opened {prefix}/bad\\xffname")),
        "OUTPUT: {line}"
    );
}
