//! Block I/O: request latency (issued to the driver → completed) per device
//! and operation, completions and errors, and (issued − completed) requests
//! in flight.
//!
//! Hooks: the classic tracepoints `block:block_rq_issue` and
//! `block:block_rq_complete` (tracefs; every kernel sonde supports). Their
//! record layout changed between versions (`ioprio` arrived, `rwbs` grew), so
//! the field offsets come from their tracefs `format` files, read by the agent
//! (`BLOCK_OFFSETS`). A request is identified by (device, first sector).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use sonde_common::{
    block::{
        classify, loss, what, BlockEvent, BlockOffsets, DevBucketKey, IoKey, RequestKey,
        RequestStart, COUNT_MAX_ENTRIES, HIST_MAX_ENTRIES, START_MAX_ENTRIES,
    },
    events::kind,
};

use crate::common::{bump, count_loss, latency_key, submit};

#[no_mangle]
static BLOCK_OFFSETS: Global<BlockOffsets> = Global::new(BlockOffsets {
    issue_dev: 0,
    issue_sector: 0,
    issue_rwbs: 0,
    complete_dev: 0,
    complete_sector: 0,
    complete_rwbs: 0,
    complete_error: 0,
    valid: 0,
});

#[map]
static BLOCK_START: HashMap<RequestKey, RequestStart> =
    HashMap::with_max_entries(START_MAX_ENTRIES, 0);

#[map]
static BLOCK_HIST: PerCpuHashMap<DevBucketKey, u64> =
    PerCpuHashMap::with_max_entries(HIST_MAX_ENTRIES, 0);

#[map]
static BLOCK_IO: PerCpuHashMap<IoKey, u64> = PerCpuHashMap::with_max_entries(COUNT_MAX_ENTRIES, 0);

#[map]
static BLOCK_ERRORS: PerCpuHashMap<IoKey, u64> =
    PerCpuHashMap::with_max_entries(COUNT_MAX_ENTRIES, 0);

#[map]
static BLOCK_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn blk_rq_issue(ctx: TracePointContext) -> i32 {
    if try_issue(&ctx).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn blk_rq_done(ctx: TracePointContext) -> i32 {
    if try_complete(&ctx).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[inline(always)]
fn try_issue(ctx: &TracePointContext) -> Result<(), i64> {
    let o = BLOCK_OFFSETS.load();
    if o.valid == 0 {
        return Ok(());
    }
    // SAFETY: offsets from this kernel's format file, inside the record.
    let (dev, sector, rwbs) = unsafe {
        (
            ctx.read_at::<u32>(o.issue_dev as usize)?,
            ctx.read_at::<u64>(o.issue_sector as usize)?,
            ctx.read_at::<[u8; 4]>(o.issue_rwbs as usize)?,
        )
    };
    let op = classify(rwbs);
    count(
        ctx,
        &BLOCK_IO,
        IoKey {
            dev,
            op,
            what: what::ISSUED,
            _pad: 0,
        },
    );
    let start = RequestStart {
        // SAFETY: a plain helper call with no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        op,
        _pad: 0,
    };
    if BLOCK_START
        .insert(
            RequestKey {
                dev,
                _pad: 0,
                sector,
            },
            start,
            0,
        )
        .is_err()
    {
        lost(ctx, loss::START_MAP_FULL);
    }
    Ok(())
}

#[inline(always)]
fn try_complete(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: a plain helper call with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let o = BLOCK_OFFSETS.load();
    if o.valid == 0 {
        return Ok(());
    }
    // SAFETY: offsets from this kernel's format file, inside the record.
    let (dev, sector, rwbs, error) = unsafe {
        (
            ctx.read_at::<u32>(o.complete_dev as usize)?,
            ctx.read_at::<u64>(o.complete_sector as usize)?,
            ctx.read_at::<[u8; 4]>(o.complete_rwbs as usize)?,
            ctx.read_at::<i32>(o.complete_error as usize)?,
        )
    };
    let op = classify(rwbs);
    count(
        ctx,
        &BLOCK_IO,
        IoKey {
            dev,
            op,
            what: what::COMPLETED,
            _pad: 0,
        },
    );
    if error < 0 {
        count(
            ctx,
            &BLOCK_ERRORS,
            IoKey {
                dev,
                op,
                what: error.unsigned_abs(),
                _pad: 0,
            },
        );
        // Rare by nature: each one also goes out as an event with its
        // request (a full ring is counted under IO_ERROR).
        submit(
            BlockEvent {
                kind: kind::IO_ERROR,
                dev,
                op,
                errno: error.unsigned_abs(),
                sector,
                ts_ns: now,
            },
            kind::IO_ERROR,
        );
    }
    let key = RequestKey {
        dev,
        _pad: 0,
        sector,
    };
    // SAFETY: a value copied out at once; a concurrent delete only makes it stale.
    let Some(start) = (unsafe { BLOCK_START.get(key) }).copied() else {
        count_loss(&BLOCK_LOSS, loss::UNMATCHED);
        return Ok(());
    };
    let _ = BLOCK_START.remove(key);
    let key = DevBucketKey {
        dev,
        op: start.op,
        bucket: latency_key(now.wrapping_sub(start.ts_ns)),
        _pad: 0,
    };
    if !bump(&BLOCK_HIST, &key, 1) {
        lost(ctx, loss::HIST_MAP_FULL);
    }
    Ok(())
}

#[inline(always)]
fn count<C: EbpfContext>(ctx: &C, map: &PerCpuHashMap<IoKey, u64>, key: IoKey) {
    if !bump(map, &key, 1) {
        lost(ctx, loss::COUNT_MAP_FULL);
    }
}

#[inline(always)]
fn lost<C: EbpfContext>(ctx: &C, index: u32) {
    if count_loss(&BLOCK_LOSS, index) == 1 {
        debug!(ctx, "block: first loss of kind {} on this CPU", index);
    }
}
