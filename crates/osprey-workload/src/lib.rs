//! Test support shared by every crate's real-BPF tests: deciding whether a test may run, and
//! saying so where a person sees it when it may not.
//!
//! `cargo test` captures what `eprintln!` prints and shows it only for failing tests, so a
//! skipped test that passes would be silent. [`skip`] writes to the process's real standard
//! error instead, which the test runner does not capture.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable that turns every skip into a failure (CI sets it).
pub const REQUIRE_VAR: &str = "OSPREY_REQUIRE_BPF";

/// Whether skips are forbidden in this run.
pub fn skips_forbidden() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// Whether `test` may run given `available`. When it may not: panics under
/// `OSPREY_REQUIRE_BPF=1`, otherwise prints `SKIPPED test: reason` on the real standard error
/// and returns false.
pub fn require(test: &str, available: bool, reason: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        !skips_forbidden(),
        "{test}: {REQUIRE_VAR}=1 but it cannot run: {reason}"
    );
    skip(test, reason);
    false
}

/// Says on the real standard error (never captured) that `test` did not run and why.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED {test}: {reason} (set {REQUIRE_VAR}=1 to fail instead)\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// True when this process may load BPF programs (root).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that loads BPF may run (see [`require`]).
pub fn bpf_available(test: &str) -> bool {
    require(test, is_root(), "needs root to load BPF")
}

/// The `osprey-workload` binary, usable wherever a program path is (`Command::new(WORKLOAD)`).
pub const WORKLOAD: Workload = Workload;

/// See [`WORKLOAD`]; the path is found once, by [`binary`].
#[derive(Clone, Copy, Debug)]
pub struct Workload;

impl Workload {
    pub fn path(self) -> &'static Path {
        static PATH: OnceLock<PathBuf> = OnceLock::new();
        PATH.get_or_init(binary)
    }

    pub fn as_str(self) -> &'static str {
        self.path().to_str().expect("workload path is UTF-8")
    }
}

impl AsRef<OsStr> for Workload {
    fn as_ref(&self) -> &OsStr {
        self.path().as_os_str()
    }
}

impl AsRef<Path> for Workload {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// The `osprey-workload` binary built beside the running test (`cargo test --workspace` builds
/// it; `OSPREY_WORKLOAD` overrides). Panics with the command to run when it is missing.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OSPREY_WORKLOAD") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/osprey-workload
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("osprey-workload"))
        .expect("test binary path has a parent");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p osprey-workload` (cargo test --workspace builds it)",
        path.display()
    );
    path
}
