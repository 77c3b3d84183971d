//! sonde's wire, shared by the agent and the collector: the `sonde.v1`
//! messages and gRPC stubs (generated from `proto/sonde/v1/*.proto`), the
//! conversion between wire histograms and `sonde-slo`'s, cumulative series
//! built from window reports, and their rendering as OTLP and as Prometheus
//! text. Agent model types become wire types in one place on the agent's
//! side (`sonde::export::wire`); everything after that sees only these.

pub mod backoff;
pub mod histogram;
pub mod names;
pub mod otlp;
pub mod prometheus;
pub mod remote_write;
pub mod series;
pub mod validate;

/// The generated `sonde.v1` messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sonde.v1");
}

/// The protocol version this build speaks; every report carries it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Re-exported so that users build OTLP requests with the same types.
pub use opentelemetry_proto;
