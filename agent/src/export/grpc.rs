//! The `sonde.v1` stream to a collector: connection settings (TLS, mTLS,
//! the `--insecure` rule) and the sender, which streams the outbox, forgets
//! what the collector acked, and after a failure reconnects with
//! exponential backoff and jitter and resends everything not acked.
//!
//! Several collectors can serve one fleet (replicas): every `--collector`
//! URL, and every address its host resolves to (a Kubernetes headless
//! Service), is a replica. Each agent ranks them by rendezvous hashing of
//! its node name, so the fleet spreads over the replicas and each agent
//! stays on its first choice while that one answers; it fails over down
//! the ranking when its replica stops answering, resending what was not
//! acked, and comes back to its first choice once that answers again. A
//! replica that stops answering is one whose connection fails, whose stream
//! ends, or that does not answer HTTP/2 pings within [`LIVENESS`] (a
//! stopped process). Acks are not the liveness signal: a collector acks a
//! report once its remote-write stores have it, and a slow store must not
//! move the fleet.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use prost::Message as _;
use sonde_proto::v1::{ingest_client::IngestClient, AgentReport, ExplainAnswer, ExplainRequest};
use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::outbox::{Outbox, OutboxError};

/// Reports sent and not yet acked, at most.
const MAX_IN_FLIGHT: usize = 32;

/// A replica that does not answer HTTP/2 pings for this long (an interval
/// and as long again for the answer) counts as down.
pub const LIVENESS: Duration = Duration::from_secs(10);

/// A connection (TCP, TLS, and the stream's opening) must succeed within
/// this bound, or the replica counts as down.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// How often an agent away from its first-choice replica checks whether
/// that one answers again.
const RECHECK: Duration = Duration::from_secs(5);

/// How often a streaming agent resolves its collectors' names again, by
/// default (`--collector-resolve-interval`): a replica added (or moved)
/// that now ranks first for this node takes over once it answers.
pub const RERESOLVE: Duration = Duration::from_secs(60);

/// How to reach a collector.
#[derive(Debug, Clone, Default)]
pub struct CollectorConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// CA that signed the collector's certificate (PEM); needed for https.
    pub tls_ca: Option<PathBuf>,
    /// This agent's certificate (PEM), for mTLS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Allow plaintext to an address that is not loopback.
    pub insecure: bool,
    /// Upper bound of the reconnect backoff.
    pub backoff_max: Duration,
    /// How often to resolve the URL's host again while streaming (zero:
    /// [`RERESOLVE`]).
    pub resolve_interval: Duration,
}

/// Why a collector cannot be reached as configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a URL.
    #[error("'{url}' is not a collector URL; write it like https://collector:7411")]
    Url {
        /// What was given.
        url: String,
    },
    /// Plaintext beyond loopback without `--insecure`.
    #[error("refusing plaintext to {host}, which is not a loopback address: use https:// with --tls-ca (and --tls-cert/--tls-key for mTLS), or pass --insecure")]
    Plaintext {
        /// The host.
        host: String,
    },
    /// https without a CA.
    #[error("https:// needs --tls-ca, the CA that signed the collector's certificate")]
    NoCa,
    /// TLS files given with http://.
    #[error("--tls-ca, --tls-cert and --tls-key need an https:// collector URL")]
    TlsWithoutHttps,
    /// Only one of cert and key.
    #[error("--tls-cert and --tls-key go together")]
    HalfIdentity,
    /// A TLS file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the TLS settings.
    #[error("TLS settings: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The collector's host name does not resolve.
    #[error("the collector host '{host}' does not resolve ({source}); check the --collector URL and the node's DNS")]
    Unresolved {
        /// The host.
        host: String,
        /// The resolver's answer.
        #[source]
        source: std::io::Error,
    },
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        path: path.clone(),
        source,
    })
}

impl CollectorConfig {
    /// Checks that the URL's host resolves, so that a typo stops the agent
    /// before it loads anything rather than leaving it retrying forever.
    pub async fn resolve(&self) -> Result<(), ConfigError> {
        self.replicas().await.map(|_| ())
    }

