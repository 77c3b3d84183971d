//! The fleet in memory: per node, its identity, the sequence numbers
//! received from its current boot, its cumulative series, its latest window
//! and its recent windows. Pure logic: reports in, summaries out.

use std::collections::{HashMap, VecDeque};

use crate::slo::FleetSlos;
use sonde_proto::{
    names, otlp,
    prometheus::{self, Target},
    series::{window_totals, Series},
    v1::{
        AgentReport, LossRecord, MetricKind, NodeDetail, NodeExplanation, NodeIdentity,
        NodeSummary, ProbeStatus, SequenceRange, SloExplanation, WindowSummary,
    },
};

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New: applied.
    Accepted,
    /// Seen before from this boot: dropped.
    Duplicate,
}

/// A node is stale after this many window lengths without a report.
const STALE_WINDOWS: u64 = 3;

struct Node {
    identity: NodeIdentity,
    seqs: crate::ranges::RangeSet,
    reports: u64,
    duplicates: u64,
    series: Series,
    totals_start_unix_ns: u64,
    latest: Option<WindowSummary>,
    probes: Vec<ProbeStatus>,
    recent: VecDeque<WindowSummary>,
    last_received_unix_ns: u64,
    /// The latest report's explanations of its firing SLO alerts.
    explanations: Vec<SloExplanation>,
}

/// Every node heard from.
pub struct Fleet {
    nodes: HashMap<String, Node>,
    recent_windows: usize,
    slos: FleetSlos,
}

impl Fleet {
    /// An empty fleet keeping `recent_windows` window summaries per node.
    pub fn new(recent_windows: usize) -> Self {
        Self {
            nodes: HashMap::new(),
            recent_windows,
            slos: FleetSlos::default(),
        }
    }

    /// Evaluates these SLOs across the fleet from now on.
    pub fn set_slos(&mut self, slos: FleetSlos) {
        self.slos = slos;
    }

    /// The fleet's SLOs.
    pub fn slos(&mut self) -> Vec<sonde_proto::v1::FleetSlo> {
        self.slos.list()
    }

