//! sonde's privileged integration tests: real probes on the running kernel,
//! real workloads in their own cgroups, exact numbers against ground truth.
//! Run by `cargo xtask test` as root, one test at a time.
//!
//! Helpers here: test cgroups, workloads forked into them, the sonde binary;
//! network namespaces and their fixtures in [`netns`].

#[cfg(test)]
mod attach;
#[cfg(test)]
mod attribution;
#[cfg(test)]
mod block;
#[cfg(test)]
mod bounds;
#[cfg(test)]
mod budget;
#[cfg(test)]
mod chaos;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod collector;
#[cfg(test)]
mod deploy;
#[cfg(test)]
mod doctor;
#[cfg(test)]
mod explain;
#[cfg(test)]
mod grpc;
#[cfg(test)]
mod host;
#[cfg(test)]
mod irq;
#[cfg(test)]
mod memory;
#[cfg(test)]
mod otlp;
#[cfg(test)]
mod pin;
#[cfg(test)]
mod pipeline;
#[cfg(test)]
mod process;
#[cfg(test)]
mod prometheus;
#[cfg(test)]
mod remote_write;
#[cfg(test)]
mod replicas;
#[cfg(test)]
mod sched;
#[cfg(test)]
mod slo;
#[cfg(test)]
mod syscalls;
#[cfg(test)]
mod tcp;

pub mod netns;

pub mod procs;

use std::{
    ffi::CString,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Whether the tests may use privileges. Outside CI, a non-root run skips
/// with a line that says so; in CI (`CI=true`) a missing privilege fails.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("integration tests need root (BPF and cgroups); CI runs them as root");
    }
    eprintln!("skipping: needs root to load eBPF programs and create cgroups");
    false
}

/// Whether this runs in `cargo xtask vm-test`'s guest (its `/init` sets
/// `SONDE_VM=1`) and so lacks `what`: the guest holds busybox, sonde and
/// this test binary, and nothing else (no Python, iproute2, nft, systemd,
/// Prometheus or collector). There a test that needs `what` skips, says
/// which tool is missing, and records it in `$SONDE_VM_SKIPS` for the
/// matrix. Anywhere else this is false: on the host and in CI such a test
/// always runs.
pub fn vm_lacks(what: &str) -> bool {
    if !in_vm() {
        return false;
    }
    vm_skip(&format!("needs {what}"));
    true
}

static IN_VM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether this runs in `cargo xtask vm-test`'s guest.
pub fn in_vm() -> bool {
    *IN_VM.get_or_init(|| std::env::var("SONDE_VM").is_ok_and(|v| v == "1"))
}

/// How much longer the forked workloads' safety deadlines are in the
/// guest, where QEMU emulates the CPU (no KVM) and arm64 runs several times
/// slower. Async-signal-safe (a load) once [`in_vm`] ran in the parent,
/// which [`Workload::fork`] makes sure of.
pub fn vm_time_factor() -> u32 {
    if IN_VM.get() == Some(&true) {
        4
    } else {
        1
    }
}

