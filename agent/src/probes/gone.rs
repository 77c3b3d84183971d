//! Keys of removed cgroups. The kernel's counters are cumulative and keyed by
//! cgroup id, so every short-lived cgroup (a job, a pod that came and went)
//! would keep its keys until the map filled, and from then on every new
//! cgroup's events would be dropped. Once a cgroup is gone no task can count
//! under it any more, so after the window that read its last counts its
//! keys are deleted from the kernel and from the agent's last reading alike.
//!
//! A removed cgroup can still see the tail of its last task's exit (the task
//! leaves the cgroup's accounting before it is switched out for the last
//! time): an increment between the last read and the delete is lost, one
//! after the delete makes a new key that counts from zero, which the next
//! window reports whole.

use std::collections::HashSet;

use aya::{
    maps::{MapError, PerCpuHashMap},
    Ebpf, Pod,
};
use sonde_common::{
    family::Family,
    loss::CgroupLossKey,
    sched::{is_cgroup, HolderKey, HolderWait},
    task::CgroupBucketKey,
};

use super::{family, Probes, ReadError, Reading};

/// The node's own id in the tcp family's keys (a socket without a cgroup):
/// never a cgroup that could be removed.
const NODE: u64 = 0;

/// The table of losses by cgroup, shared by the families.
const LOSS_BY_CGROUP: &str = "LOSS_BY_CGROUP";

impl Probes {
    /// Deletes every key of the cgroups `gone` from the kernel maps keyed by
    /// cgroup (`Family::cgroup_maps`, of the families whose maps hold
    /// counts, and the table of losses by cgroup). Returns how many keys
    /// were deleted.
    pub fn forget_cgroups(&mut self, gone: &HashSet<u64>) -> Result<usize, ReadError> {
        if gone.is_empty() {
            return Ok(0);
        }
        let maps = Family::ALL
            .into_iter()
            .filter(|&f| self.attached(f))
            .flat_map(|f| family::of(f).cgroup_maps().iter().copied())
            .collect::<Vec<_>>();
        let mut n = 0;
        let losses = (LOSS_BY_CGROUP, forget::<CgroupLossKey> as Forget);
        for (name, forget) in std::iter::once(losses).chain(maps) {
            n += forget(&mut self.ebpf, name, gone)?;
        }
        Ok(n)
    }
}

/// A key that leads with the cgroup it counts for (each family implements
/// it for its own key types).
pub(super) trait CgroupKey: Pod {
    /// The map's value type.
    type Value: Pod;
    /// The cgroup the key counts for.
    fn cgroup_id(&self) -> u64;
    /// Whether the key names a cgroup of `gone`.
    fn names_any(&self, gone: &HashSet<u64>) -> bool {
        let id = self.cgroup_id();
        id != NODE && gone.contains(&id)
    }
}

impl CgroupKey for u64 {
    type Value = u64;
    fn cgroup_id(&self) -> u64 {
        *self
    }
}

/// Run-queue wait by holder: the key names two cgroups, and goes when
/// either does (the holder sentinels are never cgroups).
impl CgroupKey for HolderKey {
    type Value = HolderWait;
    fn cgroup_id(&self) -> u64 {
        self.victim_cgroup
    }
    fn names_any(&self, gone: &HashSet<u64>) -> bool {
        [self.victim_cgroup, self.holder_cgroup]
            .iter()
            .any(|id| is_cgroup(*id) && gone.contains(id))
    }
}

macro_rules! cgroup_keys {
    ($($t:ty),* $(,)?) => {
        $(impl CgroupKey for $t {
            type Value = u64;
            fn cgroup_id(&self) -> u64 {
                self.cgroup_id
            }
        })*
    };
}

// Shared by several families (a cgroup and a histogram bucket), and the
// table of losses by cgroup.
cgroup_keys!(CgroupLossKey, CgroupBucketKey);

/// Deletes the keys of removed cgroups from one map (`forget` of its key
/// type), returning how many.
pub(super) type Forget = fn(&mut Ebpf, &str, &HashSet<u64>) -> Result<usize, MapError>;

/// Deletes the keys of map `name` whose cgroup is in `gone`.
pub(super) fn forget<K: CgroupKey>(
    ebpf: &mut Ebpf,
    name: &str,
    gone: &HashSet<u64>,
) -> Result<usize, MapError> {
    let map = ebpf.map_mut(name).ok_or_else(|| MapError::InvalidName {
        name: name.to_owned(),
    })?;
    let mut map: PerCpuHashMap<_, K, K::Value> = PerCpuHashMap::try_from(map)?;
    // Collected first: deleting while walking the keys restarts the walk.
    let doomed: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.names_any(gone))
        .collect();
    for key in &doomed {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(doomed.len())
}

impl Reading {
    /// Every cgroup id with a key in a map keyed by cgroup.
    pub fn cgroup_ids(&self) -> HashSet<u64> {
        let mut ids: HashSet<u64> = self.cgroup_losses.keys().map(|k| k.0).collect();
        for f in Family::ALL {
            family::of(f).cgroup_ids(self, &mut ids);
        }
        ids.remove(&NODE);
        ids
    }

    /// Drops the counts of the cgroups `gone`, as [`Probes::forget_cgroups`]
    /// does in the kernel.
    pub fn forget_cgroups(&mut self, gone: &HashSet<u64>) {
        let keep = |id: u64| id == NODE || !gone.contains(&id);
        self.cgroup_losses.retain(|k, _| keep(k.0));
        for f in Family::ALL {
            family::of(f).retain_cgroups(self, &keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_forgets_the_gone_cgroups_and_keeps_the_node() {
        let mut r = Reading::default();
        r.syscalls.errors.insert((7, 257, 2), 3);
        r.syscalls.errors.insert((8, 257, 2), 5);
        r.syscalls
            .latency
            .insert((7, 257), sonde_slo::Histogram::new());
        r.sched.runq.insert(7, sonde_slo::Histogram::new());
        r.memory.oom_kills.insert(7, 1);
        r.process.exits.insert((7, 1, 0), 1);
        r.tcp.cgroup.insert((NODE, 1), 4);
        r.tcp.cgroup.insert((7, 1), 4);
        assert_eq!(r.cgroup_ids(), HashSet::from([7, 8]));
        r.forget_cgroups(&HashSet::from([7, NODE]));
        assert_eq!(r.cgroup_ids(), HashSet::from([8]));
        assert_eq!(r.syscalls.errors.get(&(8, 257, 2)), Some(&5));
        assert_eq!(r.tcp.cgroup.get(&(NODE, 1)), Some(&4));
        assert!(r.sched.runq.is_empty() && r.process.exits.is_empty());
    }
}
