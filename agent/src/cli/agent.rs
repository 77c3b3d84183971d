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
    budget::{Action, BudgetConfig, Governor, Meter},
    checkpoint,
    export::{
        outbox::{Outbox, DEFAULT_MAX_BYTES},
        SinkConfig, Sinks,
    },
    local::server::LocalServer,
    model::{LossRecord, Snapshot},
    probes::ProbeState,
    slo::Slos,
};

/// How often events are read between windows for socket clients.
const EVENT_POLL: Duration = Duration::from_millis(250);

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
    let config = SinkConfig {
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
    // Check the settings and take the socket before loading anything into
    // the kernel: a mistake there must leave nothing half-started.
    for c in &config.collectors {
        c.endpoint()?;
        c.resolve().await?;
    }
    config.remote_write.check()?;
    let specs = match &args.config {
        Some(path) => super::slo::read_config(path)?,
        None => Vec::new(),
    };
    if !specs.is_empty() || args.pin.is_some() {
        std::fs::create_dir_all(&args.state_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the state directory {}: {e}; pass a writable one to --state-dir",
                args.state_dir.display()
            )
        })?;
    }
    let mut slos = if specs.is_empty() {
        Slos::new(Vec::new(), None)?
    } else {
        Slos::new(specs, Some(args.state_dir.clone()))?
    };
    let thresholds = sonde_slo::spec::kernel_thresholds(slos.specs());
    let mut local = args.socket.as_deref().map(LocalServer::bind).transpose()?;
    let last_checkpoint = args.pin.as_ref().map(|_| checkpoint::load(&args.state_dir));
    let manifest = last_checkpoint
        .as_ref()
        .and_then(|c| c.as_ref().ok()?.as_ref())
        .map(|c| c.manifest.clone());
    let probes = args
        .probes
        .load(&thresholds, args.pin.clone().map(|dir| (dir, manifest)))?;
    // A disk outbox a previous agent numbered: that agent stopped, and
    // what the kernel saw since is in no window unless pinned probes
    // counted it and the first window resumes from its checkpoint.
    let previous_run = args.outbox_dir.as_deref().and_then(|dir| {
        Outbox::persisted_next_sequence(dir)
            .or_else(|| Outbox::persisted_next_sequence(&crate::export::remote_write_dir(dir)))
    });
    let resume = last_checkpoint
        .and_then(|c| checkpoint::resume(&probes, c, previous_run))
        .or_else(|| previous_run.map(|_| checkpoint::unwatched()));
    if let Some(outcome) = probes.pin_outcome() {
        eprintln!("sonde: {}", render::pin_line(outcome, resume.as_ref()));
    }
    let mut sampler = args.probes.sampler(probes, resume)?;
    let mut checkpoint_failed = false;
    let sample = match args.overhead_budget {
        Some(_) => args.overhead_sample.min(args.interval / 2),
        None => Duration::ZERO,
    };
    let mut meter = Meter::new(sample);
    let mut governor = args
        .overhead_budget
        .map(|p| Governor::new(BudgetConfig::new(p)));
    meter.start_sample(sampler.probes());
    let mut sinks = Sinks::start(&config, sampler.window_start_unix_ns()).await?;
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
    // Without --json: the probes' state only where it changed.
    let mut text = render::TextWindows::default();
    loop {
        let sample_end = meter.sample_deadline();
        tokio::select! {
            _ = ticks.tick() => {}
            _ = sleep_until(sample_end), if sample_end.is_some() => {
                meter.end_sample(sampler.probes());
                continue;
            }
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
        // A sample still running (a window shorter than it) ends here.
        meter.end_sample(sampler.probes());
        let counting: Vec<&'static str> = sampler
            .probes()
            .statuses()
            .iter()
            .filter(|s| s.state != ProbeState::Unavailable)
            .map(|s| s.probe)
            .collect();
        let mut overhead = meter.window(&counting);
        if let Some(g) = &mut governor {
            overhead.budget_percent = args.overhead_budget;
            // Shed during this window: what its statuses say.
            overhead.shed = g.shed();
            let action = g.decide(&overhead, &counting);
            match action {
                Some(Action::Shed(family, why)) => {
                    eprintln!("sonde: warning: {family} {why}");
                    sampler.detach(family, &why);
                }
                Some(Action::Restore(family)) => {
                    let state = sampler.reattach(family).map(|s| s.state);
                    eprintln!(
                        "sonde: {family} restored: the cost is back under the budget ({state:?})"
                    );
                }
                None => {}
            }
        }
        snapshot.overhead = Some(overhead);
        meter.start_sample(sampler.probes());
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
            print!("{}", text.render(&snapshot, args.top));
        }
        // Last: a crash before this line leaves the checkpoint one window
        // behind, which a disk outbox's sequence shows (see `checkpoint`).
        let saved = checkpoint::save(
            &args.state_dir,
            sampler.probes(),
            sequence,
            snapshot.window_end_unix_ns,
            sampler.last_reading(),
        );
        match saved {
            Some(Err(e)) if !checkpoint_failed => {
                eprintln!(
                    "sonde: warning: cannot write the checkpoint in {} ({e}); a restart will not resume and its first window will be flagged",
                    args.state_dir.display()
                );
                checkpoint_failed = true;
            }
            Some(Ok(())) => checkpoint_failed = false,
            _ => {}
        }
    }
    // Each queue gets its own --drain-timeout: the stores', then the
    // collector's acks (the README says so).
    let unwritten = sinks.drain_remote_write(args.drain_timeout).await;
    if unwritten > 0 {
        eprintln!("sonde: {unwritten} windows not written to the remote-write stores at exit");
    }
    let kept = sinks.remote_write_kept();
    if kept > 0 {
        eprintln!(
            "sonde: {kept} reports kept in the outbox for the remote-write stores; the next start sends them"
        );
    }
    let waiting = sinks.drain(args.drain_timeout).await;
    if waiting > 0 {
        eprintln!("sonde: agent stopped with {waiting} reports not acked by the collector");
    } else {
        eprintln!("sonde: agent stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Sleeps until `deadline` (never returns without one).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
