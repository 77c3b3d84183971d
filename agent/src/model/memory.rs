//! The memory family's part of a window: reclaim stalls and OOM kills per
//! cgroup.

use std::fmt::Write as _;

use super::text::{cgroup_label, latencies, truncate_left, Text};

use serde::Serialize;

use super::{CgroupCount, CgroupLatency};

/// The memory family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Reclaim stalls (allocations that had to reclaim memory first) per cgroup.
    pub reclaim: Vec<CgroupLatency>,
    /// OOM kills per cgroup of the victim.
    pub oom_kills: Vec<CgroupCount>,
}

/// What `sonde top` reads of the family for its header: nothing.
pub type TopPart = super::top::NoHeader;

/// Reclaim stalls per cgroup, then OOM kills.
impl Text for Part {
    fn text(&self, out: &mut String, top: usize) {
        latencies(out, "RECLAIM STALLS (cgroup)", &self.reclaim, top);
        for c in &self.oom_kills {
            let _ = writeln!(
                out,
                "OOM KILLS {:<34} {}",
                truncate_left(&cgroup_label(&c.cgroup), 34),
                c.count
            );
        }
    }
}
