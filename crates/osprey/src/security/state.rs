//! Files `osprey secure` keeps in its state directory (baselines, the FIM database): written
//! atomically with mode 0600 so a crash never leaves a torn file and other users read nothing.

use std::io::Write;
use std::path::Path;

/// Writes `value` as pretty JSON to a temporary file (mode 0600) next to `path`, syncs it,
/// renames it over `path` and syncs the directory. Creates the directory (0700) if needed.
pub fn write_private_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a JSON state file: `Ok(None)` when there is none; a malformed one is an error
/// naming line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}
