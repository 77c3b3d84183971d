//! Scenario d: the collector restarted under load, by SIGKILL and SIGTERM
//! in turn.
//!
//! Two agents (all probes, 1 s windows) stream while eight cgroups each
//! run a counted workload of failing `openat`s; the collector lives 5 to
//! 13 s, dies (SIGKILL and SIGTERM alternately; every other time it first
//! stalls for 4 s under SIGSTOP and dies as soon as it has applied the
//! first report of the backlog the agents queued meanwhile, before the
//! acks are out), stays down 0 to 3 s and
//! comes back on the same port, for the whole fault phase. The collector
//! persists nothing, so each instance's view is its own: what it applied
//! comes from its debug lines (written before each ack).
//!
//! Pass, per agent: every window it produced was applied by some instance
//! and none twice by one instance (the resent copies are counted as
//! duplicates); across a SIGTERM no window is applied by two instances
//! (the stop acks everything applied); across a SIGKILL only the windows
//! the dead instance applied but had not yet acked are applied again, at
//! most the agent's 32 in flight, the newest the dead one took (the
//! documented at-least-once of a crash); the last instance's totals and
//! each stopped instance's totals are the agent's own over the windows
//! they applied; each workload's own count is the agent's.
//!
//! Bound: the fault phase (default 2 minutes) plus 2 minutes.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    applied_once, collector, counted_failing_opens, counter, failures_key, fault_phase, holes,
    record, sequence, stop_counted, summary_loss, witness,
};
use crate::{
    grpc::sum_prefix,
    procs::{agent_totals, collector_totals, fleet_json, free_port, Proc},
    TestCgroup, Workload,
};

const CGROUPS: usize = 8;
const NODES: [&str; 2] = ["chaos-restarts-1", "chaos-restarts-2"];
/// The agent's reports in flight (agent/src/export/grpc.rs).
const MAX_IN_FLIGHT: usize = 32;
/// How long each instance lives, in turn (s).
const LIVES_SECS: [u64; 6] = [7, 11, 5, 13, 9, 6];
/// How long the collector stays down after each death, in turn (ms).
const DOWN_MS: [u64; 4] = [0, 1500, 3000, 500];
/// A stall before a death.
const STALL: Duration = Duration::from_secs(4);

