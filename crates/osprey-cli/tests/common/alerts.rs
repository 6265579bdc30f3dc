//! Alerts of `osprey secure` runs, by triggering process, and the expectations the
//! detection tests check: each trigger raises exactly its rules, each near miss nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use super::{is_build_tree_exec_alert, run, Finished, Tracer};

/// The alerts of a run, without those the build tree's own location causes.
pub fn alerts(done: &Finished) -> Vec<Value> {
    done.events()
        .into_iter()
        .filter(|e| e["kind"] == "alert" && !is_build_tree_exec_alert(e))
        .collect()
}

/// Rule names of the alerts, by the pid of the triggering process.
pub fn rules_by_pid(alerts: &[Value]) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in alerts {
        let pid = a["event"]["process"]["pid"].as_u64().unwrap();
        out.entry(pid)
            .or_default()
            .insert(a["rule"].as_str().unwrap().to_string());
    }
    out
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Runs `sh -c script`, which must succeed; returns the shell's pid.
pub fn sh(script: &str) -> u32 {
    let (pid, status) = run(Command::new("/bin/sh").arg("-c").arg(script));
    assert!(status.success(), "sh -c {script:?}: {status}");
    pid
}

/// Runs a command, which must succeed; returns its pid.
pub fn cmd(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> u32 {
    let program = program.as_ref();
    let (pid, status) = run(Command::new(program).args(args));
    assert!(status.success(), "{program:?} {args:?}: {status}");
    pid
}

/// Triggers with the rules each must raise, and near misses that must raise nothing.
#[derive(Default)]
pub struct Expect {
    fires: Vec<(u32, BTreeSet<String>, String)>,
    quiet: Vec<(u32, String)>,
}

impl Expect {
    /// Process `pid` (doing `what`) raises exactly `rules`.
    pub fn fires(&mut self, pid: u32, rules: &[&str], what: &str) {
        self.fires.push((pid, set(rules), what.to_string()));
    }

    /// Process `pid` (doing `what`) raises nothing.
    pub fn quiet(&mut self, pid: u32, what: &str) {
        self.quiet.push((pid, what.to_string()));
    }

    /// Stops the tracer and checks every expectation; returns the alerts.
    pub fn check(self, tracer: Tracer) -> Vec<Value> {
        let done = tracer.stop();
        assert!(done.status.success(), "{}", done.stderr);
        let alerts = alerts(&done);
        let by_pid = rules_by_pid(&alerts);
        for (pid, rules, what) in &self.fires {
            assert_eq!(
                by_pid.get(&u64::from(*pid)),
                Some(rules),
                "{what} (pid {pid}); all alerts: {alerts:#?}"
            );
        }
        for (pid, what) in &self.quiet {
            assert_eq!(
                by_pid.get(&u64::from(*pid)),
                None,
                "near miss {what} (pid {pid}) alerted; all alerts: {alerts:#?}"
            );
        }
        for a in &alerts {
            let tags = a["tags"].as_array().unwrap();
            assert!(
                !tags.is_empty() && tags.iter().all(|t| t.as_str().unwrap().starts_with('T')),
                "{a}"
            );
        }
        alerts
    }
}

/// A file at a real system path (`/etc/pam.d/...`), uniquely named by the test; the file and
/// any directories created for it are removed on drop.
pub struct SystemFile {
    pub path: std::path::PathBuf,
    created_dirs: Vec<std::path::PathBuf>,
}

impl SystemFile {
    /// Reserves `path` (which must not exist), creating missing parents; writes nothing.
    pub fn reserve(path: impl Into<std::path::PathBuf>) -> Self {
        let path = path.into();
        assert!(!path.exists(), "{} already exists", path.display());
        let mut created_dirs = Vec::new();
        let mut missing: Vec<&std::path::Path> = path
            .ancestors()
            .skip(1)
            .take_while(|d| !d.exists())
            .collect();
        missing.reverse();
        for d in missing {
            std::fs::create_dir(d).unwrap();
            created_dirs.push(d.to_path_buf());
        }
        SystemFile { path, created_dirs }
    }

    pub fn display(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for SystemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        for d in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A point in an `osprey secure` run up to which every security event has been judged: the
/// rules file (`args`) makes a rename onto `osprey-barrier-N` alert, and `wait` renames one
/// and waits for that alert. Security events are judged in the order their ring holds them,
/// so anything the test did before was judged too. For facts read from files when an event
/// is judged (the account databases), which the next step must not change before then.
pub struct Barrier {
    dir: super::TempDir,
    rules: std::path::PathBuf,
    next: std::cell::Cell<u32>,
}

impl Barrier {
    pub fn new() -> Self {
        let dir = super::TempDir::new("barrier");
        let rules = dir.path().join("barrier.yaml");
        std::fs::write(
            &rules,
            "- rule: test_barrier\n  desc: a test's barrier\n  severity: low\n  tags: [T0000]\n  \
             condition: evt.kind = rename and fs.path.target contains osprey-barrier-\n  \
             output: \"barrier %fs.path.target\"\n",
        )
        .unwrap();
        Barrier {
            dir,
            rules,
            next: std::cell::Cell::new(0),
        }
    }

    /// The `osprey secure` arguments that load its rule.
    pub fn args(&self) -> [&str; 2] {
        ["--rules", self.rules.to_str().unwrap()]
    }

    /// Returns once `tracer` has judged everything done before the call.
    pub fn wait(&self, tracer: &Tracer) {
        let n = self.next.get();
        self.next.set(n + 1);
        let (from, to) = (
            self.dir.path().join(format!("from-{n}")),
            self.dir.path().join(format!("osprey-barrier-{n}")),
        );
        std::fs::write(&from, b"").unwrap();
        std::fs::rename(&from, &to).unwrap();
        let marker = format!("barrier {}", to.display());
        let limit = std::time::Duration::from_secs(10) * super::slowdown();
        tracer.wait_lines(limit, 1, |line| line.contains(&marker));
    }
}
