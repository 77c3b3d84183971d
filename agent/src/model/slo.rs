//! Where each configured SLO stands after a window.

use serde::{Deserialize, Serialize};
use sonde_slo::slo::Evaluation;

/// One SLO after one window: the window's own counts, and the evaluation
/// over its history (budget, burn rates, alert state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SloStatus {
    /// The SLO's name (`slo.name`).
    pub name: String,
    /// What it counts, e.g. `syscall.errors`.
    pub signal: String,
    /// Target, percent.
    pub objective_percent: f64,
    /// Compliance window, days.
    pub window_days: f64,
    /// Latency SLOs: the threshold, milliseconds.
    pub threshold_ms: Option<f64>,
    /// Which series it sums (so that a view can show it on their rows).
    #[serde(default)]
    pub selector: sonde_slo::spec::Selector,
    /// Good events in this window.
    pub good: u64,
    /// Valid events in this window.
    pub total: u64,
    /// Whether this window saw everything the SLI depends on.
    pub complete: bool,
    /// Why not, when it did not (a loss, a probe not attached, a series
    /// not attributed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete_because: Vec<String>,
    /// Budget, burn rates and alert state over the history.
    pub evaluation: Evaluation,
    /// While an alert fires: the SLO explained over the agent's recent
    /// windows (`sonde explain --slo`), its verdict and top findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<super::explain::AlertExplanation>,
}

impl SloStatus {
    /// Burn rate per distinct alert window (seconds), shortest first.
    pub fn burn_by_window(&self) -> Vec<(u64, f64)> {
        self.evaluation.burn_by_window()
    }
}

/// `5m`, `1h`, `3d`: a window's label (`slo.window`), as PromQL writes it.
pub fn window_label(secs: u64) -> String {
    sonde_slo::rules::promql_duration(secs)
}
