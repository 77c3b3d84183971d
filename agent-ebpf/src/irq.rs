//! Interrupts: entries and handler time of hard IRQs (per IRQ number) and
//! softirqs (per vector), per CPU, and handler-duration histograms.
//!
//! Hooks: the raw tracepoints `irq_handler_entry`/`irq_handler_exit`
//! (`int irq, struct irqaction *action[, int ret]`) and
//! `softirq_entry`/`softirq_exit` (`unsigned int vec_nr`), Linux 4.17+:
//! scalar arguments only, so no kernel struct is read and no tracefs is
//! needed. No fallback: without raw tracepoints the family is unavailable.
//!
//! Entries are counted at entry, as the kernel counts them in
//! `/proc/interrupts` (per flow-handler call, before the handlers run) and
//! `/proc/softirqs` (just before `softirq_entry`), so that the agent can
//! check its counts against those files. Time is counted at exit. A hard
//! handler cannot be interrupted by another (interrupts are off while it
//! runs) and a softirq cannot be by another softirq, so one start slot of
//! each kind per CPU is enough. A softirq's time leaves out the hard
//! handlers that ran inside it; interrupts that are not IRQ handlers (the
//! local timer, IPIs) have no tracepoint here and stay in it.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use sonde_common::{
    hist::latency_bucket_key,
    irq::{
        loss, IrqBucketKey, IrqCpu, IrqTotals, HARDIRQ_MAX_ENTRIES, IRQ_HIST_MAX_ENTRIES,
        KIND_HARD, KIND_SOFT, NR_SOFTIRQS,
    },
};

use crate::common::{bump, count_loss};

/// This CPU's handlers in progress.
#[map]
static IRQ_CPU: PerCpuArray<IrqCpu> = PerCpuArray::with_max_entries(1, 0);

/// Per softirq vector (the index), per CPU.
#[map]
static SOFTIRQ_TOTALS: PerCpuArray<IrqTotals> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

/// Per IRQ number, per CPU.
#[map]
static HARDIRQ_TOTALS: PerCpuHashMap<u32, IrqTotals> =
    PerCpuHashMap::with_max_entries(HARDIRQ_MAX_ENTRIES, 0);

/// Handler durations per (kind, number, bucket).
#[map]
static IRQ_HIST: PerCpuHashMap<IrqBucketKey, u64> =
    PerCpuHashMap::with_max_entries(IRQ_HIST_MAX_ENTRIES, 0);

#[map]
static IRQ_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

#[raw_tracepoint(tracepoint = "irq_handler_entry")]
pub fn irq_hard_entry(ctx: RawTracePointContext) -> i32 {
    hard_entry(ctx.arg::<u32>(0));
    0
}

#[raw_tracepoint(tracepoint = "irq_handler_exit")]
pub fn irq_hard_exit(ctx: RawTracePointContext) -> i32 {
    hard_exit(ctx.arg::<u32>(0));
    0
}

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn irq_soft_entry(ctx: RawTracePointContext) -> i32 {
    soft_entry(ctx.arg::<u32>(0));
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn irq_soft_exit(ctx: RawTracePointContext) -> i32 {
    soft_exit(ctx.arg::<u32>(0));
    0
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a plain helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn hard_entry(irq: u32) {
    let now = now_ns();
    if let Some(cpu) = IRQ_CPU.get_ptr_mut(0) {
        // SAFETY: this CPU's value; hard handlers do not nest, so nothing
        // else on this CPU writes it meanwhile.
        unsafe {
            (*cpu).hard_start_ns = now;
            (*cpu).hard_irq = irq;
        }
    }
    let counted = match HARDIRQ_TOTALS.get_ptr_mut(irq) {
        Some(t) => {
            // SAFETY: this CPU's value of an entry that stays while the
            // program runs.
            unsafe { (*t).count += 1 };
            true
        }
        None => HARDIRQ_TOTALS
            .insert(
                irq,
                IrqTotals {
                    count: 1,
                    time_ns: 0,
                },
                0,
            )
            .is_ok(),
    };
    if !counted {
        count_loss(&IRQ_LOSS, loss::TOTALS_MAP_FULL);
    }
}

#[inline(always)]
fn hard_exit(irq: u32) {
    let now = now_ns();
    let Some(cpu) = IRQ_CPU.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `hard_entry`.
    let state = unsafe { *cpu };
    if state.hard_start_ns == 0 || state.hard_irq != irq {
        return; // entered before the program was attached
    }
    let ns = now.saturating_sub(state.hard_start_ns);
    // SAFETY: as above.
    unsafe {
        (*cpu).hard_start_ns = 0;
        (*cpu).hard_ns += ns;
    }
    // Missing only when the map was full at entry, which counted the loss.
    if let Some(t) = HARDIRQ_TOTALS.get_ptr_mut(irq) {
        // SAFETY: as in `hard_entry`.
        unsafe { (*t).time_ns += ns };
    }
    histogram(KIND_HARD, irq, ns);
}

#[inline(always)]
fn soft_entry(vec: u32) {
    let now = now_ns();
    let Some(totals) = SOFTIRQ_TOTALS.get_ptr_mut(vec) else {
        count_loss(&IRQ_LOSS, loss::UNKNOWN_VECTOR);
        return;
    };
    // SAFETY: this CPU's preallocated value; softirqs do not nest.
    unsafe { (*totals).count += 1 };
    if let Some(cpu) = IRQ_CPU.get_ptr_mut(0) {
        // SAFETY: this CPU's value. A hard handler that interrupts this
        // program writes other fields of it (its start, its irq) and adds
        // to `hard_ns` only at its exit, which this read sees whole or not.
        unsafe {
            (*cpu).soft_start_ns = now;
            (*cpu).soft_vec = vec;
            (*cpu).hard_ns_at_soft = (*cpu).hard_ns;
        }
    }
}

#[inline(always)]
fn soft_exit(vec: u32) {
    let now = now_ns();
    let Some(cpu) = IRQ_CPU.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `soft_entry`.
    let state = unsafe { *cpu };
    if state.soft_start_ns == 0 || state.soft_vec != vec {
        return; // entered before the program was attached
    }
    // SAFETY: as above.
    unsafe { (*cpu).soft_start_ns = 0 };
    let hard = state.hard_ns.saturating_sub(state.hard_ns_at_soft);
    let ns = now.saturating_sub(state.soft_start_ns).saturating_sub(hard);
    if let Some(totals) = SOFTIRQ_TOTALS.get_ptr_mut(vec) {
        // SAFETY: this CPU's preallocated value.
        unsafe { (*totals).time_ns += ns };
    }
    histogram(KIND_SOFT, vec, ns);
}

#[inline(always)]
fn histogram(kind: u32, number: u32, ns: u64) {
    let key = IrqBucketKey {
        kind,
        number,
        bucket: latency_bucket_key(ns),
        _pad: 0,
    };
    if !bump(&IRQ_HIST, &key, 1) {
        count_loss(&IRQ_LOSS, loss::HIST_MAP_FULL);
    }
}
