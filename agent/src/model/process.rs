//! The process family's part of a window: how processes ended per cgroup,
//! and the rare events (OOM kills, crashes) one by one.

use std::fmt::Write as _;

use super::text::{cgroup_label, event_line, truncate_left, Text};

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::CgroupRef;

/// The process family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Process terminations by signal and non-zero exits per cgroup.
    pub exits: Vec<CgroupExits>,
    /// Rare events of the window (OOM kills, crashes), oldest first.
    pub events: Vec<EventRecord>,
}

/// What `sonde top` reads of the family for its header: nothing.
pub type TopPart = super::top::NoHeader;

/// How the processes of one cgroup ended over the window (clean exits aside).
#[derive(Debug, Clone, Serialize)]
pub struct CgroupExits {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Processes ended by a crash signal (SIGSEGV, SIGBUS, SIGABRT, SIGILL,
    /// SIGFPE, SIGKILL).
    pub crashes: u64,
    /// Processes ended by any signal, by signal name.
    pub signals: BTreeMap<String, u64>,
    /// Processes that exited with a non-zero status.
    pub nonzero_exits: u64,
    /// Non-zero exits by status.
    pub exit_statuses: BTreeMap<u32, u64>,
}

impl CgroupExits {
    /// No terminations yet, for `cgroup`.
    pub fn new(cgroup: CgroupRef) -> Self {
        Self {
            cgroup,
            crashes: 0,
            signals: BTreeMap::new(),
            nonzero_exits: 0,
            exit_statuses: BTreeMap::new(),
        }
    }
}

/// An event kind, one of [`EVENT_KINDS`]. An alias rather than the plain
/// type in the field: serde's derive would otherwise demand `'de: 'static`
/// of every deserializer for a `&'static str` field.
pub type EventKind = &'static str;

/// The kinds of [`EventRecord`].
pub const EVENT_KINDS: [&str; 2] = ["oom_kill", "crash"];

/// One rare event. Deserializable too: clients of the agent's local socket
/// (`sonde events --attach`) read it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// `oom_kill` or `crash` (one of [`EVENT_KINDS`]).
    #[serde(deserialize_with = "event_kind")]
    pub kind: EventKind,
    /// When, Unix time in nanoseconds.
    pub time_unix_ns: u64,
    /// Process id of the subject.
    pub pid: u32,
    /// Thread id of the subject.
    pub tid: u32,
    /// Command name of the subject.
    pub comm: String,
    /// The signal that ended a crashed process.
    pub signal: Option<String>,
    /// The process dumped core.
    pub core_dumped: bool,
    /// The cgroup is that of the task that triggered the event (the kernel's
    /// hook did not name the subject's).
    pub cgroup_of_trigger: bool,
    /// The subject's cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
}

/// Reads an event kind back as the static name this build knows; a kind
/// from a newer agent reads as `other` rather than failing the stream.
fn event_kind<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(d)?;
    Ok(EVENT_KINDS
        .iter()
        .copied()
        .find(|k| *k == name)
        .unwrap_or("other"))
}

/// Crashes and non-zero exits per cgroup, then the latest events.
impl Text for Part {
    fn text(&self, out: &mut String, top: usize) {
        for c in &self.exits {
            let signals = c
                .signals
                .iter()
                .map(|(n, k)| format!("{n}×{k}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "EXITS     {:<34} crashes {}  non-zero exits {}  {}",
                truncate_left(&cgroup_label(&c.cgroup), 34),
                c.crashes,
                c.nonzero_exits,
                signals
            );
        }
        for e in self.events.iter().rev().take(top).rev() {
            let _ = writeln!(out, "EVENT     {}", event_line(e));
        }
    }
}
