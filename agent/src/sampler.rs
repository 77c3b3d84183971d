//! Windows: the difference between two cumulative readings of the probes,
//! attributed to cgroups. The kernel never resets its counters, so a window
//! is exactly what happened between two reads.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use sonde_slo::Histogram;

use crate::{
    attribution::CgroupPaths,
    host::mounts::Mounts,
    model::{CgroupSyscalls, LossRecord, Snapshot, SyscallSeries},
    probes::{
        syscalls::{self, SyscallReading},
        ProbeState, Probes, Reading,
    },
};

/// Reads the probes once per window and hands back snapshots.
pub struct Sampler {
    probes: Probes,
    previous: Reading,
    previous_at: (Instant, SystemTime),
    cgroups: CgroupPaths,
}

impl Sampler {
    /// Takes the first reading: the start of the first window.
    pub fn start(mut probes: Probes) -> Result<Self, aya::maps::MapError> {
        let previous = probes.read()?;
        let cgroup2 = Mounts::current().ok().and_then(|m| m.cgroup2);
        Ok(Self {
            probes,
            previous,
            previous_at: (Instant::now(), SystemTime::now()),
            cgroups: CgroupPaths::new(cgroup2),
        })
    }

    /// Start of the current window, Unix time in nanoseconds.
    pub fn window_start_unix_ns(&self) -> u64 {
        unix_ns(self.previous_at.1)
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
        let cgroups = &mut self.cgroups;
        let (syscalls, losses) = syscall_window(
            &self.previous.syscalls,
            &reading.syscalls,
            window_secs,
            &mut |id| cgroups.resolve(id).map(str::to_owned),
        );
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
            syscalls,
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

/// The syscall signals between two cumulative readings, per cgroup (busiest
/// first), and the family's losses in that window.
pub fn syscall_window(
    before: &SyscallReading,
    after: &SyscallReading,
    window_secs: f64,
    resolve: &mut dyn FnMut(u64) -> Option<String>,
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

    let empty = Histogram::new();
    let mut per_cgroup: BTreeMap<u64, Vec<SyscallSeries>> = BTreeMap::new();
    for (&(cgroup, nr), hist) in &after.latency {
        let earlier = before.latency.get(&(cgroup, nr)).unwrap_or(&empty);
        let latency = hist.delta(earlier).unwrap_or_else(|_| hist.clone());
        if latency.count() == 0 {
            continue;
        }
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
                cgroup_id,
                cgroup_path: resolve(cgroup_id),
                calls: series.iter().map(|s| s.calls).sum(),
                errors: series.iter().map(|s| s.errors).sum(),
                syscalls: series,
            }
        })
        .collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.cgroup_id.cmp(&b.cgroup_id)));

    let losses = syscalls::LOSS_INDICES
        .iter()
        .map(|&i| LossRecord {
            stage: "kernel",
            probe: syscalls::PROBE,
            reason: syscalls::loss_reason(i),
            count: after.loss[i as usize].saturating_sub(before.loss[i as usize]),
        })
        .collect();
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
        let (cgroups, losses) =
            syscall_window(&before, &after, 2.0, &mut |id| Some(format!("/cg{id}")));
        assert_eq!(cgroups.len(), 2);
        assert_eq!(cgroups[0].cgroup_id, 7);
        assert_eq!(cgroups[0].cgroup_path.as_deref(), Some("/cg7"));
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
}
