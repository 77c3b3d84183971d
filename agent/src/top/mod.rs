//! `sonde top`'s table, pure: windows in, the node's golden signals and one
//! row per cgroup out, each row with a short history, sorted worst first by
//! the chosen column. No terminal here (that is [`draw`] and `cli/top.rs`),
//! so all of it is tested without one.

pub mod draw;
pub mod window;

use std::collections::{BTreeMap, VecDeque};

use sonde_slo::Histogram;

pub use window::Window;

use crate::attribution::{CgroupRef, Owner};

/// Windows of history kept per row (the sparkline's width).
pub const HISTORY: usize = 30;
/// Bound on the rows kept; past it, the rows idle longest go first.
pub const MAX_ROWS: usize = 4096;

/// What one cgroup did in one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Length of the window, seconds.
    pub window_secs: f64,
    /// Syscalls completed.
    pub calls: u64,
    /// Syscalls failed.
    pub errors: u64,
    /// Median syscall latency (all syscalls), seconds.
    pub sys_p50: Option<f64>,
    /// 99th percentile syscall latency, seconds.
    pub sys_p99: Option<f64>,
    /// 99th percentile run-queue latency, seconds.
    pub runq_p99: Option<f64>,
    /// The main neighbour: the cgroup other than this one whose tasks held
    /// the CPU when most of this one's run-queue wait ended, and that wait
    /// in seconds per second.
    pub neighbour: Option<(String, f64)>,
    /// PSI some avg10, percent.
    pub psi_cpu: Option<f64>,
    /// PSI some avg10, percent.
    pub psi_memory: Option<f64>,
    /// PSI some avg10, percent.
    pub psi_io: Option<f64>,
    /// Share of CPU enforcement periods throttled, percent.
    pub throttled: Option<f64>,
    /// Failed TCP connects.
    pub tcp_failures: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Resets sent and received.
    pub resets: u64,
    /// Crashes by signal and OOM kills.
    pub crashes: u64,
    /// The fastest burn rate of the SLOs that select the cgroup.
    pub slo_burn: Option<f64>,
}

impl Metrics {
    fn per_sec(&self, n: u64) -> f64 {
        if self.window_secs > 0.0 {
            n as f64 / self.window_secs
        } else {
            0.0
        }
    }

    /// Whether the cgroup did anything at all in the window.
    fn active(&self) -> bool {
        self.calls > 0
            || self.runq_p99.is_some()
            || self.neighbour.is_some()
            || self.tcp_failures > 0
            || self.retransmits > 0
            || self.resets > 0
            || self.crashes > 0
            || self.slo_burn.is_some()
    }
}

/// A sortable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Failed syscalls per second.
    ErrorsPerSec,
    /// Failed / all syscalls.
    ErrorRatio,
    /// Failed syscalls over the row's history.
    Errors,
    /// Syscalls per second.
    CallsPerSec,
    /// Syscall latency p50.
    SysP50,
    /// Syscall latency p99.
    SysP99,
    /// Run-queue latency p99.
    RunqP99,
    /// The main neighbour on the CPU, by the wait it caused.
    Neighbour,
    /// PSI cpu.
    PsiCpu,
    /// PSI memory.
    PsiMemory,
    /// PSI io.
    PsiIo,
    /// CPU throttling.
    Throttled,
    /// TCP connect failures.
    TcpFailures,
    /// TCP retransmits.
    Retransmits,
    /// TCP resets.
    Resets,
    /// Crashes and OOM kills over the row's history.
    Crashes,
    /// The fastest burn rate of the SLOs whose selector takes the row's
    /// cgroup (each SLO also has a line of its own, [`Board::slos`]).
    SloBurn,
}

impl Column {
    /// Every column, in screen order.
    pub const ALL: [Column; 17] = [
        Column::ErrorsPerSec,
        Column::ErrorRatio,
        Column::Errors,
        Column::CallsPerSec,
        Column::SysP50,
        Column::SysP99,
        Column::RunqP99,
        Column::Neighbour,
        Column::PsiCpu,
        Column::PsiMemory,
        Column::PsiIo,
        Column::Throttled,
        Column::TcpFailures,
        Column::Retransmits,
        Column::Resets,
        Column::Crashes,
        Column::SloBurn,
    ];

