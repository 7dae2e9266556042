//! The io_uring runtime (tokio-uring). All tokio-uring code lives here.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use io_uring::{cqueue, opcode, types};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_uring::{OneshotOutputTransform, UnsubmittedOneshot};

use super::{Runtime, Stream};

/// Submission queue entries per worker ring (completion queue is twice
/// that). In-flight operations beyond it wait in tokio-uring, not the kernel.
const RING_ENTRIES: u32 = 1024;

pub struct Uring;

/// Whether the kernel accepted the tuned ring flags (decided by [`probe`]).
static TUNED: AtomicBool = AtomicBool::new(true);

fn builder() -> tokio_uring::Builder {
    let mut ring = tokio_uring::uring_builder();
    if TUNED.load(Ordering::Relaxed) {
        // Completions are delivered as task work; by default the kernel
        // interrupts the running worker for each one. Cooperative task
        // running leaves them for the worker's next entry into the kernel,
        // which comes soon (it submits on every park) and still wakes it if
        // it sleeps. Measured: about a quarter less CPU per proxied request.
        // The worker thread is the ring's only submitter.
        ring.setup_coop_taskrun().setup_single_issuer();
    }
    let mut b = tokio_uring::builder();
    b.entries(RING_ENTRIES).uring_builder(&ring);
    b
}

/// Builds (and drops) one ring: fails like a worker would under seccomp
/// (EPERM), `kernel.io_uring_disabled`, old kernels or memory limits.
/// Kernels before 6.0 reject the tuned flags (EINVAL): then rings are
/// built without them.
pub fn probe() -> io::Result<()> {
    match tokio_uring::Runtime::new(&builder()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            TUNED.store(false, Ordering::Relaxed);
            tracing::info!("io_uring: kernel lacks COOP_TASKRUN/SINGLE_ISSUER; using a plain ring");
            tokio_uring::Runtime::new(&builder()).map(drop)
        }
        result => result.map(drop),
    }
}

impl Stream for tokio_uring::net::TcpStream {
    async fn readable(&self) -> io::Result<()> {
        poll_readable(self.as_raw_fd()).await
    }

    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // tokio-uring reads into [0, capacity) and only ever grows len.
        buf.clear();
        tokio_uring::net::TcpStream::read(self, buf).await
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        tokio_uring::net::TcpStream::write_all(self, buf).await
    }
}

impl Runtime for Uring {
    type Stream = tokio_uring::net::TcpStream;
    type Listener = tokio_uring::net::TcpListener;

    const NAME: &'static str = "io_uring";

    fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
        let rt = tokio_uring::Runtime::new(&builder())?;
        Ok(rt.block_on(fut))
    }

    fn listener(socket: std::net::TcpListener) -> io::Result<Self::Listener> {
        // O_NONBLOCK is left as it is: it belongs to the socket, which may
        // be shared with another process (`haproxy -x`) that relies on it.
        // Our own sockets are blocking: io_uring then waits for a
        // connection itself. See `accept` for non-blocking ones.
        Ok(tokio_uring::net::TcpListener::from_std(socket))
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        // Bounded: each round either accepts or waited for readiness.
        loop {
            match listener.accept().await {
                // A non-blocking socket (inherited from, or handed to, a
                // process that wants it so) makes io_uring answer EAGAIN
                // instead of waiting: wait for a connection, then accept
                // (another process sharing the socket may take it first).
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    poll_readable(listener.as_raw_fd()).await?
                }
                result => return result,
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
            if let Err(e) = cancel_by_fd(fd).await {
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
        let connect = submit_connect(connecting.socket(), addr);
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(())) => Ok(tokio_uring::net::TcpStream::from_std(
                connecting.done().into(),
            )),
            Ok(Err(e)) => {
                drop(connecting.done());
                Err(e)
            }
            // `connecting` shuts the socket down as it is dropped.
            Err(_) => Err(super::connect_timed_out(timeout)),
        }
    }
}

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

/// Turns a poll completion into a result.
struct PollDone;

impl OneshotOutputTransform for PollDone {
    type Output = io::Result<()>;
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: cqueue::Entry) -> io::Result<()> {
        match cqe.result() {
            res if res < 0 => Err(io::Error::from_raw_os_error(-res)),
            _ => Ok(()),
        }
    }
}

/// Waits until `fd` is readable (data, EOF, error or hang-up) with a
/// one-shot IORING_OP_POLL_ADD, which tokio-uring does not offer itself.
///
/// The kernel holds its own reference to the socket while the poll is in
/// flight; callers that drop this future shut the socket down before
/// closing it (see `proxy::copy::abort`), which completes the poll.
fn poll_readable(fd: RawFd) -> impl Future<Output = io::Result<()>> {
    let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
    let sqe = opcode::PollAdd::new(types::Fd(fd), events).build();
    UnsubmittedOneshot::new((), PollDone, sqe).submit()
}

/// Cancels (and waits) for [`Runtime::abandon_accept`] before trying again.
const ABANDON_WAIT: Duration = Duration::from_millis(100);
const ABANDON_ROUNDS: usize = 10;

/// Turns a cancel completion into a result: how many requests it
/// cancelled (ENOENT: none; that is not an error here).
struct CancelDone;

impl OneshotOutputTransform for CancelDone {
    type Output = io::Result<u32>;
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: cqueue::Entry) -> io::Result<u32> {
        match cqe.result() {
            res if res == -libc::ENOENT => Ok(0),
            res if res < 0 => Err(io::Error::from_raw_os_error(-res)),
            res => Ok(res as u32),
        }
    }
}

/// Cancels every request of this ring on `fd` (IORING_OP_ASYNC_CANCEL with
/// IORING_ASYNC_CANCEL_FD | _ALL, Linux 5.19).
fn cancel_by_fd(fd: RawFd) -> impl Future<Output = io::Result<u32>> {
    let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build();
    UnsubmittedOneshot::new((), CancelDone, sqe).submit()
}

/// Turns a connect completion into a result; keeps the address alive until
/// the kernel has read it.
struct ConnectDone;

impl OneshotOutputTransform for ConnectDone {
    type Output = io::Result<()>;
    type StoredData = Box<SockAddr>;

    fn transform_oneshot_output(self, _: Box<SockAddr>, cqe: cqueue::Entry) -> io::Result<()> {
        match cqe.result() {
            res if res < 0 => Err(io::Error::from_raw_os_error(-res)),
            _ => Ok(()),
        }
    }
}

/// IORING_OP_CONNECT on a socket the caller owns (tokio-uring's own connect
/// hides the socket, so a timed-out connect could not be aborted).
fn submit_connect(socket: &Socket, addr: SocketAddr) -> impl Future<Output = io::Result<()>> {
    let addr = Box::new(SockAddr::from(addr));
    let sqe =
        opcode::Connect::new(types::Fd(socket.as_raw_fd()), addr.as_ptr(), addr.len()).build();
    UnsubmittedOneshot::new(addr, ConnectDone, sqe).submit()
}
