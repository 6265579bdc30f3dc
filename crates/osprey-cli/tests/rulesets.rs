//! Community rule sets loaded unchanged (issue 15), without BPF: every file under
//! `../shared/rulesets` (beside the repository; `OSPREY_RULESETS` overrides) goes through
//! `osprey rules check --output json`, and the number of rules loaded per file is asserted,
//! as is a reason for every rule that is not loaded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use common::OSPREY;
use serde_json::Value;

/// The shared rule sets; a missing directory fails the test with where it was looked for.
pub fn rulesets() -> PathBuf {
    let dir = std::env::var_os("OSPREY_RULESETS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/rulesets"),
        PathBuf::from,
    );
    assert!(
        dir.join("sigma").is_dir() && dir.join("falco").is_dir(),
        "community rule sets not found at {} (check out ../shared beside the repository, or set OSPREY_RULESETS)",
        dir.display()
    );
    dir
}

/// `osprey rules check --output json PATHS`: one object per rule.
fn check(paths: &[PathBuf]) -> Vec<Value> {
    let out = Command::new(OSPREY)
        .args(["rules", "check", "--output", "json"])
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rules check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn file_name(r: &Value) -> String {
    let file = r["file"].as_str().unwrap();
    file.rsplit('/').next().unwrap().to_string()
}

/// Every rule not loaded says why; the statuses are the documented ones.
fn assert_reasons(report: &[Value]) {
    for r in report {
        let status = r["status"].as_str().unwrap();
        assert!(
            ["loaded", "unsupported", "disabled"].contains(&status),
            "{r}"
        );
        if status == "loaded" {
            assert!(r["reason"].is_null(), "{r}");
        } else {
            let reason = r["reason"].as_str().unwrap_or("");
            assert!(reason.len() > 10, "no actionable reason: {r}");
        }
    }
}

/// The Sigma rules Osprey cannot run, by file, with a word their reason must name.
const SIGMA_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "net_connection_lnx_crypto_mining_indicators.yml",
        "DestinationHostname",
    ),
    (
        "net_connection_lnx_domain_localtonet_tunnel.yml",
        "DestinationHostname",
    ),
    ("net_connection_lnx_ngrok_tunnel.yml", "DestinationHostname"),
    (
        "proc_creation_lnx_omigod_scx_runasprovider_executescript.yml",
        "LogonId",
    ),
    (
        "proc_creation_lnx_omigod_scx_runasprovider_executeshellcommand.yml",
        "LogonId",
    ),
    (
        "proc_creation_lnx_sap_netweaver_susp_child_process.yml",
        "CurrentDirectory",
    ),
    (
        "web_lnx_exploit_cve_2025_31324_sap_netviewer_webshell.yml",
        "webserver",
    ),
    (
        "web_lnx_exploit_cve_2025_31324_sap_netviewer_webshell_uploaded.yml",
        "webserver",
    ),
];

#[test]
fn every_sigma_rule_file_loads_or_says_why() {
    let report = check(&[rulesets().join("sigma")]);
    assert_reasons(&report);
    let files: Vec<PathBuf> = walk(&rulesets().join("sigma"));
    assert_eq!(files.len(), 169, "the shared Sigma set has 169 rule files");
    assert_eq!(report.len(), files.len(), "one report line per Sigma file");
    let by_file: BTreeMap<String, &Value> = report.iter().map(|r| (file_name(r), r)).collect();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let r = by_file
            .get(name)
            .unwrap_or_else(|| panic!("{name}: not reported"));
        assert_eq!(r["source"], "sigma", "{r}");
        assert!(r["id"].is_string(), "Sigma rules carry their id: {r}");
        match SIGMA_UNSUPPORTED.iter().find(|u| u.0 == name) {
            Some((_, word)) => {
                assert_eq!(r["status"], "unsupported", "{r}");
                assert!(r["reason"].as_str().unwrap().contains(word), "{r}");
            }
            None => assert_eq!(r["status"], "loaded", "{name}: {r}"),
        }
    }
    let loaded = report.iter().filter(|r| r["status"] == "loaded").count();
    assert_eq!(
        loaded, 161,
        "Sigma rules loaded (target: at least 160 of 169)"
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
    out
}

/// (file, loaded, unsupported, disabled) of each Falco file checked on its own and, for
/// the incubating and sandbox files, after the stable file whose macros they use.
const FALCO_COUNTS: &[(&str, usize, usize, usize)] = &[
    ("falco_rules.yaml", 23, 2, 0),
    ("falco-incubating_rules.yaml", 20, 11, 0),
    ("falco-sandbox_rules.yaml", 18, 7, 12),
];

