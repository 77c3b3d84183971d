//! The chaos suite (`cargo xtask chaos`): agents, collectors and workloads
//! as real processes on loopback or in test network namespaces, under
//! faults that last minutes. Every scenario is `#[ignore]`d, so the normal
//! suite and CI never run it; `cargo xtask chaos` runs them one at a time
//! with `--ignored chaos::`.
//!
//! - [`outage`]: the collector is down for minutes (default 2.5) while two
//!   agents and a workload run; one agent's outbox is too small to hold the
//!   outage and must drop, the other's is not.
//! - [`lossy_link`]: the agent and the collector in two network
//!   namespaces joined by a veth pair; nftables drops 5 % of the packets
//!   both ways and a slow relay ([`relay`]) holds every byte for seconds.
//! - [`agent_kills`]: the agent SIGKILLed at least ten times, at moments
//!   around its flushes, with a disk outbox, restarted each time.
//! - [`collector_restarts`]: the collector SIGKILLed and SIGTERMed in turn
//!   while two agents stream one window a second from eight busy cgroups.
//! - [`replica_failover`]: two collector replicas writing to one
//!   Prometheus, one SIGKILLed every minute in turn; the agents fail over
//!   and come back, and the store holds every window once.
//!
//! The pass criterion, asserted exactly in each: every window an agent
//! produced reached a collector or was counted as dropped in band
//! (produced = delivered + dropped); no collector applied a window twice
//! (the copies resent after a reconnect show in its duplicate counter);
//! every hole in the sequences and every stretch no agent watched is
//! flagged. What each collector instance applied comes from its own debug
//! line per report ([`witness`]), written before the ack, so even an
//! instance killed with SIGKILL has told what it took.
//!
//! `SONDE_CHAOS_MINUTES` stretches or shortens each scenario's fault phase;
//! each scenario also asserts its own bound on the whole run. Each prints
//! one `chaos:` line of figures and, when `SONDE_CHAOS_RESULTS` names a
//! file, appends them there as JSON.

mod agent_kills;
mod collector_restarts;
mod lossy_link;
mod outage;
pub mod relay;
mod replica_failover;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Value;

use crate::{
    netns::Shared,
    procs::{Place, Proc},
};

/// The collector's environment in every scenario: its debug line per
/// report (see [`witness`]), nothing else at debug level.
pub const COLLECTOR_ENV: (&str, &str) = ("SONDE_LOG", "info,sonde_collector::ingest=debug");

/// The collector's extra arguments: keep every window's summary, so each
/// applied window's `complete` can be read back.
pub const COLLECTOR_ARGS: [&str; 2] = ["--recent-windows", "1000000"];

/// The length of a scenario's fault phase: `SONDE_CHAOS_MINUTES` when set,
/// else `default_minutes`.
pub fn fault_phase(default_minutes: f64) -> Duration {
    let minutes = std::env::var("SONDE_CHAOS_MINUTES")
        .ok()
        .and_then(|m| m.parse::<f64>().ok())
        .filter(|m| *m > 0.0)
        .unwrap_or(default_minutes);
    Duration::from_secs_f64(minutes * 60.0)
}

/// A collector for the chaos scenarios on `port`.
pub fn collector(port: u16, netns: Option<&crate::netns::TestNetns>) -> Proc {
    Proc::collector_at(
        port,
        &COLLECTOR_ARGS,
        &Place {
            netns,
            env: vec![COLLECTOR_ENV],
            hosts: None,
        },
    )
}

/// One report as a collector instance saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Node name.
    pub node: String,
    /// Boot id.
    pub boot: String,
    /// Sequence.
    pub sequence: u64,
    /// Applied (`true`) or dropped as a copy.
    pub applied: bool,
}

/// What a collector instance applied and dropped, from its debug lines
/// `report node=N boot=B sequence=S applied|duplicate`.
pub fn witness(collector: &Proc) -> Vec<Seen> {
    collector
        .stderr_lines()
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("report node=")? + "report ".len()..];
            let mut words = rest.split_whitespace();
            let mut field = |name: &str| {
                words
                    .next()
                    .and_then(|w| w.strip_prefix(name))
                    .map(str::to_owned)
            };
            let node = field("node=")?;
            let boot = field("boot=")?;
            let sequence = field("sequence=")?.parse().ok()?;
            let applied = match words.next()? {
                "applied" => true,
                "duplicate" => false,
                _ => return None,
            };
            Some(Seen {
                node,
                boot,
                sequence,
                applied,
            })
        })
        .collect()
}

/// The sequences of `node` an instance applied, asserting that it applied
/// none twice; and how many copies it dropped.
pub fn applied_once(seen: &[Seen], node: &str) -> (BTreeSet<u64>, u64) {
    let mut applied = BTreeSet::new();
    let mut copies = 0;
    for s in seen.iter().filter(|s| s.node == node) {
        if s.applied {
            assert!(
                applied.insert(s.sequence),
                "{node}: sequence {} applied twice by one collector",
                s.sequence
            );
        } else {
            assert!(
                applied.contains(&s.sequence),
                "{node}: sequence {} dropped as a copy of nothing",
                s.sequence
            );
            copies += 1;
        }
    }
    (applied, copies)
}

