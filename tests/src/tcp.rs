//! TCP family: real connections in test network namespaces, sonde's counts
//! against the kernel's own (`/proc/<pid>/net/snmp` and `netstat` of the
//! namespace, nftables rule counters, what the client measured itself).

use sonde::{
    model::{
        tcp::{ListenSockets, NetnsTcp},
        Snapshot,
    },
    probes::{ProbeOptions, ProbeState, Probes},
    sampler::Sampler,
};

use crate::{
    netns::{
        connect, deadline, drain, errno, finish, listen, monotonic_ns, sockaddr, wait_listening,
        Holder, NetnsPair, Shared, TcpCounters, TestNetns, ADDR_B,
    },
    privileged, TestCgroup, Workload,
};

/// A tcp hook a test needs beyond the family's base, named by the text its
/// absence puts in the degraded family's reason: drops by reason (`kfree_skb`
/// with a reason, 5.17+) ...
const DROPS: &str = "drops not counted";
/// ... resets sent with no socket (seen where `tcp_send_reset` has its
/// `reason`, 6.10+) ...
const SOCKETLESS_RESETS: &str = "resets sent with no socket";
/// ... and listen overflows per port (`kfree_skb`'s `rx_sk`, 6.12+, and its
/// `TCP_LISTEN_OVERFLOW` reason, 6.15+).
const LISTEN_OVERFLOWS: &str = "listen overflows";

/// Loads the probes and insists that the TCP family attached whole. Only in
/// the vm-test guest, whose older kernels lack some of its hooks, may it be
/// degraded: a test that `needs` a missing one skips there, saying why, and
/// the others go on without it. On the host it must attach whole.
fn probes(needs: &[&str]) -> Option<Probes> {
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let status = probes
        .statuses()
        .iter()
        .find(|s| s.probe == "tcp")
        .expect("tcp status")
        .clone();
    if crate::in_vm() && status.state == ProbeState::Degraded {
        let reason = status.reason.clone().unwrap_or_default();
        let lacking: Vec<&str> = reason
            .split("; ")
            .filter(|part| needs.iter().any(|n| part.contains(n)))
            .collect();
        if !lacking.is_empty() {
            crate::vm_skip(&format!("this kernel lacks: {}", lacking.join("; ")));
            return None;
        }
        return Some(probes);
    }
    assert_eq!(status.state, ProbeState::Attached, "{status:?}");
    Some(probes)
}

/// The namespace's entry in the snapshot, checked: every counter agrees
/// with the kernel's.
fn agreed<'a>(snapshot: &'a Snapshot, ns: &TestNetns) -> &'a NetnsTcp {
    let entry = snapshot.tcp_netns(ns.inode()).unwrap_or_else(|| {
        panic!(
            "namespace {} missing: {:?}",
            ns.inode(),
            snapshot.tcp.window.namespaces
        )
    });
    let check = entry
        .check
        .as_ref()
        .unwrap_or_else(|| panic!("namespace {} was not checked", ns.inode()));
    // What the window lost, to tell a missed event from a miscount.
    let lost: Vec<_> = snapshot.losses.iter().filter(|l| l.count > 0).collect();
    for c in check {
        assert_eq!(
            c.discrepancy,
            0,
            "{} in {}: {check:?}; losses {lost:?}",
            c.counter,
            ns.name()
        );
    }
    entry
}

/// [`agreed`], and the kernel's counts sonde read for the window equal
/// `theirs`: the test's own reading of the namespace's counters, taken
/// before the window opened and after it closed (nothing else runs in a
/// test namespace, so the two windows count the same).
fn agreed_with<'a>(snapshot: &'a Snapshot, ns: &TestNetns, theirs: &TcpCounters) -> &'a NetnsTcp {
    let entry = agreed(snapshot, ns);
    for (counter, value) in theirs.named() {
        let read = entry
            .check
            .iter()
            .flatten()
            .find(|c| c.counter == counter)
            .unwrap_or_else(|| panic!("{counter} not checked in {}", ns.name()));
        assert_eq!(
            read.kernel,
            value,
            "{counter} in {}: sonde read {}, the test {value}",
            ns.name(),
            read.kernel
        );
    }
    entry
}

fn kernel(entry: &NetnsTcp, counter: &str) -> u64 {
    entry
        .check
        .iter()
        .flatten()
        .find(|c| c.counter == counter)
        .map_or(0, |c| c.kernel)
}

const REFUSED: u64 = 25;
const CLOSED_PORT: u16 = 9;

