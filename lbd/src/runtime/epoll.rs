//! The epoll runtime: a current-thread tokio runtime with a `LocalSet`, used
//! where io_uring is unavailable (or asked for with `--runtime epoll`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

use super::splice;
use super::{Runtime, Stream};

pub struct Epoll;

impl Stream for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self).await
    }

    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        buf.clear();
        loop {
            if let Err(e) = self.readable().await {
                return (Err(e), buf);
            }
            match self.try_read_buf(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return (result, buf),
            }
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut written = 0;
        while written < buf.len() {
            if let Err(e) = self.writable().await {
                return (Err(e), buf);
            }
            match self.try_write(&buf[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    async fn splice_to(&self, pipe: RawFd, len: usize) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        // Bounded: a round ends in a result or waits for readiness, which
        // a spurious wake-up clears (try_io) before the next wait.
        loop {
            self.readable().await?;
            match self.try_io(Interest::READABLE, || splice::splice(fd, pipe, len)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                res => return res,
            }
        }
    }

    async fn splice_from(&self, pipe: RawFd, len: usize) -> io::Result<()> {
        let fd = self.as_raw_fd();
        let mut left = len;
        // Bounded: each round moves a byte or more, fails, or waits.
        while left > 0 {
            self.writable().await?;
            match self.try_io(Interest::WRITABLE, || splice::splice(pipe, fd, left)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// tokio's sockets are non-blocking already.
    fn can_splice(&self) -> bool {
        true
    }
}

impl Runtime for Epoll {
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Datagram = super::datagram::ReadyDatagram;

    const NAME: &'static str = "epoll";

    fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        Ok(local.block_on(&rt, fut))
    }

    fn listener(socket: std::net::TcpListener) -> io::Result<Self::Listener> {
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket)
    }

    fn datagram(socket: std::net::UdpSocket) -> io::Result<Self::Datagram> {
        super::datagram::ReadyDatagram::from_std(socket)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    /// tokio accepts only once the socket is ready, inside a poll of the
    /// future: dropping the future leaves nothing behind.
    async fn abandon_accept<F>(
        _: &Self::Listener,
        _: std::pin::Pin<&mut F>,
    ) -> Option<(Self::Stream, SocketAddr)>
    where
        F: Future<Output = io::Result<(Self::Stream, SocketAddr)>>,
    {
        None
    }

    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self::Stream> {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(result) => result,
            // Dropping the connect future closed its socket at once.
            Err(_) => Err(super::connect_timed_out(timeout)),
        }
    }
}
