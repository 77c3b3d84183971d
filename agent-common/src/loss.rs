//! Losses counted against the cgroup whose event was lost, so that a
//! window can say which cgroups' SLIs are short, and by how much.
//!
//! A map-full drop knows the cgroup it was for. The kernel counts it in the
//! family's per-kind counter (the node's total, as every loss) and in
//! `LOSS_BY_CGROUP` under (cgroup, family, reason); when that table is
//! itself full, in `LOSS_UNATTRIBUTED` instead, at `unattributed_slot`,
//! and every SLO of the family is then incomplete.

use crate::family::Family;

/// Bound of `LOSS_BY_CGROUP`, in (cgroup, family, reason) keys: the
/// cgroups losing events at once on one node. Beyond it a loss is counted,
/// unattributed, in its family's per-kind counter.
pub const CGROUP_LOSS_MAX_ENTRIES: u32 = 1024;

/// Loss indices a family may have (its `loss::COUNT` is at most this).
pub const REASONS_PER_FAMILY: u32 = 8;

/// Slots of `LOSS_UNATTRIBUTED`: one per (family, reason).
pub const UNATTRIBUTED_SLOTS: u32 = Family::COUNT * REASONS_PER_FAMILY;

/// The slot of `LOSS_UNATTRIBUTED` for loss `reason` of `family`.
pub const fn unattributed_slot(family: Family, reason: u32) -> u32 {
    family as u32 * REASONS_PER_FAMILY + reason
}

/// Key of `LOSS_BY_CGROUP`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupLossKey {
    /// cgroup v2 id of the task or socket whose event was lost.
    pub cgroup_id: u64,
    /// `Family as u32`.
    pub family: u32,
    /// The family's loss index (e.g. `syscalls::loss::ERR_MAP_FULL`).
    pub reason: u32,
}

const _: () = assert!(core::mem::size_of::<CgroupLossKey>() == 16);

// Every family's reasons fit its slots: checked beside `Family::loss_count`
// (`family.rs`).
