//! Scenario a: the collector down for minutes.
//!
//! A collector takes a few windows from two agents and stops (SIGTERM: it
//! acks what it applied, so the agents know); both agents and a counted
//! workload run on through the outage; a new collector comes up on the same
//! port. Agent `roomy` has the default outbox (64 MiB): nothing may be
//! lost, and every count of the workload arrives. Agent `cramped` has an
//! outbox of about eight of its reports (measured first), far less than
//! the outage's windows: its oldest reports go, and the count of them that
//! rides in band must equal the hole in the sequences exactly.
//!
//! Bound: the outage (default 2.5 minutes) plus 90 s.

use std::{collections::BTreeSet, time::Duration, time::Instant};

use serde_json::json;

use super::{
    applied_once, collector, counted_failing_opens, counter, exit_loss, failures_key, fault_phase,
    holes, recent_complete, record, sequence, stop_counted, summary_loss, witness,
};
use crate::{
    procs::{agent_totals, collector_totals, fleet_json, free_port, ranges, Proc},
    TestCgroup, Workload,
};

/// The cramped outbox holds about this many reports.
const CRAMPED_REPORTS: u64 = 8;
const CRAMPED_PROBES: [&str; 2] = ["--probes", "syscalls"];

/// The size of the cramped agent's reports on this machine now: a
/// throwaway agent with the same probes writes three to a disk outbox
/// (no collector listens), and the largest counts.
fn report_bytes() -> u64 {
    let dir = tempfile::tempdir().expect("outbox dir");
    let outbox = dir.path().join("outbox");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut args = vec![
        "--collector",
        &nowhere,
        "--outbox-dir",
        outbox.to_str().expect("utf-8 path"),
    ];
    args.extend(CRAMPED_PROBES);
    let mut probe = Proc::agent(&args);
    probe.wait_windows(3, Duration::from_secs(20));
    probe.kill();
    crate::grpc::outbox_reports(&outbox)
        .iter()
        .map(|r| prost::Message::encoded_len(r) as u64)
        .max()
        .expect("reports on disk")
}

