//! Scheduler family: run-queue latency (wakeup → on CPU) per cgroup.

/// Slots in `RUNQ_START`, indexed by `pid & RUNQ_SLOT_MASK`.
pub const RUNQ_SLOTS: u32 = 1 << 16;
/// Mask that turns a pid into a slot index.
pub const RUNQ_SLOT_MASK: u32 = RUNQ_SLOTS - 1;
/// Default bound of `RUNQ_HIST` (keys are (cgroup, bucket)).
pub const RUNQ_HIST_MAX_ENTRIES: u32 = 1 << 14;

/// Indices of the per-CPU `RUNQ_LOSS` counters.
pub mod loss {
    /// A sample was dropped because `RUNQ_HIST` was full.
    pub const HIST_MAP_FULL: u32 = 0;
    /// An enqueue overwrote another task's pending start slot.
    pub const START_COLLISION: u32 = 1;
    /// A kernel read (task fields) failed: the sample is dropped.
    pub const READ_FAILED: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}
