//! Listening sockets: one SO_REUSEPORT socket per worker for each bind.
//!
//! The control thread opens them (so a bind error fails a start or a reload
//! before anything changes) and keeps the originals; each worker accepts on
//! its own duplicate. To stop a listener, the control thread marks it
//! closed and wakes the workers, which stop their accept loops (an io_uring
//! accept in flight is cancelled, see [`crate::runtime::Runtime::abandon_accept`]),
//! and shuts the sockets down, unless another process may hold them too.
//!
//! Sockets are shared with another process when they came from it (`haproxy
//! -x`, [`inherit`]) or were handed to one (`_getsocks`,
//! [`ListenerSockets::mark_shared`]). shutdown(2) acts on the socket, not
//! on one process's descriptor: it would stop the other process's accepts
//! and reset its queued connections. Such sockets are only closed.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use lbd_config::Protocol as Carried;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Listen backlog per socket (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Whether a listener may open an address another process listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Refuse it: the other process would silently get a share of the
    /// connections (the default, and every reload).
    #[default]
    Exclusive,
    /// `haproxy -sf/-st <pids>` at start: the processes listening there are
    /// the old lbd (or HAProxy) being replaced. Both listen for a moment in
    /// one SO_REUSEPORT group; the new one tells the old ones to stop once
    /// it serves, so no connection is refused meanwhile.
    TakingOver,
}

/// The sockets of one bind address: one per worker, or more when more came
/// from the process taken over (workers then share them out).
#[derive(Debug)]
pub struct ListenerSockets {
    bind: SocketAddr,
    /// TCP listening sockets, or bound UDP sockets.
    protocol: Carried,
    sockets: Vec<Socket>,
    /// How many workers share them out.
    workers: usize,
    closed: AtomicBool,
    /// Another process may hold these sockets (see the module doc).
    shared: AtomicBool,
}

