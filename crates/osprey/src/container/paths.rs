//! The host's path of a file a container process names: the container's mount table says
//! which filesystem and directory the path lies in, the host's mount table where that
//! directory is mounted for the host (an overlay root at its merged directory, a bind mount
//! such as /etc/hosts at its source).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::kernel::cgroup::unescape;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// `major:minor` of the filesystem.
    dev: String,
    /// The directory of the filesystem mounted here.
    root: PathBuf,
    point: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable(Vec<Mount>);

impl MountTable {
    pub fn parse(mountinfo: &str) -> Self {
        Self(
            mountinfo
                .lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_ascii_whitespace().collect();
                    Some(Mount {
                        dev: f.get(2)?.to_string(),
                        root: PathBuf::from(unescape(f.get(3)?)),
                        point: PathBuf::from(unescape(f.get(4)?)),
                    })
                })
                .collect(),
        )
    }

    pub fn of_pid(pid: u32) -> Option<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .ok()
            .map(|t| Self::parse(&t))
    }

    /// The mount `path` lies in: the deepest mount point, the last mounted on ties.
    fn holding(&self, path: &Path) -> Option<&Mount> {
        self.0
            .iter()
            .filter(|m| path.starts_with(&m.point))
            .max_by_key(|m| m.point.components().count())
    }
}

/// Where `path` of a process with mount table `inside` is for the host (`host`'s view).
/// A path already under the container's root as the host sees it (opened by the runtime
/// before it moved the root) is its own host path.
pub fn host_path(inside: &MountTable, host: &MountTable, path: &Path) -> Option<PathBuf> {
    if let Some(root) = map(inside, host, Path::new("/")).filter(|r| r != Path::new("/")) {
        if path.starts_with(&root) {
            return Some(path.to_path_buf());
        }
    }
    map(inside, host, path)
}

fn map(inside: &MountTable, host: &MountTable, path: &Path) -> Option<PathBuf> {
    let m = inside.holding(path)?;
    let in_fs = m.root.join(path.strip_prefix(&m.point).ok()?);
    let h = host
        .0
        .iter()
        .filter(|h| h.dev == m.dev && in_fs.starts_with(&h.root))
        .max_by_key(|h| h.root.components().count())?;
    Some(h.point.join(in_fs.strip_prefix(&h.root).ok()?))
}

/// Mount tables of container processes and of the host, read once each (the host's again
/// when a container's root is mounted after it was read). A table is kept
/// per (mount namespace, root directory) and is read only from a process whose root is not
/// the host's: a runtime sets up a container's mounts before it moves the root, so a table
/// read earlier may be unfinished. The last table of each container cgroup stands in for
/// processes that have already exited (most short commands, by the time their opens are
/// written), else one of the cgroup's live processes is asked.
#[derive(Debug, Default)]
pub struct HostPaths {
    host: Option<(MountTable, (u64, u64))>,
    tables: HashMap<(u64, u64, u64), Arc<MountTable>>,
    by_cgroup: HashMap<u64, Arc<MountTable>>,
    /// When the host's table was last read again for a container root it lacked.
    host_read: Option<std::time::Instant>,
}

/// Shortest interval between two reads of the host's table for missing container roots.
const HOST_REREAD: std::time::Duration = std::time::Duration::from_millis(100);

/// Bound on remembered tables; cleared when reached.
const MAX_TABLES: usize = 1024;

impl HostPaths {
    /// The host path of `path`, opened by `pid` of container cgroup `cgroup_id`.
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32, path: &[u8]) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        if self.tables.len() >= MAX_TABLES || self.by_cgroup.len() >= MAX_TABLES {
            self.tables.clear();
            self.by_cgroup.clear();
        }
        let inside = match self.settled_table(pid) {
            Some(t) => Some(t),
            // Still setting up (its root is the host's); a zombie's root is unreadable.
            None if self.root_is_hosts(pid) => None,
            None => self.by_cgroup.get(&cgroup_id).cloned().or_else(|| {
                super::resolve::procs_of(cgroup_id)
                    .into_iter()
                    .find_map(|p| self.settled_table(p))
            }),
        }?;
        self.by_cgroup.insert(cgroup_id, inside.clone());
        self.refresh_host_for(&inside);
        let (host, _) = self.host.as_ref()?;
        host_path(&inside, host, Path::new(std::ffi::OsStr::from_bytes(path)))
    }

    /// Reads the host's table again when it does not hold the container's root (mounted
    /// after the table was read), at most every `HOST_REREAD`.
    fn refresh_host_for(&mut self, inside: &MountTable) {
        let Some((host, _)) = &mut self.host else {
            return;
        };
        if map(inside, host, Path::new("/")).is_some()
            || self.host_read.is_some_and(|t| t.elapsed() < HOST_REREAD)
        {
            return;
        }
        self.host_read = Some(std::time::Instant::now());
        if let Some(table) = MountTable::of_pid(std::process::id()) {
            *host = table;
        }
    }

    fn root_is_hosts(&self, pid: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata(format!("/proc/{pid}/root"));
        matches!((&self.host, root), (Some((_, host)), Ok(r)) if (r.dev(), r.ino()) == *host)
    }

    /// The mount table of `pid` once its root is its own (not the host's).
    fn settled_table(&mut self, pid: u32) -> Option<Arc<MountTable>> {
        use std::os::unix::fs::MetadataExt;
        let host_root = self
            .host
            .get_or_insert_with(|| {
                let root =
                    std::fs::metadata("/proc/self/root").map_or((0, 0), |m| (m.dev(), m.ino()));
                (
                    MountTable::of_pid(std::process::id()).unwrap_or_default(),
                    root,
                )
            })
            .1;
        let ns = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
        let root = std::fs::metadata(format!("/proc/{pid}/root")).ok()?;
        if (root.dev(), root.ino()) == host_root {
            return None;
        }
        let key = (ns.ino(), root.dev(), root.ino());
        if let Some(table) = self.tables.get(&key) {
            return Some(table.clone());
        }
        // Not remembered when unreadable: the process may just have exited.
        let table = Arc::new(MountTable::of_pid(pid)?);
        self.tables.insert(key, table.clone());
        Some(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
300 22 0:77 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw
";
    const INSIDE: &str = "\
400 380 0:77 / / rw - overlay overlay rw
401 400 0:5 / /proc rw - proc proc rw
402 400 8:1 /var/lib/docker/containers/c1/hosts /etc/hosts rw - ext4 /dev/sda1 rw
403 400 8:1 /srv/my\\040data /data rw - ext4 /dev/sda1 rw
";

    #[test]
    fn overlay_roots_and_bind_mounts_map_to_the_host() {
        let (inside, host) = (MountTable::parse(INSIDE), MountTable::parse(HOST));
        let h = |p: &str| host_path(&inside, &host, Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(
            h("/etc/passwd").as_deref(),
            Some("/var/lib/docker/overlay2/abc/merged/etc/passwd")
        );
        assert_eq!(
            h("/etc/hosts").as_deref(),
            Some("/var/lib/docker/containers/c1/hosts")
        );
        assert_eq!(h("/data/x").as_deref(), Some("/srv/my data/x"));
        assert_eq!(h("/proc/1/status"), None, "not mounted on the host");
        let before_pivot = "/var/lib/docker/overlay2/abc/merged/etc/hostname";
        assert_eq!(h(before_pivot).as_deref(), Some(before_pivot));
    }
}
