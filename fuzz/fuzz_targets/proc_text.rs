//! The text sonde reads from /proc, cgroupfs and tracefs, each parser on
//! the same bytes: PSI, CPU throttling (v1 and v2 `cpu.stat`,
//! `/proc/<pid>/cgroup`), a namespace's `snmp` and `netstat` (split at the
//! first NUL), `ns/net` links, `mountinfo`, `/proc/<pid>/status`, a
//! tracepoint's `format`, cgroup paths and the kubelet's pod log
//! directories. What a parser returns comes from its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::{
    attribution::owner::{self, Owner},
    host::{caps::Capabilities, mounts::Mounts, netns, pressure, throttle},
    probes::block,
};

/// Whether `part` lies inside `whole` (a slice of it, not a copy).
fn within(part: &str, whole: &str) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(psi) = pressure::parse(text) {
        for line in std::iter::once(psi.some).chain(psi.full) {
            for avg in [line.avg10, line.avg60, line.avg300] {
                assert!(
                    (0.0..=100.0).contains(&avg),
                    "a PSI average is a percentage: {avg}"
                );
            }
        }
    }
    let _ = throttle::parse_v1(text);
    let _ = throttle::parse_v2(text);
    if let Some(path) = throttle::v1_cpu_path(text) {
        assert!(within(path, text));
    }
    let (snmp, netstat) = text.split_once('\0').unwrap_or((text, ""));
    let _ = netns::parse_tcp_counters(snmp, netstat);
    let _ = netns::section(text, "Tcp");
    let _ = netns::parse_ns_link(text);
    let mounts = Mounts::parse_mountinfo(text);
    for point in [&mounts.tracefs, &mounts.cgroup2, &mounts.cgroup1_cpu]
        .into_iter()
        .flatten()
    {
        assert!(point.as_os_str().len() <= text.len());
    }
    let _ = Capabilities::parse_status(text);
    for name in ["dev", "sector", "rwbs", "error"] {
        if let Some((offset, size)) = block::field(text, name) {
            assert!(text.contains(&offset.to_string()) && text.contains(&size.to_string()));
        }
    }
    match owner::classify(text) {
        Owner::Pod {
            container_id: Some(id),
            ..
        }
        | Owner::Container {
            container_id: id, ..
        } => assert!(text.contains(&id)),
        Owner::Unit { unit, slice } => {
            assert!(text.contains(&unit));
            assert!(slice.is_none_or(|s| text.contains(&s)));
        }
        _ => {}
    }
    if let Some((namespace, name, uid)) = owner::parse_pod_log_dir(text) {
        assert!(text.contains(&namespace) && text.contains(&name) && text.contains(&uid));
    }
});
