//! Plain types that the probes hand to everything else: what one window saw.
//! Exporters and the CLI only ever see these.

pub mod cgroup;
pub mod explain;
pub mod host;
pub mod irq;
pub mod overhead;
pub mod probe;
pub mod sched;
pub mod slo;
pub mod tcp;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use sonde_slo::Histogram;

pub use cgroup::{CgroupRef, Owner};
pub use host::{Pressure, Psi, PsiLine, Throttling};
pub use overhead::{Overhead, ProbeCost};
pub use probe::{reasons, Gap, ProbeState, ProbeStatus};

/// One window of signals: deltas between two readings of the kernel maps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Start of the window, Unix time in nanoseconds.
    pub window_start_unix_ns: u64,
    /// End of the window, Unix time in nanoseconds.
    pub window_end_unix_ns: u64,
    /// Window length in seconds.
    pub window_secs: f64,
    /// State of every probe family during the window.
    pub probes: Vec<ProbeStatus>,
    /// `false` when anything was lost or a probe was not attached: the
    /// window's SLIs are then a lower bound, never a clean figure.
    pub complete: bool,
    /// Every counted loss in the window, zero counts included.
    pub losses: Vec<LossRecord>,
    /// Of `losses`, those counted against the cgroup whose events they were
    /// (map-full drops of the syscall, sched, memory and process families).
    pub losses_by_cgroup: Vec<CgroupLoss>,
    /// Of `losses` that are counted by cgroup, those no cgroup could be
    /// named for (the kernel's table of losses by cgroup was full): they
    /// make every SLO of the family incomplete.
    pub losses_unattributed: Vec<LossRecord>,
    /// Series whose cgroup could not be resolved to a path (it vanished
    /// first): they are kept, under owner `unknown`, and counted here.
    pub unattributed_series: u64,
    /// Syscall signals per cgroup, busiest cgroup first.
    pub syscalls: Vec<CgroupSyscalls>,
    /// Run-queue latency (runnable → running) per cgroup, most waited first.
    pub runqueue: Vec<CgroupLatency>,
    /// Run-queue wait per cgroup by who held the CPU when each wait ended,
    /// most waited first.
    pub runqueue_holders: Vec<sched::CgroupHolders>,
    /// Block I/O per (device, operation).
    pub block: Vec<DeviceIo>,
    /// Reclaim stalls (allocations that had to reclaim memory first) per cgroup.
    pub reclaim: Vec<CgroupLatency>,
    /// OOM kills per cgroup of the victim.
    pub oom_kills: Vec<CgroupCount>,
    /// Process terminations by signal and non-zero exits per cgroup.
    pub exits: Vec<CgroupExits>,
    /// Rare events of the window (OOM kills, crashes), oldest first.
    pub events: Vec<EventRecord>,
    /// TCP: connects, retransmits, resets, accepts, drops, the namespace
    /// check, and the connections behind resets and failed connects.
    pub tcp: tcp::TcpWindow,
    /// Interrupts: time in hard IRQ handlers and softirqs per CPU, vector
    /// and IRQ, and the check against `/proc/softirqs` and
    /// `/proc/interrupts`.
    pub irq: irq::IrqWindow,
    /// The node's pressure stall information at the end of the window.
    pub node_pressure: Pressure,
    /// PSI and CPU throttling of the cgroups seen in the window.
    pub cgroups: Vec<CgroupHost>,
    /// The configured SLOs after this window (empty without a config).
    pub slos: Vec<slo::SloStatus>,
    /// Block requests that failed in the window, oldest first.
    pub io_errors: Vec<IoErrorRecord>,
    /// On the first window after the agent restarted with pinned probes:
    /// how it joins the last run's last window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// What the window cost the node (the agent's CPU, its programs'
    /// kernel time) and what the overhead budget shed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<Overhead>,
}

/// How the first window after a restart joins the last run's windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// The sequence of the last run's last window, when this window starts
    /// where that one ended (the kernel counted through the restart).
    pub follows_sequence: Option<u64>,
    /// Why events of the restart are not all in this window, when they are
    /// not: the window is then incomplete.
    pub gap: Option<String>,
}

/// A block request that completed with an error. The completion runs in
/// no particular task's context: it names the device and the request.
#[derive(Debug, Clone, Serialize)]
pub struct IoErrorRecord {
    /// `io_error`.
    pub kind: &'static str,
    /// When, Unix time in nanoseconds.
    pub time_unix_ns: u64,
    /// Device name (`loop0`), or `major:minor`.
    pub device: String,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// read, write, flush, discard or other.
    pub op: &'static str,
    /// The errno name, e.g. `EIO`.
    pub error: String,
    /// First sector of the request.
    pub sector: u64,
}

/// What the kernel publishes about one cgroup in cgroupfs.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupHost {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Its pressure stall information (cgroup v2 `*.pressure`).
    pub pressure: Pressure,
    /// Its CPU throttling, when a CPU limit applies to it.
    pub throttling: Option<Throttling>,
    /// The network namespace of its first process (inode), when it has one.
    pub netns: Option<u32>,
    /// Whether that namespace is the host's (the one of PID 1), which every
    /// host-network process shares.
    pub netns_is_host: bool,
}

