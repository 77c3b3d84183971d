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
}
