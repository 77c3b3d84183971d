//! Cumulative series: the sum of every window report's deltas, per metric and
//! label set, and each series' value in the latest window it appeared in.
//! The agent keeps one for its OTLP and Prometheus exporters, the collector
//! one per node.
//!
//! Labels are interned: a report's string table is mapped once per report
//! to shared strings, and a series is then found by hashing the addresses of
//! its label strings, so merging a report allocates nothing for known series.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    sync::Arc,
};

use hashbrown::{DefaultHashBuilder, HashSet, HashTable};

use crate::{
    histogram, names,
    v1::{
        AgentReport, ExponentialHistogram, Label, LabeledMetric, LabeledPoint, LossRecord, Metric,
        MetricKind, MetricTotal,
    },
};

/// An interned string.
pub type Sym = Arc<str>;

/// Cumulative values of every series seen.
#[derive(Default)]
pub struct Series {
    metrics: Vec<MetricAcc>,
    hasher: DefaultHashBuilder,
    strings: HashSet<Sym>,
    /// Scratch: the current report's string table, interned.
    table: Vec<Sym>,
    /// Scratch: the current point's labels.
    scratch: Vec<(Sym, Sym)>,
}

/// One metric's cumulative series.
pub struct MetricAcc {
    /// OTel name.
    pub name: String,
    /// UCUM unit.
    pub unit: String,
    /// Description.
    pub description: String,
    /// Counter or histogram.
    pub kind: MetricKind,
    points: HashTable<PointAcc>,
}

/// One series.
pub struct PointAcc {
    /// Attribution labels (key, value), in the order the agent sent them.
    pub labels: Vec<(Sym, Sym)>,
    hash: u64,
    /// Counters: the sum of increases.
    pub count: u64,
    /// Histograms: every sample so far.
    pub histogram: ExponentialHistogram,
    /// The window this series last appeared in.
    pub latest_window: u64,
    /// Counters: the increase in that window.
    pub latest_count: u64,
    /// Histograms: the samples of that window.
    pub latest_histogram: ExponentialHistogram,
    /// Gauges: the value of the latest window.
    pub value: f64,
}

impl PointAcc {
    /// Samples (histograms) or increments (counters).
    pub fn total(&self, kind: MetricKind) -> u64 {
        match kind {
            MetricKind::Histogram => histogram::count(&self.histogram),
            MetricKind::Gauge => 0,
            _ => self.count,
        }
    }
}

impl MetricAcc {
    /// The series, sorted by labels (for stable output).
    pub fn points(&self) -> Vec<&PointAcc> {
        let mut out: Vec<&PointAcc> = self.points.iter().collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the metric has no series.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Sum of every series' total.
    pub fn total(&self) -> u64 {
        self.points
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.total(self.kind)))
    }
}

fn same_labels(a: &[(Sym, Sym)], b: &[(Sym, Sym)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ak, av), (bk, bv))| Arc::ptr_eq(ak, bk) && Arc::ptr_eq(av, bv))
}

