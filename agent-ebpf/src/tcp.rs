//! TCP: connect latency and failures per cgroup, accepted handshakes and
//! listen overflows per listening port, retransmits and resets per cgroup,
//! packet drops by the kernel's reason per network namespace, and the
//! per-namespace counters the agent checks against the kernel's own.
//!
//! Hooks: raw tracepoints (Linux 4.17+: no tracefs needed), each argument a
//! socket or packet pointer whose fields are read with
//! `bpf_probe_read_kernel` at offsets the agent takes from the running
//! kernel's BTF (`TCP_OFFSETS`). Without BTF the family is unavailable; no
//! classic-tracepoint fallback is built (their records lack the cgroup and
//! the namespace).
//! - `inet_sock_set_state` (4.16+): every TCP state change. CLOSE → SYN_SENT
//!   runs inside `connect()`, in the connecting task: its cgroup and the
//!   time go into `TCP_CONNECT_START` under the socket's address until the
//!   socket leaves SYN_SENT (ESTABLISHED: a latency; CLOSE with `sk_err`
//!   set: a failure; CLOSE without: the caller gave up, not a failure).
//! - `tcp_retransmit_skb` (4.15+; its `err` argument since 6.17, when it
//!   started firing for failed attempts too), `tcp_retransmit_synack` (4.15+).
//! - `tcp_send_reset` (4.15+; `sk` is NULL for a reset to a packet that
//!   matched no socket, `skb` NULL for a reset the socket sends on its own;
//!   a `reason` argument since 6.10), `tcp_receive_reset` (4.15+).
//! - `kfree_skb` (its `reason` since 5.17, `rx_sk` since 6.12): every packet
//!   the kernel drops, by reason, per namespace; at a listening socket also
//!   per port. Without it the family is degraded.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use sonde_common::{
    events::kind,
    task::CgroupBucketKey,
    tcp::{
        failure_of, flags, listen, loss, netns, state, what, CgroupCountKey, ConnectStart,
        ListenKey, NetnsKey, RetransDestKey, TcpEvent, TcpOffsets, AF_INET, AF_INET6,
        CGROUP_MAX_ENTRIES, CONNECT_HIST_MAX_ENTRIES, CONNECT_START_MAX_ENTRIES, DROPS_MAX_ENTRIES,
        IPPROTO_TCP, LISTEN_MAX_ENTRIES, NETNS_MAX_ENTRIES, NO_REASON, RETRANS_DEST_MAX_ENTRIES,
    },
};

use crate::common::{bump, count_loss, latency_key, read, submit};

/// Struct offsets from the running kernel's BTF, set by the agent.
#[no_mangle]
static TCP_OFFSETS: Global<TcpOffsets> = Global::new(TcpOffsets {
    sk_net: 0,
    net_inum: 0,
    sk_protocol: 0,
    sk_cgroup: 0,
    sk_cgroup_tagged: 0,
    cgroup_kn: 0,
    kn_id: 0,
    sk_err: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_state: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    inet_sport: 0,
    skb_pcount: 0,
    skb_dev: 0,
    skb_sk: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    dev_net: 0,
    valid: 0,
});

/// 1 when `tcp_retransmit_skb` has its third argument, `err` (set by the
/// agent from the kernel's BTF). A program must not read an argument the
/// tracepoint lacks: the kernel refuses to attach it.
#[no_mangle]
static TCP_RETRANS_ERR_ARG: Global<u32> = Global::new(0);

/// 1 when `tcp_send_reset` has its third argument, `reason`.
#[no_mangle]
static TCP_RESET_REASON_ARG: Global<u32> = Global::new(0);

/// 1 when `kfree_skb` has its fourth argument, `rx_sk`.
#[no_mangle]
static TCP_DROP_RX_SK_ARG: Global<u32> = Global::new(0);

/// This kernel's `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`, or `NO_REASON`.
#[no_mangle]
static TCP_LISTEN_OVERFLOW_REASON: Global<u32> = Global::new(NO_REASON);

