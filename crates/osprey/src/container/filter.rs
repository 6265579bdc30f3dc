//! `--container`, `--pod` and `--namespace`: which containers' events a command shows.
//! Decided in user space on the container of each event's cgroup. A container whose
//! metadata is still pending matches by id only (its name and pod are not known yet).

use std::collections::HashMap;
use std::sync::Arc;

use super::Container;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Names, full ids or id prefixes of 12 or more digits; any may match.
    pub containers: Vec<String>,
    /// Pod names; any may match.
    pub pods: Vec<String>,
    /// Kubernetes namespaces; any may match.
    pub namespaces: Vec<String>,
}

impl ContainerFilter {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.pods.is_empty() && self.namespaces.is_empty()
    }

    /// Every given option must match (each one by any of its values).
    pub fn matches(&self, container: Option<&Container>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(c) = container.filter(|c| !c.is_host()) else {
            return false;
        };
        let any = |wanted: &[String], f: &dyn Fn(&str) -> bool| {
            wanted.is_empty() || wanted.iter().any(|w| f(w))
        };
        any(&self.containers, &|w| c.matches(w))
            && any(&self.pods, &|w| c.pod_name() == Some(w))
            && any(&self.namespaces, &|w| c.pod_namespace() == Some(w))
    }

    /// `matches` for the container of `pid` in `containers` (by pid, as
    /// `pids::Cgroups::containers` gives them; a pid not there is on the host).
    pub fn matches_pid(&self, containers: &HashMap<u32, Arc<Container>>, pid: u32) -> bool {
        self.matches(containers.get(&pid).map(|c| &**c))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::metadata::{K8s, Metadata};
    use super::super::{MetadataState, Runtime};
    use super::*;

    fn container(name: &str, pod: Option<(&str, &str)>) -> Container {
        Container {
            id: format!("{:0>64}", "ab12"),
            runtime: Some(Runtime::Docker),
            pod_uid: None,
            metadata: MetadataState::Known(Arc::new(Metadata {
                name: name.into(),
                k8s: pod.map(|(p, n)| K8s {
                    pod: p.into(),
                    namespace: n.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn names_ids_pods_and_namespaces() {
        let web = container("web", Some(("web-0", "shop")));
        let f = |c: &[&str], p: &[&str], n: &[&str]| ContainerFilter {
            containers: c.iter().map(|s| s.to_string()).collect(),
            pods: p.iter().map(|s| s.to_string()).collect(),
            namespaces: n.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(&[], &[], &[]).matches(None), "no filter");
        assert!(f(&["db", "web"], &[], &[]).matches(Some(&web)));
        assert!(
            f(&[&web.id[..12]], &[], &[]).matches(Some(&web)),
            "short id"
        );
        assert!(
            !f(&[&web.id[..6]], &[], &[]).matches(Some(&web)),
            "too short a prefix"
        );
        assert!(f(&[], &["web-0"], &["shop"]).matches(Some(&web)));
        assert!(!f(&["web"], &[], &["kube-system"]).matches(Some(&web)));
        assert!(!f(&["web"], &[], &[]).matches(None), "unknown cgroup");
        let pending = Container {
            metadata: MetadataState::Pending,
            ..web.clone()
        };
        assert!(!f(&["web"], &[], &[]).matches(Some(&pending)));
        assert!(f(&[&web.id], &[], &[]).matches(Some(&pending)));
    }
}
