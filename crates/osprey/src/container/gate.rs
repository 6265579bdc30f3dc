//! The in-kernel half of `--container`, `--pod` and `--namespace`: a cgroup whose container
//! is decided not to match goes into the capability's `osprey_cgroup_drop` map, and the
//! kernel filters its events before they reach the ring (counted as `filtered`). A cgroup
//! not decided yet (metadata pending, cgroup unknown) keeps reaching user space, which
//! decides on every event; so no event of a wanted container is lost while its runtime is
//! asked, and containers that start later are decided on their first events.

use std::collections::HashMap as StdHashMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use aya::maps::{HashMap, MapData};

use super::filter::ContainerFilter;
use super::{Container, MetadataState};
use crate::kernel::loader::LoadedCapability;

/// The map's name in every object built from osprey.h.
pub const MAP: &str = "osprey_cgroup_drop";
/// Cgroups the kernel can drop; beyond that user space filters the rest.
pub const ENTRIES: u32 = 8192;

/// Where verdicts go: the capability's drop map (a trait so that tests need no kernel).
pub trait DropMap {
    fn drop_cgroup(&mut self, cgroup_id: u64);
    fn keep_cgroup(&mut self, cgroup_id: u64);
}

impl DropMap for HashMap<MapData, u64, u8> {
    fn drop_cgroup(&mut self, cgroup_id: u64) {
        // A full map only leaves the cgroup to user space.
        let _ = self.insert(cgroup_id, 1, 0);
    }

    fn keep_cgroup(&mut self, cgroup_id: u64) {
        let _ = self.remove(&cgroup_id);
    }
}

pub struct KernelGate {
    map: Option<Box<dyn DropMap>>,
    filter: ContainerFilter,
    /// Cgroups dropped in the kernel, with the id of their container.
    decided: StdHashMap<u64, String>,
    /// Containers whose metadata changed since (a late answer, a rename).
    changes: Receiver<Arc<Container>>,
}

impl KernelGate {
    /// The gate of a capability loaded with `KernelConfig::cgroup_filter`; without its map
    /// (an object older than the filter) every decision stays in user space.
    pub fn new(cap: &mut LoadedCapability, filter: ContainerFilter) -> Self {
        let map = cap
            .take_map(MAP)
            .ok()
            .and_then(|m| HashMap::<MapData, u64, u8>::try_from(m).ok());
        if map.is_none() {
            eprintln!(
                "osprey: note: {}: container filters decided in user space only",
                cap.spec.name
            );
        }
        Self::with_map(map.map(|m| Box::new(m) as Box<dyn DropMap>), filter)
    }

    pub fn with_map(map: Option<Box<dyn DropMap>>, filter: ContainerFilter) -> Self {
        Self {
            map,
            filter,
            decided: StdHashMap::new(),
            changes: super::watch(),
        }
    }

    /// Whether what is known of a cgroup's container is settled enough for the kernel to
    /// drop its events: the host, or a container whose runtime answered or gave up for now
    /// (a later answer or rename reopens it, see `refresh`).
    pub fn is_final(container: Option<&Container>) -> bool {
        container.is_some_and(|c| c.is_host() || !matches!(c.metadata, MetadataState::Pending))
    }

    /// Decides on an event of `cgroup_id` (in `container`): whether the filter wants it; the
    /// kernel drops the cgroup's events from now on when it does not and the verdict is final.
    pub fn wants(&mut self, cgroup_id: u64, container: Option<&Container>) -> bool {
        self.refresh();
        let wanted = self.filter.matches(container);
        if !wanted {
            self.unwanted(cgroup_id, container);
        }
        wanted
    }

    fn unwanted(&mut self, cgroup_id: u64, container: Option<&Container>) {
        let Some(c) = container.filter(|_| cgroup_id != 0 && Self::is_final(container)) else {
            return;
        };
        let Some(map) = &mut self.map else {
            return;
        };
        if self.decided.len() >= ENTRIES as usize || self.decided.contains_key(&cgroup_id) {
            return;
        }
        self.decided.insert(cgroup_id, c.id.clone());
        map.drop_cgroup(cgroup_id);
    }

    /// Takes the containers whose metadata changed: those the filter now wants have their
    /// cgroups taken out of the kernel's drop map, so their events flow again.
    pub fn refresh(&mut self) {
        let changed: Vec<Arc<Container>> = self.changes.try_iter().collect();
        for c in changed {
            if !self.filter.matches(Some(&c)) {
                continue;
            }
            let reopened: Vec<u64> = self
                .decided
                .iter()
                .filter(|(_, id)| **id == c.id)
                .map(|(cgroup, _)| *cgroup)
                .collect();
            for cgroup in reopened {
                self.decided.remove(&cgroup);
                if let Some(map) = &mut self.map {
                    map.keep_cgroup(cgroup);
                }
            }
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

    /// The kernel map as a set shared with the test.
    #[derive(Clone, Default)]
    struct FakeMap(Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>);

    impl DropMap for FakeMap {
        fn drop_cgroup(&mut self, cgroup_id: u64) {
            self.0.lock().unwrap().insert(cgroup_id);
        }

        fn keep_cgroup(&mut self, cgroup_id: u64) {
            self.0.lock().unwrap().remove(&cgroup_id);
        }
    }

    #[test]
    fn a_container_named_after_a_retry_is_taken_out_of_the_kernel_filter() {
        let map = FakeMap::default();
        let filter = ContainerFilter {
            containers: vec!["web".into()],
            ..Default::default()
        };
        let mut gate = KernelGate::with_map(Some(Box::new(map.clone())), filter);
        let id = "b".repeat(64);
        let gave_up = Container {
            id: id.clone(),
            runtime: Some(Runtime::Podman),
            pod_uid: None,
            metadata: MetadataState::Unavailable("no socket".into()),
        };
        assert!(!gate.wants(41, Some(&gave_up)), "no name: not `web`");
        assert!(!gate.wants(42, Some(host())));
        assert_eq!(*map.0.lock().unwrap(), [41, 42].into());
        // The retry succeeds: the registry announces the container with its name.
        let named = Arc::new(Container {
            metadata: MetadataState::Known(Arc::new(Metadata {
                name: "web".into(),
                ..Default::default()
            })),
            ..gave_up.clone()
        });
        super::super::announce(&named);
        gate.refresh();
        assert_eq!(
            *map.0.lock().unwrap(),
            [42].into(),
            "the container's cgroup flows again, the host stays dropped"
        );
        assert!(gate.wants(41, Some(&named)));
        // Renamed away from `web`: dropped again on its next event.
        let renamed = Container {
            metadata: MetadataState::Known(Arc::new(Metadata {
                name: "db".into(),
                ..Default::default()
            })),
            ..gave_up
        };
        assert!(!gate.wants(41, Some(&renamed)));
        assert_eq!(*map.0.lock().unwrap(), [41, 42].into());
    }
}