/// `SKB_DROP_REASON_NOT_SPECIFIED`, when the kernel gives every other drop
/// of a handshake packet a reason of its own (6.15+, with the overflow
/// reason), else `NO_REASON`: a reset dropped under it at a listening
/// socket ended a request socket (a handshake in progress).
#[no_mangle]
static TCP_HANDSHAKE_RESET_REASON: Global<u32> = Global::new(NO_REASON);

/// This kernel's `SK_RST_REASON_INVALID_SYN`, or `NO_REASON`: a listening
/// socket answers a SYN inside a handshake in progress with it.
#[no_mangle]
static TCP_RST_INVALID_SYN: Global<u32> = Global::new(NO_REASON);

/// Errors `__tcp_retransmit_skb` returns before it counts `RetransSegs`
/// (nothing was sent): EBUSY (still in the host queue), EINVAL, ENOMEM
/// (trim, fragment, unclone), EHOSTUNREACH (no route), EAGAIN (no window).
/// Errors from the transmission itself come after the count.
const RETRANS_NOT_COUNTED: [i32; 5] = [-16, -22, -12, -113, -11];

#[map]
static TCP_CONNECT_START: HashMap<u64, ConnectStart> =
    HashMap::with_max_entries(CONNECT_START_MAX_ENTRIES, 0);

#[map]
static TCP_CONNECT_HIST: PerCpuHashMap<CgroupBucketKey, u64> =
    PerCpuHashMap::with_max_entries(CONNECT_HIST_MAX_ENTRIES, 0);

#[map]
static TCP_CGROUP: PerCpuHashMap<CgroupCountKey, u64> =
    PerCpuHashMap::with_max_entries(CGROUP_MAX_ENTRIES, 0);

/// Retransmitted segments per (cgroup, destination).
#[map]
static TCP_RETRANS_DEST: PerCpuHashMap<RetransDestKey, u64> =
    PerCpuHashMap::with_max_entries(RETRANS_DEST_MAX_ENTRIES, 0);

#[map]
static TCP_NETNS: PerCpuHashMap<NetnsKey, u64> =
    PerCpuHashMap::with_max_entries(NETNS_MAX_ENTRIES, 0);

#[map]
static TCP_LISTEN: PerCpuHashMap<ListenKey, u64> =
    PerCpuHashMap::with_max_entries(LISTEN_MAX_ENTRIES, 0);

#[map]
static TCP_DROPS: PerCpuHashMap<NetnsKey, u64> =
    PerCpuHashMap::with_max_entries(DROPS_MAX_ENTRIES, 0);

#[map]
static TCP_LOSS: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcp_state(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let (sk, old, new) = (
        ctx.arg::<*const u8>(0),
        ctx.arg::<u32>(1),
        ctx.arg::<u32>(2),
    );
    if try_state(&ctx, sk, old, new).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retrans(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb[, int err])
    let err = if TCP_RETRANS_ERR_ARG.load() == 1 {
        ctx.arg::<i32>(2)
    } else {
        0
    };
    if try_retransmit(&ctx, ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1), err).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn tcp_synack_retr(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(const struct sock *sk, const struct request_sock *req): the
    // kernel counts one RetransSegs per SYN-ACK sent again.
    if try_synack(&ctx, ctx.arg::<*const u8>(0)).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_reset_send(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb[, enum sk_rst_reason reason])
    let reason = if TCP_RESET_REASON_ARG.load() == 1 {
        ctx.arg::<u32>(2)
    } else {
        0
    };
    let (sk, skb) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1));
    if try_reset_sent(&ctx, sk, skb, reason).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_reset_recv(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct sock *sk)
    if try_reset_received(&ctx, ctx.arg::<*const u8>(0)).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn tcp_skb_drop(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason
    //          [, struct sock *rx_sk])
    let rx_sk = if TCP_DROP_RX_SK_ARG.load() == 1 {
        ctx.arg::<*const u8>(3)
    } else {
        core::ptr::null()
    };
    if try_drop(&ctx, ctx.arg::<*const u8>(0), ctx.arg::<u32>(2), rx_sk).is_err() {
        lost(&ctx, loss::READ_FAILED);
    }
    0
}

