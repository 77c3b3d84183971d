//! What one window saw of TCP: connects, retransmits, resets, accepts,
//! drops, the per-namespace check against the kernel's counters, and the
//! connections behind the rare events.

use std::fmt::Write as _;

use super::text::{cgroup_label, secs, tcp_detail, truncate_left, Text};

use std::collections::BTreeMap;

use serde::Serialize;
use sonde_slo::Histogram;

use super::CgroupRef;

/// The kinds of TCP events ([`TcpEventRecord`]).
pub const TCP_EVENT_KINDS: [&str; 3] = ["reset_sent", "reset_received", "connect_failed"];

/// The TCP family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Connects, retransmits, resets, accepts, drops, the namespace check,
    /// and the connections behind resets and failed connects.
    #[serde(rename = "tcp")]
    pub window: TcpWindow,
}

/// What `sonde top` reads of the family for its header: nothing.
pub type TopPart = super::top::NoHeader;

/// TCP signals of one window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TcpWindow {
    /// Per cgroup: connects by the connecting task's cgroup, retransmits
    /// and resets by the socket's; most active first.
    pub cgroups: Vec<CgroupTcp>,
    /// Retransmits and resets of no known cgroup (resets sent for packets
    /// that matched no socket, or by time-wait sockets): the node's.
    pub node: TcpCounts,
    /// Per listening port.
    pub listeners: Vec<ListenerTcp>,
    /// Packets the kernel dropped, per network namespace and reason.
    pub drops: Vec<NetnsDrops>,
    /// Per network namespace: sonde's counts and their check against the
    /// kernel's own counters.
    pub namespaces: Vec<NetnsTcp>,
    /// Resets and failed connects of the window with their connection,
    /// oldest first.
    pub events: Vec<TcpEventRecord>,
}

/// Retransmits and resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpCounts {
    /// Segments retransmitted (SYN-ACKs included).
    pub retransmit_segments: u64,
    /// Resets sent.
    pub resets_sent: u64,
    /// Resets received.
    pub resets_received: u64,
}

/// TCP signals of one cgroup.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupTcp {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Connects that completed (SYN sent → established).
    pub connects: u64,
    /// Median connect latency, seconds.
    pub connect_p50_secs: Option<f64>,
    /// 99th percentile connect latency, seconds.
    pub connect_p99_secs: Option<f64>,
    /// Connect latency, OTLP exponential layout at scale 3.
    pub connect_latency: Histogram,
    /// Failed connects by reason: refused, reset, timeout, unreachable, other.
    pub connect_failures: BTreeMap<&'static str, u64>,
    /// Retransmits and resets of the cgroup's sockets.
    #[serde(flatten)]
    pub counts: TcpCounts,
    /// The destinations its connects failed to reach most, from the
    /// window's events (at most a few per cgroup).
    pub failing_destinations: Vec<Destination>,
    /// Where its retransmitted segments went, most first; `other` sums the
    /// rest (and what the kernel's table had no room for).
    pub retransmit_destinations: Vec<RetransmitDestination>,
}

impl CgroupTcp {
    /// Nothing yet, for `cgroup`.
    pub fn new(cgroup: CgroupRef) -> Self {
        Self {
            cgroup,
            connects: 0,
            connect_p50_secs: None,
            connect_p99_secs: None,
            connect_latency: Histogram::new(),
            connect_failures: BTreeMap::new(),
            counts: TcpCounts::default(),
            failing_destinations: Vec::new(),
            retransmit_destinations: Vec::new(),
        }
    }

    /// Failed connects, all reasons.
    pub fn failures(&self) -> u64 {
        self.connect_failures.values().sum()
    }
}

/// A destination connects failed to reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Failed connects in the window.
    pub failures: u64,
}

/// A destination of retransmitted segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RetransmitDestination {
    /// Address, or `other`.
    pub address: String,
    /// Port (0 for `other`).
    pub port: u16,
    /// Segments retransmitted to it in the window.
    pub segments: u64,
}

