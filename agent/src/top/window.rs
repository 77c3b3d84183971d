//! The part of a window that `sonde top` shows, read back from the JSON every
//! window has (`sonde agent --json`, the local socket's `window` frames).
//! Standalone `sonde top` goes through the same JSON, so there is one path
//! from a window to the rows whether the window came from this process's
//! probes or from an agent's socket.
//!
//! Every field is required (no `#[serde(default)]`): a field renamed or
//! removed in `Snapshot` then fails to read, here and in the tests that feed
//! real windows to `top`, instead of reading as zero.
//!
//! The cgroup fields are spelled out in each type rather than flattened:
//! serde's `flatten` buffers the whole object and then cannot read the
//! histograms' integer map keys back. The families' header figures
//! (`model::TopParts`) are flattened all the same: they read only the keys
//! this window has no field for (so a family's `TopPart` cannot read
//! `syscalls` or `tcp`), and never a histogram.

use std::collections::BTreeMap;

use serde::Deserialize;
use sonde_slo::Histogram;

use crate::attribution::Owner;

/// One closed window.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Window {
    /// End of the window, Unix ns.
    pub window_end_unix_ns: u64,
    /// Length, seconds.
    pub window_secs: f64,
    /// Nothing lost, every probe attached.
    pub complete: bool,
    /// Loss counters.
    pub losses: Vec<Loss>,
    /// Probe states.
    pub probes: Vec<Probe>,
    /// Syscalls per cgroup.
    pub syscalls: Vec<Syscalls>,
    /// Run-queue latency per cgroup.
    pub runqueue: Vec<Latency>,
    /// Run-queue wait per cgroup by holder.
    pub runqueue_holders: Vec<crate::model::sched::CgroupHolders>,
    /// OOM kills per cgroup.
    pub oom_kills: Vec<Count>,
    /// Crashes and non-zero exits per cgroup.
    pub exits: Vec<Exits>,
    /// TCP.
    pub tcp: Tcp,
    /// What each family adds to the node's header.
    #[serde(flatten)]
    pub families: crate::model::TopParts,
    /// The node's PSI.
    pub node_pressure: Pressure,
    /// PSI and throttling per cgroup.
    pub cgroups: Vec<CgroupHost>,
    /// Block I/O per device and operation.
    pub block: Vec<Block>,
    /// The agent's SLOs after the window (empty without a config, and
    /// from an agent that predates them).
    pub slos: Vec<crate::model::slo::SloStatus>,
}

/// A loss counter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Loss {
    /// Events lost in the window.
    pub count: u64,
}

/// A probe family's state.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Probe {
    /// Family.
    pub probe: String,
    /// `attached`, `degraded`, `unavailable`.
    pub state: String,
}

/// Syscalls of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Syscalls {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: Owner,
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Per syscall.
    pub syscalls: Vec<Syscall>,
}

/// One syscall of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Syscall {
    /// Latency.
    pub latency: Histogram,
}

/// A latency histogram of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: Owner,
    /// The histogram.
    pub latency: Histogram,
}

/// A count of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Count {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: Owner,
    /// The count.
    pub count: u64,
}

/// Terminations of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct Exits {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: Owner,
    /// Crashes by signal.
    pub crashes: u64,
}

/// TCP of the window.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Tcp {
    /// Per cgroup.
    pub cgroups: Vec<CgroupTcp>,
    /// Of no known cgroup.
    pub node: TcpCounts,
}

/// Retransmits and resets.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct TcpCounts {
    /// Segments retransmitted.
    pub retransmit_segments: u64,
    /// Resets sent.
    pub resets_sent: u64,
    /// Resets received.
    pub resets_received: u64,
}

/// TCP of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct CgroupTcp {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: Owner,
    /// Completed connects.
    pub connects: u64,
    /// Connect latency.
    pub connect_latency: Histogram,
    /// Failed connects by reason.
    pub connect_failures: BTreeMap<String, u64>,
    /// Segments retransmitted.
    pub retransmit_segments: u64,
    /// Resets sent.
    pub resets_sent: u64,
    /// Resets received.
    pub resets_received: u64,
}

/// One PSI line.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PsiLine {
    /// Percent of the last 10 s.
    pub avg10: f64,
}

/// PSI of one resource.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiLine,
}

/// PSI of cpu, memory, io.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Pressure {
    /// CPU.
    pub cpu: Option<Psi>,
    /// Memory.
    pub memory: Option<Psi>,
    /// I/O.
    pub io: Option<Psi>,
}

/// CPU throttling counters (cumulative).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Throttling {
    /// Enforcement periods with runnable tasks.
    pub periods: u64,
    /// Periods throttled.
    pub throttled_periods: u64,
}

/// PSI and throttling of one cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct CgroupHost {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Its path.
    pub cgroup_path: Option<String>,
    /// Its owner.
    pub owner: Owner,
    /// PSI.
    pub pressure: Pressure,
    /// Throttling, when a CPU limit applies.
    pub throttling: Option<Throttling>,
}

/// Block I/O of one device and operation.
#[derive(Debug, Clone, Deserialize)]
pub struct Block {
    /// Completed requests.
    pub completed: u64,
    /// Failed requests by errno.
    pub errors: BTreeMap<String, u64>,
    /// Latency.
    pub latency: Histogram,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reads_back_and_a_missing_field_is_refused() {
        let full = serde_json::to_value(crate::model::Snapshot::default()).unwrap();
        assert!(Window::from_json(full.clone()).is_ok());
        for field in [
            "syscalls",
            "runqueue",
            "runqueue_holders",
            "tcp",
            "irq",
            "node_pressure",
            "complete",
            "slos",
        ] {
            let mut renamed = full.clone();
            let value = renamed.as_object_mut().unwrap().remove(field).unwrap();
            renamed
                .as_object_mut()
                .unwrap()
                .insert(format!("{field}_renamed"), value);
            let err = Window::from_json(renamed).unwrap_err().to_string();
            assert!(err.contains(&format!("missing field `{field}`")), "{err}");
        }
    }
}
