//! The agent's `/metrics` endpoint: its cumulative series as Prometheus text.

use std::sync::Arc;

use axum::{extract::State, http::header, routing::get, Router};
use sonde_proto::prometheus::{render, Target, CONTENT_TYPE};
use tokio::net::TcpListener;

use super::Cumulative;

async fn metrics(
    State(cumulative): State<Arc<Cumulative>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let series = cumulative.series();
    let text = render(&[Target {
        labels: Vec::new(),
        series: &series,
    }]);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, cumulative: Arc<Cumulative>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(cumulative);
    axum::serve(listener, app).await
}