/// A window's sequence (agent JSON).
pub fn sequence(window: &Value) -> u64 {
    window["sequence"].as_u64().expect("sequence")
}

/// A window's count of loss `stage/reason` (agent JSON), summed over probes.
pub fn window_loss(window: &Value, stage: &str, reason: &str) -> u64 {
    loss_sum(&window["losses"], stage, reason)
}

/// A collector's cumulative count of loss `stage/reason` for a node
/// (`NodeSummary.losses`).
pub fn summary_loss(summary: &Value, stage: &str, reason: &str) -> u64 {
    loss_sum(&summary["losses"], stage, reason)
}

/// The counts of loss `stage/reason` in a JSON list of losses, summed.
fn loss_sum(losses: &Value, stage: &str, reason: &str) -> u64 {
    losses
        .as_array()
        .expect("losses")
        .iter()
        .filter(|l| l["stage"] == stage && l["reason"] == reason)
        .map(|l| l["count"].as_u64().expect("count"))
        .sum()
}

/// `sequence → complete` of every window a collector keeps for a node.
pub fn recent_complete(detail: &Value) -> BTreeMap<u64, bool> {
    detail["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .map(|w| {
            (
                w["sequence"].as_u64().expect("sequence"),
                w["complete"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// A collector's exit line for `node`: its loss counts `stage/reason`
/// summed over probes (`losses=stage/reason/probe:n,...`).
pub fn exit_loss(collector: &Proc, node: &str, stage: &str, reason: &str) -> u64 {
    let line = collector
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("at exit:") && l.contains(&format!("node={node} ")))
        .unwrap_or_else(|| panic!("no exit line for {node}"));
    let prefix = format!("{stage}/{reason}/");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("losses="))
        .unwrap_or_default()
        .split(',')
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.rsplit_once(':'))
        .map(|(_, n)| n.parse::<u64>().expect("count"))
        .sum()
}

/// The counted workload's two slots in [`Shared`] memory.
const COUNT: usize = 0;
const STOP: usize = 1;

/// Shared memory for [`counted_failing_opens`].
pub fn counter() -> Shared {
    Shared::new(2)
}

/// A workload for [`crate::Workload::fork`]: `openat` of a missing file in
/// batches of `batch` with a 5 ms pause, counting each call into `shared`
/// as it returns, until [`stop_counted`] asks it to end.
pub fn counted_failing_opens(shared: &Shared, batch: u32) -> impl FnOnce() + '_ {
    move || {
        let missing = c"/nonexistent/sonde-chaos";
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 5_000_000,
        };
        let mut done = 0u64;
        while shared.get(STOP) == 0 {
            for _ in 0..batch {
                crate::procs::open_missing(missing);
                done += 1;
                shared.set(COUNT, done);
            }
            // SAFETY: a valid timespec.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
}

/// Ends a [`counted_failing_opens`] workload; returns its own count.
pub fn stop_counted(workload: crate::Workload, shared: &Shared) -> u64 {
    shared.set(STOP, 1);
    assert_eq!(workload.wait(), 0, "the workload ends by itself");
    shared.get(COUNT)
}

/// The key of the counted workload's failures in
/// [`crate::procs::agent_totals`] and [`crate::procs::collector_totals`].
pub fn failures_key(cgroup: &crate::TestCgroup) -> String {
    format!("err|{}|openat|ENOENT", cgroup.v2_path())
}

/// Prints a scenario's figures (`chaos: {json}`) and appends them to
/// `$SONDE_CHAOS_RESULTS` when set.
pub fn record(figures: Value) {
    let line = figures.to_string();
    eprintln!("chaos: {line}");
    if let Some(file) = std::env::var_os("SONDE_CHAOS_RESULTS") {
        use std::io::Write as _;
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| writeln!(f, "{line}"));
    }
}

/// Sequences of `all` not in `some`, as closed ranges.
pub fn holes(all: &BTreeSet<u64>, some: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in all.difference(some) {
        match out.last_mut() {
            Some(last) if last.1 + 1 == s => last.1 = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// Whether the machine has what the scenarios need; says what is missing.
pub fn can_run() -> bool {
    !crate::vm_lacks("sonde-collector and minutes of wall time (the chaos suite runs on the host)")
        && crate::privileged()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_ranges() {
        let all: BTreeSet<u64> = (1..=10).collect();
        let some: BTreeSet<u64> = [1, 2, 5, 9, 10].into_iter().collect();
        assert_eq!(holes(&all, &some), vec![(3, 4), (6, 8)]);
    }
}
