//! TCP family: loads and attaches `agent-ebpf/src/tcp.rs` with the struct
//! offsets and tracepoint shapes of this kernel (from its BTF), reads the
//! connect latency, failures, retransmits, resets, accepts, listen
//! overflows, drops by reason and per-namespace counters.

use super::{
    family::{Attach, FamilyProbe},
    gone::{forget, CgroupKey, Forget},
    Reading, Setup,
};
use std::collections::HashMap;
use std::collections::HashSet;

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    Ebpf, EbpfLoader,
};
use sonde_common::family::Family;
use sonde_common::{
    task::CgroupBucketKey,
    tcp::{loss, CgroupCountKey, ListenKey, NetnsKey, RetransDestKey, TcpOffsets, NO_REASON},
};
use sonde_slo::Histogram;

use super::{
    attach_raw_tracepoints, feature, map, read_losses, unavailable, Gap, KernelFeatures, Links,
    ProbeState, ProbeStatus,
};
use crate::host::btf::Btf;

/// The hooks the family needs, as (program, raw tracepoint).
const HOOKS: [(&str, &str); 4] = [
    ("tcp_state", "inet_sock_set_state"),
    ("tcp_retrans", "tcp_retransmit_skb"),
    ("tcp_reset_send", "tcp_send_reset"),
    ("tcp_reset_recv", "tcp_receive_reset"),
];

/// SYN-ACK retransmits: without this hook RetransSegs misses them.
const SYNACK_HOOK: [(&str, &str); 1] = [("tcp_synack_retr", "tcp_retransmit_synack")];

/// Packet drops by reason (and listen overflows): without this hook the
/// family is degraded.
const DROP_HOOK: [(&str, &str); 1] = [("tcp_skb_drop", "kfree_skb")];

/// Every tcp program, for per-program statistics.
pub const PROGRAMS: [&str; 6] = [
    "tcp_state",
    "tcp_retrans",
    "tcp_synack_retr",
    "tcp_reset_send",
    "tcp_reset_recv",
    "tcp_skb_drop",
];

/// The same hooks with empty programs (benchmarks only).
pub(super) const FLOOR_HOOKS: [(&str, &str); 6] = [
    ("floor_tcp_state", "inet_sock_set_state"),
    ("floor_tcp_rtx", "tcp_retransmit_skb"),
    ("floor_synack", "tcp_retransmit_synack"),
    ("floor_rst_tx", "tcp_send_reset"),
    ("floor_rst_rx", "tcp_receive_reset"),
    ("floor_skb_drop", "kfree_skb"),
];

/// Loss counters: (index, stable name); `UNMATCHED` is informational.
pub const LOSSES: [(u32, &str); 4] = [
    (loss::START_MAP_FULL, "start_map_full"),
    (loss::HIST_MAP_FULL, "hist_map_full"),
    (loss::COUNT_MAP_FULL, "count_map_full"),
    (loss::READ_FAILED, "kernel_read_failed"),
];

/// What the kernel's BTF says about the family's hooks and structs.
#[derive(Debug, Clone)]
pub struct TcpSetup {
    /// Struct offsets, or why they are missing.
    offsets: Result<TcpOffsets, String>,
    /// `tcp_retransmit_skb` has its `err` argument.
    retrans_err_arg: bool,
    /// `tcp_send_reset` has its `reason` argument.
    reset_reason_arg: bool,
    /// `kfree_skb` has its `reason` argument, or why not.
    drop_reason_arg: Result<(), String>,
    /// `kfree_skb` has its `rx_sk` argument.
    drop_rx_sk_arg: bool,
    /// `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` on this kernel, or `NO_REASON`.
    listen_overflow_reason: u32,
    /// `SKB_DROP_REASON_NOT_SPECIFIED` where a reset dropped under it at a
    /// listening socket ended a handshake (see the kernel program), or
    /// `NO_REASON`.
    handshake_reset_reason: u32,
    /// `SK_RST_REASON_INVALID_SYN` on this kernel, or `NO_REASON`.
    rst_invalid_syn: u32,
    /// Names of the kernel's drop and reset reasons.
    pub names: TcpNames,
}

