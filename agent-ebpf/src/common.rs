//! Pieces every family uses: per-CPU counters, the event ring and kernel
//! task reads.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
    Global,
};
use sonde_common::{
    events::{kind, Event, RING_BYTES},
    family::Family,
    hist::{latency_bucket_key, AT_OR_BELOW_THRESHOLD, THRESHOLD_SLOTS},
    loss::{unattributed_slot, CgroupLossKey, CGROUP_LOSS_MAX_ENTRIES, UNATTRIBUTED_SLOTS},
    task::{TaskOffsets, COMM_LEN},
};

/// Rare events for the agent (OOM kills, crashes, TCP resets and failed
/// connects); one record each.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Events that found the ring buffer full, per kind.
#[map]
static EVENT_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Sends a task event; a full ring buffer is counted under the event's kind.
#[inline(always)]
pub fn emit(mut event: Event) {
    // SAFETY: a plain helper call with no arguments.
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    submit(event, event.kind);
}

/// Sends one record of kind `kind` (every record type begins with its kind);
/// a full ring buffer is counted under that kind.
#[inline(always)]
pub fn submit<T: 'static>(record: T, kind: u32) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(0);
        }
        None => {
            count_loss(&EVENT_LOSS, kind);
        }
    }
}

/// Exact SLO latency thresholds in nanoseconds, indexed by the bucket key
/// each falls in (0: no threshold in that bucket); set by the agent from
/// its SLO config. At most one threshold per bucket.
#[no_mangle]
static LATENCY_THRESHOLDS_NS: Global<[u64; THRESHOLD_SLOTS]> = Global::new([0; THRESHOLD_SLOTS]);

/// Histogram bucket key of a latency in nanoseconds, with
/// `AT_OR_BELOW_THRESHOLD` set when a threshold lies inside that bucket and
/// the sample is at or below it: one array read, no extra map update, and
/// an SLO's good events are counted exactly between bucket edges.
#[inline(always)]
pub fn latency_key(ns: u64) -> u32 {
    let key = latency_bucket_key(ns);
    let slot = key as usize;
    if slot >= THRESHOLD_SLOTS {
        return key; // the zero bucket
    }
    // SAFETY: `Global` is a transparent wrapper of the array, and `slot` is
    // bounded by its length just above. Volatile: the loader sets the value.
    let threshold = unsafe {
        core::ptr::read_volatile(
            (&LATENCY_THRESHOLDS_NS as *const Global<[u64; THRESHOLD_SLOTS]> as *const u64)
                .add(slot),
        )
    };
    if threshold != 0 && ns <= threshold {
        key | AT_OR_BELOW_THRESHOLD
    } else {
        key
    }
}

/// Struct offsets from the running kernel's BTF, set by the agent.
#[no_mangle]
static TASK_OFFSETS: Global<TaskOffsets> = Global::new(TaskOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_state: 0,
    task_cgroups: 0,
    task_comm: 0,
    task_exit_code: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    valid: 0,
});

