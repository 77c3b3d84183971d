//! Pinned probes across agent restarts: the kernel counts while no agent
//! runs, the restarted agent resumes from the last window's checkpoint, and
//! a pinned map of another layout is recreated, never reused.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::{
    privileged,
    procs::{agent_totals, Proc},
    TestCgroup, Workload,
};

/// A pin directory of its own under bpffs, removed (with what is pinned in
/// it) on drop, so no program outlives the test.
pub(crate) struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// A directory name under bpffs, which is mounted first if it is not
    /// (as the agent does before it pins): on a freshly booted machine
    /// nothing has mounted it yet, and a test must not lean on an earlier
    /// test or run that did.
    pub(crate) fn new(name: &str) -> Self {
        sonde::host::mounts::ensure_bpffs().expect("bpffs at /sys/fs/bpf");
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/sonde-test-{name}-{}",
            std::process::id()
        ));
        Self { dir }
    }

    pub(crate) fn arg(&self) -> String {
        self.dir.to_str().expect("utf-8").to_owned()
    }

    fn unpin(&self) -> std::process::Output {
        std::process::Command::new(crate::sonde_bin())
            .args(["unpin", &self.arg()])
            .output()
            .expect("run sonde unpin")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = sonde::probes::pin::unpin(&self.dir);
    }
}

