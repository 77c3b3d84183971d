//! `sonde-collector`: accepts report streams from sonde agents and serves
//! the fleet.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use clap::Parser;
use sonde_collector::{
    forward, http, ingest::IngestService, query::QueryService, state::State, store::Store, tls::Tls,
};
use sonde_proto::{
    remote_write::{config::ConfigError, query::QueryClient, sender::RemoteWrite},
    v1::{ingest_server::IngestServer, query_server::QueryServer},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};

/// Decoding a report allocates per label; mimalloc takes a third of the
/// collector's CPU that glibc's allocator took (`cargo xtask bench collector`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sonde's collector: agents stream their windows here; the fleet is served
/// through the Query API, Prometheus and OTLP.
#[derive(Debug, Parser)]
#[command(name = "sonde-collector", version, about)]
struct Args {
    /// gRPC address for agents and `sonde fleet`. Beyond loopback, TLS
    /// (or an explicit --insecure) is required.
    #[arg(long, default_value = "127.0.0.1:7411")]
    listen: SocketAddr,
    /// Serve plaintext on an address that is not loopback (and allow
    /// plaintext remote write to a store that is not on loopback).
    #[arg(long)]
    insecure: bool,
    /// Serve the fleet's series as Prometheus text on this address (`/metrics`).
    #[arg(long, value_name = "ADDR")]
    prometheus_listen: Option<SocketAddr>,
    /// Forward the fleet's series to this OTLP/gRPC metrics receiver.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// How often to forward over OTLP.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    otlp_interval: Duration,
    /// Server certificate chain (PEM); with --tls-key and --tls-client-ca,
    /// turns on TLS and requires agents to show a certificate signed by that CA.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA that signs the agents' client certificates (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Reports larger than this are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_report_bytes: usize,
    /// Window summaries kept per node.
    #[arg(long, default_value_t = 60)]
    recent_windows: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Fleet SLOs (sonde.toml or OpenSLO YAML): each is evaluated over the
    /// sum of its nodes' good and total events (`nodes` selects them by name).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
    #[command(flatten)]
    remote_write: sonde_proto::remote_write::args::RemoteWriteArgs,
    /// Answer `sonde fleet`, `sonde fleet slo` and the Query API for the
    /// whole fleet from this store's Prometheus query API (e.g.
    /// http://127.0.0.1:9090, or https://mimir/prometheus), whichever
    /// replica each agent streams to; its TLS and headers are the remote
    /// write's. Without it, a replica answers for its own agents.
    #[arg(long, value_name = "URL", requires = "remote_write_url")]
    store_url: Option<String>,
    /// How far back the store views look for a node's last window.
    #[arg(long, default_value = "1h", value_parser = parse_duration, requires = "store_url")]
    store_lookback: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "'{text}' is not a non-zero duration; write it like 10s"
        )),
    }
}