/// Adds `n` to `key`'s per-CPU counter, inserting it if new. Returns false
/// when the map is full (the caller counts the loss).
#[inline(always)]
pub fn bump<K>(map: &PerCpuHashMap<K, u64>, key: &K, n: u64) -> bool {
    if let Some(count) = map.get_ptr_mut(key) {
        add(count, n);
        return true;
    }
    if map.insert(key, n, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    // Another CPU may have inserted the key meanwhile (EEXIST): look again.
    match map.get_ptr_mut(key) {
        Some(count) => {
            add(count, n);
            true
        }
        None => false,
    }
}

/// Adds `n` to this CPU's value at `count`. Not atomically: core offers no
/// atomic add on the BPF target (it has no compare-and-swap), and the one
/// writer of a per-CPU value is this CPU. Where the kernel runs tracepoint
/// callbacks preemptibly (7.2) a program can still be preempted here by
/// another task running a *different* program that adds to the same value
/// on this CPU (the kernel keeps the same program from running twice on a
/// CPU): an increment could then be lost, uncounted. Only two programs share
/// keys that way (direct and cgroup-limit reclaim end, and the shared table
/// of losses by cgroup); noted in docs/ARCHITECTURE.md.
#[inline(always)]
fn add(count: *mut u64, n: u64) {
    // SAFETY: `count` points at this CPU's value of a map entry that stays
    // valid while the program runs; see above for who else writes it.
    unsafe { *count += n };
}

/// Losses by the cgroup whose event was lost (see `sonde_common::loss`).
#[map]
static LOSS_BY_CGROUP: PerCpuHashMap<CgroupLossKey, u64> =
    PerCpuHashMap::with_max_entries(CGROUP_LOSS_MAX_ENTRIES, 0);

/// Losses no cgroup could be named for (`LOSS_BY_CGROUP` was full), per
/// (family, reason) at `unattributed_slot`.
#[map]
static LOSS_UNATTRIBUTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(UNATTRIBUTED_SLOTS, 0);

/// Counts a lost event of `cgroup_id`: in counter `index` of the family's
/// per-kind array (the node's total), and under (cgroup, `family`, `index`),
/// or as unattributed when that table is full. Returns the CPU's new total
/// of that kind, as `count_loss` does.
#[inline(always)]
pub fn count_cgroup_loss(
    losses: &PerCpuArray<u64>,
    family: Family,
    index: u32,
    cgroup_id: u64,
) -> u64 {
    let key = CgroupLossKey {
        cgroup_id,
        family: family as u32,
        reason: index,
    };
    if !bump(&LOSS_BY_CGROUP, &key, 1) {
        count_loss(&LOSS_UNATTRIBUTED, unattributed_slot(family, index));
    }
    count_loss(losses, index)
}

/// Adds one to counter `index` of a per-CPU loss array; returns the CPU's
/// new total (so that the first loss can be logged, and only the first).
#[inline(always)]
pub fn count_loss(losses: &PerCpuArray<u64>, index: u32) -> u64 {
    match losses.get_ptr_mut(index) {
        Some(counter) => {
            // SAFETY: a per-CPU value, written only by this CPU.
            unsafe {
                *counter += 1;
                *counter
            }
        }
        None => 0,
    }
}

/// The offsets, or `None` before the agent has filled them in.
#[inline(always)]
pub fn offsets() -> Option<TaskOffsets> {
    let o = TASK_OFFSETS.load();
    (o.valid != 0).then_some(o)
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
}

/// The task's kernel pid (thread id).
#[inline(always)]
pub fn task_pid(o: &TaskOffsets, task: *const u8) -> Result<u32, i32> {
    read::<u32>(task, o.task_pid)
}

/// The task's cgroup v2 id: `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
pub fn task_cgroup_id(o: &TaskOffsets, task: *const u8) -> Result<u64, i32> {
    cgroup_id_with::<Probed>(o, task)
}

/// The task's command name.
#[inline(always)]
pub fn task_comm(o: &TaskOffsets, task: *const u8) -> Result<[u8; COMM_LEN], i32> {
    read::<[u8; COMM_LEN]>(task, o.task_comm)
}

/// How a program reads kernel memory at a task pointer.
pub trait KernelRead {
    /// Reads a `T` at `base + offset`.
    fn at<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32>;
}

/// Through `bpf_probe_read_kernel`: any program type, one helper call a read.
pub struct Probed;

impl KernelRead for Probed {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32> {
        read(base, offset)
    }
}

/// Direct loads from BTF-typed pointers (tp_btf programs): the verifier
/// checks each offset against the kernel's BTF (the offsets are read-only
/// globals, so it sees them as constants) and turns the loads into
/// fault-tolerant memory reads, with no helper call.
pub struct Direct;

impl KernelRead for Direct {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32> {
        // SAFETY: `base` is a BTF-typed kernel pointer handed to a tp_btf
        // program; the verifier accepts the load only at a real member of the
        // pointed-to type, and a fault reads as zero instead of crashing.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize) as *const T) })
    }
}

/// The task's cgroup v2 id, `task->cgroups->dfl_cgrp->kn->id`, read with `R`.
#[inline(always)]
pub fn cgroup_id_with<R: KernelRead>(o: &TaskOffsets, task: *const u8) -> Result<u64, i32> {
    let css_set: *const u8 = R::at(task, o.task_cgroups)?;
    let cgroup: *const u8 = R::at(css_set, o.css_set_dfl_cgrp)?;
    let kn: *const u8 = R::at(cgroup, o.cgroup_kn)?;
    R::at(kn, o.kernfs_node_id)
}
