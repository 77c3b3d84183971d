//! Fleet views from the store (`--store-url`): `ListNodes` and `ListSlos`
//! answer for every node that wrote its windows to the store, whichever
//! replica (or none) it streamed to, from instant queries of the store's
//! Prometheus API.
//!
//! Every window writes, beside its series, a few that say which window it
//! was (`sonde_window_*`, `sonde_agent_info`; see
//! `sonde_proto::remote_write::window_series`). A node's row is their last
//! values. SLO counts are exact: over a span ending at `t`, a node's
//! increase is the last cumulative value in the span minus the last one at
//! or before its start (zero when the series began inside it); where the
//! agent's counting began again inside the span (its totals' start
//! changed, or a counter fell), that node's raw samples are walked
//! instead, adding each sample's value whole after a restart. The spans are
//! those the agents' own trackers use: windows that ended in `(t − span, t]`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use serde_json::Value;
use sonde_proto::{
    names,
    prometheus::{escape_label, label_name, metric_name},
    remote_write::{
        gauge_name,
        query::{QueryClient, QueryError},
    },
    v1::{
        FleetSlo, LossRecord, MetricKind, MetricTotal, NodeExplanation, NodeIdentity, NodeSummary,
        ProbeStatus, WindowSummary,
    },
};
use sonde_slo::{
    slo::{evaluate_spans, windows, Span},
    spec::SloSpec,
};

use crate::{fleet::health, slo};

mod explain;

/// What a view read from the store covers.
pub const SCOPE: &str = names::SCOPE_STORE;

/// Why the store gave no view.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer, or an error status.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An answer that is not the Prometheus API's.
    #[error("the store's answer to `{query}` is not a Prometheus API answer: {reason}")]
    Answer {
        /// The query.
        query: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// A series' labels, by name.
type Labels = BTreeMap<String, String>;

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One series of a range vector: (timestamp ms, value), oldest first.
#[derive(Debug, Clone, PartialEq)]
struct Raw {
    labels: BTreeMap<String, String>,
    points: Vec<(i64, f64)>,
}

/// A store read back.
pub struct Store {
    client: QueryClient,
    /// How far back a node's last window is looked for.
    lookback_secs: u64,
    specs: Vec<SloSpec>,
}

/// The store's names of what the views read.
struct Names {
    host: String,
    info: String,
    sequence: String,
    complete: String,
    start: String,
    end: String,
    lost: String,
    events: String,
    totals_start: String,
    attached: String,
    dropped: String,
}

impl Names {
    fn new() -> Self {
        Self {
            host: label_name(names::RES_HOST_NAME),
            info: gauge_name(names::STORE_AGENT_INFO, ""),
            sequence: gauge_name(names::STORE_WINDOW_SEQUENCE, ""),
            complete: gauge_name(names::STORE_WINDOW_COMPLETE, ""),
            start: gauge_name(names::STORE_WINDOW_START, names::UNIT_SECONDS),
            end: gauge_name(names::STORE_WINDOW_END, names::UNIT_SECONDS),
            lost: gauge_name(names::STORE_WINDOW_LOST, names::UNIT_EVENTS),
            events: gauge_name(names::STORE_WINDOW_EVENTS, names::UNIT_EVENTS),
            totals_start: gauge_name(names::STORE_TOTALS_START, names::UNIT_SECONDS),
            attached: gauge_name(names::STORE_PROBE_ATTACHED, ""),
            dropped: metric_name(
                names::AGENT_DROPPED,
                names::UNIT_EVENTS,
                MetricKind::Counter,
            ),
        }
    }
}

fn parse_value(v: Option<&Value>) -> Option<f64> {
    v?.as_str()?.parse().ok()
}

fn parse_labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `data.result` of a successful answer of `kind` (vector, matrix).
fn result<'a>(answer: &'a Value, kind: &str) -> Result<&'a Vec<Value>, String> {
    let field = |path: &str| answer.pointer(path).unwrap_or(&Value::Null);
    if field("/status") != "success" {
        return Err(format!("status {}", field("/status")));
    }
    if field("/data/resultType") != kind {
        return Err(format!(
            "a {} where a {kind} was asked for",
            field("/data/resultType")
        ));
    }
    field("/data/result")
        .as_array()
        .ok_or_else(|| "no result".to_owned())
}