#[test]
fn refused_connects_counted_exactly() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[DROPS, SOCKETLESS_RESETS]) else {
        return;
    };
    let ns = TestNetns::new("refused");
    let holder = Holder::new(&ns);
    let cgroup = TestCgroup::new("tcp-refused");
    let to = sockaddr([127, 0, 0, 1], CLOSED_PORT);
    let client = Workload::fork(&cgroup, || {
        deadline(20);
        ns.enter();
        let mut refused = 0;
        for _ in 0..REFUSED {
            if connect(&to) == Err(libc::ECONNREFUSED) {
                refused += 1;
            }
        }
        // SAFETY: ends the forked child with its count.
        unsafe { libc::_exit(refused) };
    });
    let kernel_before = holder.counters();
    let mut sampler = Sampler::start(probes).expect("first reading");
    client.go();
    assert_eq!(client.wait() as u64, REFUSED, "every connect was refused");
    let snapshot = sampler.tick().expect("second reading");
    let kernel_after = holder.counters().since(&kernel_before);

    assert_eq!(kernel_after.active_opens, REFUSED);
    assert_eq!(kernel_after.attempt_fails, REFUSED);
    assert_eq!(kernel_after.out_rsts, REFUSED);
    let entry = agreed_with(&snapshot, &ns, &kernel_after);
    assert_eq!(kernel(entry, "AttemptFails"), REFUSED);
    assert_eq!(entry.window.get("ActiveOpens"), Some(&REFUSED));
    assert_eq!(entry.window.get("AttemptFails"), Some(&REFUSED));
    assert_eq!(entry.window.get("OutRsts"), Some(&REFUSED));

    let tcp = snapshot.tcp_cgroup(cgroup.id()).expect("the test cgroup");
    assert_eq!(
        tcp.connect_failures.get("refused"),
        Some(&REFUSED),
        "{tcp:?}"
    );
    assert_eq!(tcp.failures(), REFUSED);
    assert_eq!(tcp.connects, 0);
    assert_eq!(tcp.counts.resets_received, REFUSED);
    assert_eq!(tcp.failing_destinations.len(), 1);
    assert_eq!(tcp.failing_destinations[0].address, "127.0.0.1");
    assert_eq!(tcp.failing_destinations[0].port, CLOSED_PORT);
    assert_eq!(tcp.failing_destinations[0].failures, REFUSED);
    // The SYNs found no socket: dropped under that reason, answered by a
    // reset that belongs to no cgroup.
    assert_eq!(snapshot.drops(ns.inode(), "NO_SOCKET"), REFUSED);
    let in_ns = |kind: &str| {
        snapshot
            .tcp
            .window
            .events
            .iter()
            .filter(|e| e.netns == ns.inode() && e.kind == kind)
            .collect::<Vec<_>>()
    };
    let failed = in_ns("connect_failed");
    assert_eq!(failed.len() as u64, REFUSED);
    for e in &failed {
        assert_eq!(e.cgroup.as_ref().map(|c| c.cgroup_id), Some(cgroup.id()));
        assert_eq!(
            (e.destination.as_str(), e.destination_port),
            ("127.0.0.1", CLOSED_PORT)
        );
        assert_ne!(e.source_port, 0);
        assert_eq!(e.error.as_deref(), Some("ECONNREFUSED"));
        assert_eq!(e.state.as_deref(), Some("SYN_SENT"));
    }
    let sent = in_ns("reset_sent");
    assert_eq!(sent.len() as u64, REFUSED);
    assert!(sent
        .iter()
        .all(|e| e.cgroup.is_none() && e.source_port == CLOSED_PORT));
    assert_eq!(in_ns("reset_received").len() as u64, REFUSED);
    assert_whole(&snapshot);
}

const SYN_PORT: u16 = 7011;
const SLOW_CONNECTS: usize = 2;

