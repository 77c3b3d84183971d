//! Syscall family: loads and attaches `agent-ebpf/src/syscalls.rs` and reads
//! its maps into cumulative per-(cgroup, syscall) histograms and per-errno
//! failure counts.

// Both tables are always compiled so that each is tested on any host.
pub mod aarch64;
pub mod errno;
pub mod x86_64;

use super::{
    family::{Attach, FamilyProbe},
    gone::{forget, CgroupKey, Forget},
    Reading, Setup,
};
use std::collections::HashSet;
use std::{borrow::Cow, collections::HashMap};

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use sonde_common::family::Family;
use sonde_common::syscalls::{loss, SyscallErrKey, SyscallHistKey};
use sonde_slo::Histogram;

use super::{
    attach_raw_tracepoints, explain, map, program, read_losses, unload, Links, ProbeState,
    ProbeStatus,
};
use crate::host::{
    btf::Btf,
    mounts::{mount_tracefs, Mounts},
};

#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

/// Hooks of the preferred path, as (program, raw tracepoint).
const HOOKS: [(&str, &str); 2] = [("syscall_enter", "sys_enter"), ("syscall_exit", "sys_exit")];

/// The same hooks with empty programs (benchmarks only).
pub(super) const FLOOR_HOOKS: [(&str, &str); 2] =
    [("floor_enter", "sys_enter"), ("floor_exit", "sys_exit")];

/// Syscalls that never return, by architecture (their exits never fire).
#[cfg(target_arch = "x86_64")]
const NR_EXIT: (u32, u32) = (60, 231);
#[cfg(target_arch = "aarch64")]
const NR_EXIT: (u32, u32) = (93, 94);

/// Which kernel hook feeds the syscall family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallHook {
    /// Raw tracepoints, else classic tracepoints.
    #[default]
    Auto,
    /// Raw tracepoints `sys_enter` / `sys_exit` (no tracefs needed).
    RawTracepoint,
    /// Classic tracepoints `raw_syscalls:sys_enter` / `sys_exit` (tracefs).
    Tracepoint,
}

/// The syscall's name on this architecture, or `syscall_<nr>`.
pub fn name(nr: u32) -> Cow<'static, str> {
    match arch::NAMES.get(nr as usize) {
        Some(name) if !name.is_empty() => Cow::Borrowed(name),
        _ => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// The syscall number of `name` on this architecture.
pub fn number(name: &str) -> Option<u32> {
    arch::NAMES
        .iter()
        .position(|n| *n == name)
        .map(|nr| nr as u32)
}

/// The errno's name (`ENOENT`), or `E<n>`.
pub fn errno_name(errno: u32) -> Cow<'static, str> {
    match errno::NAMES.get(errno as usize) {
        Some(name) if !name.is_empty() => Cow::Borrowed(name),
        _ => Cow::Owned(format!("E{errno}")),
    }
}

/// Loss counters that are real losses, as (index, stable name);
/// `EXIT_UNMATCHED` is informational and left out.
pub const LOSSES: [(u32, &str); 3] = [
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::ERR_MAP_FULL, "errors_map_full"),
    (loss::START_COLLISION, "start_slot_collision"),
];

/// Cumulative syscall counts as the kernel holds them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SyscallReading {
    /// Latency histogram per (cgroup id, syscall nr).
    #[serde(with = "crate::probes::pairs")]
    pub latency: HashMap<(u64, u32), Histogram>,
    /// Failures per (cgroup id, syscall nr, errno).
    #[serde(with = "crate::probes::pairs")]
    pub errors: HashMap<(u64, u32, u32), u64>,
    /// Loss counters, indexed by `sonde_common::syscalls::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = SyscallReading;

/// Sets the read-only globals and map bounds before load.
pub(super) fn configure(loader: &mut EbpfLoader<'_>, options: &super::ProbeOptions) {
    loader
        .override_global("SYSCALL_NR_EXIT", &NR_EXIT.0, true)
        .override_global("SYSCALL_NR_EXIT_GROUP", &NR_EXIT.1, true);
    if let Some(n) = options.syscall_hist_max_entries {
        loader.map_max_entries("SYSCALL_HIST", n);
    }
    if let Some(n) = options.syscall_errors_max_entries {
        loader.map_max_entries("SYSCALL_ERRORS", n);
    }
}

