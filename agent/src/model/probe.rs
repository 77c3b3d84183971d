//! The state of each probe family, as the probes report it.

use serde::{Deserialize, Serialize};
use sonde_common::family::Family;

/// Whether a probe family is counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// What a degraded family does not count, by name (the reason says it
    /// in words). Each should follow from a kernel feature that doctor
    /// reports missing (`kernel_features`); vm-test's table of
    /// expectations checks that it does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}

impl ProbeStatus {
    /// The family this is the status of; `None` for what is not a family
    /// (the host's /proc and cgroupfs readings, the benchmark's floor).
    pub fn family(&self) -> Option<Family> {
        Family::from_name(self.probe)
    }
}

/// Something a degraded family does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gap {
    /// tcp: resets sent with no socket (to a closed port).
    TcpResetsWithoutSocket,
    /// tcp: SYN-ACK retransmits.
    TcpSynackRetransmits,
    /// tcp: packet drops by reason.
    TcpDrops,
    /// tcp: drops at a listening socket (which listener refused them).
    TcpListenerDrops,
    /// tcp: listen overflows and failed handshakes per port.
    TcpListenOverflows,
    /// memory: reclaim forced by a cgroup's limit.
    MemoryCgroupReclaim,
}

/// Why the families are not attached, for an error line.
pub fn reasons(statuses: &[ProbeStatus]) -> String {
    statuses
        .iter()
        .filter_map(|s| s.reason.as_deref().map(|r| format!("{}: {r}", s.probe)))
        .collect::<Vec<_>>()
        .join("; ")
}
