//! Block I/O family: loads and attaches `agent-ebpf/src/block.rs` with the
//! record offsets of this kernel's tracepoints, reads latency, completions,
//! errors and in-flight counts per (device, op).

use super::{
    family::{Attach, FamilyProbe},
    Reading, Setup,
};
use std::{collections::HashMap, path::Path};

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use sonde_common::block::{loss, op, BlockOffsets, DevBucketKey, IoKey};
use sonde_common::family::Family;
use sonde_slo::Histogram;

use super::{
    explain, map, program, read_losses, unavailable, unload, Links, ProbeState, ProbeStatus,
};
use crate::host::mounts::{mount_tracefs, Mounts};

const HOOKS: [(&str, &str); 2] = [
    ("blk_rq_issue", "block_rq_issue"),
    ("blk_rq_done", "block_rq_complete"),
];

/// Loss counters: (index, stable name); `UNMATCHED` is informational.
pub const LOSSES: [(u32, &str); 4] = [
    (loss::START_MAP_FULL, "start_map_full"),
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::COUNT_MAP_FULL, "count_map_full"),
    (loss::READ_FAILED, "record_read_failed"),
];

/// Cumulative block counts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BlockReading {
    /// Latency per (dev_t, op).
    #[serde(with = "super::pairs")]
    pub latency: HashMap<(u32, u32), Histogram>,
    /// Requests per (dev_t, op, what): what is `sonde_common::block::what`.
    #[serde(with = "super::pairs")]
    pub io: HashMap<(u32, u32, u32), u64>,
    /// Failed requests per (dev_t, op, errno).
    #[serde(with = "super::pairs")]
    pub errors: HashMap<(u32, u32, u32), u64>,
    /// Loss counters, indexed by `sonde_common::block::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = BlockReading;

/// Offset and size of field `name` in a tracefs `format` text.
pub fn field(format: &str, name: &str) -> Option<(u32, u32)> {
    format.lines().find_map(|line| {
        let mut decl = None;
        let (mut offset, mut size) = (None, None);
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse().ok();
            }
        }
        // "char rwbs[10]" names the field "rwbs"; "dev_t dev" names "dev".
        let last = decl?.split_whitespace().last()?;
        let field_name = last.split('[').next()?;
        (field_name == name).then_some((offset?, size?))
    })
}

/// This kernel's record offsets, from the tracefs format files (mounting
/// tracefs first when it is missing and sonde may).
pub fn offsets(mounts: &Mounts) -> Result<BlockOffsets, String> {
    let tracefs = match mounts.tracefs.as_deref().filter(|_| mounts.tracefs_ready()) {
        Some(t) => t.to_owned(),
        None => {
            mount_tracefs().map_err(|e| {
                format!("tracefs is not mounted and mounting it failed ({e}); mount it: `mount -t tracefs tracefs /sys/kernel/tracing`")
            })?;
            Path::new(crate::host::mounts::TRACEFS).to_owned()
        }
    };
    let read = |tp: &str| {
        std::fs::read_to_string(tracefs.join("events/block").join(tp).join("format"))
            .map_err(|e| format!("block:{tp} tracepoint missing ({e})"))
    };
    let (issue, complete) = (read("block_rq_issue")?, read("block_rq_complete")?);
    let get = |text: &str, tp: &str, name: &str, min_size: u32| {
        field(text, name)
            .filter(|&(_, size)| size >= min_size)
            .map(|(offset, _)| offset)
            .ok_or_else(|| format!("block:{tp} has no usable field {name}"))
    };
    Ok(BlockOffsets {
        issue_dev: get(&issue, "block_rq_issue", "dev", 4)?,
        issue_sector: get(&issue, "block_rq_issue", "sector", 8)?,
        issue_rwbs: get(&issue, "block_rq_issue", "rwbs", 4)?,
        complete_dev: get(&complete, "block_rq_complete", "dev", 4)?,
        complete_sector: get(&complete, "block_rq_complete", "sector", 8)?,
        complete_rwbs: get(&complete, "block_rq_complete", "rwbs", 4)?,
        complete_error: get(&complete, "block_rq_complete", "error", 4)?,
        valid: 1,
    })
}

