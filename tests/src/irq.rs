//! Interrupt family: softirq and hard IRQ handler entries per CPU against
//! the kernel's own counts in `/proc/softirqs` and `/proc/interrupts`.
//!
//! The kernel counts an entry just before the tracepoint sonde counts it
//! at, on every CPU at once, so no single read of the files equals a
//! window. Each of the window's two map reads is bracketed by reads of the
//! files: for every (vector or IRQ, CPU), the kernel's count over the
//! window lies between its counts between the inner reads (after the first
//! map read, before the second) and between the outer ones, and sonde's
//! must too. The load (sleeps, a loopback UDP flood, direct disk reads)
//! makes the brackets wide in counts but narrow in time.
//!
//! One exception, measured on this workplace's machines: their kernel runs
//! no BPF program in the context of the machine's own PID 1 (its sandbox
//! agent), so an interrupt that lands while one of PID 1's threads runs is
//! counted by the kernel and never seen by sonde (10 of 10 such softirq
//! entries unseen in a 5 s trace, every one of the 168 others seen). The
//! test reads the kernel's own trace of the same tracepoints (a tracefs
//! instance with the monotonic clock) and takes the entries it records in
//! PID 1's threads between the inner reads off the lower bound, for each
//! (vector or IRQ, CPU). On any other machine that count is zero or the
//! entries are seen, and the bound is the plain one.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    net::UdpSocket,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
};

use sonde::{probes::ProbeOptions, sampler::Sampler};
use sonde_common::family::Family;

use crate::{in_vm, load_probes, mount_point, privileged};

/// Datagrams sent to ourselves over loopback: about one NET_RX softirq each.
const DATAGRAMS: u32 = 20_000;
/// Direct 4 KiB reads from the root disk (host only): its IRQ's load.
const DISK_READS: u64 = 2_000;

/// (name, CPU) → count, parsed here, not by sonde.
type Counts = BTreeMap<(String, u32), u64>;

fn header_cpus(header: &str) -> Vec<u32> {
    header
        .split_whitespace()
        .map(|c| c.trim_start_matches("CPU").parse().expect("CPU number"))
        .collect()
}

/// `/proc/softirqs`: every vector.
fn softirqs() -> Counts {
    let text = std::fs::read_to_string("/proc/softirqs").expect("read /proc/softirqs");
    let mut lines = text.lines();
    let cpus = header_cpus(lines.next().expect("header"));
    let mut out = Counts::new();
    for line in lines {
        let (name, counts) = line.split_once(':').expect("NAME: counts");
        for (cpu, n) in cpus.iter().zip(counts.split_whitespace()) {
            out.insert((name.trim().to_owned(), *cpu), n.parse().expect("count"));
        }
    }
    out
}

