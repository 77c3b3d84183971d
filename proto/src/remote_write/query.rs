//! Reading a store back: instant queries to its Prometheus HTTP API
//! (`GET <base>/api/v1/query`), over the remote write's TLS and headers,
//! for fleet views that any collector replica answers from the store.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use super::config::{Config, ConfigError, Endpoint};

/// Longest wait for one query's answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read (a fleet's series for one query).
const ANSWER_BYTES: usize = 256 * 1024 * 1024;
/// Idle connections kept for the next queries.
const IDLE: usize = 4;

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Connecting, sending or reading failed.
    #[error("the store at {url} did not answer: {reason}")]
    Unreachable {
        /// The store's query URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// No answer within [`QUERY_TIMEOUT`].
    #[error("the store at {url} did not answer within {QUERY_TIMEOUT:?}")]
    Timeout {
        /// The store's query URL.
        url: String,
    },
    /// An answer other than 200.
    #[error("the store at {url} answered {status}: {body}")]
    Status {
        /// The store's query URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of its body (Prometheus says what was wrong there).
        body: String,
    },
}

/// A store's query API.
pub struct QueryClient {
    endpoint: Endpoint,
    /// The URL's path without a trailing slash (`/prometheus` for Mimir).
    base: String,
    idle: std::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl QueryClient {
    /// A client for the query API at `url` (http(s)://host:port[/prefix]),
    /// with `config`'s headers, TLS and `--insecure` rule.
    pub fn new(config: &Config, url: &str) -> Result<Self, ConfigError> {
        let one = Config {
            urls: vec![url.to_owned()],
            ..config.clone()
        };
        let endpoint = one
            .endpoints()?
            .into_iter()
            .next()
            .ok_or_else(|| ConfigError::Url {
                url: url.to_owned(),
            })?;
        let base = endpoint.uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            endpoint,
            base,
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The URL queries go to.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// The answer (JSON text) to an instant query of `query` at `at_secs`
    /// (Unix seconds).
    pub async fn instant(&self, query: &str, at_secs: f64) -> Result<String, QueryError> {
        let path = format!(
            "{}/api/v1/query?query={}&time={at_secs:.3}",
            self.base,
            percent_encode(query)
        );
        let url = self.endpoint.url.clone();
        match tokio::time::timeout(QUERY_TIMEOUT, self.get(&path)).await {
            Ok(Ok((200, body))) => Ok(body),
            Ok(Ok((status, body))) => Err(QueryError::Status {
                url,
                status,
                body: body.chars().take(300).collect(),
            }),
            Ok(Err(e)) => Err(QueryError::Unreachable {
                url,
                reason: e.to_string(),
            }),
            Err(_) => Err(QueryError::Timeout { url }),
        }
    }

    async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let e = &self.endpoint;
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .filter(|s| s.is_ready());
        let mut sender = match pooled {
            Some(s) => s,
            None => super::sender::connect(e).await?,
        };
        sender.ready().await.map_err(std::io::Error::other)?;
        let mut builder = hyper::Request::get(path)
            .header(hyper::header::HOST, e.address.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("sonde/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &e.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(std::io::Error::other)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), ANSWER_BYTES)
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE {
            idle.push(sender);
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `text` as a URL query component: unreserved characters as they are,
/// every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded_and_the_prefix_kept() {
        assert_eq!(
            percent_encode("sum by (a) (x{b=\"c d\"}[5m])"),
            "sum%20by%20%28a%29%20%28x%7Bb%3D%22c%20d%22%7D%5B5m%5D%29"
        );
        let c = QueryClient::new(&Config::default(), "http://127.0.0.1:9009/prometheus/").unwrap();
        assert_eq!(c.base, "/prometheus");
        let c = QueryClient::new(&Config::default(), "http://127.0.0.1:9090").unwrap();
        assert_eq!(c.base, "");
        assert!(matches!(
            QueryClient::new(&Config::default(), "http://10.1.2.3:9090"),
            Err(ConfigError::Plaintext { .. })
        ));
    }
}