    /// The endpoint, with TLS when the URL is https. Plaintext is allowed to
    /// loopback addresses, and elsewhere only with `insecure`.
    pub fn endpoint(&self) -> Result<Endpoint, ConfigError> {
        self.endpoint_at(None)
    }

    /// [`Self::endpoint`], connecting to `address` instead of the URL's host
    /// (one of the addresses it resolves to); TLS still checks the host's
    /// name, and the loopback rule still reads the URL.
    fn endpoint_at(&self, address: Option<SocketAddr>) -> Result<Endpoint, ConfigError> {
        let url_error = || ConfigError::Url {
            url: self.url.clone(),
        };
        let endpoint = Endpoint::from_shared(self.url.clone()).map_err(|_| url_error())?;
        let uri = endpoint.uri().clone();
        let host = uri.host().ok_or_else(url_error)?.to_owned();
        let endpoint = match (address, uri.scheme_str()) {
            (Some(address), Some(scheme)) => {
                Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|_| url_error())?
            }
            _ => endpoint,
        };
        let half = LIVENESS / 2;
        let endpoint = endpoint
            .connect_timeout(CONNECT_BOUND)
            .http2_keep_alive_interval(half)
            .keep_alive_timeout(half)
            .keep_alive_while_idle(true);
        match uri.scheme_str() {
            Some("https") => {
                let ca = self.tls_ca.as_ref().ok_or(ConfigError::NoCa)?;
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca)?))
                    .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
                match (&self.tls_cert, &self.tls_key) {
                    (Some(cert), Some(key)) => {
                        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                    }
                    (None, None) => {}
                    _ => return Err(ConfigError::HalfIdentity),
                }
                endpoint.tls_config(tls).map_err(ConfigError::Tls)
            }
            Some("http") => {
                if self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() {
                    return Err(ConfigError::TlsWithoutHttps);
                }
                if !self.insecure && !is_loopback(&host) {
                    return Err(ConfigError::Plaintext { host });
                }
                Ok(endpoint)
            }
            _ => Err(url_error()),
        }
    }
}

impl CollectorConfig {
    /// The URL's host and port (443 or 80 when the URL has none).
    fn host_port(&self) -> Result<(String, u16), ConfigError> {
        let url_error = || ConfigError::Url {
            url: self.url.clone(),
        };
        let endpoint = Endpoint::from_shared(self.url.clone()).map_err(|_| url_error())?;
        let uri = endpoint.uri();
        let host = uri
            .host()
            .ok_or_else(url_error)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        Ok((host, port))
    }

    /// One replica per address the URL's host resolves to now, in the
    /// resolver's order, without repeats.
    pub async fn replicas(&self) -> Result<Vec<Replica>, ConfigError> {
        let (host, port) = self.host_port()?;
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| ConfigError::Unresolved {
                host: host.clone(),
                source,
            })?
            .collect();
        let mut out: Vec<Replica> = Vec::new();
        for address in addresses {
            if out.iter().any(|r| r.address == address) {
                continue;
            }
            out.push(Replica {
                url: self.url.clone(),
                address,
                endpoint: self.endpoint_at(Some(address))?,
            });
        }
        if out.is_empty() {
            return Err(ConfigError::Unresolved {
                host,
                source: std::io::Error::other("no address"),
            });
        }
        Ok(out)
    }
}

/// One collector replica: an address of a `--collector` URL.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The URL it came from.
    pub url: String,
    /// The address it connects to.
    pub address: SocketAddr,
    endpoint: Endpoint,
}

impl Replica {
    /// How it is named in logs and metrics: the URL, and the address when
    /// the URL names a host.
    pub fn name(&self) -> String {
        let address = self.address.to_string();
        if self.url.contains(&address) {
            self.url.clone()
        } else {
            format!("{} ({address})", self.url)
        }
    }

