//! Run-queue latency: time from a task becoming runnable (woken, or
//! preempted while runnable) to running, per cgroup of the task that waited.
//!
//! Hooks: `sched_wakeup`, `sched_wakeup_new` and `sched_switch`, whose
//! arguments are task pointers; the fields read from them (pid, state,
//! cgroup) come at offsets the agent takes from the running kernel's BTF
//! (`TASK_OFFSETS`). Preferred: BTF tracepoints (tp_btf, Linux 5.5+), where
//! those reads are plain loads the verifier checks against BTF. Fallback:
//! raw tracepoints (4.17+) reading through `bpf_probe_read_kernel`. There is
//! no classic tracepoint path: `sched:sched_switch` records carry no cgroup.
//! Without BTF the family is unavailable, and the agent says so.
//!
//! Who held the CPU: when a waiter is switched in, the task switched out
//! (`prev`) is the one whose run ended the wait. Its cgroup is charged the
//! wait in `RUNQ_HOLDER`, but never more than its own run on this CPU
//! (`RUNQ_ON_CPU` keeps when the running task got it); the rest of the wait
//! is charged to [`HOLDER_EARLIER`]: whoever ran before it, not tracked.
//! The idle task charges [`HOLDER_IDLE`]. So a wait is split between the
//! last holder and "earlier", not among every task that ran meanwhile: two
//! more map updates per wait where the full split would need a record of
//! every run. Where one neighbour hogs the CPU the last holder held it all
//! along; the explain test measures that.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use sonde_common::{
    family::Family,
    sched::{
        loss, HolderKey, HolderWait, HOLDER_EARLIER, HOLDER_IDLE, HOLDER_OTHER,
        RUNQ_HIST_MAX_ENTRIES, RUNQ_HOLDER_MAX_ENTRIES, RUNQ_SLOTS, RUNQ_SLOT_MASK,
    },
    task::{CgroupBucketKey, StartSlot},
};

use crate::common::{
    bump, cgroup_id_with, count_cgroup_loss, count_loss, latency_key, offsets, Direct, KernelRead,
    Probed,
};

/// `TASK_RUNNING`: a switched-out task in this state is still runnable.
const TASK_RUNNING: u32 = 0;

#[map]
static RUNQ_START: Array<StartSlot> = Array::with_max_entries(RUNQ_SLOTS, 0);

#[map]
static RUNQ_HIST: PerCpuHashMap<CgroupBucketKey, u64> =
    PerCpuHashMap::with_max_entries(RUNQ_HIST_MAX_ENTRIES, 0);

#[map]
static RUNQ_HOLDER: PerCpuHashMap<HolderKey, HolderWait> =
    PerCpuHashMap::with_max_entries(RUNQ_HOLDER_MAX_ENTRIES, 0);

