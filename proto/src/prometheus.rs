//! Cumulative series as Prometheus text (exposition format 0.0.4), named by
//! the standard OTLP → Prometheus translation: dots become underscores, the
//! unit is appended as a word (`s` → `_seconds`), counters get `_total`.
//! Exponential histograms become classic histograms whose `le` edges are the
//! scale-3 bucket edges themselves, from the lowest to the highest bucket
//! the series has seen (native histograms need the protobuf exposition).

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    series::{MetricAcc, Series},
    v1::MetricKind,
};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A set of series and the labels added to each of them (a collector adds
/// the node's `host_name`).
pub struct Target<'a> {
    /// Labels put first on every series of this target.
    pub labels: Vec<(String, String)>,
    /// The series.
    pub series: &'a Series,
}

/// Prometheus word for a UCUM unit, per the OTLP translation; `None` for
/// units that add no suffix (annotations like `{error}`, `1` on counters).
fn unit_word(unit: &str) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit.starts_with('{') || unit == "1" {
        return None;
    }
    let one = |u: &str| -> String {
        match u {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "KBy" => "kilobytes",
            "MBy" => "megabytes",
            "GBy" => "gigabytes",
            "Hz" => "hertz",
            "%" => "percent",
            other => other,
        }
        .to_owned()
    };
    Some(match unit.split_once('/') {
        Some((a, b)) => {
            let per = match b {
                "s" => "second".to_owned(),
                "min" => "minute".to_owned(),
                "h" => "hour".to_owned(),
                "d" => "day".to_owned(),
                other => one(other),
            };
            format!("{}_per_{per}", one(a))
        }
        None => one(unit),
    })
}

fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Prometheus metric name of an OTel metric.
pub fn metric_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut out = sanitize(name);
    if let Some(word) = unit_word(unit) {
        let word = sanitize(&word);
        if !out.ends_with(&format!("_{word}")) {
            out.push('_');
            out.push_str(&word);
        }
    }
    // The translation names unit-1 gauges as ratios.
    if kind == MetricKind::Gauge && unit.trim() == "1" && !out.ends_with("_ratio") {
        out.push_str("_ratio");
    }
    if kind == MetricKind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// Prometheus label name of an OTel attribute key.
pub fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

/// A label value as the text format writes it (backslash, quote and
/// newline escaped).
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(pairs: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A histogram as classic buckets: `(le, cumulative count)` for each
/// scale-3 bucket from the lowest to the highest the histogram has, then
/// `+Inf` (the last pair's count is the histogram's `_count`). The `le`
/// text is the same in the text exposition and in remote write, so both
/// name the same series.
pub fn classic_buckets(
    h: &crate::v1::ExponentialHistogram,
) -> impl Iterator<Item = (String, u64)> + '_ {
    let mut cumulative = h.zero_count;
    let finite = h.bucket_counts.iter().enumerate().map(move |(i, &c)| {
        cumulative = cumulative.saturating_add(c);
        let index = h
            .offset
            .saturating_add(i32::try_from(i).unwrap_or(i32::MAX));
        let le = sonde_slo::Histogram::upper_bound(index);
        (format!("{le:e}"), cumulative)
    });
    let all = h
        .bucket_counts
        .iter()
        .fold(h.zero_count, |a, &c| a.saturating_add(c));
    finite.chain(std::iter::once(("+Inf".to_owned(), all)))
}

/// Every target's series, grouped by metric, as Prometheus text.
pub fn render(targets: &[Target<'_>]) -> String {
    // Prometheus name → (kind, description, [(target, metric)])
    type Members<'m> = Vec<(usize, &'m MetricAcc)>;
    let mut groups: BTreeMap<String, (MetricKind, String, Members<'_>)> = BTreeMap::new();
    for (t, target) in targets.iter().enumerate() {
        for m in target.series.metrics() {
            let name = metric_name(&m.name, &m.unit, m.kind);
            groups
                .entry(name)
                .or_insert_with(|| (m.kind, m.description.clone(), Vec::new()))
                .2
                .push((t, m));
        }
    }
    let mut out = String::new();
    for (name, (kind, description, members)) in &groups {
        // Text format 0.0.4 names the family as its samples are named
        // (`..._total` included); promtool checks that.
        let help_name = name.as_str();
        let type_name = match kind {
            MetricKind::Histogram => "histogram",
            MetricKind::Gauge => "gauge",
            _ => "counter",
        };
        let description = if description.is_empty() {
            name.as_str()
        } else {
            description.as_str()
        };
        let _ = writeln!(out, "# HELP {help_name} {}", escape_label(description));
        let _ = writeln!(out, "# TYPE {help_name} {type_name}");
        for &(t, m) in members {
            for p in m.points() {
                let mut pairs: Vec<(String, String)> =
                    targets.get(t).map(|x| x.labels.clone()).unwrap_or_default();
                pairs.extend(p.labels.iter().map(|(k, v)| (label_name(k), v.to_string())));
                if m.kind == MetricKind::Histogram {
                    let mut total = 0;
                    for (le, cumulative) in classic_buckets(&p.histogram) {
                        total = cumulative;
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {cumulative}",
                            labels_text(&pairs, Some(&le))
                        );
                    }
                    let _ = writeln!(out, "{name}_count{} {total}", labels_text(&pairs, None));
                } else if m.kind == MetricKind::Gauge {
                    let _ = writeln!(out, "{name}{} {}", labels_text(&pairs, None), p.value);
                } else {
                    let _ = writeln!(out, "{name}{} {}", labels_text(&pairs, None), p.count);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otlp_translation() {
        assert_eq!(
            metric_name("system.linux.syscall.duration", "s", MetricKind::Histogram),
            "system_linux_syscall_duration_seconds"
        );
        assert_eq!(
            metric_name(
                "system.linux.syscall.errors",
                "{error}",
                MetricKind::Counter
            ),
            "system_linux_syscall_errors_total"
        );
        assert_eq!(
            metric_name("system.disk.io", "By", MetricKind::Counter),
            "system_disk_io_bytes_total"
        );
        assert_eq!(
            metric_name("x.rate", "By/s", MetricKind::Counter),
            "x_rate_bytes_per_second_total"
        );
        assert_eq!(label_name("linux.cgroup.path"), "linux_cgroup_path");
    }
}
