//! `sonde agent`: the long-running job. Loads the probes and closes one
//! window per interval; each window goes to stdout (a table, or one JSON
//! object per line with `--json`) and to the configured sinks: a collector
//! (`--collector`), OTLP (`--otlp-endpoint`), Prometheus (`--prometheus-listen`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use super::{parse_duration, render, ProbeArgs, TlsArgs};
use crate::{
    export::{outbox::DEFAULT_MAX_BYTES, SinkConfig, Sinks},
    local::server::LocalServer,
    model::{LossRecord, Snapshot},
    slo::Slos,
};

/// How often events are read between windows for socket clients.
const EVENT_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, clap::Args)]
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
    /// Stream every window to this collector (http://host:port or https://host:port).
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Keep unacked reports in this directory, so that they survive a restart.
    #[arg(long, value_name = "DIR", requires = "collector")]
    outbox_dir: Option<PathBuf>,
    /// Bound of the outbox; when full, the oldest reports are dropped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    outbox_max_bytes: u64,
    /// Longest wait between reconnects to the collector (backoff with jitter).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    reconnect_max: Duration,
    /// On SIGTERM, how long to wait for the collector to ack what is left.
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
    /// Where the SLO history is kept across restarts.
    #[arg(long, value_name = "DIR", default_value = crate::slo::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(flatten)]
    probes: ProbeArgs,
}

/// A window as printed with `--json`: its sequence number, then the snapshot.
#[derive(Serialize)]
struct Line<'a> {
    sequence: u64,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = SinkConfig {
        collector: args
            .collector
            .as_ref()
            .map(|url| args.tls.collector(url, args.reconnect_max)),
        outbox_dir: args.outbox_dir.clone(),
        outbox_max_bytes: args.outbox_max_bytes,
        otlp_endpoint: args.otlp_endpoint.clone(),
        prometheus_listen: args.prometheus_listen,
        node_name: args.node_name.clone(),
        max_series_per_metric: usize::try_from(args.max_series_per_metric).unwrap_or(usize::MAX),
    };
    // Check the settings and take the socket before loading anything into
    // the kernel: a mistake there must leave nothing half-started.
    if let Some(c) = &config.collector {
        c.endpoint()?;
        c.resolve().await?;
    }
    let specs = match &args.config {
        Some(path) => super::slo::read_config(path)?,
        None => Vec::new(),
    };
    let mut slos = if specs.is_empty() {
        Slos::new(Vec::new(), None)?
    } else {
        std::fs::create_dir_all(&args.state_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the state directory {}: {e}; pass a writable one to --state-dir",
                args.state_dir.display()
            )
        })?;
        Slos::new(specs, Some(args.state_dir.clone()))?
    };
    let thresholds = sonde_slo::spec::kernel_thresholds(slos.specs());
    let mut local = args.socket.as_deref().map(LocalServer::bind).transpose()?;
    let mut sampler = args.probes.start_with(&thresholds)?;
    let mut sinks = Sinks::start(&config, sampler.window_start_unix_ns()).await?;
    // An agent before this one stopped (its outbox numbering is here): the
    // kernel events since it stopped were never read, so the first window
    // says so. Counters resumed from the kernel would make this stretch
    // whole; today the probes start from zero.
    let mut restart_gap = sinks.resumed();
    if let Some(server) = &mut local {
        server.start(args.interval)?;
        eprintln!(
            "sonde: serving windows and events on {}",
            server.path().display()
        );
    }
    if let Some(addr) = sinks.prometheus_addr {
        eprintln!("sonde: Prometheus endpoint on http://{addr}/metrics");
    }
    eprintln!(
        "sonde: agent ready; {}",
        render::statuses_line(sampler.probes().statuses())
    );
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut ticks = tokio::time::interval(args.interval);
    ticks.tick().await; // the first tick is immediate

    // Socket clients get events as they happen, not at the window's close.
    let mut polls = tokio::time::interval(EVENT_POLL);
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Events of the current window already sent to socket clients.
    let mut sent_events = 0usize;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = polls.tick(), if local.is_some() => {
                if let Some(server) = &local {
                    for event in sampler.poll_events() {
                        server.event(&event);
                        sent_events += 1;
                    }
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        let mut snapshot = sampler.tick().context("reading the probes' maps")?;
        snapshot.flag_restart_gap(std::mem::take(&mut restart_gap));
        if !slos.is_empty() {
            snapshot.slos = slos.window(&snapshot).context("keeping the SLO state")?;
        }
        let own_losses: Vec<LossRecord> = local
            .iter()
            .map(|server| LossRecord {
                stage: "local_socket",
                probe: "all",
                reason: "client_too_slow",
                count: server.take_dropped(),
            })
            .collect();
        let sequence = sinks
            .window(&snapshot, &own_losses)
            .context("handing the window to the sinks")?;
        if let Some(server) = &local {
            // The window's events come first in the order they were read,
            // so the ones not sent yet are at the end.
            for event in snapshot.events.iter().skip(sent_events) {
                server.event(event);
            }
            sent_events = 0;
            server.window(sequence, &snapshot);
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&Line {
                    sequence,
                    snapshot: &snapshot
                })?
            );
        } else {
            print!("{}", render::snapshot(&snapshot, args.top));
        }
    }
    let waiting = sinks.drain(args.drain_timeout).await;
    if waiting > 0 {
        eprintln!("sonde: agent stopped with {waiting} reports not acked by the collector");
    } else {
        eprintln!("sonde: agent stopped");
    }
    Ok(ExitCode::SUCCESS)
}
