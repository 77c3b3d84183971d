//! Network namespaces and the kernel's own TCP counters in each: found
//! through any process living in the namespace (`/proc/<pid>/ns/net`), read
//! from that process's `net/snmp` (`Tcp:`) and `net/netstat` (`TcpExt:`),
//! which show the counters of its namespace.
//!
//! The parsers take text and return values, so they are tested on fixtures.

use std::{collections::HashMap, path::Path};

use serde::Serialize;

/// The kernel's TCP counters of a namespace that sonde checks its probes
/// against, and `ListenDrops`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpCounters {
    /// `Tcp: ActiveOpens`.
    pub active_opens: u64,
    /// `Tcp: AttemptFails`.
    pub attempt_fails: u64,
    /// `Tcp: RetransSegs`.
    pub retrans_segs: u64,
    /// `Tcp: OutRsts`.
    pub out_rsts: u64,
    /// `TcpExt: ListenOverflows`.
    pub listen_overflows: u64,
    /// `TcpExt: ListenDrops`: SYNs and handshakes a listening socket
    /// refused. Not in the check: sonde reads the listening sockets' own
    /// drop counts instead, which count some refusals twice.
    pub listen_drops: u64,
}

impl TcpCounters {
    /// The checked counters as (kernel name, value), in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("ActiveOpens", self.active_opens),
            ("AttemptFails", self.attempt_fails),
            ("RetransSegs", self.retrans_segs),
            ("OutRsts", self.out_rsts),
            ("ListenOverflows", self.listen_overflows),
        ]
    }

    /// Counter by counter, `self - earlier` (a counter that went backwards
    /// counts from zero).
    pub fn since(&self, earlier: &TcpCounters) -> TcpCounters {
        let d = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
        TcpCounters {
            active_opens: d(self.active_opens, earlier.active_opens),
            attempt_fails: d(self.attempt_fails, earlier.attempt_fails),
            retrans_segs: d(self.retrans_segs, earlier.retrans_segs),
            out_rsts: d(self.out_rsts, earlier.out_rsts),
            listen_overflows: d(self.listen_overflows, earlier.listen_overflows),
            listen_drops: d(self.listen_drops, earlier.listen_drops),
        }
    }
}

/// The values of section `prefix` (`Tcp`, `TcpExt`) of an snmp or netstat
/// text, where a header line (`Tcp: RtoAlgorithm RtoMin ...`) is followed
/// by a value line (`Tcp: 1 200 ...`); `None` when the section is missing
/// or its two lines do not match.
pub fn section(text: &str, prefix: &str) -> Option<HashMap<String, i64>> {
    let tag = format!("{prefix}:");
    let mut lines = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(&tag));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<i64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if names.len() != values.len() {
        return None;
    }
    Some(names.into_iter().map(str::to_owned).zip(values).collect())
}

/// The counters from an `snmp` and a `netstat` text.
pub fn parse_tcp_counters(snmp: &str, netstat: &str) -> Option<TcpCounters> {
    let tcp = section(snmp, "Tcp")?;
    let ext = section(netstat, "TcpExt")?;
    let get = |s: &HashMap<String, i64>, name: &str| s.get(name).map(|&v| v.max(0) as u64);
    Some(TcpCounters {
        active_opens: get(&tcp, "ActiveOpens")?,
        attempt_fails: get(&tcp, "AttemptFails")?,
        retrans_segs: get(&tcp, "RetransSegs")?,
        out_rsts: get(&tcp, "OutRsts")?,
        listen_overflows: get(&ext, "ListenOverflows")?,
        listen_drops: get(&ext, "ListenDrops")?,
    })
}

/// The inode of a `ns/net` link target, `net:[4026531840]`.
pub fn parse_ns_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The network namespace of process `pid`.
pub fn of_pid(proc_root: &Path, pid: u32) -> Option<u32> {
    let target = std::fs::read_link(proc_root.join(pid.to_string()).join("ns/net")).ok()?;
    parse_ns_link(target.to_str()?)
}

/// The network namespace of the cgroup at `dir`: that of the first of its
/// processes (`cgroup.procs`) whose namespace can be read, among the first
/// few; `None` for a cgroup without processes.
pub fn of_cgroup(proc_root: &Path, dir: &Path) -> Option<u32> {
    const TRIED: usize = 8;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .take(TRIED)
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find_map(|pid| of_pid(proc_root, pid))
}

/// The host's network namespace: PID 1's (the DaemonSet has `hostPID` and
/// CAP_SYS_PTRACE), or where that cannot be read (a sandbox hiding PID 1),
/// the agent's own.
pub fn host(proc_root: &Path) -> Option<u32> {
    of_pid(proc_root, 1).or_else(|| {
        let target = std::fs::read_link(proc_root.join("self/ns/net")).ok()?;
        parse_ns_link(target.to_str()?)
    })
}