#[test]
fn connect_latency_with_a_lost_syn_matches_the_client() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[DROPS]) else {
        return;
    };
    let pair = NetnsPair::new("syn");
    let (hold_a, hold_b) = (Holder::new(&pair.a), Holder::new(&pair.b));
    // Every other SYN to the server is dropped: each connect's first SYN
    // is lost and its retransmission (after the 1 s initial timeout) passes.
    pair.a.nft(&format!(
        "table inet sonde {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
         ip daddr 10.77.0.2 tcp dport {SYN_PORT} tcp flags & (syn | ack) == syn numgen inc mod 2 0 counter drop\n }}\n}}\n"
    ));
    let (client_cg, server_cg) = (TestCgroup::new("tcp-syn-c"), TestCgroup::new("tcp-syn-s"));
    let at = sockaddr(ADDR_B, SYN_PORT);
    let server = Workload::fork(&server_cg, || {
        deadline(20);
        pair.b.enter();
        let l = listen(&at, 16);
        for _ in 0..SLOW_CONNECTS {
            // SAFETY: accepting on our listening socket.
            let fd = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd < 0 {
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(92) };
            }
            drain(fd);
            // SAFETY: closing our own fd.
            unsafe { libc::close(fd) };
        }
    });
    let measured = Shared::new(SLOW_CONNECTS);
    let client = Workload::fork(&client_cg, || {
        deadline(20);
        pair.a.enter();
        for i in 0..SLOW_CONNECTS {
            let start = monotonic_ns();
            let Ok(fd) = connect(&at) else {
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(93) };
            };
            measured.set(i, monotonic_ns() - start);
            finish(fd);
        }
    });
    let (kernel_a, kernel_b) = (hold_a.counters(), hold_b.counters());
    let mut sampler = Sampler::start(probes).expect("first reading");
    server.go();
    wait_listening(hold_b.pid(), SYN_PORT);
    client.go();
    assert_eq!(client.wait(), 0);
    assert_eq!(server.wait(), 0);
    let snapshot = sampler.tick().expect("second reading");
    let (kernel_a, kernel_b) = (
        hold_a.counters().since(&kernel_a),
        hold_b.counters().since(&kernel_b),
    );

    // The client's own measures, in the buckets of the histograms' layout
    // (computed by the test, not by sonde's bucketing code).
    let mut theirs: Vec<i32> = (0..SLOW_CONNECTS)
        .map(|i| {
            let ns = measured.get(i);
            assert!(
                ns > 900_000_000,
                "connect {i} took {ns} ns: the SYN was not lost"
            );
            crate::otlp_bucket(ns as f64 / 1e9)
        })
        .collect();
    theirs.sort_unstable();
    let tcp = snapshot
        .tcp_cgroup(client_cg.id())
        .expect("the client's cgroup");
    assert_eq!(tcp.connects, SLOW_CONNECTS as u64);
    let ours: Vec<i32> = tcp
        .connect_latency
        .buckets
        .iter()
        .flat_map(|(&index, &n)| std::iter::repeat_n(index, n as usize))
        .collect();
    eprintln!("connect buckets: client {theirs:?}, sonde {ours:?}");
    for (a, b) in theirs.iter().zip(&ours) {
        assert!((a - b).abs() <= 1, "client bucket {a}, sonde bucket {b}");
    }
    // Each lost SYN was retransmitted once: RetransSegs, and the drops the
    // rule counted.
    let entry = agreed_with(&snapshot, &pair.a, &kernel_a);
    assert_eq!(kernel(entry, "RetransSegs"), SLOW_CONNECTS as u64);
    assert_eq!(tcp.counts.retransmit_segments, SLOW_CONNECTS as u64);
    let dropped = pair.a.nft_counter("sonde");
    assert_eq!(dropped, SLOW_CONNECTS as u64);
    assert_eq!(snapshot.drops(pair.a.inode(), "NETFILTER_DROP"), dropped);
    // The server side: handshakes accepted on its port.
    agreed_with(&snapshot, &pair.b, &kernel_b);
    let listener = snapshot
        .tcp
        .window
        .listeners
        .iter()
        .find(|l| l.netns == pair.b.inode() && l.port == SYN_PORT)
        .expect("the server's listening port");
    assert_eq!(listener.accepted, SLOW_CONNECTS as u64);
    drop((hold_a, hold_b));
    assert_whole(&snapshot);
}

const BULK_PORT: u16 = 7012;
const BULK_BYTES: u64 = 4 << 20;

#[test]
fn retransmits_under_loss_equal_retranssegs() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[DROPS]) else {
        return;
    };
    let pair = NetnsPair::new("loss");
    let (hold_a, hold_b) = (Holder::new(&pair.a), Holder::new(&pair.b));
    // One data packet in ten from the sender is lost on its way into the
    // receiver; handshake, FIN and pure ACKs pass, so that the connection
    // ends cleanly. (Dropped on the sender's own output instead, a packet
    // is not lost: the sender sees the error and sends it again as new
    // data, no retransmit.)
    pair.b.nft(&format!(
        "table inet sonde {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
         ip saddr 10.77.0.1 tcp dport {BULK_PORT} tcp flags & (syn | fin | rst) == 0 meta length > 100 \
         numgen random mod 10 0 counter drop\n }}\n}}\n"
    ));
    let (client_cg, server_cg) = (TestCgroup::new("tcp-loss-c"), TestCgroup::new("tcp-loss-s"));
    let at = sockaddr(ADDR_B, BULK_PORT);
    let received = Shared::new(1);
    let server = Workload::fork(&server_cg, || {
        deadline(20);
        pair.b.enter();
        let l = listen(&at, 4);
        // SAFETY: accepting on our listening socket.
        let fd = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
        let (bytes, _) = drain(fd);
        received.set(0, bytes);
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
    });
    let client = Workload::fork(&client_cg, || {
        deadline(20);
        pair.a.enter();
        let Ok(fd) = connect(&at) else {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(94) };
        };
        let chunk = [7u8; 65536];
        let mut sent = 0;
        while sent < BULK_BYTES {
            // SAFETY: writing from a valid stack buffer.
            let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
            if n <= 0 {
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(95) };
            }
            sent += n as u64;
        }
        finish(fd);
    });
    let kernel_before = hold_a.counters();
    let mut sampler = Sampler::start(probes).expect("first reading");
    server.go();
    wait_listening(hold_b.pid(), BULK_PORT);
    client.go();
    assert_eq!(client.wait(), 0);
    assert_eq!(server.wait(), 0);
    let snapshot = sampler.tick().expect("second reading");
    let kernel_after = hold_a.counters().since(&kernel_before);

    assert_eq!(received.get(0), BULK_BYTES);
    let retransmits = kernel_after.retrans_segs;
    eprintln!("RetransSegs {retransmits}");
    assert!(retransmits > 0, "the rule made no loss");
    let entry = agreed_with(&snapshot, &pair.a, &kernel_after);
    assert_eq!(kernel(entry, "RetransSegs"), retransmits);
    assert_eq!(entry.window.get("RetransSegs"), Some(&retransmits));
    let tcp = snapshot
        .tcp_cgroup(client_cg.id())
        .expect("the client's cgroup");
    assert_eq!(tcp.counts.retransmit_segments, retransmits);
    // Every one of them to the one destination.
    assert_eq!(tcp.retransmit_destinations.len(), 1, "{tcp:?}");
    let to = &tcp.retransmit_destinations[0];
    let addr = std::net::Ipv4Addr::from(ADDR_B).to_string();
    assert_eq!((to.address.as_str(), to.port), (addr.as_str(), BULK_PORT));
    assert_eq!(to.segments, retransmits);
    let dropped = pair.b.nft_counter("sonde");
    assert!(dropped > 0);
    assert_eq!(snapshot.drops(pair.b.inode(), "NETFILTER_DROP"), dropped);
    agreed(&snapshot, &pair.b);
    drop((hold_a, hold_b));
    assert_whole(&snapshot);
}

