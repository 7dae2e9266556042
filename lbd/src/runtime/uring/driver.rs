//! The worker's io_uring: one ring per worker thread, its operations in
//! flight, and the completions it hands back to the tasks waiting on them.
//!
//! The ring lives in a thread local for the lifetime of the worker's
//! runtime ([`install`]). Operations are submitted by pushing an entry
//! whose `user_data` is the index of a [`Slot`]; the entries are handed to
//! the kernel in one `io_uring_enter` when the thread is about to park
//! ([`flush`]), so a loop turn costs at most one submission syscall
//! however many operations it started. Completions are read from the
//! shared completion queue without a syscall ([`dispatch`]) when the
//! ring's descriptor turns readable in tokio's reactor.
//!
//! LIFECYCLE of a slot:
//! * one-shot operation: `Pending` (with the waker of the future that
//!   waits) -> `Done(result)` at its completion -> freed when the future
//!   takes the result. A future dropped while `Pending` leaves an
//!   `Orphan` holding what the kernel may still use (a buffer, an
//!   address), freed at the completion.
//! * a stream's receive side ([`Recv`]): lives as long as the stream; its
//!   multishot receive posts many completions, each queued with its
//!   buffer. A stream dropped while its receive is armed cancels it and
//!   leaves the slot `dropped`: buffers still arriving go straight back to
//!   the ring, and the slot is freed at the final completion.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::Waker;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;

/// `user_data` of completions nobody waits for (cancel requests).
pub(super) const UNWATCHED: u64 = u64::MAX;

/// Buffers a stream may hold queued before its multishot receive is
/// paused (cancelled, re-armed once it was read): what one connection can
/// take of the worker's ring while its peer does not read.
pub(super) const RECV_QUEUE_CAP: usize = 8;

pub(super) struct Driver {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The provided-buffer ring of multishot receives; `None` where the
    /// kernel has none (streams then wait and read one-shot).
    pub(super) bufs: Option<BufRing>,
    /// Completions being delivered (kept to reuse its allocation).
    batch: Vec<cqueue::Entry>,
}

