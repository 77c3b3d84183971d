//! The agent's `/metrics` endpoint: its cumulative series as Prometheus text.

use std::sync::Arc;

use axum::{extract::State, http::header, routing::get, Router};
use sonde_proto::{
    names,
    prometheus::{escape_label, label_name, metric_name, render, Target, CONTENT_TYPE},
    remote_write::sender::RemoteWrite,
    v1::MetricKind,
};
use tokio::net::TcpListener;

use super::Cumulative;

type Shared = (
    Arc<Cumulative>,
    Option<Arc<RemoteWrite>>,
    Option<Arc<super::grpc::Shared>>,
);

async fn metrics(
    State((cumulative, remote_write, collectors)): State<Shared>,
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
    if let Some(c) = collectors {
        text.push_str(&failover_text(&c.failover));
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// The collector replicas' fail-over counters as Prometheus text.
fn failover_text(stats: &super::grpc::FailoverStats) -> String {
    use std::{fmt::Write as _, sync::atomic::Ordering};
    let secs = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
    let count = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let name = |n: &str, unit: &str, kind: MetricKind| metric_name(n, unit, kind);
    let mut out = String::new();
    let families: [(&str, &str, MetricKind, &str, f64); 4] = [
        (
            names::COLLECTOR_FAILOVERS,
            names::UNIT_FAILOVERS,
            MetricKind::Counter,
            "Moves to another collector replica after the one in use stopped answering",
            count(&stats.failovers) as f64,
        ),
        (
            names::COLLECTOR_FAILOVER_TIME,
            names::UNIT_SECONDS,
            MetricKind::Counter,
            "Time from losing a replica to the next one's first ack, summed over the fail-overs",
            secs(&stats.failover_ns),
        ),
        (
            names::COLLECTOR_FAILOVER_TIME_MAX,
            names::UNIT_SECONDS,
            MetricKind::Gauge,
            "The longest fail-over",
            secs(&stats.failover_max_ns),
        ),
        (
            names::COLLECTOR_RETURNS,
            names::UNIT_FAILOVERS,
            MetricKind::Counter,
            "Moves back to the first-choice replica once it answered again",
            count(&stats.returns) as f64,
        ),
    ];
    for (metric, unit, kind, help, value) in families {
        let n = name(metric, unit, kind);
        let type_name = if kind == MetricKind::Gauge {
            "gauge"
        } else {
            "counter"
        };
        let _ = writeln!(out, "# HELP {n} {help}");
        let _ = writeln!(out, "# TYPE {n} {type_name}");
        let _ = writeln!(out, "{n} {value}");
    }
    let current = stats.current.lock().map(|c| c.clone()).unwrap_or_default();
    let connected = name(
        names::COLLECTOR_CONNECTED,
        names::UNIT_STREAMS,
        MetricKind::Gauge,
    );
    let _ = writeln!(
        out,
        "# HELP {connected} The replica streaming now (1), by name"
    );
    let _ = writeln!(out, "# TYPE {connected} gauge");
    if let Some(current) = current {
        let address = label_name(names::ATTR_SERVER_ADDRESS);
        let _ = writeln!(
            out,
            "{connected}{{{address}=\"{}\"}} 1",
            escape_label(&current)
        );
    }
    out
}

/// Serves `/metrics` on `listener` until the process ends: the cumulative
/// series, remote write's own counters when it runs, and the collector
/// replicas' fail-over counters with a collector.
pub async fn serve(
    listener: TcpListener,
    cumulative: Arc<Cumulative>,
    remote_write: Option<Arc<RemoteWrite>>,
    collectors: Option<Arc<super::grpc::Shared>>,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).with_state((
        cumulative,
        remote_write,
        collectors,
    ));
    axum::serve(listener, app).await
}
