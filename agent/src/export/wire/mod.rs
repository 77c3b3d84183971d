//! The one place where model types become `sonde.v1` wire types. Metric and
//! attribute names come from `sonde_proto::names` (docs/telemetry.md).
//! Each family's series are rendered by its own module (`wire/<family>.rs`),
//! called from [`report`] in the registry's order.

/// Each family's module, and its series in the registry's order (the list
/// is `sonde_common::family`'s): `<family>::metrics`.
macro_rules! families {
    ($($module:ident $variant:ident),*) => {
        $(mod $module;)*

        fn family_metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
            $($module::metrics(b, snapshot);)*
        }
    };
}
sonde_common::for_each_family!(families);

use sonde_proto::{
    histogram, names,
    series::StringTable,
    v1::{self, AgentReport, Metric, MetricKind, NodeIdentity, Point},
    PROTOCOL_VERSION,
};

use sonde_slo::slo::Severity;

use crate::{
    model::{
        slo::{window_label, SloStatus},
        CgroupLatency, CgroupRef, LossRecord, Snapshot,
    },
    probes::{ProbeState, ProbeStatus},
};

/// The value of `linux.cgroup.path`: the v2 path, or `id:<inode>` when the
/// cgroup vanished before it could be named.
pub fn cgroup_label(c: &CgroupRef) -> String {
    c.cgroup_path
        .clone()
        .unwrap_or_else(|| format!("id:{}", c.cgroup_id))
}

/// Points of one metric, interned into the report's string table.
/// Series per metric in a report unless configured otherwise; beyond it
/// the lightest series are folded into one overflow series.
pub const DEFAULT_MAX_SERIES: usize = 2000;

/// The attribute of the overflow series (OpenTelemetry's own, as its SDKs
/// use for their cardinality limit).
pub const ATTR_OVERFLOW: &str = "otel.metric.overflow";

struct Builder<'a> {
    strings: &'a mut StringTable,
    metrics: Vec<Metric>,
    max_series: usize,
    /// Per metric, how many series were folded into its overflow series.
    overflowed: Vec<(String, u64)>,
}

impl Builder<'_> {
    fn metric(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        kind: MetricKind,
        mut points: Vec<Point>,
    ) {
        if kind != MetricKind::Gauge && points.len() > self.max_series {
            points = self.fold(name, points);
        }
        if !points.is_empty() {
            self.metrics.push(Metric {
                name: name.to_owned(),
                unit: unit.to_owned(),
                description: description.to_owned(),
                kind: kind as i32,
                points,
            });
        }
    }

    fn histogram(&mut self, labels: &[(&str, &str)], h: &sonde_slo::Histogram) -> Point {
        Point {
            label_refs: self.strings.labels(labels),
            count: 0,
            histogram: Some(histogram::to_wire(h)),
            value: 0.0,
            ..Default::default()
        }
    }

    fn counter(&mut self, labels: &[(&str, &str)], count: u64) -> Point {
        Point {
            label_refs: self.strings.labels(labels),
            count,
            histogram: None,
            value: 0.0,
            ..Default::default()
        }
    }

    /// Keeps the `max_series - 1` heaviest series and folds the rest into
    /// one series labelled `otel.metric.overflow=true`: every count stays
    /// in the report, only its attribution is lost, and that is counted.
    fn fold(&mut self, name: &str, mut points: Vec<Point>) -> Vec<Point> {
        let weight = |p: &Point| p.histogram.as_ref().map_or(p.count, histogram::count);
        points.sort_by_key(|p| std::cmp::Reverse(weight(p)));
        let keep = self.max_series.saturating_sub(1);
        let rest = points.split_off(keep.min(points.len()));
        let mut overflow = Point {
            label_refs: self.strings.labels(&[(ATTR_OVERFLOW, "true")]),
            count: 0,
            histogram: None,
            value: 0.0,
            ..Default::default()
        };
        for p in &rest {
            overflow.count += p.count;
            if let Some(h) = &p.histogram {
                match &mut overflow.histogram {
                    Some(acc) => histogram::merge_into(acc, h),
                    None => overflow.histogram = Some(h.clone()),
                }
            }
        }
        self.overflowed.push((name.to_owned(), rest.len() as u64));
        points.push(overflow);
        points
    }

    fn gauge(&mut self, labels: &[(&str, &str)], value: f64) -> Point {
        Point {
            label_refs: self.strings.labels(labels),
            count: 0,
            histogram: None,
            value: if value.is_finite() { value } else { 0.0 },
            ..Default::default()
        }
    }
}

