//! The overhead budget: a syscall storm pushes the agent's cost over its
//! budget, the syscall family is shed (reported, its windows flagged), and
//! restored once the storm is over.

use std::time::Duration;

use serde_json::Value;

use crate::{privileged, procs::Proc, TestCgroup, Workload};

/// The agent's whole cost in a window, percent of one core.
fn cost_percent(window: &Value) -> f64 {
    let o = &window["overhead"];
    let kernel: f64 = o["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["cpu_utilization"].as_f64().expect("utilization"))
        .sum();
    100.0 * (o["agent_cpu_utilization"].as_f64().expect("agent") + kernel)
}

fn syscalls_state(window: &Value) -> (String, String) {
    let p = window["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["probe"] == "syscalls")
        .expect("syscalls status");
    (
        p["state"].as_str().expect("state").to_owned(),
        p["reason"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn a_syscall_storm_over_the_budget_sheds_the_family_and_calm_restores_it() {
    if crate::vm_lacks(
        "a CPU of its own (under QEMU's emulation the agent's cost is the emulator's, not a budget's)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    let budget = 8.0;
    let mut agent = Proc::agent(&["--probes", "syscalls,process", "--overhead-budget", "8"]);
    agent.wait_windows(3, Duration::from_secs(20));
    let idle = cost_percent(&agent.windows()[2]);
    assert!(
        idle < budget / 2.0,
        "the machine is too busy for this test: the agent already costs {idle:.2}% of a core"
    );
    // Measured: the kernel's statistics give the programs' own cost.
    let w = &agent.windows()[2];
    assert!(
        w["overhead"]["kernel_unmeasured"].is_null(),
        "{}",
        w["overhead"]
    );
    assert_eq!(w["overhead"]["budget_percent"], budget);

    let cgroup = TestCgroup::new("budget-storm");
    let storm = Workload::fork(&cgroup, || {
        let end = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < end {
            for _ in 0..10_000 {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::getppid() };
            }
        }
    });
    let before = agent.windows().len();
    storm.go();
    crate::procs::wait_for("the shed", Duration::from_secs(20), || {
        agent
            .stderr_lines()
            .iter()
            .any(|l| l.contains("syscalls shed: the agent cost"))
    });
    storm.wait_exited();
    // Restored once the storm is over (a try during the storm sheds again).
    let restores = || {
        agent
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("syscalls restored"))
            .count()
    };
    let shed_lines = || {
        agent
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("syscalls shed"))
            .count()
    };
    crate::procs::wait_for("the restore", Duration::from_secs(60), || {
        restores() == shed_lines()
    });
    // Counting again, exactly: a workload's 300 failing opens.
    let after = TestCgroup::new("budget-after");
    let opens = Workload::fork(&after, crate::procs::failing_opens(300));
    opens.go();
    opens.wait_exited();
    let seen = agent.windows().len();
    agent.wait_windows(seen + 2, Duration::from_secs(10));
    assert_eq!(agent.terminate(), 0);

    let windows = agent.windows();
    // The window that tripped the budget measured the storm in syscalls.
    let tripped = windows[before..]
        .iter()
        .find(|w| cost_percent(w) > budget)
        .expect("a window over the budget");
    let top = &tripped["overhead"]["probes"][0];
    assert_eq!(top["probe"], "syscalls", "{}", tripped["overhead"]);
    assert!(top["runs_per_second"].as_f64().expect("runs") > 100_000.0);
    // While shed: syscalls unavailable with the reason, windows incomplete,
    // and the shed listed.
    let shed: Vec<&Value> = windows
        .iter()
        .filter(|w| syscalls_state(w).0 == "unavailable")
        .collect();
    assert!(shed.len() >= 3, "shed for at least the calm windows");
    for (i, w) in shed.iter().enumerate() {
        let (_, reason) = syscalls_state(w);
        assert!(reason.contains("over its budget of 8%"), "{reason}");
        assert_eq!(w["complete"], false);
        assert_eq!(w["overhead"]["shed"][0], "syscalls");
        // The first holds what was counted between its start and the
        // detach; the next ones nothing.
        if i > 0 && shed[i - 1]["sequence"].as_u64() == w["sequence"].as_u64().map(|s| s - 1) {
            assert!(w["syscalls"].as_array().expect("syscalls").is_empty());
        }
    }
    // Restored: attached and counting again, nothing shed.
    let last = windows.last().expect("a window");
    assert_eq!(syscalls_state(last).0, "attached");
    assert!(last["overhead"]["shed"]
        .as_array()
        .expect("shed")
        .is_empty());
    let key = format!("err|{}|openat|ENOENT", after.v2_path());
    let totals = crate::procs::agent_totals(&windows, |_| true);
    assert_eq!(totals.get(&key), Some(&300), "{key}");
}
