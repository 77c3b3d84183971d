//! Network fixtures: test network namespaces (`ip netns`), a veth pair
//! between two of them, processes that keep a namespace readable, nftables
//! rules and their counters, memory shared with forked children, and the
//! raw socket calls those children make.
//!
//! Only addresses inside the test namespaces are used (10.77.0.1/24 and
//! 10.77.0.2/24 on the veth pair) or their own loopback; everything created
//! is removed on drop.

use std::{
    ffi::CString,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Command, Stdio},
};

use crate::wait_until;

/// The address of namespace `a` of a [`NetnsPair`].
pub const ADDR_A: [u8; 4] = [10, 77, 0, 1];
/// The address of namespace `b`.
pub const ADDR_B: [u8; 4] = [10, 77, 0, 2];

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace made with `ip netns add`, its loopback up; deleted
/// on drop (with any veth end inside it).
pub struct TestNetns {
    name: String,
    fd: libc::c_int,
    inode: u32,
}

impl TestNetns {
    /// Creates `sonde-<tag>-<pid>`.
    pub fn new(tag: &str) -> Self {
        let name = format!("sonde-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let path = PathBuf::from("/var/run/netns").join(&name);
        let inode = std::fs::metadata(&path).expect("stat the netns file").ino() as u32;
        let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: opening a file by a valid NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open {}", path.display());
        Self { name, fd, inode }
    }

    /// Its name for `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A descriptor of it, open as long as this lives (for `setns`).
    pub fn fd(&self) -> libc::c_int {
        self.fd
    }

    /// Its inode number: how sonde names it.
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// Makes `command`'s child enter it before it runs its program.
    pub fn enter_on_exec(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        let fd = self.fd;
        // SAFETY: setns is async-signal-safe; the closure touches nothing else.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// Moves the calling (single-threaded, forked) process into it;
    /// async-signal-safe.
    pub fn enter(&self) {
        // SAFETY: setns on a namespace fd we hold open.
        if unsafe { libc::setns(self.fd, libc::CLONE_NEWNET) } != 0 {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(90) };
        }
    }

    /// Runs `program args` inside it and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str], stdin: Option<&str>) -> String {
        self.try_exec(program, args, stdin)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestNetns::exec`], its failure as a value.
    pub fn try_exec(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {program} in {}: {e}", self.name));
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("wait");
        if !out.status.success() {
            return Err(format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads an nftables ruleset (`nft -f -`) into it
    /// (`cargo xtask setup` installs nftables).
    pub fn nft(&self, ruleset: &str) {
        self.exec("nft", &["-f", "-"], Some(ruleset));
    }

    /// [`TestNetns::nft`], its failure as a value (a guest kernel may lack
    /// an expression's module).
    pub fn try_nft(&self, ruleset: &str) -> Result<(), String> {
        self.try_exec("nft", &["-f", "-"], Some(ruleset)).map(drop)
    }

    /// The packet count of the first rule with a counter in table
    /// `inet <table>`.
    pub fn nft_counter(&self, table: &str) -> u64 {
        let json = self.exec("nft", &["-j", "list", "table", "inet", table], None);
        let value: serde_json::Value = serde_json::from_str(&json).expect("nft JSON");
        value["nftables"]
            .as_array()
            .expect("nftables array")
            .iter()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .find_map(|expr| expr["counter"]["packets"].as_u64())
            .expect("a rule with a counter")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // SAFETY: closing our own fd.
        unsafe { libc::close(self.fd) };
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` at 10.77.0.1/24, `b` at
/// 10.77.0.2/24.
pub struct NetnsPair {
    /// The first.
    pub a: TestNetns,
    /// The second.
    pub b: TestNetns,
}

impl NetnsPair {
    /// Creates both and the link between them.
    pub fn new(tag: &str) -> Self {
        let a = TestNetns::new(&format!("{tag}-a"));
        let b = TestNetns::new(&format!("{tag}-b"));
        let pid = std::process::id();
        let (va, vb) = (format!("sva{pid}"), format!("svb{pid}"));
        ip(&[
            "link",
            "add",
            &va,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            b.name(),
        ]);
        for (ns, dev, addr) in [(&a, &va, "10.77.0.1/24"), (&b, &vb, "10.77.0.2/24")] {
            ip(&["-n", ns.name(), "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns.name(), "link", "set", dev, "up"]);
        }
        Self { a, b }
    }
}

/// A process parked in a namespace, so that the namespace's counters can be
/// read through `/proc/<pid>/net` whatever else runs there; killed on drop.
pub struct Holder {
    pid: libc::pid_t,
}

impl Holder {
    /// Forks it into `ns`.
    pub fn new(ns: &TestNetns) -> Self {
        // SAFETY: the child only makes system calls.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            ns.enter();
            loop {
                // SAFETY: waits for the signal that ends it.
                unsafe { libc::pause() };
            }
        }
        let holder = Self { pid };
        let link = format!("/proc/{pid}/ns/net");
        wait_until(|| std::fs::metadata(&link).is_ok_and(|m| m.ino() == u64::from(ns.inode())));
        holder
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The kernel's TCP counters of its namespace, read by the tests' own
    /// parser (not sonde's: a shared bug would agree with itself).
    pub fn counters(&self) -> TcpCounters {
        let read = |file: &str| {
            let path = format!("/proc/{}/net/{file}", self.pid);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
        };
        let (snmp, netstat) = (read("snmp"), read("netstat"));
        let tcp = |name: &str| proc_net_counter(&snmp, "Tcp", name);
        let ext = |name: &str| proc_net_counter(&netstat, "TcpExt", name);
        TcpCounters {
            active_opens: tcp("ActiveOpens"),
            attempt_fails: tcp("AttemptFails"),
            retrans_segs: tcp("RetransSegs"),
            out_rsts: tcp("OutRsts"),
            listen_overflows: ext("ListenOverflows"),
            listen_drops: ext("ListenDrops"),
        }
    }
}

/// The TCP counters of a namespace the tests check sonde against, from
/// `/proc/<pid>/net/snmp` (`Tcp:`) and `netstat` (`TcpExt:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// `Tcp: ActiveOpens`.
    pub active_opens: u64,
    /// `Tcp: AttemptFails`.
    pub attempt_fails: u64,
    /// `Tcp: RetransSegs`.
    pub retrans_segs: u64,
    /// `Tcp: OutRsts`.
    pub out_rsts: u64,
    /// `TcpExt: ListenOverflows`.
    pub listen_overflows: u64,
    /// `TcpExt: ListenDrops`.
    pub listen_drops: u64,
}

impl TcpCounters {
    /// The counters sonde checks per namespace, as (kernel name, value).
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("ActiveOpens", self.active_opens),
            ("AttemptFails", self.attempt_fails),
            ("RetransSegs", self.retrans_segs),
            ("OutRsts", self.out_rsts),
            ("ListenOverflows", self.listen_overflows),
        ]
    }

    /// Counter by counter, `self - earlier`; a counter must not go back.
    pub fn since(&self, earlier: &TcpCounters) -> TcpCounters {
        let d = |now: u64, then: u64| {
            now.checked_sub(then)
                .unwrap_or_else(|| panic!("a counter went back: {earlier:?} then {self:?}"))
        };
        TcpCounters {
            active_opens: d(self.active_opens, earlier.active_opens),
            attempt_fails: d(self.attempt_fails, earlier.attempt_fails),
            retrans_segs: d(self.retrans_segs, earlier.retrans_segs),
            out_rsts: d(self.out_rsts, earlier.out_rsts),
            listen_overflows: d(self.listen_overflows, earlier.listen_overflows),
            listen_drops: d(self.listen_drops, earlier.listen_drops),
        }
    }
}

/// Counter `name` of section `prefix` in a `/proc/net/snmp` or `netstat`
/// text: a line `Tcp: Name1 Name2 ...` of names, then a line `Tcp: 1 2 ...`
/// of their values.
pub fn proc_net_counter(text: &str, prefix: &str, name: &str) -> u64 {
    let tag = format!("{prefix}:");
    let mut lines = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(tag.as_str()));
    let (names, values) = (lines.next(), lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no {prefix} header and value lines in:\n{text}");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {prefix} {name} in: {names}"));
    values
        .split_whitespace()
        .nth(at)
        .unwrap_or_else(|| panic!("no value for {prefix} {name} in: {values}"))
        .parse()
        .unwrap_or_else(|e| panic!("{prefix} {name}: {e}"))
}