/// Says why the current test skips in the vm-test guest and records it in
/// `$SONDE_VM_SKIPS` (`test|reason`) for the matrix.
pub fn vm_skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_owned();
    eprintln!("skipping in the vm-test guest: {reason}");
    if let Some(file) = std::env::var_os("SONDE_VM_SKIPS") {
        use std::io::Write as _;
        let line = format!("{test}|{reason}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// Where a filesystem of type `fstype` is mounted (the first such mount in
/// `/proc/self/mountinfo`), with `option` among its super options when
/// given (`cpu` for the v1 hierarchy that holds that controller). Read by
/// the tests' own code: the cgroup paths tests expect sonde to report rest
/// on it, so it must not be sonde's own mount table parser.
pub fn mount_point(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    text.lines().find_map(|line| {
        // `<id> <parent> <dev> <root> <mount point> <options> ... - <type> <source> <super options>`
        let (left, right) = line.split_once(" - ")?;
        let mut after = right.split(' ');
        let (ty, _source, options) = (after.next()?, after.next()?, after.next()?);
        let wanted = ty == fstype && option.is_none_or(|o| options.split(',').any(|x| x == o));
        if !wanted {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

#[test]
fn mount_points_by_type_and_option() {
    let v2 = mount_point("cgroup2", None).expect("cgroup2 mounted");
    assert!(v2.join("cgroup.procs").is_file(), "{}", v2.display());
    if let Some(cpu) = mount_point("cgroup", Some("cpu")) {
        assert!(cpu.join("cpu.cfs_quota_us").is_file(), "{}", cpu.display());
    }
    assert_eq!(mount_point("no-such-fs", None), None);
}

/// A fresh cgroup v2 directory under the test process's own cgroup, removed
/// on drop.
pub struct TestCgroup {
    path: PathBuf,
    /// Directories created for it, outermost first (removed in reverse).
    created: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `<own v2 cgroup>/sonde-test-<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        Self::nested(name, "")
    }

    /// Creates `<own v2 cgroup>/sonde-test-<name>-<pid>/<rel>`, every level
    /// of `rel` included (for layouts such as the kubelet's).
    pub fn nested(name: &str, rel: &str) -> Self {
        let root = mount_point("cgroup2", None).expect("a cgroup v2 hierarchy is mounted");
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line in /proc/self/cgroup");
        let path = root
            .join(own.trim_start_matches('/'))
            .join(format!("sonde-test-{name}-{}", std::process::id()));
        let mut created = Vec::new();
        let mut path = path;
        for part in std::iter::once("").chain(rel.split('/').filter(|p| !p.is_empty())) {
            path = path.join(part);
            std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            created.push(path.clone());
        }
        Self { path, created }
    }

    /// The cgroup id sonde reports: the inode of the directory.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path)
            .expect("stat test cgroup")
            .ino()
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path sonde reports (`linux.cgroup.path`): relative to the v2
    /// hierarchy's root, with a leading `/`.
    pub fn v2_path(&self) -> String {
        let root = mount_point("cgroup2", None).expect("a cgroup v2 hierarchy is mounted");
        let rel = self
            .path
            .strip_prefix(&root)
            .expect("test cgroup under the v2 root");
        format!("/{}", rel.display())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes must have left; a child that was waited for has.
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A child process forked into a cgroup, parked until [`Workload::go`].
/// Dropped unreaped (a test that failed before its end), the child is
/// killed and reaped, so that it burns nothing into the tests after it.
pub struct Workload {
    pid: libc::pid_t,
    go_fd: libc::c_int,
    reaped: bool,
}

impl Workload {
    /// Forks a child that joins `cgroup`, waits for `go`, runs `work` and
    /// exits. `work` runs in a forked copy of a threaded process, so it must
    /// only make system calls (no allocation, no locks): prepare every
    /// buffer and path before calling this.
    pub fn fork(cgroup: &TestCgroup, work: impl FnOnce()) -> Self {
        Self::fork_joining(cgroup, None, work)
    }

    /// [`Workload::fork`], also joining a second cgroup (a cgroup v1
    /// controller's, say) through its `cgroup.procs` file `also`.
    pub fn fork_joining(cgroup: &TestCgroup, also: Option<&Path>, work: impl FnOnce()) -> Self {
        let c =
            |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL");
        let procs = c(&cgroup.path().join("cgroup.procs"));
        let also = also.map(c);
        // Read before the fork: the child may only load it.
        let _ = in_vm();
        let mut fds = [0; 2];
        // SAFETY: fds is a valid two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        let (read_fd, go_fd) = (fds[0], fds[1]);
        // SAFETY: the child only makes async-signal-safe calls before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: raw syscalls on valid, pre-built buffers; never returns.
            unsafe {
                libc::close(go_fd);
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(101);
                }
                libc::close(fd);
                if let Some(also) = &also {
                    let fd = libc::open(also.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(103);
                    }
                    libc::close(fd);
                }
                let mut byte = 0u8;
                if libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) != 1 {
                    libc::_exit(102);
                }
                work();
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(read_fd) };
        // Wait until the child is in the cgroup before the caller starts counting.
        wait_until(|| {
            std::fs::read_to_string(cgroup.path().join("cgroup.procs"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == pid.to_string()))
        });
        Self {
            pid,
            go_fd,
            reaped: false,
        }
    }

    /// Lets the child run its work.
    pub fn go(&self) {
        // SAFETY: writing one byte from a valid buffer to our pipe end.
        let written = unsafe { libc::write(self.go_fd, b"g".as_ptr().cast(), 1) };
        assert_eq!(written, 1);
    }

    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Whether the child has exited (it stays a zombie until waited for).
    pub fn exited(&self) -> bool {
        self.exit_seen(libc::WNOHANG)
    }

    /// Waits until the child has exited but leaves it a zombie, so that its
    /// `/proc/<pid>` files can still be read.
    pub fn wait_exited(&self) {
        assert!(self.exit_seen(0), "waitid");
    }

    /// `waitid` for the child's exit without reaping it, with `flags`
    /// added: whether it had exited.
    fn exit_seen(&self, flags: libc::c_int) -> bool {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: our own child, not reaped (WNOWAIT).
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | flags,
            )
        };
        // SAFETY: waitid filled the pid field when a child changed state.
        rc == 0 && unsafe { info.si_pid() } != 0
    }

    /// Kills the child (for endless workloads) and reaps it.
    pub fn kill(self) {
        // Drop does it.
    }

    /// Waits for the child and returns its exit status.
    pub fn wait(self) -> i32 {
        let status = self.wait_status();
        assert!(
            libc::WIFEXITED(status),
            "workload did not exit normally: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    /// Waits for the child and returns the raw wait status.
    pub fn wait_status(mut self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid");
        self.reaped = true;
        status
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child, not reaped yet (so
        // its pid is still ours); closing our pipe end.
        unsafe {
            if !self.reaped {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
            libc::close(self.go_fd);
        }
    }
}

/// Polls `cond` every 5 ms for up to 5 s.
pub fn wait_until(cond: impl Fn() -> bool) {
    wait_until_secs(5, cond);
}

/// Polls `cond` every 5 ms for up to `secs` seconds.
pub fn wait_until_secs(secs: u64, cond: impl Fn() -> bool) {
    let (timeout, every) = (
        std::time::Duration::from_secs(secs),
        std::time::Duration::from_millis(5),
    );
    procs::poll("a condition", timeout, every, cond);
}

/// The `sonde-collector` binary under test: `$SONDE_COLLECTOR_BIN`, else the
/// workspace's debug build.
pub fn collector_bin() -> PathBuf {
    std::env::var_os("SONDE_COLLECTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sonde-collector")
        })
}

/// The Python with `grpcio` and `opentelemetry-proto` that `cargo xtask
/// setup` prepares: `$SONDE_PYTHON`, else its default venv.
pub fn python() -> PathBuf {
    std::env::var_os("SONDE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".local/share/sonde/venv/bin/python")
        })
}

/// The `sonde` binary under test: `$SONDE_BIN`, set by `cargo xtask test`,
/// else the workspace's debug build.
pub fn sonde_bin() -> PathBuf {
    std::env::var_os("SONDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sonde"))
}

/// `run_delay` of a task: nanoseconds it spent runnable but waiting for a
/// CPU, the second field of `/proc/<pid>/schedstat`.
pub fn run_delay_ns(pid: libc::pid_t) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("read schedstat");
    text.split_whitespace()
        .nth(1)
        .expect("run_delay field")
        .parse()
        .expect("number")
}

/// The bucket a latency of `secs` falls in, in the layout sonde's
/// histograms use (OTLP exponential at scale 3: bucket `i` holds
/// `(2^(i/8), 2^((i+1)/8)]` seconds), computed from that definition alone.
pub fn otlp_bucket(secs: f64) -> i32 {
    (secs.log2() * 8.0).ceil() as i32 - 1
}

#[test]
fn otlp_buckets_by_definition() {
    assert_eq!(otlp_bucket(1.0), -1, "an edge belongs to the bucket below");
    assert_eq!(otlp_bucket(1.05), 0);
    assert_eq!(otlp_bucket(2.0), 7);
    assert_eq!(otlp_bucket(0.010), -54);
}

/// Pins the calling thread to one CPU (async-signal-safe: for forked children).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the macros only set bits in it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Keeps the calling thread on one CPU until dropped, then gives it back
/// the CPUs it had: a test's own work (reading the maps each window) then
/// stays off the CPU its workload is measured on.
pub struct PinnedThread(libc::cpu_set_t);

impl PinnedThread {
    pub fn to(cpu: usize) -> Self {
        // SAFETY: cpu_set_t is plain data, filled by the kernel.
        let before = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            set
        };
        pin_to_cpu(cpu);
        Self(before)
    }
}

impl Drop for PinnedThread {
    fn drop(&mut self) {
        // SAFETY: the set read back in `to`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// Burns `cpu_ns` of the calling thread's own CPU time.
pub fn burn_cpu(cpu_ns: u64) {
    let now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let start = now();
    while now() - start < cpu_ns {
        std::hint::spin_loop();
    }
}

/// A memory-limited cgroup for OOM tests: on cgroup v2 the test cgroup's own
/// `memory.max` when its memory controller is available, else (v1/v2
/// hybrids) a child of this process's own v1 memory cgroup.
pub struct MemoryLimit {
    /// The v1 cgroup directory, when the limit lives there.
    v1: Option<PathBuf>,
    v2: PathBuf,
}

impl MemoryLimit {
    /// Limits `cgroup` (v2) or a new v1 memory cgroup to `bytes`.
    pub fn new(cgroup: &TestCgroup, name: &str, bytes: u64) -> Self {
        let controllers =
            std::fs::read_to_string(cgroup.path().join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            std::fs::write(cgroup.path().join("memory.max"), bytes.to_string())
                .expect("memory.max");
            std::fs::write(cgroup.path().join("memory.swap.max"), "0").ok();
            return Self {
                v1: None,
                v2: cgroup.path().to_owned(),
            };
        }
        let own =
            own_v1_cgroup("memory").expect("neither a v2 memory controller nor a v1 memory cgroup");
        let dir = Path::new("/sys/fs/cgroup/memory")
            .join(own.trim_start_matches('/'))
            .join(format!("sonde-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())
            .expect("memory.limit_in_bytes");
        Self {
            v1: Some(dir),
            v2: cgroup.path().to_owned(),
        }
    }

    /// The `cgroup.procs` file a workload must also join (v1 only).
    pub fn extra_procs(&self) -> Option<PathBuf> {
        self.v1.as_ref().map(|d| d.join("cgroup.procs"))
    }

    /// The kernel's own count of OOM kills in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, text) = match &self.v1 {
            Some(dir) => (
                "memory.oom_control",
                std::fs::read_to_string(dir.join("memory.oom_control")),
            ),
            None => (
                "memory.events",
                std::fs::read_to_string(self.v2.join("memory.events")),
            ),
        };
        let text = text.unwrap_or_else(|e| panic!("read {file}: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill line in {file}: {text}"))
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let Some(dir) = &self.v1 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Sets the calling process's name (`comm`); async-signal-safe.
pub fn set_comm(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// No core files from a crashing test child; async-signal-safe.
pub fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// A CPU-limited cgroup: the test cgroup's own `cpu.max` on cgroup v2 with
/// the cpu controller, else a child of this process's v1 `cpu` cgroup.
pub struct CpuLimit {
    v1: Option<PathBuf>,
    v2: PathBuf,
}

impl CpuLimit {
    /// Allows `quota_us` of CPU time per `period_us`.
    pub fn new(cgroup: &TestCgroup, name: &str, quota_us: u64, period_us: u64) -> Self {
        let controllers =
            std::fs::read_to_string(cgroup.path().join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            std::fs::write(
                cgroup.path().join("cpu.max"),
                format!("{quota_us} {period_us}"),
            )
            .expect("cpu.max");
            return Self {
                v1: None,
                v2: cgroup.path().to_owned(),
            };
        }
        let own = own_v1_cgroup("cpu").expect("no v1 cpu cgroup and no v2 cpu controller");
        let root = mount_point("cgroup", Some("cpu")).expect("v1 cpu controller mounted");
        let dir = root
            .join(own.trim_start_matches('/'))
            .join(format!("sonde-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())
            .expect("cfs_period_us");
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota_us.to_string()).expect("cfs_quota_us");
        Self {
            v1: Some(dir),
            v2: cgroup.path().to_owned(),
        }
    }

    /// The `cgroup.procs` file a workload must also join (v1 only).
    pub fn extra_procs(&self) -> Option<PathBuf> {
        self.v1.as_ref().map(|d| d.join("cgroup.procs"))
    }

    /// The kernel's own throttling counters for this cgroup, from its
    /// `cpu.stat`, read by the tests' own parser (not sonde's).
    pub fn read(&self) -> CpuStat {
        let (dir, source, throttled, ns_per_unit) = match &self.v1 {
            Some(dir) => (dir, "cgroup1", "throttled_time", 1),
            None => (&self.v2, "cgroup2", "throttled_usec", 1_000),
        };
        let text = std::fs::read_to_string(dir.join("cpu.stat")).expect("cpu.stat");
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in cpu.stat: {text}"))
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name} in cpu.stat: {e}"))
        };
        CpuStat {
            periods: field("nr_periods"),
            throttled_periods: field("nr_throttled"),
            throttled_ns: field(throttled) * ns_per_unit,
            source,
        }
    }
}

/// A cgroup's CPU throttling counters as its `cpu.stat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuStat {
    /// `nr_periods`.
    pub periods: u64,
    /// `nr_throttled`.
    pub throttled_periods: u64,
    /// `throttled_usec` (v2) or `throttled_time` (v1), in nanoseconds.
    pub throttled_ns: u64,
    /// `cgroup2` or `cgroup1`: where they were read.
    pub source: &'static str,
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        if let Some(dir) = &self.v1 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A loop block device over a file, detached on drop.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// `loopN`.
    pub name: String,
    file: PathBuf,
}

impl LoopDevice {
    /// Creates a `bytes`-long backing file and attaches a loop device to it.
    pub fn new(name: &str, bytes: u64) -> Self {
        let file =
            std::env::temp_dir().join(format!("sonde-test-{name}-{}.img", std::process::id()));
        let f = std::fs::File::create(&file).expect("create backing file");
        f.set_len(bytes).expect("size backing file");
        drop(f);
        let mut device = Self::over(&file);
        device.file = file;
        device
    }

    /// Attaches a loop device to an existing file (left in place on drop),
    /// through the loop driver's ioctls rather than util-linux's `losetup`,
    /// which busybox's does not match (`--find --show`).
    pub fn over(file: &Path) -> Self {
        const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
        const LOOP_SET_FD: libc::c_ulong = 0x4C00;
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .expect("open /dev/loop-control (is the loop driver loaded?)");
        let backing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
        // Another process may take the free device between the two calls:
        // then LOOP_SET_FD fails with EBUSY and we ask again.
        for _ in 0..16 {
            // SAFETY: an ioctl without arguments on a file we hold open.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            assert!(
                n >= 0,
                "LOOP_CTL_GET_FREE: {}",
                std::io::Error::last_os_error()
            );
            let name = format!("loop{n}");
            let path = PathBuf::from("/dev").join(&name);
            let device = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value.
            let rc = unsafe {
                libc::ioctl(
                    device.as_raw_fd(),
                    LOOP_SET_FD as _,
                    backing.as_raw_fd() as libc::c_ulong,
                )
            };
            if rc == 0 {
                return Self {
                    path,
                    name,
                    file: PathBuf::new(),
                };
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "LOOP_SET_FD: {err}");
        }
        panic!("no free loop device after 16 tries");
    }

    /// (reads completed, writes completed) from `/proc/diskstats`.
    pub fn diskstats(&self) -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/diskstats").expect("read /proc/diskstats");
        let fields: Vec<u64> = text
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&self.name.as_str()))
                    .then(|| f[3..].iter().filter_map(|v| v.parse().ok()).collect())
            })
            .expect("the loop device in /proc/diskstats");
        (fields[0], fields[4])
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
        if let Ok(device) = std::fs::File::open(&self.path) {
            // SAFETY: an ioctl without arguments on a file we hold open.
            unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD as _) };
        }
        if !self.file.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// A FUSE filesystem (tests/fixtures/eiofs.py) holding `disk.img`, whose
