//! Human-readable tables shared by `snapshot` and `agent`.

use std::fmt::Write as _;

pub(super) use crate::model::text::{event_line, secs, tcp_detail};
use crate::{
    model::{
        text::{cgroup_label, truncate_left},
        Snapshot,
    },
    probes::{ProbeState, ProbeStatus},
};

/// What pinning found and did, in one line: `probes pinned under DIR: ...`.
pub(super) fn pin_line(
    outcome: &crate::probes::pin::PinOutcome,
    resume: Option<&crate::sampler::Resume>,
) -> String {
    let mut parts = Vec::new();
    if outcome.adopted {
        parts.push("kept the programs the last agent left running".to_owned());
    } else if outcome.replaced > 0 {
        parts.push(format!(
            "replaced {} links of an earlier agent",
            outcome.replaced
        ));
    }
    if outcome.reused > 0 {
        parts.push(format!("reused {} pinned maps", outcome.reused));
    }
    if !outcome.recreated.is_empty() {
        parts.push(format!(
            "recreated maps with another layout: {}",
            outcome.recreated.join(", ")
        ));
    }
    if !outcome.unpinnable.is_empty() {
        parts.push(format!(
            "not pinnable on this kernel (they stop with the agent): {}",
            outcome.unpinnable.join(", ")
        ));
    }
    match resume.map(|r| &r.restart) {
        Some(r) => {
            if let Some(seq) = r.follows_sequence {
                parts.push(format!("the first window follows window {seq}"));
            }
            if let Some(gap) = &r.gap {
                parts.push(format!("the first window is incomplete: {gap}"));
            }
        }
        None => parts.push("first start".to_owned()),
    }
    format!(
        "probes pinned under {}: {}",
        outcome.dir.display(),
        parts.join("; ")
    )
}

/// `window 10.00s  complete`, or what the window lost.
fn window_header(s: &Snapshot) -> String {
    let state = if s.complete {
        "complete".to_owned()
    } else {
        let mut why = Vec::new();
        let lost = s.lost();
        if lost > 0 {
            why.push(format!("{lost} events lost"));
        }
        let off: Vec<&str> = s
            .probes
            .iter()
            .filter(|p| p.state != ProbeState::Attached)
            .map(|p| p.probe)
            .collect();
        if !off.is_empty() {
            why.push(format!("not counting: {}", off.join(",")));
        }
        format!("INCOMPLETE ({})", why.join("; "))
    };
    format!("window {:.2}s  {state}", s.window_secs)
}

