//! `sonde explain` on staged incidents: each must rank its true cause
//! first, from the real kernel, and the same workload with the cause absent
//! must lose that finding. The windows come from the library's sampler and
//! reach the rules through their JSON, as they do from an agent's socket.

use std::time::Duration;

use sonde::{
    explain::{self, Target, Window},
    model::explain::Explanation,
    probes::{ProbeOptions, Probes},
    sampler::Sampler,
};

use crate::{
    burn_cpu, pin_to_cpu, privileged, run_delay_ns, CpuLimit, MemoryLimit, PinnedThread,
    TestCgroup, Workload,
};

/// Closes a window every `every` until `done` says so (at least `min`
/// windows, at most `max`), then one more.
fn watch(
    sampler: &mut Sampler,
    every: Duration,
    min: usize,
    max: usize,
    done: impl Fn() -> bool,
) -> Vec<Window> {
    let mut windows = Vec::new();
    while windows.len() < max {
        std::thread::sleep(every);
        let snapshot = sampler.tick().expect("window");
        if !snapshot.complete {
            let lost: Vec<_> = snapshot.losses.iter().filter(|l| l.count > 0).collect();
            eprintln!("incomplete window: {lost:?}");
        }
        windows.push(Window::from_snapshot(&snapshot).expect("window as JSON"));
        if windows.len() >= min && done() {
            break;
        }
    }
    windows
}

fn kinds(e: &Explanation) -> Vec<&str> {
    e.findings.iter().map(|f| f.kind.as_str()).collect()
}

