//! Delivers remote-write requests to one or more stores: one bounded queue
//! and one task per store URL.
//!
//! - The queue is bounded in bytes (compressed requests, the one being sent
//!   included): when a new window does not fit, the oldest requests waiting
//!   are dropped (`outcome=queue_full`), never the one in flight.
//! - 2xx: stored. A 400 that says the store already has a sample at that
//!   timestamp (duplicate, out of order, out of bounds, too old: a resend
//!   of a window it holds) counts as stored (`already_stored`): it is not
//!   retried and does not hold back what follows.
//! - 429 and 5xx, and a failed connection: retried after `Retry-After` when
//!   the store says so, else after exponential backoff with jitter; each
//!   retry counted by reason.
//! - Any other 4xx: dropped with its reason (logged, `outcome=refused`).
//!
//! Every window dropped is counted by reason; the agent reports the counts
//! as loss records in its next window (`stage=remote_write`).
//!
//! Queueing a window returns its [`Delivery`], settled once every store has
//! stored it, already had it, refused it or dropped it from a full queue
//! (each counted): the collector acks a report only then, so a collector
//! that dies first leaves the window in the agent's outbox, to be sent again.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

pub use super::config::{Config, ConfigError};
use super::{config::Endpoint, encode, window_series, Encoded, CONTENT_ENCODING, CONTENT_TYPE};
use crate::{backoff::Backoff, names, prometheus, v1::AgentReport, v1::MetricKind};

/// Default bound of each store's queue.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default samples per request (Prometheus's own sender sends up to 2,000).
pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 2_000;
/// A request that takes longer is abandoned and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// First wait before a retry.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// The longest `Retry-After` honoured as given.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Bytes of an error answer kept for the log.
const ERROR_BODY_BYTES: usize = 4096;

/// Loss stage of windows a store never got.
pub const STAGE: &str = "remote_write";
/// A store refused the window's samples (a 4xx other than "already have it").
pub const REASON_REFUSED: &str = "refused_by_receiver";
/// The queue was full.
pub const REASON_QUEUE_FULL: &str = "queue_full";
/// The report could not be turned into samples.
pub const REASON_UNWRITABLE: &str = "unwritable";

/// Counters of one store (what `sonde.export.remote_write.*` shows).
#[derive(Debug, Default)]
pub struct Stats {
    /// Samples the store took.
    pub stored: AtomicU64,
    /// Samples the store already had (a resend): counted as stored.
    pub already_stored: AtomicU64,
    /// Samples the store refused (4xx).
    pub refused: AtomicU64,
    /// Samples dropped from a full queue.
    pub queue_full: AtomicU64,
    /// Retries after a 5xx.
    pub retries_server_error: AtomicU64,
    /// Retries after a 429.
    pub retries_throttled: AtomicU64,
    /// Retries after a failed connection or a timeout.
    pub retries_connection: AtomicU64,
    /// Compressed bytes sent, retries included.
    pub bytes_sent: AtomicU64,
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Time turning reports into series, ns (shared by the stores: each
    /// store's counter holds all of it).
    pub series_ns: AtomicU64,
    /// Time encoding protobuf, ns (shared likewise).
    pub encode_ns: AtomicU64,
    /// Time compressing, ns (shared likewise).
    pub compress_ns: AtomicU64,
    /// Time from sending a request to its answer (connection, HTTP, the
    /// store's own time), ns.
    pub request_ns: AtomicU64,
}

struct Item {
    id: u64,
    body: Bytes,
    samples: u64,
    /// The window's end: counting dropped windows once per window.
    window: u64,
    /// Settled by one when this request leaves the queue, whatever became
    /// of it.
    delivery: Delivery,
}

/// A window's requests on their way to every store: settled once each has
/// left its queue — stored, already stored, refused or dropped from a full
/// queue, every one counted. Clones share the count.
#[derive(Debug, Clone)]
pub struct Delivery(Arc<Settle>);

#[derive(Debug)]
struct Settle {
    /// Requests not yet settled, plus one while they are being queued.
    remaining: AtomicUsize,
    settled: Notify,
}

impl Delivery {
    /// Holds one count for the queueing itself (see [`Self::settle_one`]).
    fn queueing() -> Self {
        Self(Arc::new(Settle {
            remaining: AtomicUsize::new(1),
            settled: Notify::new(),
        }))
    }

