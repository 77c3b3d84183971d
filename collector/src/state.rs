//! What the collector's services share: the fleet and the counters.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};

use crate::{fleet::Fleet, reject::Rejections};

/// How long a stopping collector waits for its remote-write stores (the
/// streams' last acks wait for them as long, no longer).
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Shared by every service.
pub struct State {
    fleet: Mutex<Fleet>,
    /// Refusals by reason.
    pub rejections: Rejections,
    /// Report streams open now.
    pub streams_open: AtomicU64,
    /// Reports accepted.
    pub accepted: AtomicU64,
    /// Copies dropped.
    pub duplicates: AtomicU64,
    /// Turns true when the collector shuts down: streams end after their acks.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Prometheus remote write of every report applied, when configured.
    pub remote_write: Option<sonde_proto::remote_write::sender::RemoteWrite>,
    /// The store the fleet views read, when configured (`--store-url`).
    pub store: Option<crate::store::Store>,
    /// Explain requests to the agents streaming here.
    pub asks: crate::asks::Asks,
    /// Numbers the report streams.
    pub next_stream: AtomicU64,
}

impl State {
    /// A fresh state.
    pub fn new(recent_windows: usize, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            shutdown,
            fleet: Mutex::new(Fleet::new(recent_windows)),
            rejections: Rejections::default(),
            streams_open: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            remote_write: None,
            store: None,
            asks: crate::asks::Asks::default(),
            next_stream: AtomicU64::new(0),
        }
    }

    /// The fleet, locked. A panic while it was held cannot leave it half
    /// updated in a way worse than a lost report, so poisoning is ignored.
    pub fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The collector's own counters as Prometheus text.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP sonde_collector_reports_total Reports accepted");
        let _ = writeln!(out, "# TYPE sonde_collector_reports_total counter");
        let _ = writeln!(
            out,
            "sonde_collector_reports_total {}",
            self.accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sonde_collector_duplicates_total Report copies dropped"
        );
        let _ = writeln!(out, "# TYPE sonde_collector_duplicates_total counter");
        let _ = writeln!(
            out,
            "sonde_collector_duplicates_total {}",
            self.duplicates.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sonde_collector_rejected_total Agents refused, by reason"
        );
        let _ = writeln!(out, "# TYPE sonde_collector_rejected_total counter");
        for (reason, n) in self.rejections.snapshot() {
            let _ = writeln!(
                out,
                "sonde_collector_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        if let Some(rw) = &self.remote_write {
            out.push_str(&rw.prometheus());
        }
        out
    }
}