fn sleep_ns(ns: i64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// A request handler (sleeps 1 ms, works 2 ms, `rounds` times) in
/// `victim_cg` shares CPU 0 with a spinning neighbour in each of `hogs`,
/// watched in windows of 500 ms (at most `max_windows`): the windows, and
/// the victim's run-queue wait by the kernel's own `run_delay`, seconds.
fn beside(
    victim_cg: &TestCgroup,
    hogs: &[&TestCgroup],
    rounds: usize,
    max_windows: usize,
) -> (Vec<Window>, f64) {
    // The windows are read on CPU 1: this thread is no neighbour of the
    // victim's on CPU 0.
    let _away = PinnedThread::to(1);
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let victim = Workload::fork(victim_cg, || {
        pin_to_cpu(0);
        for _ in 0..rounds {
            sleep_ns(1_000_000);
            burn_cpu(2_000_000);
        }
    });
    let hogs: Vec<Workload> = hogs
        .iter()
        .map(|cg| {
            Workload::fork(cg, || {
                pin_to_cpu(0);
                burn_cpu(30_000_000_000);
            })
        })
        .collect();
    let mut sampler = Sampler::start(probes).expect("first reading");
    let delay_before = run_delay_ns(victim.pid());
    for h in &hogs {
        h.go();
    }
    victim.go();
    let windows = watch(
        &mut sampler,
        Duration::from_millis(500),
        3,
        max_windows,
        || victim.exited(),
    );
    victim.wait_exited();
    let waited = (run_delay_ns(victim.pid()) - delay_before) as f64 / 1e9;
    assert_eq!(victim.wait(), 0);
    for h in hogs {
        h.kill();
    }
    (windows, waited)
}

/// (a) A request handler (sleeps 1 ms, works 2 ms) shares CPU 0 with a
/// spinning neighbour in another cgroup, or runs there alone.
fn contention(with_hog: bool) -> (Explanation, TestCgroup, TestCgroup, f64, Vec<Window>) {
    let tag = if with_hog { "" } else { "-alone" };
    let victim_cg = TestCgroup::new(&format!("explain-victim{tag}"));
    let hog_cg = TestCgroup::new(&format!("explain-hog{tag}"));
    let hogs: &[&TestCgroup] = if with_hog { &[&hog_cg] } else { &[] };
    let (windows, waited) = beside(&victim_cg, hogs, 500, 40);
    let e =
        explain::explain(&Target::Cgroup(victim_cg.v2_path()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&e));
    (e, victim_cg, hog_cg, waited, windows)
}

#[test]
fn a_cpu_hog_on_the_same_cpu_is_the_top_cause_and_gone_without_it() {
    if !privileged() {
        return;
    }
    let (e, victim_cg, hog_cg, waited, windows) = contention(true);
    assert_eq!(kinds(&e).first(), Some(&"cpu_contention"), "{}", e.verdict);
    let f = &e.findings[0];
    let top = &f.culprits[0];
    assert_eq!(top.name, hog_cg.v2_path(), "{:?}", f.culprits);
    // The share of the victim's whole run-queue wait charged to the hog.
    let share = top.share.expect("share");
    assert!(
        share >= 0.9,
        "the hog held the CPU for {share:.3} of the wait"
    );
    assert!(e.verdict.starts_with("cpu_contention: "), "{}", e.verdict);

    // The victim's waits by holder add up to the kernel's run_delay: every
    // wait is charged to someone (idle included), in exact nanoseconds.
    let id = victim_cg.id();
    let charged: f64 = windows
        .iter()
        .flat_map(|w| &w.runqueue_holders)
        .filter(|v| v.cgroup.cgroup_id == id)
        .map(|v| v.wait_secs)
        .sum();
    let hog_secs: f64 = windows
        .iter()
        .flat_map(|w| &w.runqueue_holders)
        .filter(|v| v.cgroup.cgroup_id == id)
        .flat_map(|v| &v.holders)
        .filter(|h| h.cgroup.cgroup_id == hog_cg.id())
        .map(|h| h.wait_secs)
        .sum();
    eprintln!(
        "victim waited {waited:.4} s (run_delay); sonde charged {charged:.4} s, {hog_secs:.4} s of it to the hog ({:.1} %)",
        100.0 * hog_secs / charged
    );
    // As in the sched test: the tracepoints and the scheduler's own
    // accounting take their clocks at slightly different points.
    assert!(
        (charged - waited).abs() <= 0.10 * waited,
        "charged {charged} s, run_delay {waited} s"
    );
    assert!(hog_secs >= 0.9 * waited, "hog {hog_secs} s of {waited} s");

    // The same victim alone: no contention, nothing above the floor.
    let (alone, ..) = contention(false);
    assert!(
        !kinds(&alone).contains(&"cpu_contention"),
        "{:?}",
        alone.findings
    );
}

/// (b) A spinner under a CPU quota of 10 ms per 100 ms, or with none.
fn throttled(quota: bool) -> Explanation {
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let cgroup = TestCgroup::new("explain-quota");
    let limit = quota.then(|| CpuLimit::new(&cgroup, "explain-quota", 10_000, 100_000));
    let extra = limit.as_ref().and_then(CpuLimit::extra_procs);
    let spinner = Workload::fork_joining(&cgroup, extra.as_deref(), || {
        pin_to_cpu(1);
        burn_cpu(30_000_000_000);
    });
    let mut sampler = Sampler::start(probes).expect("first reading");
    spinner.go();
    let windows = watch(&mut sampler, Duration::from_millis(500), 5, 5, || true);
    spinner.kill();
    let e = explain::explain(&Target::Cgroup(cgroup.v2_path()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&e));
    e
}

#[test]
fn a_cpu_quota_that_throttles_is_the_top_cause_and_gone_without_it() {
    if !privileged() {
        return;
    }
    let e = throttled(true);
    assert_eq!(kinds(&e).first(), Some(&"cpu_throttling"), "{}", e.verdict);
    let f = &e.findings[0];
    // 10 % of each period: a spinner is throttled in most of them.
    assert!(f.magnitude >= 0.5, "{f:?}");
    let free = throttled(false);
    assert!(
        !kinds(&free).contains(&"cpu_throttling"),
        "{:?}",
        free.findings
    );
}

/// (c) Reading 64 MiB of a block device over and over under a 24 MiB memory
/// limit makes the reader reclaim its own page cache; allocating 96 MiB
/// under it gets it OOM-killed. Without the limit, neither.
fn memory(limit: bool, allocate: bool) -> Explanation {
    const FILE_BYTES: usize = 64 << 20;
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let cgroup = TestCgroup::new("explain-memory");
    let limit = limit.then(|| MemoryLimit::new(&cgroup, "explain-memory", 24 << 20));
    let extra = limit.as_ref().and_then(MemoryLimit::extra_procs);
    // A fresh loop device read through the page cache: every page read is
    // new, charged to the reader's cgroup and clean, so reclaimable, on any
    // filesystem the backing file sits on (the guests' is in memory).
    let device = crate::LoopDevice::new("explain-memory", FILE_BYTES as u64);
    let path = std::ffi::CString::new(device.path.as_os_str().as_encoded_bytes()).expect("path");
    let mut buf = vec![0u8; 1 << 20];
    let buf_ptr = buf.as_mut_ptr();
    let worker = Workload::fork_joining(&cgroup, extra.as_deref(), || {
        if allocate {
            // SAFETY: an anonymous mapping, touched page by page.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    96 << 20,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                ) as *mut u8;
                if p.is_null() || p as *mut libc::c_void == libc::MAP_FAILED {
                    libc::_exit(3);
                }
                for i in (0..(96usize << 20)).step_by(4096) {
                    *p.add(i) = 1;
                }
            }
            return;
        }
        for _ in 0..6 {
            // SAFETY: a NUL-terminated path and a buffer mapped before the fork.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    libc::_exit(2);
                }
                while libc::read(fd, buf_ptr.cast(), 1 << 20) > 0 {}
                libc::close(fd);
            }
        }
    });
    let mut sampler = Sampler::start(probes).expect("first reading");
    worker.go();
    let windows = watch(&mut sampler, Duration::from_millis(500), 3, 60, || {
        worker.exited()
    });
    worker.wait_status();
    drop(device);
    drop(buf);
    let e = explain::explain(&Target::Cgroup(cgroup.v2_path()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&e));
    e
}

