//! The window as text, for `sonde snapshot` and `sonde agent`'s output:
//! each family's part of the snapshot says itself ([`Text`], beside its
//! types in `<family>.rs`), with the helpers here. Pure: strings in,
//! strings out.

use std::fmt::Write as _;

use super::{CgroupLatency, CgroupRef, EventRecord};

/// A family's part of the snapshot as lines of text. `top`: at most that
/// many rows per table.
pub trait Text {
    /// Appends the part's tables to `out`; nothing when it saw nothing.
    fn text(&self, out: &mut String, top: usize);
}

/// A duration in seconds with a readable unit.
pub fn secs(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1e-6 => format!("{:.0}ns", s * 1e9),
        Some(s) if s < 1e-3 => format!("{:.1}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// What a TCP event adds after its connection: a failed connect's reason
/// and errno, or a sent reset's kernel reason.
pub fn tcp_detail(failure: Option<&str>, error: Option<&str>, reset: Option<&str>) -> String {
    match (failure, error, reset) {
        (Some(f), Some(err), _) => format!(" {f} ({err})"),
        (_, _, Some(r)) => format!(" ({r})"),
        _ => String::new(),
    }
}

/// One event as a human line.
pub fn event_line(e: &EventRecord) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.time_unix_ns);
    format!(
        "{} {} pid {} ({}){} in {}",
        humantime::format_rfc3339_millis(time),
        e.kind,
        e.pid,
        e.comm,
        e.signal
            .as_deref()
            .map_or(String::new(), |s| format!(" by {s}")),
        cgroup_label(&e.cgroup)
    )
}

/// Per-cgroup latency histograms as a table, largest total first.
pub fn latencies(out: &mut String, title: &str, rows: &[CgroupLatency], top: usize) {
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

/// The cgroup's path, or its id when it has none.
pub fn cgroup_label(c: &CgroupRef) -> String {
    c.cgroup_path
        .clone()
        .unwrap_or_else(|| format!("<cgroup {}>", c.cgroup_id))
}

/// `s` cut on the left to `width` characters, with `…` where it was cut.
pub fn truncate_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        s.to_owned()
    } else {
        format!("…{}", s.chars().skip(n - width + 1).collect::<String>())
    }
}
