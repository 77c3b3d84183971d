//! The overhead budget. The agent measures what it costs the node — its own
//! CPU time, and each family's time in its kernel programs from the
//! kernel's program statistics — and, over a configured budget, sheds the
//! most expensive optional family first, one per window; it restores them,
//! the last shed first, once the cost without them has stayed under half the
//! budget for a few windows — a shed family cannot be measured, so it is
//! tried again, and each time it has to be shed again the wait before the
//! next try doubles (up to 64 windows). A shed family is reported
//! unavailable with the reason, so every window and SLO it feeds is
//! flagged incomplete meanwhile.
//!
//! The kernel's statistics cost ~100 ns per program run while enabled, so
//! the agent enables them for a sample at the start of each window only
//! (`BPF_ENABLE_STATS`, which needs CAP_SYS_ADMIN) and scales the rates to
//! the window; where the sysctl `kernel.bpf_stats_enabled` is already on,
//! it reads them over the whole window. The figures include the
//! accounting's own cost: an upper bound.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use sonde_common::family::Family;

pub use crate::model::overhead::{Overhead, ProbeCost};
use crate::probes::Probes;

/// Whether the budget may shed `family`: never one of the essential ones
/// (`Family::essential`: rare events that cost little and matter most).
fn sheddable(family: Family, counting: &[Family]) -> bool {
    counting.contains(&family) && !family.essential()
}

/// The shedding order when the kernel's statistics are unavailable: the
/// families whose hooks fire most often first (`Family::frequency_rank`).
fn by_frequency() -> [Family; Family::ALL.len()] {
    let mut families = Family::ALL;
    families.sort_by_key(|f| f.frequency_rank());
    families
}

/// The budget and how it restores.
#[derive(Debug, Clone, Copy)]
pub struct BudgetConfig {
    /// The most the agent may cost, in percent of one CPU core.
    pub percent_of_core: f64,
    /// A shed family comes back when the cost without it stays under this
    /// share of the budget...
    pub restore_below: f64,
    /// ...for this many windows in a row (doubled each time the family had
    /// to be shed again).
    pub calm_windows: u32,
}

impl BudgetConfig {
    /// A budget in percent of one core, restoring below half of it for
    /// three windows.
    pub fn new(percent_of_core: f64) -> Self {
        Self {
            percent_of_core,
            restore_below: 0.5,
            calm_windows: 3,
        }
    }
}

/// What the budget asks for after a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Detach this family, for this reason.
    Shed(Family, String),
    /// Attach this family again.
    Restore(Family),
}

/// Decides, window by window, what to shed and restore.
#[derive(Debug)]
pub struct Governor {
    config: BudgetConfig,
    /// Shed families, in order.
    shed: Vec<Family>,
    /// How often each family was shed.
    strikes: HashMap<Family, u32>,
    calm: u32,
}

/// The longest wait before a family is tried again, in windows.
const MAX_CALM_WINDOWS: u32 = 64;

impl Governor {
    /// A governor for `config`.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            shed: Vec::new(),
            strikes: HashMap::new(),
            calm: 0,
        }
    }

    /// The families shed now, in order.
    pub fn shed(&self) -> Vec<Family> {
        self.shed.clone()
    }

    /// One decision after a window of `overhead`, given the families
    /// counting now.
    pub fn decide(&mut self, overhead: &Overhead, counting: &[Family]) -> Option<Action> {
        let budget = self.config.percent_of_core;
        let used = overhead.percent_of_core();
        if used > budget {
            self.calm = 0;
            let (family, cost) = if overhead.kernel_unmeasured.is_none() {
                overhead
                    .probes
                    .iter()
                    .filter(|p| sheddable(p.probe, counting))
                    .max_by(|a, b| a.cpu_utilization.total_cmp(&b.cpu_utilization))
                    .map(|p| (p.probe, 100.0 * p.cpu_utilization))?
            } else {
                // Unmeasured: the most frequent hooks first.
                (
                    by_frequency()
                        .into_iter()
                        .find(|&f| sheddable(f, counting))?,
                    0.0,
                )
            };
            self.shed.push(family);
            *self.strikes.entry(family).or_default() += 1;
            return Some(Action::Shed(
                family,
                format!(
                    "shed: the agent cost {used:.2}% of a core, over its budget of {budget}% ({family}: {cost:.2}%)"
                ),
            ));
        }
        let &family = self.shed.last()?;
        if used < self.config.restore_below * budget {
            self.calm += 1;
        } else {
            self.calm = 0;
        }
        let strikes = self.strikes.get(&family).copied().unwrap_or(1);
        let wait = self
            .config
            .calm_windows
            .saturating_mul(1 << strikes.saturating_sub(1).min(6))
            .min(MAX_CALM_WINDOWS);
        if self.calm < wait {
            return None;
        }
        self.calm = 0;
        self.shed.pop();
        Some(Action::Restore(family))
    }
}

