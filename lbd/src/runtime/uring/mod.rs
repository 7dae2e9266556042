//! The io_uring runtime: lbd's own driver for one ring per worker, on the
//! `io-uring` crate, inside a current-thread tokio runtime (which keeps
//! the tasks, timers and the reactor the ring's descriptor is polled by).
//!
//! * [`driver`]: the ring, operations in flight and their completions;
//! * [`bufring`]: the provided-buffer ring multishot receives fill;
//! * [`op`]: one-shot operations as futures (accept, connect, send, ...);
//! * [`stream`]: a connected socket, reading through a multishot receive;
//! * [`datagram`]: a UDP socket, receiving through a multishot `recvmsg`.
//!
//! Entries are submitted in one `io_uring_enter` as the thread parks, and
//! completions are read from the shared queue without a syscall when the
//! ring's descriptor turns readable.

mod bufring;
mod datagram;
mod driver;
mod nonblocking;
mod op;
mod stream;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use io_uring::IoUring;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub use datagram::UdpSocket;
pub use stream::TcpStream;

use super::Runtime;

/// Submission queue entries per worker ring. Entries beyond it are
/// submitted early (the queue is flushed when full).
const RING_ENTRIES: u32 = 1024;

/// Completion queue entries: multishot receives post many completions per
/// submission.
const CQ_ENTRIES: u32 = 4 * RING_ENTRIES;

/// The provided-buffer ring: 256 buffers of 16 KiB (HAProxy's
/// `tune.bufsize`) per worker, 4 MiB, of which only pages data passed
/// through are resident.
const BUFFERS: u16 = 256;
const BUFFER_SIZE: usize = 16 * 1024;

pub struct Uring;

/// Whether the kernel accepted the tuned ring flags (decided by [`probe`]).
static TUNED: AtomicBool = AtomicBool::new(true);

fn build_ring() -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    if TUNED.load(Ordering::Relaxed) {
        // Completions are delivered as task work; by default the kernel
        // interrupts the running worker for each one. Cooperative task
        // running leaves them for the worker's next entry into the kernel,
        // which comes soon (it submits on every park) and still wakes it if
        // it sleeps. Measured: about a quarter less CPU per proxied request.
        // The worker thread is the ring's only submitter.
        b.setup_coop_taskrun().setup_single_issuer();
    }
    b.setup_cqsize(CQ_ENTRIES);
    b.build(RING_ENTRIES)
}

/// Builds (and drops) one ring: fails like a worker would under seccomp
/// (EPERM), `kernel.io_uring_disabled`, old kernels or memory limits.
/// Kernels before 6.0 reject the tuned flags (EINVAL): then rings are
/// built without them. The ring then tells whether splicing can work
/// ([`nonblocking`]).
pub fn probe() -> io::Result<()> {
    match build_ring() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            TUNED.store(false, Ordering::Relaxed);
            tracing::info!("io_uring: kernel lacks COOP_TASKRUN/SINGLE_ISSUER; using a plain ring");
            build_ring().map(probe_nonblocking)
        }
        result => result.map(probe_nonblocking),
    }
}

/// See [`nonblocking`]: a failed probe only leaves splice off.
fn probe_nonblocking(mut ring: IoUring) {
    if let Err(e) = nonblocking::probe(&mut ring) {
        tracing::info!(
            "io_uring: cannot tell whether it waits on non-blocking sockets ({e}); splice is off"
        );
    }
}

/// Whether streams can splice ([`nonblocking`]).
pub(super) fn splice_works() -> bool {
    nonblocking::waits()
}

/// The ring's descriptor, for tokio's reactor.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Delivers completions whenever the ring's descriptor turns readable.
async fn reap(fd: RawFd) {
    // SAFETY: the ring stays open until the driver is uninstalled, after
    // the runtime and this task are gone.
    let ring = match unsafe { AsyncFd::register_with_interest(RingFd(fd), Interest::READABLE) } {
        Ok(ring) => ring,
        Err(e) => {
            tracing::error!("cannot poll the io_uring descriptor: {e}");
            return;
        }
    };
    loop {
        let mut ready = match ring.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!("polling the io_uring descriptor failed: {e}");
                return;
            }
        };
        // Cleared first: a completion posted from here on signals again.
        ready.clear_ready();
        driver::dispatch();
    }
}

/// Removes the thread's driver when the runtime is done (also on unwind).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        driver::uninstall();
    }
}

