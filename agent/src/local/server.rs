//! The agent's side of the local socket: binds it (refusing to take over a
//! live one, replacing a stale one), greets each client, sends the recent
//! windows, then fans every new window and event out to all clients through
//! a bounded broadcast queue. A client that falls behind is dropped and what
//! it missed counted; the agent never waits for a client.

use std::{
    collections::VecDeque,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};

use super::{error_line, event_line, hello_line, window_line, Hello, PROTOCOL};
use crate::model::{EventRecord, Snapshot};

/// Frames a client may be behind before it is dropped.
pub const CLIENT_QUEUE: usize = 256;
/// Windows kept for clients that connect later (`sonde top`'s history).
pub const HISTORY_WINDOWS: usize = 30;
/// Bound of those windows in bytes: a node with thousands of cgroups has
/// large windows, and the history must not become the agent's main cost.
pub const HISTORY_MAX_BYTES: usize = 16 << 20;
/// Clients served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 32;
/// A client that takes longer than this to accept one frame is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Mode of the socket: owner and group may connect (the agent's state is
/// the node's, not for every local user).
const SOCKET_MODE: u32 = 0o660;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something else lives at the path.
    #[error("{path} exists and is not a socket; remove it or pass another --socket path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Another agent answers there.
    #[error("another sonde agent is serving {path}; stop it, or pass another --socket path")]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// Binding, replacing the stale socket or setting its mode failed.
    #[error("cannot serve the local socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Counts and fan-out shared with the client tasks.
struct Shared {
    tx: broadcast::Sender<Arc<str>>,
    history: Mutex<History>,
    clients: AtomicUsize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct History {
    windows: VecDeque<Arc<str>>,
    bytes: usize,
}

impl Shared {
    /// The history, locked (poisoning is ignored: the history is only a
    /// courtesy to new clients).
    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bound local socket; serving starts with [`LocalServer::start`]. The
/// socket file is removed when this is dropped.
pub struct LocalServer {
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    shared: Arc<Shared>,
    /// The inode of the socket this server created: on exit it removes the
    /// file only if it is still its own.
    inode: u64,
}

impl LocalServer {
    /// Binds `path`. A socket file that nothing answers on (an agent that was
    /// killed) is replaced; a live one, or any other file, is refused.
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let io = |source| ServerError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ServerError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ServerError::InUse {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    log::info!("replacing the stale socket {}", path.display());
                    std::fs::remove_file(path).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).map_err(io)?);
        let (tx, _) = broadcast::channel(CLIENT_QUEUE);
        Ok(Self {
            path: path.to_owned(),
            listener: Some(listener),
            shared: Arc::new(Shared {
                tx,
                history: Mutex::new(History::default()),
                clients: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
            }),
            inode,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts accepting clients (needs a tokio runtime).
    pub fn start(&mut self, interval: Duration) -> Result<(), ServerError> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let listener = UnixListener::from_std(listener).map_err(|source| ServerError::Io {
            path: self.path.clone(),
            source,
        })?;
        let hello = Hello {
            protocol: PROTOCOL.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            interval_secs: interval.as_secs_f64(),
            history: HISTORY_WINDOWS,
            backlog: 0,
        };
        tokio::spawn(accept(listener, self.shared.clone(), hello));
        Ok(())
    }

    /// Sends a closed window to every client and keeps it for later ones.
    pub fn window(&self, sequence: u64, snapshot: &Snapshot) {
        let line: Arc<str> = window_line(sequence, snapshot).into();
        // Under the history lock, so that a client connecting now gets each
        // window exactly once: from the history or from the queue.
        let mut history = self.shared.history();
        history.bytes += line.len();
        history.windows.push_back(line.clone());
        while history.windows.len() > HISTORY_WINDOWS
            || (history.bytes > HISTORY_MAX_BYTES && history.windows.len() > 1)
        {
            if let Some(old) = history.windows.pop_front() {
                history.bytes -= old.len();
            }
        }
        // An error only means no client is connected.
        let _ = self.shared.tx.send(line);
    }

    /// Sends an event to every client.
    pub fn event(&self, event: &EventRecord) {
        let _guard = self.shared.history();
        let _ = self.shared.tx.send(event_line(event).into());
    }

    /// Frames that clients missed since the last call (they fell behind and
    /// were disconnected, or there were too many of them).
    pub fn take_dropped(&self) -> u64 {
        self.shared.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // Only our own socket: an operator may have started another agent on
        // the same path since.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn accept(listener: UnixListener, shared: Arc<Shared>, hello: Hello) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                log::warn!("local socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            let message = format!("the agent serves at most {MAX_CLIENTS} clients at once");
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    stream.write_all(error_line(&message).as_bytes()),
                )
                .await;
            });
            continue;
        }
        let (rx, backlog) = {
            let history = shared.history();
            (
                shared.tx.subscribe(),
                history.windows.iter().cloned().collect::<Vec<_>>(),
            )
        };
        shared.clients.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let hello = hello_line(&Hello {
            backlog: backlog.len(),
            ..hello.clone()
        });
        tokio::spawn(async move {
            let why = serve(&mut stream, rx, &hello, backlog, &shared).await;
            shared.clients.fetch_sub(1, Ordering::Relaxed);
            log::debug!("local socket: client gone: {why}");
        });
    }
}

