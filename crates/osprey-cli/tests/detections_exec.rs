//! Real-BPF tests of drop-and-execute and module loads from outside the module tree: each
//! trigger raises exactly its rule, each near miss nothing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::alerts::{cmd, Expect, SystemFile};
use common::*;

/// A directory outside /tmp for programs the test runs under a chosen name.
fn bin_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The workload under another command name.
fn workload_as(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::copy(WORKLOAD.path(), &path).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn dropped_programs_alert_and_built_ones_do_not() {
    if !bpf_available("dropped_programs_alert_and_built_ones_do_not") {
        return;
    }
    let _serial = serial();
    let tmp = TempDir::new("det-drop");
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let bins = bin_dir("det-drop");
    // Named as a compiler: its output is not a drop unless it downloaded.
    let fake_cc = workload_as(&bins, "cc");
    std::fs::write(tmp.path().join("hello.c"), "int main(void){return 0;}\n").unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let serve = std::thread::spawn(move || {
        let (mut peer, _) = server.accept().unwrap();
        peer.write_all(b"payload").unwrap();
    });

    let tracer = Tracer::start(&["secure", "--output", "json"]);
    let mut expect = Expect::default();
    cmd("cp", &["/bin/true", &t("copied")]);
    expect.fires(
        cmd(t("copied"), &[]),
        &["drop_and_execute"],
        "copied into /tmp by cp",
    );
    cmd(
        &fake_cc,
        &["fetch-write", &addr, "/bin/true", &t("fetched")],
    );
    serve.join().unwrap();
    expect.fires(
        cmd(t("fetched"), &[]),
        &["drop_and_execute"],
        "written by a downloader",
    );
    cmd(&fake_cc, &["fetch-write", "-", "/bin/true", &t("built")]);
    expect.quiet(cmd(t("built"), &[]), "written by a toolchain");
    cmd("gcc", &["-o", &t("hello"), &t("hello.c")]);
    expect.quiet(cmd(t("hello"), &[]), "compiled with gcc and run");
    cmd("chmod", &["+x", &t("hello")]);
    expect.fires(
        cmd(t("hello"), &[]),
        &["drop_and_execute"],
        "made executable by chmod",
    );
    cmd(WORKLOAD, &["exec-deleted", &t("deleted-sleep")]);
    cmd(WORKLOAD, &["memfd-exec"]);
    let alerts = expect.check(tracer);
    let how = |name: &str| {
        alerts
            .iter()
            .find(|a| {
                a["rule"] == "drop_and_execute" && a["output"].as_str().unwrap().contains(&t(name))
            })
            .map(|a| a["output"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no alert for {name}: {alerts:#?}"))
    };
    assert!(how("copied").contains("written by cp"), "{}", how("copied"));
    assert!(
        how("fetched").contains("downloaded by cc"),
        "{}",
        how("fetched")
    );
    assert!(
        how("hello").contains("made executable by chmod"),
        "{}",
        how("hello")
    );
    // Children of the workload whose pids the test does not know: by parent.
    for (what, comm) in [("deleted file", "deleted-sleep"), ("memfd", "")] {
        alerts
            .iter()
            .find(|a| {
                a["rule"] == "drop_and_execute"
                    && a["event"]["process"]["ancestry"][0]["comm"] == "osprey-workload"
                    && (comm.is_empty() || a["event"]["process"]["comm"] == comm)
            })
            .unwrap_or_else(|| panic!("no alert for the exec of a {what}: {alerts:#?}"));
    }
    let _ = std::fs::remove_dir_all(&bins);
}

#[test]
fn modules_from_outside_the_module_tree_alert_even_with_insmod() {
    if !bpf_available("modules_from_outside_the_module_tree_alert_even_with_insmod") {
        return;
    }
    let _serial = serial();
    let tmp = TempDir::new("det-module");
    let outside = tmp.path().join("rootkit.ko");
    std::fs::write(&outside, b"not a module").unwrap();
    let inside = SystemFile::reserve(format!(
        "/lib/modules/osprey-test-{}.ko",
        std::process::id()
    ));
    std::fs::write(&inside.path, b"not a module").unwrap();
    let bins = bin_dir("det-module");
    let insmod = workload_as(&bins, "insmod");

    let tracer = Tracer::start(&["secure", "--output", "json"]);
    let mut expect = Expect::default();
    expect.fires(
        cmd(&insmod, &["finit-module", outside.to_str().unwrap()]),
        &["kernel_module_from_unusual_path"],
        "insmod of a file in /tmp",
    );
    expect.quiet(
        cmd(&insmod, &["finit-module", &inside.display()]),
        "insmod of a file under /lib/modules",
    );
    expect.fires(
        cmd(WORKLOAD, &["finit-module", outside.to_str().unwrap()]),
        &["kernel_module_load", "kernel_module_from_unusual_path"],
        "another program loading a file in /tmp",
    );
    expect.check(tracer);
    let _ = std::fs::remove_dir_all(&bins);
}
