//! The FIM database: the state (SHA-256 and metadata) of every watched file, kept in the
//! state directory so a later run (or the agent) can load it and diff the disk against it.
//!
//! ```no_run
//! use osprey::security::fim::db::FimDatabase;
//! let path = FimDatabase::path_in("/var/lib/osprey".as_ref());
//! let before = FimDatabase::load(&path).unwrap().unwrap_or_default();
//! let (now, _warnings) = FimDatabase::scan(&before.roots).unwrap();
//! for change in before.diff(&now) {
//!     println!("{} changed: {:?}", change.path.display(), change.fields());
//! }
//! now.save(&path).unwrap();
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FILE_NAME: &str = "fim.json";
pub const VERSION: u32 = 1;
/// Most files one run watches: the kernel map of watched inodes holds this many (with the
/// ancestors of the roots).
pub const MAX_FILES: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file as it was when last looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Hex SHA-256 of the content (regular files) or of the link target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Permission and special bits (st_mode & 07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Device (kernel encoding, major << 20 | minor) and inode: what the kernel map holds.
    pub dev: u32,
    pub ino: u64,
}

/// One field that differs between two states: (name, before, after) as JSON values.
pub type FieldChange = (&'static str, serde_json::Value, serde_json::Value);

impl FileState {
    /// The state of `path` now (not following a final symlink); `Ok(None)` if it is gone.
    pub fn of(path: &Path) -> std::io::Result<Option<Self>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        let (kind, sha256) = if ft.is_file() {
            (FileKind::File, hash_file(path).ok())
        } else if ft.is_dir() {
            (FileKind::Dir, None)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path)?;
            let digest = Sha256::digest(target.as_os_str().as_encoded_bytes());
            (FileKind::Symlink, Some(hex(&digest)))
        } else {
            // FIFOs, sockets and devices are never opened (a FIFO would block).
            (FileKind::Other, None)
        };
        let dev = meta.dev();
        Ok(Some(FileState {
            kind,
            sha256,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            dev: ((libc::major(dev) << 20) | libc::minor(dev)) as u32,
            ino: meta.ino(),
        }))
    }

    /// Fields that differ from `after`, in a fixed order (content first).
    pub fn diff(&self, after: &FileState) -> Vec<FieldChange> {
        use serde_json::json;
        let mut out = Vec::new();
        if self.kind != after.kind {
            out.push(("type", json!(self.kind), json!(after.kind)));
        }
        if self.sha256 != after.sha256 {
            out.push(("sha256", json!(self.sha256), json!(after.sha256)));
        }
        if self.size != after.size {
            out.push(("size", json!(self.size), json!(after.size)));
        }
        if self.mode != after.mode {
            out.push(("mode", json!(octal(self.mode)), json!(octal(after.mode))));
        }
        if self.uid != after.uid {
            out.push(("uid", json!(self.uid), json!(after.uid)));
        }
        if self.gid != after.gid {
            out.push(("gid", json!(self.gid), json!(after.gid)));
        }
        if self.mtime_ns != after.mtime_ns {
            out.push((
                "mtime",
                json!(mtime_text(self.mtime_ns)),
                json!(mtime_text(after.mtime_ns)),
            ));
        }
        if (self.dev, self.ino) != (after.dev, after.ino) {
            out.push(("inode", json!(self.ino), json!(after.ino)));
        }
        out
    }

    /// The state as shown in alerts (mode in octal, mtime in RFC 3339).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.kind,
            "sha256": self.sha256,
            "mode": octal(self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": mtime_text(self.mtime_ns),
            "ino": self.ino,
        })
    }
}

pub fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

fn mtime_text(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
    .unwrap_or_else(|| ns.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file's content, read in 64 KiB blocks.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FimDatabase {
    pub version: u32,
    /// Watched roots, canonical (symlinks resolved), as given to `--watch`.
    pub roots: Vec<PathBuf>,
    /// Every watched path (the roots and, for directories, everything below them).
    pub files: BTreeMap<PathBuf, FileState>,
}

/// A difference between two databases, for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub before: Option<FileState>,
    pub after: Option<FileState>,
}

impl Change {
    /// Names of the fields that differ ("created"/"deleted" when one side is missing).
    pub fn fields(&self) -> Vec<&'static str> {
        match (&self.before, &self.after) {
            (Some(b), Some(a)) => b.diff(a).into_iter().map(|c| c.0).collect(),
            (None, _) => vec!["created"],
            (_, None) => vec!["deleted"],
        }
    }
}