    /// A client of this replica's Query API, connected within the connect
    /// bound.
    pub async fn query(
        &self,
    ) -> Result<sonde_proto::v1::query_client::QueryClient<Channel>, String> {
        match tokio::time::timeout(CONNECT_BOUND, self.endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(sonde_proto::v1::query_client::QueryClient::new(channel)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {CONNECT_BOUND:?}")),
        }
    }
}

/// 64-bit FNV-1a, then a finaliser that spreads the bits: stable across
/// builds and platforms (std's hasher is not promised to be), so every
/// agent of every version ranks the replicas the same way.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Ranks replicas for `node` by rendezvous hashing: each replica's score is
/// a hash of (node, address), highest first. Adding or removing a replica
/// moves only the agents that ranked it first.
pub fn rank(node: &str, replicas: &mut [Replica]) {
    replicas.sort_by_cached_key(|r| {
        let address = r.address.to_string();
        (
            std::cmp::Reverse(stable_hash(&[node.as_bytes(), address.as_bytes()])),
            address,
        )
    });
}

/// Every replica of every URL, ranked for `node`. A URL that does not
/// resolve now is left out (said in the log) as long as another does.
async fn resolve_all(collectors: &[CollectorConfig], node: &str) -> Vec<Replica> {
    let mut out: Vec<Replica> = Vec::new();
    for c in collectors {
        match c.replicas().await {
            Ok(replicas) => {
                for r in replicas {
                    if !out.iter().any(|o| o.address == r.address) {
                        out.push(r);
                    }
                }
            }
            Err(e) => log::warn!("collector {}: {e}", c.url),
        }
    }
    rank(node, &mut out);
    out
}

/// Fail-over counters (the agent's `/metrics`).
#[derive(Debug, Default)]
pub struct FailoverStats {
    /// Moves to another replica after the one in use stopped answering.
    pub failovers: AtomicU64,
    /// Time from losing a replica to the next one's first ack (or to its
    /// stream opening, when nothing waited to be resent), ns, summed.
    pub failover_ns: AtomicU64,
    /// The longest such time, ns.
    pub failover_max_ns: AtomicU64,
    /// Moves back to the first-choice replica once it answered again.
    pub returns: AtomicU64,
    /// The replica streaming now (its name), if any.
    pub current: Mutex<Option<String>>,
}

/// Answers an explain request of the collector from the agent's recent
/// windows (the pipeline sets it; the sender fills in the node).
pub type Explainer = Arc<dyn Fn(&ExplainRequest) -> ExplainAnswer + Send + Sync>;

/// What the window loop and the sender share.
pub struct Shared {
    outbox: Mutex<Outbox>,
    /// Signalled when a report is added.
    pub added: Notify,
    /// Replica fail-overs.
    pub failover: FailoverStats,
    /// Answers the collector's explain requests, once set.
    pub explainer: std::sync::OnceLock<Explainer>,
    /// An explain request is being answered: one at a time, the others
    /// are answered "busy" (the work shares the window loop's thread).
    explaining: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Around an outbox.
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox: Mutex::new(outbox),
            added: Notify::new(),
            failover: FailoverStats::default(),
            explainer: std::sync::OnceLock::new(),
            explaining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The outbox, locked (poisoning ignored: the outbox's invariants hold
    /// between its method calls).
    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared with the remote-write sender (the collector has one too).
pub use sonde_proto::backoff::Backoff;

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("the stream ended: {} ({:?})", .0.message(), .0.code())]
    Status(tonic::Status),
    #[error("the collector closed the stream")]
    Closed,
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("a report in the outbox does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("no stream within {CONNECT_BOUND:?}")]
    Timeout,
}

/// How a stream that did not fail ended.
enum End {
    /// The first-choice replica answers again: go back to it.
    Preferred,
    /// The names resolve to a ranking whose first is another replica, and
    /// it answers: move to it.
    Reranked(Vec<Replica>),
}

/// What the sender knows of the last replica it lost, until another acks.
struct Lost {
    at: Instant,
    name: String,
    address: SocketAddr,
}

/// A refusal that resending the same report cannot change: malformed or too
/// large. (A protocol version the collector does not speak is not one: the
/// reports wait for a collector that does.)
fn refused_for_good(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
    )
}

/// Streams the outbox to the collector replicas forever: to the first in
/// this node's ranking that answers, failing over down the ranking and
/// coming back to the first when it answers again. The ranking is resolved
/// again before each round, as a headless Service's addresses change with
/// its pods.
pub async fn run(
    collectors: Vec<CollectorConfig>,
    node: String,
    shared: Arc<Shared>,
    backoff_max: Duration,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), backoff_max);
    let mut replicas: Vec<Replica> = Vec::new();
    let mut lost: Option<Lost> = None;
    loop {
        let resolved = resolve_all(&collectors, &node).await;
        if !resolved.is_empty() {
            replicas = resolved;
        }
        let mut rank_index = 0;
        while let Some(replica) = replicas.get(rank_index) {
            let first_choice = replicas.first().filter(|_| rank_index > 0);
            let result = stream(
                replica,
                first_choice,
                (&collectors, &node),
                &shared,
                &mut backoff,
                &mut lost,
            )
            .await;
            if let Ok(mut current) = shared.failover.current.lock() {
                *current = None;
            }
            match result {
                Ok(End::Reranked(ranking)) => {
                    shared.failover.returns.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "collector {} ranks first now (the replicas changed): moving from {}",
                        ranking.first().map(Replica::name).unwrap_or_default(),
                        replica.name()
                    );
                    replicas = ranking;
                    rank_index = 0;
                    continue;
                }
                Ok(End::Preferred) => {
                    shared.failover.returns.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "collector {} answers again: back from {}",
                        replicas.first().map(Replica::name).unwrap_or_default(),
                        replica.name()
                    );
                    rank_index = 0;
                    continue;
                }
                Err(StreamError::Status(status)) if refused_for_good(&status) => {
                    // Reports are applied in order: the refused one is the
                    // oldest not acked. Resending it would block every later
                    // one.
                    match shared.outbox().drop_refused() {
                        Ok(seq) => log::error!(
                            "collector {} refused report {seq:?} for good, dropped and counted: {}",
                            replica.name(),
                            status.message()
                        ),
                        Err(e) => log::error!("outbox: {e}"),
                    }
                    continue;
                }
                Err(e) => {
                    log::warn!("collector {}: {e}", replica.name());
                    if lost.is_none() {
                        lost = Some(Lost {
                            at: Instant::now(),
                            name: replica.name(),
                            address: replica.address,
                        });
                    }
                }
            }
            rank_index += 1;
        }
        // No replica answered this round.
        let wait = backoff.next_delay();
        log::info!(
            "no collector answered ({} tried); trying again in {wait:?}",
            replicas.len()
        );
        tokio::time::sleep(wait).await;
    }
}

