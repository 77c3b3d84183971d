//! SLOs at the node: each window's good and total events per configured
//! SLO, taken from the snapshot's deltas; the trackers that turn them into
//! budgets, burn rates and alert states; and the state file that carries
//! the history across a restart.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sonde_slo::{
    slo::{Tracker, TrackerState, WindowCounts},
    spec::{Selector, Signal, SloSpec},
};

use crate::{
    attribution::{CgroupRef, Owner},
    model::{slo::SloStatus, Snapshot},
    probes::ProbeState,
};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "slo-state.json";
/// Where the agent keeps its state unless told otherwise (systemd's
/// `StateDirectory=sonde`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sonde";
const STATE_VERSION: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a state file of this version.
    #[error("{path} is not a sonde SLO state file ({reason}); move it away to start afresh")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
}

/// The state file: each SLO's history and alert states.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// Per SLO name.
    pub slos: BTreeMap<String, TrackerState>,
    /// The statuses after the latest window, as `sonde slo` prints them.
    #[serde(default)]
    pub latest: Vec<SloStatus>,
}

impl StateFile {
    /// Reads `dir`'s state file; `None` when there is none yet.
    pub fn read(dir: &Path) -> Result<Option<StateFile>, StateError> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "reading",
                    path,
                    source,
                })
            }
        };
        Self::parse(&path, &text).map(Some)
    }

    /// Parses a state file's text (read from `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<StateFile, StateError> {
        let state: StateFile = serde_json::from_str(text).map_err(|e| StateError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Format {
                path: path.to_owned(),
                reason: format!(
                    "version {}, this agent writes {STATE_VERSION}",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes it to `dir` atomically (a temporary file renamed over the old).
    pub fn write(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let io = |action, source| StateError::Io {
            action,
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec(self).map_err(|e| io("encoding", io::Error::other(e)))?;
        let mut file = fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        file.write_all(&text).map_err(|e| io("writing", e))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        fs::rename(&tmp, &path).map_err(|e| io("replacing", e))
    }
}

/// The node's SLOs: one tracker each, and where their state lives.
#[derive(Debug)]
pub struct Slos {
    specs: Vec<SloSpec>,
    trackers: Vec<Tracker>,
    state_dir: Option<PathBuf>,
    /// Set when resuming: the first window after a restart starts after a
    /// stretch nobody watched, so it is marked incomplete.
    resumed_gap: bool,
}

impl Slos {
    /// Trackers for `specs`, resumed from `state_dir`'s state file where it
    /// holds a history for the same objective.
    pub fn new(specs: Vec<SloSpec>, state_dir: Option<PathBuf>) -> Result<Self, StateError> {
        let mut saved = match &state_dir {
            Some(dir) => StateFile::read(dir)?.map(|s| s.slos).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let resumed_gap = !saved.is_empty();
        let trackers = specs
            .iter()
            .map(|spec| match saved.remove(&spec.name) {
                Some(state) => Tracker::resume(spec.objective.clone(), state),
                None => Tracker::new(spec.objective.clone()),
            })
            .collect();
        Ok(Self {
            specs,
            trackers,
            state_dir,
            resumed_gap,
        })
    }

    /// The specs, in config order.
    pub fn specs(&self) -> &[SloSpec] {
        &self.specs
    }

    /// Whether any SLO is configured.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Counts one window for every SLO and evaluates; then saves the state.
    pub fn window(&mut self, snapshot: &Snapshot) -> Result<Vec<SloStatus>, StateError> {
        let end_unix_secs = snapshot.window_end_unix_ns / 1_000_000_000;
        // A restart the pinned probes counted through is no gap; one they
        // could not is, for every SLO.
        let resumed_whole = snapshot
            .restart
            .as_ref()
            .is_some_and(|r| r.follows_sequence.is_some() && r.gap.is_none());
        let restart_gap = snapshot.restart.as_ref().and_then(|r| r.gap.clone());
        let gap = std::mem::take(&mut self.resumed_gap) && !resumed_whole;
        let statuses = self
            .specs
            .iter()
            .zip(&mut self.trackers)
            .map(|(spec, tracker)| {
                let mut counts = window_counts(spec, snapshot);
                if let Some(why) = &restart_gap {
                    counts
                        .incomplete_because
                        .push(format!("the agent restarted: {why}"));
                } else if gap {
                    counts.incomplete_because.push(
                        "the agent restarted: events before this window were not seen".into(),
                    );
                }
                let complete = counts.incomplete_because.is_empty();
                let evaluation = tracker.push(WindowCounts {
                    end_unix_secs,
                    good: counts.good,
                    total: counts.total,
                    complete,
                });
                SloStatus {
                    explanation: None,
                    name: spec.name.clone(),
                    signal: spec.signal.name().to_owned(),
                    objective_percent: spec.objective.target * 100.0,
                    window_days: spec.objective.window_secs as f64 / 86_400.0,
                    threshold_ms: spec.threshold_ns.map(|ns| ns as f64 / 1e6),
                    selector: spec.selector.clone(),
                    good: counts.good,
                    total: counts.total,
                    complete,
                    incomplete_because: counts.incomplete_because,
                    evaluation,
                }
            })
            .collect::<Vec<_>>();
        self.save(&statuses)?;
        Ok(statuses)
    }

    /// Writes the trackers' state, when there is a state directory.
    pub fn save(&self, latest: &[SloStatus]) -> Result<(), StateError> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        StateFile {
            version: STATE_VERSION,
            slos: self
                .specs
                .iter()
                .zip(&self.trackers)
                .map(|(spec, tracker)| (spec.name.clone(), tracker.state()))
                .collect(),
            latest: latest.to_vec(),
        }
        .write(dir)
    }
}

/// Good and total of one SLO in one window, and what made it incomplete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events that met the objective.
    pub good: u64,
    /// Valid events.
    pub total: u64,
    /// Empty when the window saw everything the SLI depends on.
    pub incomplete_because: Vec<String>,
}

/// Whether a cgroup's series belong to the selection.
pub fn selects(selector: &Selector, cgroup: &CgroupRef) -> bool {
    if !selector.cgroup_matches(cgroup.cgroup_path.as_deref()) {
        return false;
    }
    if selector.namespace.is_some() || selector.pod.is_some() {
        let Owner::Pod {
            namespace, name, ..
        } = &cgroup.owner
        else {
            return false;
        };
        if selector.namespace.is_some() && selector.namespace != *namespace {
            return false;
        }
        if selector.pod.is_some() && selector.pod != *name {
            return false;
        }
    }
    if let Some(want) = &selector.unit {
        let Owner::Unit { unit, slice } = &cgroup.owner else {
            return false;
        };
        if unit != want && slice.as_deref() != Some(want.as_str()) {
            return false;
        }
    }
    true
}

fn listed(list: &[String], name: &str) -> bool {
    list.is_empty() || list.iter().any(|n| n == name)
}

/// The failures that count as bad: those of `error_types`, or all.
fn bad_of<'a>(error_types: &[String], by_kind: impl Iterator<Item = (&'a str, u64)>) -> u64 {
    by_kind
        .filter(|(kind, _)| listed(error_types, kind))
        .map(|(_, n)| n)
        .sum()
}

