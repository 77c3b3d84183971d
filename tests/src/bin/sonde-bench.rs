//! Benchmark driver, run as root by `cargo xtask bench`. Each benchmark times
//! a workload under several conditions in the same run, rounds alternating
//! the conditions so that drift hits them all alike, and reports medians:
//!
//! - `syscalls`: a tight getppid loop (ns per call) with no probes, empty
//!   programs on the same hooks (the floor), sonde's syscall probes (the real
//!   agent), and bpftrace building the same histograms;
//! - `sched`: a pipe ping-pong pinned to one CPU (ns per context switch)
//!   with no probes, the floor, and sonde's scheduler probes;
//! - `tcp-connect`: a loopback connect/accept storm (ns per connection:
//!   connect, accept, close on both sides) and `tcp-bulk`: one loopback
//!   transfer (ns per MiB), each in a network namespace of its own, with no
//!   probes, empty programs on the TCP hooks, and sonde's TCP probes.
//!
//! A last pass with `kernel.bpf_stats_enabled=1` gives each program's share
//! (the stats' own cost stays out of the timings) and the agent's CPU and
//! peak RSS under the load.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use sonde::probes::{program_stats, Probes};

/// Seconds of continuous load for the agent's CPU and the bpf_stats pass.
const LOAD_SECS: u64 = 5;

const BPFTRACE_SCRIPT: &str = r#"
tracepoint:raw_syscalls:sys_enter { @start[tid] = nsecs; }
tracepoint:raw_syscalls:sys_exit /@start[tid]/ {
  @lat[cgroup, args->id] = hist(nsecs - @start[tid]);
  if (args->ret < 0 && args->ret >= -4095) { @err[cgroup, args->id, -args->ret] = count(); }
  delete(@start[tid]);
}
"#;

