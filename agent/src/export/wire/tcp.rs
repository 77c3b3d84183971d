//! The TCP family's series: connects, failures, retransmits, resets, listen overflows and drops.

use sonde_proto::{
    names,
    v1::{MetricKind, Point},
};

use super::{cgroup_label, Builder};
use crate::model::Snapshot;

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let (mut connect, mut connect_failures, mut retransmits, mut resets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in &snapshot.tcp.window.cgroups {
        let path = cgroup_label(&c.cgroup);
        if c.connect_latency.count() > 0 {
            connect.push(b.histogram(&[(names::ATTR_CGROUP_PATH, &path)], &c.connect_latency));
        }
        for (reason, &count) in &c.connect_failures {
            connect_failures.push(b.counter(
                &[
                    (names::ATTR_CGROUP_PATH, &path),
                    (names::ATTR_ERROR_TYPE, reason),
                ],
                count,
            ));
        }
        if c.counts.retransmit_segments > 0 {
            retransmits.push(b.counter(
                &[(names::ATTR_CGROUP_PATH, &path)],
                c.counts.retransmit_segments,
            ));
        }
        for (direction, count) in [
            ("transmit", c.counts.resets_sent),
            ("receive", c.counts.resets_received),
        ] {
            if count > 0 {
                resets.push(b.counter(
                    &[
                        (names::ATTR_CGROUP_PATH, &path),
                        (names::ATTR_IO_DIRECTION, direction),
                    ],
                    count,
                ));
            }
        }
    }
    // Segments and resets of sockets with no known cgroup: the node's.
    let tcp_node = &snapshot.tcp.window.node;
    if tcp_node.retransmit_segments > 0 {
        retransmits.push(b.counter(
            &[(names::ATTR_CGROUP_PATH, "unknown")],
            tcp_node.retransmit_segments,
        ));
    }
    for (direction, count) in [
        ("transmit", tcp_node.resets_sent),
        ("receive", tcp_node.resets_received),
    ] {
        if count > 0 {
            resets.push(b.counter(
                &[
                    (names::ATTR_CGROUP_PATH, "unknown"),
                    (names::ATTR_IO_DIRECTION, direction),
                ],
                count,
            ));
        }
    }
    b.metric(
        names::TCP_CONNECT_DURATION,
        names::UNIT_SECONDS,
        "TCP connect latency (SYN sent to established), per cgroup",
        MetricKind::Histogram,
        connect,
    );
    b.metric(
        names::TCP_CONNECT_FAILURES,
        names::UNIT_CONNECTIONS,
        "Failed TCP connects, per cgroup and reason",
        MetricKind::Counter,
        connect_failures,
    );
    b.metric(
        names::TCP_RETRANSMITS,
        names::UNIT_SEGMENTS,
        "TCP segments retransmitted, per cgroup of the socket (`unknown` when it has none)",
        MetricKind::Counter,
        retransmits,
    );
    b.metric(
        names::TCP_RESETS,
        names::UNIT_SEGMENTS,
        "TCP resets sent and received, per cgroup of the socket",
        MetricKind::Counter,
        resets,
    );
    let overflows: Vec<Point> = snapshot
        .tcp
        .window
        .listeners
        .iter()
        .filter(|l| l.overflows > 0)
        .map(|l| {
            b.counter(
                &[(names::ATTR_SERVER_PORT, &l.port.to_string())],
                l.overflows,
            )
        })
        .collect();
    b.metric(
        names::TCP_LISTEN_OVERFLOWS,
        names::UNIT_SEGMENTS,
        "Handshakes refused at their last ACK because the accept queue was full, per port",
        MetricKind::Counter,
        overflows,
    );
    let socket_drops: Vec<Point> = snapshot
        .tcp
        .window
        .listeners
        .iter()
        .filter_map(|l| Some((l.port, l.sockets?.drops)))
        .filter(|&(_, n)| n > 0)
        .map(|(port, n)| b.counter(&[(names::ATTR_SERVER_PORT, &port.to_string())], n))
        .collect();
    b.metric(
        names::TCP_LISTEN_DROPS,
        names::UNIT_SEGMENTS,
        "Packets the listening sockets dropped, per port: their own count, which alone holds the SYNs refused by a full SYN or accept queue",
        MetricKind::Counter,
        socket_drops,
    );
    let mut dropped = Vec::new();
    for d in &snapshot.tcp.window.drops {
        for (reason, &count) in &d.reasons {
            dropped.push(b.counter(&[(names::ATTR_DROP_REASON, reason)], count));
        }
    }
    b.metric(
        names::PACKETS_DROPPED,
        names::UNIT_PACKETS,
        "Packets the kernel dropped, by its own drop reason",
        MetricKind::Counter,
        dropped,
    );
}
