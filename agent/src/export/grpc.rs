//! The `sonde.v1` stream to a collector: connection settings (TLS, mTLS,
//! the `--insecure` rule) and the sender, which streams the outbox, forgets
//! what the collector acked, and after a failure reconnects with
//! exponential backoff and jitter and resends everything not acked.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use prost::Message as _;
use sonde_proto::v1::{ingest_client::IngestClient, AgentReport};
use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::outbox::{Outbox, OutboxError};

/// Reports sent and not yet acked, at most.
const MAX_IN_FLIGHT: usize = 32;

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
        let endpoint = Endpoint::from_shared(self.url.clone()).map_err(|_| ConfigError::Url {
            url: self.url.clone(),
        })?;
        let uri = endpoint.uri();
        let host = uri
            .host()
            .ok_or_else(|| ConfigError::Url {
                url: self.url.clone(),
            })?
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
        let found = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|mut addrs| addrs.next().is_some());
        match found {
            Ok(true) => Ok(()),
            Ok(false) => Err(ConfigError::Unresolved {
                host,
                source: std::io::Error::other("no address"),
            }),
            Err(source) => Err(ConfigError::Unresolved { host, source }),
        }
    }

    /// The endpoint, with TLS when the URL is https. Plaintext is allowed to
    /// loopback addresses, and elsewhere only with `insecure`.
    pub fn endpoint(&self) -> Result<Endpoint, ConfigError> {
        let url_error = || ConfigError::Url {
            url: self.url.clone(),
        };
        let endpoint = Endpoint::from_shared(self.url.clone()).map_err(|_| url_error())?;
        let uri = endpoint.uri().clone();
        let host = uri.host().ok_or_else(url_error)?.to_owned();
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
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

/// What the window loop and the sender share.
pub struct Shared {
    outbox: Mutex<Outbox>,
    /// Signalled when a report is added.
    pub added: Notify,
}

impl Shared {
    /// Around an outbox.
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox: Mutex::new(outbox),
            added: Notify::new(),
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
    #[error("the collector refused the stream: {} ({:?})", .0.message(), .0.code())]
    Status(tonic::Status),
    #[error("the collector closed the stream")]
    Closed,
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("a report in the outbox does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
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

/// Streams the outbox to the collector forever.
pub async fn run(endpoint: Endpoint, shared: Arc<Shared>, backoff_max: Duration) {
    let mut backoff = Backoff::new(Duration::from_millis(200), backoff_max);
    loop {
        match stream(&endpoint, &shared, &mut backoff).await {
            Ok(()) => {}
            Err(StreamError::Status(status)) if refused_for_good(&status) => {
                // Reports are applied in order: the refused one is the oldest
                // not acked. Resending it would block every later one.
                match shared.outbox().drop_refused() {
                    Ok(seq) => log::error!(
                        "collector {} refused report {seq:?} for good, dropped and counted: {}",
                        endpoint.uri(),
                        status.message()
                    ),
                    Err(e) => log::error!("outbox: {e}"),
                }
                continue;
            }
            Err(e) => log::warn!("collector {}: {e}", endpoint.uri()),
        }
        let wait = backoff.next_delay();
        log::info!("reconnecting to {} in {wait:?}", endpoint.uri());
        tokio::time::sleep(wait).await;
    }
}

async fn stream(
    endpoint: &Endpoint,
    shared: &Shared,
    backoff: &mut Backoff,
) -> Result<(), StreamError> {
    let channel: Channel = endpoint.connect().await.map_err(StreamError::Connect)?;
    let mut client = IngestClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentReport>(MAX_IN_FLIGHT);
    let mut acks = client
        .report(ReceiverStream::new(rx))
        .await
        .map_err(StreamError::Status)?
        .into_inner();
    log::info!("streaming to {}", endpoint.uri());
    backoff.reset();
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
                    shared.outbox().ack(ack.sequence)?;
                    in_flight = in_flight.saturating_sub(1);
                }
                Ok(None) => return Err(StreamError::Closed),
                Err(status) => return Err(StreamError::Status(status)),
            },
            () = shared.added.notified() => {}
        }
    }
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
