//! Real-BPF tests of file integrity monitoring (`osprey secure --watch`): every kind of change
//! to a watched file raises exactly one alert with the right before/after SHA-256, the same
//! changes to unwatched files raise nothing, a writer in a loop is one alert, and a missing
//! path is a usage error.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// FIM alerts by the path they name.
fn is_fim_alert(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|a| {
        a["kind"] == "alert" && a["rule"].as_str().is_some_and(|r| r.starts_with("fim."))
    })
}

fn fim_alerts(done: &Finished) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for a in done.events() {
        if a["kind"] == "alert" && a["rule"].as_str().unwrap_or("").starts_with("fim.") {
            out.entry(a["fim"]["path"].as_str().unwrap().to_string())
                .or_default()
                .push(a);
        }
    }
    out
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Files for the changes `perform` makes in `dir`; returns (path, rule, before, after) for each.
fn change_everything(dir: &Path) -> Vec<(PathBuf, &'static str, Option<String>, Option<String>)> {
    let content = |name: &str| format!("{name} in {}\n", dir.display()).into_bytes();
    for name in ["modify", "truncate", "renamed", "chmod", "delete"] {
        std::fs::write(dir.join(name), content(name)).unwrap();
    }
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/deep"), content("deep")).unwrap();
    let before = |name: &str| Some(sha256(&content(name)));
    vec![
        (dir.join("modify"), "fim.modify", before("modify"), None),
        (
            dir.join("truncate"),
            "fim.truncate",
            before("truncate"),
            None,
        ),
        (dir.join("renamed"), "fim.rename", before("renamed"), None),
        (
            dir.join("chmod"),
            "fim.chmod",
            before("chmod"),
            before("chmod"),
        ),
        (dir.join("delete"), "fim.delete", before("delete"), None),
        (
            dir.join("created"),
            "fim.create",
            None,
            Some(sha256(b"fresh\n")),
        ),
        (dir.join("sub/deep"), "fim.modify", before("deep"), None),
    ]
}