/// reads and writes fail with EIO in one byte range. Unmounted on drop.
pub struct EioFs {
    mountpoint: PathBuf,
    server: std::process::Child,
}

impl EioFs {
    /// Mounts it with a `size`-byte file failing in `[bad_offset, bad_offset + bad_len)`.
    pub fn mount(size: u64, bad_offset: u64, bad_len: u64) -> Self {
        Self::mount_slow(size, bad_offset, bad_len, 0)
    }

    /// [`EioFs::mount`], answering every read and write after `delay_ms`.
    pub fn mount_slow(size: u64, bad_offset: u64, bad_len: u64, delay_ms: u64) -> Self {
        let mountpoint =
            std::env::temp_dir().join(format!("sonde-test-eiofs-{}", std::process::id()));
        std::fs::create_dir_all(&mountpoint).expect("mountpoint");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eiofs.py");
        // Debian's python3-fusepy is installed for the system interpreter.
        let server = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg(&mountpoint)
            .args([
                size.to_string(),
                bad_offset.to_string(),
                bad_len.to_string(),
                delay_ms.to_string(),
            ])
            .spawn()
            .expect("start the FUSE fixture (cargo xtask setup installs python3-fusepy)");
        let image = mountpoint.join("disk.img");
        wait_until(|| image.exists());
        Self { mountpoint, server }
    }

