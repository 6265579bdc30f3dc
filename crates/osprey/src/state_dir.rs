//! The state directory (baselines, FIM database, agent lock): what is wrong with one that
//! cannot be used, in words, rather than the bare OS error ("File exists"); and where
//! finished work goes when it cannot be written where asked.

use std::path::Path;

/// Why `dir` is not a usable directory, when a regular file stands where it, or one of
/// its ancestors, should be; `None` otherwise.
pub fn file_in_the_way(dir: &Path) -> Option<String> {
    let mut at = Some(dir);
    while let Some(p) = at {
        if let Ok(meta) = std::fs::metadata(p) {
            return (!meta.is_dir()).then(|| {
                format!(
                    "state directory {}: {} is a file, not a directory",
                    dir.display(),
                    p.display()
                )
            });
        }
        at = p.parent();
    }
    None
}

/// An error about using `dir`, explained when a file is in the way.
pub fn explain(dir: &Path, error: &std::io::Error) -> String {
    file_in_the_way(dir).unwrap_or_else(|| format!("state directory {}: {error}", dir.display()))
}

/// Where a file that could not be written at `path` (finished work: learned baselines, a
/// profile) is saved instead: the temporary directory, under a name with this process's id.
pub fn rescue_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    std::env::temp_dir().join(format!("osprey-{}-{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_where_the_directory_or_an_ancestor_should_be_is_named() {
        let file = std::env::temp_dir().join(format!("osprey-statedir-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let m = file_in_the_way(&file).unwrap();
        assert!(m.contains("is a file, not a directory"), "{m}");
        let m = file_in_the_way(&file.join("a/b")).unwrap();
        assert!(m.contains(&format!("{} is a file", file.display())), "{m}");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(file_in_the_way(&std::env::temp_dir().join("x/y")), None);
    }
}
