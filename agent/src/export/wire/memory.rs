//! The memory family's series: reclaim stalls and OOM kills per cgroup.

use sonde_proto::{
    names,
    v1::{MetricKind, Point},
};

use super::{cgroup_label, per_cgroup, Builder};
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let reclaim = per_cgroup(b, &snapshot.memory.reclaim);
    b.metric(
        names::RECLAIM_DURATION,
        names::UNIT_SECONDS,
        "Allocation stalls in memory reclaim, per cgroup",
        MetricKind::Histogram,
        reclaim,
    );

    let kills: Vec<Point> = snapshot
        .memory
        .oom_kills
        .iter()
        .map(|c| {
            b.counter(
                &[(names::ATTR_CGROUP_PATH, &cgroup_label(&c.cgroup))],
                c.count,
            )
        })
        .collect();
    b.metric(
        names::OOM_KILLS,
        names::UNIT_KILLS,
        "Processes killed by the OOM killer, per cgroup",
        MetricKind::Counter,
        kills,
    );
}
