//! The benign corpus under the default rules (`osprey secure`, real BPF): building and
//! running C and Rust programs under /tmp, installing and removing a local Debian package,
//! adding and removing an ordinary user with a home, git, a Python venv with pip installing a
//! local wheel, logrotate, crontab -l and systemctl. None of it may alert, except the
//! documented low-severity `new_local_account` for the new user.
//!
//! Only alerts of this test's own process tree count: other tests on the machine may alert
//! meanwhile.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::alerts::{alerts, Barrier};
use common::*;
use serde_json::Value;

/// Runs a step of the corpus, which must succeed.
fn step(c: &mut Command) {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `program` can be run; says so visibly when it cannot.
fn available(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("NOTE benign corpus: {program} is not installed, its step is skipped");
    }
    found
}

fn build_and_run(dir: &Path) {
    std::fs::write(
        dir.join("hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n",
    )
    .unwrap();
    step(
        Command::new("gcc")
            .arg("-o")
            .arg(dir.join("hello-c"))
            .arg(dir.join("hello.c")),
    );
    step(&mut Command::new(dir.join("hello-c")));
    std::fs::write(dir.join("hello.rs"), "fn main() { println!(\"hi\"); }\n").unwrap();
    step(
        Command::new("rustc")
            .arg("-o")
            .arg(dir.join("hello-rs"))
            .arg(dir.join("hello.rs")),
    );
    step(&mut Command::new(dir.join("hello-rs")));
}

fn debian_package(dir: &Path) {
    let name = "osprey-benign-test";
    let root = dir.join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join(format!("usr/share/doc/{name}"))).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: Osprey tests <tests@example.invalid>\nDescription: benign corpus package\n"),
    )
    .unwrap();
    std::fs::write(
        root.join(format!("usr/share/doc/{name}/README")),
        "benign\n",
    )
    .unwrap();
    let deb = dir.join(format!("{name}.deb"));
    step(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb),
    );
    let apt = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    if apt.status.success() {
        step(
            Command::new("apt-get")
                .args(["remove", "-y", "-qq", name])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
    } else {
        eprintln!(
            "NOTE benign corpus: apt-get could not install the local package ({}), using dpkg",
            String::from_utf8_lossy(&apt.stderr).trim()
        );
        step(Command::new("dpkg").arg("-i").arg(&deb));
        step(Command::new("dpkg").args(["-r", name]));
    }
}

fn git(dir: &Path) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for mut c in common::benign::git_init_and_commit(&repo) {
        step(&mut c);
    }
}

/// A wheel written by hand (no build backend needed offline): one module, its metadata
/// and a RECORD with the files' hashes.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, sys, zipfile
files = {
    "osprey_benign/__init__.py": b"VALUE = 1\n",
    "osprey_benign-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: osprey-benign\nVersion: 1.0\n",
    "osprey_benign-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: osprey-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={digest},{len(data)}\n"
record += "osprey_benign-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("osprey_benign-1.0.dist-info/RECORD", record)
"#;

fn python_venv(dir: &Path) {
    let venv = dir.join("venv");
    let wheel = dir.join("osprey_benign-1.0-py3-none-any.whl");
    step(
        Command::new("python3")
            .arg("-c")
            .arg(MAKE_WHEEL)
            .arg(&wheel),
    );
    step(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    step(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--no-index", "--disable-pip-version-check"])
            .arg(&wheel),
    );
    step(Command::new(venv.join("bin/python")).args([
        "-c",
        "import osprey_benign; assert osprey_benign.VALUE == 1",
    ]));
}

fn logrotate(dir: &Path) {
    if !available("logrotate") {
        return;
    }
    let log = dir.join("app.log");
    std::fs::write(&log, "line\n").unwrap();
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!("{} {{\n  rotate 1\n  missingok\n}}\n", log.display()),
    )
    .unwrap();
    step(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(dir.join("logrotate.state"))
            .arg(&conf),
    );
}

/// The account's creation is judged (the databases read) before userdel removes it.
fn accounts(tracer: &Tracer, barrier: &Barrier) {
    let user = format!("ospb{}", std::process::id());
    step(Command::new("useradd").args(["-m", &user]));
    barrier.wait(tracer);
    step(Command::new("userdel").args(["-r", &user]));
}

#[test]
fn benign_corpus_raises_only_the_documented_low_alert() {
    if !bpf_available("benign_corpus_raises_only_the_documented_low_alert") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("benign-corpus");
    let barrier = Barrier::new();
    let mut args = vec!["secure", "--output", "json"];
    args.extend(barrier.args());
    let tracer = Tracer::start(&args);
    build_and_run(dir.path());
    debian_package(dir.path());
    accounts(&tracer, &barrier);
    git(dir.path());
    python_venv(dir.path());
    logrotate(dir.path());
    if available("crontab") {
        // No crontab for root is an error exit, and still benign.
        let _ = Command::new("crontab").arg("-l").output().unwrap();
    }
    if available("systemctl") {
        // Fails without systemd as init: still benign.
        let _ = Command::new("systemctl")
            .args(["list-units", "--no-pager"])
            .output()
            .unwrap();
    }
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let alerts: Vec<Value> = alerts(&done)
        .into_iter()
        .filter(|a| benign::from_this_test(a) && a["rule"] != "test_barrier")
        .collect();
    let unexpected: Vec<&Value> = alerts
        .iter()
        .filter(|a| !(a["rule"] == "new_local_account" && a["severity"] == "low"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "benign activity raised alerts: {unexpected:#?}"
    );
    assert_eq!(
        alerts.len(),
        1,
        "the new user's low alert, once: {alerts:#?}"
    );
    assert_eq!(alerts[0]["event"]["process"]["comm"], "useradd");
    let (execs, _, _) = done.counters("exec");
    assert!(execs >= 10, "the corpus ran: {execs} execs");
}
