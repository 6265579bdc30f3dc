//! Addresses to function names: the kernel through kallsyms, user code through the ELF
//! symbol tables and DWARF of the binaries mapped when the process was seen (blazesym,
//! with Rust and C++ demangling), JIT code through /tmp/perf-PID.map.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use blazesym::symbolize::{source, Input, Symbolized, Symbolizer as Blaze};

use super::frame::{CodeAddr, Frame};
use super::frame_cache::FrameCache;
use super::procmaps::{FileId, ProcessMaps};

pub struct Symbolizer {
    blaze: Blaze,
    perf_maps: HashMap<u32, Vec<(u64, u64, String)>>,
    cache: FrameCache,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::with_code_info(true)
    }

    /// Without code info, frames get function names only: no DWARF is parsed, which keeps
    /// time and memory small for a long-running profiler meeting large debug binaries.
    pub fn with_code_info(code_info: bool) -> Self {
        Self::with_cache(code_info, FrameCache::disabled())
    }

    /// Names found in `cache` are not looked up again; new ones are added to it.
    pub fn with_cache(code_info: bool, mut cache: FrameCache) -> Self {
        cache.start_interval();
        Self {
            blaze: Blaze::builder()
                .enable_demangling(true)
                .enable_code_info(code_info)
                .enable_inlined_fns(false)
                .build(),
            perf_maps: HashMap::new(),
            cache,
        }
    }

    /// The cache, for the next interval (the parsed files go with the rest).
    pub fn into_cache(self) -> FrameCache {
        self.cache
    }

    /// Kernel addresses, in order.
    pub fn kernel(&mut self, addrs: &[CodeAddr]) -> Vec<Frame> {
        let mut frames: Vec<Option<Frame>> = addrs
            .iter()
            .map(|a| self.cache.kernel(a.lookup()))
            .collect();
        let missing: Vec<usize> = (0..addrs.len()).filter(|&i| frames[i].is_none()).collect();
        if !missing.is_empty() {
            self.cache.stats.kernel_reads += 1;
            let lookups: Vec<u64> = missing.iter().map(|&i| addrs[i].lookup()).collect();
            let src = source::Source::Kernel(source::Kernel::default());
            if let Ok(syms) = self
                .blaze
                .symbolize(&src, Input::AbsAddr(lookups.as_slice()))
            {
                for (s, &i) in syms.into_iter().zip(&missing) {
                    let span = function_span(&s, addrs[i].lookup());
                    let frame = to_frame(s, addrs[i].addr, true, "[kernel]");
                    if let (true, Some(span)) = (frame.is_named(), span) {
                        self.cache.put_kernel(span, &frame);
                    }
                    frames[i] = Some(frame);
                }
            }
        }
        frames
            .into_iter()
            .zip(addrs)
            .map(|(f, a)| f.unwrap_or_else(|| Frame::unknown(a.addr, true)))
            .collect()
    }

    /// User addresses of one process, in order.
    pub fn user(&mut self, pid: u32, maps: &ProcessMaps, addrs: &[CodeAddr]) -> Vec<Frame> {
        let mut frames: Vec<Option<Frame>> = vec![None; addrs.len()];
        // Batch by binary: one blazesym call per file.
        let mut by_file: HashMap<PathBuf, Vec<(usize, FileId, u64)>> = HashMap::new();
        for (i, a) in addrs.iter().enumerate() {
            if let Some(m) = maps.find(pid, a.lookup()) {
                let offset = m.file_offset(a.lookup());
                frames[i] = self.cache.user(m.file, offset);
                if frames[i].is_none() {
                    by_file
                        .entry(m.path.clone())
                        .or_default()
                        .push((i, m.file, offset));
                }
            }
        }
        for (path, items) in by_file {
            let offsets: Vec<u64> = items.iter().map(|&(_, _, o)| o).collect();
            let module = display_module(&path);
            let src = source::Source::Elf(source::Elf::new(&path));
            if let Ok(syms) = self
                .blaze
                .symbolize(&src, Input::FileOffset(offsets.as_slice()))
            {
                for (s, &(i, file, offset)) in syms.into_iter().zip(&items) {
                    let span = function_span(&s, offset);
                    let frame = to_frame(s, addrs[i].addr, false, &module);
                    if let (true, Some(span)) = (frame.is_named(), span) {
                        self.cache.put_user(file, span, &frame);
                    }
                    frames[i] = Some(frame);
                }
            }
        }
        let perf_map = self
            .perf_maps
            .entry(pid)
            .or_insert_with(|| read_perf_map(Path::new(&format!("/tmp/perf-{pid}.map"))));
        frames
            .into_iter()
            .zip(addrs)
            .map(|(f, a)| match f {
                Some(f) if f.module != "[unknown]" => f,
                _ => perf_map_lookup(perf_map, a.lookup())
                    .map(|name| Frame {
                        name: name.to_string(),
                        module: "[perf-map]".into(),
                        file: None,
                        line: None,
                        kernel: false,
                    })
                    .unwrap_or_else(|| Frame::unknown(a.addr, false)),
            })
            .collect()
    }
}

