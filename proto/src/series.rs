//! Cumulative series: the sum of every window report's deltas, per metric and
//! label set. The agent keeps one for its OTLP and Prometheus exporters, the
//! collector one per node. Lookups hash the labels once and compare them on a
//! hit, so a report's points are merged without allocating for known series.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    sync::Arc,
};

use hashbrown::{DefaultHashBuilder, HashSet, HashTable};

use crate::{
    histogram, names,
    v1::{ExponentialHistogram, Label, LossRecord, Metric, MetricKind, MetricTotal, Point},
};

/// Cumulative values of every series seen, and each series' value in the
/// latest window it appeared in.
#[derive(Default)]
pub struct Series {
    metrics: Vec<MetricAcc>,
    hasher: DefaultHashBuilder,
    /// Label keys and values, stored once (a cgroup path labels many series).
    strings: HashSet<Arc<str>>,
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

/// One series' cumulative value.
pub struct PointAcc {
    /// Attribution labels (key, value), in the order the agent sent them.
    pub labels: Vec<(Arc<str>, Arc<str>)>,
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
}

impl PointAcc {
    /// Samples (histograms) or increments (counters).
    pub fn total(&self, kind: MetricKind) -> u64 {
        match kind {
            MetricKind::Histogram => histogram::count(&self.histogram),
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

impl Series {
    /// No series yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the metrics (validated, see [`crate::validate`]) of window
    /// number `window`.
    pub fn add(&mut self, metrics: &[Metric], window: u64) {
        for m in metrics {
            let kind = MetricKind::try_from(m.kind).unwrap_or(MetricKind::Unspecified);
            if kind == MetricKind::Unspecified {
                continue;
            }
            let at = self.metric_index(&m.name, &m.unit, &m.description, kind);
            for p in &m.points {
                self.add_point(at, &p.labels, p.count, p.histogram.as_ref(), window);
            }
        }
    }

    /// Adds window `window`'s loss records to the `sonde.agent.dropped` counter.
    pub fn add_losses(&mut self, losses: &[LossRecord], window: u64) {
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
                label(names::ATTR_STAGE, &l.stage),
                label(names::ATTR_REASON, &l.reason),
                label(names::ATTR_PROBE, &l.probe),
            ];
            self.add_point(at, &labels, l.count, None, window);
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

    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(s) = self.strings.get(text) {
            return s.clone();
        }
        let s: Arc<str> = Arc::from(text);
        self.strings.insert(s.clone());
        s
    }

    fn add_point(
        &mut self,
        at: usize,
        labels: &[Label],
        count: u64,
        hist: Option<&ExponentialHistogram>,
        window: u64,
    ) {
        let mut hasher = self.hasher.build_hasher();
        for l in labels {
            hasher.write(l.key.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(l.value.as_bytes());
            hasher.write_u8(0xfe);
        }
        let hash = hasher.finish();
        let same = |p: &PointAcc| {
            p.labels.len() == labels.len()
                && p.labels
                    .iter()
                    .zip(labels)
                    .all(|((k, v), l)| **k == *l.key && **v == *l.value)
        };
        let known = self
            .metrics
            .get(at)
            .is_some_and(|m| m.points.find(hash, same).is_some());
        if !known {
            let interned = labels
                .iter()
                .map(|l| (self.intern(&l.key), self.intern(&l.value)))
                .collect();
            let empty = ExponentialHistogram {
                scale: sonde_slo::Histogram::SCALE,
                ..Default::default()
            };
            if let Some(m) = self.metrics.get_mut(at) {
                m.points.insert_unique(
                    hash,
                    PointAcc {
                        labels: interned,
                        hash,
                        count: 0,
                        histogram: empty.clone(),
                        latest_window: window,
                        latest_count: 0,
                        latest_histogram: empty,
                    },
                    |p| p.hash,
                );
            }
        }
        let Some(point) = self
            .metrics
            .get_mut(at)
            .and_then(|m| m.points.find_mut(hash, same))
        else {
            return;
        };
        point.count = point.count.saturating_add(count);
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

    /// The cumulative values as wire metrics (series sorted by labels).
    pub fn to_wire(&self) -> Vec<Metric> {
        self.wire(None)
    }

    /// The values of window `window` as wire metrics: the series that
    /// appeared in it, with what it added.
    pub fn window_to_wire(&self, window: u64) -> Vec<Metric> {
        self.wire(Some(window))
    }

    fn wire(&self, window: Option<u64>) -> Vec<Metric> {
        self.metrics
            .iter()
            .map(|m| Metric {
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
                        Point {
                            labels: p.labels.iter().map(|(k, v)| label(k, v)).collect(),
                            count: if m.kind == MetricKind::Counter {
                                count
                            } else {
                                0
                            },
                            histogram: (m.kind == MetricKind::Histogram).then(|| hist.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, points: &[(&str, u64)]) -> Metric {
        Metric {
            name: name.into(),
            unit: "{error}".into(),
            description: String::new(),
            kind: MetricKind::Counter as i32,
            points: points
                .iter()
                .map(|(v, n)| Point {
                    labels: vec![label("k", v)],
                    count: *n,
                    histogram: None,
                })
                .collect(),
        }
    }

    #[test]
    fn windows_add_up_per_series() {
        let mut s = Series::new();
        s.add(&[counter("c", &[("a", 1), ("b", 2)])], 1);
        s.add(&[counter("c", &[("a", 10)])], 2);
        s.add_losses(
            &[LossRecord {
                stage: "outbox".into(),
                probe: "all".into(),
                reason: "outbox_full".into(),
                count: 3,
            }],
            2,
        );
        assert_eq!(s.len(), 3);
        let wire = s.to_wire();
        assert_eq!(wire[0].points.len(), 2);
        assert_eq!(wire[0].points[0].count, 11);
        assert_eq!(wire[0].points[1].count, 2);
        let totals = s.totals();
        assert_eq!((totals[0].count, totals[1].count), (13, 3));
        assert_eq!(totals[1].name, names::AGENT_DROPPED);
        let latest = s.window_to_wire(2);
        assert_eq!(latest[0].points.len(), 1, "b was not in window 2");
        assert_eq!(latest[0].points[0].count, 10);
    }
}
