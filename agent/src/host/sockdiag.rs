//! The kernel's own view of listening TCP sockets, per network namespace,
//! through sock_diag (`NETLINK_SOCK_DIAG`, the interface `ss` uses): each
//! socket's port, accept queue (length and bound) and drop count
//! (`sk_drops`, `SK_MEMINFO_DROPS`, what `ss -tlm` shows as `d`).
//!
//! A listening socket's drop count is the only per-port record of a SYN
//! the kernel refused because the SYN queue or the accept queue was full:
//! such a SYN is freed as consumed, with no drop reason, and no tracepoint
//! sees it. Every refusal that the namespace counts as `ListenDrops` also
//! counts one on the listening socket.
//!
//! A netlink socket answers for the network namespace it was created in.
//! One is created per namespace, in a short-lived thread that enters the
//! namespace (which needs CAP_SYS_ADMIN for any namespace but the agent's
//! own), and kept until the namespace is forgotten. The parser takes bytes
//! and returns values, so it is tested on fixtures and fuzzed.

use std::{
    collections::{hash_map::Entry, HashMap},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

/// `SOCK_DIAG_BY_FAMILY`: the message type of requests and answers.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Set on a dump's messages when the table changed while it was read.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
/// `INET_DIAG_SKMEMINFO`: an array of `SK_MEMINFO_*` u32 values.
const INET_DIAG_SKMEMINFO: u16 = 7;
const SK_MEMINFO_DROPS: usize = 8;
/// The answers to one request are read into a buffer of this size.
const RECV_BUFFER: usize = 32 * 1024;
/// A dump that does not answer within this is given up.
const RECV_TIMEOUT_SECS: u8 = 1;

/// One listening TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSocket {
    /// The socket's cookie: unique while the kernel runs.
    pub cookie: u64,
    /// Local port.
    pub port: u16,
    /// Connections waiting to be accepted.
    pub accept_queue: u32,
    /// The accept queue's bound (the `listen()` backlog, capped by
    /// `somaxconn`).
    pub accept_queue_max: u32,
    /// Packets the socket dropped (`sk_drops`); `None` when the kernel
    /// does not report it.
    pub drops: Option<u32>,
}

/// Why the listening sockets of a namespace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("cannot enter network namespace {netns} (needs CAP_SYS_ADMIN): {source}")]
    Enter {
        netns: u32,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} is no longer in network namespace {netns}")]
    Moved { pid: u32, netns: u32 },
    #[error("sock_diag: {0}")]
    Io(#[from] io::Error),
    #[error("{}", refused(*.0))]
    Kernel(i32),
    #[error("sock_diag answer malformed: {0}")]
    Malformed(&'static str),
    #[error("the socket table changed while it was read, twice")]
    Interrupted,
}

/// The kernel's refusal, said plainly.
fn refused(errno: i32) -> String {
    let hint = if errno == libc::ENOENT {
        " (no sock_diag handler for TCP: load the tcp_diag module)"
    } else {
        ""
    };
    format!(
        "sock_diag refused the dump: {}{hint}",
        io::Error::from_raw_os_error(errno)
    )
}

/// The request for every listening TCP socket of `family` (`AF_INET`,
/// `AF_INET6`) with its memory counters.
pub fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    out.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // to the kernel
    out.push(family);
    out.push(IPPROTO_TCP);
    out.push(1 << (INET_DIAG_SKMEMINFO - 1)); // idiag_ext
    out.push(0);
    out.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // idiag_states
    out.resize(NLMSG_HDRLEN + REQ_LEN, 0); // inet_diag_sockid: any
    out
}

/// What one read of a dump's answers held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// The sockets.
    pub sockets: Vec<ListenSocket>,
    /// The dump's last message was among them.
    pub done: bool,
    /// The kernel flagged the dump as inconsistent.
    pub interrupted: bool,
}

/// The netlink messages in `buf` answering request `seq`; messages of
/// other requests are skipped.
pub fn parse_answers(buf: &[u8], seq: u32) -> Result<Answers, DiagError> {
    let mut out = Answers::default();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = u32_at(rest, 0).ok_or(DiagError::Malformed("short header"))? as usize;
        let kind = u16_at(rest, 4).ok_or(DiagError::Malformed("short header"))?;
        let flags = u16_at(rest, 6).ok_or(DiagError::Malformed("short header"))?;
        let msg_seq = u32_at(rest, 8).ok_or(DiagError::Malformed("short header"))?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DiagError::Malformed("message length out of bounds"));
        }
        let payload = rest.get(NLMSG_HDRLEN..len).unwrap_or_default();
        rest = rest.get(align4(len).min(rest.len())..).unwrap_or_default();
        if msg_seq != seq {
            continue;
        }
        out.interrupted |= flags & NLM_F_DUMP_INTR != 0;
        match kind {
            NLMSG_DONE => {
                out.done = true;
                return Ok(out);
            }
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).ok_or(DiagError::Malformed("short error"))? as i32;
                // The kernel sends -errno; any i32 is taken, i32::MIN too.
                return Err(DiagError::Kernel(errno.wrapping_neg()));
            }
            SOCK_DIAG_BY_FAMILY => out.sockets.push(parse_socket(payload)?),
            _ => {}
        }
    }
    Ok(out)
}

