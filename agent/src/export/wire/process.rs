//! The process family's series: processes ended by a signal and non-zero exits per cgroup.

use sonde_proto::{names, v1::MetricKind};

use super::{cgroup_label, Builder};
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let (mut crashes, mut exits) = (Vec::new(), Vec::new());
    for c in &snapshot.process.exits {
        let path = cgroup_label(&c.cgroup);
        for (signal, &count) in &c.signals {
            crashes.push(b.counter(
                &[
                    (names::ATTR_CGROUP_PATH, &path),
                    (names::ATTR_SIGNAL_NAME, signal),
                ],
                count,
            ));
        }
        for (status, &count) in &c.exit_statuses {
            exits.push(b.counter(
                &[
                    (names::ATTR_CGROUP_PATH, &path),
                    (names::ATTR_EXIT_CODE, &status.to_string()),
                ],
                count,
            ));
        }
    }
    b.metric(
        names::PROCESS_SIGNALED,
        names::UNIT_PROCESSES,
        "Processes ended by a signal, per cgroup and signal (crashes among them)",
        MetricKind::Counter,
        crashes,
    );
    b.metric(
        names::PROCESS_NONZERO_EXITS,
        names::UNIT_PROCESSES,
        "Processes that exited with a non-zero status, per cgroup and status",
        MetricKind::Counter,
        exits,
    );
}
