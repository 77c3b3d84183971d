//! Prometheus remote write 1.0: a window report becomes the samples the
//! Prometheus endpoint would show for it, stamped with the end of the
//! window, in snappy-compressed protobuf `WriteRequest`s ([`encode`]); the
//! [`sender`] delivers them to one or more stores.
//!
//! The samples come from the report alone: counters and histograms from the
//! agent's cumulative values that the report carries (`total_count`,
//! `total_histogram`, `LossRecord.total_count`), gauges from the window's
//! value. Every copy of a window (a resend after a lost ack, another
//! collector, the agent itself) therefore writes the same samples at the same
//! timestamp, and the store keeps one.
//!
//! Names and labels are those of the Prometheus text endpoint
//! ([`crate::prometheus`]), plus the node as `host_name` (as the collector's
//! fleet endpoint labels it). Histograms are classic buckets (`_bucket{le}`
//! at the scale-3 edges, `_count`; sonde keeps no sum): native histograms
//! need the receiver to enable them (Prometheus 2.42 has them behind a
//! feature flag, remote write 1.0 does not define them), and every store
//! takes classic buckets.

pub mod args;
pub mod config;
pub mod query;
pub mod sender;

use prost::Message as _;

use crate::{
    names,
    prometheus::{classic_buckets, label_name, metric_name},
    series::window_totals,
    v1::{AgentReport, MetricKind},
};

/// The generated remote-write messages (package `prometheus`).
#[allow(clippy::all, missing_docs)]
pub mod prompb {
    tonic::include_proto!("prometheus");
}

use prompb::{Label, Sample, TimeSeries, WriteRequest};

/// `Content-Type` of a remote-write request.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `Content-Encoding` of a remote-write request (snappy block format).
pub const CONTENT_ENCODING: &str = "snappy";
/// The version header's name and the value that 1.0 requires.
pub const VERSION_HEADER: (&str, &str) = ("x-prometheus-remote-write-version", "0.1.0");

/// Why a report cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The report carries no cumulative values (an agent older than remote
    /// write): writing its deltas as counters would be wrong.
    #[error(
        "the report of {node} carries no cumulative totals (agent {version}); upgrade the agent"
    )]
    NoTotals {
        /// The node.
        node: String,
        /// Its agent's version.
        version: String,
    },
    /// A request too large for snappy's block format (over 4 GiB).
    #[error("a request of {samples} samples cannot be compressed: {reason}; lower --remote-write-max-samples-per-request")]
    Compress {
        /// Samples in it.
        samples: usize,
        /// snap's reason.
        reason: String,
    },
}

/// One compressed request, ready to send.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Snappy-compressed `WriteRequest` (shared, not copied, by the
    /// queues of several stores).
    pub body: bytes::Bytes,
    /// Samples in it.
    pub samples: u64,
    /// Its size before compression.
    pub raw_bytes: usize,
    /// Time spent encoding the protobuf, ns.
    pub encode_ns: u64,
    /// Time spent compressing it, ns.
    pub compress_ns: u64,
}

