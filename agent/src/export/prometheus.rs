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
    let failovers = name(
        names::COLLECTOR_FAILOVERS,
        names::UNIT_FAILOVERS,
        MetricKind::Counter,
    );
    let _ = writeln!(out, "# HELP {failovers} Moves to another collector replica after the one in use stopped answering");
    let _ = writeln!(out, "# TYPE {failovers} counter");
    let _ = writeln!(out, "{failovers} {}", count(&stats.failovers));
    let time = name(
        names::COLLECTOR_FAILOVER_TIME,
        names::UNIT_SECONDS,
        MetricKind::Counter,
    );
    let _ = writeln!(out, "# HELP {time} Time from losing a replica to the next one's first ack, summed over the fail-overs");
    let _ = writeln!(out, "# TYPE {time} counter");
    let _ = writeln!(out, "{time} {}", secs(&stats.failover_ns));
    let max = name(
        names::COLLECTOR_FAILOVER_TIME_MAX,
        names::UNIT_SECONDS,
        MetricKind::Gauge,
    );
    let _ = writeln!(out, "# HELP {max} The longest fail-over");
    let _ = writeln!(out, "# TYPE {max} gauge");
    let _ = writeln!(out, "{max} {}", secs(&stats.failover_max_ns));
    let returns = name(
        names::COLLECTOR_RETURNS,
        names::UNIT_FAILOVERS,
        MetricKind::Counter,
    );
    let _ = writeln!(
        out,
        "# HELP {returns} Moves back to the first-choice replica once it answered again"
    );
    let _ = writeln!(out, "# TYPE {returns} counter");
    let _ = writeln!(out, "{returns} {}", count(&stats.returns));
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
