//! Human-readable tables shared by `snapshot` and `agent`.

use std::fmt::Write as _;

use crate::{
    model::Snapshot,
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

/// A duration in seconds with a readable unit.
pub(super) fn secs(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1e-6 => format!("{:.0}ns", s * 1e9),
        Some(s) if s < 1e-3 => format!("{:.1}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
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
/// it is complete), then per cgroup its busiest syscalls and the rest.
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
    let _ = writeln!(
        out,
        "{:<44} {:<18} {:>10} {:>7} {:>8} {:>8}  TOP ERRNOS",
        "CGROUP", "SYSCALL", "RATE/s", "ERR%", "P50", "P99"
    );
    for cg in &s.syscalls {
        let path = cg
            .cgroup
            .cgroup_path
            .clone()
            .unwrap_or_else(|| format!("<cgroup {}>", cg.cgroup.cgroup_id));
        for (i, series) in cg.syscalls.iter().take(top).enumerate() {
            let mut errnos: Vec<(&String, &u64)> = series.errnos.iter().collect();
            errnos.sort_by(|a, b| b.1.cmp(a.1));
            let errnos = errnos
                .iter()
                .take(3)
                .map(|(n, c)| format!("{n}×{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "{:<44} {:<18} {:>10.1} {:>6.2}% {:>8} {:>8}  {}",
                if i == 0 {
                    truncate_left(&path, 44)
                } else {
                    String::new()
                },
                series.name,
                series.rate_per_sec,
                series.error_ratio * 100.0,
                secs(series.p50_secs),
                secs(series.p99_secs),
                errnos
            );
        }
    }
    latencies(&mut out, "RUN QUEUE WAIT (cgroup)", &s.runqueue, top);
    holders(&mut out, &s.runqueue_holders, top);
    latencies(&mut out, "RECLAIM STALLS (cgroup)", &s.reclaim, top);
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
    for c in &s.oom_kills {
        let _ = writeln!(
            out,
            "OOM KILLS {:<34} {}",
            truncate_left(&cgroup_label(&c.cgroup), 34),
            c.count
        );
    }
    for c in &s.exits {
        let signals = c
            .signals
            .iter()
            .map(|(n, k)| format!("{n}×{k}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "EXITS     {:<34} crashes {}  non-zero exits {}  {}",
            truncate_left(&cgroup_label(&c.cgroup), 34),
            c.crashes,
            c.nonzero_exits,
            signals
        );
    }
    for e in s.events.iter().rev().take(top).rev() {
        let _ = writeln!(out, "EVENT     {}", event_line(e));
    }
    tcp(&mut out, &s.tcp, top);
    irq(&mut out, &s.irq, top);
    out.push_str(&super::slo::table(&s.slos));
    out
}

/// The interrupt window: the node's share, the busiest CPUs, vectors and
/// IRQs, and the check against the kernel's counts.
fn irq(out: &mut String, w: &crate::model::irq::IrqWindow, top: usize) {
    if w.softirqs.is_empty() && w.irqs.is_empty() {
        return;
    }
    let cpus = w
        .cpus
        .iter()
        .take(top)
        .map(|c| format!("cpu{} {:.2}%", c.cpu, 100.0 * c.utilization))
        .collect::<Vec<_>>()
        .join("  ");
    let _ = writeln!(
        out,
        "INTERRUPTS {:.2}% of the CPUs (hard {}, soft {})  busiest: {cpus}",
        100.0 * w.utilization,
        secs(Some(w.hardirq_secs)),
        secs(Some(w.softirq_secs)),
    );
    let _ = writeln!(
        out,
        "{:<10} {:<24} {:>10} {:>10} {:>8} {:>8}",
        "IRQ", "HANDLER", "RUNS", "TIME", "P50", "P99"
    );
    let rows = w
        .softirqs
        .iter()
        .map(|l| ("soft", l))
        .chain(w.irqs.iter().map(|l| ("hard", l)));
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by(|a, b| b.1.time_secs.total_cmp(&a.1.time_secs));
    for (kind, l) in rows.into_iter().take(top) {
        let handler = match (kind, &l.handler) {
            ("soft", _) => "softirq".to_owned(),
            (_, Some(h)) => truncate_left(h, 24),
            (_, None) => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:>10} {:>10} {:>8} {:>8}",
            l.name,
            handler,
            l.count,
            secs(Some(l.time_secs)),
            secs(l.p50_secs),
            secs(l.p99_secs)
        );
    }
    if let Some(c) = &w.check {
        if c.ok {
            let _ = writeln!(
                out,
                "IRQ CHECK {} softirq and {} IRQ (CPU) pairs: sonde's counts within the kernel's",
                c.softirq_pairs, c.irq_pairs
            );
        } else {
            let shown: Vec<String> = c
                .mismatches
                .iter()
                .take(top)
                .map(|m| {
                    format!(
                        "{} {} cpu{} sonde {} kernel {}..{}",
                        m.kind, m.name, m.cpu, m.sonde, m.kernel_min, m.kernel_max
                    )
                })
                .collect();
            let _ = writeln!(out, "IRQ CHECK differs: {}", shown.join("; "));
        }
    }
}

/// The TCP window: per cgroup, listening ports, drops, the namespace
/// check, the latest events.
fn tcp(out: &mut String, t: &crate::model::tcp::TcpWindow, top: usize) {
    if !t.cgroups.is_empty() {
        let _ = writeln!(
            out,
            "{:<44} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
            "TCP (cgroup)", "CONNECTS", "P50", "P99", "FAILED", "RETRANS", "RST OUT", "RST IN"
        );
    }
    for c in t.cgroups.iter().take(top) {
        let _ = writeln!(
            out,
            "{:<44} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
            truncate_left(&cgroup_label(&c.cgroup), 44),
            c.connects,
            secs(c.connect_p50_secs),
            secs(c.connect_p99_secs),
            c.failures(),
            c.counts.retransmit_segments,
            c.counts.resets_sent,
            c.counts.resets_received
        );
        if c.failures() > 0 {
            let reasons = c
                .connect_failures
                .iter()
                .map(|(r, n)| format!("{r}×{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let destinations = c
                .failing_destinations
                .iter()
                .map(|d| format!("{}:{}×{}", d.address, d.port, d.failures))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "  failed connects: {reasons}  top failing: {destinations}"
            );
        }
    }
    let n = &t.node;
    if n.retransmit_segments + n.resets_sent + n.resets_received > 0 {
        let _ = writeln!(
            out,
            "TCP (no socket)  retransmits {}  resets sent {}  received {}",
            n.retransmit_segments, n.resets_sent, n.resets_received
        );
    }
    for l in t.listeners.iter().take(top) {
        let sockets = match &l.sockets {
            Some(s) => format!(
                "  socket drops {}  queue {}/{}",
                s.drops, s.accept_queue, s.accept_queue_max
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "LISTEN    netns {} port {:<6} accepted {}  overflows {}  failed handshakes {}  drops {}{sockets}",
            l.netns, l.port, l.accepted, l.overflows, l.failed_handshakes, l.drops
        );
    }
    for d in t.drops.iter().take(top) {
        let mut reasons: Vec<(&String, &u64)> = d.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        let reasons = reasons
            .iter()
            .take(4)
            .map(|(r, n)| format!("{r}×{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "DROPS     netns {}  {} packets  {reasons}",
            d.netns, d.total
        );
    }
    let checked = t.namespaces.iter().filter(|n| n.check.is_some()).count();
    let off: Vec<String> = t
        .namespaces
        .iter()
        .flat_map(|n| {
            n.check
                .iter()
                .flatten()
                .filter(|c| c.discrepancy != 0)
                .map(|c| {
                    format!(
                        "netns {} {} kernel {} sonde {} ({:+})",
                        n.netns, c.counter, c.kernel, c.sonde, c.discrepancy
                    )
                })
        })
        .collect();
    if checked > 0 {
        if off.is_empty() {
            let _ = writeln!(
                out,
                "TCP CHECK {checked} namespaces: sonde's counts equal the kernel's"
            );
        } else {
            let shown: Vec<&str> = off.iter().take(top).map(String::as_str).collect();
            let more = off.len().saturating_sub(shown.len());
            let _ = writeln!(
                out,
                "TCP CHECK differs: {}{}",
                shown.join("; "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            );
        }
    }
    for e in t.events.iter().rev().take(top).rev() {
        let detail = tcp_detail(e.failure, e.error.as_deref(), e.reset_reason.as_deref());
        let _ = writeln!(
            out,
            "EVENT     tcp {} {}:{} → {}:{}{detail} in {}",
            e.kind,
            e.source,
            e.source_port,
            e.destination,
            e.destination_port,
            e.cgroup
                .as_ref()
                .map_or_else(|| "no socket".to_owned(), cgroup_label)
        );
    }
}

/// One event as a human line.
/// What a TCP event adds after its connection: a failed connect's reason
/// and errno, or a sent reset's kernel reason.
pub(super) fn tcp_detail(
    failure: Option<&str>,
    error: Option<&str>,
    reset: Option<&str>,
) -> String {
    match (failure, error, reset) {
        (Some(f), Some(err), _) => format!(" {f} ({err})"),
        (_, _, Some(r)) => format!(" ({r})"),
        _ => String::new(),
    }
}

pub(super) fn event_line(e: &crate::model::EventRecord) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.time_unix_ns);
    format!(
        "{} {} pid {} ({}){} in {}",
        humantime::format_rfc3339_millis(time),
        e.kind,
        e.pid,
        e.comm,
        e.signal
            .as_deref()
            .map_or(String::new(), |s| format!(" by {s}")),
        cgroup_label(&e.cgroup)
    )
}

/// Per-cgroup latency histograms as a table, largest total first.
pub(super) fn latencies(
    out: &mut String,
    title: &str,
    rows: &[crate::model::CgroupLatency],
    top: usize,
) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>10} {:>8} {:>8}",
        title, "COUNT", "TOTAL", "P50", "P99"
    );
    for row in rows.iter().take(top) {
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>10} {:>8} {:>8}",
            truncate_left(&cgroup_label(&row.cgroup), 44),
            row.count,
            secs(Some(row.sum_secs)),
            secs(row.p50_secs),
            secs(row.p99_secs)
        );
    }
}

