//! Interrupt family: time the CPUs spend in hard interrupt handlers (per IRQ
//! number) and in softirqs (per vector), per CPU, with handler-duration
//! histograms.

/// Softirq vectors the kernel has (`NR_SOFTIRQS`): HI, TIMER, NET_TX,
/// NET_RX, BLOCK, IRQ_POLL, TASKLET, SCHED, HRTIMER, RCU. Fixed since 4.x
/// (IRQ_POLL took BLOCK_IOPOLL's place in 4.5).
pub const NR_SOFTIRQS: u32 = 10;

/// The vectors' names, as `/proc/softirqs` prints them, by vector number.
pub const SOFTIRQ_NAMES: [&str; NR_SOFTIRQS as usize] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// Default bound of `HARDIRQ_TOTALS` (keys are IRQ numbers).
pub const HARDIRQ_MAX_ENTRIES: u32 = 2048;
/// Default bound of `IRQ_HIST` (keys are (kind, number, bucket)).
pub const IRQ_HIST_MAX_ENTRIES: u32 = 1 << 13;

/// `IrqBucketKey::kind` of a hard interrupt handler (number: the IRQ).
pub const KIND_HARD: u32 = 0;
/// `IrqBucketKey::kind` of a softirq (number: the vector).
pub const KIND_SOFT: u32 = 1;

/// Entries and handler time of one IRQ or vector on one CPU (a per-CPU
/// value: the agent reads each CPU's apart).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqTotals {
    /// Handler entries, counted at entry as the kernel's own
    /// `/proc/interrupts` and `/proc/softirqs` counts are.
    pub count: u64,
    /// Time in the handler, ns, counted at exit. A softirq's excludes the
    /// hard interrupt handlers that ran inside it.
    pub time_ns: u64,
}

/// A histogram bucket of one IRQ's or vector's handler durations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqBucketKey {
    /// `KIND_HARD` or `KIND_SOFT`.
    pub kind: u32,
    /// IRQ number or softirq vector.
    pub number: u32,
    /// Histogram bucket key (`hist::bucket_key` of the binary ns).
    pub bucket: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// What one CPU is in the middle of: the start of the hard interrupt
/// handler and of the softirq running on it, and the hard handler time so
/// far (to take out of the softirq it interrupted). Handlers of one kind do
/// not nest on a CPU: hard ones run with interrupts off, softirqs are not
/// re-entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqCpu {
    /// Start of the running hard handler, ns (0: none).
    pub hard_start_ns: u64,
    /// Start of the running softirq, ns (0: none).
    pub soft_start_ns: u64,
    /// Hard handler time on this CPU since boot, ns.
    pub hard_ns: u64,
    /// `hard_ns` when the running softirq began.
    pub hard_ns_at_soft: u64,
    /// IRQ of the running hard handler.
    pub hard_irq: u32,
    /// Vector of the running softirq.
    pub soft_vec: u32,
}

/// Indices of the per-CPU `IRQ_LOSS` counters.
pub mod loss {
    /// A hard IRQ's entry or time was dropped: `HARDIRQ_TOTALS` was full.
    pub const TOTALS_MAP_FULL: u32 = 0;
    /// A duration was dropped from the histograms: `IRQ_HIST` was full.
    pub const HIST_MAP_FULL: u32 = 1;
    /// A vector number past `NR_SOFTIRQS` (a kernel with more vectors).
    pub const UNKNOWN_VECTOR: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

const _: () = assert!(core::mem::size_of::<IrqTotals>() == 16);
const _: () = assert!(core::mem::size_of::<IrqBucketKey>() == 16);
const _: () = assert!(core::mem::size_of::<IrqCpu>() == 40);

#[cfg(feature = "user")]
user_pod!(IrqTotals, IrqBucketKey, IrqCpu);