/// The totals of a collector's exit line: `totals=name:count,...`.
fn exit_totals(collector: &Proc, node: &str) -> std::collections::BTreeMap<String, u64> {
    let line = collector
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("at exit:") && l.contains(&format!("node={node} ")))
        .unwrap_or_else(|| panic!("no exit line for {node}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("totals="))
        .unwrap_or_default()
        .split(',')
        .filter_map(|t| t.rsplit_once(':'))
        .map(|(name, n)| (name.to_owned(), n.parse().expect("count")))
        .collect()
}

#[test]
#[ignore = "chaos: minutes long, run by cargo xtask chaos"]
fn collector_restarted_under_load() {
    if !super::can_run() {
        return;
    }
    let phase = fault_phase(2.0);
    let bound = phase + Duration::from_secs(120);
    let started = Instant::now();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut current = collector(port, None);
    let cgroups: Vec<TestCgroup> = (0..CGROUPS)
        .map(|i| TestCgroup::new(&format!("chaos-restarts{i}")))
        .collect();
    let counters: Vec<_> = (0..CGROUPS).map(|_| counter()).collect();
    let workloads: Vec<Workload> = cgroups
        .iter()
        .zip(&counters)
        .map(|(c, n)| Workload::fork(c, counted_failing_opens(n, 10)))
        .collect();
    let mut agents: Vec<Proc> = NODES
        .iter()
        .map(|node| {
            Proc::agent(&[
                "--collector",
                &url,
                "--node-name",
                node,
                "--reconnect-max",
                "1s",
                "--drain-timeout",
                "60s",
            ])
        })
        .collect();
    for w in &workloads {
        w.go();
    }
    // (instance, ended by SIGKILL)
    let mut ended: Vec<(Proc, bool)> = Vec::new();
    let phase_start = Instant::now();
    let mut i = 0;
    let mut stalls = 0;
    while phase_start.elapsed() < phase {
        std::thread::sleep(Duration::from_secs(LIVES_SECS[i % LIVES_SECS.len()]));
        let by_kill = i % 2 == 0;
        let stalled = i % 4 >= 2;
        if stalled {
            current.signal(libc::SIGSTOP);
            std::thread::sleep(STALL);
            let lines = current.stderr_len();
            current.signal(libc::SIGCONT);
            // Its next line is the first report of the backlog, applied.
            let deadline = Instant::now() + Duration::from_secs(2);
            while current.stderr_len() == lines && Instant::now() < deadline {
                std::thread::yield_now();
            }
            stalls += 1;
        }
        if by_kill {
            current.kill();
        } else {
            assert_eq!(current.terminate(), 0);
        }
        std::thread::sleep(Duration::from_millis(DOWN_MS[i % DOWN_MS.len()]));
        let next = collector(port, None);
        ended.push((std::mem::replace(&mut current, next), by_kill));
        i += 1;
    }
    // Under the last instance: catch up, stop the load, drain, stop.
    for a in &agents {
        let n = a.stdout_len();
        a.wait_windows(n + 5, Duration::from_secs(30));
    }
    let own: Vec<u64> = workloads
        .into_iter()
        .zip(&counters)
        .map(|(w, n)| stop_counted(w, n))
        .collect();
    for a in &agents {
        let n = a.stdout_len();
        a.wait_windows(n + 2, Duration::from_secs(20));
    }
    for a in &mut agents {
        assert_eq!(a.terminate_within(Duration::from_secs(90)), 0);
        a.assert_stopped_acked();
    }
    let details: Vec<serde_json::Value> = NODES
        .iter()
        .map(|node| fleet_json(&["--collector", &url, "--node", node]))
        .collect();
    assert_eq!(current.terminate(), 0);
    ended.push((current, false));

    let kills = ended.iter().filter(|(_, k)| *k).count();
    // The last instance's SIGTERM ends the run, not the fault phase.
    let terms = ended.len() - kills - 1;
    let mut figures = Vec::new();
    for ((node, agent), detail) in NODES.iter().zip(&agents).zip(&details) {
        let windows = agent.windows();
        let produced: BTreeSet<u64> = windows.iter().map(sequence).collect();
        let per_instance: Vec<(BTreeSet<u64>, u64)> = ended
            .iter()
            .map(|(c, _)| applied_once(&witness(c), node))
            .collect();
        let delivered: BTreeSet<u64> = per_instance
            .iter()
            .flat_map(|(a, _)| a.iter().copied())
            .collect();
        // Conservation with nothing dropped: every window produced arrived.
        assert_eq!(
            delivered,
            produced,
            "{node}: holes {:?}",
            holes(&produced, &delivered)
        );
        let copies: u64 = per_instance.iter().map(|(_, c)| c).sum();
        let mut reapplied = 0;
        for (k, ((applied, _), (_, by_kill))) in per_instance.iter().zip(&ended).enumerate() {
            let later: BTreeSet<u64> = per_instance[k + 1..]
                .iter()
                .flat_map(|(a, _)| a.iter().copied())
                .collect();
            let again: Vec<u64> = applied.intersection(&later).copied().collect();
            if *by_kill {
                // Only the dead instance's newest, unacked windows.
                assert!(again.len() <= MAX_IN_FLIGHT, "{node}: {again:?}");
                let newest: BTreeSet<u64> =
                    applied.iter().rev().take(again.len()).copied().collect();
                assert_eq!(
                    again.iter().copied().collect::<BTreeSet<_>>(),
                    newest,
                    "{node}: instance {k} re-applied windows other than its newest"
                );
                reapplied += again.len();
            } else {
                assert!(again.is_empty(), "{node}: instance {k}, stopped, {again:?}");
                // A stopped instance says what it took; it is the agent's.
                let took = exit_totals(&ended[k].0, node);
                let agent = agent_totals(&windows, |s| applied.contains(&s));
                assert_eq!(
                    took.get("system.linux.syscall.errors")
                        .copied()
                        .unwrap_or(0),
                    sum_prefix(&agent, "err|"),
                    "{node}: instance {k}'s failures"
                );
                assert_eq!(
                    took.get("system.linux.syscall.duration")
                        .copied()
                        .unwrap_or(0),
                    sum_prefix(&agent, "dur|"),
                    "{node}: instance {k}'s calls"
                );
            }
        }
        // The last instance, through the Query API.
        let summary = &detail["summary"];
        let last = &per_instance[per_instance.len() - 1].0;
        assert_eq!(summary["reports"], last.len());
        assert_eq!(
            summary["duplicates"],
            per_instance[per_instance.len() - 1].1
        );
        assert_eq!(
            summary_loss(summary, "outbox", "outbox_full")
                + summary_loss(summary, "outbox", "refused_by_collector"),
            0
        );
        assert_eq!(
            collector_totals(detail),
            agent_totals(&windows, |s| last.contains(&s))
        );
        // Every workload's own count is in the agent's windows.
        let totals = agent_totals(&windows, |_| true);
        for (cgroup, n) in cgroups.iter().zip(&own) {
            assert_eq!(
                totals.get(&failures_key(cgroup)).copied(),
                Some(*n),
                "{node}"
            );
        }
        figures.push(json!({
            "node": node,
            "produced": produced.len(),
            "delivered": delivered.len(),
            "dropped": 0,
            "duplicates_absorbed": copies,
            "reapplied_after_sigkill": reapplied,
            "holes": Vec::<(u64, u64)>::new(),
        }));
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(started.elapsed() < bound, "{secs:.0} s, bound {bound:?}");
    record(json!({
        "scenario": "d collector restarted under load",
        "secs": secs.round(),
        "bound_secs": bound.as_secs(),
        "sigkills": kills,
        "sigterms": terms,
        "deaths_after_a_stall": stalls,
        "workload_failures": own.iter().sum::<u64>(),
        "nodes": figures,
        "pass": true,
    }));
}