/// Why a client's connection ended.
#[derive(Debug)]
enum End {
    Closed,
    Lagged(u64),
    Io(std::io::Error),
    Timeout,
    AgentStopped,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => write!(f, "it closed the connection"),
            End::Lagged(n) => write!(f, "it fell {n} frames behind"),
            End::Io(e) => write!(f, "{e}"),
            End::Timeout => write!(f, "it stopped reading"),
            End::AgentStopped => write!(f, "the agent is stopping"),
        }
    }
}

async fn send(stream: &mut UnixStream, line: &str) -> Result<(), End> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(line.as_bytes())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::Io(e)),
        Err(_) => Err(End::Timeout),
    }
}

async fn serve(
    stream: &mut UnixStream,
    mut rx: broadcast::Receiver<Arc<str>>,
    hello: &str,
    backlog: Vec<Arc<str>>,
    shared: &Shared,
) -> End {
    let mut sink = [0u8; 256];
    let result: Result<(), End> = async {
        send(stream, hello).await?;
        for line in &backlog {
            send(stream, line).await?;
        }
        loop {
            let (mut reader, mut writer) = stream.split();
            tokio::select! {
                // What a client writes is ignored; reading only notices
                // that it left.
                read = reader.read(&mut sink) => match read {
                    Ok(0) => return Err(End::Closed),
                    Ok(_) => continue,
                    Err(e) => return Err(End::Io(e)),
                },
                frame = rx.recv() => match frame {
                    Ok(line) => {
                        match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(line.as_bytes())).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(End::Io(e)),
                            Err(_) => return Err(End::Timeout),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => return Err(End::Lagged(n)),
                    Err(broadcast::error::RecvError::Closed) => return Err(End::AgentStopped),
                },
            }
        }
    }
    .await;
    let end = match result {
        Ok(()) => End::Closed,
        Err(end) => end,
    };
    match &end {
        End::Lagged(n) => {
            shared.dropped.fetch_add(*n, Ordering::Relaxed);
            let message = format!(
                "this client fell {n} frames behind the agent and was disconnected; read faster or reconnect"
            );
            let _ = send(stream, &error_line(&message)).await;
        }
        End::Timeout => {
            // The frame being written and whatever the queue held for it.
            shared
                .dropped
                .fetch_add(1 + rx.len() as u64, Ordering::Relaxed);
        }
        End::Closed | End::Io(_) | End::AgentStopped => {}
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{client::LocalClient, Frame};

    fn snapshot(secs: f64) -> Snapshot {
        Snapshot {
            window_secs: secs,
            ..Snapshot::default()
        }
    }

    #[tokio::test]
    async fn history_then_live_windows_then_stale_socket_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        let mut server = LocalServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        server.start(Duration::from_secs(1)).unwrap();
        for i in 0..(HISTORY_WINDOWS as u64 + 2) {
            server.window(i, &snapshot(1.0));
        }
        // A second agent on the same path is refused while this one lives.
        assert!(matches!(
            LocalServer::bind(&path),
            Err(ServerError::InUse { .. })
        ));
        let mut client = LocalClient::connect(&path).await.unwrap();
        assert_eq!(client.hello.history, HISTORY_WINDOWS);
        assert_eq!(client.hello.backlog, HISTORY_WINDOWS);
        assert_eq!(client.hello.interval_secs, 1.0);
        let mut sequences = Vec::new();
        for _ in 0..HISTORY_WINDOWS {
            let Some(Frame::Window { sequence, .. }) = client.next().await.unwrap() else {
                panic!("a window");
            };
            sequences.push(sequence);
        }
        assert_eq!(
            sequences,
            (2..HISTORY_WINDOWS as u64 + 2).collect::<Vec<_>>()
        );
        server.window(100, &snapshot(2.0));
        let Some(Frame::Window { sequence, window }) = client.next().await.unwrap() else {
            panic!("a window");
        };
        assert_eq!((sequence, window["window_secs"].as_f64()), (100, Some(2.0)));
        assert_eq!(server.take_dropped(), 0);
        drop(client);
        drop(server);
        assert!(!path.exists(), "the socket is removed on exit");

        // A socket file left by a killed agent is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let server = LocalServer::bind(&path).unwrap();
        drop(server);

        // Any other file is left alone.
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            LocalServer::bind(&path),
            Err(ServerError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let mut server = LocalServer::bind(&path).unwrap();
        server.start(Duration::from_secs(1)).unwrap();
        // Connected, never reads: the socket buffer fills, then the queue.
        let _silent = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let big = Snapshot {
            losses: vec![
                crate::model::LossRecord {
                    stage: "kernel",
                    probe: "syscalls",
                    reason: "map_full",
                    count: 0,
                };
                300
            ],
            ..Snapshot::default()
        };
        let started = std::time::Instant::now();
        for i in 0..(CLIENT_QUEUE as u64 * 3) {
            server.window(i, &big);
            tokio::task::yield_now().await;
        }
        // Publishing never waited for the client.
        assert!(started.elapsed() < WRITE_TIMEOUT);
        let mut dropped = 0;
        for _ in 0..200 {
            dropped += server.take_dropped();
            if dropped > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(dropped > 0, "the lag of the silent client is counted");
    }
}
