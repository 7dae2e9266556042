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
//! * a UDP socket's receive side: the same, with a multishot `recvmsg`
//!   into the datagram ring ([`DatagramRing`]); each completion is one
//!   datagram (with its source, and its destination where the socket
//!   reports it); an error (an ICMP error queued on the socket) is
//!   queued like one, without ending the socket.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::Waker;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::{BUFFERS, BUFFER_SIZE};

/// `user_data` of completions nobody waits for (cancel requests).
pub(super) const UNWATCHED: u64 = u64::MAX;

/// Buffers a stream (or a connected UDP socket) may hold queued before
/// its multishot receive is paused (cancelled, re-armed once it was
/// read): what one connection can take of the worker's ring while its
/// peer does not read.
pub(super) const RECV_QUEUE_CAP: usize = 8;

/// The same for a bound UDP socket (a listener's), which takes every
/// client's datagrams and is read in batches of up to 64.
const LISTENER_QUEUE_CAP: usize = 32;

/// The datagram ring's buffers: 128 of them, each with room for the
/// largest UDP payload (65,527 bytes over IPv6) behind the `recvmsg`
/// header, the source address and the destination's control message, so
/// no datagram is cut. 8.4 MiB of address space per worker that serves
/// UDP, mapped when its first UDP socket is made; of a buffer only the
/// pages a datagram touched are resident (one for a small datagram).
const DATAGRAM_BUFFERS: u16 = 128;
const DATAGRAM_BUFFER_SIZE: usize = 65_536 + 128;

/// Buffer groups: streams pick from 0, UDP sockets from 1.
const STREAM_GROUP: u16 = 0;
const DATAGRAM_GROUP: u16 = 1;

