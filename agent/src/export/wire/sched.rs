//! The scheduler family's series: run-queue latency per cgroup, and the
//! wait by the cgroup that held the CPU.

use sonde_proto::{names, v1::MetricKind};

use super::{cgroup_label, per_cgroup, Builder};
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let runq = per_cgroup(b, &snapshot.sched.runqueue);
    b.metric(
        names::RUNQUEUE_DURATION,
        names::UNIT_SECONDS,
        "Time runnable tasks waited for a CPU, per cgroup",
        MetricKind::Histogram,
        runq,
    );
    let mut by_holder = Vec::new();
    for v in &snapshot.sched.runqueue_holders {
        let victim = cgroup_label(&v.cgroup);
        let per_sec = |secs: f64| {
            if snapshot.window_secs > 0.0 {
                secs / snapshot.window_secs
            } else {
                0.0
            }
        };
        let named = v
            .holders
            .iter()
            .map(|h| (cgroup_label(&h.cgroup), h.wait_secs));
        let others = [
            ("idle".to_owned(), v.idle_wait_secs),
            ("earlier".to_owned(), v.earlier_wait_secs),
            ("other".to_owned(), v.rest.wait_secs),
        ];
        for (holder, secs) in named.chain(others.into_iter().filter(|(_, s)| *s > 0.0)) {
            by_holder.push(b.gauge(
                &[
                    (names::ATTR_CGROUP_PATH, &victim),
                    (names::ATTR_HOLDER_CGROUP_PATH, &holder),
                ],
                per_sec(secs),
            ));
        }
    }
    b.metric(
        names::RUNQUEUE_WAIT_BY_HOLDER,
        names::UNIT_RATIO,
        "Run-queue wait per second, per cgroup that waited and cgroup whose task held the CPU when the wait ended",
        MetricKind::Gauge,
        by_holder,
    );
}
