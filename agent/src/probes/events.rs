//! The rare-event ring buffer shared by every family: decoding of its
//! records and its loss counters.

use aya::maps::{MapData, MapError, PerCpuArray, RingBuf};
use sonde_common::events::{kind, Event};

use super::read_losses;

/// Loss counters: (index, stable name), one per event kind.
pub const LOSSES: [(u32, &str); 2] = [
    (kind::OOM_KILL, "ring_full_oom_kill"),
    (kind::CRASH, "ring_full_crash"),
];

/// Decodes one ring-buffer record; `None` for a record of the wrong size.
pub fn decode(record: &[u8]) -> Option<Event> {
    if record.len() != std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the length is checked; Event is plain data valid for any bytes,
    // and read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<Event>()) })
}

/// Moves every record waiting in `ring` into `out`; returns how many records
/// could not be decoded.
pub(super) fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Event>) -> u64 {
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
        assert_eq!(decode(bytes), Some(event));
        assert_eq!(decode(&bytes[..10]), None);
        assert_eq!(decode(&[]), None);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }
}
