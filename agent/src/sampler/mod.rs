//! Windows: the difference between two cumulative readings of the probes,
//! attributed to cgroups. The kernel never resets its counters, so a window
//! is exactly what happened between two reads.

/// One family's part of the sampler: what it keeps between windows, and
/// its part of each window. Each family's module has a `State` that is
/// one; `Families`, made from the registry's list, holds one of each and
/// calls them in the registry's order.
trait FamilyWindow: Default {
    /// Just before each read of the probes; `counting`: the family is
    /// attached.
    fn before_read(&mut self, _counting: bool) {}

    /// Just after it, whatever it gave.
    fn after_read(&mut self) {}

    /// Once, after the first read.
    fn started(&mut self, _first: &Reading, _counting: bool) {}

    /// The first window starts at a reading of the last run (a restart).
    fn resumed(&mut self) {}

    /// The family's part of the snapshot (`model::<family>::Part`).
    type Part;

    /// Sets the family's part of the window from the two readings, and adds
    /// to `cx.losses` what its window loses beyond its kernel counters
    /// (which the hub adds). The events drained in the window are the
    /// hub's: it sets process's `events` and block's `io_errors` after.
    fn window(&mut self, cx: &mut Cx<'_>, part: &mut Self::Part);
}

/// What a family's window is made of.
struct Cx<'a> {
    before: &'a Reading,
    after: &'a Reading,
    window_secs: f64,
    resolve: &'a mut dyn FnMut(u64) -> CgroupRef,
    probes: &'a Probes,
    /// The TCP events drained in the window, and how many to keep.
    tcp_events: &'a [sonde_common::tcp::TcpEvent],
    tcp_kept: usize,
    /// The window's end.
    clocks: tcp::Clocks,
    losses: &'a mut Vec<LossRecord>,
}

/// Each family's module (`<family>.rs`), and its part of the sampler: the
/// list is `sonde_common::family`'s.
macro_rules! families {
    ($($module:ident $variant:ident),*) => {
        $(pub mod $module;)*

        /// Every family's part of the sampler.
        #[derive(Default)]
        struct Families {
            $($module: $module::State,)*
        }

        impl Families {
            /// Reads the probes, with what each family does around it.
            fn read(&mut self, probes: &mut Probes) -> Result<Reading, ReadError> {
                $(self.$module.before_read(counting(probes, Family::$variant));)*
                let reading = probes.read();
                $(self.$module.after_read();)*
                reading
            }

            fn started(&mut self, probes: &Probes, first: &Reading) {
                $(self.$module.started(first, counting(probes, Family::$variant));)*
            }

            fn resumed(&mut self) {
                $(self.$module.resumed();)*
            }

            /// Each family's part of the window, then its kernel losses.
            fn window(&mut self, cx: &mut Cx<'_>, snapshot: &mut Snapshot) {
                $(
                    self.$module.window(cx, &mut snapshot.$module);
                    cx.losses.extend(loss_records(
                        Family::$variant.name(),
                        losses_of(Family::$variant),
                        cx.before.loss_counts(Family::$variant),
                        cx.after.loss_counts(Family::$variant),
                    ));
                )*
            }
        }
    };
}
sonde_common::for_each_family!(families);

use block::{io_error_record, MAX_IO_ERROR_EVENTS};
use process::event_record;

pub use block::block_window;
pub use process::exit_window;
pub use syscalls::syscall_window;

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sonde_common::family::Family;
use sonde_slo::Histogram;

use crate::{
    attribution::{Attributor, CgroupRef, Owner, KUBELET_PODS_DIR},
    host::{mounts::Mounts, pressure, throttle},
    model::{
        CgroupCount, CgroupHost, CgroupLatency, CgroupLoss, EventRecord, LossRecord, Restart,
        Snapshot,
    },
    probes::{
        events::{self, KernelEvent},
        ProbeState, ProbeStatus, Probes, ReadError, Reading,
    },
};