    /// One more request to settle.
    fn add_one(&self) {
        self.0.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// One request settled (or the queueing done).
    fn settle_one(&self) {
        if self.0.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }

    /// Whether every store is done with the window.
    pub fn is_settled(&self) -> bool {
        self.0.remaining.load(Ordering::Acquire) == 0
    }

    /// Waits until every store is done with the window.
    pub async fn settled(&self) {
        loop {
            let notified = self.0.settled.notified();
            tokio::pin!(notified);
            // Registered before the check: a settle in between still wakes us.
            notified.as_mut().enable();
            if self.is_settled() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: u64,
    next_id: u64,
    in_flight: Option<u64>,
    /// Windows dropped since the agent last took the counts, by reason.
    pending: Dropped,
    /// Windows dropped since the start, by reason.
    total: Dropped,
    /// The last window counted as dropped (a window's several requests
    /// count once).
    last_dropped_window: Option<u64>,
}

impl Queue {
    fn count_dropped_window(&mut self, window: u64, reason: &str) {
        if self.last_dropped_window == Some(window) {
            return;
        }
        self.last_dropped_window = Some(window);
        for d in [&mut self.pending, &mut self.total] {
            match reason {
                REASON_REFUSED => d.refused += 1,
                REASON_QUEUE_FULL => d.queue_full += 1,
                _ => d.unwritable += 1,
            }
        }
    }
}

/// One store's queue, counters and sender task.
struct Target {
    endpoint: Endpoint,
    queue: Mutex<Queue>,
    max_bytes: u64,
    added: Notify,
    stats: Stats,
}

impl Target {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Poisoning ignored: the queue's invariants hold between calls.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a window's requests; each admitted one holds a count of
    /// `delivery` until it leaves the queue.
    fn push(&self, requests: &[Encoded], window: u64, delivery: &Delivery) {
        let mut q = self.queue();
        for r in requests {
            let size = r.body.len() as u64;
            if size > self.max_bytes {
                self.stats
                    .queue_full
                    .fetch_add(r.samples, Ordering::Relaxed);
                q.count_dropped_window(window, REASON_QUEUE_FULL);
                continue;
            }
            // Make room: oldest first, never the request being sent.
            while q.bytes + size > self.max_bytes {
                let at = match q.items.front() {
                    Some(front) if Some(front.id) == q.in_flight => 1,
                    _ => 0,
                };
                let Some(old) = q.items.remove(at) else {
                    break;
                };
                q.bytes -= old.body.len() as u64;
                self.stats
                    .queue_full
                    .fetch_add(old.samples, Ordering::Relaxed);
                q.count_dropped_window(old.window, REASON_QUEUE_FULL);
                old.delivery.settle_one();
            }
            if q.bytes + size > self.max_bytes {
                // Larger than what is left beside the request in flight.
                self.stats
                    .queue_full
                    .fetch_add(r.samples, Ordering::Relaxed);
                q.count_dropped_window(window, REASON_QUEUE_FULL);
                continue;
            }
            let id = q.next_id;
            q.next_id += 1;
            q.bytes += size;
            delivery.add_one();
            q.items.push_back(Item {
                id,
                body: r.body.clone(),
                samples: r.samples,
                window,
                delivery: delivery.clone(),
            });
        }
        drop(q);
        self.added.notify_one();
    }

    /// The oldest request, marked in flight.
    fn next(&self) -> Option<(u64, Bytes, u64, u64)> {
        let mut q = self.queue();
        let front = q
            .items
            .front()
            .map(|i| (i.id, i.body.clone(), i.samples, i.window))?;
        q.in_flight = Some(front.0);
        Some(front)
    }

    /// Removes the request in flight: the store is done with it.
    fn done(&self, id: u64) {
        let mut q = self.queue();
        q.in_flight = None;
        if q.items.front().is_some_and(|i| i.id == id) {
            if let Some(i) = q.items.pop_front() {
                q.bytes -= i.body.len() as u64;
                i.delivery.settle_one();
            }
        }
    }
}

/// A window's requests, ready to queue.
pub struct Prepared {
    requests: Result<Vec<Encoded>, super::WriteError>,
    window: u64,
    series_ns: u64,
}

/// Remote write to every configured store.
pub struct RemoteWrite {
    targets: Vec<Arc<Target>>,
    max_samples: usize,
}

/// What became of one request.
enum Answer {
    Stored,
    AlreadyStored,
    Refused(u16, String),
    Retry(RetryReason, Option<Duration>),
}

#[derive(Debug, Clone, Copy)]
enum RetryReason {
    ServerError,
    Throttled,
    Connection,
}

/// Whether a 400's text says the store holds a sample at that timestamp
/// already. Prometheus answers `out of order sample`, `duplicate sample for
/// timestamp`, `out of bounds`; Mimir and Cortex `out-of-order`, `too old`
/// or `duplicate sample`.
fn already_stored(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    [
        "out of order",
        "out-of-order",
        "duplicate sample",
        "out of bounds",
        "too old",
    ]
    .iter()
    .any(|s| body.contains(s))
}

/// The wait a store asks for: `Retry-After` in seconds or as an HTTP date
/// (RFC 9110), at most [`RETRY_AFTER_MAX`]; a date already past is no wait.
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    retry_after_value(
        headers.get(hyper::header::RETRY_AFTER)?.to_str().ok()?,
        std::time::SystemTime::now(),
    )
}

fn retry_after_value(text: &str, now: std::time::SystemTime) -> Option<Duration> {
    let text = text.trim();
    let wait = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

pub(super) async fn connect(e: &Endpoint) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port)).await?;
    tcp.set_nodelay(true)?;
    let handshake_error = |err: hyper::Error| std::io::Error::other(err);
    let sender = match &e.tls {
        Some((connector, name)) => {
            let stream = connector.connect(name.clone(), tcp).await?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(handshake_error)?;
            tokio::spawn(connection);
            sender
        }
        None => {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake_error)?;
            tokio::spawn(connection);
            sender
        }
    };
    Ok(sender)
}

