//! SLO specs: `sonde.toml` (`[[slo]]` tables) or OpenSLO v1 YAML, parsed
//! from text and checked; a bad spec is refused with its file, line and
//! reason. Pure: the caller reads the file.

use std::{collections::BTreeMap, fmt, ops::Range};

use serde::{Deserialize, Serialize};
use sonde_common::family::Family;

use crate::{
    slo::{BurnRule, Objective, Severity},
    Histogram,
};

/// Default compliance window.
pub const DEFAULT_WINDOW_DAYS: f64 = 28.0;
/// Default hysteresis: a firing alert clears once both its windows burn
/// below 90 % of its factor.
pub const DEFAULT_CLEAR_RATIO: f64 = 0.9;
/// Longest SLO name (it becomes a label value and a rule name).
pub const MAX_NAME_LEN: usize = 63;

/// A spec the agent or collector refuses, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SpecError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What an SLI counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Signal {
    /// Syscalls that did not fail (with one of `error_types`, or any errno).
    #[serde(rename = "syscall.errors")]
    SyscallErrors,
    /// Syscalls that returned within the threshold.
    #[serde(rename = "syscall.latency")]
    SyscallLatency,
    /// Run-queue waits within the threshold.
    #[serde(rename = "runqueue.latency")]
    RunqueueLatency,
    /// Direct-reclaim stalls within the threshold.
    #[serde(rename = "reclaim.latency")]
    ReclaimLatency,
    /// Block requests that completed without error.
    #[serde(rename = "block.errors")]
    BlockErrors,
    /// Block requests that completed within the threshold.
    #[serde(rename = "block.latency")]
    BlockLatency,
    /// TCP connects that did not fail (for one of `error_types`, or any reason).
    #[serde(rename = "tcp.connect.errors")]
    TcpConnectErrors,
    /// TCP connects established within the threshold.
    #[serde(rename = "tcp.connect.latency")]
    TcpConnectLatency,
}

impl Signal {
    /// Every signal, in documentation order.
    pub const ALL: [Signal; 8] = [
        Signal::SyscallErrors,
        Signal::SyscallLatency,
        Signal::RunqueueLatency,
        Signal::ReclaimLatency,
        Signal::BlockErrors,
        Signal::BlockLatency,
        Signal::TcpConnectErrors,
        Signal::TcpConnectLatency,
    ];

    /// The name in specs.
    pub fn name(self) -> &'static str {
        match self {
            Signal::SyscallErrors => "syscall.errors",
            Signal::SyscallLatency => "syscall.latency",
            Signal::RunqueueLatency => "runqueue.latency",
            Signal::ReclaimLatency => "reclaim.latency",
            Signal::BlockErrors => "block.errors",
            Signal::BlockLatency => "block.latency",
            Signal::TcpConnectErrors => "tcp.connect.errors",
            Signal::TcpConnectLatency => "tcp.connect.latency",
        }
    }

    fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The probe family that measures it.
    pub fn family(self) -> Family {
        match self {
            Signal::SyscallErrors | Signal::SyscallLatency => Family::Syscalls,
            Signal::RunqueueLatency => Family::Sched,
            Signal::ReclaimLatency => Family::Memory,
            Signal::BlockErrors | Signal::BlockLatency => Family::Block,
            Signal::TcpConnectErrors | Signal::TcpConnectLatency => Family::Tcp,
        }
    }

    /// Whether good means "within a latency threshold".
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Signal::SyscallLatency
                | Signal::RunqueueLatency
                | Signal::ReclaimLatency
                | Signal::BlockLatency
                | Signal::TcpConnectLatency
        )
    }

    /// Whether its series belong to cgroups (else to block devices).
    fn per_cgroup(self) -> bool {
        !matches!(self, Signal::BlockErrors | Signal::BlockLatency)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which series an SLI sums; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// cgroup v2 path: this cgroup and every cgroup under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Kubernetes namespace of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes pod name (with `namespace`, or `namespace/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// systemd unit (`nginx.service`) or slice (`system.slice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Syscall names, for the syscall signals (default: every syscall).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<String>,
    /// Block device names (`sda`, `nvme0n1`), for the block signals
    /// (default: every device).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Block operations: read, write, flush, discard (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
}