/// The kernel's names for its drop reasons (`enum skb_drop_reason`, without
/// the `SKB_DROP_REASON_` prefix) and reset reasons (`enum sk_rst_reason`,
/// without `SK_RST_REASON_`), read from its BTF: right on every version.
#[derive(Debug, Clone, Default)]
pub struct TcpNames {
    drop_reasons: HashMap<u32, String>,
    reset_reasons: HashMap<u32, String>,
}

impl TcpNames {
    /// Names from (value, enumerator) lists.
    pub fn new(drops: &[(u32, String)], resets: &[(u32, String)]) -> Self {
        let strip = |list: &[(u32, String)], prefix: &str| {
            list.iter()
                .map(|(v, n)| (*v, n.strip_prefix(prefix).unwrap_or(n).to_owned()))
                .collect()
        };
        Self {
            drop_reasons: strip(drops, "SKB_DROP_REASON_"),
            reset_reasons: strip(resets, "SK_RST_REASON_"),
        }
    }

    /// The name of drop reason `reason` (`NETFILTER_DROP`), or `reason_<n>`.
    pub fn drop_reason(&self, reason: u32) -> String {
        self.drop_reasons
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("reason_{reason}"))
    }

    /// The value of drop reason `name` (without its prefix).
    pub fn drop_reason_value(&self, name: &str) -> Option<u32> {
        self.drop_reasons
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }

    /// The value of reset reason `name` (without its prefix).
    pub fn reset_reason_value(&self, name: &str) -> Option<u32> {
        self.reset_reasons
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }

    /// The name of reset reason `reason`, or `reason_<n>`; `None` on a
    /// kernel whose resets carry no reason (before 6.10).
    pub fn reset_reason(&self, reason: u32) -> Option<String> {
        if self.reset_reasons.is_empty() {
            return None;
        }
        Some(
            self.reset_reasons
                .get(&reason)
                .cloned()
                .unwrap_or_else(|| format!("reason_{reason}")),
        )
    }
}

/// Cumulative TCP counts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TcpReading {
    /// Connect latency per cgroup id (of the connecting task).
    #[serde(with = "super::pairs")]
    pub connect_latency: HashMap<u64, Histogram>,
    /// Counts per (cgroup id, what): what is `sonde_common::tcp::what`.
    #[serde(with = "super::pairs")]
    pub cgroup: HashMap<(u64, u32), u64>,
    /// Counts per (netns, counter): counter is `sonde_common::tcp::netns`.
    #[serde(with = "super::pairs")]
    pub netns: HashMap<(u32, u32), u64>,
    /// Counts per (netns, port, what): what is `sonde_common::tcp::listen`.
    #[serde(with = "super::pairs")]
    pub listen: HashMap<(u32, u16, u16), u64>,
    /// Dropped packets per (netns, kernel drop reason).
    #[serde(with = "super::pairs")]
    pub drops: HashMap<(u32, u32), u64>,
    /// Retransmitted segments per (cgroup id, family, destination address,
    /// port); family 0 holds the cgroup's destinations the kernel had no
    /// room for. Absent from a checkpoint written before it existed.
    #[serde(with = "super::pairs", default)]
    pub retrans_dest: HashMap<(u64, u16, [u8; 16], u16), u64>,
    /// Loss counters, indexed by `sonde_common::tcp::loss`.
    pub loss: [u64; loss::COUNT as usize],
}

/// The family's part of a [`Reading`](super::Reading), by the name
/// every family gives it.
pub type Part = TcpReading;

