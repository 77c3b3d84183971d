//! `sonde explain`: why a target (an SLO, a cgroup, a pod, a unit) is
//! hurting, from the kernel's evidence over a few windows. Pure: windows in,
//! a ranked list of findings out; no I/O, no model, no network. The rules
//! and their figures are in docs/explain.md, and every constant below is
//! named there.
//!
//! Each rule measures one cause for the target (its `magnitude`, in the
//! rule's unit) and compares it with the rule's noise floor: `strength =
//! magnitude / floor`. Below 1 there is no finding. The score is
//! `tier + strength / (1 + strength)`, so a finding of a higher tier always
//! ranks first and, within a tier, the one further above its floor does:
//!
//! - tier 3: a process ended (`oom_kill`, `crash`);
//! - tier 2: a specific cause (`cpu_contention`, `cpu_throttling`,
//!   `memory_reclaim`, TCP, block);
//! - tier 1: pressure (`psi_*`), which says tasks stalled but not why;
//! - tier 0: `data_incomplete`, which is not a cause but qualifies the rest.

pub mod window;

use std::collections::{BTreeMap, HashMap};

use sonde_slo::spec::Selector;

use crate::{
    model::{
        explain::{
            AlertExplanation, Culprit, Evidence, Explanation, Finding, SloEvents, TargetInfo,
            Windows, ALERT_FINDINGS,
        },
        CgroupRef,
    },
    slo::selects,
};

pub use window::Window;

/// Noise floor of `cpu_contention`: seconds of run-queue wait per second
/// that neighbours held the CPU for.
pub const CONTENTION_FLOOR: f64 = 0.02;
/// Noise floor of `cpu_throttling`: share of enforcement periods throttled.
pub const THROTTLING_FLOOR: f64 = 0.01;
/// Noise floor of `memory_reclaim`: seconds of reclaim stall per second.
pub const RECLAIM_FLOOR: f64 = 0.001;
/// Noise floor of `oom_kill` and `crash`: one process.
pub const PROCESS_FLOOR: f64 = 1.0;
/// Noise floor of `tcp_retransmits`: segments per second. Tail-loss probes
/// retransmit without any loss (measured: 29/s for an 8 MiB upload over
/// veth, where 10 % loss made 67 to 492/s).
pub const RETRANSMIT_FLOOR: f64 = 5.0;
/// Noise floor of `tcp_resets`: resets per second.
pub const RESET_FLOOR: f64 = 0.5;
/// Noise floor of `tcp_drops`: packets dropped per second in the target's
/// own network namespace ...
pub const DROP_FLOOR: f64 = 1.0;
/// ... and at least this many over the windows: a fresh namespace drops a
/// few packets of its own (router solicitations to no route, measured: 2
/// `IP_INNOROUTES` in 1.5 s on a new veth pair).
pub const DROP_MIN: u64 = 10;
/// Noise floor of `connect_failures`: failed connects per second.
pub const CONNECT_FAILURE_FLOOR: f64 = 0.05;
/// Noise floor of `block_latency`: the worst device's p99, seconds.
pub const BLOCK_LATENCY_FLOOR: f64 = 0.02;
/// Noise floor of `block_errors`: failed requests.
pub const BLOCK_ERROR_FLOOR: f64 = 1.0;
/// Noise floor of `psi_*`: share of the time some task stalled.
pub const PSI_FLOOR: f64 = 0.05;
/// Culprits listed per finding.
pub const MAX_CULPRITS: usize = 5;

/// What to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The SLO of that name (its selector, from the windows).
    Slo(String),
    /// A cgroup v2 path and every cgroup under it.
    Cgroup(String),
    /// A Kubernetes pod.
    Pod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A systemd unit or slice.
    Unit(String),
}

impl Target {
    /// `slo`, `cgroup`, `pod` or `unit`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Slo(_) => "slo",
            Target::Cgroup(_) => "cgroup",
            Target::Pod { .. } => "pod",
            Target::Unit(_) => "unit",
        }
    }

    /// Its name as given.
    pub fn name(&self) -> String {
        match self {
            Target::Slo(n) | Target::Cgroup(n) | Target::Unit(n) => n.clone(),
            Target::Pod { namespace, name } => format!("{namespace}/{name}"),
        }
    }
}

/// A pod as NAMESPACE/NAME, split.
pub fn parse_pod(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not NAMESPACE/NAME; write the pod as e.g. default/web-0"
        )),
    }
}

