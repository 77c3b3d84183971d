//! SLO math: error budgets and multi-window, multi-burn-rate alerts (the SRE
//! workbook's scheme), over a stream of per-window good/total counts.
//! Pure: the agent and the collector feed it counts, it hands back states.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Good and total events of one window, and whether the window saw
/// everything (no counted loss, every probe attached, every series attributed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounts {
    /// End of the window, Unix seconds.
    pub end_unix_secs: u64,
    /// Events that met the objective.
    pub good: u64,
    /// Valid events.
    pub total: u64,
    /// False when the window lost data: its SLI is a lower bound.
    pub complete: bool,
}

/// Good/total over a span of windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Events that met the objective.
    pub good: u64,
    /// Valid events.
    pub total: u64,
    /// Every window in the span was complete.
    pub complete: bool,
}

impl Span {
    /// The bad fraction (0 with no events).
    pub fn error_ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.total - self.good.min(self.total)) as f64 / self.total as f64
        }
    }

    /// How fast the span burns the budget of an objective: the error ratio
    /// over the allowed error ratio (1.0 spends exactly the budget).
    pub fn burn_rate(&self, objective: f64) -> f64 {
        let allowed = 1.0 - objective;
        if allowed <= 0.0 {
            return if self.error_ratio() > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
        }
        self.error_ratio() / allowed
    }
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// Someone should look during working hours.
    Ticket,
    /// Someone should look now.
    Page,
}

impl Severity {
    /// `ok`, `ticket` or `page`: the `slo.severity` label and what every
    /// view prints.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Ticket => "ticket",
            Severity::Page => "page",
        }
    }
}

/// One alerting rule: fire when the burn rate over both windows is at least
/// `factor`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurnRule {
    /// Long window, seconds.
    pub long_secs: u64,
    /// Short window, seconds (stops the alert soon after the burn stops).
    pub short_secs: u64,
    /// Burn-rate threshold.
    pub factor: f64,
    /// What firing means.
    pub severity: Severity,
}

impl BurnRule {
    /// The SRE workbook's defaults for a 28–30 day objective: 14.4x over 1 h
    /// and 5 min (page), 6x over 6 h and 30 min (page), 1x over 3 d and 6 h
    /// (ticket).
    pub fn workbook() -> Vec<BurnRule> {
        vec![
            BurnRule {
                long_secs: 3600,
                short_secs: 300,
                factor: 14.4,
                severity: Severity::Page,
            },
            BurnRule {
                long_secs: 6 * 3600,
                short_secs: 1800,
                factor: 6.0,
                severity: Severity::Page,
            },
            BurnRule {
                long_secs: 3 * 86400,
                short_secs: 6 * 3600,
                factor: 1.0,
                severity: Severity::Ticket,
            },
        ]
    }
}

/// An objective and how to alert on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Target good fraction, e.g. 0.999.
    pub target: f64,
    /// Compliance window, seconds (e.g. 28 days).
    pub window_secs: u64,
    /// Alerting rules.
    pub rules: Vec<BurnRule>,
    /// A firing rule clears only when its short window's burn rate falls
    /// below `factor * clear_ratio` (hysteresis; 1.0 for none).
    pub clear_ratio: f64,
}

/// Burn rate over one rule's windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// The rule.
    pub rule: BurnRule,
    /// Burn rate over the long window.
    pub long_burn: f64,
    /// Burn rate over the short window.
    pub short_burn: f64,
    /// Firing now.
    pub firing: bool,
}

/// Where an objective stands after the latest window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Good/total over the compliance window.
    pub compliance: Span,
    /// Fraction of the error budget left (negative when overspent).
    pub budget_remaining: f64,
    /// Each rule's burn rates and state.
    pub rules: Vec<RuleState>,
    /// The most severe firing rule's severity.
    pub severity: Severity,
    /// False when any window the evaluation looked at lost data: an alert
    /// raised on it says so, and the figures are lower bounds.
    pub complete: bool,
}

