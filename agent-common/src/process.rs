//! Process family: terminations by signal and non-zero exits per cgroup.

/// Default bound of `PROC_EXITS`.
pub const EXITS_MAX_ENTRIES: u32 = 1 << 12;

/// How a process ended, in [`ExitKey::how`].
pub mod how {
    /// Killed by a signal (`code` is the signal).
    pub const SIGNAL: u32 = 0;
    /// Exited with a non-zero status (`code` is the status).
    pub const STATUS: u32 = 1;
}

/// Indices of the per-CPU `PROC_LOSS` counters.
pub mod loss {
    /// An exit was dropped because `PROC_EXITS` was full.
    pub const MAP_FULL: u32 = 0;
    /// A kernel read (task fields) failed.
    pub const READ_FAILED: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// Key of `PROC_EXITS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExitKey {
    /// cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// One of [`how`].
    pub how: u32,
    /// Signal number or exit status.
    pub code: u32,
}

const _: () = assert!(core::mem::size_of::<ExitKey>() == 16);

/// Signals that count as crashes (and are sent as events): SIGILL, SIGABRT,
/// SIGBUS, SIGFPE, SIGKILL, SIGSEGV (numbers shared by x86_64 and aarch64).
pub const CRASH_SIGNALS: u64 = (1 << 4) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 11);

#[cfg(feature = "user")]
user_pod!(ExitKey);