/// Block requests of one device and operation over the window.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceIo {
    /// Device name (`loop0`, `nvme0n1`), or `major:minor`.
    pub device: String,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// `read`, `write`, `flush`, `discard` or `other`.
    pub op: &'static str,
    /// Requests issued to the driver in the window.
    pub issued: u64,
    /// Requests completed in the window (failed ones included).
    pub completed: u64,
    /// Failed requests by errno name.
    pub errors: BTreeMap<String, u64>,
    /// Requests issued but not completed at the end of the window (since the
    /// probes attached).
    pub in_flight: u64,
    /// Median latency, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile latency, seconds.
    pub p99_secs: Option<f64>,
    /// Latency from issue to completion, OTLP exponential layout at scale 3.
    pub latency: Histogram,
}

/// A count of one cgroup over the window.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupCount {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Events in the window.
    pub count: u64,
}

/// How the processes of one cgroup ended over the window (clean exits aside).
#[derive(Debug, Clone, Serialize)]
pub struct CgroupExits {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Processes ended by a crash signal (SIGSEGV, SIGBUS, SIGABRT, SIGILL,
    /// SIGFPE, SIGKILL).
    pub crashes: u64,
    /// Processes ended by any signal, by signal name.
    pub signals: BTreeMap<String, u64>,
    /// Processes that exited with a non-zero status.
    pub nonzero_exits: u64,
    /// Non-zero exits by status.
    pub exit_statuses: BTreeMap<u32, u64>,
}

impl CgroupExits {
    /// No terminations yet, for `cgroup`.
    pub fn new(cgroup: CgroupRef) -> Self {
        Self {
            cgroup,
            crashes: 0,
            signals: BTreeMap::new(),
            nonzero_exits: 0,
            exit_statuses: BTreeMap::new(),
        }
    }
}

/// An event kind, one of [`EVENT_KINDS`]. An alias rather than the plain
/// type in the field: serde's derive would otherwise demand `'de: 'static`
/// of every deserializer for a `&'static str` field.
pub type EventKind = &'static str;

/// The kinds of [`EventRecord`].
pub const EVENT_KINDS: [&str; 2] = ["oom_kill", "crash"];

/// The kinds of TCP events ([`tcp::TcpEventRecord`]).
pub const TCP_EVENT_KINDS: [&str; 3] = ["reset_sent", "reset_received", "connect_failed"];

/// Every kind `sonde events` streams (the last: [`IoErrorRecord`]).
pub const ALL_EVENT_KINDS: [&str; 6] = [
    EVENT_KINDS[0],
    EVENT_KINDS[1],
    TCP_EVENT_KINDS[0],
    TCP_EVENT_KINDS[1],
    TCP_EVENT_KINDS[2],
    "io_error",
];

/// One rare event. Deserializable too: clients of the agent's local socket
/// (`sonde events --attach`) read it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// `oom_kill` or `crash` (one of [`EVENT_KINDS`]).
    #[serde(deserialize_with = "event_kind")]
    pub kind: EventKind,
    /// When, Unix time in nanoseconds.
    pub time_unix_ns: u64,
    /// Process id of the subject.
    pub pid: u32,
    /// Thread id of the subject.
    pub tid: u32,
    /// Command name of the subject.
    pub comm: String,
    /// The signal that ended a crashed process.
    pub signal: Option<String>,
    /// The process dumped core.
    pub core_dumped: bool,
    /// The cgroup is that of the task that triggered the event (the kernel's
    /// hook did not name the subject's).
    pub cgroup_of_trigger: bool,
    /// The subject's cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
}

/// Reads an event kind back as the static name this build knows; a kind
/// from a newer agent reads as `other` rather than failing the stream.
fn event_kind<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(d)?;
    Ok(EVENT_KINDS
        .iter()
        .copied()
        .find(|k| *k == name)
        .unwrap_or("other"))
}

/// A latency histogram of one cgroup over the window.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupLatency {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Samples.
    pub count: u64,
    /// Sum of the samples in seconds, estimated from the buckets (±4.4 %).
    pub sum_secs: f64,
    /// Median, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile, seconds.
    pub p99_secs: Option<f64>,
    /// The histogram, OTLP exponential layout at scale 3.
    pub latency: Histogram,
}

impl CgroupLatency {
    /// Derives the summary of `latency`.
    pub fn new(cgroup: CgroupRef, latency: Histogram) -> Self {
        Self {
            cgroup,
            count: latency.count(),
            sum_secs: latency.estimated_sum(),
            p50_secs: latency.quantile(0.5),
            p99_secs: latency.quantile(0.99),
            latency,
        }
    }
}

/// Events of one cgroup that the kernel lost, for one reason, in one probe
/// (map-full drops, counted against the cgroup they were for).
#[derive(Debug, Clone, Serialize)]
pub struct CgroupLoss {
    /// The cgroup whose events were lost, and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Probe family.
    pub probe: &'static str,
    /// Why, as in `LossRecord::reason`.
    pub reason: &'static str,
    /// Events lost in the window.
    pub count: u64,
}

