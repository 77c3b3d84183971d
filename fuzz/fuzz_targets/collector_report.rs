//! What a hostile agent's stream can make the collector do. The input is a
//! run of length-delimited `AgentReport`s; each is decoded with prost (as
//! tonic's codec does), then checked and applied by `ingest::accept`, the
//! function the stream handler calls, to one collector state with fleet
//! SLOs configured. After each report: no node's cumulative totals went
//! backwards, every report was counted once, and the fleet's queries and
//! exports still render.
#![no_main]

use std::{collections::HashMap, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sonde_collector::{ingest::accept, slo::FleetSlos, state::State};
use sonde_proto::v1::AgentReport;
use sonde_slo::spec::{self, SloSpec};

/// The fleet SLOs (the seed reports carry their `slo.*` series).
const SLOS: &str = include_str!("../fixtures/sonde.toml");
/// At most this many reports per input, so that one input stays fast.
const MAX_REPORTS: usize = 32;
/// The collector's clock.
const NOW_UNIX_NS: u64 = 1_800_000_000_000_000_000;

/// Per node, its totals in the order the collector keeps its metrics.
fn totals(state: &State) -> HashMap<String, Vec<(String, u64)>> {
    state
        .fleet()
        .list(NOW_UNIX_NS)
        .into_iter()
        .map(|n| {
            let name = n.node.map(|id| id.node_name).unwrap_or_default();
            let totals = n.totals.into_iter().map(|t| (t.name, t.count)).collect();
            (name, totals)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let state = State::new(8, shutdown);
    static SPECS: OnceLock<Vec<SloSpec>> = OnceLock::new();
    let specs = SPECS.get_or_init(|| spec::parse("sonde.toml", SLOS).expect("the fixture parses"));
    state.fleet().set_slos(FleetSlos::new(specs.clone()));
    let mut buf = data;
    let (mut acked, mut refused) = (0u64, 0u64);
    for _ in 0..MAX_REPORTS {
        if buf.is_empty() {
            break;
        }
        let Ok(report) = AgentReport::decode_length_delimited(&mut buf) else {
            break;
        };
        let before = totals(&state);
        match accept(&state, report, NOW_UNIX_NS, "fuzz") {
            Ok(_) => acked += 1,
            Err(_) => refused += 1,
        }
        let after = totals(&state);
        for (node, old) in &before {
            let new = &after[node];
            assert!(new.len() >= old.len(), "{node}: a metric went away");
            for ((name, was), (same, now)) in old.iter().zip(new) {
                assert_eq!(name, same, "{node}: metrics reordered");
                assert!(now >= was, "{node}: {name} went back from {was} to {now}");
            }
        }
    }
    let counted = state.accepted.load(std::sync::atomic::Ordering::Relaxed)
        + state.duplicates.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, acked, "every acked report is counted once");
    let rejected: u64 = state.rejections.snapshot().iter().map(|(_, n)| *n).sum();
    assert_eq!(rejected, refused, "every refusal is counted once");
    // What the query API and the exporters make of the state.
    let mut fleet = state.fleet();
    for node in fleet.list(NOW_UNIX_NS) {
        let name = node.node.map(|id| id.node_name).unwrap_or_default();
        assert!(fleet.node(&name, NOW_UNIX_NS).is_some());
    }
    let _ = fleet.prometheus();
    let _ = fleet.otlp(NOW_UNIX_NS);
    let _ = fleet.slos();
});
