//! The kernel programs: load, attach, read. This is the only module that
//! touches aya; it hands back plain readings (cumulative counts).
//!
//! One object holds every family's programs and maps. Each family attaches on
//! its own: a hook that is missing degrades that family, is reported in its
//! [`ProbeStatus`], and never stops the others.

pub mod block;
pub mod events;
pub mod memory;
pub mod process;
pub mod sched;
pub mod syscalls;
mod task;
pub mod tcp;

use aya::{
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint},
    Ebpf, EbpfLoader,
};
use serde::Serialize;

use sonde_common::hist::THRESHOLD_SLOTS;

use crate::host::{btf::Btf, mounts::Mounts, Capabilities};

/// The kernel programs, built by `build.rs` from `agent-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde"));

/// Whether a probe family is counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// Every program of the family is attached.
    Attached,
    /// Some programs are attached; the family counts less than it should.
    Degraded,
    /// Nothing of the family is attached.
    Unavailable,
}

/// A family's state, the hook it uses and, when not attached, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeStatus {
    /// Family name (`syscalls`, ...).
    pub probe: &'static str,
    /// Attached, degraded or unavailable.
    pub state: ProbeState,
    /// The hook in use, e.g. `raw_tracepoint:sys_enter+sys_exit`.
    pub hook: Option<String>,
    /// Why the family is degraded or unavailable, with the fix.
    pub reason: Option<String>,
}

/// Why the probes could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The process lacks the capabilities to load tracing programs.
    #[error(
        "no privilege to load eBPF programs (missing {}); run as root or grant the capabilities, e.g. `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep sonde`",
        missing.join(", ")
    )]
    NoPrivilege {
        /// Names of the missing capabilities.
        missing: Vec<&'static str>,
    },
    /// The capabilities could not be read.
    #[error("cannot read the process's capabilities from /proc/self/status")]
    Capabilities(#[source] std::io::Error),
    /// The kernel refused the object (maps or BTF).
    #[error("the kernel refused sonde's eBPF object; run `sonde doctor` for details")]
    Object(#[source] aya::EbpfError),
    /// This binary was built with `AYA_BUILD_SKIP=1`: it embeds no kernel
    /// programs (a build for the fuzz targets, which need only the parsers).
    #[error(
        "this sonde was built without its kernel programs (AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NoKernelPrograms,
}

/// The embedded object, or why there is none.
fn object() -> Result<&'static [u8], LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoKernelPrograms);
    }
    Ok(OBJECT)
}

/// Options for loading the probes.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Which hook the syscall family uses.
    pub syscall_hook: syscalls::SyscallHook,
    /// Which hook the scheduler family uses.
    pub sched_hook: sched::SchedHook,
    /// Bound of the syscall latency map, in (cgroup, syscall, bucket) keys;
    /// `None` keeps the built-in default.
    pub syscall_hist_max_entries: Option<u32>,
    /// Bound of the syscall failure map, in (cgroup, syscall, errno) keys.
    pub syscall_errors_max_entries: Option<u32>,
    /// Families to leave out (not even attached); empty runs them all.
    pub disabled: Vec<&'static str>,
    /// Exact SLO latency thresholds for the kernel: (bucket key, ns), at
    /// most one per bucket (`sonde_slo::spec::kernel_thresholds`).
    pub latency_thresholds_ns: Vec<(usize, u64)>,
}

/// Every family, in the order they are attached and reported.
pub const FAMILIES: [&str; 6] = [
    syscalls::PROBE,
    sched::PROBE,
    block::PROBE,
    memory::PROBE,
    process::PROBE,
    tcp::PROBE,
];

/// Cumulative counts of every family, as the kernel holds them now.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Syscall family.
    pub syscalls: syscalls::SyscallReading,
    /// Scheduler family.
    pub sched: sched::SchedReading,
    /// Block I/O family.
    pub block: block::BlockReading,
    /// Memory family.
    pub memory: memory::MemoryReading,
    /// Process family.
    pub process: process::ProcessReading,
    /// TCP family.
    pub tcp: tcp::TcpReading,
    /// Events that found the ring buffer full, per kind.
    pub event_loss: [u64; sonde_common::events::kind::COUNT as usize],
    /// Ring-buffer records that could not be decoded (cumulative).
    pub malformed_events: u64,
}