#[test]
fn a_memory_limit_that_makes_the_workload_reclaim_is_the_top_cause() {
    if !privileged() {
        return;
    }
    let e = memory(true, false);
    assert_eq!(kinds(&e).first(), Some(&"memory_reclaim"), "{}", e.verdict);
    let free = memory(false, false);
    assert!(
        !kinds(&free).contains(&"memory_reclaim"),
        "{:?}",
        free.findings
    );
}

#[test]
fn an_oom_kill_is_the_top_cause_and_gone_without_the_limit() {
    if !privileged() {
        return;
    }
    let e = memory(true, true);
    assert_eq!(kinds(&e).first(), Some(&"oom_kill"), "{}", e.verdict);
    assert_eq!(e.findings[0].magnitude, 1.0);
    let free = memory(false, true);
    assert!(!kinds(&free).contains(&"oom_kill"), "{:?}", free.findings);
}

#[test]
fn a_quiet_workload_with_a_healthy_slo_gets_no_blame() {
    if !privileged() {
        return;
    }
    let cgroup = TestCgroup::new("explain-quiet");
    let specs = sonde_slo::spec::parse(
        "explain.toml",
        &format!(
            "[[slo]]\nname = \"quiet\"\nsignal = \"syscall.latency\"\nobjective_percent = 99\n\
             threshold_ms = 50\nselector = {{ cgroup = \"{}\", syscalls = [\"nanosleep\", \"clock_nanosleep\"] }}\n",
            cgroup.v2_path()
        ),
    )
    .expect("spec");
    let mut slos = sonde::slo::Slos::new(specs, None).expect("slos");
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let worker = Workload::fork(&cgroup, || {
        for _ in 0..300 {
            sleep_ns(5_000_000);
        }
    });
    let mut sampler = Sampler::start(probes).expect("first reading");
    worker.go();
    let mut windows = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        let mut snapshot = sampler.tick().expect("window");
        snapshot.slos = slos.window(&snapshot).expect("slo window");
        windows.push(Window::from_snapshot(&snapshot).expect("window as JSON"));
    }
    worker.kill();
    let e = explain::explain(&Target::Slo("quiet".into()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&e));
    let slo = e.target.slo.as_ref().expect("the SLO's events");
    assert!(slo.total >= 100, "{slo:?}");
    assert_eq!(slo.good, slo.total, "the SLO is healthy: {slo:?}");
    let causes: Vec<_> = e
        .findings
        .iter()
        .filter(|f| f.kind != "data_incomplete")
        .collect();
    assert!(causes.is_empty(), "false blame: {causes:?}");
    assert!(e.verdict.starts_with("nothing found"), "{}", e.verdict);
}