const RESET_PORT: u16 = 7013;
const RESETS: usize = 10;

#[test]
fn abortive_closes_count_resets_like_outrsts() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[]) else {
        return;
    };
    let pair = NetnsPair::new("rst");
    let (hold_a, hold_b) = (Holder::new(&pair.a), Holder::new(&pair.b));
    let (client_cg, server_cg) = (TestCgroup::new("tcp-rst-c"), TestCgroup::new("tcp-rst-s"));
    let at = sockaddr(ADDR_B, RESET_PORT);
    let server = Workload::fork(&server_cg, || {
        deadline(20);
        pair.b.enter();
        let l = listen(&at, RESETS as i32);
        let mut reset = 0;
        for _ in 0..RESETS {
            // SAFETY: accepting on our listening socket.
            let fd = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd >= 0 && drain(fd).1 == libc::ECONNRESET {
                reset += 1;
            }
        }
        // SAFETY: ends the forked child with its count.
        unsafe { libc::_exit(reset) };
    });
    let client = Workload::fork(&client_cg, || {
        deadline(20);
        // One CPU for the client: a veth pair queues packets per sending
        // CPU, and a client that migrates between its connect's last ACK
        // and its reset can have the reset overtake the ACK, so that the
        // server never sees the connection and its accept waits forever
        // (seen under emulation in the vm-test guest).
        crate::pin_to_cpu(0);
        pair.a.enter();
        // SO_LINGER with a zero timeout: close() aborts with a reset.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        for _ in 0..RESETS {
            let Ok(fd) = connect(&at) else {
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(96) };
            };
            // SAFETY: plain socket calls on our own fd.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
                libc::close(fd);
            }
        }
    });
    let kernel_before = hold_a.counters();
    let mut sampler = Sampler::start(probes).expect("first reading");
    server.go();
    wait_listening(hold_b.pid(), RESET_PORT);
    client.go();
    assert_eq!(client.wait(), 0);
    assert_eq!(server.wait() as usize, RESETS, "the server saw every reset");
    let snapshot = sampler.tick().expect("second reading");
    let kernel_after = hold_a.counters().since(&kernel_before);

    assert_eq!(kernel_after.out_rsts, RESETS as u64);
    let entry = agreed_with(&snapshot, &pair.a, &kernel_after);
    assert_eq!(entry.window.get("OutRsts"), Some(&(RESETS as u64)));
    let client_tcp = snapshot
        .tcp_cgroup(client_cg.id())
        .expect("the client's cgroup");
    assert_eq!(client_tcp.counts.resets_sent, RESETS as u64);
    assert_eq!(client_tcp.connects, RESETS as u64);
    let server_tcp = snapshot
        .tcp_cgroup(server_cg.id())
        .expect("the server's cgroup");
    assert_eq!(server_tcp.counts.resets_received, RESETS as u64);
    let sent: Vec<_> = snapshot
        .tcp
        .window
        .events
        .iter()
        .filter(|e| e.kind == "reset_sent" && e.netns == pair.a.inode())
        .collect();
    assert_eq!(sent.len(), RESETS);
    for e in sent {
        assert_eq!(e.cgroup.as_ref().map(|c| c.cgroup_id), Some(client_cg.id()));
        assert_eq!(
            (e.source.as_str(), e.destination.as_str()),
            ("10.77.0.1", "10.77.0.2")
        );
        assert_eq!(e.destination_port, RESET_PORT);
        assert_ne!(e.source_port, 0);
    }
    agreed(&snapshot, &pair.b);
    drop((hold_a, hold_b));
    assert_whole(&snapshot);
}

const FILTERED_PORT: u16 = 7014;
const FILTERED: usize = 3;

