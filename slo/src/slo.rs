//! SLO math: error budgets and multi-window, multi-burn-rate alerts (the SRE
//! workbook's scheme), over a stream of per-window good/total counts.
//! Pure: the agent and the collector feed it counts, it hands back states.

use std::collections::VecDeque;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The stream of windows of one SLI and the state of its alerts.
#[derive(Debug, Clone)]
pub struct Tracker {
    objective: Objective,
    windows: VecDeque<WindowCounts>,
    firing: Vec<bool>,
}

impl Tracker {
    /// A tracker with no history.
    pub fn new(objective: Objective) -> Self {
        let rules = objective.rules.len();
        Self {
            objective,
            windows: VecDeque::new(),
            firing: vec![false; rules],
        }
    }

    /// Adds a window (in time order) and evaluates.
    pub fn push(&mut self, w: WindowCounts) -> Evaluation {
        self.windows.push_back(w);
        let keep = self
            .objective
            .rules
            .iter()
            .map(|r| r.long_secs)
            .chain([self.objective.window_secs])
            .max()
            .unwrap_or(0);
        while self
            .windows
            .front()
            .is_some_and(|f| f.end_unix_secs + keep <= w.end_unix_secs)
        {
            self.windows.pop_front();
        }
        self.evaluate(w.end_unix_secs)
    }

    /// Good/total over the windows that ended within `secs` of `now`.
    pub fn span(&self, now: u64, secs: u64) -> Span {
        let mut span = Span {
            good: 0,
            total: 0,
            complete: true,
        };
        for w in self
            .windows
            .iter()
            .rev()
            .take_while(|w| w.end_unix_secs + secs > now)
        {
            span.good += w.good;
            span.total += w.total;
            span.complete &= w.complete;
        }
        span
    }

    fn evaluate(&mut self, now: u64) -> Evaluation {
        let target = self.objective.target;
        let compliance = self.span(now, self.objective.window_secs);
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
        let mut rules = Vec::with_capacity(self.objective.rules.len());
        for (i, rule) in self.objective.rules.clone().into_iter().enumerate() {
            let long = self.span(now, rule.long_secs);
            let short = self.span(now, rule.short_secs);
            let (long_burn, short_burn) = (long.burn_rate(target), short.burn_rate(target));
            let firing = if self.firing[i] {
                // Hysteresis: stays until the short window cools below the clear level.
                short_burn >= rule.factor * self.objective.clear_ratio
                    && long_burn >= rule.factor * self.objective.clear_ratio
            } else {
                long_burn >= rule.factor && short_burn >= rule.factor
            };
            self.firing[i] = firing;
            complete &= long.complete && short.complete;
            if firing && rule.severity > severity {
                severity = rule.severity;
            }
            rules.push(RuleState {
                rule,
                long_burn,
                short_burn,
                firing,
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