pub(crate) fn ns_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The series of a report as remote-write samples at the window's end.
pub fn window_series(report: &AgentReport) -> Result<Vec<TimeSeries>, WriteError> {
    let node = report.node.as_ref();
    let node_name = node.map(|n| n.node_name.as_str()).unwrap_or_default();
    if report.totals_start_unix_ns == 0 {
        return Err(WriteError::NoTotals {
            node: node_name.to_owned(),
            version: node.map(|n| n.agent_version.clone()).unwrap_or_default(),
        });
    }
    let timestamp = i64::try_from(report.window_end_unix_ns / 1_000_000).unwrap_or(i64::MAX);
    let host = (label_name(names::RES_HOST_NAME), node_name.to_owned());
    let mut out = Vec::new();
    let mut push = |name: String, labels: &[(String, String)], le: Option<&str>, value: f64| {
        let mut l: Vec<Label> = Vec::with_capacity(labels.len() + 3);
        l.push(Label {
            name: "__name__".to_owned(),
            value: name,
        });
        l.extend(labels.iter().map(|(k, v)| Label {
            name: k.clone(),
            value: v.clone(),
        }));
        if let Some(le) = le {
            l.push(Label {
                name: "le".to_owned(),
                value: le.to_owned(),
            });
        }
        // Remote write wants the labels sorted by name.
        l.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(TimeSeries {
            labels: l,
            samples: vec![Sample { value, timestamp }],
        });
    };
    for m in &report.metrics {
        let kind = MetricKind::try_from(m.kind).unwrap_or(MetricKind::Unspecified);
        if kind == MetricKind::Unspecified {
            continue;
        }
        let name = metric_name(&m.name, &m.unit, kind);
        for p in &m.points {
            let mut labels = vec![host.clone()];
            labels.extend(p.label_refs.chunks_exact(2).filter_map(|kv| {
                let &[k, v] = kv else { return None };
                Some((
                    label_name(report.strings.get(k as usize)?),
                    report.strings.get(v as usize)?.clone(),
                ))
            }));
            match kind {
                MetricKind::Histogram => {
                    let Some(h) = &p.total_histogram else {
                        continue;
                    };
                    let bucket = format!("{name}_bucket");
                    let mut count = 0;
                    for (le, cumulative) in classic_buckets(h) {
                        count = cumulative;
                        push(bucket.clone(), &labels, Some(&le), cumulative as f64);
                    }
                    push(format!("{name}_count"), &labels, None, count as f64);
                }
                MetricKind::Counter => push(name.clone(), &labels, None, p.total_count as f64),
                MetricKind::Gauge => push(name.clone(), &labels, None, p.value),
                MetricKind::Unspecified => {}
            }
        }
    }
    let dropped = metric_name(
        names::AGENT_DROPPED,
        names::UNIT_EVENTS,
        MetricKind::Counter,
    );
    for l in &report.losses {
        let labels = [
            host.clone(),
            (label_name(names::ATTR_STAGE), l.stage.clone()),
            (label_name(names::ATTR_REASON), l.reason.clone()),
            (label_name(names::ATTR_PROBE), l.probe.clone()),
        ];
        push(dropped.clone(), &labels, None, l.total_count as f64);
    }
    // What a store needs to answer for the fleet alone (the collector's
    // `--store-url`): who wrote the window, which one it was, and whether
    // it was whole. Small: a few series per node and window.
    let id = node.cloned().unwrap_or_default();
    let info = [
        host.clone(),
        (label_name(names::RES_HOST_ID), id.machine_id),
        (label_name(names::RES_HOST_ARCH), id.arch),
        (label_name(names::RES_OS_VERSION), id.kernel),
        (label_name(names::RES_SERVICE_VERSION), id.agent_version),
    ];
    push(gauge_name(names::STORE_AGENT_INFO, ""), &info, None, 1.0);
    let node_only = [host.clone()];
    let seconds = |ns: u64| ns as f64 / 1e9;
    for (name, unit, value) in [
        (names::STORE_WINDOW_SEQUENCE, "", report.sequence as f64),
        (
            names::STORE_WINDOW_COMPLETE,
            "",
            if report.complete { 1.0 } else { 0.0 },
        ),
        (
            names::STORE_WINDOW_START,
            names::UNIT_SECONDS,
            seconds(report.window_start_unix_ns),
        ),
        (
            names::STORE_WINDOW_END,
            names::UNIT_SECONDS,
            seconds(report.window_end_unix_ns),
        ),
        (
            names::STORE_TOTALS_START,
            names::UNIT_SECONDS,
            seconds(report.totals_start_unix_ns),
        ),
    ] {
        push(gauge_name(name, unit), &node_only, None, value);
    }
    let lost: u64 = report.losses.iter().map(|l| l.count).sum();
    push(
        gauge_name(names::STORE_WINDOW_LOST, names::UNIT_EVENTS),
        &node_only,
        None,
        lost as f64,
    );
    let events = gauge_name(names::STORE_WINDOW_EVENTS, names::UNIT_EVENTS);
    for (m, total) in report.metrics.iter().zip(window_totals(&report.metrics)) {
        if m.kind == MetricKind::Gauge as i32 || m.kind == MetricKind::Unspecified as i32 {
            continue;
        }
        let labels = [host.clone(), (label_name(names::ATTR_METRIC), total.name)];
        push(events.clone(), &labels, None, total.count as f64);
    }
    let attached = gauge_name(names::STORE_PROBE_ATTACHED, "");
    for p in &report.probes {
        let labels = [
            host.clone(),
            (label_name(names::ATTR_PROBE), p.probe.clone()),
        ];
        let value = if p.state == "attached" { 1.0 } else { 0.0 };
        push(attached.clone(), &labels, None, value);
    }
    // Each firing SLO alert's explanation, for a replica other than the
    // one that took the report: a few series per finding, only while the
    // alert fires.
    let label = |k: &str, v: String| (label_name(k), v);
    for e in &report.explanations {
        let slo = [host.clone(), label(names::ATTR_SLO_NAME, e.slo.clone())];
        let mut marker = slo.to_vec();
        marker.push(label(names::ATTR_SLO_SEVERITY, e.severity.clone()));
        push(
            gauge_name(names::STORE_EXPLANATION_WINDOWS, ""),
            &marker,
            None,
            f64::from(e.windows),
        );
        push(
            gauge_name(names::STORE_EXPLANATION_INCOMPLETE, ""),
            &slo,
            None,
            f64::from(e.incomplete_windows),
        );
        for (rank, f) in (1u32..).zip(&e.findings) {
            let mut finding = slo.to_vec();
            finding.push(label(names::ATTR_FINDING_RANK, rank.to_string()));
            let mut labels = finding.clone();
            labels.push(label(names::ATTR_FINDING_KIND, f.kind.clone()));
            labels.push(label(names::ATTR_FINDING_UNIT, f.unit.clone()));
            for (name, value) in [
                (names::STORE_FINDING_SCORE, Some(f.score)),
                (names::STORE_FINDING_MAGNITUDE, Some(f.magnitude)),
                (names::STORE_FINDING_SHARE, f.share),
                (
                    names::STORE_FINDING_INCOMPLETE,
                    Some(f64::from(f.incomplete_windows)),
                ),
            ] {
                if let Some(value) = value {
                    push(gauge_name(name, ""), &labels, None, value);
                }
            }
            for (culprit_rank, c) in (1u32..).zip(&f.culprits) {
                let mut labels = finding.clone();
                labels.push(label(names::ATTR_CULPRIT_RANK, culprit_rank.to_string()));
                labels.push(label(names::ATTR_CULPRIT_KIND, c.kind.clone()));
                labels.push(label(names::ATTR_CULPRIT_NAME, c.name.clone()));
                for (name, value) in [
                    (names::STORE_CULPRIT_MAGNITUDE, Some(c.magnitude)),
                    (names::STORE_CULPRIT_SHARE, c.share),
                ] {
                    if let Some(value) = value {
                        push(gauge_name(name, ""), &labels, None, value);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The Prometheus name of a gauge that [`window_series`] writes.
pub fn gauge_name(name: &str, unit: &str) -> String {
    metric_name(name, unit, MetricKind::Gauge)
}

/// `series` as requests of at most `max_samples` samples each, encoded and
/// compressed.
pub fn encode(series: Vec<TimeSeries>, max_samples: usize) -> Result<Vec<Encoded>, WriteError> {
    let max_samples = max_samples.max(1);
    let mut out = Vec::new();
    let mut batch: Vec<TimeSeries> = Vec::new();
    let mut samples = 0usize;
    let mut flush = |batch: &mut Vec<TimeSeries>, samples: &mut usize| {
        if batch.is_empty() {
            return Ok(());
        }
        let request = WriteRequest {
            timeseries: std::mem::take(batch),
        };
        let started = std::time::Instant::now();
        let raw = request.encode_to_vec();
        let encode_ns = ns_since(started);
        let started = std::time::Instant::now();
        let body =
            snap::raw::Encoder::new()
                .compress_vec(&raw)
                .map_err(|e| WriteError::Compress {
                    samples: *samples,
                    reason: e.to_string(),
                })?;
        let compress_ns = ns_since(started);
        out.push(Encoded {
            body: bytes::Bytes::from(body),
            samples: *samples as u64,
            raw_bytes: raw.len(),
            encode_ns,
            compress_ns,
        });
        *samples = 0;
        Ok(())
    };
    for ts in series {
        let n = ts.samples.len();
        if samples + n > max_samples {
            flush(&mut batch, &mut samples)?;
        }
        samples += n;
        batch.push(ts);
    }
    flush(&mut batch, &mut samples)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        series::{Series, StringTable},
        v1::{LossRecord, Metric, NodeIdentity, Point},
    };

    fn report(sequence: u64, failures: u64) -> AgentReport {
        let mut t = StringTable::new();
        let mut h = sonde_slo::Histogram::new();
        h.record_binary_ns(1 << 20);
        let labels = t.labels(&[("linux.cgroup.path", "/w"), ("syscall.name", "openat")]);
        AgentReport {
            node: Some(NodeIdentity {
                node_name: "n1".into(),
                ..Default::default()
            }),
            sequence,
            window_start_unix_ns: sequence * 1_000_000_000,
            window_end_unix_ns: (sequence + 1) * 1_000_000_000,
            metrics: vec![
                Metric {
                    name: names::SYSCALL_ERRORS.into(),
                    unit: names::UNIT_ERRORS.into(),
                    kind: MetricKind::Counter as i32,
                    points: vec![Point {
                        label_refs: labels.clone(),
                        count: failures,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                Metric {
                    name: names::SYSCALL_DURATION.into(),
                    unit: names::UNIT_SECONDS.into(),
                    kind: MetricKind::Histogram as i32,
                    points: vec![Point {
                        label_refs: labels,
                        histogram: Some(crate::histogram::to_wire(&h)),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            losses: vec![LossRecord {
                stage: "outbox".into(),
                probe: "all".into(),
                reason: "outbox_full".into(),
                count: 1,
                total_count: 0,
            }],
            strings: t.into_strings(),
            ..Default::default()
        }
    }

    fn value(series: &[TimeSeries], name: &str) -> f64 {
        series
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
            })
            .map(|s| s.samples[0].value)
            .unwrap()
    }

    #[test]
    fn samples_are_the_agents_totals_at_the_window_end() {
        let mut s = Series::new();
        let mut first = report(1, 5);
        s.add_report(&mut first, 7);
        let mut second = report(2, 3);
        s.add_report(&mut second, 7);
        assert_eq!(second.totals_start_unix_ns, 7);
        let series = window_series(&second).unwrap();
        assert_eq!(value(&series, "system_linux_syscall_errors_total"), 8.0);
        assert_eq!(
            value(&series, "system_linux_syscall_duration_seconds_count"),
            2.0
        );
        assert_eq!(value(&series, "sonde_agent_dropped_total"), 2.0);
        // Which window it was, for views read from the store.
        assert_eq!(value(&series, "sonde_window_sequence"), 2.0);
        assert_eq!(value(&series, "sonde_window_start_seconds"), 2.0);
        assert_eq!(value(&series, "sonde_window_end_seconds"), 3.0);
        assert_eq!(value(&series, "sonde_agent_totals_start_seconds"), 7e-9);
        assert_eq!(value(&series, "sonde_window_lost"), 1.0);
        assert_eq!(value(&series, "sonde_window_complete"), 0.0);
        assert_eq!(value(&series, "sonde_agent_info"), 1.0);
        let events: Vec<(String, f64)> = series
            .iter()
            .filter(|s| s.labels.iter().any(|l| l.value == "sonde_window_events"))
            .map(|s| {
                let metric = s.labels.iter().find(|l| l.name == "metric").unwrap();
                (metric.value.clone(), s.samples[0].value)
            })
            .collect();
        assert_eq!(
            events,
            [
                (names::SYSCALL_ERRORS.to_owned(), 3.0),
                (names::SYSCALL_DURATION.to_owned(), 1.0)
            ]
        );
        for ts in &series {
            assert_eq!(ts.samples[0].timestamp, 3_000);
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
            assert!(ts
                .labels
                .iter()
                .any(|l| l.name == "host_name" && l.value == "n1"));
        }
        // The same report, written again, gives the same request bytes.
        let again = window_series(&second).unwrap();
        assert_eq!(
            encode(series, 4).unwrap()[0].body,
            encode(again, 4).unwrap()[0].body
        );
        // Without totals there is nothing right to write.
        assert!(matches!(
            window_series(&report(3, 1)),
            Err(WriteError::NoTotals { .. })
        ));
    }

    #[test]
    fn requests_hold_at_most_the_samples_asked_and_decompress() {
        let mut s = Series::new();
        let mut r = report(1, 5);
        s.add_report(&mut r, 7);
        let series = window_series(&r).unwrap();
        let n = series.len() as u64;
        let requests = encode(series, 2).unwrap();
        assert_eq!(requests.iter().map(|e| e.samples).sum::<u64>(), n);
        assert!(requests.iter().all(|e| e.samples <= 2));
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&requests[0].body)
            .unwrap();
        let back = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(back.timeseries.len(), 2);
    }
}