/// Who held the CPU when each cgroup's waits ended: the victim, its wait,
/// the share that ended with the CPU idle, and its heaviest holders.
fn holders(out: &mut String, rows: &[crate::model::sched::CgroupHolders], top: usize) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>6}  HOLDERS (share of the wait)",
        "RUN QUEUE WAIT BY HOLDER (cgroup)", "TOTAL", "IDLE"
    );
    for row in rows.iter().take(top) {
        let share = |secs: f64| {
            if row.wait_secs > 0.0 {
                100.0 * secs / row.wait_secs
            } else {
                0.0
            }
        };
        let mut named: Vec<String> = row
            .holders
            .iter()
            .map(|h| {
                let who = if h.cgroup.cgroup_id == row.cgroup.cgroup_id {
                    "(itself)".to_owned()
                } else {
                    cgroup_label(&h.cgroup)
                };
                format!("{who} {:.0}%", share(h.wait_secs))
            })
            .collect();
        if row.rest.waits > 0 {
            named.push(format!("other {:.0}%", share(row.rest.wait_secs)));
        }
        if row.earlier_wait_secs > 0.0 {
            named.push(format!("earlier {:.0}%", share(row.earlier_wait_secs)));
        }
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>5.0}%  {}",
            truncate_left(&cgroup_label(&row.cgroup), 44),
            secs(Some(row.wait_secs)),
            share(row.idle_wait_secs),
            named.join(", ")
        );
    }
}

fn cgroup_label(c: &crate::attribution::CgroupRef) -> String {
    c.cgroup_path
        .clone()
        .unwrap_or_else(|| format!("<cgroup {}>", c.cgroup_id))
}

fn truncate_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        s.to_owned()
    } else {
        format!("…{}", s.chars().skip(n - width + 1).collect::<String>())
    }
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