/// When the task running on each CPU was switched in (ns, monotonic).
#[map]
static RUNQ_ON_CPU: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static RUNQ_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wake(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    on_wakeup::<Direct, _>(&ctx, ctx.arg::<*const u8>(0));
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wake_new(ctx: BtfTracePointContext) -> i32 {
    on_wakeup::<Direct, _>(&ctx, ctx.arg::<*const u8>(0));
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
    on_switch::<Direct, _>(&ctx, ctx.arg::<*const u8>(1), ctx.arg::<*const u8>(2));
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn sched_rwake(ctx: RawTracePointContext) -> i32 {
    on_wakeup::<Probed, _>(&ctx, ctx.arg::<*const u8>(0));
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn sched_rwake_new(ctx: RawTracePointContext) -> i32 {
    on_wakeup::<Probed, _>(&ctx, ctx.arg::<*const u8>(0));
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_rswitch(ctx: RawTracePointContext) -> i32 {
    on_switch::<Probed, _>(&ctx, ctx.arg::<*const u8>(1), ctx.arg::<*const u8>(2));
    0
}

#[inline(always)]
fn on_wakeup<R: KernelRead, C: EbpfContext>(ctx: &C, task: *const u8) {
    let Some(o) = offsets() else { return };
    match R::at::<u32>(task, o.task_pid) {
        // SAFETY: a plain helper call with no arguments.
        Ok(pid) => enqueue(ctx, pid, unsafe { bpf_ktime_get_ns() }),
        Err(_) => lost(ctx, loss::READ_FAILED),
    }
}

#[inline(always)]
fn on_switch<R: KernelRead, C: EbpfContext>(ctx: &C, prev: *const u8, next: *const u8) {
    let Some(o) = offsets() else { return };
    // SAFETY: a plain helper call with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // How long prev has held this CPU; 0 before the first switch seen here.
    let prev_since = match RUNQ_ON_CPU.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; only this CPU's
        // sched_switch writes it, with preemption off.
        Some(slot) => unsafe {
            let since = *slot;
            *slot = now;
            since
        },
        None => 0,
    };

    // A task switched out while still runnable (preempted) waits again.
    let prev_pid = R::at::<u32>(prev, o.task_pid);
    if let (Ok(state), Ok(pid)) = (R::at::<u32>(prev, o.task_state), prev_pid) {
        if state == TASK_RUNNING {
            enqueue(ctx, pid, now);
        }
    }

    let Ok(pid) = R::at::<u32>(next, o.task_pid) else {
        lost(ctx, loss::READ_FAILED);
        return;
    };
    if pid == 0 {
        return; // the idle task
    }
    let Some(slot) = RUNQ_START.get_ptr_mut(pid & RUNQ_SLOT_MASK) else {
        return;
    };
    // SAFETY: the array's preallocated value; a racing writer can only make
    // the record stale, which the stored pid reveals.
    let start = unsafe { *slot };
    if start.id != pid {
        return; // not seen becoming runnable (before attach, or a collision counted then)
    }
    // SAFETY: as above.
    unsafe { (*slot).id = 0 };
    let Ok(cgroup_id) = cgroup_id_with::<R>(&o, next) else {
        lost(ctx, loss::READ_FAILED);
        return;
    };
    let wait_ns = now.wrapping_sub(start.ts_ns);
    let key = CgroupBucketKey {
        cgroup_id,
        bucket: latency_key(wait_ns),
        _pad: 0,
    };
    if !bump(&RUNQ_HIST, &key, 1)
        && count_cgroup_loss(&RUNQ_LOSS, Family::Sched, loss::HIST_MAP_FULL, cgroup_id) == 1
    {
        debug!(
            ctx,
            "sched: first loss of kind {} on this CPU",
            loss::HIST_MAP_FULL
        );
    }
    let holder_cgroup = match prev_pid {
        Ok(0) => HOLDER_IDLE,
        Ok(_) => match cgroup_id_with::<R>(&o, prev) {
            Ok(id) => id,
            Err(_) => {
                lost(ctx, loss::READ_FAILED);
                return;
            }
        },
        Err(_) => {
            lost(ctx, loss::READ_FAILED);
            return;
        }
    };
    // The holder held the CPU since it was switched in, at most.
    let held_ns = if prev_since != 0 && prev_since <= now {
        now - prev_since
    } else {
        wait_ns
    };
    let charged = if held_ns < wait_ns { held_ns } else { wait_ns };
    charge(ctx, cgroup_id, holder_cgroup, charged, 1);
    if charged < wait_ns {
        charge(ctx, cgroup_id, HOLDER_EARLIER, wait_ns - charged, 0);
    }
}

/// Charges (part of) a wait to a holder; once the map has no room for the
/// pair, to the victim's [`HOLDER_OTHER`] row; failing that, counts a loss.
#[inline(always)]
fn charge<C: EbpfContext>(
    ctx: &C,
    victim_cgroup: u64,
    holder_cgroup: u64,
    wait_ns: u64,
    waits: u64,
) {
    let pair = HolderKey {
        victim_cgroup,
        holder_cgroup,
    };
    let other = HolderKey {
        victim_cgroup,
        holder_cgroup: HOLDER_OTHER,
    };
    if !add_wait(&pair, wait_ns, waits) && !add_wait(&other, wait_ns, waits) {
        lost(ctx, loss::HOLDER_MAP_FULL);
    }
}

#[inline(always)]
fn add_wait(key: &HolderKey, wait_ns: u64, waits: u64) -> bool {
    for _ in 0..2 {
        if let Some(value) = RUNQ_HOLDER.get_ptr_mut(key) {
            // SAFETY: this CPU's value of an entry that stays valid while the
            // program runs; its one writer is this program on this CPU.
            unsafe {
                (*value).wait_ns += wait_ns;
                (*value).waits += waits;
            }
            return true;
        }
        let first = HolderWait { wait_ns, waits };
        if RUNQ_HOLDER.insert(key, first, BPF_NOEXIST as u64).is_ok() {
            return true;
        }
        // Another CPU may have inserted the key meanwhile (EEXIST): look again.
    }
    false
}

#[inline(always)]
fn enqueue<C: EbpfContext>(ctx: &C, pid: u32, now: u64) {
    if pid == 0 {
        return;
    }
    let Some(slot) = RUNQ_START.get_ptr_mut(pid & RUNQ_SLOT_MASK) else {
        return;
    };
    // SAFETY: as in `on_switch`.
    unsafe {
        let owner = (*slot).id;
        if owner != 0 && owner != pid {
            lost(ctx, loss::START_COLLISION);
        }
        *slot = StartSlot {
            id: pid,
            _pad: 0,
            ts_ns: now,
        };
    }
}

#[inline(always)]
fn lost<C: EbpfContext>(ctx: &C, index: u32) {
    if count_loss(&RUNQ_LOSS, index) == 1 {
        debug!(ctx, "sched: first loss of kind {} on this CPU", index);
    }
}
