//! Scenario e: collector replicas, one SIGKILLed every minute.
//!
//! Two agents (all probes, 1 s windows, disk outboxes) stream to two
//! collector replicas that write to one real Prometheus 2.42; four cgroups
//! run counted workloads of failing `openat`s. Every minute of the fault
//! phase (default 5 minutes) one replica — in turn — is SIGKILLed and
//! restarted 20 s later on the same port: the agents on it fail over to the
//! other and come back.
//!
//! Pass, per agent: every window it produced was applied by some replica
//! instance; its fail-overs and returns, as its `/metrics` count them, are
//! exactly the kills of its first-choice replica; the store holds one
//! sample per window it produced, and per cgroup the workload's own count
//! of failures, exactly.
//!
//! Bound: the fault phase plus 2 minutes.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    applied_once, counted_failing_opens, counter, fault_phase, holes, record, sequence,
    stop_counted, witness, COLLECTOR_ARGS, COLLECTOR_ENV,
};
use crate::{
    procs::{free_port, wait_for, Place, Proc},
    remote_write::{metric, Store},
    replicas::connected,
    TestCgroup, Workload,
};

const CGROUPS: usize = 4;
const NODES: [&str; 2] = ["chaos-replicas-1", "chaos-replicas-2"];
/// Time between kills, and how long a killed replica stays down.
const EVERY: Duration = Duration::from_secs(60);
const DOWN: Duration = Duration::from_secs(20);

fn replica(port: u16, store_url: &str) -> Proc {
    let mut args: Vec<&str> = COLLECTOR_ARGS.to_vec();
    args.extend(["--remote-write-url", store_url]);
    Proc::collector_at(
        port,
        &args,
        &Place {
            netns: None,
            env: vec![COLLECTOR_ENV],
            hosts: None,
        },
    )
}

#[test]
#[ignore = "chaos: minutes long, run by cargo xtask chaos"]
fn replicas_killed_in_turn_lose_nothing_and_count_nothing_twice() {
    if !super::can_run() || crate::vm_lacks("prometheus") {
        return;
    }
    let phase = fault_phase(5.0);
    let bound = phase + Duration::from_secs(120);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::start(dir.path(), "chaos-replicas", None);
    let store_url = store.url();
    let ports = [free_port(), free_port()];
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
    // Every instance of each replica, the live one last.
    let mut instances: [Vec<Proc>; 2] = [
        vec![replica(ports[0], &store_url)],
        vec![replica(ports[1], &store_url)],
    ];
    let cgroups: Vec<TestCgroup> = (0..CGROUPS)
        .map(|i| TestCgroup::new(&format!("chaos-replicas{i}")))
        .collect();
    let counters: Vec<_> = (0..CGROUPS).map(|_| counter()).collect();
    let workloads: Vec<Workload> = cgroups
        .iter()
        .zip(&counters)
        .map(|(c, n)| Workload::fork(c, counted_failing_opens(n, 10)))
        .collect();
    let metrics_ports = NODES.map(|_| free_port());
    let mut agents: Vec<Proc> = NODES
        .iter()
        .zip(&metrics_ports)
        .map(|(node, port)| {
            let outbox = dir.path().join(format!("outbox-{node}"));
            Proc::agent(&[
                "--collector",
                &urls[0],
                "--collector",
                &urls[1],
                "--node-name",
                node,
                "--outbox-dir",
                outbox.to_str().expect("utf-8"),
                "--reconnect-max",
                "1s",
                "--drain-timeout",
                "60s",
                "--prometheus-listen",
                &format!("127.0.0.1:{port}"),
            ])
        })
        .collect();
    let mut first_choice = Vec::new();
    for port in metrics_ports {
        wait_for("a replica streaming", Duration::from_secs(20), || {
            connected(port).is_some()
        });
        let url = connected(port).expect("connected");
        first_choice.push(urls.iter().position(|u| *u == url).expect("a replica"));
    }
    for w in &workloads {
        w.go();
    }

    // The fault phase: kill replica k % 2 every minute, back 20 s later.
    let mut kills = [0u64; 2];
    // One kill per whole minute of the phase (five by default).
    let rounds = (phase.as_secs_f64() / EVERY.as_secs_f64()).floor().max(1.0) as usize;
    for k in 0..rounds {
        std::thread::sleep(EVERY - DOWN);
        let r = k % 2;
        if let Some(live) = instances[r].last_mut() {
            live.kill();
        }
        kills[r] += 1;
        std::thread::sleep(DOWN);
        instances[r].push(replica(ports[r], &store_url));
    }
    // Every agent back on its first choice, then stop the load and drain.
    for (i, port) in metrics_ports.iter().enumerate() {
        let back = urls[first_choice[i]].clone();
        wait_for(
            "the agents back on their first choice",
            Duration::from_secs(30),
            || connected(*port).as_deref() == Some(back.as_str()),
        );
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
    let moves: Vec<(f64, f64, f64)> = metrics_ports
        .iter()
        .map(|&p| {
            (
                metric(p, "sonde_export_collector_failovers_total", &[]),
                metric(p, "sonde_export_collector_returns_total", &[]),
                metric(p, "sonde_export_collector_failover_time_max_seconds", &[]),
            )
        })
        .collect();
    for a in &mut agents {
        assert_eq!(a.terminate_within(Duration::from_secs(90)), 0);
        a.assert_stopped_acked();
    }

    let mut figures = Vec::new();
    for (i, (node, agent)) in NODES.iter().zip(&agents).enumerate() {
        let windows = agent.windows();
        let produced: BTreeSet<u64> = windows.iter().map(sequence).collect();
        let mut delivered = BTreeSet::new();
        let mut copies = 0;
        for instance in instances.iter().flatten() {
            let (applied, dropped) = applied_once(&witness(instance), node);
            delivered.extend(applied);
            copies += dropped;
        }
        assert_eq!(
            delivered,
            produced,
            "{node}: holes {:?}",
            holes(&produced, &delivered)
        );
        // Every fail-over flagged: one per kill of its first choice, and
        // one return each.
        let expected = kills[first_choice[i]] as f64;
        assert_eq!((moves[i].0, moves[i].1), (expected, expected), "{node}");
        // The store: one sample per window, and each workload's count.
        store.wait_every_window(node, produced.len(), Duration::from_secs(60));
        for (cgroup, n) in cgroups.iter().zip(&own) {
            assert_eq!(
                store.enoent_openat(node, &cgroup.v2_path()),
                Some(n.to_string()),
                "{node}"
            );
        }
        figures.push(json!({
            "node": node,
            "produced": produced.len(),
            "delivered": delivered.len(),
            "copies_absorbed": copies,
            "failovers": moves[i].0,
            "returns": moves[i].1,
            "longest_failover_secs": moves[i].2,
        }));
    }
    drop(instances);
    let secs = started.elapsed().as_secs_f64();
    assert!(started.elapsed() < bound, "{secs:.0} s, bound {bound:?}");
    record(json!({
        "scenario": "e collector replicas killed in turn",
        "secs": secs.round(),
        "bound_secs": bound.as_secs(),
        "sigkills": kills.iter().sum::<u64>(),
        "workload_failures": own.iter().sum::<u64>(),
        "nodes": figures,
        "pass": true,
    }));
}
