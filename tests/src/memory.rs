//! Memory family: an OOM kill counted once, against the kernel's own count.

use sonde::{probes::ProbeOptions, sampler::Sampler};

use crate::{privileged, set_comm, MemoryLimit, TestCgroup, Workload};

const LIMIT_BYTES: u64 = 32 << 20;
const ALLOC_BYTES: usize = 64 << 20;

#[test]
fn oom_kill_counted_once_with_the_victim() {
    if !privileged() {
        return;
    }
    let probes = crate::load_probes("memory", ProbeOptions::default());
    let cgroup = TestCgroup::new("oom");
    let limit = MemoryLimit::new(&cgroup, "oom", LIMIT_BYTES);
    let before = limit.oom_kills();
    let extra = limit.extra_procs();
    let child = Workload::fork_joining(&cgroup, extra.as_deref(), || {
        set_comm(c"sonde-oom");
        // SAFETY: an anonymous private mapping, touched page by page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                ALLOC_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(5);
            }
            for offset in (0..ALLOC_BYTES).step_by(4096) {
                (p as *mut u8).add(offset).write_volatile(1);
            }
        }
    });
    let pid = child.pid();
    let mut sampler = Sampler::start(probes).expect("first reading");
    child.go();
    let status = child.wait_status();
    let snapshot = sampler.tick().expect("second reading");

    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "status {status:#x}"
    );
    let kernel = limit.oom_kills() - before;
    assert_eq!(kernel, 1, "the kernel's own oom_kill count");
    assert_eq!(snapshot.oom_kills(cgroup.id()), kernel);
    let events: Vec<_> = snapshot
        .events
        .iter()
        .filter(|e| e.kind == "oom_kill")
        .collect();
    let victim = events
        .iter()
        .find(|e| e.pid == pid as u32)
        .unwrap_or_else(|| panic!("no oom_kill event for {pid}: {events:?}"));
    assert_eq!(victim.cgroup.cgroup_id, cgroup.id());
    assert_eq!(victim.comm, "sonde-oom");
    // `mark_victim` names the victim task since 6.x (its first argument is
    // the task); before, only its pid, and the cgroup is the triggering
    // task's: here the victim itself, the only process in the cgroup.
    let task_arg = sonde::host::btf::Btf::from_sys_fs()
        .ok()
        .and_then(Result::ok)
        .and_then(|btf| btf.tracepoint_arg_is_pointer("mark_victim", 0))
        .unwrap_or(false);
    assert_eq!(
        victim.cgroup_of_trigger, !task_arg,
        "the victim's cgroup comes from the victim task exactly when the kernel names it"
    );
    // The victim died by SIGKILL: a crash in its cgroup too.
    let exits = snapshot.exits(cgroup.id()).expect("exits");
    assert_eq!(exits.signals.get("SIGKILL"), Some(&1));
    // Reclaim against the 32 MiB limit stalled the child before the kill.
    let reclaim = snapshot
        .reclaim
        .iter()
        .find(|c| c.cgroup.cgroup_id == cgroup.id());
    assert!(
        reclaim.is_some_and(|r| r.count > 0),
        "no reclaim stall recorded"
    );
    assert_eq!(snapshot.lost(), 0, "{:?}", snapshot.losses);
}
