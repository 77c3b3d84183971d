//! Who owns a cgroup, from its path alone: a Kubernetes pod's container, a
//! Docker container, a systemd unit, or the host. Pure; the path layouts are
//! those of the kubelet's systemd and cgroupfs drivers with containerd,
//! CRI-O and Docker, and of Docker and systemd on their own.

pub use crate::model::Owner;

/// Classifies a cgroup path (relative to the v2 root, starting with `/`).
pub fn classify(path: &str) -> Owner {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Owner::Host;
    }
    if let Some(pod) = kubernetes(&parts) {
        return pod;
    }
    if let Some(container) = docker(&parts) {
        return container;
    }
    unit(&parts).unwrap_or(Owner::Other)
}

/// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/<runtime>-<id>.scope`
/// (systemd driver) or `kubepods/burstable/pod<uid>/<id>` (cgroupfs driver);
/// guaranteed pods sit directly under kubepods.
fn kubernetes(parts: &[&str]) -> Option<Owner> {
    let start = parts
        .iter()
        .position(|p| *p == "kubepods.slice" || *p == "kubepods")?;
    let rest = parts.get(start + 1..)?;
    let mut qos = "guaranteed".to_owned();
    let mut i = 0;
    for class in ["burstable", "besteffort"] {
        if rest
            .first()
            .is_some_and(|p| *p == class || *p == format!("kubepods-{class}.slice"))
        {
            qos = class.to_owned();
            i = 1;
        }
    }
    let pod_part = rest.get(i)?;
    let uid = if let Some(slice) = pod_part.strip_suffix(".slice") {
        // kubepods-burstable-pod<uid with _>.slice
        slice.rsplit_once("-pod")?.1.replace('_', "-")
    } else {
        pod_part.strip_prefix("pod")?.to_owned()
    };
    if !looks_like_uid(&uid) {
        return None;
    }
    let (container_id, runtime) = match rest.get(i + 1) {
        Some(part) => match container(part) {
            Some((id, runtime)) => (Some(id), runtime),
            None => (None, None),
        },
        None => (None, None),
    };
    Some(Owner::Pod {
        pod_uid: uid,
        qos,
        container_id,
        runtime,
        namespace: None,
        name: None,
    })
}

/// A container's cgroup name: `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope` (systemd driver) or a bare `<id>` (cgroupfs driver).
fn container(part: &str) -> Option<(String, Option<String>)> {
    if let Some(scope) = part.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("cri-containerd-", "containerd"),
            ("crio-", "crio"),
            ("docker-", "docker"),
        ] {
            if let Some(id) = scope.strip_prefix(prefix) {
                if is_container_id(id) {
                    return Some((id.to_owned(), Some(runtime.to_owned())));
                }
            }
        }
        return None;
    }
    // cgroupfs driver: the bare id (CRI-O prefixes crio- even there).
    let (id, runtime) = match part.strip_prefix("crio-") {
        Some(id) => (id, Some("crio".to_owned())),
        None => (part, None),
    };
    is_container_id(id).then(|| (id.to_owned(), runtime))
}

/// Docker without Kubernetes: `system.slice/docker-<id>.scope` or `docker/<id>`.
fn docker(parts: &[&str]) -> Option<Owner> {
    let last = parts.last()?;
    if let Some(id) = last
        .strip_prefix("docker-")
        .and_then(|s| s.strip_suffix(".scope"))
    {
        if is_container_id(id) {
            return Some(Owner::Container {
                container_id: id.to_owned(),
                runtime: "docker".to_owned(),
            });
        }
    }
    let parent = parts.len().checked_sub(2).and_then(|i| parts.get(i));
    if parent == Some(&"docker") && is_container_id(last) {
        return Some(Owner::Container {
            container_id: (*last).to_owned(),
            runtime: "docker".to_owned(),
        });
    }
    None
}

const UNIT_SUFFIXES: [&str; 6] = [".service", ".scope", ".socket", ".mount", ".swap", ".timer"];

