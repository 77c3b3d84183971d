//! The process's effective capabilities, from `/proc/self/status`.

use std::fmt;

/// Capability numbers sonde cares about (`linux/capability.h`).
pub mod cap {
    /// Bypass file read permission checks and directory search.
    pub const DAC_READ_SEARCH: u32 = 2;
    /// Read other processes' namespaces and memory maps.
    pub const SYS_PTRACE: u32 = 19;
    /// The catch-all administrative capability (BPF on kernels before 5.8).
    pub const SYS_ADMIN: u32 = 21;
    /// Raise resource limits (RLIMIT_MEMLOCK on kernels before 5.11).
    pub const SYS_RESOURCE: u32 = 24;
    /// Performance monitoring and tracing (5.8+).
    pub const PERFMON: u32 = 38;
    /// BPF maps and programs (5.8+).
    pub const BPF: u32 = 39;
}

/// Capabilities some signals need beyond loading programs, and why.
const RECOMMENDED: [(u32, &str, &str); 3] = [
    (
        cap::DAC_READ_SEARCH,
        "CAP_DAC_READ_SEARCH",
        "tracefs (block I/O, classic tracepoints) and other users' cgroups and /proc entries",
    ),
    (
        cap::SYS_PTRACE,
        "CAP_SYS_PTRACE",
        "other users' network namespaces (TCP counter self-check)",
    ),
    (
        cap::SYS_RESOURCE,
        "CAP_SYS_RESOURCE",
        "raising RLIMIT_MEMLOCK on kernels before 5.11",
    ),
];

/// Names of the capabilities sonde reports.
const NAMED: [(u32, &str); 6] = [
    (cap::DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    (cap::SYS_PTRACE, "CAP_SYS_PTRACE"),
    (cap::SYS_ADMIN, "CAP_SYS_ADMIN"),
    (cap::SYS_RESOURCE, "CAP_SYS_RESOURCE"),
    (cap::PERFMON, "CAP_PERFMON"),
    (cap::BPF, "CAP_BPF"),
];

/// An effective capability set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Reads the calling process's effective set.
    pub fn current() -> std::io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        Self::parse_status(&status).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no CapEff line in /proc/self/status",
            )
        })
    }

    /// Parses the `CapEff:` line of a `/proc/<pid>/status` text.
    pub fn parse_status(status: &str) -> Option<Self> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(Self)
    }

    /// Whether capability `n` is in the set.
    pub fn has(self, n: u32) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }

    /// Capabilities that are not strictly needed to load the probes but that
    /// some signals need, missing from this set, with what they are for.
    /// `memlock_charged`: the kernel charges BPF memory to RLIMIT_MEMLOCK
    /// (before 5.11) and the limit is not already unlimited.
    pub fn missing_recommended(self, memlock_charged: bool) -> Vec<(&'static str, &'static str)> {
        RECOMMENDED
            .iter()
            .filter(|(n, _, _)| !self.has(*n) && (*n != cap::SYS_RESOURCE || memlock_charged))
            .map(|&(_, name, why)| (name, why))
            .collect()
    }

    /// Capabilities missing to load and attach tracing programs: CAP_BPF and
    /// CAP_PERFMON, unless CAP_SYS_ADMIN (which covers both) is present.
    pub fn missing_for_tracing(self) -> Vec<&'static str> {
        if self.has(cap::SYS_ADMIN) {
            return Vec::new();
        }
        let mut missing = Vec::new();
        if !self.has(cap::BPF) {
            missing.push("CAP_BPF");
        }
        if !self.has(cap::PERFMON) {
            missing.push("CAP_PERFMON");
        }
        missing
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = NAMED
            .iter()
            .filter(|(n, _)| self.has(*n))
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            write!(f, "none of {}", NAMED.map(|(_, n)| n).join(", "))
        } else {
            write!(f, "{}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_root_and_unprivileged() {
        let root = Capabilities::parse_status("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(root.missing_for_tracing().is_empty());
        let none = Capabilities::parse_status("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(none.missing_for_tracing(), vec!["CAP_BPF", "CAP_PERFMON"]);
        let bpf_only = Capabilities(1 << cap::BPF);
        assert_eq!(bpf_only.missing_for_tracing(), vec!["CAP_PERFMON"]);
        assert_eq!(bpf_only.to_string(), "CAP_BPF");
        assert!(Capabilities::parse_status("Name:\tx\n").is_none());
        assert!(root.missing_recommended(true).is_empty());
        let probes_only = Capabilities((1 << cap::BPF) | (1 << cap::PERFMON));
        let names: Vec<&str> = probes_only
            .missing_recommended(true)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            names,
            vec!["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE"]
        );
        assert_eq!(
            probes_only.missing_recommended(false).len(),
            2,
            "no memlock charge: no CAP_SYS_RESOURCE"
        );
    }
}