impl ListenerSockets {
    /// Opens `workers` sockets bound to `bind` in one SO_REUSEPORT group.
    /// `freebind`: bind even if `bind`'s address is not on this host yet.
    ///
    /// Refuses an address another socket is listening on already (another
    /// lbd with the same config, a HAProxy): SO_REUSEPORT would otherwise
    /// let both processes share it silently and split its connections.
    /// `check_others`: false when lbd's own open listeners overlap `bind`
    /// (see `Snapshot::listens_near`); the check would see those. The
    /// check is also skipped for [`Sharing::TakingOver`].
    ///
    /// UDP sockets are bound, not listening; they are inherited from the
    /// process taken over (`-x`, `--takeover`) like TCP ones.
    pub fn open(
        bind: SocketAddr,
        protocol: Carried,
        workers: usize,
        freebind: bool,
        check_others: bool,
        sharing: Sharing,
    ) -> io::Result<Self> {
        let workers = workers.max(1);
        let mut sockets = take_inherited(bind, protocol);
        let shared = !sockets.is_empty();
        if !shared && check_others && sharing == Sharing::Exclusive {
            refuse_if_listened_on(bind, protocol, freebind)?;
        }
        while sockets.len() < workers {
            match open_one(bind, protocol, freebind) {
                Ok(socket) => sockets.push(socket),
                // The inherited socket has no SO_REUSEPORT (a HAProxy with
                // `noreuseport`): the workers share what there is.
                Err(e) if shared && e.kind() == io::ErrorKind::AddrInUse => {
                    tracing::info!(
                        "{bind}: the received socket cannot be joined by more (no \
                         SO_REUSEPORT); {workers} workers share {}",
                        sockets.len()
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ListenerSockets {
            bind,
            protocol,
            sockets,
            workers,
            closed: AtomicBool::new(false),
            shared: AtomicBool::new(shared),
        })
    }

    pub fn bind(&self) -> SocketAddr {
        self.bind
    }

    /// The sockets' descriptors, in the order they joined the group.
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.sockets.iter().map(|l| l.as_raw_fd()).collect()
    }

    /// The sockets, to hand to another process (`_getsocks`).
    pub fn borrow_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.sockets.iter().map(|l| l.as_fd())
    }

    /// Duplicates of worker `id`'s sockets, owned by the caller: its own,
    /// and a share of the extra ones when more came from the process taken
    /// over (or a share of fewer, see [`ListenerSockets::open`]).
    pub fn for_worker(&self, id: usize) -> io::Result<Vec<TcpListener>> {
        self.duplicates(id, Carried::Tcp)
    }

    /// Worker `id`'s bound UDP socket(s), as [`Self::for_worker`] for TCP.
    pub fn datagram_for_worker(&self, id: usize) -> io::Result<Vec<UdpSocket>> {
        self.duplicates(id, Carried::Udp)
    }

    fn duplicates<T: From<Socket>>(&self, id: usize, want: Carried) -> io::Result<Vec<T>> {
        if self.protocol != want {
            return Err(io::Error::other(format!(
                "{}: {} sockets asked of a {} listener",
                self.bind,
                want.name(),
                self.protocol.name()
            )));
        }
        if self.sockets.len() < self.workers {
            return Ok(vec![self.sockets[id % self.sockets.len()]
                .try_clone()?
                .into()]);
        }
        self.sockets
            .iter()
            .enumerate()
            .filter(|(i, _)| i % self.workers == id % self.workers)
            .map(|(_, l)| Ok(l.try_clone()?.into()))
            .collect()
    }

    /// Another process holds (or is about to hold) these sockets: from now
    /// on they are never shut down.
    pub fn mark_shared(&self) {
        self.shared.store(true, Ordering::Release);
    }

    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// Stops accepting. The caller then wakes the workers (see
    /// `Shared::wake_workers`), whose accept loops see [`Self::is_closed`].
    /// Unless shared, the sockets are also shut down: that fails every
    /// pending accept at once (even on kernels that cannot cancel an
    /// io_uring accept by descriptor). Connections already accepted are
    /// not affected.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // UDP: the workers' receive loops stop on the flag (a shut down
        // UDP socket would only make their reads return empty).
        if self.is_shared() || self.protocol == Carried::Udp {
            return;
        }
        for l in &self.sockets {
            // ENOTCONN just means it was already shut down.
            let _ = with_socket(l, |s| s.shutdown(std::net::Shutdown::Both));
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Sockets received from the process being taken over (`haproxy -x`,
/// `run --takeover`), not yet claimed by a listener: TCP listening sockets
/// and bound UDP sockets.
static INHERITED: Mutex<Vec<Socket>> = Mutex::new(Vec::new());

/// Keeps the TCP listening sockets and bound UDP sockets among `fds` for
/// the listeners about to open ([`ListenerSockets::open`] takes those of
/// its address and protocol); closes the others (the old process's unix
/// sockets). Returns how many were kept.
pub fn inherit(fds: Vec<OwnedFd>) -> usize {
    let mut kept = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    for fd in fds {
        let socket = Socket::from(fd);
        if protocol_of(&socket).is_some() {
            kept.push(socket);
        }
    }
    kept.len()
}

/// What an inherited socket serves: TCP if it listens, UDP if it is a
/// bound datagram socket; `None` for anything else.
fn protocol_of(socket: &Socket) -> Option<Carried> {
    let inet = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.port() != 0);
    match socket.r#type().ok()? {
        Type::STREAM if inet && socket.is_listener().unwrap_or(false) => Some(Carried::Tcp),
        Type::DGRAM if inet => Some(Carried::Udp),
        _ => None,
    }
}

/// Closes the inherited sockets no listener claimed (their addresses are
/// not in the config any more) and returns their addresses.
pub fn drop_unclaimed() -> Vec<SocketAddr> {
    let mut kept = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    kept.drain(..)
        .filter_map(|l| l.local_addr().ok()?.as_socket())
        .collect()
}

/// An inherited TCP socket bound to `bind`, for a TCP stats socket (the
/// others of that address, if any, are left to [`drop_unclaimed`]).
pub fn take_one_inherited(bind: SocketAddr) -> Option<TcpListener> {
    let mut mine = take_inherited(bind, Carried::Tcp);
    let first = mine.pop();
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(mine);
    first.map(TcpListener::from)
}

/// The inherited sockets of `protocol` bound to `bind` (an IPv6 one only
/// if v6-only, as lbd's own are).
fn take_inherited(bind: SocketAddr, protocol: Carried) -> Vec<Socket> {
    let mut kept = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    let matches = |s: &Socket| {
        s.local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == bind)
            && protocol_of(s) == Some(protocol)
            && (!bind.is_ipv6() || s.only_v6().unwrap_or(false))
    };
    let (mine, others) = kept.drain(..).partition(|s| matches(s));
    *kept = others;
    mine
}

/// Binds `bind` once without SO_REUSEPORT and lets go at once: that fails
/// with EADDRINUSE exactly when some socket is listening there (SO_REUSEADDR
/// still allows connections in TIME_WAIT and closed listeners of our own).
fn refuse_if_listened_on(bind: SocketAddr, protocol: Carried, freebind: bool) -> io::Result<()> {
    let probe = unshared_socket(bind, protocol, freebind)?;
    match probe.bind(&bind.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address already in use by another process (another lbd with this config, or a \
             HAProxy?); lbd does not share a listening address",
        )),
        other => other,
    }
}

