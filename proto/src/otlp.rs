//! Cumulative series as OTLP metrics: `ExponentialHistogram` at scale 3
//! (the same buckets, copied), monotonic `Sum`s, cumulative temporality, the
//! start time being when the cumulative series started counting.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};

use crate::{
    histogram,
    series::{PointAcc, Series},
    v1::MetricKind,
};

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A resource of string attributes.
pub fn resource(attributes: &[(&str, &str)]) -> Resource {
    Resource {
        attributes: attributes.iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

fn attributes(labels: &[(std::sync::Arc<str>, std::sync::Arc<str>)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| kv(k, v)).collect()
}

/// One resource's cumulative series, counted since `start_unix_ns`, as of
/// `now_unix_ns`.
pub fn resource_metrics(
    resource: Resource,
    series: &Series,
    start_unix_ns: u64,
    now_unix_ns: u64,
) -> ResourceMetrics {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let metrics = series
        .metrics()
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| {
            let points = m.points();
            let data = match m.kind {
                MetricKind::Histogram => Data::ExponentialHistogram(ExponentialHistogram {
                    aggregation_temporality: cumulative,
                    data_points: points
                        .iter()
                        .map(|p| histogram_point(p, start_unix_ns, now_unix_ns))
                        .collect(),
                }),
                MetricKind::Gauge => Data::Gauge(Gauge {
                    data_points: points
                        .iter()
                        .map(|p| NumberDataPoint {
                            attributes: attributes(&p.labels),
                            start_time_unix_nano: start_unix_ns,
                            time_unix_nano: now_unix_ns,
                            value: Some(number_data_point::Value::AsDouble(p.value)),
                            ..Default::default()
                        })
                        .collect(),
                }),
                _ => Data::Sum(Sum {
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                    data_points: points
                        .iter()
                        .map(|p| NumberDataPoint {
                            attributes: attributes(&p.labels),
                            start_time_unix_nano: start_unix_ns,
                            time_unix_nano: now_unix_ns,
                            value: Some(number_data_point::Value::AsInt(
                                i64::try_from(p.count).unwrap_or(i64::MAX),
                            )),
                            ..Default::default()
                        })
                        .collect(),
                }),
            };
            Metric {
                name: m.name.clone(),
                description: m.description.clone(),
                unit: m.unit.clone(),
                metadata: Vec::new(),
                data: Some(data),
            }
        })
        .collect();
    ResourceMetrics {
        resource: Some(resource),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "sonde".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            }),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn histogram_point(p: &PointAcc, start: u64, now: u64) -> ExponentialHistogramDataPoint {
    let h = &p.histogram;
    ExponentialHistogramDataPoint {
        attributes: attributes(&p.labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: histogram::count(h),
        // sonde's kernel histograms keep no sum; OTLP makes it optional.
        sum: None,
        scale: sonde_slo::Histogram::SCALE,
        zero_count: h.zero_count,
        positive: Some(Buckets {
            offset: h.offset,
            bucket_counts: h.bucket_counts.clone(),
        }),
        negative: None,
        flags: 0,
        exemplars: Vec::new(),
        min: None,
        max: None,
        zero_threshold: 0.0,
    }
}

/// An export request of several resources.
pub fn request(resource_metrics: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest { resource_metrics }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{histogram::to_wire, series::StringTable, v1};

    #[test]
    fn histograms_are_cumulative_exponential_at_scale_3() {
        let mut h = sonde_slo::Histogram::new();
        h.record_binary_ns(1 << 20);
        h.record_binary_ns(1 << 22);
        let window = v1::Metric {
            name: "system.linux.syscall.duration".into(),
            unit: "s".into(),
            description: String::new(),
            kind: MetricKind::Histogram as i32,
            points: vec![v1::Point {
                label_refs: vec![0, 1],
                count: 0,
                histogram: Some(to_wire(&h)),
                value: 0.0,
                ..Default::default()
            }],
        };
        let mut s = Series::new();
        let mut t = StringTable::new();
        t.labels(&[("syscall.name", "openat")]);
        let strings = t.into_strings();
        s.add(std::slice::from_ref(&window), &strings, 1);
        s.add(std::slice::from_ref(&window), &strings, 2);
        let rm = resource_metrics(resource(&[("host.name", "n1")]), &s, 10, 20);
        let m = &rm.scope_metrics[0].metrics[0];
        let Some(Data::ExponentialHistogram(eh)) = &m.data else {
            panic!("not an exponential histogram: {m:?}");
        };
        assert_eq!(
            eh.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let dp = &eh.data_points[0];
        assert_eq!(
            (
                dp.count,
                dp.scale,
                dp.start_time_unix_nano,
                dp.time_unix_nano
            ),
            (4, 3, 10, 20)
        );
        let pos = dp.positive.as_ref().unwrap();
        assert_eq!(pos.offset, -81);
        assert_eq!((pos.bucket_counts[0], pos.bucket_counts[16]), (2, 2));
    }
}
