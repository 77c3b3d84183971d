//! Scheduler family: loads and attaches `agent-ebpf/src/sched.rs`, reads the
//! run-queue latency histograms per cgroup.

use super::{
    family::{Attach, FamilyProbe},
    gone::{forget, Forget},
    Reading,
};
use std::collections::HashMap;
use std::collections::HashSet;

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePoint, ProgramError},
    Ebpf,
};
use sonde_common::family::Family;
use sonde_common::{
    sched::{is_cgroup, loss, HolderKey, HolderWait},
    task::CgroupBucketKey,
};
use sonde_slo::Histogram;

use super::{
    attach_raw_tracepoints, explain, map, program, read_losses, unavailable, unload, Links,
    ProbeState, ProbeStatus,
};

/// Preferred hooks: BTF tracepoints, as (program, tracepoint).
const BTF_HOOKS: [(&str, &str); 3] = [
    ("sched_wake", "sched_wakeup"),
    ("sched_wake_new", "sched_wakeup_new"),
    ("sched_switch", "sched_switch"),
];

/// Fallback: the same on raw tracepoints.
const RAW_HOOKS: [(&str, &str); 3] = [
    ("sched_rwake", "sched_wakeup"),
    ("sched_rwake_new", "sched_wakeup_new"),
    ("sched_rswitch", "sched_switch"),
];

/// Every sched program, for per-program statistics.
pub const PROGRAMS: [&str; 6] = [
    "sched_wake",
    "sched_wake_new",
    "sched_switch",
    "sched_rwake",
    "sched_rwake_new",
    "sched_rswitch",
];

/// The same hooks with empty programs (benchmarks only): BTF tracepoints,
/// and raw ones for a kernel without them.
const FLOOR_BTF_HOOKS: [(&str, &str); 3] = [
    ("floor_bwake", "sched_wakeup"),
    ("floor_bwake_new", "sched_wakeup_new"),
    ("floor_bswitch", "sched_switch"),
];
const FLOOR_RAW_HOOKS: [(&str, &str); 3] = [
    ("floor_wake", "sched_wakeup"),
    ("floor_wake_new", "sched_wakeup_new"),
    ("floor_switch", "sched_switch"),
];

/// Attaches the empty programs on the hooks `attach` would pick.
pub(super) fn attach_floor(ebpf: &mut Ebpf, links: &mut Links) -> ProbeStatus {
    if let Ok(btf) = aya::Btf::from_sys_fs() {
        if attach_btf(ebpf, links, &btf, &FLOOR_BTF_HOOKS).is_ok() {
            return ProbeStatus {
                probe: "floor",
                state: ProbeState::Attached,
                hook: Some("tp_btf (empty programs)".to_owned()),
                reason: None,
                gaps: Vec::new(),
            };
        }
        unload(ebpf, links, FLOOR_BTF_HOOKS.iter().map(|(name, _)| *name));
    }
    attach_raw_tracepoints(ebpf, links, "floor", &FLOOR_RAW_HOOKS)
}

/// Loss counters: (index, stable name). All are real losses.
pub const LOSSES: [(u32, &str); 4] = [
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::START_COLLISION, "start_slot_collision"),
    (loss::READ_FAILED, "kernel_read_failed"),
    (loss::HOLDER_MAP_FULL, "holder_map_full"),
];

/// Which kernel hook feeds the scheduler family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedHook {
    /// BTF tracepoints, else raw tracepoints.
    #[default]
    Auto,
    /// BTF tracepoints (tp_btf) only.
    BtfTracepoint,
    /// Raw tracepoints only.
    RawTracepoint,
}

/// Cumulative scheduler counts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SchedReading {
    /// Run-queue latency per cgroup id.
    #[serde(with = "super::pairs")]
    pub runq: HashMap<u64, Histogram>,
    /// Run-queue wait per (victim cgroup, holder cgroup): whose task held
    /// the CPU when each wait ended (`sonde_common::sched::HOLDER_IDLE`,
    /// `HOLDER_EARLIER`, `HOLDER_OTHER` as the kernel names them). Absent from a checkpoint
    /// written before it existed, hence the default.
    #[serde(with = "super::pairs", default)]
    pub holders: HashMap<(u64, u64), Held>,
    /// Loss counters, indexed by `sonde_common::sched::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = SchedReading;

