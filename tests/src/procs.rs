//! Real processes for the end-to-end tests: a collector, an agent whose JSON
//! windows are collected as they come, free loopback ports, a tiny HTTP GET.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{collector_bin, sonde_bin};

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `cond` every 50 ms until it holds, for at most `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    poll(what, timeout, Duration::from_millis(50), cond);
}

/// Polls `cond` every `every` until it holds, for at most `timeout`.
pub fn poll(what: &str, timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// A child process killed on drop; its output lines are collected.
pub struct Proc {
    child: Option<Child>,
    name: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(
    reader: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    echo: String,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if !echo.is_empty() {
                eprintln!("[{echo}] {line}");
            }
            into.lock().expect("lines").push(line);
        }
    });
}

/// Where and how to start a [`Proc`] beyond its arguments.
#[derive(Default)]
pub struct Place<'a> {
    /// Run in this network namespace (only the network namespace changes:
    /// the process still sees the host's mounts, cgroups and kernel).
    pub netns: Option<&'a crate::netns::TestNetns>,
    /// Extra environment variables.
    pub env: Vec<(&'a str, &'a str)>,
    /// Run in a mount namespace of its own where this file is `/etc/hosts`
    /// (rewrite it in place to change what names resolve to).
    pub hosts: Option<&'a Path>,
}

/// Makes `command` run in a mount namespace of its own with `hosts`
/// bind-mounted on `/etc/hosts`.
fn own_hosts_on_exec(command: &mut Command, hosts: &Path) {
    use std::os::unix::{ffi::OsStrExt as _, process::CommandExt as _};
    let source = std::ffi::CString::new(hosts.as_os_str().as_bytes()).expect("a path");
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: between fork and exec the closure only makes raw syscalls on
    // memory it owns (the C strings), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here may leak back to the host's namespace.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                source.as_ptr(),
                c"/etc/hosts".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
}

impl Proc {
    /// Starts `program args`.
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Self {
        Self::spawn_at(name, program, args, &Place::default())
    }

    /// Starts `program args` as `place` says.
    pub fn spawn_at(name: &str, program: &Path, args: &[String], place: &Place<'_>) -> Self {
        let mut command = Command::new(program);
        command.envs(place.env.iter().copied());
        if let Some(ns) = place.netns {
            ns.enter_on_exec(&mut command);
        }
        if let Some(hosts) = place.hosts {
            own_hosts_on_exec(&mut command, hosts);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(
            child.stdout.take().expect("stdout"),
            stdout.clone(),
            String::new(),
        );
        collect(
            child.stderr.take().expect("stderr"),
            stderr.clone(),
            name.to_owned(),
        );
        Self {
            child: Some(child),
            name: name.to_owned(),
            stdout,
            stderr,
        }
    }

    /// A collector on `port` with extra arguments; returns once it listens.
    pub fn collector(port: u16, extra: &[&str]) -> Self {
        Self::collector_at(port, extra, &Place::default())
    }

    /// [`Proc::collector`] as `place` says.
    pub fn collector_at(port: u16, extra: &[&str], place: &Place<'_>) -> Self {
        let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let p = Self::spawn_at("collector", &collector_bin(), &args, place);
        p.wait_stderr("listening on", Duration::from_secs(10));
        p
    }

    /// A `sonde agent --json --interval 1s` with extra arguments; returns
    /// once its probes are attached.
    pub fn agent(extra: &[&str]) -> Self {
        Self::agent_at(extra, &Place::default())
    }

    /// [`Proc::agent`] as `place` says.
    pub fn agent_at(extra: &[&str], place: &Place<'_>) -> Self {
        let mut args: Vec<String> = ["agent", "--json", "--interval", "1s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let p = Self::spawn_at("agent", &sonde_bin(), &args, place);
        p.wait_stderr("agent ready", Duration::from_secs(20));
        p
    }

    /// The process id (0 once it was reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// Waits until a line of stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("'{needle}' from {}", self.name), timeout, || {
            self.stderr
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.contains(needle))
        });
    }

    /// Lines of stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lines").clone()
    }

    /// Lines of stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lines").clone()
    }

    /// Asserts the agent's last word after a stop: every window acked
    /// (`sonde: agent stopped`), showing its stderr otherwise.
    pub fn assert_stopped_acked(&self) {
        let lines = self.stderr_lines();
        assert!(
            lines.iter().any(|l| l == "sonde: agent stopped"),
            "everything acked: {lines:?}"
        );
    }

    /// The agent's windows so far (its JSON lines).
    pub fn windows(&self) -> Vec<Value> {
        self.stdout_lines()
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON window per line"))
            .collect()
    }

    /// Waits until the agent printed `n` windows in all.
    pub fn wait_windows(&self, n: usize, timeout: Duration) {
        wait_for(&format!("{n} windows from {}", self.name), timeout, || {
            self.stdout.lock().expect("lines").len() >= n
        });
    }

    /// Sends `sig` (e.g. SIGSTOP, SIGCONT) without waiting for anything.
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, then waits for the exit (at most 20 s) and for the output.
    pub fn terminate(&mut self) -> i32 {
        self.terminate_within(Duration::from_secs(20))
    }

    /// SIGTERM, then waits for the exit (at most `timeout`) and for the output.
    pub fn terminate_within(&mut self, timeout: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }

    /// Lines of stderr so far, counted without copying them.
    pub fn stderr_len(&self) -> usize {
        self.stderr.lock().expect("lines").len()
    }

    /// Lines of stdout so far, counted without copying them.
    pub fn stdout_len(&self) -> usize {
        self.stdout.lock().expect("lines").len()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(5));
    }

    fn wait(&mut self, timeout: Duration) -> i32 {
        let Some(mut child) = self.child.take() else {
            return -1;
        };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(200));
        status.code().unwrap_or(-1)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `sonde fleet <args> --json` and parses its answer.
pub fn fleet_json(args: &[&str]) -> Value {
    fleet_json_in(None, args)
}

/// [`fleet_json`] from inside a network namespace.
pub fn fleet_json_in(netns: Option<&crate::netns::TestNetns>, args: &[&str]) -> Value {
    let mut command = Command::new(sonde_bin());
    if let Some(ns) = netns {
        ns.enter_on_exec(&mut command);
    }
    let out = command
        .arg("fleet")
        .args(args)
        .arg("--json")
        .output()
        .expect("run sonde fleet");
    assert!(
        out.status.success(),
        "sonde fleet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from sonde fleet")
}

/// Series totals keyed `dur|cgroup|syscall` (samples) and
/// `err|cgroup|syscall|errno` (failures), summed over the agent windows
/// whose sequence `keep` accepts.
pub fn agent_totals(windows: &[Value], keep: impl Fn(u64) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for w in windows {
        if !keep(w["sequence"].as_u64().expect("sequence")) {
            continue;
        }
        for cg in w["syscalls"].as_array().expect("syscalls") {
            let path = match cg["cgroup_path"].as_str() {
                Some(p) => p.to_owned(),
                None => format!("id:{}", cg["cgroup_id"]),
            };
            for s in cg["syscalls"].as_array().expect("series") {
                let name = s["name"].as_str().expect("name");
                *out.entry(format!("dur|{path}|{name}")).or_default() +=
                    s["calls"].as_u64().expect("calls");
                for (errno, n) in s["errnos"].as_object().expect("errnos") {
                    *out.entry(format!("err|{path}|{name}|{errno}")).or_default() +=
                        n.as_u64().expect("count");
                }
            }
        }
    }
    out
}

fn label<'a>(point: &'a Value, key: &str) -> &'a str {
    point["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .find(|l| l["key"] == key)
        .and_then(|l| l["value"].as_str())
        .unwrap_or("")
}

/// The same keys from a collector's `NodeDetail` (its cumulative totals).
pub fn collector_totals(detail: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in detail["totals"].as_array().expect("totals") {
        for p in m["points"].as_array().expect("points") {
            let path = label(p, "linux.cgroup.path");
            let name = label(p, "syscall.name");
            match m["name"].as_str() {
                Some("system.linux.syscall.duration") => {
                    let h = &p["histogram"];
                    let n = h["zero_count"].as_u64().expect("zero_count")
                        + h["bucket_counts"]
                            .as_array()
                            .expect("buckets")
                            .iter()
                            .map(|c| c.as_u64().expect("count"))
                            .sum::<u64>();
                    if n > 0 {
                        *out.entry(format!("dur|{path}|{name}")).or_default() += n;
                    }
                }
                Some("system.linux.syscall.errors") => {
                    let errno = label(p, "error.type");
                    *out.entry(format!("err|{path}|{name}|{errno}")).or_default() +=
                        p["count"].as_u64().expect("count");
                }
                _ => {}
            }
        }
    }
    out
}

/// The sequence ranges of a `NodeSummary`, as (first, last) pairs.
pub fn ranges(summary: &Value) -> Vec<(u64, u64)> {
    summary["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|r| {
            (
                r["first"].as_u64().expect("first"),
                r["last"].as_u64().expect("last"),
            )
        })
        .collect()
}

/// `GET http://127.0.0.1:{port}{path}`: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query parameter.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One `openat` of `missing`, a path that does not exist: it fails with
/// ENOENT (async-signal-safe).
pub fn open_missing(missing: &std::ffi::CStr) {
    // SAFETY: a valid NUL-terminated path.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            missing.as_ptr(),
            libc::O_RDONLY,
        )
    };
}

/// A workload for the forked child: `openat` of a missing file, in batches
/// of `batch` with a 5 ms pause, forever (kill it). Syscalls only.
pub fn failing_opens_forever(batch: u32) -> impl FnOnce() {
    move || {
        let missing = c"/nonexistent/sonde-e2e";
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 5_000_000,
        };
        loop {
            for _ in 0..batch {
                crate::procs::open_missing(missing);
            }
            // SAFETY: a valid timespec.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
}

/// A workload: exactly `n` failing `openat` calls.
pub fn failing_opens(n: u64) -> impl FnOnce() {
    move || {
        let missing = c"/nonexistent/sonde-e2e";
        for _ in 0..n {
            crate::procs::open_missing(missing);
        }
    }
}
