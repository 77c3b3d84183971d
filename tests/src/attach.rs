//! The agent's local socket end to end: `sonde top --attach` and
//! `sonde events --attach` read a running agent (no second copy of the
//! probes, no capability needed), and every way of pointing them at the
//! wrong thing is one line.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::{
    no_core_dumps, privileged,
    procs::{agent_totals, wait_for, Proc},
    set_comm, sonde_bin, TestCgroup, Workload,
};

const FAILING: u64 = 700;

/// `sonde args`, optionally through a wrapper (setpriv); exit code, stdout,
/// stderr. Never a panic.
fn sonde(args: &[&str], wrap: &[&str]) -> (i32, String, String) {
    let bin = sonde_bin();
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let out = cmd.args(args).output().expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn assert_one_line(stderr: &str, needle: &str) {
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("sonde: "), "{stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

/// A fresh directory for sockets, removed on drop.
fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sonde-attach-")
        .tempdir()
        .expect("temp dir")
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_owned()
}

/// The value of column `title` in the row named `name` of a `--once` frame.
fn cell(frame: &str, name: &str, title: &str) -> String {
    let header: Vec<&str> = frame
        .lines()
        .find(|l| l.starts_with("NAME "))
        .unwrap_or_else(|| panic!("no header in:\n{frame}"))
        .split_whitespace()
        .collect();
    let at = header
        .iter()
        .position(|h| *h == title)
        .unwrap_or_else(|| panic!("no column {title} in {header:?}"));
    let row: Vec<&str> = frame
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{frame}"))
        .split_whitespace()
        .collect();
    row[at].to_owned()
}

#[test]
fn top_attach_shows_a_cgroups_errors_exactly_without_privilege() {
    if crate::vm_lacks("setpriv (util-linux)") {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = socket_dir();
    let socket = dir.path().join("run/agent.sock");
    let socket_arg = path_arg(&socket);
    let cgroup = TestCgroup::new("top");
    let path = cgroup.v2_path();
    // An SLO on the cgroup's openat failures: every call fails, so it burns
    // at 1 / (1 - 0.99) = 100x over every alert window.
    let config = dir.path().join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            "[[slo]]\nname = \"attach-open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99\n\
             selector = {{ cgroup = \"{path}\", syscalls = [\"openat\"] }}\n"
        ),
    )
    .expect("write config");
    let mut agent = Proc::agent(&[
        "--socket",
        &socket_arg,
        "--probes",
        "syscalls",
        "--config",
        &path_arg(&config),
        "--state-dir",
        &path_arg(&dir.path().join("state")),
    ]);
    let meta = std::fs::metadata(&socket).expect("the socket exists");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );

    let workload = Workload::fork(&cgroup, crate::procs::failing_opens(FAILING));
    workload.go();
    assert_eq!(workload.wait(), 0);
    // Ground truth of the agent's own windows: every failure counted.
    let key = format!("err|{path}|openat|ENOENT");
    wait_for(
        "the agent's windows to hold the failures",
        Duration::from_secs(10),
        || agent_totals(&agent.windows(), |_| true).get(&key) == Some(&FAILING),
    );
    // Nothing else failed in the cgroup: the workload's other calls (its
    // write to cgroup.procs, a close, the read of its go pipe) succeed.
    let all_errors: u64 = agent_totals(&agent.windows(), |_| true)
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("err|{path}|")))
        .map(|(_, n)| n)
        .sum();

    // Root without any capability: cannot load a probe, can read the socket
    // (owner rw). So attaching loads nothing.
    let no_caps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"];
    let (code, frame, err) = sonde(
        &[
            "top",
            "--attach",
            "--socket",
            &socket_arg,
            "--once",
            "--width",
            "300",
        ],
        &no_caps,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        frame.starts_with(&format!("sonde top — agent at {socket_arg}")),
        "{frame}"
    );
    assert_eq!(all_errors, FAILING, "the cgroup's failures in the windows");
    assert_eq!(cell(&frame, &path, "ERRS"), FAILING.to_string(), "{frame}");
    // The row of the cgroup the SLO selects carries its burn rate.
    assert_eq!(cell(&frame, &path, "SLO_BURN"), "100.0x", "{frame}");
    let slo = frame
        .lines()
        .find(|l| l.starts_with("SLO attach-open (syscall.errors 99%): burn 5m 100.0x"))
        .unwrap_or_else(|| panic!("no SLO line in:\n{frame}"));
    assert!(slo.contains("1h 100.0x") && slo.ends_with("PAGE"), "{slo}");
    assert!(frame.contains("q quit"), "{frame}");
    // The control: the same user cannot run top on its own probes.
    let (code, _, err) = sonde(&["top", "--once", "--probes", "syscalls"], &no_caps);
    assert_eq!(code, 1, "{err}");
    assert_one_line(&err, "missing CAP_BPF");

    // A second agent on a live socket is refused before it loads anything.
    let (code, _, err) = sonde(&["agent", "--socket", &socket_arg], &[]);
    assert_eq!(code, 1);
    assert_one_line(&err, "another sonde agent is serving");
    assert!(!err.contains("ready"), "{err}");

    // Killed, the agent leaves its socket behind; the next one replaces it,
    // and removes it on a clean stop.
    agent.kill();
    assert!(socket.exists());
    let (code, _, err) = sonde(&["top", "--attach", "--socket", &socket_arg, "--once"], &[]);
    assert_eq!(code, 1);
    assert_one_line(&err, "no sonde agent listens on");
    let mut agent = Proc::agent(&["--socket", &socket_arg, "--probes", "syscalls"]);
    agent.wait_windows(1, Duration::from_secs(10));
    assert_eq!(agent.terminate(), 0);
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn events_attach_gets_a_crash_as_it_happens() {
    if !privileged() {
        return;
    }
    let dir = socket_dir();
    let socket = path_arg(&dir.path().join("agent.sock"));
    // Windows of 30 s: the event must come before its window closes.
    let agent = Proc::spawn(
        "agent",
        &sonde_bin(),
        &[
            "agent",
            "--interval",
            "30s",
            "--probes",
            "process",
            "--socket",
            &socket,
        ]
        .map(str::to_owned),
    );
    agent.wait_stderr("agent ready", Duration::from_secs(20));
    let events = Proc::spawn(
        "events",
        &sonde_bin(),
        &[
            "events".to_owned(),
            "--attach".to_owned(),
            "--socket".to_owned(),
            socket.clone(),
            "--json".to_owned(),
            "--kind".to_owned(),
            "crash".to_owned(),
        ],
    );
    events.wait_stderr(
        "sonde: streaming events from the agent",
        Duration::from_secs(10),
    );
    let cgroup = TestCgroup::new("attach-crash");
    let path = cgroup.v2_path();
    let crasher = Workload::fork(&cgroup, || {
        no_core_dumps();
        set_comm(c"sonde-segv");
        // SAFETY: in our own forked child: the Rust runtime's SIGSEGV handler
        // goes, then the signal comes.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        }
    });
    // An exit with a status is no crash: the filter drops it.
    let exiter = Workload::fork(&cgroup, || {
        // SAFETY: ends the forked child with status 3.
        unsafe { libc::_exit(3) };
    });
    let pid = crasher.pid();
    crasher.go();
    exiter.go();
    let status = crasher.wait_status();
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV);
    exiter.wait();
    wait_for(
        "the crash from the agent's socket",
        Duration::from_secs(5),
        || !events.stdout_lines().is_empty(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = events.stdout_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let e: Value = serde_json::from_str(&lines[0]).expect("a JSON event");
    assert_eq!(e["kind"], "crash");
    assert_eq!(e["pid"], pid);
    assert_eq!(e["comm"], "sonde-segv");
    assert_eq!(e["signal"], "SIGSEGV");
    assert_eq!(e["cgroup_path"], path.as_str());
}

#[test]
fn events_attach_gets_failed_connects_from_the_agents_windows() {
    if !privileged() {
        return;
    }
    const CONNECTS: usize = 3;
    let dir = socket_dir();
    let socket = path_arg(&dir.path().join("agent.sock"));
    let agent = Proc::spawn(
        "agent",
        &sonde_bin(),
        &[
            "agent",
            "--interval",
            "1s",
            "--probes",
            "tcp",
            "--socket",
            &socket,
        ]
        .map(str::to_owned),
    );
    agent.wait_stderr("agent ready", Duration::from_secs(20));
    let events = Proc::spawn(
        "events",
        &sonde_bin(),
        &[
            "events",
            "--attach",
            "--socket",
            &socket,
            "--json",
            "--kind",
            "connect_failed",
        ]
        .map(str::to_owned),
    );
    events.wait_stderr(
        "sonde: streaming events from the agent",
        Duration::from_secs(10),
    );
    let cgroup = TestCgroup::new("attach-tcp");
    let port = crate::procs::free_port();
    let to = crate::netns::sockaddr([127, 0, 0, 1], port);
    let client = Workload::fork(&cgroup, move || {
        for _ in 0..CONNECTS {
            let _ = crate::netns::connect(&to);
        }
    });
    client.go();
    assert_eq!(client.wait(), 0);
    wait_for(
        "the failed connects from the agent's socket",
        Duration::from_secs(5),
        || events.stdout_lines().len() >= CONNECTS,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let lines = events.stdout_lines();
    assert_eq!(lines.len(), CONNECTS, "{lines:?}");
    for line in &lines {
        let e: Value = serde_json::from_str(line).expect("a JSON event");
        assert_eq!(e["kind"], "connect_failed");
        assert_eq!(e["failure"], "refused");
        assert_eq!(e["destination_port"], port);
        assert_eq!(e["cgroup_path"], cgroup.v2_path().as_str());
    }
}

#[test]
fn attach_and_collector_mistakes_are_one_line() {
    let dir = socket_dir();
    let missing = path_arg(&dir.path().join("none.sock"));
    for cmd in ["top", "events"] {
        let mut args = vec![cmd, "--attach", "--socket", &missing];
        if cmd == "top" {
            args.push("--once");
        }
        let (code, _, err) = sonde(&args, &[]);
        assert_eq!(code, 1);
        assert_one_line(&err, "no sonde agent socket at");
        assert!(err.contains("sonde agent --socket"), "{err}");
    }

    let file: PathBuf = dir.path().join("plain");
    std::fs::write(&file, "x").expect("write");
    let (code, _, err) = sonde(&["events", "--attach", "--socket", &path_arg(&file)], &[]);
    assert_eq!(code, 1);
    assert_one_line(&err, "is not a socket");

    // A socket that answers, but not as sonde.
    let other = dir.path().join("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&other).expect("bind");
    std::thread::spawn(move || {
        use std::io::Write as _;
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (code, _, err) = sonde(
        &["top", "--attach", "--socket", &path_arg(&other), "--once"],
        &[],
    );
    assert_eq!(code, 1);
    assert_one_line(&err, "is not a sonde agent socket");

    // `sonde top` without a terminal and without --once.
    let (code, _, err) = sonde(&["top", "--attach", "--socket", &missing], &[]);
    assert_eq!(code, 1);
    assert_one_line(&err, "pass --once");

    // A collector whose host does not resolve: refused before any probe
    // loads (the agent would otherwise run on, retrying).
    let (code, _, err) = sonde(
        &[
            "agent",
            "--collector",
            "http://sonde-collector.invalid:7411",
            "--insecure",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_one_line(&err, "'sonde-collector.invalid' does not resolve");
    assert!(err.contains("check the --collector URL"), "{err}");
}

/// A detached tmux session on a server of its own, running one command on a
/// 200×50 terminal; the server is killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let t = Self {
            server: format!("sonde-test-{}", std::process::id()),
        };
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "top",
            command,
        ]);
        // Keep the pane after the command ends, to read how it ended.
        t.run(&["set-option", "-t", "top", "remain-on-exit", "on"]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.server)
            .args(args)
            .output()
            .expect("run tmux (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen as the terminal shows it.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn format(&self, what: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", what])
            .trim()
            .to_owned()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", keys]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .output();
    }
}

#[test]
fn top_on_a_terminal_sorts_by_key_and_q_restores_the_terminal() {
    if crate::vm_lacks("tmux") {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = socket_dir();
    let socket = path_arg(&dir.path().join("agent.sock"));
    let _agent = Proc::agent(&["--socket", &socket, "--probes", "syscalls"]);
    // The exit status goes to a file: tmux 3.3 does not always record a
    // dead pane's.
    let status_file = dir.path().join("status");
    let tmux = Tmux::start(&format!(
        "{} top --attach --socket {socket}; echo $? > {}",
        sonde_bin().display(),
        status_file.display()
    ));
    wait_for("the first frame", Duration::from_secs(10), || {
        tmux.screen().contains("sorted by ERR/s ↓")
    });
    let screen = tmux.screen();
    assert!(screen.starts_with("sonde top — agent at"), "{screen}");
    assert!(screen.contains("q quit"), "{screen}");
    assert!(screen.contains("NAME "), "{screen}");
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "drawn on the alternate screen"
    );

    tmux.keys("Right");
    wait_for("the sort to move right", Duration::from_secs(5), || {
        tmux.screen().contains("sorted by ERR% ↓")
    });
    tmux.keys("r");
    wait_for("the sort to reverse", Duration::from_secs(5), || {
        tmux.screen().contains("sorted by ERR% ↑")
    });
    // `e` explains the selected (first shown) row above the table, from
    // the agent's recent windows; `e` again hides it.
    tmux.keys("e");
    wait_for(
        "the selected row's explanation",
        Duration::from_secs(5),
        || {
            tmux.screen()
                .lines()
                .any(|l| l.starts_with("explain ") && l.contains(": verdict: "))
        },
    );
    tmux.keys("e");
    wait_for("the explanation to go", Duration::from_secs(5), || {
        !tmux.screen().lines().any(|l| l.starts_with("explain "))
    });
    tmux.keys("q");
    wait_for("top to quit on q", Duration::from_secs(5), || {
        std::fs::read_to_string(&status_file).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(&status_file)
            .expect("status")
            .trim(),
        "0"
    );
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "0",
        "the alternate screen is left"
    );
    // (tmux reports a dead pane's cursor as hidden whatever it was, so the
    // cursor's return is not checked here.)
}
