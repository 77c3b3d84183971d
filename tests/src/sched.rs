//! Scheduler family: run-queue latency against the kernel's own `run_delay`.

use sonde::{
    probes::{sched::SchedHook, ProbeOptions, ProbeState, Probes},
    sampler::Sampler,
};

use crate::{burn_cpu, pin_to_cpu, privileged, run_delay_ns, TestCgroup, Workload};

const SPINNERS: usize = 3;
const SPIN_CPU_NS: u64 = 150_000_000;

#[test]
fn runqueue_waits_match_run_delay_with_btf_tracepoints() {
    runqueue_waits_match_run_delay(SchedHook::BtfTracepoint, "tp_btf:");
}

#[test]
fn runqueue_waits_match_run_delay_with_raw_tracepoints() {
    runqueue_waits_match_run_delay(SchedHook::RawTracepoint, "raw_tracepoint:");
}

fn runqueue_waits_match_run_delay(hook: SchedHook, hook_prefix: &str) {
    if !privileged() {
        return;
    }
    let probes = Probes::load(ProbeOptions {
        sched_hook: hook,
        ..Default::default()
    })
    .expect("load probes");
    let sched = probes
        .statuses()
        .iter()
        .find(|s| s.probe == "sched")
        .expect("sched status");
    assert_eq!(sched.state, ProbeState::Attached, "{sched:?}");
    assert!(
        sched
            .hook
            .as_deref()
            .is_some_and(|h| h.starts_with(hook_prefix)),
        "{sched:?}"
    );

    // Three CPU-bound tasks on one CPU wait for it; an idle control does not.
    let contended = TestCgroup::new("runq");
    let control = TestCgroup::new("runq-idle");
    let spinners: Vec<Workload> = (0..SPINNERS)
        .map(|_| {
            Workload::fork(&contended, || {
                pin_to_cpu(0);
                burn_cpu(SPIN_CPU_NS);
            })
        })
        .collect();
    let sleeper = Workload::fork(&control, || {
        pin_to_cpu(1);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        for _ in 0..20 {
            // SAFETY: a valid timespec.
            unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        }
    });
    let delay_before: u64 = spinners.iter().map(|w| run_delay_ns(w.pid())).sum();
    let mut sampler = Sampler::start(probes).expect("first reading");
    for w in &spinners {
        w.go();
    }
    sleeper.go();
    for w in &spinners {
        w.wait_exited();
    }
    sleeper.wait_exited();
    let delay_after: u64 = spinners.iter().map(|w| run_delay_ns(w.pid())).sum();
    let snapshot = sampler.tick().expect("second reading");
    for w in spinners {
        assert_eq!(w.wait(), 0);
    }
    assert_eq!(sleeper.wait(), 0);

    let kernel_secs = (delay_after - delay_before) as f64 / 1e9;
    let runq = snapshot
        .runqueue(contended.id())
        .expect("run-queue series for the contended cgroup");
    let error = (runq.sum_secs - kernel_secs).abs() / kernel_secs;
    eprintln!(
        "run-queue: sonde {:.4} s in {} waits, run_delay {kernel_secs:.4} s ({:+.2} %)",
        runq.sum_secs,
        runq.count,
        (runq.sum_secs / kernel_secs - 1.0) * 100.0
    );
    assert!(
        error <= 0.10,
        "sonde {:.4} s vs run_delay {kernel_secs:.4} s ({:.1} % apart)",
        runq.sum_secs,
        error * 100.0
    );
    assert!(
        kernel_secs > 0.05,
        "the spinners did contend: {kernel_secs} s"
    );
    let idle = snapshot.runqueue(control.id()).map_or(0.0, |c| c.sum_secs);
    // In the vm-test guest a wakeup sent to the other vCPU waits while the
    // host runs something else in its thread: that counts as run-queue
    // time there, so the control gets a looser bound (still a tenth).
    let idle_bound = if crate::in_vm() { 10.0 } else { 100.0 };
    assert!(
        idle < runq.sum_secs / idle_bound,
        "idle control waited {idle} s"
    );
    assert_eq!(snapshot.lost(), 0, "{:?}", snapshot.losses);
}
