//! Plain types that the probes hand to everything else: what one window saw.
//! Exporters and the CLI only ever see these.

pub mod cgroup;
pub mod explain;
pub mod host;
pub mod overhead;
pub mod probe;
pub mod slo;
pub mod text;
pub mod top;

use serde::{Deserialize, Serialize};
use sonde_common::family::Family;
use sonde_slo::Histogram;

pub use cgroup::{CgroupRef, Owner};
pub use host::{Pressure, Psi, PsiLine, Throttling};
pub use overhead::{Overhead, ProbeCost};
pub use probe::{reasons, Gap, ProbeState, ProbeStatus};

pub use block::{DeviceIo, IoErrorRecord};
pub use process::{CgroupExits, EventRecord, EVENT_KINDS};
pub use syscalls::{CgroupSyscalls, SyscallSeries};
pub use tcp::TCP_EVENT_KINDS;

/// Each family's module (`<family>.rs`, with its `Part` of the window) and
/// the `Snapshot` with one field per family: the list is
/// `sonde_common::family`'s. Each family's part is flattened, so the
/// snapshot's JSON has its fields (`runqueue`, `tcp`, ...) at the top level.
macro_rules! snapshot {
    ($($module:ident $variant:ident),*) => {
        $(pub mod $module;)*

        /// One window of signals: deltas between two readings of the kernel maps.
        #[derive(Debug, Clone, Default, Serialize)]
        pub struct Snapshot {
            /// Start of the window, Unix time in nanoseconds.
            pub window_start_unix_ns: u64,
            /// End of the window, Unix time in nanoseconds.
            pub window_end_unix_ns: u64,
            /// Window length in seconds.
            pub window_secs: f64,
            /// State of every probe family during the window.
            pub probes: Vec<ProbeStatus>,
            /// `false` when anything was lost or a probe was not attached: the
            /// window's SLIs are then a lower bound, never a clean figure.
            pub complete: bool,
            /// Every counted loss in the window, zero counts included.
            pub losses: Vec<LossRecord>,
            /// Of `losses`, those counted against the cgroup whose events they were
            /// (map-full drops of the syscall, sched, memory and process families).
            pub losses_by_cgroup: Vec<CgroupLoss>,
            /// Of `losses` that are counted by cgroup, those no cgroup could be
            /// named for (the kernel's table of losses by cgroup was full): they
            /// make every SLO of the family incomplete.
            pub losses_unattributed: Vec<LossRecord>,
            /// Series whose cgroup could not be resolved to a path (it vanished
            /// first): they are kept, under owner `unknown`, and counted here.
            pub unattributed_series: u64,
            $(
                /// The family's part of the window.
                #[serde(flatten)]
                pub $module: $module::Part,
            )*
            /// The node's pressure stall information at the end of the window.
            pub node_pressure: Pressure,
            /// PSI and CPU throttling of the cgroups seen in the window.
            pub cgroups: Vec<CgroupHost>,
            /// The configured SLOs after this window (empty without a config).
            pub slos: Vec<slo::SloStatus>,
            /// On the first window after the agent restarted with pinned probes:
            /// how it joins the last run's last window.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub restart: Option<Restart>,
            /// What the window cost the node (the agent's CPU, its programs'
            /// kernel time) and what the overhead budget shed.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub overhead: Option<Overhead>,
        }

        /// What `sonde top` reads of each family's part of the window,
        /// flattened in its window as the parts are in the snapshot.
        #[derive(Debug, Clone, Default, Deserialize)]
        pub struct TopParts {
            $(
                /// The family's part, as `sonde top` reads it.
                #[serde(flatten)]
                pub $module: $module::TopPart,
            )*
        }

        impl TopParts {
            /// Each family's figures for the node's header, in the
            /// registry's order; `counting`: whether a family counted.
            pub fn header(&self, counting: impl Fn(Family) -> bool) -> Vec<String> {
                [$(top::TopHeader::header(&self.$module, counting(Family::$variant))),*]
                    .into_iter()
                    .flatten()
                    .collect()
            }
        }

        impl Snapshot {
            /// Each family's part as text ([`text::Text`]), in the
            /// registry's order.
            pub fn families_text(&self, out: &mut String, top: usize) {
                $(text::Text::text(&self.$module, out, top);)*
            }
        }
    };
}
sonde_common::for_each_family!(snapshot);

