//! The cgroup v2 hierarchy is wherever it is mounted (/sys/fs/cgroup on unified systems,
//! /sys/fs/cgroup/unified on hybrid ones), so the mount table decides: where
//! cgroup programs attach, and the (id, level) of a `--cgroup PATH` filter.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One cgroup2 mount: where it is and which cgroup of the hierarchy it shows.
#[derive(Debug, PartialEq, Eq)]
struct Cgroup2Mount {
    mount_point: PathBuf,
    /// Path of the mounted cgroup inside the hierarchy ("/" unless inside a cgroup
    /// namespace or a bind mount of a sub-tree).
    root: PathBuf,
}

/// `\040`-style escapes of /proc/self/mountinfo fields.
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code = u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cgroup2_mounts(mountinfo: &str) -> Vec<Cgroup2Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            if after.split_ascii_whitespace().next()? != "cgroup2" {
                return None;
            }
            let fields: Vec<&str> = before.split_ascii_whitespace().collect();
            Some(Cgroup2Mount {
                root: PathBuf::from(unescape(fields.get(3)?)),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
            })
        })
        .collect()
}

/// The root of the v2 hierarchy, where cgroup programs attach to cover every process.
/// When no cgroup2 mount shows it, mounts one at /run/osprey/cgroup2: the v2 root exists
/// in every kernel that has cgroup BPF.
pub fn cgroup2_root() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(m) = cgroup2_mounts(&mountinfo)
        .into_iter()
        .find(|m| m.root == Path::new("/"))
    {
        return Ok(m.mount_point);
    }
    let target = Path::new("/run/osprey/cgroup2");
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    super::features::mount(c"cgroup2", c"/run/osprey/cgroup2")
        .map(|()| target.to_path_buf())
        .map_err(|e| format!("no cgroup2 hierarchy is mounted and mounting one failed: {e}"))
}

/// Where the root of the v2 hierarchy is mounted, if it is (never mounts one).
pub fn cgroup2_mount_point() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mounts(&mountinfo)
        .into_iter()
        .find(|m| m.root == Path::new("/"))
        .map(|m| m.mount_point)
}

/// Level of `canonical` in the v2 hierarchy (root cgroup = 0), from the mount holding it.
fn level_in(mounts: &[Cgroup2Mount], canonical: &Path) -> Option<u32> {
    let mount = mounts
        .iter()
        .filter(|m| canonical.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())?;
    let below_mount = canonical.strip_prefix(&mount.mount_point).ok()?;
    let mount_depth = mount.root.components().skip(1).count(); // skip the leading "/"
    Some((mount_depth + below_mount.components().count()) as u32)
}

/// Resolves a cgroup v2 directory to (id, level) for the in-kernel ancestor check.
pub fn cgroup_target(path: &Path) -> Result<(u64, u32), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a cgroup directory", path.display()));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mounts = cgroup2_mounts(&mountinfo);
    let level = level_in(&mounts, &canonical).ok_or_else(|| {
        let places: Vec<String> = mounts
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        format!(
            "{}: not in a cgroup v2 hierarchy (mounted at: {})",
            path.display(),
            if places.is_empty() {
                "nowhere".to_string()
            } else {
                places.join(", ")
            }
        )
    })?;
    // The cgroup v2 id is the directory's inode number.
    Ok((meta.ino(), level))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
90 24 0:31 /kubepods/pod1 /mnt/my\\040cg rw - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_cgroup2_mounts_only() {
        let mounts = cgroup2_mounts(HYBRID);
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(mounts[1].mount_point, PathBuf::from("/mnt/my cg"));
        assert_eq!(mounts[1].root, PathBuf::from("/kubepods/pod1"));
    }

    #[test]
    fn levels_count_from_the_hierarchy_root_not_the_mount() {
        let mounts = cgroup2_mounts(HYBRID);
        let level = |p: &str| level_in(&mounts, Path::new(p));
        assert_eq!(level("/sys/fs/cgroup/unified"), Some(0));
        assert_eq!(level("/sys/fs/cgroup/unified/a/b"), Some(2));
        assert_eq!(level("/sys/fs/cgroup/cpu/a"), None, "a v1 hierarchy");
        assert_eq!(level("/mnt/my cg/c"), Some(3));
        assert_eq!(level("/tmp"), None);
    }
}
