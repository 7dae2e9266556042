//! Listening sockets: one SO_REUSEPORT socket per worker for each bind.
//!
//! The control thread opens them (so a bind error fails a start or a reload
//! before anything changes) and keeps the originals; each worker accepts on
//! its own duplicate. To stop a listener, the control thread shuts the
//! sockets down: every worker's pending accept then fails at once, even an
//! io_uring accept already in flight, and the worker closes its duplicate.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Listen backlog per socket (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// The sockets of one bind address, one per worker.
#[derive(Debug)]
pub struct ListenerSockets {
    bind: SocketAddr,
    per_worker: Vec<TcpListener>,
    closed: AtomicBool,
}

impl ListenerSockets {
    /// Opens `workers` sockets bound to `bind` in one SO_REUSEPORT group.
    /// `freebind`: bind even if `bind`'s address is not on this host yet.
    ///
    /// Refuses an address another socket is listening on already (another
    /// lbd with the same config, a HAProxy): SO_REUSEPORT would otherwise
    /// let both processes share it silently and split its connections.
    /// `check_others`: false when lbd's own open listeners overlap `bind`
    /// (see `Snapshot::listens_near`); the check would see those.
    pub fn open(
        bind: SocketAddr,
        workers: usize,
        freebind: bool,
        check_others: bool,
    ) -> io::Result<Self> {
        if check_others {
            refuse_if_listened_on(bind, freebind)?;
        }
        let per_worker = (0..workers.max(1))
            .map(|_| open_one(bind, freebind))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(ListenerSockets {
            bind,
            per_worker,
            closed: AtomicBool::new(false),
        })
    }

    pub fn bind(&self) -> SocketAddr {
        self.bind
    }

    /// A duplicate of worker `id`'s socket, owned by the caller.
    pub fn for_worker(&self, id: usize) -> io::Result<TcpListener> {
        self.per_worker[id % self.per_worker.len()].try_clone()
    }

    /// Stops accepting: wakes every pending accept with an error. Connections
    /// already accepted are not affected.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for l in &self.per_worker {
            // ENOTCONN just means it was already shut down.
            let _ = with_socket(l, |s| s.shutdown(std::net::Shutdown::Both));
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Binds `bind` once without SO_REUSEPORT and lets go at once: that fails
/// with EADDRINUSE exactly when some socket is listening there (SO_REUSEADDR
/// still allows connections in TIME_WAIT and closed listeners of our own).
fn refuse_if_listened_on(bind: SocketAddr, freebind: bool) -> io::Result<()> {
    let probe = unshared_socket(bind, freebind)?;
    match probe.bind(&bind.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address already in use by another process (another lbd with this config, or a \
             HAProxy?); lbd does not share a listening address",
        )),
        other => other,
    }
}

/// A TCP socket for `bind` with SO_REUSEADDR (and the v6-only and freebind
/// options), not yet bound.
fn unshared_socket(bind: SocketAddr, freebind: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if bind.is_ipv6() {
        // `[::]:80` and `0.0.0.0:80` are separate listeners.
        socket.set_only_v6(true)?;
        if freebind {
            socket.set_freebind_ipv6(true)?;
        }
    } else if freebind {
        socket.set_freebind(true)?;
    }
    Ok(socket)
}

fn open_one(bind: SocketAddr, freebind: bool) -> io::Result<TcpListener> {
    let socket = unshared_socket(bind, freebind)?;
    socket.set_reuse_port(true)?;
    socket.bind(&bind.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Runs `f` with socket2's view of a socket given by fd, for the stream
/// types of either runtime (they expose `AsRawFd`, not socket2 types).
pub fn with_socket<T>(fd: &impl AsRawFd, f: impl FnOnce(SockRef<'_>) -> T) -> T {
    // SAFETY: `fd` is borrowed from a live socket object for this call only.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    f(SockRef::from(&borrowed))
}

/// Whether a connect error is lbd's own shortage rather than the member's
/// fault: no descriptors (EMFILE, ENFILE), no kernel memory (ENOBUFS,
/// ENOMEM) or no local address/port to connect from (EADDRNOTAVAIL).
/// Trying another member would not help, and the member's health must not
/// suffer for it.
pub fn is_local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}