pub(super) enum Slot {
    Free,
    Pending(Option<Waker>),
    Done(i32),
    Orphan(#[allow(dead_code)] Box<dyn Any>),
    Recv(Recv),
}

/// The receive side of a stream.
#[derive(Default)]
pub(super) struct Recv {
    /// Completions not yet read: (result, buffer id if one was used).
    pub queue: VecDeque<(i32, Option<u16>)>,
    /// Bytes of the front buffer already read.
    pub offset: usize,
    pub waker: Option<Waker>,
    /// A multishot receive is in the ring.
    pub armed: bool,
    /// A cancel of it is in the ring (queue cap reached).
    pub pausing: bool,
    /// The last one ended for lack of buffers.
    pub starved: bool,
    /// The stream reads bulk into big buffers of its own: one-shot reads
    /// straight into them beat copying 16 KiB ring buffers.
    pub one_shot: bool,
    /// EOF or an error is queued or was read: nothing more comes.
    pub ended: bool,
    /// The stream is gone; the slot waits for the final completion.
    pub dropped: bool,
}

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's driver.
///
/// Panics outside the io_uring runtime: only code of this module's
/// runtime calls it, after [`install`].
pub(super) fn with<R>(f: impl FnOnce(&mut Driver) -> R) -> R {
    DRIVER.with(|d| match d.borrow_mut().as_mut() {
        Some(driver) => f(driver),
        None => panic!("io_uring operation outside lbd's io_uring runtime"),
    })
}

/// Makes `ring` this thread's driver; returns its descriptor.
pub(super) fn install(ring: IoUring, bufs: Option<BufRing>) -> RawFd {
    let fd = ring.as_raw_fd();
    DRIVER.with(|d| {
        *d.borrow_mut() = Some(Driver {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            bufs,
            batch: Vec::new(),
        })
    });
    fd
}

/// Tears the driver down (the runtime is gone). Operations still in the
/// ring are cancelled by the kernel when the ring is closed; their buffers
/// and addresses are freed after it, as the ring drops first here.
pub(super) fn uninstall() {
    DRIVER.with(|d| {
        if let Some(driver) = d.borrow_mut().take() {
            let Driver {
                ring, slots, bufs, ..
            } = driver;
            drop(ring);
            drop(slots);
            drop(bufs);
        }
    });
}

/// Hands the queued entries to the kernel (called as the thread parks).
pub(super) fn flush() {
    DRIVER.with(|d| {
        if let Some(driver) = d.borrow_mut().as_mut() {
            if let Err(e) = driver.submit() {
                tracing::error!("io_uring submit failed: {e}");
            }
        }
    });
}

/// Delivers every completion in the queue.
pub(super) fn dispatch() {
    with(Driver::dispatch)
}

impl Driver {
    fn submit(&mut self) -> io::Result<()> {
        // Bounded: EBUSY means completions must be reaped first, which
        // `dispatch` does; EINTR retries.
        for _ in 0..64 {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.dispatch(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EBUSY))
    }

    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: every entry's pointers (buffers, addresses) are kept
        // alive by its slot until its completion (see the module doc).
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            if let Err(e) = self.submit() {
                tracing::error!("io_uring submit failed: {e}");
            }
        }
    }

    fn alloc(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    fn release(&mut self, index: usize) {
        self.slots[index] = Slot::Free;
        self.free.push(index);
    }

    /// Starts a one-shot operation; its future polls [`Driver::poll_op`].
    pub(super) fn start(&mut self, sqe: squeue::Entry) -> usize {
        let index = self.alloc(Slot::Pending(None));
        self.push(&sqe.user_data(index as u64));
        index
    }

    /// Submits an entry whose completion nobody waits for.
    pub(super) fn start_unwatched(&mut self, sqe: squeue::Entry) {
        self.push(&sqe.user_data(UNWATCHED));
    }

    /// The result of a one-shot operation, if it completed (the slot is
    /// freed then); else remembers `waker`.
    pub(super) fn poll_op(&mut self, index: usize, waker: &Waker) -> Option<i32> {
        match &mut self.slots[index] {
            Slot::Done(res) => {
                let res = *res;
                self.release(index);
                Some(res)
            }
            Slot::Pending(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *w = Some(waker.clone());
                }
                None
            }
            _ => unreachable!("a one-shot operation's slot"),
        }
    }

    /// The future of a one-shot operation is dropped: frees its slot if it
    /// completed, else keeps `keep` alive until it does.
    pub(super) fn forget_op(&mut self, index: usize, keep: Box<dyn Any>) {
        match self.slots[index] {
            Slot::Done(_) => self.release(index),
            _ => self.slots[index] = Slot::Orphan(keep),
        }
    }

    /// A new stream's receive side.
    pub(super) fn new_recv(&mut self) -> usize {
        self.alloc(Slot::Recv(Recv::default()))
    }

    pub(super) fn recv(&mut self, index: usize) -> &mut Recv {
        match &mut self.slots[index] {
            Slot::Recv(r) => r,
            _ => unreachable!("a stream's receive slot"),
        }
    }

    /// Arms a multishot receive on `fd` for the stream of slot `index`.
    pub(super) fn arm_recv(&mut self, index: usize, fd: RawFd) {
        let Some(bufs) = &self.bufs else { return };
        let sqe = opcode::RecvMulti::new(types::Fd(fd), bufs.group())
            .build()
            .user_data(index as u64);
        let r = self.recv(index);
        r.armed = true;
        r.starved = false;
        self.push(&sqe);
    }

    /// Pauses the armed multishot receive of slot `index` (it ends with
    /// ECANCELED; data it took meanwhile stays queued).
    pub(super) fn pause_recv(&mut self, index: usize) {
        let r = self.recv(index);
        if !r.armed || r.pausing {
            return;
        }
        r.pausing = true;
        self.start_unwatched(opcode::AsyncCancel::new(index as u64).build());
    }

    /// Whether a starved stream should wait for buffers to come back
    /// rather than arm a receive that would fail again at once.
    pub(super) fn buffers_short(&self) -> bool {
        self.bufs.as_ref().is_none_or(BufRing::short)
    }

    /// Gives a buffer back to the ring.
    pub(super) fn give_back(&mut self, bid: u16) {
        if let Some(bufs) = &mut self.bufs {
            bufs.give_back(bid);
        }
    }

    /// The bytes of buffer `bid`.
    pub(super) fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        match &self.bufs {
            Some(bufs) => bufs.get(bid, len),
            None => &[],
        }
    }

    /// The stream of slot `index` is dropped.
    pub(super) fn drop_recv(&mut self, index: usize) {
        // Bounded by the queue's length.
        while let Some((_, bid)) = self.recv(index).queue.pop_front() {
            if let Some(bid) = bid {
                self.give_back(bid);
            }
        }
        let r = self.recv(index);
        let armed = r.armed;
        if armed {
            r.dropped = true;
            // The cancel is queued before the slot can be freed (at the
            // final completion) and reused: it cannot hit a later operation.
            let sqe = opcode::AsyncCancel::new(index as u64).build();
            self.start_unwatched(sqe);
        } else {
            self.release(index);
        }
    }

    fn dispatch(&mut self) {
        // Bounded by the queue's size per pass; a few passes catch
        // completions posted while the first ran.
        for _ in 0..4 {
            let mut cq = self.ring.completion();
            cq.sync();
            if cq.is_empty() {
                return;
            }
            let mut batch = std::mem::take(&mut self.batch);
            batch.extend(cq);
            for cqe in batch.drain(..) {
                self.complete(cqe);
            }
            self.batch = batch;
        }
    }

    fn complete(&mut self, cqe: cqueue::Entry) {
        let index = match cqe.user_data() {
            UNWATCHED => return,
            i => i as usize,
        };
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        match slot {
            Slot::Pending(waker) => {
                let waker = waker.take();
                *slot = Slot::Done(res);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Slot::Orphan(_) => self.release(index),
            Slot::Recv(_) => self.complete_recv(index, res, flags),
            Slot::Free | Slot::Done(_) => {}
        }
    }

    fn complete_recv(&mut self, index: usize, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        if let (Some(_), Some(bufs)) = (bid, &mut self.bufs) {
            bufs.taken();
        }
        let r = self.recv(index);
        if !more {
            r.armed = false;
            r.pausing = false;
        }
        if r.dropped {
            if !more {
                self.release(index);
            }
            if let Some(bid) = bid {
                self.give_back(bid);
            }
            return;
        }
        match (res, bid) {
            (n, Some(bid)) if n > 0 => r.queue.push_back((n, Some(bid))),
            (n, Some(bid)) => {
                // A buffer with nothing in it: give it back.
                r.queue.push_back((n, None));
                r.ended = true;
                self.give_back(bid);
            }
            (e, None) if e == -libc::ECANCELED => {}
            (e, None) if e == -libc::ENOBUFS => r.starved = true,
            (n, None) => {
                // EOF (0) or an error ends the stream's reading.
                r.queue.push_back((n, None));
                r.ended = true;
            }
        }
        let r = self.recv(index);
        if r.queue.len() >= RECV_QUEUE_CAP {
            self.pause_recv(index);
        }
        if let Some(w) = self.recv(index).waker.take() {
            w.wake();
        }
    }
}
