//! Fleet SLOs: the collector's configured SLOs, each evaluated over the sum
//! of good and of total events that the matching nodes' agents counted for
//! the SLO of the same name (`slo.sli.good` / `slo.sli.total` in their
//! reports). Pure: reports in, statuses out.

use std::collections::BTreeSet;

use sonde_proto::{
    names,
    v1::{AgentReport, BurnRate, FleetSlo, MetricKind},
};
use sonde_slo::{
    rules::promql_duration,
    slo::{Evaluation, Tracker, WindowCounts},
    spec::SloSpec,
};

/// One fleet SLO.
struct Entry {
    spec: SloSpec,
    tracker: Tracker,
    nodes: BTreeSet<String>,
    latest: Option<Evaluation>,
    /// Reports arrived since `latest` was computed.
    stale: bool,
}

/// The fleet's SLOs.
#[derive(Default)]
pub struct FleetSlos {
    entries: Vec<Entry>,
}

/// `*` any run, `?` any one character; everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy with backtracking to the last `*`: (pattern index, text index)
    // to resume from.
    let (mut pi, mut ti, mut star) = (0, 0, None::<(usize, usize)>);
    while let Some(&c) = t.get(ti) {
        match p.get(pi) {
            Some(&pc) if pc == '?' || pc == c => {
                pi += 1;
                ti += 1;
            }
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => match star {
                Some((s, mark)) => {
                    pi = s + 1;
                    ti = mark + 1;
                    star = Some((s, mark + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
}

impl FleetSlos {
    /// Trackers for `specs`.
    pub fn new(specs: Vec<SloSpec>) -> Self {
        Self {
            entries: specs
                .into_iter()
                .map(|spec| Entry {
                    tracker: Tracker::new(spec.objective.clone()),
                    spec,
                    nodes: BTreeSet::new(),
                    latest: None,
                    stale: false,
                })
                .collect(),
        }
    }

    /// Adds a new (not duplicate) report's SLO counts from `node`, then
    /// evaluates the SLOs it touched.
    pub fn add(&mut self, node: &str, report: &AgentReport) {
        if self.entries.is_empty() {
            return;
        }
        let end_unix_secs = report.window_end_unix_ns / 1_000_000_000;
        for entry in &mut self.entries {
            if !entry.spec.nodes.as_deref().is_none_or(|p| glob(p, node)) {
                continue;
            }
            let Some(counts) = counts(report, &entry.spec.name) else {
                continue;
            };
            entry.nodes.insert(node.to_owned());
            let before = entry.tracker.latest_unix_secs();
            entry.tracker.add(WindowCounts {
                end_unix_secs,
                ..counts
            });
            // Evaluate once per second of data, not once per report: a
            // thousand nodes' reports for the same window cost one pass.
            let at = entry.tracker.latest_unix_secs();
            if at > before || entry.latest.is_none() {
                entry.latest = Some(entry.tracker.evaluate_at(at));
            } else {
                entry.stale = true;
            }
        }
    }

    /// Where each SLO stands (evaluating those that heard reports since).
    pub fn list(&mut self) -> Vec<FleetSlo> {
        for e in self.entries.iter_mut().filter(|e| e.stale) {
            e.stale = false;
            let at = e.tracker.latest_unix_secs();
            e.latest = Some(e.tracker.evaluate_at(at));
        }
        self.entries
            .iter()
            .map(|e| {
                fleet_slo(
                    &e.spec,
                    e.nodes.iter().cloned().collect(),
                    e.latest.as_ref(),
                )
            })
            .collect()
    }
}

/// Where `spec` stands across `nodes`, from its evaluation (none yet: an
/// untouched budget).
pub fn fleet_slo(spec: &SloSpec, nodes: Vec<String>, evaluation: Option<&Evaluation>) -> FleetSlo {
    let mut slo = FleetSlo {
        name: spec.name.clone(),
        signal: spec.signal.name().to_owned(),
        objective_percent: spec.objective.target * 100.0,
        window_days: spec.objective.window_secs as f64 / 86_400.0,
        severity: "ok".to_owned(),
        complete: true,
        budget_remaining: 1.0,
        nodes,
        ..Default::default()
    };
    if let Some(ev) = evaluation {
        slo.good = ev.compliance.good;
        slo.total = ev.compliance.total;
        slo.budget_remaining = ev.budget_remaining;
        slo.complete = ev.complete;
        slo.severity = ev.severity.name().to_owned();
        slo.burn_rates = ev
            .burn_by_window()
            .into_iter()
            .map(|(secs, rate)| BurnRate {
                window: promql_duration(secs),
                rate,
            })
            .collect();
    }
    slo
}

impl FleetSlos {
    /// The specs evaluated, in the configuration's order.
    pub fn specs(&self) -> Vec<SloSpec> {
        self.entries.iter().map(|e| e.spec.clone()).collect()
    }
}

/// The good and total counts a report carries for the SLO `name`, and
/// whether the agent saw that SLO's window whole; `None` when the report
/// does not carry it.
fn counts(report: &AgentReport, name: &str) -> Option<WindowCounts> {
    let mut found = false;
    let mut out = WindowCounts {
        end_unix_secs: 0,
        good: 0,
        total: 0,
        complete: true,
    };
    let names_slo = |labels: &[u32]| {
        labels.chunks_exact(2).any(|kv| {
            let &[k, v] = kv else { return false };
            report.strings.get(k as usize).map(String::as_str) == Some(names::ATTR_SLO_NAME)
                && report.strings.get(v as usize).map(String::as_str) == Some(name)
        })
    };
    // Only the SLO metrics' points are looked at: a report holds thousands
    // of other series, and this runs for every report and fleet SLO.
    let slo_metric = |m: &&sonde_proto::v1::Metric| {
        matches!(
            m.name.as_str(),
            names::SLO_GOOD | names::SLO_TOTAL | names::SLO_COMPLETE
        )
    };
    for m in report.metrics.iter().filter(slo_metric) {
        let kind = MetricKind::try_from(m.kind);
        for p in m.points.iter().filter(|p| names_slo(&p.label_refs)) {
            match (m.name.as_str(), kind) {
                (names::SLO_GOOD, Ok(MetricKind::Counter)) => {
                    out.good += p.count;
                    found = true;
                }
                (names::SLO_TOTAL, Ok(MetricKind::Counter)) => out.total += p.count,
                // The agent's own verdict for this SLO in this window: a
                // loss in another family does not make it incomplete.
                (names::SLO_COMPLETE, Ok(MetricKind::Gauge)) => out.complete &= p.value >= 1.0,
                _ => {}
            }
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use sonde_proto::{
        series::StringTable,
        v1::{Metric, NodeIdentity, Point},
    };

    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "node-1"));
        assert!(glob("node-?", "node-1"));
        assert!(glob("web-*-a", "web-12-a"));
        assert!(!glob("web-*-a", "web-12-b"));
        assert!(glob("db", "db"));
        assert!(!glob("db", "db2"));
    }

    fn report(node: &str, seq: u64, good: u64, total: u64) -> AgentReport {
        let mut t = StringTable::new();
        let point = |t: &mut StringTable, count: u64| Point {
            label_refs: t.labels(&[(names::ATTR_SLO_NAME, "open")]),
            count,
            histogram: None,
            value: 0.0,
            ..Default::default()
        };
        let metrics = vec![
            Metric {
                name: names::SLO_GOOD.into(),
                unit: "{event}".into(),
                description: String::new(),
                kind: MetricKind::Counter as i32,
                points: vec![point(&mut t, good)],
            },
            Metric {
                name: names::SLO_TOTAL.into(),
                unit: "{event}".into(),
                description: String::new(),
                kind: MetricKind::Counter as i32,
                points: vec![point(&mut t, total)],
            },
        ];
        AgentReport {
            node: Some(NodeIdentity {
                node_name: node.into(),
                ..Default::default()
            }),
            sequence: seq,
            window_end_unix_ns: (1_700_000_000 + 10 * seq) * 1_000_000_000,
            complete: true,
            metrics,
            strings: t.into_strings(),
            ..Default::default()
        }
    }

    #[test]
    fn the_fleet_sums_good_and_total_over_matching_nodes() {
        let specs = sonde_slo::spec::parse(
            "sonde.toml",
            "[[slo]]\nname = \"open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\nnodes = \"web-*\"\n",
        )
        .unwrap();
        let mut fleet = FleetSlos::new(specs);
        for seq in 1..=3 {
            fleet.add("web-1", &report("web-1", seq, 990, 1000)); // 1 % bad
            fleet.add("web-2", &report("web-2", seq, 970, 1000)); // 3 % bad
            fleet.add("db-1", &report("db-1", seq, 0, 1000)); // not selected
        }
        let slo = &fleet.list()[0];
        assert_eq!((slo.good, slo.total), (5880, 6000));
        assert_eq!(slo.nodes, ["web-1", "web-2"]);
        // 2 % bad against 1 % allowed: burn rate 2 in every window.
        let five = slo.burn_rates.iter().find(|b| b.window == "5m").unwrap();
        assert!((five.rate - 2.0).abs() < 1e-9, "{slo:?}");
        // Above 1x on both of the ticket rule's windows, below the pages' 6x.
        assert_eq!(slo.severity, "ticket");
        assert!(slo.complete);

        // One node's window that lost the SLO's data makes the fleet's
        // evaluation incomplete; another SLO's or family's loss would not.
        let mut lossy = report("web-1", 4, 990, 1000);
        let mut t = StringTable::new();
        for s in &lossy.strings {
            t.get(s);
        }
        lossy.metrics.push(Metric {
            name: names::SLO_COMPLETE.into(),
            unit: String::new(),
            description: String::new(),
            kind: MetricKind::Gauge as i32,
            points: vec![Point {
                label_refs: t.labels(&[(names::ATTR_SLO_NAME, "open")]),
                count: 0,
                histogram: None,
                value: 0.0,
                ..Default::default()
            }],
        });
        lossy.strings = t.into_strings();
        fleet.add("web-1", &lossy);
        let slo = &fleet.list()[0];
        assert!(!slo.complete, "{slo:?}");
        assert_eq!(slo.total, 7000);
    }
}
