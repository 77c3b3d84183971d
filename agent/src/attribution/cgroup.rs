//! cgroup v2 id → path. The id `bpf_get_current_cgroup_id()` returns is the
//! inode number of the cgroup's directory in the v2 hierarchy, so walking
//! that hierarchy once maps every live id to its path.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Bound on the number of cgroups remembered; a larger hierarchy is walked
/// only this far, and ids beyond it resolve to `None` (counted by callers).
pub const MAX_CGROUPS: usize = 65_536;
/// A miss triggers a new walk at most this often.
const MIN_REWALK: Duration = Duration::from_millis(500);
/// Without a miss, the hierarchy is walked again this often to find the
/// removed cgroups among those already named.
const RECHECK: Duration = Duration::from_secs(30);

/// Resolves cgroup ids to paths relative to the v2 root.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    walked_at: Option<Instant>,
    /// Whether the last walk saw the whole hierarchy (not cut at
    /// [`MAX_CGROUPS`], no directory unreadable): only then does an id it
    /// did not find belong to a removed cgroup.
    whole: bool,
}

impl CgroupPaths {
    /// A resolver over the v2 hierarchy mounted at `root` (`None` when the
    /// machine has no cgroup v2 mount: every id stays unresolved).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            walked_at: None,
            whole: false,
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

    /// Forgets what is known and walks the hierarchy again. What is
    /// remembered is what exists now: removed cgroups leave nothing behind.
    pub fn rewalk(&mut self) {
        self.paths.clear();
        self.walked_at = Some(Instant::now());
        self.whole = false;
        if let Some(root) = self.root.clone() {
            self.whole = walk(&root, &root, &mut self.paths);
        }
    }

    /// Of `ids`, those whose cgroups have been removed: not found by a walk
    /// of the whole hierarchy that began at or after `seen` (when they were
    /// seen counting, so they existed by then). Walks again when the last
    /// walk is older than `seen` and an id is unknown to it, or it is older
    /// than [`RECHECK`] (a cgroup named once and removed since is still in
    /// the cache). Empty when the hierarchy cannot be walked whole.
    pub fn gone(&mut self, ids: &HashSet<u64>, seen: Instant) -> HashSet<u64> {
        let unknown = |paths: &HashMap<u64, String>| -> HashSet<u64> {
            ids.iter()
                .copied()
                .filter(|id| !paths.contains_key(id))
                .collect()
        };
        if self.root.is_none() || ids.is_empty() {
            return HashSet::new();
        }
        let walk = match self.walked_at {
            None => true,
            Some(t) => t < seen && (t.elapsed() >= RECHECK || !unknown(&self.paths).is_empty()),
        };
        if walk {
            self.rewalk();
        }
        if !self.whole || self.walked_at.is_none_or(|t| t < seen) {
            return HashSet::new();
        }
        unknown(&self.paths)
    }

    /// How many cgroups are remembered.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Records `dir` and the cgroups below it; false when it could not see all
/// of them (the bound reached, a directory unreadable).
fn walk(root: &Path, dir: &Path, out: &mut HashMap<u64, String>) -> bool {
    if out.len() >= MAX_CGROUPS {
        return false;
    }
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => return gone(&e), // removed while walking: nothing missed
    };
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    out.insert(meta.ino(), format!("/{}", rel.display()));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return gone(&e),
    };
    let mut whole = true;
    for entry in entries {
        match entry {
            Ok(entry) if entry.file_type().is_ok_and(|t| t.is_dir()) => {
                whole &= walk(root, &entry.path(), out);
            }
            Ok(_) => {}
            Err(e) => whole &= gone(&e),
        }
    }
    whole
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

    #[test]
    fn removed_directories_are_gone_and_forgotten() {
        let tmp = std::env::temp_dir().join(format!("sonde-cg-gone-{}", std::process::id()));
        let dirs: Vec<PathBuf> = (0..100).map(|i| tmp.join(format!("c{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut ids: HashSet<u64> = dirs
            .iter()
            .map(|d| std::fs::metadata(d).unwrap().ino())
            .collect();
        let mut paths = CgroupPaths::new(Some(tmp.clone()));
        let seen = Instant::now();
        // All there: none gone, and the walk remembered them.
        assert!(paths.gone(&ids, seen).is_empty());
        assert_eq!(paths.len(), 101);
        for d in &dirs[..60] {
            std::fs::remove_dir(d).unwrap();
        }
        // Every id is known to the last walk, which is recent: no new walk.
        assert!(paths.gone(&ids, Instant::now()).is_empty());
        // An id it does not know, seen counting after it: walked again.
        // Not found in a walk after `seen`, that one and the removed 60 are
        // gone, and the cache holds only what exists.
        ids.insert(u64::MAX);
        let gone = paths.gone(&ids, Instant::now());
        assert_eq!(gone.len(), 61);
        assert!(gone.contains(&u64::MAX));
        assert_eq!(paths.len(), 41);
        // Seen before that walk: it says nothing of what it did not find
        // unless it began after `seen`.
        let early = seen;
        let mut fresh = CgroupPaths::new(Some(tmp.clone()));
        fresh.rewalk();
        assert_eq!(fresh.gone(&ids, early).len(), 61);
        // No hierarchy: nothing can be said gone.
        assert!(CgroupPaths::new(None).gone(&ids, Instant::now()).is_empty());
        std::fs::remove_dir_all(tmp).unwrap();
    }
}
