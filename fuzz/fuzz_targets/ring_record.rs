//! Ring-buffer records as the kernel hands them to the agent: any length,
//! any bytes. A record that decodes must be exactly the bytes of the value
//! it decodes to (nothing read past it, nothing left over).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::probes::events::{decode, KernelEvent};

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: T is one of sonde-common's #[repr(C)] plain types, without
    // padding (their size assertions say so): every byte is initialised.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}

fuzz_target!(|record: &[u8]| {
    let Some(event) = decode(record) else {
        return;
    };
    let again = match &event {
        KernelEvent::Task(e) => bytes_of(e),
        KernelEvent::Tcp(e) => bytes_of(e),
        KernelEvent::Block(e) => bytes_of(e),
    };
    assert_eq!(again, record, "a decoded record re-encodes to its bytes");
    assert_eq!(decode(&again), Some(event));
});
