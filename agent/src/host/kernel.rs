//! Kernel identity and features.

use std::path::Path;

use serde::Serialize;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What `sonde doctor` reports about the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// Machine architecture (`uname -m`).
    pub arch: String,
    /// Whether the kernel's own BTF is available.
    pub btf: bool,
}

impl KernelInfo {
    /// Reads the running kernel's identity.
    pub fn current() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            release,
            arch: std::env::consts::ARCH.to_owned(),
            btf: Path::new(VMLINUX_BTF).exists(),
        }
    }
}