#[inline(always)]
fn try_state<C: EbpfContext>(ctx: &C, sk: *const u8, old: u32, new: u32) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    // inet_sock_set_state fires for every inet protocol with states (SCTP too).
    let protocol: u16 = read(sk, o.sk_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let key = sk as u64;
    match (old, new) {
        (_, state::SYN_SENT) => {
            count_netns(ctx, sk_netns(&o, sk)?, netns::ACTIVE_OPENS, 1);
            let start = ConnectStart {
                // SAFETY: plain helper calls with no arguments.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                // SAFETY: as above; connect() runs in the connecting task.
                cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            };
            if TCP_CONNECT_START.insert(key, start, 0).is_err() {
                lost(ctx, loss::START_MAP_FULL);
            }
        }
        (state::SYN_SENT | state::SYN_RECV, state::ESTABLISHED) => {
            // SAFETY: a value copied out at once; a concurrent delete only
            // makes it stale.
            match unsafe { TCP_CONNECT_START.get(key) }.copied() {
                Some(start) => {
                    let _ = TCP_CONNECT_START.remove(key);
                    // SAFETY: a plain helper call with no arguments.
                    let now = unsafe { bpf_ktime_get_ns() };
                    let key = CgroupBucketKey {
                        cgroup_id: start.cgroup_id,
                        bucket: latency_key(now.wrapping_sub(start.ts_ns)),
                        _pad: 0,
                    };
                    if !bump(&TCP_CONNECT_HIST, &key, 1) {
                        lost(ctx, loss::HIST_MAP_FULL);
                    }
                }
                None if old == state::SYN_SENT => {
                    count_loss(&TCP_LOSS, loss::UNMATCHED);
                }
                None => {
                    // A passive child: its local port is the listening port.
                    let port: u16 = read(sk, o.skc_num)?;
                    count_listen(ctx, sk_netns(&o, sk)?, port, listen::ACCEPTED);
                }
            }
        }
        (state::SYN_SENT | state::SYN_RECV, state::CLOSE) => {
            // SAFETY: as above.
            let start = unsafe { TCP_CONNECT_START.get(key) }.copied();
            if start.is_some() {
                let _ = TCP_CONNECT_START.remove(key);
            }
            // tcp_done_with_error() sets sk_err before tcp_done() closes the
            // socket, and only tcp_done() counts AttemptFails; a close() or
            // disconnect of a connecting socket leaves it 0.
            let err: i32 = read(sk, o.sk_err)?;
            let ns = sk_netns(&o, sk)?;
            if err != 0 {
                count_netns(ctx, ns, netns::ATTEMPT_FAILS, 1);
                if old == state::SYN_SENT || start.is_some() {
                    let cgroup_id = match start {
                        Some(s) => s.cgroup_id,
                        None => sk_cgroup(&o, sk)?,
                    };
                    count_cgroup(
                        ctx,
                        cgroup_id,
                        what::FAILURES + failure_of(err.unsigned_abs()),
                        1,
                    );
                    let mut event = TcpEvent {
                        kind: kind::TCP_CONNECT_FAILED,
                        netns: ns,
                        cgroup_id,
                        state: old as u16,
                        code: err.unsigned_abs(),
                        ..TcpEvent::default()
                    };
                    sock_tuple(&o, sk, true, &mut event)?;
                    send(event);
                }
            } else if old == state::SYN_SENT {
                // No error and no local port ever bound: connect() failed
                // before a SYN left (tcp_v4_connect's port search), which
                // the kernel never counted as an ActiveOpen.
                let sport: u16 = read(sk, o.inet_sport)?;
                if sport == 0 {
                    count_netns(ctx, ns, netns::ACTIVE_OPENS_UNDONE, 1);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn try_retransmit<C: EbpfContext>(
    ctx: &C,
    sk: *const u8,
    skb: *const u8,
    err: i32,
) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    if err != 0 && RETRANS_NOT_COUNTED.contains(&err) {
        return Ok(());
    }
    // tcp_skb_pcount(): the segments this skb stands for.
    let segs = u64::from(read::<u16>(skb, o.skb_pcount)?);
    count_netns(ctx, sk_netns(&o, sk)?, netns::RETRANS_SEGS, segs);
    let cgroup_id = sk_cgroup(&o, sk)?;
    count_cgroup(ctx, cgroup_id, what::RETRANS_SEGS, segs);
    count_destination(ctx, &o, sk, cgroup_id, segs)
}

/// Counts retransmitted segments under their destination; a pair with no
/// room goes to the cgroup's row of other destinations, and only when that
/// has none either is it a loss.
#[inline(always)]
fn count_destination<C: EbpfContext>(
    ctx: &C,
    o: &TcpOffsets,
    sk: *const u8,
    cgroup_id: u64,
    segs: u64,
) -> Result<(), i32> {
    let family: u16 = read(sk, o.skc_family)?;
    let daddr = if family == AF_INET6 {
        read(sk, o.skc_v6_daddr)?
    } else {
        v4(read(sk, o.skc_daddr)?)
    };
    let key = RetransDestKey {
        cgroup_id,
        daddr,
        dport: u16::from_be(read::<u16>(sk, o.skc_dport)?),
        family,
        _pad: 0,
    };
    let other = RetransDestKey {
        cgroup_id,
        ..RetransDestKey::default()
    };
    if !bump(&TCP_RETRANS_DEST, &key, segs) && !bump(&TCP_RETRANS_DEST, &other, segs) {
        lost(ctx, loss::COUNT_MAP_FULL);
    }
    Ok(())
}

#[inline(always)]
fn try_synack<C: EbpfContext>(ctx: &C, sk: *const u8) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    count_netns(ctx, sk_netns(&o, sk)?, netns::RETRANS_SEGS, 1);
    count_cgroup(ctx, sk_cgroup(&o, sk)?, what::RETRANS_SEGS, 1);
    Ok(())
}

#[inline(always)]
fn try_reset_sent<C: EbpfContext>(
    ctx: &C,
    sk: *const u8,
    skb: *const u8,
    reason: u32,
) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    let mut event = TcpEvent {
        kind: kind::TCP_RESET_SENT,
        code: reason,
        ..TcpEvent::default()
    };
    let mut full = false;
    if !sk.is_null() {
        // A full socket, or a time-wait or request mini socket: all begin
        // with sock_common, only a full socket has a cgroup.
        event.netns = sk_netns(&o, sk)?;
        let st: u8 = read(sk, o.skc_state)?;
        event.state = u16::from(st);
        full = is_full_sock(u32::from(st));
        if full {
            event.cgroup_id = sk_cgroup(&o, sk)?;
        }
        if u32::from(st) == state::LISTEN && !skb.is_null() && reason == TCP_RST_INVALID_SYN.load()
        {
            // tcp_check_req(): a SYN inside a handshake in progress ends it
            // (AttemptFails) and is answered with this reset.
            count_netns(ctx, event.netns, netns::ATTEMPT_FAILS, 1);
            let port: u16 = read(sk, o.skc_num)?;
            count_listen(ctx, event.netns, port, listen::FAILED);
        }
    } else if !skb.is_null() {
        // No socket: the namespace of the device the packet came in on (the
        // kernel counts OutRsts in the namespace of its route's device,
        // which is the same one).
        let dev: *const u8 = read(skb, o.skb_dev)?;
        if !dev.is_null() {
            event.netns = netns_at(&o, dev, o.dev_net)?;
        }
    }
    if !skb.is_null() {
        // A reply to a packet: its addresses, swapped.
        skb_tuple(&o, skb, &mut event)?;
    } else if !sk.is_null() {
        sock_tuple(&o, sk, full, &mut event)?;
    }
    count_netns(ctx, event.netns, netns::OUT_RSTS, 1);
    count_cgroup(ctx, event.cgroup_id, what::RESETS_SENT, 1);
    send(event);
    Ok(())
}

#[inline(always)]
fn try_reset_received<C: EbpfContext>(ctx: &C, sk: *const u8) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    let st: u8 = read(sk, o.skc_state)?;
    let mut event = TcpEvent {
        kind: kind::TCP_RESET_RECEIVED,
        netns: sk_netns(&o, sk)?,
        cgroup_id: sk_cgroup(&o, sk)?,
        state: u16::from(st),
        ..TcpEvent::default()
    };
    sock_tuple(&o, sk, true, &mut event)?;
    count_cgroup(ctx, event.cgroup_id, what::RESETS_RECEIVED, 1);
    send(event);
    Ok(())
}

#[inline(always)]
fn try_drop<C: EbpfContext>(
    ctx: &C,
    skb: *const u8,
    reason: u32,
    rx_sk: *const u8,
) -> Result<(), i32> {
    let Some(o) = offsets() else { return Ok(()) };
    // The namespace: of the receiving socket, else of the packet's owner,
    // else of its device (a packet on its way in, before any socket).
    let ns = if !rx_sk.is_null() {
        sk_netns(&o, rx_sk)?
    } else {
        let owner: *const u8 = read(skb, o.skb_sk)?;
        if !owner.is_null() {
            sk_netns(&o, owner)?
        } else {
            let dev: *const u8 = read(skb, o.skb_dev)?;
            if dev.is_null() {
                0
            } else {
                netns_at(&o, dev, o.dev_net)?
            }
        }
    };
    let key = NetnsKey {
        netns: ns,
        what: reason,
    };
    if !bump(&TCP_DROPS, &key, 1) {
        lost(ctx, loss::COUNT_MAP_FULL);
    }
    if rx_sk.is_null() {
        return Ok(());
    }
    let st: u8 = read(rx_sk, o.skc_state)?;
    if u32::from(st) != state::LISTEN {
        return Ok(());
    }
    // Unix stream sockets listen in "TCP_LISTEN" too.
    let protocol: u16 = read(rx_sk, o.sk_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let port: u16 = read(rx_sk, o.skc_num)?;
    if reason == TCP_LISTEN_OVERFLOW_REASON.load() {
        count_listen(ctx, ns, port, listen::OVERFLOWS);
        count_netns(ctx, ns, netns::LISTEN_OVERFLOWS, 1);
    } else if reason == TCP_HANDSHAKE_RESET_REASON.load() && tcp_flags(&o, skb)? & flags::RST != 0 {
        // tcp_check_req(): a reset ended a handshake in progress
        // (AttemptFails); the packet is dropped without a reason.
        count_listen(ctx, ns, port, listen::FAILED);
        count_netns(ctx, ns, netns::ATTEMPT_FAILS, 1);
    } else {
        count_listen(ctx, ns, port, listen::DROPS);
    }
    Ok(())
}

/// The flags byte of the packet's TCP header.
#[inline(always)]
fn tcp_flags(o: &TcpOffsets, skb: *const u8) -> Result<u8, i32> {
    let head: *const u8 = read(skb, o.skb_head)?;
    let transport: u16 = read(skb, o.skb_transport_header)?;
    read(head.wrapping_add(usize::from(transport)), 13)
}

#[inline(always)]
fn offsets() -> Option<TcpOffsets> {
    let o = TCP_OFFSETS.load();
    (o.valid != 0).then_some(o)
}

/// A full socket, with a cgroup and the rest of `struct sock`, rather than
/// a time-wait or request mini socket.
#[inline(always)]
fn is_full_sock(st: u32) -> bool {
    st != state::TIME_WAIT && st != state::NEW_SYN_RECV
}

/// The namespace inode of the `possible_net_t` at `base + at`.
#[inline(always)]
fn netns_at(o: &TcpOffsets, base: *const u8, at: u32) -> Result<u32, i32> {
    let net: *const u8 = read(base, at)?;
    if net.is_null() {
        return Ok(0);
    }
    read(net, o.net_inum)
}

#[inline(always)]
fn sk_netns(o: &TcpOffsets, sk: *const u8) -> Result<u32, i32> {
    netns_at(o, sk, o.sk_net)
}

/// The socket's cgroup v2 id, `sk->sk_cgrp_data.cgroup->kn->id`: the cgroup
/// of the task that created it. Before 5.15 the same word holds cgroup v1
/// net_prio/net_cls data instead when its bit 0 is set (the kernel then
/// reports the root cgroup too): 0, the node's.
#[inline(always)]
fn sk_cgroup(o: &TcpOffsets, sk: *const u8) -> Result<u64, i32> {
    let word: u64 = read(sk, o.sk_cgroup)?;
    if o.sk_cgroup_tagged != 0 && word & 1 != 0 {
        return Ok(0);
    }
    let cgroup = word as usize as *const u8;
    if cgroup.is_null() {
        return Ok(0);
    }
    let kn: *const u8 = read(cgroup, o.cgroup_kn)?;
    read(kn, o.kn_id)
}

#[inline(always)]
fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// The socket's own addresses and ports.
#[inline(always)]
fn sock_tuple(o: &TcpOffsets, sk: *const u8, full: bool, e: &mut TcpEvent) -> Result<(), i32> {
    let family: u16 = read(sk, o.skc_family)?;
    e.family = family;
    e.dport = u16::from_be(read::<u16>(sk, o.skc_dport)?);
    // A closing socket has given its port back (skc_num is 0 then); a full
    // socket keeps it in inet_sport.
    e.sport = if full {
        u16::from_be(read::<u16>(sk, o.inet_sport)?)
    } else {
        read::<u16>(sk, o.skc_num)?
    };
    if family == AF_INET6 {
        e.saddr = read(sk, o.skc_v6_rcv_saddr)?;
        e.daddr = read(sk, o.skc_v6_daddr)?;
    } else {
        e.saddr = v4(read(sk, o.skc_rcv_saddr)?);
        e.daddr = v4(read(sk, o.skc_daddr)?);
    }
    Ok(())
}

/// The addresses and ports of the reply to `skb`: its own, swapped.
#[inline(always)]
fn skb_tuple(o: &TcpOffsets, skb: *const u8, e: &mut TcpEvent) -> Result<(), i32> {
    let head: *const u8 = read(skb, o.skb_head)?;
    let network: u16 = read(skb, o.skb_network_header)?;
    let transport: u16 = read(skb, o.skb_transport_header)?;
    let ip = head.wrapping_add(usize::from(network));
    let version: u8 = read::<u8>(ip, 0)? >> 4;
    // Wire formats: iphdr saddr at 12, daddr at 16; ipv6hdr at 8 and 24.
    if version == 4 {
        e.family = AF_INET;
        e.saddr = v4(read(ip, 16)?);
        e.daddr = v4(read(ip, 12)?);
    } else if version == 6 {
        e.family = AF_INET6;
        e.saddr = read(ip, 24)?;
        e.daddr = read(ip, 8)?;
    } else {
        return Ok(());
    }
    let ports: [u8; 4] = read(head.wrapping_add(usize::from(transport)), 0)?;
    e.dport = u16::from_be_bytes([ports[0], ports[1]]);
    e.sport = u16::from_be_bytes([ports[2], ports[3]]);
    Ok(())
}

#[inline(always)]
fn send(mut event: TcpEvent) {
    // SAFETY: a plain helper call with no arguments.
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    submit(event, event.kind);
}

#[inline(always)]
fn count_netns<C: EbpfContext>(ctx: &C, ns: u32, counter: u32, n: u64) {
    if !bump(
        &TCP_NETNS,
        &NetnsKey {
            netns: ns,
            what: counter,
        },
        n,
    ) {
        lost(ctx, loss::COUNT_MAP_FULL);
    }
}

#[inline(always)]
fn count_cgroup<C: EbpfContext>(ctx: &C, cgroup_id: u64, counter: u32, n: u64) {
    let key = CgroupCountKey {
        cgroup_id,
        what: counter,
        _pad: 0,
    };
    if !bump(&TCP_CGROUP, &key, n) {
        lost(ctx, loss::COUNT_MAP_FULL);
    }
}

#[inline(always)]
fn count_listen<C: EbpfContext>(ctx: &C, ns: u32, port: u16, counter: u16) {
    let key = ListenKey {
        netns: ns,
        port,
        what: counter,
    };
    if !bump(&TCP_LISTEN, &key, 1) {
        lost(ctx, loss::COUNT_MAP_FULL);
    }
}

#[inline(always)]
fn lost<C: EbpfContext>(ctx: &C, index: u32) {
    if count_loss(&TCP_LOSS, index) == 1 {
        debug!(ctx, "tcp: first loss of kind {} on this CPU", index);
    }
}