#[derive(Clone, Copy, Debug)]
enum Condition {
    /// Nothing attached.
    Bare,
    /// Empty programs on a family's hooks.
    Floor(&'static str),
    /// The real agent, with only these families.
    Agent(&'static str),
    /// bpftrace with the equivalent script.
    Bpftrace,
}

impl Condition {
    fn name(self) -> String {
        match self {
            Condition::Bare => "no probes".to_owned(),
            Condition::Floor(_) => "empty programs (floor)".to_owned(),
            Condition::Agent(families) => format!("sonde agent ({families})"),
            Condition::Bpftrace => "bpftrace".to_owned(),
        }
    }
}

struct Bench {
    name: &'static str,
    /// Unit of one operation, for the report.
    unit: &'static str,
    /// Operations per second, under this name, for the report (`None`:
    /// nanoseconds only).
    rate: Option<&'static str>,
    /// Workload subcommand of this binary.
    workload: &'static str,
    conditions: &'static [Condition],
    /// sonde's programs on these hooks.
    programs: &'static [&'static str],
}

const BENCHES: [Bench; 4] = [
    Bench {
        name: "syscalls",
        unit: "syscall",
        rate: None,
        workload: "getppid",
        conditions: &[
            Condition::Bare,
            Condition::Floor("syscalls"),
            Condition::Agent("syscalls"),
            Condition::Bpftrace,
        ],
        programs: &["syscall_enter", "syscall_exit"],
    },
    Bench {
        name: "sched",
        unit: "context switch",
        rate: None,
        workload: "pingpong",
        conditions: &[
            Condition::Bare,
            Condition::Floor("sched"),
            Condition::Agent("sched"),
        ],
        programs: &sonde::probes::sched::PROGRAMS,
    },
    Bench {
        name: "tcp-connect",
        unit: "connection",
        rate: Some("connections/s"),
        workload: "connstorm",
        conditions: &[
            Condition::Bare,
            Condition::Floor("tcp"),
            Condition::Agent("tcp"),
        ],
        programs: &sonde::probes::tcp::PROGRAMS,
    },
    Bench {
        name: "tcp-bulk",
        unit: "MiB",
        rate: Some("MiB/s"),
        workload: "bulk",
        conditions: &[
            Condition::Bare,
            Condition::Floor("tcp"),
            Condition::Agent("tcp"),
        ],
        programs: &sonde::probes::tcp::PROGRAMS,
    },
];

fn main() {
    if let Err(e) = run() {
        eprintln!("sonde-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .with_context(|| format!("missing {flag}"))
    };
    match args.get(1).map(String::as_str) {
        Some("getppid") => {
            println!("{}", getppid_loop(value("--ops")?.parse()?));
            Ok(())
        }
        Some("pingpong") => {
            println!("{}", pingpong(value("--ops")?.parse()?)?);
            Ok(())
        }
        Some("connstorm") => {
            println!("{}", connstorm(value("--ops")?.parse()?)?);
            Ok(())
        }
        Some("bulk") => {
            println!("{}", bulk(value("--ops")?.parse()?)?);
            Ok(())
        }
        Some(name) => {
            let bench = BENCHES
                .iter()
                .find(|b| b.name == name)
                .with_context(|| format!("no benchmark {name}"))?;
            let ops: u64 = value("--ops")?.parse()?;
            let rounds: u32 = value("--rounds")?.parse()?;
            let sonde = PathBuf::from(value("--sonde")?);
            let out = PathBuf::from(value("--out")?);
            run_bench(bench, ops, rounds, &sonde, &out)
        }
        None => {
            bail!("usage: sonde-bench syscalls|sched|tcp-connect|tcp-bulk --ops N --rounds R --sonde PATH --out FILE")
        }
    }
}

/// ns per getppid call over `calls` calls.
fn getppid_loop(calls: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getppid has no preconditions; the raw syscall avoids any
        // caching a libc wrapper might do.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// ns per context switch: two processes on one CPU hand a byte back and
/// forth `round_trips` times (two switches per round trip).
fn pingpong(round_trips: u64) -> Result<f64> {
    let mut to_child = [0; 2];
    let mut to_parent = [0; 2];
    // SAFETY: valid two-element arrays.
    unsafe {
        if libc::pipe(to_child.as_mut_ptr()) != 0 || libc::pipe(to_parent.as_mut_ptr()) != 0 {
            bail!("pipe failed");
        }
    }
    pin_to_cpu0();
    // SAFETY: the child only makes system calls, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: raw reads and writes of one byte on our pipes.
        unsafe {
            for _ in 0..round_trips {
                libc::read(to_child[0], (&mut byte as *mut u8).cast(), 1);
                libc::write(to_parent[1], (&byte as *const u8).cast(), 1);
            }
            libc::_exit(0);
        }
    }
    let mut byte = 0u8;
    let start = Instant::now();
    // SAFETY: as in the child.
    unsafe {
        for _ in 0..round_trips {
            libc::write(to_child[1], (&byte as *const u8).cast(), 1);
            libc::read(to_parent[0], (&mut byte as *mut u8).cast(), 1);
        }
    }
    let elapsed = start.elapsed();
    let mut status = 0;
    // SAFETY: reaping our own child; closing our pipes.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        for fd in to_child.into_iter().chain(to_parent) {
            libc::close(fd);
        }
    }
    Ok(elapsed.as_nanos() as f64 / (2 * round_trips) as f64)
}

/// Moves this process into a network namespace of its own with its
/// loopback up: the benchmark's connections stay out of the host's, and
/// each measurement starts without the last one's time-wait sockets.
fn own_loopback() -> Result<()> {
    // SAFETY: unshare and ioctl on a zeroed ifreq naming "lo".
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            bail!("SIOCGIFFLAGS lo: {}", std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
            bail!("SIOCSIFFLAGS lo: {}", std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}

/// ns per connection: `n` loopback connects, each accepted and closed by
/// a server thread, then closed by the client once it saw the server's end
/// (the server closes first, so the time-wait sockets are the server's and
/// the client's ports are free again at once).
fn connstorm(n: u64) -> Result<f64> {
    own_loopback()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..n {
            drop(listener.accept()?);
        }
        Ok(())
    });
    let start = Instant::now();
    let mut byte = [0u8; 1];
    for _ in 0..n {
        let mut client = TcpStream::connect(addr)?;
        if client.read(&mut byte)? != 0 {
            bail!("the server sent data");
        }
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

/// ns per MiB: one loopback connection carrying `mib` MiB to a server
/// thread that reads it all.
fn bulk(mib: u64) -> Result<f64> {
    const MIB: usize = 1 << 20;
    own_loopback()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; MIB];
        let mut total = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let chunk = vec![7u8; MIB];
    let start = Instant::now();
    let mut client = TcpStream::connect(addr)?;
    for _ in 0..mib {
        client.write_all(&chunk)?;
    }
    client.shutdown(std::net::Shutdown::Write)?;
    let received = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    let elapsed = start.elapsed();
    if received != mib * MIB as u64 {
        bail!("received {received} bytes of {}", mib * MIB as u64);
    }
    Ok(elapsed.as_nanos() as f64 / mib as f64)
}

fn pin_to_cpu0() {
    // SAFETY: cpu_set_t is plain data; the macros only set bits in it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn measure(workload: &str, ops: u64) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args([workload, "--ops", &ops.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("{workload} workload failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

struct Agent {
    child: Child,
    started: Instant,
    cpu_start_ns: u64,
}

/// CPU time of a process's threads in nanoseconds, from each thread's
/// `schedstat` (first field: time on CPU), finer than stat's clock ticks.
fn proc_cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += text
            .split_whitespace()
            .next()
            .context("schedstat")?
            .parse::<u64>()?;
    }
    Ok(total)
}

fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .context("status key")?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn start_agent(sonde: &Path, families: Option<&str>) -> Result<Agent> {
    let mut cmd = Command::new(sonde);
    cmd.args(["agent", "--interval", "1s", "--json"]);
    if let Some(families) = families {
        cmd.args(["--probes", families]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn sonde agent")?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    while !line.contains("agent ready") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("sonde agent did not start");
        }
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink);
    });
    let cpu_start_ns = proc_cpu_ns(child.id())?;
    Ok(Agent {
        child,
        started: Instant::now(),
        cpu_start_ns,
    })
}

fn stop(child: &mut Child, signal: libc::c_int) -> Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    child.wait()?;
    Ok(())
}

fn start_bpftrace() -> Result<Child> {
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE_SCRIPT])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn bpftrace (cargo xtask setup --bench installs it)")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if !line.starts_with("Attaching") {
        bail!("bpftrace did not start: {line}");
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    // "Attaching" is printed before the probes are live.
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn timed(condition: Condition, bench: &Bench, ops: u64, sonde: &Path) -> Result<f64> {
    Ok(match condition {
        Condition::Bare => measure(bench.workload, ops)?,
        Condition::Floor(family) => {
            let floor = Probes::load_floor(family).context("floor programs")?;
            let ns = measure(bench.workload, ops)?;
            drop(floor);
            ns
        }
        Condition::Agent(families) => {
            let mut agent = start_agent(sonde, Some(families))?;
            let ns = measure(bench.workload, ops)?;
            stop(&mut agent.child, libc::SIGTERM)?;
            ns
        }
        Condition::Bpftrace => {
            let mut bpftrace = start_bpftrace()?;
            let ns = measure(bench.workload, ops)?;
            stop(&mut bpftrace, libc::SIGINT)?;
            ns
        }
    })
}

