//! The seam between lbd and the async runtime that does its socket I/O.
//!
//! Everything above this module (balancing, config, proxying, reload) is
//! written against the two small traits here and never names the io_uring
//! driver or tokio's reactor directly. Both implementations are thread-per-core: a
//! single-threaded runtime per worker, tasks spawned with
//! `tokio::task::spawn_local`, so futures need not be `Send`.
//!
//! * [`uring::Uring`]: lbd's own io_uring driver on the `io-uring` crate
//!   (completions; reads through multishot receives into a ring of
//!   provided buffers).
//! * [`epoll::Epoll`]: a current-thread tokio runtime (epoll readiness).
//!
//! I/O uses owned buffers (`Vec<u8>` in, `Vec<u8>` back), the shape io_uring
//! needs; the epoll side adapts to it at no cost.

pub mod datagram;
pub mod epoll;
pub mod pktinfo;
pub mod splice;
pub mod uring;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

/// A connected TCP socket. `read` fills `buf` from index 0 (its length on
/// return is the byte count); `write_all` writes all of `buf`.
/// `readable` waits until a read would not block (data, EOF or an error)
/// without needing a buffer, so idle connections hold none.
#[allow(async_fn_in_trait)] // thread-per-core: futures are deliberately !Send
pub trait Stream: AsRawFd + 'static {
    async fn readable(&self) -> io::Result<()>;
    /// Waits until the peer has ended its side (EOF), or the socket
    /// failed, without waking for data: for a socket whose data the kernel
    /// relays ([`crate::proxy::kernel`]), whose every chunk would
    /// otherwise wake a readiness wait. By default a readiness wait.
    async fn hangup(&self) -> io::Result<()> {
        self.readable().await
    }
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Moves up to `len` bytes from this socket into the empty pipe whose
    /// write end is `pipe` (`splice(2)`), waiting for data as `read`
    /// does: how many (0: EOF). Only when [`Stream::can_splice`].
    async fn splice_to(&self, pipe: RawFd, len: usize) -> io::Result<usize>;
    /// Moves `len` bytes (all it holds) from the pipe whose read end is
    /// `pipe` into this socket, waiting for room as `write_all` does.
    async fn splice_from(&self, pipe: RawFd, len: usize) -> io::Result<()>;
    /// Whether `splice_to` / `splice_from` work here.
    fn can_splice(&self) -> bool;
}

/// A UDP socket: a listener's bound socket, or a flow's socket connected
/// to its member. Readiness-shaped (see [`datagram`]): `readable` waits,
/// the `try_` calls never block (`WouldBlock` when nothing is queued, or
/// no room to send).
#[allow(async_fn_in_trait)]
pub trait Datagram: AsRawFd + 'static {
    async fn readable(&self) -> io::Result<()>;
    /// A datagram: its length in `buf`, its source, and the address it
    /// was sent to where the socket reports it (a listener bound to a
    /// wildcard address, see [`pktinfo`]).
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)>;
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends to `to` from local address `from` where given.
    fn try_send_to(&self, buf: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<usize>;
    fn try_send(&self, buf: &[u8]) -> io::Result<usize>;
}

/// One worker's I/O runtime.
#[allow(async_fn_in_trait)]
pub trait Runtime: 'static {
    type Stream: Stream;
    type Listener: 'static;
    type Datagram: Datagram;

    /// What logs and stats call this runtime.
    const NAME: &'static str;

    /// Builds the runtime on the current thread and runs `fut` to completion.
    fn block_on<F: Future>(fut: F) -> io::Result<F::Output>;

    /// Takes over a bound, listening std socket.
    fn listener(socket: std::net::TcpListener) -> io::Result<Self::Listener>;

    /// Takes over a bound (or connected) std UDP socket.
    fn datagram(socket: std::net::UdpSocket) -> io::Result<Self::Datagram>;

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)>;

    /// Ends `accept` (an [`Runtime::accept`] of `listener` in progress)
    /// because the listener stops, without losing a connection: returns
    /// the connection it took meanwhile, if any. Nothing of it may stay in
    /// the kernel, where it could take a connection later that nobody
    /// serves (the socket may live on in another process, see
    /// [`crate::sockets`]).
    async fn abandon_accept<F>(
        listener: &Self::Listener,
        accept: Pin<&mut F>,
    ) -> Option<(Self::Stream, SocketAddr)>
    where
        F: Future<Output = io::Result<(Self::Stream, SocketAddr)>>;

    /// Connects to `addr`, giving up after `timeout` (the socket is closed
    /// then; nothing lingers in flight).
    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self::Stream>;
}

/// Which runtime the operator asked for (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// The runtime actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    IoUring,
    Epoll,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::IoUring => uring::Uring::NAME,
            RuntimeKind::Epoll => epoll::Epoll::NAME,
        }
    }
}

/// Decides the runtime, probing io_uring once (by building a ring the size
/// workers use). `auto` falls back to epoll with one log line; an explicit
/// `io-uring` that cannot work is an error.
pub fn resolve(choice: RuntimeChoice) -> anyhow::Result<RuntimeKind> {
    match choice {
        RuntimeChoice::Epoll => Ok(RuntimeKind::Epoll),
        RuntimeChoice::IoUring => match uring::probe() {
            Ok(()) => Ok(RuntimeKind::IoUring),
            Err(e) => Err(anyhow::anyhow!(
                "--runtime io-uring: io_uring cannot be set up here: {e} \
                 (use --runtime auto or epoll)"
            )),
        },
        RuntimeChoice::Auto => match uring::probe() {
            Ok(()) => Ok(RuntimeKind::IoUring),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}); falling back to the epoll runtime");
                Ok(RuntimeKind::Epoll)
            }
        },
    }
}

/// The error of a connect that took longer than `timeout`.
pub(crate) fn connect_timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timeout after {}", humantime::format_duration(timeout)),
    )
}