fn request(e: &Endpoint, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
    let path = e.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = hyper::Request::post(path)
        .header(hyper::header::HOST, e.address.as_str())
        .header(hyper::header::CONTENT_ENCODING, CONTENT_ENCODING)
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(super::VERSION_HEADER.0, super::VERSION_HEADER.1)
        .header(
            hyper::header::USER_AGENT,
            concat!("sonde/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in &e.headers {
        builder = builder.header(name, value);
    }
    builder.body(Full::new(body))
}

async fn send(e: &Endpoint, conn: &mut Option<SendRequest<Full<Bytes>>>, body: Bytes) -> Answer {
    let attempt = async {
        let sender = match conn {
            Some(s) if s.is_ready() => s,
            _ => conn.insert(connect(e).await?),
        };
        sender.ready().await.map_err(std::io::Error::other)?;
        let req = request(e, body).map_err(std::io::Error::other)?;
        let response = sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = match Limited::new(response.into_body(), ERROR_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
            Err(_) => String::new(),
        };
        Ok::<_, std::io::Error>((status, wait, text))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(Ok((status, wait, text))) => {
            let code = status.as_u16();
            if status.is_success() {
                Answer::Stored
            } else if code == 400 && already_stored(&text) {
                Answer::AlreadyStored
            } else if code == 429 {
                Answer::Retry(RetryReason::Throttled, wait)
            } else if status.is_server_error() {
                Answer::Retry(RetryReason::ServerError, wait)
            } else {
                Answer::Refused(code, text)
            }
        }
        Ok(Err(err)) => {
            log::debug!("remote write to {}: {err}", e.url);
            *conn = None;
            Answer::Retry(RetryReason::Connection, None)
        }
        Err(_) => {
            log::debug!(
                "remote write to {}: no answer within {REQUEST_TIMEOUT:?}",
                e.url
            );
            *conn = None;
            Answer::Retry(RetryReason::Connection, None)
        }
    }
}

async fn run(target: Arc<Target>, backoff_max: Duration) {
    let mut conn = None;
    let mut backoff = Backoff::new(BACKOFF_BASE, backoff_max);
    loop {
        let Some((id, body, samples, window)) = target.next() else {
            target.added.notified().await;
            continue;
        };
        let stats = &target.stats;
        stats
            .bytes_sent
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let answer = send(&target.endpoint, &mut conn, body).await;
        stats.request_ns.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if !matches!(answer, Answer::Retry(RetryReason::Connection, _)) {
            stats.requests.fetch_add(1, Ordering::Relaxed);
        }
        match answer {
            Answer::Stored => {
                stats.stored.fetch_add(samples, Ordering::Relaxed);
                backoff.reset();
                target.done(id);
            }
            Answer::AlreadyStored => {
                stats.already_stored.fetch_add(samples, Ordering::Relaxed);
                backoff.reset();
                target.done(id);
            }
            Answer::Refused(code, text) => {
                log::warn!(
                    "remote write to {} refused {samples} samples with {code}: {text}; dropped",
                    target.endpoint.url
                );
                stats.refused.fetch_add(samples, Ordering::Relaxed);
                target.queue().count_dropped_window(window, REASON_REFUSED);
                backoff.reset();
                target.done(id);
            }
            Answer::Retry(reason, wait) => {
                let counter = match reason {
                    RetryReason::ServerError => &stats.retries_server_error,
                    RetryReason::Throttled => &stats.retries_throttled,
                    RetryReason::Connection => &stats.retries_connection,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // The store's own wait when it gives one; the backoff
                // goes on growing underneath either way.
                let delay = backoff.next_delay();
                let delay = wait.unwrap_or(delay);
                log::debug!(
                    "remote write to {}: {reason:?}, retrying in {delay:?}",
                    target.endpoint.url
                );
                {
                    let mut q = target.queue();
                    q.in_flight = None;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Windows dropped since the last call, by reason (for loss records).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Refused by a store (4xx).
    pub refused: u64,
    /// Dropped from a full queue.
    pub queue_full: u64,
    /// Not writable (no totals, too large).
    pub unwritable: u64,
}

impl RemoteWrite {
    /// Checks the settings and starts one sender per store URL (on the
    /// current tokio runtime). `None` without a URL.
    pub fn start(config: &Config) -> Result<Option<Self>, ConfigError> {
        if config.urls.is_empty() {
            return Ok(None);
        }
        let targets: Vec<Arc<Target>> = config
            .endpoints()?
            .into_iter()
            .map(|endpoint| {
                Arc::new(Target {
                    endpoint,
                    queue: Mutex::new(Queue::default()),
                    max_bytes: config.queue_max_bytes,
                    added: Notify::new(),
                    stats: Stats::default(),
                })
            })
            .collect();
        for t in &targets {
            tokio::spawn(run(t.clone(), config.backoff_max));
        }
        Ok(Some(Self {
            targets,
            max_samples: config.max_samples_per_request.max(1),
        }))
    }

    /// Queues a window report's samples for every store. A report that
    /// cannot be written is logged and counted as a dropped window.
    pub fn window(&self, report: &AgentReport) -> Delivery {
        self.queue(self.prepare(report))
    }

    /// A window report's requests, encoded (no lock held: the collector
    /// encodes before it applies the report, and queues after).
    pub fn prepare(&self, report: &AgentReport) -> Prepared {
        let started = std::time::Instant::now();
        let series = window_series(report);
        let series_ns = super::ns_since(started);
        Prepared {
            requests: series.and_then(|series| encode(series, self.max_samples)),
            window: report.window_end_unix_ns,
            series_ns,
        }
    }

    /// Queues prepared requests for every store; the delivery settles when
    /// every store is done with them (at once for a window that cannot be
    /// written, counted as dropped).
    pub fn queue(&self, prepared: Prepared) -> Delivery {
        let delivery = Delivery::queueing();
        match prepared.requests {
            Ok(requests) => {
                let encode_ns: u64 = requests.iter().map(|r| r.encode_ns).sum();
                let compress_ns: u64 = requests.iter().map(|r| r.compress_ns).sum();
                for t in &self.targets {
                    let s = &t.stats;
                    s.series_ns.fetch_add(prepared.series_ns, Ordering::Relaxed);
                    s.encode_ns.fetch_add(encode_ns, Ordering::Relaxed);
                    s.compress_ns.fetch_add(compress_ns, Ordering::Relaxed);
                    t.push(&requests, prepared.window, &delivery);
                }
            }
            Err(e) => {
                log::warn!("remote write: {e}");
                for t in &self.targets {
                    t.queue()
                        .count_dropped_window(prepared.window, REASON_UNWRITABLE);
                }
            }
        }
        delivery.settle_one();
        delivery
    }

    /// The windows dropped since the last call, summed over the stores.
    pub fn take_dropped(&self) -> Dropped {
        let mut out = Dropped::default();
        for t in &self.targets {
            let d = std::mem::take(&mut t.queue().pending);
            out.refused += d.refused;
            out.queue_full += d.queue_full;
            out.unwritable += d.unwritable;
        }
        out
    }

    /// Bytes waiting in the queues (the request being sent included).
    pub fn queued_bytes(&self) -> u64 {
        self.targets.iter().map(|t| t.queue().bytes).sum()
    }

    /// Waits until every queue is empty, at most `timeout`; returns the
    /// windows still waiting (summed over the stores), for the exit line.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting: usize = self
                .targets
                .iter()
                .map(|t| {
                    let q = t.queue();
                    let mut windows: Vec<u64> = q.items.iter().map(|i| i.window).collect();
                    windows.dedup();
                    windows.len()
                })
                .sum();
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The counters as Prometheus text (`sonde.export.remote_write.*`,
    /// labelled by store address).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        type Value = fn(&Target) -> f64;
        /// (name, unit, kind, help, label, [(label value, value of a store)])
        type Family<'a> = (
            &'a str,
            &'a str,
            MetricKind,
            &'a str,
            &'a str,
            Vec<(&'a str, Value)>,
        );
        fn load(a: &AtomicU64) -> f64 {
            a.load(Ordering::Relaxed) as f64
        }
        fn secs(a: &AtomicU64) -> f64 {
            a.load(Ordering::Relaxed) as f64 / 1e9
        }
        let families: [Family<'_>; 6] = [
            (
                names::REMOTE_WRITE_SAMPLES,
                names::UNIT_SAMPLES,
                MetricKind::Counter,
                "Samples written to stores, by outcome",
                "outcome",
                vec![
                    ("stored", |t| load(&t.stats.stored)),
                    ("already_stored", |t| load(&t.stats.already_stored)),
                    ("refused", |t| load(&t.stats.refused)),
                    ("queue_full", |t| load(&t.stats.queue_full)),
                ],
            ),
            (
                names::REMOTE_WRITE_RETRIES,
                names::UNIT_REQUESTS,
                MetricKind::Counter,
                "Requests retried, by reason",
                "reason",
                vec![
                    ("server_error", |t| load(&t.stats.retries_server_error)),
                    ("too_many_requests", |t| load(&t.stats.retries_throttled)),
                    ("connection", |t| load(&t.stats.retries_connection)),
                ],
            ),
            (
                names::REMOTE_WRITE_WINDOWS_DROPPED,
                names::UNIT_WINDOWS,
                MetricKind::Counter,
                "Windows some of whose samples a store never got, by reason",
                "reason",
                vec![
                    (REASON_REFUSED, |t| t.queue().total.refused as f64),
                    (REASON_QUEUE_FULL, |t| t.queue().total.queue_full as f64),
                    (REASON_UNWRITABLE, |t| t.queue().total.unwritable as f64),
                ],
            ),
            (
                names::REMOTE_WRITE_TIME,
                names::UNIT_SECONDS,
                MetricKind::Counter,
                "Time per stage: report to series, protobuf, snappy (shared by the stores), request to answer",
                "stage",
                vec![
                    ("series", |t| secs(&t.stats.series_ns)),
                    ("encode", |t| secs(&t.stats.encode_ns)),
                    ("compress", |t| secs(&t.stats.compress_ns)),
                    ("request", |t| secs(&t.stats.request_ns)),
                ],
            ),
            (
                names::REMOTE_WRITE_SENT,
                names::UNIT_BYTES,
                MetricKind::Counter,
                "Compressed request bytes sent, retries included",
                "",
                vec![("", |t| load(&t.stats.bytes_sent))],
            ),
            (
                names::REMOTE_WRITE_QUEUE,
                names::UNIT_BYTES,
                MetricKind::Gauge,
                "Bytes waiting in the queue, the request being sent included",
                "",
                vec![("", |t| t.queue().bytes as f64)],
            ),
        ];
        let address = prometheus::label_name(names::ATTR_SERVER_ADDRESS);
        let mut out = String::new();
        for (name, unit, kind, help, label, values) in families {
            let name = prometheus::metric_name(name, unit, kind);
            let type_name = if kind == MetricKind::Gauge {
                "gauge"
            } else {
                "counter"
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {type_name}");
            for t in &self.targets {
                for (value, of) in &values {
                    let extra = if label.is_empty() {
                        String::new()
                    } else {
                        format!(",{label}=\"{value}\"")
                    };
                    let _ = writeln!(
                        out,
                        "{name}{{{address}=\"{}\"{extra}}} {}",
                        t.endpoint.address,
                        of(t)
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_bounded() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 19:00:00 GMT").unwrap();
        assert_eq!(retry_after_value(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after_value("Wed, 02 Dec 2026 19:00:42 GMT", now),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            retry_after_value("Wed, 02 Dec 2026 18:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_value("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after_value("soon", now), None);
    }

    #[test]
    fn a_resend_the_store_holds_is_stored_not_retried() {
        assert!(already_stored("out of order sample"));
        assert!(already_stored("duplicate sample for timestamp"));
        assert!(!already_stored("invalid metric name"));
    }

    fn target(max_bytes: u64) -> Target {
        Target {
            endpoint: Config {
                urls: vec!["http://127.0.0.1:1/".into()],
                ..Default::default()
            }
            .endpoints()
            .unwrap()
            .remove(0),
            queue: Mutex::new(Queue::default()),
            max_bytes,
            added: Notify::new(),
            stats: Stats::default(),
        }
    }

    #[test]
    fn counters_are_prometheus_text_per_store() {
        let t = target(100);
        t.stats.stored.store(7, Ordering::Relaxed);
        let rw = RemoteWrite {
            targets: vec![Arc::new(t)],
            max_samples: 10,
        };
        let text = rw.prometheus();
        for line in [
            "# TYPE sonde_export_remote_write_samples_total counter",
            "sonde_export_remote_write_samples_total{server_address=\"127.0.0.1:1\",outcome=\"stored\"} 7",
            "sonde_export_remote_write_retries_total{server_address=\"127.0.0.1:1\",reason=\"connection\"} 0",
            "sonde_export_remote_write_windows_dropped_total{server_address=\"127.0.0.1:1\",reason=\"queue_full\"} 0",
            "sonde_export_remote_write_sent_bytes_total{server_address=\"127.0.0.1:1\"} 0",
            "# TYPE sonde_export_remote_write_queue_size_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_waiting_never_the_one_in_flight() {
        let t = target(25);
        let push = |n: usize, window: u64| {
            let req = Encoded {
                body: vec![0; n].into(),
                samples: n as u64,
                raw_bytes: n,
                encode_ns: 0,
                compress_ns: 0,
            };
            let delivery = Delivery::queueing();
            t.push(&[req], window, &delivery);
            delivery.settle_one();
            delivery
        };
        let d1 = push(10, 1);
        let (first, ..) = t.next().unwrap();
        let d2 = push(10, 2);
        assert!(!d1.is_settled() && !d2.is_settled());
        let d3 = push(10, 3);
        // Window 2 went to make room (settled: dropped and counted);
        // window 1 is in flight.
        let q = t.queue();
        assert_eq!(q.bytes, 20);
        assert_eq!(q.items.iter().map(|i| i.window).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(q.pending.queue_full, 1);
        drop(q);
        assert!(d2.is_settled() && !d1.is_settled() && !d3.is_settled());
        t.done(first);
        assert!(d1.is_settled() && !d3.is_settled());
        // Larger than the whole bound: dropped alone, settled at once.
        let d4 = push(30, 4);
        assert!(d4.is_settled());
        assert_eq!(t.stats.queue_full.load(Ordering::Relaxed), 40);
        assert_eq!(t.queue().bytes, 10);
        assert_eq!(t.queue().total.queue_full, 2);
    }

    #[tokio::test]
    async fn a_delivery_settles_when_every_store_is_done_with_every_request() {
        let (a, b) = (Arc::new(target(1000)), Arc::new(target(1000)));
        let delivery = Delivery::queueing();
        let req = |n: usize| Encoded {
            body: vec![0; n].into(),
            samples: 1,
            raw_bytes: n,
            encode_ns: 0,
            compress_ns: 0,
        };
        // Two requests for the window, to each of two stores.
        a.push(&[req(5), req(6)], 9, &delivery);
        b.push(&[req(5), req(6)], 9, &delivery);
        delivery.settle_one();
        let waiting = {
            let d = delivery.clone();
            tokio::spawn(async move { d.settled().await })
        };
        for t in [&a, &b, &a] {
            let (id, ..) = t.next().unwrap();
            t.done(id);
            tokio::task::yield_now().await;
            assert!(!delivery.is_settled() && !waiting.is_finished());
        }
        let (id, ..) = b.next().unwrap();
        t_done_and_wait(&b, id, waiting).await;
        assert!(delivery.is_settled());

        async fn t_done_and_wait(t: &Target, id: u64, waiting: tokio::task::JoinHandle<()>) {
            t.done(id);
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("settled")
                .expect("task");
        }
    }
}
