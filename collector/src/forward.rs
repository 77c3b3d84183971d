//! OTLP upstream: every interval, the fleet's cumulative series go to an
//! OTLP/gRPC metrics receiver (an OpenTelemetry Collector, Mimir, ...). A
//! failed export is logged and the next one carries the same cumulative
//! values, so nothing needs resending.

use std::{sync::Arc, time::Duration};

use sonde_proto::{
    opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient,
    otlp,
};
use tonic::transport::Endpoint;

use crate::{now_unix_ns, state::State};

/// Exports the fleet to `endpoint` every `interval`, forever.
pub async fn run(endpoint: Endpoint, interval: Duration, state: Arc<State>) {
    let mut client = MetricsServiceClient::new(endpoint.connect_lazy());
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let resources = state.fleet().otlp(now_unix_ns());
        if resources.is_empty() {
            continue;
        }
        match client.export(otlp::request(resources)).await {
            Ok(_) => log::debug!("OTLP export sent"),
            Err(e) => log::warn!("OTLP export to {} failed: {e}", endpoint.uri()),
        }
    }
}