#[test]
fn netfilter_drops_equal_the_rule_counter() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[DROPS]) else {
        return;
    };
    let pair = NetnsPair::new("nft");
    let (hold_a, hold_b) = (Holder::new(&pair.a), Holder::new(&pair.b));
    // The server's side drops the SYNs on their way in: no socket yet, the
    // namespace comes from the device.
    pair.b.nft(&format!(
        "table inet sonde {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
         ip saddr 10.77.0.1 tcp dport {FILTERED_PORT} counter drop\n }}\n}}\n"
    ));
    let cgroup = TestCgroup::new("tcp-nft");
    let at = sockaddr(ADDR_B, FILTERED_PORT);
    let client = Workload::fork(&cgroup, || {
        deadline(20);
        pair.a.enter();
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        for _ in 0..FILTERED {
            // A connect given up before its SYN is retransmitted: counted as
            // an ActiveOpen, not as a failure.
            // SAFETY: raw socket calls with a valid address.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                let rc = libc::connect(
                    fd,
                    (&at as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                if rc == 0 || errno() != libc::EINPROGRESS {
                    libc::_exit(97);
                }
                libc::nanosleep(&pause, std::ptr::null_mut());
                libc::close(fd);
            }
        }
    });
    let (kernel_a, kernel_b) = (hold_a.counters(), hold_b.counters());
    let mut sampler = Sampler::start(probes).expect("first reading");
    client.go();
    assert_eq!(client.wait(), 0);
    let snapshot = sampler.tick().expect("second reading");
    let (kernel_a, kernel_b) = (
        hold_a.counters().since(&kernel_a),
        hold_b.counters().since(&kernel_b),
    );

    let dropped = pair.b.nft_counter("sonde");
    assert_eq!(dropped, FILTERED as u64);
    assert_eq!(snapshot.drops(pair.b.inode(), "NETFILTER_DROP"), dropped);
    let entry = agreed_with(&snapshot, &pair.a, &kernel_a);
    assert_eq!(kernel(entry, "ActiveOpens"), FILTERED as u64);
    assert_eq!(kernel(entry, "AttemptFails"), 0);
    let tcp = snapshot.tcp_cgroup(cgroup.id());
    assert!(
        tcp.is_none_or(|t| t.failures() == 0 && t.connects == 0),
        "{tcp:?}"
    );
    agreed_with(&snapshot, &pair.b, &kernel_b);
    drop((hold_a, hold_b));
    assert_whole(&snapshot);
}

const BACKLOG_PORT: u16 = 7015;
/// Listen backlog of the overflow test: the accept queue is full past
/// `BACKLOG + 1` connections, the SYN queue at `BACKLOG` handshakes.
const BACKLOG: usize = 2;
/// Local ports of the two held-back handshakes.
const HELD_PORTS: [u16; 2] = [40701, 40702];

