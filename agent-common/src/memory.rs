//! Memory family: reclaim stalls and OOM kills per cgroup.

/// Slots in `RECLAIM_START`, indexed by `tid & RECLAIM_SLOT_MASK`.
pub const RECLAIM_SLOTS: u32 = 1 << 14;
/// Mask that turns a thread id into a slot index.
pub const RECLAIM_SLOT_MASK: u32 = RECLAIM_SLOTS - 1;
/// Default bound of `RECLAIM_HIST` (keys are (cgroup, bucket)).
pub const RECLAIM_HIST_MAX_ENTRIES: u32 = 1 << 13;
/// Default bound of `OOM_KILLS` (keys are cgroup ids).
pub const OOM_MAX_ENTRIES: u32 = 1 << 12;

/// Indices of the per-CPU `MEM_LOSS` counters.
pub mod loss {
    /// A reclaim stall was dropped because `RECLAIM_HIST` was full.
    pub const HIST_MAP_FULL: u32 = 0;
    /// An OOM kill was dropped because `OOM_KILLS` was full.
    pub const OOM_MAP_FULL: u32 = 1;
    /// A kernel read (task fields) failed.
    pub const READ_FAILED: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}