impl FimDatabase {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// `Ok(None)` when there is no database; a malformed one is an error naming line and column.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        let Some(db) = super::super::state::read_json::<FimDatabase>(path)? else {
            return Ok(None);
        };
        if db.version != VERSION {
            return Err(format!(
                "{}: FIM database version {} is not supported ({VERSION} is)",
                path.display(),
                db.version
            ));
        }
        Ok(Some(db))
    }

    /// Writes the database atomically with mode 0600.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        super::super::state::write_private_json(path, self)
    }

    /// Canonical forms of `--watch` arguments; an error names the first that cannot be
    /// watched (missing, unreadable, not valid UTF-8).
    pub fn canonical_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for p in paths {
            let c = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
            if c.to_str().is_none() {
                return Err(format!("{}: not valid UTF-8", p.display()));
            }
            roots.push(c);
        }
        roots.sort();
        roots.dedup();
        // A root inside another adds nothing.
        let all = roots.clone();
        roots.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
        Ok(roots)
    }

    /// Looks at every file under `roots` (directories recursively, symlinks not followed).
    /// Returns the database and warnings about what was skipped.
    pub fn scan(roots: &[PathBuf]) -> Result<(Self, Vec<String>), String> {
        let mut db = FimDatabase {
            version: VERSION,
            roots: roots.to_vec(),
            files: BTreeMap::new(),
        };
        let mut warnings = Vec::new();
        for root in roots {
            db.scan_into(root, &mut warnings)?;
        }
        Ok((db, warnings))
    }

    /// Adds `path` and, for a directory, everything below it.
    pub fn scan_into(&mut self, path: &Path, warnings: &mut Vec<String>) -> Result<(), String> {
        let mut stack = vec![path.to_path_buf()];
        while let Some(p) = stack.pop() {
            if p.to_str().is_none() {
                warnings.push(format!("{}: not valid UTF-8, not watched", p.display()));
                continue;
            }
            let state = match FileState::of(&p) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    warnings.push(format!("{}: {e}", p.display()));
                    continue;
                }
            };
            if state.kind == FileKind::Dir {
                match std::fs::read_dir(&p) {
                    Ok(dir) => stack.extend(dir.flatten().map(|d| d.path())),
                    Err(e) => warnings.push(format!("{}: {e}", p.display())),
                }
            }
            self.files.insert(p, state);
            if self.files.len() > MAX_FILES {
                return Err(format!(
                    "more than {MAX_FILES} files under the watched paths; watch fewer"
                ));
            }
        }
        Ok(())
    }

    /// Removes `path` and everything below it; returns the states removed.
    pub fn remove_tree(&mut self, path: &Path) -> Vec<(PathBuf, FileState)> {
        let below: Vec<PathBuf> = self
            .files
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        below
            .into_iter()
            .filter_map(|p| self.files.remove(&p).map(|s| (p, s)))
            .collect()
    }

    /// Whether `path` is a root or below a directory root.
    pub fn covers(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    /// Every path whose state differs between `self` (before) and `now`.
    pub fn diff(&self, now: &FimDatabase) -> Vec<Change> {
        let mut out = Vec::new();
        for (path, before) in &self.files {
            let after = now.files.get(path);
            if after != Some(before) {
                out.push(Change {
                    path: path.clone(),
                    before: Some(before.clone()),
                    after: after.cloned(),
                });
            }
        }
        for (path, after) in &now.files {
            if !self.files.contains_key(path) {
                out.push(Change {
                    path: path.clone(),
                    before: None,
                    after: Some(after.clone()),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("osprey-fimdb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    #[test]
    fn scan_save_load_and_diff() {
        let d = scratch("roundtrip");
        std::fs::write(d.join("a"), b"hello").unwrap();
        std::fs::write(d.join("sub/b"), b"").unwrap();
        let roots = FimDatabase::canonical_roots(std::slice::from_ref(&d)).unwrap();
        let (db, warnings) = FimDatabase::scan(&roots).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let a = &db.files[&roots[0].join("a")];
        assert_eq!(
            a.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(db.files[&roots[0].join("sub")].kind, FileKind::Dir);
        let file = d.join("state/fim.json");
        db.save(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = FimDatabase::load(&file).unwrap().unwrap();
        assert_eq!(loaded, db);

        std::fs::write(d.join("a"), b"changed!").unwrap();
        std::fs::remove_file(d.join("sub/b")).unwrap();
        let (now, _) = FimDatabase::scan(&roots).unwrap();
        let changes = loaded.diff(&now);
        let by_path: BTreeMap<_, _> = changes
            .iter()
            .map(|c| (c.path.clone(), c.fields()))
            .collect();
        assert!(by_path[&roots[0].join("a")].contains(&"sha256"));
        assert_eq!(by_path[&roots[0].join("sub/b")], vec!["deleted"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn nested_roots_collapse_and_missing_root_is_an_error() {
        let d = scratch("roots");
        let roots = FimDatabase::canonical_roots(&[d.join("sub"), d.clone()]).unwrap();
        assert_eq!(roots.len(), 1);
        assert!(FimDatabase::canonical_roots(&[d.join("nope")]).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn remove_tree_takes_only_what_is_below() {
        let mut db = FimDatabase::default();
        let s = FileState::of(Path::new("/")).unwrap().unwrap();
        for p in ["/w/d", "/w/d/x", "/w/d/y/z", "/w/dd", "/w/e"] {
            db.files.insert(PathBuf::from(p), s.clone());
        }
        let gone: Vec<_> = db
            .remove_tree(Path::new("/w/d"))
            .into_iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(gone.len(), 3);
        assert!(db.files.contains_key(Path::new("/w/dd")));
    }
}
