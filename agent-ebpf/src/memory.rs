//! Memory pressure: reclaim stalls (a task allocating memory had to reclaim
//! it first) per cgroup, and OOM kills per cgroup, each kill also an event.
//!
//! Hooks (raw tracepoints, Linux 4.17+): `mm_vmscan_direct_reclaim_begin`/
//! `_end` (global reclaim) and `mm_vmscan_memcg_reclaim_begin`/`_end`
//! (reclaim against a cgroup's limit, CONFIG_MEMCG); their arguments are
//! scalars and the stalled task is the current one. `mark_victim` (the OOM
//! killer's choice): its first argument is the victim task on kernels whose
//! BTF says so (6.x), else the victim's pid (then the cgroup is that of the
//! task that ran out of memory, and the event is flagged).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use sonde_common::{
    events::{flag, kind, Event},
    family::Family,
    memory::{loss, OOM_MAX_ENTRIES, RECLAIM_HIST_MAX_ENTRIES, RECLAIM_SLOTS, RECLAIM_SLOT_MASK},
    task::{CgroupBucketKey, StartSlot},
};

use crate::common::{
    bump, count_cgroup_loss, count_loss, emit, latency_key, offsets, read, task_cgroup_id,
    task_comm, task_pid,
};

/// 1 when `mark_victim`'s first argument is a task pointer (set by the agent
/// from the kernel's BTF), 0 when it is a pid.
#[no_mangle]
static MARK_VICTIM_TASK_ARG: Global<u32> = Global::new(0);

#[map]
static RECLAIM_START: Array<StartSlot> = Array::with_max_entries(RECLAIM_SLOTS, 0);

#[map]
static RECLAIM_HIST: PerCpuHashMap<CgroupBucketKey, u64> =
    PerCpuHashMap::with_max_entries(RECLAIM_HIST_MAX_ENTRIES, 0);

#[map]
static OOM_KILLS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(OOM_MAX_ENTRIES, 0);

#[map]
static MEM_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_begin")]
pub fn mem_reclaim_beg(_ctx: RawTracePointContext) -> i32 {
    reclaim_begin();
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_end")]
pub fn mem_reclaim_end(ctx: RawTracePointContext) -> i32 {
    reclaim_end(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_begin")]
pub fn mem_memcg_beg(_ctx: RawTracePointContext) -> i32 {
    reclaim_begin();
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn mem_memcg_end(ctx: RawTracePointContext) -> i32 {
    reclaim_end(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mem_oom_victim(ctx: RawTracePointContext) -> i32 {
    if try_oom(ctx.arg::<u64>(0)).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[inline(always)]
fn reclaim_begin() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(slot) = RECLAIM_START.get_ptr_mut(tid & RECLAIM_SLOT_MASK) {
        // SAFETY: the array's preallocated value; the stored id reveals a
        // record made stale by a racing thread with the same slot.
        unsafe {
            *slot = StartSlot {
                id: tid,
                _pad: 0,
                ts_ns: bpf_ktime_get_ns(),
            }
        };
    }
}

#[inline(always)]
fn reclaim_end<C: EbpfContext>(ctx: &C) {
    // SAFETY: a plain helper call with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = RECLAIM_START.get_ptr_mut(tid & RECLAIM_SLOT_MASK) else {
        return;
    };
    // SAFETY: as in `reclaim_begin`.
    let start = unsafe { *slot };
    if start.id != tid {
        return;
    }
    // SAFETY: as above.
    unsafe { (*slot).id = 0 };
    // SAFETY: a plain helper call with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let key = CgroupBucketKey {
        cgroup_id,
        bucket: latency_key(now.wrapping_sub(start.ts_ns)),
        _pad: 0,
    };
    if !bump(&RECLAIM_HIST, &key, 1)
        && count_cgroup_loss(&MEM_LOSS, Family::Memory, loss::HIST_MAP_FULL, cgroup_id) == 1
    {
        debug!(
            ctx,
            "memory: first loss of kind {} on this CPU",
            loss::HIST_MAP_FULL
        );
    }
}

#[inline(always)]
fn try_oom(arg: u64) -> Result<(), i32> {
    let mut event = Event {
        kind: kind::OOM_KILL,
        ..Event::default()
    };
    match offsets() {
        Some(o) if MARK_VICTIM_TASK_ARG.load() == 1 => {
            let task = arg as *const u8;
            event.pid = task_pid(&o, task)?;
            event.tgid = read(task, o.task_tgid)?;
            event.cgroup_id = task_cgroup_id(&o, task)?;
            event.comm = task_comm(&o, task)?;
        }
        _ => {
            event.pid = arg as u32;
            event.tgid = arg as u32;
            // SAFETY: plain helper calls.
            event.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
            event.comm = bpf_get_current_comm()?;
            event.flags = flag::CGROUP_OF_CURRENT;
        }
    }
    if !bump(&OOM_KILLS, &event.cgroup_id, 1) {
        count_cgroup_loss(
            &MEM_LOSS,
            Family::Memory,
            loss::OOM_MAP_FULL,
            event.cgroup_id,
        );
    }
    emit(event);
    Ok(())
}

#[inline(always)]
fn lost<C: EbpfContext>(ctx: &C, index: u32) {
    if count_loss(&MEM_LOSS, index) == 1 {
        debug!(ctx, "memory: first loss of kind {} on this CPU", index);
    }
}