    /// Header text: one word, so that text output splits on blanks.
    pub fn title(self) -> &'static str {
        match self {
            Column::ErrorsPerSec => "ERR/s",
            Column::ErrorRatio => "ERR%",
            Column::Errors => "ERRS",
            Column::CallsPerSec => "CALLS/s",
            Column::SysP50 => "SYS_P50",
            Column::SysP99 => "SYS_P99",
            Column::RunqP99 => "RUNQ_P99",
            Column::Neighbour => "NEIGHBOUR",
            Column::PsiCpu => "PSI_CPU",
            Column::PsiMemory => "PSI_MEM",
            Column::PsiIo => "PSI_IO",
            Column::Throttled => "THROTL%",
            Column::TcpFailures => "CONN_FAIL",
            Column::Retransmits => "RETRANS",
            Column::Resets => "RESETS",
            Column::Crashes => "CRASHES",
            Column::SloBurn => "SLO_BURN",
        }
    }

    /// What the column means, for the help line.
    pub fn describe(self) -> &'static str {
        match self {
            Column::ErrorsPerSec => "failed syscalls per second",
            Column::ErrorRatio => "failed / all syscalls",
            Column::Errors => "failed syscalls over the history",
            Column::CallsPerSec => "syscalls per second",
            Column::SysP50 => "syscall latency, median",
            Column::SysP99 => "syscall latency, 99th percentile",
            Column::RunqP99 => "run-queue latency, 99th percentile",
            Column::Neighbour => {
                "the other cgroup holding the CPU when most run-queue waits ended (wait s/s)"
            }
            Column::PsiCpu => "CPU pressure, some, avg10",
            Column::PsiMemory => "memory pressure, some, avg10",
            Column::PsiIo => "I/O pressure, some, avg10",
            Column::Throttled => "CPU periods throttled",
            Column::TcpFailures => "failed TCP connects",
            Column::Retransmits => "TCP segments retransmitted",
            Column::Resets => "TCP resets sent and received",
            Column::Crashes => "crashes and OOM kills over the history",
            Column::SloBurn => "fastest burn rate of the SLOs that select the row",
        }
    }

    /// The column's value in one window; `None` where it has none.
    pub fn value(self, m: &Metrics) -> Option<f64> {
        match self {
            Column::ErrorsPerSec => Some(m.per_sec(m.errors)),
            Column::ErrorRatio => (m.calls > 0).then(|| 100.0 * m.errors as f64 / m.calls as f64),
            Column::Errors => Some(m.errors as f64),
            Column::CallsPerSec => Some(m.per_sec(m.calls)),
            Column::SysP50 => m.sys_p50,
            Column::SysP99 => m.sys_p99,
            Column::RunqP99 => m.runq_p99,
            Column::Neighbour => m.neighbour.as_ref().map(|n| n.1),
            Column::PsiCpu => m.psi_cpu,
            Column::PsiMemory => m.psi_memory,
            Column::PsiIo => m.psi_io,
            Column::Throttled => m.throttled,
            Column::TcpFailures => Some(m.tcp_failures as f64),
            Column::Retransmits => Some(m.retransmits as f64),
            Column::Resets => Some(m.resets as f64),
            Column::Crashes => Some(m.crashes as f64),
            Column::SloBurn => m.slo_burn,
        }
    }

    /// Whether the column sums over the history rather than showing the
    /// latest window.
    fn over_history(self) -> bool {
        matches!(self, Column::Errors | Column::Crashes)
    }

    /// The text of a value.
    pub fn format(self, v: Option<f64>) -> String {
        let Some(v) = v else {
            return "-".to_owned();
        };
        match self {
            Column::SysP50 | Column::SysP99 | Column::RunqP99 => secs(v),
            Column::ErrorRatio
            | Column::PsiCpu
            | Column::PsiMemory
            | Column::PsiIo
            | Column::Throttled => format!("{v:.1}%"),
            Column::ErrorsPerSec | Column::CallsPerSec => rate(v),
            Column::SloBurn => format!("{v:.1}x"),
            Column::Neighbour => format!("{v:.2}"),
            Column::Errors
            | Column::TcpFailures
            | Column::Retransmits
            | Column::Resets
            | Column::Crashes => format!("{v:.0}"),
        }
    }
}