/// A count of events lost at one stage, for one reason, in one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LossRecord {
    /// Where: `kernel` (in the probes), `userspace`, ...
    pub stage: &'static str,
    /// Probe family.
    pub probe: &'static str,
    /// Why, as a stable snake_case name.
    pub reason: &'static str,
    /// Events lost in the window.
    pub count: u64,
}

/// Syscall signals of one cgroup.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupSyscalls {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Calls completed in the window, all syscalls.
    pub calls: u64,
    /// Failed calls in the window, all syscalls.
    pub errors: u64,
    /// Per syscall, busiest first.
    pub syscalls: Vec<SyscallSeries>,
}

/// One syscall's SLIs in one cgroup over the window.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallSeries {
    /// Name from the architecture's table, or `syscall_<nr>`.
    pub name: String,
    /// Architecture-specific number.
    pub nr: u32,
    /// Calls completed.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls per second.
    pub rate_per_sec: f64,
    /// `errors / calls`, 0 when there were no calls.
    pub error_ratio: f64,
    /// Median latency in seconds (bucket estimate, within 4.4 %).
    pub p50_secs: Option<f64>,
    /// 99th percentile latency in seconds (bucket estimate, within 4.4 %).
    pub p99_secs: Option<f64>,
    /// Failures by errno name, most frequent first in human output.
    pub errnos: BTreeMap<String, u64>,
    /// Latency histogram in seconds, OTLP exponential layout at scale 3.
    pub latency: Histogram,
}

impl SyscallSeries {
    /// Builds a series and its derived SLIs from the window's raw counts.
    pub fn new(
        name: String,
        nr: u32,
        latency: Histogram,
        errnos: BTreeMap<String, u64>,
        window_secs: f64,
    ) -> Self {
        // Calls are the latency samples: a sum over windows stays exact.
        // Failures whose sample found the latency map full are counted in
        // `errors` only (the error SLO takes them into its total).
        let calls = latency.count();
        let errors = errnos.values().sum();
        Self {
            name,
            nr,
            calls,
            errors,
            rate_per_sec: if window_secs > 0.0 {
                calls as f64 / window_secs
            } else {
                0.0
            },
            error_ratio: if calls > 0 {
                errors as f64 / calls as f64
            } else {
                0.0
            },
            p50_secs: latency.quantile(0.5),
            p99_secs: latency.quantile(0.99),
            errnos,
            latency,
        }
    }
}

impl Snapshot {
    /// The syscall series of the cgroup with id `cgroup_id`, by name.
    pub fn syscall(&self, cgroup_id: u64, name: &str) -> Option<&SyscallSeries> {
        self.syscalls
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)?
            .syscalls
            .iter()
            .find(|s| s.name == name)
    }

    /// The run-queue latency of cgroup `cgroup_id`.
    pub fn runqueue(&self, cgroup_id: u64) -> Option<&CgroupLatency> {
        self.runqueue
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The exits of cgroup `cgroup_id`.
    pub fn exits(&self, cgroup_id: u64) -> Option<&CgroupExits> {
        self.exits.iter().find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The OOM kills of cgroup `cgroup_id` (0 when none).
    pub fn oom_kills(&self, cgroup_id: u64) -> u64 {
        self.oom_kills
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
            .map_or(0, |c| c.count)
    }

    /// Block I/O of device `name` for operation `op`.
    pub fn device_io(&self, name: &str, op: &str) -> Option<&DeviceIo> {
        self.block.iter().find(|d| d.device == name && d.op == op)
    }

    /// PSI and throttling of cgroup `cgroup_id`.
    pub fn cgroup_host(&self, cgroup_id: u64) -> Option<&CgroupHost> {
        self.cgroups
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The TCP signals of cgroup `cgroup_id`.
    pub fn tcp_cgroup(&self, cgroup_id: u64) -> Option<&tcp::CgroupTcp> {
        self.tcp
            .cgroups
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The TCP counts and check of network namespace `netns`.
    pub fn tcp_netns(&self, netns: u32) -> Option<&tcp::NetnsTcp> {
        self.tcp.namespaces.iter().find(|n| n.netns == netns)
    }

    /// Packets dropped in network namespace `netns` under drop reason `reason`.
    pub fn drops(&self, netns: u32, reason: &str) -> u64 {
        self.tcp
            .drops
            .iter()
            .find(|d| d.netns == netns)
            .and_then(|d| d.reasons.get(reason).copied())
            .unwrap_or(0)
    }

    /// Records whether the window follows a stretch whose kernel events no
    /// window holds (the first window of an agent that took over from a
    /// stopped one, without pinned probes to resume from): the loss record
    /// `agent/restart_gap` counts one such stretch, and the window is then
    /// incomplete. The record is there, zero or not, in every window.
    pub fn flag_restart_gap(&mut self, gap: bool) {
        self.losses.push(LossRecord {
            stage: "agent",
            probe: "all",
            reason: "restart_gap",
            count: u64::from(gap),
        });
        if gap {
            self.complete = false;
        }
    }

    /// Total events lost in the window.
    pub fn lost(&self) -> u64 {
        self.losses.iter().map(|l| l.count).sum()
    }
}