/// A move away from the replica `lost` names is done: counted, timed and
/// logged (not when the stream is to that same replica again).
fn complete_failover(lost: &mut Option<Lost>, replica: &Replica, shared: &Shared) {
    let Some(l) = lost.take() else {
        return;
    };
    if l.address == replica.address {
        return;
    }
    let took = l.at.elapsed();
    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    let stats = &shared.failover;
    stats.failovers.fetch_add(1, Ordering::Relaxed);
    stats.failover_ns.fetch_add(ns, Ordering::Relaxed);
    stats.failover_max_ns.fetch_max(ns, Ordering::Relaxed);
    log::warn!(
        "failed over from collector {} to {} in {:.3} s",
        l.name,
        replica.name(),
        took.as_secs_f64()
    );
}

/// Whether `replica` answers its Query API's health check within the
/// connect bound (a stopped process accepts TCP, and answers nothing).
async fn answers(replica: &Replica) -> bool {
    let check = async {
        replica
            .query()
            .await
            .ok()?
            .health(sonde_proto::v1::HealthRequest {})
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(CONNECT_BOUND, check).await,
        Ok(Some(_))
    )
}

/// One stream to `replica`, until it fails, or (with `first_choice`, the
/// replica ranked first, when this one is not it) until the first choice
/// answers again, or until the collectors' names, resolved again, rank
/// another replica first and it answers.
async fn stream(
    replica: &Replica,
    first_choice: Option<&Replica>,
    (collectors, node): (&[CollectorConfig], &str),
    shared: &Arc<Shared>,
    backoff: &mut Backoff,
    lost: &mut Option<Lost>,
) -> Result<End, StreamError> {
    let open = async {
        let channel: Channel = replica
            .endpoint
            .connect()
            .await
            .map_err(StreamError::Connect)?;
        let mut client = IngestClient::new(channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<AgentReport>(MAX_IN_FLIGHT);
        let acks = client
            .report(ReceiverStream::new(rx))
            .await
            .map_err(StreamError::Status)?
            .into_inner();
        Ok::<_, StreamError>((tx, acks, channel))
    };
    let (tx, mut acks, channel) = tokio::time::timeout(CONNECT_BOUND, open)
        .await
        .map_err(|_| StreamError::Timeout)??;
    log::info!("streaming to {}", replica.name());
    if let Ok(mut current) = shared.failover.current.lock() {
        *current = Some(replica.name());
    }
    backoff.reset();
    // With nothing to resend, the move is done once the stream is open;
    // else once the new replica acks the first of what it was sent.
    if shared.outbox().is_empty() {
        complete_failover(lost, replica, shared);
    }
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    let every = collectors
        .iter()
        .map(|c| c.resolve_interval)
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(RERESOLVE);
    let mut reresolve = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut cursor = None;
    let mut in_flight = 0usize;
    loop {
        while in_flight < MAX_IN_FLIGHT {
            let next = {
                let outbox = shared.outbox();
                outbox
                    .after(cursor)
                    .map(|(seq, bytes)| (seq, AgentReport::decode(bytes)))
            };
            let Some((seq, report)) = next else {
                break;
            };
            if tx.send(report?).await.is_err() {
                return Err(StreamError::Closed);
            }
            cursor = Some(seq);
            in_flight += 1;
        }
        tokio::select! {
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    if let Some(request) = ack.explain {
                        answer(shared, &channel, request, node);
                        if ack.sequence == 0 {
                            continue;
                        }
                    }
                    shared.outbox().ack(ack.sequence)?;
                    in_flight = in_flight.saturating_sub(1);
                    complete_failover(lost, replica, shared);
                }
                Ok(None) => return Err(StreamError::Closed),
                Err(status) => return Err(StreamError::Status(status)),
            },
            () = shared.added.notified() => {}
            _ = reresolve.tick() => {
                let ranking = resolve_all(collectors, node).await;
                let moved = ranking.first().is_some_and(|top| {
                    top.address != replica.address
                        && first_choice.is_none_or(|f| f.address != top.address)
                });
                if moved {
                    if let Some(top) = ranking.first() {
                        if answers(top).await {
                            return Ok(End::Reranked(ranking));
                        }
                    }
                }
            }
            _ = recheck.tick(), if first_choice.is_some() => {
                if let Some(first) = first_choice {
                    if answers(first).await {
                        return Ok(End::Preferred);
                    }
                }
            }
        }
    }
}

