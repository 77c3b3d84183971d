//! The remote-write flags, the same on `sonde agent` and `sonde-collector`.

use std::{path::PathBuf, time::Duration};

use super::sender::{Config, DEFAULT_MAX_SAMPLES_PER_REQUEST, DEFAULT_QUEUE_MAX_BYTES};

/// Longest wait between retries to a store.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Prometheus remote write (1.0) to one or more stores.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteWriteArgs {
    /// Write every window's samples to this Prometheus remote-write URL
    /// (repeat for several stores), e.g.
    /// http://127.0.0.1:9090/api/v1/write. Plaintext only to loopback
    /// unless --insecure.
    #[arg(id = "remote_write_url", long = "remote-write-url", value_name = "URL")]
    pub urls: Vec<String>,
    /// A header sent with every remote-write request, NAME=VALUE (repeat
    /// for several), e.g. X-Scope-OrgID=tenant-1.
    #[arg(id = "remote_write_header", long = "remote-write-header", value_name = "NAME=VALUE",
          value_parser = parse_header, requires = "remote_write_url")]
    pub headers: Vec<String>,
    /// CA that signed the stores' certificates (PEM); needed for https://.
    #[arg(
        id = "remote_write_tls_ca",
        long = "remote-write-tls-ca",
        value_name = "FILE",
        requires = "remote_write_url"
    )]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for stores that require mTLS.
    #[arg(
        id = "remote_write_tls_cert",
        long = "remote-write-tls-cert",
        value_name = "FILE",
        requires = "remote_write_tls_key",
        requires = "remote_write_url"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        id = "remote_write_tls_key",
        long = "remote-write-tls-key",
        value_name = "FILE",
        requires = "remote_write_tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Samples per remote-write request, at most.
    #[arg(id = "remote_write_max_samples_per_request", long = "remote-write-max-samples-per-request", value_name = "N",
          default_value_t = DEFAULT_MAX_SAMPLES_PER_REQUEST,
          value_parser = at_least_one)]
    pub max_samples_per_request: usize,
    /// Bound of each store's queue of compressed requests; when full, the
    /// oldest waiting are dropped and counted.
    #[arg(id = "remote_write_queue_max_bytes", long = "remote-write-queue-max-bytes", value_name = "BYTES",
          default_value_t = DEFAULT_QUEUE_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_max_bytes: u64,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "'{text}' is not a count of samples; give a whole number above 0, e.g. 2000"
        )),
    }
}

fn parse_header(text: &str) -> Result<String, String> {
    super::config::parse_header(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

impl RemoteWriteArgs {
    /// The sender's settings; `insecure` is the binary's own `--insecure`.
    pub fn config(&self, insecure: bool) -> Config {
        Config {
            urls: self.urls.clone(),
            headers: self.headers.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            insecure,
            max_samples_per_request: self.max_samples_per_request,
            queue_max_bytes: self.queue_max_bytes,
            backoff_max: BACKOFF_MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    /// The flags beside a binary's own `--tls-ca` and `--insecure`.
    #[derive(Debug, Parser)]
    struct Binary {
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        remote_write: RemoteWriteArgs,
    }

    #[test]
    fn flags_parse_and_a_bad_header_is_one_line_with_the_fix() {
        Binary::command().debug_assert();
        let b = Binary::try_parse_from([
            "x",
            "--remote-write-url",
            "http://127.0.0.1:9090/api/v1/write",
            "--remote-write-url",
            "http://127.0.0.1:9091/api/v1/write",
            "--remote-write-header",
            "X-Scope-OrgID=a",
        ])
        .unwrap();
        let c = b.remote_write.config(b.insecure);
        assert_eq!((c.urls.len(), c.headers.len()), (2, 1));
        assert_eq!(c.max_samples_per_request, DEFAULT_MAX_SAMPLES_PER_REQUEST);
        let err = Binary::try_parse_from([
            "x",
            "--remote-write-url",
            "http://127.0.0.1:9090/",
            "--remote-write-header",
            "X-Scope-OrgID",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("write it like X-Scope-OrgID=tenant-1"),
            "{err}"
        );
    }
}
