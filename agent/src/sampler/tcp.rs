//! The TCP window: deltas of the family's counters, attributed to cgroups,
//! listening ports and network namespaces; the connections behind the rare
//! events; the top failing destinations per cgroup; and the check of each
//! namespace's counts against the kernel's own.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use sonde_common::{
    events::kind,
    family::Family,
    tcp::{failure_of, listen, netns, what, TcpEvent, AF_INET, AF_INET6},
};

use super::histogram_deltas;
use crate::{
    attribution::CgroupRef,
    host::{
        netns::{self as ns_host, TcpCounters},
        sockdiag::{Diag, DiagError},
    },
    model::{
        tcp::{
            CgroupTcp, CounterCheck, Destination, ListenSockets, ListenerTcp, NetnsDrops, NetnsTcp,
            RetransmitDestination, TcpCounts, TcpEventRecord, TcpWindow,
        },
        LossRecord,
    },
    probes::{
        syscalls::errno_name,
        tcp::{failure_name, state_name, TcpNames, TcpReading},
    },
};

/// Bound on the network namespaces checked against the kernel's counters.
pub const MAX_NAMESPACES: usize = 1024;
/// Bound on the (cgroup, destination) pairs counted per window for the
/// top failing destinations; beyond it, failures are counted as lost.
pub const MAX_DESTINATIONS: usize = 4096;
/// Failing destinations reported per cgroup.
pub const TOP_DESTINATIONS: usize = 5;
/// /proc is scanned for the namespaces' processes at most this often.
const MIN_RESCAN: Duration = Duration::from_secs(2);

/// The per-namespace check: the kernel's counters and sonde's at a
/// baseline, and a process through which each namespace can be read; and
/// each namespace's listening sockets, read through sock_diag.
#[derive(Debug)]
pub struct NetnsCheck {
    proc_root: PathBuf,
    /// Namespace → (kernel's counters, sonde's counters) at its baseline.
    baselines: HashMap<u32, (TcpCounters, TcpCounters)>,
    /// Namespace → a process living in it, from the last scan.
    pids: HashMap<u32, u32>,
    scanned_at: Instant,
    diag: Diag,
    /// Namespace → its listening sockets' drop counts at the last reading,
    /// by socket cookie. A socket missing here is new since then and counts
    /// from zero; at the start, every socket's count is the baseline.
    socket_drops: HashMap<u32, HashMap<u64, u32>>,
    /// Namespaces that cannot be entered, and why (asked once).
    unreadable: HashMap<u32, String>,
}

/// One namespace's listening ports in a window.
type PortSockets = BTreeMap<u16, ListenSockets>;

/// sonde's counters of namespace `ns`, named like the kernel's.
pub fn sonde_counters(reading: &TcpReading, ns: u32) -> TcpCounters {
    let get = |counter| reading.netns.get(&(ns, counter)).copied().unwrap_or(0);
    TcpCounters {
        active_opens: get(netns::ACTIVE_OPENS).saturating_sub(get(netns::ACTIVE_OPENS_UNDONE)),
        attempt_fails: get(netns::ATTEMPT_FAILS),
        retrans_segs: get(netns::RETRANS_SEGS),
        out_rsts: get(netns::OUT_RSTS),
        listen_overflows: get(netns::LISTEN_OVERFLOWS),
        // Not a probe's: the listening sockets' own counts stand for it.
        listen_drops: 0,
    }
}

