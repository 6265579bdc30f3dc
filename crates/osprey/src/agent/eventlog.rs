//! The agent's event log: JSON lines appended to a file that rotates by size, keeping a
//! bounded number of old files. Rotation happens only between lines. Restarting appends
//! where the last run stopped, so the log position survives restarts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub enum LogTarget {
    Stdout(io::Stdout),
    File(RotatingFile),
}

impl LogTarget {
    pub fn open(path: &str, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if path == "-" {
            return Ok(LogTarget::Stdout(io::stdout()));
        }
        Ok(LogTarget::File(RotatingFile::open(
            PathBuf::from(path),
            max_bytes,
            keep,
        )?))
    }
}

impl Write for LogTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LogTarget::Stdout(s) => s.write(buf),
            LogTarget::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LogTarget::Stdout(s) => s.flush(),
            LogTarget::File(f) => f.flush(),
        }
    }
}

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
    pending: Vec<u8>,
    pub rotations: u64,
}

impl RotatingFile {
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_private(&path, false)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            keep,
            file,
            size,
            pending: Vec::with_capacity(1 << 16),
            rotations: 0,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file = open_private(&self.path, true)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = open_private(&self.path, false)?;
        }
        self.size = 0;
        self.rotations += 1;
        Ok(())
    }

    /// Writes whole buffered lines, rotating before a line that would cross the limit.
    fn write_lines(&mut self) -> io::Result<()> {
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let lines: Vec<u8> = self.pending.drain(..=end).collect();
        let mut rest = &lines[..];
        while !rest.is_empty() {
            let cut = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            if self.size > 0 && self.size + cut as u64 > self.max_bytes {
                self.rotate()?;
            }
            // Batch every line that still fits into one write.
            let mut take = cut;
            while take < rest.len() {
                let next = rest[take..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len() - take, |i| i + 1);
                if self.size + (take + next) as u64 > self.max_bytes {
                    break;
                }
                take += next;
            }
            self.file.write_all(&rest[..take])?;
            self.size += take as u64;
            rest = &rest[take..];
        }
        Ok(())
    }
}

/// Opens the log for appending (or truncated), readable by its owner only: the log holds
/// command lines, paths and alerts. A file left with wider permissions is narrowed.
fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= 1 << 16 {
            self.write_lines()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_lines()?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_between_lines_and_keeps_a_bounded_number() {
        let dir = std::env::temp_dir().join(format!("osprey-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("events.jsonl");
        let mut log = RotatingFile::open(path.clone(), 100, 2).unwrap();
        for i in 0..30 {
            writeln!(log, "{{\"n\":{i:>10}}}").unwrap(); // 17 bytes a line
            log.flush().unwrap();
        }
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
        let current = read(&path);
        assert!(current.len() <= 100 && current.ends_with('\n'));
        let one = read(&dir.join("events.jsonl.1"));
        assert!(one.lines().all(|l| l.starts_with('{') && l.ends_with('}')));
        assert!(dir.join("events.jsonl.2").exists());
        assert!(!dir.join("events.jsonl.3").exists(), "keeps only 2");
        let last_line = current.lines().last().unwrap();
        assert!(last_line.contains("29"));
        // Reopening appends after what is there.
        drop(log);
        let mut again = RotatingFile::open(path.clone(), 1000, 2).unwrap();
        writeln!(again, "more").unwrap();
        again.flush().unwrap();
        assert!(read(&path).ends_with("more\n") && read(&path).starts_with(&current));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_and_rotated_files_are_owner_only() {
        let dir = std::env::temp_dir().join(format!("osprey-rot-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        // A log left world-readable by an earlier run is narrowed too.
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        for keep in [2, 0] {
            let mut log = RotatingFile::open(path.clone(), 40, keep).unwrap();
            for i in 0..10 {
                writeln!(log, "{{\"n\":{i:>10}}}").unwrap();
                log.flush().unwrap();
            }
            assert!(log.rotations > 0);
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("events.jsonl.1")), 0o600);
        assert_eq!(mode(&dir.join("events.jsonl.2")), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
