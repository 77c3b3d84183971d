//! Process terminations: by signal (crashes) and by non-zero exit status,
//! per cgroup; each crash also as an event.
//!
//! Hook: the raw tracepoint `sched_process_exit` (Linux 4.17+), whose first
//! argument is the exiting task; `exit_code` is set before it fires. Fields
//! come at BTF offsets (`TASK_OFFSETS`); without BTF the family is
//! unavailable. Only the thread-group leader is counted: one per process.

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use sonde_common::{
    events::{flag, kind, Event},
    process::{how, loss, ExitKey, CRASH_SIGNALS, EXITS_MAX_ENTRIES},
};

use crate::common::{bump, count_loss, emit, offsets, read, task_cgroup_id, task_comm, task_pid};

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
        count_loss(&PROC_LOSS, loss::MAP_FULL);
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
