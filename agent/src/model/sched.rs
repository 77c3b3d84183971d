//! Who held the CPU while a cgroup's tasks waited for it: the run-queue
//! wait of each victim cgroup, charged to the cgroup whose task was switched
//! out as the waiter was switched in.

use serde::{Deserialize, Serialize};

use super::CgroupRef;

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