/// The innermost systemd unit in the path, and the slice around it.
fn unit(parts: &[&str]) -> Option<Owner> {
    let at = parts
        .iter()
        .rposition(|p| UNIT_SUFFIXES.iter().any(|s| p.ends_with(s)))?;
    let (unit, outer) = parts.get(..=at)?.split_last()?;
    let slice = outer
        .iter()
        .rev()
        .find(|p| p.ends_with(".slice"))
        .map(|s| (*s).to_owned());
    Some(Owner::Unit {
        unit: (*unit).to_owned(),
        slice,
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn looks_like_uid(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Parses a kubelet pod log directory name, `<namespace>_<name>_<uid>`.
pub fn parse_pod_log_dir(name: &str) -> Option<(String, String, String)> {
    let (rest, uid) = name.rsplit_once('_')?;
    let (namespace, pod) = rest.split_once('_')?;
    (looks_like_uid(uid) && !namespace.is_empty() && !pod.is_empty())
        .then(|| (namespace.to_owned(), pod.to_owned(), uid.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f6f5b6e-2a51-4c1e-9d3a-1b2c3d4e5f60";
    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    fn pod(qos: &str, container: Option<&str>, runtime: Option<&str>) -> Owner {
        Owner::Pod {
            pod_uid: UID.to_owned(),
            qos: qos.to_owned(),
            container_id: container.map(str::to_owned),
            runtime: runtime.map(str::to_owned),
            namespace: None,
            name: None,
        }
    }

    #[test]
    fn kubelet_systemd_driver() {
        let uid_ = UID.replace('-', "_");
        let base =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice");
        assert_eq!(
            classify(&format!("{base}/cri-containerd-{ID}.scope")),
            pod("burstable", Some(ID), Some("containerd"))
        );
        assert_eq!(
            classify(&format!("{base}/crio-{ID}.scope")),
            pod("burstable", Some(ID), Some("crio"))
        );
        assert_eq!(
            classify(&format!("{base}/docker-{ID}.scope")),
            pod("burstable", Some(ID), Some("docker"))
        );
        assert_eq!(classify(&base), pod("burstable", None, None));
        let guaranteed =
            format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            classify(&guaranteed),
            pod("guaranteed", Some(ID), Some("containerd"))
        );
        let besteffort = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope");
        assert_eq!(
            classify(&besteffort),
            pod("besteffort", Some(ID), Some("crio"))
        );
    }

    #[test]
    fn kubelet_cgroupfs_driver() {
        assert_eq!(
            classify(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            pod("burstable", Some(ID), None)
        );
        assert_eq!(
            classify(&format!("/kubepods/pod{UID}/{ID}")),
            pod("guaranteed", Some(ID), None)
        );
        assert_eq!(
            classify(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            pod("besteffort", Some(ID), Some("crio"))
        );
        assert_eq!(
            classify(&format!("/kubepods/besteffort/pod{UID}")),
            pod("besteffort", None, None)
        );
    }

    #[test]
    fn docker_and_systemd_and_host() {
        let docker = Owner::Container {
            container_id: ID.to_owned(),
            runtime: "docker".to_owned(),
        };
        assert_eq!(
            classify(&format!("/system.slice/docker-{ID}.scope")),
            docker
        );
        assert_eq!(classify(&format!("/docker/{ID}")), docker);
        assert_eq!(
            classify("/system.slice/nginx.service"),
            Owner::Unit {
                unit: "nginx.service".to_owned(),
                slice: Some("system.slice".to_owned())
            }
        );
        assert_eq!(
            classify("/user.slice/user-1000.slice/session-3.scope"),
            Owner::Unit {
                unit: "session-3.scope".to_owned(),
                slice: Some("user-1000.slice".to_owned())
            }
        );
        assert_eq!(classify("/"), Owner::Host);
        assert_eq!(classify("/system.slice"), Owner::Other);
        assert_eq!(classify("/sonde-test-x"), Owner::Other);
        assert_eq!(classify("/kubepods.slice/notapod.slice"), Owner::Other);
    }

    #[test]
    fn pod_log_dirs() {
        assert_eq!(
            parse_pod_log_dir(&format!("kube-system_coredns-5d78c9869d-x2x7k_{UID}")),
            Some((
                "kube-system".to_owned(),
                "coredns-5d78c9869d-x2x7k".to_owned(),
                UID.to_owned()
            ))
        );
        assert_eq!(parse_pod_log_dir("garbage"), None);
        assert_eq!(parse_pod_log_dir("a_b_not-a-uid"), None);
    }
}
