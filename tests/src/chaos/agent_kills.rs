//! Scenario c: the agent SIGKILLed mid-flush, again and again.
//!
//! One collector on loopback; an agent with a disk outbox and 1 s windows,
//! killed with SIGKILL at least ten times and restarted each time on the
//! same directory. Each kill lands a set time (0 ms to 990 ms) after the
//! agent printed its n-th window (n from 0 to 3): right after the window
//! was written to the outbox, while it is being sent, acked and removed,
//! or while the next one is being written. After each kill the test reads
//! what the dead agent left on disk, so the content of every window is
//! known whether or not it was printed.
//!
//! A killed agent's probes go with it: the kernel events between its death
//! and the restart are not counted (until probes are pinned, see
//! [`restart_gaps_flagged`]). Pass: every window written (printed or on
//! disk) reaches the collector exactly once, the collector's totals are
//! those windows' totals, nothing is dropped, and every stretch without an
//! agent is flagged.
//!
//! Bound: the fault phase (default 1 minute, at least ten kills) plus
//! 3 minutes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    applied_once, collector, counted_failing_opens, counter, failures_key, fault_phase, holes,
    recent_complete, record, sequence, stop_counted, summary_loss, window_loss, witness,
};
use crate::{
    grpc::{outbox_reports, report_totals},
    procs::{agent_totals, collector_totals, fleet_json, free_port, ranges, Proc},
    TestCgroup, Workload,
};

const MIN_KILLS: usize = 10;
/// Windows an instance prints before its kill, in turn.
const WINDOWS_BEFORE_KILL: [usize; 5] = [1, 2, 0, 3, 1];
/// Then the kill waits this long, in turn (ms).
const KILL_OFFSETS_MS: [u64; 11] = [0, 2, 5, 10, 20, 50, 120, 300, 600, 900, 990];

/// A window whose content the test knows: printed by the agent, or read
/// from the outbox its killed instance left.
struct Known {
    /// The agent instance that produced it (0 = the first).
    instance: usize,
    /// Its `agent/restart_gap` loss count.
    restart_gap: u64,
    /// Its per-series totals.
    totals: BTreeMap<String, u64>,
}

impl Known {
    /// A window instance `instance` printed.
    fn printed(window: &Value, instance: usize) -> Self {
        Self {
            instance,
            restart_gap: window_loss(window, "agent", "restart_gap"),
            totals: agent_totals(std::slice::from_ref(window), |_| true),
        }
    }
}

fn wire_restart_gap(r: &sonde_proto::v1::AgentReport) -> u64 {
    r.losses
        .iter()
        .filter(|l| l.stage == "agent" && l.reason == "restart_gap")
        .map(|l| l.count)
        .sum()
}

fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .count()
    })
}

/// Every stretch with no agent running is flagged. Today a restarted
/// agent's probes count from zero, so:
/// - each instance that followed another (`resumed`: the outbox directory
///   held a numbering) marks its first window incomplete with one
///   `agent/restart_gap`, and no other window carries it;
/// - the first instance, on a fresh directory, flags nothing;
/// - every hole in the sequences (a number handed out by an instance
///   killed before it wrote the report) is followed by such a first window;
/// - the collector's cumulative `agent/restart_gap` is the number of those
///   first windows it applied.
///
/// With maps and links pinned (`sonde agent --pin`), a restarted agent
/// resumes from the kernel's totals: this becomes "no window flagged, no
/// hole, and the collector's totals equal the workload's own count".
fn restart_gaps_flagged(
    known: &BTreeMap<u64, Known>,
    resumed: &[bool],
    complete: &BTreeMap<u64, bool>,
    summary: &Value,
    holes: &[(u64, u64)],
) -> usize {
    let mut firsts: BTreeMap<usize, u64> = BTreeMap::new();
    for (&seq, k) in known {
        firsts.entry(k.instance).or_insert(seq);
    }
    let mut flagged = 0;
    for (&seq, k) in known {
        let first = firsts[&k.instance] == seq;
        let expected = u64::from(first && resumed[k.instance]);
        assert_eq!(
            k.restart_gap, expected,
            "window {seq} of instance {} (resumed: {})",
            k.instance, resumed[k.instance]
        );
        if expected == 1 {
            assert_eq!(
                complete.get(&seq),
                Some(&false),
                "window {seq} is incomplete"
            );
            flagged += 1;
        }
    }
    for &(_, last) in holes {
        let next = known
            .range(last + 1..)
            .next()
            .map(|(s, _)| *s)
            .expect("a window after every hole");
        assert_eq!(
            known[&next].restart_gap, 1,
            "the hole before {next} is followed by a flagged first window"
        );
    }
    assert_eq!(
        summary_loss(summary, "agent", "restart_gap"),
        flagged as u64
    );
    flagged
}