/// (e) O_DIRECT reads of a loop device over a FUSE file that answers each
/// read after 40 ms, or at once.
fn slow_disk(delay_ms: u64) -> (Explanation, String) {
    const BLOCK_BYTES: usize = 64 << 10;
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let fs = crate::EioFs::mount_slow(16 << 20, 0, 0, delay_ms);
    let device = crate::LoopDevice::over(&fs.image());
    let cgroup = TestCgroup::new("explain-disk");
    let path = std::ffi::CString::new(device.path.as_os_str().as_encoded_bytes()).expect("path");
    // O_DIRECT needs an aligned buffer, mapped before the fork.
    let aligned = crate::AlignedBuffer::new(BLOCK_BYTES);
    let buffer = aligned.ptr();
    let worker = Workload::fork(&cgroup, || {
        // SAFETY: raw I/O on a valid path and an aligned, mapped buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECT);
            if fd < 0 {
                libc::_exit(100);
            }
            for i in 0..40u64 {
                let offset = ((i % 200) * BLOCK_BYTES as u64) as libc::off_t;
                if libc::pread(fd, buffer, BLOCK_BYTES, offset) != BLOCK_BYTES as isize {
                    libc::_exit(101);
                }
            }
            libc::close(fd);
        }
    });
    let mut sampler = Sampler::start(probes).expect("first reading");
    worker.go();
    let windows = watch(&mut sampler, Duration::from_millis(500), 3, 60, || {
        worker.exited()
    });
    assert_eq!(worker.wait(), 0, "the reads succeeded");
    let e = explain::explain(&Target::Cgroup(cgroup.v2_path()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&e));
    (e, device.name.clone())
}

#[test]
fn a_slow_disk_is_the_top_cause_with_its_device_and_gone_when_fast() {
    if crate::vm_lacks("python3 and fusepy (the FUSE fixture)") {
        return;
    }
    if !privileged() {
        return;
    }
    let (e, device) = slow_disk(40);
    assert_eq!(kinds(&e).first(), Some(&"block_latency"), "{}", e.verdict);
    let f = &e.findings[0];
    assert_eq!(f.culprits[0].name, device, "{:?}", f.culprits);
    // Each read waited for the fixture's 40 ms.
    assert!(f.magnitude >= 0.04, "{f:?}");
    let (fast, device) = slow_disk(0);
    assert!(
        !fast
            .findings
            .iter()
            .any(|f| f.kind == "block_latency" && f.culprits.iter().any(|c| c.name == device)),
        "{:?}",
        fast.findings
    );
}

