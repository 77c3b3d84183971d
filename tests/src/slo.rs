//! SLOs end to end: a workload with a known failure ratio gives the
//! analytic burn rate at the agent, in its state file, on its Prometheus
//! endpoint and at the collector; a latency threshold between bucket edges
//! is counted by the kernel, not estimated; the generated Prometheus rules
//! pass promtool.

use std::{process::Command, time::Duration};

use serde_json::Value;
use sonde::{
    probes::ProbeOptions,
    sampler::Sampler,
    slo::{window_counts, Slos},
};
use sonde_common::family::Family;
use sonde_slo::{spec, Histogram};

use crate::{
    privileged,
    procs::{fleet_json, free_port, http_get, poll, Proc},
    sonde_bin, TestCgroup, Workload,
};

/// Calls per batch, of which one fails: 2 % of openat fail.
const BATCH: u64 = 50;
/// Batches the workload runs, then stops.
const BATCHES: u64 = 100;

/// `batches` times: 49 `openat` of /dev/null (closed again) and one of a
/// missing file, with a 2 ms pause; then exits.
pub(crate) fn two_percent_failing_opens(batches: u64) -> impl FnOnce() {
    move || {
        let (ok, missing) = (c"/dev/null", c"/nonexistent/sonde-slo");
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        for _ in 0..batches {
            for i in 0..BATCH {
                let path = if i == 0 { missing } else { ok };
                // SAFETY: a valid NUL-terminated path; the fd is closed again.
                unsafe {
                    let fd = libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_RDONLY,
                    );
                    if fd >= 0 {
                        libc::close(fd as libc::c_int);
                    }
                }
            }
            // SAFETY: a valid timespec.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
}

fn config(dir: &std::path::Path, cgroup: &str) -> std::path::PathBuf {
    let path = dir.join("sonde.toml");
    std::fs::write(
        &path,
        format!(
            "[[slo]]\nname = \"e2e-open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n\
             selector = {{ cgroup = \"{cgroup}\", syscalls = [\"openat\"] }}\n"
        ),
    )
    .expect("write config");
    path
}

fn burn(rates: &[(String, f64)], window: &str) -> f64 {
    rates
        .iter()
        .find(|(w, _)| w == window)
        .unwrap_or_else(|| panic!("no {window} burn rate in {rates:?}"))
        .1
}

#[test]
fn burn_rate_of_a_two_percent_failure_ratio_at_agent_and_collector() {
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cgroup = TestCgroup::new("slo");
    let config = config(dir.path(), &cgroup.v2_path());
    let config = config.to_str().expect("utf-8 path");
    let state = dir.path().join("state");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _collector = Proc::collector(port, &["--config", config]);
    let prometheus_port = free_port();
    let mut agent = Proc::agent(&[
        "--config",
        config,
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--collector",
        &url,
        "--node-name",
        "e2e-slo",
        "--probes",
        "syscalls",
        "--prometheus-listen",
        &format!("127.0.0.1:{prometheus_port}"),
    ]);
    let workload = Workload::fork(&cgroup, two_percent_failing_opens(BATCHES));
    workload.go();
    assert_eq!(workload.wait(), 0);
    let total = BATCH * BATCHES;
    let bad = BATCHES;
    // Every call counted once the window after the workload closes.
    let latest = |agent: &Proc| -> Value {
        agent
            .windows()
            .last()
            .map(|w| w["slos"][0].clone())
            .unwrap_or(Value::Null)
    };
    poll(
        "the agent's SLO to count every call",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || latest(&agent)["evaluation"]["compliance"]["total"].as_u64() == Some(total),
    );
    let status = latest(&agent);
    let evaluation = &status["evaluation"];
    assert_eq!(
        evaluation["compliance"]["good"].as_u64(),
        Some(total - bad),
        "{status}"
    );
    // 2 % bad against 1 % allowed: a burn rate of 2 on every window, a
    // budget overspent by its whole size, the ticket rule (1x) firing.
    let analytic = (bad as f64 / total as f64) / 0.01;
    let rates: Vec<(String, f64)> = evaluation["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| {
            ["short_burn", "long_burn"].map(|k| (k.to_owned(), r[k].as_f64().expect("burn")))
        })
        .collect();
    for (_, rate) in &rates {
        assert!(
            (rate - analytic).abs() <= 0.01 * analytic,
            "burn {rate} vs {analytic}: {status}"
        );
    }
    assert!(
        (evaluation["budget_remaining"].as_f64().expect("budget") - (1.0 - analytic)).abs() < 1e-9
    );
    assert_eq!(evaluation["severity"], "ticket", "{status}");
    assert_eq!(status["complete"], true, "{status}");
    assert_eq!(evaluation["complete"], true, "{status}");

    // The same figures from the state file, through `sonde slo`.
    let out = Command::new(sonde_bin())
        .args(["slo", "--json", "--state-dir"])
        .arg(&state)
        .output()
        .expect("run sonde slo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value = serde_json::from_slice(&out.stdout).expect("JSON from sonde slo");
    assert_eq!(
        saved[0]["evaluation"]["compliance"]["total"].as_u64(),
        Some(total)
    );
    assert_eq!(saved[0]["name"], "e2e-open");

    // On the agent's Prometheus endpoint.
    let (code, text) = http_get(prometheus_port, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    let sample = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
    };
    assert_eq!(
        sample("slo_sli_good_total{slo_name=\"e2e-open\"}"),
        (total - bad) as f64
    );
    assert_eq!(sample("slo_sli_total{slo_name=\"e2e-open\"}"), total as f64);
    let five = sample("slo_burn_rate_ratio{slo_name=\"e2e-open\",slo_window=\"5m\"}");
    assert!((five - analytic).abs() <= 0.01 * analytic, "{five}");
    assert_eq!(
        sample("slo_alert{slo_name=\"e2e-open\",slo_severity=\"ticket\"}"),
        1.0
    );
    assert_eq!(
        sample("slo_alert{slo_name=\"e2e-open\",slo_severity=\"page\"}"),
        0.0
    );

    // At the collector, over the fleet (one node here): the same answer.
    poll(
        "the collector's SLO to count every call",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || fleet_json(&["--collector", &url, "slo"])["slos"][0]["total"].as_u64() == Some(total),
    );
    let fleet = fleet_json(&["--collector", &url, "slo"]);
    let slo = &fleet["slos"][0];
    assert_eq!(slo["good"].as_u64(), Some(total - bad), "{fleet}");
    assert_eq!(slo["nodes"][0], "e2e-slo");
    let rates: Vec<(String, f64)> = slo["burnRates"]
        .as_array()
        .or(slo["burn_rates"].as_array())
        .expect("burn rates")
        .iter()
        .map(|b| {
            (
                b["window"].as_str().unwrap_or("").to_owned(),
                b["rate"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    for w in ["5m", "30m", "1h", "6h", "3d"] {
        let rate = burn(&rates, w);
        assert!(
            (rate - analytic).abs() <= 0.01 * analytic,
            "{w}: {rate} vs {analytic}"
        );
    }
    assert_eq!(slo["severity"], "ticket");
    assert_eq!(agent.terminate(), 0);
}

/// A shared anonymous mapping of `n` u64s that a forked child can fill.
struct Shared {
    ptr: *mut u64,
    n: usize,
}

impl Shared {
    fn new(n: usize) -> Self {
        // SAFETY: a fresh anonymous shared mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                n * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Self { ptr: ptr.cast(), n }
    }

    fn values(&self) -> Vec<u64> {
        // SAFETY: the mapping holds `n` initialised u64s (zero-filled).
        unsafe { std::slice::from_raw_parts(self.ptr, self.n) }.to_vec()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.n * 8) };
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn a_threshold_between_bucket_edges_is_counted_by_the_kernel() {
    if !privileged() {
        return;
    }
    // 2 ms lies inside a bucket, not on an edge.
    let threshold_ns = 2_000_000;
    let index = Histogram::index_of_ns(threshold_ns).expect("bucket");
    let (lower, upper) = (Histogram::lower_bound(index), Histogram::upper_bound(index));
    assert!(lower < 0.002 && 0.002 < upper);
    let specs = spec::parse(
        "sonde.toml",
        "[[slo]]\nname = \"sleep\"\nsignal = \"syscall.latency\"\nobjective_percent = 99\n\
         threshold_ms = 2\nselector.syscalls = [\"nanosleep\"]\n",
    )
    .expect("spec");
    let probes = crate::load_probes(
        "syscalls",
        ProbeOptions {
            latency_thresholds_ns: spec::kernel_thresholds(&specs),
            ..Default::default()
        },
    );
    let mut sampler = Sampler::start(probes).expect("sampler");
    let cgroup = TestCgroup::new("slo-threshold");
    // Sleeps spread over the bucket and a little around it; the child
    // times each one itself.
    const SLEEPS: usize = 300;
    let shared = Shared::new(SLEEPS);
    let out = shared.ptr as usize;
    let lower_ns = (lower * 1e9) as i64;
    let span_ns = ((upper - lower) * 1e9) as i64;
    let workload = Workload::fork(&cgroup, move || {
        // SAFETY: prctl with plain integers: 1 ns of timer slack, so that
        // the sleeps end when asked.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        for i in 0..SLEEPS {
            // From 60 µs below the bucket up to its upper edge.
            let ask = lower_ns - 60_000 + (span_ns + 60_000) * i as i64 / SLEEPS as i64;
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: ask,
            };
            let start = now_ns();
            // SAFETY: a valid timespec; direct syscall so that the kernel
            // sees `nanosleep` on every libc.
            unsafe {
                libc::syscall(
                    libc::SYS_nanosleep,
                    &ts,
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            let took = now_ns() - start;
            // SAFETY: `out` maps SLEEPS u64s shared with the parent.
            unsafe { *(out as *mut u64).add(i) = took };
        }
    });
    workload.go();
    assert_eq!(workload.wait(), 0);
    let mut snapshot = sampler.tick().expect("tick");
    let ours = specs[0].clone();
    let mut scoped = ours.clone();
    scoped.selector.cgroup = Some(cgroup.v2_path());
    let counts = window_counts(&scoped, &snapshot);
    assert_eq!(counts.total, SLEEPS as u64, "{counts:?}");
    let took = shared.values();
    // The kernel times the syscall inside the child's own timing: every
    // sleep the child saw at or below the threshold is at or below it for
    // the kernel too; one the child saw more than 200 µs above is above.
    let surely_good = took.iter().filter(|&&t| t <= threshold_ns).count() as u64;
    let maybe_good = took
        .iter()
        .filter(|&&t| t <= threshold_ns + 200_000)
        .count() as u64;
    assert!(
        (surely_good..=maybe_good).contains(&counts.good),
        "kernel {} vs child {surely_good}..={maybe_good}",
        counts.good
    );
    // The histogram alone would have left out the whole straddling bucket.
    snapshot
        .syscalls
        .cgroups
        .retain(|c| c.cgroup.cgroup_path.as_deref() == Some(cgroup.v2_path().as_str()));
    let series = snapshot.syscalls.cgroups[0]
        .syscalls
        .iter()
        .find(|s| s.name == "nanosleep")
        .expect("nanosleep series");
    let estimate = series.latency.count_at_or_below(threshold_ns as f64 * 1e-9);
    // Under emulation (vm-test's TCG guests) sleeps overshoot by more than
    // the bucket is wide, and none may land inside it below the threshold;
    // on real hardware they do, and the split must have counted them.
    if surely_good > estimate || !crate::in_vm() {
        assert!(
            counts.good > estimate,
            "exact {} vs bucket estimate {estimate} (child: {surely_good}): the split counted nothing",
            counts.good
        );
    }
}

#[test]
fn generated_rules_pass_promtool_and_bad_configs_name_file_and_line() {
    if crate::vm_lacks("promtool (prometheus)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sonde.toml");
    std::fs::write(
        &config,
        "[[slo]]\nname = \"web-open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99.9\n\n\
         [[slo]]\nname = \"web-connect\"\nsignal = \"tcp.connect.latency\"\nobjective_percent = 99\nthreshold_ms = 250\n\
         window_days = 7\n[[slo.alert]]\nseverity = \"page\"\nlong_window_mins = 60\nshort_window_mins = 5\nburn_rate = 10\n",
    )
    .expect("write config");
    let out = Command::new(sonde_bin())
        .args(["slo", "rules", "--config"])
        .arg(&config)
        .output()
        .expect("run sonde slo rules");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, &out.stdout).expect("write rules");
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool (installed by cargo xtask setup)");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "promtool: {said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Error ratios over 6 windows + budget + 3 alerts, and over 3 windows
    // (5m, 1h, 7d) + budget + 1 alert.
    assert!(said.contains("SUCCESS: 15 rules found"), "{said}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[slo]]\nname = \"x\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\nthreshold_ms = 5\n")
        .expect("write");
    for args in [vec!["slo", "check", "--config"], vec!["agent", "--config"]] {
        let out = Command::new(sonde_bin())
            .args(&args)
            .arg(&bad)
            .output()
            .expect("run sonde");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim(),
            format!(
                "sonde: {}:1: slo \"x\": signal syscall.errors takes no threshold_ms; the latency signals do",
                bad.display()
            ),
            "{args:?}"
        );
    }
    let out = Command::new(sonde_bin())
        .args(["agent", "--config", "/nonexistent/sonde.toml"])
        .output()
        .expect("run sonde");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("sonde: cannot read the config /nonexistent/sonde.toml"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// An SLO named `open` on the failures of `cgroup`'s openat calls.
pub(crate) fn openat_errors_slo(cgroup: &TestCgroup) -> Vec<spec::SloSpec> {
    let text = format!(
        "[[slo]]\nname = \"open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n\
         selector = {{ cgroup = \"{}\", syscalls = [\"openat\"] }}\n",
        cgroup.v2_path()
    );
    spec::parse("sonde.toml", &text).expect("spec")
}

#[test]
fn a_probe_detached_mid_run_marks_the_window_and_the_slo_incomplete() {
    if !privileged() {
        return;
    }
    let cgroup = TestCgroup::new("slo-detach");
    let specs = openat_errors_slo(&cgroup);
    // The syscall family alone: the whole window's completeness is its own.
    let probes = crate::load_probes(
        "syscalls",
        ProbeOptions {
            disabled: Family::ALL
                .into_iter()
                .filter(|&f| f != Family::Syscalls)
                .collect(),
            ..Default::default()
        },
    );
    let mut sampler = Sampler::start(probes).expect("sampler");
    let mut slos = Slos::new(specs, None).expect("slos");
    let run = |n: u64| {
        let w = Workload::fork(&cgroup, crate::procs::failing_opens(n));
        w.go();
        assert_eq!(w.wait(), 0);
    };
    // A whole window: complete, every call counted.
    run(100);
    let mut first = sampler.tick().expect("tick");
    first.slos = slos.window(&first).expect("slo window");
    assert!(first.complete, "{:?}", first.probes);
    assert_eq!((first.slos[0].good, first.slos[0].total), (0, 100));
    assert!(first.slos[0].complete);
    // Detached halfway through the next: what ran before is counted, what
    // ran after is not, and the window says it did not see everything.
    run(30);
    assert!(sampler.detach(Family::Syscalls, "test"));
    run(50);
    let mut second = sampler.tick().expect("tick");
    second.slos = slos.window(&second).expect("slo window");
    assert!(!second.complete);
    let status = &second.slos[0];
    assert_eq!((status.good, status.total), (0, 30));
    assert!(!status.complete);
    assert!(
        status.incomplete_because[0]
            .starts_with("probe syscalls is not attached: detached while running: test"),
        "{:?}",
        status.incomplete_because
    );
    // Every evaluation whose windows hold it says so.
    assert!(!status.evaluation.complete);
    assert_eq!(status.evaluation.compliance.total, 130);
    let syscalls = second
        .probes
        .iter()
        .find(|p| p.probe == "syscalls")
        .expect("status");
    assert_eq!(syscalls.state, sonde::probes::ProbeState::Unavailable);
}
