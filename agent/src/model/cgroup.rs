//! Who a series belongs to: its cgroup and the cgroup's owner (resolved by
//! `attribution/`).

use serde::{Deserialize, Serialize};

/// A series' cgroup and what owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRef {
    /// cgroup v2 id (the inode of its directory).
    pub cgroup_id: u64,
    /// Path in the v2 hierarchy ("/" is the host); `None` when the cgroup
    /// vanished before it could be resolved.
    pub cgroup_path: Option<String>,
    /// Pod, container, unit, host, other, or unknown.
    pub owner: Owner,
}

/// The owner of a cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// The root cgroup: the host itself.
    Host,
    /// A Kubernetes pod, or one of its containers.
    Pod {
        /// Pod UID (with dashes, as the API shows it).
        pod_uid: String,
        /// QoS class from the path: guaranteed, burstable, besteffort.
        qos: String,
        /// Container id (64 hex digits) when the cgroup is a container's.
        container_id: Option<String>,
        /// Container runtime named by the path (containerd, crio, docker).
        runtime: Option<String>,
        /// Pod namespace, from the kubelet's log directories when present.
        namespace: Option<String>,
        /// Pod name, from the kubelet's log directories when present.
        name: Option<String>,
    },
    /// A container outside Kubernetes.
    Container {
        /// Container id.
        container_id: String,
        /// Runtime named by the path.
        runtime: String,
    },
    /// A systemd unit (service, scope, ...) and the slice it sits in.
    Unit {
        /// Unit name, e.g. `nginx.service`.
        unit: String,
        /// Enclosing slice, e.g. `system.slice`.
        slice: Option<String>,
    },
    /// A cgroup that is none of the above (a hand-made one, a slice).
    Other,
    /// The cgroup id could not be resolved to a path (it vanished first).
    Unknown,
}
