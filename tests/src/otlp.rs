//! OTLP: a real receiver built from the official OpenTelemetry protos
//! (Python `grpcio` + `opentelemetry-proto`) gets sonde's cumulative
//! exponential histograms with the same counts and buckets as sonde's own.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value;

use crate::{
    privileged,
    procs::{failing_opens, free_port, wait_for, Proc},
    python, TestCgroup, Workload,
};

const FAILING: u64 = 400;

fn u64_of(v: &Value) -> u64 {
    // The JSON mapping writes 64-bit integers as strings.
    match v {
        Value::String(s) => s.parse().expect("integer string"),
        other => other.as_u64().unwrap_or(0),
    }
}

fn attr<'a>(point: &'a Value, key: &str) -> Option<&'a str> {
    point["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["string_value"]
        .as_str()
}

/// Starts the Python OTLP receiver on a free port, writing what it gets
/// as JSON lines to a file in `dir`; returns it, its port and the file.
fn otlp_receiver(dir: &Path) -> (Proc, u16, std::path::PathBuf) {
    let port = free_port();
    let out = dir.join("exports.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/otlp_receiver.py");
    let receiver = Proc::spawn(
        "otlp-receiver",
        &python(),
        &[
            script.to_str().expect("utf-8").to_owned(),
            port.to_string(),
            out.to_str().expect("utf-8").to_owned(),
        ],
    );
    receiver.wait_stderr("otlp receiver listening", Duration::from_secs(20));
    (receiver, port, out)
}