impl NetnsCheck {
    /// Takes the baseline of every namespace that has a process now.
    pub fn start(proc_root: PathBuf, reading: &TcpReading) -> Self {
        let pids = ns_host::with_a_process(&proc_root, MAX_NAMESPACES);
        let baselines: HashMap<u32, (TcpCounters, TcpCounters)> = pids
            .iter()
            .filter_map(|(&ns, &pid)| {
                let kernel = ns_host::tcp_counters(&proc_root, pid)?;
                Some((ns, (kernel, sonde_counters(reading, ns))))
            })
            .collect();
        let own = ns_host::of_pid(&proc_root, std::process::id());
        let mut check = Self {
            proc_root,
            baselines,
            pids,
            scanned_at: Instant::now(),
            diag: Diag::new(own),
            socket_drops: HashMap::new(),
            unreadable: HashMap::new(),
        };
        // The sockets' counts now are the baselines.
        let mut namespaces: Vec<u32> = check.baselines.keys().copied().collect();
        namespaces.sort_unstable();
        for ns in namespaces {
            let _ = check.listeners(ns);
        }
        check
    }

    /// The namespaces to report: those baselined and those sonde counted
    /// something in during the window (a handshake at a listening port
    /// included).
    fn namespaces(&self, before: &TcpReading, after: &TcpReading) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .baselines
            .keys()
            .copied()
            .chain(
                after
                    .netns
                    .keys()
                    .filter(|k| delta(&before.netns, &after.netns, k) > 0)
                    .map(|&(ns, _)| ns),
            )
            .chain(
                after
                    .listen
                    .keys()
                    .filter(|k| delta(&before.listen, &after.listen, k) > 0)
                    .map(|&(ns, _, _)| ns),
            )
            .filter(|&ns| ns != 0)
            .collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(MAX_NAMESPACES);
        all
    }

    /// Finds a process again for every namespace in `wanted` whose process
    /// left it (one scan of /proc, at most every two seconds), and forgets
    /// the baselines of namespaces that are gone (their inode numbers may be
    /// reused).
    fn refresh(&mut self, wanted: &[u32]) {
        let stale = wanted.iter().any(|ns| {
            self.pids
                .get(ns)
                .is_none_or(|&pid| ns_host::of_pid(&self.proc_root, pid) != Some(*ns))
        });
        if stale && self.scanned_at.elapsed() >= MIN_RESCAN {
            self.scanned_at = Instant::now();
            self.pids = ns_host::with_a_process(&self.proc_root, MAX_NAMESPACES);
            let pids = &self.pids;
            self.baselines.retain(|ns, _| pids.contains_key(ns));
            self.socket_drops.retain(|ns, _| pids.contains_key(ns));
            self.unreadable.retain(|ns, _| pids.contains_key(ns));
            self.diag.retain(|ns| pids.contains_key(&ns));
        }
    }

    /// Namespace `ns`'s listening ports: per port, what its sockets dropped
    /// since the last reading and their accept queues now; `Err` says why
    /// they cannot be read.
    fn listeners(&mut self, ns: u32) -> Result<PortSockets, String> {
        if let Some(why) = self.unreadable.get(&ns) {
            return Err(why.clone());
        }
        let pid = *self
            .pids
            .get(&ns)
            .ok_or("no process found in the namespace")?;
        let sockets = match self.diag.listeners(&self.proc_root, ns, pid) {
            Ok(sockets) => sockets,
            Err(e @ DiagError::Enter { .. }) => {
                self.unreadable.insert(ns, e.to_string());
                return Err(e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        let last = self.socket_drops.remove(&ns).unwrap_or_default();
        let mut now = HashMap::with_capacity(sockets.len());
        let mut ports = PortSockets::new();
        for s in sockets {
            let Some(drops) = s.drops else {
                return Err("this kernel does not report sockets' drops".to_owned());
            };
            now.insert(s.cookie, drops);
            let port = ports.entry(s.port).or_default();
            // The kernel's count is 32 bits and wraps.
            port.drops += u64::from(drops.wrapping_sub(last.get(&s.cookie).copied().unwrap_or(0)));
            port.accept_queue += u64::from(s.accept_queue);
            port.accept_queue_max += u64::from(s.accept_queue_max);
        }
        self.socket_drops.insert(ns, now);
        Ok(ports)
    }

    /// Namespace `ns` now, kernel against sonde, since its baseline; a
    /// namespace seen for the first time is taken to be new (both counted
    /// from zero). `None` when no process in it can be read.
    fn check(&mut self, ns: u32, reading: &TcpReading) -> Option<Vec<CounterCheck>> {
        let pid = *self.pids.get(&ns)?;
        if ns_host::of_pid(&self.proc_root, pid) != Some(ns) {
            return None; // it left (or its pid is another process's now)
        }
        let kernel = ns_host::tcp_counters(&self.proc_root, pid)?;
        if !self.baselines.contains_key(&ns) && self.baselines.len() < MAX_NAMESPACES {
            self.baselines
                .insert(ns, (TcpCounters::default(), TcpCounters::default()));
        }
        let (kernel_base, sonde_base) = self.baselines.get(&ns).copied().unwrap_or_default();
        let kernel = kernel.since(&kernel_base).named();
        let sonde = sonde_counters(reading, ns).since(&sonde_base).named();
        Some(
            kernel
                .iter()
                .zip(sonde.iter())
                .map(|(&(counter, k), &(_, s))| CounterCheck {
                    counter,
                    kernel: k,
                    sonde: s,
                    discrepancy: k as i64 - s as i64,
                })
                .collect(),
        )
    }
}

/// The clocks of the window's end, to date events.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// CLOCK_MONOTONIC (the clock of `bpf_ktime_get_ns`), nanoseconds.
    pub monotonic_ns: u64,
    /// Unix time, nanoseconds.
    pub unix_ns: u64,
}

/// Everything the TCP window is made of.
pub struct TcpInputs<'a> {
    /// The family's counters at the window's start.
    pub before: &'a TcpReading,
    /// At its end.
    pub after: &'a TcpReading,
    /// Every TCP event drained in the window.
    pub events: &'a [TcpEvent],
    /// How many of them to keep as records.
    pub keep_events: usize,
    /// The kernel's reason names.
    pub names: &'a TcpNames,
    /// The window's end.
    pub clocks: Clocks,
}

