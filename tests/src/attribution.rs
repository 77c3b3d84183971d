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

    let workload = Workload::fork(&cgroup, || {
        for _ in 0..10 {
            // SAFETY: getppid has no preconditions.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    });
    let pods_arg = pods.to_str().expect("UTF-8 path").to_owned();
    let args = [
        "snapshot",
        "--duration",
        "1s",
        "--json",
        "--kubelet-pods-dir",
        &pods_arg,
    ];
    let sonde = crate::spawn_sonde(&args, "sonde: watching");
    workload.go();
    assert_eq!(workload.wait(), 0);
    let out = sonde.wait_with_output().expect("sonde output");
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(&pods);

    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let series = json["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .find(|c| c["cgroup_id"] == cgroup.id())
        .expect("the pod's cgroup in the snapshot");
    let owner = &series["owner"];
    assert_eq!(owner["kind"], "pod", "{owner}");
    assert_eq!(owner["pod_uid"], UID);
    assert_eq!(owner["namespace"], "shop");
    assert_eq!(owner["name"], "checkout-7d9f8b6c5-x2x7k");
    assert_eq!(owner["container_id"], CONTAINER);
    assert_eq!(owner["runtime"], "containerd");
    assert_eq!(owner["qos"], "burstable");
    // Series of cgroups that earlier tests removed may still arrive (a socket
    // of theirs retransmitting, say): they are counted, not dropped.
    // ... and each is in the data under owner `unknown`, not dropped.
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
