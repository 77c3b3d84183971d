//! Sinks: where windows go besides stdout. Exporters see only the model
//! (through [`wire`], the one place where model types become wire types)
//! and the wire types after that.
//!
//! - [`grpc`]: the `sonde.v1` stream to a collector, fed from the
//!   [`outbox`] (at-least-once, bounded in bytes, optionally on disk);
//! - [`otlp`]: OTLP/gRPC metrics, cumulative, pushed after every window;
//! - [`prometheus`]: a `/metrics` endpoint;
//! - Prometheus remote write (`sonde_proto::remote_write`): every window's
//!   samples to one or more stores, from the report alone; with an outbox
//!   directory each report is kept on disk until every store is done with
//!   it, and sent again after a restart.

pub mod grpc;
pub mod identity;
pub mod otlp;
pub mod outbox;
pub mod prometheus;
pub mod wire;

use std::sync::{Mutex, MutexGuard};

use sonde_proto::{
    remote_write::sender::{self as remote_write, RemoteWrite},
    series::Series,
    v1::AgentReport,
};

/// The agent's cumulative series since it started, for the pull and push
/// exporters (OTLP and Prometheus want cumulative values).
pub struct Cumulative {
    /// Unix ns of the first window's start: every series counts from there.
    pub start_unix_ns: u64,
    /// Unix ns of the latest window's end: the time of the cumulative values.
    latest_end_unix_ns: std::sync::atomic::AtomicU64,
    series: Mutex<Series>,
    /// Resource attributes (host, kernel, ...).
    pub resource: Vec<(&'static str, String)>,
}

impl Cumulative {
    /// Counting from `start_unix_ns`.
    pub fn new(start_unix_ns: u64, resource: Vec<(&'static str, String)>) -> Self {
        Self {
            start_unix_ns,
            latest_end_unix_ns: std::sync::atomic::AtomicU64::new(start_unix_ns),
            series: Mutex::new(Series::new()),
            resource,
        }
    }

    /// Adds a window, and writes into the report each series' cumulative
    /// value after it (so that the report alone gives a store its samples).
    pub fn add(&self, report: &mut AgentReport) {
        self.series().add_report(report, self.start_unix_ns);
        self.latest_end_unix_ns.store(
            report.window_end_unix_ns,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// End of the latest window added: the values hold as of then.
    pub fn as_of_unix_ns(&self) -> u64 {
        self.latest_end_unix_ns
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The series, locked (poisoning is ignored: the worst a panic can leave
    /// is a half-added window, which the next scrape shows).
    pub fn series(&self) -> MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use prost::Message as _;
use sonde_proto::v1::NodeIdentity;
use tokio::sync::Notify;

use crate::model::{LossRecord, Snapshot};

/// Which sinks to run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct SinkConfig {
    /// Stream reports to these collectors (replicas of one fleet: each
    /// agent picks one and fails over to the others).
    pub collectors: Vec<grpc::CollectorConfig>,
    /// Keep the outbox in this directory (survives restarts); with remote
    /// write, the reports for the stores too (in `remote-write/` under it).
    pub outbox_dir: Option<PathBuf>,
    /// Bound of the outbox in bytes.
    pub outbox_max_bytes: u64,
    /// Push OTLP metrics to this URL.
    pub otlp_endpoint: Option<String>,
    /// Serve Prometheus text on this address.
    pub prometheus_listen: Option<SocketAddr>,
    /// Node name instead of the host name.
    pub node_name: Option<String>,
    /// Series per metric in a report; the rest fold into an overflow series.
    pub max_series_per_metric: usize,
    /// Prometheus remote write (off without a URL).
    pub remote_write: remote_write::Config,
}

/// Why a sink could not start or take a window.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The collector settings are wrong.
    #[error(transparent)]
    Collector(#[from] grpc::ConfigError),
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    /// The OTLP URL is wrong.
    #[error("'{url}' is not an OTLP endpoint URL; write it like http://127.0.0.1:4317")]
    OtlpUrl {
        /// What was given.
        url: String,
    },
    /// The remote-write settings are wrong.
    #[error(transparent)]
    RemoteWrite(#[from] remote_write::ConfigError),
    /// The Prometheus address cannot be bound.
    #[error("cannot listen on {addr} for Prometheus: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The running sinks.
pub struct Sinks {
    node: NodeIdentity,
    shared: Option<Arc<grpc::Shared>>,
    cumulative: Option<Arc<Cumulative>>,
    otlp_tick: Option<Arc<Notify>>,
    remote_write: Option<Arc<RemoteWrite>>,
    /// With an outbox directory: the reports written to the stores, kept on
    /// disk until every store is done with them, and sent again after a
    /// restart.
    remote_write_outbox: Option<Arc<Mutex<outbox::Outbox>>>,
    next_sequence: u64,
    max_series: usize,
    /// Where Prometheus is served, once bound.
    pub prometheus_addr: Option<SocketAddr>,
}

/// Unix time now in nanoseconds.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Sinks {
    /// Starts the configured sinks; series count from `start_unix_ns`.
    pub async fn start(config: &SinkConfig, start_unix_ns: u64) -> Result<Self, SinkError> {
        let node = identity::current(config.node_name.as_deref());
        // Without a persisted sequence, number from the clock in µs: a
        // restarted agent never reuses a number (a window lasts ≥ 1 ms).
        let first_sequence = start_unix_ns / 1_000;
        let shared = match config.collectors.first() {
            Some(c) => {
                for c in &config.collectors {
                    c.endpoint()?;
                }
                let outbox = match &config.outbox_dir {
                    Some(dir) => {
                        outbox::Outbox::open(dir, config.outbox_max_bytes, first_sequence)?
                    }
                    None => outbox::Outbox::in_memory(config.outbox_max_bytes, first_sequence),
                };
                let shared = Arc::new(grpc::Shared::new(outbox));
                tokio::spawn(grpc::run(
                    config.collectors.clone(),
                    node.node_name.clone(),
                    shared.clone(),
                    c.backoff_max,
                ));
                Some(shared)
            }
            None => None,
        };
        let remote_write = RemoteWrite::start(&config.remote_write)?.map(Arc::new);
        let remote_write_outbox = match (&remote_write, &config.outbox_dir) {
            (Some(rw), Some(dir)) => {
                let kept = outbox::Outbox::open_remote_write(
                    &remote_write_dir(dir),
                    config.outbox_max_bytes,
                    first_sequence,
                )?;
                let kept = Arc::new(Mutex::new(kept));
                resend_kept(rw, &kept);
                Some(kept)
            }
            _ => None,
        };
        // Reports carry the cumulative values (for whoever writes them to a
        // store), so a collector or a store needs them too.
        let needs_cumulative = config.otlp_endpoint.is_some()
            || config.prometheus_listen.is_some()
            || shared.is_some()
            || remote_write.is_some();
        let cumulative = needs_cumulative
            .then(|| Arc::new(Cumulative::new(start_unix_ns, identity::resource(&node))));
        let mut otlp_tick = None;
        if let (Some(url), Some(c)) = (&config.otlp_endpoint, &cumulative) {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|_| SinkError::OtlpUrl { url: url.clone() })?;
            let tick = Arc::new(Notify::new());
            tokio::spawn(otlp::run(endpoint, c.clone(), tick.clone()));
            otlp_tick = Some(tick);
        }
        let mut prometheus_addr = None;
        if let (Some(addr), Some(c)) = (config.prometheus_listen, &cumulative) {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| SinkError::Listen { addr, source })?;
            prometheus_addr = listener.local_addr().ok();
            let c = c.clone();
            let rw = remote_write.clone();
            let collectors = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = prometheus::serve(listener, c, rw, collectors).await {
                    log::error!("Prometheus endpoint: {e}");
                }
            });
        }
        Ok(Self {
            node,
            shared,
            cumulative,
            otlp_tick,
            remote_write,
            remote_write_outbox,
            next_sequence: first_sequence,
            max_series: config.max_series_per_metric,
            prometheus_addr,
        })
    }

    /// Whether a collector is configured (it may ask for explanations).
    pub fn has_collector(&self) -> bool {
        self.shared.is_some()
    }

    /// Lets the collector's explain requests be answered by `explainer`.
    pub fn answer_explain_requests(&self, explainer: grpc::Explainer) {
        if let Some(shared) = &self.shared {
            let _ = shared.explainer.set(explainer);
        }
    }

    /// Hands a closed window to every sink; returns its sequence number.
    /// With a collector, the report is in the outbox (on disk, when so
    /// configured) before this returns. `own_losses` are losses of the
    /// agent's own outside the probes (e.g. the local socket's), reported
    /// with this window.
    pub fn window(
        &mut self,
        snapshot: &Snapshot,
        own_losses: &[LossRecord],
    ) -> Result<u64, SinkError> {
        let (sequence, mut extra) = match &self.shared {
            Some(shared) => {
                let mut outbox = shared.outbox();
                let sequence = outbox.next_sequence()?;
                let dropped = outbox.take_dropped();
                let refused = outbox.take_refused();
                (
                    sequence,
                    vec![
                        LossRecord {
                            stage: outbox::STAGE,
                            probe: "all",
                            reason: outbox::REASON_FULL,
                            count: dropped,
                        },
                        LossRecord {
                            stage: outbox::STAGE,
                            probe: "all",
                            reason: outbox::REASON_REFUSED,
                            count: refused,
                        },
                    ],
                )
            }
            None => match &self.remote_write_outbox {
                // Numbered by the disk, so that a restart goes on from there.
                Some(kept) => (lock(kept).next_sequence()?, Vec::new()),
                None => {
                    let sequence = self.next_sequence;
                    self.next_sequence += 1;
                    (sequence, Vec::new())
                }
            },
        };
        if let Some(kept) = &self.remote_write_outbox {
            extra.push(LossRecord {
                stage: remote_write::STAGE,
                probe: "all",
                reason: outbox::REASON_FULL,
                count: lock(kept).take_dropped(),
            });
        }
        if let Some(rw) = &self.remote_write {
            // Windows a store never got, like the outbox's drops: counted
            // in band, zero counts included.
            let dropped = rw.take_dropped();
            for (reason, count) in [
                (remote_write::REASON_REFUSED, dropped.refused),
                (remote_write::REASON_QUEUE_FULL, dropped.queue_full),
                (remote_write::REASON_UNWRITABLE, dropped.unwritable),
            ] {
                extra.push(LossRecord {
                    stage: remote_write::STAGE,
                    probe: "all",
                    reason,
                    count,
                });
            }
        }
        extra.extend_from_slice(own_losses);
        let mut report = wire::report(snapshot, &self.node, sequence, &extra, self.max_series);
        report.answers_explain = self
            .shared
            .as_ref()
            .is_some_and(|s| s.explainer.get().is_some());
        if let Some(c) = &self.cumulative {
            c.add(&mut report);
        }
        if let Some(rw) = &self.remote_write {
            match &self.remote_write_outbox {
                Some(kept) => {
                    lock(kept).push(sequence, report.encode_to_vec())?;
                    ack_when_settled(kept, sequence, rw.window(&report));
                }
                None => {
                    rw.window(&report);
                }
            }
        }
        if let Some(shared) = &self.shared {
            shared.outbox().push(sequence, report.encode_to_vec())?;
            shared.added.notify_one();
        }
        if let Some(tick) = &self.otlp_tick {
            tick.notify_one();
        }
        Ok(sequence)
    }

    /// Waits until the remote-write stores have every window, at most
    /// `timeout`; returns the windows still waiting (0 without remote write).
    pub async fn drain_remote_write(&self, timeout: Duration) -> usize {
        match &self.remote_write {
            Some(rw) => rw.drain(timeout).await,
            None => 0,
        }
    }

    /// Reports kept on disk for the remote-write stores, not yet settled:
    /// the next start sends them again.
    pub fn remote_write_kept(&self) -> usize {
        self.remote_write_outbox
            .as_ref()
            .map_or(0, |kept| lock(kept).len())
    }

    /// Waits until the collector has acked everything, at most `timeout`;
    /// returns the reports still waiting.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let Some(shared) = &self.shared else {
            return 0;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting = shared.outbox().len();
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Where an outbox directory keeps the reports for the remote-write stores.
pub fn remote_write_dir(outbox_dir: &Path) -> PathBuf {
    outbox_dir.join("remote-write")
}

/// The outbox, locked. Its invariants hold between calls, so a panic while
/// it was held cannot leave it worse than a lost report: poisoning is
/// ignored.
fn lock(outbox: &Mutex<outbox::Outbox>) -> MutexGuard<'_, outbox::Outbox> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets report `sequence` once every store is done with it.
fn ack_when_settled(
    kept: &Arc<Mutex<outbox::Outbox>>,
    sequence: u64,
    delivery: remote_write::Delivery,
) {
    let kept = kept.clone();
    tokio::spawn(async move {
        delivery.settled().await;
        if let Err(e) = lock(&kept).ack(sequence) {
            log::error!("remote-write outbox: {e}");
        }
    });
}

/// Sends the reports an earlier run kept for the stores again, oldest
/// first, before any new window.
fn resend_kept(rw: &RemoteWrite, kept: &Arc<Mutex<outbox::Outbox>>) {
    let mut cursor = None;
    let mut resent = 0usize;
    loop {
        let next = {
            let outbox = lock(kept);
            outbox
                .after(cursor)
                .map(|(sequence, bytes)| (sequence, AgentReport::decode(bytes)))
        };
        let Some((sequence, report)) = next else {
            break;
        };
        cursor = Some(sequence);
        match report {
            Ok(report) => {
                ack_when_settled(kept, sequence, rw.window(&report));
                resent += 1;
            }
            Err(e) => {
                // Written whole and synced by this agent: cannot happen
                // short of a damaged disk. Said, and forgotten.
                log::error!("remote-write outbox: report {sequence} unreadable ({e}); dropped");
                if let Err(e) = lock(kept).ack(sequence) {
                    log::error!("remote-write outbox: {e}");
                }
            }
        }
    }
    if resent > 0 {
        log::info!("remote write: {resent} windows kept by the last run sent again");
    }
}