/// Windows younger than this keep their own entry; older ones are merged
/// into [`COARSE_SLOT_SECS`] slots. Covers the workbook's short windows and
/// the 1 h and 6 h long ones at full resolution.
pub const FINE_HORIZON_SECS: u64 = 7 * 3600;
/// Slot of the merged older windows: spans of days are off by at most this
/// much at their far edge, and a 28-day history takes 4,032 entries.
pub const COARSE_SLOT_SECS: u64 = 600;

/// Counts of one entry in a tracker's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Events that met the objective.
    pub good: u64,
    /// Valid events.
    pub total: u64,
    /// Every window merged in was complete.
    pub complete: bool,
}

/// What a tracker must remember across a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackerState {
    /// The objective the history was kept for.
    pub objective: Objective,
    /// History: (end of the window or slot, Unix seconds, its counts).
    pub slots: Vec<(u64, Slot)>,
    /// Which rules were firing (hysteresis).
    pub firing: Vec<bool>,
}

impl Evaluation {
    /// Burn rate per distinct alert window (seconds), shortest first.
    pub fn burn_by_window(&self) -> Vec<(u64, f64)> {
        let mut out: Vec<(u64, f64)> = Vec::new();
        for r in &self.rules {
            for (secs, burn) in [
                (r.rule.short_secs, r.short_burn),
                (r.rule.long_secs, r.long_burn),
            ] {
                if !out.iter().any(|(s, _)| *s == secs) {
                    out.push((secs, burn));
                }
            }
        }
        out.sort_by_key(|(secs, _)| *secs);
        out
    }
}

/// The stream of windows of one SLI and the state of its alerts. Windows
/// may arrive out of order (the collector hears many nodes, some late);
/// windows ending at the same second add up (the fleet's sum).
#[derive(Debug, Clone)]
pub struct Tracker {
    objective: Objective,
    slots: BTreeMap<u64, Slot>,
    latest: u64,
    firing: Vec<bool>,
    /// Windows before this were merged into coarse slots already.
    compacted_until: u64,
}

impl Tracker {
    /// A tracker with no history.
    pub fn new(objective: Objective) -> Self {
        let rules = objective.rules.len();
        Self {
            objective,
            slots: BTreeMap::new(),
            latest: 0,
            firing: vec![false; rules],
            compacted_until: 0,
        }
    }

    /// A tracker resumed from `state`, or a fresh one when the state was
    /// kept for another objective (its history would mean something else).
    pub fn resume(objective: Objective, state: TrackerState) -> Self {
        if state.objective != objective || state.firing.len() != objective.rules.len() {
            return Self::new(objective);
        }
        let slots: BTreeMap<u64, Slot> = state.slots.into_iter().collect();
        Self {
            latest: slots.last_key_value().map_or(0, |(&t, _)| t),
            objective,
            slots,
            firing: state.firing,
            compacted_until: 0,
        }
    }

    /// What to persist to resume later.
    pub fn state(&self) -> TrackerState {
        TrackerState {
            objective: self.objective.clone(),
            slots: self.slots.iter().map(|(&t, &s)| (t, s)).collect(),
            firing: self.firing.clone(),
        }
    }

    /// End of the latest window seen, Unix seconds (0: none).
    pub fn latest_unix_secs(&self) -> u64 {
        self.latest
    }

    /// Adds a window and evaluates at the latest end seen.
    pub fn push(&mut self, w: WindowCounts) -> Evaluation {
        self.add(w);
        self.evaluate(self.latest)
    }

    /// Adds a window without evaluating (the collector adds every node's
    /// report, then evaluates once).
    pub fn add(&mut self, w: WindowCounts) {
        let slot = self.slots.entry(w.end_unix_secs).or_insert(Slot {
            good: 0,
            total: 0,
            complete: true,
        });
        slot.good += w.good;
        slot.total += w.total;
        slot.complete &= w.complete;
        self.latest = self.latest.max(w.end_unix_secs);
        self.compact();
    }

