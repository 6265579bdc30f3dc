//! The benign corpus: everyday activity (compile and run a program, git, sqlite, a local
//! HTTP fetch, dpkg) that security rules must not alert on.

use std::process::{Command, Stdio};

use super::TempDir;

/// Whether an alert's process is this test process or one it started, directly or not: the
/// corpus's alerts, not those of other tests running on the machine meanwhile.
pub fn from_this_test(alert: &serde_json::Value) -> bool {
    let me = u64::from(std::process::id());
    let process = &alert["event"]["process"];
    process["pid"] == me
        || process["ppid"] == me
        || process["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["pid"] == me))
}

/// Runs the benign corpus to completion; every step must succeed.
pub fn run_benign_workload() {
    let build = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("benign-{}", std::process::id()));
    std::fs::create_dir_all(&build).unwrap();
    let repo = TempDir::new("benign-git");
    let quiet = |c: &mut Command| {
        let s = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(s.success(), "{c:?}: {s}");
    };
    std::fs::write(
        build.join("hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n",
    )
    .unwrap();
    quiet(
        Command::new("cc")
            .arg("-o")
            .arg(build.join("hello"))
            .arg(build.join("hello.c")),
    );
    quiet(&mut Command::new(build.join("hello")));
    for mut git in git_init_and_commit(repo.path()) {
        quiet(&mut git);
    }
    quiet(Command::new("python3").arg("-c").arg(
        "import sqlite3,tempfile,os\nd=tempfile.mkdtemp()\nc=sqlite3.connect(os.path.join(d,'t.db'))\nc.execute('create table t(x)')\nc.execute('insert into t values (1)')\nc.commit()\nc.close()",
    ));
    quiet(Command::new("python3").arg("-c").arg(
        "import http.server,threading,urllib.request\ns=http.server.HTTPServer(('127.0.0.1',0),http.server.SimpleHTTPRequestHandler)\nt=threading.Thread(target=s.handle_request);t.start()\nurllib.request.urlopen('http://127.0.0.1:%d/'%s.server_port).read()\nt.join()",
    ));
    quiet(Command::new("dpkg").arg("-l"));
    let _ = std::fs::remove_dir_all(&build);
}

/// The commands that make a git repository in `repo` (an empty directory) and commit one file
/// to it; the file is written here.
pub fn git_init_and_commit(repo: &std::path::Path) -> Vec<Command> {
    std::fs::write(repo.join("f.txt"), b"x").unwrap();
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.args(args).current_dir(repo);
        c
    };
    vec![
        git(&["init", "-q"]),
        git(&["add", "f.txt"]),
        git(&[
            "-c",
            "user.name=o",
            "-c",
            "user.email=o@example.invalid",
            "commit",
            "-qm",
            "m",
        ]),
    ]
}