impl Series {
    /// No series yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, text: &str) -> Sym {
        if let Some(s) = self.strings.get(text) {
            return s.clone();
        }
        let s: Sym = Arc::from(text);
        self.strings.insert(s.clone());
        s
    }

    /// Adds the metrics of window number `window`, whose points' labels
    /// refer to `strings` (a report validated by [`crate::validate`]).
    pub fn add(&mut self, metrics: &[Metric], strings: &[String], window: u64) {
        self.merge(metrics, strings, window, None);
    }

    /// Adds a report's window (numbered by its sequence), metrics and loss
    /// records, and writes into each point and loss record its series'
    /// cumulative value after the window (`total_count`,
    /// `total_histogram`), counted since `start_unix_ns`: the report then
    /// carries the agent's totals, so that whoever writes it to a store
    /// writes the same samples from it alone.
    pub fn add_report(&mut self, report: &mut AgentReport, start_unix_ns: u64) {
        let mut totals = Vec::new();
        self.merge(
            &report.metrics,
            &report.strings,
            report.sequence,
            Some(&mut totals),
        );
        let mut totals = totals.into_iter();
        for p in report.metrics.iter_mut().flat_map(|m| m.points.iter_mut()) {
            // One total per point, in order (a point merge skipped leaves
            // the totals absent from there on, never misplaced).
            let Some((count, histogram)) = totals.next() else {
                break;
            };
            p.total_count = count;
            p.total_histogram = histogram;
        }
        let mut totals = Vec::new();
        self.merge_losses(&report.losses, report.sequence, Some(&mut totals));
        for (l, total) in report.losses.iter_mut().zip(totals) {
            l.total_count = total;
        }
        report.totals_start_unix_ns = start_unix_ns;
    }

    fn merge(
        &mut self,
        metrics: &[Metric],
        strings: &[String],
        window: u64,
        mut totals: Option<&mut Vec<(u64, Option<ExponentialHistogram>)>>,
    ) {
        let mut table = std::mem::take(&mut self.table);
        table.clear();
        table.extend(strings.iter().map(|s| self.intern(s)));
        for m in metrics {
            let kind = MetricKind::try_from(m.kind).unwrap_or(MetricKind::Unspecified);
            if kind == MetricKind::Unspecified {
                if let Some(t) = totals.as_deref_mut() {
                    t.extend(m.points.iter().map(|_| (0, None)));
                }
                continue;
            }
            let at = self.metric_index(&m.name, &m.unit, &m.description, kind);
            for p in &m.points {
                let mut labels = std::mem::take(&mut self.scratch);
                labels.clear();
                labels.extend(p.label_refs.chunks_exact(2).filter_map(|kv| {
                    let &[k, v] = kv else { return None };
                    Some((
                        table.get(k as usize)?.clone(),
                        table.get(v as usize)?.clone(),
                    ))
                }));
                let point =
                    self.add_point(at, &labels, p.count, p.histogram.as_ref(), p.value, window);
                if let Some(t) = totals.as_deref_mut() {
                    t.push(match point {
                        Some(acc) => match kind {
                            MetricKind::Histogram => (0, Some(acc.histogram.clone())),
                            MetricKind::Counter => (acc.count, None),
                            _ => (0, None),
                        },
                        None => (0, None),
                    });
                }
                self.scratch = labels;
            }
        }
        self.table = table;
    }

    /// Adds window `window`'s loss records to the `sonde.agent.dropped` counter.
    pub fn add_losses(&mut self, losses: &[LossRecord], window: u64) {
        self.merge_losses(losses, window, None);
    }

    fn merge_losses(
        &mut self,
        losses: &[LossRecord],
        window: u64,
        mut totals: Option<&mut Vec<u64>>,
    ) {
        if losses.is_empty() {
            return;
        }
        let at = self.metric_index(
            names::AGENT_DROPPED,
            names::UNIT_EVENTS,
            "Events sonde lost, by stage, reason and probe",
            MetricKind::Counter,
        );
        for l in losses {
            let labels = [
                (self.intern(names::ATTR_STAGE), self.intern(&l.stage)),
                (self.intern(names::ATTR_REASON), self.intern(&l.reason)),
                (self.intern(names::ATTR_PROBE), self.intern(&l.probe)),
            ];
            let total = self
                .add_point(at, &labels, l.count, None, 0.0, window)
                .map_or(0, |p| p.count);
            if let Some(t) = totals.as_deref_mut() {
                t.push(total);
            }
        }
    }

    fn metric_index(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        kind: MetricKind,
    ) -> usize {
        if let Some(i) = self
            .metrics
            .iter()
            .position(|m| m.name == name && m.kind == kind)
        {
            return i;
        }
        self.metrics.push(MetricAcc {
            name: name.to_owned(),
            unit: unit.to_owned(),
            description: description.to_owned(),
            kind,
            points: HashTable::new(),
        });
        self.metrics.len() - 1
    }

    fn add_point(
        &mut self,
        at: usize,
        labels: &[(Sym, Sym)],
        count: u64,
        hist: Option<&ExponentialHistogram>,
        value: f64,
        window: u64,
    ) -> Option<&PointAcc> {
        let mut hasher = self.hasher.build_hasher();
        for (k, v) in labels {
            hasher.write_usize(Arc::as_ptr(k).cast::<u8>() as usize);
            hasher.write_usize(Arc::as_ptr(v).cast::<u8>() as usize);
        }
        let hash = hasher.finish();
        let metric = self.metrics.get_mut(at)?;
        let point = match metric
            .points
            .entry(hash, |p| same_labels(&p.labels, labels), |p| p.hash)
        {
            hashbrown::hash_table::Entry::Occupied(o) => o.into_mut(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let empty = ExponentialHistogram {
                    scale: sonde_slo::Histogram::SCALE,
                    ..Default::default()
                };
                v.insert(PointAcc {
                    labels: labels.to_vec(),
                    hash,
                    count: 0,
                    histogram: empty.clone(),
                    latest_window: window,
                    latest_count: 0,
                    latest_histogram: empty,
                    value,
                })
                .into_mut()
            }
        };
        point.count = point.count.saturating_add(count);
        if window >= point.latest_window {
            // A late resend of an older window does not roll a gauge back.
            point.value = value;
        }
        if point.latest_window != window {
            point.latest_window = window;
            point.latest_count = 0;
            point.latest_histogram.zero_count = 0;
            point.latest_histogram.bucket_counts.clear();
        }
        point.latest_count = point.latest_count.saturating_add(count);
        if let Some(h) = hist {
            histogram::merge_into(&mut point.histogram, h);
            histogram::merge_into(&mut point.latest_histogram, h);
        }
        Some(point)
    }

    /// Every metric.
    pub fn metrics(&self) -> &[MetricAcc] {
        &self.metrics
    }

    /// Number of series, all metrics.
    pub fn len(&self) -> usize {
        self.metrics.iter().map(MetricAcc::len).sum()
    }

    /// Whether there is no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cumulative values, labels spelled out (series sorted by labels).
    pub fn to_labeled(&self) -> Vec<LabeledMetric> {
        self.labeled(None)
    }

    /// The values of window `window`: the series that appeared in it, with
    /// what it added.
    pub fn window_to_labeled(&self, window: u64) -> Vec<LabeledMetric> {
        self.labeled(Some(window))
    }

    fn labeled(&self, window: Option<u64>) -> Vec<LabeledMetric> {
        self.metrics
            .iter()
            .map(|m| LabeledMetric {
                name: m.name.clone(),
                unit: m.unit.clone(),
                description: m.description.clone(),
                kind: m.kind as i32,
                points: m
                    .points()
                    .into_iter()
                    .filter(|p| window.is_none_or(|w| p.latest_window == w))
                    .map(|p| {
                        let (count, hist) = match window {
                            None => (p.count, &p.histogram),
                            Some(_) => (p.latest_count, &p.latest_histogram),
                        };
                        LabeledPoint {
                            labels: p.labels.iter().map(|(k, v)| label(k, v)).collect(),
                            count: if m.kind == MetricKind::Counter {
                                count
                            } else {
                                0
                            },
                            histogram: (m.kind == MetricKind::Histogram).then(|| hist.clone()),
                            value: if m.kind == MetricKind::Gauge {
                                p.value
                            } else {
                                0.0
                            },
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Per metric, the sum of its series.
    pub fn totals(&self) -> Vec<MetricTotal> {
        self.metrics
            .iter()
            .map(|m| MetricTotal {
                name: m.name.clone(),
                unit: m.unit.clone(),
                count: m.total(),
            })
            .collect()
    }
}

/// Per metric of a window, the sum of its points.
pub fn window_totals(metrics: &[Metric]) -> Vec<MetricTotal> {
    metrics
        .iter()
        .map(|m| MetricTotal {
            name: m.name.clone(),
            unit: m.unit.clone(),
            count: m.points.iter().fold(0u64, |a, p| {
                a.saturating_add(match &p.histogram {
                    Some(h) => histogram::count(h),
                    None => p.count,
                })
            }),
        })
        .collect()
}

/// A label.
pub fn label(key: &str, value: &str) -> Label {
    Label {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// Builds a report's string table: each distinct string once.
#[derive(Debug, Default)]
pub struct StringTable {
    index: std::collections::HashMap<String, u32>,
    strings: Vec<String>,
}

impl StringTable {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `s`, added when new.
    pub fn get(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.index.insert(s.to_owned(), i);
        self.strings.push(s.to_owned());
        i
    }

    /// `[key, value, ...]` label references.
    pub fn labels(&mut self, pairs: &[(&str, &str)]) -> Vec<u32> {
        pairs
            .iter()
            .flat_map(|(k, v)| [self.get(k), self.get(v)])
            .collect()
    }

    /// The table, for `AgentReport::strings`.
    pub fn into_strings(self) -> Vec<String> {
        self.strings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Point;

    fn counter(name: &str, table: &mut StringTable, points: &[(&str, u64)]) -> Metric {
        Metric {
            name: name.into(),
            unit: "{error}".into(),
            description: String::new(),
            kind: MetricKind::Counter as i32,
            points: points
                .iter()
                .map(|(v, n)| Point {
                    label_refs: table.labels(&[("k", v)]),
                    count: *n,
                    histogram: None,
                    value: 0.0,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn windows_add_up_per_series() {
        let mut s = Series::new();
        let mut t = StringTable::new();
        let m = counter("c", &mut t, &[("a", 1), ("b", 2)]);
        s.add(&[m], &t.into_strings(), 1);
        // Another report numbers its strings differently.
        let mut t = StringTable::new();
        t.get("unrelated");
        let m = counter("c", &mut t, &[("a", 10)]);
        s.add(&[m], &t.into_strings(), 2);
        s.add_losses(
            &[LossRecord {
                stage: "outbox".into(),
                probe: "all".into(),
                reason: "outbox_full".into(),
                count: 3,
                ..Default::default()
            }],
            2,
        );
        assert_eq!(s.len(), 3);
        let all = s.to_labeled();
        assert_eq!(all[0].points.len(), 2);
        assert_eq!(all[0].points[0].labels[0].value, "a");
        assert_eq!(all[0].points[0].count, 11);
        assert_eq!(all[0].points[1].count, 2);
        let totals = s.totals();
        assert_eq!((totals[0].count, totals[1].count), (13, 3));
        assert_eq!(totals[1].name, names::AGENT_DROPPED);
        let latest = s.window_to_labeled(2);
        assert_eq!(latest[0].points.len(), 1, "b was not in window 2");
        assert_eq!(latest[0].points[0].count, 10);
    }
}