/// A duration with a readable unit.
pub fn secs(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.0}ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// A rate, short.
pub fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// How a row is named: by what owns the cgroup, as attribution names it.
pub fn owner_label(owner: &Owner, path: Option<&str>, cgroup_id: u64) -> String {
    let short = |id: &str| id.chars().take(12).collect::<String>();
    match owner {
        Owner::Host => "host".to_owned(),
        Owner::Pod {
            pod_uid,
            container_id,
            namespace,
            name,
            ..
        } => {
            let pod = match (namespace, name) {
                (Some(ns), Some(n)) => format!("pod {ns}/{n}"),
                _ => format!("pod {pod_uid}"),
            };
            match container_id {
                Some(c) => format!("{pod} ctr {}", short(c)),
                None => pod,
            }
        }
        Owner::Container {
            container_id,
            runtime,
        } => format!("{runtime} {}", short(container_id)),
        Owner::Unit { unit, .. } => {
            // A cgroup below the unit's own (a service's sub-cgroup) keeps
            // the rest of its path, or it would look like the unit itself.
            let rest = path
                .and_then(|p| p.split_once(&format!("/{unit}")))
                .map(|(_, rest)| rest.trim_start_matches('/'))
                .unwrap_or("");
            if rest.is_empty() {
                unit.clone()
            } else {
                format!("{unit} {rest}")
            }
        }
        Owner::Other => path.map_or_else(|| format!("<cgroup {cgroup_id}>"), str::to_owned),
        Owner::Unknown => format!("<cgroup {cgroup_id}, gone>"),
    }
}

/// One cgroup's row: its name and its last windows.
#[derive(Debug, Clone)]
struct RowState {
    /// The cgroup as last seen (named better once attribution resolves it).
    cgroup: CgroupRef,
    /// Oldest first; one entry per window since the row appeared.
    history: VecDeque<Metrics>,
    /// Throttling counters at the last window (cumulative in the kernel).
    throttling: Option<window::Throttling>,
}

impl RowState {
    fn latest(&self) -> Option<&Metrics> {
        self.history.back()
    }

    fn value(&self, column: Column) -> Option<f64> {
        if column.over_history() {
            return Some(self.history.iter().filter_map(|m| column.value(m)).sum());
        }
        column.value(self.latest()?)
    }
}

/// A row as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Owner label.
    pub name: String,
    /// Its cgroup v2 path, when known.
    pub cgroup_path: Option<String>,
    /// Values in [`Column::ALL`] order.
    pub values: Vec<Option<f64>>,
    /// The main neighbour's name in the latest window.
    pub neighbour: Option<String>,
    /// The sort column's value per window, oldest first, [`HISTORY`] at most.
    pub history: Vec<f64>,
}

impl Row {
    /// The row's value in column `c` (`None`: nothing to show).
    pub fn value(&self, c: Column) -> Option<f64> {
        let at = Column::ALL.iter().position(|&k| k == c)?;
        self.values.get(at).copied().flatten()
    }
}

/// The node's golden signals in the latest window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// Window length, seconds.
    pub window_secs: f64,
    /// Windows seen.
    pub windows: u64,
    /// Nothing lost, every probe attached.
    pub complete: bool,
    /// Events lost in the window.
    pub lost: u64,
    /// Probe families not attached (degraded or unavailable).
    pub probes_down: Vec<String>,
    /// Syscalls and failures.
    pub calls: u64,
    /// Failed syscalls.
    pub errors: u64,
    /// Syscall latency p50, p99.
    pub sys_p50: Option<f64>,
    /// Syscall latency p99.
    pub sys_p99: Option<f64>,
    /// Run-queue latency p50.
    pub runq_p50: Option<f64>,
    /// Run-queue latency p99.
    pub runq_p99: Option<f64>,
    /// PSI some avg10, percent.
    pub psi_cpu: Option<f64>,
    /// PSI some avg10, percent.
    pub psi_memory: Option<f64>,
    /// PSI some avg10, percent.
    pub psi_io: Option<f64>,
    /// What the families add to the header (`irq 2.1% (cpu0 7.9%)`).
    pub families: Vec<String>,
    /// Completed connects.
    pub tcp_connects: u64,
    /// Connect p99.
    pub tcp_connect_p99: Option<f64>,
    /// Failed connects.
    pub tcp_failures: u64,
    /// Retransmits.
    pub retransmits: u64,
    /// Resets sent and received.
    pub resets: u64,
    /// Crashes by signal and OOM kills.
    pub crashes: u64,
    /// Block requests completed.
    pub block_completed: u64,
    /// Block requests failed.
    pub block_errors: u64,
    /// Block latency p99.
    pub block_p99: Option<f64>,
}

/// One SLO as `sonde top` shows it, from the agent's own evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SloLine {
    /// Name.
    pub name: String,
    /// What it counts.
    pub signal: String,
    /// Target, percent.
    pub objective_percent: f64,
    /// Burn rate per alert window (seconds), shortest first.
    pub burns: Vec<(u64, f64)>,
    /// Error budget left, fraction (negative when overspent).
    pub budget_remaining: f64,
    /// `ok`, `ticket` or `page`: the most severe firing rule.
    pub severity: &'static str,
    /// The evaluation saw every window whole.
    pub complete: bool,
}