    /// Every node's explanations of its firing SLO alerts (its latest
    /// report's), the highest top score first.
    pub fn explanations(&self) -> Vec<NodeExplanation> {
        let mut out: Vec<NodeExplanation> = self
            .nodes
            .values()
            .flat_map(|n| {
                let end = n.latest.as_ref().map_or(0, |l| l.window_end_unix_ns);
                n.explanations.iter().map(move |e| NodeExplanation {
                    node: n.identity.node_name.clone(),
                    window_end_unix_ns: end,
                    explanation: Some(e.clone()),
                })
            })
            .collect();
        rank(&mut out);
        out
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node reported yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Applies a validated report (see `sonde_proto::validate`).
    pub fn apply(&mut self, mut report: AgentReport, now_unix_ns: u64) -> Outcome {
        let identity = report.node.take().unwrap_or_default();
        let node = match self.nodes.get_mut(&identity.node_name) {
            Some(node) => node,
            None => self
                .nodes
                .entry(identity.node_name.clone())
                .or_insert_with(|| Node {
                    identity: identity.clone(),
                    seqs: Default::default(),
                    reports: 0,
                    duplicates: 0,
                    series: Series::new(),
                    totals_start_unix_ns: report.window_start_unix_ns,
                    latest: None,
                    probes: Vec::new(),
                    recent: VecDeque::new(),
                    last_received_unix_ns: 0,
                    explanations: Vec::new(),
                }),
        };
        if node.identity.boot_id != identity.boot_id {
            // A new boot numbers its windows afresh.
            node.seqs = Default::default();
            node.latest = None;
        }
        node.identity = identity;
        if !node.seqs.insert(report.sequence) {
            node.duplicates += 1;
            return Outcome::Duplicate;
        }
        node.reports += 1;
        node.last_received_unix_ns = now_unix_ns;
        node.series
            .add(&report.metrics, &report.strings, report.sequence);
        node.series.add_losses(&report.losses, report.sequence);
        let summary = WindowSummary {
            sequence: report.sequence,
            window_start_unix_ns: report.window_start_unix_ns,
            window_end_unix_ns: report.window_end_unix_ns,
            complete: report.complete,
            totals: window_totals(&report.metrics),
            lost: report.losses.iter().map(|l| l.count).sum(),
        };
        node.recent.push_front(summary.clone());
        node.recent.truncate(self.recent_windows);
        let newer = node
            .latest
            .as_ref()
            .is_none_or(|l| l.window_end_unix_ns <= report.window_end_unix_ns);
        if newer {
            node.latest = Some(summary);
            node.probes = std::mem::take(&mut report.probes);
            node.explanations = std::mem::take(&mut report.explanations);
        }
        let name = node.identity.node_name.clone();
        self.slos.add(&name, &report);
        Outcome::Accepted
    }

    /// Every node, by name.
    pub fn list(&self, now_unix_ns: u64) -> Vec<NodeSummary> {
        let mut out: Vec<NodeSummary> = self
            .nodes
            .values()
            .map(|n| summary(n, now_unix_ns))
            .collect();
        out.sort_by(|a, b| node_name(a).cmp(node_name(b)));
        out
    }

    /// One node in detail.
    pub fn node(&self, name: &str, now_unix_ns: u64) -> Option<NodeDetail> {
        let n = self.nodes.get(name)?;
        Some(NodeDetail {
            summary: Some(summary(n, now_unix_ns)),
            totals_start_unix_ns: n.totals_start_unix_ns,
            totals: n.series.to_labeled(),
            latest: n
                .latest
                .as_ref()
                .map(|l| n.series.window_to_labeled(l.sequence))
                .unwrap_or_default(),
            recent: n.recent.iter().cloned().collect(),
            scope: String::new(),
        })
    }

    /// The fleet's cumulative series as Prometheus text, each series
    /// labelled with its node (`host_name`).
    pub fn prometheus(&self) -> String {
        let mut nodes: Vec<&Node> = self.nodes.values().collect();
        nodes.sort_by(|a, b| a.identity.node_name.cmp(&b.identity.node_name));
        let targets: Vec<Target<'_>> = nodes
            .iter()
            .map(|n| Target {
                labels: vec![(
                    prometheus::label_name(names::RES_HOST_NAME),
                    n.identity.node_name.clone(),
                )],
                series: &n.series,
            })
            .collect();
        prometheus::render(&targets)
    }

    /// The fleet's cumulative series as OTLP, one resource per node.
    pub fn otlp(
        &self,
        now_unix_ns: u64,
    ) -> Vec<sonde_proto::opentelemetry_proto::tonic::metrics::v1::ResourceMetrics> {
        self.nodes
            .values()
            .map(|n| {
                let id = &n.identity;
                let resource = otlp::resource(&[
                    (names::RES_SERVICE_NAME, "sonde"),
                    (names::RES_SERVICE_VERSION, &id.agent_version),
                    (names::RES_HOST_NAME, &id.node_name),
                    (names::RES_HOST_ID, &id.machine_id),
                    (names::RES_HOST_ARCH, &id.arch),
                    (names::RES_OS_TYPE, "linux"),
                    (names::RES_OS_VERSION, &id.kernel),
                ]);
                otlp::resource_metrics(resource, &n.series, n.totals_start_unix_ns, now_unix_ns)
            })
            .collect()
    }

    /// Series held, all nodes (for memory accounting).
    pub fn series_count(&self) -> usize {
        self.nodes.values().map(|n| n.series.len()).sum()
    }
}

fn node_name(s: &NodeSummary) -> &str {
    s.node.as_ref().map(|n| n.node_name.as_str()).unwrap_or("")
}

/// A node's health: "stale" (no report for [`STALE_WINDOWS`] window
/// lengths), "degraded" (a probe not attached), "incomplete" (its latest
/// window lost events) or "ok".
pub fn health(
    now_unix_ns: u64,
    last_received_unix_ns: u64,
    latest: Option<&WindowSummary>,
    probes: &[ProbeStatus],
) -> &'static str {
    let window_ns = latest
        .map(|l| l.window_end_unix_ns.saturating_sub(l.window_start_unix_ns))
        .unwrap_or(0)
        .max(1_000_000_000);
    if now_unix_ns.saturating_sub(last_received_unix_ns) > STALE_WINDOWS * window_ns {
        "stale"
    } else if probes.iter().any(|p| p.state != "attached") {
        "degraded"
    } else if latest.is_some_and(|l| !l.complete) {
        "incomplete"
    } else {
        "ok"
    }
}