impl Selector {
    /// Whether it selects by owner (pod, namespace, unit), which needs
    /// attribution to have resolved the cgroup.
    pub fn by_owner(&self) -> bool {
        self.namespace.is_some() || self.pod.is_some() || self.unit.is_some()
    }

    /// Whether the cgroup at `path` lies under the selected one.
    pub fn cgroup_matches(&self, path: Option<&str>) -> bool {
        let Some(want) = &self.cgroup else {
            return true;
        };
        let Some(path) = path else {
            return false;
        };
        let want = want.trim_end_matches('/');
        want.is_empty()
            || path == want
            || path
                .strip_prefix(want)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// One checked SLO.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloSpec {
    /// Unique name; the `slo.name` label.
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it counts.
    pub signal: Signal,
    /// Which series.
    pub selector: Selector,
    /// Latency signals: good is at or below this many nanoseconds.
    pub threshold_ns: Option<u64>,
    /// Error signals: the kinds that count as bad (errno names for
    /// syscalls, refused/reset/timeout/unreachable/other for connects,
    /// error names for block); empty: every failure.
    pub error_types: Vec<String>,
    /// Target, window and alerting rules.
    pub objective: Objective,
    /// Collector only: glob over node names that the fleet SLO sums.
    pub nodes: Option<String>,
    /// Where it was declared.
    pub line: usize,
}

/// `[[slo]]` in sonde.toml: one SLO, every unit in its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SloToml {
    name: String,
    #[serde(default)]
    description: String,
    signal: String,
    objective_percent: f64,
    window_days: Option<f64>,
    threshold_ms: Option<f64>,
    #[serde(default)]
    error_types: Vec<String>,
    #[serde(default)]
    selector: Selector,
    #[serde(default)]
    alert: Vec<AlertToml>,
    clear_ratio: Option<f64>,
    nodes: Option<String>,
}

/// `[[slo.alert]]`: one burn-rate rule (default: the SRE workbook's three).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertToml {
    severity: String,
    long_window_mins: f64,
    short_window_mins: f64,
    burn_rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    slo: Vec<toml::Spanned<SloToml>>,
}

/// What the SLI part of a spec says, whichever format it came in.
struct Sli {
    signal: String,
    threshold_ms: Option<f64>,
    error_types: Vec<String>,
    selector: Selector,
}

/// Parses and checks SLO specs. `file` names the source in errors; a name
/// ending in `.yaml`/`.yml` is read as OpenSLO v1, anything else as TOML.
pub fn parse(file: &str, text: &str) -> Result<Vec<SloSpec>, SpecError> {
    let specs = if file.ends_with(".yaml") || file.ends_with(".yml") {
        openslo::parse(file, text)?
    } else {
        parse_toml(file, text)?
    };
    check_all(file, &specs)?;
    Ok(specs)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |head| head.matches('\n').count() + 1)
}

fn parse_toml(file: &str, text: &str) -> Result<Vec<SloSpec>, SpecError> {
    let parsed: FileToml = toml::from_str(text).map_err(|e| SpecError {
        file: file.to_owned(),
        line: e
            .span()
            .map_or(1, |span: Range<usize>| line_of(text, span.start)),
        message: e.message().trim().to_owned(),
    })?;
    parsed
        .slo
        .into_iter()
        .map(|spanned| {
            let line = line_of(text, spanned.span().start);
            let t = spanned.into_inner();
            let error = |message: String| SpecError {
                file: file.to_owned(),
                line,
                message: format!("slo \"{}\": {message}", t.name),
            };
            let rules = if t.alert.is_empty() {
                BurnRule::workbook()
            } else {
                t.alert
                    .iter()
                    .map(alert_rule)
                    .collect::<Result<_, _>>()
                    .map_err(error)?
            };
            let sli = Sli {
                signal: t.signal.clone(),
                threshold_ms: t.threshold_ms,
                error_types: t.error_types.clone(),
                selector: t.selector.clone(),
            };
            build(
                &t.name,
                t.description.clone(),
                sli,
                t.objective_percent / 100.0,
                t.window_days.unwrap_or(DEFAULT_WINDOW_DAYS),
                rules,
                t.clear_ratio.unwrap_or(DEFAULT_CLEAR_RATIO),
                t.nodes.clone(),
                line,
            )
            .map_err(error)
        })
        .collect()
}