/// Attaches the family with the requested hook, falling back from raw to
/// classic tracepoints under `Auto`.
/// Whether the kernel's syscall tracepoints may fault (`struct
/// tracepoint_ext` has `faultable`, in its BTF). Their callbacks then run
/// with preemption on, and a raw tracepoint program preempted on a CPU is
/// skipped by the kernel for every other syscall entering or leaving there
/// meanwhile: on 7.2 under vm-test, 805 and 2,298 of a loaded window's runs
/// (counted, as `program_missed`). The classic tracepoints' programs run
/// from the perf path, which keeps preemption off for syscall events.
pub fn faultable_tracepoints(btf: Option<&Btf>) -> bool {
    btf.is_some_and(|b| b.has_member("tracepoint_ext", "faultable"))
}

/// Whether the running kernel preempts kernel code (preemption model full
/// or lazy): only then can a raw tracepoint program on a faultable syscall
/// tracepoint be preempted (on 6.18 here, in a non-preempting mode, the raw
/// tracepoints lost nothing under load; on 7.2 in vm-test they lost
/// hundreds). The mode is `/sys/kernel/debug/sched/preempt` where debugfs is
/// mounted (the current one in parentheses), else what the kernel's
/// version string says of its build (`PREEMPT`, `PREEMPT_RT`; a
/// `PREEMPT_DYNAMIC` build without that file is taken as not preempting).
pub fn kernel_preempts() -> bool {
    let mode = std::fs::read_to_string("/sys/kernel/debug/sched/preempt").ok();
    let version = std::fs::read_to_string("/proc/sys/kernel/version").unwrap_or_default();
    preempts(mode.as_deref(), &version)
}

/// `kernel_preempts` on the texts of those two files.
pub fn preempts(debugfs_mode: Option<&str>, version: &str) -> bool {
    if let Some(mode) = debugfs_mode {
        let current = mode
            .split_whitespace()
            .find_map(|w| w.strip_prefix('(')?.strip_suffix(')'));
        return matches!(current, Some("full" | "lazy"));
    }
    version
        .split_whitespace()
        .any(|w| w == "PREEMPT" || w == "PREEMPT_RT")
}

pub(super) fn attach(
    ebpf: &mut Ebpf,
    links: &mut Links,
    hook: SyscallHook,
    mounts: &Mounts,
    faultable: bool,
) -> ProbeStatus {
    let mut failures = Vec::new();
    // Auto: raw tracepoints (cheaper per syscall) unless the kernel would
    // skip them (`faultable`: its syscall tracepoints may fault and it
    // preempts kernel code), then the classic ones; each the other's
    // fallback.
    let order: &[SyscallHook] = match hook {
        SyscallHook::Auto if faultable => &[SyscallHook::Tracepoint, SyscallHook::RawTracepoint],
        SyscallHook::Auto => &[SyscallHook::RawTracepoint, SyscallHook::Tracepoint],
        SyscallHook::RawTracepoint => &[SyscallHook::RawTracepoint],
        SyscallHook::Tracepoint => &[SyscallHook::Tracepoint],
    };
    for step in order {
        match step {
            SyscallHook::RawTracepoint => {
                let status = attach_raw_tracepoints(ebpf, links, Family::Syscalls.name(), &HOOKS);
                match status.reason {
                    None => return status,
                    Some(why) => failures.push(why),
                }
            }
            SyscallHook::Tracepoint => match attach_classic(ebpf, links, mounts) {
                Ok(()) => return attached("tracepoint:raw_syscalls/sys_enter+sys_exit"),
                Err(e) => failures.push(format!("classic tracepoints: {e}")),
            },
            SyscallHook::Auto => {}
        }
    }
    ProbeStatus {
        probe: Family::Syscalls.name(),
        state: ProbeState::Unavailable,
        hook: None,
        reason: Some(failures.join("; ")),
        gaps: Vec::new(),
    }
}

fn attached(hook: &str) -> ProbeStatus {
    ProbeStatus {
        probe: Family::Syscalls.name(),
        state: ProbeState::Attached,
        hook: Some(hook.to_owned()),
        reason: None,
        gaps: Vec::new(),
    }
}

fn attach_classic(ebpf: &mut Ebpf, links: &mut Links, mounts: &Mounts) -> Result<(), String> {
    if !mounts.tracefs_ready() {
        mount_tracefs().map_err(|e| {
            format!("tracefs is not mounted and mounting it failed ({e}); mount it: `mount -t tracefs tracefs /sys/kernel/tracing`")
        })?;
    }
    let programs = ["syscall_ent_tp", "syscall_exit_tp"];
    let result = programs
        .iter()
        .zip(["sys_enter", "sys_exit"])
        .try_for_each(|(name, tp)| {
            let program: &mut TracePoint = program(ebpf, name)?.try_into()?;
            program.load()?;
            links.tracepoint(program, name, "raw_syscalls", tp)
        });
    if result.is_err() {
        unload(ebpf, links, programs);
    }
    result.map_err(|e| explain(&e))
}