fn delta<K: Eq + std::hash::Hash>(before: &HashMap<K, u64>, after: &HashMap<K, u64>, k: &K) -> u64 {
    let now = after.get(k).copied().unwrap_or(0);
    now.checked_sub(before.get(k).copied().unwrap_or(0))
        .unwrap_or(now)
}

/// The family in the sampler: the namespace check, when the family
/// counted from the first reading (its zeros would read as discrepancies).
#[derive(Default)]
pub struct State {
    check: Option<NetnsCheck>,
}

impl super::FamilyWindow for State {
    fn started(&mut self, first: &crate::probes::Reading, counting: bool) {
        // The namespace check compares from now: /proc has no past.
        self.check = counting.then(|| NetnsCheck::start(PathBuf::from("/proc"), &first.tcp));
    }

    type Part = crate::model::tcp::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        let (tcp, losses) = tcp_window(
            &TcpInputs {
                before: &cx.before.tcp,
                after: &cx.after.tcp,
                events: cx.tcp_events,
                keep_events: cx.tcp_kept,
                names: cx.probes.tcp_names(),
                clocks: cx.clocks,
            },
            self.check.as_mut(),
            cx.resolve,
        );
        part.window = tcp;
        cx.losses.extend(losses);
    }
}

/// The TCP window and the losses it adds to the kernel's counters (the
/// netns check's, the events').
pub fn tcp_window(
    input: &TcpInputs<'_>,
    check: Option<&mut NetnsCheck>,
    resolve: &mut dyn FnMut(u64) -> CgroupRef,
) -> (TcpWindow, Vec<LossRecord>) {
    let (before, after) = (input.before, input.after);
    // The family's kernel loss counters are the window's, with every
    // family's (`Sampler::tick`): only what the TCP window adds is here.
    let mut losses = Vec::new();
    let mut window = TcpWindow::default();

    // Per cgroup: connects, failures, retransmits, resets.
    let mut cgroups: BTreeMap<u64, CgroupTcp> = BTreeMap::new();
    for (id, hist) in histogram_deltas(&before.connect_latency, &after.connect_latency) {
        let c = cgroups
            .entry(id)
            .or_insert_with(|| CgroupTcp::new(resolve(id)));
        c.connects = hist.count();
        c.connect_p50_secs = hist.quantile(0.5);
        c.connect_p99_secs = hist.quantile(0.99);
        c.connect_latency = hist;
    }
    for key in after.cgroup.keys() {
        let n = delta(&before.cgroup, &after.cgroup, key);
        let (id, counter) = *key;
        if n == 0 {
            continue;
        }
        let counts = if id == 0 && counter < what::FAILURES {
            &mut window.node
        } else {
            let c = cgroups
                .entry(id)
                .or_insert_with(|| CgroupTcp::new(resolve(id)));
            if counter >= what::FAILURES {
                *c.connect_failures
                    .entry(failure_name(counter - what::FAILURES))
                    .or_default() += n;
                continue;
            }
            &mut c.counts
        };
        add(counts, counter, n);
    }

    // The top failing destinations of each cgroup, from the events.
    let mut destinations: HashMap<(u64, u16, [u8; 16], u16), u64> = HashMap::new();
    let mut untracked = 0;
    for e in input
        .events
        .iter()
        .filter(|e| e.kind == kind::TCP_CONNECT_FAILED)
    {
        let key = (e.cgroup_id, e.family, e.daddr, e.dport);
        let room = destinations.len() < MAX_DESTINATIONS;
        match destinations.get_mut(&key) {
            Some(n) => *n += 1,
            None if room => {
                destinations.insert(key, 1);
            }
            None => untracked += 1,
        }
    }
    losses.push(LossRecord {
        stage: "userspace",
        probe: Family::Tcp.name(),
        reason: "destinations_untracked",
        count: untracked,
    });
    let mut by_cgroup: BTreeMap<u64, Vec<Destination>> = BTreeMap::new();
    for ((cgroup, family, addr, port), failures) in destinations {
        by_cgroup.entry(cgroup).or_default().push(Destination {
            address: address(family, &addr),
            port,
            failures,
        });
    }
    for (id, mut list) in by_cgroup {
        rank(&mut list, |d| (d.failures, d.address.as_str(), d.port));
        list.truncate(TOP_DESTINATIONS);
        cgroups
            .entry(id)
            .or_insert_with(|| CgroupTcp::new(resolve(id)))
            .failing_destinations = list;
    }
    for (id, list) in retransmit_destinations(&before.retrans_dest, &after.retrans_dest) {
        cgroups
            .entry(id)
            .or_insert_with(|| CgroupTcp::new(resolve(id)))
            .retransmit_destinations = list;
    }
    window.cgroups = cgroups.into_values().collect();
    window.cgroups.sort_by(|a, b| {
        let activity = |c: &CgroupTcp| {
            c.connects + c.failures() + c.counts.retransmit_segments + c.counts.resets_sent
        };
        activity(b)
            .cmp(&activity(a))
            .then(a.cgroup.cgroup_id.cmp(&b.cgroup.cgroup_id))
    });

    // Per namespace: the window's counts and the check, then its listening
    // sockets. Every namespace's counters are read first: the kernel keeps
    // counting after the probes' maps were read, and anything slower in
    // between (entering a namespace for its sockets) would widen that gap
    // into a discrepancy.
    let mut sockets: BTreeMap<(u32, u16), ListenSockets> = BTreeMap::new();
    if let Some(check) = check {
        let namespaces = check.namespaces(before, after);
        check.refresh(&namespaces);
        window.namespaces = namespaces
            .into_iter()
            .map(|ns| NetnsTcp {
                netns: ns,
                window: sonde_counters(after, ns)
                    .since(&sonde_counters(before, ns))
                    .named()
                    .into_iter()
                    .collect(),
                check: check.check(ns, after),
                listeners_unread: None,
            })
            .collect();
        for entry in &mut window.namespaces {
            match check.listeners(entry.netns) {
                Ok(ports) => {
                    let ns = entry.netns;
                    sockets.extend(ports.into_iter().map(|(port, s)| ((ns, port), s)));
                }
                Err(why) => entry.listeners_unread = Some(why),
            }
        }
    }

    // Per listening port: the probes' counts, and what the sockets say.
    let mut listeners: BTreeMap<(u32, u16), ListenerTcp> = BTreeMap::new();
    let listener = |(ns, port): (u32, u16)| ListenerTcp {
        netns: ns,
        port,
        accepted: 0,
        overflows: 0,
        failed_handshakes: 0,
        drops: 0,
        sockets: None,
    };
    for key in after.listen.keys() {
        let n = delta(&before.listen, &after.listen, key);
        if n == 0 {
            continue;
        }
        let (ns, port, counter) = *key;
        let l = listeners
            .entry((ns, port))
            .or_insert_with(|| listener((ns, port)));
        match counter {
            listen::ACCEPTED => l.accepted += n,
            listen::OVERFLOWS => l.overflows += n,
            listen::FAILED => l.failed_handshakes += n,
            _ => l.drops += n,
        }
    }
    // An idle port with an empty queue and nothing dropped is left out.
    for (key, s) in sockets {
        if s.drops > 0 || s.accept_queue > 0 || listeners.contains_key(&key) {
            listeners
                .entry(key)
                .or_insert_with(|| listener(key))
                .sockets = Some(s);
        }
    }
    window.listeners = listeners.into_values().collect();

    // Drops per namespace and reason.
    let mut drops: BTreeMap<u32, NetnsDrops> = BTreeMap::new();
    for key in after.drops.keys() {
        let n = delta(&before.drops, &after.drops, key);
        if n == 0 {
            continue;
        }
        let d = drops.entry(key.0).or_insert(NetnsDrops {
            netns: key.0,
            total: 0,
            reasons: BTreeMap::new(),
        });
        d.total += n;
        *d.reasons.entry(input.names.drop_reason(key.1)).or_default() += n;
    }
    window.drops = drops.into_values().collect();

    window.events = input
        .events
        .iter()
        .take(input.keep_events)
        .map(|e| {
            let cgroup = (e.cgroup_id != 0).then(|| resolve(e.cgroup_id));
            event_record(e, input.names, input.clocks, cgroup)
        })
        .collect();
    (window, losses)
}