/// (d) An upload of `mib` MiB from the workload's cgroup over a veth pair,
/// one data packet in ten dropped on the receiver's input (nftables), or
/// none; the sender's explanation and the receiver's. `None` in a vm-test
/// guest whose kernel lacks the rule's nftables expressions (5.10's has no
/// `numgen` there), said as a skip.
fn lossy_upload(loss: bool, mib: u64) -> Option<(Explanation, Explanation)> {
    use crate::netns::{
        connect, deadline, drain, finish, listen, sockaddr, wait_listening, Holder, NetnsPair,
        ADDR_B,
    };
    const PORT: u16 = 7020;
    let bytes: u64 = mib << 20;
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let pair = NetnsPair::new(if loss { "xloss" } else { "xclean" });
    let hold_b = Holder::new(&pair.b);
    if loss {
        let loaded = pair.b.try_nft(&format!(
            "table inet sonde {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
             ip saddr 10.77.0.1 tcp dport {PORT} tcp flags & (syn | fin | rst) == 0 meta length > 100 \
             numgen random mod 10 0 counter drop\n }}\n}}\n"
        ));
        if let Err(e) = loaded {
            assert!(crate::in_vm(), "{e}");
            // The reason is one line (nft's first: it quotes the rule next).
            let first = e.lines().next().unwrap_or_default();
            crate::vm_skip(&format!(
                "this guest's kernel refuses the loss rule: {first}"
            ));
            return None;
        }
    }
    let (client_cg, server_cg) = (
        TestCgroup::new(&format!("explain-up-{loss}-{mib}")),
        TestCgroup::new(&format!("explain-sink-{loss}-{mib}")),
    );
    let at = sockaddr(ADDR_B, PORT);
    let server = Workload::fork(&server_cg, || {
        deadline(30);
        pair.b.enter();
        let l = listen(&at, 4);
        // SAFETY: accepting on our listening socket.
        let fd = unsafe { libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()) };
        drain(fd);
        // SAFETY: closing our own fd, then waiting to be killed: the
        // receiver stays, so that its cgroup has a process in its
        // namespace when the windows close.
        unsafe {
            libc::close(fd);
            libc::pause();
        }
    });
    let client = Workload::fork(&client_cg, || {
        deadline(30);
        pair.a.enter();
        let Ok(fd) = connect(&at) else {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(94) };
        };
        let chunk = [7u8; 65536];
        let mut sent = 0;
        while sent < bytes {
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
    let mut sampler = Sampler::start(probes).expect("first reading");
    server.go();
    wait_listening(hold_b.pid(), PORT);
    client.go();
    let windows = watch(&mut sampler, Duration::from_millis(500), 3, 60, || {
        client.exited()
    });
    assert_eq!(client.wait(), 0);
    server.kill();
    let e =
        explain::explain(&Target::Cgroup(client_cg.v2_path()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&e));
    let server =
        explain::explain(&Target::Cgroup(server_cg.v2_path()), &windows, None).expect("explain");
    eprintln!("{}", explain::render(&server));
    Some((e, server))
}

#[test]
fn packet_loss_makes_retransmits_the_top_cause_with_the_destination() {
    if !privileged() {
        return;
    }
    // 4 MiB: an 8 MiB upload without loss made 45 tail-loss-probe
    // retransmits once, 4 MiB none in every run.
    let Some((e, _)) = lossy_upload(true, 4) else {
        return;
    };
    assert_eq!(kinds(&e).first(), Some(&"tcp_retransmits"), "{}", e.verdict);
    let f = &e.findings[0];
    let addr = std::net::Ipv4Addr::from(crate::netns::ADDR_B);
    assert_eq!(
        f.culprits[0].name,
        format!("{addr}:7020"),
        "{:?}",
        f.culprits
    );
    assert_eq!(f.culprits[0].share, Some(1.0));
    let Some((clean, _)) = lossy_upload(false, 4) else {
        return;
    };
    assert!(
        !kinds(&clean).contains(&"tcp_retransmits"),
        "{:?}",
        clean.findings
    );
}

#[test]
fn drops_in_the_workloads_namespace_are_the_top_cause_with_their_reason() {
    if !privileged() {
        return;
    }
    // Drops by reason need kfree_skb's reason (Linux 5.17+): only the
    // vm-test guests run older kernels, and skip there saying so.
    let probes = Probes::load(ProbeOptions::default()).expect("load probes");
    let tcp = probes
        .statuses()
        .iter()
        .find(|s| s.probe == "tcp")
        .expect("tcp status")
        .clone();
    drop(probes);
    if tcp.gaps.contains(&sonde::model::Gap::TcpDrops) {
        assert!(crate::in_vm(), "drops not counted on the host: {tcp:?}");
        crate::vm_skip("this kernel's kfree_skb has no drop reason (Linux 5.17+)");
        return;
    }
    // 8 MiB: 19 to 31 packets dropped where 4 MiB dropped 12 to 16.
    let Some((_, server)) = lossy_upload(true, 8) else {
        return;
    };
    assert_eq!(
        kinds(&server).first(),
        Some(&"tcp_drops"),
        "{}",
        server.verdict
    );
    let f = &server.findings[0];
    assert_eq!(f.culprits[0].name, "NETFILTER_DROP", "{:?}", f.culprits);
    let Some((_, clean)) = lossy_upload(false, 8) else {
        return;
    };
    assert!(
        !kinds(&clean).contains(&"tcp_drops"),
        "{:?}",
        clean.findings
    );
}

/// Runs `sonde args`; (exit code, stdout, stderr), never a panic.
fn sonde(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(crate::sonde_bin())
        .args(args)
        .output()
        .expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// The whole path: an agent whose run-queue SLO pages while a neighbour
/// hogs its CPU, `sonde explain --attach` and standalone, the alert's own
/// explanation in the agent's windows, at the collector (`sonde fleet slo`
/// beside the alert, `sonde fleet explain`), and bad input as one line.
#[test]
fn explain_from_the_cli_the_agent_and_the_collector() {
    use crate::procs::{free_port, Proc};
    if crate::vm_lacks(
        "sonde-collector (not in the guest image: the wire does not depend on the kernel)",
    ) {
        return;
    }
    if !privileged() {
        return;
    }
    let victim_cg = TestCgroup::new("explain-cli-victim");
    let hog_cg = TestCgroup::new("explain-cli-hog");
    let (victim_path, hog_path) = (victim_cg.v2_path(), hog_cg.v2_path());
    let dir = tempfile::Builder::new()
        .prefix("sonde-explain-")
        .tempdir()
        .expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let socket_arg = socket.to_str().expect("UTF-8").to_owned();
    let config = dir.path().join("sonde.toml");
    // Waits under 1 ms are good: the neighbour makes most of them bad.
    std::fs::write(
        &config,
        format!(
            "[[slo]]\nname = \"handler-cpu\"\nsignal = \"runqueue.latency\"\nobjective_percent = 99\n\
             threshold_ms = 1\nselector = {{ cgroup = \"{victim_path}\" }}\n"
        ),
    )
    .expect("config");
    // Two replicas writing to and reading from one store; the agent
    // streams to the first only.
    let store = crate::remote_write::Store::start(dir.path(), "explain-store", None);
    let (write_url, query_url) = (store.url(), store.query_url());
    let ports = [free_port(), free_port()];
    let [url, other_url] = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let _replicas = ports.map(|port| {
        Proc::collector(
            port,
            &[
                "--config",
                config.to_str().expect("UTF-8"),
                "--remote-write-url",
                &write_url,
                "--store-url",
                &query_url,
            ],
        )
    });
    let agent = Proc::agent(&[
        "--socket",
        &socket_arg,
        "--config",
        config.to_str().expect("UTF-8"),
        "--state-dir",
        dir.path().join("state").to_str().expect("UTF-8"),
        "--collector",
        &url,
        "--node-name",
        "explain-node",
    ]);
    let victim = Workload::fork(&victim_cg, || {
        pin_to_cpu(0);
        for _ in 0..6000 {
            sleep_ns(1_000_000);
            burn_cpu(2_000_000);
        }
    });
    let hog = Workload::fork(&hog_cg, || {
        pin_to_cpu(0);
        burn_cpu(120_000_000_000);
    });
    hog.go();
    victim.go();

    // The agent's own windows: the paging SLO carries its explanation.
    crate::procs::wait_for(
        "the SLO's alert to carry an explanation",
        Duration::from_secs(40),
        || {
            agent.windows().iter().any(|w| {
                w["slos"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["explanation"]["findings"][0]["kind"] == "cpu_contention")
            })
        },
    );
    let windows = agent.windows();
    let slo = windows
        .iter()
        .rev()
        .flat_map(|w| w["slos"].as_array().into_iter().flatten())
        .find(|s| s["explanation"].is_object())
        .expect("an explained SLO");
    assert_ne!(slo["evaluation"]["severity"], "ok", "{slo}");
    assert_eq!(
        slo["explanation"]["findings"][0]["culprits"][0]["name"], hog_path,
        "{slo}"
    );

    // Attached: the agent's recent windows, no probes loaded.
    let (code, out, err) = sonde(&[
        "explain",
        "--attach",
        "--socket",
        &socket_arg,
        "--slo",
        "handler-cpu",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    for key in ["target", "windows", "findings", "verdict"] {
        assert!(e.get(key).is_some(), "no {key} in {e}");
    }
    let top = &e["findings"][0];
    for key in [
        "kind",
        "score",
        "magnitude",
        "unit",
        "share",
        "culprits",
        "evidence",
    ] {
        assert!(top.get(key).is_some(), "no {key} in {top}");
    }
    assert_eq!(top["kind"], "cpu_contention", "{e}");
    assert_eq!(top["culprits"][0]["name"], hog_path, "{e}");
    assert_eq!(e["target"]["slo"]["signal"], "runqueue.latency", "{e}");

    // Standalone, on its own probes, in text: the verdict first.
    let (code, out, err) = sonde(&["explain", "--cgroup", &victim_path, "--duration", "3s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("verdict: cpu_contention: "), "{out}");
    assert!(out.contains(&hog_path), "{out}");

    // The collectors: the alert carries the node's top finding, read from
    // the store by either replica, the one the node never streamed to too.
    for url in [&url, &other_url] {
        crate::procs::wait_for(
            "the store to hold the node's explanation",
            Duration::from_secs(30),
            || {
                let slos = crate::procs::fleet_json(&["--collector", url, "slo"]);
                slos["explanations"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            },
        );
        let slos = crate::procs::fleet_json(&["--collector", url, "slo"]);
        assert_eq!(slos["scope"], "the fleet, from the store", "{url}: {slos}");
        // One node, one SLO firing: one explanation.
        assert_eq!(
            slos["explanations"].as_array().map(Vec::len),
            Some(1),
            "{url}: {slos}"
        );
        let e = &slos["explanations"][0];
        assert_eq!(e["node"], "explain-node", "{url}: {slos}");
        let x = &e["explanation"];
        assert_eq!(x["slo"], "handler-cpu", "{url}: {slos}");
        assert_ne!(x["severity"], "ok", "{url}: {slos}");
        // Exactly what the agent's window of that end carried.
        let end = e["window_end_unix_ns"].as_u64().unwrap_or(0);
        let carried = agent
            .windows()
            .into_iter()
            .find(|w| w["window_end_unix_ns"].as_u64().unwrap_or(0).abs_diff(end) < 1_000_000)
            .and_then(|w| {
                w["slos"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == "handler-cpu")
                    .map(|s| s["explanation"].clone())
            })
            .unwrap_or_else(|| panic!("{url}: no window of the agent ends at {end}"));
        let figures = |f: &serde_json::Value| {
            (
                f["kind"].clone(),
                f["score"].as_f64(),
                f["magnitude"].as_f64(),
                f["unit"].clone(),
                f["share"].as_f64(),
                f["culprits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        (
                            c["kind"].clone(),
                            c["name"].clone(),
                            c["magnitude"].as_f64(),
                            c["share"].as_f64(),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let listed = |x: &serde_json::Value| -> Vec<_> {
            x["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(figures)
                .collect()
        };
        assert_eq!(listed(x), listed(&carried), "{url}: {slos}");
        assert_eq!(x["windows"], carried["windows"], "{url}: {slos}");
        assert_eq!(
            x["incomplete_windows"], carried["incomplete_windows"],
            "{url}: {slos}"
        );
        let top = &x["findings"][0];
        assert_eq!(top["kind"], "cpu_contention", "{url}: {slos}");
        assert_eq!(top["culprits"][0]["name"], hog_path, "{url}: {slos}");
        assert_eq!(top["culprits"][0]["kind"], "cgroup", "{url}: {slos}");
        assert!(
            x["verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with("cpu_contention: ") && v.contains(&hog_path)),
            "{url}: {slos}"
        );
    }
    for url in [&url, &other_url] {
        let (code, out, err) = sonde(&[
            "fleet",
            "--collector",
            url,
            "explain",
            "--slo",
            "handler-cpu",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("scope: the fleet, from the store"),
            "{url}: {out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("verdict: cpu_contention: ")),
            "{url}: {out}"
        );
        assert!(
            out.contains("explain-node") && out.contains(&hog_path),
            "{url}: {out}"
        );
        let (code, out, err) = sonde(&["fleet", "--collector", url, "slo"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.lines().any(|l| l
                .trim_start()
                .starts_with("why (explain-node): cpu_contention: ")),
            "{url}: {out}"
        );
    }

    // A cgroup at the collector: asked of the agents streaming to it, on
    // their streams, and explained by the node that has it.
    let (code, out, err) = sonde(&[
        "fleet",
        "--collector",
        &url,
        "explain",
        "--cgroup",
        &victim_path,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("asked: 1 replica(s): "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("verdict: cpu_contention: ") && l.contains("node explain-node")),
        "{out}"
    );
    assert!(
        out.contains("explain-node:") && out.contains(&hog_path),
        "{out}"
    );
    let (code, out, err) = sonde(&[
        "fleet",
        "--collector",
        &url,
        "--json",
        "explain",
        "--cgroup",
        &victim_path,
        "--windows",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["asked"], 1, "{answer}");
    assert_eq!(answer["nodes"][0]["node"], "explain-node", "{answer}");
    let e = &answer["nodes"][0]["explanation"];
    for key in ["target", "windows", "findings", "verdict"] {
        assert!(e.get(key).is_some(), "no {key} in {e}");
    }
    assert_eq!(e["windows"]["count"], 2, "{e}");
    assert_eq!(
        e["target"]["cgroups"],
        serde_json::json!([victim_path]),
        "{e}"
    );
    assert_eq!(e["findings"][0]["kind"], "cpu_contention", "{e}");
    assert_eq!(e["findings"][0]["culprits"][0]["name"], hog_path, "{e}");
    // An SLO over chosen windows: asked of the nodes too.
    let (code, out, err) = sonde(&[
        "fleet",
        "--collector",
        &url,
        "--json",
        "explain",
        "--slo",
        "handler-cpu",
        "--windows",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let e = &answer["nodes"][0]["explanation"];
    assert_eq!(e["windows"]["count"], 3, "{answer}");
    assert_eq!(e["target"]["slo"]["signal"], "runqueue.latency", "{answer}");
    assert_eq!(e["findings"][0]["kind"], "cpu_contention", "{answer}");
    let (code, _, err) = sonde(&[
        "fleet",
        "--collector",
        &url,
        "explain",
        "--slo",
        "nope",
        "--windows",
        "3",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has slo nope"), "{err}");
    // Every replica given (one not answering at all): the one the node
    // streams to answers for it.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let (code, out, err) = sonde(&[
        "fleet",
        "--collector",
        &other_url,
        "--collector",
        &url,
        "--collector",
        &gone,
        "--json",
        "explain",
        "--cgroup",
        &victim_path,
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        answer["replicas"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    assert_eq!(
        answer["unreachable"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(answer["asked"], 1, "{answer}");
    assert_eq!(answer["nodes"][0]["node"], "explain-node", "{answer}");
    assert_eq!(
        answer["nodes"][0]["explanation"]["findings"][0]["culprits"][0]["name"], hog_path,
        "{answer}"
    );
    // Several collectors are for that only.
    let (code, _, err) = sonde(&["fleet", "--collector", &url, "--collector", &other_url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("give one"), "{err}");
    // The replica the agent does not stream to has nobody to ask.
    let (code, _, err) = sonde(&[
        "fleet",
        "--collector",
        &other_url,
        "explain",
        "--cgroup",
        &victim_path,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("0 agent(s) asked") && err.contains("give every replica"),
        "{err}"
    );

    // Bad input: one line each, naming the fix.
    let (code, _, err) = sonde(&["explain", "--pod", "no-slash"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NAMESPACE/NAME"), "{err}");
    let (code, _, err) = sonde(&[
        "explain",
        "--attach",
        "--socket",
        &socket_arg,
        "--slo",
        "nope",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no SLO named \"nope\"") && err.contains("handler-cpu"),
        "{err}"
    );
    let (code, _, err) = sonde(&["fleet", "--collector", &url, "explain", "--cgroup", "/x"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("has cgroup /x in its recent windows") && err.contains("1 agent(s) asked"),
        "{err}"
    );
    let (code, _, err) = sonde(&["fleet", "--collector", &url, "explain", "--pod", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NAMESPACE/NAME"), "{err}");

    hog.kill();
    victim.kill();
}

/// The attribution's error where two neighbours take turns on the victim's
/// CPU: a wait is charged to its last holder for at most that holder's run,
/// the rest to `earlier`, so each wait is split and nothing is charged
/// twice. Measured, and the sums checked against the kernel's `run_delay`.
#[test]
fn two_neighbours_taking_turns_split_the_wait_between_the_last_holder_and_earlier() {
    if !privileged() {
        return;
    }
    let victim_cg = TestCgroup::new("explain-split-victim");
    let hogs_cg = [
        TestCgroup::new("explain-split-hog1"),
        TestCgroup::new("explain-split-hog2"),
    ];
    let (windows, waited) = beside(&victim_cg, &[&hogs_cg[0], &hogs_cg[1]], 300, 60);
    let rows: Vec<_> = windows
        .iter()
        .flat_map(|w| &w.runqueue_holders)
        .filter(|v| v.cgroup.cgroup_id == victim_cg.id())
        .collect();
    let total: f64 = rows.iter().map(|v| v.wait_secs).sum();
    let earlier: f64 = rows.iter().map(|v| v.earlier_wait_secs).sum();
    let idle: f64 = rows.iter().map(|v| v.idle_wait_secs).sum();
    let by = |id: u64| -> f64 {
        rows.iter()
            .flat_map(|v| &v.holders)
            .filter(|h| h.cgroup.cgroup_id == id)
            .map(|h| h.wait_secs)
            .sum()
    };
    let (hog1, hog2) = (by(hogs_cg[0].id()), by(hogs_cg[1].id()));
    eprintln!(
        "victim waited {waited:.4} s (run_delay); sonde {total:.4} s: hog1 {hog1:.4}, hog2 {hog2:.4}, earlier {earlier:.4}, idle {idle:.4} (hogs {:.1} %, earlier {:.1} %)",
        100.0 * (hog1 + hog2) / total,
        100.0 * earlier / total
    );
    // Every wait is charged once, split or not.
    assert!(
        (total - waited).abs() <= 0.10 * waited,
        "sonde {total} s, run_delay {waited} s"
    );
    // Both neighbours are named, and with what was charged before the last
    // holder's run they account for the wait.
    // Both are named, and as last holders they take a large part of the
    // waits (58-61 % together measured on the host; how it splits between
    // the two varies from run to run).
    assert!(hog1 > 0.0 && hog2 > 0.0, "hog1 {hog1}, hog2 {hog2}");
    assert!(
        hog1 + hog2 >= 0.4 * total,
        "hogs {hog1} + {hog2} of {total}"
    );
    assert!(
        hog1 + hog2 + earlier >= 0.9 * total,
        "hogs {hog1} + {hog2}, earlier {earlier}, of {total}"
    );
}
