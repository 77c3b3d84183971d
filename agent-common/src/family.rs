//! The registry of probe families: each family's static facts, in one place.
//!
//! Both sides number families the same way (`CgroupLossKey::family` is
//! `Family as u32`), and every fact the agent needs about a family — its
//! name, the prefix of its kernel programs, its maps keyed by cgroup,
//! whether the budget may shed it — is an exhaustive `match` here: a new
//! family does not compile until each fact is filled in, and the agent's own
//! matches over `Family` then name every place it must be wired.

/// Calls the macro `$m` with every family as `module Variant`, in the order
/// they are attached and reported: the one list of families. Each layer
/// declares its families' modules from it (`mod syscalls; mod sched; ...`)
/// and dispatches on it, so adding a family here — the variant, its facts
/// and its entry below — is what makes every layer look for the family's
/// file: `agent-common/src/<module>.rs`, `agent-ebpf/src/<module>.rs`,
/// `agent/src/probes/<module>.rs`, `agent/src/export/wire/<module>.rs`.
/// The module is the family's `name()` (checked at compile time).
#[macro_export]
macro_rules! for_each_family {
    ($m:ident) => {
        $m! {
            syscalls Syscalls,
            sched Sched,
            block Block,
            memory Memory,
            process Process,
            tcp Tcp,
            irq Irq
        }
    };
}

/// `Family::ALL` from the list.
macro_rules! all_families {
    ($($module:ident $variant:ident),*) => {
        /// Every family, in the order they are attached and reported.
        pub const ALL: [Family; [$(Family::$variant),*].len()] = [$(Family::$variant),*];
    };
}

/// Each module named as its family.
macro_rules! modules_are_names {
    ($($module:ident $variant:ident),*) => {
        const _: () = {
            $(assert!(const_str_eq(stringify!($module), Family::$variant.name()));)*
        };
    };
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a, b) {
            ([], []) => return true,
            ([x, rest_a @ ..], [y, rest_b @ ..]) if *x == *y => (a, b) = (rest_a, rest_b),
            _ => return false,
        }
    }
}

for_each_family!(modules_are_names);

/// A probe family. The discriminants are the kernel's family numbers (in
/// `CgroupLossKey::family` and `loss::unattributed_slot`): never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Syscalls: latency and failures per (cgroup, syscall).
    Syscalls = 0,
    /// Scheduler: run-queue latency per cgroup.
    Sched = 1,
    /// Block I/O: request latency, errors and in-flight per device.
    Block = 2,
    /// Memory: reclaim stalls and OOM kills per cgroup.
    Memory = 3,
    /// Processes: crashes by signal and non-zero exits per cgroup.
    Process = 4,
    /// TCP: connects, resets, retransmits, drops.
    Tcp = 5,
    /// Interrupts: time in hard IRQ handlers and softirqs, per CPU.
    Irq = 6,
}

impl Family {
    for_each_family!(all_families);

    /// How many families there are.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The family's name: in `--probes`, in probe statuses, in loss records
    /// and in the exported series' `probe` attribute.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Syscalls => "syscalls",
            Family::Sched => "sched",
            Family::Block => "block",
            Family::Memory => "memory",
            Family::Process => "process",
            Family::Tcp => "tcp",
            Family::Irq => "irq",
        }
    }

    /// The prefix of every kernel program of the family
    /// (`<prefix><hook>`, at most 15 bytes in all).
    pub const fn program_prefix(self) -> &'static str {
        match self {
            Family::Syscalls => "syscall_",
            Family::Sched => "sched_",
            Family::Block => "blk_",
            Family::Memory => "mem_",
            Family::Process => "proc_",
            Family::Tcp => "tcp_",
            Family::Irq => "irq_",
        }
    }

    /// The family's maps keyed by cgroup (a cgroup id leads each key): the
    /// keys of a removed cgroup are deleted from them, so that cgroup churn
    /// does not fill them. Block I/O is keyed by device and interrupts by
    /// IRQ, not cgroup.
    pub const fn cgroup_maps(self) -> &'static [&'static str] {
        match self {
            Family::Syscalls => &["SYSCALL_HIST", "SYSCALL_ERRORS"],
            Family::Sched => &["RUNQ_HIST", "RUNQ_HOLDER"],
            Family::Block => &[],
            Family::Memory => &["RECLAIM_HIST", "OOM_KILLS"],
            Family::Process => &["PROC_EXITS"],
            Family::Tcp => &["TCP_CONNECT_HIST", "TCP_CGROUP", "TCP_RETRANS_DEST"],
            // Keyed by IRQ and vector.
            Family::Irq => &[],
        }
    }

    /// Whether the overhead budget must never shed the family: rare events
    /// (OOM kills, crashes) that cost little and matter most.
    pub const fn essential(self) -> bool {
        match self {
            Family::Memory | Family::Process => true,
            Family::Syscalls | Family::Sched | Family::Block | Family::Tcp | Family::Irq => false,
        }
    }

    /// How often the family's hooks fire, as a rank (0 the most often): the
    /// budget sheds in this order when the kernel's statistics cannot say
    /// what each family costs.
    pub const fn frequency_rank(self) -> u32 {
        match self {
            Family::Syscalls => 0,
            Family::Sched => 1,
            Family::Irq => 2,
            Family::Tcp => 3,
            Family::Block => 4,
            Family::Memory => 5,
            Family::Process => 6,
        }
    }

    /// How many loss counters the family's kernel programs keep (the length
    /// of its per-CPU loss array).
    pub const fn loss_count(self) -> u32 {
        match self {
            Family::Syscalls => crate::syscalls::loss::COUNT,
            Family::Sched => crate::sched::loss::COUNT,
            Family::Block => crate::block::loss::COUNT,
            Family::Memory => crate::memory::loss::COUNT,
            Family::Process => crate::process::loss::COUNT,
            Family::Tcp => crate::tcp::loss::COUNT,
            Family::Irq => crate::irq::loss::COUNT,
        }
    }

    /// The family of that name.
    pub fn from_name(name: &str) -> Option<Family> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The family a kernel program belongs to, by its name's prefix; `None`
    /// for a program of no family (the benchmark's `floor_*`).
    pub fn of_program(name: &str) -> Option<Family> {
        Self::ALL
            .into_iter()
            .find(|f| name.starts_with(f.program_prefix()))
    }

    /// The family of that kernel number (`CgroupLossKey::family`).
    pub const fn from_u32(n: u32) -> Option<Family> {
        Some(match n {
            0 => Family::Syscalls,
            1 => Family::Sched,
            2 => Family::Block,
            3 => Family::Memory,
            4 => Family::Process,
            5 => Family::Tcp,
            6 => Family::Irq,
            _ => return None,
        })
    }
}

