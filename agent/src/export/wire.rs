//! The one place where model types become `sonde.v1` wire types. Metric and
//! attribute names come from `sonde_proto::names` (docs/telemetry.md).

use sonde_proto::{
    histogram, names,
    series::StringTable,
    v1::{self, AgentReport, Metric, MetricKind, NodeIdentity, Point},
    PROTOCOL_VERSION,
};

use crate::{
    model::{CgroupSyscalls, LossRecord, Snapshot},
    probes::{ProbeState, ProbeStatus},
};

/// The value of `linux.cgroup.path`: the v2 path, or `id:<inode>` when the
/// cgroup vanished before it could be named.
pub fn cgroup_label(c: &CgroupSyscalls) -> String {
    c.cgroup_path
        .clone()
        .unwrap_or_else(|| format!("id:{}", c.cgroup_id))
}

/// A window as a report. `extra_losses` are the agent's own losses outside
/// the window's probes (the outbox's), reported in band.
pub fn report(
    snapshot: &Snapshot,
    node: &NodeIdentity,
    sequence: u64,
    extra_losses: &[LossRecord],
) -> AgentReport {
    let mut strings = StringTable::new();
    let mut durations = Vec::new();
    let mut errors = Vec::new();
    for cg in &snapshot.syscalls {
        let path = cgroup_label(cg);
        for s in &cg.syscalls {
            durations.push(Point {
                label_refs: strings.labels(&[
                    (names::ATTR_CGROUP_PATH, &path),
                    (names::ATTR_SYSCALL_NAME, &s.name),
                ]),
                count: 0,
                histogram: Some(histogram::to_wire(&s.latency)),
            });
            for (errno, &count) in &s.errnos {
                errors.push(Point {
                    label_refs: strings.labels(&[
                        (names::ATTR_CGROUP_PATH, &path),
                        (names::ATTR_SYSCALL_NAME, &s.name),
                        (names::ATTR_ERROR_TYPE, errno),
                    ]),
                    count,
                    histogram: None,
                });
            }
        }
    }
    let metrics = vec![
        Metric {
            name: names::SYSCALL_DURATION.to_owned(),
            unit: names::UNIT_SECONDS.to_owned(),
            description: "Latency of system calls, per cgroup and syscall".to_owned(),
            kind: MetricKind::Histogram as i32,
            points: durations,
        },
        Metric {
            name: names::SYSCALL_ERRORS.to_owned(),
            unit: names::UNIT_ERRORS.to_owned(),
            description: "Failed system calls, per cgroup, syscall and errno".to_owned(),
            kind: MetricKind::Counter as i32,
            points: errors,
        },
    ];
    AgentReport {
        protocol_version: PROTOCOL_VERSION,
        node: Some(node.clone()),
        sequence,
        window_start_unix_ns: snapshot.window_start_unix_ns,
        window_end_unix_ns: snapshot.window_end_unix_ns,
        complete: snapshot.complete,
        metrics,
        losses: snapshot
            .losses
            .iter()
            .chain(extra_losses)
            .map(loss)
            .collect(),
        events: Vec::new(),
        probes: snapshot.probes.iter().map(probe).collect(),
        strings: strings.into_strings(),
    }
}

fn loss(l: &LossRecord) -> v1::LossRecord {
    v1::LossRecord {
        stage: l.stage.to_owned(),
        probe: l.probe.to_owned(),
        reason: l.reason.to_owned(),
        count: l.count,
    }
}

fn probe(p: &ProbeStatus) -> v1::ProbeStatus {
    v1::ProbeStatus {
        probe: p.probe.to_owned(),
        state: match p.state {
            ProbeState::Attached => "attached",
            ProbeState::Degraded => "degraded",
            ProbeState::Unavailable => "unavailable",
        }
        .to_owned(),
        hook: p.hook.clone().unwrap_or_default(),
        reason: p.reason.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::SyscallSeries;
    use sonde_slo::Histogram;

    #[test]
    fn snapshot_becomes_named_series() {
        let mut latency = Histogram::new();
        for v in [1000, 2000, 2000] {
            latency.record_binary_ns(v);
        }
        let errnos = BTreeMap::from([("ENOENT".to_owned(), 2u64)]);
        let snapshot = Snapshot {
            window_start_unix_ns: 1,
            window_end_unix_ns: 2,
            window_secs: 1.0,
            probes: vec![],
            complete: true,
            losses: vec![LossRecord {
                stage: "kernel",
                probe: "syscalls",
                reason: "hist_map_full",
                count: 0,
            }],
            syscalls: vec![CgroupSyscalls {
                cgroup_id: 9,
                cgroup_path: None,
                calls: 3,
                errors: 2,
                syscalls: vec![SyscallSeries::new(
                    "openat".into(),
                    257,
                    latency.clone(),
                    errnos,
                    1.0,
                )],
            }],
        };
        let outbox = LossRecord {
            stage: "outbox",
            probe: "all",
            reason: "outbox_full",
            count: 4,
        };
        let r = report(&snapshot, &NodeIdentity::default(), 7, &[outbox]);
        assert_eq!((r.sequence, r.protocol_version), (7, PROTOCOL_VERSION));
        let d = &r.metrics[0];
        assert_eq!(d.name, "system.linux.syscall.duration");
        let text = |i: u32| r.strings[i as usize].as_str();
        let refs = &d.points[0].label_refs;
        assert_eq!(
            (text(refs[0]), text(refs[1])),
            ("linux.cgroup.path", "id:9")
        );
        assert_eq!(text(refs[3]), "openat");
        assert_eq!(
            histogram::from_wire(d.points[0].histogram.as_ref().unwrap()).unwrap(),
            latency
        );
        let e = &r.metrics[1].points[0];
        assert_eq!(e.count, 2);
        assert_eq!(text(e.label_refs[4]), "error.type");
        assert_eq!(text(e.label_refs[5]), "ENOENT");
        assert_eq!(r.strings.len(), 6, "each string once");
        assert_eq!(r.losses.len(), 2);
        assert_eq!(
            (r.losses[1].stage.as_str(), r.losses[1].count),
            ("outbox", 4)
        );
    }
}
