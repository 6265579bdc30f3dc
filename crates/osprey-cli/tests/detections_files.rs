//! Real-BPF tests of the default file rules, which match the path an event changes
//! (`fs.path.target`) whatever the syscall: each trigger raises exactly its rule, each near
//! miss nothing. Rules about real system paths use uniquely named files there, removed
//! afterwards.

mod common;

use common::alerts::{cmd, sh, Expect, SystemFile};
use common::*;

fn secure() -> Tracer {
    Tracer::start(&["secure", "--output", "json"])
}

fn unique(tag: &str) -> String {
    format!("osprey-test-{tag}-{}", std::process::id())
}

#[test]
fn persistence_and_authentication_files_alert_whatever_the_syscall() {
    if !bpf_available("persistence_and_authentication_files_alert_whatever_the_syscall") {
        return;
    }
    let _serial = serial();
    let home = TempDir::new("det-home");
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let keys = ssh.join("authorized_keys");
    let pam = SystemFile::reserve(format!("/etc/pam.d/{}", unique("pam")));
    std::fs::write(&pam.path, "auth required pam_deny.so\n").unwrap();
    // Staged in /etc (same file system), then moved into place: only the rename names it.
    let staged = SystemFile::reserve(format!("/etc/{}", unique("staged")));
    std::fs::write(&staged.path, "auth required pam_deny.so\n").unwrap();
    let moved = SystemFile::reserve(format!("/etc/pam.d/{}", unique("moved")));
    let module = SystemFile::reserve(format!(
        "/usr/lib/x86_64-linux-gnu/security/pam_{}.so",
        unique("mod").replace('-', "_")
    ));
    let sshd = SystemFile::reserve(format!("/etc/ssh/sshd_config.d/{}.conf", unique("sshd")));
    let ssh_client = SystemFile::reserve(format!("/etc/ssh/ssh_config.d/{}.conf", unique("ssh")));
    let sudoers = SystemFile::reserve(format!("/etc/sudoers.d/{}", unique("sudo")));
    let init = SystemFile::reserve(format!("/etc/init.d/{}", unique("init")));
    let not_init = SystemFile::reserve(format!("/etc/{}.rc", unique("rc")));

    let tracer = secure();
    let mut expect = Expect::default();
    expect.fires(
        sh(&format!("echo 'ssh-ed25519 AAAA x' >> {}", keys.display())),
        &["ssh_authorized_keys_change"],
        "append to authorized_keys",
    );
    expect.quiet(
        sh(&format!("echo 'host key' >> {}/known_hosts", ssh.display())),
        "write known_hosts",
    );
    // sed -i writes a temporary file in /etc/pam.d and renames it over the original.
    expect.fires(
        cmd("sed", &["-i", "s/deny/permit/", &pam.display()]),
        &["pam_change"],
        "sed -i on /etc/pam.d",
    );
    expect.quiet(cmd("cat", &[&pam.display()]), "read /etc/pam.d");
    expect.fires(
        cmd("mv", &[&staged.display(), &moved.display()]),
        &["pam_change"],
        "rename into /etc/pam.d",
    );
    expect.fires(
        cmd("cp", &["/bin/true", &module.display()]),
        &["pam_change"],
        "PAM module copied",
    );
    expect.fires(
        sh(&format!("echo 'PermitRootLogin yes' > {}", sshd.display())),
        &["sshd_config_change"],
        "sshd_config.d drop-in",
    );
    expect.quiet(
        sh(&format!(
            "echo 'Compression yes' > {}",
            ssh_client.display()
        )),
        "ssh client config",
    );
    expect.fires(
        sh(&format!(
            "echo 'x ALL=(ALL) NOPASSWD: ALL' > {}",
            sudoers.display()
        )),
        &["sudoers_change"],
        "sudoers.d drop-in",
    );
    expect.fires(
        sh(&format!("echo '#!/bin/sh' > {}", init.display())),
        &["boot_script_change"],
        "init script",
    );
    expect.quiet(
        sh(&format!("echo '#!/bin/sh' > {}", not_init.display())),
        "a file beside the init scripts",
    );
    let alerts = expect.check(tracer);
    let renamed = alerts
        .iter()
        .find(|a| a["rule"] == "pam_change" && a["event"]["class"] == "rename")
        .unwrap_or_else(|| panic!("no pam_change on a rename: {alerts:#?}"));
    assert!(
        renamed["output"].as_str().unwrap().contains("/etc/pam.d/"),
        "{renamed}"
    );
}

#[test]
fn history_python_hooks_logging_and_sysctl_changes_alert() {
    if !bpf_available("history_python_hooks_logging_and_sysctl_changes_alert") {
        return;
    }
    let _serial = serial();
    let home = TempDir::new("det-hooks");
    let h = home.path().display().to_string();
    std::fs::write(home.path().join(".bash_history"), "ls\n").unwrap();
    let site = home.path().join("venv/lib/python3.11/site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("staged"), "import os\n").unwrap();
    std::fs::write(home.path().join("staged.pth"), "import os\n").unwrap();
    let rsyslog = SystemFile::reserve(format!("/etc/rsyslog.d/{}.conf", unique("log")));
    let sysctl = "/proc/sys/kernel/kptr_restrict";

    let tracer = secure();
    let mut expect = Expect::default();
    expect.fires(
        cmd("ln", &["-sf", "/dev/null", &format!("{h}/.bash_history")]),
        &["log_tampering"],
        "history replaced by a symlink to /dev/null",
    );
    expect.quiet(
        cmd(
            "ln",
            &["-sf", "/dev/null", &format!("{h}/.bash_history_old")],
        ),
        "symlink beside the history",
    );
    expect.fires(
        sh(&format!("echo 'import os' > {h}/sitecustomize.py")),
        &["python_startup_hook"],
        "sitecustomize.py",
    );
    expect.fires(
        cmd(
            "mv",
            &[
                &format!("{}/staged", site.display()),
                &format!("{}/evil.pth", site.display()),
            ],
        ),
        &["python_startup_hook"],
        ".pth renamed into site-packages",
    );
    expect.quiet(
        cmd(
            "mv",
            &[&format!("{h}/staged.pth"), &format!("{h}/moved.pth")],
        ),
        ".pth renamed outside site-packages",
    );
    expect.quiet(
        sh(&format!("echo 'x = 1' > {}/module.py", site.display())),
        "a module written in site-packages",
    );
    expect.fires(
        sh(&format!("echo '*.* /dev/null' > {}", rsyslog.display())),
        &["log_config_change"],
        "rsyslog drop-in",
    );
    // The current value written back: a real write that changes nothing.
    expect.fires(
        sh(&format!("v=$(cat {sysctl}) && echo $v > {sysctl}")),
        &["kernel_hardening_change"],
        "kptr_restrict written",
    );
    expect.quiet(cmd("cat", &[sysctl]), "kptr_restrict read");
    expect.check(tracer);
}
