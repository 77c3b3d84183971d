//! Process family: loads and attaches `agent-ebpf/src/process.rs`, reads the
//! terminations per cgroup.

use super::{
    family::{Attach, FamilyProbe},
    gone::{forget, CgroupKey, Forget},
    Reading,
};
use std::collections::HashMap;
use std::collections::HashSet;

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use sonde_common::family::Family;
use sonde_common::{
    process::{loss, ExitKey},
    task::TaskOffsets,
};

use aya::programs::TracePoint;

use super::{
    attach_raw_tracepoints, explain, map, program, read_losses, unavailable, unload, Links,
    ProbeState, ProbeStatus,
};
use crate::host::mounts::{mount_tracefs, Mounts};

const HOOKS: [(&str, &str); 1] = [("proc_exit", "sched_process_exit")];

/// Loss counters: (index, stable name).
pub const LOSSES: [(u32, &str); 2] = [
    (loss::MAP_FULL, "map_full"),
    (loss::READ_FAILED, "kernel_read_failed"),
];

/// Cumulative process terminations.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ProcessReading {
    /// Count per (cgroup id, how, code): how is `sonde_common::process::how`.
    #[serde(with = "super::pairs")]
    pub exits: HashMap<(u64, u32, u32), u64>,
    /// Loss counters, indexed by `sonde_common::process::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = ProcessReading;

/// The classic tracepoint program (preferred: see agent-ebpf/src/process.rs).
const CLASSIC: &str = "proc_exit_tp";

pub(super) fn attach(
    ebpf: &mut Ebpf,
    links: &mut Links,
    offsets: &Result<TaskOffsets, String>,
    mounts: &Mounts,
) -> ProbeStatus {
    if let Err(why) = offsets {
        return unavailable(Family::Process.name(), why.clone());
    }
    let classic = attach_classic(ebpf, links, mounts);
    if classic.is_ok() {
        return ProbeStatus {
            probe: Family::Process.name(),
            state: ProbeState::Attached,
            hook: Some("tracepoint:sched/sched_process_exit".to_owned()),
            reason: None,
            gaps: Vec::new(),
        };
    }
    let mut status = attach_raw_tracepoints(ebpf, links, Family::Process.name(), &HOOKS);
    if let Err(why) = classic {
        match status.reason.as_mut() {
            Some(reason) => *reason = format!("classic tracepoint: {why}; {reason}"),
            // Counting on the fallback, which a kernel that runs tracepoint
            // callbacks preemptibly may skip (counted as program_missed).
            None => log::warn!(
                "process: the classic sched_process_exit tracepoint failed ({why}); counting exits on the raw tracepoint"
            ),
        }
    }
    status
}

fn attach_classic(ebpf: &mut Ebpf, links: &mut Links, mounts: &Mounts) -> Result<(), String> {
    // Another family may have mounted it since `mounts` was read.
    if !Mounts::current().map_or(mounts.tracefs_ready(), |now| now.tracefs_ready()) {
        mount_tracefs().map_err(|e| {
            format!("tracefs is not mounted and mounting it failed ({e}); mount it: `mount -t tracefs tracefs /sys/kernel/tracing`")
        })?;
    }
    let result = (|| {
        let program: &mut TracePoint = program(ebpf, CLASSIC)?.try_into()?;
        program.load()?;
        links.tracepoint(program, CLASSIC, "sched", "sched_process_exit")
    })();
    if result.is_err() {
        unload(ebpf, links, [CLASSIC]);
    }
    result.map_err(|e| explain(&e))
}

pub(super) fn read(ebpf: &Ebpf) -> Result<ProcessReading, MapError> {
    let mut reading = ProcessReading::default();
    let exits: PerCpuHashMap<&MapData, ExitKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "PROC_EXITS")?)?;
    for item in exits.iter() {
        let (key, values) = item?;
        reading
            .exits
            .insert((key.cgroup_id, key.how, key.code), values.iter().sum());
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "PROC_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// The signal's name (`SIGSEGV`), or `SIG<n>`; numbers are those of x86_64
/// and aarch64, which agree on 1–31.
pub fn signal_name(signal: u32) -> String {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match NAMES.get(signal as usize) {
        Some(name) if !name.is_empty() => (*name).to_owned(),
        _ => format!("SIG{signal}"),
    }
}

/// The process family's user side in this layer.
pub(super) struct Probe;

impl CgroupKey for ExitKey {
    type Value = u64;
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// The maps keyed by cgroup, with their key types.
const CGROUP_MAPS: [(&str, Forget); 1] = [("PROC_EXITS", forget::<ExitKey> as Forget)];

impl FamilyProbe for Probe {
    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        attach(cx.ebpf, cx.links, &cx.setup.offsets, cx.mounts)
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.process = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.process.loss
    }

    fn cgroup_maps(&self) -> &'static [(&'static str, Forget)] {
        &CGROUP_MAPS
    }

    fn cgroup_ids(&self, reading: &Reading, ids: &mut HashSet<u64>) {
        ids.extend(reading.process.exits.keys().map(|k| k.0));
    }

    fn retain_cgroups(&self, reading: &mut Reading, keep: &dyn Fn(u64) -> bool) {
        reading.process.exits.retain(|k, _| keep(k.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "SIG40");
        assert_eq!(signal_name(0), "SIG0");
    }
}
