//! Harness for real-BPF tests: runs `osprey` as a child, waits until it is attached,
//! drives activity, stops it with SIGINT and returns what it printed.
//!
//! Without root the tests skip loudly; with OSPREY_REQUIRE_BPF=1 (CI) they fail instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const OSPREY: &str = env!("CARGO_BIN_EXE_osprey");
pub use osprey_workload::{bpf_available, WORKLOAD};

pub mod alerts;
pub mod benign;
pub mod podman;

/// BPF tests run one at a time: they count exact events and compete for two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A unique scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("osprey-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Tracer {
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<String>>,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    /// Each stdout line as it arrives, with the time it did.
    stdout_lines: std::sync::mpsc::Receiver<(Instant, String)>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Time from SIGINT to exit.
    pub stop_latency: Duration,
}

impl Finished {
    /// Every stdout line parsed as JSON (panics on a line that is not).
    pub fn events(&self) -> Vec<Value> {
        String::from_utf8(self.stdout.clone())
            .expect("JSON output is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// The `"kind": "summary"` object printed on stderr with `--output json`.
    pub fn summary(&self) -> Value {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == "summary")
            .unwrap_or_else(|| panic!("no JSON summary on stderr:\n{}", self.stderr))
    }

    /// The summary's `events` row of one event kind.
    pub fn event_row(&self, kind: &str) -> Value {
        let summary = self.summary();
        summary["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no counters for {kind} in {summary}"))
            .clone()
    }

    /// emitted/dropped/throttled counters of one event kind from the summary.
    pub fn counters(&self, kind: &str) -> (u64, u64, u64) {
        let row = self.event_row(kind);
        (
            row["emitted"].as_u64().unwrap(),
            row["dropped"].as_u64().unwrap(),
            row["throttled"].as_u64().unwrap(),
        )
    }
}

