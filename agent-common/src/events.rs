//! Rare, high-value events sent to the agent through one ring buffer, so
//! that a person can see *which* process or connection, not only how many.
//!
//! Three record types share the ring: [`Event`] (a task: OOM kill, crash),
//! `tcp::TcpEvent` (a connection: reset, failed connect) and
//! `block::BlockEvent` (a failed block request). Each begins with its
//! `kind`, which says which one a record is.

use crate::task::COMM_LEN;

/// Size of the `EVENTS` ring buffer in bytes (a power of two, page multiple).
pub const RING_BYTES: u32 = 1 << 18;

/// Event kinds, also the indices of the per-CPU `EVENT_LOSS` counters.
pub mod kind {
    /// A task chosen by the OOM killer (`code`: 0).
    pub const OOM_KILL: u32 = 0;
    /// A process ended by a fatal signal (`code`: the signal).
    pub const CRASH: u32 = 1;
    /// A TCP reset sent (a `TcpEvent`; `code`: the kernel's reset reason).
    pub const TCP_RESET_SENT: u32 = 2;
    /// A TCP reset received (a `TcpEvent`).
    pub const TCP_RESET_RECEIVED: u32 = 3;
    /// A connect that failed (a `TcpEvent`; `code`: the errno).
    pub const TCP_CONNECT_FAILED: u32 = 4;
    /// A block request that completed with an error (a `block::BlockEvent`).
    pub const IO_ERROR: u32 = 5;
    /// Number of kinds.
    pub const COUNT: u32 = 6;

    /// Whether records of `kind` are `TcpEvent`s.
    pub const fn is_tcp(kind: u32) -> bool {
        matches!(
            kind,
            TCP_RESET_SENT | TCP_RESET_RECEIVED | TCP_CONNECT_FAILED
        )
    }
}

/// Event flags.
pub mod flag {
    /// `cgroup_id` is that of the task that triggered the event, not of its
    /// subject (the kernel's hook did not say which task the subject was).
    pub const CGROUP_OF_CURRENT: u32 = 1;
    /// The process dumped core.
    pub const CORE_DUMPED: u32 = 2;
}

/// One event record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// One of [`kind`].
    pub kind: u32,
    /// Subject thread id.
    pub pid: u32,
    /// Subject process id.
    pub tgid: u32,
    /// Kind-specific: the signal of a crash.
    pub code: u32,
    /// cgroup v2 id of the subject.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` when it happened.
    pub ts_ns: u64,
    /// Subject command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Bits of [`flag`].
    pub flags: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Event>() == 56);
