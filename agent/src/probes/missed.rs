//! Runs of sonde's programs that the kernel skipped: its own count.
//!
//! The kernel does not run a tracing program on a CPU where the same program
//! is already running (raw and BTF tracepoints: the program's per-CPU
//! `active` counter; classic tracepoints: any BPF program of that kind on the
//! CPU). That happens when a program is interrupted, or preempted where the
//! kernel runs tracepoint callbacks preemptibly, and the same hook fires
//! again on that CPU: the second event is never seen. The kernel counts each
//! such skip in the program's `recursion_misses` (`bpf_prog_info`; the field
//! exists since 5.12, and which skips are counted grew with later versions,
//! so on older kernels a zero is a lower bound). sonde reports these per
//! family as kernel losses, so a window that missed events is incomplete.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::bpf_prog_info;

/// `BPF_PROG_GET_FD_BY_ID`.
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
/// `BPF_OBJ_GET_INFO_BY_FD`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `bpf_attr` of `BPF_PROG_GET_FD_BY_ID` (its first fields are enough:
/// the kernel zero-fills what a shorter attribute leaves out).
#[repr(C)]
struct GetFdById {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The `bpf_attr` of `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct GetInfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, #[repr(C)] attribute of the size passed; the
    // kernel reads at most that many bytes of it and writes only through the
    // pointers it holds, which the callers keep alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The kernel's count of the runs it skipped of the program `fd` refers to
/// (any process that holds a program's fd may ask: CAP_BPF is enough).
pub(crate) fn recursion_misses(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: bpf_prog_info is plain integers and pointers; all-zero is its
    // "nothing asked for" value (no arrays requested back).
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = GetInfoByFd {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        info_len: u32::try_from(std::mem::size_of::<bpf_prog_info>()).map_err(io::Error::other)?,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.recursion_misses)
}

/// The same, of program `prog_id`, for a program this process holds no fd
/// of (one adopted from a pin: only its link is held). Opening a program by
/// id needs CAP_SYS_ADMIN.
pub(crate) fn recursion_misses_by_id(prog_id: u32) -> io::Result<u64> {
    let mut by_id = GetFdById {
        prog_id,
        next_id: 0,
        open_flags: 0,
    };
    let raw = bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id)?;
    let raw = i32::try_from(raw).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    recursion_misses(std::os::fd::AsFd::as_fd(&fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_program_is_an_error_not_zero() {
        // Program ids start at 1; 0 names none. Unprivileged it is EPERM,
        // as root ENOENT: an error either way, never a count.
        assert!(recursion_misses_by_id(0).is_err());
    }
}
