//! Human-readable tables shared by `snapshot` and `agent`.

use std::fmt::Write as _;

use crate::{
    model::Snapshot,
    probes::{ProbeState, ProbeStatus},
};

/// `syscalls=attached(raw_tracepoint:...)`, one entry per family.
pub(super) fn statuses_line(statuses: &[ProbeStatus]) -> String {
    statuses
        .iter()
        .map(|s| match s.state {
            ProbeState::Attached => {
                format!("{}=attached({})", s.probe, s.hook.as_deref().unwrap_or("?"))
            }
            ProbeState::Degraded => format!(
                "{}=degraded({})",
                s.probe,
                s.reason.as_deref().unwrap_or("?")
            ),
            ProbeState::Unavailable => format!(
                "{}=unavailable({})",
                s.probe,
                s.reason.as_deref().unwrap_or("?")
            ),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why the families are not attached, for an error line.
pub(super) fn reasons(statuses: &[ProbeStatus]) -> String {
    statuses
        .iter()
        .filter_map(|s| s.reason.as_deref().map(|r| format!("{}: {r}", s.probe)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A duration in seconds with a readable unit.
pub(super) fn secs(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1e-6 => format!("{:.0}ns", s * 1e9),
        Some(s) if s < 1e-3 => format!("{:.1}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// The snapshot as a table: per cgroup, its busiest syscalls.
pub(super) fn snapshot(s: &Snapshot, top: usize) -> String {
    let mut out = String::new();
    let lost = s.lost();
    let _ = writeln!(
        out,
        "window {:.2}s  {}  {}",
        s.window_secs,
        statuses_line(&s.probes),
        if s.complete {
            "complete".to_owned()
        } else {
            format!("INCOMPLETE ({lost} events lost)")
        }
    );
    for l in s.losses.iter().filter(|l| l.count > 0) {
        let _ = writeln!(
            out,
            "  lost {} in {}/{}: {}",
            l.count, l.stage, l.probe, l.reason
        );
    }
    let _ = writeln!(
        out,
        "{:<44} {:<18} {:>10} {:>7} {:>8} {:>8}  TOP ERRNOS",
        "CGROUP", "SYSCALL", "RATE/s", "ERR%", "P50", "P99"
    );
    for cg in &s.syscalls {
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
    latencies(&mut out, "RUN QUEUE WAIT (cgroup)", &s.runqueue, top);
    out
}

/// Per-cgroup latency histograms as a table, largest total first.
pub(super) fn latencies(
    out: &mut String,
    title: &str,
    rows: &[crate::model::CgroupLatency],
    top: usize,
) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>10} {:>8} {:>8}",
        title, "COUNT", "TOTAL", "P50", "P99"
    );
    for row in rows.iter().take(top) {
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>10} {:>8} {:>8}",
            truncate_left(&cgroup_label(&row.cgroup), 44),
            row.count,
            secs(Some(row.sum_secs)),
            secs(row.p50_secs),
            secs(row.p99_secs)
        );
    }
}

fn cgroup_label(c: &crate::attribution::CgroupRef) -> String {
    c.cgroup_path
        .clone()
        .unwrap_or_else(|| format!("<cgroup {}>", c.cgroup_id))
}

fn truncate_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        s.to_owned()
    } else {
        format!("…{}", s.chars().skip(n - width + 1).collect::<String>())
    }
}