#[test]
fn proc_net_counters_by_name() {
    let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                   TcpExt: 0 4 6\n\
                   MPTcpExt: ListenOverflows\n\
                   MPTcpExt: 9\n";
    let snmp = "Tcp: RtoAlgorithm MaxConn ActiveOpens\nTcp: 1 -1 42\n";
    assert_eq!(proc_net_counter(netstat, "TcpExt", "ListenOverflows"), 4);
    assert_eq!(proc_net_counter(netstat, "TcpExt", "ListenDrops"), 6);
    assert_eq!(proc_net_counter(netstat, "MPTcpExt", "ListenOverflows"), 9);
    assert_eq!(proc_net_counter(snmp, "Tcp", "ActiveOpens"), 42);
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: ending and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Anonymous memory shared with forked children: `u64` slots they write
/// their results into.
pub struct Shared {
    ptr: *mut u64,
    slots: usize,
}

impl Shared {
    /// `slots` zeroed slots.
    pub fn new(slots: usize) -> Self {
        // SAFETY: a fresh anonymous shared mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                slots * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Self {
            ptr: ptr.cast(),
            slots,
        }
    }

    /// Writes slot `i` (async-signal-safe; out of range is ignored).
    pub fn set(&self, i: usize, value: u64) {
        if i < self.slots {
            // SAFETY: inside the mapping; volatile so the other process sees it.
            unsafe { self.ptr.add(i).write_volatile(value) };
        }
    }

    /// Reads slot `i`.
    pub fn get(&self, i: usize) -> u64 {
        assert!(i < self.slots);
        // SAFETY: inside the mapping.
        unsafe { self.ptr.add(i).read_volatile() }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.slots * 8) };
    }
}

