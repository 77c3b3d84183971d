//! Windows: the difference between two cumulative readings of the probes,
//! attributed to cgroups. The kernel never resets its counters, so a window
//! is exactly what happened between two reads.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use sonde_slo::Histogram;

use crate::{
    attribution::{Attributor, CgroupRef, Owner, KUBELET_PODS_DIR},
    host::mounts::Mounts,
    model::{CgroupLatency, CgroupSyscalls, LossRecord, Snapshot, SyscallSeries},
    probes::{
        sched,
        syscalls::{self, SyscallReading},
        ProbeState, Probes, Reading,
    },
};

/// Options of the sampler.
#[derive(Debug, Clone)]
pub struct SamplerOptions {
    /// The kubelet's pod log directory (pod namespace and name).
    pub kubelet_pods_dir: PathBuf,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            kubelet_pods_dir: PathBuf::from(KUBELET_PODS_DIR),
        }
    }
}

/// Reads the probes once per window and hands back snapshots.
pub struct Sampler {
    probes: Probes,
    previous: Reading,
    previous_at: (Instant, SystemTime),
    attributor: Attributor,
}

impl Sampler {
    /// Takes the first reading: the start of the first window.
    pub fn start(probes: Probes) -> Result<Self, aya::maps::MapError> {
        Self::start_with(probes, SamplerOptions::default())
    }

    /// [`Sampler::start`] with options.
    pub fn start_with(
        mut probes: Probes,
        options: SamplerOptions,
    ) -> Result<Self, aya::maps::MapError> {
        let previous = probes.read()?;
        let cgroup2 = Mounts::current().ok().and_then(|m| m.cgroup2);
        Ok(Self {
            probes,
            previous,
            previous_at: (Instant::now(), SystemTime::now()),
            attributor: Attributor::new(cgroup2, options.kubelet_pods_dir),
        })
    }