impl Tracer {
    /// Starts `osprey ARGS` and waits for its "tracing ..." line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_until(args, env, "osprey: tracing ")
    }

    /// Starts `osprey ARGS` inside network namespace `netns` (`ip netns exec` execs it,
    /// so the child's pid is osprey's and SIGINT reaches it).
    pub fn start_in_netns(netns: &str, args: &[&str]) -> Self {
        Self::start_in_netns_with_env(netns, args, &[])
    }

    /// `start_in_netns` with extra environment variables (`ip netns exec` passes them on).
    pub fn start_in_netns_with_env(netns: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, OSPREY]);
        Self::start_command(cmd, args, env, "osprey: tracing ")
    }

    /// `start_in_netns`, waiting for a stderr line starting with `ready`.
    pub fn start_in_netns_until(netns: &str, args: &[&str], ready: &str) -> Self {
        Self::start_in_netns_with_env_until(netns, args, &[], ready)
    }

    /// `start_in_netns_until` with extra environment variables.
    pub fn start_in_netns_with_env_until(
        netns: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, OSPREY]);
        Self::start_command(cmd, args, env, ready)
    }

    /// Starts `osprey ARGS` and waits for a stderr line starting with `ready`.
    pub fn start_until(args: &[&str], env: &[(&str, &str)], ready: &str) -> Self {
        Self::start_command(Command::new(OSPREY), args, env, ready)
    }

    /// Starts `cmd ARGS` (osprey, perhaps behind `nsenter`) and waits for a stderr line
    /// starting with `ready`.
    pub fn start_command(
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Self {
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn osprey");
        let out = child.stdout.take().unwrap();
        let (out_tx, out_rx) = std::sync::mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut reader = BufReader::new(out);
            loop {
                let start = buf.len();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf[start..])
                            .trim_end()
                            .to_string();
                        let _ = out_tx.send((Instant::now(), line));
                    }
                }
            }
            buf
        });
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut tracer = Tracer {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            stderr_lines: rx,
            stdout_lines: out_rx,
        };
        tracer.wait_attached(args, ready);
        tracer
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` until `count` stdout lines satisfying `matches` have arrived since
    /// the last wait (they are in what `stop` returns as well).
    pub fn wait_lines(&self, limit: Duration, count: usize, matches: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        let mut seen = 0;
        while seen < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok((_, line)) if matches(&line) => seen += 1,
                Ok(_) => {}
                Err(_) => panic!("{seen} of {count} expected output lines within {limit:?}"),
            }
        }
    }

    /// The next stdout line and when it arrived, waiting at most `limit`.
    pub fn next_line(&self, limit: Duration) -> Option<(Instant, String)> {
        self.stdout_lines.recv_timeout(limit).ok()
    }

    /// The next stderr line after the ready line, waiting at most `limit`.
    pub fn next_stderr_line(&self, limit: Duration) -> Option<String> {
        self.stderr_lines.recv_timeout(limit).ok()
    }

    fn wait_attached(&mut self, args: &[&str], ready: &str) {
        let deadline = Instant::now() + attach_limit();
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with(ready) => {
                    // The VM suite runs the same tests once per hook and checks which one ran.
                    if let Ok(via) = std::env::var("OSPREY_EXPECT_TRACING_VIA") {
                        if line.starts_with("osprey: tracing file opens") {
                            assert!(line.contains(&via), "expected {via}: {line}");
                        }
                    }
                    return;
                }
                Ok(line) => seen.push(line),
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "osprey {args:?} exited early ({status}): {}",
                            seen.join("\n")
                        );
                    }
                }
            }
        }
        panic!(
            "osprey {args:?} did not attach within {:?}: {}",
            attach_limit(),
            seen.join("\n")
        );
    }

    /// SIGINT, then waits for the exit. What the kernel wrote before the signal is in the rings
    /// already (programs run inside the traced syscalls) and the final drain delivers it.
    pub fn stop(mut self) -> Finished {
        let sent = Instant::now();
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        let stop_latency = sent.elapsed();
        Finished {
            status,
            stdout: self.stdout.take().unwrap().join().unwrap(),
            stderr: self.stderr.take().unwrap().join().unwrap(),
            stop_latency,
        }
    }

    /// Waits for the tracer to end by itself (--duration / --count).
    pub fn wait(mut self, limit: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < limit,
                "osprey did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Finished {
            status,
            stdout: self.stdout.take().unwrap().join().unwrap(),
            stderr: self.stderr.take().unwrap().join().unwrap(),
            stop_latency: start.elapsed(),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 20 ms until it returns `Ok`, failing with its last error after `limit`:
/// tests wait for the state they need (a log line, a metric, a module's state), never for a
/// fixed time.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => panic!("not within {limit:?}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs a command to completion, returning its pid and status.
pub fn run(cmd: &mut Command) -> (u32, ExitStatus) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn workload");
    let pid = child.id();
    (pid, child.wait().unwrap())
}

/// A workload started now that waits for `release()` before doing its work.
pub struct Gated {
    pub child: Child,
}

impl Gated {
    pub fn spawn(args: &[&std::ffi::OsStr]) -> Self {
        let child = Command::new(WORKLOAD)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn workload");
        Gated { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn release_and_wait(mut self) -> ExitStatus {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        self.child.wait().unwrap()
    }
}

/// Events of one kind from one process.
pub fn of(events: &[Value], kind: &str, pid: u32) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["process"]["pid"] == pid)
        .cloned()
        .collect()
}

/// Panics unless `text` is well-formed XML (SVG outputs).
pub fn assert_well_formed_xml(text: &str) {
    let mut reader = quick_xml::Reader::from_str(text);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed XML: {e}\n{text}"),
        }
    }
}

/// A `drop_and_execute` alert for a program under our cargo target directory
/// (test binaries, workloads the tests copy to target/tmp): it fires only because the
/// checkout lives under /tmp, as CI clones may.
/// The pid of a process that has exited and been reaped: a target that does not exist.
pub fn gone_pid() -> String {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid.to_string()
}

pub fn is_build_tree_exec_alert(alert: &Value) -> bool {
    let build_dir = WORKLOAD.path().ancestors().nth(2).unwrap();
    alert["rule"] == "drop_and_execute"
        && ["exe", "filename"].iter().any(|f| {
            alert["event"][f]
                .as_str()
                .is_some_and(|p| std::path::Path::new(p).starts_with(build_dir))
        })
}

/// How many times slower than the host this machine runs programs: OSPREY_TEST_SLOWDOWN, set
/// by the VM suite under software emulation (which also verifies BPF programs that much slower);
/// 1 otherwise. Time limits of the tests scale with it.
pub fn slowdown() -> u32 {
    let factor = std::env::var("OSPREY_TEST_SLOWDOWN").ok();
    factor.and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

/// How long a tracer may take to attach.
pub fn attach_limit() -> Duration {
    Duration::from_secs(20) * slowdown()
}

/// `osprey check --output json` with extra environment: its exit code, stderr and report.
pub fn check_report(env: &[(&str, &str)]) -> (Option<i32>, String, Value) {
    let out = Command::new(OSPREY)
        .args(["check", "--output", "json"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run osprey check");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check report JSON: {e}; stderr: {stderr}"));
    (out.status.code(), stderr, report)
}

/// The element of a report's array (features, capabilities) with this name.
pub fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {list}"))
}

/// Runs osprey as an unprivileged user created for the test.
pub fn as_unprivileged_user(args: &[&str]) -> Option<std::process::Output> {
    let user = "osprey-test-nobody";
    let exists = Command::new("id").arg(user).output().ok()?.status.success();
    if !exists {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ])
            .status()
            .ok()?;
        assert!(made.success(), "useradd failed");
    }
    Some(
        Command::new("setpriv")
            .args([
                "--reuid",
                user,
                "--regid",
                user,
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(OSPREY)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv"),
    )
}

/// Runs `osprey ARGS` to completion (stdin closed) and returns what it printed.
pub fn osprey(args: &[&str]) -> std::process::Output {
    Command::new(OSPREY)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run osprey")
}

/// A finished command's stderr as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
