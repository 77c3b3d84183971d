//! Scenario b: 5 % packet loss and delays of seconds between agent and
//! collector.
//!
//! Two test network namespaces joined by a veth pair: the agent runs in
//! `a` (10.77.0.1; only its network namespace is changed, so it still sees
//! every kernel event of the host), the collector in `b` on b's loopback,
//! behind a [`Relay`] on 10.77.0.2 that holds every chunk both ways. In
//! `a`, nftables drops one packet in twenty (`numgen random mod 20`) each
//! way. The delay is 2 s each way for the first 40 % of the fault phase,
//! 12 s for the next 30 % (acks come back 24 s late, some 24 reports are in
//! flight), then 4 s. In the middle of the 12 s stretch the relay cuts the
//! connection, as a broken path would, with what it held: the agent
//! reconnects and resends every report not acked, the ones the collector
//! had already applied among them. Nothing may be lost, nothing applied
//! twice, and the workload's own count arrives.
//!
//! Bound: the fault phase (default 3 minutes) plus 4 minutes (the drain
//! through the slow link).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    applied_once, collector, counted_failing_opens, counter, failures_key, fault_phase, holes,
    record, relay::Relay, sequence, stop_counted, summary_loss, witness,
};
use crate::{
    netns::{NetnsPair, TestNetns},
    procs::{agent_totals, collector_totals, fleet_json_in, ranges, Place, Proc},
    TestCgroup, Workload,
};

const COLLECTOR_PORT: u16 = 7411;
const RELAY_PORT: u16 = 7412;
const TABLE: &str = "sonde_chaos";

/// (packets seen towards and from the collector, packets dropped), from
/// the table's counters: every rule with a counter and no verdict counts
/// traffic, every one ending in `drop` counts drops.
fn packets(ns: &TestNetns) -> (u64, u64) {
    let text = ns.exec("nft", &["-j", "list", "table", "inet", TABLE], None);
    let value: serde_json::Value = serde_json::from_str(&text).expect("nft JSON");
    let (mut seen, mut dropped) = (0, 0);
    for rule in value["nftables"]
        .as_array()
        .expect("nftables")
        .iter()
        .filter_map(|i| i["rule"]["expr"].as_array())
    {
        let n = rule
            .iter()
            .find_map(|e| e["counter"]["packets"].as_u64())
            .unwrap_or(0);
        if rule.iter().any(|e| e.get("drop").is_some()) {
            dropped += n;
        } else {
            seen += n;
        }
    }
    (seen, dropped)
}

#[test]
#[ignore = "chaos: minutes long, run by cargo xtask chaos"]
fn five_percent_loss_and_seconds_of_delay() {
    if !super::can_run() || crate::vm_lacks("nft and ip") {
        return;
    }
    let phase = fault_phase(3.0);
    let bound = phase + Duration::from_secs(240);
    let started = Instant::now();
    let node = "chaos-lossy";
    let pair = NetnsPair::new("chaos");
    let (agent_ns, collector_ns) = (&pair.a, &pair.b);
    let mut coll = collector(COLLECTOR_PORT, Some(collector_ns));
    let relay = Relay::start(
        collector_ns,
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), RELAY_PORT),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, COLLECTOR_PORT),
        Duration::from_secs(2),
    );
    agent_ns.nft(&format!(
        "table inet {TABLE} {{
           chain out {{
             type filter hook output priority 0; policy accept;
             ip daddr 10.77.0.2 counter;
             ip daddr 10.77.0.2 numgen random mod 20 0 counter drop;
           }}
           chain in {{
             type filter hook input priority 0; policy accept;
             ip saddr 10.77.0.2 counter;
             ip saddr 10.77.0.2 numgen random mod 20 0 counter drop;
           }}
         }}\n"
    ));
    let cgroup = TestCgroup::new("chaos-lossy");
    let count = counter();
    let workload = Workload::fork(&cgroup, counted_failing_opens(&count, 20));
    let url = format!("http://10.77.0.2:{RELAY_PORT}");
    let mut agent = Proc::agent_at(
        &[
            "--collector",
            &url,
            "--insecure",
            "--node-name",
            node,
            "--reconnect-max",
            "5s",
            "--drain-timeout",
            "180s",
        ],
        &Place {
            netns: Some(agent_ns),
            env: Vec::new(),
            hosts: None,
        },
    );
    workload.go();
    std::thread::sleep(phase.mul_f64(0.4));
    relay.set_delay(Duration::from_secs(12));
    std::thread::sleep(phase.mul_f64(0.15));
    relay.cut();
    std::thread::sleep(phase.mul_f64(0.15));
    relay.set_delay(Duration::from_secs(4));
    std::thread::sleep(phase.mul_f64(0.3));
    let own_count = stop_counted(workload, &count);
    let n = agent.stdout_len();
    agent.wait_windows(n + 2, Duration::from_secs(20));
    // The drain goes through the same lossy, slow link.
    assert_eq!(
        agent.terminate_within(Duration::from_secs(200)),
        0,
        "the agent drains and exits"
    );
    agent.assert_stopped_acked();
    let (seen_packets, dropped_packets) = packets(agent_ns);
    let connections = relay.connections();
    let relayed_bytes = relay.bytes();
    drop(relay);

    let windows = agent.windows();
    let produced: BTreeSet<u64> = windows.iter().map(sequence).collect();
    let detail = fleet_json_in(
        Some(collector_ns),
        &[
            "--collector",
            &format!("http://127.0.0.1:{COLLECTOR_PORT}"),
            "--node",
            node,
        ],
    );
    let summary = &detail["summary"];
    assert_eq!(coll.terminate(), 0);
    let (applied, copies) = applied_once(&witness(&coll), node);
    let dropped = summary_loss(summary, "outbox", "outbox_full")
        + summary_loss(summary, "outbox", "refused_by_collector");
    // Conservation with nothing dropped: every window arrived, once.
    assert_eq!(dropped, 0);
    assert_eq!(applied, produced, "holes: {:?}", holes(&produced, &applied));
    let ranged: BTreeSet<u64> = ranges(summary)
        .into_iter()
        .flat_map(|(a, b)| a..=b)
        .collect();
    assert_eq!(ranged, applied);
    assert_eq!(ranges(summary).len(), 1, "no gap at the collector");
    assert_eq!(summary["duplicates"], copies);
    assert_eq!(summary["reports"], applied.len());
    let collected = collector_totals(&detail);
    assert_eq!(collected, agent_totals(&windows, |_| true));
    assert_eq!(
        collected.get(&failures_key(&cgroup)).copied(),
        Some(own_count),
        "the workload's own count"
    );
    // The faults were there.
    assert!(
        dropped_packets > 0 && seen_packets > 0,
        "{dropped_packets} of {seen_packets}"
    );
    assert!(relayed_bytes > 0);
    assert!(connections >= 2, "the agent reconnected after the cut");
    let secs = started.elapsed().as_secs_f64();
    assert!(started.elapsed() < bound, "{secs:.0} s, bound {bound:?}");
    record(json!({
        "scenario": "b 5% loss and delays",
        "secs": secs.round(),
        "bound_secs": bound.as_secs(),
        "packets": seen_packets,
        "packets_dropped": dropped_packets,
        "relay_connections": connections,
        "produced": produced.len(),
        "delivered": applied.len(),
        "dropped": dropped,
        "duplicates_absorbed": copies,
        "holes": Vec::<(u64, u64)>::new(),
        "workload_failures": own_count,
        "pass": true,
    }));
}
