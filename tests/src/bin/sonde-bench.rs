//! Benchmark driver, run as root by `cargo xtask bench`. Each benchmark times
//! a workload under several conditions in the same run. The conditions run
//! in a rotated order from round to round (round r starts with condition
//! r mod n), so that drift over the run lands on every condition in turn;
//! the cost of a condition is the median over rounds of its paired
//! difference (its time minus the no-probe time of the same round), with the
//! smallest and largest of those differences as the spread:
//!
//! - `syscalls`: a tight getppid loop (ns per call) with no probes, empty
//!   programs on the same hooks (the floor), sonde's syscall probes (the real
//!   agent), and bpftrace building the same histograms;
//! - `sched`: a pipe ping-pong pinned to one CPU (ns per context switch)
//!   with no probes, the floor, and sonde's scheduler probes;
//! - `tcp-connect`: a loopback connect/accept storm (ns per connection:
//!   connect, accept, close on both sides) and `tcp-bulk`: one loopback
//!   transfer (ns per MiB), each in a network namespace of its own, with no
//!   probes, empty programs on the TCP hooks, and sonde's TCP probes;
//! - `irq`: a loopback UDP ping on CPU 0 in a network namespace of its
//!   own (ns per softirq, every softirq CPU 0 ran counted from
//!   `/proc/softirqs`) with no probes, empty programs on the four interrupt
//!   hooks, and sonde's interrupt probes;
//! - `helpers`: what the pieces of a latency measurement cost in the kernel,
//!   from `BPF_PROG_TEST_RUN` of small socket-filter programs: a
//!   `bpf_ktime_get_ns` call, a per-CPU hash lookup with an add in place
//!   (sonde's `bump`), a per-CPU hash update of an existing key; and
//!   `clock_gettime` in user space;
//! - `agent`: the whole agent (every family, 1 s windows) on the machine as
//!   it is: steady and peak RSS (`VmRSS`, `VmHWM`) and CPU (utime + stime).
//!
//! After the timed rounds of each workload benchmark, a last pass with
//! `kernel.bpf_stats_enabled=1` runs the whole agent under that load for each
//! program's ns per run and share (the stats' own cost stays out of the
//! timings), and the agent's CPU and memory under the load.
//!
//! Everything printed is also written, with every sample, as JSON (`--out`).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use sonde::probes::{program_stats, Probes};
use sonde_common::family::Family;