/// Every network namespace that has a process, with one process in it
/// (the lowest pid, usually the namespace's first), at most `limit`.
pub fn with_a_process(proc_root: &Path, limit: usize) -> HashMap<u32, u32> {
    let mut out: HashMap<u32, u32> = HashMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return out;
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        if let Some(ns) = of_pid(proc_root, pid) {
            if out.len() < limit || out.contains_key(&ns) {
                out.entry(ns).or_insert(pid);
            }
        }
    }
    out
}

/// The TCP counters of the namespace `pid` lives in.
pub fn tcp_counters(proc_root: &Path, pid: u32) -> Option<TcpCounters> {
    let dir = proc_root.join(pid.to_string()).join("net");
    let snmp = std::fs::read_to_string(dir.join("snmp")).ok()?;
    let netstat = std::fs::read_to_string(dir.join("netstat")).ok()?;
    parse_tcp_counters(&snmp, &netstat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/snmp` of a 6.18 kernel (Ip, Icmp and Udp lines shortened).
    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 4711
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 42 17 5 3 2 9001 8999 121 0 7 0
Udp: InDatagrams NoPorts InErrors OutDatagrams
Udp: 10 0 0 10
";

    /// `/proc/net/netstat` (TcpExt shortened, MPTcpExt present on 6.x).
    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops
TcpExt: 0 0 4 6
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
MPTcpExt: MPCapableSYNRX
MPTcpExt: 0
";

    #[test]
    fn parses_the_tcp_counters() {
        assert_eq!(
            parse_tcp_counters(SNMP, NETSTAT),
            Some(TcpCounters {
                active_opens: 42,
                attempt_fails: 5,
                retrans_segs: 121,
                out_rsts: 7,
                listen_overflows: 4,
                listen_drops: 6,
            })
        );
        let tcp = section(SNMP, "Tcp").unwrap();
        assert_eq!(tcp["MaxConn"], -1);
        assert!(section(SNMP, "Tcp6").is_none());
        // "TcpExt:" must not be taken for "Tcp:".
        assert!(section(NETSTAT, "Tcp").is_none());
    }

    #[test]
    fn refuses_broken_sections() {
        assert!(section("Tcp: A B\nTcp: 1\n", "Tcp").is_none());
        assert!(section("Tcp: A B\nTcp: 1 x\n", "Tcp").is_none());
        assert!(section("Tcp: A B\n", "Tcp").is_none());
        assert!(parse_tcp_counters(SNMP, "TcpExt: X\nTcpExt: 1\n").is_none());
    }

    #[test]
    fn differences() {
        let a = TcpCounters {
            retrans_segs: 10,
            out_rsts: 3,
            ..TcpCounters::default()
        };
        let b = TcpCounters {
            retrans_segs: 25,
            out_rsts: 2,
            ..TcpCounters::default()
        };
        let d = b.since(&a);
        assert_eq!(d.retrans_segs, 15);
        assert_eq!(d.out_rsts, 2, "went backwards: counts from zero");
        assert_eq!(d.named()[2], ("RetransSegs", 15));
    }

    #[test]
    fn namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    #[test]
    fn finds_this_process_namespace() {
        let root = Path::new("/proc");
        let own = of_pid(root, std::process::id()).expect("own namespace");
        let all = with_a_process(root, 4096);
        assert!(all.contains_key(&own));
        let pid = all[&own];
        assert_eq!(of_pid(root, pid), Some(own));
        // This kernel's own files, read once: each counter equals the
        // value the test finds itself, by the column of its name.
        let read = |f: &str| std::fs::read_to_string(format!("/proc/self/net/{f}")).unwrap();
        let (snmp, netstat) = (read("snmp"), read("netstat"));
        let theirs = |text: &str, tag: &str, name: &str| -> u64 {
            let mut lines = text.lines().filter(|l| l.starts_with(&format!("{tag}: ")));
            let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
            let at = names.split(' ').position(|n| n == name).unwrap();
            values.split(' ').nth(at).unwrap().parse().unwrap()
        };
        assert_eq!(
            parse_tcp_counters(&snmp, &netstat),
            Some(TcpCounters {
                active_opens: theirs(&snmp, "Tcp", "ActiveOpens"),
                attempt_fails: theirs(&snmp, "Tcp", "AttemptFails"),
                retrans_segs: theirs(&snmp, "Tcp", "RetransSegs"),
                out_rsts: theirs(&snmp, "Tcp", "OutRsts"),
                listen_overflows: theirs(&netstat, "TcpExt", "ListenOverflows"),
                listen_drops: theirs(&netstat, "TcpExt", "ListenDrops"),
            })
        );
        assert!(tcp_counters(root, std::process::id()).is_some());
    }
}
