//! Process terminations: by signal (crashes) and by non-zero exit status,
//! per cgroup; each crash also as an event.
//!
//! Hook: the classic tracepoint `sched:sched_process_exit`, which fires in
//! the exiting task (`bpf_get_current_task`), after `exit_code` is set. Not
//! the raw tracepoint first: where the kernel runs tracepoint callbacks
//! preemptibly (seen on 7.2), a raw tracepoint program preempted on a CPU
//! makes the kernel skip it for every other task exiting there meanwhile
//! (its `recursion_misses`; vm-test saw 1 to 3 of 9 exits lost that way in
//! most boots), while the perf path that runs classic tracepoint programs
//! keeps preemption off. The raw tracepoint (Linux 4.17+; its first argument
//! is the task) is the fallback where tracefs cannot be had. Fields come at
//! BTF offsets (`TASK_OFFSETS`); without BTF the family is unavailable. Only
//! the thread-group leader is counted: one per process.

use aya_ebpf::{
    helpers::bpf_get_current_task,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use sonde_common::{
    events::{flag, kind, Event},
    family::Family,
    process::{how, loss, ExitKey, CRASH_SIGNALS, EXITS_MAX_ENTRIES},
};

use crate::common::{
    bump, count_cgroup_loss, count_loss, emit, offsets, read, task_cgroup_id, task_comm, task_pid,
};

/// Signals that count as crashes, a bit per signal (set by the agent).
#[no_mangle]
static PROC_CRASH_SIGNALS: Global<u64> = Global::new(CRASH_SIGNALS);

#[map]
static PROC_EXITS: PerCpuHashMap<ExitKey, u64> =
    PerCpuHashMap::with_max_entries(EXITS_MAX_ENTRIES, 0);

#[map]
static PROC_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn proc_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, ...)
    if try_exit(ctx.arg::<*const u8>(0)).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn proc_exit_tp(ctx: TracePointContext) -> i32 {
    // SAFETY: a plain helper call; the tracepoint fires in the exiting task.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if try_exit(task).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[inline(always)]
fn try_exit(task: *const u8) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    let pid = task_pid(&o, task)?;
    let tgid: u32 = read(task, o.task_tgid)?;
    if pid != tgid {
        return Ok(()); // a thread; its process is counted once, at the leader
    }
    let exit_code: u32 = read(task, o.task_exit_code)?;
    let signal = exit_code & 0x7f;
    let status = (exit_code >> 8) & 0xff;
    let (how, code) = match (signal, status) {
        (0, 0) => return Ok(()),
        (0, status) => (how::STATUS, status),
        (signal, _) => (how::SIGNAL, signal),
    };
    let cgroup_id = task_cgroup_id(&o, task)?;
    if !bump(
        &PROC_EXITS,
        &ExitKey {
            cgroup_id,
            how,
            code,
        },
        1,
    ) {
        count_cgroup_loss(&PROC_LOSS, Family::Process, loss::MAP_FULL, cgroup_id);
    }
    if how == how::SIGNAL && signal < 64 && PROC_CRASH_SIGNALS.load() & (1 << signal) != 0 {
        emit(Event {
            kind: kind::CRASH,
            pid,
            tgid,
            code: signal,
            cgroup_id,
            ts_ns: 0,
            comm: task_comm(&o, task)?,
            flags: if exit_code & 0x80 != 0 {
                flag::CORE_DUMPED
            } else {
                0
            },
            _pad: 0,
        });
    }
    Ok(())
}

#[inline(always)]
fn lost<C: EbpfContext>(ctx: &C, index: u32) {
    if count_loss(&PROC_LOSS, index) == 1 {
        debug!(ctx, "process: first loss of kind {} on this CPU", index);
    }
}