fn alert_rule(a: &AlertToml) -> Result<BurnRule, String> {
    let severity = match a.severity.as_str() {
        "page" => Severity::Page,
        "ticket" => Severity::Ticket,
        other => {
            return Err(format!(
                "alert severity \"{other}\": use \"page\" or \"ticket\""
            ))
        }
    };
    if !(a.short_window_mins > 0.0 && a.long_window_mins > a.short_window_mins) {
        return Err(format!(
            "alert windows {} min and {} min: need 0 < short_window_mins < long_window_mins",
            a.short_window_mins, a.long_window_mins
        ));
    }
    if !(a.burn_rate > 0.0 && a.burn_rate.is_finite()) {
        return Err(format!("alert burn_rate {}: must be above 0", a.burn_rate));
    }
    Ok(BurnRule {
        long_secs: (a.long_window_mins * 60.0).round() as u64,
        short_secs: (a.short_window_mins * 60.0).round() as u64,
        factor: a.burn_rate,
        severity,
    })
}

/// Checks one SLO's fields; errors name the field and the fix.
#[allow(clippy::too_many_arguments)]
fn build(
    name: &str,
    description: String,
    sli: Sli,
    target: f64,
    window_days: f64,
    rules: Vec<BurnRule>,
    clear_ratio: f64,
    nodes: Option<String>,
    line: usize,
) -> Result<SloSpec, String> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "name must be 1 to {MAX_NAME_LEN} characters of letters, digits, '-', '_' or '.'"
        ));
    }
    let signal = Signal::parse(&sli.signal).ok_or_else(|| {
        format!(
            "unknown signal \"{}\"; one of: {}",
            sli.signal,
            Signal::ALL.map(Signal::name).join(", ")
        )
    })?;
    if !(target > 0.0 && target < 1.0) {
        return Err(format!(
            "objective {}% must lie strictly between 0 and 100",
            target * 100.0
        ));
    }
    if !(window_days > 0.0 && window_days <= 366.0) {
        return Err(format!("window of {window_days} days: use 1 to 366 days"));
    }
    if !(clear_ratio > 0.0 && clear_ratio <= 1.0) {
        return Err(format!("clear_ratio {clear_ratio}: must be in (0, 1]"));
    }
    let threshold_ns = match (signal.is_latency(), sli.threshold_ms) {
        (true, Some(ms)) if ms > 0.0 && ms <= 3_600_000.0 => {
            Some((ms * 1e6).round().max(1.0) as u64)
        }
        (true, Some(ms)) => {
            return Err(format!(
                "threshold of {ms} ms: use more than 0 and at most one hour"
            ))
        }
        (true, None) => {
            return Err(format!(
                "signal {signal} needs threshold_ms (good is at or below it)"
            ))
        }
        (false, Some(_)) => {
            return Err(format!(
                "signal {signal} takes no threshold_ms; the latency signals do"
            ))
        }
        (false, None) => None,
    };
    if signal.is_latency() && !sli.error_types.is_empty() {
        return Err(format!(
            "signal {signal} takes no error_types; the error signals do"
        ));
    }
    let s = &sli.selector;
    let is_syscall = matches!(signal, Signal::SyscallErrors | Signal::SyscallLatency);
    if !is_syscall && !s.syscalls.is_empty() {
        return Err(format!(
            "selector.syscalls applies to the syscall signals, not {signal}"
        ));
    }
    if signal.per_cgroup() && (!s.devices.is_empty() || !s.operations.is_empty()) {
        return Err(format!(
            "selector.devices and .operations apply to the block signals, not {signal}"
        ));
    }
    if !signal.per_cgroup() && (s.cgroup.is_some() || s.by_owner()) {
        return Err(format!(
            "block requests are counted per device, not per cgroup: select {signal} with selector.devices"
        ));
    }
    if let Some(op) = s.operations.iter().find(|op| {
        !matches!(
            op.as_str(),
            "read" | "write" | "flush" | "discard" | "other"
        )
    }) {
        return Err(format!(
            "selector.operations: unknown operation \"{op}\"; read, write, flush, discard or other"
        ));
    }
    if signal == Signal::TcpConnectErrors {
        if let Some(kind) = sli.error_types.iter().find(|k| {
            !matches!(
                k.as_str(),
                "refused" | "reset" | "timeout" | "unreachable" | "other"
            )
        }) {
            return Err(format!(
                "error_types: unknown connect failure \"{kind}\"; refused, reset, timeout, unreachable or other"
            ));
        }
    }
    if let Some(cgroup) = &s.cgroup {
        if !cgroup.starts_with('/') {
            return Err(format!(
                "selector.cgroup \"{cgroup}\" must be a v2 path starting with '/'"
            ));
        }
    }
    let mut selector = s.clone();
    if let Some((namespace, pod)) = s.pod.as_deref().and_then(|p| p.split_once('/')) {
        if s.namespace.as_deref().is_some_and(|n| n != namespace) {
            return Err(format!(
                "selector.pod \"{namespace}/{pod}\" and selector.namespace \"{}\" disagree",
                s.namespace.as_deref().unwrap_or_default()
            ));
        }
        selector.namespace = Some(namespace.to_owned());
        selector.pod = Some(pod.to_owned());
    }
    let window_secs = (window_days * 86_400.0).round() as u64;
    if let Some(rule) = rules.iter().find(|r| r.long_secs > window_secs) {
        return Err(format!(
            "alert window of {} min is longer than the SLO window of {window_days} days",
            rule.long_secs / 60
        ));
    }
    Ok(SloSpec {
        name: name.to_owned(),
        description,
        signal,
        selector,
        threshold_ns,
        error_types: sli.error_types,
        objective: Objective {
            target,
            window_secs,
            rules,
            clear_ratio,
        },
        nodes,
        line,
    })
}

