//! The in-kernel half of `--container`, `--pod` and `--namespace`: a cgroup whose container
//! is decided not to match goes into the capability's `osprey_cgroup_drop` map, and the
//! kernel filters its events before they reach the ring (counted as `filtered`). A cgroup
//! not decided yet (metadata pending, cgroup unknown) keeps reaching user space, which
//! decides on every event; so no event of a wanted container is lost while its runtime is
//! asked, and containers that start later are decided on their first events.

use std::collections::HashSet;

use aya::maps::{HashMap, MapData};

use super::{Container, MetadataState};
use crate::kernel::loader::LoadedCapability;

/// The map's name in every object built from osprey.h.
pub const MAP: &str = "osprey_cgroup_drop";
/// Cgroups the kernel can drop; beyond that user space filters the rest.
pub const ENTRIES: u32 = 8192;

pub struct KernelGate {
    map: Option<HashMap<MapData, u64, u8>>,
    decided: HashSet<u64>,
}

impl KernelGate {
    /// The gate of a capability loaded with `KernelConfig::cgroup_filter`; without its map
    /// (an object older than the filter) every decision stays in user space.
    pub fn new(cap: &mut LoadedCapability) -> Self {
        let map = cap
            .take_map(MAP)
            .ok()
            .and_then(|m| HashMap::try_from(m).ok());
        if map.is_none() {
            eprintln!(
                "osprey: note: {}: container filters decided in user space only",
                cap.spec.name
            );
        }
        Self {
            map,
            decided: HashSet::new(),
        }
    }

    /// Whether what is known of a cgroup's container is final (it will not change the
    /// filter's verdict): the host, or a container whose runtime answered or gave up.
    pub fn is_final(container: Option<&Container>) -> bool {
        container.is_some_and(|c| c.is_host() || !matches!(c.metadata, MetadataState::Pending))
    }

    /// Records that the events of `cgroup_id` (in `container`) are not wanted; the kernel
    /// drops them from now on once the verdict is final.
    pub fn unwanted(&mut self, cgroup_id: u64, container: Option<&Container>) {
        if cgroup_id == 0 || !Self::is_final(container) || self.decided.len() >= ENTRIES as usize {
            return;
        }
        let Some(map) = &mut self.map else {
            return;
        };
        if self.decided.insert(cgroup_id) {
            // A full map only leaves the cgroup to user space.
            let _ = map.insert(cgroup_id, 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{host, Metadata, Runtime};
    use super::*;

    #[test]
    fn only_final_verdicts_reach_the_kernel() {
        let pending = Container {
            id: "a".repeat(64),
            runtime: Some(Runtime::Docker),
            pod_uid: None,
            metadata: MetadataState::Pending,
        };
        let known = Container {
            metadata: MetadataState::Known(Arc::new(Metadata::default())),
            ..pending.clone()
        };
        let gave_up = Container {
            metadata: MetadataState::Unavailable("no socket".into()),
            ..pending.clone()
        };
        assert!(KernelGate::is_final(Some(host())));
        assert!(KernelGate::is_final(Some(&known)));
        assert!(KernelGate::is_final(Some(&gave_up)));
        assert!(!KernelGate::is_final(Some(&pending)));
        assert!(!KernelGate::is_final(None));
    }
}
