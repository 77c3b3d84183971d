//! CPU throttling (CFS bandwidth) of a cgroup: from its v2 `cpu.stat`, or, on
//! v1/v2 hybrids where the cpu controller lives in v1, from the v1 `cpu`
//! cgroup of a process in it.

use std::path::Path;

pub use crate::model::host::Throttling;

fn fields(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(' ')?;
        Some((k, v.trim().parse().ok()?))
    })
}

/// Parses a cgroup v2 `cpu.stat` (`nr_periods`, `nr_throttled`,
/// `throttled_usec`); `None` without the cpu controller's fields.
pub fn parse_v2(text: &str) -> Option<Throttling> {
    let (mut periods, mut throttled, mut usec) = (None, None, None);
    for (k, v) in fields(text) {
        match k {
            "nr_periods" => periods = Some(v),
            "nr_throttled" => throttled = Some(v),
            "throttled_usec" => usec = Some(v),
            _ => {}
        }
    }
    Some(Throttling {
        periods: periods?,
        throttled_periods: throttled?,
        throttled_ns: usec?.checked_mul(1000)?,
        source: "cgroup2",
    })
}

/// Parses a cgroup v1 `cpu.stat` (`nr_periods`, `nr_throttled`,
/// `throttled_time` in nanoseconds).
pub fn parse_v1(text: &str) -> Option<Throttling> {
    let (mut periods, mut throttled, mut ns) = (None, None, None);
    for (k, v) in fields(text) {
        match k {
            "nr_periods" => periods = Some(v),
            "nr_throttled" => throttled = Some(v),
            "throttled_time" => ns = Some(v),
            _ => {}
        }
    }
    Some(Throttling {
        periods: periods?,
        throttled_periods: throttled?,
        throttled_ns: ns?,
        source: "cgroup1",
    })
}

/// The v1 `cpu` cgroup path in a `/proc/<pid>/cgroup` text.
pub fn v1_cpu_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })
}

/// Throttling of the v2 cgroup at `v2_dir`; with `v1_cpu_root` (the v1 cpu
/// controller's mount), through a process of that cgroup on hybrids.
pub fn read(v2_dir: &Path, v1_cpu_root: Option<&Path>) -> Option<Throttling> {
    if let Some(t) = std::fs::read_to_string(v2_dir.join("cpu.stat"))
        .ok()
        .and_then(|t| parse_v2(&t))
    {
        return Some(t);
    }
    let root = v1_cpu_root?;
    let procs = std::fs::read_to_string(v2_dir.join("cgroup.procs")).ok()?;
    // A number, so that the path below stays under /proc.
    let pid: u32 = procs.lines().next()?.trim().parse().ok()?;
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = v1_cpu_path(&proc_cgroup)?;
    let text =
        std::fs::read_to_string(root.join(path.trim_start_matches('/')).join("cpu.stat")).ok()?;
    parse_v1(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_and_v1_formats() {
        let v2 = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2500\n";
        assert_eq!(
            parse_v2(v2),
            Some(Throttling {
                periods: 10,
                throttled_periods: 4,
                throttled_ns: 2_500_000,
                source: "cgroup2"
            })
        );
        // without the cpu controller, v2 cpu.stat has only usage fields
        assert_eq!(parse_v2("usage_usec 1\nuser_usec 1\nsystem_usec 0\n"), None);
        let v1 = "nr_periods 7\nnr_throttled 3\nthrottled_time 123456789\n";
        assert_eq!(
            parse_v1(v1),
            Some(Throttling {
                periods: 7,
                throttled_periods: 3,
                throttled_ns: 123_456_789,
                source: "cgroup1"
            })
        );
        assert_eq!(parse_v1("garbage"), None);
    }

    #[test]
    fn finds_the_v1_cpu_cgroup() {
        let text = "9:name=systemd:/\n2:cpuacct:/\n1:cpu:/kubepods/pod1\n0::/\n";
        assert_eq!(v1_cpu_path(text), Some("/kubepods/pod1"));
        assert_eq!(v1_cpu_path("3:cpu,cpuacct:/a/b\n"), Some("/a/b"));
        assert_eq!(v1_cpu_path("0::/\n"), None);
    }
}
