//! Host family: PSI and CPU throttling equal the kernel's files read at the
//! same moment (sonde's reading lies between two reads of the file).

use std::path::Path;

use sonde::{
    host::pressure::{self, Pressure, Psi},
    probes::{ProbeOptions, Probes},
    sampler::Sampler,
};

use crate::{burn_cpu, pin_to_cpu, privileged, CpuLimit, TestCgroup, Workload};

/// Asserts `before <= sonde <= after` for every PSI total present.
fn bracket(what: &str, before: &Pressure, sonde: &Pressure, after: &Pressure) -> usize {
    let mut checked = 0;
    let each = |p: &Pressure| [p.cpu, p.memory, p.io];
    for (i, ((b, s), a)) in each(before)
        .into_iter()
        .zip(each(sonde))
        .zip(each(after))
        .enumerate()
    {
        let (Some(b), Some(s), Some(a)) = (b, s, a) else {
            assert!(
                b.is_none() && a.is_none(),
                "{what}: sonde lost resource {i}"
            );
            continue;
        };
        let lines = |p: Psi| [Some(p.some), p.full];
        for ((lb, ls), la) in lines(b).into_iter().zip(lines(s)).zip(lines(a)) {
            if let (Some(lb), Some(ls), Some(la)) = (lb, ls, la) {
                assert!(
                    lb.total_us <= ls.total_us && ls.total_us <= la.total_us,
                    "{what} resource {i}: {} <= {} <= {}",
                    lb.total_us,
                    ls.total_us,
                    la.total_us
                );
                checked += 1;
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

    let node_before = pressure::node(Path::new("/proc"));
    let cgroup_before = pressure::cgroup(cgroup.path());
    let throttled_before = limit.read();
    let snapshot = sampler.tick().expect("second reading");
    let throttled_after = limit.read();
    let cgroup_after = pressure::cgroup(cgroup.path());
    let node_after = pressure::node(Path::new("/proc"));
    for s in spinners.drain(..) {
        // SAFETY: killing our own child.
        unsafe { libc::kill(s.pid(), libc::SIGKILL) };
        s.wait_status();
    }

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
