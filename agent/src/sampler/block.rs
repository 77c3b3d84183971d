//! The block I/O window: requests, latency, errors and in-flight per
//! (device, operation), and the failed requests as records.

use std::collections::HashMap;

use sonde_slo::Histogram;

use super::histogram_deltas;
use crate::{
    model::{DeviceIo, IoErrorRecord},
    probes::{
        block::{self, BlockReading},
        syscalls,
    },
};

/// Failed block requests kept as events per window; beyond, counted.
pub(super) const MAX_IO_ERROR_EVENTS: usize = 256;

pub(super) fn io_error_record(
    e: &sonde_common::block::BlockEvent,
    time_unix_ns: u64,
) -> IoErrorRecord {
    let (major, minor) = block::major_minor(e.dev);
    IoErrorRecord {
        kind: "io_error",
        time_unix_ns,
        device: block::device_name(e.dev),
        major,
        minor,
        op: block::op_name(e.op),
        error: syscalls::errno_name(e.errno).into_owned(),
        sector: e.sector,
    }
}

/// The family in the sampler.
#[derive(Default)]
pub struct State;

impl super::FamilyWindow for State {
    type Part = crate::model::block::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        part.devices = block_window(&cx.before.block, &cx.after.block);
    }
}

/// Block I/O per (device, op) over the window, busiest first.
pub fn block_window(before: &BlockReading, after: &BlockReading) -> Vec<DeviceIo> {
    use sonde_common::block::what;
    let delta = |b: &HashMap<(u32, u32, u32), u64>, a: &HashMap<(u32, u32, u32), u64>, k| {
        let now: u64 = a.get(&k).copied().unwrap_or(0);
        now.checked_sub(b.get(&k).copied().unwrap_or(0))
            .unwrap_or(now)
    };
    let mut keys: Vec<(u32, u32)> = after.io.keys().map(|&(dev, op, _)| (dev, op)).collect();
    keys.sort_unstable();
    keys.dedup();
    let latencies: HashMap<(u32, u32), Histogram> =
        histogram_deltas(&before.latency, &after.latency)
            .into_iter()
            .collect();
    let mut out: Vec<DeviceIo> = keys
        .into_iter()
        .filter_map(|(dev, op)| {
            let issued = delta(&before.io, &after.io, (dev, op, what::ISSUED));
            let completed = delta(&before.io, &after.io, (dev, op, what::COMPLETED));
            let total_issued = after.io.get(&(dev, op, what::ISSUED)).copied().unwrap_or(0);
            let total_completed = after
                .io
                .get(&(dev, op, what::COMPLETED))
                .copied()
                .unwrap_or(0);
            let in_flight = total_issued.saturating_sub(total_completed);
            if issued == 0 && completed == 0 && in_flight == 0 {
                return None;
            }
            let errors = after
                .errors
                .keys()
                .filter(|&&(d, o, _)| d == dev && o == op)
                .filter_map(|&k| {
                    let n = delta(&before.errors, &after.errors, k);
                    (n > 0).then(|| (syscalls::errno_name(k.2).into_owned(), n))
                })
                .collect();
            let latency = latencies.get(&(dev, op)).cloned().unwrap_or_default();
            let (major, minor) = block::major_minor(dev);
            Some(DeviceIo {
                device: block::device_name(dev),
                major,
                minor,
                op: block::op_name(op),
                issued,
                completed,
                errors,
                in_flight,
                p50_secs: latency.quantile(0.5),
                p99_secs: latency.quantile(0.99),
                latency,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.completed
            .cmp(&a.completed)
            .then_with(|| a.device.cmp(&b.device))
    });
    out
}
