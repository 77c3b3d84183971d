//! What the node and its cgroups report of themselves in /proc and cgroupfs:
//! pressure stall information and CPU throttling (read by `host/`).

use serde::Serialize;

/// One PSI line: the share of time some (or all) tasks stalled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PsiLine {
    /// Percent of the last 10 s.
    pub avg10: f64,
    /// Percent of the last 60 s.
    pub avg60: f64,
    /// Percent of the last 300 s.
    pub avg300: f64,
    /// Total stall time since boot (or cgroup creation), in microseconds.
    pub total_us: u64,
}

/// PSI of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once (absent for the node's cpu before 5.13).
    pub full: Option<PsiLine>,
}

/// PSI of cpu, memory and io; `None` where the file is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pressure {
    /// CPU.
    pub cpu: Option<Psi>,
    /// Memory.
    pub memory: Option<Psi>,
    /// Block I/O.
    pub io: Option<Psi>,
}

/// Throttling counters of one cgroup (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throttling {
    /// Enforcement periods that elapsed with runnable tasks.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Total time throttled, in nanoseconds.
    pub throttled_ns: u64,
    /// `cgroup2` or `cgroup1`: where the counters were read.
    pub source: &'static str,
}
