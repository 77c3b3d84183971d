//! Empty programs on the syscall hooks: the floor that any syscall-wide
//! tracing pays (the tracing slow path on every syscall). Only `cargo xtask
//! bench` attaches them, to measure sonde's cost against that floor.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_exit(_ctx: RawTracePointContext) -> i32 {
    0
}
