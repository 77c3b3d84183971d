//! TCP family: connect latency and failures per cgroup, accepted handshakes
//! and listen overflows per listening port, retransmits and resets per
//! cgroup, packet drops by the kernel's reason per network namespace, and
//! per-namespace counters that the agent checks against the kernel's own
//! (`/proc/<pid>/net/snmp`, `net/netstat`).

/// Default bound of `TCP_CONNECT_START` (connects in flight at once).
pub const CONNECT_START_MAX_ENTRIES: u32 = 1 << 14;
/// Default bound of `TCP_CONNECT_HIST` (keys are (cgroup, bucket)).
pub const CONNECT_HIST_MAX_ENTRIES: u32 = 1 << 13;
/// Default bound of `TCP_CGROUP` (keys are (cgroup, what)).
pub const CGROUP_MAX_ENTRIES: u32 = 1 << 13;
/// Default bound of `TCP_NETNS` (keys are (netns, counter)).
pub const NETNS_MAX_ENTRIES: u32 = 1 << 12;
/// Default bound of `TCP_LISTEN` (keys are (netns, port, what)).
pub const LISTEN_MAX_ENTRIES: u32 = 1 << 12;
/// Default bound of `TCP_DROPS` (keys are (netns, drop reason)).
pub const DROPS_MAX_ENTRIES: u32 = 1 << 12;
/// Bound of `TCP_RETRANS_DEST` (keys are (cgroup, destination)).
pub const RETRANS_DEST_MAX_ENTRIES: u32 = 1 << 12;

/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// Sentinel for a drop reason the running kernel does not have.
pub const NO_REASON: u32 = u32::MAX;

/// TCP states (`include/net/tcp_states.h`, stable since 2.6).
pub mod state {
    /// Connected.
    pub const ESTABLISHED: u32 = 1;
    /// `connect()` sent a SYN.
    pub const SYN_SENT: u32 = 2;
    /// A SYN was received (a passive child, or a simultaneous open).
    pub const SYN_RECV: u32 = 3;
    /// Waiting out late segments after close.
    pub const TIME_WAIT: u32 = 6;
    /// Closed.
    pub const CLOSE: u32 = 7;
    /// Listening.
    pub const LISTEN: u32 = 10;
    /// A request socket (a mini socket for a handshake in progress).
    pub const NEW_SYN_RECV: u32 = 12;
}

/// Why a connect failed, from the socket's error when it closed.
pub mod fail {
    /// ECONNREFUSED: the peer answered the SYN with a reset.
    pub const REFUSED: u32 = 0;
    /// ECONNRESET.
    pub const RESET: u32 = 1;
    /// ETIMEDOUT: no answer before the SYN retries ran out.
    pub const TIMEOUT: u32 = 2;
    /// EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN (ICMP errors).
    pub const UNREACHABLE: u32 = 3;
    /// Any other error.
    pub const OTHER: u32 = 4;
    /// Number of reasons.
    pub const COUNT: u32 = 5;
}

/// The failure reason of a connect that ended with `errno` (numbers shared
/// by x86_64 and aarch64: asm-generic).
pub const fn failure_of(errno: u32) -> u32 {
    match errno {
        111 => fail::REFUSED,
        104 => fail::RESET,
        110 => fail::TIMEOUT,
        113 | 101 | 112 | 100 => fail::UNREACHABLE,
        _ => fail::OTHER,
    }
}

/// What a `TCP_CGROUP` counter counts, in [`CgroupCountKey::what`].
pub mod what {
    /// Segments retransmitted (`tcp_skb_pcount` per retransmitted skb,
    /// one per SYN-ACK retransmit).
    pub const RETRANS_SEGS: u32 = 0;
    /// Resets sent.
    pub const RESETS_SENT: u32 = 1;
    /// Resets received.
    pub const RESETS_RECEIVED: u32 = 2;
    /// Connect failures: `FAILURES + fail::*`.
    pub const FAILURES: u32 = 8;
}