impl SloLine {
    fn new(s: &crate::model::slo::SloStatus) -> Self {
        Self {
            name: s.name.clone(),
            signal: s.signal.clone(),
            objective_percent: s.objective_percent,
            burns: s.burn_by_window(),
            budget_remaining: s.evaluation.budget_remaining,
            severity: s.evaluation.severity.name(),
            complete: s.evaluation.complete,
        }
    }

    fn severity_rank(&self) -> u8 {
        match self.severity {
            "page" => 2,
            "ticket" => 1,
            _ => 0,
        }
    }

    /// The highest burn rate over its alert windows.
    pub fn worst_burn(&self) -> f64 {
        self.burns.iter().map(|(_, b)| *b).fold(0.0, f64::max)
    }

    /// One line: burn per window, budget, state.
    pub fn text(&self) -> String {
        let burns: Vec<String> = self
            .burns
            .iter()
            .map(|(secs, b)| format!("{} {b:.1}x", crate::model::slo::window_label(*secs)))
            .collect();
        format!(
            "SLO {} ({} {}%): burn {}  budget {:.0}% left  {}{}",
            self.name,
            self.signal,
            self.objective_percent,
            if burns.is_empty() {
                "-".to_owned()
            } else {
                burns.join(" · ")
            },
            100.0 * self.budget_remaining,
            self.severity.to_uppercase(),
            if self.complete { "" } else { " (incomplete)" }
        )
    }
}

/// The table: rows by cgroup, the node, the sort.
#[derive(Debug, Clone)]
pub struct Board {
    rows: BTreeMap<u64, RowState>,
    node: Node,
    slos: Vec<SloLine>,
    /// Column sorted by.
    pub sort: Column,
    /// Worst (largest) first; `false` reverses.
    pub descending: bool,
}

impl Default for Board {
    fn default() -> Self {
        Self::new()
    }
}

/// The metrics of cgroup `id` in the window being added.
fn entry<'a>(
    now: &'a mut BTreeMap<u64, (CgroupRef, Metrics)>,
    window_secs: f64,
    id: u64,
    owner: &Owner,
    path: &Option<String>,
) -> &'a mut Metrics {
    &mut now
        .entry(id)
        .or_insert_with(|| {
            let cgroup = CgroupRef {
                cgroup_id: id,
                cgroup_path: path.clone(),
                owner: owner.clone(),
            };
            (
                cgroup,
                Metrics {
                    window_secs,
                    ..Metrics::default()
                },
            )
        })
        .1
}

/// The fastest burn rate (shortest alert window) of the SLOs whose selector
/// takes this cgroup's series, the highest of them.
fn slo_burn(slos: &[crate::model::slo::SloStatus], cgroup: &CgroupRef) -> Option<f64> {
    slos.iter()
        .filter(|s| crate::slo::selects(&s.selector, cgroup))
        .filter_map(|s| s.burn_by_window().first().map(|&(_, burn)| burn))
        .reduce(f64::max)
}

fn psi(p: Option<window::Psi>) -> Option<f64> {
    p.map(|p| p.some.avg10)
}

impl Board {
    /// An empty board, sorted by failed syscalls per second, worst first.
    pub fn new() -> Self {
        Self {
            rows: BTreeMap::new(),
            // Before the first window, each family's figure says it has
            // none (`irq -`).
            node: Node {
                families: crate::model::TopParts::default().header(|_| false),
                ..Node::default()
            },
            slos: Vec::new(),
            sort: Column::ErrorsPerSec,
            descending: true,
        }
    }

    /// The node's signals in the latest window.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The agent's SLOs after the latest window, the most severe and then
    /// the fastest burning first.
    pub fn slos(&self) -> &[SloLine] {
        &self.slos
    }