/// A window as a report. `extra_losses` are the agent's own losses outside
/// the window's probes (the outbox's), reported in band.
pub fn report(
    snapshot: &Snapshot,
    node: &NodeIdentity,
    sequence: u64,
    extra_losses: &[LossRecord],
    max_series: usize,
) -> AgentReport {
    let mut strings = StringTable::new();
    let mut b = Builder {
        strings: &mut strings,
        metrics: Vec::new(),
        max_series: max_series.max(1),
        overflowed: Vec::new(),
    };
    family_metrics(&mut b, snapshot);

    slos(&mut b, &snapshot.slos);
    if let Some(o) = &snapshot.overhead {
        let point = b.gauge(&[], o.agent_cpu_utilization);
        b.metric(
            names::AGENT_CPU_UTILIZATION,
            names::UNIT_RATIO,
            "The agent's own CPU time over the window, as a share of one core",
            MetricKind::Gauge,
            vec![point],
        );
        let points = o
            .probes
            .iter()
            .map(|p| b.gauge(&[(names::ATTR_PROBE, p.probe.name())], p.cpu_utilization))
            .collect();
        b.metric(
            names::PROBE_CPU_UTILIZATION,
            names::UNIT_RATIO,
            "Time in each family's kernel programs over the window, as a share of one core (sampled)",
            MetricKind::Gauge,
            points,
        );
    }
    let overflowed = std::mem::take(&mut b.overflowed);
    let points = overflowed
        .iter()
        .map(|(metric, n)| b.counter(&[(names::ATTR_METRIC, metric)], *n))
        .collect();
    b.metric(
        names::AGENT_SERIES_OVERFLOW,
        names::UNIT_SERIES,
        "Series folded into a metric's overflow series (otel.metric.overflow) by the per-metric cap",
        MetricKind::Counter,
        points,
    );

    let metrics = b.metrics;
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
        explanations: snapshot.slos.iter().filter_map(explanation).collect(),
        ..Default::default()
    }
}

/// A finding as the report carried it, back in the model's type.
pub fn finding_from_wire(f: &v1::Finding) -> crate::model::explain::Finding {
    crate::model::explain::Finding {
        kind: f.kind.clone(),
        score: f.score,
        magnitude: f.magnitude,
        unit: f.unit.clone(),
        share: f.share,
        culprits: f
            .culprits
            .iter()
            .map(|c| crate::model::explain::Culprit {
                kind: c.kind.clone(),
                name: c.name.clone(),
                magnitude: c.magnitude,
                share: c.share,
            })
            .collect(),
        evidence: Vec::new(),
        summary: f.summary.clone(),
        incomplete_windows: f.incomplete_windows as usize,
    }
}

/// A firing SLO's explanation, as the report carries it.
fn explanation(s: &SloStatus) -> Option<v1::SloExplanation> {
    let e = s.explanation.as_ref()?;
    Some(v1::SloExplanation {
        slo: s.name.clone(),
        severity: s.evaluation.severity.name().to_owned(),
        verdict: e.verdict.clone(),
        findings: e
            .findings
            .iter()
            .map(|f| v1::Finding {
                kind: f.kind.clone(),
                score: f.score,
                magnitude: f.magnitude,
                unit: f.unit.clone(),
                share: f.share,
                culprits: f
                    .culprits
                    .iter()
                    .map(|c| v1::Culprit {
                        kind: c.kind.clone(),
                        name: c.name.clone(),
                        magnitude: c.magnitude,
                        share: c.share,
                    })
                    .collect(),
                summary: f.summary.clone(),
                incomplete_windows: u32::try_from(f.incomplete_windows).unwrap_or(u32::MAX),
            })
            .collect(),
        windows: u32::try_from(e.windows).unwrap_or(u32::MAX),
        incomplete_windows: u32::try_from(e.incomplete_windows).unwrap_or(u32::MAX),
    })
}