/// Answers the collector's explain request on its own task, through
/// `Ingest.Explained` on the stream's channel: the stream goes on meanwhile.
fn answer(shared: &Arc<Shared>, channel: &Channel, request: ExplainRequest, node: &str) {
    let (shared, channel, node) = (shared.clone(), channel.clone(), node.to_owned());
    tokio::spawn(async move {
        let refused = |error: &str| ExplainAnswer {
            id: request.id,
            error: error.to_owned(),
            ..ExplainAnswer::default()
        };
        let answer = match shared.explainer.get() {
            None => refused("this agent keeps no windows to explain"),
            Some(_) if shared.explaining.swap(true, Ordering::AcqRel) => {
                refused("busy answering another explain request; ask again")
            }
            Some(explain) => {
                let answer = explain(&request);
                shared.explaining.store(false, Ordering::Release);
                answer
            }
        };
        let answer = ExplainAnswer { node, ..answer };
        if let Err(status) = IngestClient::new(channel).explained(answer).await {
            log::warn!(
                "an explain answer did not reach the collector: {}",
                status.message()
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> CollectorConfig {
        CollectorConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn plaintext_only_to_loopback_unless_insecure() {
        assert!(config("http://127.0.0.1:7411").endpoint().is_ok());
        assert!(config("http://localhost:7411").endpoint().is_ok());
        assert!(config("http://[::1]:7411").endpoint().is_ok());
        let e = config("http://10.0.0.5:7411").endpoint().unwrap_err();
        assert!(matches!(e, ConfigError::Plaintext { .. }), "{e}");
        assert!(e.to_string().contains("--insecure"));
        let mut c = config("http://collector.example:7411");
        c.insecure = true;
        assert!(c.endpoint().is_ok());
        assert!(matches!(
            config("https://c:1").endpoint(),
            Err(ConfigError::NoCa)
        ));
        assert!(matches!(
            config("ftp://c:1").endpoint(),
            Err(ConfigError::Url { .. })
        ));
    }

    fn replica(address: &str) -> Replica {
        let address: SocketAddr = address.parse().unwrap();
        Replica {
            url: format!("http://{address}"),
            address,
            endpoint: config(&format!("http://{address}")).endpoint().unwrap(),
        }
    }

    #[test]
    fn replicas_are_ranked_per_node_stably_spread_and_moved_only_when_theirs_goes() {
        let all = ["127.0.0.1:7411", "127.0.0.2:7411", "127.0.0.3:7411"];
        let first = |node: &str, addresses: &[&str]| {
            let mut r: Vec<Replica> = addresses.iter().map(|a| replica(a)).collect();
            rank(node, &mut r);
            r[0].address.to_string()
        };
        let nodes: Vec<String> = (0..3000).map(|i| format!("node-{i}")).collect();
        let mut per_replica = std::collections::BTreeMap::<String, usize>::new();
        for node in &nodes {
            // The same whatever order the resolver gave.
            let choice = first(node, &all);
            assert_eq!(choice, first(node, &[all[2], all[0], all[1]]));
            *per_replica.entry(choice).or_default() += 1;
        }
        assert_eq!(per_replica.len(), 3);
        for (address, n) in &per_replica {
            assert!((850..=1150).contains(n), "{address}: {n} of 3000");
        }
        // One replica gone: only the nodes that ranked it first move.
        for node in &nodes {
            let before = first(node, &all);
            let after = first(node, &all[..2]);
            if before != all[2] {
                assert_eq!(before, after, "{node}");
            }
        }
    }

    #[tokio::test]
    async fn a_host_with_several_addresses_is_as_many_replicas() {
        use std::net::ToSocketAddrs as _;
        // What the system's resolver says, read apart from sonde's code.
        let mut expected: Vec<SocketAddr> = Vec::new();
        for a in ("localhost", 7411).to_socket_addrs().unwrap() {
            if !expected.contains(&a) {
                expected.push(a);
            }
        }
        let replicas = config("http://localhost:7411").replicas().await.unwrap();
        let got: Vec<SocketAddr> = replicas.iter().map(|r| r.address).collect();
        assert_eq!(got, expected);
        for r in &replicas {
            assert_eq!(r.endpoint.uri().port_u16(), Some(7411));
            assert_eq!(r.name(), format!("http://localhost:7411 ({})", r.address));
        }
        let e = config("http://no-such-host.invalid:7411")
            .replicas()
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("'no-such-host.invalid' does not resolve"),
            "{e}"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_bounded() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits[3] >= Duration::from_millis(400) && waits[3] <= Duration::from_millis(800));
        for w in &waits[5..] {
            assert!(
                *w >= Duration::from_secs(1) && *w <= Duration::from_secs(2),
                "{w:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

/// A client of the collector's Query API.
pub async fn query_client(
    config: &CollectorConfig,
) -> Result<sonde_proto::v1::query_client::QueryClient<Channel>, QueryError> {
    let endpoint = config.endpoint()?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| QueryError::Connect {
            url: config.url.clone(),
            source,
        })?;
    Ok(sonde_proto::v1::query_client::QueryClient::new(channel))
}

/// Why the Query API could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Wrong settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No connection.
    #[error("cannot connect to the collector at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}
