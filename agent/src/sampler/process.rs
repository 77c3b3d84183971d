//! The process window: terminations by signal and non-zero exits per
//! cgroup, and the task events (crashes, OOM kills) as records.

use std::collections::{BTreeMap, HashMap};

use crate::{
    attribution::CgroupRef,
    model::{CgroupExits, EventRecord},
    probes::process::signal_name,
};

/// The family in the sampler.
#[derive(Default)]
pub struct State;

impl super::FamilyWindow for State {
    type Part = crate::model::process::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        part.exits = exit_window(
            &cx.before.process.exits,
            &cx.after.process.exits,
            cx.resolve,
        );
    }
}

/// Per-cgroup process terminations of the window.
pub fn exit_window(
    before: &HashMap<(u64, u32, u32), u64>,
    after: &HashMap<(u64, u32, u32), u64>,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> Vec<CgroupExits> {
    use sonde_common::process::{how, CRASH_SIGNALS};
    let mut per_cgroup: BTreeMap<u64, CgroupExits> = BTreeMap::new();
    for (&(cgroup, kind, code), &n) in after {
        let delta = n
            .checked_sub(before.get(&(cgroup, kind, code)).copied().unwrap_or(0))
            .unwrap_or(n);
        if delta == 0 {
            continue;
        }
        let entry = per_cgroup
            .entry(cgroup)
            .or_insert_with(|| CgroupExits::new(resolve(cgroup)));
        if kind == how::SIGNAL {
            *entry.signals.entry(signal_name(code)).or_default() += delta;
            if code < 64 && CRASH_SIGNALS & (1 << code) != 0 {
                entry.crashes += delta;
            }
        } else {
            *entry.exit_statuses.entry(code).or_default() += delta;
            entry.nonzero_exits += delta;
        }
    }
    per_cgroup.into_values().collect()
}

/// A task event (an OOM kill or a crash) as a record.
pub(super) fn event_record(
    e: &sonde_common::events::Event,
    cgroup: CgroupRef,
    time_unix_ns: u64,
) -> EventRecord {
    use sonde_common::events::{flag, kind};
    let comm_len = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    EventRecord {
        kind: if e.kind == kind::OOM_KILL {
            "oom_kill"
        } else {
            "crash"
        },
        time_unix_ns,
        pid: e.tgid,
        tid: e.pid,
        comm: String::from_utf8_lossy(e.comm.get(..comm_len).unwrap_or(&e.comm)).into_owned(),
        signal: (e.kind == kind::CRASH).then(|| signal_name(e.code)),
        core_dumped: e.flags & flag::CORE_DUMPED != 0,
        cgroup_of_trigger: e.flags & flag::CGROUP_OF_CURRENT != 0,
        cgroup,
    }
}