/// One latency histogram per cgroup (the sched and memory families').
fn per_cgroup(b: &mut Builder<'_>, rows: &[CgroupLatency]) -> Vec<Point> {
    rows.iter()
        .map(|r| {
            b.histogram(
                &[(names::ATTR_CGROUP_PATH, &cgroup_label(&r.cgroup))],
                &r.latency,
            )
        })
        .collect()
}

/// The SLOs' counts of the window and where they stand.
fn slos(b: &mut Builder<'_>, statuses: &[SloStatus]) {
    let (mut good, mut total, mut budget, mut burn, mut alert, mut complete) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for s in statuses {
        let name = [(names::ATTR_SLO_NAME, s.name.as_str())];
        good.push(b.counter(&name, s.good));
        total.push(b.counter(&name, s.total));
        budget.push(b.gauge(&name, s.evaluation.budget_remaining));
        for (secs, rate) in s.burn_by_window() {
            let window = window_label(secs);
            burn.push(b.gauge(
                &[
                    (names::ATTR_SLO_NAME, &s.name),
                    (names::ATTR_SLO_WINDOW, &window),
                ],
                rate,
            ));
        }
        for level in [Severity::Page, Severity::Ticket] {
            let firing = s
                .evaluation
                .rules
                .iter()
                .any(|r| r.firing && r.rule.severity == level);
            alert.push(b.gauge(
                &[
                    (names::ATTR_SLO_NAME, &s.name),
                    (names::ATTR_SLO_SEVERITY, level.name()),
                ],
                if firing { 1.0 } else { 0.0 },
            ));
        }
        complete.push(b.gauge(&name, if s.complete { 1.0 } else { 0.0 }));
    }
    b.metric(
        names::SLO_GOOD,
        names::UNIT_EVENTS,
        "SLO events that met the objective",
        MetricKind::Counter,
        good,
    );
    b.metric(
        names::SLO_TOTAL,
        names::UNIT_EVENTS,
        "SLO valid events",
        MetricKind::Counter,
        total,
    );
    b.metric(
        names::SLO_BUDGET_REMAINING,
        names::UNIT_RATIO,
        "Error budget left over the SLO window (1: untouched, below 0: overspent)",
        MetricKind::Gauge,
        budget,
    );
    b.metric(
        names::SLO_BURN_RATE,
        names::UNIT_RATIO,
        "Error budget burn rate over an alert window (1: spends exactly the budget)",
        MetricKind::Gauge,
        burn,
    );
    b.metric(
        names::SLO_ALERT,
        "{alert}",
        "1 while an alert of this severity fires",
        MetricKind::Gauge,
        alert,
    );
    b.metric(
        names::SLO_COMPLETE,
        "",
        "1 when the window saw all the data the SLO depends on",
        MetricKind::Gauge,
        complete,
    );
}

