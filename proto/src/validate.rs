//! What a collector checks before it accepts a report. A report is checked
//! whole before anything of it is applied, so a refused report leaves no trace.

use crate::{
    histogram::{self, WireHistogramError},
    v1::{AgentReport, MetricKind},
    PROTOCOL_VERSION,
};

/// Why a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// A protocol version this build does not speak.
    #[error("protocol version {got}; this collector speaks version {expected}")]
    Version {
        /// Version in the report.
        got: u32,
        /// Version spoken here.
        expected: u32,
    },
    /// No node name or boot id.
    #[error("report without node identity: node name and boot id are required")]
    Identity,
    /// The window ends before it starts.
    #[error("window ends ({end}) before it starts ({start})")]
    Window {
        /// Start, Unix ns.
        start: u64,
        /// End, Unix ns.
        end: u64,
    },
    /// A metric without a name or kind.
    #[error("metric '{name}' has no name or no kind")]
    Metric {
        /// The metric's name, possibly empty.
        name: String,
    },
    /// A gauge point whose value is NaN or infinite.
    #[error("metric '{name}': gauge value is not a finite number")]
    Gauge {
        /// Metric name.
        name: String,
    },
    /// A histogram point without a histogram.
    #[error("metric '{name}': histogram point without a histogram")]
    MissingHistogram {
        /// The metric.
        name: String,
    },
    /// A point whose labels are not pairs of indices into the report's strings.
    #[error("metric '{name}': labels refer to strings the report does not have ({refs} refs, {strings} strings)")]
    Labels {
        /// The metric.
        name: String,
        /// Label references of the point.
        refs: usize,
        /// Strings in the report.
        strings: usize,
    },
    /// A histogram out of sonde's layout.
    #[error("metric '{name}': {source}")]
    Histogram {
        /// The metric.
        name: String,
        /// What is wrong with it.
        #[source]
        source: WireHistogramError,
    },
}

/// Checks a report before it is applied.
pub fn report(r: &AgentReport) -> Result<(), ReportError> {
    if r.protocol_version != PROTOCOL_VERSION {
        return Err(ReportError::Version {
            got: r.protocol_version,
            expected: PROTOCOL_VERSION,
        });
    }
    match &r.node {
        Some(n) if !n.node_name.is_empty() && !n.boot_id.is_empty() => {}
        _ => return Err(ReportError::Identity),
    }
    if r.window_end_unix_ns < r.window_start_unix_ns {
        return Err(ReportError::Window {
            start: r.window_start_unix_ns,
            end: r.window_end_unix_ns,
        });
    }
    for m in &r.metrics {
        let kind = MetricKind::try_from(m.kind).unwrap_or(MetricKind::Unspecified);
        if m.name.is_empty() || kind == MetricKind::Unspecified {
            return Err(ReportError::Metric {
                name: m.name.clone(),
            });
        }
        let strings = r.strings.len();
        for p in &m.points {
            if p.label_refs.len() % 2 != 0 || p.label_refs.iter().any(|&i| i as usize >= strings) {
                return Err(ReportError::Labels {
                    name: m.name.clone(),
                    refs: p.label_refs.len(),
                    strings,
                });
            }
        }
        if kind == MetricKind::Gauge && m.points.iter().any(|p| !p.value.is_finite()) {
            return Err(ReportError::Gauge {
                name: m.name.clone(),
            });
        }
        if kind == MetricKind::Histogram {
            for p in &m.points {
                let h = p
                    .histogram
                    .as_ref()
                    .ok_or_else(|| ReportError::MissingHistogram {
                        name: m.name.clone(),
                    })?;
                // The cumulative histogram too: remote write reads it.
                for h in std::iter::once(h).chain(p.total_histogram.as_ref()) {
                    histogram::validate(h).map_err(|source| ReportError::Histogram {
                        name: m.name.clone(),
                        source,
                    })?;
                }
            }
        }
    }
    Ok(())
}
