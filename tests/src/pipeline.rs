//! The agent's pipeline driven as a library type (`sonde::pipeline::Agent`),
//! without the CLI: windows come out numbered one after another, with the
//! workload's failures counted exactly and the SLO evaluated on them.

use std::time::Duration;

use sonde::{
    export::{outbox::DEFAULT_MAX_BYTES, wire::DEFAULT_MAX_SERIES, SinkConfig},
    pipeline::{Agent, AgentConfig, Note, Stopped},
    probes::ProbeOptions,
};
use sonde_common::family::Family;

use crate::{privileged, TestCgroup, Workload};

#[tokio::test(flavor = "current_thread")]
async fn the_pipeline_counts_a_workloads_failures_window_by_window_and_evaluates_its_slo() {
    if !privileged() {
        return;
    }
    let cgroup = TestCgroup::new("pipeline");
    let slos = crate::slo::openat_errors_slo(&cgroup);
    let state = tempfile::tempdir().expect("state dir");
    let config = AgentConfig {
        interval: Duration::from_millis(500),
        probes: ProbeOptions {
            disabled: Family::ALL
                .into_iter()
                .filter(|&f| f != Family::Syscalls)
                .collect(),
            ..Default::default()
        },
        kubelet_pods_dir: state.path().join("pods"),
        sinks: SinkConfig {
            outbox_max_bytes: DEFAULT_MAX_BYTES,
            max_series_per_metric: DEFAULT_MAX_SERIES,
            ..Default::default()
        },
        slos,
        state_dir: state.path().to_owned(),
        pin: None,
        socket: None,
        overhead_budget_percent: None,
        overhead_sample: Duration::from_secs(1),
    };
    let mut notes: Vec<String> = Vec::new();
    let mut note = |n: Note<'_>| notes.push(format!("{n:?}"));
    let mut agent = Agent::start(config, &mut note).await.expect("start");

    let w = Workload::fork(&cgroup, crate::procs::failing_opens(100));
    w.go();
    assert_eq!(w.wait(), 0);
    // The workload may straddle a window's end: sum until all are seen.
    let (mut sequences, mut good, mut total) = (Vec::new(), 0, 0);
    while total < 100 && sequences.len() < 6 {
        let outcome = agent.window(&mut note).await.expect("window");
        sequences.push(outcome.sequence);
        let slo = outcome.snapshot.slos.first().expect("the SLO's status");
        assert_eq!(slo.name, "open");
        good += slo.good;
        total += slo.total;
    }
    assert_eq!((good, total), (0, 100), "windows {sequences:?}");
    for pair in sequences.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{sequences:?}");
    }
    assert_eq!(
        agent.stop(Duration::from_secs(1)).await,
        Stopped {
            unwritten: 0,
            kept: 0,
            unacked: 0
        }
    );
    // Only the syscall family, attached: ready, and nothing else to tell.
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with("Ready("), "{notes:?}");
}
