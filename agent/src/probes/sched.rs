//! Scheduler family: loads and attaches `agent-ebpf/src/sched.rs`, reads the
//! run-queue latency histograms per cgroup.

use std::collections::HashMap;

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use sonde_common::{sched::loss, task::CgroupBucketKey};
use sonde_slo::Histogram;

use super::{attach_raw_tracepoints, map, read_losses, unavailable, ProbeStatus};

/// Family name in statuses and loss records.
pub const PROBE: &str = "sched";

/// Hooks, as (program, raw tracepoint).
const HOOKS: [(&str, &str); 3] = [
    ("sched_wake", "sched_wakeup"),
    ("sched_wake_new", "sched_wakeup_new"),
    ("sched_switch", "sched_switch"),
];

/// The same hooks with empty programs (benchmarks only).
pub(super) const FLOOR_HOOKS: [(&str, &str); 3] = [
    ("floor_wake", "sched_wakeup"),
    ("floor_wake_new", "sched_wakeup_new"),
    ("floor_switch", "sched_switch"),
];

/// Loss counters: (index, stable name). All are real losses.
pub const LOSSES: [(u32, &str); 3] = [
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::START_COLLISION, "start_slot_collision"),
    (loss::READ_FAILED, "kernel_read_failed"),
];

/// Cumulative scheduler counts.
#[derive(Debug, Clone, Default)]
pub struct SchedReading {
    /// Run-queue latency per cgroup id.
    pub runq: HashMap<u64, Histogram>,
    /// Loss counters, indexed by `sonde_common::sched::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

pub(super) fn attach(
    ebpf: &mut Ebpf,
    offsets: &Result<sonde_common::task::TaskOffsets, String>,
) -> ProbeStatus {
    if let Err(why) = offsets {
        return unavailable(PROBE, why.clone());
    }
    attach_raw_tracepoints(ebpf, PROBE, &HOOKS)
}

pub(super) fn read(ebpf: &Ebpf) -> Result<SchedReading, MapError> {
    let mut reading = SchedReading::default();
    let hist: PerCpuHashMap<&MapData, CgroupBucketKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "RUNQ_HIST")?)?;
    for item in hist.iter() {
        let (key, values) = item?;
        reading
            .runq
            .entry(key.cgroup_id)
            .or_default()
            .record_kernel_bucket(key.bucket, values.iter().sum());
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "RUNQ_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}
