//! The `sonde` binary end to end: JSON snapshot, one-line errors.

use std::process::Command;

use crate::{privileged, sonde_bin, TestCgroup, Workload};

const FAILING: u64 = 500;

#[test]
fn json_snapshot_parses_and_carries_losses() {
    if !privileged() {
        return;
    }
    let cgroup = TestCgroup::new("json");
    let workload = Workload::fork(&cgroup, crate::procs::failing_opens(FAILING));
    let sonde = crate::spawn_sonde(
        &["snapshot", "--duration", "2s", "--json"],
        "sonde: watching",
    );
    workload.go();
    assert_eq!(workload.wait(), 0);
    let out = sonde.wait_with_output().expect("sonde output");
    assert!(out.status.success(), "sonde failed");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");

    let losses = json["losses"].as_array().expect("losses array");
    for loss in losses {
        assert_eq!(loss["count"], 0, "{loss}");
    }
    // Each loss is listed once: a record listed twice counts its events
    // twice wherever records are summed (the collector's totals, the store).
    let mut listed = std::collections::BTreeSet::new();
    for loss in losses {
        let key = (
            loss["stage"].to_string(),
            loss["probe"].to_string(),
            loss["reason"].to_string(),
        );
        assert!(listed.insert(key.clone()), "listed twice: {key:?}");
    }
    let attached = |family: &str| {
        json["probes"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["probe"] == family && p["state"] != "unavailable")
        })
    };
    for family in ["syscalls", "sched", "block", "memory", "process", "tcp"] {
        if attached(family) {
            assert!(
                losses
                    .iter()
                    .any(|l| l["stage"] == "kernel" && l["probe"] == family),
                "{family}'s kernel loss counters are listed when it counts"
            );
        }
    }
    for reason in ["hist_map_full", "errors_map_full", "start_slot_collision"] {
        assert!(
            losses
                .iter()
                .any(|l| l["probe"] == "syscalls" && l["reason"] == reason),
            "syscalls/{reason} missing: {losses:?}"
        );
    }
    // No loss: the window is complete exactly when every family attached
    // (an older kernel may degrade one, e.g. tcp before 6.12).
    let all_attached = json["probes"]
        .as_array()
        .expect("probes array")
        .iter()
        .all(|p| p["state"] == "attached");
    assert_eq!(json["complete"], all_attached, "{}", json["probes"]);
    assert_eq!(json["probes"][0]["state"], "attached");
    let cg = json["syscalls"]
        .as_array()
        .expect("syscalls array")
        .iter()
        .find(|c| c["cgroup_id"] == cgroup.id())
        .expect("the test cgroup is in the snapshot");
    let path = cg["cgroup_path"].as_str().expect("cgroup path resolved");
    assert!(
        cgroup.path().ends_with(path.trim_start_matches('/')),
        "{path}"
    );
    let openat = cg["syscalls"]
        .as_array()
        .expect("series")
        .iter()
        .find(|s| s["name"] == "openat")
        .expect("openat series");
    assert_eq!(openat["errnos"]["ENOENT"], FAILING);
    assert_eq!(openat["calls"], FAILING);
    let buckets: u64 = openat["latency"]["buckets"]
        .as_object()
        .expect("buckets")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert_eq!(buckets, FAILING);
}

#[test]
fn kernel_diagnostics_reach_the_debug_log() {
    if !privileged() {
        return;
    }
    let out = Command::new(sonde_bin())
        .args([
            "snapshot",
            "--duration",
            "1s",
            "--json",
            "--syscall-hist-entries",
            "2",
            "--log-level",
            "debug",
        ])
        .output()
        .expect("run sonde");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("syscalls: first loss of kind 0"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["complete"], false);
    let full = json["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .find(|l| l["reason"] == "hist_map_full")
        .expect("hist_map_full record");
    assert!(full["count"].as_u64().expect("count") > 0, "{full}");
}

/// Runs sonde and returns (exit code, stderr).
fn sonde(args: &[&str], wrap: &[&str]) -> (i32, String) {
    let bin = sonde_bin();
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let out = cmd.args(args).output().expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "backtrace hint: {stderr}"
    );
    (out.status.code().expect("exit code"), stderr)
}

