//! Plain types that the probes hand to everything else: what one window saw.
//! Exporters and the CLI only ever see these.

use std::collections::BTreeMap;

use serde::Serialize;
use sonde_slo::Histogram;

pub use crate::attribution::CgroupRef;
use crate::probes::ProbeStatus;

/// One window of signals: deltas between two readings of the kernel maps.
#[derive(Debug, Clone, Serialize)]
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
    /// Series whose cgroup could not be resolved to a path (it vanished
    /// first): they are kept, under owner `unknown`, and counted here.
    pub unattributed_series: u64,
    /// Syscall signals per cgroup, busiest cgroup first.
    pub syscalls: Vec<CgroupSyscalls>,
    /// Run-queue latency (runnable → running) per cgroup, most waited first.
    pub runqueue: Vec<CgroupLatency>,
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

    /// Total events lost in the window.
    pub fn lost(&self) -> u64 {
        self.losses.iter().map(|l| l.count).sum()
    }
}