/// Per-namespace counters in `TCP_NETNS`, each the probe's view of one
/// kernel counter.
pub mod netns {
    /// `Tcp: ActiveOpens`: CLOSE → SYN_SENT.
    pub const ACTIVE_OPENS: u32 = 0;
    /// Connects that closed again before any SYN left (no local port was
    /// ever bound, no error): the kernel never counted them as ActiveOpens.
    pub const ACTIVE_OPENS_UNDONE: u32 = 1;
    /// `Tcp: AttemptFails`: SYN_SENT or SYN_RECV → CLOSE with an error, and
    /// request sockets (handshakes in progress) ended by a reset or a SYN.
    pub const ATTEMPT_FAILS: u32 = 2;
    /// `Tcp: RetransSegs`.
    pub const RETRANS_SEGS: u32 = 3;
    /// `Tcp: OutRsts`.
    pub const OUT_RSTS: u32 = 4;
    /// `TcpExt: ListenOverflows`, as far as the kernel shows them (the last
    /// ACK of a handshake refused because the accept queue was full).
    pub const LISTEN_OVERFLOWS: u32 = 5;
    /// Number of counters.
    pub const COUNT: u32 = 6;
}

/// What a `TCP_LISTEN` counter counts, in [`ListenKey::what`].
pub mod listen {
    /// Handshakes completed (SYN_RECV → ESTABLISHED of a passive child).
    pub const ACCEPTED: u16 = 0;
    /// Handshakes refused at their last ACK because the accept queue was full.
    pub const OVERFLOWS: u16 = 1;
    /// Other packets the kernel dropped at the listening socket, with a reason.
    pub const DROPS: u16 = 2;
    /// Handshakes the peer broke off before they completed (a reset, or a
    /// SYN inside the handshake): the listening side's AttemptFails.
    pub const FAILED: u16 = 3;
}

/// TCP header flags (byte 13 of the header).
pub mod flags {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
}

/// Indices of the per-CPU `TCP_LOSS` counters.
pub mod loss {
    /// A connect's start was dropped because `TCP_CONNECT_START` was full.
    pub const START_MAP_FULL: u32 = 0;
    /// A connect latency was dropped because `TCP_CONNECT_HIST` was full.
    pub const HIST_MAP_FULL: u32 = 1;
    /// A count was dropped because `TCP_CGROUP`, `TCP_NETNS`, `TCP_LISTEN`,
    /// `TCP_DROPS` or `TCP_RETRANS_DEST` (for the pair and for the cgroup's
    /// row of other destinations) was full.
    pub const COUNT_MAP_FULL: u32 = 2;
    /// A kernel read (socket or packet fields) failed.
    pub const READ_FAILED: u32 = 3;
    /// A connect that completed without a recorded start (it began before
    /// the probes attached): informational, not a loss.
    pub const UNMATCHED: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
}

/// Byte offsets into kernel structs, read by the agent from the running
/// kernel's BTF (no offset is compiled in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    /// `sock_common.skc_net` (a `possible_net_t`, whose `net` pointer is
    /// its first and only member).
    pub sk_net: u32,
    /// `net.ns` + `ns_common.inum`: the namespace's inode number.
    pub net_inum: u32,
    /// `sock.sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `sock.sk_cgrp_data` + `sock_cgroup_data.cgroup`: the socket's cgroup
    /// v2 (before 5.15: `sock_cgroup_data.val`, see `sk_cgroup_tagged`).
    pub sk_cgroup: u32,
    /// 1 on kernels before 5.15, where `sock_cgroup_data` is a union of the
    /// cgroup pointer and cgroup v1 net_prio/net_cls data: the word at
    /// `sk_cgroup` is the pointer only when its bit 0 (`is_data`) is clear.
    pub sk_cgroup_tagged: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kn_id: u32,
    /// `sock.sk_err` (int).
    pub sk_err: u32,
    /// `sock_common.skc_daddr` (IPv4, network order).
    pub skc_daddr: u32,
    /// `sock_common.skc_rcv_saddr`.
    pub skc_rcv_saddr: u32,
    /// `sock_common.skc_dport` (network order).
    pub skc_dport: u32,
    /// `sock_common.skc_num` (local port, host order).
    pub skc_num: u32,
    /// `sock_common.skc_family`.
    pub skc_family: u32,
    /// `sock_common.skc_state` (u8).
    pub skc_state: u32,
    /// `sock_common.skc_v6_daddr`.
    pub skc_v6_daddr: u32,
    /// `sock_common.skc_v6_rcv_saddr`.
    pub skc_v6_rcv_saddr: u32,
    /// `inet_sock.inet_sport` (network order; kept after the port is
    /// released, unlike `skc_num`).
    pub inet_sport: u32,
    /// `sk_buff.cb` + `tcp_skb_cb.tcp_gso_segs` (u16): `tcp_skb_pcount`.
    pub skb_pcount: u32,
    /// `sk_buff.dev`.
    pub skb_dev: u32,
    /// `sk_buff.sk`.
    pub skb_sk: u32,
    /// `sk_buff.head`.
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from head).
    pub skb_network_header: u32,
    /// `sk_buff.transport_header` (u16 offset from head).
    pub skb_transport_header: u32,
    /// `net_device.nd_net` (a `possible_net_t`).
    pub dev_net: u32,
    /// 1 once the agent has filled the offsets in.
    pub valid: u32,
}