/// One listening port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTcp {
    /// Network namespace inode.
    pub netns: u32,
    /// Port.
    pub port: u16,
    /// Handshakes completed.
    pub accepted: u64,
    /// Handshakes refused at their last ACK because the accept queue was
    /// full (`SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`). SYNs refused for the
    /// same reason are freed without a drop reason, unseen by any probe:
    /// `sockets.drops` holds them.
    pub overflows: u64,
    /// Handshakes the client broke off before they completed (a reset, or
    /// a SYN inside the handshake): the listening side's AttemptFails.
    pub failed_handshakes: u64,
    /// Other packets the kernel dropped at the listening socket.
    pub drops: u64,
    /// What the port's listening sockets themselves report; `None` when
    /// their namespace could not be read (its `listeners_unread` says why)
    /// or no socket listens on the port any more.
    pub sockets: Option<ListenSockets>,
}

/// A port's listening sockets as the kernel keeps them (through
/// sock_diag, summed over the port's sockets: IPv4, IPv6, reuseport).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ListenSockets {
    /// Packets the sockets dropped in the window: their own drop count
    /// (`sk_drops`, what `ss -tlm` shows as `d`). It holds every SYN
    /// refused at its arrival because the SYN or the accept queue was full
    /// (`ListenDrops`), which the kernel frees without a drop reason, so
    /// that this is the only per-port count of them; a handshake refused at
    /// its last ACK (`overflows`) counts twice in it (refused, then
    /// discarded), and a packet discarded at the socket (a reset ending a
    /// handshake, a full backlog) once. A socket closed between two
    /// readings takes its last counts with it.
    pub drops: u64,
    /// Connections waiting to be accepted, at the window's end.
    pub accept_queue: u64,
    /// The accept queues' bound (the `listen()` backlog, capped by
    /// `net.core.somaxconn`).
    pub accept_queue_max: u64,
}

/// Packets dropped in one network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetnsDrops {
    /// Network namespace inode (0: not known).
    pub netns: u32,
    /// All reasons.
    pub total: u64,
    /// By the kernel's reason name (`NETFILTER_DROP`, `NO_SOCKET`, ...).
    pub reasons: BTreeMap<String, u64>,
}

/// One network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetnsTcp {
    /// Network namespace inode.
    pub netns: u32,
    /// sonde's counts in the window, by kernel counter name.
    pub window: BTreeMap<&'static str, u64>,
    /// Since the first reading (or since the namespace appeared), each
    /// counter as the kernel and as sonde counted it; `None` when no
    /// process in the namespace could be read.
    pub check: Option<Vec<CounterCheck>>,
    /// Why the namespace's listening sockets could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listeners_unread: Option<String>,
}

impl NetnsTcp {
    /// The largest discrepancy of any counter (0 when unchecked).
    pub fn max_discrepancy(&self) -> i64 {
        self.check
            .iter()
            .flatten()
            .map(|c| c.discrepancy)
            .max_by_key(|d| d.abs())
            .unwrap_or(0)
    }
}

/// One counter of a namespace: the kernel's and sonde's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterCheck {
    /// The kernel's name (`RetransSegs`).
    pub counter: &'static str,
    /// The kernel's count.
    pub kernel: u64,
    /// sonde's count.
    pub sonde: u64,
    /// `kernel - sonde`: what sonde missed (or, negative, counted extra).
    pub discrepancy: i64,
}

/// A reset or a failed connect.
#[derive(Debug, Clone, Serialize)]
pub struct TcpEventRecord {
    /// `reset_sent`, `reset_received` or `connect_failed`.
    pub kind: &'static str,
    /// When, Unix time in nanoseconds.
    pub time_unix_ns: u64,
    /// Network namespace inode (0: not known).
    pub netns: u32,
    /// `ipv4`, `ipv6` or `unknown`.
    pub family: &'static str,
    /// Local address.
    pub source: String,
    /// Local port.
    pub source_port: u16,
    /// Remote address.
    pub destination: String,
    /// Remote port.
    pub destination_port: u16,
    /// The socket's state (`SYN_SENT`), absent for a reset to a packet
    /// that matched no socket.
    pub state: Option<String>,
    /// A failed connect's reason (`refused`, `timeout`, ...).
    pub failure: Option<&'static str>,
    /// A failed connect's error (`ECONNREFUSED`).
    pub error: Option<String>,
    /// A sent reset's kernel reason (`NO_SOCKET`), where the kernel says.
    pub reset_reason: Option<String>,
    /// The socket's cgroup and its owner; absent when there was no full
    /// socket (a reset for a packet that matched none, or from a time-wait
    /// socket).
    #[serde(flatten)]
    pub cgroup: Option<CgroupRef>,
}

