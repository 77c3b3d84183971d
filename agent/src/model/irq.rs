//! The interrupt family's window: where the CPUs' time went to hard IRQ
//! handlers and softirqs, and the check of its counts against the kernel's
//! own (`/proc/softirqs`, `/proc/interrupts`).

use serde::Serialize;
use sonde_slo::Histogram;

/// Interrupts over one window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IrqWindow {
    /// Time in hard IRQ handlers, all CPUs, seconds.
    pub hardirq_secs: f64,
    /// Time in softirqs (without the hard handlers inside them), all
    /// CPUs, seconds.
    pub softirq_secs: f64,
    /// Both, as a share of all online CPUs' time over the window.
    pub utilization: f64,
    /// Per CPU that handled any, busiest first.
    pub cpus: Vec<CpuInterrupts>,
    /// Softirq vectors that ran in the window, most time first.
    pub softirqs: Vec<InterruptLine>,
    /// Hard IRQs whose handlers ran in the window, most time first.
    pub irqs: Vec<InterruptLine>,
    /// sonde's entries against the kernel's, per vector or IRQ and CPU;
    /// `None` when the family did not count through the whole window.
    pub check: Option<IrqCheck>,
}

/// One CPU's time in interrupts over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuInterrupts {
    /// CPU number.
    pub cpu: u32,
    /// Seconds in hard IRQ handlers.
    pub hardirq_secs: f64,
    /// Seconds in softirqs.
    pub softirq_secs: f64,
    /// Both, as a share of the window.
    pub utilization: f64,
}

/// One softirq vector or hard IRQ over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InterruptLine {
    /// The vector's name (`NET_RX`), or the IRQ's number.
    pub name: String,
    /// The IRQ's handlers (`virtio1-req.0`), from `/proc/interrupts`;
    /// `None` for a vector, or an IRQ gone from that file.
    pub handler: Option<String>,
    /// Handler entries, all CPUs.
    pub count: u64,
    /// Time in the handler, all CPUs, seconds.
    pub time_secs: f64,
    /// Per CPU: (CPU, entries, seconds), CPUs with entries only.
    pub per_cpu: Vec<(u32, u64, f64)>,
    /// Median handler duration, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile handler duration, seconds.
    pub p99_secs: Option<f64>,
    /// Handler durations.
    pub duration: Histogram,
}

/// The check of a window's entries against the kernel's counters, read
/// just before and just after each of the window's two map reads: the
/// kernel's count over the window lies between `kernel_min` (its counts
/// between the inner reads) and `kernel_max` (between the outer ones), and
/// sonde's must too.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IrqCheck {
    /// Every (vector or IRQ, CPU) checked was within its bounds.
    pub ok: bool,
    /// (softirq vector, CPU) pairs checked.
    pub softirq_pairs: u64,
    /// (IRQ, CPU) pairs checked: IRQs with one handler each (a shared line
    /// runs every handler per interrupt, which the kernel counts once).
    pub irq_pairs: u64,
    /// sonde's softirq entries in the window.
    pub softirq_entries: u64,
    /// sonde's entries of the IRQs checked.
    pub irq_entries: u64,
    /// Those out of bounds.
    pub mismatches: Vec<IrqMismatch>,
}

/// A (vector or IRQ, CPU) whose entries sonde counted outside the kernel's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrqMismatch {
    /// `softirq` or `irq`.
    pub kind: &'static str,
    /// Vector name or IRQ number.
    pub name: String,
    /// CPU.
    pub cpu: u32,
    /// sonde's count.
    pub sonde: u64,
    /// The kernel's count between the inner reads.
    pub kernel_min: u64,
    /// The kernel's count between the outer reads.
    pub kernel_max: u64,
}
