//! What `sonde top` reads of each family's part of the window, for the
//! figures the family adds to top's node header. Each family's module has
//! a `TopPart`; `TopParts` (made from the registry's list in `mod.rs`)
//! holds one of each.

use serde::Deserialize;

/// What `sonde top` reads of a family's part of the window (from the
/// window's JSON, every field required), and the figures it adds to the
/// node's header. Top's window flattens it: it reads only keys top's own
/// window has no field for (not `syscalls` or `tcp`), and no histogram
/// (serde's `flatten` cannot read their integer map keys back).
pub trait TopHeader {
    /// The figures, e.g. `irq 2.1% (cpu0 7.9%)`; `counting`: the family
    /// counted in the window (attached, or degraded).
    fn header(&self, counting: bool) -> Option<String>;
}

/// The part `sonde top` reads of a family that adds nothing to its header
/// (the figures of the first families come from top's own rows).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoHeader {}

impl TopHeader for NoHeader {
    fn header(&self, _counting: bool) -> Option<String> {
        None
    }
}
