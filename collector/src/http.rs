//! The fleet's Prometheus endpoint: `GET /metrics`.

use std::sync::Arc;

use axum::{extract::State as Extract, http::header, routing::get, Router};
use sonde_proto::prometheus::CONTENT_TYPE;
use tokio::net::TcpListener;

use crate::state::State;

async fn metrics(
    Extract(state): Extract<Arc<State>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let mut text = state.fleet().prometheus();
    text.push_str(&state.prometheus());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<State>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).await
}