/// The loaded object and its attached families.
pub struct Probes {
    ebpf: Ebpf,
    // Owns the log ring buffer: dropping it breaks later program loads.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    statuses: Vec<ProbeStatus>,
    events: Option<RingBuf<MapData>>,
    malformed_events: u64,
    tcp_names: tcp::TcpNames,
    /// Families detached while running: their maps still hold what they
    /// counted before, and are still read.
    detached: Vec<&'static str>,
}

impl Probes {
    /// Loads the object and attaches every family it can.
    pub fn load(options: ProbeOptions) -> Result<Self, LoadError> {
        let caps = Capabilities::current().map_err(LoadError::Capabilities)?;
        let missing = caps.missing_for_tracing();
        if !missing.is_empty() {
            return Err(LoadError::NoPrivilege { missing });
        }
        raise_memlock_rlimit();

        let btf = match Btf::from_sys_fs() {
            Ok(Ok(btf)) => Some(btf),
            Ok(Err(e)) => {
                log::warn!("cannot parse the kernel's BTF: {e}");
                None
            }
            Err(e) => {
                log::debug!("no kernel BTF: {e}");
                None
            }
        };
        let offsets = task::offsets(btf.as_ref());
        let victim_is_task = memory::victim_arg_is_task(btf.as_ref());
        let tcp_setup = tcp::setup(btf.as_ref());
        // Done with our reading of BTF before aya parses it too: one at a time
        // keeps the agent's peak memory down.
        drop(btf);
        let mounts = Mounts::current().unwrap_or_default();
        let block_offsets = if options.disabled.contains(&block::PROBE) {
            Err("disabled".to_owned())
        } else {
            block::offsets(&mounts)
        };
        // Mounting tracefs for the block family changes what syscalls sees.
        let mounts = Mounts::current().unwrap_or(mounts);
        // aya's own view of the kernel's BTF: for relocations and tp_btf.
        let aya_btf = aya::Btf::from_sys_fs().ok();
        let mut loader = EbpfLoader::new();
        loader.btf(aya_btf.as_ref());
        let given = offsets.clone().unwrap_or_default();
        loader.override_global("TASK_OFFSETS", &given, true);
        let mut thresholds = [0u64; THRESHOLD_SLOTS];
        for &(slot, ns) in &options.latency_thresholds_ns {
            if let Some(t) = thresholds.get_mut(slot) {
                *t = ns;
            }
        }
        loader.override_global("LATENCY_THRESHOLDS_NS", &thresholds, true);
        syscalls::configure(&mut loader, &options);
        memory::configure(&mut loader, victim_is_task);
        block::configure(&mut loader, &block_offsets);
        tcp::configure(&mut loader, &tcp_setup);
        let mut ebpf = loader.load(object()?).map_err(LoadError::Object)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                log::debug!("kernel-side logging unavailable: {e}");
                None
            }
        };
        // A disabled family is left out entirely: it neither counts nor
        // makes a window incomplete.
        let statuses = FAMILIES
            .iter()
            .filter(|family| !options.disabled.contains(family))
            .map(|&family| match family {
                sched::PROBE => {
                    sched::attach(&mut ebpf, &offsets, aya_btf.as_ref(), options.sched_hook)
                }
                process::PROBE => process::attach(&mut ebpf, &offsets),
                tcp::PROBE => tcp::attach(&mut ebpf, &tcp_setup),
                block::PROBE => block::attach(&mut ebpf, &block_offsets),
                memory::PROBE => match &offsets {
                    Ok(_) => memory::attach(&mut ebpf),
                    Err(why) => unavailable(memory::PROBE, why.clone()),
                },
                _ => syscalls::attach(&mut ebpf, options.syscall_hook, &mounts),
            })
            .collect();
        drop(aya_btf);
        // Parsing the kernel's BTF (twice: aya's and ours) is the agent's
        // largest allocation; give the freed heap back to the system.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
        let events = match ebpf.take_map("EVENTS").map(RingBuf::try_from) {
            Some(Ok(ring)) => Some(ring),
            Some(Err(e)) => {
                log::warn!("event ring buffer unusable: {e}");
                None
            }
            None => None,
        };
        Ok(Self {
            ebpf,
            logger,
            statuses,
            events,
            malformed_events: 0,
            tcp_names: tcp_setup.names,
            detached: Vec::new(),
        })
    }

    /// The kernel's names of its drop and reset reasons.
    pub fn tcp_names(&self) -> &tcp::TcpNames {
        &self.tcp_names
    }

    /// The state of every family.
    pub fn statuses(&self) -> &[ProbeStatus] {
        &self.statuses
    }

    /// Detaches every program of `family` while the agent runs (an
    /// operator shedding its cost, say): from the next window on it counts
    /// nothing and is reported unavailable with `reason`, so every window
    /// and SLO that depends on it is marked incomplete. Returns false for a
    /// family that was not attached.
    pub fn detach(&mut self, family: &str, reason: &str) -> bool {
        let Some(status) = self
            .statuses
            .iter_mut()
            .find(|s| s.probe == family && s.state != ProbeState::Unavailable)
        else {
            return false;
        };
        let prefix = program_prefix(family);
        let names: Vec<String> = self
            .ebpf
            .programs()
            .map(|(name, _)| name.to_owned())
            .filter(|name| name.starts_with(prefix))
            .collect();
        unload(&mut self.ebpf, names.iter().map(String::as_str));
        status.state = ProbeState::Unavailable;
        status.reason = Some(format!("detached while running: {reason}"));
        self.detached.push(status.probe);
        log::warn!("{family} detached: {reason}");
        true
    }

    /// Whether at least one family is counting.
    pub fn any_attached(&self) -> bool {
        self.statuses
            .iter()
            .any(|s| s.state != ProbeState::Unavailable)
    }

    /// Reads every attached family's maps.
    pub fn read(&mut self) -> Result<Reading, aya::maps::MapError> {
        self.flush_logs();
        let mut reading = Reading::default();
        if self.attached(syscalls::PROBE) {
            reading.syscalls = syscalls::read(&self.ebpf)?;
        }
        if self.attached(sched::PROBE) {
            reading.sched = sched::read(&self.ebpf)?;
        }
        if self.attached(block::PROBE) {
            reading.block = block::read(&self.ebpf)?;
        }
        if self.attached(memory::PROBE) {
            reading.memory = memory::read(&self.ebpf)?;
        }
        if self.attached(process::PROBE) {
            reading.process = process::read(&self.ebpf)?;
        }
        if self.attached(tcp::PROBE) {
            reading.tcp = tcp::read(&self.ebpf)?;
        }
        let event_loss: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map(&self.ebpf, "EVENT_LOSS")?)?;
        reading.event_loss = events::read_loss(&event_loss)?;
        reading.malformed_events = self.malformed_events;
        Ok(reading)
    }

    /// Takes the events the kernel sent since the last call.
    pub fn drain_events(&mut self) -> Vec<events::KernelEvent> {
        let mut out = Vec::new();
        if let Some(ring) = self.events.as_mut() {
            self.malformed_events += events::drain(ring, &mut out);
        }
        out
    }

    /// Moves the kernel programs' diagnostics into the agent's log.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }

    /// Whether the family's maps hold counts: attached now, or before it
    /// was detached.
    fn attached(&self, probe: &str) -> bool {
        self.detached.contains(&probe)
            || self
                .statuses
                .iter()
                .any(|s| s.probe == probe && s.state != ProbeState::Unavailable)
    }

    /// Attaches empty programs on a family's hooks instead of sonde's own:
    /// the floor that any tracing on those hooks pays (benchmarks only).
    pub fn load_floor(family: &str) -> Result<Self, LoadError> {
        let mut ebpf = EbpfLoader::new()
            .load(object()?)
            .map_err(LoadError::Object)?;
        let statuses = vec![match family {
            sched::PROBE => sched::attach_floor(&mut ebpf),
            tcp::PROBE => attach_raw_tracepoints(&mut ebpf, "floor", &tcp::FLOOR_HOOKS),
            _ => attach_raw_tracepoints(&mut ebpf, "floor", &syscalls::FLOOR_HOOKS),
        }];
        Ok(Self {
            ebpf,
            logger: None,
            statuses,
            events: None,
            malformed_events: 0,
            tcp_names: tcp::TcpNames::default(),
            detached: Vec::new(),
        })
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use
/// memcg accounting. Raising it may be refused (no CAP_SYS_RESOURCE): then
/// only old kernels are affected, and their load error says so.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// Loads and attaches `hooks` (program, raw tracepoint) all or nothing.
pub(crate) fn attach_raw_tracepoints(
    ebpf: &mut Ebpf,
    probe: &'static str,
    hooks: &[(&str, &str)],
) -> ProbeStatus {
    let result = hooks.iter().try_for_each(|(name, tp)| {
        let program: &mut RawTracePoint = program(ebpf, name)?.try_into()?;
        program.load()?;
        program.attach(tp).map(drop)
    });
    match result {
        Ok(()) => ProbeStatus {
            probe,
            state: ProbeState::Attached,
            hook: Some(format!(
                "raw_tracepoint:{}",
                hooks
                    .iter()
                    .map(|(_, tp)| *tp)
                    .collect::<Vec<_>>()
                    .join("+")
            )),
            reason: None,
        },
        Err(e) => {
            unload(ebpf, hooks.iter().map(|(name, _)| *name));
            unavailable(probe, format!("raw tracepoints: {}", explain(&e)))
        }
    }
}

/// A family that is not counting, and why.
pub(crate) fn unavailable(probe: &'static str, reason: String) -> ProbeStatus {
    ProbeStatus {
        probe,
        state: ProbeState::Unavailable,
        hook: None,
        reason: Some(reason),
    }
}

pub(crate) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program, ProgramError> {
    ebpf.program_mut(name)
        .ok_or_else(|| ProgramError::InvalidName {
            name: name.to_owned(),
        })
}

/// Detaches and unloads programs after a partial attach.
/// The prefix of a family's kernel program names (`<family>_<hook>`).
fn program_prefix(family: &str) -> &'static str {
    match family {
        syscalls::PROBE => "syscall_",
        sched::PROBE => "sched_",
        block::PROBE => "blk_",
        memory::PROBE => "mem_",
        process::PROBE => "proc_",
        tcp::PROBE => "tcp_",
        _ => "\0", // matches no program
    }
}

