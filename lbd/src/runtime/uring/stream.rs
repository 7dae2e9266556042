//! A connected TCP socket on the worker's ring.
//!
//! Reading: one multishot receive per stream, armed at the first wait and
//! kept in the ring as long as data keeps coming, picks buffers from the
//! worker's [`super::bufring::BufRing`] as data arrives; `read` copies
//! them out and hands them straight back. So a read costs neither a
//! readiness wait nor a submission, and an idle stream holds no buffer.
//! A stream that queues [`super::driver::RECV_QUEUE_CAP`] buffers unread
//! (its peer is slower) has its receive paused until it reads; one whose
//! receive ran out of buffers waits for readiness and reads one-shot into
//! the caller's buffer until the ring has buffers again. A stream that
//! reads bulk into big buffers of its own (see `proxy::sizing`) reads
//! one-shot straight into them too: cheaper than copying 16 KiB ring
//! buffers. Without a buffer ring (old kernels) every read is one-shot.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use super::driver::{self, Driver, RECV_QUEUE_CAP};
use super::op;
use crate::runtime::splice;
use crate::runtime::Stream;

/// One write of `data` into a non-blocking pipe: how much it took (0 when
/// full).
fn write(pipe: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: writes from a valid slice to a descriptor the caller holds.
    let n = unsafe { libc::write(pipe, data.as_ptr().cast(), data.len()) };
    match n {
        n if n >= 0 => Ok(n as usize),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            e => Err(e),
        },
    }
}

pub struct TcpStream {
    fd: OwnedFd,
    /// The driver slot of the receive side.
    recv: usize,
    /// Whether the socket was made non-blocking (for `splice(2)`; the
    /// ring's operations wait on such sockets all the same).
    nonblocking: Cell<bool>,
}

impl TcpStream {
    pub(super) fn from_fd(fd: OwnedFd) -> TcpStream {
        let recv = driver::with(Driver::new_recv);
        TcpStream {
            fd,
            recv,
            nonblocking: Cell::new(false),
        }
    }

    fn nonblocking(&self) -> io::Result<()> {
        if !self.nonblocking.get() {
            splice::set_nonblocking(self.as_raw_fd())?;
            self.nonblocking.set(true);
        }
        Ok(())
    }

    /// # Safety
    /// `fd` is an open socket nobody else owns.
    pub(super) unsafe fn from_raw(fd: RawFd) -> TcpStream {
        TcpStream::from_fd(OwnedFd::from_raw_fd(fd))
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // Cancels an armed receive (which holds the socket open in the
        // kernel until it ends); the descriptor closes right after.
        driver::with(|d| d.drop_recv(self.recv));
    }
}

/// What a read does next.
enum Next {
    /// Bytes copied from the queue (or EOF: 0).
    Done(io::Result<usize>),
    /// No buffers: read one-shot into the caller's buffer.
    OneShot,
}