fn assert_one_line(stderr: &str, needle: &str) {
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("sonde: "), "{stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

#[test]
fn unknown_flag_and_bad_duration_are_one_line() {
    let (code, err) = sonde(&["snapshot", "--bogus"], &[]);
    assert_eq!(code, 2);
    assert_one_line(&err, "'--bogus'");
    assert!(err.contains("--help"), "names the fix: {err}");
    let (code, err) = sonde(&["snapshot", "--duration", "soon"], &[]);
    assert_eq!(code, 2);
    assert_one_line(&err, "'soon' is not a duration; write it like 5s");
    let (code, err) = sonde(&["nonsense"], &[]);
    assert_eq!(code, 2);
    assert_one_line(&err, "'nonsense'");
}

#[test]
fn no_privilege_is_one_line() {
    if crate::vm_lacks("setpriv (util-linux)") {
        return;
    }
    if !privileged() {
        return;
    }
    // Root without any capability, as an unprivileged user would be.
    let (code, err) = sonde(
        &["snapshot", "--duration", "1s"],
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all"],
    );
    assert_eq!(code, 1);
    assert_one_line(&err, "missing CAP_BPF, CAP_PERFMON");
    assert!(err.contains("run as root or grant"), "{err}");
}

#[test]
fn missing_hook_is_one_line_and_doctor_names_it() {
    if crate::vm_lacks("unshare and setpriv (util-linux)") {
        return;
    }
    if !privileged() {
        return;
    }
    // A mount namespace where tracefs is hidden under an empty tmpfs, and no
    // CAP_SYS_ADMIN to mount it again: the classic tracepoints are missing.
    let script = r#"mount -t tmpfs none /sys/kernel/tracing && exec setpriv --bounding-set=-all,+bpf,+perfmon --inh-caps=-all "$@""#;
    let wrap = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ];
    let (code, err) = sonde(
        &[
            "snapshot",
            "--duration",
            "1s",
            "--syscall-hook",
            "tracepoint",
            "--probes",
            "syscalls",
        ],
        &wrap,
    );
    assert_eq!(code, 1);
    assert_one_line(&err, "no probe could attach");
    assert!(err.contains("tracefs is not mounted"), "{err}");
    assert!(err.contains("sonde doctor"), "{err}");

    // With every family, the missing hook degrades only its own family.
    let (code, err) = sonde(
        &[
            "snapshot",
            "--duration",
            "1s",
            "--syscall-hook",
            "tracepoint",
        ],
        &wrap,
    );
    assert_eq!(code, 0, "{err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("sonde: warning: syscalls unavailable"))
        .unwrap_or_else(|| panic!("no warning line: {err}"));
    assert!(warning.contains("tracefs is not mounted"), "{warning}");

    let out = Command::new("unshare")
        .args(&wrap[1..])
        .arg(sonde_bin())
        .args(["doctor", "--syscall-hook", "tracepoint"])
        .output()
        .expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("syscalls    unavailable"), "{stdout}");
    assert!(stdout.contains("tracefs       not mounted"), "{stdout}");

    // The same restricted process attaches every raw-tracepoint family (least
    // privilege); only the block family, which needs tracefs, is missing.
    let out = Command::new("unshare")
        .args(&wrap[1..])
        .arg(sonde_bin())
        .args(["doctor"])
        .output()
        .expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for family in ["memory", "process", "tcp"] {
        assert!(
            stdout.contains(&format!("{family:<12}attached     raw_tracepoint")),
            "{family}: {stdout}"
        );
    }
    assert!(
        stdout.contains("sched       attached     tp_btf"),
        "{stdout}"
    );
    assert!(
        stdout.contains("block       unavailable  tracefs is not mounted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("syscalls    attached     raw_tracepoint"),
        "{stdout}"
    );
    assert!(
        stdout.contains("capabilities  CAP_PERFMON, CAP_BPF"),
        "{stdout}"
    );
}

#[test]
fn events_stream_filters_by_kind_and_cgroup() {
    if !privileged() {
        return;
    }
    let cgroup = TestCgroup::new("events");
    let name = cgroup
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let crasher = Workload::fork(&cgroup, || {
        crate::no_core_dumps();
        // SAFETY: in our own forked child: default action, then the signal.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        }
    });
    let sonde = crate::spawn_sonde(
        &[
            "events",
            "--json",
            "--kind",
            "crash",
            "--cgroup",
            &name,
            "--duration",
            "3s",
        ],
        "sonde: streaming events",
    );
    let pid = crasher.pid();
    crasher.go();
    crasher.wait_status();
    // A crash elsewhere must not show up.
    let _ = Command::new("sh").args(["-c", "kill -SEGV $$"]).status();
    let out = sonde.wait_with_output().expect("events output");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["kind"], "crash");
    assert_eq!(lines[0]["pid"], pid);
    assert_eq!(lines[0]["signal"], "SIGSEGV");
    assert_eq!(lines[0]["cgroup_id"], cgroup.id());
}