/// `syscalls=attached(raw_tracepoint:...)`, one entry per family.
pub(super) fn statuses_line(statuses: &[ProbeStatus]) -> String {
    statuses
        .iter()
        .map(|s| match s.state {
            ProbeState::Attached => {
                format!("{}=attached({})", s.probe, s.hook.as_deref().unwrap_or("?"))
            }
            ProbeState::Degraded => format!(
                "{}=degraded({})",
                s.probe,
                s.reason.as_deref().unwrap_or("?")
            ),
            ProbeState::Unavailable => format!(
                "{}=unavailable({})",
                s.probe,
                s.reason.as_deref().unwrap_or("?")
            ),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text output of a run of windows: the probes' state is printed with
/// the first window and again only when it changes (a family shed by the
/// budget, restored, degraded), so that each window's header stays one short
/// line.
#[derive(Debug, Default)]
pub(super) struct TextWindows {
    /// The probes' state as last printed.
    probes: Option<String>,
}

impl TextWindows {
    /// `s` as text: the probes' line where it changed, then the window.
    pub(super) fn render(&mut self, s: &Snapshot, top: usize) -> String {
        let probes = statuses_line(&s.probes);
        let mut out = String::new();
        if self.probes.as_ref() != Some(&probes) {
            let _ = writeln!(out, "probes {probes}");
            self.probes = Some(probes);
        }
        out.push_str(&snapshot(s, top));
        out
    }
}

/// The snapshot as a table: a one-line header (the window's length, whether
/// it is complete) and what it lost, then each family's tables in the
/// registry's order (per cgroup its busiest syscalls first), then the
/// node's pressure, throttled cgroups and the SLOs.
fn snapshot(s: &Snapshot, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", window_header(s));
    for l in s.losses.iter().filter(|l| l.count > 0) {
        let _ = writeln!(
            out,
            "  lost {} in {}/{}: {}",
            l.count, l.stage, l.probe, l.reason
        );
    }
    s.families_text(&mut out, top);
    if let Some(cpu) = s.node_pressure.cpu {
        let line = |name: &str, p: Option<crate::host::pressure::Psi>| {
            p.map_or(String::new(), |p| {
                format!("  {name} some {:.2}%", p.some.avg10)
            })
        };
        let _ = writeln!(
            out,
            "PRESSURE (node, avg10){}{}{}",
            line("cpu", Some(cpu)),
            line("memory", s.node_pressure.memory),
            line("io", s.node_pressure.io)
        );
    }
    for c in s
        .cgroups
        .iter()
        .filter(|c| c.throttling.is_some_and(|t| t.throttled_periods > 0))
        .take(top)
    {
        if let Some(t) = c.throttling {
            let _ = writeln!(
                out,
                "THROTTLED {:<34} {} of {} periods, {} in all",
                truncate_left(&cgroup_label(&c.cgroup), 34),
                t.throttled_periods,
                t.periods,
                secs(Some(t.throttled_ns as f64 / 1e9))
            );
        }
    }
    out.push_str(&super::slo::table(&s.slos));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(probe: &'static str, state: ProbeState) -> ProbeStatus {
        ProbeStatus {
            probe,
            state,
            hook: Some("tp_btf:sched_switch".to_owned()),
            reason: (state != ProbeState::Attached).then(|| "shed by the budget".to_owned()),
            gaps: Vec::new(),
        }
    }

    fn window(sched: ProbeState) -> Snapshot {
        let probes = vec![
            status("syscalls", ProbeState::Attached),
            status("sched", sched),
        ];
        Snapshot {
            window_secs: 10.0,
            complete: probes.iter().all(|p| p.state == ProbeState::Attached),
            probes,
            ..Snapshot::default()
        }
    }

    /// The lines of `text` that say the probes' state.
    fn probe_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("probes ")).collect()
    }

    #[test]
    fn the_probes_state_is_printed_first_and_then_only_when_it_changes() {
        let mut text = TextWindows::default();
        let first = text.render(&window(ProbeState::Attached), 5);
        assert_eq!(
            probe_lines(&first),
            ["probes syscalls=attached(tp_btf:sched_switch) sched=attached(tp_btf:sched_switch)"]
        );
        assert_eq!(first.lines().nth(1), Some("window 10.00s  complete"));
        let same = text.render(&window(ProbeState::Attached), 5);
        assert!(probe_lines(&same).is_empty(), "{same}");
        assert_eq!(same.lines().next(), Some("window 10.00s  complete"));

        let shed = text.render(&window(ProbeState::Unavailable), 5);
        assert_eq!(
            probe_lines(&shed),
            ["probes syscalls=attached(tp_btf:sched_switch) sched=unavailable(shed by the budget)"]
        );
        assert_eq!(
            shed.lines().nth(1),
            Some("window 10.00s  INCOMPLETE (not counting: sched)")
        );
        assert!(probe_lines(&text.render(&window(ProbeState::Unavailable), 5)).is_empty());
        let restored = text.render(&window(ProbeState::Attached), 5);
        assert_eq!(probe_lines(&restored).len(), 1, "{restored}");
    }

    #[test]
    fn each_familys_tables_follow_in_the_registrys_order() {
        let cg = crate::model::CgroupRef {
            cgroup_id: 7,
            cgroup_path: Some("/app".to_owned()),
            owner: crate::model::Owner::Other,
        };
        let mut h = sonde_slo::Histogram::new();
        h.record_binary_ns(1_000_000);
        let mut s = window(ProbeState::Attached);
        s.sched.runqueue = vec![crate::model::CgroupLatency::new(cg.clone(), h.clone())];
        s.memory.reclaim = vec![crate::model::CgroupLatency::new(cg.clone(), h)];
        let mut exits = crate::model::CgroupExits::new(cg);
        exits.crashes = 2;
        s.process.exits = vec![exits];
        let text = snapshot(&s, 5);
        let at = |title: &str| {
            text.find(title)
                .unwrap_or_else(|| panic!("no {title} in {text}"))
        };
        assert!(at("CGROUP ") < at("RUN QUEUE WAIT (cgroup)"), "{text}");
        assert!(at("RUN QUEUE WAIT (cgroup)") < at("RECLAIM STALLS (cgroup)"));
        assert!(at("RECLAIM STALLS (cgroup)") < at("EXITS     /app"));
    }

    #[test]
    fn an_incomplete_window_says_what_it_lost() {
        let mut s = window(ProbeState::Degraded);
        s.losses.push(crate::model::LossRecord {
            stage: "kernel",
            probe: "syscalls",
            reason: "map_full",
            count: 7,
        });
        assert_eq!(
            window_header(&s),
            "window 10.00s  INCOMPLETE (7 events lost; not counting: sched)"
        );
    }
}
