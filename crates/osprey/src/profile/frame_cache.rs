//! Frames named in earlier intervals. A long-running profiler (the agent) meets the same
//! code again and again; with this cache it reads kallsyms and ELF files only for code it
//! has not named before. Entries are function spans, identified across processes and time
//! by kernel address or by a binary's (device, inode) and file offset. The cache is bounded
//! and dropped whole when full or old, so that modules loaded since and binaries replaced
//! in place are seen.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::frame::Frame;
use super::procmaps::FileId;

/// What the cache saved and what it did not, for the agent's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FrameCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Intervals in which a kernel address missed (kallsyms was read).
    pub kernel_reads: u64,
}

impl FrameCacheStats {
    /// What happened after `before` was taken.
    pub fn since(self, before: FrameCacheStats) -> FrameCacheStats {
        FrameCacheStats {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            kernel_reads: self.kernel_reads - before.kernel_reads,
        }
    }
}

/// Code of one kind: the kernel, or one binary (file offsets).
type Space = Option<FileId>;

#[derive(Debug)]
pub struct FrameCache {
    /// (space, first address of a function) -> (last address known inside it, its frame).
    /// A function's code is contiguous, so any address in between has the same name: a
    /// sample at a new offset in a known function needs no lookup.
    spans: BTreeMap<(Space, u64), (u64, Frame)>,
    max_entries: usize,
    max_age: Duration,
    since: Instant,
    pub stats: FrameCacheStats,
}

impl FrameCache {
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        Self {
            spans: BTreeMap::new(),
            max_entries,
            max_age,
            since: Instant::now(),
            stats: FrameCacheStats::default(),
        }
    }

    /// Stores nothing: every lookup misses (one-shot profiles).
    pub fn disabled() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// Drops everything once too old, so that what changed in the meantime is read again.
    pub fn start_interval(&mut self) {
        if self.since.elapsed() >= self.max_age {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.since = Instant::now();
    }

    fn get(&mut self, space: Space, addr: u64) -> Option<Frame> {
        let frame = self
            .spans
            .range((space, 0)..=(space, addr))
            .next_back()
            .filter(|(_, (last, _))| addr <= *last)
            .map(|(_, (_, frame))| frame.clone());
        if frame.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        frame
    }

    fn put(&mut self, space: Space, span: (u64, u64), frame: &Frame) {
        if self.max_entries == 0 {
            return;
        }
        if self.spans.len() >= self.max_entries {
            self.clear();
        }
        let entry = self
            .spans
            .entry((space, span.0))
            .or_insert_with(|| (span.1, frame.clone()));
        entry.0 = entry.0.max(span.1);
    }

    /// `lookup` is the address as symbolized (return addresses minus one).
    pub fn kernel(&mut self, lookup: u64) -> Option<Frame> {
        self.get(None, lookup)
    }

    pub fn user(&mut self, file: FileId, offset: u64) -> Option<Frame> {
        self.get(Some(file), offset)
    }

    /// `span`: the function's first address and the last one known to be inside it.
    pub fn put_kernel(&mut self, span: (u64, u64), frame: &Frame) {
        self.put(None, span, frame);
    }

    /// `span` in file offsets, as `put_kernel`.
    pub fn put_user(&mut self, file: FileId, span: (u64, u64), frame: &Frame) {
        self.put(Some(file), span, frame);
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame {
            name: name.into(),
            module: "[kernel]".into(),
            file: None,
            line: None,
            kernel: true,
        }
    }

    const FILE: FileId = FileId {
        dev: (8, 1),
        inode: 7,
    };

    #[test]
    fn remembers_function_spans_until_full_or_old() {
        let mut cache = FrameCache::new(2, Duration::from_secs(3600));
        assert_eq!(cache.kernel(0x10), None);
        // A kernel symbol's size is unknown: its span grows with the addresses seen.
        cache.put_kernel((0x10, 0x18), &frame("a"));
        cache.put_kernel((0x10, 0x14), &frame("a"));
        assert_eq!(cache.kernel(0x10), Some(frame("a")));
        assert_eq!(cache.kernel(0x16), Some(frame("a")));
        assert_eq!(cache.kernel(0x19), None);
        assert_eq!(cache.kernel(0x0f), None);
        // Same offsets in a binary are another space.
        assert_eq!(cache.user(FILE, 0x12), None);
        cache.put_user(FILE, (0x10, 0x2f), &frame("b"));
        assert_eq!(cache.user(FILE, 0x2f), Some(frame("b")));
        assert_eq!(
            cache.stats,
            FrameCacheStats {
                hits: 3,
                misses: 4,
                kernel_reads: 0
            }
        );
        // Full: dropped whole, then the new entry goes in.
        cache.put_kernel((0x30, 0x30), &frame("c"));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.kernel(0x10), None);

        let mut old = FrameCache::new(10, Duration::ZERO);
        old.put_kernel((0x10, 0x10), &frame("a"));
        old.start_interval();
        assert!(old.is_empty());
    }

    #[test]
    fn disabled_stores_nothing() {
        let mut cache = FrameCache::disabled();
        cache.put_kernel((0x10, 0x10), &frame("a"));
        assert!(cache.is_empty());
    }
}
