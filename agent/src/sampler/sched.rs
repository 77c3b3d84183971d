//! The scheduler's holder window: per victim cgroup, the run-queue wait of
//! the window by the cgroup that held the CPU when each wait ended.

use std::collections::{BTreeMap, HashMap};

use sonde_common::sched::{HOLDER_EARLIER, HOLDER_IDLE, HOLDER_OTHER};

use crate::{
    attribution::CgroupRef,
    model::sched::{CgroupHolders, Holder, HolderRest, MAX_HOLDERS},
    probes::sched::Held,
};

const NS_PER_SEC: f64 = 1e9;

/// The family in the sampler: run-queue latency and, per victim, its wait
/// by holder.
#[derive(Default)]
pub struct State;

impl super::FamilyWindow for State {
    type Part = crate::model::sched::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        let (before, after) = (&cx.before.sched, &cx.after.sched);
        part.runqueue = super::latency_window(&before.runq, &after.runq, cx.resolve);
        part.runqueue_holders = holder_window(&before.holders, &after.holders, cx.resolve);
    }
}

/// The window's victim × holder table, most-waited victim first.
pub fn holder_window(
    before: &HashMap<(u64, u64), Held>,
    after: &HashMap<(u64, u64), Held>,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> Vec<CgroupHolders> {
    // Per victim: its holders' deltas, in key order so ties break alike.
    let mut victims: BTreeMap<u64, Vec<(u64, Held)>> = BTreeMap::new();
    for (&(victim, holder), now) in after {
        let then = before.get(&(victim, holder)).copied().unwrap_or_default();
        // A count that went backwards was recreated (forgotten, reloaded):
        // it counts from zero.
        let delta = if now.waits < then.waits || now.wait_ns < then.wait_ns {
            *now
        } else {
            Held {
                wait_ns: now.wait_ns - then.wait_ns,
                waits: now.waits - then.waits,
            }
        };
        if delta.waits > 0 || delta.wait_ns > 0 {
            victims.entry(victim).or_default().push((holder, delta));
        }
    }
    let mut out: Vec<CgroupHolders> = victims
        .into_iter()
        .map(|(victim, mut held)| {
            held.sort_by(|a, b| b.1.wait_ns.cmp(&a.1.wait_ns).then(a.0.cmp(&b.0)));
            let mut row = CgroupHolders {
                cgroup: resolve(victim),
                wait_secs: 0.0,
                waits: 0,
                idle_wait_secs: 0.0,
                earlier_wait_secs: 0.0,
                holders: Vec::new(),
                rest: HolderRest::default(),
            };
            let (mut wait_ns, mut rest_ns) = (0u64, 0u64);
            for (holder, d) in held {
                wait_ns += d.wait_ns;
                row.waits += d.waits;
                match holder {
                    HOLDER_IDLE => row.idle_wait_secs += d.wait_ns as f64 / NS_PER_SEC,
                    HOLDER_EARLIER => row.earlier_wait_secs += d.wait_ns as f64 / NS_PER_SEC,
                    HOLDER_OTHER => {
                        rest_ns += d.wait_ns;
                        row.rest.waits += d.waits;
                        row.rest.overflow_waits += d.waits;
                    }
                    _ if row.holders.len() < MAX_HOLDERS => row.holders.push(Holder {
                        cgroup: resolve(holder),
                        wait_secs: d.wait_ns as f64 / NS_PER_SEC,
                        waits: d.waits,
                    }),
                    _ => {
                        rest_ns += d.wait_ns;
                        row.rest.waits += d.waits;
                        row.rest.holders += 1;
                    }
                }
            }
            row.wait_secs = wait_ns as f64 / NS_PER_SEC;
            row.rest.wait_secs = rest_ns as f64 / NS_PER_SEC;
            row
        })
        .collect();
    out.sort_by(|a, b| {
        b.wait_secs
            .total_cmp(&a.wait_secs)
            .then(a.cgroup.cgroup_id.cmp(&b.cgroup.cgroup_id))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Owner;

    fn named(id: u64) -> CgroupRef {
        CgroupRef {
            cgroup_id: id,
            cgroup_path: Some(format!("/c{id}")),
            owner: Owner::Other,
        }
    }

    fn held(wait_ns: u64, waits: u64) -> Held {
        Held { wait_ns, waits }
    }

    #[test]
    fn holders_are_ranked_bounded_and_the_rest_summed() {
        let mut before = HashMap::new();
        let mut after = HashMap::new();
        before.insert((10, 20), held(1_000_000_000, 10));
        after.insert((10, 20), held(4_000_000_000, 40)); // 3 s, 30 waits
        after.insert((10, HOLDER_IDLE), held(500_000_000, 5));
        after.insert((10, HOLDER_OTHER), held(100_000_000, 2));
        after.insert((10, HOLDER_EARLIER), held(250_000_000, 0));
        for h in 0..6u64 {
            after.insert((10, 30 + h), held(10_000_000 * (h + 1), 1));
        }
        after.insert((11, 11), held(7, 1));
        before.insert((12, 10), held(7, 1));
        after.insert((12, 10), held(7, 1)); // no wait in the window
        let out = holder_window(&before, &after, &mut named);
        assert_eq!(out.len(), 2);
        let v = &out[0];
        assert_eq!(v.cgroup.cgroup_id, 10);
        assert_eq!(v.waits, 30 + 5 + 2 + 6);
        let ids: Vec<u64> = v.holders.iter().map(|h| h.cgroup.cgroup_id).collect();
        assert_eq!(ids, [20, 35, 34, 33, 32]);
        assert!((v.holders[0].wait_secs - 3.0).abs() < 1e-9);
        assert!((v.idle_wait_secs - 0.5).abs() < 1e-9);
        assert!((v.earlier_wait_secs - 0.25).abs() < 1e-9);
        // Holders 31 and 30 (0.02 s + 0.01 s) and the kernel's overflow row.
        assert_eq!(v.rest.holders, 2);
        assert_eq!(v.rest.waits, 4);
        assert_eq!(v.rest.overflow_waits, 2);
        assert!((v.rest.wait_secs - 0.13).abs() < 1e-9);
        let total = 3.0 + 0.5 + 0.25 + 0.13 + (0.06 + 0.05 + 0.04 + 0.03);
        assert!((v.wait_secs - total).abs() < 1e-9, "{}", v.wait_secs);
        assert_eq!(v.main_neighbour().map(|h| h.cgroup.cgroup_id), Some(20));
        assert_eq!(out[1].main_neighbour(), None, "its only holder is itself");
    }
}
