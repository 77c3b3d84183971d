//! Cumulative series: the sum of every window report's deltas, per metric and
//! label set. The agent keeps one for its OTLP and Prometheus exporters, the
//! collector one per node. Lookups hash the labels once and compare them on a
//! hit, so a report's points are merged without allocating for known series.

use std::hash::{BuildHasher as _, Hasher as _};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::{
    histogram, names,
    v1::{ExponentialHistogram, Label, LossRecord, Metric, MetricKind, MetricTotal, Point},
};

/// Cumulative values of every series seen.
#[derive(Default)]
pub struct Series {
    metrics: Vec<MetricAcc>,
    hasher: DefaultHashBuilder,
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
    /// Attribution labels, in the order the agent sent them.
    pub labels: Vec<Label>,
    hash: u64,
    /// Counters: the sum of increases.
    pub count: u64,
    /// Histograms: every sample so far.
    pub histogram: ExponentialHistogram,
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
        out.sort_by(|a, b| {
            let ka = a.labels.iter().map(|l| (&l.key, &l.value));
            let kb = b.labels.iter().map(|l| (&l.key, &l.value));
            ka.cmp(kb)
        });
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

    /// Adds a window's metrics (validated, see [`crate::validate`]).
    pub fn add(&mut self, metrics: &[Metric]) {
        for m in metrics {
            let kind = MetricKind::try_from(m.kind).unwrap_or(MetricKind::Unspecified);
            if kind == MetricKind::Unspecified {
                continue;
            }
            let at = self.metric_index(&m.name, &m.unit, &m.description, kind);
            for p in &m.points {
                self.add_point(at, &p.labels, p.count, p.histogram.as_ref());
            }
        }
    }

    /// Adds a window's loss records to the `sonde.agent.dropped` counter.
    pub fn add_losses(&mut self, losses: &[LossRecord]) {
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
            self.add_point(at, &labels, l.count, None);
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
        labels: &[Label],
        count: u64,
        hist: Option<&ExponentialHistogram>,
    ) {
        let mut hasher = self.hasher.build_hasher();
        for l in labels {
            hasher.write(l.key.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(l.value.as_bytes());
            hasher.write_u8(0xfe);
        }
        let hash = hasher.finish();
        let Some(metric) = self.metrics.get_mut(at) else {
            return;
        };
        let point = match metric.points.find_mut(hash, |p| p.labels == labels) {
            Some(p) => p,
            None => metric
                .points
                .insert_unique(
                    hash,
                    PointAcc {
                        labels: labels.to_vec(),
                        hash,
                        count: 0,
                        histogram: ExponentialHistogram {
                            scale: sonde_slo::Histogram::SCALE,
                            ..Default::default()
                        },
                    },
                    |p| p.hash,
                )
                .into_mut(),
        };
        point.count = point.count.saturating_add(count);
        if let Some(h) = hist {
            histogram::merge_into(&mut point.histogram, h);
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
                    .map(|p| Point {
                        labels: p.labels.clone(),
                        count: if m.kind == MetricKind::Counter {
                            p.count
                        } else {
                            0
                        },
                        histogram: (m.kind == MetricKind::Histogram).then(|| p.histogram.clone()),
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
        s.add(&[counter("c", &[("a", 1), ("b", 2)])]);
        s.add(&[counter("c", &[("a", 10)])]);
        s.add_losses(&[LossRecord {
            stage: "outbox".into(),
            probe: "all".into(),
            reason: "outbox_full".into(),
            count: 3,
        }]);
        assert_eq!(s.len(), 3);
        let wire = s.to_wire();
        assert_eq!(wire[0].points.len(), 2);
        assert_eq!(wire[0].points[0].count, 11);
        assert_eq!(wire[0].points[1].count, 2);
        let totals = s.totals();
        assert_eq!((totals[0].count, totals[1].count), (13, 3));
        assert_eq!(totals[1].name, names::AGENT_DROPPED);
    }
}