fn add(counts: &mut TcpCounts, counter: u32, n: u64) {
    match counter {
        what::RETRANS_SEGS => counts.retransmit_segments += n,
        what::RESETS_SENT => counts.resets_sent += n,
        what::RESETS_RECEIVED => counts.resets_received += n,
        _ => {}
    }
}

/// Sorts most first, ties by address and port (a stable order).
fn rank<T>(list: &mut [T], key: impl Fn(&T) -> (u64, &str, u16)) {
    list.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.cmp(&ka.0)
            .then_with(|| (ka.1, ka.2).cmp(&(kb.1, kb.2)))
    });
}

/// Per cgroup, the destinations of the window's retransmitted segments,
/// from the kernel's counts: the heaviest, and one `other` row holding the
/// rest and the kernel's own row of destinations it had no room for
/// (family 0), so the rows always add up to the cgroup's segments.
fn retransmit_destinations(
    before: &HashMap<(u64, u16, [u8; 16], u16), u64>,
    after: &HashMap<(u64, u16, [u8; 16], u16), u64>,
) -> BTreeMap<u64, Vec<RetransmitDestination>> {
    let mut named: BTreeMap<u64, Vec<RetransmitDestination>> = BTreeMap::new();
    let mut unnamed: BTreeMap<u64, u64> = BTreeMap::new();
    for key in after.keys() {
        let segments = delta(before, after, key);
        let &(id, family, addr, port) = key;
        if segments == 0 {
            continue;
        }
        if family == 0 {
            *unnamed.entry(id).or_default() += segments;
            continue;
        }
        named.entry(id).or_default().push(RetransmitDestination {
            address: address(family, &addr),
            port,
            segments,
        });
    }
    for id in unnamed.keys() {
        named.entry(*id).or_default();
    }
    for (id, list) in named.iter_mut() {
        rank(list, |d| (d.segments, d.address.as_str(), d.port));
        let mut rest = unnamed.get(id).copied().unwrap_or(0);
        let room = if rest > 0 || list.len() > TOP_DESTINATIONS {
            TOP_DESTINATIONS - 1
        } else {
            TOP_DESTINATIONS
        };
        rest += list.iter().skip(room).map(|d| d.segments).sum::<u64>();
        list.truncate(room);
        if rest > 0 {
            list.push(RetransmitDestination {
                address: OTHER_DESTINATIONS.to_owned(),
                port: 0,
                segments: rest,
            });
        }
    }
    named
}