/// Every kind `sonde events` streams (the last: [`IoErrorRecord`]).
pub const ALL_EVENT_KINDS: [&str; 6] = [
    EVENT_KINDS[0],
    EVENT_KINDS[1],
    TCP_EVENT_KINDS[0],
    TCP_EVENT_KINDS[1],
    TCP_EVENT_KINDS[2],
    "io_error",
];

/// How the first window after a restart joins the last run's windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// The sequence of the last run's last window, when this window starts
    /// where that one ended (the kernel counted through the restart).
    pub follows_sequence: Option<u64>,
    /// Why events of the restart are not all in this window, when they are
    /// not: the window is then incomplete.
    pub gap: Option<String>,
}

/// What the kernel publishes about one cgroup in cgroupfs.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupHost {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Its pressure stall information (cgroup v2 `*.pressure`).
    pub pressure: Pressure,
    /// Its CPU throttling, when a CPU limit applies to it.
    pub throttling: Option<Throttling>,
    /// The network namespace of its first process (inode), when it has one.
    pub netns: Option<u32>,
    /// Whether that namespace is the host's (the one of PID 1), which every
    /// host-network process shares.
    pub netns_is_host: bool,
}

/// A count of one cgroup over the window.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupCount {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Events in the window.
    pub count: u64,
}

/// A latency histogram of one cgroup over the window.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupLatency {
    /// The cgroup and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Samples.
    pub count: u64,
    /// Sum of the samples in seconds, estimated from the buckets (±4.4 %).
    pub sum_secs: f64,
    /// Median, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile, seconds.
    pub p99_secs: Option<f64>,
    /// The histogram, OTLP exponential layout at scale 3.
    pub latency: Histogram,
}

impl CgroupLatency {
    /// Derives the summary of `latency`.
    pub fn new(cgroup: CgroupRef, latency: Histogram) -> Self {
        Self {
            cgroup,
            count: latency.count(),
            sum_secs: latency.estimated_sum(),
            p50_secs: latency.quantile(0.5),
            p99_secs: latency.quantile(0.99),
            latency,
        }
    }
}

/// Events of one cgroup that the kernel lost, for one reason, in one probe
/// (map-full drops, counted against the cgroup they were for).
#[derive(Debug, Clone, Serialize)]
pub struct CgroupLoss {
    /// The cgroup whose events were lost, and its owner.
    #[serde(flatten)]
    pub cgroup: CgroupRef,
    /// Probe family.
    pub probe: &'static str,
    /// Why, as in `LossRecord::reason`.
    pub reason: &'static str,
    /// Events lost in the window.
    pub count: u64,
}

/// A count of events lost at one stage, for one reason, in one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LossRecord {
    /// Where: `kernel` (in the probes), `userspace`, ...
    pub stage: &'static str,
    /// Probe family.
    pub probe: &'static str,
    /// Why, as a stable snake_case name.
    pub reason: &'static str,
    /// Events lost in the window.
    pub count: u64,
}