    /// Forgets what lies beyond every window, and merges old windows into
    /// coarse slots.
    fn compact(&mut self) {
        let keep = self
            .objective
            .rules
            .iter()
            .map(|r| r.long_secs)
            .chain([self.objective.window_secs])
            .max()
            .unwrap_or(0);
        let oldest = self.latest.saturating_sub(keep);
        while self
            .slots
            .first_key_value()
            .is_some_and(|(&t, _)| t <= oldest)
        {
            self.slots.pop_first();
        }
        let fine_from = self.latest.saturating_sub(FINE_HORIZON_SECS);
        if fine_from <= self.compacted_until {
            return;
        }
        // Only what aged past the horizon since the last call (and one slot
        // before it). A window resent so late that it lands further back
        // keeps its own entry until it ages out: counted either way.
        let from = self.compacted_until.saturating_sub(COARSE_SLOT_SECS);
        self.compacted_until = fine_from;
        let old: Vec<u64> = self
            .slots
            .range(from..fine_from)
            .map(|(&t, _)| t)
            .filter(|t| t % COARSE_SLOT_SECS != 0)
            .collect();
        for t in old {
            let Some(slot) = self.slots.remove(&t) else {
                continue;
            };
            let coarse = t.div_ceil(COARSE_SLOT_SECS) * COARSE_SLOT_SECS;
            let into = self.slots.entry(coarse).or_insert(Slot {
                good: 0,
                total: 0,
                complete: true,
            });
            into.good += slot.good;
            into.total += slot.total;
            into.complete &= slot.complete;
        }
    }

    /// Good/total over the windows that ended within `secs` of `now`.
    pub fn span(&self, now: u64, secs: u64) -> Span {
        span_of(&self.slots, now, secs)
    }

    /// Evaluates at `now` (Unix seconds), updating the alert states.
    pub fn evaluate_at(&mut self, now: u64) -> Evaluation {
        self.evaluate(now)
    }

    fn evaluate(&mut self, now: u64) -> Evaluation {
        let slots = &self.slots;
        evaluate_spans(&self.objective, &mut self.firing, |secs| {
            span_of(slots, now, secs)
        })
    }
}

fn span_of(slots: &BTreeMap<u64, Slot>, now: u64, secs: u64) -> Span {
    let mut span = Span {
        good: 0,
        total: 0,
        complete: true,
    };
    for slot in slots.range(now.saturating_sub(secs) + 1..).map(|(_, s)| s) {
        span.good += slot.good;
        span.total += slot.total;
        span.complete &= slot.complete;
    }
    span
}

