//! cgroup v2 id → path. The id `bpf_get_current_cgroup_id()` returns is the
//! inode number of the cgroup's directory in the v2 hierarchy, so walking
//! that hierarchy once maps every live id to its path.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Bound on the number of cgroups remembered; a larger hierarchy is walked
/// only this far, and ids beyond it resolve to `None` (counted by callers).
pub const MAX_CGROUPS: usize = 65_536;
/// A miss triggers a new walk at most this often.
const MIN_REWALK: Duration = Duration::from_millis(500);

/// Resolves cgroup ids to paths relative to the v2 root.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    walked_at: Option<Instant>,
}

impl CgroupPaths {
    /// A resolver over the v2 hierarchy mounted at `root` (`None` when the
    /// machine has no cgroup v2 mount: every id stays unresolved).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            walked_at: None,
        }
    }

    /// The path of `id` ("/" for the root), walking the hierarchy again on a
    /// miss (rate-limited).
    pub fn resolve(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) {
            let stale = self.walked_at.is_none_or(|t| t.elapsed() >= MIN_REWALK);
            if stale {
                self.rewalk();
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// Forgets what is known and walks the hierarchy again.
    pub fn rewalk(&mut self) {
        self.paths.clear();
        self.walked_at = Some(Instant::now());
        if let Some(root) = self.root.clone() {
            walk(&root, &root, &mut self.paths);
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut HashMap<u64, String>) {
    if out.len() >= MAX_CGROUPS {
        return;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return; // removed while walking
    };
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    out.insert(meta.ino(), format!("/{}", rel.display()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &entry.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_directories_by_inode() {
        let tmp = std::env::temp_dir().join(format!("sonde-cg-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("a/b")).unwrap();
        let ino = std::fs::metadata(tmp.join("a/b")).unwrap().ino();
        let root_ino = std::fs::metadata(&tmp).unwrap().ino();
        let mut paths = CgroupPaths::new(Some(tmp.clone()));
        assert_eq!(paths.resolve(ino), Some("/a/b"));
        assert_eq!(paths.resolve(root_ino), Some("/"));
        assert_eq!(CgroupPaths::new(None).resolve(ino), None);
        std::fs::remove_dir_all(tmp).unwrap();
    }
}
