//! Lets go of the resident pages of the agent's own executable that a phase of start-up
//! touched and the next phase may not need (argument and config parsing before loading; the
//! loaders, BTF parsing and relocation once attached). They are file pages: the page cache
//! keeps them and a later use maps them again without reading the disk. Only mappings that
//! hold no private (written) page are dropped, so nothing but clean file pages goes.

/// Unmaps the clean resident pages of the running executable from this process. Returns
/// the bytes that were resident in the mappings it dropped.
pub fn drop_clean_image_pages() -> u64 {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    for mapping in clean_mappings(&smaps, exe.as_os_str().as_encoded_bytes()) {
        // SAFETY: the range is a read-only mapping of our executable with no private page:
        // MADV_DONTNEED only unmaps file pages, which fault back in unchanged on next use.
        let ok = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.len,
                libc::MADV_DONTNEED,
            )
        } == 0;
        if ok {
            dropped += mapping.rss_bytes;
        }
    }
    dropped
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
    rss_bytes: u64,
}

/// The mappings of `path` in `smaps` text that are not writable and hold no anonymous
/// (copied-on-write) page.
fn clean_mappings(smaps: &str, path: &[u8]) -> Vec<Mapping> {
    let mut out = Vec::new();
    // The candidate mapping whose block is being read, and whether it is known clean.
    let mut current: Option<Mapping> = None;
    let mut anonymous_seen = false;
    let finish = |m: Option<Mapping>, clean: bool, out: &mut Vec<Mapping>| {
        if let (Some(m), true) = (m, clean) {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line, path) {
            finish(current.take(), anonymous_seen, &mut out);
            anonymous_seen = false;
            current = header;
            continue;
        }
        let Some(m) = current.as_mut() else { continue };
        let kib = |rest: &str| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        };
        if let Some(rest) = line.strip_prefix("Rss:") {
            m.rss_bytes = kib(rest).unwrap_or(0) * 1024;
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            // Clean only when it is known to be zero.
            anonymous_seen = kib(rest) == Some(0);
        }
    }
    finish(current, anonymous_seen, &mut out);
    out
}

/// For a mapping header line (`start-end perms offset dev inode path`): `Some(None)` for a
/// mapping that is not a candidate, `Some(Some(..))` for a read-only mapping of `path`,
/// `None` for a line that is not a header.
fn mapping_header(line: &str, path: &[u8]) -> Option<Option<Mapping>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    if perms.len() != 4 {
        return None;
    }
    // offset, device, inode, then the path (which may contain spaces).
    let rest = fields.skip(3).collect::<Vec<_>>().join(" ");
    let candidate = !perms.contains('w') && rest.as_bytes() == path && end > start;
    Some(candidate.then_some(Mapping {
        start,
        len: end - start,
        rss_bytes: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55e000000000-55e000100000 r--p 00000000 fe:00 10 /opt/osprey
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
55e000100000-55e000200000 r-xp 00100000 fe:00 10 /opt/osprey
Rss:                 256 kB
Anonymous:             0 kB
55e000200000-55e000210000 r--p 00200000 fe:00 10 /opt/osprey
Rss:                  64 kB
Anonymous:            64 kB
55e000210000-55e000220000 rw-p 00210000 fe:00 10 /opt/osprey
Rss:                  64 kB
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 11 /usr/lib/libc.so.6
Rss:                 100 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 rw-p 00000000 00:00 0
Rss:                 100 kB
Anonymous:           100 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable() {
        let found = clean_mappings(SMAPS, b"/opt/osprey");
        assert_eq!(
            found,
            vec![
                Mapping {
                    start: 0x55e0_0000_0000,
                    len: 0x10_0000,
                    rss_bytes: 512 * 1024
                },
                Mapping {
                    start: 0x55e0_0010_0000,
                    len: 0x10_0000,
                    rss_bytes: 256 * 1024
                },
            ]
        );
    }

    #[test]
    fn a_mapping_without_an_anonymous_line_is_not_clean() {
        let smaps = "55e000000000-55e000100000 r--p 00000000 fe:00 10 /opt/osprey\nRss: 4 kB\n";
        assert!(clean_mappings(smaps, b"/opt/osprey").is_empty());
    }

    #[test]
    fn dropping_keeps_the_process_working() {
        let dropped = drop_clean_image_pages();
        // The test binary's code and constants fault back in as it goes on.
        assert!(dropped > 0, "nothing of the test binary was resident?");
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
