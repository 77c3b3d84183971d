//! Benchmark driver, run as root by `cargo xtask bench`. Measures what a
//! tight getppid loop loses under four conditions in the same run, rounds
//! alternating conditions so that drift hits them all alike:
//! no probes; empty programs on the same hooks (the floor); the real `sonde
//! agent`; bpftrace building the same per-syscall latency histogram.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Condition {
    Bare,
    Floor,
    Sonde,
    Bpftrace,
}

const CONDITIONS: [Condition; 4] = [
    Condition::Bare,
    Condition::Floor,
    Condition::Sonde,
    Condition::Bpftrace,
];

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Bare => "no probes",
            Condition::Floor => "empty programs (floor)",
            Condition::Sonde => "sonde agent",
            Condition::Bpftrace => "bpftrace",
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("sonde-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("loop") => {
            let calls: u64 = args.get(2).context("loop CALLS")?.parse()?;
            println!("{}", getppid_loop(calls));
            Ok(())
        }
        Some("syscalls") => {
            let value = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
                    .with_context(|| format!("missing {flag}"))
            };
            let calls: u64 = value("--calls")?.parse()?;
            let rounds: u32 = value("--rounds")?.parse()?;
            let sonde = PathBuf::from(value("--sonde")?);
            let out = PathBuf::from(value("--out")?);
            syscalls(calls, rounds, &sonde, &out)
        }
        _ => bail!(
            "usage: sonde-bench syscalls --calls N --rounds R --sonde PATH --out FILE | loop N"
        ),
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

fn measure(calls: u64) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args(["loop", &calls.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("loop child failed");
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

fn start_agent(sonde: &PathBuf) -> Result<Agent> {
    let mut child = Command::new(sonde)
        .args(["agent", "--interval", "1s", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn sonde agent")?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    if !line.contains("agent ready") {
        bail!("sonde agent did not start: {line}");
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

fn syscalls(calls: u64, rounds: u32, sonde: &PathBuf, out: &PathBuf) -> Result<()> {
    if !sonde::host::mounts::Mounts::current()?.tracefs_ready() {
        sonde::host::mounts::mount_tracefs().context("bpftrace needs tracefs")?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONDITIONS.len()];
    let mut rss_peak_kib = 0u64;
    for round in 0..rounds {
        for (i, condition) in CONDITIONS.iter().enumerate() {
            let ns = match condition {
                Condition::Bare => measure(calls)?,
                Condition::Floor => {
                    let floor = Probes::load_floor("syscalls").context("floor programs")?;
                    let ns = measure(calls)?;
                    drop(floor);
                    ns
                }
                Condition::Sonde => {
                    let mut agent = start_agent(sonde)?;
                    let ns = measure(calls)?;
                    rss_peak_kib = rss_peak_kib.max(proc_status_kib(agent.child.id(), "VmHWM:")?);
                    stop(&mut agent.child, libc::SIGTERM)?;
                    ns
                }
                Condition::Bpftrace => {
                    let mut bpftrace = start_bpftrace()?;
                    let ns = measure(calls)?;
                    stop(&mut bpftrace, libc::SIGINT)?;
                    ns
                }
            };
            eprintln!(
                "round {}/{rounds}  {:<24} {ns:>8.1} ns/call",
                round + 1,
                condition.name()
            );
            samples[i].push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let bare = medians[0];
    let added: Vec<f64> = medians.iter().map(|m| m - bare).collect();

    // Each program's share, from bpf_stats, in a separate pass (the stats
    // themselves cost ~100 ns per run, so they stay out of the timings).
    let previous =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enable bpf_stats")?;
    // The same pass gives the agent's CPU under load: the loop runs for
    // LOAD_SECS while the agent closes a window every second.
    let mut agent = start_agent(sonde)?;
    let before = program_stats(&["syscall_enter", "syscall_exit"]);
    let load_start = Instant::now();
    while load_start.elapsed() < Duration::from_secs(LOAD_SECS) {
        measure(calls)?;
    }
    let after = program_stats(&["syscall_enter", "syscall_exit"]);
    let pid = agent.child.id();
    let cpu_ns = proc_cpu_ns(pid)? - agent.cpu_start_ns;
    let cpu = 100.0 * cpu_ns as f64 / 1e9 / agent.started.elapsed().as_secs_f64();
    rss_peak_kib = rss_peak_kib.max(proc_status_kib(pid, "VmHWM:")?);
    stop(&mut agent.child, libc::SIGTERM)?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", previous.trim());
    let shares: Vec<_> = after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.id == a.id)?;
            let runs = a.run_count - b.run_count;
            let ns = a.run_time_ns - b.run_time_ns;
            Some((a.name.clone(), runs, ns as f64 / runs.max(1) as f64))
        })
        .collect();

    println!("\nsyscalls benchmark: getppid loop, {calls} calls x {rounds} rounds (medians)");
    println!("{:<26} {:>10} {:>12}", "condition", "ns/call", "added ns");
    for (i, c) in CONDITIONS.iter().enumerate() {
        println!("{:<26} {:>10.1} {:>12.1}", c.name(), medians[i], added[i]);
    }
    let (floor, ours, bpftrace) = (added[1], added[2], added[3]);
    println!("sonde / floor    {:.2}x   (target <= 2)", ours / floor);
    println!("sonde / bpftrace {:.2}x   (target <= 0.3)", ours / bpftrace);
    println!(
        "agent peak RSS   {:.1} MiB (target <= 32)",
        rss_peak_kib as f64 / 1024.0
    );
    println!("agent CPU        {cpu:.3} % of one core over {LOAD_SECS} s of load (1 s windows)");
    for (name, runs, ns) in &shares {
        println!(
            "bpf_stats        {name:<14} {runs} runs, {ns:.0} ns/run (stats overhead included)"
        );
    }
    let report = json!({
        "benchmark": "syscalls",
        "calls": calls,
        "rounds": rounds,
        "ns_per_call": CONDITIONS.iter().zip(&medians).map(|(c, m)| (c.name(), *m)).collect::<std::collections::BTreeMap<_, _>>(),
        "added_ns_per_call": CONDITIONS.iter().zip(&added).map(|(c, m)| (c.name(), *m)).collect::<std::collections::BTreeMap<_, _>>(),
        "sonde_over_floor": ours / floor,
        "sonde_over_bpftrace": ours / bpftrace,
        "agent_peak_rss_mib": rss_peak_kib as f64 / 1024.0,
        "agent_cpu_percent": cpu,
        "bpf_stats": shares.iter().map(|(n, r, ns)| json!({"program": n, "runs": r, "ns_per_run": ns})).collect::<Vec<_>>(),
        "samples": CONDITIONS.iter().zip(&samples).map(|(c, s)| (c.name(), s.clone())).collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", out.display());
    Ok(())
}
