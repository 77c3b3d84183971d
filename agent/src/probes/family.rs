//! Each family's user side in `probes/`, behind one trait: what
//! configuring, attaching, reading and forgetting removed cgroups ask of
//! it. The hubs (`Probes::load`, `Probes::read`, `Probes::load_floor`, the
//! removed-cgroup sweep, the sampler's loss tables) iterate `Family::ALL`
//! and call the family's value, which `of` picks in the one match over
//! families this layer has, made from the registry's list: a new family
//! does not compile until its module has a `Probe`.

use std::collections::HashSet;

use aya::{maps::MapError, Ebpf, EbpfLoader};
use sonde_common::family::Family;

use super::{gone::Forget, Links, ProbeStatus, Reading, Setup};
use crate::host::mounts::Mounts;

/// What attaching a family may use.
pub(super) struct Attach<'a> {
    /// The loaded object.
    pub ebpf: &'a mut Ebpf,
    /// Where the family's links are kept (and pinned).
    pub links: &'a mut Links,
    /// What was read from the kernel before loading, and the options.
    pub setup: &'a Setup,
    /// The kernel's BTF as aya parsed it, for BTF tracepoints.
    pub btf: Option<&'a aya::Btf>,
    /// The mounts (tracefs for classic tracepoints).
    pub mounts: &'a Mounts,
}

/// One family's user side in this layer.
pub(super) trait FamilyProbe: Sync {
    /// Globals and map bounds, set before the object is loaded.
    fn configure<'a>(&self, _loader: &mut EbpfLoader<'a>, _setup: &'a Setup) {}

    /// Attaches the family's programs. Never an error: a missing hook
    /// degrades this family only, and its status says why.
    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus;

    /// Whether attaching may use aya's parse of the kernel's BTF (BTF
    /// tracepoints): attaching again after a detach parses it only then.
    fn attaches_by_btf(&self) -> bool {
        false
    }

    /// Empty programs on the family's hooks, the benchmark's floor; `None`
    /// for a family without them.
    fn attach_floor(&self, _ebpf: &mut Ebpf, _links: &mut Links) -> Option<ProbeStatus> {
        None
    }

    /// Reads the family's maps into its part of `reading`.
    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError>;

    /// The family's kernel loss counters: (index, stable name).
    fn losses(&self) -> &'static [(u32, &'static str)];

    /// Those counters in a reading, cumulative.
    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64];

    /// Its maps keyed by cgroup (`Family::cgroup_maps`, a unit test checks
    /// the two agree), each with how a removed cgroup's keys are deleted
    /// from it.
    fn cgroup_maps(&self) -> &'static [(&'static str, Forget)] {
        &[]
    }

    /// The cgroup ids of the family's keys in a reading.
    fn cgroup_ids(&self, _reading: &Reading, _ids: &mut HashSet<u64>) {}

    /// Keeps, in the family's part of a reading, only the cgroups `keep`
    /// takes.
    fn retain_cgroups(&self, _reading: &mut Reading, _keep: &dyn Fn(u64) -> bool) {}
}

/// The family's user side: its module's `Probe`.
macro_rules! of {
    ($($module:ident $variant:ident),*) => {
        pub(super) fn of(family: Family) -> &'static dyn FamilyProbe {
            match family {
                $(Family::$variant => &super::$module::Probe,)*
            }
        }
    };
}
sonde_common::for_each_family!(of);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_familys_cgroup_maps_are_the_registrys() {
        for family in Family::ALL {
            let here: Vec<&str> = of(family).cgroup_maps().iter().map(|(n, _)| *n).collect();
            assert_eq!(here, family.cgroup_maps(), "{family}");
        }
    }

    #[test]
    fn every_family_names_its_losses_once() {
        for family in Family::ALL {
            // Some counters are informational (an exit without its entry)
            // and not named as losses; every loss is a counter, once.
            let losses = of(family).losses();
            assert!(!losses.is_empty(), "{family}");
            let mut indices: Vec<u32> = losses.iter().map(|(i, _)| *i).collect();
            indices.sort_unstable();
            indices.dedup();
            assert_eq!(indices.len(), losses.len(), "{family}");
            assert!(indices.iter().all(|&i| i < family.loss_count()), "{family}");
            let reading = Reading::default();
            assert_eq!(
                of(family).loss_counts(&reading).len() as u32,
                family.loss_count(),
                "{family}"
            );
        }
    }
}