/// Reads the offsets and the shapes of the tracepoints from BTF.
pub(super) fn setup(btf: Option<&Btf>) -> TcpSetup {
    let arg_is = |tp: &str, i: usize, pointer: bool| {
        btf.and_then(|b| b.tracepoint_arg_is_pointer(tp, i)) == Some(pointer)
    };
    let enum_of = |name: &str| btf.and_then(|b| b.enum_values(name)).unwrap_or_default();
    let names = TcpNames::new(&enum_of("skb_drop_reason"), &enum_of("sk_rst_reason"));
    let listen_overflow_reason = names
        .drop_reason_value("TCP_LISTEN_OVERFLOW")
        .unwrap_or(NO_REASON);
    TcpSetup {
        offsets: offsets(btf),
        retrans_err_arg: arg_is("tcp_retransmit_skb", 2, false),
        reset_reason_arg: arg_is("tcp_send_reset", 2, false),
        drop_reason_arg: if arg_is("kfree_skb", 2, false) {
            Ok(())
        } else {
            Err("kfree_skb has no drop reason on this kernel (Linux 5.17+)".to_owned())
        },
        drop_rx_sk_arg: arg_is("kfree_skb", 3, true),
        listen_overflow_reason,
        // The kernels that name the overflow (6.15+) also give every other
        // drop in tcp_check_req() a reason: NOT_SPECIFIED is left for the
        // handshakes a reset ended.
        handshake_reset_reason: if listen_overflow_reason == NO_REASON {
            NO_REASON
        } else {
            names
                .drop_reason_value("NOT_SPECIFIED")
                .unwrap_or(NO_REASON)
        },
        rst_invalid_syn: names.reset_reason_value("INVALID_SYN").unwrap_or(NO_REASON),
        names,
    }
}

/// The struct offsets the programs need, or why they are missing.
fn offsets(btf: Option<&Btf>) -> Result<TcpOffsets, String> {
    let btf = btf.ok_or_else(|| {
        "no kernel BTF (/sys/kernel/btf/vmlinux): socket fields cannot be located; use a kernel built with CONFIG_DEBUG_INFO_BTF".to_owned()
    })?;
    let member = |s: &str, m: &str, size: Option<u32>| {
        let found = btf
            .member(s, m)
            .ok_or_else(|| format!("this kernel's BTF has no {s}.{m}"))?;
        match size {
            Some(want) if found.size != want => Err(format!(
                "{s}.{m} is {} bytes on this kernel, not {want}",
                found.size
            )),
            _ => Ok(found.offset),
        }
    };
    // `skc_net` and `nd_net` are `possible_net_t`: a typedef of an anonymous
    // struct whose only member, `struct net *net`, sits at its offset 0 (BTF
    // cannot name it by the typedef's name). Eight bytes means the pointer
    // is there (without CONFIG_NET_NS the struct is empty).
    let sk_net = member("sock_common", "skc_net", Some(8))?;
    let dev_net = member("net_device", "nd_net", Some(8))?;
    // Since 5.15 `sock_cgroup_data` holds `struct cgroup *cgroup`; before,
    // a union of that pointer (`u64 val`) and tagged cgroup v1 data.
    let (sk_cgroup, sk_cgroup_tagged) = if btf.member("sock_cgroup_data", "cgroup").is_some() {
        (member("sock_cgroup_data", "cgroup", Some(8))?, 0)
    } else {
        (member("sock_cgroup_data", "val", Some(8))?, 1)
    };
    Ok(TcpOffsets {
        sk_net,
        net_inum: member("net", "ns", None)? + member("ns_common", "inum", Some(4))?,
        // A u16 since 5.6; a bitfield before, which BTF offsets cannot reach.
        sk_protocol: member("sock", "sk_protocol", Some(2))?,
        sk_cgroup: member("sock", "sk_cgrp_data", None)? + sk_cgroup,
        sk_cgroup_tagged,
        cgroup_kn: member("cgroup", "kn", Some(8))?,
        kn_id: member("kernfs_node", "id", Some(8))?,
        sk_err: member("sock", "sk_err", Some(4))?,
        skc_daddr: member("sock_common", "skc_daddr", Some(4))?,
        skc_rcv_saddr: member("sock_common", "skc_rcv_saddr", Some(4))?,
        skc_dport: member("sock_common", "skc_dport", Some(2))?,
        skc_num: member("sock_common", "skc_num", Some(2))?,
        skc_family: member("sock_common", "skc_family", Some(2))?,
        skc_state: member("sock_common", "skc_state", Some(1))?,
        skc_v6_daddr: member("sock_common", "skc_v6_daddr", Some(16))?,
        skc_v6_rcv_saddr: member("sock_common", "skc_v6_rcv_saddr", Some(16))?,
        inet_sport: member("inet_sock", "inet_sport", Some(2))?,
        skb_pcount: member("sk_buff", "cb", None)? + member("tcp_skb_cb", "tcp_gso_segs", Some(2))?,
        skb_dev: member("sk_buff", "dev", Some(8))?,
        skb_sk: member("sk_buff", "sk", Some(8))?,
        skb_head: member("sk_buff", "head", Some(8))?,
        skb_network_header: member("sk_buff", "network_header", Some(2))?,
        skb_transport_header: member("sk_buff", "transport_header", Some(2))?,
        dev_net,
        valid: 1,
    })
}