/// Run-queue wait charged to one holder (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// Nanoseconds waited.
    pub wait_ns: u64,
    /// Waits that ended.
    pub waits: u64,
}

pub(super) fn attach(
    ebpf: &mut Ebpf,
    links: &mut Links,
    offsets: &Result<sonde_common::task::TaskOffsets, String>,
    btf: Option<&aya::Btf>,
    hook: SchedHook,
) -> ProbeStatus {
    if let Err(why) = offsets {
        return unavailable(Family::Sched.name(), why.clone());
    }
    let btf = if hook == SchedHook::RawTracepoint {
        None
    } else {
        btf
    };
    let why_not_btf = match btf {
        Some(btf) => match attach_btf(ebpf, links, btf, &BTF_HOOKS) {
            Ok(()) => {
                return ProbeStatus {
                    probe: Family::Sched.name(),
                    state: ProbeState::Attached,
                    hook: Some("tp_btf:sched_wakeup+sched_wakeup_new+sched_switch".to_owned()),
                    reason: None,
                    gaps: Vec::new(),
                }
            }
            Err(e) => {
                unload(ebpf, links, BTF_HOOKS.iter().map(|(name, _)| *name));
                explain(&e)
            }
        },
        None => "no kernel BTF".to_owned(),
    };
    if hook == SchedHook::BtfTracepoint {
        return unavailable(
            Family::Sched.name(),
            format!("BTF tracepoints: {why_not_btf}"),
        );
    }
    log::debug!("sched: BTF tracepoints not used ({why_not_btf}); using raw tracepoints");
    attach_raw_tracepoints(ebpf, links, Family::Sched.name(), &RAW_HOOKS)
}

fn attach_btf(
    ebpf: &mut Ebpf,
    links: &mut Links,
    btf: &aya::Btf,
    hooks: &[(&str, &str)],
) -> Result<(), ProgramError> {
    hooks.iter().try_for_each(|(name, tp)| {
        let program: &mut BtfTracePoint = program(ebpf, name)?.try_into()?;
        program.load(tp, btf)?;
        let id = program.attach()?;
        links.fd(name, program.take_link(id)?);
        Ok(())
    })
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
    let holders: PerCpuHashMap<&MapData, HolderKey, HolderWait> =
        PerCpuHashMap::try_from(map(ebpf, "RUNQ_HOLDER")?)?;
    for item in holders.iter() {
        let (key, values) = item?;
        let held = reading
            .holders
            .entry((key.victim_cgroup, key.holder_cgroup))
            .or_default();
        for v in values.iter() {
            held.wait_ns += v.wait_ns;
            held.waits += v.waits;
        }
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "RUNQ_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// The scheduler family's user side in this layer.
pub(super) struct Probe;

/// The maps keyed by cgroup, with their key types.
const CGROUP_MAPS: [(&str, Forget); 2] = [
    ("RUNQ_HIST", forget::<CgroupBucketKey> as Forget),
    ("RUNQ_HOLDER", forget::<HolderKey> as Forget),
];

impl FamilyProbe for Probe {
    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        attach(
            cx.ebpf,
            cx.links,
            &cx.setup.offsets,
            cx.btf,
            cx.setup.options.sched_hook,
        )
    }

    fn attaches_by_btf(&self) -> bool {
        true
    }

    fn attach_floor(&self, ebpf: &mut Ebpf, links: &mut Links) -> Option<ProbeStatus> {
        Some(attach_floor(ebpf, links))
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.sched = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.sched.loss
    }

    fn cgroup_maps(&self) -> &'static [(&'static str, Forget)] {
        &CGROUP_MAPS
    }

    fn cgroup_ids(&self, reading: &Reading, ids: &mut HashSet<u64>) {
        ids.extend(reading.sched.runq.keys());
        let holders = reading.sched.holders.keys();
        ids.extend(
            holders
                .flat_map(|&(v, h)| [v, h])
                .filter(|&id| is_cgroup(id)),
        );
    }

    fn retain_cgroups(&self, reading: &mut Reading, keep: &dyn Fn(u64) -> bool) {
        reading.sched.runq.retain(|k, _| keep(*k));
        reading
            .sched
            .holders
            .retain(|&(v, h), _| keep(v) && (!is_cgroup(h) || keep(h)));
    }
}