impl Target {
    /// The target of `kind` (`slo`, `cgroup`, `pod`, `unit`) named `name`,
    /// as [`Target::kind`] and [`Target::name`] give them.
    pub fn parse(kind: &str, name: &str) -> Result<Self, String> {
        Ok(match kind {
            "slo" => Target::Slo(name.to_owned()),
            "cgroup" => Target::Cgroup(name.to_owned()),
            "pod" => {
                let (namespace, name) = parse_pod(name)?;
                Target::Pod { namespace, name }
            }
            "unit" => Target::Unit(name.to_owned()),
            _ => return Err(format!("no target kind {kind:?}: slo, cgroup, pod or unit")),
        })
    }
}

/// Why a target cannot be explained at all.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// No window to read.
    #[error(
        "no window to explain: the agent has not closed one yet; wait one interval and try again"
    )]
    NoWindows,
    /// `--slo` names no SLO of the windows.
    #[error("no SLO named {name:?} in the windows ({known}); name one of them, or give the agent (or `sonde explain`) the config that declares it")]
    NoSuchSlo {
        /// The name asked for.
        name: String,
        /// The SLOs the windows have, or a note that they have none.
        known: String,
    },
}

/// Explains `target` over the last `last` windows of `windows` (oldest
/// first); a window before them, when there is one, is the baseline of the
/// cumulative counters (PSI, throttling).
pub fn explain(
    target: &Target,
    windows: &[Window],
    last: Option<usize>,
) -> Result<Explanation, ExplainError> {
    if windows.is_empty() {
        return Err(ExplainError::NoWindows);
    }
    let n = last.unwrap_or(windows.len()).clamp(1, windows.len());
    let start = windows.len() - n;
    let baseline = start.checked_sub(1).and_then(|i| windows.get(i));
    let used = windows.get(start..).unwrap_or_default();
    let (selector, slo) = selector_of(target, used)?;
    let mut acc = Accumulator::new(&selector);
    if let Some(b) = baseline {
        acc.cumulative(b, false);
    }
    for w in used {
        acc.window(w);
    }
    let mut findings = acc.findings();
    findings.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.kind.cmp(&b.kind)));
    let windows_info = Windows {
        count: used.len(),
        seconds: acc.seconds,
        from_unix_ns: used.first().map_or(0, |w| {
            w.window_end_unix_ns
                .saturating_sub((w.window_secs * 1e9) as u64)
        }),
        to_unix_ns: used.last().map_or(0, |w| w.window_end_unix_ns),
        incomplete: acc.incomplete,
    };
    let verdict = verdict(&findings, &windows_info);
    Ok(Explanation {
        target: TargetInfo {
            kind: target.kind().to_owned(),
            name: target.name(),
            cgroups: acc.paths.into_values().collect(),
            slo: slo.map(|(signal, objective_percent)| SloEvents {
                signal,
                good: acc.slo_good,
                total: acc.slo_total,
                objective_percent,
            }),
        },
        windows: windows_info,
        findings,
        verdict,
    })
}

/// The selector of the target, and for an SLO its signal and objective.
fn selector_of(
    target: &Target,
    windows: &[Window],
) -> Result<(Selector, Option<(String, f64)>), ExplainError> {
    Ok(match target {
        Target::Cgroup(path) => (
            Selector {
                cgroup: Some(path.clone()),
                ..Selector::default()
            },
            None,
        ),
        Target::Pod { namespace, name } => (
            Selector {
                namespace: Some(namespace.clone()),
                pod: Some(name.clone()),
                ..Selector::default()
            },
            None,
        ),
        Target::Unit(unit) => (
            Selector {
                unit: Some(unit.clone()),
                ..Selector::default()
            },
            None,
        ),
        Target::Slo(name) => {
            let found = windows
                .iter()
                .rev()
                .flat_map(|w| w.slos.iter())
                .find(|s| s.name == *name);
            match found {
                Some(s) => (
                    s.selector.clone(),
                    Some((s.signal.clone(), s.objective_percent)),
                ),
                None => {
                    let mut names: Vec<&str> = windows
                        .iter()
                        .flat_map(|w| w.slos.iter().map(|s| s.name.as_str()))
                        .collect();
                    names.sort_unstable();
                    names.dedup();
                    let known = if names.is_empty() {
                        "they have none".to_owned()
                    } else {
                        format!("they have: {}", names.join(", "))
                    };
                    return Err(ExplainError::NoSuchSlo {
                        name: name.clone(),
                        known,
                    });
                }
            }
        }
    })
}