/// A TCP (or UDP) socket for `bind` with SO_REUSEADDR (and the v6-only and
/// freebind options), not yet bound.
fn unshared_socket(bind: SocketAddr, protocol: Carried, freebind: bool) -> io::Result<Socket> {
    let socket = match protocol {
        Carried::Tcp => Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))?,
        Carried::Udp => Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?,
    };
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

fn open_one(bind: SocketAddr, protocol: Carried, freebind: bool) -> io::Result<Socket> {
    let socket = unshared_socket(bind, protocol, freebind)?;
    socket.set_reuse_port(true)?;
    socket.bind(&bind.into())?;
    match protocol {
        Carried::Tcp => socket.listen(BACKLOG)?,
        Carried::Udp => grow_receive_buffer(&socket),
    }
    Ok(socket)
}

/// Receive buffer of a UDP listener's socket: every client's datagrams
/// queue in it until the worker takes them, and the default (about 200
/// KiB, a few hundred small datagrams) drops bursts.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Raises a UDP listener socket's receive buffer to [`UDP_RECEIVE_BUFFER`]:
/// with SO_RCVBUFFORCE when lbd may (CAP_NET_ADMIN), else as far as
/// `net.core.rmem_max` allows. A failure only leaves the default.
pub(crate) fn grow_receive_buffer(socket: &Socket) {
    let size = UDP_RECEIVE_BUFFER as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
            tracing::debug!("cannot raise a UDP socket's receive buffer: {e}");
        }
    }
}

/// Readies a listening socket for a worker: sets TCP_NODELAY on it, which
/// Linux copies into every socket it accepts, so accepted connections need
/// no setsockopt of their own. Also for sockets handed over by another
/// process (`-x`, inherited descriptors), which may not have it.
pub fn serve_listener(socket: &TcpListener) {
    if let Err(e) = with_socket(socket, |s| s.set_nodelay(true)) {
        tracing::warn!("cannot set TCP_NODELAY on a listening socket ({e}): its connections will delay small writes");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`serve_listener`] relies on: the kernel copies TCP_NODELAY
    /// from the listener into accepted sockets.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
        let served = TcpListener::bind("127.0.0.1:0").expect("bind");
        serve_listener(&served);
        for (listener, nodelay) in [(&plain, false), (&served, true)] {
            let addr = listener.local_addr().expect("addr");
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            assert_eq!(accepted.nodelay().expect("getsockopt"), nodelay);
        }
    }
}