/// The row of destinations not named one by one.
const OTHER_DESTINATIONS: &str = "other";

/// An address as text: IPv4 in the first four bytes, or IPv6.
pub fn address(family: u16, addr: &[u8; 16]) -> String {
    match family {
        AF_INET => Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
        AF_INET6 => Ipv6Addr::from(*addr).to_string(),
        _ => "unknown".to_owned(),
    }
}

fn event_record(
    e: &TcpEvent,
    names: &TcpNames,
    clocks: Clocks,
    cgroup: Option<CgroupRef>,
) -> TcpEventRecord {
    let age_ns = clocks.monotonic_ns.saturating_sub(e.ts_ns);
    let failed = e.kind == kind::TCP_CONNECT_FAILED;
    TcpEventRecord {
        kind: match e.kind {
            kind::TCP_RESET_SENT => "reset_sent",
            kind::TCP_RESET_RECEIVED => "reset_received",
            _ => "connect_failed",
        },
        time_unix_ns: clocks.unix_ns.saturating_sub(age_ns),
        netns: e.netns,
        family: match e.family {
            AF_INET => "ipv4",
            AF_INET6 => "ipv6",
            _ => "unknown",
        },
        source: address(e.family, &e.saddr),
        source_port: e.sport,
        destination: address(e.family, &e.daddr),
        destination_port: e.dport,
        state: (e.state != 0).then(|| state_name(u32::from(e.state))),
        failure: failed.then(|| failure_name(failure_of(e.code))),
        error: failed.then(|| errno_name(e.code).into_owned()),
        reset_reason: if e.kind == kind::TCP_RESET_SENT {
            names.reset_reason(e.code)
        } else {
            None
        },
        cgroup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Owner;
    use sonde_common::tcp::fail;

    fn named(id: u64) -> CgroupRef {
        CgroupRef {
            cgroup_id: id,
            cgroup_path: Some(format!("/cg{id}")),
            owner: Owner::Other,
        }
    }

    fn failed(cgroup_id: u64, last: u8, port: u16) -> TcpEvent {
        TcpEvent {
            kind: kind::TCP_CONNECT_FAILED,
            cgroup_id,
            family: AF_INET,
            daddr: [10, 0, 0, last, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dport: port,
            code: 111,
            state: 2,
            ..TcpEvent::default()
        }
    }

    #[test]
    fn window_of_counts_destinations_and_events() {
        let before = TcpReading::default();
        let mut after = TcpReading::default();
        after.cgroup.insert((7, what::FAILURES + fail::REFUSED), 3);
        after.cgroup.insert((7, what::RETRANS_SEGS), 12);
        after.cgroup.insert((0, what::RESETS_SENT), 3);
        after.netns.insert((42, netns::ACTIVE_OPENS), 5);
        after.netns.insert((42, netns::ACTIVE_OPENS_UNDONE), 1);
        after.netns.insert((42, netns::OUT_RSTS), 3);
        after.listen.insert((42, 8080, listen::ACCEPTED), 2);
        after.drops.insert((42, 12), 4);
        let events = [failed(7, 9, 80), failed(7, 9, 80), failed(7, 8, 443)];
        let names = TcpNames::new(&[(12, "SKB_DROP_REASON_NETFILTER_DROP".to_owned())], &[]);
        let input = TcpInputs {
            before: &before,
            after: &after,
            events: &events,
            keep_events: 2,
            names: &names,
            clocks: Clocks {
                monotonic_ns: 1_000,
                unix_ns: 5_000,
            },
        };
        // An empty /proc: nothing can be checked.
        let empty = std::env::temp_dir().join(format!("sonde-tcp-proc-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let mut check = NetnsCheck::start(empty.clone(), &before);
        let (w, losses) = tcp_window(&input, Some(&mut check), &mut named);
        std::fs::remove_dir_all(&empty).unwrap();

        assert_eq!(w.node.resets_sent, 3);
        let c = &w.cgroups[0];
        assert_eq!(c.cgroup.cgroup_id, 7);
        assert_eq!(c.connect_failures.get("refused"), Some(&3));
        assert_eq!(c.counts.retransmit_segments, 12);
        assert_eq!(
            c.failing_destinations[0],
            Destination {
                address: "10.0.0.9".to_owned(),
                port: 80,
                failures: 2
            }
        );
        assert_eq!(c.failing_destinations.len(), 2);
        assert_eq!(w.listeners[0].accepted, 2);
        assert_eq!(w.drops[0].reasons.get("NETFILTER_DROP"), Some(&4));
        let ns = &w.namespaces[0];
        assert_eq!(ns.netns, 42);
        assert_eq!(ns.window.get("ActiveOpens"), Some(&4));
        assert_eq!(ns.window.get("OutRsts"), Some(&3));
        assert_eq!(ns.check, None);
        assert_eq!(w.events.len(), 2);
        assert_eq!(w.events[0].failure, Some("refused"));
        assert_eq!(w.events[0].error.as_deref(), Some("ECONNREFUSED"));
        assert_eq!(w.events[0].state.as_deref(), Some("SYN_SENT"));
        assert_eq!(w.events[0].destination, "10.0.0.9");
        assert!(losses.iter().all(|l| l.count == 0));
    }

    #[test]
    fn retransmit_destinations_fold_the_rest_and_the_kernels_overflow_into_one_row() {
        let v4 = |last: u8| [10, 0, 0, last, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let before: HashMap<_, _> = [((7, AF_INET, v4(1), 80), 100)].into();
        let mut after: HashMap<_, _> = HashMap::new();
        for last in 1..=6u8 {
            // 10.0.0.1 had 100 before: 10 in the window, like 10.0.0.6.
            let total = if last == 1 { 110 } else { u64::from(last) * 10 };
            after.insert((7, AF_INET, v4(last), 80), total);
        }
        after.insert((7, 0, [0; 16], 0), 3); // the kernel's own overflow row
        after.insert((8, 0, [0; 16], 0), 4); // a cgroup with nothing else
        let out = retransmit_destinations(&before, &after);
        let seven: Vec<(&str, u64)> = out[&7]
            .iter()
            .map(|d| (d.address.as_str(), d.segments))
            .collect();
        assert_eq!(
            seven,
            [
                ("10.0.0.6", 60),
                ("10.0.0.5", 50),
                ("10.0.0.4", 40),
                ("10.0.0.3", 30),
                ("other", 10 + 20 + 3),
            ]
        );
        assert_eq!(seven.iter().map(|d| d.1).sum::<u64>(), 10 + 200 + 3);
        assert_eq!(out[&8].len(), 1);
        assert_eq!(out[&8][0].segments, 4);
    }

    #[test]
    fn addresses() {
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(address(AF_INET6, &v6), "::1");
        assert_eq!(address(0, &v6), "unknown");
    }
}
