//! One-shot io_uring operations as futures.
//!
//! An [`Op`] owns what the kernel reads or writes while the operation is
//! in flight (a buffer, an address). It resolves to the completion's
//! result and hands that back. Dropped before its completion, it leaves
//! the data with the driver until the kernel is done with it (see the
//! LIFECYCLE in [`super::driver`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use super::driver;

pub(super) struct Op<T: 'static> {
    index: usize,
    /// `None` once the result was taken.
    keep: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `sqe`, whose pointers point into `keep`.
    fn start(sqe: squeue::Entry, keep: T) -> Op<T> {
        let index = driver::with(|d| d.start(sqe));
        Op {
            index,
            keep: Some(keep),
        }
    }
}

impl<T: Unpin + 'static> Future for Op<T> {
    type Output = (i32, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, T)> {
        if self.keep.is_none() {
            // Polled after it resolved: a caller bug, never done here.
            return Poll::Pending;
        }
        match driver::with(|d| d.poll_op(self.index, cx.waker())) {
            Some(res) => match self.keep.take() {
                Some(keep) => Poll::Ready((res, keep)),
                None => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(keep) = self.keep.take() {
            driver::with(|d| d.forget_op(self.index, Box::new(keep)));
        }
    }
}

/// A completion's result as io::Result.
pub(super) fn result(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as u32)
    }
}

/// Waits until `fd` is readable (data, EOF, error or hang-up).
pub(super) async fn readable(fd: RawFd) -> io::Result<()> {
    poll(fd, libc::POLLIN | libc::POLLRDHUP).await
}

/// Waits until `fd` has room to write (or failed).
pub(super) async fn writable(fd: RawFd) -> io::Result<()> {
    poll(fd, libc::POLLOUT).await
}

/// Waits until `fd`'s peer ended its side (POLLRDHUP), or it failed or
/// hung up (POLLERR and POLLHUP are always reported): data does not wake
/// it.
pub(super) async fn hangup(fd: RawFd) -> io::Result<()> {
    poll(fd, libc::POLLRDHUP).await
}

/// One IORING_OP_POLL_ADD for `events` on `fd`.
async fn poll(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let sqe = opcode::PollAdd::new(types::Fd(fd), events as u32).build();
    let (res, ()) = Op::start(sqe, ()).await;
    result(res).map(drop)
}

/// One receive into `buf`'s spare capacity (from index 0).
pub(super) async fn recv(fd: RawFd, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    buf.clear();
    let cap = buf.capacity().min(u32::MAX as usize) as u32;
    let sqe = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), cap).build();
    let (res, mut buf) = Op::start(sqe, buf).await;
    match result(res) {
        Ok(n) => {
            // SAFETY: the kernel initialised `n` <= capacity bytes.
            unsafe { buf.set_len(n as usize) };
            (Ok(n as usize), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// Sends all of `buf`.
pub(super) async fn send_all(fd: RawFd, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let mut sent = 0usize;
    let mut buf = buf;
    // Bounded: each round sends at least one byte or returns.
    while sent < buf.len() {
        let left = &buf[sent..];
        let len = left.len().min(u32::MAX as usize) as u32;
        let sqe = opcode::Send::new(types::Fd(fd), left.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        let (res, back) = Op::start(sqe, buf).await;
        buf = back;
        match result(res) {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => sent += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// Accepts a connection on `fd` (close-on-exec).
pub(super) async fn accept(fd: RawFd) -> io::Result<(RawFd, SocketAddr)> {
    // SAFETY: an all-zero sockaddr_storage is a valid (empty) address.
    let storage: Box<(libc::sockaddr_storage, libc::socklen_t)> = Box::new((
        unsafe { std::mem::zeroed() },
        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
    ));
    let mut storage = storage;
    let addr_ptr = &mut storage.0 as *mut libc::sockaddr_storage as *mut libc::sockaddr;
    let len_ptr = &mut storage.1 as *mut libc::socklen_t;
    let sqe = opcode::Accept::new(types::Fd(fd), addr_ptr, len_ptr)
        .flags(libc::SOCK_CLOEXEC)
        .build();
    let (res, storage) = Op::start(sqe, storage).await;
    let conn = result(res)? as RawFd;
    // SAFETY: the kernel wrote a valid address of `storage.1` bytes.
    let addr = unsafe { SockAddr::new(storage.0, storage.1) };
    match addr.as_socket() {
        Some(addr) => Ok((conn, addr)),
        None => {
            // SAFETY: `conn` is the new connection's descriptor, ours.
            unsafe { libc::close(conn) };
            Err(io::Error::other("accepted a connection of another family"))
        }
    }
}

/// Connects `fd` to `addr`.
pub(super) async fn connect(fd: RawFd, addr: SocketAddr) -> io::Result<()> {
    let addr = Box::new(SockAddr::from(addr));
    let sqe = opcode::Connect::new(types::Fd(fd), addr.as_ptr(), addr.len()).build();
    let (res, _addr) = Op::start(sqe, addr).await;
    result(res).map(drop)
}

/// Cancels every request of this ring on `fd` (IORING_OP_ASYNC_CANCEL with
/// IORING_ASYNC_CANCEL_FD | _ALL, Linux 5.19): how many it cancelled.
pub(super) async fn cancel_fd(fd: RawFd) -> io::Result<u32> {
    let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build();
    let (res, ()) = Op::start(sqe, ()).await;
    match res {
        res if res == -libc::ENOENT => Ok(0),
        res => result(res),
    }
}
