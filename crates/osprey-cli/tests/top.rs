//! Real-BPF tests of `osprey top`: with `osprey files` attached and files being opened, the
//! snapshot shows that tracer's program running; the terminal UI renders in an 80x24 tmux
//! pane, re-sorts on a key and quits with `q`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Runs `osprey top ARGS` to completion while opening `file` over and over.
fn top_while_opening(args: &[&str], file: &Path) -> (Output, u64) {
    let child = Command::new(OSPREY)
        .arg("top")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn osprey top");
    let mut child = child;
    let mut opens = 0u64;
    while child.try_wait().unwrap().is_none() {
        for _ in 0..100 {
            drop(std::fs::File::open(file).unwrap());
            opens += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (child.wait_with_output().unwrap(), opens)
}

/// The kernel id of the program `osprey files` traced opens with (from its JSON summary).
fn files_program_id(summary: &Value) -> u64 {
    let programs = summary["programs"].as_array().expect("programs in summary");
    let ids: Vec<u64> = programs
        .iter()
        .filter(|p| p["capability"] == "files" && p["run_count"].as_u64().unwrap_or(0) > 0)
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one running files program: {summary}");
    ids[0]
}

#[test]
fn once_shows_the_files_program_running() {
    if !bpf_available("once_shows_the_files_program_running") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("top");
    let file = dir.path().join("opened.txt");
    std::fs::write(&file, b"x").unwrap();

    // Events are filtered to pid 1 in the kernel: the program still runs on every open.
    let tracer = Tracer::start(&["files", "--output", "json", "--pid", "1"]);
    let (json, json_opens) = top_while_opening(&["--once", "--interval", "1", "-o", "json"], &file);
    let (text, text_opens) = top_while_opening(&["--once", "--all", "--interval", "1"], &file);
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let id = files_program_id(&done.summary());

    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let snapshot: Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    let interval = snapshot["interval_s"].as_f64().unwrap();
    assert!((1.0..2.0).contains(&interval), "interval {interval}");
    let programs = snapshot["programs"].as_array().unwrap();
    assert!(
        programs.iter().all(|p| p["capability"].is_string()),
        "without --all only Osprey's programs: {snapshot}"
    );
    let row = programs
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no row for program {id}: {snapshot}"));
    assert_eq!(row["capability"], "files");
    assert!(row["name"].as_str().unwrap().starts_with("files_open_"));
    // We opened the file continuously through the whole interval.
    let runs = row["runs_per_sec"].as_f64().unwrap();
    assert!(json_opens >= 1000, "only {json_opens} opens");
    assert!(
        runs * interval >= json_opens as f64 * 0.5,
        "{runs} runs/s over {interval} s for {json_opens} opens"
    );
    assert!(row["avg_ns"].as_u64().unwrap() > 0, "{row}");
    assert!(row["cpu_percent"].as_f64().unwrap() > 0.0, "{row}");
    assert!(snapshot["capabilities"].is_array(), "{snapshot}");

    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8(text.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "TYPE", "NAME", "CAP", "CPU%", "RUNS/s", "AVG", "ns"]
    );
    let row: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for program {id}:\n{text}"));
    assert!(row[2].starts_with("files_open_"), "{row:?}");
    assert_eq!(row[3], "files");
    let runs: f64 = row[5].parse().unwrap();
    assert!(
        runs >= text_opens as f64 * 0.5,
        "{runs} runs/s for {text_opens} opens in about 1 s:\n{text}"
    );
    assert!(
        text.lines().count() > 2,
        "--all lists the other programs too:\n{text}"
    );
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", &self.socket]).stdout)
            .into_owned()
    }

    /// Waits until the pane shows something `ready` accepts; returns it.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "tmux pane never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
        // tmux leaves the socket file of a server that exited with its last session.
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".to_string());
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.socket));
    }
}

fn tmux_available(test: &str) -> bool {
    let found = Command::new("tmux").arg("-V").output().is_ok();
    osprey_workload::require(test, found, "tmux is not installed")
}