impl core::fmt::Display for Family {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Serialized as its name, as the JSON and the wire have always had it.
#[cfg(feature = "user")]
impl serde::Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The longest program name the kernel keeps (16 bytes with the NUL).
pub const PROGRAM_NAME_MAX: usize = 15;

const _: () = {
    let mut n = 0;
    while n < Family::COUNT {
        match Family::from_u32(n) {
            Some(family) => {
                // `from_u32` is the inverse of the discriminant.
                assert!(family as u32 == n);
                // Room for a hook name after the prefix.
                assert!(family.program_prefix().len() < PROGRAM_NAME_MAX);
                // The kernel's table of unattributed losses has room for
                // every reason of the family.
                assert!(family.loss_count() <= crate::loss::REASONS_PER_FAMILY);
            }
            None => panic!("a family number below COUNT without a family"),
        }
        n += 1;
    }
};

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeSet, vec::Vec};

    use super::*;

    #[test]
    fn the_modules_check_compares_whole_names() {
        assert!(const_str_eq("irq", "irq"));
        assert!(const_str_eq("", ""));
        assert!(!const_str_eq("irq", "irqs"));
        assert!(!const_str_eq("irqs", "irq"));
        assert!(!const_str_eq("irq", "irx"));
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let names: BTreeSet<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Family::ALL.len());
        for family in Family::ALL {
            assert_eq!(Family::from_name(family.name()), Some(family));
            assert_eq!(Family::from_u32(family as u32), Some(family));
        }
        assert_eq!(Family::from_name("host"), None);
        assert_eq!(Family::from_name("Syscalls"), None);
        assert_eq!(Family::from_u32(Family::COUNT), None);
    }

    #[test]
    fn the_kernel_numbers_stay_what_they_were() {
        let numbers: Vec<(&str, u32)> = Family::ALL.iter().map(|&f| (f.name(), f as u32)).collect();
        assert_eq!(
            numbers,
            [
                ("syscalls", 0),
                ("sched", 1),
                ("block", 2),
                ("memory", 3),
                ("process", 4),
                ("tcp", 5),
                ("irq", 6)
            ]
        );
    }

    #[test]
    fn prefixes_are_unique_and_none_starts_another() {
        for a in Family::ALL {
            assert!(a.program_prefix().ends_with('_'), "{a}");
            assert!(a.program_prefix().len() < PROGRAM_NAME_MAX, "{a}");
            for b in Family::ALL {
                if a != b {
                    assert!(
                        !a.program_prefix().starts_with(b.program_prefix()),
                        "{a} and {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn cgroup_maps_are_named_once() {
        let maps: Vec<&str> = Family::ALL
            .iter()
            .flat_map(|f| f.cgroup_maps().iter().copied())
            .collect();
        let unique: BTreeSet<&str> = maps.iter().copied().collect();
        assert_eq!(unique.len(), maps.len());
    }

    #[test]
    fn frequency_ranks_order_every_family() {
        let ranks: BTreeSet<u32> = Family::ALL.iter().map(|f| f.frequency_rank()).collect();
        assert_eq!(ranks, (0..Family::COUNT).collect());
        let essential: Vec<Family> = Family::ALL.into_iter().filter(|f| f.essential()).collect();
        assert_eq!(essential, [Family::Memory, Family::Process]);
    }
}
