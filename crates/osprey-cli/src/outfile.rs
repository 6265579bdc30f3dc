//! Files named on the command line that a command writes at its end (`profile --svg`,
//! `--pprof`, `--folded`, `secure --learn`'s baselines). They are checked before the work
//! starts, so a typo costs nothing; and finished work is never lost: what cannot be written
//! where asked goes to a file in the temporary directory, and the error says where.

use std::ffi::CString;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::Failure;

/// Exit 2 unless `path` can be created or replaced: an existing file must be writable; a
/// new one needs its directory to be writable, or with `create_dirs` (the directories are
/// made when writing) the nearest existing ancestor.
pub fn check_writable(flag: &str, path: &Path, create_dirs: bool) -> Result<(), Failure> {
    let fail = |why: String| Failure::Usage(format!("{flag} {}: {why}", path.display()));
    if path.is_dir() {
        return Err(fail("is a directory".into()));
    }
    if path.exists() {
        return access(path, libc::W_OK).map_err(|e| fail(e.to_string()));
    }
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    while let Some(d) = dir {
        if d.exists() || !create_dirs {
            break;
        }
        dir = d.parent().filter(|d| !d.as_os_str().is_empty());
    }
    let dir = dir.unwrap_or(Path::new("."));
    if !dir.exists() {
        return Err(fail(format!("directory {} does not exist", dir.display())));
    }
    if !dir.is_dir() {
        return Err(fail(format!(
            "{} is a file, not a directory",
            dir.display()
        )));
    }
    access(dir, libc::W_OK | libc::X_OK)
        .map_err(|e| fail(format!("cannot create files in {}: {e}", dir.display())))
}

fn access(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

use osprey::state_dir::rescue_path;

/// Writes `path` with `write`; if that fails, writes the same to [`rescue_path`] and
/// returns an error naming both.
pub fn write_or_rescue(
    flag: &str,
    path: &Path,
    write: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let attempt = |p: &Path| -> std::io::Result<()> {
        let mut f = BufWriter::new(std::fs::File::create(p)?);
        write(&mut f)?;
        f.flush()
    };
    let Err(e) = attempt(path) else {
        return Ok(());
    };
    rescued(flag, path, e, |rescue| attempt(rescue))
}

/// The error for an output that could not be written at `path`, after `save` put it at
/// [`rescue_path`] (or could not).
pub fn rescued(
    flag: &str,
    path: &Path,
    error: std::io::Error,
    save: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let rescue = rescue_path(path);
    let outcome = match save(&rescue) {
        Ok(()) => format!("the result was saved to {} instead", rescue.display()),
        Err(e2) => format!("saving it to {} failed too: {e2}", rescue.display()),
    };
    Err(Failure::Runtime(anyhow::anyhow!(
        "cannot write {flag} {}: {error}; {outcome}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(r: Result<(), Failure>) -> String {
        match r {
            Err(Failure::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn missing_directories_and_files_in_the_way_are_refused() {
        let m = usage(check_writable(
            "--svg",
            Path::new("/nonexistent/x.svg"),
            false,
        ));
        assert!(m.contains("--svg /nonexistent/x.svg"), "{m}");
        assert!(m.contains("does not exist"), "{m}");
        let file = std::env::temp_dir().join(format!("osprey-outfile-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let m = usage(check_writable(
            "--state-dir",
            &file.join("sub/baselines.json"),
            true,
        ));
        assert!(m.contains("is a file, not a directory"), "{m}");
        std::fs::remove_file(&file).unwrap();
        let m = usage(check_writable("--svg", &std::env::temp_dir(), false));
        assert!(m.contains("is a directory"), "{m}");
        check_writable("--x", &std::env::temp_dir().join("new/deeper/x"), true).unwrap();
        check_writable("--svg", &std::env::temp_dir().join("x.svg"), false).unwrap();
    }

    #[test]
    fn an_unwritable_output_is_saved_elsewhere_and_the_error_says_where() {
        let path = Path::new("/nonexistent/osprey-rescue-test.folded");
        let err = write_or_rescue("--folded", path, |w| w.write_all(b"a;b 1\n"));
        let Err(Failure::Runtime(e)) = err else {
            panic!("expected a runtime error");
        };
        let rescue = rescue_path(path);
        assert!(e.to_string().contains(&rescue.display().to_string()), "{e}");
        assert_eq!(std::fs::read_to_string(&rescue).unwrap(), "a;b 1\n");
        std::fs::remove_file(rescue).unwrap();
    }
}
