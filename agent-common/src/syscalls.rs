//! Syscall family: latency per (cgroup, syscall) and failures per (cgroup, syscall, errno).

/// Slots in `SYSCALL_START`, indexed by `tid & START_SLOT_MASK`. A power of
/// two; a slot records which thread owns it, so a collision is detected.
pub const START_SLOTS: u32 = 1 << 16;
/// Mask that turns a thread id into a slot index.
pub const START_SLOT_MASK: u32 = START_SLOTS - 1;
/// Default bound of `SYSCALL_HIST` (keys are (cgroup, syscall, bucket)).
pub const HIST_MAX_ENTRIES: u32 = 1 << 16;
/// Default bound of `SYSCALL_ERRORS` (keys are (cgroup, syscall, errno)).
pub const ERR_MAX_ENTRIES: u32 = 1 << 14;
/// The largest errno the kernel returns (`MAX_ERRNO`): a return value in
/// `[-MAX_ERRNO, -1]` is a failure.
pub const MAX_ERRNO: i64 = 4095;

/// Indices of the per-CPU `SYSCALL_LOSS` counters.
pub mod loss {
    /// A latency sample was dropped because `SYSCALL_HIST` was full.
    pub const HIST_MAP_FULL: u32 = 0;
    /// A failure was dropped because `SYSCALL_ERRORS` was full.
    pub const ERR_MAP_FULL: u32 = 1;
    /// A syscall entry overwrote another thread's in-flight start slot; that
    /// thread's sample (latency and failure) is lost.
    pub const START_COLLISION: u32 = 2;
    /// An exit without a recorded entry: a syscall that began before the
    /// probes were attached, or the victim of a collision counted above.
    /// Informational, not a loss.
    pub const EXIT_UNMATCHED: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

/// Start of an in-flight syscall, one per slot of `SYSCALL_START`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallStart {
    /// Thread that owns the slot; 0 when free.
    pub tid: u32,
    /// Syscall number recorded at entry.
    pub nr: u32,
    /// `bpf_ktime_get_ns()` at entry.
    pub start_ns: u64,
}

/// Key of `SYSCALL_HIST`: one latency bucket of one syscall in one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallHistKey {
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Syscall number (architecture-specific).
    pub nr: u32,
    /// Biased bucket key from [`crate::hist::bucket_key`] of the latency in
    /// binary nanoseconds.
    pub bucket: u32,
}

/// Key of `SYSCALL_ERRORS`: failures of one syscall with one errno in one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallErrKey {
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Syscall number (architecture-specific).
    pub nr: u32,
    /// Positive errno.
    pub errno: u32,
}

const _: () = assert!(core::mem::size_of::<SyscallStart>() == 16);
const _: () = assert!(core::mem::size_of::<SyscallHistKey>() == 16);
const _: () = assert!(core::mem::size_of::<SyscallErrKey>() == 16);

#[cfg(feature = "user")]
user_pod!(SyscallHistKey, SyscallErrKey, SyscallStart);