/// A cgroup's label in findings: its path, or its id when it vanished.
fn label(c: &CgroupRef) -> String {
    c.cgroup_path
        .clone()
        .unwrap_or_else(|| format!("<cgroup {}>", c.cgroup_id))
}

/// Sums over the windows, per rule.
struct Accumulator<'a> {
    selector: &'a Selector,
    seconds: f64,
    incomplete: usize,
    /// The target's cgroups seen, by id.
    paths: BTreeMap<u64, String>,
    slo_good: u64,
    slo_total: u64,
    // cpu_contention
    wait_secs: f64,
    idle_wait_secs: f64,
    self_wait_secs: f64,
    holders: BTreeMap<String, f64>,
    runq_windows: usize,
    // cpu_throttling and PSI: the last cumulative reading per cgroup, and
    // the deltas between consecutive ones.
    last_host: HashMap<u64, window::CgroupHost>,
    periods: u64,
    throttled_periods: u64,
    throttled_ns: u64,
    throttle_windows: usize,
    psi_us: [u64; 3],
    psi_secs: f64,
    psi_windows: usize,
    // memory
    reclaim_secs: f64,
    reclaim_stalls: u64,
    reclaim_windows: usize,
    oom_kills: u64,
    oom_windows: usize,
    crashes: u64,
    crash_signals: BTreeMap<String, u64>,
    crash_windows: usize,
    // tcp
    retransmits: u64,
    resets: u64,
    connect_failures: u64,
    failing: BTreeMap<String, u64>,
    retransmitted: BTreeMap<String, u64>,
    tcp_windows: usize,
    // tcp_drops: packets dropped in the target's own network namespaces
    drops: u64,
    drop_reasons: BTreeMap<String, u64>,
    drop_windows: usize,
    // block (the node's devices)
    device_p99: BTreeMap<String, f64>,
    device_errors: BTreeMap<String, u64>,
    /// Windows each rule's evidence came from that were incomplete.
    incomplete_by_rule: BTreeMap<&'static str, usize>,
}

impl<'a> Accumulator<'a> {
    fn new(selector: &'a Selector) -> Self {
        Self {
            selector,
            seconds: 0.0,
            incomplete: 0,
            paths: BTreeMap::new(),
            slo_good: 0,
            slo_total: 0,
            wait_secs: 0.0,
            idle_wait_secs: 0.0,
            self_wait_secs: 0.0,
            holders: BTreeMap::new(),
            runq_windows: 0,
            last_host: HashMap::new(),
            periods: 0,
            throttled_periods: 0,
            throttled_ns: 0,
            throttle_windows: 0,
            psi_us: [0; 3],
            psi_secs: 0.0,
            psi_windows: 0,
            reclaim_secs: 0.0,
            reclaim_stalls: 0,
            reclaim_windows: 0,
            oom_kills: 0,
            oom_windows: 0,
            crashes: 0,
            crash_signals: BTreeMap::new(),
            crash_windows: 0,
            retransmits: 0,
            resets: 0,
            connect_failures: 0,
            failing: BTreeMap::new(),
            retransmitted: BTreeMap::new(),
            tcp_windows: 0,
            drops: 0,
            drop_reasons: BTreeMap::new(),
            drop_windows: 0,
            device_p99: BTreeMap::new(),
            device_errors: BTreeMap::new(),
            incomplete_by_rule: BTreeMap::new(),
        }
    }

    fn ours(&mut self, c: &CgroupRef) -> bool {
        let yes = selects(self.selector, c);
        if yes {
            self.paths.insert(c.cgroup_id, label(c));
        }
        yes
    }

    fn seen(&mut self, rule: &'static str, complete: bool) {
        if !complete {
            *self.incomplete_by_rule.entry(rule).or_default() += 1;
        }
    }