/// Reads the family's maps: sums the per-CPU values of every key.
pub(super) fn read(ebpf: &Ebpf) -> Result<SyscallReading, MapError> {
    let mut reading = SyscallReading::default();

    let hist: PerCpuHashMap<&MapData, SyscallHistKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "SYSCALL_HIST")?)?;
    for item in hist.iter() {
        let (key, values) = item?;
        let count: u64 = values.iter().sum();
        reading
            .latency
            .entry((key.cgroup_id, key.nr))
            .or_default()
            .record_kernel_bucket(key.bucket, count);
    }

    let errors: PerCpuHashMap<&MapData, SyscallErrKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "SYSCALL_ERRORS")?)?;
    for item in errors.iter() {
        let (key, values) = item?;
        *reading
            .errors
            .entry((key.cgroup_id, key.nr, key.errno))
            .or_default() += values.iter().sum::<u64>();
    }

    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "SYSCALL_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// The syscall family's user side in this layer.
pub(super) struct Probe;

impl CgroupKey for SyscallHistKey {
    type Value = u64;
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

impl CgroupKey for SyscallErrKey {
    type Value = u64;
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// The maps keyed by cgroup, with their key types.
const CGROUP_MAPS: [(&str, Forget); 2] = [
    ("SYSCALL_HIST", forget::<SyscallHistKey> as Forget),
    ("SYSCALL_ERRORS", forget::<SyscallErrKey> as Forget),
];

impl FamilyProbe for Probe {
    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, setup: &'a Setup) {
        configure(loader, &setup.options);
    }

    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        attach(
            cx.ebpf,
            cx.links,
            cx.setup.options.syscall_hook,
            cx.mounts,
            cx.setup.faultable_syscall_tracepoints,
        )
    }

    fn attach_floor(&self, ebpf: &mut Ebpf, links: &mut Links) -> Option<ProbeStatus> {
        Some(attach_raw_tracepoints(ebpf, links, "floor", &FLOOR_HOOKS))
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.syscalls = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.syscalls.loss
    }

    fn cgroup_maps(&self) -> &'static [(&'static str, Forget)] {
        &CGROUP_MAPS
    }

    fn cgroup_ids(&self, reading: &Reading, ids: &mut HashSet<u64>) {
        ids.extend(reading.syscalls.latency.keys().map(|k| k.0));
        ids.extend(reading.syscalls.errors.keys().map(|k| k.0));
    }

    fn retain_cgroups(&self, reading: &mut Reading, keep: &dyn Fn(u64) -> bool) {
        reading.syscalls.latency.retain(|k, _| keep(k.0));
        reading.syscalls.errors.retain(|k, _| keep(k.0));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn preemption_model_from_debugfs_else_the_version_string() {
        assert!(super::preempts(Some("none voluntary full (lazy)\n"), ""));
        assert!(super::preempts(Some("none voluntary (full) lazy\n"), ""));
        assert!(!super::preempts(
            Some("none (voluntary) full lazy\n"),
            "#1 SMP PREEMPT"
        ));
        assert!(super::preempts(None, "#1 SMP PREEMPT Debian"));
        assert!(super::preempts(None, "#1 SMP PREEMPT_RT Debian"));
        assert!(!super::preempts(
            None,
            "#1 SMP PREEMPT_DYNAMIC Debian 7.2.13-1"
        ));
    }

    use super::*;

    #[test]
    fn names_on_this_architecture() {
        assert_eq!(name(number("openat").unwrap()), "openat");
        assert_eq!(name(NR_EXIT.0), "exit");
        assert_eq!(name(NR_EXIT.1), "exit_group");
        assert_eq!(name(100_000), "syscall_100000");
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(4), "EINTR");
        assert_eq!(errno_name(999), "E999");
    }

    #[test]
    fn both_tables_agree_on_the_generic_numbers() {
        // aarch64 uses the generic table; x86_64 its own.
        let (arm, x86) = (&aarch64::NAMES, &x86_64::NAMES);
        assert_eq!(
            (arm[56], arm[101], arm[93], arm[94]),
            ("openat", "nanosleep", "exit", "exit_group")
        );
        assert_eq!(
            (x86[257], x86[35], x86[60], x86[231]),
            ("openat", "nanosleep", "exit", "exit_group")
        );
        assert_eq!((arm[63], x86[0]), ("read", "read"));
        // the unified numbers from 424 on are the same everywhere
        for nr in 424..470 {
            assert_eq!(arm[nr], x86[nr], "nr {nr}");
        }
        // no name twice within a table
        for table in [&arm[..], &x86[..]] {
            let mut names: Vec<&str> = table.iter().copied().filter(|n| !n.is_empty()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n);
        }
    }
}
