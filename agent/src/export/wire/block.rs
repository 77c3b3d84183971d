//! The block I/O family's series: request latency, completions and errors per (device, operation).

use sonde_proto::{names, v1::MetricKind};

use super::Builder;
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let (mut disk_latency, mut disk_ops, mut disk_errors) = (Vec::new(), Vec::new(), Vec::new());
    for d in &snapshot.block.devices {
        let labels = [
            (names::ATTR_DEVICE, d.device.as_str()),
            (names::ATTR_DISK_DIRECTION, d.op),
        ];
        if d.latency.count() > 0 {
            disk_latency.push(b.histogram(&labels, &d.latency));
        }
        if d.completed > 0 {
            disk_ops.push(b.counter(&labels, d.completed));
        }
        for (errno, &count) in &d.errors {
            disk_errors.push(b.counter(
                &[labels[0], labels[1], (names::ATTR_ERROR_TYPE, errno)],
                count,
            ));
        }
    }
    b.metric(
        names::DISK_REQUEST_DURATION,
        names::UNIT_SECONDS,
        "Block request latency, issue to completion, per device and operation",
        MetricKind::Histogram,
        disk_latency,
    );
    b.metric(
        names::DISK_OPERATIONS,
        names::UNIT_OPERATIONS,
        "Block requests completed, per device and operation",
        MetricKind::Counter,
        disk_ops,
    );
    b.metric(
        names::DISK_ERRORS,
        names::UNIT_ERRORS,
        "Failed block requests, per device, operation and errno",
        MetricKind::Counter,
        disk_errors,
    );
}
