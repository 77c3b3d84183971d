//! The scheduler family's part of a window: run-queue latency per cgroup,
//! and who held the CPU while a cgroup's tasks waited for it (the run-queue
//! wait of each victim cgroup, charged to the cgroup whose task was
//! switched out as the waiter was switched in).

use std::fmt::Write as _;

use super::text::{cgroup_label, latencies, secs, truncate_left, Text};

use serde::{Deserialize, Serialize};

use super::{CgroupLatency, CgroupRef};

/// The scheduler family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Run-queue latency (runnable → running) per cgroup, most waited first.
    pub runqueue: Vec<CgroupLatency>,
    /// Run-queue wait per cgroup by who held the CPU when each wait ended,
    /// most waited first.
    pub runqueue_holders: Vec<CgroupHolders>,
}

/// What `sonde top` reads of the family for its header: nothing.
pub type TopPart = super::top::NoHeader;

/// Holders named per victim; the rest are summed in `rest`.
pub const MAX_HOLDERS: usize = 5;

/// One victim cgroup's run-queue wait in the window, by holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupHolders {
    /// The cgroup whose tasks waited.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Seconds its tasks waited, every holder summed (idle included).
    pub wait_secs: f64,
    /// Waits that ended in the window.
    pub waits: u64,
    /// Of those, the seconds of waits that ended with the CPU idle: nobody
    /// held it (a wakeup on, or a move to, an idle CPU).
    pub idle_wait_secs: f64,
    /// Of those, the seconds before each wait's holder got the CPU (a wait
    /// is charged to its last holder for at most that holder's run): held
    /// by whoever ran earlier, not tracked one by one.
    pub earlier_wait_secs: f64,
    /// The heaviest holders (at most [`MAX_HOLDERS`]), most wait first.
    pub holders: Vec<Holder>,
    /// Every holder beyond those, summed, with the waits the kernel could
    /// not file under their own holder (its table was full).
    pub rest: HolderRest,
}

/// A cgroup that held the CPU while the victim waited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder. The victim itself when its own tasks held the CPU.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Seconds of the victim's waits that ended under this holder.
    pub wait_secs: f64,
    /// Those waits.
    pub waits: u64,
}

/// Holders not named one by one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HolderRest {
    /// How many holders are summed here (the kernel's overflow row not
    /// counted: it names none).
    pub holders: u64,
    /// Their seconds of wait.
    pub wait_secs: f64,
    /// Their waits.
    pub waits: u64,
    /// Of `waits`, those the kernel summed without a holder because its
    /// table (`RUNQ_HOLDER`) had no room for the pair.
    pub overflow_waits: u64,
}

impl CgroupHolders {
    /// The heaviest holder other than the victim itself and idle, if any.
    pub fn main_neighbour(&self) -> Option<&Holder> {
        self.holders
            .iter()
            .find(|h| h.cgroup.cgroup_id != self.cgroup.cgroup_id)
    }
}

/// Run-queue waits per cgroup, then who held the CPU.
impl Text for Part {
    fn text(&self, out: &mut String, top: usize) {
        latencies(out, "RUN QUEUE WAIT (cgroup)", &self.runqueue, top);
        holders(out, &self.runqueue_holders, top);
    }
}

/// Who held the CPU when each cgroup's waits ended: the victim, its wait,
/// the share that ended with the CPU idle, and its heaviest holders.
fn holders(out: &mut String, rows: &[CgroupHolders], top: usize) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>6}  HOLDERS (share of the wait)",
        "RUN QUEUE WAIT BY HOLDER (cgroup)", "TOTAL", "IDLE"
    );
    for row in rows.iter().take(top) {
        let share = |secs: f64| {
            if row.wait_secs > 0.0 {
                100.0 * secs / row.wait_secs
            } else {
                0.0
            }
        };
        let mut named: Vec<String> = row
            .holders
            .iter()
            .map(|h| {
                let who = if h.cgroup.cgroup_id == row.cgroup.cgroup_id {
                    "(itself)".to_owned()
                } else {
                    cgroup_label(&h.cgroup)
                };
                format!("{who} {:.0}%", share(h.wait_secs))
            })
            .collect();
        if row.rest.waits > 0 {
            named.push(format!("other {:.0}%", share(row.rest.wait_secs)));
        }
        if row.earlier_wait_secs > 0.0 {
            named.push(format!("earlier {:.0}%", share(row.earlier_wait_secs)));
        }
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>5.0}%  {}",
            truncate_left(&cgroup_label(&row.cgroup), 44),
            secs(Some(row.wait_secs)),
            share(row.idle_wait_secs),
            named.join(", ")
        );
    }
}
