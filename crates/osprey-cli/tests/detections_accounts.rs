//! Real-BPF tests of the account rules: facts parsed from the account databases after the
//! account tools replace them. An ordinary new account is reported at low severity
//! (`new_local_account`); uid 0, gid 0 or a privileged group is critical whichever tool
//! made it. Every account made here is uniquely named and removed.

mod common;

use std::process::Command;

use common::alerts::{cmd, Barrier, Expect};
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
    let barrier = Barrier::new();
    let mut args = vec!["secure", "--output", "json"];
    args.extend(barrier.args());
    let tracer = Tracer::start(&args);
    let mut expect = Expect::default();
    let privileged: Option<&[&str]> = Some(&["privileged_account_change"]);
    let new_account: Option<&[&str]> = Some(&["new_local_account"]);
    let steps = [
        // useradd -m also copies /etc/skel into the new home: no shell_profile_write.
        (
            "useradd",
            vec!["-m", &plain.0],
            new_account,
            "ordinary account with a home",
        ),
        (
            "useradd",
            vec!["-M", "-o", "-u", "0", &root_uid.0],
            privileged,
            "useradd -o -u 0",
        ),
        (
            "useradd",
            vec!["-M", "-g", "0", &root_gid.0],
            privileged,
            "useradd -g 0",
        ),
        (
            "useradd",
            vec!["-M", &sudoer.0],
            new_account,
            "ordinary account",
        ),
        (
            "usermod",
            vec!["-aG", "sudo", &sudoer.0],
            privileged,
            "usermod -aG sudo",
        ),
        (
            "useradd",
            vec!["-M", &member.0],
            new_account,
            "ordinary account",
        ),
        (
            "usermod",
            vec!["-aG", "users", &member.0],
            None,
            "usermod -aG users (not privileged)",
        ),
        ("userdel", vec!["-r", &plain.0], None, "userdel -r"),
    ];
    for (tool, tool_args, rules, what) in steps {
        let pid = cmd(tool, &tool_args);
        // The databases are read when a tool's event is judged, a few ms after it: the
        // next tool must not replace them before then (an administrator is not that fast).
        barrier.wait(&tracer);
        match rules {
            Some(rules) => expect.fires(pid, rules, what),
            None => expect.quiet(pid, what),
        }
    }
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
