//! `sonde agent`: the long-running job. Loads the probes and closes one
//! window per interval; each window goes to stdout (a table, or one JSON
//! object per line with `--json`) and to the configured sinks: a collector
//! (`--collector`), OTLP (`--otlp-endpoint`), Prometheus (`--prometheus-listen`),
//! Prometheus remote write (`--remote-write-url`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use super::{parse_duration, render, ProbeArgs, TlsArgs};
use crate::{
    export::{outbox::DEFAULT_MAX_BYTES, SinkConfig},
    model::Snapshot,
    pipeline::{Agent, AgentConfig, Note, Stopped, WindowOutcome},
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("outbox_user").args(["collector", "remote_write_url"]).multiple(true)))]
pub(super) struct Args {
    /// Length of a window, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// One JSON object per window and line, instead of a table.
    #[arg(long)]
    json: bool,
    /// Rows per cgroup in the table.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Stream every window to this collector (http://host:port or
    /// https://host:port). Repeat it, or name a host that resolves to
    /// several addresses (a headless Service), for replicas: the agent
    /// picks one by its node name and fails over to the others.
    #[arg(long, value_name = "URL")]
    collector: Vec<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Keep the reports not yet acked by the collector, or not yet taken by
    /// every remote-write store, in this directory, so that they survive a
    /// restart (the stores' in `remote-write/` under it).
    #[arg(long, value_name = "DIR", requires = "outbox_user")]
    outbox_dir: Option<PathBuf>,
    /// Bound of the outbox; when full, the oldest reports are dropped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    outbox_max_bytes: u64,
    /// How often to resolve the collectors' names again while streaming:
    /// a replica added to a headless Service that now ranks first for this
    /// node takes its stream within this time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    collector_resolve_interval: Duration,
    /// Longest wait between reconnects to the collector (backoff with jitter).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    reconnect_max: Duration,
    /// On SIGTERM, how long to wait for the collector to ack what is left
    /// (and, first, for the remote-write stores to take theirs).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Push OTLP/gRPC metrics after every window to this receiver.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Serve Prometheus text at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    prometheus_listen: Option<SocketAddr>,
    /// Node name in reports and resources (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Serve windows and events on this local Unix socket, for
    /// `sonde top --attach` and `sonde events --attach` (without PATH:
    /// /run/sonde/agent.sock).
    #[arg(long, value_name = "PATH", num_args = 0..=1,
          default_missing_value = crate::local::DEFAULT_SOCKET)]
    socket: Option<PathBuf>,
    /// Series per metric in each report (collector, OTLP, Prometheus); the
    /// lightest beyond it fold into one `otel.metric.overflow` series, counted.
    #[arg(long, value_name = "N", default_value_t = crate::export::wire::DEFAULT_MAX_SERIES as u64,
          value_parser = clap::value_parser!(u64).range(2..))]
    max_series_per_metric: u64,
    /// SLOs to evaluate: sonde.toml (`[[slo]]` tables) or OpenSLO v1 YAML.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the SLO history and, with --pin, the kernel checkpoint are
    /// kept across restarts.
    #[arg(long, value_name = "DIR", default_value = crate::slo::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Pin the probes' maps and links under this bpffs directory (without
    /// DIR: /sys/fs/bpf/sonde): the kernel goes on counting while the agent
    /// restarts, and the next agent resumes where this one's last window
    /// ended. `sonde unpin` removes them.
    #[arg(long, value_name = "DIR", num_args = 0..=1,
          default_missing_value = crate::probes::pin::DEFAULT_DIR)]
    pin: Option<PathBuf>,
    /// The most the agent may cost the node, in percent of one CPU core
    /// (its own CPU time plus its programs' time in the kernel). Over it,
    /// the most expensive optional family is shed (reported, its windows
    /// flagged) and restored once the cost allows.
    #[arg(long, value_name = "PERCENT", value_parser = parse_budget)]
    overhead_budget: Option<f64>,
    /// How long, at the start of each window, the kernel's program
    /// statistics are sampled for the budget (they cost ~100 ns per program
    /// run while on); at most half the interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    overhead_sample: Duration,
    #[command(flatten)]
    remote_write: sonde_proto::remote_write::args::RemoteWriteArgs,
    #[command(flatten)]
    probes: ProbeArgs,
}