/// One `inet_diag_msg` and its attributes.
fn parse_socket(msg: &[u8]) -> Result<ListenSocket, DiagError> {
    if msg.len() < MSG_LEN {
        return Err(DiagError::Malformed("short inet_diag_msg"));
    }
    let field = |at| u32_at(msg, at).ok_or(DiagError::Malformed("short inet_diag_msg"));
    let port = msg
        .get(4..6)
        .and_then(|p| p.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or(DiagError::Malformed("short inet_diag_msg"))?;
    let cookie = u64::from(field(48)?) << 32 | u64::from(field(44)?);
    let accept_queue = field(56)?;
    let accept_queue_max = field(60)?;
    let mut drops = None;
    let mut attrs = msg.get(MSG_LEN..).unwrap_or_default();
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0).unwrap_or(0));
        let kind = u16_at(attrs, 2).unwrap_or(0);
        if len < 4 || len > attrs.len() {
            return Err(DiagError::Malformed("attribute length out of bounds"));
        }
        if kind == INET_DIAG_SKMEMINFO {
            drops = u32_at(attrs.get(4..len).unwrap_or_default(), SK_MEMINFO_DROPS * 4);
        }
        attrs = attrs
            .get(align4(len).min(attrs.len())..)
            .unwrap_or_default();
    }
    Ok(ListenSocket {
        cookie,
        port,
        accept_queue,
        accept_queue_max,
        drops,
    })
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(b.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

/// sock_diag sockets, one per network namespace read so far.
#[derive(Debug)]
pub struct Diag {
    own_netns: Option<u32>,
    sockets: HashMap<u32, OwnedFd>,
    seq: u32,
    /// Where answers are read, kept from one dump to the next.
    buf: Vec<u8>,
}

impl Diag {
    /// No namespace read yet; `own_netns` is the agent's own (entered
    /// without CAP_SYS_ADMIN).
    pub fn new(own_netns: Option<u32>) -> Self {
        Self {
            own_netns,
            sockets: HashMap::new(),
            seq: 0,
            buf: Vec::new(),
        }
    }

    /// Every listening TCP socket (IPv4 and IPv6) of namespace `netns`,
    /// entered through process `pid` the first time.
    pub fn listeners(
        &mut self,
        proc_root: &Path,
        netns: u32,
        pid: u32,
    ) -> Result<Vec<ListenSocket>, DiagError> {
        let fd = match self.sockets.entry(netns) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) if self.own_netns == Some(netns) => e.insert(diag_socket()?),
            Entry::Vacant(e) => e.insert(socket_in(proc_root, netns, pid)?),
        };
        self.buf.resize(RECV_BUFFER, 0);
        let mut all = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            // A dump the kernel flags as inconsistent is read once more.
            let mut tries = 0;
            loop {
                self.seq = self.seq.wrapping_add(1);
                match dump(fd, family, self.seq, &mut self.buf)? {
                    Some(sockets) => {
                        all.extend(sockets);
                        break;
                    }
                    None if tries == 0 => tries += 1,
                    None => return Err(DiagError::Interrupted),
                }
            }
        }
        Ok(all)
    }

    /// Closes the sockets of the namespaces `keep` says no to (a socket
    /// keeps its namespace alive).
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.sockets.retain(|&ns, _| keep(ns));
    }
}

/// A sock_diag socket in the calling thread's network namespace.
fn diag_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS.into(),
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a valid timeval and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A sock_diag socket in namespace `netns`, created by a thread that
/// enters it through process `pid` (the thread then ends; the socket
/// stays in the namespace it was created in).
fn socket_in(proc_root: &Path, netns: u32, pid: u32) -> Result<OwnedFd, DiagError> {
    let ns = std::fs::File::open(proc_root.join(pid.to_string()).join("ns/net"))?;
    // The pid may have been reused since it was found: the namespace file
    // opened must be the namespace wanted.
    let st = ns.metadata()?;
    if std::os::unix::fs::MetadataExt::ino(&st) != u64::from(netns) {
        return Err(DiagError::Moved { pid, netns });
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd we hold; it changes only this
            // short-lived thread's network namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(DiagError::Enter {
                    netns,
                    source: io::Error::last_os_error(),
                });
            }
            Ok(diag_socket()?)
        })
        .join()
        .unwrap_or(Err(DiagError::Malformed("namespace thread panicked")))
    })
}