/// Counts one SLO's good and total events in a window. Pure: the snapshot
/// holds every delta.
pub fn window_counts(spec: &SloSpec, s: &Snapshot) -> Counts {
    let sel = &spec.selector;
    let threshold = spec.threshold_ns.unwrap_or(0);
    let mut c = Counts::default();
    let mut add = |good: u64, total: u64| {
        c.good += good.min(total);
        c.total += total;
    };
    match spec.signal {
        Signal::SyscallErrors | Signal::SyscallLatency => {
            for cg in s
                .syscalls
                .cgroups
                .iter()
                .filter(|cg| selects(sel, &cg.cgroup))
            {
                for series in cg
                    .syscalls
                    .iter()
                    .filter(|x| listed(&sel.syscalls, &x.name))
                {
                    if spec.signal == Signal::SyscallErrors {
                        let bad = bad_of(
                            &spec.error_types,
                            series.errnos.iter().map(|(k, &n)| (k.as_str(), n)),
                        );
                        // Every failure was a call, also one whose latency
                        // sample found the map full (then not in `calls`:
                        // good and total were 0 for 3,000 failures once).
                        let total = series.calls.max(bad);
                        add(total - bad, total);
                    } else {
                        add(
                            series.latency.count_at_or_below_ns(threshold),
                            series.latency.count(),
                        );
                    }
                }
            }
        }
        Signal::RunqueueLatency | Signal::ReclaimLatency => {
            let list = if spec.signal == Signal::RunqueueLatency {
                &s.sched.runqueue
            } else {
                &s.memory.reclaim
            };
            for cg in list.iter().filter(|cg| selects(sel, &cg.cgroup)) {
                add(
                    cg.latency.count_at_or_below_ns(threshold),
                    cg.latency.count(),
                );
            }
        }
        Signal::BlockErrors | Signal::BlockLatency => {
            for io in s
                .block
                .devices
                .iter()
                .filter(|io| listed(&sel.devices, &io.device) && listed(&sel.operations, io.op))
            {
                if spec.signal == Signal::BlockErrors {
                    let bad = bad_of(
                        &spec.error_types,
                        io.errors.iter().map(|(k, &n)| (k.as_str(), n)),
                    );
                    add(io.completed.saturating_sub(bad), io.completed);
                } else {
                    add(
                        io.latency.count_at_or_below_ns(threshold),
                        io.latency.count(),
                    );
                }
            }
        }
        Signal::TcpConnectErrors | Signal::TcpConnectLatency => {
            for cg in s
                .tcp
                .window
                .cgroups
                .iter()
                .filter(|cg| selects(sel, &cg.cgroup))
            {
                if spec.signal == Signal::TcpConnectErrors {
                    let bad = bad_of(
                        &spec.error_types,
                        cg.connect_failures.iter().map(|(&k, &n)| (k, n)),
                    );
                    let attempts = cg.connects + cg.failures();
                    add(attempts.saturating_sub(bad), attempts);
                } else {
                    add(
                        cg.connect_latency.count_at_or_below_ns(threshold),
                        cg.connect_latency.count(),
                    );
                }
            }
        }
    }
    let family = spec.signal.family();
    match s.probes.iter().find(|p| p.family() == Some(family)) {
        Some(p) if p.state == ProbeState::Attached => {}
        Some(p) => c.incomplete_because.push(format!(
            "probe {family} is {}{}",
            match p.state {
                ProbeState::Degraded => "degraded",
                _ => "not attached",
            },
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
        None => c
            .incomplete_because
            .push(format!("probe {family} is not running (see --probes)")),
    }
    for loss in s
        .losses
        .iter()
        .filter(|l| l.count > 0 && (l.probe == family.name() || l.probe == "all"))
    {
        let by_cgroup = crate::sampler::BY_CGROUP.contains(&(loss.probe, loss.reason));
        if !by_cgroup {
            c.incomplete_because.push(format!(
                "{} {} events lost ({} {})",
                loss.count, loss.probe, loss.stage, loss.reason
            ));
            continue;
        }
        // Counted by cgroup: only this SLO's cgroups' losses, and those no
        // cgroup could be named for, make it incomplete.
        let ours: u64 = s
            .losses_by_cgroup
            .iter()
            .filter(|l| l.probe == loss.probe && l.reason == loss.reason)
            .filter(|l| selects(sel, &l.cgroup))
            .map(|l| l.count)
            .sum();
        if ours > 0 {
            c.incomplete_because.push(format!(
                "{ours} {} events of this SLO's cgroups lost ({} {})",
                loss.probe, loss.stage, loss.reason
            ));
        }
        let unattributed: u64 = s
            .losses_unattributed
            .iter()
            .filter(|l| l.probe == loss.probe && l.reason == loss.reason)
            .map(|l| l.count)
            .sum();
        if unattributed > 0 {
            c.incomplete_because.push(format!(
                "{unattributed} {} events lost that no cgroup could be named for ({} {}, unattributed)",
                loss.probe, loss.stage, loss.reason
            ));
        }
    }
    if (sel.by_owner() || sel.cgroup.is_some()) && s.unattributed_series > 0 {
        c.incomplete_because.push(format!(
            "{} series could not be attributed to an owner",
            s.unattributed_series
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sonde_slo::Histogram;

    use super::*;
    use crate::{
        model::{CgroupSyscalls, LossRecord, SyscallSeries},
        probes::ProbeStatus,
    };

    fn spec(text: &str) -> SloSpec {
        sonde_slo::spec::parse("sonde.toml", text)
            .unwrap()
            .remove(0)
    }

    fn cgroup(path: &str) -> CgroupRef {
        CgroupRef {
            cgroup_id: 1,
            cgroup_path: Some(path.to_owned()),
            owner: crate::attribution::owner::classify(path),
        }
    }

    fn openat(calls: u64, errnos: &[(&str, u64)], latencies_ns: &[u64]) -> SyscallSeries {
        let mut latency = Histogram::new();
        for &ns in latencies_ns {
            latency.record_kernel_bucket(sonde_common::hist::latency_bucket_key(ns), 1);
        }
        assert_eq!(latency.count(), calls);
        let errnos: BTreeMap<String, u64> =
            errnos.iter().map(|&(k, n)| (k.to_owned(), n)).collect();
        SyscallSeries::new("openat".into(), 257, latency, errnos, 1.0)
    }

    fn snapshot(syscalls: Vec<CgroupSyscalls>) -> Snapshot {
        Snapshot {
            probes: vec![ProbeStatus {
                probe: "syscalls",
                state: ProbeState::Attached,
                hook: None,
                reason: None,
                gaps: Vec::new(),
            }],
            syscalls: crate::model::syscalls::Part { cgroups: syscalls },
            ..Default::default()
        }
    }

    fn in_cgroup(path: &str, series: Vec<SyscallSeries>) -> CgroupSyscalls {
        CgroupSyscalls {
            cgroup: cgroup(path),
            calls: series.iter().map(|s| s.calls).sum(),
            errors: series.iter().map(|s| s.errors).sum(),
            syscalls: series,
        }
    }

    #[test]
    fn failures_without_a_latency_sample_stay_in_the_error_slo() {
        // The latency map was full: 3,000 failures, no latency sample.
        let s = snapshot(vec![in_cgroup(
            "/system.slice/web.service",
            vec![openat(0, &[("ENOENT", 3000)], &[])],
        )]);
        let slo = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\nselector.unit=\"web.service\"\n");
        let c = window_counts(&slo, &s);
        assert_eq!((c.good, c.total), (0, 3000));
    }

    #[test]
    fn error_slo_counts_the_selected_kinds_in_the_selected_cgroups() {
        let s = snapshot(vec![
            in_cgroup(
                "/system.slice/web.service",
                vec![openat(100, &[("ENOENT", 2), ("EACCES", 1)], &[1000; 100])],
            ),
            in_cgroup(
                "/system.slice/db.service",
                vec![openat(50, &[("ENOENT", 50)], &[1000; 50])],
            ),
        ]);
        let all = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\nselector.unit=\"web.service\"\n");
        assert_eq!(
            window_counts(&all, &s),
            Counts {
                good: 97,
                total: 100,
                incomplete_because: vec![]
            }
        );
        let enoent = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\nerror_types=[\"ENOENT\"]\nselector.unit=\"system.slice\"\n");
        assert_eq!(window_counts(&enoent, &s).good, 98);
        assert_eq!(window_counts(&enoent, &s).total, 150);
        let other_call = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\nselector.syscalls=[\"read\"]\n");
        assert_eq!(window_counts(&other_call, &s).total, 0);
    }

    #[test]
    fn latency_slo_counts_exactly_below_a_threshold_the_kernel_split() {
        // The kernel's flag, as in sonde-slo's tests: 10 ms lies mid-bucket.
        let threshold_ns = 10_000_000;
        let mut latency = Histogram::new();
        for ns in [9_800_000u64, 10_000_000, 10_200_000, 1_000_000] {
            let key = sonde_common::hist::latency_bucket_key(ns);
            let same = key == sonde_common::hist::latency_bucket_key(threshold_ns);
            let flag = if same && ns <= threshold_ns {
                sonde_common::hist::AT_OR_BELOW_THRESHOLD
            } else {
                0
            };
            latency.record_kernel_bucket(key | flag, 1);
        }
        let series = SyscallSeries::new("nanosleep".into(), 35, latency, BTreeMap::new(), 1.0);
        let s = snapshot(vec![in_cgroup("/x", vec![series])]);
        let slo = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.latency\"\nobjective_percent=99\nthreshold_ms=10\nselector.cgroup=\"/x\"\n");
        assert_eq!(
            window_counts(&slo, &s),
            Counts {
                good: 3,
                total: 4,
                incomplete_because: vec![]
            }
        );
    }

    #[test]
    fn losses_detached_probes_and_unattributed_series_make_a_window_incomplete() {
        let slo = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\nselector.pod=\"shop/web\"\n");
        let mut s = snapshot(vec![]);
        assert!(window_counts(&slo, &s).incomplete_because.is_empty());
        s.losses.push(LossRecord {
            stage: "kernel",
            probe: "syscalls",
            reason: "hist_map_full",
            count: 3,
        });
        s.losses.push(LossRecord {
            stage: "kernel",
            probe: "tcp",
            reason: "x",
            count: 3,
        });
        s.losses_unattributed.push(s.losses[0].clone());
        s.unattributed_series = 2;
        s.probes[0].state = ProbeState::Unavailable;
        let why = window_counts(&slo, &s).incomplete_because;
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why[0].starts_with("probe syscalls is not attached"),
            "{why:?}"
        );
        assert_eq!(
            why[1],
            "3 syscalls events lost that no cgroup could be named for (kernel hist_map_full, unattributed)"
        );
    }

    #[test]
    fn only_the_slos_own_cgroups_losses_make_it_incomplete() {
        let slo = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\nselector.cgroup=\"/shop\"\n");
        let mut s = snapshot(vec![]);
        let lost = |path: &str, count| crate::model::CgroupLoss {
            cgroup: cgroup(path),
            probe: "syscalls",
            reason: "errors_map_full",
            count,
        };
        // Another cgroup lost failures: this SLO's data is whole.
        s.losses.push(LossRecord {
            stage: "kernel",
            probe: "syscalls",
            reason: "errors_map_full",
            count: 5,
        });
        s.losses_by_cgroup.push(lost("/other", 5));
        s.losses_unattributed.push(LossRecord {
            stage: "kernel",
            probe: "syscalls",
            reason: "errors_map_full",
            count: 0,
        });
        assert_eq!(
            window_counts(&slo, &s).incomplete_because,
            Vec::<String>::new()
        );
        // Its own cgroup lost some: incomplete, by exactly those.
        s.losses[0].count = 7;
        s.losses_by_cgroup.push(lost("/shop/web", 2));
        assert_eq!(
            window_counts(&slo, &s).incomplete_because,
            vec!["2 syscalls events of this SLO's cgroups lost (kernel errors_map_full)"]
        );
        // A loss no cgroup could be named for: every SLO of the family.
        s.losses_by_cgroup.pop();
        s.losses_unattributed[0].count = 2;
        assert_eq!(
            window_counts(&slo, &s).incomplete_because,
            vec!["2 syscalls events lost that no cgroup could be named for (kernel errors_map_full, unattributed)"]
        );
    }

    #[test]
    fn state_survives_a_restart_and_the_gap_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let slo = spec("[[slo]]\nname=\"a\"\nsignal=\"syscall.errors\"\nobjective_percent=99\n");
        let mut s = snapshot(vec![in_cgroup(
            "/x",
            vec![openat(100, &[("ENOENT", 1)], &[1000; 100])],
        )]);
        s.window_end_unix_ns = 1_700_000_000_000_000_000;
        let mut slos = Slos::new(vec![slo.clone()], Some(dir.path().into())).unwrap();
        let first = slos.window(&s).unwrap();
        assert!(first[0].complete);
        drop(slos);
        let mut again = Slos::new(vec![slo], Some(dir.path().into())).unwrap();
        s.window_end_unix_ns += 10_000_000_000;
        let second = again.window(&s).unwrap();
        assert_eq!(second[0].evaluation.compliance.total, 200);
        assert_eq!(second[0].evaluation.compliance.good, 198);
        assert!(!second[0].complete);
        assert!(!second[0].evaluation.complete);
        fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let e = Slos::new(vec![], Some(dir.path().into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a sonde SLO state file"), "{e}");
    }
}
