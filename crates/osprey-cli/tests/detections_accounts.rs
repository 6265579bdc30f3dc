//! Real-BPF tests of the account rules: facts parsed from the account databases after the
//! account tools replace them. An ordinary new account is reported at low severity
//! (`new_local_account`); uid 0, gid 0 or a privileged group is critical whichever tool
//! made it. Every account made here is uniquely named and removed.

mod common;

use std::process::Command;

use common::alerts::{cmd, Expect};
use common::*;

/// A local account removed (with its home) on drop.
struct Account(String);

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", "-f", &self.0]).output();
        let _ = Command::new("groupdel").arg(&self.0).output();
    }
}

fn account(tag: &str) -> Account {
    // Names of at most 32 characters, unique per test process.
    Account(format!("osp{tag}{}", std::process::id()))
}

#[test]
fn account_tools_are_judged_by_the_accounts_they_make() {
    if !bpf_available("account_tools_are_judged_by_the_accounts_they_make") {
        return;
    }
    if Command::new("useradd").arg("--help").output().is_err() {
        eprintln!("SKIP account_tools_are_judged_by_the_accounts_they_make: no useradd");
        assert!(
            std::env::var_os("OSPREY_REQUIRE_BPF").is_none(),
            "useradd is required"
        );
        return;
    }
    let _serial = serial();
    let (plain, root_uid, root_gid, sudoer, member) = (
        account("u"),
        account("r"),
        account("g"),
        account("s"),
        account("m"),
    );
    let tracer = Tracer::start(&["secure", "--output", "json"]);
    let mut expect = Expect::default();
    // useradd -m also copies /etc/skel into the new home: no shell_profile_write.
    expect.fires(
        cmd("useradd", &["-m", &plain.0]),
        &["new_local_account"],
        "ordinary account with a home",
    );
    expect.fires(
        cmd("useradd", &["-M", "-o", "-u", "0", &root_uid.0]),
        &["privileged_account_change"],
        "useradd -o -u 0",
    );
    expect.fires(
        cmd("useradd", &["-M", "-g", "0", &root_gid.0]),
        &["privileged_account_change"],
        "useradd -g 0",
    );
    expect.fires(
        cmd("useradd", &["-M", &sudoer.0]),
        &["new_local_account"],
        "ordinary account",
    );
    expect.fires(
        cmd("usermod", &["-aG", "sudo", &sudoer.0]),
        &["privileged_account_change"],
        "usermod -aG sudo",
    );
    expect.fires(
        cmd("useradd", &["-M", &member.0]),
        &["new_local_account"],
        "ordinary account",
    );
    expect.quiet(
        cmd("usermod", &["-aG", "users", &member.0]),
        "usermod -aG users (not privileged)",
    );
    expect.quiet(cmd("userdel", &["-r", &plain.0]), "userdel -r");
    let alerts = expect.check(tracer);
    let low = alerts
        .iter()
        .find(|a| a["rule"] == "new_local_account")
        .unwrap();
    assert_eq!(low["severity"], "low");
    let by_usermod = alerts
        .iter()
        .find(|a| {
            a["rule"] == "privileged_account_change" && a["event"]["process"]["comm"] == "usermod"
        })
        .unwrap();
    let out = by_usermod["output"].as_str().unwrap();
    assert!(out.contains(&sudoer.0) && out.contains("sudo"), "{out}");
}