#[test]
#[ignore = "chaos: minutes long, run by cargo xtask chaos"]
fn collector_down_for_minutes() {
    if !super::can_run() {
        return;
    }
    let outage = fault_phase(2.5);
    let bound = outage + Duration::from_secs(90);
    let started = Instant::now();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cramped_bytes = (report_bytes() * CRAMPED_REPORTS).to_string();
    let mut first = collector(port, None);
    let cgroup = TestCgroup::new("chaos-outage");
    let count = counter();
    let workload = Workload::fork(&cgroup, counted_failing_opens(&count, 20));
    let agent = |node: &str, extra: &[&str]| {
        let mut args = vec![
            "--collector",
            &url,
            "--node-name",
            node,
            "--reconnect-max",
            "2s",
            "--drain-timeout",
            "60s",
        ];
        args.extend_from_slice(extra);
        Proc::agent(&args)
    };
    let mut roomy = agent("chaos-outage-roomy", &[]);
    // Syscalls only: a second copy of every probe would double the cost.
    let mut cramped = agent(
        "chaos-outage-cramped",
        &[
            CRAMPED_PROBES[0],
            CRAMPED_PROBES[1],
            "--outbox-max-bytes",
            &cramped_bytes,
        ],
    );
    workload.go();
    roomy.wait_windows(3, Duration::from_secs(20));
    cramped.wait_windows(3, Duration::from_secs(20));
    assert_eq!(first.terminate(), 0);
    let down_at = Instant::now();
    let printed_at_stop = roomy.windows().len();
    std::thread::sleep(outage);
    let during = roomy.windows().len() - printed_at_stop;
    assert!(
        during as f64 >= outage.as_secs_f64() * 0.9,
        "the agent kept closing windows through the outage: {during}"
    );
    let second = collector(port, None);
    let down_secs = down_at.elapsed().as_secs_f64();
    // Both catch up, then the workload stops and its last events land in a
    // window before the agents drain and stop.
    let n = roomy.windows().len();
    roomy.wait_windows(n + 5, Duration::from_secs(30));
    let own_count = stop_counted(workload, &count);
    for a in [&roomy, &cramped] {
        let n = a.windows().len();
        a.wait_windows(n + 2, Duration::from_secs(20));
    }
    for a in [&mut roomy, &mut cramped] {
        assert_eq!(a.terminate(), 0, "the agent drains and exits");
        a.assert_stopped_acked();
    }

    let (w1, w2) = (witness(&first), witness(&second));
    let mut figures = Vec::new();
    for (node, agent) in [
        ("chaos-outage-roomy", &roomy),
        ("chaos-outage-cramped", &cramped),
    ] {
        let windows = agent.windows();
        let produced: BTreeSet<u64> = windows.iter().map(sequence).collect();
        assert_eq!(
            produced.len() as u64,
            produced.last().unwrap() - produced.first().unwrap() + 1,
            "{node}: the agent numbers without a hole"
        );
        let (before, copies1) = applied_once(&w1, node);
        let (after, copies2) = applied_once(&w2, node);
        assert!(
            before.is_disjoint(&after),
            "{node}: a window applied by both collectors: {:?}",
            before.intersection(&after).collect::<Vec<_>>()
        );
        let delivered: BTreeSet<u64> = before.union(&after).copied().collect();
        assert!(
            delivered.is_subset(&produced),
            "{node}: delivered ⊆ produced"
        );
        let detail = fleet_json(&["--collector", &url, "--node", node]);
        let summary = &detail["summary"];
        // The second instance's own view agrees with its witness lines.
        let ranged: BTreeSet<u64> = ranges(summary)
            .into_iter()
            .flat_map(|(a, b)| a..=b)
            .collect();
        assert_eq!(ranged, after, "{node}: ranges = witness");
        assert_eq!(summary["duplicates"], copies2, "{node}: duplicate counter");
        // Dropped, as counted in band by every report that arrived.
        let dropped = exit_loss(&first, node, "outbox", "outbox_full")
            + summary_loss(summary, "outbox", "outbox_full");
        let refused = exit_loss(&first, node, "outbox", "refused_by_collector")
            + summary_loss(summary, "outbox", "refused_by_collector");
        assert_eq!(refused, 0, "{node}");
        let missing = holes(&produced, &delivered);
        let missing_n: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
        // Conservation: produced = delivered + dropped, exactly.
        assert_eq!(
            produced.len() as u64,
            delivered.len() as u64 + dropped,
            "{node}: produced {} delivered {} dropped {dropped}, missing {missing:?}",
            produced.len(),
            delivered.len()
        );
        assert_eq!(missing_n, dropped, "{node}: every hole is counted");
        // The second collector kept a summary of each window it applied,
        // and its per-series totals are the agent's own over them.
        let complete = recent_complete(&detail);
        assert_eq!(complete.keys().copied().collect::<BTreeSet<_>>(), after);
        assert_eq!(
            collector_totals(&detail),
            agent_totals(&windows, |s| after.contains(&s)),
            "{node}: the second collector's totals are the agent's"
        );
        if node == "chaos-outage-roomy" {
            assert_eq!(dropped, 0, "the roomy outbox held the outage");
            assert_eq!(delivered, produced);
            let key = failures_key(&cgroup);
            let agent_total = agent_totals(&windows, |_| true)
                .get(&key)
                .copied()
                .unwrap_or(0);
            assert_eq!(agent_total, own_count, "the workload's own count");
            let collected = collector_totals(&detail).get(&key).copied().unwrap_or(0)
                + agent_totals(&windows, |s| before.contains(&s))
                    .get(&key)
                    .copied()
                    .unwrap_or(0);
            assert_eq!(collected, own_count);
        } else {
            assert!(
                dropped > 0,
                "a {cramped_bytes}-byte outbox held {down_secs:.0} s of reports"
            );
            // The hole is one stretch inside the outage: the oldest reports
            // went first.
            assert_eq!(missing.len(), 1, "{node}: {missing:?}");
            assert!(missing[0].0 > *before.last().expect("before the stop"));
        }
        figures.push(json!({
            "node": node,
            "produced": produced.len(),
            "delivered": delivered.len(),
            "dropped": dropped,
            "duplicates_absorbed": copies1 + copies2,
            "holes": missing,
            "workload_failures": own_count,
            "outbox_max_bytes": if node == "chaos-outage-cramped" { cramped_bytes.clone() } else { "67108864".to_owned() },
        }));
    }
    drop(second);
    let secs = started.elapsed().as_secs_f64();
    assert!(started.elapsed() < bound, "{secs:.0} s, bound {bound:?}");
    record(json!({
        "scenario": "a collector down",
        "secs": secs.round(),
        "bound_secs": bound.as_secs(),
        "collector_down_secs": down_secs.round(),
        "nodes": figures,
        "pass": true,
    }));
}