/// The TCP window as text: per cgroup, listening ports, drops, the namespace
/// check, the latest events.
impl Text for Part {
    fn text(&self, out: &mut String, top: usize) {
        let t = &self.window;
        if !t.cgroups.is_empty() {
            let _ = writeln!(
                out,
                "{:<44} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
                "TCP (cgroup)", "CONNECTS", "P50", "P99", "FAILED", "RETRANS", "RST OUT", "RST IN"
            );
        }
        for c in t.cgroups.iter().take(top) {
            let _ = writeln!(
                out,
                "{:<44} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
                truncate_left(&cgroup_label(&c.cgroup), 44),
                c.connects,
                secs(c.connect_p50_secs),
                secs(c.connect_p99_secs),
                c.failures(),
                c.counts.retransmit_segments,
                c.counts.resets_sent,
                c.counts.resets_received
            );
            if c.failures() > 0 {
                let reasons = c
                    .connect_failures
                    .iter()
                    .map(|(r, n)| format!("{r}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let destinations = c
                    .failing_destinations
                    .iter()
                    .map(|d| format!("{}:{}×{}", d.address, d.port, d.failures))
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    out,
                    "  failed connects: {reasons}  top failing: {destinations}"
                );
            }
        }
        let n = &t.node;
        if n.retransmit_segments + n.resets_sent + n.resets_received > 0 {
            let _ = writeln!(
                out,
                "TCP (no socket)  retransmits {}  resets sent {}  received {}",
                n.retransmit_segments, n.resets_sent, n.resets_received
            );
        }
        for l in t.listeners.iter().take(top) {
            let sockets = match &l.sockets {
                Some(s) => format!(
                    "  socket drops {}  queue {}/{}",
                    s.drops, s.accept_queue, s.accept_queue_max
                ),
                None => String::new(),
            };
            let _ = writeln!(
            out,
            "LISTEN    netns {} port {:<6} accepted {}  overflows {}  failed handshakes {}  drops {}{sockets}",
            l.netns, l.port, l.accepted, l.overflows, l.failed_handshakes, l.drops
        );
        }
        for d in t.drops.iter().take(top) {
            let mut reasons: Vec<(&String, &u64)> = d.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            let reasons = reasons
                .iter()
                .take(4)
                .map(|(r, n)| format!("{r}×{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "DROPS     netns {}  {} packets  {reasons}",
                d.netns, d.total
            );
        }
        let checked = t.namespaces.iter().filter(|n| n.check.is_some()).count();
        let off: Vec<String> = t
            .namespaces
            .iter()
            .flat_map(|n| {
                n.check
                    .iter()
                    .flatten()
                    .filter(|c| c.discrepancy != 0)
                    .map(|c| {
                        format!(
                            "netns {} {} kernel {} sonde {} ({:+})",
                            n.netns, c.counter, c.kernel, c.sonde, c.discrepancy
                        )
                    })
            })
            .collect();
        if checked > 0 {
            if off.is_empty() {
                let _ = writeln!(
                    out,
                    "TCP CHECK {checked} namespaces: sonde's counts equal the kernel's"
                );
            } else {
                let shown: Vec<&str> = off.iter().take(top).map(String::as_str).collect();
                let more = off.len().saturating_sub(shown.len());
                let _ = writeln!(
                    out,
                    "TCP CHECK differs: {}{}",
                    shown.join("; "),
                    if more > 0 {
                        format!(" (and {more} more)")
                    } else {
                        String::new()
                    }
                );
            }
        }
        for e in t.events.iter().rev().take(top).rev() {
            let detail = tcp_detail(e.failure, e.error.as_deref(), e.reset_reason.as_deref());
            let _ = writeln!(
                out,
                "EVENT     tcp {} {}:{} → {}:{}{detail} in {}",
                e.kind,
                e.source,
                e.source_port,
                e.destination,
                e.destination_port,
                e.cgroup
                    .as_ref()
                    .map_or_else(|| "no socket".to_owned(), cgroup_label)
            );
        }
    }
}