fn display_module(path: &Path) -> String {
    let text = path.to_string_lossy();
    // Paths reached through /proc/PID/root are shown as the process saw them.
    match text.strip_prefix("/proc/") {
        Some(rest) => match rest.split_once("/root") {
            Some((pid, p)) if pid.bytes().all(|b| b.is_ascii_digit()) => p.to_string(),
            _ => text.into_owned(),
        },
        None => text.into_owned(),
    }
}

/// The part of the symbol's function known to hold `lookup`, in the space of `lookup`:
/// from its first address to its end (when the size is known) or to `lookup`.
fn function_span(s: &Symbolized<'_>, lookup: u64) -> Option<(u64, u64)> {
    let Symbolized::Sym(sym) = s else {
        return None;
    };
    let start = lookup.checked_sub(sym.offset as u64)?;
    let last = match sym.size {
        Some(size) if size > 0 => start + size as u64 - 1,
        _ => lookup,
    };
    Some((start, last.max(lookup)))
}

fn to_frame(s: Symbolized<'_>, addr: u64, kernel: bool, module: &str) -> Frame {
    match s {
        Symbolized::Sym(sym) => {
            let (file, line) = match &sym.code_info {
                Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                None => (None, None),
            };
            Frame {
                name: sym.name.into_owned(),
                module: module.to_string(),
                file,
                line,
                kernel,
            }
        }
        Symbolized::Unknown(_) => Frame::unknown(addr, kernel),
    }
}

/// `START SIZE NAME` lines in hex, as JITs write them.
pub fn parse_perf_map(text: &str) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let start = parts.next()?.trim_start_matches("0x");
            let size = parts.next()?.trim_start_matches("0x");
            let name = parts.next()?.trim();
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(size, 16).ok()?,
                name.to_string(),
            ))
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out
}

fn read_perf_map(path: &Path) -> Vec<(u64, u64, String)> {
    std::fs::read_to_string(path)
        .map(|t| parse_perf_map(&t))
        .unwrap_or_default()
}

fn perf_map_lookup(map: &[(u64, u64, String)], addr: u64) -> Option<&str> {
    let i = map.partition_point(|e| e.0 <= addr);
    let (start, size, name) = map.get(i.checked_sub(1)?)?;
    (addr < start + size).then_some(name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_map_lookup_finds_the_enclosing_entry() {
        let map = parse_perf_map("7f00 10 jit_a\n0x7f40 20 LazyCompile:*b app.js:3\nbad line\n");
        assert_eq!(perf_map_lookup(&map, 0x7f05), Some("jit_a"));
        assert_eq!(perf_map_lookup(&map, 0x7f10), None);
        assert_eq!(
            perf_map_lookup(&map, 0x7f5f),
            Some("LazyCompile:*b app.js:3")
        );
        assert_eq!(perf_map_lookup(&map, 0x10), None);
    }

    #[test]
    fn modules_reached_through_proc_root_show_the_process_path() {
        assert_eq!(
            display_module(Path::new("/proc/42/root/usr/lib/libc.so.6")),
            "/usr/lib/libc.so.6"
        );
        assert_eq!(display_module(Path::new("/usr/bin/x")), "/usr/bin/x");
    }
}
