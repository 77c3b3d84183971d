//! The nodes' explanations of their firing SLO alerts, read back from the
//! store: the series `sonde_proto::remote_write::window_series` writes for
//! each report's `explanations` (`sonde_slo_explanation_*`), those of each
//! node's latest window only.

use std::collections::{BTreeMap, HashMap};

use sonde_proto::{
    names,
    prometheus::label_name,
    remote_write::gauge_name,
    v1::{Culprit, Finding, NodeExplanation, SloExplanation},
};

use super::{unnamed, Labels, Sample};

/// The key under which a series' name is kept beside its other labels in
/// the last-sample times (`timestamp()` drops `__name__`, and the series
/// of one finding differ only by it).
pub(super) const NAME_COPY: &str = "__series__";

/// The store's names of the explanation series.
pub(super) struct Names {
    pub host: String,
    windows: String,
    explanation_incomplete: String,
    score: String,
    magnitude: String,
    share: String,
    incomplete: String,
    culprit_magnitude: String,
    culprit_share: String,
    slo: String,
    severity: String,
    rank: String,
    kind: String,
    unit: String,
    culprit_rank: String,
    culprit_kind: String,
    culprit_name: String,
}

impl Names {
    pub fn new() -> Self {
        Self {
            host: label_name(names::RES_HOST_NAME),
            windows: gauge_name(names::STORE_EXPLANATION_WINDOWS, ""),
            explanation_incomplete: gauge_name(names::STORE_EXPLANATION_INCOMPLETE, ""),
            score: gauge_name(names::STORE_FINDING_SCORE, ""),
            magnitude: gauge_name(names::STORE_FINDING_MAGNITUDE, ""),
            share: gauge_name(names::STORE_FINDING_SHARE, ""),
            incomplete: gauge_name(names::STORE_FINDING_INCOMPLETE, ""),
            culprit_magnitude: gauge_name(names::STORE_CULPRIT_MAGNITUDE, ""),
            culprit_share: gauge_name(names::STORE_CULPRIT_SHARE, ""),
            slo: label_name(names::ATTR_SLO_NAME),
            severity: label_name(names::ATTR_SLO_SEVERITY),
            rank: label_name(names::ATTR_FINDING_RANK),
            kind: label_name(names::ATTR_FINDING_KIND),
            unit: label_name(names::ATTR_FINDING_UNIT),
            culprit_rank: label_name(names::ATTR_CULPRIT_RANK),
            culprit_kind: label_name(names::ATTR_CULPRIT_KIND),
            culprit_name: label_name(names::ATTR_CULPRIT_NAME),
        }
    }

    /// A selector of every explanation series.
    pub fn selector(&self) -> String {
        let prefix = gauge_name("sonde.slo.explanation", "");
        format!("{{__name__=~\"{prefix}_.+\"}}")
    }

    /// Every explanation series' name, for `timestamp()` one by one: that
    /// of a function's answer (a `label_replace` keeping the name) would
    /// be the evaluation's time, not the sample's.
    pub fn series(&self) -> [&String; 8] {
        [
            &self.windows,
            &self.explanation_incomplete,
            &self.score,
            &self.magnitude,
            &self.share,
            &self.incomplete,
            &self.culprit_magnitude,
            &self.culprit_share,
        ]
    }
}

/// One explanation being put together.
#[derive(Default)]
struct Partial {
    severity: String,
    windows: u32,
    incomplete: u32,
    marked: bool,
    /// By rank.
    findings: BTreeMap<u32, Finding>,
    /// By (finding rank, culprit rank).
    culprits: BTreeMap<(u32, u32), Culprit>,
}