    fn window(&mut self, w: &Window) {
        self.seconds += w.window_secs;
        if !w.complete {
            self.incomplete += 1;
        }
        let complete = w.complete;
        for s in &w.slos {
            if s.selector == *self.selector {
                self.slo_good += s.good;
                self.slo_total += s.total;
            }
        }

        let mut any = false;
        for v in &w.runqueue_holders {
            if !self.ours(&v.cgroup) {
                continue;
            }
            any = true;
            self.wait_secs += v.wait_secs;
            self.idle_wait_secs += v.idle_wait_secs;
            for h in &v.holders {
                if selects(self.selector, &h.cgroup) {
                    self.self_wait_secs += h.wait_secs;
                } else {
                    *self.holders.entry(label(&h.cgroup)).or_default() += h.wait_secs;
                }
            }
            if v.rest.wait_secs > 0.0 {
                *self.holders.entry("other".to_owned()).or_default() += v.rest.wait_secs;
            }
        }
        if any {
            self.runq_windows += 1;
            self.seen("cpu_contention", complete);
        }

        let mut any = false;
        for r in &w.reclaim {
            if self.ours(&r.cgroup) {
                any = true;
                self.reclaim_secs += r.sum_secs;
                self.reclaim_stalls += r.count;
            }
        }
        if any {
            self.reclaim_windows += 1;
            self.seen("memory_reclaim", complete);
        }

        let mut any = false;
        for k in &w.oom_kills {
            if self.ours(&k.cgroup) && k.count > 0 {
                any = true;
                self.oom_kills += k.count;
            }
        }
        if any {
            self.oom_windows += 1;
            self.seen("oom_kill", complete);
        }

        let mut any = false;
        for e in &w.exits {
            if self.ours(&e.cgroup) && e.crashes > 0 {
                any = true;
                self.crashes += e.crashes;
                for (signal, n) in &e.signals {
                    *self.crash_signals.entry(signal.clone()).or_default() += n;
                }
            }
        }
        if any {
            self.crash_windows += 1;
            self.seen("crash", complete);
        }

        let mut any = false;
        for t in &w.tcp.cgroups {
            if !self.ours(&t.cgroup()) {
                continue;
            }
            any = true;
            self.retransmits += t.retransmit_segments;
            self.resets += t.resets_sent + t.resets_received;
            self.connect_failures += t.connect_failures.values().sum::<u64>();
            for d in &t.retransmit_destinations {
                let name = if d.address == "other" {
                    "other".to_owned()
                } else {
                    format!("{}:{}", d.address, d.port)
                };
                *self.retransmitted.entry(name).or_default() += d.segments;
            }
            for d in &t.failing_destinations {
                *self
                    .failing
                    .entry(format!("{}:{}", d.address, d.port))
                    .or_default() += d.failures;
            }
        }
        if any {
            self.tcp_windows += 1;
            self.seen("tcp", complete);
        }

        // Drops in the target's own network namespaces: the host's is shared
        // by every host-network process, so its drops are the node's.
        let mut namespaces: Vec<u32> = Vec::new();
        for c in &w.cgroups {
            if let (Some(ns), false) = (c.netns, c.netns_is_host) {
                if self.ours(&c.cgroup) && !namespaces.contains(&ns) {
                    namespaces.push(ns);
                }
            }
        }
        if !namespaces.is_empty() {
            self.drop_windows += 1;
            self.seen("tcp_drops", complete);
        }
        for d in w.tcp.drops.iter().filter(|d| namespaces.contains(&d.netns)) {
            self.drops += d.total;
            for (reason, n) in &d.reasons {
                *self.drop_reasons.entry(reason.clone()).or_default() += n;
            }
        }

        for b in &w.block {
            if let Some(p99) = b.p99_secs {
                let worst = self.device_p99.entry(b.device.clone()).or_default();
                *worst = worst.max(p99);
            }
            let errors: u64 = b.errors.values().sum();
            if errors > 0 {
                *self.device_errors.entry(b.device.clone()).or_default() += errors;
            }
        }

        self.cumulative(w, true);
    }