#[test]
#[ignore = "chaos: minutes long, run by cargo xtask chaos"]
fn agent_sigkilled_mid_flush_repeatedly() {
    if !super::can_run() {
        return;
    }
    let phase = fault_phase(1.0);
    let bound = phase + Duration::from_secs(180);
    let started = Instant::now();
    let node = "chaos-kills";
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut coll = collector(port, None);
    let cgroup = TestCgroup::new("chaos-kills");
    let count = counter();
    let workload = Workload::fork(&cgroup, counted_failing_opens(&count, 20));
    workload.go();
    let dir = tempfile::tempdir().expect("outbox dir");
    let outbox = dir.path().join("outbox");
    let outbox_arg = outbox.to_str().expect("utf-8 path").to_owned();
    let args = [
        "--collector",
        &url,
        "--node-name",
        node,
        "--outbox-dir",
        &outbox_arg,
        "--reconnect-max",
        "1s",
        "--drain-timeout",
        "30s",
    ];
    let mut known: BTreeMap<u64, Known> = BTreeMap::new();
    let mut resumed = Vec::new();
    let mut caught_writing = 0;
    let mut kills = Vec::new();
    let phase_start = Instant::now();
    let mut instance = 0;
    while kills.len() < MIN_KILLS || phase_start.elapsed() < phase {
        resumed.push(outbox.join("next_sequence").exists());
        let mut agent = Proc::agent(&args);
        let windows = WINDOWS_BEFORE_KILL[instance % WINDOWS_BEFORE_KILL.len()];
        let offset = KILL_OFFSETS_MS[instance % KILL_OFFSETS_MS.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.stdout_len() < windows {
            assert!(
                Instant::now() < deadline,
                "instance {instance} printed no window"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(offset));
        agent.kill();
        kills.push((windows, offset));
        caught_writing += usize::from(tmp_files(&outbox) > 0);
        for w in agent.windows() {
            known.insert(sequence(&w), Known::printed(&w, instance));
        }
        // Written but not printed: on disk, and this instance's.
        for r in outbox_reports(&outbox) {
            known.entry(r.sequence).or_insert_with(|| Known {
                instance,
                restart_gap: wire_restart_gap(&r),
                totals: report_totals(std::slice::from_ref(&r)),
            });
        }
        instance += 1;
    }
    let kill_phase_secs = phase_start.elapsed().as_secs_f64();
    // The last instance runs to the end and stops cleanly.
    resumed.push(outbox.join("next_sequence").exists());
    let mut last = Proc::agent(&args);
    last.wait_windows(3, Duration::from_secs(20));
    let own_count = stop_counted(workload, &count);
    let n = last.stdout_len();
    last.wait_windows(n + 2, Duration::from_secs(20));
    assert_eq!(last.terminate_within(Duration::from_secs(60)), 0);
    last.assert_stopped_acked();
    for w in last.windows() {
        known.insert(sequence(&w), Known::printed(&w, instance));
    }
    assert!(
        outbox_reports(&outbox).is_empty(),
        "acked reports leave the disk"
    );

    let detail = fleet_json(&["--collector", &url, "--node", node]);
    let summary = &detail["summary"];
    assert_eq!(coll.terminate(), 0);
    let (applied, copies) = applied_once(&witness(&coll), node);
    let written: BTreeSet<u64> = known.keys().copied().collect();
    // Every window written reached the collector, once, and nothing else
    // did; nothing was dropped.
    assert_eq!(applied, written, "applied vs written");
    let dropped = summary_loss(summary, "outbox", "outbox_full")
        + summary_loss(summary, "outbox", "refused_by_collector");
    assert_eq!(dropped, 0);
    let ranged: BTreeSet<u64> = ranges(summary)
        .into_iter()
        .flat_map(|(a, b)| a..=b)
        .collect();
    assert_eq!(ranged, applied);
    assert_eq!(summary["duplicates"], copies);
    // The collector's totals are exactly those of the windows written.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for k in known.values() {
        for (key, n) in &k.totals {
            *expected.entry(key.clone()).or_default() += n;
        }
    }
    let collected = collector_totals(&detail);
    assert_eq!(collected, expected);
    let span: BTreeSet<u64> = (*applied.first().unwrap()..=*applied.last().unwrap()).collect();
    let hole_list = holes(&span, &applied);
    let flagged = restart_gaps_flagged(
        &known,
        &resumed,
        &recent_complete(&detail),
        summary,
        &hole_list,
    );
    // What the dead stretches cost: the workload's failures no agent saw.
    let seen = collected.get(&failures_key(&cgroup)).copied().unwrap_or(0);
    assert!(seen <= own_count, "{seen} > {own_count}");
    let secs = started.elapsed().as_secs_f64();
    assert!(started.elapsed() < bound, "{secs:.0} s, bound {bound:?}");
    record(json!({
        "scenario": "c agent SIGKILLed mid-flush",
        "secs": secs.round(),
        "bound_secs": bound.as_secs(),
        "kills": kills.len(),
        "kill_phase_secs": kill_phase_secs.round(),
        "kills_that_caught_a_write": caught_writing,
        "produced": written.len(),
        "delivered": applied.len(),
        "dropped": dropped,
        "duplicates_absorbed": copies,
        "holes": hole_list,
        "restart_gaps_flagged": flagged,
        "workload_failures": own_count,
        "failures_seen": seen,
        "pass": true,
    }));
}