/// Sets the offsets and the tracepoint shapes before load.
pub(super) fn configure<'a>(loader: &mut EbpfLoader<'a>, setup: &'a TcpSetup) {
    // The loader borrows the values until load: give it 'static ones.
    static TRUE: u32 = 1;
    static FALSE: u32 = 0;
    let flag = |b: bool| if b { &TRUE } else { &FALSE };
    if let Ok(o) = &setup.offsets {
        loader.override_global("TCP_OFFSETS", o, true);
    }
    loader
        .override_global("TCP_RETRANS_ERR_ARG", flag(setup.retrans_err_arg), true)
        .override_global("TCP_RESET_REASON_ARG", flag(setup.reset_reason_arg), true)
        .override_global("TCP_DROP_RX_SK_ARG", flag(setup.drop_rx_sk_arg), true)
        .override_global(
            "TCP_LISTEN_OVERFLOW_REASON",
            &setup.listen_overflow_reason,
            true,
        )
        .override_global(
            "TCP_HANDSHAKE_RESET_REASON",
            &setup.handshake_reset_reason,
            true,
        )
        .override_global("TCP_RST_INVALID_SYN", &setup.rst_invalid_syn, true);
}

pub(super) fn attach(ebpf: &mut Ebpf, links: &mut Links, setup: &TcpSetup) -> ProbeStatus {
    if let Err(why) = &setup.offsets {
        return unavailable(Family::Tcp.name(), why.clone());
    }
    let mut status = attach_raw_tracepoints(ebpf, links, Family::Tcp.name(), &HOOKS);
    if status.state != ProbeState::Attached {
        return status;
    }
    let mut missing: Vec<(Gap, String)> = Vec::new();
    if !setup.reset_reason_arg {
        // The kernels whose tcp_send_reset has no reason argument (before
        // 6.10) fire it only for resets sent from a socket: a reset answering
        // a segment that found none (a SYN to a closed port) is not seen
        // (found by vm-test on 6.1; the namespace check shows it in OutRsts).
        missing.push((Gap::TcpResetsWithoutSocket, "resets sent with no socket (to a closed port) are not counted: this kernel's tcp_send_reset has no reason argument (Linux 6.10+), and on such kernels (6.1 measured) it fires only for resets sent from a socket".to_owned()));
    }
    let synack = attach_raw_tracepoints(ebpf, links, Family::Tcp.name(), &SYNACK_HOOK);
    match synack.reason {
        None => extend(&mut status, &SYNACK_HOOK),
        Some(why) => missing.push((
            Gap::TcpSynackRetransmits,
            format!("SYN-ACK retransmits not counted: {why}"),
        )),
    }
    match &setup.drop_reason_arg {
        Ok(()) => {
            let drops = attach_raw_tracepoints(ebpf, links, Family::Tcp.name(), &DROP_HOOK);
            match drops.reason {
                None => extend(&mut status, &DROP_HOOK),
                Some(why) => missing.push((Gap::TcpDrops, format!("drops not counted: {why}"))),
            }
        }
        Err(why) => missing.push((Gap::TcpDrops, format!("drops not counted: {why}"))),
    }
    // Each gap is said on its own, even where a wider one covers it, so that
    // every feature the kernel lacks shows as what it costs.
    if !setup.drop_rx_sk_arg {
        // Before 6.12 a drop does not say which socket refused it.
        missing.push((
            Gap::TcpListenerDrops,
            "kfree_skb has no rx_sk argument (Linux 6.12+): listener drops are not counted"
                .to_owned(),
        ));
    }
    if setup.listen_overflow_reason == NO_REASON {
        // 6.12 to 6.14 name the listener but not why its handshake was
        // dropped (found by vm-test on 6.12).
        missing.push((Gap::TcpListenOverflows, "no TCP_LISTEN_OVERFLOW drop reason (Linux 6.15+): listen overflows and failed handshakes per port are not counted".to_owned()));
    }
    if !missing.is_empty() {
        status.state = ProbeState::Degraded;
        status.reason = Some(
            missing
                .iter()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
        status.gaps = missing.into_iter().map(|(gap, _)| gap).collect();
    }
    status
}

/// What this kernel offers the family, for `sonde doctor`.
pub(super) fn features(setup: &TcpSetup, btf: Option<&Btf>, into: &mut KernelFeatures) {
    into.insert(feature::TCP_SEND_RESET_REASON, setup.reset_reason_arg);
    into.insert(feature::KFREE_SKB_REASON, setup.drop_reason_arg.is_ok());
    into.insert(feature::KFREE_SKB_RX_SK, setup.drop_rx_sk_arg);
    into.insert(
        feature::DROP_REASON_LISTEN_OVERFLOW,
        setup.listen_overflow_reason != NO_REASON,
    );
    into.insert(
        feature::TP_TCP_RETRANSMIT_SYNACK,
        btf.is_some_and(|b| {
            b.tracepoint_arg_is_pointer("tcp_retransmit_synack", 0)
                .is_some()
        }),
    );
}

fn extend(status: &mut ProbeStatus, hooks: &[(&str, &str)]) {
    if let Some(hook) = status.hook.as_mut() {
        for (_, tp) in hooks {
            hook.push('+');
            hook.push_str(tp);
        }
    }
}

pub(super) fn read(ebpf: &Ebpf) -> Result<TcpReading, MapError> {
    let mut reading = TcpReading::default();
    let hist: PerCpuHashMap<&MapData, CgroupBucketKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "TCP_CONNECT_HIST")?)?;
    for item in hist.iter() {
        let (key, values) = item?;
        reading
            .connect_latency
            .entry(key.cgroup_id)
            .or_default()
            .record_kernel_bucket(key.bucket, values.iter().sum());
    }
    let cgroup: PerCpuHashMap<&MapData, CgroupCountKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "TCP_CGROUP")?)?;
    for item in cgroup.iter() {
        let (key, values) = item?;
        reading
            .cgroup
            .insert((key.cgroup_id, key.what), values.iter().sum());
    }
    let dest: PerCpuHashMap<&MapData, RetransDestKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "TCP_RETRANS_DEST")?)?;
    for item in dest.iter() {
        let (k, values) = item?;
        reading.retrans_dest.insert(
            (k.cgroup_id, k.family, k.daddr, k.dport),
            values.iter().sum(),
        );
    }
    for (name, out) in [
        ("TCP_NETNS", &mut reading.netns),
        ("TCP_DROPS", &mut reading.drops),
    ] {
        let counts: PerCpuHashMap<&MapData, NetnsKey, u64> =
            PerCpuHashMap::try_from(map(ebpf, name)?)?;
        for item in counts.iter() {
            let (key, values) = item?;
            out.insert((key.netns, key.what), values.iter().sum());
        }
    }
    let listen: PerCpuHashMap<&MapData, ListenKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, "TCP_LISTEN")?)?;
    for item in listen.iter() {
        let (key, values) = item?;
        reading
            .listen
            .insert((key.netns, key.port, key.what), values.iter().sum());
    }
    let losses: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map(ebpf, "TCP_LOSS")?)?;
    read_losses(&losses, &mut reading.loss)?;
    Ok(reading)
}

