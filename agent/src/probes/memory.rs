//! Memory family: loads and attaches `agent-ebpf/src/memory.rs`, reads the
//! reclaim stalls and OOM kills per cgroup.

use super::{
    family::{Attach, FamilyProbe},
    gone::{forget, Forget},
    Reading, Setup,
};
use std::collections::HashMap;
use std::collections::HashSet;

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    Ebpf, EbpfLoader,
};
use sonde_common::family::Family;
use sonde_common::{memory::loss, task::CgroupBucketKey};
use sonde_slo::Histogram;

use super::{
    attach_raw_tracepoints, feature, map, read_losses, Gap, KernelFeatures, Links, ProbeState,
    ProbeStatus,
};
use crate::host::btf::Btf;

/// Global reclaim and the OOM killer: the family needs these.
const HOOKS: [(&str, &str); 3] = [
    ("mem_reclaim_beg", "mm_vmscan_direct_reclaim_begin"),
    ("mem_reclaim_end", "mm_vmscan_direct_reclaim_end"),
    ("mem_oom_victim", "mark_victim"),
];

/// Reclaim against a cgroup's limit (CONFIG_MEMCG): without it the family
/// is degraded.
const MEMCG_HOOKS: [(&str, &str); 2] = [
    ("mem_memcg_beg", "mm_vmscan_memcg_reclaim_begin"),
    ("mem_memcg_end", "mm_vmscan_memcg_reclaim_end"),
];

/// Loss counters: (index, stable name).
pub const LOSSES: [(u32, &str); 3] = [
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::OOM_MAP_FULL, "oom_map_full"),
    (loss::READ_FAILED, "kernel_read_failed"),
];

/// Cumulative memory counts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryReading {
    /// Reclaim stall latency per cgroup id.
    #[serde(with = "super::pairs")]
    pub reclaim: HashMap<u64, Histogram>,
    /// OOM kills per cgroup id (of the victim).
    #[serde(with = "super::pairs")]
    pub oom_kills: HashMap<u64, u64>,
    /// Loss counters, indexed by `sonde_common::memory::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = MemoryReading;

/// Whether `mark_victim`'s first argument is the victim task on this kernel
/// (6.x), rather than its pid.
pub(super) fn victim_arg_is_task(btf: Option<&Btf>) -> bool {
    btf.and_then(|b| b.tracepoint_arg_is_pointer("mark_victim", 0))
        .unwrap_or(false)
}

/// Tells the OOM program what `mark_victim`'s first argument is.
pub(super) fn configure(loader: &mut EbpfLoader<'_>, task_arg: bool) {
    // The loader borrows the value until load: give it a 'static one.
    static TRUE: u32 = 1;
    static FALSE: u32 = 0;
    loader.override_global(
        "MARK_VICTIM_TASK_ARG",
        if task_arg { &TRUE } else { &FALSE },
        true,
    );
}

pub(super) fn attach(ebpf: &mut Ebpf, links: &mut Links) -> ProbeStatus {
    let mut status = attach_raw_tracepoints(ebpf, links, Family::Memory.name(), &HOOKS);
    if status.state != ProbeState::Attached {
        return status;
    }
    let memcg = attach_raw_tracepoints(ebpf, links, Family::Memory.name(), &MEMCG_HOOKS);
    if let Some(hook) = memcg.hook {
        status.hook = status
            .hook
            .map(|h| format!("{h}+{}", hook.trim_start_matches("raw_tracepoint:")));
    } else {
        status.state = ProbeState::Degraded;
        status.reason = Some(format!(
            "cgroup-limit reclaim not traced: {}",
            memcg.reason.unwrap_or_default()
        ));
        status.gaps = vec![Gap::MemoryCgroupReclaim];
    }
    status
}

/// What this kernel offers the family, for `sonde doctor`.
pub(super) fn features(btf: Option<&Btf>, into: &mut KernelFeatures) {
    into.insert(
        feature::TP_MEMCG_RECLAIM,
        btf.is_some_and(|b| b.tracepoint_arg_is_pointer(MEMCG_HOOKS[0].1, 0).is_some()),
    );
}

pub(super) fn read(ebpf: &Ebpf) -> Result<MemoryReading, MapError> {
    let mut reading = MemoryReading::default();
    let hist: PerCpuHashMap<&MapData, CgroupBucketKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "RECLAIM_HIST")?)?;
    for item in hist.iter() {
        let (key, values) = item?;
        reading
            .reclaim
            .entry(key.cgroup_id)
            .or_default()
            .record_kernel_bucket(key.bucket, values.iter().sum());
    }
    let kills: PerCpuHashMap<&MapData, u64, u64> =
        PerCpuHashMap::try_from(map(ebpf, "OOM_KILLS")?)?;
    for item in kills.iter() {
        let (cgroup, values) = item?;
        reading.oom_kills.insert(cgroup, values.iter().sum());
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "MEM_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// The memory family's user side in this layer.
pub(super) struct Probe;

/// The maps keyed by cgroup, with their key types.
const CGROUP_MAPS: [(&str, Forget); 2] = [
    ("RECLAIM_HIST", forget::<CgroupBucketKey> as Forget),
    ("OOM_KILLS", forget::<u64> as Forget),
];

impl FamilyProbe for Probe {
    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, setup: &'a Setup) {
        configure(loader, setup.victim_is_task);
    }

    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        match &cx.setup.offsets {
            Ok(_) => attach(cx.ebpf, cx.links),
            Err(why) => super::unavailable(Family::Memory.name(), why.clone()),
        }
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.memory = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.memory.loss
    }

    fn cgroup_maps(&self) -> &'static [(&'static str, Forget)] {
        &CGROUP_MAPS
    }

    fn cgroup_ids(&self, reading: &Reading, ids: &mut HashSet<u64>) {
        ids.extend(reading.memory.reclaim.keys());
        ids.extend(reading.memory.oom_kills.keys());
    }

    fn retain_cgroups(&self, reading: &mut Reading, keep: &dyn Fn(u64) -> bool) {
        reading.memory.reclaim.retain(|k, _| keep(*k));
        reading.memory.oom_kills.retain(|k, _| keep(*k));
    }
}