fn loss(l: &LossRecord) -> v1::LossRecord {
    v1::LossRecord {
        stage: l.stage.to_owned(),
        probe: l.probe.to_owned(),
        reason: l.reason.to_owned(),
        count: l.count,
        ..Default::default()
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
    use crate::model::{CgroupSyscalls, SyscallSeries};
    use sonde_slo::Histogram;

    #[test]
    fn series_beyond_the_cap_fold_into_one_overflow_series_and_nothing_is_lost() {
        let cgroups: Vec<CgroupSyscalls> = (1..=10u64)
            .map(|i| {
                let mut latency = Histogram::new();
                for _ in 0..i {
                    latency.record_binary_ns(1000 * i);
                }
                let errnos = BTreeMap::from([("ENOENT".to_owned(), i)]);
                let series = SyscallSeries::new("openat".into(), 257, latency, errnos, 1.0);
                CgroupSyscalls {
                    cgroup: CgroupRef {
                        cgroup_id: i,
                        cgroup_path: Some(format!("/c{i}")),
                        owner: crate::attribution::Owner::Other,
                    },
                    calls: i,
                    errors: i,
                    syscalls: vec![series],
                }
            })
            .collect();
        let snapshot = Snapshot {
            syscalls: crate::model::syscalls::Part { cgroups },
            ..Default::default()
        };
        let r = report(&snapshot, &NodeIdentity::default(), 1, &[], 4);
        let metric = |name: &str| r.metrics.iter().find(|m| m.name == name).expect(name);
        let errors = metric(names::SYSCALL_ERRORS);
        assert_eq!(errors.points.len(), 4);
        // The three heaviest keep their labels; seven fold, counts intact.
        let counts: Vec<u64> = errors.points.iter().map(|p| p.count).collect();
        assert_eq!(counts, [10, 9, 8, 1 + 2 + 3 + 4 + 5 + 6 + 7]);
        let overflow = &errors.points[3];
        let labels: Vec<&str> = overflow
            .label_refs
            .iter()
            .map(|&i| r.strings[i as usize].as_str())
            .collect();
        assert_eq!(labels, [ATTR_OVERFLOW, "true"]);
        let durations = metric(names::SYSCALL_DURATION);
        let samples: u64 = durations
            .points
            .iter()
            .map(|p| histogram::count(p.histogram.as_ref().expect("histogram")))
            .sum();
        assert_eq!(samples, 55);
        let folded = metric(names::AGENT_SERIES_OVERFLOW);
        assert_eq!(
            folded.points.iter().map(|p| p.count).collect::<Vec<_>>(),
            [7, 7]
        );
    }

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
            syscalls: crate::model::syscalls::Part {
                cgroups: vec![CgroupSyscalls {
                    cgroup: CgroupRef {
                        cgroup_id: 9,
                        cgroup_path: None,
                        owner: crate::attribution::Owner::Unknown,
                    },
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
            },
            ..Default::default()
        };
        let outbox = LossRecord {
            stage: "outbox",
            probe: "all",
            reason: "outbox_full",
            count: 4,
        };
        let r = report(
            &snapshot,
            &NodeIdentity::default(),
            7,
            &[outbox],
            DEFAULT_MAX_SERIES,
        );
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
        // every family's rows become their metrics
        let mut more = snapshot.clone();
        let cg = CgroupRef {
            cgroup_id: 3,
            cgroup_path: Some("/a".into()),
            owner: crate::attribution::Owner::Other,
        };
        more.sched.runqueue = vec![CgroupLatency::new(cg.clone(), latency.clone())];
        more.memory.oom_kills = vec![crate::model::CgroupCount {
            cgroup: cg.clone(),
            count: 1,
        }];
        more.block.devices = vec![crate::model::DeviceIo {
            device: "loop0".into(),
            major: 7,
            minor: 0,
            op: "read",
            issued: 3,
            completed: 3,
            errors: BTreeMap::from([("EIO".to_owned(), 1u64)]),
            in_flight: 0,
            p50_secs: None,
            p99_secs: None,
            latency: latency.clone(),
        }];
        let r2 = report(&more, &NodeIdentity::default(), 8, &[], DEFAULT_MAX_SERIES);
        let names: Vec<&str> = r2.metrics.iter().map(|m| m.name.as_str()).collect();
        for name in [
            "system.linux.scheduler.runqueue.duration",
            "system.disk.request.duration",
            "system.disk.operations",
            "system.disk.errors",
            "system.linux.oom_kill.count",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(
            !names.contains(&"system.linux.memory.reclaim.duration"),
            "no rows, no metric"
        );
        assert_eq!(r.losses.len(), 2);
        assert_eq!(
            (r.losses[1].stage.as_str(), r.losses[1].count),
            ("outbox", 4)
        );
    }
}
