//! Which container a cgroup v2 path belongs to, from the names runtimes give their
//! cgroups: docker (`/docker/<id>`, `docker-<id>.scope`), podman (`libpod-<id>`),
//! containerd's CRI (`cri-containerd-<id>.scope`, kubepods paths), CRI-O (`crio-<id>`).
//! The innermost match wins (a cgroup a container creates below its own still counts as
//! that container).

use super::Runtime;

/// A container as its cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The runtime's full id (64 hex digits).
    pub id: String,
    pub runtime: Runtime,
    /// The pod's uid when the path is under `kubepods` (dashes restored).
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<prefix><id>` or `<prefix><id>.scope`.
fn strip_id<'a>(component: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = component.strip_prefix(prefix)?;
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_container_id(id).then_some(id)
}

/// The pod uid of a kubepods component: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let slice = component.strip_suffix(".slice").unwrap_or(component);
    let at = slice.rfind("pod")?;
    if at != 0 && !slice[..at].ends_with('-') {
        return None;
    }
    let uid = &slice[at + 3..];
    let valid = uid.len() >= 32
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    valid.then(|| uid.replace('_', "-"))
}

/// The container a cgroup v2 path (as in `/proc/PID/cgroup`'s `0::` line) belongs to;
/// `None` for a host process.
pub fn identify(path: &str) -> Option<Identity> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let under_kubepods = components
        .first()
        .is_some_and(|c| c.starts_with("kubepods"));
    let pod = if under_kubepods {
        components.iter().find_map(|c| pod_uid(c))
    } else {
        None
    };
    let mut found = None;
    for (i, c) in components.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| components[p]);
        let hit = if c.starts_with("libpod-conmon-") {
            None // podman's monitor process, not the container
        } else if let Some(id) = strip_id(c, "docker-") {
            Some((id, Runtime::Docker))
        } else if let Some(id) = strip_id(c, "libpod-") {
            Some((id, Runtime::Podman))
        } else if let Some(id) = strip_id(c, "cri-containerd-") {
            Some((id, Runtime::Containerd))
        } else if let Some(id) = strip_id(c, "crio-") {
            Some((id, Runtime::CriO))
        } else if is_container_id(c) {
            match parent {
                Some("docker") => Some((*c, Runtime::Docker)),
                Some("libpod_parent") => Some((*c, Runtime::Podman)),
                _ if under_kubepods => Some((*c, Runtime::Cri)),
                _ => Some((*c, Runtime::Containerd)),
            }
        } else {
            None
        };
        if let Some((id, runtime)) = hit {
            found = Some((id, runtime));
        }
    }
    found.map(|(id, runtime)| Identity {
        id: id.to_string(),
        runtime,
        pod_uid: pod.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "379b1cc9ff854ce5b7d59132cd68ab613716437cb55b2a18f38a6078abe38e59";
    const UID: &str = "0b1c6d5e-2f3a-4b5c-8d7e-9f0a1b2c3d4e";

    fn id_of(path: &str) -> Option<(String, Runtime, Option<String>)> {
        identify(path).map(|i| (i.id, i.runtime, i.pod_uid))
    }

    #[test]
    fn runtimes_by_their_cgroup_names() {
        let cases = [
            (format!("/docker/{ID}"), Runtime::Docker),
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
            (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Runtime::Podman,
            ),
            (
                format!("/system.slice/cri-containerd-{ID}.scope"),
                Runtime::Containerd,
            ),
            (format!("/k8s.io/{ID}"), Runtime::Containerd),
            (format!("/system.slice/crio-{ID}.scope"), Runtime::CriO),
            (format!("/docker/{ID}/init.scope"), Runtime::Docker),
        ];
        for (path, runtime) in cases {
            assert_eq!(
                id_of(&path),
                Some((ID.to_string(), runtime, None)),
                "{path}"
            );
        }
    }

    #[test]
    fn kubepods_paths_carry_the_pod_uid() {
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(
            id_of(&cgroupfs),
            Some((ID.to_string(), Runtime::Cri, Some(UID.to_string())))
        );
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(
            id_of(&systemd),
            Some((ID.to_string(), Runtime::Containerd, Some(UID.to_string())))
        );
        let crio = format!("/kubepods/pod{UID}/crio-{ID}");
        assert_eq!(
            id_of(&crio),
            Some((ID.to_string(), Runtime::CriO, Some(UID.to_string())))
        );
    }

    #[test]
    fn host_and_lookalikes_are_not_containers() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/docker.service",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/docker/{}", &ID[..12]),
            "/process_api/01c547c1190ed881cfb4e7752a16ec00",
        ] {
            assert_eq!(id_of(path), None, "{path}");
        }
    }
}
