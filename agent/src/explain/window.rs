//! The part of a window that `sonde explain` reads, from the JSON every
//! window has (`sonde agent --json`, the local socket's `window` frames).
//! As in `top/window.rs`, every field is required: a field renamed in
//! `Snapshot` fails to read here (and in the tests that feed real windows
//! to explain) instead of reading as zero and explaining nothing. Only the
//! fields a rule reads are here.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{sched::CgroupHolders, slo::SloStatus, CgroupRef};

/// One closed window.
#[derive(Debug, Clone, Deserialize)]
pub struct Window {
    /// End of the window, Unix ns.
    pub window_end_unix_ns: u64,
    /// Length, seconds.
    pub window_secs: f64,
    /// Nothing lost, every probe attached.
    pub complete: bool,
    /// Run-queue wait per cgroup by holder.
    pub runqueue_holders: Vec<CgroupHolders>,
    /// Reclaim stalls per cgroup.
    pub reclaim: Vec<Latency>,
    /// OOM kills per cgroup.
    pub oom_kills: Vec<Count>,
    /// Crashes and non-zero exits per cgroup.
    pub exits: Vec<Exits>,
    /// TCP.
    pub tcp: Tcp,
    /// Block I/O per device and operation.
    pub block: Vec<Block>,
    /// PSI and throttling per cgroup (cumulative counters).
    pub cgroups: Vec<CgroupHost>,
    /// The agent's SLOs after the window.
    pub slos: Vec<SloStatus>,
}

/// A latency summary of one cgroup (the histogram is not needed here).
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// The cgroup.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Samples.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_secs: f64,
}

/// A count of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Count {
    /// The cgroup.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Events.
    pub count: u64,
}

/// Terminations of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Exits {
    /// The cgroup.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Crashes.
    pub crashes: u64,
    /// By signal name.
    pub signals: BTreeMap<String, u64>,
}

/// TCP of the window.
#[derive(Debug, Clone, Deserialize)]
pub struct Tcp {
    /// Per cgroup.
    pub cgroups: Vec<CgroupTcp>,
    /// Packets dropped per network namespace.
    pub drops: Vec<NetnsDrops>,
}

/// Packets the kernel dropped in one network namespace.
#[derive(Debug, Clone, Deserialize)]
pub struct NetnsDrops {
    /// Namespace inode.
    pub netns: u32,
    /// All reasons.
    pub total: u64,
    /// By reason name.
    pub reasons: BTreeMap<String, u64>,
}

/// TCP of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct CgroupTcp {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: crate::model::Owner,
    /// Failed connects by reason.
    pub connect_failures: BTreeMap<String, u64>,
    /// Segments retransmitted.
    pub retransmit_segments: u64,
    /// Resets sent.
    pub resets_sent: u64,
    /// Resets received.
    pub resets_received: u64,
    /// Where failed connects went.
    pub failing_destinations: Vec<Destination>,
    /// Where retransmitted segments went.
    pub retransmit_destinations: Vec<crate::model::tcp::RetransmitDestination>,
}

impl CgroupTcp {
    /// Its cgroup as a reference.
    pub fn cgroup(&self) -> CgroupRef {
        CgroupRef {
            cgroup_id: self.cgroup_id,
            cgroup_path: self.cgroup_path.clone(),
            owner: self.owner.clone(),
        }
    }
}

/// A destination and its count.
#[derive(Debug, Clone, Deserialize)]
pub struct Destination {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Failed connects.
    pub failures: u64,
}

/// Block I/O of one device and operation.
#[derive(Debug, Clone, Deserialize)]
pub struct Block {
    /// Device name.
    pub device: String,
    /// Failed requests by errno.
    pub errors: BTreeMap<String, u64>,
    /// 99th percentile latency, seconds.
    pub p99_secs: Option<f64>,
}

/// PSI and throttling of one cgroup, cumulative.
#[derive(Debug, Clone, Deserialize)]
pub struct CgroupHost {
    /// The cgroup.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// PSI.
    pub pressure: Pressure,
    /// Throttling, when a CPU limit applies.
    pub throttling: Option<Throttling>,
    /// Its network namespace.
    pub netns: Option<u32>,
    /// Whether that is the host's.
    pub netns_is_host: bool,
}

/// PSI of cpu, memory, io.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Pressure {
    /// CPU.
    pub cpu: Option<Psi>,
    /// Memory.
    pub memory: Option<Psi>,
    /// I/O.
    pub io: Option<Psi>,
}

/// PSI of one resource.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiLine,
}

/// One PSI line.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct PsiLine {
    /// Stall time since the cgroup was made, microseconds.
    pub total_us: u64,
}

/// Throttling counters.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Throttling {
    /// Enforcement periods with runnable tasks.
    pub periods: u64,
    /// Periods throttled.
    pub throttled_periods: u64,
    /// Time throttled, ns.
    pub throttled_ns: u64,
}

impl Window {
    /// Reads a window from its JSON.
    pub fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// A window of this process's own sampler, through the same JSON.
    pub fn from_snapshot(snapshot: &crate::model::Snapshot) -> Result<Self, serde_json::Error> {
        Self::from_json(serde_json::to_value(snapshot)?)
    }
}
