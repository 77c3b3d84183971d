//! The syscall family's part of a window: latency and failures per
//! (cgroup, syscall).

use std::fmt::Write as _;

use super::text::{secs, truncate_left, Text};

use std::collections::BTreeMap;

use serde::Serialize;
use sonde_slo::Histogram;

use super::CgroupRef;

/// The syscall family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Syscall signals per cgroup, busiest cgroup first.
    #[serde(rename = "syscalls")]
    pub cgroups: Vec<CgroupSyscalls>,
}

/// What `sonde top` reads of the family for its header: nothing.
pub type TopPart = super::top::NoHeader;

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

/// Per cgroup, its busiest syscalls: rate, errors, latency, top errnos.
impl Text for Part {
    fn text(&self, out: &mut String, top: usize) {
        let _ = writeln!(
            out,
            "{:<44} {:<18} {:>10} {:>7} {:>8} {:>8}  TOP ERRNOS",
            "CGROUP", "SYSCALL", "RATE/s", "ERR%", "P50", "P99"
        );
        for cg in &self.cgroups {
            let path = cg
                .cgroup
                .cgroup_path
                .clone()
                .unwrap_or_else(|| format!("<cgroup {}>", cg.cgroup.cgroup_id));
            for (i, series) in cg.syscalls.iter().take(top).enumerate() {
                let mut errnos: Vec<(&String, &u64)> = series.errnos.iter().collect();
                errnos.sort_by(|a, b| b.1.cmp(a.1));
                let errnos = errnos
                    .iter()
                    .take(3)
                    .map(|(n, c)| format!("{n}×{c}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    out,
                    "{:<44} {:<18} {:>10.1} {:>6.2}% {:>8} {:>8}  {}",
                    if i == 0 {
                        truncate_left(&path, 44)
                    } else {
                        String::new()
                    },
                    series.name,
                    series.rate_per_sec,
                    series.error_ratio * 100.0,
                    secs(series.p50_secs),
                    secs(series.p99_secs),
                    errnos
                );
            }
        }
    }
}