/// Checks across SLOs: unique names, and at most one exact latency
/// threshold per histogram bucket (the kernel splits one bucket once).
fn check_all(file: &str, specs: &[SloSpec]) -> Result<(), SpecError> {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut buckets: BTreeMap<i32, (&SloSpec, u64)> = BTreeMap::new();
    for spec in specs {
        if let Some(first) = names.insert(&spec.name, spec.line) {
            return Err(SpecError {
                file: file.to_owned(),
                line: spec.line,
                message: format!(
                    "slo \"{}\" is declared twice (first on line {first}); names must be unique",
                    spec.name
                ),
            });
        }
        let Some(ns) = spec.threshold_ns else {
            continue;
        };
        let Some(index) = Histogram::index_of_ns(ns) else {
            continue;
        };
        if let Some((other, other_ns)) = buckets.get(&index) {
            if *other_ns != ns {
                return Err(SpecError {
                    file: file.to_owned(),
                    line: spec.line,
                    message: format!(
                        "slo \"{}\": threshold {} ms and slo \"{}\"'s {} ms fall in one histogram bucket ({:.4}–{:.4} ms), \
                         where the kernel counts one exact threshold; make them equal or at least 10 % apart",
                        spec.name,
                        ns as f64 / 1e6,
                        other.name,
                        *other_ns as f64 / 1e6,
                        Histogram::lower_bound(index) * 1e3,
                        Histogram::upper_bound(index) * 1e3,
                    ),
                });
            }
        } else {
            buckets.insert(index, (spec, ns));
        }
    }
    Ok(())
}