    /// Adds a closed window: every row gets one more history entry (zero
    /// when its cgroup did nothing), rows idle over the whole history go.
    pub fn add(&mut self, w: &Window) {
        let mut now: BTreeMap<u64, (CgroupRef, Metrics)> = BTreeMap::new();
        let secs = w.window_secs;
        let mut node_sys = Histogram::new();
        for c in &w.syscalls {
            let mut merged = Histogram::new();
            for s in &c.syscalls {
                merged.merge(&s.latency);
            }
            node_sys.merge(&merged);
            let m = entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path);
            m.calls += c.calls;
            m.errors += c.errors;
            m.sys_p50 = merged.quantile(0.5);
            m.sys_p99 = merged.quantile(0.99);
        }
        let mut node_runq = Histogram::new();
        for c in &w.runqueue {
            node_runq.merge(&c.latency);
            entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path).runq_p99 =
                c.latency.quantile(0.99);
        }
        for v in &w.runqueue_holders {
            let neighbour = v.main_neighbour().filter(|_| secs > 0.0).map(|h| {
                let name = owner_label(
                    &h.cgroup.owner,
                    h.cgroup.cgroup_path.as_deref(),
                    h.cgroup.cgroup_id,
                );
                (name, h.wait_secs / secs)
            });
            let c = &v.cgroup;
            entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path).neighbour = neighbour;
        }
        for c in &w.exits {
            entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path).crashes += c.crashes;
        }
        for c in &w.oom_kills {
            entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path).crashes += c.count;
        }
        let mut node_connect = Histogram::new();
        let mut node = Node {
            window_secs: w.window_secs,
            windows: self.node.windows + 1,
            complete: w.complete,
            lost: w.losses.iter().map(|l| l.count).sum(),
            probes_down: w
                .probes
                .iter()
                .filter(|p| p.state != "attached")
                .map(|p| format!("{} {}", p.probe, p.state))
                .collect(),
            retransmits: w.tcp.node.retransmit_segments,
            resets: w.tcp.node.resets_sent + w.tcp.node.resets_received,
            psi_cpu: psi(w.node_pressure.cpu),
            psi_memory: psi(w.node_pressure.memory),
            psi_io: psi(w.node_pressure.io),
            families: w.families.header(|f| {
                w.probes
                    .iter()
                    .any(|p| p.probe == f.name() && p.state != "unavailable")
            }),
            ..Node::default()
        };
        for c in &w.tcp.cgroups {
            node_connect.merge(&c.connect_latency);
            node.tcp_connects += c.connects;
            let m = entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path);
            m.tcp_failures += c.connect_failures.values().sum::<u64>();
            m.retransmits += c.retransmit_segments;
            m.resets += c.resets_sent + c.resets_received;
        }
        let mut throttling = BTreeMap::new();
        for c in &w.cgroups {
            let m = entry(&mut now, secs, c.cgroup_id, &c.owner, &c.cgroup_path);
            m.psi_cpu = psi(c.pressure.cpu);
            m.psi_memory = psi(c.pressure.memory);
            m.psi_io = psi(c.pressure.io);
            if let Some(t) = c.throttling {
                throttling.insert(c.cgroup_id, t);
            }
        }
        for (id, t) in &throttling {
            let before = self.rows.get(id).and_then(|r| r.throttling);
            if let (Some(b), Some((_, m))) = (before, now.get_mut(id)) {
                let periods = t.periods.saturating_sub(b.periods);
                let throttled = t.throttled_periods.saturating_sub(b.throttled_periods);
                if periods > 0 {
                    m.throttled = Some(100.0 * throttled as f64 / periods as f64);
                }
            }
        }
        let mut node_block = Histogram::new();
        for b in &w.block {
            node_block.merge(&b.latency);
            node.block_completed += b.completed;
            node.block_errors += b.errors.values().sum::<u64>();
        }
        for (_, m) in now.values() {
            node.calls += m.calls;
            node.errors += m.errors;
            node.tcp_failures += m.tcp_failures;
            node.retransmits += m.retransmits;
            node.resets += m.resets;
            node.crashes += m.crashes;
        }
        node.sys_p50 = node_sys.quantile(0.5);
        node.sys_p99 = node_sys.quantile(0.99);
        node.runq_p50 = node_runq.quantile(0.5);
        node.runq_p99 = node_runq.quantile(0.99);
        node.tcp_connect_p99 = node_connect.quantile(0.99);
        node.block_p99 = node_block.quantile(0.99);
        self.node = node;
        self.slos = w.slos.iter().map(SloLine::new).collect();
        self.slos.sort_by(|a, b| {
            b.severity_rank()
                .cmp(&a.severity_rank())
                .then(b.worst_burn().total_cmp(&a.worst_burn()))
                .then_with(|| a.name.cmp(&b.name))
        });

        for (id, row) in &mut self.rows {
            if !now.contains_key(id) {
                row.history.push_back(Metrics {
                    window_secs: w.window_secs,
                    ..Metrics::default()
                });
                row.throttling = None;
            }
        }
        for (id, (cgroup, m)) in now {
            let row = self.rows.entry(id).or_insert_with(|| RowState {
                cgroup: cgroup.clone(),
                history: VecDeque::new(),
                throttling: None,
            });
            // A cgroup named later (its pod's log directory appeared) takes
            // the better name.
            row.cgroup = cgroup;
            row.history.push_back(m);
            row.throttling = throttling.get(&id).copied();
        }
        for row in self.rows.values_mut() {
            while row.history.len() > HISTORY {
                row.history.pop_front();
            }
            // Busy or idle in this window, a row an SLO selects shows that
            // SLO's burn over its alert windows.
            if let Some(latest) = row.history.back_mut() {
                latest.slo_burn = slo_burn(&w.slos, &row.cgroup);
            }
        }
        self.rows
            .retain(|_, r| r.history.iter().any(Metrics::active) || r.throttling.is_some());
        if self.rows.len() > MAX_ROWS {
            let mut idle: Vec<(usize, u64)> = self
                .rows
                .iter()
                .map(|(id, r)| {
                    let since = r.history.iter().rev().take_while(|m| !m.active()).count();
                    (since, *id)
                })
                .collect();
            idle.sort_unstable_by(|a, b| b.cmp(a));
            for (_, id) in idle.into_iter().take(self.rows.len() - MAX_ROWS) {
                self.rows.remove(&id);
            }
        }
    }

    /// Sorts by `column` next (the same column again flips the order).
    pub fn sort_by(&mut self, column: Column) {
        if self.sort == column {
            self.descending = !self.descending;
        } else {
            self.sort = column;
            self.descending = true;
        }
    }

    /// Moves the sort one sortable column right (`step` 1) or left (-1).
    pub fn shift_sort(&mut self, step: isize) {
        let all = Column::ALL;
        let at = all.iter().position(|c| *c == self.sort).unwrap_or(0) as isize;
        let n = all.len() as isize;
        let next = usize::try_from((at + step).rem_euclid(n)).unwrap_or(0);
        self.sort = all.get(next).copied().unwrap_or(self.sort);
        self.descending = true;
    }

    /// The rows, sorted: by the sort column, rows without a value last,
    /// then by name.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .map(|(id, r)| Row {
                cgroup_id: *id,
                name: owner_label(&r.cgroup.owner, r.cgroup.cgroup_path.as_deref(), *id),
                cgroup_path: r.cgroup.cgroup_path.clone(),
                values: Column::ALL.iter().map(|c| r.value(*c)).collect(),
                neighbour: r
                    .latest()
                    .and_then(|m| m.neighbour.as_ref())
                    .map(|n| n.0.clone()),
                history: r
                    .history
                    .iter()
                    .map(|m| self.sort.value(m).unwrap_or(0.0))
                    .collect(),
            })
            .collect();
        rows.sort_by(|a, b| {
            let order = match (a.value(self.sort), b.value(self.sort)) {
                (Some(x), Some(y)) => {
                    let o = x.total_cmp(&y);
                    if self.descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            order.then_with(|| a.name.cmp(&b.name))
        });
        rows
    }
}