#[test]
fn handshakes_refused_by_a_full_accept_queue_counted_per_port() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[DROPS, LISTEN_OVERFLOWS]) else {
        return;
    };
    let pair = NetnsPair::new("ovf");
    let (hold_a, hold_b) = (Holder::new(&pair.a), Holder::new(&pair.b));
    // The accept queue first takes BACKLOG connections that nobody accepts.
    // Then two more handshakes wait as request sockets (their last ACK held
    // back by the rule; the SYN queue, of BACKLOG, is not full, so no SYN
    // cookies). Once the rule is gone, the server's SYN-ACK retransmits
    // (after 1 s) draw the ACKs again: the first completes its handshake and
    // fills the queue, the second finds it full. The client's reset then
    // ends the refused handshake, an AttemptFail on the server's side. (A
    // SYN refused for a full queue, or a SYN-cookie handshake refused, would
    // not show as an overflow; neither happens here. Nor does a reset that
    // is inside the handshake's window but not at its next sequence: the
    // kernel answers it with a challenge ACK and does not count it, sonde
    // cannot tell it from one that ends the handshake and counts it.)
    pair.a.nft(&format!(
        "table inet sonde {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
         ip daddr 10.77.0.2 tcp dport {BACKLOG_PORT} tcp sport {{ {}, {} }} \
         tcp flags & (syn | ack) == ack counter drop\n }}\n}}\n",
        HELD_PORTS[0], HELD_PORTS[1]
    ));
    let (client_cg, server_cg) = (TestCgroup::new("tcp-ovf-c"), TestCgroup::new("tcp-ovf-s"));
    let at = sockaddr(ADDR_B, BACKLOG_PORT);
    let held = HELD_PORTS.map(|port| sockaddr(crate::netns::ADDR_A, port));
    let progress = Shared::new(1);
    let server = idle_listener(&server_cg, &pair.b, &at, BACKLOG as i32);
    let (go_data, data_go) = pipe();
    let client = Workload::fork(&client_cg, || {
        deadline(20);
        pair.a.enter();
        let mut socks = [0; BACKLOG + 2];
        for (i, sock) in socks.iter_mut().enumerate() {
            let fd = match held.get(i.wrapping_sub(BACKLOG)) {
                Some(from) => connect_from(from, &at),
                None => connect(&at).ok(),
            };
            let Some(fd) = fd else {
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(98) };
            };
            *sock = fd;
        }
        progress.set(0, 1);
        let mut byte = 0u8;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: waits for the parent's word, then aborts every connection
        // (resets: nothing lingers).
        unsafe {
            libc::read(data_go, (&mut byte as *mut u8).cast(), 1);
            for fd in socks {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
                libc::close(fd);
            }
        }
    });
    let kernel_before = hold_b.counters();
    let mut sampler = Sampler::start(probes).expect("first reading");
    server.go();
    wait_listening(hold_b.pid(), BACKLOG_PORT);
    client.go();
    crate::wait_until(|| progress.get(0) == 1);
    assert_eq!(
        pair.a.nft_counter("sonde"),
        2,
        "both handshake ACKs held back"
    );
    pair.a
        .exec("nft", &["delete", "table", "inet", "sonde"], None);
    crate::wait_until_secs(5, || {
        hold_b.counters().since(&kernel_before).listen_overflows >= 1
    });
    // SAFETY: one byte to the client's pipe.
    assert_eq!(unsafe { libc::write(go_data, b"g".as_ptr().cast(), 1) }, 1);
    assert_eq!(client.wait(), 0);
    // Read while the listening socket lives: it takes its counts with it.
    let snapshot = sampler.tick().expect("second reading");
    let kernel_after = hold_b.counters().since(&kernel_before);
    // SAFETY: ending our own child.
    unsafe { libc::kill(server.pid(), libc::SIGKILL) };
    let _ = server.wait_status();

    assert_eq!(kernel_after.listen_overflows, 1, "one handshake refused");
    assert_eq!(kernel_after.listen_drops, 1);
    let listener = snapshot
        .tcp
        .window
        .listeners
        .iter()
        .find(|l| l.netns == pair.b.inode() && l.port == BACKLOG_PORT)
        .expect("the listening port");
    assert_eq!(listener.overflows, 1, "{listener:?}");
    assert_eq!(listener.accepted, BACKLOG as u64 + 1, "{listener:?}");
    // The socket's own drop count: the refused handshake (ListenDrops), and
    // the two packets discarded at the socket, the refused ACK (counted
    // twice by the kernel) and the reset that ended the handshake. The
    // queue holds one more than its bound: it is full only beyond it.
    assert_eq!(
        listener.sockets,
        Some(ListenSockets {
            drops: kernel_after.listen_drops + listener.overflows + listener.failed_handshakes,
            accept_queue: BACKLOG as u64 + 1,
            accept_queue_max: BACKLOG as u64,
        }),
        "{listener:?}"
    );
    // The refused handshake stayed a request socket; the client's reset
    // ended it: an AttemptFail on the listening side.
    assert_eq!(listener.failed_handshakes, 1, "{listener:?}");
    assert_eq!(kernel_after.attempt_fails, 1);
    // Both held handshakes had their SYN-ACK sent again.
    assert_eq!(kernel_after.retrans_segs, 2);
    assert_eq!(snapshot.drops(pair.b.inode(), "TCP_LISTEN_OVERFLOW"), 1);
    agreed_with(&snapshot, &pair.b, &kernel_after);
    agreed(&snapshot, &pair.a);
    drop((hold_a, hold_b));
    // SAFETY: closing our pipe ends.
    unsafe {
        libc::close(go_data);
        libc::close(data_go);
    }
    assert_whole(&snapshot);
}

const FULL_QUEUE_PORT: u16 = 7016;
/// Connections the accept queue of `listen(fd, 1)` takes: it is full only
/// beyond its bound.
const QUEUED: usize = 2;
/// Connects whose SYNs find that queue full.
const REFUSED_SYNS: usize = 5;

