//! The client's side of the local socket: connect, check the greeting,
//! read frames. Every way this can fail says what to do about it.

use std::{
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    net::UnixStream,
};

use super::{parse_line, Frame, Hello, PROTOCOL};

/// How long a server has to greet before it is taken for something else.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest line read; a window of a busy node is large, but not this large.
const MAX_LINE_BYTES: usize = 256 << 20;

/// Why the agent could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing at the path.
    #[error("no sonde agent socket at {path}; start one with `sonde agent --socket {path}`, or pass the agent's path with --socket")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A file that is not a socket.
    #[error("{path} is not a socket; pass the agent's socket with --socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A socket nobody listens on.
    #[error("no sonde agent listens on {path} (a socket left by an agent that stopped); start `sonde agent --socket {path}`")]
    Refused {
        /// The path.
        path: PathBuf,
    },
    /// Not allowed to connect.
    #[error("may not connect to {path} (permission denied); run as root or as a member of the socket's group")]
    Denied {
        /// The path.
        path: PathBuf,
    },
    /// The peer did not greet as a sonde agent.
    #[error("{path} is not a sonde agent socket ({why}); pass the agent's socket with --socket")]
    NotSonde {
        /// The path.
        path: PathBuf,
        /// What it did instead.
        why: String,
    },
    /// The agent closed the connection with a reason.
    #[error("the agent closed the connection: {message}")]
    Closed {
        /// The agent's reason.
        message: String,
    },
    /// A line that is no frame, mid-stream.
    #[error("the agent sent a malformed frame: {source}")]
    Malformed {
        /// Why.
        #[source]
        source: super::FrameError,
    },
    /// Reading failed.
    #[error("reading from the agent at {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A connection to an agent, past its greeting.
pub struct LocalClient {
    path: PathBuf,
    lines: Lines<BufReader<UnixStream>>,
    /// The agent's greeting.
    pub hello: Hello,
}

impl LocalClient {
    /// Connects to the agent at `path` and reads its greeting.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let p = || path.to_owned();
        match std::fs::metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ClientError::NotASocket { path: p() })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::Missing { path: p() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ClientError::Denied { path: p() })
            }
            Err(source) => return Err(ClientError::Io { path: p(), source }),
        }
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ClientError::Refused { path: p() },
                std::io::ErrorKind::PermissionDenied => ClientError::Denied { path: p() },
                std::io::ErrorKind::NotFound => ClientError::Missing { path: p() },
                _ => ClientError::Io {
                    path: p(),
                    source: e,
                },
            })?;
        let mut lines = BufReader::new(stream).lines();
        let first = match tokio::time::timeout(HELLO_TIMEOUT, lines.next_line()).await {
            Err(_) => {
                return Err(ClientError::NotSonde {
                    path: p(),
                    why: format!("it sent no greeting within {}s", HELLO_TIMEOUT.as_secs()),
                })
            }
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                return Err(ClientError::NotSonde {
                    path: p(),
                    why: "it closed the connection without a greeting".to_owned(),
                })
            }
            Ok(Err(e)) => {
                return Err(ClientError::NotSonde {
                    path: p(),
                    why: format!("its greeting was unreadable: {e}"),
                })
            }
        };
        let hello = match parse_line(&first) {
            Ok(Frame::Hello(h)) if h.protocol == PROTOCOL => h,
            Ok(Frame::Hello(h)) => {
                return Err(ClientError::NotSonde {
                    path: p(),
                    why: format!("it speaks {}, this sonde {PROTOCOL}", h.protocol),
                })
            }
            Ok(Frame::Error { message }) => return Err(ClientError::Closed { message }),
            _ => {
                return Err(ClientError::NotSonde {
                    path: p(),
                    why: "its first line is not a sonde greeting".to_owned(),
                })
            }
        };
        Ok(Self {
            path: p(),
            lines,
            hello,
        })
    }

    /// The next window or event; `None` when the agent closed the
    /// connection (it stopped).
    pub async fn next(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|source| ClientError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            let Some(line) = line else {
                return Ok(None);
            };
            if line.len() > MAX_LINE_BYTES {
                return Err(ClientError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other("a frame larger than 256 MiB"),
                });
            }
            if line.trim().is_empty() {
                continue;
            }
            return match parse_line(&line).map_err(|source| ClientError::Malformed { source })? {
                Frame::Error { message } => Err(ClientError::Closed { message }),
                frame => Ok(Some(frame)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn wrong_peers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let e = LocalClient::connect(&missing).await.err().unwrap();
        assert!(matches!(e, ClientError::Missing { .. }), "{e}");

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = LocalClient::connect(&file).await.err().unwrap();
        assert!(matches!(e, ClientError::NotASocket { .. }), "{e}");

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let e = LocalClient::connect(&stale).await.err().unwrap();
        assert!(matches!(e, ClientError::Refused { .. }), "{e}");

        // Something that talks, but not sonde.
        let other = dir.path().join("other.sock");
        let listener = tokio::net::UnixListener::bind(&other).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"220 smtp ready\n").await;
            }
        });
        let e = LocalClient::connect(&other).await.err().unwrap();
        assert!(matches!(e, ClientError::NotSonde { .. }), "{e}");
        assert!(e.to_string().contains("not a sonde agent socket"), "{e}");
    }
}
