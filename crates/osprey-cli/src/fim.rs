//! `osprey secure --watch PATH`: file integrity monitoring start-up (baseline, kernel maps).

use std::path::{Path, PathBuf};

use osprey::kernel::loader::LoadedCapability;
use osprey::security::fim::db::FimDatabase;
use osprey::security::fim::detector::FimDetector;
use osprey::security::fim::kernel::FimMaps;

use crate::Failure;

/// Checks the watched paths and takes their baseline (no privileges needed yet). A database
/// left by an earlier run over the same roots is diffed against the disk and reported.
pub fn start_database(
    watch: &[PathBuf],
    state_dir: &Path,
) -> Result<(FimDatabase, PathBuf), Failure> {
    let roots =
        FimDatabase::canonical_roots(watch).map_err(|e| Failure::Usage(format!("--watch {e}")))?;
    let db_path = FimDatabase::path_in(state_dir);
    let previous = FimDatabase::load(&db_path).map_err(Failure::Usage)?;
    let (db, warnings) = FimDatabase::scan(&roots).map_err(Failure::Usage)?;
    for w in warnings {
        eprintln!("osprey: FIM: warning: {w}");
    }
    if let Some(previous) = previous.filter(|p| p.roots == db.roots) {
        let changes = previous.diff(&db);
        if !changes.is_empty() {
            eprintln!(
                "osprey: FIM: {} paths changed while not watched (since {} was written):",
                changes.len(),
                db_path.display()
            );
            for c in changes.iter().take(20) {
                eprintln!("  {} {}", c.path.display(), c.fields().join(","));
            }
        }
    }
    Ok((db, db_path))
}

/// Fills the kernel maps, persists the baseline and returns the detector.
pub fn start_detector(
    security: &mut LoadedCapability,
    db: FimDatabase,
    db_path: PathBuf,
) -> Result<FimDetector, Failure> {
    let runtime = |e: String| Failure::Runtime(anyhow::anyhow!(e));
    let mut maps = FimMaps::take(security).map_err(runtime)?;
    maps.fill(&db).map_err(runtime)?;
    db.save(&db_path)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("writing {}: {e}", db_path.display())))?;
    let roots: Vec<String> = db.roots.iter().map(|r| r.display().to_string()).collect();
    eprintln!(
        "osprey: FIM: watching {} paths under {} (baseline in {})",
        db.files.len(),
        roots.join(", "),
        db_path.display()
    );
    Ok(FimDetector::new(db, db_path, Some(maps)))
}
