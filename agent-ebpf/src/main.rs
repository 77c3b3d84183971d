//! sonde's kernel programs, one module per signal family.
//!
//! Every program is a thin entry that calls a `try_` function; whatever can
//! go wrong on the way is counted in the family's per-CPU loss counters,
//! never a panic and never silent.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod common;
#[cfg(target_arch = "bpf")]
mod floor;

/// Each family's programs, `<family>.rs` (the list is
/// `sonde_common::family`'s).
macro_rules! family_modules {
    ($($module:ident $variant:ident),*) => { $(#[cfg(target_arch = "bpf")] mod $module;)* };
}
sonde_common::for_each_family!(family_modules);

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves there is no path here; this only satisfies no_std.
    loop {}
}

/// GPL-compatible licence: `bpf_get_current_cgroup_id` and the ring buffer
/// helpers used by aya-log are GPL-only.
#[cfg(target_arch = "bpf")]
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

/// A host build of the workspace compiles this crate too; there it is empty.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