    /// The loaded probes.
    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Closes the current window and opens the next.
    pub fn tick(&mut self) -> Result<Snapshot, aya::maps::MapError> {
        let reading = self.probes.read()?;
        let now = (Instant::now(), SystemTime::now());
        let window_secs = now.0.duration_since(self.previous_at.0).as_secs_f64();
        let attributor = &mut self.attributor;
        let mut unattributed = 0;
        let mut resolve = |id| {
            let cgroup = attributor.resolve(id);
            if cgroup.owner == Owner::Unknown {
                unattributed += 1;
            }
            cgroup
        };
        let (syscalls, mut losses) = syscall_window(
            &self.previous.syscalls,
            &reading.syscalls,
            window_secs,
            &mut resolve,
        );
        let runqueue = latency_window(&self.previous.sched.runq, &reading.sched.runq, &mut resolve);
        losses.extend(loss_records(
            sched::PROBE,
            &sched::LOSSES,
            &self.previous.sched.loss,
            &reading.sched.loss,
        ));

        let probes = self.probes.statuses().to_vec();
        let complete = losses.iter().all(|l| l.count == 0)
            && probes.iter().all(|p| p.state == ProbeState::Attached);
        let snapshot = Snapshot {
            window_start_unix_ns: unix_ns(self.previous_at.1),
            window_end_unix_ns: unix_ns(now.1),
            window_secs,
            probes,
            complete,
            losses,
            unattributed_series: unattributed,
            syscalls,
            runqueue,
        };
        self.previous = reading;
        self.previous_at = now;
        Ok(snapshot)
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The delta of every histogram between two readings; a histogram that went
/// backwards (its map was recreated) counts from zero.
pub fn histogram_deltas<K: Copy + Eq + Hash>(
    before: &HashMap<K, Histogram>,
    after: &HashMap<K, Histogram>,
) -> Vec<(K, Histogram)> {
    let empty = Histogram::new();
    after
        .iter()
        .filter_map(|(key, hist)| {
            let delta = hist
                .delta(before.get(key).unwrap_or(&empty))
                .unwrap_or_else(|_| hist.clone());
            (delta.count() > 0).then_some((*key, delta))
        })
        .collect()
}

/// Loss records of one family between two readings of its counters.
pub fn loss_records(
    probe: &'static str,
    reasons: &[(u32, &'static str)],
    before: &[u64],
    after: &[u64],
) -> Vec<LossRecord> {
    reasons
        .iter()
        .map(|&(i, reason)| {
            let i = i as usize;
            LossRecord {
                stage: "kernel",
                probe,
                reason,
                count: after
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(before.get(i).copied().unwrap_or(0)),
            }
        })
        .collect()
}

/// Per-cgroup latency histograms of the window, most samples first.
pub fn latency_window(
    before: &HashMap<u64, Histogram>,
    after: &HashMap<u64, Histogram>,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> Vec<CgroupLatency> {
    let mut out: Vec<CgroupLatency> = histogram_deltas(before, after)
        .into_iter()
        .map(|(id, hist)| CgroupLatency::new(resolve(id), hist))
        .collect();
    out.sort_by(|a, b| {
        b.sum_secs
            .total_cmp(&a.sum_secs)
            .then(a.cgroup.cgroup_id.cmp(&b.cgroup.cgroup_id))
    });
    out
}

/// The syscall signals between two cumulative readings, per cgroup (busiest
/// first), and the family's losses in that window.
pub fn syscall_window(
    before: &SyscallReading,
    after: &SyscallReading,
    window_secs: f64,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> (Vec<CgroupSyscalls>, Vec<LossRecord>) {
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

    let losses = loss_records(
        syscalls::PROBE,
        &syscalls::LOSSES,
        &before.loss,
        &after.loss,
    );
    (out, losses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_common::syscalls::loss;

    fn reading(samples: &[(u64, u32, u64)], errors: &[(u64, u32, u32, u64)]) -> SyscallReading {
        let mut r = SyscallReading::default();
        for &(cg, nr, v) in samples {
            r.latency.entry((cg, nr)).or_default().record_binary_ns(v);
        }
        for &(cg, nr, errno, n) in errors {
            r.errors.insert((cg, nr, errno), n);
        }
        r
    }

    fn named(id: u64) -> CgroupRef {
        CgroupRef {
            cgroup_id: id,
            cgroup_path: Some(format!("/cg{id}")),
            owner: Owner::Other,
        }
    }

    #[test]
    fn window_is_the_difference_of_two_readings() {
        let openat = syscalls::number("openat").unwrap();
        let read = syscalls::number("read").unwrap();
        let before = reading(&[(7, openat, 1000)], &[(7, openat, 2, 1)]);
        let mut after = reading(
            &[
                (7, openat, 1000),
                (7, openat, 2000),
                (7, openat, 4000),
                (9, read, 10),
            ],
            &[(7, openat, 2, 3)],
        );
        after.loss[loss::START_COLLISION as usize] = 5;
        after.loss[loss::EXIT_UNMATCHED as usize] = 50;
        let (cgroups, losses) = syscall_window(&before, &after, 2.0, &mut named);
        assert_eq!(cgroups.len(), 2);
        assert_eq!(cgroups[0].cgroup.cgroup_id, 7);
        assert_eq!(cgroups[0].cgroup.cgroup_path.as_deref(), Some("/cg7"));
        let s = &cgroups[0].syscalls[0];
        assert_eq!((s.name.as_str(), s.calls, s.errors), ("openat", 2, 2));
        assert_eq!(s.errnos.get("ENOENT"), Some(&2));
        assert_eq!(s.rate_per_sec, 1.0);
        assert_eq!(s.error_ratio, 1.0);
        let collisions = losses
            .iter()
            .find(|l| l.reason == "start_slot_collision")
            .unwrap();
        assert_eq!(collisions.count, 5);
        assert_eq!(losses.len(), 3, "exit_unmatched is not a loss");
    }

    #[test]
    fn latency_windows_and_resets() {
        let mut before = HashMap::new();
        let mut after = HashMap::new();
        let mut h = Histogram::new();
        h.record_binary_ns(1 << 20);
        before.insert(1u64, h.clone());
        h.record_binary_ns(1 << 21);
        after.insert(1u64, h);
        // cgroup 2 went backwards: its map was recreated, count from zero
        let mut big = Histogram::new();
        big.record_binary_ns(5);
        big.record_binary_ns(5);
        before.insert(2, big);
        let mut small = Histogram::new();
        small.record_binary_ns(5);
        after.insert(2, small);
        let out = latency_window(&before, &after, &mut named);
        let one = out.iter().find(|c| c.cgroup.cgroup_id == 1).unwrap();
        assert_eq!(one.count, 1);
        let two = out.iter().find(|c| c.cgroup.cgroup_id == 2).unwrap();
        assert_eq!(two.count, 1);
    }
}
