//! Attribution: a real cgroup laid out as the kubelet lays out a pod's
//! container, with a kubelet-style log directory, is named by the agent.

use crate::{privileged, TestCgroup, Workload};

const UID: &str = "5e1f0c3a-7b2d-4e8f-9a01-23456789abcd";
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn kubelet_layout_resolves_to_namespace_and_pod() {
    if !privileged() {
        return;
    }
    let uid_ = UID.replace('-', "_");
    let rel = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{CONTAINER}.scope"
    );
    let cgroup = TestCgroup::nested("k8s", &rel);
    let pods = std::env::temp_dir().join(format!("sonde-pods-{}", std::process::id()));
    std::fs::create_dir_all(pods.join(format!("shop_checkout-7d9f8b6c5-x2x7k_{UID}")))
        .expect("pods fixture");

    let workload = Workload::fork(&cgroup, || getppid_times(POD_CALLS));
    let pods_arg = pods.to_str().expect("UTF-8 path").to_owned();
    let window_secs = 2;
    let duration = format!("{window_secs}s");
    let args = [
        "snapshot",
        "--duration",
        &duration,
        "--json",
        "--kubelet-pods-dir",
        &pods_arg,
    ];
    let sonde = crate::spawn_sonde(&args, "sonde: watching");
    let watching = std::time::Instant::now();
    workload.go();
    assert_eq!(workload.wait(), 0);

    // A cgroup that lives and dies inside the window: made after sonde
    // started, removed before it closes the window. `snapshot` names
    // cgroups only when the window closes (a walk of the hierarchy then),
    // so no walk can have seen it: its series must come under owner
    // `unknown`, whole.
    let gone = TestCgroup::new("gone");
    let (gone_id, gone_path) = (gone.id(), gone.path().to_owned());
    let short = Workload::fork(&gone, || getppid_times(GONE_CALLS));
    short.go();
    assert_eq!(short.wait(), 0);
    drop(gone);
    crate::wait_until(|| std::fs::remove_dir(&gone_path).is_ok() || !gone_path.exists());
    let removed_after = watching.elapsed();
    // sonde's window closes `window_secs` after it said it was watching.
    assert!(
        removed_after < std::time::Duration::from_secs(window_secs),
        "the cgroup lived {removed_after:?} into a {window_secs} s window: too slow to test"
    );

    let out = sonde.wait_with_output().expect("sonde output");
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(&pods);

    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let in_family = |family: &str, id: u64| -> Vec<&serde_json::Value> {
        json[family]
            .as_array()
            .unwrap_or_else(|| panic!("{family} in the snapshot"))
            .iter()
            .filter(|c| c["cgroup_id"] == id)
            .collect()
    };
    let series = *in_family("syscalls", cgroup.id())
        .first()
        .expect("the pod's cgroup in the snapshot");
    let owner = &series["owner"];
    assert_eq!(owner["kind"], "pod", "{owner}");
    assert_eq!(owner["pod_uid"], UID);
    assert_eq!(owner["namespace"], "shop");
    assert_eq!(owner["name"], "checkout-7d9f8b6c5-x2x7k");
    assert_eq!(owner["container_id"], CONTAINER);
    assert_eq!(owner["runtime"], "containerd");
    assert_eq!(owner["qos"], "burstable");
    // The workload joined its cgroup and began its read of the go pipe
    // before sonde loaded (a read whose entry sonde never saw is not
    // counted; exit_group never returns): its getppid calls are all the
    // cgroup made.
    assert_eq!(calls_by_name(series), [("getppid".to_owned(), POD_CALLS)]);
    assert_eq!(series["calls"], POD_CALLS);
    assert_eq!(series["errors"], 0);

    // The removed cgroup: its write to cgroup.procs (which ended in it),
    // the close of that file, the read of the go pipe and its getppid
    // calls, under owner `unknown`, without a path.
    let gone_series = in_family("syscalls", gone_id);
    assert_eq!(gone_series.len(), 1, "the removed cgroup's syscalls");
    let gone_series = gone_series[0];
    assert_eq!(gone_series["owner"]["kind"], "unknown", "{gone_series}");
    assert!(gone_series["cgroup_path"].is_null(), "{gone_series}");
    let mut want: Vec<(String, u64)> = vec![
        ("close".to_owned(), 1),
        ("getppid".to_owned(), GONE_CALLS),
        ("read".to_owned(), 1),
        ("write".to_owned(), 1),
    ];
    want.sort();
    assert_eq!(calls_by_name(gone_series), want);
    // Its series in the other families are unknown too, and each is
    // counted as unattributed.
    let mut ours = 0;
    for family in ["syscalls", "runqueue", "reclaim", "exits"] {
        for c in in_family(family, gone_id) {
            assert_eq!(c["owner"]["kind"], "unknown", "{family}: {c}");
            ours += 1;
        }
    }
    let unattributed = json["unattributed_series"]
        .as_u64()
        .expect("unattributed_series");
    assert!(
        unattributed >= ours,
        "{unattributed} unattributed, {ours} of the removed cgroup alone"
    );
    // Series of cgroups that earlier tests removed may still arrive (a socket
    // of theirs retransmitting, say): they are counted, not dropped, and
    // the count is of exactly the series shown under owner `unknown`.
    fn unknown_owners(v: &serde_json::Value) -> u64 {
        match v {
            serde_json::Value::Object(m) => {
                u64::from(m.get("owner").is_some_and(|o| o["kind"] == "unknown"))
                    + m.values().map(unknown_owners).sum::<u64>()
            }
            serde_json::Value::Array(a) => a.iter().map(unknown_owners).sum(),
            _ => 0,
        }
    }
    assert_eq!(json["unattributed_series"], unknown_owners(&json));
}

/// getppid calls the pod's workload makes ...
const POD_CALLS: u64 = 10;
/// ... and the removed cgroup's.
const GONE_CALLS: u64 = 7;

/// Makes `n` getppid calls; async-signal-safe, for forked workloads.
fn getppid_times(n: u64) {
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// A syscall series' (name, calls), sorted by name.
fn calls_by_name(series: &serde_json::Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = series["syscalls"]
        .as_array()
        .expect("syscalls of the cgroup")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_owned(),
                s["calls"].as_u64().expect("calls"),
            )
        })
        .collect();
    out.sort();
    out
}
