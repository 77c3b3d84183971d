//! Block I/O family: request latency per (device, op), completions, errors
//! per (device, op, error) and requests in flight.

/// Default bound of `BLOCK_START` (requests in flight at once).
pub const START_MAX_ENTRIES: u32 = 1 << 14;
/// Default bound of `BLOCK_HIST` (keys are (device, op, bucket)).
pub const HIST_MAX_ENTRIES: u32 = 1 << 13;
/// Default bound of `BLOCK_IO` and `BLOCK_ERRORS`.
pub const COUNT_MAX_ENTRIES: u32 = 1 << 12;

/// Request operations, from the tracepoint's `rwbs` string.
pub mod op {
    /// Read.
    pub const READ: u32 = 0;
    /// Write.
    pub const WRITE: u32 = 1;
    /// Cache flush without data.
    pub const FLUSH: u32 = 2;
    /// Discard or secure erase.
    pub const DISCARD: u32 = 3;
    /// Anything else.
    pub const OTHER: u32 = 4;
}

/// What a `BLOCK_IO` counter counts, in [`IoKey::what`].
pub mod what {
    /// Requests issued to the driver.
    pub const ISSUED: u32 = 0;
    /// Requests completed (with or without error).
    pub const COMPLETED: u32 = 1;
}

/// Indices of the per-CPU `BLOCK_LOSS` counters.
pub mod loss {
    /// A request's start was dropped because `BLOCK_START` was full.
    pub const START_MAP_FULL: u32 = 0;
    /// A latency sample was dropped because `BLOCK_HIST` was full.
    pub const HIST_MAP_FULL: u32 = 1;
    /// A count was dropped because `BLOCK_IO` or `BLOCK_ERRORS` was full.
    pub const COUNT_MAP_FULL: u32 = 2;
    /// A tracepoint record could not be read.
    pub const READ_FAILED: u32 = 3;
    /// A completion without a recorded issue (issued before attach):
    /// informational, not a loss.
    pub const UNMATCHED: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
}

/// Field offsets in the classic `block:block_rq_issue` and
/// `block:block_rq_complete` records, read by the agent from their tracefs
/// `format` files (they moved between kernel versions).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOffsets {
    /// `dev` in block_rq_issue.
    pub issue_dev: u32,
    /// `sector` in block_rq_issue.
    pub issue_sector: u32,
    /// `rwbs` in block_rq_issue.
    pub issue_rwbs: u32,
    /// `dev` in block_rq_complete.
    pub complete_dev: u32,
    /// `sector` in block_rq_complete.
    pub complete_sector: u32,
    /// `rwbs` in block_rq_complete.
    pub complete_rwbs: u32,
    /// `error` in block_rq_complete.
    pub complete_error: u32,
    /// 1 once filled in.
    pub valid: u32,
}

/// Key of `BLOCK_START`: a request in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// Kernel dev_t (`major << 20 | minor`).
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// First sector.
    pub sector: u64,
}

/// Key of `BLOCK_HIST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevBucketKey {
    /// Kernel dev_t.
    pub dev: u32,
    /// One of [`op`].
    pub op: u32,
    /// Biased bucket key of the latency in binary nanoseconds.
    pub bucket: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Key of `BLOCK_IO` (counts) and `BLOCK_ERRORS` (`what` = the error).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoKey {
    /// Kernel dev_t.
    pub dev: u32,
    /// One of [`op`].
    pub op: u32,
    /// `BLOCK_IO`: one of [`what`]; `BLOCK_ERRORS`: the negative errno, negated.
    pub what: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Value of `BLOCK_START`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStart {
    /// `bpf_ktime_get_ns()` at issue.
    pub ts_ns: u64,
    /// One of [`op`].
    pub op: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Classifies a request from the first bytes of its `rwbs` string.
#[inline(always)]
pub fn classify(rwbs: [u8; 4]) -> u32 {
    let (first, second) = (rwbs[0], rwbs[1]);
    let c = if first == b'F' {
        if second == b'N' || second == 0 {
            return op::FLUSH;
        }
        second
    } else {
        first
    };
    match c {
        b'R' => op::READ,
        b'W' => op::WRITE,
        b'D' | b'E' => op::DISCARD,
        _ => op::OTHER,
    }
}

const _: () = assert!(core::mem::size_of::<BlockOffsets>() == 32);
const _: () = assert!(core::mem::size_of::<RequestKey>() == 16);
const _: () = assert!(core::mem::size_of::<DevBucketKey>() == 16);
const _: () = assert!(core::mem::size_of::<IoKey>() == 16);
const _: () = assert!(core::mem::size_of::<RequestStart>() == 16);

#[cfg(feature = "user")]
user_pod!(BlockOffsets, RequestKey, DevBucketKey, IoKey, RequestStart);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rwbs_classes() {
        assert_eq!(classify(*b"R\0\0\0"), op::READ);
        assert_eq!(classify(*b"RS\0\0"), op::READ);
        assert_eq!(classify(*b"WS\0\0"), op::WRITE);
        assert_eq!(classify(*b"FWS\0"), op::WRITE);
        assert_eq!(classify(*b"FN\0\0"), op::FLUSH);
        assert_eq!(classify(*b"F\0\0\0"), op::FLUSH);
        assert_eq!(classify(*b"D\0\0\0"), op::DISCARD);
        assert_eq!(classify(*b"N\0\0\0"), op::OTHER);
    }
}

/// A block request that completed with an error, sent through the event
/// ring (`events::kind::IO_ERROR`). The completion runs in no particular
/// task's context, so it names the device and the request, not a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEvent {
    /// `events::kind::IO_ERROR`.
    pub kind: u32,
    /// Device number, the kernel's `dev_t` encoding (major << 20 | minor).
    pub dev: u32,
    /// Operation, one of [`op`].
    pub op: u32,
    /// The errno (positive).
    pub errno: u32,
    /// First sector of the request.
    pub sector: u64,
    /// `bpf_ktime_get_ns()` at completion.
    pub ts_ns: u64,
}

const _: () = assert!(core::mem::size_of::<BlockEvent>() == 32);
