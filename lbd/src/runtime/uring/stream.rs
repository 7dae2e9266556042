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

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use super::driver::{self, Driver, RECV_QUEUE_CAP};
use super::op;
use crate::runtime::Stream;

pub struct TcpStream {
    fd: OwnedFd,
    /// The driver slot of the receive side.
    recv: usize,
}

impl TcpStream {
    pub(super) fn from_fd(fd: OwnedFd) -> TcpStream {
        let recv = driver::with(Driver::new_recv);
        TcpStream { fd, recv }
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
        let next = poll_fn(|cx| driver::with(|d| poll_read(d, self.recv, fd, &mut buf, cx))).await;
        match next {
            Next::Done(res) => (res, buf),
            Next::OneShot => op::recv(fd, buf).await,
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        op::send_all(self.as_raw_fd(), buf).await
    }

    async fn hangup(&self) -> io::Result<()> {
        op::hangup(self.as_raw_fd()).await
    }
}

/// Arms the receive of a stream that needs data and has none queued,
/// unless the ring is short of buffers: `false` then (wait one-shot).
fn arm(d: &mut Driver, index: usize, fd: RawFd) -> bool {
    if d.bufs.is_none() || (d.recv(index).starved && d.buffers_short()) {
        return false;
    }
    d.arm_recv(index, fd);
    true
}

/// `readable`: Ready(false) when data or the end is queued, Ready(true)
/// when the caller must wait one-shot.
fn poll_ready(d: &mut Driver, index: usize, fd: RawFd, cx: &mut Context<'_>) -> Poll<bool> {
    let r = d.recv(index);
    if !r.queue.is_empty() || r.ended {
        return Poll::Ready(false);
    }
    if !r.armed && (r.one_shot || !arm(d, index, fd)) {
        return Poll::Ready(true);
    }
    set_waker(d, index, cx);
    Poll::Pending
}

fn poll_read(
    d: &mut Driver,
    index: usize,
    fd: RawFd,
    buf: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    let big = buf.capacity() > super::BUFFER_SIZE;
    let r = d.recv(index);
    r.one_shot = big;
    if !r.queue.is_empty() {
        let res = take(d, index, buf);
        let r = d.recv(index);
        // Paused (or starved) with room again: resume receiving.
        if !big && !r.armed && !r.ended && r.queue.len() < RECV_QUEUE_CAP / 2 {
            arm(d, index, fd);
        }
        return Poll::Ready(Next::Done(res));
    }
    if r.ended {
        return Poll::Ready(Next::Done(Ok(0)));
    }
    if big {
        // Bulk: straight into the caller's buffer, once the multishot
        // receive (which would race it for the data) has ended.
        if !r.armed {
            return Poll::Ready(Next::OneShot);
        }
        d.pause_recv(index);
    } else if !r.armed && !arm(d, index, fd) {
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
    // Bounded by the queue's length (at most a few entries).
    loop {
        let r = d.recv(index);
        let Some(&(res, bid)) = r.queue.front() else {
            break;
        };
        let Some(bid) = bid else {
            // EOF or error: only on its own.
            if !buf.is_empty() {
                break;
            }
            r.queue.pop_front();
            return op::result(res).map(|n| n as usize);
        };
        let offset = r.offset;
        let len = res as usize;
        let room = buf.capacity() - buf.len();
        if room == 0 {
            break;
        }
        let n = (len - offset).min(room);
        let data = d.buffer(bid, len);
        buf.extend_from_slice(&data[offset..offset + n]);
        let r = d.recv(index);
        if offset + n == len {
            r.queue.pop_front();
            r.offset = 0;
            d.give_back(bid);
        } else {
            r.offset = offset + n;
        }
    }
    Ok(buf.len())
}
