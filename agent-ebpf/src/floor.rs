//! Empty programs on sonde's hooks: the floor that any tracing on those
//! hooks pays (for syscalls, the tracing slow path on every syscall). Only
//! `cargo xtask bench` attaches them, to measure sonde's cost against that
//! floor.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn floor_wake(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn floor_wake_new(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn floor_switch(_ctx: RawTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn floor_bwake(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn floor_bwake_new(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn floor_bswitch(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn floor_tcp_state(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn floor_tcp_rtx(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn floor_synack(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn floor_rst_tx(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn floor_rst_rx(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn floor_skb_drop(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "irq_handler_entry")]
pub fn floor_irq_in(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "irq_handler_exit")]
pub fn floor_irq_out(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn floor_soft_in(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn floor_soft_out(_ctx: RawTracePointContext) -> i32 {
    0
}
