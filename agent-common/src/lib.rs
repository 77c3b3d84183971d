//! Types shared by sonde's kernel programs (`sonde-ebpf`) and its agent.
//!
//! Every type here is `#[repr(C)]`, `Copy`, free of implicit padding (explicit
//! `_pad` fields) and carries a compile-time size check, because both sides
//! read the same bytes out of BPF maps.
#![no_std]

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

#[macro_use]
pub mod family;

pub mod events;
pub mod hist;
pub mod loss;
pub mod task;

/// Each family's shared types, `<family>.rs` (the list is `family.rs`'s).
macro_rules! family_modules {
    ($($module:ident $variant:ident),*) => { $(pub mod $module;)* };
}
for_each_family!(family_modules);

// A family's own types are made `Pod` in its module.
#[cfg(feature = "user")]
user_pod!(
    loss::CgroupLossKey,
    task::TaskOffsets,
    task::StartSlot,
    task::CgroupBucketKey,
    events::Event,
);