pub struct TcpListener(std::net::TcpListener);

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Runtime for Uring {
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Datagram = UdpSocket;

    const NAME: &'static str = "io_uring";

    fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
        let ring = build_ring()?;
        // Multishot recvmsg came with Linux 6.0, as did the tuned flags.
        let datagrams = TUNED.load(Ordering::Relaxed) && nonblocking::waits();
        let fd = driver::install(ring, datagrams);
        let installed = Installed;
        let rt = tokio::runtime::Builder::new_current_thread()
            .on_thread_park(driver::flush)
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        let out = local.block_on(&rt, async {
            let reaper = tokio::task::spawn_local(reap(fd));
            let out = fut.await;
            reaper.abort();
            out
        });
        // Tasks (and their sockets) go first: dropping them uses the driver.
        drop(local);
        drop(rt);
        drop(installed);
        Ok(out)
    }

    fn listener(socket: std::net::TcpListener) -> io::Result<Self::Listener> {
        // O_NONBLOCK is left as it is: it belongs to the socket, which may
        // be shared with another process (`haproxy -x`) that relies on it.
        // Our own sockets are blocking: io_uring then waits for a
        // connection itself. See `accept` for non-blocking ones.
        Ok(TcpListener(socket))
    }

    fn datagram(socket: std::net::UdpSocket) -> io::Result<Self::Datagram> {
        UdpSocket::from_std(socket)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let fd = listener.as_raw_fd();
        // Bounded: each round either accepts or waited for readiness.
        loop {
            match op::accept(fd).await {
                // A non-blocking socket (inherited from, or handed to, a
                // process that wants it so) makes io_uring answer EAGAIN
                // instead of waiting: wait for a connection, then accept
                // (another process sharing the socket may take it first).
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => op::readable(fd).await?,
                // SAFETY: `conn` is the accepted connection, owned by nobody.
                Ok((conn, peer)) => return Ok((unsafe { TcpStream::from_raw(conn) }, peer)),
                Err(e) => return Err(e),
            }
        }
    }

    async fn abandon_accept<F>(
        listener: &Self::Listener,
        mut accept: std::pin::Pin<&mut F>,
    ) -> Option<(Self::Stream, SocketAddr)>
    where
        F: Future<Output = io::Result<(Self::Stream, SocketAddr)>>,
    {
        // The accept (or its readiness poll) is in the ring: cancel it by
        // descriptor, then let it complete. It either was cancelled or
        // took a connection just before, which is then served. If the
        // future was between its two operations, the cancel found nothing
        // and it goes on to submit the next: cancel again, a few times.
        let fd = listener.as_raw_fd();
        for _ in 0..ABANDON_ROUNDS {
            if let Err(e) = op::cancel_fd(fd).await {
                tracing::warn!(
                    "cannot cancel an io_uring accept ({e}; kernel before 5.19?): it may take \
                     one more connection, which would be reset"
                );
                return None;
            }
            match tokio::time::timeout(ABANDON_WAIT, accept.as_mut()).await {
                Ok(result) => return result.ok(),
                Err(_) => continue,
            }
        }
        None
    }

    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self::Stream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let connecting = Connecting(Some(socket));
        let connect = op::connect(connecting.socket().as_raw_fd(), addr);
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(())) => {
                let fd = connecting.done().into_raw_fd();
                // SAFETY: `fd` was just released by its socket: ours alone.
                Ok(unsafe { TcpStream::from_raw(fd) })
            }
            Ok(Err(e)) => {
                drop(connecting.done());
                Err(e)
            }
            // `connecting` shuts the socket down as it is dropped.
            Err(_) => Err(super::connect_timed_out(timeout)),
        }
    }
}

/// Cancels (and waits) for [`Runtime::abandon_accept`] before trying again.
const ABANDON_WAIT: Duration = Duration::from_millis(100);
const ABANDON_ROUNDS: usize = 10;

/// A socket whose IORING_OP_CONNECT may be in flight. Dropped before the
/// connect completed (timed out, or the caller dropped the connect future:
/// a hedged connect that lost the race), it shuts the socket down, which
/// aborts the connect so the kernel lets go of the socket now, not when its
/// SYN retries run out (closing the descriptor alone would not: the
/// in-flight operation holds its own reference).
struct Connecting(Option<Socket>);

impl Connecting {
    fn socket(&self) -> &Socket {
        match &self.0 {
            Some(socket) => socket,
            None => unreachable!("the socket is taken only by done()"),
        }
    }

    /// The connect completed: the socket, not shut down.
    fn done(mut self) -> Socket {
        match self.0.take() {
            Some(socket) => socket,
            None => unreachable!("done() is called once"),
        }
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if let Some(socket) = &self.0 {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}