#[test]
fn a_real_otlp_receiver_gets_sondes_histograms() {
    if crate::vm_lacks("python3 with grpcio (the OTLP receiver)") {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (receiver, port, out) = otlp_receiver(dir.path());

    let cgroup = TestCgroup::new("otlp");
    let path = cgroup.v2_path();
    let workload = Workload::fork(&cgroup, failing_opens(FAILING));
    // An SLO on those calls: all of them fail, a burn rate of 100x.
    let config = dir.path().join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            "[[slo]]\nname = \"otlp-open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n\
             selector = {{ cgroup = \"{path}\", syscalls = [\"openat\"] }}\n"
        ),
    )
    .expect("write config");
    let state = dir.path().join("state");
    let mut agent = Proc::agent(&[
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--config",
        config.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    agent.wait_windows(1, Duration::from_secs(20));
    workload.go();
    assert_eq!(workload.wait(), 0);
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));
    // Wait for the export of the last window seen, then stop.
    let windows = agent.windows();
    let last_end = windows[windows.len() - 1]["window_end_unix_ns"]
        .as_u64()
        .expect("end");
    let exports = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON export"))
            .collect()
    };
    let time_of = |export: &Value| -> u64 {
        export["resource_metrics"][0]["scope_metrics"][0]["metrics"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| {
                m["exponential_histogram"]["data_points"]
                    .as_array()
                    .or_else(|| m["sum"]["data_points"].as_array())
            })
            .and_then(|p| p.first())
            .map(|p| u64_of(&p["time_unix_nano"]))
            .unwrap_or(0)
    };
    wait_for(
        "the export of the last window",
        Duration::from_secs(20),
        || exports().iter().any(|e| time_of(e) >= last_end),
    );
    assert_eq!(agent.terminate(), 0);
    let windows = agent.windows();

    let exports = exports();
    let start = |e: &Value| -> u64 {
        let m = &e["resource_metrics"][0]["scope_metrics"][0]["metrics"][0];
        u64_of(&m["exponential_histogram"]["data_points"][0]["start_time_unix_nano"])
    };
    let first_start = start(&exports[0]);
    assert!(first_start > 0);
    assert!(first_start <= windows[0]["window_start_unix_ns"].as_u64().expect("start"));
    for e in &exports {
        assert_eq!(start(e), first_start, "cumulative: one start time");
    }
    let export = exports
        .iter()
        .find(|e| time_of(e) == last_end)
        .expect("an export stamped with the last window's end");
    let rm = &export["resource_metrics"][0];
    let host = rm["resource"]["attributes"]
        .as_array()
        .expect("resource")
        .iter()
        .find(|a| a["key"] == "host.name")
        .expect("host.name");
    // Without --node-name, the kernel's host name (the agent shares this
    // test's UTS namespace).
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    assert_eq!(host["value"]["string_value"], hostname.trim(), "{host}");
    let metrics = rm["scope_metrics"][0]["metrics"]
        .as_array()
        .expect("metrics");
    let metric = |name: &str| {
        metrics
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
    };

    // sonde's own cumulative histogram of the test cgroup's openat calls.
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    let mut zero = 0;
    let mut errors = 0;
    for w in windows
        .iter()
        .filter(|w| w["window_end_unix_ns"].as_u64() <= Some(last_end))
    {
        for cg in w["syscalls"].as_array().expect("syscalls") {
            if cg["cgroup_path"].as_str() != Some(&path) {
                continue;
            }
            for s in cg["syscalls"].as_array().expect("series") {
                if s["name"] != "openat" {
                    continue;
                }
                zero += s["latency"]["zero_count"].as_u64().expect("zero");
                for (i, c) in s["latency"]["buckets"].as_object().expect("buckets") {
                    *buckets.entry(i.parse().expect("index")).or_default() +=
                        c.as_u64().expect("count");
                }
                errors += s["errnos"]["ENOENT"].as_u64().unwrap_or(0);
            }
        }
    }
    assert_eq!(buckets.values().sum::<u64>() + zero, FAILING);
    assert_eq!(errors, FAILING);

    let duration = metric("system.linux.syscall.duration");
    assert_eq!(duration["unit"], "s");
    let eh = &duration["exponential_histogram"];
    assert_eq!(
        eh["aggregation_temporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    let point = eh["data_points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|p| {
            attr(p, "linux.cgroup.path") == Some(&path) && attr(p, "syscall.name") == Some("openat")
        })
        .expect("the test cgroup's openat series");
    assert_eq!(point["scale"], 3);
    assert_eq!(u64_of(&point["count"]), FAILING);
    assert_eq!(u64_of(&point["zero_count"]), zero);
    let offset = point["positive"]["offset"].as_i64().unwrap_or(0);
    let mut got: BTreeMap<i64, u64> = BTreeMap::new();
    for (i, c) in point["positive"]["bucket_counts"]
        .as_array()
        .expect("bucket counts")
        .iter()
        .enumerate()
    {
        let c = u64_of(c);
        if c > 0 {
            got.insert(offset + i as i64, c);
        }
    }
    assert_eq!(got, buckets, "the same buckets, bucket by bucket");

    let errs = metric("system.linux.syscall.errors");
    assert_eq!(errs["sum"]["is_monotonic"], true);
    assert_eq!(
        errs["sum"]["aggregation_temporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    let point = errs["sum"]["data_points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|p| {
            attr(p, "linux.cgroup.path") == Some(&path)
                && attr(p, "syscall.name") == Some("openat")
                && attr(p, "error.type") == Some("ENOENT")
        })
        .expect("the test cgroup's ENOENT series");
    assert_eq!(u64_of(&point["as_int"]), FAILING);
    // The SLO's counters and gauges.
    let slo_point = |name: &str, kind: &str, window: Option<&str>| -> Value {
        metric(name)[kind]["data_points"]
            .as_array()
            .expect("points")
            .iter()
            .find(|p| {
                attr(p, "slo.name") == Some("otlp-open")
                    && window.is_none_or(|w| attr(p, "slo.window") == Some(w))
            })
            .unwrap_or_else(|| panic!("no {name} point for otlp-open"))
            .clone()
    };
    assert_eq!(
        u64_of(&slo_point("slo.sli.total", "sum", None)["as_int"]),
        FAILING
    );
    assert_eq!(u64_of(&slo_point("slo.sli.good", "sum", None)["as_int"]), 0);
    for window in ["5m", "1h", "3d"] {
        let burn = slo_point("slo.burn_rate", "gauge", Some(window))["as_double"]
            .as_f64()
            .expect("a double");
        assert!((burn - 100.0).abs() < 1e-6, "{window}: {burn}");
    }
    let budget = slo_point("slo.error_budget.remaining", "gauge", None)["as_double"]
        .as_f64()
        .expect("a double");
    assert!((budget - (1.0 - 100.0)).abs() < 1e-6, "{budget}");
    // Every loss counter is exported, zeros included: the syscall family's
    // three among them.
    let dropped = metric("sonde.agent.dropped");
    let points = dropped["sum"]["data_points"]
        .as_array()
        .expect("dropped points");
    for reason in ["hist_map_full", "errors_map_full", "start_slot_collision"] {
        assert!(
            points
                .iter()
                .any(|p| attr(p, "probe") == Some("syscalls") && attr(p, "reason") == Some(reason)),
            "syscalls/{reason} not exported"
        );
    }
    drop(receiver);
}

#[test]
fn the_collector_forwards_the_fleet_over_otlp() {
    if crate::vm_lacks("python3 with grpcio (the OTLP receiver) and sonde-collector") {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (receiver, otlp_port, out) = otlp_receiver(dir.path());
    let port = free_port();
    let collector = Proc::collector(
        port,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{otlp_port}"),
            "--otlp-interval",
            "1s",
        ],
    );
    let url = format!("http://127.0.0.1:{port}");
    let node = "e2e-forward";
    let cgroup = TestCgroup::new("forward");
    let path = cgroup.v2_path();
    let workload = Workload::fork(&cgroup, failing_opens(FAILING));
    let mut agent = Proc::agent(&["--collector", &url, "--node-name", node]);
    agent.wait_windows(1, Duration::from_secs(20));
    workload.go();
    assert_eq!(workload.wait(), 0);
    let n = agent.windows().len();
    agent.wait_windows(n + 2, Duration::from_secs(20));
    assert_eq!(agent.terminate(), 0);
    let detail = crate::procs::fleet_json(&["--collector", &url, "--node", node]);
    let start = detail["totals_start_unix_ns"].as_u64().expect("start");

    // The collector's cumulative series reach the receiver, per node.
    let found = || -> Option<(u64, u64, u64)> {
        let text = std::fs::read_to_string(&out).ok()?;
        let export: Value = serde_json::from_str(text.lines().last()?).ok()?;
        let rm = export["resource_metrics"].as_array()?.iter().find(|rm| {
            rm["resource"]["attributes"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|kv| kv["key"] == "host.name" && kv["value"]["string_value"] == node)
            })
        })?;
        let metrics = rm["scope_metrics"][0]["metrics"].as_array()?;
        let duration = metrics
            .iter()
            .find(|m| m["name"] == "system.linux.syscall.duration")?;
        let point = duration["exponential_histogram"]["data_points"]
            .as_array()?
            .iter()
            .find(|p| {
                attr(p, "linux.cgroup.path") == Some(&path)
                    && attr(p, "syscall.name") == Some("openat")
            })?;
        let errors = metrics
            .iter()
            .find(|m| m["name"] == "system.linux.syscall.errors")?;
        let err_point = errors["sum"]["data_points"].as_array()?.iter().find(|p| {
            attr(p, "linux.cgroup.path") == Some(&path) && attr(p, "error.type") == Some("ENOENT")
        })?;
        Some((
            u64_of(&point["count"]),
            u64_of(&err_point["as_int"]),
            u64_of(&point["start_time_unix_nano"]),
        ))
    };
    wait_for(
        "the collector's OTLP export",
        Duration::from_secs(20),
        || found().is_some_and(|(calls, _, _)| calls == FAILING),
    );
    assert_eq!(found(), Some((FAILING, FAILING, start)));
    drop(collector);
    drop(receiver);
}
