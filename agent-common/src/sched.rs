//! Scheduler family: run-queue latency (wakeup → on CPU) per cgroup, and
//! the wait each cgroup's tasks caused others (who held the CPU).

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
    /// A wait could not be charged to any holder: `RUNQ_HOLDER` had room
    /// neither for its (victim, holder) pair nor for the victim's
    /// [`super::HOLDER_OTHER`] row.
    pub const HOLDER_MAP_FULL: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

/// Bound of `RUNQ_HOLDER` (keys are (victim cgroup, holder cgroup)).
pub const RUNQ_HOLDER_MAX_ENTRIES: u32 = 1 << 12;
/// Holder of a wait that ended with the CPU idle: nobody held it (the
/// waiter was woken on, or moved to, an idle CPU).
pub const HOLDER_IDLE: u64 = 0;
/// The part of a wait older than its holder's run on the CPU: the time
/// before the holder got the CPU, held by whoever ran then (not tracked).
pub const HOLDER_EARLIER: u64 = u64::MAX - 1;
/// Holder under which a victim's waits are summed once `RUNQ_HOLDER` has no
/// room for its (victim, holder) pair: counted, never dropped while the
/// victim's own row fits.
pub const HOLDER_OTHER: u64 = u64::MAX;

/// Whether a holder id names a cgroup (not one of the sentinels).
pub const fn is_cgroup(holder_cgroup: u64) -> bool {
    !matches!(holder_cgroup, HOLDER_IDLE | HOLDER_EARLIER | HOLDER_OTHER)
}

/// Key of `RUNQ_HOLDER`: who waited, and whose task held the CPU when the
/// wait ended (the task switched out as the waiter was switched in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HolderKey {
    /// cgroup v2 id of the task that waited.
    pub victim_cgroup: u64,
    /// cgroup v2 id of the task that held the CPU, [`HOLDER_IDLE`],
    /// [`HOLDER_EARLIER`] or [`HOLDER_OTHER`].
    pub holder_cgroup: u64,
}

/// Value of `RUNQ_HOLDER` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderWait {
    /// Nanoseconds waited.
    pub wait_ns: u64,
    /// Waits that ended (counted under their holder, not under
    /// [`HOLDER_EARLIER`]).
    pub waits: u64,
}

const _: () = assert!(core::mem::size_of::<HolderKey>() == 16);
const _: () = assert!(core::mem::size_of::<HolderWait>() == 16);

#[cfg(feature = "user")]
user_pod!(HolderKey, HolderWait);