fn run_bench(bench: &Bench, ops: u64, rounds: u32, sonde: &Path, out: &Path) -> Result<()> {
    if !sonde::host::mounts::Mounts::current()?.tracefs_ready() {
        sonde::host::mounts::mount_tracefs().context("bpftrace needs tracefs")?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); bench.conditions.len()];
    for round in 0..rounds {
        for (i, &condition) in bench.conditions.iter().enumerate() {
            let ns = timed(condition, bench, ops, sonde)?;
            eprintln!(
                "round {}/{rounds}  {:<28} {ns:>8.1} ns/{}",
                round + 1,
                condition.name(),
                bench.unit
            );
            samples[i].push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let added: Vec<f64> = medians.iter().map(|m| m - medians[0]).collect();

    // bpf_stats pass, with the whole agent (every family) under the load.
    let previous =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enable bpf_stats")?;
    // Only this agent's programs: those that appeared while it started.
    let existing: Vec<u32> = program_stats(bench.programs).iter().map(|p| p.id).collect();
    let mut agent = start_agent(sonde, None)?;
    let ours = |stats: Vec<sonde::probes::ProgramStats>| -> Vec<sonde::probes::ProgramStats> {
        stats
            .into_iter()
            .filter(|p| !existing.contains(&p.id))
            .collect()
    };
    let before = ours(program_stats(bench.programs));
    let load_start = Instant::now();
    while load_start.elapsed() < Duration::from_secs(LOAD_SECS) {
        measure(bench.workload, ops)?;
    }
    let after = ours(program_stats(bench.programs));
    let pid = agent.child.id();
    let cpu_ns = proc_cpu_ns(pid)? - agent.cpu_start_ns;
    let cpu = 100.0 * cpu_ns as f64 / 1e9 / agent.started.elapsed().as_secs_f64();
    let rss_peak_kib = proc_status_kib(pid, "VmHWM:")?;
    stop(&mut agent.child, libc::SIGTERM)?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", previous.trim());
    let shares: Vec<(String, u64, f64)> = after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.id == a.id)?;
            let runs = a.run_count - b.run_count;
            Some((
                a.name.clone(),
                runs,
                (a.run_time_ns - b.run_time_ns) as f64 / runs.max(1) as f64,
            ))
        })
        .collect();
    let total_ns: f64 = shares.iter().map(|(_, runs, ns)| *runs as f64 * ns).sum();

    println!(
        "\n{} benchmark: ns per {}, {ops} per measurement x {rounds} rounds (medians)",
        bench.name, bench.unit
    );
    println!(
        "{:<30} {:>10} {:>10} {:>14}",
        "condition",
        "ns",
        "added ns",
        bench.rate.unwrap_or("")
    );
    for (i, c) in bench.conditions.iter().enumerate() {
        let rate = bench
            .rate
            .map_or(String::new(), |_| format!("{:.0}", 1e9 / medians[i]));
        println!(
            "{:<30} {:>10.1} {:>10.1} {rate:>14}",
            c.name(),
            medians[i],
            added[i]
        );
    }
    let find =
        |pred: fn(&Condition) -> bool| bench.conditions.iter().position(pred).map(|i| added[i]);
    let floor = find(|c| matches!(c, Condition::Floor(_)));
    let ours = find(|c| matches!(c, Condition::Agent(_)));
    let bpftrace = find(|c| matches!(c, Condition::Bpftrace));
    if let (Some(floor), Some(ours)) = (floor, ours) {
        println!("sonde / floor     {:.2}x", ours / floor);
    }
    if let (Some(bpftrace), Some(ours)) = (bpftrace, ours) {
        println!("sonde / bpftrace  {:.2}x", ours / bpftrace);
    }
    println!("agent (all families) peak RSS {:.1} MiB, CPU {cpu:.3} % of one core over {LOAD_SECS} s of load", rss_peak_kib as f64 / 1024.0);
    for (name, runs, ns) in &shares {
        let share = 100.0 * *runs as f64 * ns / total_ns.max(1.0);
        println!("bpf_stats  {name:<16} {runs:>10} runs  {ns:>6.0} ns/run  {share:>5.1} % of sonde's in-kernel time");
    }
    let report = json!({
        "benchmark": bench.name,
        "unit": bench.unit,
        "ops_per_measurement": ops,
        "rounds": rounds,
        "ns": bench.conditions.iter().zip(&medians).map(|(c, m)| (c.name(), *m)).collect::<std::collections::BTreeMap<_, _>>(),
        "per_second": bench.rate.map(|unit| json!({
            "unit": unit,
            "values": bench.conditions.iter().zip(&medians).map(|(c, m)| (c.name(), 1e9 / *m)).collect::<std::collections::BTreeMap<_, _>>(),
        })),
        "added_ns": bench.conditions.iter().zip(&added).map(|(c, m)| (c.name(), *m)).collect::<std::collections::BTreeMap<_, _>>(),
        "sonde_over_floor": floor.zip(ours).map(|(f, o)| o / f),
        "sonde_over_bpftrace": bpftrace.zip(ours).map(|(b, o)| o / b),
        "agent_peak_rss_mib": rss_peak_kib as f64 / 1024.0,
        "agent_cpu_percent": cpu,
        "bpf_stats": shares.iter().map(|(n, r, ns)| json!({"program": n, "runs": r, "ns_per_run": ns})).collect::<Vec<_>>(),
        "samples": bench.conditions.iter().zip(&samples).map(|(c, s)| (c.name(), s.clone())).collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", out.display());
    Ok(())
}
