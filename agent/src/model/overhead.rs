//! What the agent cost the node in a window, and what its overhead budget
//! shed (the budget itself is `budget.rs`).

use serde::Serialize;
use sonde_common::family::Family;

/// A family's cost in one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeCost {
    /// Family (serialized as its name).
    pub probe: Family,
    /// Time in its kernel programs, as a share of one core.
    pub cpu_utilization: f64,
    /// Program runs per second.
    pub runs_per_second: f64,
}

/// What one window cost, and what the budget did about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overhead {
    /// The agent's own CPU time (user and system), as a share of one core.
    pub agent_cpu_utilization: f64,
    /// Each attached family's kernel cost (estimated from a sample); empty
    /// when the kernel's statistics are unavailable.
    pub probes: Vec<ProbeCost>,
    /// Why the kernel's cost is not measured, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_unmeasured: Option<String>,
    /// The budget, in percent of one core, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<f64>,
    /// Families shed during this window to stay within it, in the order
    /// they were shed.
    pub shed: Vec<Family>,
}

impl Overhead {
    /// The whole cost in percent of one core.
    pub fn percent_of_core(&self) -> f64 {
        100.0
            * (self.agent_cpu_utilization
                + self.probes.iter().map(|p| p.cpu_utilization).sum::<f64>())
    }
}