    /// Throttling and PSI: deltas from each cgroup's previous reading. A
    /// cgroup's PSI already holds its children's stalls, so only the
    /// target's topmost cgroups count for PSI.
    fn cumulative(&mut self, w: &Window, count: bool) {
        let ours: Vec<&window::CgroupHost> =
            // The baseline's cgroups are read, not listed as the target's.
            w.cgroups
                .iter()
                .filter(|c| {
                    if count {
                        self.ours(&c.cgroup)
                    } else {
                        selects(self.selector, &c.cgroup)
                    }
                })
                .collect();
        let topmost = |c: &window::CgroupHost| {
            let path = c.cgroup.cgroup_path.as_deref().unwrap_or("");
            !ours.iter().any(|o| {
                o.cgroup.cgroup_id != c.cgroup.cgroup_id
                    && o.cgroup.cgroup_path.as_deref().is_some_and(|p| {
                        path.strip_prefix(p.trim_end_matches('/'))
                            .is_some_and(|rest| rest.starts_with('/'))
                    })
            })
        };
        let mut throttled = false;
        let mut pressured = 0usize;
        for c in &ours {
            let id = c.cgroup.cgroup_id;
            if let (true, Some(before)) = (count, self.last_host.get(&id)) {
                if let (Some(b), Some(a)) = (before.throttling, c.throttling) {
                    if a.periods >= b.periods {
                        self.periods += a.periods - b.periods;
                        self.throttled_periods +=
                            a.throttled_periods.saturating_sub(b.throttled_periods);
                        self.throttled_ns += a.throttled_ns.saturating_sub(b.throttled_ns);
                        throttled = true;
                    }
                }
                if topmost(c) {
                    let pairs = [
                        (before.pressure.cpu, c.pressure.cpu),
                        (before.pressure.memory, c.pressure.memory),
                        (before.pressure.io, c.pressure.io),
                    ];
                    let mut any = false;
                    for (i, (b, a)) in pairs.into_iter().enumerate() {
                        if let (Some(b), Some(a), Some(slot)) = (b, a, self.psi_us.get_mut(i)) {
                            *slot += a.some.total_us.saturating_sub(b.some.total_us);
                            any = true;
                        }
                    }
                    pressured += usize::from(any);
                }
            }
        }
        for c in ours {
            self.last_host.insert(c.cgroup.cgroup_id, c.clone());
        }
        if throttled {
            self.throttle_windows += 1;
            self.seen("cpu_throttling", w.complete);
        }
        if pressured > 0 {
            // The share is per cgroup-second: several topmost cgroups each
            // count the window once.
            self.psi_windows += 1;
            self.psi_secs += w.window_secs * pressured as f64;
        }
    }

    fn per_sec(&self, x: f64) -> f64 {
        if self.seconds > 0.0 {
            x / self.seconds
        } else {
            0.0
        }
    }

    fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let incomplete = |rule: &str| self.incomplete_by_rule.get(rule).copied().unwrap_or(0);

        // cpu_contention: run-queue wait that ended with a neighbour on the CPU.
        let neighbour_secs: f64 = self.holders.values().sum();
        let magnitude = self.per_sec(neighbour_secs);
        if let Some(score) = score(2, magnitude, CONTENTION_FLOOR) {
            let share = ratio(neighbour_secs, self.wait_secs);
            let culprits = top_culprits(
                "cgroup",
                self.holders.iter().map(|(k, v)| (k.clone(), *v)),
                self.wait_secs,
                |secs| self.per_sec(secs),
            );
            let top = culprits
                .first()
                .map(|c| {
                    format!(
                        ", {:.0}% of it behind {}",
                        100.0 * c.share.unwrap_or(0.0),
                        c.name
                    )
                })
                .unwrap_or_default();
            out.push(Finding {
                kind: "cpu_contention".into(),
                score,
                magnitude,
                unit: "s/s".into(),
                share,
                culprits,
                evidence: vec![
                    Evidence {
                        series: "system.linux.scheduler.runqueue.wait.by_holder".into(),
                        value: magnitude,
                        unit: "s/s".into(),
                        windows: self.runq_windows,
                    },
                    Evidence {
                        series: "runqueue_holders.wait_secs".into(),
                        value: self.wait_secs,
                        unit: "s".into(),
                        windows: self.runq_windows,
                    },
                ],
                summary: format!(
                    "{magnitude:.3} s of run-queue wait per second while other cgroups held the CPU{top}"
                ),
                incomplete_windows: incomplete("cpu_contention"),
            });
        }

        // cpu_throttling: share of enforcement periods throttled.
        if self.periods > 0 {
            let magnitude = self.throttled_periods as f64 / self.periods as f64;
            if let Some(score) = score(2, magnitude, THROTTLING_FLOOR) {
                let secs = self.throttled_ns as f64 / 1e9;
                out.push(Finding {
                    kind: "cpu_throttling".into(),
                    score,
                    magnitude,
                    unit: "1".into(),
                    share: Some(magnitude),
                    culprits: Vec::new(),
                    evidence: vec![
                        Evidence {
                            series: "container.cpu.throttled.periods".into(),
                            value: self.throttled_periods as f64,
                            unit: "{period}".into(),
                            windows: self.throttle_windows,
                        },
                        Evidence {
                            series: "container.cpu.throttled.time".into(),
                            value: secs,
                            unit: "s".into(),
                            windows: self.throttle_windows,
                        },
                    ],
                    summary: format!(
                        "{:.0}% of CPU periods throttled by the cgroup's quota ({:.2} s throttled)",
                        100.0 * magnitude,
                        secs
                    ),
                    incomplete_windows: incomplete("cpu_throttling"),
                });
            }
        }