/// The explanations in `values` written with each node's latest window
/// (`ends`: its end, Unix seconds, by node; `stamps`: each series' last
/// sample time, by its labels and [`NAME_COPY`]), ranked as the replicas
/// rank their own.
pub(super) fn assemble(
    n: &Names,
    values: Vec<Sample>,
    stamps: &HashMap<Labels, f64>,
    ends: &HashMap<String, f64>,
) -> Vec<NodeExplanation> {
    let mut parts: BTreeMap<(String, String), Partial> = BTreeMap::new();
    for s in values {
        let get = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        let Some(name) = s.labels.get("__name__") else {
            continue;
        };
        let (host, slo) = (get(&n.host), get(&n.slo));
        let Some(end) = ends.get(&host) else { continue };
        let mut key = unnamed(&s.labels);
        key.insert(NAME_COPY.to_owned(), name.clone());
        let latest = stamps
            .get(&key)
            .is_some_and(|t| super::written_at(*t, *end));
        if !latest || slo.is_empty() {
            continue;
        }
        let part = parts.entry((host, slo)).or_default();
        let rank = get(&n.rank).parse::<u32>().unwrap_or(0);
        let culprit_rank = get(&n.culprit_rank).parse::<u32>().unwrap_or(0);
        let value = s.value;
        if *name == n.windows {
            part.marked = true;
            part.severity = get(&n.severity);
            part.windows = value as u32;
        } else if *name == n.explanation_incomplete {
            part.incomplete = value as u32;
        } else if [&n.score, &n.magnitude, &n.share, &n.incomplete].contains(&name) {
            let f = part.findings.entry(rank).or_insert_with(|| Finding {
                kind: get(&n.kind),
                unit: get(&n.unit),
                ..Finding::default()
            });
            match name {
                x if *x == n.score => f.score = value,
                x if *x == n.magnitude => f.magnitude = value,
                x if *x == n.share => f.share = Some(value),
                _ => f.incomplete_windows = value as u32,
            }
        } else if *name == n.culprit_magnitude || *name == n.culprit_share {
            let c = part
                .culprits
                .entry((rank, culprit_rank))
                .or_insert_with(|| Culprit {
                    kind: get(&n.culprit_kind),
                    name: get(&n.culprit_name),
                    ..Culprit::default()
                });
            if *name == n.culprit_share {
                c.share = Some(value);
            } else {
                c.magnitude = value;
            }
        }
    }
    let mut out: Vec<NodeExplanation> = parts
        .into_iter()
        .filter(|(_, p)| p.marked)
        .map(|((node, slo), mut p)| {
            for ((rank, _), c) in std::mem::take(&mut p.culprits) {
                if let Some(f) = p.findings.get_mut(&rank) {
                    f.culprits.push(c);
                }
            }
            let mut findings: Vec<Finding> = p.findings.into_values().collect();
            for f in &mut findings {
                f.summary = summary(f);
            }
            let end = ends.get(&node).copied().unwrap_or(0.0);
            NodeExplanation {
                window_end_unix_ns: (end * 1e9).round().max(0.0) as u64,
                explanation: Some(SloExplanation {
                    slo,
                    severity: p.severity,
                    verdict: verdict(&findings, p.windows, p.incomplete),
                    findings,
                    windows: p.windows,
                    incomplete_windows: p.incomplete,
                }),
                node,
            }
        })
        .collect();
    crate::fleet::rank(&mut out);
    out
}

/// A finding's sentence rebuilt from its stored figures: the magnitude in
/// its unit and the top culprit with its share.
fn summary(f: &Finding) -> String {
    if f.kind == "data_incomplete" {
        return format!(
            "{} window(s) lost data or had a probe down: the figures above are lower bounds",
            f.incomplete_windows
        );
    }
    let unit = f.unit.trim_matches(|c| c == '{' || c == '}');
    let mut out = match unit {
        "1" => format!("{:.0}%", 100.0 * f.magnitude),
        "" => format!("{:.3}", f.magnitude),
        _ => format!("{:.3} {unit}", f.magnitude),
    };
    if let Some(c) = f.culprits.first() {
        out.push_str(&format!("; top {} {}", c.kind, c.name));
        if let Some(share) = c.share {
            out.push_str(&format!(" ({:.0}%)", 100.0 * share));
        }
    }
    out
}

