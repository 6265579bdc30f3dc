//! From the kernel's cgroup id on an event to the cgroup's path in the v2 hierarchy:
//! the process's current cgroup when its id matches (one read of /proc/PID/cgroup),
//! else the cgroup itself opened by its id as a file handle (it may have no process left).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the v2 hierarchy's root is mounted, looked up once.
pub fn mount_point() -> Option<&'static Path> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    MOUNT
        .get_or_init(crate::kernel::cgroup::cgroup2_mount_point)
        .as_deref()
}

/// The `0::` (cgroup v2) line of /proc/PID/cgroup.
pub fn v2_path_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The id (inode) of the cgroup at `path` in the v2 hierarchy.
pub fn id_of_path(path: &str) -> Option<u64> {
    let dir = mount_point()?.join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The v2 path of cgroup `cgroup_id`, which `pid` was in when the event was made.
pub fn path_of(cgroup_id: u64, pid: u32) -> Option<String> {
    if let Some(path) = v2_path_of_pid(pid) {
        if id_of_path(&path) == Some(cgroup_id) {
            return Some(path);
        }
    }
    path_by_handle(cgroup_id)
}

/// Whether cgroup `cgroup_id` still exists (false too without the privilege to look).
pub fn exists(cgroup_id: u64) -> bool {
    path_by_handle(cgroup_id).is_some()
}

/// The processes in cgroup `cgroup_id` now.
pub fn procs_of(cgroup_id: u64) -> Vec<u32> {
    let Some(path) = path_by_handle(cgroup_id) else {
        return Vec::new();
    };
    let Some(mount) = mount_point() else {
        return Vec::new();
    };
    let procs = mount
        .join(path.trim_start_matches('/'))
        .join("cgroup.procs");
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// `struct file_handle` with the 8-byte kernfs handle (the cgroup id) inline.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// FILEID_KERNFS: cgroupfs file handles are the cgroup id.
const FILEID_KERNFS: i32 = 0xfe;

/// Opens the cgroup by its id (needs CAP_DAC_READ_SEARCH) and reads back its path.
fn path_by_handle(cgroup_id: u64) -> Option<String> {
    let mount = mount_point()?;
    let dir = std::fs::File::open(mount).ok()?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id: cgroup_id,
    };
    // SAFETY: `handle` is a valid file_handle with handle_bytes of payload after the header.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let below = full.strip_prefix(mount).ok()?;
    Some(format!("/{}", below.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_resolves_by_pid_and_by_handle() {
        let Some(path) = v2_path_of_pid(std::process::id()) else {
            return; // no cgroup v2 line: nothing to resolve
        };
        let Some(id) = id_of_path(&path) else {
            return;
        };
        assert_eq!(path_of(id, std::process::id()), Some(path.clone()));
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(path_by_handle(id), Some(path), "by file handle");
        }
    }

    #[test]
    fn a_cgroup_without_processes_resolves_by_handle() {
        let (Some(mount), true) = (mount_point(), unsafe { libc::geteuid() } == 0) else {
            return; // needs root and a cgroup v2 hierarchy
        };
        let name = format!("osprey-resolve-test-{}", std::process::id());
        let dir = mount.join(&name);
        if std::fs::create_dir(&dir).is_err() {
            return; // a read-only hierarchy
        }
        let id = id_of_path(&format!("/{name}"));
        let found = id.and_then(path_by_handle);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(found, Some(format!("/{name}")));
        assert_eq!(path_of(id.unwrap(), u32::MAX), None, "gone once removed");
    }
}
