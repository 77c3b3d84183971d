//! The agent's `/metrics` endpoint: its cumulative series as Prometheus text.

use std::sync::Arc;

use axum::{extract::State, http::header, routing::get, Router};
use sonde_proto::{
    prometheus::{render, Target, CONTENT_TYPE},
    remote_write::sender::RemoteWrite,
};
use tokio::net::TcpListener;

use super::Cumulative;

type Shared = (Arc<Cumulative>, Option<Arc<RemoteWrite>>);

async fn metrics(
    State((cumulative, remote_write)): State<Shared>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let mut text = {
        let series = cumulative.series();
        render(&[Target {
            labels: Vec::new(),
            series: &series,
        }])
    };
    if let Some(rw) = remote_write {
        text.push_str(&rw.prometheus());
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Serves `/metrics` on `listener` until the process ends: the cumulative
/// series, and remote write's own counters when it runs.
pub async fn serve(
    listener: TcpListener,
    cumulative: Arc<Cumulative>,
    remote_write: Option<Arc<RemoteWrite>>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state((cumulative, remote_write));
    axum::serve(listener, app).await
}