/// The name of a TCP state (`SYN_SENT`), or `STATE_<n>`.
pub fn state_name(state: u32) -> String {
    const NAMES: [&str; 13] = [
        "",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    match NAMES.get(state as usize) {
        Some(name) if !name.is_empty() => (*name).to_owned(),
        _ => format!("STATE_{state}"),
    }
}

/// The name of a connect failure reason (`sonde_common::tcp::fail`).
pub fn failure_name(reason: u32) -> &'static str {
    use sonde_common::tcp::fail;
    match reason {
        fail::REFUSED => "refused",
        fail::RESET => "reset",
        fail::TIMEOUT => "timeout",
        fail::UNREACHABLE => "unreachable",
        _ => "other",
    }
}

/// The TCP family's user side in this layer.
pub(super) struct Probe;

impl CgroupKey for CgroupCountKey {
    type Value = u64;
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

impl CgroupKey for RetransDestKey {
    type Value = u64;
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// The maps keyed by cgroup, with their key types.
const CGROUP_MAPS: [(&str, Forget); 3] = [
    ("TCP_CONNECT_HIST", forget::<CgroupBucketKey> as Forget),
    ("TCP_CGROUP", forget::<CgroupCountKey> as Forget),
    ("TCP_RETRANS_DEST", forget::<RetransDestKey> as Forget),
];

impl FamilyProbe for Probe {
    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, setup: &'a Setup) {
        configure(loader, &setup.tcp);
    }