pub(crate) fn unload<'a>(ebpf: &mut Ebpf, programs: impl IntoIterator<Item = &'a str>) {
    for name in programs {
        let result = match ebpf.program_mut(name) {
            Some(aya::programs::Program::RawTracePoint(p)) => p.unload(),
            Some(aya::programs::Program::TracePoint(p)) => p.unload(),
            Some(aya::programs::Program::BtfTracePoint(p)) => p.unload(),
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::debug!("unloading {name}: {e}");
        }
    }
}

/// A program error as one line with its likely cause and fix.
pub(crate) fn explain(e: &ProgramError) -> String {
    let text = error_chain(e);
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        " (no privilege: run as root or grant CAP_BPF and CAP_PERFMON)"
    } else if text.contains("No such file") || text.contains("ENOENT") {
        " (hook missing on this kernel)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

pub(crate) fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map, MapError> {
    ebpf.map(name).ok_or_else(|| MapError::InvalidName {
        name: name.to_owned(),
    })
}

/// Sums a per-CPU loss array into `out`.
pub(crate) fn read_losses(
    losses: &PerCpuArray<&MapData, u64>,
    out: &mut [u64],
) -> Result<(), MapError> {
    for (index, slot) in out.iter_mut().enumerate() {
        *slot = losses.get(&(index as u32), 0)?.iter().sum();
    }
    Ok(())
}

/// One line that names why a program failed, from aya's error chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// In-kernel run statistics of one loaded program (needs
/// `kernel.bpf_stats_enabled=1`, which itself adds ~100 ns per run on the
/// reference VM: use them for each program's share, not absolute cost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    /// Program name (as the kernel keeps it, at most 15 bytes).
    pub name: String,
    /// Kernel program id.
    pub id: u32,
    /// Runs counted while stats were enabled.
    pub run_count: u64,
    /// Time spent in the program while stats were enabled, in nanoseconds.
    pub run_time_ns: u64,
}

/// Run statistics of every loaded program whose name is in `names`, from
/// any process (the benchmark reads the agent's programs this way).
pub fn program_stats(names: &[&str]) -> Vec<ProgramStats> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|info| {
            let name = info.name_as_str()?.to_owned();
            names.contains(&name.as_str()).then(|| ProgramStats {
                name,
                id: info.id(),
                run_count: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
            })
        })
        .collect()
}