/// Ends the calling (forked) process by SIGALRM after `secs`, so that a
/// child whose peer failed cannot hang the suite; async-signal-safe.
pub fn deadline(secs: u32) {
    // SAFETY: arms the process's alarm.
    unsafe { libc::alarm(secs * crate::vm_time_factor()) };
}

/// Waits until a socket listens on `port` in the namespace `pid` lives in.
pub fn wait_listening(pid: u32, port: u16) {
    let want = format!(":{port:04X} ");
    wait_until(|| {
        std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1).is_some_and(|a| format!("{a} ").ends_with(&want))
                    && f.get(3) == Some(&"0A")
            })
        })
    });
}

/// An IPv4 socket address, built before a fork.
pub fn sockaddr(addr: [u8; 4], port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr),
        },
        sin_zero: [0; 8],
    }
}

/// The errno of the last failed call; async-signal-safe.
pub fn errno() -> i32 {
    // SAFETY: reads the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// CLOCK_MONOTONIC in nanoseconds; async-signal-safe.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A TCP socket connected to `to`, or the connect's errno.
pub fn connect(to: &libc::sockaddr_in) -> Result<libc::c_int, i32> {
    // SAFETY: raw socket calls with a valid address.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(errno());
        }
        if libc::connect(
            fd,
            (to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            let e = errno();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// A TCP socket listening on `on`.
pub fn listen(on: &libc::sockaddr_in, backlog: i32) -> libc::c_int {
    // SAFETY: raw socket calls with a valid address.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        );
        if fd < 0
            || libc::bind(
                fd,
                (on as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) != 0
            || libc::listen(fd, backlog) != 0
        {
            libc::_exit(91);
        }
        fd
    }
}

/// Reads until end of stream or an error; returns (bytes, errno at the
/// end: 0 for a clean end of stream).
pub fn drain(fd: libc::c_int) -> (u64, i32) {
    let mut buf = [0u8; 65536];
    let mut total = 0;
    loop {
        // SAFETY: reading into a valid stack buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return (total, errno());
        }
        if n == 0 {
            return (total, 0);
        }
        total += n as u64;
    }
}

/// Closes our sending side, waits for the peer's end of stream (so that
/// everything we sent was acknowledged), and closes.
pub fn finish(fd: libc::c_int) {
    // SAFETY: plain socket calls on our own fd.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    drain(fd);
    // SAFETY: as above.
    unsafe { libc::close(fd) };
}