    fn attach(&self, cx: &mut Attach<'_>) -> ProbeStatus {
        attach(cx.ebpf, cx.links, &cx.setup.tcp)
    }

    fn attach_floor(&self, ebpf: &mut Ebpf, links: &mut Links) -> Option<ProbeStatus> {
        Some(attach_raw_tracepoints(ebpf, links, "floor", &FLOOR_HOOKS))
    }

    fn read(&self, ebpf: &Ebpf, reading: &mut Reading) -> Result<(), MapError> {
        reading.tcp = read(ebpf)?;
        Ok(())
    }

    fn losses(&self) -> &'static [(u32, &'static str)] {
        &LOSSES
    }

    fn loss_counts<'r>(&self, reading: &'r Reading) -> &'r [u64] {
        &reading.tcp.loss
    }

    fn cgroup_maps(&self) -> &'static [(&'static str, Forget)] {
        &CGROUP_MAPS
    }

    fn cgroup_ids(&self, reading: &Reading, ids: &mut HashSet<u64>) {
        ids.extend(reading.tcp.connect_latency.keys());
        ids.extend(reading.tcp.cgroup.keys().map(|k| k.0));
        ids.extend(reading.tcp.retrans_dest.keys().map(|k| k.0));
    }

    fn retain_cgroups(&self, reading: &mut Reading, keep: &dyn Fn(u64) -> bool) {
        reading.tcp.connect_latency.retain(|k, _| keep(*k));
        reading.tcp.cgroup.retain(|k, _| keep(k.0));
        reading.tcp.retrans_dest.retain(|k, _| keep(k.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let names = TcpNames::new(
            &[
                (2, "SKB_DROP_REASON_NOT_SPECIFIED".to_owned()),
                (12, "SKB_DROP_REASON_NETFILTER_DROP".to_owned()),
                (0, "SKB_NOT_DROPPED_YET".to_owned()),
            ],
            &[(1, "SK_RST_REASON_NO_SOCKET".to_owned())],
        );
        assert_eq!(names.drop_reason(12), "NETFILTER_DROP");
        assert_eq!(names.drop_reason(0), "SKB_NOT_DROPPED_YET");
        assert_eq!(names.drop_reason(99), "reason_99");
        assert_eq!(names.drop_reason_value("NETFILTER_DROP"), Some(12));
        assert_eq!(names.reset_reason(1).as_deref(), Some("NO_SOCKET"));
        assert_eq!(TcpNames::default().reset_reason(1), None);
        assert_eq!(state_name(2), "SYN_SENT");
        assert_eq!(state_name(0), "STATE_0");
        assert_eq!(failure_name(sonde_common::tcp::fail::TIMEOUT), "timeout");
    }

    /// The names in the string section of a BTF blob, read by the test
    /// itself rather than through sonde's parser: the header holds the
    /// section's offset (after the header) at byte 16 and its length at 20;
    /// the section is NUL-terminated names.
    fn btf_names(blob: &[u8]) -> std::collections::HashSet<&str> {
        let word = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        assert_eq!(&blob[..2], &[0x9f, 0xeb], "little-endian BTF magic");
        let start = word(4) + word(16);
        blob[start..start + word(20)]
            .split(|&b| b == 0)
            .map(|name| std::str::from_utf8(name).unwrap())
            .collect()
    }

    #[test]
    fn running_kernel_has_what_the_family_reads() {
        // Unprivileged: /sys/kernel/btf/vmlinux is world-readable where it
        // exists. Only its absence skips: a file sonde cannot parse fails.
        let path = crate::host::kernel::VMLINUX_BTF;
        if !std::path::Path::new(path).exists() {
            eprintln!("skipping: no kernel BTF on this machine ({path} is absent)");
            return;
        }
        let blob = std::fs::read(path).unwrap();
        let btf = Btf::from_vec(blob.clone()).unwrap_or_else(|e| panic!("parse {path}: {e}"));
        let has = {
            let names = btf_names(&blob);
            move |name: &str| names.contains(name)
        };
        let setup = setup(Some(&btf));
        let offsets = setup.offsets.as_ref().expect("offsets");
        assert_eq!(offsets.valid, 1);
        // What each reason needs is what this kernel's BTF names: the enum
        // `skb_drop_reason` came with kfree_skb's reason argument (5.17),
        // TCP_LISTEN_OVERFLOW in 6.15, INVALID_SYN among the reset reasons
        // later still.
        let not_specified = has("SKB_DROP_REASON_NOT_SPECIFIED");
        let overflow = has("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW");
        assert_eq!(
            setup.drop_reason_arg.is_ok(),
            not_specified,
            "{:?}",
            setup.drop_reason_arg
        );
        assert_eq!(setup.listen_overflow_reason != NO_REASON, overflow);
        assert_eq!(
            setup.handshake_reset_reason != NO_REASON,
            overflow && not_specified
        );
        assert_eq!(
            setup.rst_invalid_syn != NO_REASON,
            has("SK_RST_REASON_INVALID_SYN")
        );
        assert_eq!(
            setup.names.drop_reason_value("NETFILTER_DROP").is_some(),
            has("SKB_DROP_REASON_NETFILTER_DROP")
        );
        eprintln!(
            "{offsets:?} retrans_err {} reset_reason {} rx_sk {} overflow {}",
            setup.retrans_err_arg,
            setup.reset_reason_arg,
            setup.drop_rx_sk_arg,
            setup.listen_overflow_reason
        );
    }
}
