//! The kernel side of FIM as user space sees it: the `.rodata` switch and the two maps of
//! bpf/include/fim.h (watched inodes, watched roots as path prefixes).

use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData};

use crate::kernel::loader::LoadedCapability;

use super::db::{FileKind, FimDatabase};

pub const WATCHED_FILE: u8 = 1;
pub const WATCHED_DIR: u8 = 2;
pub const ANCESTOR: u8 = 4;
/// Bytes of a root path the LPM trie compares (FIM_ROOT_MAX - 1: the string is NUL-ended).
const ROOT_MAX: usize = 255;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

// SAFETY: integers only, explicit padding.
unsafe impl aya::Pod for InodeKey {}

impl InodeKey {
    pub fn new(dev: u32, ino: u64) -> Self {
        Self { ino, dev, _pad: 0 }
    }
}

/// Syscalls whose exit FIM looks at (fim_call_of in bpf/include/fim.h): the security
/// object's sys_exit handles them too while FIM is on.
pub const SYSCALLS: &[&str] = &[
    "write",
    "pwrite64",
    "writev",
    "sendfile",
    "pwritev",
    "pwritev2",
    "fallocate",
    "splice",
    "copy_file_range",
    "ftruncate",
    "fchmod",
    "fchown",
    "open",
    "creat",
    "openat",
    "openat2",
    "truncate",
    "chmod",
    "chown",
    "lchown",
    "fchmodat",
    "fchmodat2",
    "fchownat",
    "unlink",
    "rmdir",
    "unlinkat",
    "rename",
    "link",
    "renameat",
    "renameat2",
    "linkat",
    "symlink",
    "symlinkat",
    "mkdir",
    "mknod",
    "mkdirat",
    "mknodat",
];

/// `.rodata` settings that turn FIM on in the security object.
pub fn globals() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("fim_enabled", vec![1]),
        ("fim_self_tgid", std::process::id().to_ne_bytes().to_vec()),
    ]
}

pub struct FimMaps {
    inodes: HashMap<MapData, InodeKey, u8>,
    roots: LpmTrie<MapData, [u8; 256], u8>,
}

fn map_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl FimMaps {
    /// Takes the maps out of the loaded security object.
    pub fn take(security: &mut LoadedCapability) -> Result<Self, String> {
        let inodes = security.take_map("fim_inodes").map_err(|e| e.to_string())?;
        let roots = security.take_map("fim_roots").map_err(|e| e.to_string())?;
        Ok(Self {
            inodes: HashMap::try_from(inodes).map_err(|e| map_error("fim_inodes", e))?,
            roots: LpmTrie::try_from(roots).map_err(|e| map_error("fim_roots", e))?,
        })
    }

    /// Fills both maps from the database: every file and directory, the ancestors of the
    /// roots, and the roots as path prefixes.
    pub fn fill(&mut self, db: &FimDatabase) -> Result<(), String> {
        for state in db.files.values() {
            self.watch(state.dev, state.ino, state.kind == FileKind::Dir)?;
        }
        for root in &db.roots {
            let mut dir = root.parent();
            while let Some(d) = dir {
                if let Ok(Some(s)) = super::db::FileState::of(d) {
                    self.add_flags(InodeKey::new(s.dev, s.ino), ANCESTOR)?;
                }
                dir = d.parent();
            }
            self.add_root(root)?;
        }
        Ok(())
    }

    fn add_root(&mut self, root: &Path) -> Result<(), String> {
        let bytes = root.as_os_str().as_encoded_bytes();
        // A longer root is matched on its first bytes: more calls reach user space, none fewer.
        let n = bytes.len().min(ROOT_MAX);
        let mut data = [0u8; 256];
        data[..n].copy_from_slice(&bytes[..n]);
        self.roots
            .insert(&Key::new((n * 8) as u32, data), 1, 0)
            .map_err(|e| map_error("fim_roots", e))
    }

    fn add_flags(&mut self, key: InodeKey, flags: u8) -> Result<(), String> {
        let old = self.inodes.get(&key, 0).unwrap_or(0);
        self.inodes
            .insert(key, old | flags, 0)
            .map_err(|e| map_error("fim_inodes", e))
    }

    /// Watches one inode (a file, or a directory for what is created in it).
    pub fn watch(&mut self, dev: u32, ino: u64, dir: bool) -> Result<(), String> {
        self.add_flags(
            InodeKey::new(dev, ino),
            if dir { WATCHED_DIR } else { WATCHED_FILE },
        )
    }

    /// Stops watching an inode (it keeps ANCESTOR if it has it).
    pub fn unwatch(&mut self, dev: u32, ino: u64) {
        let key = InodeKey::new(dev, ino);
        match self.inodes.get(&key, 0) {
            Ok(flags) if flags & ANCESTOR != 0 => {
                let _ = self.inodes.insert(key, ANCESTOR, 0);
            }
            Ok(_) => {
                let _ = self.inodes.remove(&key);
            }
            Err(_) => {}
        }
    }
}
