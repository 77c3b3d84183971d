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
    loss::CgroupLossKey,
    process::ExitKey,
    syscalls::{SyscallErrKey, SyscallHistKey},
    task::CgroupBucketKey,
    tcp::CgroupCountKey,
};

use super::{memory, process, sched, syscalls, tcp, Probes, Reading};

/// The node's own id in the tcp family's keys (a socket without a cgroup):
/// never a cgroup that could be removed.
const NODE: u64 = 0;

impl Probes {
    /// Deletes every key of the cgroups `gone` from the kernel maps keyed by
    /// cgroup (of the families whose maps hold counts). Returns how many
    /// keys were deleted.
    pub fn forget_cgroups(&mut self, gone: &HashSet<u64>) -> Result<usize, MapError> {
        if gone.is_empty() {
            return Ok(0);
        }
        let families = [
            syscalls::PROBE,
            sched::PROBE,
            memory::PROBE,
            process::PROBE,
            tcp::PROBE,
        ];
        let counting: Vec<&str> = families.into_iter().filter(|f| self.attached(f)).collect();
        let ebpf = &mut self.ebpf;
        let mut n = forget::<CgroupLossKey>(ebpf, "LOSS_BY_CGROUP", |k| k.cgroup_id, gone)?;
        for family in counting {
            n += match family {
                syscalls::PROBE => {
                    forget::<SyscallHistKey>(ebpf, "SYSCALL_HIST", |k| k.cgroup_id, gone)?
                        + forget::<SyscallErrKey>(ebpf, "SYSCALL_ERRORS", |k| k.cgroup_id, gone)?
                }
                sched::PROBE => {
                    forget::<CgroupBucketKey>(ebpf, "RUNQ_HIST", |k| k.cgroup_id, gone)?
                }
                memory::PROBE => {
                    forget::<CgroupBucketKey>(ebpf, "RECLAIM_HIST", |k| k.cgroup_id, gone)?
                        + forget::<u64>(ebpf, "OOM_KILLS", |k| *k, gone)?
                }
                process::PROBE => forget::<ExitKey>(ebpf, "PROC_EXITS", |k| k.cgroup_id, gone)?,
                _ => {
                    forget::<CgroupBucketKey>(ebpf, "TCP_CONNECT_HIST", |k| k.cgroup_id, gone)?
                        + forget::<CgroupCountKey>(ebpf, "TCP_CGROUP", |k| k.cgroup_id, gone)?
                }
            };
        }
        Ok(n)
    }
}

/// Deletes the keys of map `name` whose cgroup is in `gone`.
fn forget<K: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    cgroup_of: fn(&K) -> u64,
    gone: &HashSet<u64>,
) -> Result<usize, MapError> {
    let map = ebpf.map_mut(name).ok_or_else(|| MapError::InvalidName {
        name: name.to_owned(),
    })?;
    let mut map: PerCpuHashMap<_, K, u64> = PerCpuHashMap::try_from(map)?;
    // Collected first: deleting while walking the keys restarts the walk.
    let doomed: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| {
            let id = cgroup_of(k);
            id != NODE && gone.contains(&id)
        })
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
        let mut ids = HashSet::new();
        ids.extend(self.syscalls.latency.keys().map(|k| k.0));
        ids.extend(self.syscalls.errors.keys().map(|k| k.0));
        ids.extend(self.sched.runq.keys());
        ids.extend(self.memory.reclaim.keys());
        ids.extend(self.memory.oom_kills.keys());
        ids.extend(self.process.exits.keys().map(|k| k.0));
        ids.extend(self.tcp.connect_latency.keys());
        ids.extend(self.tcp.cgroup.keys().map(|k| k.0));
        ids.extend(self.cgroup_losses.keys().map(|k| k.0));
        ids.remove(&NODE);
        ids
    }

    /// Drops the counts of the cgroups `gone`, as [`Probes::forget_cgroups`]
    /// does in the kernel.
    pub fn forget_cgroups(&mut self, gone: &HashSet<u64>) {
        let keep = |id: &u64| *id == NODE || !gone.contains(id);
        self.syscalls.latency.retain(|k, _| keep(&k.0));
        self.syscalls.errors.retain(|k, _| keep(&k.0));
        self.sched.runq.retain(|k, _| keep(k));
        self.memory.reclaim.retain(|k, _| keep(k));
        self.memory.oom_kills.retain(|k, _| keep(k));
        self.process.exits.retain(|k, _| keep(&k.0));
        self.tcp.connect_latency.retain(|k, _| keep(k));
        self.tcp.cgroup.retain(|k, _| keep(&k.0));
        self.cgroup_losses.retain(|k, _| keep(&k.0));
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
