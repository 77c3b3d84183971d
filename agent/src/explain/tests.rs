//! The rules on windows built from the model and read back through JSON,
//! the way the CLI reads them.

use super::*;
use crate::model::{
    sched::{CgroupHolders, Holder, HolderRest},
    CgroupCount, CgroupHost, Owner, Pressure, Psi, PsiLine, Snapshot, Throttling,
};

fn cg(id: u64, path: &str) -> CgroupRef {
    CgroupRef {
        cgroup_id: id,
        cgroup_path: Some(path.to_owned()),
        owner: Owner::Other,
    }
}

fn psi(total_us: u64) -> Option<Psi> {
    let line = PsiLine {
        avg10: 0.0,
        avg60: 0.0,
        avg300: 0.0,
        total_us,
    };
    Some(Psi {
        some: line,
        full: None,
    })
}

fn host(c: CgroupRef, cpu_us: u64, throttling: Option<(u64, u64)>) -> CgroupHost {
    CgroupHost {
        cgroup: c,
        pressure: Pressure {
            cpu: psi(cpu_us),
            memory: psi(0),
            io: psi(0),
        },
        throttling: throttling.map(|(periods, throttled)| Throttling {
            periods,
            throttled_periods: throttled,
            throttled_ns: throttled * 80_000_000,
            source: "cgroup1",
        }),
        netns: None,
        netns_is_host: false,
    }
}

fn window(end_s: u64, f: impl FnOnce(&mut Snapshot)) -> Window {
    let mut s = Snapshot {
        window_end_unix_ns: end_s * 1_000_000_000,
        window_secs: 1.0,
        complete: true,
        ..Snapshot::default()
    };
    f(&mut s);
    Window::from_snapshot(&s).unwrap()
}

fn victim_waits(neighbour_secs: f64, idle_secs: f64) -> CgroupHolders {
    CgroupHolders {
        cgroup: cg(10, "/app"),
        wait_secs: neighbour_secs + idle_secs + 0.001,
        waits: 100,
        idle_wait_secs: idle_secs,
        earlier_wait_secs: 0.0,
        holders: vec![
            Holder {
                cgroup: cg(20, "/hog"),
                wait_secs: neighbour_secs,
                waits: 90,
            },
            Holder {
                cgroup: cg(11, "/app/worker"),
                wait_secs: 0.001,
                waits: 5,
            },
        ],
        rest: HolderRest::default(),
    }
}

#[test]
fn contention_ranks_first_with_its_holder_and_psi_follows() {
    let windows: Vec<Window> = (0..4)
        .map(|i| {
            window(100 + i, |s| {
                s.sched.runqueue_holders = vec![victim_waits(0.3, 0.01)];
                s.cgroups = vec![host(cg(10, "/app"), 300_000 * i, None)];
            })
        })
        .collect();
    let e = explain(&Target::Cgroup("/app".into()), &windows, None).unwrap();
    let kinds: Vec<&str> = e.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["cpu_contention", "psi_cpu"]);
    let c = &e.findings[0];
    assert!((c.magnitude - 0.3).abs() < 1e-9, "{}", c.magnitude);
    assert_eq!(c.culprits[0].name, "/hog");
    // The worker is the target's own: not a neighbour.
    assert_eq!(c.culprits.len(), 1);
    let share = c.culprits[0].share.unwrap();
    assert!((share - 0.3 / 0.311).abs() < 1e-9, "{share}");
    // Tier 2, strength 0.3 / 0.02 = 15: 2 + 15/16.
    assert!((c.score - 2.9375).abs() < 1e-9, "{}", c.score);
    // PSI: 3 deltas of 0.3 s over 3 windows (the first is the baseline).
    assert!((e.findings[1].magnitude - 0.3).abs() < 1e-9);
    assert!(e.verdict.starts_with("cpu_contention: "), "{}", e.verdict);
    assert!(e.verdict.contains("behind /hog"), "{}", e.verdict);
    assert_eq!(e.target.cgroups, ["/app"]);
}

#[test]
fn below_every_floor_nothing_is_found_and_the_verdict_says_so() {
    let windows: Vec<Window> = (0..3)
        .map(|i| {
            window(100 + i, |s| {
                s.sched.runqueue_holders = vec![victim_waits(0.004, 0.5)];
                s.cgroups = vec![host(cg(10, "/app"), 5_000 * i, Some((10 * i, 0)))];
            })
        })
        .collect();
    let e = explain(&Target::Cgroup("/app".into()), &windows, None).unwrap();
    assert!(e.findings.is_empty(), "{:?}", e.findings);
    assert!(e.verdict.starts_with("nothing found"), "{}", e.verdict);
}

#[test]
fn a_kill_outranks_reclaim_and_throttling_is_a_share_of_periods() {
    let windows: Vec<Window> = (0..3)
        .map(|i| {
            window(100 + i, |s| {
                let mut h = sonde_slo::Histogram::new();
                for _ in 0..100 {
                    h.record_binary_ns(4_000_000);
                }
                s.memory.reclaim = vec![crate::model::CgroupLatency::new(cg(10, "/app"), h)];
                if i == 2 {
                    s.memory.oom_kills = vec![CgroupCount {
                        cgroup: cg(10, "/app"),
                        count: 1,
                    }];
                }
                s.cgroups = vec![host(cg(10, "/app"), 0, Some((10 * i, 5 * i)))];
            })
        })
        .collect();
    let e = explain(&Target::Cgroup("/app".into()), &windows, Some(2)).unwrap();
    let kinds: Vec<&str> = e.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds[0], "oom_kill");
    assert!(kinds.contains(&"memory_reclaim"));
    let t = e
        .findings
        .iter()
        .find(|f| f.kind == "cpu_throttling")
        .unwrap();
    // Two windows after the baseline: 20 periods, 10 throttled.
    assert!((t.magnitude - 0.5).abs() < 1e-9, "{}", t.magnitude);
    assert_eq!(e.windows.count, 2);
}

#[test]
fn incomplete_windows_are_said_and_an_unknown_slo_is_refused() {
    let windows = vec![window(100, |s| s.complete = false)];
    let e = explain(&Target::Cgroup("/app".into()), &windows, None).unwrap();
    assert_eq!(e.findings.len(), 1);
    assert_eq!(e.findings[0].kind, "data_incomplete");
    assert!(e.verdict.starts_with("nothing found"), "{}", e.verdict);
    assert!(
        e.verdict.contains("1 of 1 windows incomplete"),
        "{}",
        e.verdict
    );
    let err = explain(&Target::Slo("web".into()), &windows, None).unwrap_err();
    assert!(err.to_string().contains("they have none"), "{err}");
    assert!(matches!(
        explain(&Target::Unit("x.service".into()), &[], None),
        Err(ExplainError::NoWindows)
    ));
}

#[test]
fn a_renamed_window_field_is_refused_not_read_as_nothing() {
    let full = serde_json::to_value(Snapshot::default()).unwrap();
    for field in ["runqueue_holders", "cgroups", "tcp", "slos", "complete"] {
        let mut renamed = full.clone();
        let object = renamed.as_object_mut().unwrap();
        let value = object.remove(field).unwrap();
        object.insert(format!("{field}_renamed"), value);
        let err = Window::from_json(renamed).unwrap_err().to_string();
        assert!(err.contains(&format!("missing field `{field}`")), "{err}");
    }
}