pub(super) struct Driver {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The provided-buffer ring of multishot receives; `None` where the
    /// kernel has none (streams then wait and read one-shot).
    pub(super) bufs: Option<BufRing>,
    /// UDP sockets' receives.
    datagrams: DatagramRing,
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

/// Where UDP sockets' multishot receives put datagrams: made at the first
/// UDP socket, if the kernel can (Linux 6.0 for a multishot `recvmsg`;
/// else sockets wait for readiness and receive with a syscall).
pub(super) enum DatagramRing {
    /// Not needed yet; `false`: the kernel cannot.
    Untried(bool),
    Ready {
        bufs: BufRing,
        /// The `recvmsg` header the receives are armed with: room for an
        /// IPv4 or IPv6 source address and a destination's control
        /// message (see `runtime::pktinfo`). Read by the kernel, so it
        /// lives as long as the ring.
        msghdr: Box<libc::msghdr>,
    },
    Unavailable,
}

/// The receive side of a stream or a UDP socket.
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
    /// Receive one-shot (wait, then read), not through the ring. A
    /// stream's: it reads bulk into big buffers of its own, where one-shot
    /// reads straight into them beat copying 16 KiB ring buffers (set per
    /// read). A UDP socket's: there is no datagram ring, or the kernel
    /// refused its multishot `recvmsg` (set for good).
    pub one_shot: bool,
    /// EOF or an error is queued or was read: nothing more comes.
    pub ended: bool,
    /// The stream is gone; the slot waits for the final completion.
    pub dropped: bool,
    /// A UDP socket's: datagrams from the datagram ring.
    pub datagram: bool,
    /// Completions queued before the receive is paused.
    pub cap: usize,
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

/// Makes `ring` this thread's driver; returns its descriptor. UDP
/// sockets receive through the ring if `datagrams` (the kernel has
/// multishot `recvmsg`, and waits on non-blocking sockets).
pub(super) fn install(ring: IoUring, datagrams: bool) -> RawFd {
    let fd = ring.as_raw_fd();
    let bufs = match BufRing::new(&ring.submitter(), STREAM_GROUP, BUFFERS, BUFFER_SIZE) {
        Ok(bufs) => Some(bufs),
        Err(e) => {
            tracing::info!(
                "io_uring: no provided-buffer ring ({e}; Linux 5.19+): reads wait and \
                 read one at a time"
            );
            None
        }
    };
    let datagrams = DatagramRing::Untried(datagrams && bufs.is_some());
    DRIVER.with(|d| {
        *d.borrow_mut() = Some(Driver {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            bufs,
            datagrams,
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
                ring,
                slots,
                bufs,
                datagrams,
                ..
            } = driver;
            drop(ring);
            drop(slots);
            drop(bufs);
            drop(datagrams);
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
        self.alloc(Slot::Recv(Recv {
            cap: RECV_QUEUE_CAP,
            ..Recv::default()
        }))
    }

    /// A new UDP socket's receive side; `bound`: a listener's socket
    /// (else one connected to a member). Without a datagram ring it
    /// receives one-shot (readiness, then a syscall).
    pub(super) fn new_datagram_recv(&mut self, bound: bool) -> usize {
        let one_shot = !self.datagram_ring();
        self.alloc(Slot::Recv(Recv {
            datagram: true,
            one_shot,
            cap: if bound {
                LISTENER_QUEUE_CAP
            } else {
                RECV_QUEUE_CAP
            },
            ..Recv::default()
        }))
    }

    /// Makes the datagram ring if it is not made yet: whether there is one.
    fn datagram_ring(&mut self) -> bool {
        if let DatagramRing::Untried(possible) = self.datagrams {
            self.datagrams = DatagramRing::Unavailable;
            if possible {
                match BufRing::new(
                    &self.ring.submitter(),
                    DATAGRAM_GROUP,
                    DATAGRAM_BUFFERS,
                    DATAGRAM_BUFFER_SIZE,
                ) {
                    Ok(bufs) => {
                        // SAFETY: an all-zero msghdr is a valid empty one.
                        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
                        msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
                        msghdr.msg_controllen = crate::runtime::pktinfo::CONTROL_SPACE as _;
                        self.datagrams = DatagramRing::Ready { bufs, msghdr };
                    }
                    Err(e) => tracing::info!(
                        "io_uring: no datagram buffer ring ({e}): UDP sockets wait for \
                         readiness and receive one datagram per syscall"
                    ),
                }
            }
        }
        matches!(self.datagrams, DatagramRing::Ready { .. })
    }

    /// The buffer ring receives of `datagram` sockets pick from.
    fn ring_of(&mut self, datagram: bool) -> Option<&mut BufRing> {
        if datagram {
            match &mut self.datagrams {
                DatagramRing::Ready { bufs, .. } => Some(bufs),
                _ => None,
            }
        } else {
            self.bufs.as_mut()
        }
    }

    /// The `recvmsg` header datagram receives were armed with.
    pub(super) fn datagram_msghdr(&self) -> Option<&libc::msghdr> {
        match &self.datagrams {
            DatagramRing::Ready { msghdr, .. } => Some(msghdr),
            _ => None,
        }
    }

    pub(super) fn recv(&mut self, index: usize) -> &mut Recv {
        match &mut self.slots[index] {
            Slot::Recv(r) => r,
            _ => unreachable!("a stream's receive slot"),
        }
    }

    /// Arms a multishot receive on `fd` for the stream (or UDP socket) of
    /// slot `index`, unless its ring is missing or short of buffers after
    /// the last one starved: `false` then (it must wait and read
    /// one-shot).
    pub(super) fn try_arm(&mut self, index: usize, fd: RawFd) -> bool {
        let r = self.recv(index);
        let (datagram, starved) = (r.datagram, r.starved);
        match self.ring_of(datagram) {
            Some(ring) if !(starved && ring.short()) => {}
            _ => return false,
        }
        self.arm_recv(index, fd);
        true
    }

    fn arm_recv(&mut self, index: usize, fd: RawFd) {
        let sqe = if self.recv(index).datagram {
            let DatagramRing::Ready { bufs, msghdr } = &self.datagrams else {
                return;
            };
            opcode::RecvMsgMulti::new(types::Fd(fd), &**msghdr, bufs.group()).build()
        } else {
            let Some(bufs) = &self.bufs else { return };
            opcode::RecvMulti::new(types::Fd(fd), bufs.group()).build()
        }
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

    /// Gives a buffer back to the ring (`datagram`: the datagram ring).
    pub(super) fn give_back(&mut self, datagram: bool, bid: u16) {
        if let Some(bufs) = self.ring_of(datagram) {
            bufs.give_back(bid);
        }
    }

    /// The bytes of buffer `bid` (`datagram`: of the datagram ring).
    pub(super) fn buffer(&self, datagram: bool, bid: u16, len: usize) -> &[u8] {
        let bufs = if datagram {
            match &self.datagrams {
                DatagramRing::Ready { bufs, .. } => Some(bufs),
                _ => None,
            }
        } else {
            self.bufs.as_ref()
        };
        bufs.map_or(&[], |bufs| bufs.get(bid, len))
    }

    /// The stream of slot `index` is dropped.
    pub(super) fn drop_recv(&mut self, index: usize) {
        let datagram = self.recv(index).datagram;
        // Bounded by the queue's length.
        while let Some((_, bid)) = self.recv(index).queue.pop_front() {
            if let Some(bid) = bid {
                self.give_back(datagram, bid);
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
        let datagram = self.recv(index).datagram;
        if let (Some(_), Some(bufs)) = (bid, self.ring_of(datagram)) {
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
                self.give_back(datagram, bid);
            }
            return;
        }
        if datagram {
            self.complete_datagram(index, res, bid);
        } else {
            self.complete_stream(index, res, bid);
        }
        let r = self.recv(index);
        if r.queue.len() >= r.cap {
            self.pause_recv(index);
        }
        if let Some(w) = self.recv(index).waker.take() {
            w.wake();
        }
    }

    /// A UDP socket's completion: a datagram (a recvmsg result of at least
    /// its header) or an error, queued; neither ends the socket.
    fn complete_datagram(&mut self, index: usize, res: i32, bid: Option<u16>) {
        let r = self.recv(index);
        match (res, bid) {
            (n, Some(bid)) if n > 0 => r.queue.push_back((n, Some(bid))),
            (_, Some(bid)) => self.give_back(true, bid),
            (e, None) if e == -libc::ECANCELED => {}
            (e, None) if e == -libc::ENOBUFS => r.starved = true,
            // The kernel refuses multishot recvmsg here: readiness and
            // syscalls from now on.
            (e, None) if e == -libc::EINVAL || e == -libc::EOPNOTSUPP => r.one_shot = true,
            // An error queued on the socket (ECONNREFUSED: an ICMP port
            // unreachable): for the reader, in its place.
            (e, None) => r.queue.push_back((e, None)),
        }
    }

    fn complete_stream(&mut self, index: usize, res: i32, bid: Option<u16>) {
        let r = self.recv(index);
        match (res, bid) {
            (n, Some(bid)) if n > 0 => r.queue.push_back((n, Some(bid))),
            (n, Some(bid)) => {
                // A buffer with nothing in it: give it back.
                r.queue.push_back((n, None));
                r.ended = true;
                self.give_back(false, bid);
            }
            (e, None) if e == -libc::ECANCELED => {}
            (e, None) if e == -libc::ENOBUFS => r.starved = true,
            (n, None) => {
                // EOF (0) or an error ends the stream's reading.
                r.queue.push_back((n, None));
                r.ended = true;
            }
        }
    }
}
