//! Remote write's settings: the store URLs (the `--insecure` rule),
//! headers, TLS; checked whole before anything starts.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper::{
    header::{HeaderName, HeaderValue},
    Uri,
};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};

/// Remote write as configured on the command line.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Store URLs (`https://mimir/api/v1/push`, `http://127.0.0.1:9090/api/v1/write`).
    pub urls: Vec<String>,
    /// `NAME=VALUE` headers sent with every request.
    pub headers: Vec<String>,
    /// CA that signed the stores' certificates (PEM); needed for https.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for stores that require mTLS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Allow plaintext to a store that is not on loopback.
    pub insecure: bool,
    /// Samples per request, at most.
    pub max_samples_per_request: usize,
    /// Bound of each store's queue, in bytes.
    pub queue_max_bytes: u64,
    /// Longest wait between retries.
    pub backoff_max: Duration,
}

/// Why remote write cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not an http(s) URL.
    #[error("'{url}' is not a remote-write URL; write it like http://127.0.0.1:9090/api/v1/write or https://mimir:443/api/v1/push")]
    Url {
        /// What was given.
        url: String,
    },
    /// Plaintext beyond loopback without `--insecure`.
    #[error("refusing plaintext remote write to {host}, which is not a loopback address: use https:// with --remote-write-tls-ca, or pass --insecure")]
    Plaintext {
        /// The host.
        host: String,
    },
    /// https without a CA.
    #[error("https:// remote write needs --remote-write-tls-ca, the CA that signed the store's certificate")]
    NoCa,
    /// Only one of cert and key.
    #[error("--remote-write-tls-cert and --remote-write-tls-key go together")]
    HalfIdentity,
    /// A malformed header.
    #[error("--remote-write-header '{text}' {why}; write it like X-Scope-OrgID=tenant-1")]
    Header {
        /// What was given.
        text: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A TLS file could not be read or parsed.
    #[error("reading {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("remote-write TLS settings: {0}")]
    Tls(#[source] rustls::Error),
}

/// One store: where, how, and the headers to send.
pub(super) struct Endpoint {
    pub(super) url: String,
    /// `host:port`, the `server.address` of its metrics.
    pub(super) address: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) uri: Uri,
    pub(super) tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let bad = |why| ConfigError::Header {
        text: text.to_owned(),
        why,
    };
    let (name, value) = text.split_once('=').ok_or_else(|| bad("has no '='"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| bad("does not start with a valid header name"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| bad("has a value with characters a header cannot carry"))?;
    Ok((name, value))
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn client_tls(config: &Config) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let ca = config.tls_ca.as_deref().ok_or(ConfigError::NoCa)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
        roots
            .add(cert.map_err(|e| file_error(ca, e))?)
            .map_err(|e| file_error(ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?
        .with_root_certificates(roots);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(ConfigError::Tls)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(ConfigError::HalfIdentity),
    };
    Ok(Arc::new(tls))
}

impl Config {
    /// Checks the URLs, headers and TLS files, so that a mistake stops the
    /// program before it starts anything.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.endpoints().map(|_| ())
    }

    pub(super) fn endpoints(&self) -> Result<Vec<Endpoint>, ConfigError> {
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tls = None;
        let mut out = Vec::new();
        for url in &self.urls {
            let bad = || ConfigError::Url { url: url.clone() };
            let uri: Uri = url.parse().map_err(|_| bad())?;
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => return Err(bad()),
            };
            let host = uri
                .host()
                .ok_or_else(bad)?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = if https {
                let config = match &tls {
                    Some(c) => Arc::clone(c),
                    None => {
                        let c = client_tls(self)?;
                        tls = Some(c.clone());
                        c
                    }
                };
                let name = ServerName::try_from(host.clone()).map_err(|_| bad())?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            } else {
                if !is_loopback(&host) && !self.insecure {
                    return Err(ConfigError::Plaintext { host });
                }
                None
            };
            out.push(Endpoint {
                url: url.clone(),
                address: format!("{host}:{port}"),
                host,
                port,
                uri,
                tls,
                headers: headers.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_urls_are_checked_with_the_fix_in_the_message() {
        let err = parse_header("X-Scope-OrgID").unwrap_err().to_string();
        assert!(
            err.contains("no '='") && err.contains("X-Scope-OrgID=tenant-1"),
            "{err}"
        );
        assert!(parse_header("bad name=1").is_err());
        let (n, v) = parse_header("Authorization=Bearer abc=").unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer abc=")
        );
        let config = |url: &str| Config {
            urls: vec![url.to_owned()],
            ..Default::default()
        };
        assert!(matches!(
            config("http://10.0.0.1:9090/api/v1/write").endpoints(),
            Err(ConfigError::Plaintext { .. })
        ));
        assert!(matches!(
            config("https://store/api/v1/push").endpoints(),
            Err(ConfigError::NoCa)
        ));
        assert!(matches!(
            config("ftp://x/").endpoints(),
            Err(ConfigError::Url { .. })
        ));
        let e = config("http://[::1]:9090/api/v1/write")
            .endpoints()
            .unwrap();
        assert_eq!((e[0].address.as_str(), e[0].port), ("::1:9090", 9090));
    }
}