/// One descriptor per agent connection: lift the soft limit to the hard one
/// (the default 1,024 is less than a fleet).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::warn!("cannot raise the open-file limit");
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new()
        .filter_level(args.log_level)
        .parse_env("SONDE_LOG")
        .init();
    raise_nofile();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde-collector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let specs = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the config {}: {e}; pass a readable sonde.toml or OpenSLO YAML file to --config",
                    path.display()
                )
            })?;
            sonde_slo::spec::parse(&path.display().to_string(), &text)?
        }
        None => Vec::new(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut state = State::new(args.recent_windows, stopped);
    let remote_write = args.remote_write.config(args.insecure);
    state.remote_write = RemoteWrite::start(&remote_write)?;
    if state.remote_write.is_some() {
        eprintln!(
            "sonde-collector: remote write to {}",
            remote_write.urls.join(", ")
        );
    }
    if let Some(url) = &args.store_url {
        let client = QueryClient::new(&remote_write, url).map_err(|e| match e {
            ConfigError::Url { .. } => anyhow::anyhow!(
                "--store-url '{url}' is not the URL of a store's query API; write it like http://127.0.0.1:9090 or https://mimir:8080/prometheus"
            ),
            ConfigError::Plaintext { host } => anyhow::anyhow!(
                "refusing plaintext queries to the store at {host}, which is not a loopback address: use https:// with --remote-write-tls-ca, or pass --insecure"
            ),
            other => anyhow::anyhow!("--store-url: {other}"),
        })?;
        eprintln!(
            "sonde-collector: fleet views from the store at {url} (nodes seen in the last {})",
            humantime::format_duration(args.store_lookback)
        );
        state.store = Some(Store::new(client, args.store_lookback, specs.clone()));
    }
    let state = Arc::new(state);
    if !specs.is_empty() {
        eprintln!("sonde-collector: evaluating {} fleet SLOs", specs.len());
        state
            .fleet()
            .set_slos(sonde_collector::slo::FleetSlos::new(specs));
    }
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_client_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(Tls::load(cert, key, ca)?),
        (None, None, None) => None,
        _ => bail!("TLS needs --tls-cert, --tls-key and --tls-client-ca together"),
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.insecure {
        bail!(
            "refusing plaintext on {}, which is not a loopback address: give --tls-cert, --tls-key and --tls-client-ca, or pass --insecure",
            args.listen
        );
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;

    if let Some(addr) = args.prometheus_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for Prometheus"))?;
        eprintln!(
            "sonde-collector: Prometheus endpoint on http://{}/metrics",
            l.local_addr()?
        );
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(l, state).await {
                log::error!("Prometheus endpoint: {e}");
            }
        });
    }
    if let Some(url) = &args.otlp_endpoint {
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("'{url}' is not an OTLP endpoint URL"))?;
        tokio::spawn(forward::run(endpoint, args.otlp_interval, state.clone()));
    }

    let ingest = IngestServer::new(IngestService::new(state.clone()))
        .max_decoding_message_size(args.max_report_bytes);
    let query = QueryServer::new(QueryService::new(state.clone()));
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        // Streams end after acking what they applied; then the server stops.
        let _ = stop.send(true);
    };
    match tls {
        Some(tls) => {
            eprintln!(
                "sonde-collector: listening on {local} (gRPC, TLS, client certificates required)"
            );
            let incoming = tls.incoming(listener, state.clone());
            let (t1, s1, t2, s2) = (tls.clone(), state.clone(), tls, state.clone());
            Server::builder()
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    ingest,
                    move |r| t1.authorize(&s1, r),
                ))
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    query,
                    move |r| t2.authorize(&s2, r),
                ))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .context("serving gRPC")?;
        }
        None => {
            eprintln!("sonde-collector: listening on {local} (gRPC, plaintext)");
            Server::builder()
                .add_service(ingest)
                .add_service(query)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
                .context("serving gRPC")?;
        }
    }
    // The stores get what was applied, or the exit says what they did not.
    if let Some(rw) = &state.remote_write {
        let unwritten = rw.drain(sonde_collector::state::SHUTDOWN_DRAIN).await;
        if unwritten > 0 {
            eprintln!(
                "sonde-collector: {unwritten} windows not written to the remote-write stores at exit"
            );
        }
    }
    // What this instance took, per node: its memory goes with it.
    for n in state.fleet().list(sonde_collector::now_unix_ns()) {
        let id = n.node.unwrap_or_default();
        let ranges: Vec<String> = n
            .sequences
            .iter()
            .map(|r| format!("{}-{}", r.first, r.last))
            .collect();
        let totals: Vec<String> = n
            .totals
            .iter()
            .map(|t| format!("{}:{}", t.name, t.count))
            .collect();
        let losses: Vec<String> = n
            .losses
            .iter()
            .map(|l| format!("{}/{}/{}:{}", l.stage, l.reason, l.probe, l.count))
            .collect();
        eprintln!(
            "sonde-collector: at exit: node={} boot={} sequences={} reports={} duplicates={} totals={} losses={}",
            id.node_name,
            id.boot_id,
            ranges.join(","),
            n.reports,
            n.duplicates,
            totals.join(","),
            losses.join(",")
        );
    }
    eprintln!("sonde-collector: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn flags_are_consistent() {
        super::Args::command().debug_assert();
    }
}
