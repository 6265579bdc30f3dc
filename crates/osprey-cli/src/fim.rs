//! `osprey secure --watch PATH`: file integrity monitoring start-up (baseline, kernel maps),
//! with what it finds said on stderr.

use std::path::{Path, PathBuf};

use osprey::kernel::loader::LoadedCapability;
use osprey::security::fim::detector::FimDetector;
use osprey::security::fim::FimStart;

use crate::Failure;

/// Checks the watched paths and takes their baseline. A database left by an earlier run
/// over the same roots is diffed against the disk and reported.
pub fn start_database(watch: &[PathBuf], state_dir: &Path) -> Result<FimStart, Failure> {
    let start = FimStart::scan(watch, state_dir).map_err(Failure::Usage)?;
    for w in &start.warnings {
        eprintln!("osprey: FIM: warning: {w}");
    }
    let changes = &start.changed_while_unwatched;
    if !changes.is_empty() {
        eprintln!(
            "osprey: FIM: {} paths changed while not watched (since {} was written):",
            changes.len(),
            start.db_path.display()
        );
        for c in changes.iter().take(20) {
            eprintln!("  {} {}", c.path.display(), c.fields().join(","));
        }
    }
    Ok(start)
}

/// Fills the kernel maps, persists the baseline and returns the detector.
pub fn start_detector(
    security: &mut LoadedCapability,
    start: FimStart,
) -> Result<FimDetector, Failure> {
    let roots: Vec<String> = start
        .db
        .roots
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let (files, db_path) = (start.db.files.len(), start.db_path.clone());
    let detector = start
        .attach(security)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
    eprintln!(
        "osprey: FIM: watching {files} paths under {} (baseline in {})",
        roots.join(", "),
        db_path.display()
    );
    Ok(detector)
}
