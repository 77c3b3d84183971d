//! The scheduler family's series: run-queue latency per cgroup.

use sonde_proto::{names, v1::MetricKind};

use super::{per_cgroup, Builder};
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let runq = per_cgroup(b, &snapshot.runqueue);
    b.metric(
        names::RUNQUEUE_DURATION,
        names::UNIT_SECONDS,
        "Time runnable tasks waited for a CPU, per cgroup",
        MetricKind::Histogram,
        runq,
    );
}