#[test]
fn terminal_ui_renders_in_80x24_sorts_and_quits() {
    if !bpf_available("terminal_ui_renders_in_80x24_sorts_and_quits")
        || !tmux_available("terminal_ui_renders_in_80x24_sorts_and_quits")
    {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("top-tui");
    let status = dir.path().join("status");
    let tracer = Tracer::start(&["files", "--output", "json", "--pid", "1"]);

    let tmux = Tmux {
        socket: format!("osprey-top-test-{}", std::process::id()),
    };
    let shell = format!(
        "'{}' top --interval 0.3; echo $? > '{}'",
        OSPREY,
        status.display()
    );
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        &tmux.socket,
        "-x",
        "80",
        "-y",
        "24",
        &shell,
    ]);
    assert!(started.status.success(), "{started:?}");

    let screen = tmux.wait_for("program rows", |s| {
        s.lines()
            .any(|l| l.contains("files_open_") && l.contains(" files "))
    });
    let lines: Vec<&str> = screen.lines().collect();
    assert!(
        lines[0].starts_with("osprey top  Osprey programs: "),
        "{screen}"
    );
    assert!(lines[0].contains("sort: cpu"), "{screen}");
    assert!(screen.contains("total CPU %"), "{screen}");
    let header = lines
        .iter()
        .find(|l| l.contains("NAME"))
        .unwrap_or_else(|| panic!("no table header:\n{screen}"));
    for column in ["ID", "TYPE", "CAP", "CPU%", "RUNS/s", "AVG ns"] {
        assert!(header.contains(column), "{column} missing: {header}");
    }
    assert!(lines.len() <= 24 && lines.iter().all(|l| l.chars().count() <= 80));
    assert!(screen.contains("q quit"), "{screen}");

    tmux.cmd(&["send-keys", "-t", &tmux.socket, "n"]);
    tmux.wait_for("sort by name", |s| s.contains("sort: name"));
    tmux.cmd(&["send-keys", "-t", &tmux.socket, "Down"]);
    tmux.wait_for("the selected program's graph", |s| s.contains("runs/s of "));
    tmux.cmd(&["send-keys", "-t", &tmux.socket, "q"]);

    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Ok(code) = std::fs::read_to_string(&status) {
            if !code.is_empty() {
                break code;
            }
        }
        assert!(Instant::now() < deadline, "osprey top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code.trim(), "0", "osprey top exit status");
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
}

#[test]
fn once_reports_event_rates_of_a_running_agent() {
    if !bpf_available("once_reports_event_rates_of_a_running_agent") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("top-agent");
    let file = dir.path().join("opened.txt");
    std::fs::write(&file, b"x").unwrap();
    let socket = dir.path().join("ctl.sock");
    let socket = socket.to_str().unwrap();

    let (alone, _) = top_while_opening(&["--once", "-o", "json", "--socket", socket], &file);
    assert!(alone.status.success());
    let alone: Value = serde_json::from_slice(&alone.stdout).unwrap();
    assert_eq!(
        alone["capabilities"],
        serde_json::json!([]),
        "no agent yet: {alone}"
    );
    assert_eq!(alone["agent"], false, "{alone}");

    let state = dir.path().join("state");
    let log = dir.path().join("events.jsonl");
    // File opens are off in the agent's defaults; this test watches their rates.
    let config = dir.path().join("osprey.toml");
    std::fs::write(&config, "[modules.files]\nenabled = true\n").unwrap();
    let agent = Tracer::start_until(
        &[
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--control-socket",
            socket,
            "--log",
            log.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
        "osprey agent: {\"attached_ms\"",
    );
    let (top, opens) = top_while_opening(&["--once", "-o", "json", "--socket", socket], &file);
    let done = agent.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let snapshot: Value = serde_json::from_slice(&top.stdout).unwrap();
    let interval = snapshot["interval_s"].as_f64().unwrap();
    let caps = snapshot["capabilities"].as_array().expect("agent answered");
    let files = caps
        .iter()
        .find(|c| c["capability"] == "files")
        .unwrap_or_else(|| panic!("no files capability: {snapshot}"));
    let events = files["events_per_sec"].as_f64().unwrap();
    let throttled = files["throttled_per_sec"].as_f64().unwrap();
    // The agent's files module limits each process to 200 events/s by default: the rest
    // of our opens show up as throttled, none may vanish.
    assert!(events > 0.0 && throttled > 0.0, "{snapshot}");
    // `opens` also counts what the loop did while top started and after it sampled, so only
    // a share of them falls in the interval: a quarter leaves room for a loaded machine.
    assert!(
        (events + throttled) * interval >= opens as f64 * 0.25,
        "{events} events/s + {throttled} throttled/s over {interval} s for {opens} opens: {snapshot}"
    );
    assert_eq!(files["drops_per_sec"], 0.0, "{snapshot}");
    assert!(
        caps.iter().any(|c| c["capability"] == "process"),
        "{snapshot}"
    );
    // The security module (on by default) loads the files programs too: the agent says
    // whose each one is.
    let owners: Vec<&Value> = snapshot["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("files_open_"))
        .map(|p| &p["capability"])
        .collect();
    assert!(owners.contains(&&Value::from("files")), "{snapshot}");
    assert!(
        owners.contains(&&Value::from("security-opens")),
        "{snapshot}"
    );
}