impl Stream for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        let fd = self.as_raw_fd();
        let wait_one_shot = poll_fn(|cx| driver::with(|d| poll_ready(d, self.recv, fd, cx))).await;
        if wait_one_shot {
            op::readable(fd).await?;
        }
        Ok(())
    }

    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        buf.clear();
        if buf.capacity() == 0 {
            // An empty read would look like EOF.
            buf.reserve(super::BUFFER_SIZE);
        }
        let fd = self.as_raw_fd();
        let big = buf.capacity() > super::BUFFER_SIZE;
        let next = poll_fn(|cx| {
            driver::with(|d| poll_read(d, self.recv, fd, big, |d, i| take(d, i, &mut buf), cx))
        })
        .await;
        match next {
            Next::Done(res) => (res, buf),
            Next::OneShot => op::recv(fd, buf).await,
        }
    }

    /// Data the multishot receive queued goes into the pipe first (a
    /// write); then the receive stays paused and the socket, made
    /// non-blocking, is spliced from, waiting for readiness when empty.
    async fn splice_to(&self, pipe: RawFd, len: usize) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        self.nonblocking()?;
        let next = poll_fn(|cx| {
            driver::with(|d| {
                poll_read(
                    d,
                    self.recv,
                    fd,
                    true,
                    |d, i| take_into(d, i, |data| write(pipe, data)),
                    cx,
                )
            })
        })
        .await;
        if let Next::Done(res) = next {
            return res;
        }
        // Bounded: each round either returns or waits for readiness,
        // after which the splice finds data, EOF or an error.
        loop {
            match splice::splice(fd, pipe, len) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => op::readable(fd).await?,
                res => return res,
            }
        }
    }

    async fn splice_from(&self, pipe: RawFd, len: usize) -> io::Result<()> {
        let fd = self.as_raw_fd();
        self.nonblocking()?;
        let mut left = len;
        // Bounded: each round moves a byte or more, fails, or waits for
        // room in the send buffer.
        while left > 0 {
            match splice::splice(pipe, fd, left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => op::writable(fd).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn can_splice(&self) -> bool {
        super::splice_works()
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        op::send_all(self.as_raw_fd(), buf).await
    }

    async fn hangup(&self) -> io::Result<()> {
        op::hangup(self.as_raw_fd()).await
    }
}

/// `readable` (of a stream or a UDP socket): Ready(false) when data or
/// the end is queued, Ready(true) when the caller must wait one-shot.
pub(super) fn poll_ready(
    d: &mut Driver,
    index: usize,
    fd: RawFd,
    cx: &mut Context<'_>,
) -> Poll<bool> {
    let r = d.recv(index);
    if !r.queue.is_empty() || r.ended {
        return Poll::Ready(false);
    }
    if !r.armed && (r.one_shot || !d.try_arm(index, fd)) {
        return Poll::Ready(true);
    }
    set_waker(d, index, cx);
    Poll::Pending
}

/// `read` (`take`: into the caller's buffer) or `splice_to` (into a
/// pipe); `big`: the caller reads bulk one-shot when nothing is queued.
fn poll_read(
    d: &mut Driver,
    index: usize,
    fd: RawFd,
    big: bool,
    take: impl FnOnce(&mut Driver, usize) -> io::Result<usize>,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    let r = d.recv(index);
    r.one_shot = big;
    if !r.queue.is_empty() {
        let res = take(d, index);
        let r = d.recv(index);
        // Paused (or starved) with room again: resume receiving.
        if !big && !r.armed && !r.ended && r.queue.len() < RECV_QUEUE_CAP / 2 {
            d.try_arm(index, fd);
        }
        return Poll::Ready(Next::Done(res));
    }
    if r.ended {
        return Poll::Ready(Next::Done(Ok(0)));
    }
    if big {
        // Bulk: straight into the caller's buffer (or pipe), once the
        // multishot receive (which would race it for the data) has ended.
        if !r.armed {
            return Poll::Ready(Next::OneShot);
        }
        d.pause_recv(index);
    } else if !r.armed && !d.try_arm(index, fd) {
        return Poll::Ready(Next::OneShot);
    }
    set_waker(d, index, cx);
    Poll::Pending
}

fn set_waker(d: &mut Driver, index: usize, cx: &mut Context<'_>) {
    let r = d.recv(index);
    if !r.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        r.waker = Some(cx.waker().clone());
    }
}

/// Copies queued data into `buf` (up to its capacity), giving emptied
/// buffers back. An EOF or error at the front is returned alone.
fn take(d: &mut Driver, index: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
    take_into(d, index, |data| {
        let n = data.len().min(buf.capacity() - buf.len());
        buf.extend_from_slice(&data[..n]);
        Ok(n)
    })
}

/// Moves queued data on through `put`, which takes what it can of a slice
/// and says how much (0: no room), giving emptied buffers back. An EOF or
/// error at the front is returned alone.
fn take_into(
    d: &mut Driver,
    index: usize,
    mut put: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut total = 0usize;
    // Bounded by the queue's length (at most a few entries).
    loop {
        let r = d.recv(index);
        let Some(&(res, bid)) = r.queue.front() else {
            break;
        };
        let Some(bid) = bid else {
            // EOF or error: only on its own.
            if total > 0 {
                break;
            }
            r.queue.pop_front();
            return op::result(res).map(|n| n as usize);
        };
        let offset = r.offset;
        let len = res as usize;
        let data = d.buffer(false, bid, len);
        let n = match put(&data[offset..]) {
            Ok(n) => n,
            Err(e) if total == 0 => return Err(e),
            Err(_) => 0,
        };
        if n == 0 {
            break;
        }
        total += n;
        let r = d.recv(index);
        if offset + n == len {
            r.queue.pop_front();
            r.offset = 0;
            d.give_back(false, bid);
        } else {
            r.offset = offset + n;
        }
    }
    Ok(total)
}
