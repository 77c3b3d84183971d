//! What `sonde explain` answers (see `crate::explain` for the rules): the
//! ranked findings for a target, and the short form an SLO alert carries.

use serde::{Deserialize, Serialize};

/// The answer: `{"target", "windows", "findings", "verdict"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// What was explained.
    pub target: TargetInfo,
    /// Over which windows.
    pub windows: Windows,
    /// Findings, highest score first; none below its noise floor.
    pub findings: Vec<Finding>,
    /// One sentence: the top finding, or that nothing was found.
    pub verdict: String,
}

/// The target as resolved in the windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// `slo`, `cgroup`, `pod` or `unit`.
    pub kind: String,
    /// Its name as given.
    pub name: String,
    /// The cgroups it took in these windows (paths).
    pub cgroups: Vec<String>,
    /// For an SLO: its events over the windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloEvents>,
}

/// An SLO's events over the windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloEvents {
    /// What it counts.
    pub signal: String,
    /// Good events.
    pub good: u64,
    /// Valid events.
    pub total: u64,
    /// Its objective, percent.
    pub objective_percent: f64,
}

/// The windows a finding set was drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    /// How many.
    pub count: usize,
    /// Their total length, seconds.
    pub seconds: f64,
    /// Start of the first, Unix ns.
    pub from_unix_ns: u64,
    /// End of the last, Unix ns.
    pub to_unix_ns: u64,
    /// Of them, those that lost data or had a probe down.
    pub incomplete: usize,
}

/// One ranked cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The cause, e.g. `cpu_contention`.
    pub kind: String,
    /// `tier + strength / (1 + strength)`; see the module docs.
    pub score: f64,
    /// What was measured, in `unit`.
    pub magnitude: f64,
    /// Its unit, e.g. `s/s` (seconds per second).
    pub unit: String,
    /// The share of the target's symptom this cause accounts for, where
    /// that can be computed (0..1).
    pub share: Option<f64>,
    /// Who or what caused it, heaviest first.
    pub culprits: Vec<Culprit>,
    /// The series and windows it rests on.
    pub evidence: Vec<Evidence>,
    /// One line a person reads.
    pub summary: String,
    /// Windows behind it that were incomplete: its figures are then lower
    /// bounds.
    pub incomplete_windows: usize,
}

/// A cause's culprit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    /// `cgroup`, `device`, `destination`, `signal` or `probe`.
    pub kind: String,
    /// Its name (a cgroup path, a device, `address:port`, ...).
    pub name: String,
    /// Its part of the magnitude, in the finding's unit.
    pub magnitude: f64,
    /// Its share of the finding's total, where there is one.
    pub share: Option<f64>,
}

/// A series a finding rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Metric name (docs/telemetry.md) or window field.
    pub series: String,
    /// The value over the windows.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Windows where the series had the target's data.
    pub windows: usize,
}

/// What a firing SLO alert carries: the verdict and the top findings of
/// the SLO explained over the agent's recent windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertExplanation {
    /// The verdict.
    pub verdict: String,
    /// The top findings (at most [`ALERT_FINDINGS`]), highest score first.
    pub findings: Vec<Finding>,
    /// Windows explained.
    pub windows: usize,
    /// Of them, those that lost data or had a probe down.
    pub incomplete_windows: usize,
}

/// Findings an alert carries.
pub const ALERT_FINDINGS: usize = 3;
