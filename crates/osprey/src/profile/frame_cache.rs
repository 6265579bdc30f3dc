//! Frames named in earlier intervals. A long-running profiler (the agent) meets the same
//! code again and again; with this cache it reads kallsyms and ELF files only for code it
//! has not named before. Keys identify code across processes and time: a kernel address,
//! or a binary's (device, inode) and file offset. The cache is bounded and dropped whole
//! when full or old, so that modules loaded since and binaries replaced in place are seen.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::procmaps::FileId;
use super::symbolize::Frame;

/// What the cache saved and what it did not, for the agent's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FrameCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Intervals in which a kernel address missed (kallsyms was read).
    pub kernel_reads: u64,
}

#[derive(Debug)]
pub struct FrameCache {
    kernel: HashMap<u64, Frame>,
    user: HashMap<(FileId, u64), Frame>,
    max_entries: usize,
    max_age: Duration,
    since: Instant,
    pub stats: FrameCacheStats,
}

impl FrameCache {
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        Self {
            kernel: HashMap::new(),
            user: HashMap::new(),
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
        self.kernel.clear();
        self.user.clear();
        self.since = Instant::now();
    }

    fn count(&mut self, hit: bool) {
        if hit {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
    }

    /// `lookup` is the address as symbolized (return addresses minus one).
    pub fn kernel(&mut self, lookup: u64) -> Option<Frame> {
        let frame = self.kernel.get(&lookup).cloned();
        self.count(frame.is_some());
        frame
    }

    pub fn user(&mut self, file: FileId, offset: u64) -> Option<Frame> {
        let frame = self.user.get(&(file, offset)).cloned();
        self.count(frame.is_some());
        frame
    }

    fn make_room(&mut self) -> bool {
        if self.max_entries == 0 {
            return false;
        }
        if self.kernel.len() + self.user.len() >= self.max_entries {
            self.clear();
        }
        true
    }

    pub fn put_kernel(&mut self, lookup: u64, frame: &Frame) {
        if self.make_room() {
            self.kernel.insert(lookup, frame.clone());
        }
    }

    pub fn put_user(&mut self, file: FileId, offset: u64, frame: &Frame) {
        if self.make_room() {
            self.user.insert((file, offset), frame.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.kernel.len() + self.user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn remembers_until_full_or_old() {
        let mut cache = FrameCache::new(2, Duration::from_secs(3600));
        assert_eq!(cache.kernel(0x10), None);
        cache.put_kernel(0x10, &frame("a"));
        cache.put_user(FILE, 0x20, &frame("b"));
        assert_eq!(cache.kernel(0x10), Some(frame("a")));
        assert_eq!(cache.user(FILE, 0x20), Some(frame("b")));
        assert_eq!(cache.user(FILE, 0x21), None);
        assert_eq!(
            cache.stats,
            FrameCacheStats {
                hits: 2,
                misses: 2,
                kernel_reads: 0
            }
        );
        // Full: dropped whole, then the new entry goes in.
        cache.put_kernel(0x30, &frame("c"));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.kernel(0x10), None);

        let mut old = FrameCache::new(10, Duration::ZERO);
        old.put_kernel(0x10, &frame("a"));
        old.start_interval();
        assert!(old.is_empty());
    }

    #[test]
    fn disabled_stores_nothing() {
        let mut cache = FrameCache::disabled();
        cache.put_kernel(0x10, &frame("a"));
        assert!(cache.is_empty());
    }
}