/// The verdict as the agent words it: the top finding that is not about
/// lost data, with the incomplete windows said.
fn verdict(findings: &[Finding], windows: u32, incomplete: u32) -> String {
    let caveat = if incomplete > 0 {
        format!("; {incomplete} of {windows} windows incomplete, so figures are lower bounds")
    } else {
        String::new()
    };
    match findings.iter().find(|f| f.kind != "data_incomplete") {
        Some(f) => format!("{}: {}{caveat}", f.kind, f.summary),
        None => {
            format!("nothing found: no cause above its noise floor in {windows} window(s){caveat}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::v1::{AgentReport, NodeIdentity};

    fn finding(kind: &str, score: f64, culprits: &[(&str, f64)]) -> Finding {
        Finding {
            kind: kind.into(),
            score,
            magnitude: 0.25,
            unit: "s/s".into(),
            share: Some(0.5),
            culprits: culprits
                .iter()
                .map(|(name, share)| Culprit {
                    kind: "cgroup".into(),
                    name: (*name).into(),
                    magnitude: 0.2,
                    share: Some(*share),
                })
                .collect(),
            summary: "the agent's sentence".into(),
            incomplete_windows: 0,
        }
    }

    fn report(node: &str, end_ns: u64, explanations: Vec<SloExplanation>) -> AgentReport {
        AgentReport {
            node: Some(NodeIdentity {
                node_name: node.into(),
                ..Default::default()
            }),
            window_end_unix_ns: end_ns,
            totals_start_unix_ns: 1,
            explanations,
            ..Default::default()
        }
    }

    /// What a store answers for `reports` written in turn: each series'
    /// last value and last time.
    fn stored(reports: &[AgentReport]) -> (Vec<Sample>, HashMap<Labels, f64>) {
        let mut last: BTreeMap<Labels, (f64, f64)> = BTreeMap::new();
        for r in reports {
            let series = sonde_proto::remote_write::window_series(r).expect("series");
            for ts in series {
                let labels: Labels = ts
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                if !labels
                    .get("__name__")
                    .is_some_and(|n| n.starts_with("sonde_slo_explanation_"))
                {
                    continue;
                }
                let sample = ts.samples.first().expect("a sample");
                last.insert(labels, (sample.value, sample.timestamp as f64 / 1e3));
            }
        }
        let mut values = Vec::new();
        let mut stamps = HashMap::new();
        for (labels, (value, at)) in last {
            let mut key = unnamed(&labels);
            key.insert(NAME_COPY.into(), labels["__name__"].clone());
            stamps.insert(key, at);
            values.push(Sample { labels, value });
        }
        (values, stamps)
    }

    #[test]
    fn explanations_come_back_from_the_series_of_each_nodes_latest_window() {
        let older = SloExplanation {
            slo: "api".into(),
            severity: "ticket".into(),
            verdict: String::new(),
            findings: vec![
                finding("memory_reclaim", 2.9, &[]),
                finding("psi_memory", 1.5, &[]),
            ],
            windows: 10,
            incomplete_windows: 0,
        };
        let newer = SloExplanation {
            slo: "api".into(),
            severity: "page".into(),
            verdict: String::new(),
            findings: vec![
                finding("cpu_contention", 2.8, &[("/hog", 0.9), ("/other", 0.1)]),
                Finding {
                    kind: "data_incomplete".into(),
                    score: 0.0,
                    incomplete_windows: 2,
                    unit: "{window}".into(),
                    share: None,
                    culprits: vec![],
                    ..finding("", 0.0, &[])
                },
            ],
            windows: 10,
            incomplete_windows: 2,
        };
        let other = SloExplanation {
            slo: "db".into(),
            severity: "page".into(),
            verdict: String::new(),
            findings: vec![],
            windows: 4,
            incomplete_windows: 0,
        };
        let reports = [
            report("a", 10_000_000_000, vec![older]),
            // An end a hair short of the next millisecond: the samples'
            // time is truncated to the millisecond.
            report("a", 20_000_999_990, vec![newer.clone()]),
            report("b", 15_000_000_000, vec![other]),
            // c's alert stopped firing: its latest window explains nothing.
            report("c", 10_000_000_000, vec![newer.clone()]),
            report("c", 20_000_000_000, vec![]),
        ];
        let (values, stamps) = stored(&reports);
        let ends: HashMap<String, f64> = [("a", 20.000_999_99), ("b", 15.0), ("c", 20.0)]
            .into_iter()
            .map(|(n, e)| (n.to_owned(), e))
            .collect();
        let got = assemble(&Names::new(), values, &stamps, &ends);
        let nodes: Vec<&str> = got.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b"], "{got:?}");
        let a = got[0].explanation.as_ref().expect("a's");
        assert_eq!(got[0].window_end_unix_ns, 20_000_999_990);
        assert_eq!(
            (a.slo.as_str(), a.severity.as_str(), a.windows),
            ("api", "page", 10)
        );
        // Everything but the sentences, as written.
        let strip = |f: &Finding| Finding {
            summary: String::new(),
            ..f.clone()
        };
        assert_eq!(
            a.findings.iter().map(strip).collect::<Vec<_>>(),
            newer.findings.iter().map(strip).collect::<Vec<_>>()
        );
        assert_eq!(
            a.verdict,
            "cpu_contention: 0.250 s/s; top cgroup /hog (90%); 2 of 10 windows incomplete, so figures are lower bounds"
        );
        let b = got[1].explanation.as_ref().expect("b's");
        assert!(b.findings.is_empty());
        assert_eq!(
            b.verdict,
            "nothing found: no cause above its noise floor in 4 window(s)"
        );
    }

    #[test]
    fn the_selector_covers_every_series_read() {
        let n = Names::new();
        assert_eq!(n.selector(), "{__name__=~\"sonde_slo_explanation_.+\"}");
        for name in n.series() {
            assert!(name.starts_with("sonde_slo_explanation_"), "{name}");
        }
    }
}