/// `n` batches of 20 openat calls that fail with ENOENT, 10 ms apart.
fn failing_opens(batches: u32) -> impl FnOnce() {
    move || {
        let missing = c"/nonexistent/sonde-pin";
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        for _ in 0..batches {
            for _ in 0..20 {
                crate::procs::open_missing(missing);
            }
            // SAFETY: a valid timespec.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
}

fn restart_of(window: &Value) -> &Value {
    &window["restart"]
}

fn last_sequence(agent: &Proc) -> u64 {
    agent
        .windows()
        .last()
        .and_then(|w| w["sequence"].as_u64())
        .expect("a window")
}

fn agent_args<'a>(pin: &'a str, state: &'a str) -> Vec<&'a str> {
    vec!["--pin", pin, "--state-dir", state, "--probes", "syscalls"]
}

#[test]
fn restarts_with_pinned_probes_lose_and_double_nothing() {
    if !privileged() {
        return;
    }
    let pins = PinDir::new("restart");
    let pin = pins.arg();
    let state = tempfile::tempdir().expect("state dir");
    let state_arg = state.path().to_str().expect("utf-8").to_owned();
    let args = agent_args(&pin, &state_arg);
    let cgroup = TestCgroup::new("pin-restart");
    // 900 batches: about 10 s of failing opens, through two restarts.
    let batches = 900;
    let workload = Workload::fork(&cgroup, failing_opens(batches));

    let mut first = Proc::agent(&args);
    assert!(
        first
            .stderr_lines()
            .iter()
            .any(|l| l.contains("probes pinned under") && l.contains("first start")),
        "{:?}",
        first.stderr_lines()
    );
    workload.go();
    first.wait_windows(2, Duration::from_secs(20));
    // A graceful stop: the programs stay, the kernel keeps counting.
    assert_eq!(first.terminate(), 0);
    let first_last = last_sequence(&first);
    std::thread::sleep(Duration::from_millis(1500));

    let mut second = Proc::agent(&args);
    second.wait_windows(2, Duration::from_secs(20));
    // SIGKILL mid-window: well after a window was printed and checkpointed.
    std::thread::sleep(Duration::from_millis(300));
    second.kill();
    let second_last = last_sequence(&second);
    std::thread::sleep(Duration::from_millis(1500));

    let mut third = Proc::agent(&args);
    workload.wait_exited();
    let seen = third.windows().len();
    third.wait_windows(seen + 2, Duration::from_secs(20));
    assert_eq!(third.terminate(), 0);

    // Each restarted agent kept the programs and started its first window
    // where the last run's last window ended, complete.
    for (agent, follows) in [(&second, first_last), (&third, second_last)] {
        let lines = agent.stderr_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("kept the programs the last agent left running")),
            "{lines:?}"
        );
        let windows = agent.windows();
        let restart = restart_of(&windows[0]);
        assert_eq!(restart["follows_sequence"], follows, "{restart}");
        assert!(restart["gap"].is_null(), "{restart}");
        assert_eq!(windows[0]["complete"], true, "{}", windows[0]["losses"]);
        assert!(windows.iter().skip(1).all(|w| w["restart"].is_null()));
    }
    // Every failure the workload made is in exactly one window.
    let key = format!("err|{}|openat|ENOENT", cgroup.v2_path());
    let counted: u64 = [&first, &second, &third]
        .iter()
        .map(|a| {
            agent_totals(&a.windows(), |_| true)
                .get(&key)
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(counted, u64::from(batches) * 20, "{key}");
    // The windows tile time: each run's first starts where the last run's
    // last ended.
    for (before, after) in [(&first, &second), (&second, &third)] {
        let end = before.windows().last().expect("a window")["window_end_unix_ns"].clone();
        assert_eq!(after.windows()[0]["window_start_unix_ns"], end);
    }

    // `sonde unpin` stops them: the programs behind the pins go.
    let ours: Vec<u32> = std::fs::read_dir(Path::new(&pin).join("links"))
        .expect("the pinned links")
        .map(|e| bpf::pinned_link_program(&e.expect("a pin").path()))
        .collect();
    assert_eq!(ours.len(), 2, "sys_enter and sys_exit: {ours:?}");
    assert!(ours.iter().all(|&id| bpf::program_exists(id)), "{ours:?}");
    let out = pins.unpin();
    assert!(out.status.success(), "{out:?}");
    assert!(!Path::new(&pin).exists());
    crate::wait_until_secs(10, || ours.iter().all(|&id| !bpf::program_exists(id)));
}

#[test]
fn a_pinned_map_of_another_layout_is_recreated_and_the_gap_flagged() {
    if !privileged() {
        return;
    }
    let pins = PinDir::new("layout");
    let pin = pins.arg();
    let state = tempfile::tempdir().expect("state dir");
    let state_arg = state.path().to_str().expect("utf-8").to_owned();
    let mut args = agent_args(&pin, &state_arg);
    args.extend(["--syscall-hist-entries", "4096"]);
    let mut first = Proc::agent(&args);
    first.wait_windows(1, Duration::from_secs(20));
    assert_eq!(first.terminate(), 0);
    let maps = Path::new(&pin).join("maps");
    let layout = |name: &str| bpf::pinned_map_layout(&maps.join(name));
    assert_eq!(layout("SYSCALL_HIST").max_entries, 4096);
    // Another map pinned where SYSCALL_ERRORS should be: a different type.
    std::fs::rename(maps.join("SYSCALL_LOSS"), maps.join("SYSCALL_ERRORS"))
        .expect("rename within bpffs");
    let errors_before = layout("SYSCALL_ERRORS");

    // Restarted with another bound: both maps are recreated, not reused.
    let mut args = agent_args(&pin, &state_arg);
    args.extend(["--syscall-hist-entries", "2048"]);
    let mut second = Proc::agent(&args);
    second.wait_windows(1, Duration::from_secs(20));
    assert_eq!(second.terminate(), 0);
    let lines = second.stderr_lines();
    let line = lines
        .iter()
        .find(|l| l.contains("probes pinned under"))
        .expect("the pin line");
    assert!(
        line.contains("recreated maps with another layout: SYSCALL_ERRORS, SYSCALL_HIST"),
        "{line}"
    );
    assert!(line.contains("replaced"), "the old links went: {line}");
    assert_eq!(layout("SYSCALL_HIST").max_entries, 2048);
    let errors_after = layout("SYSCALL_ERRORS");
    assert_ne!(errors_after, errors_before);
    assert_eq!(
        (errors_after.key_size, errors_after.value_size),
        (16, 8),
        "a (cgroup, syscall, errno) → count map again"
    );
    // The first window says its counts are not whole.
    let windows = second.windows();
    let restart = restart_of(&windows[0]);
    assert!(restart["follows_sequence"].is_null(), "{restart}");
    let gap = restart["gap"].as_str().expect("a gap");
    assert!(
        gap.contains("recreated (SYSCALL_ERRORS, SYSCALL_HIST)"),
        "{gap}"
    );
    assert_eq!(windows[0]["complete"], false);
}

#[test]
fn a_checkpoint_behind_the_disk_outbox_is_not_resumed_and_the_gap_flagged() {
    if !privileged() {
        return;
    }
    let pins = PinDir::new("outbox");
    let pin = pins.arg();
    let state = tempfile::tempdir().expect("state dir");
    let state_arg = state.path().to_str().expect("utf-8").to_owned();
    let outbox = state.path().join("outbox");
    let outbox_arg = outbox.to_str().expect("utf-8").to_owned();
    // No collector listens: every report stays in the disk outbox.
    let url = format!("http://127.0.0.1:{}", crate::procs::free_port());
    let mut args = agent_args(&pin, &state_arg);
    args.extend(["--collector", &url, "--outbox-dir", &outbox_arg]);
    let run = |expect: &str| {
        let mut agent = Proc::agent(&args);
        agent.wait_windows(2, Duration::from_secs(20));
        assert_eq!(agent.terminate(), 0);
        let lines = agent.stderr_lines();
        assert!(lines.iter().any(|l| l.contains(expect)), "{lines:?}");
        agent.windows()
    };
    let first = run("first start");
    let last = first.last().expect("a window")["sequence"].clone();
    // A clean restart resumes after the last window the outbox holds.
    let second = run("kept the programs");
    assert_eq!(second[0]["restart"]["follows_sequence"], last);
    assert!(second[0]["restart"]["gap"].is_null());
    // As if the agent died after sending a window and before its
    // checkpoint: the outbox is one window ahead of the checkpoint.
    let last = second.last().expect("a window")["sequence"]
        .as_u64()
        .expect("sequence");
    std::fs::write(outbox.join("next_sequence"), (last + 2).to_string()).expect("write");
    let third = run("kept the programs");
    let restart = &third[0]["restart"];
    assert!(restart["follows_sequence"].is_null(), "{restart}");
    let gap = restart["gap"].as_str().expect("a gap");
    assert!(
        gap.contains(&format!(
            "stopped between sending window {} and recording its checkpoint (window {last})",
            last + 1
        )),
        "{gap}"
    );
    assert_eq!(third[0]["complete"], false);
}

/// What the kernel says of pinned objects and programs, asked through the
/// bpf(2) system call by the test itself rather than through sonde's pin
/// code (a shared bug would agree with itself).
mod bpf {
    use std::{ffi::CString, path::Path};

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

    /// A `union bpf_attr`, zeroed beyond the fields a command uses (the
    /// kernel requires that of the bytes it does not know).
    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Self {
            Self([0; 128])
        }
        fn set_u32(&mut self, at: usize, value: u32) -> &mut Self {
            self.0[at..at + 4].copy_from_slice(&value.to_ne_bytes());
            self
        }
        fn set_u64(&mut self, at: usize, value: u64) -> &mut Self {
            self.0[at..at + 8].copy_from_slice(&value.to_ne_bytes());
            self
        }
    }

    /// bpf(cmd, attr): the returned fd, or the error.
    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_int> {
        // SAFETY: attr is a valid, writable bpf_attr of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.0.as_mut_ptr(),
                attr.0.len() as libc::c_uint,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc as libc::c_int)
        }
    }

    /// An fd of the object pinned at `path`.
    fn obj_get(path: &Path) -> libc::c_int {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // pathname (u64) at 0.
        bpf(BPF_OBJ_GET, Attr::new().set_u64(0, c.as_ptr() as u64))
            .unwrap_or_else(|e| panic!("BPF_OBJ_GET {}: {e}", path.display()))
    }

    /// The first `N` u32 words of the info of the object behind `fd`;
    /// closes `fd`.
    fn info<const N: usize>(fd: libc::c_int) -> [u32; N] {
        let mut words = [0u32; N];
        let mut attr = Attr::new();
        // bpf_fd (u32) at 0, info_len (u32) at 4, info (u64) at 8.
        attr.set_u32(0, fd as u32)
            .set_u32(4, (N * 4) as u32)
            .set_u64(8, words.as_mut_ptr() as u64);
        let rc = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr);
        // SAFETY: closing the fd we were given.
        unsafe { libc::close(fd) };
        rc.unwrap_or_else(|e| panic!("BPF_OBJ_GET_INFO_BY_FD: {e}"));
        words
    }

    /// (type, key size, value size, max entries) of the map pinned at
    /// `path`: the first words of `struct bpf_map_info` (type, id,
    /// key_size, value_size, max_entries).
    pub(super) fn pinned_map_layout(path: &Path) -> MapLayout {
        let [map_type, _id, key_size, value_size, max_entries] = info::<5>(obj_get(path));
        MapLayout {
            map_type,
            key_size,
            value_size,
            max_entries,
        }
    }

    /// The id of the program behind the link pinned at `path`: the third
    /// word of `struct bpf_link_info` (type, id, prog_id).
    pub(super) fn pinned_link_program(path: &Path) -> u32 {
        info::<3>(obj_get(path))[2]
    }

    /// Whether a program with id `id` is loaded.
    pub(super) fn program_exists(id: u32) -> bool {
        // prog_id (u32) at 0.
        match bpf(BPF_PROG_GET_FD_BY_ID, Attr::new().set_u32(0, id)) {
            Ok(fd) => {
                // SAFETY: closing the fd we were given.
                unsafe { libc::close(fd) };
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
            Err(e) => panic!("BPF_PROG_GET_FD_BY_ID {id}: {e}"),
        }
    }

    /// A map's layout as the kernel reports it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct MapLayout {
        pub(super) map_type: u32,
        pub(super) key_size: u32,
        pub(super) value_size: u32,
        pub(super) max_entries: u32,
    }
}
