//! sonde's collector: accepts report streams from many agents, drops
//! duplicates by (node, boot id, sequence), keeps each node's cumulative
//! series, latest window and recent windows in memory, and serves them:
//! the `sonde.v1.Query` API, a Prometheus endpoint for the fleet, and OTLP
//! upstream. It shares the wire with the agent through `sonde-proto` and
//! the math through `sonde-slo`; it never links aya.

pub mod asks;
pub mod fleet;
pub mod forward;
pub mod http;
pub mod ingest;
pub mod query;
pub mod ranges;
pub mod reject;
pub mod slo;
pub mod state;
pub mod store;
pub mod tls;

/// Unix time now, in nanoseconds.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
