//! OTLP/gRPC metrics: after every window the cumulative series go to the
//! configured receiver. Cumulative values need no resend: a failed export
//! is logged and the next one carries everything.

use std::{sync::Arc, time::Duration};

use sonde_proto::{
    opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient,
    otlp,
};
use tokio::sync::Notify;
use tonic::transport::Endpoint;

use super::Cumulative;

/// An export that takes longer is abandoned (the next carries the same).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exports whenever `tick` is signalled, forever.
pub async fn run(endpoint: Endpoint, cumulative: Arc<Cumulative>, tick: Arc<Notify>) {
    let uri = endpoint.uri().clone();
    let mut client = MetricsServiceClient::new(endpoint.timeout(EXPORT_TIMEOUT).connect_lazy());
    loop {
        tick.notified().await;
        let request = {
            let resource: Vec<(&str, &str)> = cumulative
                .resource
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            let series = cumulative.series();
            otlp::request(vec![otlp::resource_metrics(
                otlp::resource(&resource),
                &series,
                cumulative.start_unix_ns,
                // The values hold as of the end of the latest window.
                cumulative.as_of_unix_ns(),
            )])
        };
        match client.export(request).await {
            Ok(r) => match r.into_inner().partial_success {
                Some(p) if p.rejected_data_points > 0 => log::warn!(
                    "OTLP receiver rejected {} data points: {}",
                    p.rejected_data_points,
                    p.error_message
                ),
                _ => log::debug!("OTLP export done"),
            },
            Err(e) => log::warn!("OTLP export to {} failed: {e}", uri),
        }
    }
}
