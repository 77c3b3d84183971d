//! Host family: PSI and CPU throttling equal the kernel's files read at the
//! same moment (sonde's reading lies between two reads of the file).

use std::path::Path;

use sonde::{
    host::pressure::{Pressure, PsiLine},
    probes::{ProbeOptions, Probes},
    sampler::Sampler,
};

use crate::{burn_cpu, pin_to_cpu, privileged, CpuLimit, TestCgroup, Workload};

/// The PSI resources, in the order of [`Pressure`]'s fields.
const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// The `total=` of the `some` and `full` lines of each resource's PSI file
/// (`<dir>/<resource><suffix>`), read by the test's own code; `None` for a
/// missing file or line.
type PsiTotals = [[Option<u64>; 2]; 3];

fn psi_totals(dir: &Path, suffix: &str) -> PsiTotals {
    RESOURCES.map(|resource| {
        let path = dir.join(format!("{resource}{suffix}"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return [None, None];
        };
        ["some", "full"].map(|kind| {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(kind))?;
            let total = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("total="))
                .unwrap_or_else(|| panic!("no total= in {}: {line}", path.display()));
            Some(total.parse().unwrap_or_else(|e| panic!("{line}: {e}")))
        })
    })
}

/// Asserts that sonde shows exactly the PSI lines the kernel's files have,
/// each total with `before <= sonde <= after`; returns how many lines.
fn bracket(what: &str, before: &PsiTotals, sonde: &Pressure, after: &PsiTotals) -> usize {
    let mut checked = 0;
    let theirs = [sonde.cpu, sonde.memory, sonde.io]
        .map(|psi| psi.map_or([None, None], |p| [Some(p.some), p.full]));
    for (i, resource) in RESOURCES.iter().enumerate() {
        for (j, kind) in ["some", "full"].iter().enumerate() {
            let s: Option<PsiLine> = theirs[i][j];
            match (before[i][j], after[i][j]) {
                (Some(b), Some(a)) => {
                    let s = s
                        .unwrap_or_else(|| panic!("{what}: sonde lost {resource} {kind}"))
                        .total_us;
                    assert!(
                        b <= s && s <= a,
                        "{what} {resource} {kind}: {b} <= {s} <= {a}"
                    );
                    checked += 1;
                }
                (None, None) => assert!(
                    s.is_none(),
                    "{what}: sonde shows {resource} {kind}, which the kernel has not"
                ),
                (b, a) => panic!("{what} {resource} {kind} came or went: {b:?}, {a:?}"),
            }
        }
    }
    checked
}

#[test]
fn pressure_and_throttling_match_the_kernel() {
    if !privileged() {
        return;
    }
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let cgroup = TestCgroup::new("host");
    // 10 ms of CPU per 100 ms period: a spinning child is throttled.
    let limit = CpuLimit::new(&cgroup, "host", 10_000, 100_000);
    let extra = limit.extra_procs();
    let mut spinners: Vec<Workload> = (0..2)
        .map(|_| {
            Workload::fork_joining(&cgroup, extra.as_deref(), || {
                pin_to_cpu(0);
                burn_cpu(60_000_000);
                // Stay in the cgroup until killed, so that it has a member.
                // SAFETY: pause only waits for a signal.
                unsafe { libc::pause() };
            })
        })
        .collect();
    let mut sampler = Sampler::start(probes).expect("first reading");
    for s in &spinners {
        s.go();
    }
    // Until both have burnt their CPU (throttled to 10 %: about 1.2 s).
    let burnt = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
        stat.split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for _ in 0..600 {
        if spinners.iter().all(|s| burnt(s.pid()) >= 60_000_000) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let node_before = psi_totals(Path::new("/proc/pressure"), "");
    let cgroup_before = psi_totals(cgroup.path(), ".pressure");
    let throttled_before = limit.read();
    let snapshot = sampler.tick().expect("second reading");
    let throttled_after = limit.read();
    let cgroup_after = psi_totals(cgroup.path(), ".pressure");
    let node_after = psi_totals(Path::new("/proc/pressure"), "");
    for s in spinners.drain(..) {
        // SAFETY: killing our own child.
        unsafe { libc::kill(s.pid(), libc::SIGKILL) };
        s.wait_status();
    }

    // How many lines the kernel gives is the kernel's (the node's cpu
    // `full` only since 5.13); that it gives them is this test's premise.
    let node_checked = bracket("node", &node_before, &snapshot.node_pressure, &node_after);
    assert!(
        node_checked >= 5,
        "cpu some/full, memory some/full, io some/full: {node_checked}"
    );
    let host = snapshot
        .cgroup_host(cgroup.id())
        .expect("the test cgroup's PSI and throttling");
    let cgroup_checked = bracket("cgroup", &cgroup_before, &host.pressure, &cgroup_after);
    assert!(cgroup_checked >= 5, "{cgroup_checked}");
    let cpu_some = host.pressure.cpu.expect("cpu.pressure").some.total_us;
    assert!(cpu_some > 0, "throttled spinners stall on CPU");

    let t = host.throttling.expect("throttling read for the cgroup");
    assert!(
        throttled_before.periods <= t.periods && t.periods <= throttled_after.periods,
        "{throttled_before:?} {t:?} {throttled_after:?}"
    );
    assert!(
        throttled_before.throttled_periods <= t.throttled_periods
            && t.throttled_periods <= throttled_after.throttled_periods
    );
    assert!(
        throttled_before.throttled_ns <= t.throttled_ns
            && t.throttled_ns <= throttled_after.throttled_ns
    );
    assert!(t.throttled_periods > 0, "{t:?}");
    assert_eq!(t.source, throttled_before.source);
    let host_status = snapshot
        .probes
        .iter()
        .find(|p| p.probe == "host")
        .expect("host status");
    assert_eq!(host_status.state, sonde::probes::ProbeState::Attached);
}