        // memory_reclaim: time stalled reclaiming memory.
        let magnitude = self.per_sec(self.reclaim_secs);
        if let Some(score) = score(2, magnitude, RECLAIM_FLOOR) {
            out.push(Finding {
                kind: "memory_reclaim".into(),
                score,
                magnitude,
                unit: "s/s".into(),
                share: None,
                culprits: Vec::new(),
                evidence: vec![Evidence {
                    series: "system.linux.memory.reclaim.duration".into(),
                    value: self.reclaim_secs,
                    unit: "s".into(),
                    windows: self.reclaim_windows,
                }],
                summary: format!(
                    "{magnitude:.3} s per second stalled in memory reclaim ({} stalls)",
                    self.reclaim_stalls
                ),
                incomplete_windows: incomplete("memory_reclaim"),
            });
        }

        // oom_kill and crash: processes that ended.
        let kills = self.oom_kills as f64;
        if let Some(score) = score(3, kills, PROCESS_FLOOR) {
            out.push(Finding {
                kind: "oom_kill".into(),
                score,
                magnitude: kills,
                unit: "{kill}".into(),
                share: None,
                culprits: Vec::new(),
                evidence: vec![Evidence {
                    series: "system.linux.oom_kill.count".into(),
                    value: kills,
                    unit: "{kill}".into(),
                    windows: self.oom_windows,
                }],
                summary: format!("{} process(es) OOM-killed", self.oom_kills),
                incomplete_windows: incomplete("oom_kill"),
            });
        }
        // The OOM killer's SIGKILL ends its victim like a crash would: those
        // deaths are the kills above, not crashes.
        let crashes = self.crashes.saturating_sub(self.oom_kills) as f64;
        if let Some(score) = score(3, crashes, PROCESS_FLOOR) {
            let signals = self.crash_signals.iter().map(|(k, v)| {
                let n = if k == "SIGKILL" {
                    v.saturating_sub(self.oom_kills)
                } else {
                    *v
                };
                (k.clone(), n as f64)
            });
            let culprits = top_culprits("signal", signals, crashes, |n| n);
            out.push(Finding {
                kind: "crash".into(),
                score,
                magnitude: crashes,
                unit: "{process}".into(),
                share: None,
                culprits,
                evidence: vec![Evidence {
                    series: "process.crashes".into(),
                    value: crashes,
                    unit: "{process}".into(),
                    windows: self.crash_windows,
                }],
                summary: format!("{crashes} process(es) crashed"),
                incomplete_windows: incomplete("crash"),
            });
        }

        // TCP.
        let tcp = |kind: &'static str,
                   n: u64,
                   floor: f64,
                   series: &'static str,
                   unit: &'static str,
                   what: &str,
                   culprits: Vec<Culprit>| {
            let magnitude = self.per_sec(n as f64);
            score(2, magnitude, floor).map(|score| Finding {
                kind: kind.into(),
                score,
                magnitude,
                unit: unit.into(),
                share: None,
                culprits,
                evidence: vec![Evidence {
                    series: series.into(),
                    value: n as f64,
                    unit: "1".into(),
                    windows: self.tcp_windows,
                }],
                summary: format!("{magnitude:.2} {what} per second ({n} in all)"),
                incomplete_windows: incomplete("tcp"),
            })
        };
        let destinations = top_culprits(
            "destination",
            self.retransmitted
                .iter()
                .map(|(k, v)| (k.clone(), *v as f64)),
            self.retransmits as f64,
            |n| n,
        );
        out.extend(tcp(
            "tcp_retransmits",
            self.retransmits,
            RETRANSMIT_FLOOR,
            "network.tcp.retransmits",
            "{segment}/s",
            "segments retransmitted",
            destinations,
        ));
        out.extend(tcp(
            "tcp_resets",
            self.resets,
            RESET_FLOOR,
            "network.tcp.resets",
            "{reset}/s",
            "resets sent or received",
            Vec::new(),
        ));
        let magnitude = self.per_sec(self.drops as f64);
        let drop_score = score(2, magnitude, DROP_FLOOR).filter(|_| self.drops >= DROP_MIN);
        if let Some(score) = drop_score {
            out.push(Finding {
                kind: "tcp_drops".into(),
                score,
                magnitude,
                unit: "{packet}/s".into(),
                share: None,
                culprits: top_culprits(
                    "reason",
                    self.drop_reasons.iter().map(|(k, v)| (k.clone(), *v as f64)),
                    self.drops as f64,
                    |n| n,
                ),
                evidence: vec![Evidence {
                    series: "system.network.packet.dropped".into(),
                    value: self.drops as f64,
                    unit: "{packet}".into(),
                    windows: self.drop_windows,
                }],
                summary: format!(
                    "{magnitude:.2} packets dropped per second in its network namespace ({} in all)",
                    self.drops
                ),
                incomplete_windows: incomplete("tcp_drops"),
            });
        }
        let failing = top_culprits(
            "destination",
            self.failing.iter().map(|(k, v)| (k.clone(), *v as f64)),
            self.connect_failures as f64,
            |n| n,
        );
        out.extend(tcp(
            "connect_failures",
            self.connect_failures,
            CONNECT_FAILURE_FLOOR,
            "network.tcp.connect.failures",
            "{connection}/s",
            "failed connects",
            failing,
        ));