/// SYNs refused at their arrival because the accept queue is full are freed
/// without a drop reason and no tracepoint sees them: sonde counts them per
/// port from the listening socket's own drop count, which must equal the
/// namespace's ListenDrops exactly, on every kernel.
#[test]
fn syns_refused_by_a_full_accept_queue_counted_per_port() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[]) else {
        return;
    };
    let pair = NetnsPair::new("syn");
    let (hold_a, hold_b) = (Holder::new(&pair.a), Holder::new(&pair.b));
    let (client_cg, server_cg) = (TestCgroup::new("tcp-syn-c"), TestCgroup::new("tcp-syn-s"));
    let at = sockaddr(ADDR_B, FULL_QUEUE_PORT);
    let server = idle_listener(&server_cg, &pair.b, &at, 1);
    let client = Workload::fork(&client_cg, || {
        deadline(20);
        pair.a.enter();
        let mut fds = Vec::new();
        for _ in 0..QUEUED {
            match connect(&at) {
                Ok(fd) => fds.push(fd),
                // SAFETY: ends the forked child.
                Err(_) => unsafe { libc::_exit(97) },
            }
        }
        for _ in 0..REFUSED_SYNS {
            // SAFETY: a non-blocking connect whose SYN is refused: it stays
            // in SYN_SENT, retransmitting its SYN, until closed.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                let rc = libc::connect(
                    fd,
                    (&at as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                if fd < 0 || rc == 0 || errno() != libc::EINPROGRESS {
                    libc::_exit(96);
                }
                fds.push(fd);
            }
        }
        // Long enough for the SYNs to be sent once more (after ~1 s).
        std::thread::sleep(std::time::Duration::from_millis(1500));
        for fd in fds {
            // SAFETY: closing our own sockets.
            unsafe { libc::close(fd) };
        }
    });
    let (kernel_a, kernel_b) = (hold_a.counters(), hold_b.counters());
    let mut sampler = Sampler::start(probes).expect("first reading");
    server.go();
    wait_listening(hold_b.pid(), FULL_QUEUE_PORT);
    client.go();
    assert_eq!(client.wait(), 0);
    let snapshot = sampler.tick().expect("second reading");
    let (kernel_a, kernel_b) = (
        hold_a.counters().since(&kernel_a),
        hold_b.counters().since(&kernel_b),
    );
    // SAFETY: ending our own child.
    unsafe { libc::kill(server.pid(), libc::SIGKILL) };
    let _ = server.wait_status();

    // Every SYN the client sent after the queue filled was refused: the
    // first of each connect, and each one it retransmitted.
    let refused = REFUSED_SYNS as u64 + kernel_a.retrans_segs;
    assert!(kernel_a.retrans_segs >= REFUSED_SYNS as u64, "{kernel_a:?}");
    assert_eq!(kernel_b.listen_drops, refused, "{kernel_b:?}");
    assert_eq!(kernel_b.listen_overflows, refused, "{kernel_b:?}");
    let listener = snapshot
        .tcp
        .window
        .listeners
        .iter()
        .find(|l| l.netns == pair.b.inode() && l.port == FULL_QUEUE_PORT)
        .expect("the listening port");
    assert_eq!(listener.accepted, QUEUED as u64, "{listener:?}");
    assert_eq!(listener.overflows, 0, "none at the last ACK: {listener:?}");
    assert_eq!(
        listener.sockets,
        Some(ListenSockets {
            drops: refused,
            accept_queue: QUEUED as u64,
            accept_queue_max: 1,
        }),
        "{listener:?}"
    );
    // The namespace check: the probes' ListenOverflows misses exactly the
    // SYNs refused at arrival, which only the sockets' count holds;
    // everything else agrees.
    let entry = snapshot.tcp_netns(pair.b.inode()).expect("namespace b");
    assert_eq!(entry.listeners_unread, None);
    let checked = entry.check.as_ref().expect("namespace b checked");
    for c in checked {
        let expected = if c.counter == "ListenOverflows" {
            refused as i64
        } else {
            0
        };
        assert_eq!(c.discrepancy, expected, "{c:?} in {:?}", entry.check);
    }
    for (counter, value) in kernel_b.named() {
        let c = checked.iter().find(|c| c.counter == counter);
        assert_eq!(c.map(|c| c.kernel), Some(value), "{counter}: {checked:?}");
    }
    let client_side = agreed_with(&snapshot, &pair.a, &kernel_a);
    assert_eq!(
        kernel(client_side, "ActiveOpens"),
        (QUEUED + REFUSED_SYNS) as u64
    );
    // Closed in SYN_SENT: no failed attempt (only a connect that ends on
    // its own, by a reset or a timeout, is one).
    assert_eq!(kernel(client_side, "AttemptFails"), 0);
    assert_whole(&snapshot);
}

/// The window lost nothing. In a QEMU guest one loss is let through,
/// counted: the kernel skips a tcp program that re-enters on its CPU (a
/// softirq hitting `kfree_skb`, `tcp_retransmit_skb` or
/// `inet_sock_set_state` while the same program runs in process context
/// there) and counts the skip in the program's `recursion_misses`, which
/// sonde reports as `program_missed`, making the window incomplete. Under
/// TCG a program runs tens of times longer than on a real CPU, so a
/// softirq lands inside one far more often: measured in `cargo xtask
/// vm-test` on 2026-12-03, 4 skips in one window of
/// `syns_refused_by_a_full_accept_queue_counted_per_port` on arm64 6.1,
/// with every count that test asserts still exact. A skip of one of a
/// test's own events would leave one of its counts short, so the counts
/// stay exact; only the skips themselves are let through, and only
/// there. On the host nothing may be lost.
fn assert_whole(snapshot: &Snapshot) {
    let missed: u64 = snapshot
        .losses
        .iter()
        .filter(|l| l.probe == "tcp" && l.reason == sonde::sampler::PROGRAM_MISSED)
        .map(|l| l.count)
        .sum();
    let allowed = if crate::in_vm() { missed } else { 0 };
    if allowed > 0 {
        eprintln!("tcp programs skipped on re-entry, counted as program_missed: {missed}");
    }
    assert_eq!(snapshot.lost(), allowed, "{:?}", snapshot.losses);
}

/// A server in `cgroup` and `ns` listening on `at` that never accepts,
/// until it is killed.
fn idle_listener(
    cgroup: &TestCgroup,
    ns: &TestNetns,
    at: &libc::sockaddr_in,
    backlog: i32,
) -> Workload {
    Workload::fork(cgroup, || {
        deadline(20);
        ns.enter();
        let _l = listen(at, backlog);
        // SAFETY: waits for the signal that ends it; nobody accepts.
        unsafe { libc::pause() };
    })
}

