//! sonde's privileged integration tests: real probes on the running kernel,
//! real workloads in their own cgroups, exact numbers against ground truth.
//! Run by `cargo xtask test` as root, one test at a time.
//!
//! Helpers here: test cgroups, workloads forked into them, the sonde binary.

#[cfg(test)]
mod cli;
#[cfg(test)]
mod collector;
#[cfg(test)]
mod grpc;
#[cfg(test)]
mod otlp;
#[cfg(test)]
mod prometheus;
#[cfg(test)]
mod syscalls;

pub mod procs;

use std::{
    ffi::CString,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sonde::host::mounts::Mounts;

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

/// A fresh cgroup v2 directory under the test process's own cgroup, removed
/// on drop.
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<own v2 cgroup>/sonde-test-<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        let mounts = Mounts::current().expect("read mountinfo");
        let root = mounts.cgroup2.expect("a cgroup v2 hierarchy is mounted");
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line in /proc/self/cgroup");
        let path = root
            .join(own.trim_start_matches('/'))
            .join(format!("sonde-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self { path }
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
        let mounts = Mounts::current().expect("read mountinfo");
        let root = mounts.cgroup2.expect("a cgroup v2 hierarchy is mounted");
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
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A child process forked into a cgroup, parked until [`Workload::go`].
pub struct Workload {
    pid: libc::pid_t,
    go_fd: libc::c_int,
}

impl Workload {
    /// Forks a child that joins `cgroup`, waits for `go`, runs `work` and
    /// exits. `work` runs in a forked copy of a threaded process, so it must
    /// only make system calls (no allocation, no locks): prepare every
    /// buffer and path before calling this.
    pub fn fork(cgroup: &TestCgroup, work: impl FnOnce()) -> Self {
        let procs = CString::new(
            cgroup
                .path()
                .join("cgroup.procs")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .expect("path without NUL");
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
        Self { pid, go_fd }
    }

    /// Lets the child run its work.
    pub fn go(&self) {
        // SAFETY: writing one byte from a valid buffer to our pipe end.
        assert_eq!(
            unsafe { libc::write(self.go_fd, b"g".as_ptr().cast(), 1) },
            1
        );
    }

    /// Kills the child (for endless workloads) and reaps it.
    pub fn kill(self) {
        // SAFETY: signalling and reaping our own child; closing our pipe end.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
            libc::close(self.go_fd);
        }
    }

    /// Waits for the child and returns its exit status.
    pub fn wait(self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid");
        // SAFETY: closing our pipe end.
        unsafe { libc::close(self.go_fd) };
        assert!(
            libc::WIFEXITED(status),
            "workload did not exit normally: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }
}

/// Polls `cond` every 5 ms for up to 5 s.
pub fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("condition not met within 5 s");
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
