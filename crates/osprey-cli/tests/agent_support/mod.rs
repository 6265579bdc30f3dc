//! An agent run for the agent tests: a config in a scratch directory, start (optionally in
//! a network namespace), scrape, `osprey ctl`, the whole event log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// The "started" record (keys are sorted): modules' notes may come before it.
pub const READY: &str = "osprey agent: {\"attached_ms\"";
/// File opens are off by default; these tests watch them.
pub const FILES_ON: &str = "[modules.files]\nenabled = true\n";

pub struct AgentRun {
    pub dir: TempDir,
    pub port: u16,
    /// Keys added to the [log] table.
    pub log_extra: String,
    /// Network namespace the agent runs in (None: the tests' own).
    pub netns: Option<String>,
}

impl AgentRun {
    pub fn new(tag: &str, extra: &str) -> Self {
        Self::with(tag, "", None, extra)
    }

    /// An agent whose [log] table also has `log_extra`, started in `netns` if given.
    pub fn with(tag: &str, log_extra: &str, netns: Option<&str>, extra: &str) -> Self {
        let dir = TempDir::new(tag);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = AgentRun {
            dir,
            port,
            log_extra: log_extra.into(),
            netns: netns.map(String::from),
        };
        a.write_config(extra);
        a
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("osprey.toml")
    }

    pub fn socket(&self) -> String {
        self.dir.path().join("ctl.sock").display().to_string()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "state_dir = \"{}\"\ncontrol_socket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[log]\npath = \"{}\"\n{}\n[health]\nwindow_secs = 2\n{extra}",
            self.state().display(),
            self.socket(),
            self.port,
            self.log().display(),
            self.log_extra,
        );
        std::fs::write(self.config(), text).unwrap();
    }

    pub fn start(&self) -> Tracer {
        self.start_with_env(&[])
    }

    /// `start` with extra environment variables (`OSPREY_DENY_PROGRAMS`).
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Tracer {
        let config = self.config();
        let args = ["agent", "--config", config.to_str().unwrap()];
        match &self.netns {
            Some(ns) => Tracer::start_in_netns_with_env_until(ns, &args, env, READY),
            None => Tracer::start_until(&args, env, READY),
        }
    }

    pub fn scrape(&self) -> String {
        let port = self.port;
        match self.netns.clone() {
            // The agent's loopback is its namespace's: connect from a thread moved there.
            Some(ns) => std::thread::spawn(move || {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                // SAFETY: a valid namespace fd; only this thread changes namespace.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                };
                assert_eq!(rc, 0, "setns {ns}");
                Self::scrape_port(port)
            })
            .join()
            .unwrap(),
            None => Self::scrape_port(port),
        }
    }

    fn scrape_port(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let (head, body) = body.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }

    pub fn ctl(&self, args: &[&str]) -> Value {
        let out = Command::new(OSPREY)
            .args(["ctl", "--socket", &self.socket()])
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out:?}"))
    }

    /// Every complete line logged, rotated files (oldest first) included. The agent may be
    /// in the middle of a write: text after a file's last newline is not a line yet.
    pub fn log_lines(&self) -> Vec<Value> {
        let complete = |path: std::ffi::OsString| {
            let bytes = std::fs::read(path).unwrap_or_default();
            let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let mut text = String::new();
        for n in (1..=5).rev() {
            let mut rotated = self.log().into_os_string();
            rotated.push(format!(".{n}"));
            text.push_str(&complete(rotated));
        }
        text.push_str(&complete(self.log().into_os_string()));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l}: {e}")))
            .collect()
    }
}

/// The value of one sample, e.g. `osprey_events_total{capability="files",...}`.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)?
                .trim()
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

pub fn events(cap: &str, kind: &str, outcome: &str) -> String {
    format!("osprey_events_total{{capability=\"{cap}\",kind=\"{kind}\",outcome=\"{outcome}\"}}")
}

pub fn signal(t: &Tracer, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(t.pid() as i32, sig) };
}

/// The kernel frees a program shortly after its last fd closes (RCU): allow it a moment.
pub fn wait_unloaded(ids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let loaded = bpftool_ids();
        let left: Vec<_> = ids.iter().filter(|id| loaded.contains(id)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "programs still loaded: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ids of every BPF program loaded on the host.
pub fn bpftool_ids() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice::<Vec<Value>>(&o.stdout)
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect(),
        _ => panic!("bpftool is needed to list loaded programs"),
    }
}
