//! Who this node is, as reports and resources name it.

use sonde_proto::{names, v1::NodeIdentity};

use crate::host::kernel::KernelInfo;

fn read_trimmed(paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

/// This node: `node_name` overrides the host name.
pub fn current(node_name: Option<&str>) -> NodeIdentity {
    let kernel = KernelInfo::current();
    NodeIdentity {
        node_name: node_name
            .map(str::to_owned)
            .or_else(|| read_trimmed(&["/proc/sys/kernel/hostname"]))
            .unwrap_or_else(|| "unknown".to_owned()),
        machine_id: read_trimmed(&["/etc/machine-id", "/var/lib/dbus/machine-id"])
            .unwrap_or_default(),
        boot_id: read_trimmed(&["/proc/sys/kernel/random/boot_id"])
            .unwrap_or_else(|| "unknown".to_owned()),
        kernel: kernel.release,
        arch: kernel.arch,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// OTel resource attributes of a node.
pub fn resource(node: &NodeIdentity) -> Vec<(&'static str, String)> {
    vec![
        (names::RES_SERVICE_NAME, "sonde".to_owned()),
        (names::RES_SERVICE_VERSION, node.agent_version.clone()),
        (names::RES_HOST_NAME, node.node_name.clone()),
        (names::RES_HOST_ID, node.machine_id.clone()),
        (names::RES_HOST_ARCH, node.arch.clone()),
        (names::RES_OS_TYPE, "linux".to_owned()),
        (names::RES_OS_VERSION, node.kernel.clone()),
    ]
}