/// Every window `objective` looks at (its SLO window and its rules' alert
/// windows), seconds, shortest first, each once.
pub fn windows(objective: &Objective) -> Vec<u64> {
    let mut out: Vec<u64> = objective
        .rules
        .iter()
        .flat_map(|r| [r.short_secs, r.long_secs])
        .chain([objective.window_secs])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The evaluation of `objective` from its spans, however they were counted
/// (a tracker's history; a store's cumulative counters): `span(secs)` is
/// good/total over the windows that ended within `secs` of the moment
/// evaluated, for each of [`windows`]. `firing` holds whether each rule
/// fired at the previous evaluation (hysteresis; all false without one) and
/// is updated.
pub fn evaluate_spans(
    objective: &Objective,
    firing: &mut [bool],
    span: impl Fn(u64) -> Span,
) -> Evaluation {
    let target = objective.target;
    let compliance = span(objective.window_secs);
    let allowed_bad = (1.0 - target) * compliance.total as f64;
    let bad = (compliance.total - compliance.good.min(compliance.total)) as f64;
    let budget_remaining = if allowed_bad > 0.0 {
        1.0 - bad / allowed_bad
    } else if bad > 0.0 {
        f64::NEG_INFINITY
    } else {
        1.0
    };
    let mut complete = compliance.complete;
    let mut severity = Severity::Ok;
    let mut rules = Vec::with_capacity(objective.rules.len());
    for (i, rule) in objective.rules.iter().copied().enumerate() {
        let long = span(rule.long_secs);
        let short = span(rule.short_secs);
        let (long_burn, short_burn) = (long.burn_rate(target), short.burn_rate(target));
        // `new` and `resume` keep one flag per rule.
        let was_firing = firing.get(i).copied().unwrap_or(false);
        let fires = if was_firing {
            // Hysteresis: stays until the short window cools below the clear level.
            short_burn >= rule.factor * objective.clear_ratio
                && long_burn >= rule.factor * objective.clear_ratio
        } else {
            long_burn >= rule.factor && short_burn >= rule.factor
        };
        if let Some(flag) = firing.get_mut(i) {
            *flag = fires;
        }
        complete &= long.complete && short.complete;
        if fires && rule.severity > severity {
            severity = rule.severity;
        }
        rules.push(RuleState {
            rule,
            long_burn,
            short_burn,
            firing: fires,
        });
    }
    Evaluation {
        compliance,
        budget_remaining,
        rules,
        severity,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    fn objective(rules: Vec<BurnRule>, clear_ratio: f64) -> Objective {
        Objective {
            target: 0.99,
            window_secs: 28 * 86400,
            rules,
            clear_ratio,
        }
    }

    fn minute(t: u64, good: u64, total: u64) -> WindowCounts {
        WindowCounts {
            end_unix_secs: t * MIN,
            good,
            total,
            complete: true,
        }
    }

    #[test]
    fn burn_rate_and_budget_have_known_answers() {
        // 2 % bad against a 99 % objective burns at 2x.
        let s = Span {
            good: 980,
            total: 1000,
            complete: true,
        };
        assert!((s.burn_rate(0.99) - 2.0).abs() < 1e-12);
        assert_eq!(Span::default().burn_rate(0.99), 0.0);
        let mut t = Tracker::new(objective(vec![], 1.0));
        let e = t.push(minute(1, 995, 1000)); // 5 bad of 10 allowed
        assert!((e.budget_remaining - 0.5).abs() < 1e-12);
        let e = t.push(minute(2, 985, 1000)); // 20 bad of 20 allowed
        assert!(e.budget_remaining.abs() < 1e-12);
        let e = t.push(minute(3, 900, 1000)); // 120 bad of 30 allowed
        assert!((e.budget_remaining - (1.0 - 120.0 / 30.0)).abs() < 1e-12);
    }

    #[test]
    fn multi_window_alert_fires_and_clears() {
        let page = BurnRule {
            long_secs: 60 * MIN,
            short_secs: 5 * MIN,
            factor: 14.4,
            severity: Severity::Page,
        };
        let mut t = Tracker::new(objective(vec![page], 1.0));
        // An hour at 1 % bad (burn 1x): nothing.
        for m in 1..=60 {
            assert_eq!(t.push(minute(m, 990, 1000)).severity, Severity::Ok);
        }
        // Then 30 % bad: the short window crosses at once, the long one after
        // enough minutes: (n*300 + (60-n)*10) / 60000 >= 0.144 -> n >= 27.7.
        let mut fired_at = None;
        for n in 1..=40 {
            let e = t.push(minute(60 + n, 700, 1000));
            if e.severity == Severity::Page && fired_at.is_none() {
                fired_at = Some(n);
            }
        }
        assert_eq!(fired_at, Some(28));
        // Back to healthy: the 5-minute window cools first; the alert clears
        // on the first minute its short burn is below 14.4: 5 healthy minutes
        // give 0.01 -> cleared when the window holds at most 2 bad minutes:
        // (2*300+3*10)/5000 = 0.126 < 0.144.
        let mut cleared_at = None;
        for n in 1..=10 {
            if t.push(minute(100 + n, 990, 1000)).severity == Severity::Ok && cleared_at.is_none() {
                cleared_at = Some(n);
            }
        }
        assert_eq!(cleared_at, Some(3));
    }

    #[test]
    fn hysteresis_holds_an_alert_until_it_cools_further() {
        let rule = BurnRule {
            long_secs: 10 * MIN,
            short_secs: 2 * MIN,
            factor: 2.0,
            severity: Severity::Ticket,
        };
        let mut with = Tracker::new(objective(vec![rule], 0.5));
        let mut without = Tracker::new(objective(vec![rule], 1.0));
        // Burn 3x for 10 minutes: both fire.
        for m in 1..=10 {
            with.push(minute(m, 970, 1000));
            without.push(minute(m, 970, 1000));
        }
        assert_eq!(
            without.push(minute(11, 970, 1000)).severity,
            Severity::Ticket
        );
        assert_eq!(with.push(minute(11, 970, 1000)).severity, Severity::Ticket);
        // Burn 1.5x: below the 2x threshold, above the 1x clear level.
        for m in 12..=13 {
            without.push(minute(m, 985, 1000));
            with.push(minute(m, 985, 1000));
        }
        assert_eq!(without.push(minute(14, 985, 1000)).severity, Severity::Ok);
        assert_eq!(
            with.push(minute(14, 985, 1000)).severity,
            Severity::Ticket,
            "held by hysteresis"
        );
        for m in 15..=30 {
            with.push(minute(m, 1000, 1000));
        }
        assert_eq!(with.push(minute(31, 1000, 1000)).severity, Severity::Ok);
    }

    #[test]
    fn an_incomplete_window_marks_the_evaluation() {
        let rule = BurnRule {
            long_secs: 10 * MIN,
            short_secs: 2 * MIN,
            factor: 1.0,
            severity: Severity::Page,
        };
        let mut t = Tracker::new(objective(vec![rule], 1.0));
        assert!(t.push(minute(1, 1000, 1000)).complete);
        let mut lossy = minute(2, 1000, 1000);
        lossy.complete = false;
        assert!(!t.push(lossy).complete);
        // It stays flagged while the lossy window is inside any evaluated span
        // (here the 28-day compliance window).
        assert!(!t.push(minute(20, 1000, 1000)).complete);
        let fresh = Tracker::new(Objective {
            window_secs: 5 * MIN,
            ..objective(vec![rule], 1.0)
        });
        let mut fresh = fresh;
        fresh.push(lossy);
        assert!(
            fresh.push(minute(20, 1000, 1000)).complete,
            "out of every span: complete again"
        );
    }

    #[test]
    fn out_of_order_windows_and_compaction_keep_the_counts() {
        let mut t = Tracker::new(objective(BurnRule::workbook(), 0.9));
        // Three days of 10 s windows from two nodes, the second one late by a
        // window: 1 bad in 100 each.
        let start = 1_700_000_000;
        let windows = 3 * 86_400 / 10;
        for i in 0..windows {
            let end = start + 10 * i;
            t.add(WindowCounts {
                end_unix_secs: end,
                good: 99,
                total: 100,
                complete: true,
            });
            if i > 0 {
                t.add(WindowCounts {
                    end_unix_secs: end - 10,
                    good: 99,
                    total: 100,
                    complete: true,
                });
            }
        }
        let now = start + 10 * (windows - 1);
        // Every window is still counted in the 28-day span, merged or not.
        let all = t.span(now, 28 * 86_400);
        assert_eq!(all.total, (2 * windows - 1) * 100);
        assert_eq!(all.good, (2 * windows - 1) * 99);
        // Recent spans are exact to the window: the last 5 minutes hold 30
        // windows of the first node and 29 of the late one.
        assert_eq!(t.span(now, 300).total, (30 + 29) * 100);
        // The history is bounded: fine windows for 7 h, 10-minute slots beyond.
        assert!(
            t.state().slots.len() < 2_600 + 3 * 144,
            "{}",
            t.state().slots.len()
        );
        let e = t.evaluate_at(now);
        assert!((e.rules[0].long_burn - 1.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn resumes_from_its_state_unless_the_objective_changed() {
        let mut t = Tracker::new(objective(vec![], 1.0));
        t.push(minute(1, 90, 100));
        let state = t.state();
        let mut resumed = Tracker::resume(objective(vec![], 1.0), state.clone());
        assert_eq!(resumed.span(MIN, 3600).good, 90);
        let e = resumed.push(minute(2, 100, 100));
        assert_eq!(e.compliance.total, 200);
        let mut changed = objective(vec![], 1.0);
        changed.target = 0.999;
        let fresh = Tracker::resume(changed, state);
        assert_eq!(fresh.span(MIN, 3600).total, 0);
    }

    #[test]
    fn workbook_defaults() {
        let rules = BurnRule::workbook();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            (rules[0].long_secs, rules[0].short_secs, rules[0].factor),
            (3600, 300, 14.4)
        );
        assert_eq!(rules[2].severity, Severity::Ticket);
    }
}
