//! The io_uring runtime (tokio-uring). All tokio-uring code lives here.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Runtime, Stream};

/// Submission queue entries per worker ring (completion queue is twice
/// that). In-flight operations beyond it wait in tokio-uring, not the kernel.
const RING_ENTRIES: u32 = 1024;

pub struct Uring;

fn builder() -> tokio_uring::Builder {
    let mut b = tokio_uring::builder();
    b.entries(RING_ENTRIES);
    b
}

/// Builds (and drops) one ring: fails like a worker would under seccomp
/// (EPERM), `kernel.io_uring_disabled`, old kernels or memory limits.
pub fn probe() -> io::Result<()> {
    tokio_uring::Runtime::new(&builder()).map(drop)
}

impl Stream for tokio_uring::net::TcpStream {
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
        // io_uring waits itself; a non-blocking fd could surface EAGAIN.
        socket.set_nonblocking(false)?;
        Ok(tokio_uring::net::TcpListener::from_std(socket))
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self::Stream> {
        let stream = super::connect_with_timeout(addr, timeout)
            .await?
            .into_std()?;
        stream.set_nonblocking(false)?;
        Ok(tokio_uring::net::TcpStream::from_std(stream))
    }
}