/// Bound on the events kept per window; the rest are counted as lost.
pub const MAX_EVENTS_PER_WINDOW: usize = 1024;
/// Bound on the events read ahead of the window's close
/// ([`Sampler::poll_events`]): task and TCP events, a window's worth each.
const MAX_PENDING_EVENTS: usize = 2 * MAX_EVENTS_PER_WINDOW;

/// Options of the sampler.
#[derive(Debug, Clone)]
pub struct SamplerOptions {
    /// The kubelet's pod log directory (pod namespace and name).
    pub kubelet_pods_dir: PathBuf,
    /// After a restart with pinned probes: where the first window starts.
    pub resume: Option<Resume>,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            kubelet_pods_dir: PathBuf::from(KUBELET_PODS_DIR),
            resume: None,
        }
    }
}

/// How a restarted agent's first window starts.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The kernel's counts at the end of the last run's last window, and
    /// that end (Unix ns): the first window starts there. `None` starts it
    /// now.
    pub baseline: Option<(Reading, u64)>,
    /// What the first window says about the restart.
    pub restart: Restart,
}

/// Reads the probes once per window and hands back snapshots.
pub struct Sampler {
    probes: Probes,
    previous: Reading,
    previous_at: (Instant, SystemTime),
    attributor: Attributor,
    mounts: Mounts,
    host_status: ProbeStatus,
    /// Each family's part.
    families: Families,
    /// Events read by [`Sampler::poll_events`], waiting for the window's close.
    pending: Vec<KernelEvent>,
    /// Events read ahead that did not fit `pending`, per kind (counted as
    /// `window_full_<kind>`).
    pending_overflow: [u64; sonde_common::events::kind::COUNT as usize],
    /// Told by the first window after a restart.
    restart: Option<Restart>,
    /// Cgroups found removed after the last reading: their keys go after
    /// the next one.
    gone: std::collections::HashSet<u64>,
}

/// Bound on the cgroups whose PSI and throttling are read per window.
pub const MAX_HOST_CGROUPS: usize = 256;

impl Sampler {
    /// Takes the first reading: the start of the first window.
    pub fn start(probes: Probes) -> Result<Self, ReadError> {
        Self::start_with(probes, SamplerOptions::default())
    }

    /// [`Sampler::start`] with options.
    pub fn start_with(mut probes: Probes, options: SamplerOptions) -> Result<Self, ReadError> {
        let mut families = Families::default();
        let now = families.read(&mut probes)?;
        let mounts = Mounts::current().unwrap_or_default();
        families.started(&probes, &now);
        let (resumed, restart) = match options.resume {
            Some(Resume { baseline, restart }) => (baseline, Some(restart)),
            None => (None, None),
        };
        if resumed.is_some() {
            families.resumed();
        }
        let (previous, previous_at) = match resumed {
            Some((mut reading, end_unix_ns)) => {
                // Decoding failures are counted by this process, from zero.
                reading.malformed_events = 0;
                let end = SystemTime::UNIX_EPOCH + Duration::from_nanos(end_unix_ns);
                let ago = SystemTime::now().duration_since(end).unwrap_or_default();
                let instant = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
                (reading, (instant, end))
            }
            None => (now, (Instant::now(), SystemTime::now())),
        };
        Ok(Self {
            probes,
            families,
            previous,
            previous_at,
            restart,
            attributor: Attributor::new(mounts.cgroup2.clone(), options.kubelet_pods_dir),
            host_status: host_status(&mounts),
            mounts,
            pending: Vec::new(),
            pending_overflow: Default::default(),
            gone: Default::default(),
        })
    }

    /// Reads the events the kernel sent since the last call without closing
    /// the window, for those who want them as they happen (the local
    /// socket). They stay in the window too. Returns the new OOM kills and
    /// crashes; TCP events only come with the window.
    pub fn poll_events(&mut self) -> Vec<EventRecord> {
        let fresh = self.probes.drain_events();
        let monotonic_now_ns = monotonic_ns();
        let unix_now_ns = unix_ns(SystemTime::now());
        let mut out = Vec::new();
        for e in fresh {
            if self.pending.len() >= MAX_PENDING_EVENTS {
                if let Some(n) = self.pending_overflow.get_mut(e.kind() as usize) {
                    *n += 1;
                }
                continue;
            }
            if let KernelEvent::Task(t) = &e {
                let age_ns = monotonic_now_ns.saturating_sub(t.ts_ns);
                out.push(event_record(
                    t,
                    self.attributor.resolve(t.cgroup_id),
                    unix_now_ns.saturating_sub(age_ns),
                ));
            }
            self.pending.push(e);
        }
        out
    }

