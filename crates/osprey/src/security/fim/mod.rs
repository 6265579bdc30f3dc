//! File integrity monitoring (`osprey secure --watch PATH`).
//!
//! At start every watched file gets a baseline (SHA-256 and mode/uid/gid/size/mtime) in a
//! database kept in the state directory (`db`). Watched inodes, watched directories and the
//! watched roots as path prefixes go into kernel maps (`kernel`), so the security object's
//! sys_exit handler sends only calls that may touch them (`event`, bpf/include/fim.h). The
//! detector (`detector`) resolves their paths exactly, waits for each change to settle and
//! raises one alert per change with the before/after hashes and a metadata diff.

pub mod db;
pub mod detector;
pub mod event;
pub mod kernel;

use std::path::{Path, PathBuf};

use crate::kernel::loader::LoadedCapability;
use db::{Change, FimDatabase};
use detector::FimDetector;
use kernel::FimMaps;

/// FIM before the kernel side is loaded: the baseline of the watched paths, and what
/// changed since an earlier run over the same roots saved its database (restart state).
pub struct FimStart {
    pub db: FimDatabase,
    pub db_path: PathBuf,
    /// Changes made while nothing watched (database of the previous run vs the disk now).
    pub changed_while_unwatched: Vec<Change>,
    pub warnings: Vec<String>,
}

impl FimStart {
    /// Checks the watched paths and takes their baseline (no privileges needed yet).
    /// Errors are usage errors: a missing path, a malformed database.
    pub fn scan(watch: &[PathBuf], state_dir: &Path) -> Result<Self, String> {
        let roots = FimDatabase::canonical_roots(watch).map_err(|e| format!("--watch {e}"))?;
        let db_path = FimDatabase::path_in(state_dir);
        let previous = FimDatabase::load(&db_path)?;
        let (db, warnings) = FimDatabase::scan(&roots)?;
        let changed_while_unwatched = previous
            .filter(|p| p.roots == db.roots)
            .map(|p| p.diff(&db))
            .unwrap_or_default();
        Ok(Self {
            db,
            db_path,
            changed_while_unwatched,
            warnings,
        })
    }

    /// Fills the security object's FIM maps, persists the baseline and returns the detector.
    pub fn attach(self, security: &mut LoadedCapability) -> Result<FimDetector, String> {
        let mut maps = FimMaps::take(security)?;
        maps.fill(&self.db)?;
        self.db
            .save(&self.db_path)
            .map_err(|e| format!("writing {}: {e}", self.db_path.display()))?;
        Ok(FimDetector::new(self.db, self.db_path, Some(maps)))
    }
}