/// A history as one character per window, scaled to its largest value;
/// padded on the left to `width` when shorter.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values = values
        .get(values.len().saturating_sub(width)..)
        .unwrap_or_default();
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let mut out: String = " ".repeat(width.saturating_sub(values.len()));
    for v in values {
        let level = if max > 0.0 && *v > 0.0 {
            // The smallest non-zero value still shows above zero.
            ((v / max) * (BARS.len() - 1) as f64).ceil() as usize
        } else {
            0
        };
        out.push(BARS.get(level).copied().unwrap_or('█'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CgroupHost, CgroupLatency, CgroupSyscalls, Snapshot, SyscallSeries};
    use crate::{attribution::CgroupRef, host::throttle::Throttling};

    fn cg(id: u64, path: &str, owner: Owner) -> CgroupRef {
        CgroupRef {
            cgroup_id: id,
            cgroup_path: Some(path.to_owned()),
            owner,
        }
    }

    fn hist(samples_ns: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for s in samples_ns {
            h.record_binary_ns(*s);
        }
        h
    }

    fn syscalls(c: CgroupRef, calls_ns: &[u64], errors: u64) -> CgroupSyscalls {
        let mut errnos = BTreeMap::new();
        if errors > 0 {
            errnos.insert("ENOENT".to_owned(), errors);
        }
        let series = SyscallSeries::new("openat".to_owned(), 257, hist(calls_ns), errnos, 1.0);
        CgroupSyscalls {
            cgroup: c,
            calls: series.calls,
            errors: series.errors,
            syscalls: vec![series],
        }
    }

    fn window(s: &Snapshot) -> Window {
        Window::from_snapshot(s).unwrap()
    }

    fn web() -> CgroupRef {
        cg(
            10,
            "/kubepods.slice/kubepods-pod1.slice",
            Owner::Pod {
                pod_uid: "1".to_owned(),
                qos: "guaranteed".to_owned(),
                container_id: None,
                runtime: None,
                namespace: Some("shop".to_owned()),
                name: Some("web-0".to_owned()),
            },
        )
    }

    fn nginx() -> CgroupRef {
        cg(
            20,
            "/system.slice/nginx.service",
            Owner::Unit {
                unit: "nginx.service".to_owned(),
                slice: Some("system.slice".to_owned()),
            },
        )
    }

    #[test]
    fn rows_carry_the_window_worst_first() {
        let s = Snapshot {
            window_secs: 2.0,
            complete: true,
            syscalls: crate::model::syscalls::Part {
                cgroups: vec![
                    syscalls(web(), &[1_000; 100], 10),
                    syscalls(nginx(), &[2_000; 400], 100),
                ],
            },
            sched: crate::model::sched::Part {
                runqueue: vec![CgroupLatency::new(web(), hist(&[50_000; 10]))],
                ..Default::default()
            },
            ..Snapshot::default()
        };
        let mut board = Board::new();
        board.add(&window(&s));
        let rows = board.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "nginx.service");
        assert_eq!(rows[1].name, "pod shop/web-0");
        let col = |c: Column| Column::ALL.iter().position(|x| *x == c).unwrap();
        // 100 errors over 2 s, 25 % of 400 calls.
        assert_eq!(rows[0].values[col(Column::ErrorsPerSec)], Some(50.0));
        assert_eq!(rows[0].values[col(Column::ErrorRatio)], Some(25.0));
        assert_eq!(rows[0].values[col(Column::Errors)], Some(100.0));
        assert_eq!(rows[0].values[col(Column::CallsPerSec)], Some(200.0));
        assert_eq!(rows[0].values[col(Column::RunqP99)], None);
        let p99 = rows[1].values[col(Column::RunqP99)].unwrap();
        // One bucket (at most 9.05 % wide) of the true value.
        assert!((p99 - 50e-6).abs() / 50e-6 < 0.1, "{p99}");
        let p50 = rows[0].values[col(Column::SysP50)].unwrap();
        assert!((p50 - 2e-6).abs() / 2e-6 < 0.1, "{p50}");
        assert_eq!(rows[0].values[col(Column::SloBurn)], None);

        let node = board.node();
        assert_eq!((node.calls, node.errors), (500, 110));
        assert!(node.complete);

        // Sorting by run-queue latency: the row without one goes last;
        // choosing the column again reverses.
        board.sort_by(Column::RunqP99);
        assert_eq!(board.rows()[0].name, "pod shop/web-0");
        board.sort_by(Column::ErrorsPerSec);
        board.sort_by(Column::ErrorsPerSec);
        assert!(!board.descending);
        assert_eq!(board.rows()[0].name, "pod shop/web-0");
        board.shift_sort(-1);
        assert_eq!(board.sort, Column::SloBurn, "wraps to the last column");
        board.shift_sort(1);
        assert_eq!(board.sort, Column::ErrorsPerSec);
    }

    #[test]
    fn history_sums_and_ages_out() {
        let mut board = Board::new();
        let busy = Snapshot {
            window_secs: 1.0,
            syscalls: crate::model::syscalls::Part {
                cgroups: vec![syscalls(nginx(), &[1_000; 10], 3)],
            },
            ..Snapshot::default()
        };
        let idle = Snapshot {
            window_secs: 1.0,
            ..Snapshot::default()
        };
        board.add(&window(&busy));
        board.add(&window(&idle));
        board.add(&window(&busy));
        let rows = board.rows();
        let errs = Column::ALL
            .iter()
            .position(|c| *c == Column::Errors)
            .unwrap();
        let rate = Column::ALL
            .iter()
            .position(|c| *c == Column::ErrorsPerSec)
            .unwrap();
        assert_eq!(
            rows[0].values[errs],
            Some(6.0),
            "3 + 0 + 3 over the history"
        );
        assert_eq!(rows[0].values[rate], Some(3.0), "the latest window");
        assert_eq!(rows[0].history, vec![3.0, 0.0, 3.0]);
        for _ in 0..HISTORY - 1 {
            board.add(&window(&idle));
        }
        assert_eq!(board.rows()[0].history.len(), HISTORY);
        assert_eq!(board.rows()[0].values[errs], Some(3.0));
        board.add(&window(&idle));
        assert!(board.rows().is_empty(), "idle for the whole history");
    }

    #[test]
    fn throttling_is_the_share_of_periods_between_windows() {
        let mut board = Board::new();
        let at = |periods, throttled_periods| Snapshot {
            window_secs: 1.0,
            cgroups: vec![CgroupHost {
                cgroup: nginx(),
                pressure: Default::default(),
                throttling: Some(Throttling {
                    periods,
                    throttled_periods,
                    throttled_ns: 0,
                    source: "cgroup2",
                }),
                netns: None,
                netns_is_host: false,
            }],
            ..Snapshot::default()
        };
        board.add(&window(&at(100, 10)));
        let thr = Column::ALL
            .iter()
            .position(|c| *c == Column::Throttled)
            .unwrap();
        assert_eq!(board.rows()[0].values[thr], None, "no baseline yet");
        board.add(&window(&at(150, 35)));
        assert_eq!(board.rows()[0].values[thr], Some(50.0));
    }

    #[test]
    fn labels_follow_attribution() {
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
        assert_eq!(owner_label(&Owner::Host, Some("/"), 1), "host");
        assert_eq!(
            owner_label(
                &Owner::Container {
                    container_id: id.to_owned(),
                    runtime: "docker".to_owned()
                },
                None,
                1
            ),
            "docker 3f4e5d6c7b8a"
        );
        let unit = Owner::Unit {
            unit: "nginx.service".to_owned(),
            slice: None,
        };
        assert_eq!(
            owner_label(&unit, Some("/system.slice/nginx.service/workers"), 1),
            "nginx.service workers"
        );
        assert_eq!(owner_label(&Owner::Other, Some("/batch"), 1), "/batch");
        assert_eq!(owner_label(&Owner::Unknown, None, 7), "<cgroup 7, gone>");
        let pod = Owner::Pod {
            pod_uid: "u".to_owned(),
            qos: "besteffort".to_owned(),
            container_id: Some(id.to_owned()),
            runtime: Some("containerd".to_owned()),
            namespace: None,
            name: None,
        };
        assert_eq!(owner_label(&pod, None, 1), "pod u ctr 3f4e5d6c7b8a");
    }

    #[test]
    fn slos_come_worst_first_from_the_agents_evaluation() {
        use crate::model::slo::SloStatus;
        use sonde_slo::slo::{BurnRule, Evaluation, RuleState, Severity, Span};
        let slo = |name: &str, burn: f64, severity: Severity| SloStatus {
            name: name.to_owned(),
            signal: "syscall.errors".to_owned(),
            objective_percent: 99.0,
            window_days: 28.0,
            threshold_ms: None,
            selector: Default::default(),
            good: 0,
            total: 0,
            complete: true,
            incomplete_because: Vec::new(),
            explanation: None,
            evaluation: Evaluation {
                compliance: Span::default(),
                budget_remaining: 0.25,
                rules: vec![RuleState {
                    rule: BurnRule {
                        long_secs: 3600,
                        short_secs: 300,
                        factor: 14.4,
                        severity: Severity::Page,
                    },
                    long_burn: burn / 2.0,
                    short_burn: burn,
                    firing: severity == Severity::Page,
                }],
                severity,
                complete: true,
            },
        };
        let s = Snapshot {
            window_secs: 1.0,
            slos: vec![
                slo("calm", 0.5, Severity::Ok),
                slo("hot", 20.0, Severity::Page),
                slo("warm", 30.0, Severity::Ok),
            ],
            ..Snapshot::default()
        };
        let mut board = Board::new();
        board.add(&window(&s));
        let names: Vec<&str> = board.slos().iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["hot", "warm", "calm"]);
        assert_eq!(
            board.slos()[0].text(),
            "SLO hot (syscall.errors 99%): burn 5m 20.0x · 1h 10.0x  budget 25% left  PAGE"
        );
    }

    #[test]
    fn sparklines_scale_to_the_row() {
        assert_eq!(sparkline(&[0.0, 1.0, 8.0], 5), "  ▁▂█");
        assert_eq!(sparkline(&[0.0, 0.0], 2), "▁▁");
        assert_eq!(sparkline(&[1.0; 40], 3), "███");
        assert_eq!(Column::SysP99.format(Some(2.5e-6)), "2.5µs");
        assert_eq!(Column::ErrorsPerSec.format(Some(12_345.0)), "12.3k");
        assert_eq!(Column::SloBurn.format(None), "-");
    }
}
