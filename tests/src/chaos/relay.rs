//! A slow TCP relay: accepts connections in a network namespace, connects
//! each to an upstream address there, and forwards the bytes both ways,
//! each chunk held for the delay in force when it arrived. The kernel here
//! has no netem; this is the delay half of a bad link (nftables drops are
//! the loss half). Order is kept: a chunk never overtakes an earlier one.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::TestNetns;

/// How often blocked reads and accepts look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

struct Shared {
    stop: AtomicBool,
    /// Bumped by [`Relay::cut`]: the accept loop closes every connection.
    cuts: AtomicU64,
    delay_ms: AtomicU64,
    connections: AtomicU64,
    bytes: AtomicU64,
}

/// The relay; stopped (every connection closed) on drop.
pub struct Relay {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen` inside `netns` and relays to `upstream` there,
    /// holding every chunk for `delay`.
    pub fn start(
        netns: &TestNetns,
        listen: SocketAddrV4,
        upstream: SocketAddrV4,
        delay: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
            connections: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let fd = netns.fd();
        let (ready_tx, ready_rx) = mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            // This thread, and the threads it starts, live in the namespace.
            // SAFETY: setns on a namespace fd the caller keeps open.
            let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = TcpListener::bind(listen).expect("relay bind");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            accept_loop(&listener, upstream, &s);
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the relay listens");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Holds chunks arriving from now on for `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes every open connection both ways, as a path that breaks
    /// would; whatever was held in the relay is lost.
    pub fn cut(&self) {
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddrV4, shared: &Arc<Shared>) {
    let mut pumps = Vec::new();
    let mut open: Vec<TcpStream> = Vec::new();
    let mut cuts = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = shared.cuts.load(Ordering::Relaxed);
        if now != cuts {
            cuts = now;
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => panic!("relay accept: {e}"),
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&upstream.into(), Duration::from_secs(5))
        else {
            // The collector is down: the agent sees its connection close.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        open.extend([&client, &server].map(|s| s.try_clone().expect("clone")));
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (from, to) = (
                from.try_clone().expect("clone"),
                to.try_clone().expect("clone"),
            );
            pumps.extend(pump(from, to, shared.clone()));
        }
        pumps.retain(|p: &JoinHandle<()>| !p.is_finished());
    }
    for p in pumps {
        let _ = p.join();
    }
}

/// Forwards `from` → `to`, each chunk held for the delay: a reader thread
/// stamps chunks, a writer thread sends each when its time comes. The end
/// of `from` (or an error) half-closes `to` after the chunks before it.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let s = shared.clone();
    let reader = std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(POLL));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if s.stop.load(Ordering::Relaxed) {
                break;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_millis(s.delay_ms.load(Ordering::Relaxed));
                    if tx.send((due, Some(buf[..n].to_vec()))).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let due = Instant::now() + Duration::from_millis(s.delay_ms.load(Ordering::Relaxed));
        let _ = tx.send((due, None));
    });
    let writer = std::thread::spawn(move || {
        while let Ok((due, chunk)) = rx.recv() {
            while Instant::now() < due {
                if shared.stop.load(Ordering::Relaxed) {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                std::thread::sleep((due - Instant::now()).min(POLL));
            }
            let Some(chunk) = chunk else {
                let _ = to.shutdown(Shutdown::Write);
                return;
            };
            if to.write_all(&chunk).is_err() {
                // The far end is gone: close both ends so that the near
                // end learns it too.
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            shared
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    [reader, writer]
}
