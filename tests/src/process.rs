//! Process family: crashes by signal and non-zero exits, exact counts.

use sonde::{probes::ProbeOptions, sampler::Sampler};

use crate::{no_core_dumps, privileged, set_comm, TestCgroup, Workload};

#[test]
fn crashes_and_exit_statuses_counted_exactly() {
    if !privileged() {
        return;
    }
    let probes = crate::load_probes("process", ProbeOptions::default());
    let cgroup = TestCgroup::new("crash");
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Workload::fork(&cgroup, || {
            no_core_dumps();
            set_comm(c"sonde-segv");
            // SAFETY: in our own forked child: the Rust runtime's SIGSEGV
            // handler (stack overflow detection) goes, then the signal comes.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }));
    }
    for _ in 0..2 {
        children.push(Workload::fork(&cgroup, || {
            no_core_dumps();
            set_comm(c"sonde-abort");
            // SAFETY: abort ends the forked child.
            unsafe { libc::abort() };
        }));
    }
    for _ in 0..4 {
        children.push(Workload::fork(&cgroup, || {
            // SAFETY: ends the forked child with status 3.
            unsafe { libc::_exit(3) };
        }));
    }
    let pids: Vec<i32> = children.iter().map(Workload::pid).collect();
    let mut sampler = Sampler::start(probes).expect("first reading");
    for c in &children {
        c.go();
    }
    let statuses: Vec<i32> = children.into_iter().map(Workload::wait_status).collect();
    let snapshot = sampler.tick().expect("second reading");

    assert!(statuses[..3]
        .iter()
        .all(|&s| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGSEGV));
    assert!(statuses[3..5]
        .iter()
        .all(|&s| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGABRT));
    assert!(statuses[5..]
        .iter()
        .all(|&s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 3));

    let exits = snapshot
        .exits(cgroup.id())
        .expect("exits for the test cgroup");
    let why = format!(
        "{exits:?}; all cgroups: {:?}; losses: {:?}",
        snapshot.process.exits,
        snapshot
            .losses
            .iter()
            .filter(|l| l.count > 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(exits.signals.get("SIGSEGV"), Some(&3), "{why}");
    assert_eq!(
        exits.signals.get("SIGABRT"),
        Some(&2),
        "{exits:?}; all cgroups: {:?}; losses: {:?}",
        snapshot.process.exits,
        snapshot
            .losses
            .iter()
            .filter(|l| l.count > 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(exits.signals.len(), 2, "{exits:?}");
    assert_eq!(exits.crashes, 5);
    assert_eq!(exits.exit_statuses.get(&3), Some(&4), "{why}");
    assert_eq!(exits.nonzero_exits, 4);

    let crashes: Vec<_> = snapshot
        .process
        .events
        .iter()
        .filter(|e| e.kind == "crash" && e.cgroup.cgroup_id == cgroup.id())
        .collect();
    assert_eq!(crashes.len(), 5, "{crashes:?}");
    for (pid, signal, comm) in [
        (pids[0], "SIGSEGV", "sonde-segv"),
        (pids[1], "SIGSEGV", "sonde-segv"),
        (pids[2], "SIGSEGV", "sonde-segv"),
        (pids[3], "SIGABRT", "sonde-abort"),
        (pids[4], "SIGABRT", "sonde-abort"),
    ] {
        let event = crashes
            .iter()
            .find(|e| e.pid == pid as u32)
            .unwrap_or_else(|| panic!("no event for {pid}"));
        assert_eq!(event.signal.as_deref(), Some(signal));
        assert_eq!(event.comm, comm);
        assert!(!event.core_dumped);
    }
    // Nothing of this family, or of the ring that carried its events, was
    // lost: not a map-full drop, not a run of its program the kernel
    // skipped (`program_missed`, the kernel's own count). Other families'
    // losses (the syscall family's skipped runs on kernels that run its
    // tracepoints preemptibly) are theirs to report.
    let ours: Vec<_> = snapshot
        .losses
        .iter()
        .filter(|l| l.count > 0 && (l.probe == "process" || l.probe == "events"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}
