//! Reuses the serialized `process` object of a process's previous event while its context
//! is unchanged. A busy process sends the same pid, comm, exe and ancestry many thousand
//! times a second, and escaping those strings was half of the JSON reader's time.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::cache::{Entry, ProcessContext};
use crate::container::Container;

/// Bound on cached processes; the map is simply cleared when it is reached.
const MAX_CACHED: usize = 4096;

#[derive(Default)]
pub struct ProcessJsonCache {
    by_tid: HashMap<u32, Cached, foldhash::fast::RandomState>,
    pub hits: u64,
}

struct Cached {
    /// The process cache's generation when this was last found equal (0: never).
    generation: u64,
    ids: [u32; 5],
    cgroup_id: u64,
    /// Held so that a container whose metadata changed is a new pointer, never a reused one.
    container: Option<Arc<Container>>,
    comm: Vec<u8>,
    exe: Vec<u8>,
    /// (pid, comm, exe) of each ancestor: what the JSON shows of them.
    ancestry: Vec<(u32, Vec<u8>, Vec<u8>)>,
    json: Box<RawValue>,
}

fn ids(p: &ProcessContext<'_>) -> [u32; 5] {
    [p.pid, p.tid, p.ppid, p.uid, p.gid]
}

fn shown(e: &Entry) -> (u32, &[u8], &[u8]) {
    (e.pid, &e.comm, &e.exe)
}

impl Cached {
    /// What the event itself says is equal; the rest comes from the process cache.
    fn same_identity(&self, p: &ProcessContext<'_>) -> bool {
        self.ids == ids(p)
            && self.cgroup_id == p.cgroup_id
            && match (&self.container, p.container) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.comm == p.comm
    }

    /// The process cache has not changed since this was found equal: exe and ancestry
    /// are what they were then, without comparing them.
    fn unchanged_since(&self, p: &ProcessContext<'_>) -> bool {
        p.cache_generation != 0 && self.generation == p.cache_generation
    }

    fn matches(&self, p: &ProcessContext<'_>) -> bool {
        self.same_identity(p)
            && self.exe == p.exe
            && self.ancestry.len() == p.ancestry.len()
            && self
                .ancestry
                .iter()
                .zip(&p.ancestry)
                .all(|((pid, comm, exe), e)| (*pid, &comm[..], &exe[..]) == shown(e))
    }
}

impl ProcessJsonCache {
    /// The `process` object of `p` as JSON text.
    pub fn get(&mut self, p: &ProcessContext<'_>) -> serde_json::Result<&RawValue> {
        let hit = match self.by_tid.get_mut(&p.tid) {
            Some(c) if c.unchanged_since(p) && c.same_identity(p) => true,
            Some(c) if c.matches(p) => {
                c.generation = p.cache_generation;
                true
            }
            _ => false,
        };
        if hit {
            self.hits += 1;
        } else {
            if self.by_tid.len() >= MAX_CACHED {
                self.by_tid.clear();
            }
            let json = RawValue::from_string(serde_json::to_string(p)?)?;
            self.by_tid.insert(
                p.tid,
                Cached {
                    generation: p.cache_generation,
                    ids: ids(p),
                    cgroup_id: p.cgroup_id,
                    container: p.container.cloned(),
                    comm: p.comm.to_vec(),
                    exe: p.exe.to_vec(),
                    ancestry: p
                        .ancestry
                        .iter()
                        .map(|e| (e.pid, e.comm.clone(), e.exe.clone()))
                        .collect(),
                    json,
                },
            );
        }
        Ok(&self.by_tid[&p.tid].json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, comm: &[u8]) -> Entry {
        Entry {
            pid,
            comm: comm.to_vec(),
            exe: b"/bin/x".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn reuses_only_while_everything_shown_is_equal() {
        let parent = entry(1, b"init");
        let renamed = entry(1, b"systemd");
        let ctx = |ancestor: &'static Entry| ProcessContext {
            pid: 5,
            tid: 5,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: b"w",
            exe: b"/bin/w",
            cmdline: b"",
            cgroup_id: 1,
            container: None,
            ancestry: vec![ancestor],
            cache_generation: 0,
        };
        let parent: &'static Entry = Box::leak(Box::new(parent));
        let renamed: &'static Entry = Box::leak(Box::new(renamed));
        let mut cache = ProcessJsonCache::default();
        let first = cache.get(&ctx(parent)).unwrap().get().to_string();
        assert_eq!(first, serde_json::to_string(&ctx(parent)).unwrap());
        cache.get(&ctx(parent)).unwrap();
        assert_eq!(cache.hits, 1);
        let changed = cache.get(&ctx(renamed)).unwrap().get().to_string();
        assert!(changed.contains("systemd"), "{changed}");
        assert_eq!(cache.hits, 1);
    }
}
