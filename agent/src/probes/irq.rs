//! Interrupt family: loads and attaches `agent-ebpf/src/irq.rs`, reads the
//! entries and handler time of every hard IRQ and softirq vector per CPU,
//! and their handler-duration histograms.

use std::collections::{BTreeMap, HashMap};

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use serde::{Deserialize, Serialize};
use sonde_common::{
    family::Family,
    irq::{loss, IrqBucketKey, IrqTotals, NR_SOFTIRQS},
};
use sonde_slo::Histogram;

use super::{
    attach_raw_tracepoints,
    family::{Attach, FamilyProbe},
    map, read_losses, Links, ProbeStatus, Reading,
};

/// The family's hooks, as (program, raw tracepoint).
const HOOKS: [(&str, &str); 4] = [
    ("irq_hard_entry", "irq_handler_entry"),
    ("irq_hard_exit", "irq_handler_exit"),
    ("irq_soft_entry", "softirq_entry"),
    ("irq_soft_exit", "softirq_exit"),
];

/// Every irq program, for per-program statistics.
pub const PROGRAMS: [&str; 4] = [
    "irq_hard_entry",
    "irq_hard_exit",
    "irq_soft_entry",
    "irq_soft_exit",
];

/// The same hooks with empty programs (benchmarks only).
const FLOOR_HOOKS: [(&str, &str); 4] = [
    ("floor_irq_in", "irq_handler_entry"),
    ("floor_irq_out", "irq_handler_exit"),
    ("floor_soft_in", "softirq_entry"),
    ("floor_soft_out", "softirq_exit"),
];

/// Loss counters: (index, stable name).
pub const LOSSES: [(u32, &str); 3] = [
    (loss::TOTALS_MAP_FULL, "totals_map_full"),
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::UNKNOWN_VECTOR, "unknown_vector"),
];

/// Entries and handler time of one IRQ or vector on one CPU, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Handler entries.
    pub count: u64,
    /// Time in the handler, ns.
    pub time_ns: u64,
}

/// Cumulative interrupt counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IrqReading {
    /// Per softirq vector (the index), per CPU (the index).
    pub soft: Vec<Vec<Totals>>,
    /// Per IRQ number, per CPU (the index).
    pub hard: BTreeMap<u32, Vec<Totals>>,
    /// Handler durations per (kind, number): `sonde_common::irq::KIND_*`.
    #[serde(with = "super::pairs")]
    pub durations: HashMap<(u32, u32), Histogram>,
    /// Loss counters, indexed by `sonde_common::irq::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = IrqReading;

fn totals(values: impl IntoIterator<Item = IrqTotals>) -> Vec<Totals> {
    values
        .into_iter()
        .map(|t| Totals {
            count: t.count,
            time_ns: t.time_ns,
        })
        .collect()
}

fn read(ebpf: &Ebpf) -> Result<IrqReading, MapError> {
    let mut reading = IrqReading::default();
    let soft: PerCpuArray<&MapData, IrqTotals> =
        PerCpuArray::try_from(map(ebpf, "SOFTIRQ_TOTALS")?)?;
    for vec in 0..NR_SOFTIRQS {
        reading
            .soft
            .push(totals(soft.get(&vec, 0)?.iter().copied()));
    }
    let hard: PerCpuHashMap<&MapData, u32, IrqTotals> =
        PerCpuHashMap::try_from(map(ebpf, "HARDIRQ_TOTALS")?)?;
    for item in hard.iter() {
        let (irq, values) = item?;
        reading.hard.insert(irq, totals(values.iter().copied()));
    }
    let hist: PerCpuHashMap<&MapData, IrqBucketKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "IRQ_HIST")?)?;
    for item in hist.iter() {
        let (key, values) = item?;
        reading
            .durations
            .entry((key.kind, key.number))
            .or_default()
            .record_kernel_bucket(key.bucket, values.iter().sum());
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "IRQ_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// The interrupt family's user side in this layer. Keyed by IRQ and
/// vector, not cgroup: nothing to forget when a cgroup goes.
pub(super) struct Probe;

impl FamilyProbe for Probe {
    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        attach_raw_tracepoints(cx.ebpf, cx.links, Family::Irq.name(), &HOOKS)
    }

    fn attach_floor(&self, ebpf: &mut Ebpf, links: &mut Links) -> Option<ProbeStatus> {
        Some(attach_raw_tracepoints(ebpf, links, "floor", &FLOOR_HOOKS))
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.irq = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.irq.loss
    }
}