    /// Start of the current window, Unix time in nanoseconds.
    pub fn window_start_unix_ns(&self) -> u64 {
        unix_ns(self.previous_at.1)
    }

    /// The kernel's counts at the end of the last window: what a restarted
    /// agent resumes from.
    pub fn last_reading(&self) -> &Reading {
        &self.previous
    }

    /// The loaded probes.
    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Detaches a family mid-run (see [`Probes::detach`]).
    pub fn detach(&mut self, family: Family, reason: &str) -> bool {
        self.probes.detach(family, reason)
    }

    /// Attaches a detached family again (see [`Probes::reattach`]).
    pub fn reattach(&mut self, family: Family) -> Option<ProbeStatus> {
        self.probes.reattach(family).cloned()
    }

    /// Closes the current window and opens the next.
    pub fn tick(&mut self) -> Result<Snapshot, ReadError> {
        // Those read ahead first: the order stays the kernel's.
        let mut drained = std::mem::take(&mut self.pending);
        drained.extend(self.probes.drain_events());
        let (mut raw_events, mut tcp_events, mut block_events) =
            (Vec::new(), Vec::new(), Vec::new());
        for e in drained {
            match e {
                KernelEvent::Task(e) => raw_events.push(e),
                KernelEvent::Tcp(e) => tcp_events.push(e),
                KernelEvent::Block(e) => block_events.push(e),
            }
        }
        let reading = self.families.read(&mut self.probes)?;
        let now = (Instant::now(), SystemTime::now());
        let monotonic_now_ns = monotonic_ns();
        let unix_now_ns = unix_ns(now.1);
        let window_secs = now.0.duration_since(self.previous_at.0).as_secs_f64();
        let before = &self.previous;
        let attributor = &mut self.attributor;
        // Named apart from the series: a loss record of a vanished cgroup is
        // not an unattributed series.
        let losses_by_cgroup =
            cgroup_loss_window(&before.cgroup_losses, &reading.cgroup_losses, &mut |id| {
                attributor.resolve(id)
            });
        let mut unattributed = 0;
        let mut resolve = |id| {
            let cgroup = attributor.resolve(id);
            if cgroup.owner == Owner::Unknown {
                unattributed += 1;
            }
            cgroup
        };
        let kept = raw_events.len().min(MAX_EVENTS_PER_WINDOW);
        let tcp_kept = tcp_events.len().min(MAX_EVENTS_PER_WINDOW);
        let mut snapshot = Snapshot::default();
        let mut losses = Vec::new();
        self.families.window(
            &mut Cx {
                before,
                after: &reading,
                window_secs,
                resolve: &mut resolve,
                probes: &self.probes,
                tcp_events: &tcp_events,
                tcp_kept,
                clocks: tcp::Clocks {
                    monotonic_ns: monotonic_now_ns,
                    unix_ns: unix_now_ns,
                },
                losses: &mut losses,
            },
            &mut snapshot,
        );
        losses.extend(loss_records(
            "events",
            &events::LOSSES,
            &before.event_loss,
            &reading.event_loss,
        ));
        let losses_unattributed =
            unattributed_records(&before.unattributed_losses, &reading.unattributed_losses);
        losses.extend(missed_records(
            &before.program_missed,
            &reading.program_missed,
        ));
        let mut window_full = std::mem::take(&mut self.pending_overflow);
        let dropped = raw_events.iter().skip(kept).map(|e| e.kind);
        for kind in dropped.chain(tcp_events.iter().skip(tcp_kept).map(|e| e.kind)) {
            if let Some(n) = window_full.get_mut(kind as usize) {
                *n += 1;
            }
        }
        for (index, reason) in events::WINDOW_FULL {
            losses.push(LossRecord {
                stage: "userspace",
                probe: "events",
                reason,
                count: window_full.get(index as usize).copied().unwrap_or(0),
            });
        }
        losses.push(LossRecord {
            stage: "userspace",
            probe: "events",
            reason: "malformed",
            count: reading.malformed_events - before.malformed_events,
        });
        let io_errors = block_events
            .iter()
            .take(MAX_IO_ERROR_EVENTS)
            .map(|e| {
                let age_ns = monotonic_now_ns.saturating_sub(e.ts_ns);
                io_error_record(e, unix_now_ns.saturating_sub(age_ns))
            })
            .collect();
        if block_events.len() > MAX_IO_ERROR_EVENTS {
            losses.push(LossRecord {
                stage: "userspace",
                probe: "events",
                reason: "io_error_events_over_window_cap",
                count: (block_events.len() - MAX_IO_ERROR_EVENTS) as u64,
            });
        }
        let events = raw_events
            .iter()
            .take(kept)
            .map(|e| {
                let age_ns = monotonic_now_ns.saturating_sub(e.ts_ns);
                event_record(e, resolve(e.cgroup_id), unix_now_ns.saturating_sub(age_ns))
            })
            .collect();

        // PSI, throttling and network namespace: the node, and every cgroup
        // seen in the window.
        let host_netns = crate::host::netns::host(Path::new("/proc"));
        let node_pressure = pressure::node(Path::new("/proc"));
        let mut seen: Vec<&CgroupRef> = Vec::new();
        let refs = snapshot
            .syscalls
            .cgroups
            .iter()
            .map(|c| &c.cgroup)
            .chain(snapshot.sched.runqueue.iter().map(|c| &c.cgroup))
            .chain(snapshot.memory.reclaim.iter().map(|c| &c.cgroup))
            .chain(snapshot.process.exits.iter().map(|c| &c.cgroup));
        for r in refs {
            if seen.len() < MAX_HOST_CGROUPS
                && r.cgroup_path.is_some()
                && !seen.iter().any(|s| s.cgroup_id == r.cgroup_id)
            {
                seen.push(r);
            }
        }
        let cgroups = match &self.mounts.cgroup2 {
            Some(root) => seen
                .into_iter()
                .filter_map(|r| {
                    let dir = root.join(r.cgroup_path.as_deref()?.trim_start_matches('/'));
                    let netns = crate::host::netns::of_cgroup(Path::new("/proc"), &dir);
                    Some(CgroupHost {
                        cgroup: r.clone(),
                        pressure: pressure::cgroup(&dir),
                        throttling: throttle::read(&dir, self.mounts.cgroup1_cpu.as_deref()),
                        netns,
                        netns_is_host: netns.is_some() && netns == host_netns,
                    })
                })
                .collect(),
            None => Vec::new(),
        };

        let mut probes = self.probes.statuses().to_vec();
        probes.push(self.host_status.clone());
        let restart = self.restart.take();
        let complete = losses.iter().all(|l| l.count == 0)
            && probes.iter().all(|p| p.state == ProbeState::Attached);
        let gap = restart.as_ref().is_some_and(|r| r.gap.is_some());
        let snapshot = Snapshot {
            window_start_unix_ns: unix_ns(self.previous_at.1),
            window_end_unix_ns: unix_now_ns,
            window_secs,
            probes,
            complete,
            losses,
            losses_by_cgroup,
            losses_unattributed,
            unattributed_series: unattributed,
            node_pressure,
            cgroups,
            slos: Vec::new(),
            restart,
            overhead: None,
            ..snapshot
        };
        let mut snapshot = snapshot;
        snapshot.process.events = events;
        snapshot.block.io_errors = io_errors;
        snapshot.flag_restart_gap(gap);
        let mut reading = reading;
        self.forget_removed_cgroups(&mut reading, now.0);
        self.previous = reading;
        self.previous_at = now;
        Ok(snapshot)
    }
}