impl Snapshot {
    /// The syscall series of the cgroup with id `cgroup_id`, by name.
    pub fn syscall(&self, cgroup_id: u64, name: &str) -> Option<&SyscallSeries> {
        self.syscalls
            .cgroups
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)?
            .syscalls
            .iter()
            .find(|s| s.name == name)
    }

    /// The run-queue latency of cgroup `cgroup_id`.
    pub fn runqueue(&self, cgroup_id: u64) -> Option<&CgroupLatency> {
        self.sched
            .runqueue
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The exits of cgroup `cgroup_id`.
    pub fn exits(&self, cgroup_id: u64) -> Option<&CgroupExits> {
        self.process
            .exits
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The OOM kills of cgroup `cgroup_id` (0 when none).
    pub fn oom_kills(&self, cgroup_id: u64) -> u64 {
        self.memory
            .oom_kills
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
            .map_or(0, |c| c.count)
    }

    /// Block I/O of device `name` for operation `op`.
    pub fn device_io(&self, name: &str, op: &str) -> Option<&DeviceIo> {
        self.block
            .devices
            .iter()
            .find(|d| d.device == name && d.op == op)
    }

    /// PSI and throttling of cgroup `cgroup_id`.
    pub fn cgroup_host(&self, cgroup_id: u64) -> Option<&CgroupHost> {
        self.cgroups
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The TCP signals of cgroup `cgroup_id`.
    pub fn tcp_cgroup(&self, cgroup_id: u64) -> Option<&tcp::CgroupTcp> {
        self.tcp
            .window
            .cgroups
            .iter()
            .find(|c| c.cgroup.cgroup_id == cgroup_id)
    }

    /// The TCP counts and check of network namespace `netns`.
    pub fn tcp_netns(&self, netns: u32) -> Option<&tcp::NetnsTcp> {
        self.tcp.window.namespaces.iter().find(|n| n.netns == netns)
    }

    /// Packets dropped in network namespace `netns` under drop reason `reason`.
    pub fn drops(&self, netns: u32, reason: &str) -> u64 {
        self.tcp
            .window
            .drops
            .iter()
            .find(|d| d.netns == netns)
            .and_then(|d| d.reasons.get(reason).copied())
            .unwrap_or(0)
    }

    /// Records whether the window follows a stretch whose kernel events no
    /// window holds (the first window of an agent that took over from a
    /// stopped one, without pinned probes to resume from): the loss record
    /// `agent/restart_gap` counts one such stretch, and the window is then
    /// incomplete. The record is there, zero or not, in every window.
    pub fn flag_restart_gap(&mut self, gap: bool) {
        self.losses.push(LossRecord {
            stage: "agent",
            probe: "all",
            reason: "restart_gap",
            count: u64::from(gap),
        });
        if gap {
            self.complete = false;
        }
    }

    /// Total events lost in the window.
    pub fn lost(&self) -> u64 {
        self.losses.iter().map(|l| l.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use serde::{
        de::{IgnoredAny, MapAccess, Visitor},
        Deserializer,
    };

    use super::{Deserialize, Family, Snapshot};

    /// An object's keys in the order written, repeats included.
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Each;
            impl<'de> Visitor<'de> for Each {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Each)
        }
    }

    /// The families' parts are flattened: the snapshot's JSON keeps the
    /// top-level fields every consumer reads (`sonde top`, the socket's
    /// clients, the tests), the same as when they were spelled out here,
    /// and any other field is a newer family's part, under its own name.
    #[test]
    fn the_json_keeps_its_top_level_fields() {
        let json = serde_json::to_string(&Snapshot::default()).expect("serializes");
        // Read as written, not through a map: two parts with the same key
        // would both be written, and a map would keep one.
        let keys: Keys = serde_json::from_str(&json).expect("an object");
        let keys: Vec<&str> = keys.0.iter().map(String::as_str).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key written twice: {keys:?}");
        let before_the_registry = [
            "window_start_unix_ns",
            "window_end_unix_ns",
            "window_secs",
            "probes",
            "complete",
            "losses",
            "losses_by_cgroup",
            "losses_unattributed",
            "unattributed_series",
            "syscalls",
            "runqueue",
            "runqueue_holders",
            "block",
            "io_errors",
            "reclaim",
            "oom_kills",
            "exits",
            "events",
            "tcp",
            "irq",
            "node_pressure",
            "cgroups",
            "slos",
        ];
        for key in before_the_registry {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        for key in keys {
            assert!(
                before_the_registry.contains(&key) || Family::ALL.iter().any(|f| f.name() == key),
                "{key} is neither a field of before nor a family's name"
            );
        }
    }
}