    /// The file with the bad range.
    pub fn image(&self) -> PathBuf {
        self.mountpoint.join("disk.img")
    }
}

impl Drop for EioFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mountpoint)
            .status();
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

/// Loads every family with `options` and checks that `family` attached.
pub fn load_probes(family: &str, options: sonde::probes::ProbeOptions) -> sonde::probes::Probes {
    let probes = sonde::probes::Probes::load(options).expect("load probes");
    let status = probes
        .statuses()
        .iter()
        .find(|s| s.probe == family)
        .unwrap_or_else(|| panic!("no {family} status"));
    assert_eq!(
        status.state,
        sonde::probes::ProbeState::Attached,
        "{status:?}"
    );
    probes
}

/// Page-aligned anonymous memory (O_DIRECT buffers), mapped before a fork so
/// that the child can use it without allocating; unmapped on drop.
pub struct AlignedBuffer {
    ptr: *mut libc::c_void,
    len: usize,
}

impl AlignedBuffer {
    /// Maps `len` bytes.
    pub fn new(len: usize) -> Self {
        // SAFETY: an anonymous private mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Self { ptr, len }
    }

    /// The mapping's address.
    pub fn ptr(&self) -> *mut libc::c_void {
        self.ptr
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Starts `sonde` with `args` and returns once it has printed a stderr line
/// starting with `ready` (the rest of stderr is drained in the background).
pub fn spawn_sonde(args: &[&str], ready: &str) -> std::process::Child {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut child = std::process::Command::new(sonde_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.starts_with(ready) {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read sonde's stderr") > 0,
            "sonde ended before '{ready}'"
        );
    }
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
    });
    child
}

/// This process's cgroup in the v1 hierarchy of `controller`, from
/// `/proc/self/cgroup` (`id:controllers:path` lines).
fn own_v1_cgroup(controller: &str) -> Option<String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}