/// Measures the agent's cost: its CPU time every window, and its programs'
/// kernel time over a sample at the start of each window.
pub struct Meter {
    sample: Duration,
    cpu_at: (Instant, Duration),
    /// Held while the kernel's statistics are on for a sample.
    stats: Option<OwnedFd>,
    /// When the running sample started, and the programs' statistics then.
    sample_start: Option<(Instant, ProgramTotals)>,
    /// Family → (ns per second, runs per second) from the last sample.
    rates: HashMap<Family, (f64, f64)>,
    unmeasured: Option<String>,
    /// The sysctl keeps the statistics on: no need to enable them.
    always_on: bool,
}

type ProgramTotals = HashMap<u32, (u64, u64)>;

/// The process's CPU time, user and system.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

impl Meter {
    /// A meter sampling the kernel's statistics for `sample` per window
    /// (zero: the agent's own CPU time only).
    pub fn new(sample: Duration) -> Self {
        let always_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        Self {
            sample,
            cpu_at: (Instant::now(), process_cpu()),
            stats: None,
            sample_start: None,
            rates: HashMap::new(),
            unmeasured: sample
                .is_zero()
                .then(|| "no overhead budget set".to_owned()),
            always_on,
        }
    }

    /// When the running sample ends, if one runs.
    pub fn sample_deadline(&self) -> Option<Instant> {
        self.sample_start.as_ref().map(|(at, _)| *at + self.sample)
    }

    /// Starts a sample of the programs' statistics.
    pub fn start_sample(&mut self, probes: &Probes) {
        if self.sample.is_zero() {
            return;
        }
        if !self.always_on && self.stats.is_none() {
            match crate::probes::enable_stats() {
                Ok(fd) => self.stats = Some(fd),
                Err(e) => {
                    self.unmeasured = Some(format!(
                        "the kernel's program statistics are off and cannot be enabled ({e}); grant CAP_SYS_ADMIN or set the sysctl kernel.bpf_stats_enabled=1"
                    ));
                    return;
                }
            }
        }
        self.unmeasured = None;
        let ids = probes.program_ids();
        self.sample_start = Some((Instant::now(), crate::probes::program_totals(&ids)));
    }

    /// Ends the sample: per-family rates, and the statistics off again.
    pub fn end_sample(&mut self, probes: &Probes) {
        let Some((start, before)) = self.sample_start.take() else {
            return;
        };
        let ids = probes.program_ids();
        let after = crate::probes::program_totals(&ids);
        self.stats = None;
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        self.rates.clear();
        for (family, id) in ids {
            let (Some(a), Some(b)) = (after.get(&id), before.get(&id)) else {
                continue;
            };
            let rate = self.rates.entry(family).or_default();
            rate.0 += a.0.saturating_sub(b.0) as f64 / secs;
            rate.1 += a.1.saturating_sub(b.1) as f64 / secs;
        }
    }