fn summary(n: &Node, now_unix_ns: u64) -> NodeSummary {
    let latest = n.latest.clone();
    let health = health(
        now_unix_ns,
        n.last_received_unix_ns,
        latest.as_ref(),
        &n.probes,
    );
    let losses = n
        .series
        .metrics()
        .iter()
        .filter(|m| m.name == names::AGENT_DROPPED && m.kind == MetricKind::Counter)
        .flat_map(|m| m.points())
        .map(|p| {
            let get = |k: &str| {
                p.labels
                    .iter()
                    .find(|(key, _)| **key == *k)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            };
            LossRecord {
                stage: get(names::ATTR_STAGE),
                probe: get(names::ATTR_PROBE),
                reason: get(names::ATTR_REASON),
                count: p.count,
                ..Default::default()
            }
        })
        .collect();
    NodeSummary {
        node: Some(n.identity.clone()),
        reports: n.reports,
        duplicates: n.duplicates,
        sequences: n
            .seqs
            .ranges()
            .iter()
            .map(|&(first, last)| SequenceRange { first, last })
            .collect(),
        latest,
        probes: n.probes.clone(),
        totals: n.series.totals(),
        losses,
        last_received_unix_ns: n.last_received_unix_ns,
        health: health.to_owned(),
    }
}