        // Block: the node's devices, when the target waited on I/O.
        let io_stalled = self.psi_us.get(2).copied().unwrap_or(0) > 0;
        if io_stalled {
            let worst = self.device_p99.iter().map(|(d, p)| (d.clone(), *p)).fold(
                None::<(String, f64)>,
                |acc, (d, p)| match acc {
                    Some((_, q)) if q >= p => acc,
                    _ => Some((d, p)),
                },
            );
            if let Some((device, p99)) = worst {
                if let Some(score) = score(2, p99, BLOCK_LATENCY_FLOOR) {
                    let slow = self
                        .device_p99
                        .iter()
                        .filter(|(_, p)| **p >= BLOCK_LATENCY_FLOOR)
                        .map(|(d, p)| (d.clone(), *p));
                    out.push(Finding {
                        kind: "block_latency".into(),
                        score,
                        magnitude: p99,
                        unit: "s".into(),
                        share: None,
                        culprits: top_culprits("device", slow, 0.0, |p| p),
                        evidence: vec![Evidence {
                            series: "system.disk.request.duration".into(),
                            value: p99,
                            unit: "s".into(),
                            windows: self.psi_windows,
                        }],
                        summary: format!(
                            "the target waited on I/O, and {device}'s requests took up to {:.1} ms at p99",
                            p99 * 1e3
                        ),
                        incomplete_windows: 0,
                    });
                }
            }
            let errors: u64 = self.device_errors.values().sum();
            if let Some(score) = score(2, errors as f64, BLOCK_ERROR_FLOOR) {
                out.push(Finding {
                    kind: "block_errors".into(),
                    score,
                    magnitude: errors as f64,
                    unit: "{error}".into(),
                    share: None,
                    culprits: top_culprits(
                        "device",
                        self.device_errors
                            .iter()
                            .map(|(d, n)| (d.clone(), *n as f64)),
                        errors as f64,
                        |n| n,
                    ),
                    evidence: vec![Evidence {
                        series: "system.disk.errors".into(),
                        value: errors as f64,
                        unit: "{error}".into(),
                        windows: self.psi_windows,
                    }],
                    summary: format!(
                        "the target waited on I/O, and {errors} block requests failed"
                    ),
                    incomplete_windows: 0,
                });
            }
        }

        // PSI: stalls without a cause.
        for (i, (kind, series)) in [
            ("psi_cpu", "system.linux.pressure.cpu.time"),
            ("psi_memory", "system.linux.pressure.memory.time"),
            ("psi_io", "system.linux.pressure.io.time"),
        ]
        .into_iter()
        .enumerate()
        {
            let us = self.psi_us.get(i).copied().unwrap_or(0);
            let secs = us as f64 / 1e6;
            let magnitude = if self.psi_secs > 0.0 {
                secs / self.psi_secs
            } else {
                0.0
            };
            if let Some(score) = score(1, magnitude, PSI_FLOOR) {
                out.push(Finding {
                    kind: kind.into(),
                    score,
                    magnitude,
                    unit: "1".into(),
                    share: None,
                    culprits: Vec::new(),
                    evidence: vec![Evidence {
                        series: series.into(),
                        value: secs,
                        unit: "s".into(),
                        windows: self.psi_windows,
                    }],
                    summary: format!(
                        "some of its tasks stalled {:.1}% of the time",
                        100.0 * magnitude
                    ),
                    incomplete_windows: 0,
                });
            }
        }

