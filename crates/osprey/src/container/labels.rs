//! Container and namespace labels on metrics, with bounded cardinality: the first
//! `MAX_CONTAINERS` container names and `MAX_NAMESPACES` namespaces seen get series of their
//! own (`host` and `unknown` always do), later ones share the value `other`, so a node that runs many short-lived containers
//! cannot grow the metrics without bound.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Container;

/// Distinct `container` values before `other`.
pub const MAX_CONTAINERS: usize = 64;
/// Distinct `namespace` values before `other`.
pub const MAX_NAMESPACES: usize = 32;
/// The value shared by those beyond the bound.
pub const OTHER: &str = "other";

/// The values a label has taken, up to a bound.
#[derive(Debug)]
pub struct Bounded {
    limit: usize,
    values: HashSet<String>,
}

impl Bounded {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            values: HashSet::new(),
        }
    }

    /// `value` if it already has a series or there is room for one, else `other`.
    pub fn label(&mut self, value: &str) -> String {
        if self.values.contains(value) {
            return value.to_string();
        }
        if self.values.len() < self.limit {
            self.values.insert(value.to_string());
            return value.to_string();
        }
        OTHER.to_string()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerAlertLabels {
    pub rule: String,
    /// The container's name (its short id while the runtime has not answered), `host`, or
    /// `unknown` when the process's cgroup could not be resolved.
    pub container: String,
    /// The pod's namespace; `""` outside Kubernetes.
    pub namespace: String,
}

/// `osprey_container_alerts_total{rule, container, namespace}`; clones share the series
/// and the bounds.
#[derive(Clone, Debug)]
pub struct ContainerAlerts {
    pub family: Family<ContainerAlertLabels, Counter>,
    bounds: Arc<Mutex<(Bounded, Bounded)>>,
}

impl Default for ContainerAlerts {
    fn default() -> Self {
        Self {
            family: Family::default(),
            bounds: Arc::new(Mutex::new((
                Bounded::new(MAX_CONTAINERS),
                Bounded::new(MAX_NAMESPACES),
            ))),
        }
    }
}

impl ContainerAlerts {
    /// Counts an alert of `rule` on an event of `container`.
    pub fn count(&self, rule: &str, container: Option<&Container>) {
        let (name, namespace) = match container {
            None => ("unknown", ""),
            Some(c) => (c.label(), c.pod_namespace().unwrap_or("")),
        };
        // `host` and `unknown` are always series of their own.
        let fixed = container.is_none_or(|c| c.is_host());
        let labels = {
            let mut bounds = self.bounds.lock().unwrap_or_else(|e| e.into_inner());
            ContainerAlertLabels {
                rule: rule.to_string(),
                container: if fixed {
                    name.to_string()
                } else {
                    bounds.0.label(name)
                },
                namespace: if namespace.is_empty() {
                    String::new()
                } else {
                    bounds.1.label(namespace)
                },
            }
        };
        self.family.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::metadata::{K8s, Metadata};
    use super::super::{host, MetadataState, Runtime};
    use super::*;

    fn container(i: usize, namespace: Option<&str>) -> Container {
        Container {
            id: format!("{i:064x}"),
            runtime: Some(Runtime::Containerd),
            pod_uid: None,
            metadata: MetadataState::Known(Arc::new(Metadata {
                name: format!("c{i}"),
                k8s: namespace.map(|n| K8s {
                    namespace: n.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    fn value(alerts: &ContainerAlerts, rule: &str, container: &str, namespace: &str) -> u64 {
        alerts
            .family
            .get_or_create(&ContainerAlertLabels {
                rule: rule.into(),
                container: container.into(),
                namespace: namespace.into(),
            })
            .get()
    }

    #[test]
    fn containers_beyond_the_bound_share_other() {
        let alerts = ContainerAlerts::default();
        for i in 0..MAX_CONTAINERS + 3 {
            alerts.count("r", Some(&container(i, Some("shop"))));
        }
        alerts.count("r", Some(&container(0, Some("shop"))));
        alerts.count("r", Some(host()));
        alerts.count("r", None);
        assert_eq!(
            value(&alerts, "r", "c0", "shop"),
            2,
            "an early name keeps its series"
        );
        assert_eq!(value(&alerts, "r", "c63", "shop"), 1);
        assert_eq!(value(&alerts, "r", OTHER, "shop"), 3, "later names");
        assert_eq!(
            value(&alerts, "r", "host", ""),
            1,
            "the host is never `other`"
        );
        assert_eq!(value(&alerts, "r", "unknown", ""), 1);
        let clone = alerts.clone();
        clone.count("r", Some(&container(1, None)));
        assert_eq!(
            value(&alerts, "r", "c1", ""),
            1,
            "clones share series and bounds"
        );
    }

    #[test]
    fn namespaces_are_bounded_too() {
        let alerts = ContainerAlerts::default();
        for i in 0..MAX_NAMESPACES + 2 {
            alerts.count("r", Some(&container(0, Some(&format!("ns{i}")))));
        }
        assert_eq!(value(&alerts, "r", "c0", "ns31"), 1);
        assert_eq!(value(&alerts, "r", "c0", OTHER), 2);
    }
}