/// Orders explanations as `ListSlos` gives them: the highest top score
/// first, then by node and SLO.
pub fn rank(explanations: &mut [NodeExplanation]) {
    let top = |e: &NodeExplanation| {
        e.explanation
            .as_ref()
            .and_then(|x| x.findings.first())
            .map_or(0.0, |f| f.score)
    };
    let slo = |e: &NodeExplanation| e.explanation.as_ref().map(|x| x.slo.clone());
    explanations.sort_by(|a, b| {
        top(b)
            .total_cmp(&top(a))
            .then_with(|| a.node.cmp(&b.node))
            .then_with(|| slo(a).cmp(&slo(b)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::{
        histogram::to_wire,
        series::StringTable,
        v1::{Metric, Point},
        PROTOCOL_VERSION,
    };

    fn report(node: &str, boot: &str, seq: u64, calls: u64) -> AgentReport {
        let mut h = sonde_slo::Histogram::new();
        for _ in 0..calls {
            h.record_binary_ns(1000);
        }
        let mut strings = StringTable::new();
        let label_refs = strings.labels(&[(names::ATTR_SYSCALL_NAME, "openat")]);
        AgentReport {
            protocol_version: PROTOCOL_VERSION,
            node: Some(NodeIdentity {
                node_name: node.into(),
                boot_id: boot.into(),
                ..Default::default()
            }),
            sequence: seq,
            window_start_unix_ns: seq * 1_000_000_000,
            window_end_unix_ns: (seq + 1) * 1_000_000_000,
            complete: true,
            metrics: vec![Metric {
                name: names::SYSCALL_DURATION.into(),
                unit: "s".into(),
                description: String::new(),
                kind: MetricKind::Histogram as i32,
                points: vec![Point {
                    label_refs,
                    count: 0,
                    histogram: Some(to_wire(&h)),
                    value: 0.0,
                    ..Default::default()
                }],
            }],
            losses: vec![LossRecord {
                stage: "outbox".into(),
                probe: "all".into(),
                reason: "outbox_full".into(),
                count: 1,
                ..Default::default()
            }],
            events: vec![],
            probes: vec![],
            strings: strings.into_strings(),
            totals_start_unix_ns: 0,
            explanations: vec![],
            answers_explain: false,
        }
    }

    fn explained(mut r: AgentReport, slo: &str, score: f64) -> AgentReport {
        r.explanations = vec![SloExplanation {
            slo: slo.into(),
            severity: "page".into(),
            verdict: format!("cpu_contention: {score}"),
            findings: vec![sonde_proto::v1::Finding {
                kind: "cpu_contention".into(),
                score,
                ..Default::default()
            }],
            windows: 3,
            incomplete_windows: 0,
        }];
        r
    }

    #[test]
    fn each_nodes_latest_explanations_highest_score_first() {
        let mut fleet = Fleet::new(2);
        fleet.apply(explained(report("a", "b", 1, 1), "web", 2.5), 0);
        fleet.apply(explained(report("c", "b", 1, 1), "web", 2.9), 0);
        let e = fleet.explanations();
        let nodes: Vec<&str> = e.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(nodes, ["c", "a"]);
        assert_eq!(e[0].window_end_unix_ns, 2_000_000_000);
        // The alert stopped: the next report carries none.
        fleet.apply(report("c", "b", 2, 1), 0);
        let nodes: Vec<String> = fleet.explanations().into_iter().map(|e| e.node).collect();
        assert_eq!(nodes, ["a"]);
        // An older window arriving late does not bring it back.
        fleet.apply(explained(report("c", "b", 0, 1), "web", 2.9), 0);
        assert_eq!(fleet.explanations().len(), 1);
    }

    #[test]
    fn duplicates_are_dropped_and_totals_add_up() {
        let mut fleet = Fleet::new(2);
        assert_eq!(fleet.apply(report("a", "b1", 1, 5), 0), Outcome::Accepted);
        assert_eq!(fleet.apply(report("a", "b1", 2, 7), 0), Outcome::Accepted);
        assert_eq!(fleet.apply(report("a", "b1", 1, 5), 0), Outcome::Duplicate);
        assert_eq!(fleet.apply(report("a", "b1", 3, 1), 0), Outcome::Accepted);
        let d = fleet.node("a", 3_000_000_000).unwrap();
        let s = d.summary.unwrap();
        assert_eq!((s.reports, s.duplicates), (3, 1));
        assert_eq!(s.sequences, vec![SequenceRange { first: 1, last: 3 }]);
        assert_eq!(s.totals[0].count, 13);
        assert_eq!(s.losses[0].count, 3);
        assert_eq!(s.latest.unwrap().sequence, 3);
        assert_eq!(d.recent.len(), 2);
        assert_eq!(s.health, "ok");
        // A new boot numbers afresh: sequence 1 is new again.
        assert_eq!(fleet.apply(report("a", "b2", 1, 2), 0), Outcome::Accepted);
        let s = fleet.list(0).remove(0);
        assert_eq!(s.totals[0].count, 15);
        assert_eq!(s.sequences, vec![SequenceRange { first: 1, last: 1 }]);
        let text = fleet.prometheus();
        assert!(
            text.contains("system_linux_syscall_duration_seconds_count{host_name=\"a\",syscall_name=\"openat\"} 15"),
            "{text}"
        );
        assert!(text.contains("sonde_agent_dropped_total{host_name=\"a\",stage=\"outbox\",reason=\"outbox_full\",probe=\"all\"} 4"), "{text}");
    }

    #[test]
    fn a_silent_node_goes_stale() {
        let mut fleet = Fleet::new(2);
        fleet.apply(report("a", "b", 1, 1), 1_000_000_000);
        assert_eq!(fleet.list(2_000_000_000)[0].health, "ok");
        assert_eq!(fleet.list(10_000_000_000)[0].health, "stale");
    }
}