/// `/proc/interrupts`: numbered IRQs with one handler, and every numbered
/// IRQ's handlers.
fn interrupts() -> (Counts, BTreeMap<String, String>) {
    let text = std::fs::read_to_string("/proc/interrupts").expect("read /proc/interrupts");
    let mut lines = text.lines();
    let cpus = header_cpus(lines.next().expect("header"));
    let (mut counts, mut names) = (Counts::new(), BTreeMap::new());
    for line in lines {
        let Some((irq, rest)) = line.split_once(':') else {
            continue;
        };
        let irq = irq.trim();
        if irq.parse::<u32>().is_err() {
            continue; // LOC, NMI, IPIs: no IRQ handler
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let Some(handlers) = fields.get(cpus.len() + 2..) else {
            continue;
        };
        if handlers.is_empty() {
            continue;
        }
        // After the counts: the chip, the hwirq and flow type, then the
        // handlers (x86's layout; arm64 prints one field more, and the
        // test reads names on the host only).
        let handlers = handlers.join(" ");
        names.insert(irq.to_owned(), handlers.clone());
        if handlers.contains(", ") {
            continue; // shared: every handler runs, counted once
        }
        for (cpu, n) in cpus.iter().zip(&fields) {
            counts.insert((irq.to_owned(), *cpu), n.parse().expect("count"));
        }
    }
    (counts, names)
}

/// Both files, and CLOCK_MONOTONIC just after reading them (when `after`)
/// or just before.
struct Kernel {
    soft: Counts,
    hard: Counts,
    mono_secs: f64,
}

fn mono_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn kernel(after: bool) -> Kernel {
    let before = mono_secs();
    let (soft, hard) = (softirqs(), interrupts().0);
    Kernel {
        soft,
        hard,
        mono_secs: if after { mono_secs() } else { before },
    }
}

fn minus(a: &Counts, b: &Counts, key: &(String, u32)) -> u64 {
    a.get(key).copied().unwrap_or(0) - b.get(key).copied().unwrap_or(0)
}

/// A tracefs instance recording `irq:softirq_entry` and
/// `irq:irq_handler_entry` with the monotonic clock; removed on drop.
struct Trace {
    dir: PathBuf,
}

impl Trace {
    fn start() -> Self {
        let root = mount_point("tracefs", None).unwrap_or_else(|| {
            let at = c"/sys/kernel/tracing";
            // SAFETY: NUL-terminated strings; mounting tracefs where the
            // kernel provides its mount point.
            let rc = unsafe {
                libc::mount(
                    c"tracefs".as_ptr(),
                    at.as_ptr(),
                    c"tracefs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "mount tracefs: {}", std::io::Error::last_os_error());
            PathBuf::from("/sys/kernel/tracing")
        });
        let dir = root.join(format!("instances/sonde-irq-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("a tracefs instance");
        let write = |file: &str, value: &str| {
            std::fs::write(dir.join(file), value).unwrap_or_else(|e| panic!("{file}: {e}"));
        };
        write("trace_clock", "mono");
        write("buffer_size_kb", "16384");
        write("events/irq/softirq_entry/enable", "1");
        write("events/irq/irq_handler_entry/enable", "1");
        Self { dir }
    }

    /// Entries recorded in a thread of PID 1 between `from` and `to`
    /// (monotonic seconds), per (vector name or IRQ, CPU): softirqs and
    /// hard IRQs apart.
    fn in_pid1(&self, from: f64, to: f64) -> (Counts, Counts) {
        for event in ["softirq_entry", "irq_handler_entry"] {
            let _ = std::fs::write(self.dir.join(format!("events/irq/{event}/enable")), "0");
        }
        let text = std::fs::read_to_string(self.dir.join("trace")).expect("read the trace");
        let mut tgid: HashMap<u32, bool> = HashMap::new();
        let (mut soft, mut hard) = (Counts::new(), Counts::new());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // `<comm>-<pid> [<cpu>] <flags> <secs>: <event>: <fields>`
            let Some((head, event)) = line.split_once(": ") else {
                continue;
            };
            // The CPU's bracket is the last '[' (flags and time hold none).
            let Some(open) = head.rfind('[') else {
                continue;
            };
            let (task, after) = head.split_at(open);
            let Some((cpu, after)) = after[1..].split_once(']') else {
                continue;
            };
            let Ok(cpu) = cpu.parse::<u32>() else {
                continue;
            };
            let Some(Ok(secs)) = after.split_whitespace().nth(1).map(str::parse::<f64>) else {
                continue;
            };
            let Some(pid) = task
                .trim()
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !(from..=to).contains(&secs) || pid == 0 {
                continue;
            }
            let of_pid1 = *tgid.entry(pid).or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| s.lines().any(|l| l.split_whitespace().eq(["Tgid:", "1"])))
                    .unwrap_or(false)
            });
            if !of_pid1 {
                continue;
            }
            if let Some(v) = event.strip_prefix("softirq_entry: ") {
                if let Some(name) = v.split("[action=").nth(1) {
                    *soft
                        .entry((name.trim_end_matches(']').to_owned(), cpu))
                        .or_default() += 1;
                }
            } else if let Some(v) = event.strip_prefix("irq_handler_entry: irq=") {
                if let Some(irq) = v.split_whitespace().next() {
                    *hard.entry((irq.to_owned(), cpu)).or_default() += 1;
                }
            }
        }
        (soft, hard)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        for event in ["softirq_entry", "irq_handler_entry"] {
            let _ = std::fs::write(self.dir.join(format!("events/irq/{event}/enable")), "0");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn softirq_and_irq_entries_match_the_kernels_counts() {
    if !privileged() {
        return;
    }
    let probes = load_probes(
        "irq",
        ProbeOptions {
            disabled: Family::ALL
                .into_iter()
                .filter(|&f| f != Family::Irq)
                .collect(),
            ..Default::default()
        },
    );
    let disk = (!in_vm()).then(|| {
        let path = std::env::temp_dir().join(format!("sonde-irq-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).expect("create the disk file");
        f.write_all(&vec![7u8; (DISK_READS * 4096) as usize])
            .expect("write");
        f.sync_all().expect("fsync");
        path
    });
    let trace = Trace::start();

    let a = kernel(false);
    let mut sampler = Sampler::start(probes).expect("first reading");
    // The clock before B's read and after C's: the PID 1 entries taken off
    // the inner bound cover at least the inner interval.
    let b = kernel(false);

    // Two seconds of short sleeps: the timer tick's softirqs on idle CPUs.
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // NET_RX: loopback datagrams.
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = rx.local_addr().expect("addr");
    let mut buf = [0u8; 64];
    for i in 0..DATAGRAMS {
        tx.send_to(&i.to_le_bytes(), to).expect("send");
        rx.recv(&mut buf).expect("recv");
    }
    if let Some(path) = &disk {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .expect("open O_DIRECT");
        let block = crate::AlignedBuffer::new(4096);
        for i in 0..DISK_READS {
            // SAFETY: a page-aligned buffer of 4096 bytes, an open file.
            let n = unsafe {
                libc::pread(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    block.ptr(),
                    4096,
                    (i * 4096) as libc::off_t,
                )
            };
            assert_eq!(
                n,
                4096,
                "direct read {i}: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    let c = kernel(true);
    let snapshot = sampler.tick().expect("second reading");
    let d = kernel(true);
    if let Some(path) = &disk {
        let _ = std::fs::remove_file(path);
    }
    // Between the inner reads, and over the whole window.
    let (hidden_soft, hidden_hard) = trace.in_pid1(b.mono_secs, c.mono_secs);
    let (window_soft, window_hard) = trace.in_pid1(a.mono_secs, d.mono_secs);
    drop(trace);
    let w = &snapshot.irq.window;
    eprintln!(
        "irq: window {:.2}s, {} softirq and {} IRQ entries; in PID 1: softirqs {hidden_soft:?} IRQs {hidden_hard:?} (whole window: {window_soft:?} {window_hard:?}); the window's check: {:?}",
        snapshot.window_secs,
        w.softirqs.iter().map(|l| l.count).sum::<u64>(),
        w.irqs.iter().map(|l| l.count).sum::<u64>(),
        w.check.as_ref().map(|c| &c.mismatches)
    );

    // sonde's entries per (name, CPU), from the window.
    let per_cpu = |lines: &[sonde::model::irq::InterruptLine]| -> Counts {
        lines
            .iter()
            .flat_map(|l| {
                l.per_cpu
                    .iter()
                    .map(|&(cpu, n, _)| ((l.name.clone(), cpu), n))
            })
            .collect()
    };
    let sonde_soft = per_cpu(&w.softirqs);
    let sonde_hard = per_cpu(&w.irqs);

    let check = |what: &str,
                 sonde: &Counts,
                 k: fn(&Kernel) -> &Counts,
                 hidden: &Counts,
                 every_key: bool| {
        let mut pairs = 0;
        for key in k(&d).keys() {
            let got = sonde.get(key).copied().unwrap_or(0);
            let hidden = hidden.get(key).copied().unwrap_or(0);
            let (min, max) = (minus(k(&c), k(&b), key), minus(k(&d), k(&a), key));
            assert!(
                got <= max && got + hidden >= min,
                "{what} {} on CPU {}: sonde counted {got}, the kernel between {min} and {max}, {hidden} of them in PID 1",
                key.0,
                key.1
            );
            pairs += 1;
        }
        // Nothing counted that the kernel does not list (it lists every
        // vector, but not the shared IRQs).
        for (key, n) in sonde.iter().filter(|_| every_key) {
            assert!(
                k(&d).contains_key(key) || *n == 0,
                "{what} {key:?}: sonde counted {n}, the kernel lists none"
            );
        }
        pairs
    };
    let soft_pairs = check("softirq", &sonde_soft, |k| &k.soft, &hidden_soft, true);
    let irq_pairs = check("IRQ", &sonde_hard, |k| &k.hard, &hidden_hard, false);
    let ncpu = b.soft.keys().filter(|k| k.0 == "HI").count() as u64;
    assert_eq!(soft_pairs as u64, 10 * ncpu);

    // Durations against entries. A window's entries come from the totals
    // maps and its durations (one per exit) from the histogram map, read
    // after them: each of the two readings sees the totals a little before
    // the histograms. So, per vector or IRQ over all CPUs, the durations
    // can exceed the entries by one in-flight handler per CPU at the first
    // reading plus the entries the kernel made during the second reading
    // (c to d), and fall short by one per CPU plus the entries made during
    // the first (a to b). Under emulation a reading takes long enough for
    // RCU to run meanwhile (12 entries and 15 durations seen on arm64).
    // The kernel's entries of one vector or IRQ, on every CPU, between two
    // reads of its files.
    let during = |k: fn(&Kernel) -> &Counts, from: &Kernel, to: &Kernel, name: &str| -> u64 {
        k(to)
            .keys()
            .filter(|key| key.0 == name)
            .map(|key| minus(k(to), k(from), key))
            .sum()
    };
    let durations_match_entries =
        |what: &str, name: &str, entries: u64, durations: u64, k: fn(&Kernel) -> &Counts| {
            let in_first = during(k, &a, &b, name);
            let in_second = during(k, &c, &d, name);
            assert!(
                durations <= entries + ncpu + in_second && entries <= durations + ncpu + in_first,
                "{what} {name}: {entries} entries, {durations} durations; \
             the kernel's entries during the first reading {in_first}, \
             during the second {in_second}; {ncpu} CPUs"
            );
        };

    // The load was there: NET_RX ran at least once per 4 datagrams between
    // the inner reads, and sonde saw all but those in PID 1.
    let sum = |counts: &Counts, name: &str| -> u64 {
        counts
            .iter()
            .filter(|(k, _)| k.0 == name)
            .map(|(_, n)| n)
            .sum()
    };
    let net_rx = sum(&sonde_soft, "NET_RX");
    let net_rx_min = during(|k| &k.soft, &b, &c, "NET_RX");
    assert!(
        net_rx + sum(&hidden_soft, "NET_RX") >= net_rx_min
            && net_rx_min >= u64::from(DATAGRAMS / 4),
        "NET_RX: sonde {net_rx}, kernel at least {net_rx_min}"
    );

    // The disk's IRQ: the single-handler IRQ that moved most, with its
    // handler's name as /proc/interrupts gives it.
    if disk.is_some() {
        let mut moved: BTreeMap<String, u64> = BTreeMap::new();
        for key in c.hard.keys() {
            *moved.entry(key.0.clone()).or_default() += minus(&c.hard, &b.hard, key);
        }
        let (irq, n) = moved.iter().max_by_key(|(_, n)| **n).expect("an IRQ");
        assert!(*n >= DISK_READS / 4, "IRQ {irq} moved only {n}");
        let line = w
            .irqs
            .iter()
            .find(|l| &l.name == irq)
            .unwrap_or_else(|| panic!("IRQ {irq} missing from {:?}", w.irqs));
        assert!(
            line.count + sum(&hidden_hard, irq) >= *n,
            "IRQ {irq}: {} < {n}",
            line.count
        );
        let names = interrupts().1;
        assert_eq!(line.handler.as_ref(), names.get(irq));
        assert!(line.time_secs > 0.0 && line.p99_secs.is_some(), "{line:?}");
        durations_match_entries("IRQ", irq, line.count, line.duration.count(), |k| &k.hard);
    }

    // The window's own check: the same pairs, and out of bounds only below,
    // by no more than the entries the kernel traced in PID 1 over the
    // window; whole where there were none.
    let own = w.check.as_ref().expect("the window's check");
    assert_eq!(own.softirq_pairs, soft_pairs as u64, "{own:?}");
    assert_eq!(own.irq_pairs, irq_pairs as u64, "{own:?}");
    assert_eq!(
        own.softirq_entries,
        sonde_soft.values().sum::<u64>(),
        "{own:?}"
    );
    for m in &own.mismatches {
        let hidden = match m.kind {
            "softirq" => &window_soft,
            _ => &window_hard,
        };
        let hidden = hidden.get(&(m.name.clone(), m.cpu)).copied().unwrap_or(0);
        assert!(
            m.sonde < m.kernel_min && m.sonde + hidden >= m.kernel_min,
            "{m:?}: {hidden} entries in PID 1"
        );
    }
    if window_soft.is_empty() && window_hard.is_empty() {
        assert!(own.ok, "{own:?}");
    }

    for l in &w.softirqs {
        durations_match_entries("softirq", &l.name, l.count, l.duration.count(), |k| &k.soft);
        assert!(l.time_secs >= 0.0 && l.time_secs <= snapshot.window_secs * ncpu as f64);
    }
    assert!(
        w.utilization > 0.0 && w.utilization < 1.0,
        "{}",
        w.utilization
    );

    // Nothing lost.
    for l in snapshot.losses.iter().filter(|l| l.probe == "irq") {
        assert_eq!(l.count, 0, "{l:?}");
    }
}
