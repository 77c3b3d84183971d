//! Why a collector refuses an agent, counted by reason; the one place where
//! refusals become gRPC statuses.

use std::sync::atomic::{AtomicU64, Ordering};

use sonde_proto::validate::ReportError;
use tonic::{Code, Status};

/// A refusal.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The bytes are not a report.
    #[error("malformed report: {detail}")]
    Malformed {
        /// The decoder's words.
        detail: String,
    },
    /// Larger than `--max-report-bytes`.
    #[error("report too large: {detail}")]
    Oversized {
        /// The decoder's words, with sizes.
        detail: String,
    },
    /// A protocol version this collector does not speak, or a report that
    /// breaks the protocol's rules.
    #[error("invalid report: {0}")]
    Invalid(#[from] ReportError),
    /// TLS is configured and the client presented no certificate.
    #[error("no client certificate: this collector accepts only agents with a certificate signed by its CA (agent: --tls-cert, --tls-key)")]
    NoClientCert,
    /// The client's certificate is not signed by the collector's CA, or is
    /// otherwise invalid.
    #[error("client certificate refused: {detail}")]
    BadClientCert {
        /// The verifier's words.
        detail: String,
    },
    /// The TLS handshake failed (counted only: no status can be sent).
    #[error("TLS handshake failed: {detail}")]
    TlsHandshake {
        /// rustls's words.
        detail: String,
    },
}

/// Reasons, in the order they are reported.
pub const REASONS: [&str; 6] = [
    "malformed",
    "oversized",
    "protocol_version",
    "invalid",
    "no_client_cert",
    "bad_client_cert",
];
/// Reason of failed handshakes, reported last.
pub const TLS_HANDSHAKE: &str = "tls_handshake";

impl Rejection {
    /// A decoding error from tonic's stream: oversized, malformed, or `None`
    /// when it is the client going away (not a refusal).
    pub fn from_stream_error(status: &Status) -> Option<Self> {
        let detail = status.message().to_owned();
        match status.code() {
            Code::OutOfRange | Code::ResourceExhausted => Some(Self::Oversized { detail }),
            Code::Internal if detail.contains("decode") => Some(Self::Malformed { detail }),
            _ => None,
        }
    }

    /// Stable snake_case name, the label of the count.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::Oversized { .. } => "oversized",
            Self::Invalid(ReportError::Version { .. }) => "protocol_version",
            Self::Invalid(_) => "invalid",
            Self::NoClientCert => "no_client_cert",
            Self::BadClientCert { .. } => "bad_client_cert",
            Self::TlsHandshake { .. } => TLS_HANDSHAKE,
        }
    }
}

impl From<Rejection> for Status {
    fn from(r: Rejection) -> Self {
        let text = r.to_string();
        match r {
            Rejection::Malformed { .. } | Rejection::Invalid(ReportError::Identity) => {
                Status::invalid_argument(text)
            }
            Rejection::Invalid(ReportError::Version { .. }) => Status::failed_precondition(text),
            Rejection::Invalid(_) => Status::invalid_argument(text),
            Rejection::Oversized { .. } => Status::resource_exhausted(text),
            Rejection::NoClientCert
            | Rejection::BadClientCert { .. }
            | Rejection::TlsHandshake { .. } => Status::unauthenticated(text),
        }
    }
}

/// Refusals counted by reason.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: [AtomicU64; REASONS.len() + 1],
}

impl Rejections {
    /// Counts `r` and logs it.
    pub fn count(&self, r: &Rejection, peer: &str) {
        log::warn!("refused {peer}: {r}");
        let reason = r.reason();
        let i = REASONS
            .iter()
            .position(|&x| x == reason)
            .unwrap_or(REASONS.len());
        if let Some(count) = self.counts.get(i) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (reason, count) for every reason, zeros included.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .copied()
            .chain(std::iter::once(TLS_HANDSHAKE))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_say_why_and_counts_go_by_reason() {
        let r = Rejection::Invalid(ReportError::Version {
            got: 7,
            expected: 1,
        });
        assert_eq!(r.reason(), "protocol_version");
        let rejections = Rejections::default();
        rejections.count(&r, "test");
        let s = Status::from(r);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message().contains("protocol version 7"),
            "{}",
            s.message()
        );
        let oversized = Rejection::from_stream_error(&Status::out_of_range(
            "Error, decoded message length too large: found 20 bytes, the limit is: 10 bytes",
        ))
        .unwrap();
        assert_eq!(oversized.reason(), "oversized");
        rejections.count(&oversized, "test");
        assert!(Rejection::from_stream_error(&Status::cancelled("gone")).is_none());
        let snap = rejections.snapshot();
        assert_eq!(snap.len(), 7);
        assert_eq!(snap[1], ("oversized", 1));
        assert_eq!(snap[2], ("protocol_version", 1));
    }
}