#[test]
fn every_falco_rules_file_loads_with_the_expected_counts() {
    let dir = rulesets().join("falco");
    for (file, loaded, unsupported, disabled) in FALCO_COUNTS {
        let report = check(&[dir.join("falco_rules.yaml"), dir.join(file)]);
        assert_reasons(&report);
        let of_file: Vec<&Value> = report.iter().filter(|r| file_name(r) == *file).collect();
        let count = |s: &str| of_file.iter().filter(|r| r["status"] == s).count();
        assert_eq!(
            (count("loaded"), count("unsupported"), count("disabled")),
            (*loaded, *unsupported, *disabled),
            "{file}: loaded, unsupported, disabled"
        );
        assert!(of_file.iter().all(|r| r["source"] == "falco"));
    }
    // Alone, and the three together (the incubating and sandbox files first, as a
    // directory lists them): the same counts.
    let alone = check(&[dir.join("falco_rules.yaml")]);
    assert_eq!(alone.iter().filter(|r| r["status"] == "loaded").count(), 23);
    let all = check(std::slice::from_ref(&dir));
    assert_eq!(
        all.iter().filter(|r| r["status"] == "loaded").count(),
        23 + 20 + 18
    );
}

/// The Falco stable rules tested live on the host (rulesets/live.rs).
pub const FALCO_HOST_LIVE: &[&str] = &[
    "Clear Log Activities",
    "Create Hardlink Over Sensitive Files",
    "Create Symlink Over Sensitive Files",
    "Directory traversal monitored file read",
    "Execution from /dev/shm",
    "Find AWS Credentials",
    "Fileless execution via memfd_create",
    "PTRACE anti-debug attempt",
    "PTRACE attached to process",
    "Read sensitive file trusted after startup",
    "Read sensitive file untrusted",
    "Remove Bulk Data from Disk",
    "Run shell untrusted",
    "Search Private Keys or Passwords",
    "System user interactive",
];

/// The Falco stable rules tested live in podman containers (rulesets/falco_containers.rs).
pub const FALCO_CONTAINER_LIVE: &[&str] = &[
    "Debugfs Launched in Privileged Container",
    "Detect release_agent File Container Escapes",
    "Drop and execute new binary in container",
    "Linux Kernel Module Injection Detected",
    "Netcat Remote Code Execution in Container",
    "Terminal shell in container",
];

/// The Falco stable rules on the event classes of issue 14, tested live with them
/// (tests/event_classes.rs).
pub const FALCO_EVENT_CLASSES_LIVE: &[&str] = &[
    "Disallowed SSH Connection Non Standard Port",
    "Packet socket created in container",
];

/// Rule names as a sorted set, for comparing lists of rules.
pub fn rule_set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    names.into_iter().collect()
}

#[test]
fn every_loaded_falco_stable_rule_is_tested_live() {
    let report = check(&[rulesets().join("falco/falco_rules.yaml")]);
    let loaded = rule_set(
        report
            .iter()
            .filter(|r| r["status"] == "loaded")
            .map(|r| r["rule"].as_str().unwrap()),
    );
    let live = rule_set(
        FALCO_HOST_LIVE
            .iter()
            .chain(FALCO_CONTAINER_LIVE)
            .chain(FALCO_EVENT_CLASSES_LIVE)
            .copied(),
    );
    assert_eq!(
        loaded, live,
        "every loaded Falco stable rule is performed for real in rulesets/live.rs, rulesets/falco_containers.rs or event_classes.rs"
    );
}

#[test]
fn unsupported_falco_rules_name_what_is_missing() {
    let report = check(&[rulesets().join("falco/falco_rules.yaml")]);
    let reason = |rule: &str| {
        report
            .iter()
            .find(|r| r["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule} reported"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("Contact K8S API Server From Container").contains("fd.sip.name"));
    assert!(reason("Redirect STDOUT/STDIN to Network Connection in Container").contains("fd.type"));
}

#[test]
fn table_ends_with_counts_per_source_and_status() {
    let out = Command::new(OSPREY)
        .args(["rules", "check"])
        .arg(rulesets().join("sigma"))
        .arg(rulesets().join("falco/falco_rules.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "sigma: 161 loaded",
        "sigma: 8 unsupported",
        "falco: 23 loaded",
        "falco: 2 unsupported",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

#[test]
fn a_broken_sigma_condition_is_an_error_at_file_line_col() {
    let dir = std::env::temp_dir().join(format!("osprey-sigma-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yml");
    std::fs::write(
        &bad,
        "title: t\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: /x\n  condition: selection and nothing\n",
    )
    .unwrap();
    let out = Command::new(OSPREY)
        .args(["rules", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:8:28: no search named `nothing`",
            bad.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[path = "rulesets/live.rs"]
mod live;

#[path = "rulesets/falco_containers.rs"]
mod falco_containers;
