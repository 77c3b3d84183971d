//! The rare-event ring buffer shared by every family: decoding of its
//! records and its loss counters.

use aya::maps::{MapData, MapError, PerCpuArray, RingBuf};
use sonde_common::{
    block::BlockEvent,
    events::{kind, Event},
    tcp::TcpEvent,
};

use super::read_losses;

/// Loss counters: (index, stable name), one per event kind.
pub const LOSSES: [(u32, &str); 6] = [
    (kind::OOM_KILL, "ring_full_oom_kill"),
    (kind::CRASH, "ring_full_crash"),
    (kind::TCP_RESET_SENT, "ring_full_tcp_reset_sent"),
    (kind::TCP_RESET_RECEIVED, "ring_full_tcp_reset_received"),
    (kind::TCP_CONNECT_FAILED, "ring_full_tcp_connect_failed"),
    (kind::IO_ERROR, "ring_full_io_error"),
];

/// Userspace losses: events read from the ring that a window had no room
/// for, per kind (same order as [`LOSSES`]).
pub const WINDOW_FULL: [(u32, &str); 6] = [
    (kind::OOM_KILL, "window_full_oom_kill"),
    (kind::CRASH, "window_full_crash"),
    (kind::TCP_RESET_SENT, "window_full_tcp_reset_sent"),
    (kind::TCP_RESET_RECEIVED, "window_full_tcp_reset_received"),
    (kind::TCP_CONNECT_FAILED, "window_full_tcp_connect_failed"),
    (kind::IO_ERROR, "window_full_io_error"),
];

/// One record of the ring buffer: a task's event or a connection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEvent {
    /// An OOM kill or a crash.
    Task(Event),
    /// A TCP reset or a failed connect.
    Tcp(TcpEvent),
    /// A block request that failed.
    Block(BlockEvent),
}

impl KernelEvent {
    /// Its kind (`sonde_common::events::kind`).
    pub fn kind(&self) -> u32 {
        match self {
            Self::Task(e) => e.kind,
            Self::Tcp(e) => e.kind,
            Self::Block(_) => kind::IO_ERROR,
        }
    }
}

/// Reads a `T` from a record of exactly its size.
fn plain<T: Copy>(record: &[u8]) -> Option<T> {
    if record.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked; T is plain data (a shared #[repr(C)]
    // type) valid for any bytes, and read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record by the kind it begins with; `None` for a
/// record of an unknown kind or of the wrong size.
pub fn decode(record: &[u8]) -> Option<KernelEvent> {
    let kind = u32::from_ne_bytes(record.get(..4)?.try_into().ok()?);
    if kind::is_tcp(kind) {
        plain::<TcpEvent>(record).map(KernelEvent::Tcp)
    } else if kind == kind::IO_ERROR {
        plain::<BlockEvent>(record).map(KernelEvent::Block)
    } else if kind < kind::COUNT {
        plain::<Event>(record).map(KernelEvent::Task)
    } else {
        None
    }
}

/// Moves every record waiting in `ring` into `out`; returns how many records
/// could not be decoded.
pub(super) fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<KernelEvent>) -> u64 {
    let mut malformed = 0;
    while let Some(record) = ring.next() {
        match decode(&record) {
            Some(event) => out.push(event),
            None => malformed += 1,
        }
    }
    malformed
}

/// Reads the per-kind ring-full counters.
pub(super) fn read_loss(
    losses: &PerCpuArray<&MapData, u64>,
) -> Result<[u64; kind::COUNT as usize], MapError> {
    let mut out = [0; kind::COUNT as usize];
    read_losses(losses, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_only_whole_records() {
        let event = Event {
            kind: kind::CRASH,
            pid: 42,
            code: 11,
            comm: *b"segv\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Event::default()
        };
        // SAFETY: viewing plain data as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        };
        assert_eq!(decode(bytes), Some(KernelEvent::Task(event)));
        assert_eq!(decode(&bytes[..10]), None);
        assert_eq!(decode(&[]), None);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }

    #[test]
    fn tells_tcp_records_by_their_kind() {
        let event = TcpEvent {
            kind: kind::TCP_CONNECT_FAILED,
            sport: 40000,
            dport: 80,
            code: 111,
            ..TcpEvent::default()
        };
        // SAFETY: viewing plain data as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const TcpEvent).cast::<u8>(),
                std::mem::size_of::<TcpEvent>(),
            )
        };
        assert_eq!(decode(bytes), Some(KernelEvent::Tcp(event)));
        // A TCP kind at the size of a task event is refused, and so is an
        // unknown kind.
        assert_eq!(decode(&bytes[..std::mem::size_of::<Event>()]), None);
        let mut unknown = bytes.to_vec();
        unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode(&unknown), None);
    }

    #[test]
    fn decodes_a_failed_block_request_and_refuses_a_short_one() {
        let event = BlockEvent {
            kind: kind::IO_ERROR,
            dev: (7 << 20) | 3,
            op: sonde_common::block::op::READ,
            errno: 5,
            sector: 4096,
            ts_ns: 42,
        };
        // SAFETY: viewing a plain #[repr(C)] value as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const BlockEvent).cast::<u8>(),
                std::mem::size_of::<BlockEvent>(),
            )
        };
        assert_eq!(decode(bytes), Some(KernelEvent::Block(event)));
        assert_eq!(decode(&bytes[..16]), None);
    }
}