impl Sampler {
    /// Deletes the keys of removed cgroups, in the kernel and in `reading`
    /// (taken at `read_at`) alike, so that cgroup churn does not fill the
    /// maps (see `probes/gone.rs`). A cgroup is deleted one window after a
    /// walk that began after a reading found it gone: it was removed before
    /// this reading, which therefore holds all its counts. (Deleting those
    /// the walk just missed would lose what they counted between this
    /// reading and their removal.)
    fn forget_removed_cgroups(&mut self, reading: &mut Reading, read_at: Instant) {
        let gone = std::mem::take(&mut self.gone);
        if !gone.is_empty() {
            match self.probes.forget_cgroups(&gone) {
                Ok(_) => reading.forget_cgroups(&gone),
                // Keys deleted before the error are absent from the next
                // reading, which makes no series of them: nothing is
                // counted twice. The rest are found gone again.
                Err(e) => log::warn!(
                    "deleting the keys of removed cgroups: {}",
                    crate::probes::error_chain(&e)
                ),
            }
        }
        self.gone = self.attributor.gone(&reading.cgroup_ids(), read_at);
    }
}

/// Whether `family` is attached (counting) now.
fn counting(probes: &Probes, family: Family) -> bool {
    probes
        .statuses()
        .iter()
        .any(|s| s.family() == Some(family) && s.state != ProbeState::Unavailable)
}