/// A TCP socket bound to `from`, connected to `to`; async-signal-safe.
fn connect_from(from: &libc::sockaddr_in, to: &libc::sockaddr_in) -> Option<libc::c_int> {
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: raw socket calls with valid addresses.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0
            || libc::bind(fd, (from as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (to as *const libc::sockaddr_in).cast(), len) != 0
        {
            return None;
        }
        Some(fd)
    }
}

/// A pipe: (write end, read end).
fn pipe() -> (libc::c_int, libc::c_int) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[1], fds[0])
}

/// Losses of `reason` summed over `snapshots`.
fn lost(snapshots: &[Snapshot], reason: &str) -> u64 {
    snapshots
        .iter()
        .flat_map(|s| &s.losses)
        .filter(|l| l.reason == reason)
        .map(|l| l.count)
        .sum()
}

#[test]
fn a_flood_of_ten_times_the_designed_event_rate_conserves_every_event() {
    if !privileged() {
        return;
    }
    let Some(probes) = probes(&[]) else {
        return;
    };
    // Designed: a window's worth of TCP events (1024) per one-second window.
    let designed_per_second = sonde::sampler::MAX_EVENTS_PER_WINDOW as f64;
    let ns = TestNetns::new("flood");
    let holder = Holder::new(&ns);
    let cgroup = TestCgroup::new("tcp-flood");
    let to = sockaddr([127, 0, 0, 1], CLOSED_PORT);
    let counts = Shared::new(2);
    let flood_secs = 3 * crate::vm_time_factor() as u64;
    let client = Workload::fork(&cgroup, || {
        deadline(60);
        ns.enter();
        let start = monotonic_ns();
        let (mut refused, mut other) = (0, 0);
        while monotonic_ns() - start < flood_secs * 1_000_000_000 {
            match connect(&to) {
                Err(libc::ECONNREFUSED) => refused += 1,
                _ => other += 1,
            }
        }
        counts.set(0, refused);
        counts.set(1, monotonic_ns() - start);
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(other.min(255)) };
    });
    let kernel_before = holder.counters();
    let mut sampler = Sampler::start(probes).expect("first reading");
    client.go();
    // One-second windows, as the agent closes them, through the flood and
    // one more to drain the ring.
    let mut snapshots = Vec::new();
    while !client.exited() {
        std::thread::sleep(std::time::Duration::from_secs(1));
        snapshots.push(sampler.tick().expect("a window"));
    }
    assert_eq!(client.wait(), 0, "every connect was refused");
    std::thread::sleep(std::time::Duration::from_secs(1));
    snapshots.push(sampler.tick().expect("a window"));
    let kernel = holder.counters().since(&kernel_before);
    let refused = counts.get(0);
    let secs = counts.get(1) as f64 / 1e9;

    // Produced: the workload's own count, which the kernel agrees with.
    assert_eq!(kernel.attempt_fails, refused);
    let rate = 2.0 * refused as f64 / secs;
    // Under QEMU's emulated CPU (the vm-test guest) the flood is what the
    // emulator manages; the identity below must hold all the same.
    assert!(
        crate::in_vm() || rate >= 10.0 * designed_per_second,
        "a flood of {rate:.0} events/s is not 10x the designed {designed_per_second}/s"
    );
    // Delivered, and each stage's losses: they add up, kind by kind.
    let delivered = |kind: &str| -> u64 {
        snapshots
            .iter()
            .flat_map(|s| &s.tcp.window.events)
            .filter(|e| e.netns == ns.inode() && e.kind == kind)
            .count() as u64
    };
    for kind in ["tcp_connect_failed", "tcp_reset_received"] {
        let name = kind.trim_start_matches("tcp_");
        let (ring, window) = (
            lost(&snapshots, &format!("ring_full_{kind}")),
            lost(&snapshots, &format!("window_full_{kind}")),
        );
        // Exact on a quiet machine: the ring's and the window's losses are
        // per kind, not per namespace, so a connect failing elsewhere on the
        // host during the flood would be counted here too (the message then
        // shows such foreign events among those delivered).
        let foreign = snapshots
            .iter()
            .flat_map(|s| &s.tcp.window.events)
            .filter(|e| e.netns != ns.inode() && e.kind == name)
            .count();
        assert_eq!(
            delivered(name) + ring + window,
            refused,
            "{kind}: delivered {} + ring full {ring} + window full {window}; {foreign} delivered from other namespaces",
            delivered(name)
        );
        eprintln!(
            "{kind}: produced {refused} in {secs:.2} s ({rate:.0} events/s of both kinds), delivered {}, ring full {ring}, window full {window}",
            delivered(name)
        );
        assert!(
            crate::in_vm() || (ring > 0 && window > 0),
            "{kind}: both stages overflowed"
        );
    }
    // Every window that lost events says so.
    for s in &snapshots {
        let lost_any = s.losses.iter().any(|l| l.count > 0);
        assert_eq!(
            s.complete,
            !lost_any && s.probes.iter().all(|p| p.state == ProbeState::Attached)
        );
    }
    // The maps' counts, unlike events, lose nothing under the flood.
    let tcp = snapshots
        .iter()
        .filter_map(|s| s.tcp_cgroup(cgroup.id()))
        .map(|c| c.connect_failures.get("refused").copied().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(tcp, refused);
}