fn parse_budget(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p.is_finite() => Ok(p),
        _ => Err(format!(
            "'{text}' is not a budget: give a percentage of one core above 0, e.g. 1 or 2.5"
        )),
    }
}

/// A window as printed with `--json`: its sequence number, then the snapshot.
#[derive(Serialize)]
struct Line<'a> {
    sequence: u64,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sinks = SinkConfig {
        collectors: args
            .collector
            .iter()
            .map(|url| crate::export::grpc::CollectorConfig {
                resolve_interval: args.collector_resolve_interval,
                ..args.tls.collector(url, args.reconnect_max)
            })
            .collect(),
        outbox_dir: args.outbox_dir.clone(),
        outbox_max_bytes: args.outbox_max_bytes,
        otlp_endpoint: args.otlp_endpoint.clone(),
        prometheus_listen: args.prometheus_listen,
        node_name: args.node_name.clone(),
        max_series_per_metric: usize::try_from(args.max_series_per_metric).unwrap_or(usize::MAX),
        remote_write: args.remote_write.config(args.tls.insecure),
    };
    // Check the settings before loading anything into the kernel (the
    // agent takes the socket before its probes too): a mistake there must
    // leave nothing half-started.
    for c in &sinks.collectors {
        c.endpoint()?;
        c.resolve().await?;
    }
    sinks.remote_write.check()?;
    let slos = match &args.config {
        Some(path) => super::slo::read_config(path)?,
        None => Vec::new(),
    };
    let config = AgentConfig {
        interval: args.interval,
        probes: args.probes.options(),
        kubelet_pods_dir: args.probes.kubelet_pods_dir.clone(),
        sinks,
        slos,
        state_dir: args.state_dir.clone(),
        pin: args.pin.clone(),
        socket: args.socket.clone(),
        overhead_budget_percent: args.overhead_budget,
        overhead_sample: args.overhead_sample,
    };
    let mut note = print_note;
    let mut agent = Agent::start(config, &mut note).await?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // Without --json: the probes' state only where it changed.
    let mut text = render::TextWindows::default();
    loop {
        let WindowOutcome { sequence, snapshot } = tokio::select! {
            outcome = agent.window(&mut note) => outcome?,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        };
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&Line {
                    sequence,
                    snapshot: &snapshot
                })?
            );
        } else {
            print!("{}", text.render(&snapshot, args.top));
        }
    }
    // Each queue gets its own --drain-timeout: the stores', then the
    // collector's acks (the README says so).
    let Stopped {
        unwritten,
        kept,
        unacked,
    } = agent.stop(args.drain_timeout).await;
    if unwritten > 0 {
        eprintln!("sonde: {unwritten} windows not written to the remote-write stores at exit");
    }
    if kept > 0 {
        eprintln!(
            "sonde: {kept} reports kept in the outbox for the remote-write stores; the next start sends them"
        );
    }
    if unacked > 0 {
        eprintln!("sonde: agent stopped with {unacked} reports not acked by the collector");
    } else {
        eprintln!("sonde: agent stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Tells the operator, on stderr, what the agent says as it runs.
fn print_note(note: Note<'_>) {
    match note {
        Note::Unavailable(status) => super::warn_unavailable(status),
        Note::Pins { outcome, resume } => {
            eprintln!("sonde: {}", render::pin_line(outcome, resume));
        }
        Note::Serving(path) => {
            eprintln!("sonde: serving windows and events on {}", path.display());
        }
        Note::Prometheus(addr) => {
            eprintln!("sonde: Prometheus endpoint on http://{addr}/metrics");
        }
        Note::Ready(statuses) => {
            eprintln!("sonde: agent ready; {}", render::statuses_line(statuses));
        }
        Note::Shed { family, why } => eprintln!("sonde: warning: {family} {why}"),
        Note::Restored { family, state } => eprintln!(
            "sonde: {family} restored: the cost is back under the budget ({state:?})"
        ),
        Note::CheckpointFailed { dir, error } => eprintln!(
            "sonde: warning: cannot write the checkpoint in {} ({error}); a restart will not resume and its first window will be flagged",
            dir.display()
        ),
    }
}