#[test]
fn events_stream_failed_connects_with_their_connection() {
    if !privileged() {
        return;
    }
    const CONNECTS: usize = 5;
    let cgroup = TestCgroup::new("events-tcp");
    let name = cgroup
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    // A loopback port nobody listens on: every connect is refused.
    let port = crate::procs::free_port();
    let to = crate::netns::sockaddr([127, 0, 0, 1], port);
    let client = Workload::fork(&cgroup, move || {
        for _ in 0..CONNECTS {
            let _ = crate::netns::connect(&to);
        }
    });
    let sonde = crate::spawn_sonde(
        &[
            "events",
            "--json",
            "--kind",
            "connect_failed",
            "--cgroup",
            &name,
            "--duration",
            "3s",
        ],
        "sonde: streaming events",
    );
    client.go();
    assert_eq!(client.wait(), 0);
    let out = sonde.wait_with_output().expect("events output");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), CONNECTS, "{lines:?}");
    for l in &lines {
        assert_eq!(l["kind"], "connect_failed");
        assert_eq!(l["failure"], "refused");
        assert_eq!(l["destination"], "127.0.0.1");
        assert_eq!(l["destination_port"], port);
        assert_eq!(l["cgroup_id"], cgroup.id());
    }
}

#[test]
fn completions_and_manpage_come_from_the_cli_definition() {
    let run = |args: &[&str]| {
        let out = Command::new(sonde_bin())
            .args(args)
            .output()
            .expect("run sonde");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bash = run(&["completions", "bash"]);
    for sub in [
        "agent",
        "snapshot",
        "doctor",
        "events",
        "--syscall-hook",
        "--kubelet-pods-dir",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(run(&["completions", "zsh"]).contains("#compdef sonde"));
    let man = run(&["manpage"]);
    assert!(
        man.contains(".TH sonde 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("snapshot"));
}

/// `sonde agent` without `--json`: the probes' state once (it does not
/// change here), then one short header line per window, not the whole state
/// again before each table.
#[test]
fn the_agents_text_output_states_the_probes_once_and_a_short_header_per_window() {
    if !privileged() {
        return;
    }
    let args: Vec<String> = ["agent", "--interval", "1s", "--probes", "syscalls,process"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut agent = crate::procs::Proc::spawn("agent", &sonde_bin(), &args);
    agent.wait_stderr("agent ready", std::time::Duration::from_secs(20));
    let headers = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("window "))
            .cloned()
            .collect()
    };
    crate::procs::wait_for("four windows", std::time::Duration::from_secs(20), || {
        headers(&agent.stdout_lines()).len() >= 4
    });
    agent.terminate();
    let lines = agent.stdout_lines();
    let probes: Vec<&String> = lines.iter().filter(|l| l.starts_with("probes ")).collect();
    assert_eq!(probes.len(), 1, "{lines:#?}");
    assert!(
        probes[0].contains("syscalls=attached(") && probes[0].contains("process=attached("),
        "{}",
        probes[0]
    );
    assert!(
        lines[0].starts_with("probes "),
        "the state comes first: {lines:#?}"
    );
    let headers = headers(&lines);
    assert!(headers.len() >= 4, "{lines:#?}");
    for h in &headers {
        let rest = h.strip_prefix("window ").expect("header");
        let (secs, state) = rest.split_once("s  ").expect("`window N.NNs  state`");
        let secs: f64 = secs.parse().expect("window length");
        // 1 s windows; a guest under emulation may run a tick late.
        assert!(secs > 0.0 && secs < 10.0, "a 1 s window: {h}");
        assert!(
            state == "complete" || state.starts_with("INCOMPLETE ("),
            "{h}"
        );
        assert!(h.len() < 120, "one short line: {h}");
        assert!(
            !h.contains("attached("),
            "no probe state in the header: {h}"
        );
    }
}