/// The exact thresholds the kernel needs, one per bucket: (bucket key
/// slot, nanoseconds).
pub fn kernel_thresholds(specs: &[SloSpec]) -> Vec<(usize, u64)> {
    let mut out: Vec<(usize, u64)> = specs
        .iter()
        .filter_map(|s| s.threshold_ns)
        .map(|ns| (sonde_common::hist::latency_bucket_key(ns) as usize, ns))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// OpenSLO v1: `kind: SLO` documents with an inline ratio indicator whose
/// metric source is `type: sonde`.
mod openslo {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        api_version: String,
        kind: String,
        metadata: Metadata,
        spec: Option<serde_yaml::Value>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Metadata {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct SloDoc {
        #[serde(default)]
        description: String,
        /// Accepted and not used: sonde names SLOs by `metadata.name`.
        #[serde(default, rename = "service")]
        _service: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        budgeting_method: Option<String>,
        #[serde(default)]
        time_window: Vec<TimeWindow>,
        #[serde(default)]
        indicator: Option<Indicator>,
        #[serde(default)]
        indicator_ref: Option<String>,
        objectives: Vec<ObjectiveDoc>,
        /// Accepted and not used: the workbook policy applies.
        #[serde(default, rename = "alertPolicies")]
        _alert_policies: Option<serde::de::IgnoredAny>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TimeWindow {
        duration: String,
        #[serde(default)]
        is_rolling: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    struct Indicator {
        spec: IndicatorSpec,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct IndicatorSpec {
        #[serde(default)]
        ratio_metric: Option<RatioMetric>,
    }

    #[derive(Debug, Deserialize)]
    struct RatioMetric {
        #[serde(default)]
        good: Option<MetricRef>,
        #[serde(default)]
        bad: Option<MetricRef>,
        #[serde(default)]
        total: Option<MetricRef>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MetricRef {
        metric_source: MetricSource,
    }

    #[derive(Debug, Deserialize)]
    struct MetricSource {
        #[serde(rename = "type")]
        kind: String,
        spec: SonderSli,
    }

    /// `metricSource.spec` of `type: sonde`: the same keys as sonde.toml's.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct SonderSli {
        signal: String,
        threshold_ms: Option<f64>,
        #[serde(default)]
        error_types: Vec<String>,
        #[serde(default)]
        selector: Selector,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ObjectiveDoc {
        #[serde(default)]
        target: Option<f64>,
        #[serde(default)]
        target_percent: Option<f64>,
    }

    /// Lines where each YAML document starts (after a `---` line).
    fn document_lines(text: &str) -> Vec<usize> {
        let starts_with_separator = text.lines().next().is_some_and(|l| l.trim_end() == "---");
        let mut lines = vec![if starts_with_separator { 2 } else { 1 }];
        for (i, line) in text.lines().enumerate() {
            if line.trim_end() == "---" && i > 0 {
                lines.push(i + 2);
            }
        }
        lines
    }

    /// `28d`, `6h`, `1w`: OpenSLO durations, in days.
    fn days(duration: &str) -> Option<f64> {
        let (number, unit) = duration.split_at(duration.find(|c: char| !c.is_ascii_digit())?);
        let n: f64 = number.parse().ok()?;
        Some(match unit {
            "m" => n / 1440.0,
            "h" => n / 24.0,
            "d" => n,
            "w" => n * 7.0,
            _ => return None,
        })
    }

    pub(super) fn parse(file: &str, text: &str) -> Result<Vec<SloSpec>, SpecError> {
        let starts = document_lines(text);
        let mut out = Vec::new();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let line = starts.get(i).copied().unwrap_or(1);
            let at = |message: String| SpecError {
                file: file.to_owned(),
                line,
                message,
            };
            let doc = Doc::deserialize(document).map_err(|e| SpecError {
                file: file.to_owned(),
                line: e.location().map_or(line, |l| l.line()),
                message: e.to_string(),
            })?;
            if doc.api_version != "openslo/v1" {
                return Err(at(format!(
                    "apiVersion \"{}\": sonde reads openslo/v1",
                    doc.api_version
                )));
            }
            if doc.kind != "SLO" {
                return Err(at(format!(
                    "kind \"{}\": sonde reads SLO documents with an inline indicator (no separate SLI, Service or AlertPolicy documents)",
                    doc.kind
                )));
            }
            let name = doc.metadata.name;
            let error = |message: String| at(format!("slo \"{name}\": {message}"));
            let spec: SloDoc = serde_yaml::from_value(doc.spec.unwrap_or_default())
                .map_err(|e| error(format!("spec: {e}")))?;
            if spec
                .budgeting_method
                .as_deref()
                .is_some_and(|m| m != "Occurrences")
            {
                return Err(error(format!(
                    "budgetingMethod {}: sonde counts events, use Occurrences",
                    spec.budgeting_method.as_deref().unwrap_or_default()
                )));
            }
            let window_days = match spec.time_window.as_slice() {
                [] => DEFAULT_WINDOW_DAYS,
                [w] if w.is_rolling != Some(false) => days(&w.duration).ok_or_else(|| {
                    error(format!(
                        "timeWindow duration \"{}\": use e.g. 28d, 4w or 6h",
                        w.duration
                    ))
                })?,
                [_] => {
                    return Err(error(
                        "calendar windows are not supported: use isRolling: true".to_owned(),
                    ))
                }
                _ => return Err(error("one timeWindow per SLO".to_owned())),
            };
            if spec.indicator_ref.is_some() {
                return Err(error(
                    "indicatorRef is not supported: put the indicator inline".to_owned(),
                ));
            }
            let ratio = spec
                .indicator
                .and_then(|i| i.spec.ratio_metric)
                .ok_or_else(|| error("spec.indicator.spec.ratioMetric is required".to_owned()))?;
            let source = ratio
                .good
                .or(ratio.bad)
                .ok_or_else(|| error("ratioMetric needs good (or bad) and total".to_owned()))?
                .metric_source;
            if source.kind != "sonde" {
                return Err(error(format!(
                    "metricSource type \"{}\": sonde measures only type: sonde",
                    source.kind
                )));
            }
            if let Some(total) = ratio.total {
                if total.metric_source.spec.signal != source.spec.signal
                    || total.metric_source.spec.selector != source.spec.selector
                {
                    return Err(error(
                        "total must name the same signal and selector as good: sonde derives both from one SLI".to_owned(),
                    ));
                }
            }
            let objective = match spec.objectives.as_slice() {
                [o] => o
                    .target
                    .or(o.target_percent.map(|p| p / 100.0))
                    .ok_or_else(|| {
                        error("objective needs target (0..1) or targetPercent".to_owned())
                    })?,
                _ => return Err(error("exactly one objective per SLO".to_owned())),
            };
            let sli = Sli {
                signal: source.spec.signal,
                threshold_ms: source.spec.threshold_ms,
                error_types: source.spec.error_types,
                selector: source.spec.selector,
            };
            out.push(
                build(
                    &name,
                    spec.description,
                    sli,
                    objective,
                    window_days,
                    BurnRule::workbook(),
                    DEFAULT_CLEAR_RATIO,
                    None,
                    line,
                )
                .map_err(error)?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[slo]]
name = "checkout-openat"
signal = "syscall.errors"
objective_percent = 99.9
error_types = ["ENOENT"]
selector = { cgroup = "/system.slice/checkout.service", syscalls = ["openat"] }

[[slo]]
name = "checkout-latency"
signal = "syscall.latency"
objective_percent = 99
window_days = 7
threshold_ms = 10.5
selector.unit = "checkout.service"

[[slo.alert]]
severity = "page"
long_window_mins = 60
short_window_mins = 5
burn_rate = 10
"#;

    #[test]
    fn parses_toml_with_defaults() {
        let specs = parse("sonde.toml", GOOD).unwrap();
        assert_eq!(specs.len(), 2);
        let a = &specs[0];
        assert_eq!(a.signal, Signal::SyscallErrors);
        assert_eq!(a.line, 2);
        assert!((a.objective.target - 0.999).abs() < 1e-12);
        assert_eq!(a.objective.window_secs, 28 * 86_400);
        assert_eq!(a.objective.rules, BurnRule::workbook());
        assert_eq!(a.objective.clear_ratio, DEFAULT_CLEAR_RATIO);
        assert!(a
            .selector
            .cgroup_matches(Some("/system.slice/checkout.service")));
        assert!(a
            .selector
            .cgroup_matches(Some("/system.slice/checkout.service/x")));
        assert!(!a
            .selector
            .cgroup_matches(Some("/system.slice/checkout.services")));
        let b = &specs[1];
        assert_eq!(b.threshold_ns, Some(10_500_000));
        assert_eq!(b.objective.window_secs, 7 * 86_400);
        assert_eq!(b.objective.rules.len(), 1);
        assert_eq!(b.objective.rules[0].factor, 10.0);
        assert_eq!(b.line, 9);
        assert_eq!(kernel_thresholds(&specs).len(), 1);
    }

    fn refused(text: &str) -> String {
        parse("sonde.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn bad_specs_name_file_line_and_fix() {
        let e = refused(
            "[[slo]]\nname = \"a\"\nsignal = \"syscall.latency\"\nobjective_percent = 99\n",
        );
        assert_eq!(e, "sonde.toml:1: slo \"a\": signal syscall.latency needs threshold_ms (good is at or below it)");
        let e = refused(
            "\n\n[[slo]]\nname = \"a\"\nsignal = \"syscall.errors\"\nobjective_percent = 100\n",
        );
        assert!(
            e.starts_with("sonde.toml:3: slo \"a\": objective 100% must lie"),
            "{e}"
        );
        let e = refused("[[slo]]\nname = \"a\"\nsignal = \"disk\"\nobjective_percent = 99\n");
        assert!(
            e.contains("unknown signal \"disk\"; one of: syscall.errors"),
            "{e}"
        );
        let e = refused("[[slo]]\nname = \"a\"\nsignal = \"syscall.errors\"\nobjective = 99\n");
        assert!(
            e.starts_with("sonde.toml:4: unknown field `objective`"),
            "{e}"
        );
        let e = refused("[[slo]]\nname = \"a\"\nsignal = \"block.errors\"\nobjective_percent = 99\nselector.unit = \"x.service\"\n");
        assert!(
            e.contains("select block.errors with selector.devices"),
            "{e}"
        );
        let twice = "[[slo]]\nname = \"a\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n";
        let e = refused(&format!("{twice}{twice}"));
        assert_eq!(
            e,
            "sonde.toml:5: slo \"a\" is declared twice (first on line 1); names must be unique"
        );
        let e = refused(
            "[[slo]]\nname = \"a b\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n",
        );
        assert!(e.contains("name must be"), "{e}");
        let e = refused("[[slo]]\nname = \"a\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n[[slo.alert]]\nseverity = \"page\"\nlong_window_mins = 5\nshort_window_mins = 60\nburn_rate = 2\n");
        assert!(
            e.contains("need 0 < short_window_mins < long_window_mins"),
            "{e}"
        );
    }

    #[test]
    fn two_thresholds_in_one_bucket_are_refused() {
        let slo = |name: &str, ms: f64| {
            format!("[[slo]]\nname = \"{name}\"\nsignal = \"runqueue.latency\"\nobjective_percent = 99\nthreshold_ms = {ms}\n")
        };
        let e = refused(&format!("{}{}", slo("a", 10.0), slo("b", 10.1)));
        assert!(e.starts_with("sonde.toml:6: slo \"b\": threshold 10.1 ms and slo \"a\"'s 10 ms fall in one histogram bucket"), "{e}");
        // Equal thresholds share the split; distant ones each get their own.
        assert!(parse(
            "sonde.toml",
            &format!("{}{}", slo("a", 10.0), slo("b", 10.0))
        )
        .is_ok());
        let specs = parse(
            "sonde.toml",
            &format!("{}{}", slo("a", 10.0), slo("b", 12.0)),
        )
        .unwrap();
        assert_eq!(kernel_thresholds(&specs).len(), 2);
    }

    const OPENSLO: &str = r#"apiVersion: openslo/v1
kind: SLO
metadata:
  name: checkout-openat
spec:
  service: checkout
  budgetingMethod: Occurrences
  timeWindow:
    - duration: 4w
      isRolling: true
  indicator:
    metadata:
      name: openat-ok
    spec:
      ratioMetric:
        counter: true
        good:
          metricSource:
            type: sonde
            spec:
              signal: syscall.errors
              selector:
                cgroup: /system.slice/checkout.service
                syscalls: [openat]
        total:
          metricSource:
            type: sonde
            spec:
              signal: syscall.errors
              selector:
                cgroup: /system.slice/checkout.service
                syscalls: [openat]
  objectives:
    - displayName: ok
      target: 0.999
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: checkout-connect
spec:
  budgetingMethod: Timeslices
  objectives:
    - target: 0.99
"#;

    #[test]
    fn openslo_maps_onto_the_same_spec() {
        let first_only = OPENSLO.split("---").next().unwrap();
        let specs = parse("slos.yaml", first_only).unwrap();
        let toml = parse("sonde.toml", GOOD).unwrap();
        assert_eq!(specs[0].signal, toml[0].signal);
        assert_eq!(specs[0].selector.cgroup, toml[0].selector.cgroup);
        assert_eq!(specs[0].objective.window_secs, 28 * 86_400);
        assert_eq!(specs[0].objective.target, 0.999);
        let e = parse("slos.yaml", OPENSLO).unwrap_err().to_string();
        assert_eq!(
            e,
            "slos.yaml:37: slo \"checkout-connect\": budgetingMethod Timeslices: sonde counts events, use Occurrences"
        );
        let e = parse(
            "slos.yaml",
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: [\n",
        )
        .unwrap_err();
        assert_eq!(e.file, "slos.yaml");
        assert!(e.line >= 3, "{e}");
    }
}