pub(super) fn configure<'a>(
    loader: &mut EbpfLoader<'a>,
    offsets: &'a Result<BlockOffsets, String>,
) {
    if let Ok(o) = offsets {
        loader.override_global("BLOCK_OFFSETS", o, true);
    }
}

pub(super) fn attach(
    ebpf: &mut Ebpf,
    links: &mut Links,
    offsets: &Result<BlockOffsets, String>,
) -> ProbeStatus {
    if let Err(why) = offsets {
        return unavailable(Family::Block.name(), why.clone());
    }
    let result = HOOKS.iter().try_for_each(|(name, tp)| {
        let program: &mut TracePoint = program(ebpf, name)?.try_into()?;
        program.load()?;
        links.tracepoint(program, name, "block", tp)
    });
    match result {
        Ok(()) => ProbeStatus {
            probe: Family::Block.name(),
            state: ProbeState::Attached,
            hook: Some("tracepoint:block/block_rq_issue+block_rq_complete".to_owned()),
            reason: None,
            gaps: Vec::new(),
        },
        Err(e) => {
            unload(ebpf, links, HOOKS.iter().map(|(name, _)| *name));
            unavailable(
                Family::Block.name(),
                format!("classic tracepoints: {}", explain(&e)),
            )
        }
    }
}

pub(super) fn read(ebpf: &Ebpf) -> Result<BlockReading, MapError> {
    let mut reading = BlockReading::default();
    let hist: PerCpuHashMap<&MapData, DevBucketKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "BLOCK_HIST")?)?;
    for item in hist.iter() {
        let (key, values) = item?;
        reading
            .latency
            .entry((key.dev, key.op))
            .or_default()
            .record_kernel_bucket(key.bucket, values.iter().sum());
    }
    for (name, out) in [
        ("BLOCK_IO", &mut reading.io),
        ("BLOCK_ERRORS", &mut reading.errors),
    ] {
        let counts: PerCpuHashMap<&MapData, IoKey, u64> =
            PerCpuHashMap::try_from(map(ebpf, name)?)?;
        for item in counts.iter() {
            let (key, values) = item?;
            out.insert((key.dev, key.op, key.what), values.iter().sum());
        }
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "BLOCK_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// Name of an operation.
pub fn op_name(op: u32) -> &'static str {
    match op {
        op::READ => "read",
        op::WRITE => "write",
        op::FLUSH => "flush",
        op::DISCARD => "discard",
        _ => "other",
    }
}

/// (major, minor) of a kernel dev_t (`major << 20 | minor`).
pub fn major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// The device's name (`loop0`, `nvme0n1`) from sysfs, else `major:minor`.
pub fn device_name(dev: u32) -> String {
    let (major, minor) = major_minor(dev);
    std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|target| {
            target
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The block I/O family's user side in this layer. Keyed by device, not
/// cgroup: nothing to forget when a cgroup goes.
pub(super) struct Probe;

impl FamilyProbe for Probe {
    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, setup: &'a Setup) {
        configure(loader, &setup.block);
    }

    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        attach(cx.ebpf, cx.links, &cx.setup.block)
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.block = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.block.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_6_18: &str = "name: block_rq_issue
ID: 2104
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;
";

    const COMPLETE_5_10: &str = "\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:int error;\toffset:28;\tsize:4;\tsigned:1;
\tfield:char rwbs[8];\toffset:32;\tsize:8;\tsigned:0;
";

    #[test]
    fn reads_fields_from_format_files() {
        assert_eq!(field(ISSUE_6_18, "dev"), Some((8, 4)));
        assert_eq!(field(ISSUE_6_18, "sector"), Some((16, 8)));
        assert_eq!(field(ISSUE_6_18, "rwbs"), Some((34, 10)));
        assert_eq!(field(ISSUE_6_18, "cmd"), Some((60, 4)));
        assert_eq!(field(ISSUE_6_18, "error"), None);
        assert_eq!(field(COMPLETE_5_10, "rwbs"), Some((32, 8)));
        assert_eq!(field(COMPLETE_5_10, "error"), Some((28, 4)));
    }

    #[test]
    fn devices() {
        assert_eq!(major_minor((7 << 20) | 3), (7, 3));
        assert_eq!(op_name(op::FLUSH), "flush");
    }
}
