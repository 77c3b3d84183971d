//! Who a cgroup id belongs to: its path in the v2 hierarchy, then the pod,
//! container, systemd unit or host that path names. Pod namespace and name
//! come from the kubelet's own log directories (`<namespace>_<name>_<uid>`),
//! so no API access is needed.

pub mod cgroup;
pub mod owner;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

pub use crate::model::{CgroupRef, Owner};
pub use cgroup::CgroupPaths;

/// Where the kubelet keeps one log directory per pod.
pub const KUBELET_PODS_DIR: &str = "/var/log/pods";
/// Bound on the pods remembered.
const MAX_PODS: usize = 16_384;
/// A pod missing from the directory is looked for again at most this often.
const MIN_REREAD: Duration = Duration::from_secs(2);

/// Resolves cgroup ids to [`CgroupRef`]s, with bounded caches.
#[derive(Debug)]
pub struct Attributor {
    paths: CgroupPaths,
    pods_dir: PathBuf,
    pods: HashMap<String, (String, String)>,
    pods_read_at: Option<Instant>,
}

impl Attributor {
    /// An attributor over the v2 hierarchy at `cgroup2` and the kubelet pod
    /// log directory `pods_dir`.
    pub fn new(cgroup2: Option<PathBuf>, pods_dir: PathBuf) -> Self {
        Self {
            paths: CgroupPaths::new(cgroup2),
            pods_dir,
            pods: HashMap::new(),
            pods_read_at: None,
        }
    }

    /// What owns cgroup `id`.
    pub fn resolve(&mut self, id: u64) -> CgroupRef {
        let Some(path) = self.paths.resolve(id).map(str::to_owned) else {
            return CgroupRef {
                cgroup_id: id,
                cgroup_path: None,
                owner: Owner::Unknown,
            };
        };
        let mut owner = owner::classify(&path);
        if let Owner::Pod {
            pod_uid,
            namespace,
            name,
            ..
        } = &mut owner
        {
            if let Some((ns, n)) = self.pod(pod_uid) {
                *namespace = Some(ns);
                *name = Some(n);
            }
        }
        CgroupRef {
            cgroup_id: id,
            cgroup_path: Some(path),
            owner,
        }
    }

    /// Of `ids` (seen counting at `seen`), those whose cgroups have been
    /// removed (see [`CgroupPaths::gone`]).
    pub fn gone(
        &mut self,
        ids: &std::collections::HashSet<u64>,
        seen: Instant,
    ) -> std::collections::HashSet<u64> {
        self.paths.gone(ids, seen)
    }

    fn pod(&mut self, uid: &str) -> Option<(String, String)> {
        if !self.pods.contains_key(uid)
            && self.pods_read_at.is_none_or(|t| t.elapsed() >= MIN_REREAD)
        {
            self.reread_pods();
        }
        self.pods.get(uid).cloned()
    }

    fn reread_pods(&mut self) {
        self.pods_read_at = Some(Instant::now());
        self.pods.clear();
        let Ok(entries) = std::fs::read_dir(&self.pods_dir) else {
            return;
        };
        for entry in entries.flatten().take(MAX_PODS) {
            if let Some((ns, name, uid)) = entry
                .file_name()
                .to_str()
                .and_then(owner::parse_pod_log_dir)
            {
                self.pods.insert(uid, (ns, name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_and_pod_names() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("sonde-attr-{}", std::process::id()));
        let uid = "5e1f0c3a-7b2d-4e8f-9a01-23456789abcd";
        let pod_dir = base.join(format!("cg/kubepods/besteffort/pod{uid}"));
        std::fs::create_dir_all(&pod_dir).unwrap();
        std::fs::create_dir_all(base.join(format!("logs/ns1_web-0_{uid}"))).unwrap();
        let mut a = Attributor::new(Some(base.join("cg")), base.join("logs"));
        let id = std::fs::metadata(&pod_dir).unwrap().ino();
        let r = a.resolve(id);
        assert_eq!(
            r.cgroup_path.as_deref(),
            Some(format!("/kubepods/besteffort/pod{uid}").as_str())
        );
        match r.owner {
            Owner::Pod {
                namespace,
                name,
                qos,
                ..
            } => {
                assert_eq!(
                    (namespace.as_deref(), name.as_deref(), qos.as_str()),
                    (Some("ns1"), Some("web-0"), "besteffort")
                );
            }
            other => panic!("{other:?}"),
        }
        let unknown = a.resolve(u64::MAX);
        assert_eq!((unknown.cgroup_path, unknown.owner), (None, Owner::Unknown));
        std::fs::remove_dir_all(base).unwrap();
    }
}