/// Seconds of continuous load for the agent's CPU and the bpf_stats pass.
const LOAD_SECS: u64 = 5;
/// Seconds each run of the `agent` benchmark watches the agent.
const AGENT_SECS: u64 = 20;
/// The agent's RSS counts as steady from this many seconds after it is
/// ready (its first windows allocate what later ones reuse).
const AGENT_SETTLE_SECS: u64 = 5;

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
    Floor(Family),
    /// The real agent, with only these families.
    Agent(&'static str),
    /// Another build of the agent (`--sonde-before`), the same families:
    /// a change's before and after in one run.
    AgentBefore(&'static str),
    /// bpftrace with the equivalent script.
    Bpftrace,
}

impl Condition {
    fn name(self) -> String {
        match self {
            Condition::Bare => "no probes".to_owned(),
            Condition::Floor(_) => "empty programs (floor)".to_owned(),
            Condition::Agent(families) => format!("sonde agent ({families})"),
            Condition::AgentBefore(families) => format!("sonde agent before ({families})"),
            Condition::Bpftrace => "bpftrace".to_owned(),
        }
    }
}

struct Bench {
    name: &'static str,
    /// Operations per measurement unless `--ops` says otherwise.
    default_ops: u64,
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

const BENCHES: [Bench; 5] = [
    Bench {
        name: "syscalls",
        default_ops: 2_000_000,
        unit: "syscall",
        rate: None,
        workload: "getppid",
        conditions: &[
            Condition::Bare,
            Condition::Floor(Family::Syscalls),
            Condition::Agent("syscalls"),
            Condition::Bpftrace,
        ],
        programs: &["syscall_enter", "syscall_exit"],
    },
    Bench {
        name: "sched",
        default_ops: 200_000,
        unit: "context switch",
        rate: None,
        workload: "pingpong",
        conditions: &[
            Condition::Bare,
            Condition::Floor(Family::Sched),
            Condition::Agent("sched"),
        ],
        programs: &sonde::probes::sched::PROGRAMS,
    },
    Bench {
        name: "tcp-connect",
        default_ops: 20_000,
        unit: "connection",
        rate: Some("connections/s"),
        workload: "connstorm",
        conditions: &[
            Condition::Bare,
            Condition::Floor(Family::Tcp),
            Condition::Agent("tcp"),
        ],
        programs: &sonde::probes::tcp::PROGRAMS,
    },
    Bench {
        name: "tcp-bulk",
        default_ops: 2048,
        unit: "MiB",
        rate: Some("MiB/s"),
        workload: "bulk",
        conditions: &[
            Condition::Bare,
            Condition::Floor(Family::Tcp),
            Condition::Agent("tcp"),
        ],
        programs: &sonde::probes::tcp::PROGRAMS,
    },
    Bench {
        name: "irq",
        default_ops: 200_000,
        unit: "softirq",
        rate: None,
        workload: "softirqs",
        conditions: &[
            Condition::Bare,
            Condition::Floor(Family::Irq),
            Condition::Agent("irq"),
        ],
        programs: &sonde::probes::irq::PROGRAMS,
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
        Some("softirqs") => {
            println!("{}", softirqs(value("--ops")?.parse()?)?);
            Ok(())
        }
        Some(name) => {
            let ops: Option<u64> = value("--ops").ok().map(|v| v.parse()).transpose()?;
            let rounds: u32 = value("--rounds")?.parse()?;
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let out = PathBuf::from(value("--out")?);
            let mut report = Report::default();
            let result = match name {
                "helpers" => helpers(ops.unwrap_or(HELPER_REPEAT), rounds, &mut report)?,
                "agent" => {
                    let secs = value("--secs").ok().map(|v| v.parse()).transpose()?;
                    let sonde = PathBuf::from(value("--sonde")?);
                    agent_footprint(&sonde, rounds, secs.unwrap_or(AGENT_SECS), &mut report)?
                }
                _ => {
                    let bench = BENCHES
                        .iter()
                        .find(|b| b.name == name)
                        .with_context(|| format!("no benchmark {name}"))?;
                    let sonde = PathBuf::from(value("--sonde")?);
                    let before = value("--sonde-before").ok().map(PathBuf::from);
                    run_bench(
                        bench,
                        ops.unwrap_or(bench.default_ops),
                        rounds,
                        (&sonde, before.as_deref()),
                        &mut report,
                    )?
                }
            };
            write_result(&out, name, result, &report)
        }
        None => {
            bail!("usage: sonde-bench syscalls|sched|tcp-connect|tcp-bulk|irq|helpers|agent [--ops N] --rounds R --sonde PATH --out FILE [--secs S]")
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

/// Softirqs run on CPU 0 so far, all vectors, from `/proc/softirqs`.
fn cpu0_softirqs() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/softirqs")?;
    let mut total = 0;
    for line in text.lines().skip(1) {
        let (_, counts) = line.split_once(':').context("/proc/softirqs line")?;
        total += counts
            .split_whitespace()
            .next()
            .context("CPU0 column")?
            .parse::<u64>()?;
    }
    Ok(total)
}

/// ns per softirq: `datagrams` UDP datagrams sent to ourselves over the
/// loopback of a network namespace of our own, on CPU 0, each received
/// before the next is sent. Each raises NET_RX, which runs as the send
/// leaves its bottom-half section; the time is divided by every softirq
/// CPU 0 ran meanwhile (`/proc/softirqs`), timer ticks included.
fn softirqs(datagrams: u64) -> Result<f64> {
    own_loopback()?;
    pin_to_cpu0();
    let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let to = rx.local_addr()?;
    let mut buf = [0u8; 64];
    let before = cpu0_softirqs()?;
    let start = Instant::now();
    for i in 0..datagrams {
        tx.send_to(&i.to_le_bytes(), to)?;
        rx.recv(&mut buf)?;
    }
    let elapsed = start.elapsed();
    let ran = cpu0_softirqs()? - before;
    if ran < datagrams / 2 {
        bail!("only {ran} softirqs for {datagrams} datagrams");
    }
    Ok(elapsed.as_nanos() as f64 / ran as f64)
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
    /// When the agent said it was ready.
    started: Instant,
    /// Its utime + stime then, in seconds.
    cpu_start_secs: f64,
}

impl Agent {
    /// The agent's CPU since it was ready, in percent of one core.
    fn cpu_percent(&self) -> Result<f64> {
        let cpu = proc_cpu_secs(self.child.id())? - self.cpu_start_secs;
        Ok(100.0 * cpu / self.started.elapsed().as_secs_f64())
    }
}

/// utime + stime of a process (all its threads), in seconds, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it start
    // past its closing parenthesis, with field 3 (state) first.
    let rest = stat.rsplit_once(')').context("/proc/<pid>/stat")?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next().context("utime")?.parse()?;
    let stime: u64 = fields.next().context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        bail!("sysconf(_SC_CLK_TCK) = {ticks}");
    }
    Ok((utime + stime) as f64 / ticks as f64)
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
    let cpu_start_secs = proc_cpu_secs(child.id())?;
    Ok(Agent {
        child,
        started: Instant::now(),
        cpu_start_secs,
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

/// What a benchmark prints, kept for its JSON.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn line(&mut self, text: String) {
        println!("{text}");
        self.lines.push(text);
    }
}

/// Writes one benchmark's result, with what it printed, as JSON.
fn write_result(out: &Path, name: &str, result: Value, report: &Report) -> Result<()> {
    let value = json!({
        "benchmark": name,
        "printed": report.lines,
        "result": result,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("write {}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}

/// The median of some values, with the smallest and the largest.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    /// `None` for no values.
    fn of(values: &[f64]) -> Option<Self> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            *sorted.get(n / 2)?
        } else {
            (sorted.get((n / 2).checked_sub(1)?)? + sorted.get(n / 2)?) / 2.0
        };
        Some(Self {
            median,
            min: *sorted.first()?,
            max: *sorted.last()?,
        })
    }

    fn json(self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max })
    }

    /// `median (min to max)` with `decimals` digits.
    fn show(self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$} to {:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Round `round`'s order of `n` conditions: the order rotated by one more
/// each round, so that over n rounds each condition runs once in each
/// position, and drift over the run favours none of them.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + round) % n)
}

/// Per round, `values` minus `baseline` (the same round's).
fn paired(values: &[f64], baseline: &[f64]) -> Vec<f64> {
    values.iter().zip(baseline).map(|(v, b)| v - b).collect()
}

fn timed(
    condition: Condition,
    bench: &Bench,
    ops: u64,
    (sonde, before): (&Path, Option<&Path>),
) -> Result<f64> {
    Ok(match condition {
        Condition::Bare => measure(bench.workload, ops)?,
        Condition::Floor(family) => {
            let floor = Probes::load_floor(family).context("floor programs")?;
            let ns = measure(bench.workload, ops)?;
            drop(floor);
            ns
        }
        Condition::Agent(families) | Condition::AgentBefore(families) => {
            let binary = match condition {
                Condition::AgentBefore(_) => before.context("no --sonde-before")?,
                _ => sonde,
            };
            let mut agent = start_agent(binary, Some(families))?;
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

fn run_bench(
    bench: &Bench,
    ops: u64,
    rounds: u32,
    (sonde, before): (&Path, Option<&Path>),
    report: &mut Report,
) -> Result<Value> {
    // With another build to compare, its agent runs beside this one's.
    let mut conditions = bench.conditions.to_vec();
    if before.is_some() {
        let families = conditions.iter().find_map(|c| match c {
            Condition::Agent(f) => Some(*f),
            _ => None,
        });
        conditions.extend(families.map(Condition::AgentBefore));
    }
    if !matches!(conditions.first(), Some(Condition::Bare)) {
        bail!("{}: the first condition must be the baseline", bench.name);
    }
    if !sonde::host::mounts::Mounts::current()?.tracefs_ready() {
        sonde::host::mounts::mount_tracefs().context("bpftrace needs tracefs")?;
    }
    let n = conditions.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut orders: Vec<Vec<String>> = Vec::new();
    for round in 0..rounds as usize {
        let mut order = Vec::new();
        for i in rotated(n, round) {
            let condition = *conditions.get(i).context("condition")?;
            let ns = timed(condition, bench, ops, (sonde, before))?;
            eprintln!(
                "round {}/{rounds}  {:<28} {ns:>10.1} ns/{}",
                round + 1,
                condition.name(),
                bench.unit
            );
            samples.get_mut(i).context("condition")?.push(ns);
            order.push(condition.name());
        }
        orders.push(order);
    }
    let baseline = samples.first().context("baseline")?.clone();
    let added: Vec<Vec<f64>> = samples.iter().map(|s| paired(s, &baseline)).collect();
    let spread = |v: &Vec<f64>| Spread::of(v).context("no rounds");
    let ns: Vec<Spread> = samples.iter().map(spread).collect::<Result<_>>()?;
    let added_spread: Vec<Spread> = added.iter().map(spread).collect::<Result<_>>()?;

    report.line(format!(
        "\n{} benchmark: ns per {}, {ops} per measurement, {rounds} rounds, the conditions' order rotated each round",
        bench.name, bench.unit
    ));
    report.line(
        "ns: median over rounds (min to max); added: median of the per-round differences \
         from the same round's no-probe run (min to max)"
            .to_owned(),
    );
    report.line(format!(
        "{:<28} {:>34} {:>30} {:>14}",
        "condition",
        "ns",
        "added ns",
        bench.rate.unwrap_or("")
    ));
    for ((c, ns), added) in conditions.iter().zip(&ns).zip(&added_spread) {
        let rate = bench
            .rate
            .map_or(String::new(), |_| format!("{:.0}", 1e9 / ns.median));
        report.line(format!(
            "{:<28} {:>34} {:>30} {rate:>14}",
            c.name(),
            ns.show(1),
            added.show(1)
        ));
    }
    let find = |pred: fn(&Condition) -> bool| conditions.iter().position(pred);
    let floor = find(|c| matches!(c, Condition::Floor(_)));
    let agent = find(|c| matches!(c, Condition::Agent(_)));
    let bpftrace = find(|c| matches!(c, Condition::Bpftrace));
    // A ratio of added costs: of their medians, and per round (same round's
    // numerator over the same round's denominator).
    let ratio = |num: Option<usize>, den: Option<usize>| -> Option<(f64, Spread)> {
        let (num, den) = (num?, den?);
        let of_medians = added_spread.get(num)?.median / added_spread.get(den)?.median;
        let per_round: Vec<f64> = added
            .get(num)?
            .iter()
            .zip(added.get(den)?)
            .map(|(a, b)| a / b)
            .collect();
        Some((of_medians, Spread::of(&per_round)?))
    };
    let over_floor = ratio(agent, floor);
    let over_bpftrace = ratio(agent, bpftrace);
    // This build against the other, per round: this one's time minus the
    // other's in the same round.
    let against_before = find(|c| matches!(c, Condition::AgentBefore(_))).and_then(|b| {
        let diffs = paired(samples.get(agent?)?, samples.get(b)?);
        Spread::of(&diffs)
    });
    if let Some(d) = against_before {
        report.line(format!(
            "sonde - sonde before  {} ns per {} (this build's time minus the other build's, same round)",
            d.show(1),
            bench.unit
        ));
    }
    if let Some((m, r)) = over_floor {
        report.line(format!(
            "sonde / floor     {m:.2}x (medians; per round {:.2}x to {:.2}x)",
            r.min, r.max
        ));
    }
    if let Some((m, r)) = over_bpftrace {
        report.line(format!(
            "sonde / bpftrace  {m:.2}x (medians; per round {:.2}x to {:.2}x)",
            r.min, r.max
        ));
    }

    let load = agent_under_load(bench, ops, sonde, report)?;
    let ratio_json = |r: Option<(f64, Spread)>| {
        r.map(|(m, s)| json!({ "of_medians": m, "per_round": s.json() }))
    };
    Ok(json!({
        "unit": bench.unit,
        "ops_per_measurement": ops,
        "rounds": rounds,
        "method": "conditions in an order rotated by one each round; added = median over rounds of (condition - no probes) in the same round, with min and max",
        "round_orders": orders,
        "conditions": conditions.iter().enumerate().map(|(i, c)| json!({
            "name": c.name(),
            "ns": ns.get(i).map(|s| s.json()),
            "added_ns": added_spread.get(i).map(|s| s.json()),
            "per_second": bench.rate.and_then(|unit| ns.get(i).map(|s| json!({ "unit": unit, "of_median_ns": 1e9 / s.median }))),
            "samples_ns": samples.get(i),
            "added_samples_ns": added.get(i),
        })).collect::<Vec<_>>(),
        "sonde_over_floor": ratio_json(over_floor),
        "sonde_over_bpftrace": ratio_json(over_bpftrace),
        "sonde_minus_sonde_before_ns": against_before.map(|d| d.json()),
        "agent_under_load": load,
    }))
}

/// The whole agent (every family) under `LOAD_SECS` of the benchmark's load
/// with `kernel.bpf_stats_enabled=1`: each of the benchmark's programs' runs
/// and ns per run, and the agent's CPU and memory.
fn agent_under_load(bench: &Bench, ops: u64, sonde: &Path, report: &mut Report) -> Result<Value> {
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
    let cpu = agent.cpu_percent()?;
    let rss_kib = proc_status_kib(pid, "VmRSS:")?;
    let peak_kib = proc_status_kib(pid, "VmHWM:")?;
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
    report.line(format!(
        "agent (every family, 1 s windows) under {LOAD_SECS} s of this load: CPU {cpu:.2} % of one core (utime+stime), RSS {:.1} MiB, peak {:.1} MiB",
        rss_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0
    ));
    let mut programs = Vec::new();
    for (name, runs, ns) in &shares {
        let share = 100.0 * *runs as f64 * ns / total_ns.max(1.0);
        report.line(format!(
            "bpf_stats  {name:<16} {runs:>10} runs  {ns:>6.1} ns/run  {share:>5.1} % of sonde's in-kernel time (stats' own cost included)"
        ));
        programs.push(
            json!({ "program": name, "runs": runs, "ns_per_run": ns, "share_percent": share }),
        );
    }
    Ok(json!({
        "families": "all",
        "load_secs": LOAD_SECS,
        "cpu_percent_of_one_core": cpu,
        "rss_mib": rss_kib as f64 / 1024.0,
        "peak_rss_mib": peak_kib as f64 / 1024.0,
        "bpf_stats": programs,
    }))
}

/// `agent`: the whole agent, every family, 1 s windows, on the machine as it
/// is, `runs` times for `secs` each: RSS every second once settled (its
/// median is the run's steady RSS), peak RSS (`VmHWM`, start included) and
/// CPU since ready (utime + stime).
fn agent_footprint(sonde: &Path, runs: u32, secs: u64, report: &mut Report) -> Result<Value> {
    if secs <= AGENT_SETTLE_SECS {
        bail!("--secs must be more than {AGENT_SETTLE_SECS}");
    }
    let mut per_run = Vec::new();
    let (mut steady, mut peak, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let mut agent = start_agent(sonde, None)?;
        let pid = agent.child.id();
        let mut rss = Vec::new();
        for second in 1..=secs {
            std::thread::sleep(Duration::from_secs(1));
            if second > AGENT_SETTLE_SECS {
                rss.push(proc_status_kib(pid, "VmRSS:")? as f64 / 1024.0);
            }
        }
        let run_cpu = agent.cpu_percent()?;
        let run_peak = proc_status_kib(pid, "VmHWM:")? as f64 / 1024.0;
        stop(&mut agent.child, libc::SIGTERM)?;
        let run_rss = Spread::of(&rss).context("no RSS sample")?;
        report.line(format!(
            "agent run {}/{runs}: RSS {} MiB over seconds {}-{secs}, peak {run_peak:.1} MiB, CPU {run_cpu:.2} % of one core",
            run + 1,
            run_rss.show(1),
            AGENT_SETTLE_SECS + 1
        ));
        steady.push(run_rss.median);
        peak.push(run_peak);
        cpu.push(run_cpu);
        per_run.push(json!({
            "rss_mib_each_second": rss,
            "steady_rss_mib": run_rss.median,
            "peak_rss_mib": run_peak,
            "cpu_percent_of_one_core": run_cpu,
        }));
    }
    let steady = Spread::of(&steady).context("no run")?;
    let peak = Spread::of(&peak).context("no run")?;
    let cpu = Spread::of(&cpu).context("no run")?;
    report.line(format!(
        "\nagent benchmark: every family, 1 s windows, {runs} runs of {secs} s (median over runs, min to max)"
    ));
    report.line(format!("steady RSS  {} MiB", steady.show(1)));
    report.line(format!("peak RSS    {} MiB", peak.show(1)));
    report.line(format!("CPU         {} % of one core", cpu.show(2)));
    Ok(json!({
        "families": "all",
        "interval_secs": 1,
        "runs": runs,
        "secs_per_run": secs,
        "settle_secs": AGENT_SETTLE_SECS,
        "steady_rss_mib": steady.json(),
        "peak_rss_mib": peak.json(),
        "cpu_percent_of_one_core": cpu.json(),
        "per_run": per_run,
    }))
}

/// Program runs per `BPF_PROG_TEST_RUN` measurement in `helpers`.
const HELPER_REPEAT: u64 = 1_000_000;
/// Helper calls per program run, unrolled: the per-call cost is the run's
/// extra time over an empty program's, divided by this.
const HELPER_CALLS: usize = 32;
/// `clock_gettime` calls per user-space measurement.
const CLOCK_CALLS: u64 = 10_000_000;

/// `helpers`: what the pieces of an in-kernel latency measurement cost, from
/// `BPF_PROG_TEST_RUN` of socket filters (no hook involved), rounds rotated
/// like the other benchmarks, each helper program paired with the empty
/// program of its round.
fn helpers(repeat: u64, rounds: u32, report: &mut Report) -> Result<Value> {
    let repeat = u32::try_from(repeat).context("--ops must fit in 32 bits here")?;
    let map = raw_bpf::percpu_hash(16, 8, 1)?;
    let programs = [
        ("empty program", raw_bpf::empty()),
        ("bpf_ktime_get_ns", raw_bpf::ktime(HELPER_CALLS)),
        (
            "per-CPU hash lookup + add in place (sonde's bump)",
            raw_bpf::bump(&map, HELPER_CALLS),
        ),
        (
            "per-CPU hash update of an existing key",
            raw_bpf::update(&map, HELPER_CALLS),
        ),
    ];
    let loaded: Vec<(&str, std::os::fd::OwnedFd)> = programs
        .iter()
        .map(|(name, insns)| Ok((*name, raw_bpf::load_socket_filter(insns)?)))
        .collect::<Result<_>>()?;
    // The update program inserts the key the lookups find.
    for (_, fd) in &loaded {
        raw_bpf::test_run(fd, 1)?;
    }
    let n = loaded.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut clock = Vec::new();
    for round in 0..rounds as usize {
        for i in rotated(n, round) {
            let (name, fd) = loaded.get(i).context("program")?;
            let ns = f64::from(raw_bpf::test_run(fd, repeat)?);
            eprintln!("round {}/{rounds}  {name:<50} {ns:>8.1} ns/run", round + 1);
            samples.get_mut(i).context("program")?.push(ns);
        }
        clock.push(clock_gettime_ns(CLOCK_CALLS));
    }
    let baseline = samples.first().context("baseline")?.clone();
    report.line(format!(
        "\nhelpers benchmark: BPF_PROG_TEST_RUN of socket filters, {repeat} runs per measurement, {rounds} rounds, order rotated each round; {HELPER_CALLS} calls per run, ns per call = (run - same round's empty run) / {HELPER_CALLS}; median (min to max)"
    ));
    let mut costs = Vec::new();
    for ((name, _), s) in loaded.iter().zip(&samples).skip(1) {
        let per_call: Vec<f64> = paired(s, &baseline)
            .iter()
            .map(|d| d / HELPER_CALLS as f64)
            .collect();
        let spread = Spread::of(&per_call).context("no rounds")?;
        report.line(format!("{name:<50} {} ns per call", spread.show(1)));
        costs.push(json!({
            "name": name,
            "ns_per_call": spread.json(),
            "ns_per_call_samples": per_call,
            "ns_per_run_samples": s,
        }));
    }
    let empty = Spread::of(&baseline).context("no rounds")?;
    report.line(format!(
        "{:<50} {} ns per run",
        "empty program",
        empty.show(1)
    ));
    let clock_spread = Spread::of(&clock).context("no rounds")?;
    report.line(format!(
        "{:<50} {} ns per call",
        "clock_gettime(CLOCK_MONOTONIC), user space",
        clock_spread.show(1)
    ));
    Ok(json!({
        "method": "BPF_PROG_TEST_RUN of socket filters; per call = (program's ns per run - the empty program's in the same round) / calls per run",
        "runs_per_measurement": repeat,
        "calls_per_run": HELPER_CALLS,
        "rounds": rounds,
        "helpers": costs,
        "empty_program_ns_per_run": { "spread": empty.json(), "samples": baseline },
        "clock_gettime_user_ns": { "spread": clock_spread.json(), "samples": clock, "calls_per_measurement": CLOCK_CALLS },
    }))
}

/// ns per `clock_gettime(CLOCK_MONOTONIC)` over `calls` calls (the vDSO).
fn clock_gettime_ns(calls: u64) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        std::hint::black_box(&ts);
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// Just enough of the `bpf()` system call to load hand-assembled socket
/// filters and time them with `BPF_PROG_TEST_RUN`: the helper costs need
/// programs sonde's object does not have, and none of them attaches
/// anywhere.
mod raw_bpf {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    use anyhow::{bail, Result};

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    const BPF_PSEUDO_MAP_FD: u8 = 1;
    const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
    const HELPER_MAP_UPDATE_ELEM: i32 = 2;
    const HELPER_KTIME_GET_NS: i32 = 5;
    /// Bytes of packet handed to each test run (at least an Ethernet header).
    const PACKET_BYTES: usize = 64;

    const R0: u8 = 0;
    const R1: u8 = 1;
    const R2: u8 = 2;
    const R3: u8 = 3;
    const R4: u8 = 4;
    const R10: u8 = 10;

    /// `struct bpf_insn`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Insn {
        code: u8,
        /// dst_reg in the low nibble, src_reg in the high one (little endian).
        regs: u8,
        off: i16,
        imm: i32,
    }

    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }
    const fn mov_imm(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
    }
    const fn mov_reg(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
    }
    const fn add_imm(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm) // BPF_ALU64 | BPF_ADD | BPF_K
    }
    const fn store_u64_imm(dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x7a, dst, 0, off, imm) // BPF_ST | BPF_MEM | BPF_DW
    }
    const fn store_u64(dst: u8, off: i16, src: u8) -> Insn {
        insn(0x7b, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_DW
    }
    const fn load_u64(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x79, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_DW
    }
    const fn jump_if_zero(dst: u8, skip: i16) -> Insn {
        insn(0x15, dst, 0, skip, 0) // BPF_JMP | BPF_JEQ | BPF_K
    }
    const fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper) // BPF_JMP | BPF_CALL
    }
    const EXIT: Insn = insn(0x95, 0, 0, 0, 0);
    /// `dst = map` (BPF_LD | BPF_IMM | BPF_DW with a map fd): two slots.
    fn load_map(dst: u8, map: &OwnedFd) -> [Insn; 2] {
        [
            insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()),
            insn(0, 0, 0, 0, 0),
        ]
    }

    fn finish(mut insns: Vec<Insn>) -> Vec<Insn> {
        insns.extend([mov_imm(R0, 0), EXIT]);
        insns
    }

    /// Returns 0 at once.
    pub fn empty() -> Vec<Insn> {
        finish(Vec::new())
    }

    /// `calls` calls of `bpf_ktime_get_ns`.
    pub fn ktime(calls: usize) -> Vec<Insn> {
        finish(vec![call(HELPER_KTIME_GET_NS); calls])
    }

    /// `calls` times what sonde's `bump` does on its common path: look up a
    /// 16-byte key (zero) in a per-CPU hash, add one to its u64 in place.
    pub fn bump(map: &OwnedFd, calls: usize) -> Vec<Insn> {
        let mut insns = vec![store_u64_imm(R10, -8, 0), store_u64_imm(R10, -16, 0)];
        for _ in 0..calls {
            insns.extend(load_map(R1, map));
            insns.extend([
                mov_reg(R2, R10),
                add_imm(R2, -16),
                call(HELPER_MAP_LOOKUP_ELEM),
                jump_if_zero(R0, 3),
                load_u64(R1, R0, 0),
                add_imm(R1, 1),
                store_u64(R0, 0, R1),
            ]);
        }
        finish(insns)
    }

    /// `calls` calls of `bpf_map_update_elem` (BPF_ANY) on the same key.
    pub fn update(map: &OwnedFd, calls: usize) -> Vec<Insn> {
        let mut insns = vec![
            store_u64_imm(R10, -8, 0),
            store_u64_imm(R10, -16, 0),
            store_u64_imm(R10, -24, 1),
        ];
        for _ in 0..calls {
            insns.extend(load_map(R1, map));
            insns.extend([
                mov_reg(R2, R10),
                add_imm(R2, -16),
                mov_reg(R3, R10),
                add_imm(R3, -24),
                mov_imm(R4, 0),
                call(HELPER_MAP_UPDATE_ELEM),
            ]);
        }
        finish(insns)
    }

    /// The leading fields of `union bpf_attr` for BPF_MAP_CREATE.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    /// The leading fields of `union bpf_attr` for BPF_PROG_LOAD.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }

    /// The leading fields of `union bpf_attr` for BPF_PROG_TEST_RUN.
    #[repr(C)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
    }

    /// `bpf(cmd, attr, size_of(attr))`.
    fn bpf<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> Result<libc::c_long> {
        // SAFETY: `attr` is a live, initialized #[repr(C)] prefix of
        // `union bpf_attr` for `cmd`, and its exact size is passed: the
        // kernel reads (and for TEST_RUN writes) only those bytes. Any
        // pointers in it point at buffers the caller keeps alive.
        let ret =
            unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
        if ret < 0 {
            bail!("bpf({what}): {}", std::io::Error::last_os_error());
        }
        Ok(ret)
    }

    fn owned(fd: libc::c_long, what: &str) -> Result<OwnedFd> {
        let fd = i32::try_from(fd).map_err(|_| anyhow::anyhow!("bpf({what}): fd {fd}"))?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A preallocated per-CPU hash map.
    pub fn percpu_hash(key_size: u32, value_size: u32, max_entries: u32) -> Result<OwnedFd> {
        let mut attr = MapCreate {
            map_type: BPF_MAP_TYPE_PERCPU_HASH,
            key_size,
            value_size,
            max_entries,
            map_flags: 0,
        };
        owned(bpf(BPF_MAP_CREATE, &mut attr, "MAP_CREATE")?, "MAP_CREATE")
    }

    /// Loads a socket filter, with the verifier's log in the error.
    pub fn load_socket_filter(insns: &[Insn]) -> Result<OwnedFd> {
        let license = c"GPL";
        let mut log = vec![0u8; 1 << 16];
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: u32::try_from(insns.len())?,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: u32::try_from(log.len())?,
            log_buf: log.as_mut_ptr() as u64,
            kern_version: 0,
            prog_flags: 0,
            prog_name: *b"sonde_bench\0\0\0\0\0",
        };
        match bpf(BPF_PROG_LOAD, &mut attr, "PROG_LOAD") {
            Ok(fd) => owned(fd, "PROG_LOAD"),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(log.get(..end).unwrap_or_default());
                bail!("{e}\n{text}")
            }
        }
    }

    /// Runs the program `repeat` times on a zeroed packet; the kernel's
    /// mean ns per run.
    pub fn test_run(prog: &OwnedFd, repeat: u32) -> Result<u32> {
        let packet = [0u8; PACKET_BYTES];
        let mut attr = TestRun {
            prog_fd: u32::try_from(prog.as_raw_fd())?,
            retval: 0,
            data_size_in: PACKET_BYTES as u32,
            data_size_out: 0,
            data_in: packet.as_ptr() as u64,
            data_out: 0,
            repeat,
            duration: 0,
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr, "PROG_TEST_RUN")?;
        Ok(attr.duration)
    }
}
