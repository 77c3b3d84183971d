//! The syscall family's series: latency and failures per (cgroup, syscall).

use sonde_proto::{names, v1::MetricKind};

use super::{cgroup_label, Builder};
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let (mut durations, mut errors) = (Vec::new(), Vec::new());
    for cg in &snapshot.syscalls.cgroups {
        let path = cgroup_label(&cg.cgroup);
        for s in &cg.syscalls {
            durations.push(b.histogram(
                &[
                    (names::ATTR_CGROUP_PATH, &path),
                    (names::ATTR_SYSCALL_NAME, &s.name),
                ],
                &s.latency,
            ));
            for (errno, &count) in &s.errnos {
                errors.push(b.counter(
                    &[
                        (names::ATTR_CGROUP_PATH, &path),
                        (names::ATTR_SYSCALL_NAME, &s.name),
                        (names::ATTR_ERROR_TYPE, errno),
                    ],
                    count,
                ));
            }
        }
    }
    b.metric(
        names::SYSCALL_DURATION,
        names::UNIT_SECONDS,
        "Latency of system calls, per cgroup and syscall",
        MetricKind::Histogram,
        durations,
    );
    b.metric(
        names::SYSCALL_ERRORS,
        names::UNIT_ERRORS,
        "Failed system calls, per cgroup, syscall and errno",
        MetricKind::Counter,
        errors,
    );
}