const _: () = assert!(core::mem::size_of::<TcpOffsets>() == 100);

/// Key of `TCP_RETRANS_DEST`: segments a cgroup's sockets retransmitted to
/// one destination. A pair with no room in the map is counted under the
/// cgroup's row with `family` 0 (every other destination).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetransDestKey {
    /// cgroup v2 id of the socket (0: none known).
    pub cgroup_id: u64,
    /// Destination address; IPv4 in the first four bytes.
    pub daddr: [u8; 16],
    /// Destination port.
    pub dport: u16,
    /// `AF_INET`, `AF_INET6`, or 0 for the cgroup's other destinations.
    pub family: u16,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<RetransDestKey>() == 32);

/// Start of a connect in flight, in `TCP_CONNECT_START` under the socket's
/// address: `connect()` runs in the connecting task, so its cgroup is known
/// then, not when the handshake completes in softirq.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectStart {
    /// `bpf_ktime_get_ns()` at CLOSE → SYN_SENT.
    pub ts_ns: u64,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
}

/// Key of `TCP_CGROUP`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupCountKey {
    /// cgroup v2 id of the socket; 0 when the socket is unknown (a reset
    /// sent for a packet that matched no socket): the node.
    pub cgroup_id: u64,
    /// One of [`what`].
    pub what: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Key of `TCP_NETNS` (`what` is one of [`netns`]) and of `TCP_DROPS`
/// (`what` is the kernel's `enum skb_drop_reason` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetnsKey {
    /// Network namespace inode number (0: unknown).
    pub netns: u32,
    /// The counter.
    pub what: u32,
}

/// Key of `TCP_LISTEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// Network namespace inode number.
    pub netns: u32,
    /// Listening port (host order).
    pub port: u16,
    /// One of [`listen`].
    pub what: u16,
}

/// A TCP event in the `EVENTS` ring buffer: a reset sent or received, or a
/// failed connect, with its connection. Begins with `kind` like every event
/// record, so that the agent can tell the records apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvent {
    /// One of `events::kind::TCP_*`.
    pub kind: u32,
    /// Network namespace inode number (0: unknown).
    pub netns: u32,
    /// cgroup v2 id of the socket (0: no socket, or not a full socket).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` when it happened.
    pub ts_ns: u64,
    /// Local address (IPv4 in the first four bytes).
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`, 0 when unknown.
    pub family: u16,
    /// The socket's TCP state when it happened (0: no socket).
    pub state: u16,
    /// A failed connect's errno; a reset's kernel reason code (0 when the
    /// kernel does not say).
    pub code: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ConnectStart>() == 16);
const _: () = assert!(core::mem::size_of::<CgroupCountKey>() == 16);
const _: () = assert!(core::mem::size_of::<NetnsKey>() == 8);
const _: () = assert!(core::mem::size_of::<ListenKey>() == 8);
const _: () = assert!(core::mem::size_of::<TcpEvent>() == 72);

#[cfg(feature = "user")]
user_pod!(
    TcpOffsets,
    ConnectStart,
    CgroupCountKey,
    RetransDestKey,
    NetnsKey,
    ListenKey,
    TcpEvent
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons() {
        assert_eq!(failure_of(111), fail::REFUSED);
        assert_eq!(failure_of(110), fail::TIMEOUT);
        assert_eq!(failure_of(113), fail::UNREACHABLE);
        assert_eq!(failure_of(101), fail::UNREACHABLE);
        assert_eq!(failure_of(104), fail::RESET);
        assert_eq!(failure_of(103), fail::OTHER);
    }
}