fn parse_vector(text: &str) -> Result<Vec<Sample>, String> {
    let answer: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    result(&answer, "vector")?
        .iter()
        .map(|r| {
            Ok(Sample {
                labels: parse_labels(r.get("metric")),
                value: parse_value(r.pointer("/value/1")).ok_or("a sample without a value")?,
            })
        })
        .collect()
}

fn parse_matrix(text: &str) -> Result<Vec<Raw>, String> {
    let answer: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    result(&answer, "matrix")?
        .iter()
        .map(|r| {
            let points = r
                .get("values")
                .and_then(Value::as_array)
                .ok_or("a series without values")?
                .iter()
                .map(|p| {
                    // Seconds with millisecond decimals.
                    let secs = p.get(0).and_then(Value::as_f64);
                    let ms = (secs.ok_or("a sample without a time")? * 1000.0).round();
                    let v = parse_value(p.get(1)).ok_or("a sample without a value")?;
                    Ok((ms as i64, v))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Raw {
                labels: parse_labels(r.get("metric")),
                points,
            })
        })
        .collect()
}

/// A series' labels without its name (what `timestamp()` keeps of them).
fn unnamed(labels: &Labels) -> Labels {
    let mut labels = labels.clone();
    labels.remove("__name__");
    labels
}

/// Each sample's value by its `host` label (samples without one left out).
fn by_host(samples: Vec<Sample>, host: &str) -> HashMap<String, f64> {
    samples
        .into_iter()
        .filter_map(|s| Some((s.labels.get(host)?.clone(), s.value)))
        .collect()
}

/// `timestamp(x)`'s answer: each series' last sample time, by its labels.
fn stamps(samples: Vec<Sample>) -> HashMap<BTreeMap<String, String>, f64> {
    samples
        .into_iter()
        .map(|s| (unnamed(&s.labels), s.value))
        .collect()
}

/// Whether a sample at `stamp_secs` was written with the window that ended
/// at `end_secs`: its time is that end truncated to the millisecond (the
/// margins absorb the floating point of Unix seconds).
fn written_at(stamp_secs: f64, end_secs: f64) -> bool {
    let behind = end_secs - stamp_secs;
    behind > -0.000_5 && behind < 0.001_5
}

/// Whether the series `s` was written with the node's latest window: its
/// last sample is at that window's end (to the millisecond).
fn written_with(
    stamps: &HashMap<BTreeMap<String, String>, f64>,
    s: &Sample,
    summary: &NodeSummary,
) -> bool {
    let end = summary.latest.as_ref().map_or(0, |l| l.window_end_unix_ns) as f64 / 1e9;
    stamps
        .get(&unnamed(&s.labels))
        .is_some_and(|t| written_at(*t, end))
}

/// What the store holds of one node around one span: its SLO counters'
/// last value in the span and last one before it, per series; its
/// counters' falls and its totals' start changes in the span; its totals'
/// start in the span and before it.
#[derive(Debug, Default)]
struct NodeSpan {
    last_good: BTreeMap<Labels, f64>,
    last_total: BTreeMap<Labels, f64>,
    before_good: BTreeMap<Labels, f64>,
    before_total: BTreeMap<Labels, f64>,
    resets: f64,
    changes: f64,
    began_in: Option<f64>,
    began_before: Option<f64>,
}

impl NodeSpan {
    /// The node's (good, total) over the span as differences of its
    /// cumulative values; `None` when they cannot be trusted and its raw
    /// samples must be walked: its agent began counting again inside the
    /// span, or between the value before it and the span, a counter fell,
    /// or a value before the span is missing although the agent counted
    /// since before it (`span_start`, Unix seconds).
    fn difference(&self, span_start: f64) -> Option<(u64, u64)> {
        if self.resets > 0.0 || self.changes > 0.0 {
            return None;
        }
        if let (Some(now), Some(then)) = (self.began_in, self.began_before) {
            if now != then {
                return None;
            }
        }
        let increase = |last: &BTreeMap<Labels, f64>, before: &BTreeMap<Labels, f64>| {
            let mut sum = 0.0;
            for (labels, &a) in last {
                sum += match before.get(labels) {
                    Some(&b) if a >= b => a - b,
                    Some(_) => return None,
                    None if self.began_in.is_some_and(|s| s <= span_start) => return None,
                    None => a,
                };
            }
            Some(sum.round() as u64)
        };
        Some((
            increase(&self.last_good, &self.before_good)?,
            increase(&self.last_total, &self.before_total)?,
        ))
    }
}

/// Exactly what a counter series counted in a span: `start` its last value
/// at or before the span (none: it began inside), `points` its samples in
/// the span, oldest first. `began` gives, for a sample's time, since when
/// the agent counted (Unix seconds; `None`: not known, assumed unchanged):
/// where it changed, or where the value fell, the counting began again and
/// the sample's value is all new.
fn exact_increase(
    start: Option<(f64, Option<f64>)>,
    points: &[(i64, f64)],
    began: impl Fn(i64) -> Option<f64>,
) -> f64 {
    let mut sum = 0.0;
    let mut prev = start;
    for &(ms, v) in points {
        let since = began(ms);
        sum += match prev {
            Some((p, p_since))
                if v >= p && (since.is_none() || p_since.is_none() || since == p_since) =>
            {
                v - p
            }
            _ => v,
        };
        prev = Some((v, since.or(prev.and_then(|(_, s)| s))));
    }
    sum
}

/// `[d]` covering `(t − secs, t]`: a millisecond short of `secs`, so that a
/// window ending exactly at the span's start stays out whichever way the
/// store closes its ranges.
fn span_range(secs: u64) -> String {
    format!("{}ms", (secs * 1000).saturating_sub(1).max(1))
}

impl Store {
    /// Views from the store behind `client`, looking `lookback` back for a
    /// node's last window, evaluating `specs`.
    pub fn new(client: QueryClient, lookback: Duration, specs: Vec<SloSpec>) -> Self {
        Self {
            client,
            lookback_secs: lookback.as_secs().max(1),
            specs,
        }
    }

    /// The store's query URL.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    async fn vector(&self, query: &str, at_secs: f64) -> Result<Vec<Sample>, StoreError> {
        let text = self.client.instant(query, at_secs).await?;
        parse_vector(&text).map_err(|reason| StoreError::Answer {
            query: query.to_owned(),
            reason,
        })
    }

    async fn matrix(&self, query: &str, at_secs: f64) -> Result<Vec<Raw>, StoreError> {
        let text = self.client.instant(query, at_secs).await?;
        parse_matrix(&text).map_err(|reason| StoreError::Answer {
            query: query.to_owned(),
            reason,
        })
    }

    /// One node's row, if its last window in the store ended within the
    /// lookback.
    pub async fn node(
        &self,
        name: &str,
        now_unix_ns: u64,
    ) -> Result<Option<NodeSummary>, StoreError> {
        Ok(self.rows(Some(name), now_unix_ns).await?.into_iter().next())
    }

    /// Every node whose last window in the store ended within the lookback.
    pub async fn nodes(&self, now_unix_ns: u64) -> Result<Vec<NodeSummary>, StoreError> {
        self.rows(None, now_unix_ns).await
    }

    async fn rows(
        &self,
        only: Option<&str>,
        now_unix_ns: u64,
    ) -> Result<Vec<NodeSummary>, StoreError> {
        let n = Names::new();
        let now = now_unix_ns as f64 / 1e9;
        let only = only.map_or(String::new(), |host| {
            format!("{{{}=\"{}\"}}", n.host, escape_label(host))
        });
        let last = |name: &str| format!("last_over_time({name}{only}[{}s])", self.lookback_secs);
        let (sequence, complete, start, end, lost) = (
            last(&n.sequence),
            last(&n.complete),
            last(&n.start),
            last(&n.end),
            last(&n.lost),
        );
        let (info, probes, dropped) = (last(&n.info), last(&n.attached), last(&n.dropped));
        let (events, events_at, info_at) = (
            format!("{}{only}", n.events),
            format!("timestamp({}{only})", n.events),
            format!("timestamp({}{only})", n.info),
        );
        let (sequence, complete, start, end, lost, info, probes, dropped) = tokio::try_join!(
            self.vector(&sequence, now),
            self.vector(&complete, now),
            self.vector(&start, now),
            self.vector(&end, now),
            self.vector(&lost, now),
            self.vector(&info, now),
            self.vector(&probes, now),
            self.vector(&dropped, now),
        )?;
        let (events, events_at, info_at) = tokio::try_join!(
            self.vector(&events, now),
            self.vector(&events_at, now),
            self.vector(&info_at, now),
        )?;
        let by_host = |samples| by_host(samples, &n.host);
        let (sequence, complete, start, lost) = (
            by_host(sequence),
            by_host(complete),
            by_host(start),
            by_host(lost),
        );
        let ns = |secs: f64| (secs * 1e9).round().max(0.0) as u64;
        let mut out = BTreeMap::new();
        for (host, end_secs) in by_host(end) {
            let latest = WindowSummary {
                sequence: sequence.get(&host).copied().unwrap_or(0.0) as u64,
                window_start_unix_ns: ns(start.get(&host).copied().unwrap_or(end_secs)),
                window_end_unix_ns: ns(end_secs),
                complete: complete.get(&host).is_none_or(|c| *c >= 1.0),
                totals: Vec::new(),
                lost: lost.get(&host).copied().unwrap_or(0.0) as u64,
            };
            out.insert(
                host.clone(),
                NodeSummary {
                    node: Some(NodeIdentity {
                        node_name: host,
                        ..Default::default()
                    }),
                    latest: Some(latest),
                    last_received_unix_ns: ns(end_secs),
                    ..Default::default()
                },
            );
        }
        // Identity: the info series written with the latest window (the
        // lookback may hold one of an older agent version too).
        let info_at = stamps(info_at);
        for s in info {
            let Some(summary) = s.labels.get(&n.host).and_then(|h| out.get_mut(h)) else {
                continue;
            };
            let latest = written_with(&info_at, &s, summary);
            let label = |k: &str| s.labels.get(&label_name(k)).cloned().unwrap_or_default();
            let Some(id) = summary.node.as_mut() else {
                continue;
            };
            if id.agent_version.is_empty() || latest {
                id.machine_id = label(names::RES_HOST_ID);
                id.arch = label(names::RES_HOST_ARCH);
                id.kernel = label(names::RES_OS_VERSION);
                id.agent_version = label(names::RES_SERVICE_VERSION);
            }
        }
        // The latest window's counts: the events series written at that
        // window's end (older ones belong to earlier windows).
        let events_at = stamps(events_at);
        let metric = label_name(names::ATTR_METRIC);
        for s in events {
            let (Some(host), Some(name)) = (s.labels.get(&n.host), s.labels.get(&metric)) else {
                continue;
            };
            let Some(summary) = out.get_mut(host) else {
                continue;
            };
            if !written_with(&events_at, &s, summary) {
                continue;
            }
            if let Some(latest) = summary.latest.as_mut() {
                latest.totals.push(MetricTotal {
                    name: name.clone(),
                    unit: String::new(),
                    count: s.value as u64,
                });
            }
        }
        let probe = label_name(names::ATTR_PROBE);
        for s in probes {
            let (Some(host), Some(name)) = (s.labels.get(&n.host), s.labels.get(&probe)) else {
                continue;
            };
            if let Some(summary) = out.get_mut(host) {
                summary.probes.push(ProbeStatus {
                    probe: name.clone(),
                    state: if s.value >= 1.0 {
                        "attached"
                    } else {
                        "not attached"
                    }
                    .to_owned(),
                    ..Default::default()
                });
            }
        }
        let (stage, reason) = (
            label_name(names::ATTR_STAGE),
            label_name(names::ATTR_REASON),
        );
        for s in dropped {
            let Some(summary) = s.labels.get(&n.host).and_then(|h| out.get_mut(h)) else {
                continue;
            };
            let get = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            summary.losses.push(LossRecord {
                stage: get(&stage),
                probe: get(&probe),
                reason: get(&reason),
                count: s.value as u64,
                total_count: s.value as u64,
            });
        }
        Ok(out
            .into_values()
            .map(|mut s| {
                s.latest
                    .iter_mut()
                    .for_each(|l| l.totals.sort_by(|a, b| a.name.cmp(&b.name)));
                s.probes.sort_by(|a, b| a.probe.cmp(&b.probe));
                s.losses.sort_by(|a, b| {
                    (&a.stage, &a.probe, &a.reason).cmp(&(&b.stage, &b.probe, &b.reason))
                });
                s.health = health(
                    now_unix_ns,
                    s.last_received_unix_ns,
                    s.latest.as_ref(),
                    &s.probes,
                )
                .to_owned();
                s
            })
            .collect())
    }

    /// Every node's explanations of its firing SLO alerts, as written with
    /// its latest window within the lookback, the highest top score first.
    pub async fn explanations(&self, now_unix_ns: u64) -> Result<Vec<NodeExplanation>, StoreError> {
        let n = explain::Names::new();
        let now = now_unix_ns as f64 / 1e9;
        let end = format!(
            "last_over_time({}[{}s])",
            Names::new().end,
            self.lookback_secs
        );
        let selector = n.selector();
        let [q0, q1, q2, q3, q4, q5, q6, q7] = n.series().map(|s| format!("timestamp({s})"));
        let (ends, values, s0, s1, s2, s3, s4, s5, s6, s7) = tokio::try_join!(
            self.vector(&end, now),
            self.vector(&selector, now),
            self.vector(&q0, now),
            self.vector(&q1, now),
            self.vector(&q2, now),
            self.vector(&q3, now),
            self.vector(&q4, now),
            self.vector(&q5, now),
            self.vector(&q6, now),
            self.vector(&q7, now),
        )?;
        let ends = by_host(ends, &n.host);
        let mut stamps = HashMap::new();
        for (name, samples) in n.series().into_iter().zip([s0, s1, s2, s3, s4, s5, s6, s7]) {
            for s in samples {
                let mut key = s.labels;
                key.insert(explain::NAME_COPY.to_owned(), name.clone());
                stamps.insert(key, s.value);
            }
        }
        Ok(explain::assemble(&n, values, &stamps, &ends))
    }

    /// The configured SLOs over every matching node in the store,
    /// evaluated at the latest window end the store holds for them.
    pub async fn slos(&self, now_unix_ns: u64) -> Result<Vec<FleetSlo>, StoreError> {
        let mut out = Vec::with_capacity(self.specs.len());
        for spec in &self.specs {
            out.push(self.slo(spec, now_unix_ns as f64 / 1e9).await?);
        }
        Ok(out)
    }

    async fn slo(&self, spec: &SloSpec, now: f64) -> Result<FleetSlo, StoreError> {
        let n = Names::new();
        let good = metric_name(names::SLO_GOOD, names::UNIT_EVENTS, MetricKind::Counter);
        let total = metric_name(names::SLO_TOTAL, names::UNIT_EVENTS, MetricKind::Counter);
        let complete = metric_name(names::SLO_COMPLETE, "", MetricKind::Gauge);
        let sel = format!(
            "{}=\"{}\"",
            label_name(names::ATTR_SLO_NAME),
            escape_label(&spec.name)
        );
        let selected = |host: &str| spec.nodes.as_deref().is_none_or(|p| slo::glob(p, host));
        let host_of = |s: &Sample| s.labels.get(&n.host).filter(|h| selected(h)).cloned();
        // The moment evaluated: the newest window end of a selected node.
        let at = self
            .vector(&format!("timestamp({total}{{{sel}}})"), now)
            .await?
            .iter()
            .filter(|s| host_of(s).is_some())
            .map(|s| s.value)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            .unwrap_or(now);
        let mut spans: HashMap<u64, Span> = HashMap::new();
        let mut nodes = BTreeSet::new();
        let lb = self.lookback_secs;
        for secs in windows(&spec.objective) {
            let range = span_range(secs);
            let last = |name: &str| format!("last_over_time({name}[{range}])");
            let before = |name: &str| format!("last_over_time({name}[{lb}s] offset {secs}s)");
            let (good_sel, total_sel) = (format!("{good}{{{sel}}}"), format!("{total}{{{sel}}}"));
            let resets = format!(
                "sum by ({host}) (resets({good_sel}[{range}])) + sum by ({host}) (resets({total_sel}[{range}]))",
                host = n.host
            );
            let changes = format!("changes({}[{range}])", n.totals_start);
            let whole = format!("min_over_time({complete}{{{sel}}}[{range}])");
            let (last_good, last_total, before_good, before_total) = (
                last(&good_sel),
                last(&total_sel),
                before(&good_sel),
                before(&total_sel),
            );
            let (began_in, began_before) = (last(&n.totals_start), before(&n.totals_start));
            let (
                last_good,
                last_total,
                before_good,
                before_total,
                resets,
                changes,
                began_in,
                began_before,
                whole,
            ) = tokio::try_join!(
                self.vector(&last_good, at),
                self.vector(&last_total, at),
                self.vector(&before_good, at),
                self.vector(&before_total, at),
                self.vector(&resets, at),
                self.vector(&changes, at),
                self.vector(&began_in, at),
                self.vector(&began_before, at),
                self.vector(&whole, at),
            )?;
            let mut held: BTreeMap<String, NodeSpan> = BTreeMap::new();
            for (samples, counter, in_span) in [
                (last_good, 0, true),
                (last_total, 1, true),
                (before_good, 0, false),
                (before_total, 1, false),
            ] {
                for s in samples {
                    let Some(host) = host_of(&s) else { continue };
                    let node = held.entry(host).or_default();
                    let into = match (counter, in_span) {
                        (0, true) => &mut node.last_good,
                        (_, true) => &mut node.last_total,
                        (0, false) => &mut node.before_good,
                        (_, false) => &mut node.before_total,
                    };
                    into.insert(unnamed(&s.labels), s.value);
                }
            }
            for (samples, field) in [(resets, 0), (changes, 1), (began_in, 2), (began_before, 3)] {
                for s in samples {
                    let Some(node) = host_of(&s).and_then(|h| held.get_mut(&h)) else {
                        continue;
                    };
                    match field {
                        0 => node.resets = s.value,
                        1 => node.changes = s.value,
                        2 => node.began_in = Some(s.value),
                        _ => node.began_before = Some(s.value),
                    }
                }
            }
            let mut span = Span {
                good: 0,
                total: 0,
                complete: true,
            };
            for (host, node) in &held {
                if node.last_good.is_empty() && node.last_total.is_empty() {
                    continue;
                }
                nodes.insert(host.clone());
                let (g, t) = match node.difference(at - secs as f64) {
                    Some(counts) => counts,
                    None => {
                        self.walked(host, &[&good, &total], &sel, secs, spec, at)
                            .await?
                    }
                };
                span.good += g;
                span.total += t;
            }
            span.complete = whole
                .iter()
                .filter(|s| host_of(s).is_some())
                .all(|s| s.value >= 1.0);
            spans.insert(secs, span);
        }
        let mut firing = vec![false; spec.objective.rules.len()];
        let evaluation = evaluate_spans(&spec.objective, &mut firing, |secs| {
            spans.get(&secs).copied().unwrap_or(Span {
                good: 0,
                total: 0,
                complete: true,
            })
        });
        Ok(slo::fleet_slo(
            spec,
            nodes.into_iter().collect(),
            (!spans.is_empty()).then_some(&evaluation),
        ))
    }

    /// One node's increase of each of `counters` over the span, from its raw
    /// samples (the rare case of a restart or a fall inside the span).
    async fn walked(
        &self,
        host: &str,
        counters: &[&str; 2],
        sel: &str,
        secs: u64,
        spec: &SloSpec,
        at: f64,
    ) -> Result<(u64, u64), StoreError> {
        let n = Names::new();
        let range = span_range(secs);
        let node = format!("{}=\"{}\"", n.host, escape_label(host));
        // Far enough back for the value before the span: the SLO window.
        let before = spec.objective.window_secs.max(self.lookback_secs);
        let began_raw = self
            .matrix(&format!("{}{{{node}}}[{range}]", n.totals_start), at)
            .await?;
        let began_before = self
            .vector(
                &format!(
                    "last_over_time({}{{{node}}}[{before}s] offset {secs}s)",
                    n.totals_start
                ),
                at,
            )
            .await?
            .first()
            .map(|s| s.value);
        let began: BTreeMap<i64, f64> = began_raw.into_iter().flat_map(|r| r.points).collect();
        let mut sums = [0u64; 2];
        for (name, sum) in counters.iter().zip(sums.iter_mut()) {
            let raw = self
                .matrix(&format!("{name}{{{sel},{node}}}[{range}]"), at)
                .await?;
            let starts = self
                .vector(
                    &format!("last_over_time({name}{{{sel},{node}}}[{before}s] offset {secs}s)"),
                    at,
                )
                .await?;
            for series in raw {
                let labels = unnamed(&series.labels);
                let start = starts
                    .iter()
                    .find(|s| unnamed(&s.labels) == labels)
                    .map(|s| (s.value, began_before));
                let inc = exact_increase(start, &series.points, |ms| began.get(&ms).copied());
                *sum += inc.round() as u64;
            }
        }
        Ok((sums[0], sums[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_and_refusals_named() {
        let v = parse_vector(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"host_name":"a"},"value":[1700000000.5,"42"]}]}}"#,
        )
        .unwrap();
        assert_eq!(v[0].labels["host_name"], "a");
        assert_eq!(v[0].value, 42.0);
        let m = parse_matrix(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1.001,"1"],[2.002,"3"]]}]}}"#,
        )
        .unwrap();
        assert_eq!(m[0].points, [(1001, 1.0), (2002, 3.0)]);
        assert!(parse_vector(r#"{"status":"error","errorType":"bad_data","error":"x"}"#).is_err());
        assert!(
            parse_vector(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .unwrap_err()
                .contains("matrix")
        );
        assert!(parse_vector("not json").is_err());
    }

    #[test]
    fn increases_are_exact_across_restarts() {
        // Steady: 10 before, then 15, 20: 10 in the span.
        assert_eq!(
            exact_increase(Some((10.0, Some(1.0))), &[(1, 15.0), (2, 20.0)], |_| Some(
                1.0
            )),
            10.0
        );
        // Began inside the span: all of it.
        assert_eq!(exact_increase(None, &[(1, 4.0), (2, 9.0)], |_| None), 9.0);
        // A restart (the totals' start moves) whose first value is higher
        // than the last before it: the value counts whole, no fall needed.
        let began = |ms: i64| Some(if ms < 3 { 1.0 } else { 50.0 });
        assert_eq!(
            exact_increase(
                Some((10.0, Some(1.0))),
                &[(1, 12.0), (2, 13.0), (3, 20.0), (4, 21.0)],
                began
            ),
            3.0 + 20.0 + 1.0
        );
        // A fall without the start known: a restart too.
        assert_eq!(
            exact_increase(Some((10.0, None)), &[(1, 12.0), (2, 5.0)], |_| None),
            2.0 + 5.0
        );
    }

    #[test]
    fn differences_only_where_the_counting_went_on() {
        let series = |v: f64| BTreeMap::from([(Labels::new(), v)]);
        let node =
            |last: f64, before: Option<f64>, began_in: f64, began_before: Option<f64>| NodeSpan {
                last_good: series(last),
                last_total: series(last * 2.0),
                before_good: before.map(series).unwrap_or_default(),
                before_total: before.map(|b| series(b * 2.0)).unwrap_or_default(),
                began_in: Some(began_in),
                began_before,
                ..Default::default()
            };
        // Counting since before the span: the difference.
        assert_eq!(
            node(30.0, Some(10.0), 5.0, Some(5.0)).difference(100.0),
            Some((20, 40))
        );
        // Began inside the span: all of it.
        assert_eq!(
            node(30.0, None, 150.0, None).difference(100.0),
            Some((30, 60))
        );
        // Counting since before the span but no value before it: walk.
        assert_eq!(node(30.0, None, 5.0, None).difference(100.0), None);
        // Began again between the value before and the span: walk, even
        // with a higher value than before.
        assert_eq!(
            node(30.0, Some(10.0), 150.0, Some(5.0)).difference(100.0),
            None
        );
        // A fall, or a reset or change the store counted in the span: walk.
        assert_eq!(
            node(3.0, Some(10.0), 5.0, Some(5.0)).difference(100.0),
            None
        );
        let mut reset = node(30.0, Some(10.0), 5.0, Some(5.0));
        reset.resets = 1.0;
        assert_eq!(reset.difference(100.0), None);
        let mut changed = node(30.0, Some(10.0), 5.0, Some(5.0));
        changed.changes = 1.0;
        assert_eq!(changed.difference(100.0), None);
    }

    #[test]
    fn spans_leave_the_window_ending_at_their_start_out() {
        assert_eq!(span_range(300), "299999ms");
        assert_eq!(span_range(0), "1ms");
    }
}
