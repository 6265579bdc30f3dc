//! Podman containers for real-BPF tests: an image built here (no registry) from a busybox
//! root filesystem with osprey-workload and the libraries it links, and containers started
//! from it; containers and image are removed when the test ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{TempDir, WORKLOAD};

/// busybox applets the image has under /bin.
const APPLETS: &[&str] = &["sh", "cat", "sleep", "true", "nc", "cp", "mkdir"];

pub struct Podman {
    program: PathBuf,
    runc: bool,
    image: String,
    containers: std::cell::RefCell<Vec<String>>,
    _dir: TempDir,
}

/// Where `program` is installed, if it is.
pub fn installed(program: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

/// Runs `cmd`, asserting success; its stdout, trimmed.
pub fn out(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The shared libraries `program` loads (absolute paths, as `ldd` lists them).
fn libraries(program: &str) -> Vec<PathBuf> {
    let text = out(Command::new("ldd").arg(program));
    text.lines()
        .filter_map(|l| {
            let word = l.split("=>").last()?.split_whitespace().next()?;
            word.starts_with('/').then(|| PathBuf::from(word))
        })
        .collect()
}

fn copy_into(root: &Path, from: &Path, to: &str) {
    let dest = root.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

/// A busybox root filesystem under `dir/rootfs`: /bin/busybox with `applets` linked to it,
/// /etc/passwd with root, an empty /tmp. Callers add what else their image needs.
pub fn busybox_root(dir: &Path, applets: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    copy_into(&root, Path::new("/bin/busybox"), "/bin/busybox");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    root
}

/// `root` as the tarball `tar` (`podman import` / `docker import` / `ctr images import`).
pub fn tar_of(root: &Path, tar: PathBuf) -> PathBuf {
    out(Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

/// The image's root filesystem as a tarball: busybox and its applets, `/bin/debugfs` (a
/// script that sleeps two seconds), `/bin/osprey-workload` with its libraries, /tmp.
fn rootfs_tar(dir: &Path) -> PathBuf {
    let root = busybox_root(dir, APPLETS);
    std::fs::write(root.join("bin/debugfs"), "#!/bin/sh\nsleep 2\n").unwrap();
    copy_into(&root, WORKLOAD.path(), "/bin/osprey-workload");
    for lib in libraries(WORKLOAD.as_str()) {
        copy_into(&root, &lib, lib.to_str().unwrap());
    }
    out(Command::new("chmod")
        .arg("755")
        .arg(root.join("bin/debugfs")));
    tar_of(&root, dir.join("rootfs.tar"))
}

impl Podman {
    /// Imports the image; `None` (a visible skip, a failure under `OSPREY_REQUIRE_BPF=1`)
    /// when podman is not installed.
    pub fn new(test: &str) -> Option<Self> {
        let Some(program) = installed("podman") else {
            osprey_workload::require(test, false, "podman is not installed");
            return None;
        };
        let podman = Podman {
            program,
            // crun refuses hybrid cgroup hosts; runc handles both.
            runc: installed("runc").is_some(),
            image: format!("localhost/osprey-test-{}:{test}", std::process::id()),
            containers: Default::default(),
            _dir: TempDir::new("podman-image"),
        };
        let tar = rootfs_tar(podman._dir.path());
        out(podman.cmd().arg("import").arg(tar).arg(&podman.image));
        Some(podman)
    }

    /// The image's name (`localhost/...:TEST`).
    pub fn image(&self) -> &str {
        &self.image
    }

    /// `podman` with the options every call needs.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.program);
        if self.runc {
            c.args(["--runtime", "runc"]);
        }
        c
    }

    /// The same as a shell command line (for `script`).
    pub fn cmd_line(&self) -> String {
        let runtime = if self.runc { " --runtime runc" } else { "" };
        format!("{}{runtime}", self.program.display())
    }

    /// Starts a container named `name` (made unique to this run) that sleeps, with `extra`
    /// `podman run` options; its name and full id.
    pub fn run(&self, name: &str, extra: &[&str]) -> (String, String) {
        let name = format!("osprey-{name}-{}", std::process::id());
        self.containers.borrow_mut().push(name.clone());
        // The default open-file and process limits are refused by the kernel policy of
        // some hosts.
        let id = out(self
            .cmd()
            .args(["run", "-d", "--ulimit", "nofile=20000:20000"])
            .args(["--ulimit", "nproc=4096:4096", "--name", &name])
            .args(extra)
            .args([self.image.as_str(), "/bin/sleep", "600"]));
        (name, id)
    }

    /// Starts `podman exec CONTAINER ARGS` (output discarded).
    pub fn spawn_exec(&self, container: &str, args: &[&str]) -> Child {
        self.cmd()
            .arg("exec")
            .arg(container)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `podman exec CONTAINER ARGS` to completion.
    pub fn exec(&self, container: &str, args: &[&str]) -> Output {
        self.cmd()
            .arg("exec")
            .arg(container)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in self.containers.borrow().iter() {
            let _ = self.cmd().args(["rm", "-f", "-t", "0", name]).output();
        }
        let _ = self.cmd().args(["rmi", "-f", &self.image]).output();
    }
}
