//! The agent's local Unix socket: how `sonde top --attach` and
//! `sonde events --attach` read a running agent's windows and events, so
//! that two copies of sonde on one node never load the probes twice.
//!
//! # Protocol `sonde-local/1`
//!
//! The server speaks first and only: newline-delimited JSON, one frame per
//! line, each an object with a `type`:
//!
//! - `{"type":"hello","protocol":"sonde-local/1","version":"0.1.0","interval_secs":10.0,"history":30,"backlog":12}`
//!   — always the first line; a client that does not read it within a few
//!   seconds is not talking to a sonde agent;
//! - `{"type":"window","sequence":7,"window":{...}}` — a closed window, the
//!   same object `sonde agent --json` prints. Right after the hello, the
//!   agent's latest windows (`backlog` of them, at most `history`, oldest
//!   first), then each new one as it closes;
//! - `{"type":"event","event":{...}}` — a rare event (OOM kill, crash) as
//!   the agent reads it, before the window that also holds it;
//! - `{"type":"error","message":"..."}` — the last line before the agent
//!   closes the connection (the client fell too far behind, too many
//!   clients).
//!
//! What a client writes is ignored. Each client has a bounded queue: one that
//! reads too slowly is disconnected and what it missed is counted
//! (`sonde.agent.dropped`, `stage=local_socket`); it never holds the agent up.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::model::Snapshot;

/// Where the agent serves and clients look by default.
pub const DEFAULT_SOCKET: &str = "/run/sonde/agent.sock";

/// The protocol name in the hello; a client refuses any other.
pub const PROTOCOL: &str = "sonde-local/1";

/// The first frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub protocol: String,
    /// The agent's version.
    pub version: String,
    /// Length of the agent's windows, in seconds.
    pub interval_secs: f64,
    /// How many past windows the agent keeps for new clients, at most.
    pub history: usize,
    /// How many past windows follow this hello, before the live ones.
    pub backlog: usize,
}

/// A frame as a client reads it; payloads stay JSON values, each client
/// reads the part it needs (see [`crate::top::Window`], [`crate::model::EventRecord`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// The greeting.
    Hello(Hello),
    /// A closed window.
    Window {
        /// Its sequence number.
        sequence: u64,
        /// The snapshot, as `sonde agent --json` prints it.
        window: serde_json::Value,
    },
    /// A rare event.
    Event {
        /// The event record.
        event: serde_json::Value,
    },
    /// Why the agent is closing the connection.
    Error {
        /// The reason, one line.
        message: String,
    },
}

/// A frame as the server writes it (borrowing the model: no copy).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutFrame<'a> {
    Hello(&'a Hello),
    Window {
        sequence: u64,
        window: &'a Snapshot,
    },
    Event {
        event: &'a crate::model::EventRecord,
    },
    Error {
        message: &'a str,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not one of the frames above.
    #[error("not a {PROTOCOL} frame: {source}")]
    Malformed {
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

fn line(frame: &OutFrame<'_>) -> String {
    // Serializing plain model types into a String cannot fail (no maps with
    // non-string keys, no I/O); an empty object keeps the stream framed if it
    // ever did.
    let mut text = serde_json::to_string(frame).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// The hello line.
pub fn hello_line(hello: &Hello) -> String {
    line(&OutFrame::Hello(hello))
}

/// A window line.
pub fn window_line(sequence: u64, window: &Snapshot) -> String {
    line(&OutFrame::Window { sequence, window })
}

/// An event line.
pub fn event_line(event: &crate::model::EventRecord) -> String {
    line(&OutFrame::Event { event })
}

/// An error line.
pub fn error_line(message: &str) -> String {
    line(&OutFrame::Error { message })
}

/// Parses one line (without or with its newline).
pub fn parse_line(text: &str) -> Result<Frame, FrameError> {
    serde_json::from_str(text.trim_end()).map_err(|source| FrameError::Malformed { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::{CgroupRef, Owner},
        model::EventRecord,
    };

    fn hello() -> Hello {
        Hello {
            protocol: PROTOCOL.to_owned(),
            version: "0.1.0".to_owned(),
            interval_secs: 10.0,
            history: 30,
            backlog: 2,
        }
    }

    #[test]
    fn lines_are_one_frame_each_and_read_back() {
        let h = hello_line(&hello());
        assert!(h.ends_with('\n'));
        assert_eq!(h.matches('\n').count(), 1);
        assert!(
            h.starts_with(r#"{"type":"hello","protocol":"sonde-local/1""#),
            "{h}"
        );
        assert_eq!(parse_line(&h).unwrap(), Frame::Hello(hello()));

        let snapshot = Snapshot {
            window_secs: 1.5,
            complete: true,
            ..Snapshot::default()
        };
        let w = window_line(42, &snapshot);
        assert_eq!(w.matches('\n').count(), 1);
        let Frame::Window { sequence, window } = parse_line(&w).unwrap() else {
            panic!("a window: {w}");
        };
        assert_eq!(sequence, 42);
        assert_eq!(window["window_secs"], 1.5);
        assert_eq!(window["complete"], true);

        let e = error_line("too slow");
        assert_eq!(
            parse_line(&e).unwrap(),
            Frame::Error {
                message: "too slow".to_owned()
            }
        );
    }

    #[test]
    fn events_read_back_as_records() {
        let record = EventRecord {
            kind: "crash",
            time_unix_ns: 1_700_000_000_000_000_000,
            pid: 7,
            tid: 7,
            comm: "worker\n".to_owned(),
            signal: Some("SIGSEGV".to_owned()),
            core_dumped: false,
            cgroup_of_trigger: false,
            cgroup: CgroupRef {
                cgroup_id: 99,
                cgroup_path: Some("/kubepods.slice/x".to_owned()),
                owner: Owner::Pod {
                    pod_uid: "u-1".to_owned(),
                    qos: "burstable".to_owned(),
                    container_id: None,
                    runtime: None,
                    namespace: Some("default".to_owned()),
                    name: Some("web".to_owned()),
                },
            },
        };
        let text = event_line(&record);
        // A newline inside a field is escaped: the framing holds.
        assert_eq!(text.matches('\n').count(), 1);
        let Frame::Event { event } = parse_line(&text).unwrap() else {
            panic!("an event: {text}");
        };
        let back: EventRecord = serde_json::from_value(event).unwrap();
        assert_eq!(back.kind, "crash");
        assert_eq!(back.comm, "worker\n");
        assert_eq!(back.cgroup, record.cgroup);
        assert_eq!(back.signal.as_deref(), Some("SIGSEGV"));

        let mut newer = serde_json::to_value(&record).unwrap();
        newer["kind"] = "disk_full".into();
        let back: EventRecord = serde_json::from_value(newer).unwrap();
        assert_eq!(back.kind, "other");
    }

    #[test]
    fn foreign_lines_are_refused() {
        for text in ["", "HTTP/1.1 400 Bad Request", "{}", r#"{"type":"bogus"}"#] {
            assert!(parse_line(text).is_err(), "{text:?}");
        }
    }
}