/// The host family reads /proc and cgroupfs; it is degraded without PSI.
pub fn host_status(mounts: &Mounts) -> ProbeStatus {
    let psi = Path::new("/proc/pressure/cpu").exists();
    let mut hook = "procfs:/proc/pressure".to_owned();
    if mounts.cgroup2.is_some() {
        hook.push_str("+cgroup2");
    }
    if mounts.cgroup1_cpu.is_some() {
        hook.push_str("+cgroup1:cpu");
    }
    ProbeStatus {
        probe: "host",
        state: if psi { ProbeState::Attached } else { ProbeState::Degraded },
        hook: Some(hook),
        reason: (!psi).then(|| {
            "no /proc/pressure: the kernel lacks CONFIG_PSI or was booted with psi=0; boot with psi=1".to_owned()
        }),
        gaps: Vec::new(),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Per-cgroup counts of the window, largest first.
pub fn count_window(
    before: &HashMap<u64, u64>,
    after: &HashMap<u64, u64>,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> Vec<CgroupCount> {
    let mut out: Vec<CgroupCount> = after
        .iter()
        .filter_map(|(&id, &n)| {
            let count = n
                .checked_sub(before.get(&id).copied().unwrap_or(0))
                .unwrap_or(n);
            (count > 0).then(|| CgroupCount {
                cgroup: resolve(id),
                count,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.cgroup.cgroup_id.cmp(&b.cgroup.cgroup_id))
    });
    out
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

/// A family's kernel loss counters: (index, stable name).
pub fn losses_of(family: Family) -> &'static [(u32, &'static str)] {
    crate::probes::losses(family)
}

/// The losses the kernel counts against the cgroup whose event was lost:
/// (probe, reason). Only when its table of such counts is full does one go
/// to the family's per-kind counter, unattributed.
pub const BY_CGROUP: [(&str, &str); 6] = [
    (Family::Syscalls.name(), "hist_map_full"),
    (Family::Syscalls.name(), "errors_map_full"),
    (Family::Sched.name(), "hist_map_full"),
    (Family::Memory.name(), "hist_map_full"),
    (Family::Memory.name(), "oom_map_full"),
    (Family::Process.name(), "map_full"),
];

/// The name of loss `index` of the family numbered `family` in the
/// kernel's table of losses by cgroup.
fn loss_name(family: u32, index: u32) -> Option<(&'static str, &'static str)> {
    let family = Family::from_u32(family)?;
    let reason = losses_of(family).iter().find(|(i, _)| *i == index)?.1;
    Some((family.name(), reason))
}

/// Per cgroup, the events the kernel lost between two readings of its
/// table of losses by cgroup.
pub fn cgroup_loss_window(
    before: &HashMap<(u64, u32, u32), u64>,
    after: &HashMap<(u64, u32, u32), u64>,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> Vec<CgroupLoss> {
    let mut out: Vec<CgroupLoss> = after
        .iter()
        .filter_map(|(&(cgroup_id, family, index), &now)| {
            let then = before
                .get(&(cgroup_id, family, index))
                .copied()
                .unwrap_or(0);
            // A smaller count means the key was deleted and made anew.
            let count = now.checked_sub(then).unwrap_or(now);
            let (probe, reason) = loss_name(family, index)?;
            (count > 0).then(|| CgroupLoss {
                cgroup: resolve(cgroup_id),
                probe,
                reason,
                count,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.probe, a.reason, a.cgroup.cgroup_id).cmp(&(b.probe, b.reason, b.cgroup.cgroup_id))
    });
    out
}

/// Per (probe, reason) counted by cgroup, the losses no cgroup could be
/// named for between two readings (the table of losses by cgroup was full).
pub fn unattributed_records(before: &[u64], after: &[u64]) -> Vec<LossRecord> {
    BY_CGROUP
        .iter()
        .filter_map(|&(probe, reason)| {
            let family = Family::from_name(probe)?;
            let index = losses_of(family).iter().find(|(_, r)| *r == reason)?.0;
            let slot = sonde_common::loss::unattributed_slot(family, index) as usize;
            let now = after.get(slot).copied().unwrap_or(0);
            let then = before.get(slot).copied().unwrap_or(0);
            Some(LossRecord {
                stage: "kernel",
                probe,
                reason,
                count: now.checked_sub(then).unwrap_or(now),
            })
        })
        .collect()
}

/// The reason of the loss record that counts the runs the kernel skipped of
/// a family's programs (an event on a CPU where the same program was still
/// running, interrupted or preempted).
pub const PROGRAM_MISSED: &str = "program_missed";

/// One loss record per family: the runs of its programs the kernel skipped
/// between two readings (per program: a program not in the earlier reading,
/// or loaded anew under the same id, counts whole). A family with no
/// program read has no record.
pub fn missed_records(
    before: &BTreeMap<u32, (String, u64)>,
    after: &BTreeMap<u32, (String, u64)>,
) -> Vec<LossRecord> {
    Family::ALL
        .iter()
        .filter_map(|family| {
            let probe = family.name();
            let mut programs = after.iter().filter(|(_, (f, _))| f == probe).peekable();
            programs.peek()?;
            let count = programs
                .map(|(id, &(_, now))| match before.get(id) {
                    Some(&(_, then)) if then <= now => now - then,
                    _ => now,
                })
                .sum();
            Some(LossRecord {
                stage: "kernel",
                probe,
                reason: PROGRAM_MISSED,
                count,
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::syscalls::SyscallReading;
    use sonde_common::syscalls::loss;

    #[test]
    fn losses_by_cgroup_and_unattributed_ones_come_from_the_kernels_counts() {
        const SYSCALLS: u32 = Family::Syscalls as u32;
        let before: HashMap<(u64, u32, u32), u64> =
            [((7, SYSCALLS, loss::ERR_MAP_FULL), 10)].into();
        let after: HashMap<(u64, u32, u32), u64> = [
            ((7, SYSCALLS, loss::ERR_MAP_FULL), 14),
            ((8, SYSCALLS, loss::ERR_MAP_FULL), 3),
            ((8, SYSCALLS, loss::HIST_MAP_FULL), 0),
        ]
        .into();
        let by_cgroup = cgroup_loss_window(&before, &after, &mut named);
        let got: Vec<(u64, &str, u64)> = by_cgroup
            .iter()
            .map(|l| (l.cgroup.cgroup_id, l.reason, l.count))
            .collect();
        assert_eq!(got, [(7, "errors_map_full", 4), (8, "errors_map_full", 3)]);
        // The kernel's own count of those no cgroup could be named for.
        let mut after_slots = vec![0; sonde_common::loss::UNATTRIBUTED_SLOTS as usize];
        after_slots[sonde_common::loss::unattributed_slot(Family::Syscalls, loss::ERR_MAP_FULL)
            as usize] = 2;
        after_slots[sonde_common::loss::unattributed_slot(Family::Sched, 0 /* hist_map_full */)
            as usize] = 5;
        let unattributed = unattributed_records(&[], &after_slots);
        let count = |probe: &str, reason: &str| {
            unattributed
                .iter()
                .find(|r| r.probe == probe && r.reason == reason)
                .map(|r| r.count)
        };
        assert_eq!(count("syscalls", "errors_map_full"), Some(2));
        assert_eq!(count("syscalls", "hist_map_full"), Some(0));
        assert_eq!(count("sched", "hist_map_full"), Some(5));
        assert_eq!(count("process", "map_full"), Some(0));
        assert_eq!(count("memory", "oom_map_full"), Some(0));
        // Not counted by cgroup: not listed.
        assert_eq!(count("syscalls", "start_slot_collision"), None);
        assert_eq!(unattributed.len(), BY_CGROUP.len());
    }

    #[test]
    fn each_familys_named_losses_are_its_kernel_counters() {
        // (Every family's are recorded: `Families::window` is made from the
        // registry's list.) Each named loss is a counter the family's kernel programs keep
        // (the rest are informational, never a loss).
        for family in Family::ALL {
            for &(index, reason) in losses_of(family) {
                assert!(index < family.loss_count(), "{family} {reason}");
            }
        }
    }

    #[test]
    fn skipped_program_runs_are_a_loss_per_family() {
        let map = |rows: &[(u32, &str, u64)]| -> BTreeMap<u32, (String, u64)> {
            rows.iter()
                .map(|&(id, f, n)| (id, (f.to_owned(), n)))
                .collect()
        };
        let records = missed_records(
            &map(&[(1, "process", 4), (2, "syscalls", 10), (3, "syscalls", 1)]),
            &map(&[
                (1, "process", 7),
                (2, "syscalls", 10),
                (3, "syscalls", 3),
                (9, "tcp", 2),
            ]),
        );
        let count = |probe: &str| {
            records
                .iter()
                .find(|r| r.probe == probe)
                .map(|r| (r.stage, r.reason, r.count))
        };
        assert_eq!(count("process"), Some(("kernel", PROGRAM_MISSED, 3)));
        assert_eq!(count("syscalls"), Some(("kernel", PROGRAM_MISSED, 2)));
        // A program new in this reading: all of it is this window's.
        assert_eq!(count("tcp"), Some(("kernel", PROGRAM_MISSED, 2)));
        // No program read: no record.
        assert_eq!(count("sched"), None);
        // A restart that loaded the programs anew: new ids count whole,
        // whatever the old ones had reached.
        let reloaded = missed_records(&map(&[(1, "process", 90)]), &map(&[(5, "process", 120)]));
        assert_eq!(reloaded[0].count, 120);
    }

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
        let openat = crate::probes::syscalls::number("openat").unwrap();
        let read = crate::probes::syscalls::number("read").unwrap();
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
        let cgroups = syscall_window(&before, &after, 2.0, &mut named);
        // The hub adds each family's kernel losses to its window.
        let losses = loss_records(
            Family::Syscalls.name(),
            losses_of(Family::Syscalls),
            &before.loss,
            &after.loss,
        );
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
    fn failures_without_a_latency_sample_are_still_reported() {
        // The latency map was full when cgroup 7's openat failed (its
        // sample counted as hist_map_full); the failure map had room.
        let openat = crate::probes::syscalls::number("openat").unwrap();
        let before = reading(&[], &[]);
        let mut after = reading(
            &[(8, openat, 1000)],
            &[(7, openat, 2, 3), (8, openat, 2, 1)],
        );
        after.loss[loss::HIST_MAP_FULL as usize] = 3;
        let cgroups = syscall_window(&before, &after, 1.0, &mut named);
        let seven = cgroups.iter().find(|c| c.cgroup.cgroup_id == 7).unwrap();
        let s = &seven.syscalls[0];
        assert_eq!((s.name.as_str(), s.calls, s.errors), ("openat", 0, 3));
        assert_eq!(s.errnos.get("ENOENT"), Some(&3));
        assert_eq!((seven.calls, seven.errors), (0, 3));
        let total: u64 = cgroups.iter().map(|c| c.errors).sum();
        assert_eq!(total, 4);
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