        // data_incomplete: never a cause, always said.
        if self.incomplete > 0 {
            out.push(Finding {
                kind: "data_incomplete".into(),
                score: 0.0,
                magnitude: self.incomplete as f64,
                unit: "{window}".into(),
                share: None,
                culprits: Vec::new(),
                evidence: vec![Evidence {
                    series: "complete".into(),
                    value: self.incomplete as f64,
                    unit: "{window}".into(),
                    windows: self.incomplete,
                }],
                summary: format!(
                    "{} window(s) lost data or had a probe down: the figures above are lower bounds",
                    self.incomplete
                ),
                incomplete_windows: self.incomplete,
            });
        }
        out
    }
}

/// What a firing SLO alert carries: `slo` explained over `windows` (the
/// agent's recent ones, the latest last), its verdict and top findings.
/// `None` when the windows do not name the SLO.
pub fn for_alert(slo: &str, windows: &[Window]) -> Option<AlertExplanation> {
    let e = explain(&Target::Slo(slo.to_owned()), windows, None).ok()?;
    Some(AlertExplanation {
        verdict: e.verdict,
        findings: e.findings.into_iter().take(ALERT_FINDINGS).collect(),
        windows: e.windows.count,
        incomplete_windows: e.windows.incomplete,
    })
}

/// `tier + strength / (1 + strength)` when `magnitude` reaches `floor`.
fn score(tier: u8, magnitude: f64, floor: f64) -> Option<f64> {
    if !magnitude.is_finite() || floor <= 0.0 || magnitude < floor {
        return None;
    }
    let strength = magnitude / floor;
    Some(f64::from(tier) + strength / (1.0 + strength))
}

fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| (part / whole).clamp(0.0, 1.0))
}

/// The heaviest `MAX_CULPRITS`, with their magnitude (`scale` of their
/// amount) and share of `whole` (none when `whole` is 0).
fn top_culprits(
    kind: &'static str,
    items: impl Iterator<Item = (String, f64)>,
    whole: f64,
    scale: impl Fn(f64) -> f64,
) -> Vec<Culprit> {
    let mut items: Vec<(String, f64)> = items.filter(|(_, v)| *v > 0.0).collect();
    items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    items
        .into_iter()
        .take(MAX_CULPRITS)
        .map(|(name, v)| Culprit {
            kind: kind.into(),
            name,
            magnitude: scale(v),
            share: ratio(v, whole),
        })
        .collect()
}

fn verdict(findings: &[Finding], windows: &Windows) -> String {
    let caveat = if windows.incomplete > 0 {
        format!(
            "; {} of {} windows incomplete, so figures are lower bounds",
            windows.incomplete, windows.count
        )
    } else {
        String::new()
    };
    match findings.iter().find(|f| f.kind != "data_incomplete") {
        Some(f) => format!("{}: {}{caveat}", f.kind, f.summary),
        None => format!(
            "nothing found: no cause above its noise floor in {} window(s), {:.1} s{caveat}",
            windows.count, windows.seconds
        ),
    }
}

/// One finding as a line of the text form: rank, kind, score, summary,
/// culprits with their shares, and whether incomplete windows are behind it.
pub fn finding_line(rank: usize, f: &Finding) -> String {
    let culprits = f
        .culprits
        .iter()
        .map(|c| match c.share {
            Some(s) => format!("{} {:.0}%", c.name, 100.0 * s),
            None => c.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{rank:>2}. {:<16} {:>5.2}  {}{}{}",
        f.kind,
        f.score,
        f.summary,
        if culprits.is_empty() {
            String::new()
        } else {
            format!(" [{culprits}]")
        },
        if f.incomplete_windows > 0 && f.kind != "data_incomplete" {
            format!(" (from {} incomplete window(s))", f.incomplete_windows)
        } else {
            String::new()
        }
    )
}

/// The explanation as a short text: verdict first, then the ranked findings.
pub fn render(e: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "verdict: {}", e.verdict);
    let _ = writeln!(
        out,
        "{} {} over {} window(s), {:.1} s; cgroups: {}",
        e.target.kind,
        e.target.name,
        e.windows.count,
        e.windows.seconds,
        if e.target.cgroups.is_empty() {
            "none seen".to_owned()
        } else {
            e.target.cgroups.join(", ")
        }
    );
    if let Some(s) = &e.target.slo {
        let bad = s.total.saturating_sub(s.good);
        let _ = writeln!(
            out,
            "slo {}: {bad} bad of {} events (objective {}%)",
            s.signal, s.total, s.objective_percent
        );
    }
    for (i, f) in e.findings.iter().enumerate() {
        out.push_str(&finding_line(i + 1, f));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
