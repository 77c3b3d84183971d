//! The syscall window: latency and failures per (cgroup, syscall).

use std::collections::{BTreeMap, HashMap};

use sonde_slo::Histogram;

use super::histogram_deltas;
use crate::{
    attribution::CgroupRef,
    model::{CgroupSyscalls, SyscallSeries},
    probes::syscalls::{self, SyscallReading},
};

/// The family in the sampler.
#[derive(Default)]
pub struct State;

impl super::FamilyWindow for State {
    type Part = crate::model::syscalls::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        part.cgroups = syscall_window(
            &cx.before.syscalls,
            &cx.after.syscalls,
            cx.window_secs,
            cx.resolve,
        );
    }
}

/// The syscall signals between two cumulative readings, per cgroup (busiest
/// first).
pub fn syscall_window(
    before: &SyscallReading,
    after: &SyscallReading,
    window_secs: f64,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> Vec<CgroupSyscalls> {
    let mut errnos: HashMap<(u64, u32), BTreeMap<String, u64>> = HashMap::new();
    for (&(cgroup, nr, errno), &count) in &after.errors {
        let earlier = before
            .errors
            .get(&(cgroup, nr, errno))
            .copied()
            .unwrap_or(0);
        // A smaller count means the map was recreated: count from zero.
        let delta = count.checked_sub(earlier).unwrap_or(count);
        if delta > 0 {
            errnos
                .entry((cgroup, nr))
                .or_default()
                .insert(syscalls::errno_name(errno).into_owned(), delta);
        }
    }

    let mut per_cgroup: BTreeMap<u64, Vec<SyscallSeries>> = BTreeMap::new();
    for ((cgroup, nr), latency) in histogram_deltas(&before.latency, &after.latency) {
        let errnos = errnos.remove(&(cgroup, nr)).unwrap_or_default();
        let name = syscalls::name(nr).into_owned();
        per_cgroup
            .entry(cgroup)
            .or_default()
            .push(SyscallSeries::new(name, nr, latency, errnos, window_secs));
    }

    // Failures whose latency sample found the latency map full (counted
    // as hist_map_full) are still failures: a series of their own, without
    // latency, rather than nothing.
    for ((cgroup, nr), errnos) in errnos {
        let name = syscalls::name(nr).into_owned();
        per_cgroup
            .entry(cgroup)
            .or_default()
            .push(SyscallSeries::new(
                name,
                nr,
                Histogram::new(),
                errnos,
                window_secs,
            ));
    }

    let mut out: Vec<CgroupSyscalls> = per_cgroup
        .into_iter()
        .map(|(cgroup_id, mut series)| {
            series.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
            CgroupSyscalls {
                cgroup: resolve(cgroup_id),
                calls: series.iter().map(|s| s.calls).sum(),
                errors: series.iter().map(|s| s.errors).sum(),
                syscalls: series,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then(a.cgroup.cgroup_id.cmp(&b.cgroup.cgroup_id))
    });
    out
}