    /// The cost of the window just closed.
    pub fn window(&mut self, counting: &[Family]) -> Overhead {
        let now = (Instant::now(), process_cpu());
        let wall = now.0.duration_since(self.cpu_at.0).as_secs_f64().max(1e-3);
        let agent = now.1.saturating_sub(self.cpu_at.1).as_secs_f64() / wall;
        self.cpu_at = now;
        let mut probes: Vec<ProbeCost> = self
            .rates
            .iter()
            .filter(|(f, _)| counting.contains(f))
            .map(|(&probe, &(ns, runs))| ProbeCost {
                probe,
                cpu_utilization: ns / 1e9,
                runs_per_second: runs,
            })
            .collect();
        probes.sort_by(|a, b| b.cpu_utilization.total_cmp(&a.cpu_utilization));
        Overhead {
            agent_cpu_utilization: agent,
            probes,
            kernel_unmeasured: self.unmeasured.clone(),
            budget_percent: None,
            shed: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Family::{Block, Memory, Process, Sched, Syscalls, Tcp};

    fn overhead(agent: f64, probes: &[(Family, f64)]) -> Overhead {
        Overhead {
            agent_cpu_utilization: agent,
            probes: probes
                .iter()
                .map(|&(probe, u)| ProbeCost {
                    probe,
                    cpu_utilization: u,
                    runs_per_second: 0.0,
                })
                .collect(),
            ..Overhead::default()
        }
    }

    const ALL: [Family; Family::ALL.len()] = Family::ALL;

    #[test]
    fn over_budget_sheds_the_most_expensive_optional_family_one_per_window() {
        let mut g = Governor::new(BudgetConfig::new(1.0));
        // 0.2 % agent + syscalls 1.5 % + sched 0.4 % + memory 3 % (essential).
        let o = overhead(0.002, &[(Syscalls, 0.015), (Sched, 0.004), (Memory, 0.03)]);
        match g.decide(&o, &ALL) {
            Some(Action::Shed(Syscalls, why)) => {
                assert!(
                    why.contains("5.10% of a core, over its budget of 1%"),
                    "{why}"
                );
                assert!(why.contains("syscalls: 1.50%"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Still over without syscalls: sched goes next, never memory.
        let o = overhead(0.002, &[(Sched, 0.004), (Memory, 0.03)]);
        let counting = [Sched, Block, Memory, Process, Tcp];
        assert!(matches!(
            g.decide(&o, &counting),
            Some(Action::Shed(Sched, _))
        ));
        let o = overhead(0.002, &[(Memory, 0.03)]);
        assert_eq!(g.decide(&o, &[Block, Memory, Process, Tcp]), None);
        assert_eq!(g.shed(), [Syscalls, Sched]);
    }

    #[test]
    fn restores_last_shed_first_after_calm_windows_and_backs_off() {
        let mut g = Governor::new(BudgetConfig::new(1.0));
        let storm = overhead(0.008, &[(Syscalls, 0.02)]);
        assert!(matches!(
            g.decide(&storm, &ALL),
            Some(Action::Shed(Syscalls, _))
        ));
        let calm = overhead(0.001, &[]);
        assert_eq!(g.decide(&calm, &ALL[1..]), None);
        assert_eq!(g.decide(&calm, &ALL[1..]), None);
        // Over half the budget resets the count.
        assert_eq!(g.decide(&overhead(0.006, &[]), &ALL[1..]), None);
        assert_eq!(g.decide(&calm, &ALL[1..]), None);
        assert_eq!(g.decide(&calm, &ALL[1..]), None);
        assert_eq!(g.decide(&calm, &ALL[1..]), Some(Action::Restore(Syscalls)));
        assert!(g.shed().is_empty());
        // Still storming: shed again, and the next try waits twice as long.
        assert!(matches!(
            g.decide(&storm, &ALL),
            Some(Action::Shed(Syscalls, _))
        ));
        for _ in 0..5 {
            assert_eq!(g.decide(&calm, &ALL[1..]), None);
        }
        assert_eq!(g.decide(&calm, &ALL[1..]), Some(Action::Restore(Syscalls)));
    }

    #[test]
    fn unmeasured_kernel_cost_sheds_the_most_frequent_hooks() {
        let mut g = Governor::new(BudgetConfig::new(1.0));
        let o = Overhead {
            kernel_unmeasured: Some("no stats".into()),
            ..overhead(0.05, &[])
        };
        assert!(matches!(
            g.decide(&o, &ALL),
            Some(Action::Shed(Syscalls, _))
        ));
        assert!(matches!(
            g.decide(&o, &[Sched, Memory, Process]),
            Some(Action::Shed(Sched, _))
        ));
        assert_eq!(g.decide(&o, &[Memory, Process]), None);
    }
}