/// The listening sockets of one family; `None` when the kernel flagged the
/// dump as inconsistent.
fn dump(
    fd: &OwnedFd,
    family: u8,
    seq: u32,
    buf: &mut [u8],
) -> Result<Option<Vec<ListenSocket>>, DiagError> {
    let request = dump_request(family, seq);
    // SAFETY: sends our buffer to the kernel (the socket's default peer).
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut sockets = Vec::new();
    let mut interrupted = false;
    loop {
        // SAFETY: receives into our buffer, at most its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let answers = parse_answers(buf.get(..n as usize).unwrap_or_default(), seq)?;
        sockets.extend(answers.sockets);
        interrupted |= answers.interrupted;
        if answers.done {
            return Ok((!interrupted).then_some(sockets));
        }
        if n == 0 {
            return Err(DiagError::Malformed("dump ended without its last message"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of `kind` for request `seq` around `payload`.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(len), 0);
        m
    }

    /// An `inet_diag_msg` of a listening socket with a memory attribute
    /// holding `drops`.
    fn socket(port: u16, cookie: u64, queue: u32, max: u32, drops: Option<u32>) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[1] = TCP_LISTEN as u8;
        m[4..6].copy_from_slice(&port.to_be_bytes());
        m[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
        m[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        m[56..60].copy_from_slice(&queue.to_ne_bytes());
        m[60..64].copy_from_slice(&max.to_ne_bytes());
        // Another attribute first, of a length that needs padding.
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&[1, 0, 0, 0]);
        if let Some(drops) = drops {
            let mut meminfo = vec![0u32; 9];
            meminfo[SK_MEMINFO_DROPS] = drops;
            m.extend_from_slice(&(4 + 36u16).to_ne_bytes());
            m.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
            for v in meminfo {
                m.extend_from_slice(&v.to_ne_bytes());
            }
        }
        m
    }

    #[test]
    fn request_asks_for_listening_tcp_sockets_with_memory() {
        let r = dump_request(libc::AF_INET6 as u8, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), Some(72));
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(&r[16..20], &[libc::AF_INET6 as u8, 6, 64, 0]);
        assert_eq!(u32_at(&r, 20), Some(1 << 10));
    }

    #[test]
    fn answers_are_parsed_until_done() {
        let mut buf = message(
            SOCK_DIAG_BY_FAMILY,
            2,
            9,
            &socket(8080, 1 << 40 | 5, 3, 128, Some(17)),
        );
        buf.extend(message(
            SOCK_DIAG_BY_FAMILY,
            2,
            8,
            &socket(1, 1, 0, 0, Some(1)),
        )); // another request's
        buf.extend(message(
            SOCK_DIAG_BY_FAMILY,
            2,
            9,
            &socket(22, 6, 0, 4096, None),
        ));
        let a = parse_answers(&buf, 9).unwrap();
        assert!(!a.done);
        assert_eq!(
            a.sockets,
            vec![
                ListenSocket {
                    cookie: 1 << 40 | 5,
                    port: 8080,
                    accept_queue: 3,
                    accept_queue_max: 128,
                    drops: Some(17)
                },
                ListenSocket {
                    cookie: 6,
                    port: 22,
                    accept_queue: 0,
                    accept_queue_max: 4096,
                    drops: None
                },
            ]
        );
        let done = message(NLMSG_DONE, 2 | NLM_F_DUMP_INTR, 9, &0i32.to_ne_bytes());
        let a = parse_answers(&done, 9).unwrap();
        assert!(a.done && a.interrupted && a.sockets.is_empty());
    }

    #[test]
    fn errors_and_garbage_are_errors() {
        let err = message(NLMSG_ERROR, 0, 3, &(-13i32).to_ne_bytes());
        assert!(matches!(parse_answers(&err, 3), Err(DiagError::Kernel(13))));
        // Found by the fuzzer: negating i32::MIN overflowed.
        let min = message(NLMSG_ERROR, 0, 3, &i32::MIN.to_ne_bytes());
        assert!(matches!(
            parse_answers(&min, 3),
            Err(DiagError::Kernel(i32::MIN))
        ));
        let mut long = message(SOCK_DIAG_BY_FAMILY, 0, 3, &socket(1, 1, 0, 0, Some(0)));
        long[0] = 0xff; // longer than the buffer
        assert!(parse_answers(&long, 3).is_err());
        let short = message(SOCK_DIAG_BY_FAMILY, 0, 3, &[0u8; 20]);
        assert!(parse_answers(&short, 3).is_err());
        let mut bad_attr = socket(1, 1, 0, 0, Some(0));
        bad_attr[MSG_LEN] = 200; // attribute past its message
        assert!(parse_answers(&message(SOCK_DIAG_BY_FAMILY, 0, 3, &bad_attr), 3).is_err());
        assert_eq!(parse_answers(&[], 3).unwrap(), Answers::default());
        assert!(parse_answers(&[1, 2, 3], 3).is_err());
    }

    #[test]
    fn reads_this_namespace_listeners() {
        // A listener of our own, on an ephemeral loopback port, with a
        // backlog of 7.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: listen() again on our own bound socket sets its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 7) }, 0);
        let own = crate::host::netns::of_pid(Path::new("/proc"), std::process::id());
        let mut diag = Diag::new(own);
        let all = diag
            .listeners(Path::new("/proc"), own.unwrap(), std::process::id())
            .unwrap();
        let mine = all.iter().find(|s| s.port == port).expect("our listener");
        assert_eq!(mine.accept_queue, 0);
        assert_eq!(mine.drops, Some(0));
        assert_eq!(mine.accept_queue_max, 7);
    }
}