fn perform(dir: &Path, staging: &Path) {
    append(&dir.join("modify"), b"appended\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("truncate"))
        .unwrap()
        .set_len(4)
        .unwrap();
    std::fs::write(staging, b"replacement\n").unwrap();
    std::fs::rename(staging, dir.join("renamed")).unwrap();
    std::fs::set_permissions(dir.join("chmod"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(dir.join("delete")).unwrap();
    std::fs::write(dir.join("created"), b"fresh\n").unwrap();
    append(&dir.join("sub/deep"), b"deeper\n");
}

#[test]
fn each_change_to_a_watched_file_raises_one_alert_with_its_hashes() {
    if !bpf_available("each_change_to_a_watched_file_raises_one_alert_with_its_hashes") {
        return;
    }
    let _serial = serial();
    let tmp = TempDir::new("fim");
    let watched = tmp.path().join("watched");
    let unwatched = tmp.path().join("unwatched");
    let single = tmp.path().join("single-file");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(&unwatched).unwrap();
    std::fs::write(&single, b"one\n").unwrap();
    let state = tmp.path().join("state");
    // Set up both trees before osprey starts, so only the changes below are new.
    let mut expected = change_everything(&watched);
    change_everything(&unwatched);

    let tracer = Tracer::start(&[
        "secure",
        "--no-default-rules",
        "--watch",
        watched.to_str().unwrap(),
        "--watch",
        single.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "json",
    ]);
    perform(&watched, &tmp.path().join("staging-w"));
    perform(&unwatched, &tmp.path().join("staging-u"));
    append(&single, b"two\n");
    // Every alert raised by the running detector (past the settle time), not by the stop.
    tracer.wait_lines(Duration::from_secs(10), expected.len() + 1, is_fim_alert);
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);

    let read = |p: &Path| std::fs::read(p).ok().map(|b| sha256(&b));
    // Deleted files have no after; the others are read back as they are now.
    for (path, rule, _, after) in expected.iter_mut() {
        if after.is_none() && *rule != "fim.delete" {
            *after = read(path);
        }
    }
    expected.push((
        single.clone(),
        "fim.modify",
        Some(sha256(b"one\n")),
        read(&single),
    ));

    let alerts = fim_alerts(&done);
    let me = u64::from(std::process::id());
    for (path, rule, before, after) in &expected {
        let key = path.to_str().unwrap();
        let got = alerts
            .get(key)
            .unwrap_or_else(|| panic!("no alert for {key}; alerts: {alerts:#?}\n{}", done.stderr));
        assert_eq!(got.len(), 1, "{key}: {got:#?}");
        let a = &got[0];
        assert_eq!(a["rule"], *rule, "{key}: {a:#}");
        assert_eq!(
            a["fim"]["before"]["sha256"].as_str(),
            before.as_deref(),
            "{key}: {a:#}"
        );
        assert_eq!(
            a["fim"]["after"]["sha256"].as_str(),
            after.as_deref(),
            "{key}: {a:#}"
        );
        assert_eq!(a["event"]["process"]["pid"], me, "{key}: {a:#}");
        assert_eq!(a["event"]["kind"], "fim");
        assert!(!a["tags"].as_array().unwrap().is_empty());
    }
    let chmod = &alerts[watched.join("chmod").to_str().unwrap()][0];
    assert_eq!(chmod["fim"]["diff"]["mode"]["before"], "0644");
    assert_eq!(chmod["fim"]["diff"]["mode"]["after"], "0600");
    let truncate = &alerts[watched.join("truncate").to_str().unwrap()][0];
    assert_eq!(truncate["fim"]["diff"]["size"]["after"], 4);
    let renamed = &alerts[watched.join("renamed").to_str().unwrap()][0];
    assert_eq!(
        renamed["fim"]["renamed_from"],
        tmp.path().join("staging-w").to_str().unwrap()
    );
    // Nothing about the unwatched tree (or the staging files), nothing else at all.
    assert_eq!(alerts.len(), expected.len(), "{alerts:#?}");

    // The baseline on disk follows the changes.
    let db: Value =
        serde_json::from_slice(&std::fs::read(state.join("fim.json")).unwrap()).unwrap();
    let files = &db["files"];
    let modified = watched.join("modify");
    assert_eq!(
        files[modified.to_str().unwrap()]["sha256"].as_str(),
        read(&modified).as_deref()
    );
    assert!(files
        .get(watched.join("delete").to_str().unwrap())
        .is_none());
    assert!(files
        .get(watched.join("created").to_str().unwrap())
        .is_some());
    let mode = std::fs::metadata(state.join("fim.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_writer_in_a_loop_is_throttled_in_the_kernel_and_alerted_once() {
    if !bpf_available("a_writer_in_a_loop_is_throttled_in_the_kernel_and_alerted_once") {
        return;
    }
    let _serial = serial();
    let tmp = TempDir::new("fim-loop");
    let file = tmp.path().join("log");
    std::fs::write(&file, b"").unwrap();
    let tracer = Tracer::start(&[
        "secure",
        "--no-default-rules",
        "--watch",
        file.to_str().unwrap(),
        "--state-dir",
        tmp.path().join("state").to_str().unwrap(),
        "--output",
        "json",
    ]);
    let (_pid, status) = run(Command::new("/bin/sh").arg("-c").arg(format!(
        "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done >> {}",
        file.display()
    )));
    assert!(status.success());
    tracer.wait_lines(Duration::from_secs(10), 1, is_fim_alert);
    let done = tracer.stop();
    let alerts = fim_alerts(&done);
    let got = &alerts[file.to_str().unwrap()];
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["rule"], "fim.modify");
    assert_eq!(
        got[0]["fim"]["after"]["sha256"].as_str().unwrap(),
        sha256(&std::fs::read(&file).unwrap())
    );
    let (emitted, dropped, throttled) = done.counters("fim");
    assert_eq!(dropped, 0);
    assert!(
        throttled > 2000,
        "3000 writes: {emitted} emitted, {throttled} throttled"
    );
    assert!(
        emitted < 50,
        "3000 writes: {emitted} emitted, {throttled} throttled"
    );
}

#[test]
fn watching_a_missing_path_is_a_usage_error() {
    let out = Command::new(OSPREY)
        .args(["secure", "--watch", "/nonexistent/osprey-fim-test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--watch /nonexistent/osprey-fim-test: No such file or directory"),
        "{stderr}"
    );
}
