//! Types shared by sonde's kernel programs (`sonde-ebpf`) and its agent.
//!
//! Every type here is `#[repr(C)]`, `Copy`, free of implicit padding (explicit
//! `_pad` fields) and carries a compile-time size check, because both sides
//! read the same bytes out of BPF maps.
#![no_std]

pub mod block;
pub mod events;
pub mod family;
pub mod hist;
pub mod irq;
pub mod loss;
pub mod memory;
pub mod process;
pub mod sched;
pub mod syscalls;
pub mod task;
pub mod tcp;

/// Implements `aya::Pod` for plain shared types on the user side only.
#[cfg(feature = "user")]
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the type is #[repr(C)], Copy, has no padding (checked by
            // the size assertions beside it) and every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

#[cfg(feature = "user")]
user_pod!(
    loss::CgroupLossKey,
    syscalls::SyscallHistKey,
    syscalls::SyscallErrKey,
    syscalls::SyscallStart,
    task::TaskOffsets,
    task::StartSlot,
    task::CgroupBucketKey,
    sched::HolderKey,
    sched::HolderWait,
    events::Event,
    process::ExitKey,
    block::BlockOffsets,
    block::RequestKey,
    block::DevBucketKey,
    block::IoKey,
    block::RequestStart,
    tcp::TcpOffsets,
    tcp::ConnectStart,
    tcp::CgroupCountKey,
    tcp::RetransDestKey,
    tcp::NetnsKey,
    tcp::ListenKey,
    tcp::TcpEvent,
    irq::IrqTotals,
    irq::IrqBucketKey,
    irq::IrqCpu,
);
