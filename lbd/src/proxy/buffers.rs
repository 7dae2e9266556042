//! Copy buffers: a per-worker pool of small and large ones, and the
//! process-wide budget that caps the large ones.
//!
//! A connection borrows a buffer per read and gives it back after the
//! write, so buffers are shared by all of a worker's connections and an
//! idle connection holds none. What a connection can pin is the buffer of a
//! write that waits on a slow peer: small buffers by default keep that to
//! 16 KiB per direction (HAProxy's `tune.bufsize`). A direction that moves
//! bulk gets a large buffer per read ([`super::sizing`] decides), which
//! costs far less CPU per byte, but only while the budget lasts; beyond it
//! bulk goes on in small buffers, slower but never refused.
//!
//! Free buffers go back to the allocator when a free list is full or was
//! not needed for a while ([`crate::memory`] ticks the epochs), and large
//! ones are mmapped by the allocator, so freeing them returns them to the
//! operating system at once.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::memory;

/// The default buffer. Reads of interactive traffic are rarely larger, and
/// a stuck direction pins no more than this.
pub const SMALL: usize = 16 * 1024;

/// The buffer of a bulk direction. Measured with `bench` (1 MiB objects,
/// iperf3): 256 KiB needs 20-30% less CPU per GiB than 64 KiB.
pub const LARGE: usize = 256 * 1024;

/// Large buffers in use at once, in bytes, for the whole process (128
/// buffers). It bounds what bulk directions can pin when their peers stop
/// reading; free large buffers kept for reuse are bounded apart, by
/// [`KEEP_LARGE`] per worker.
pub const LARGE_BUDGET: usize = 32 << 20;

/// Free small buffers kept per worker (2 MiB).
const KEEP_SMALL: usize = 128;

/// Free large buffers kept per worker (4 MiB): enough for the bulk reads
/// and writes in flight at once on one thread, so a steady bulk load does
/// not map and unmap a buffer per read.
const KEEP_LARGE: usize = 16;

/// A share of a [`Budget`]: one large buffer. Dropping it gives the share
/// back, also when the future that held it is dropped mid-copy.
#[must_use]
pub struct Grant {
    budget: &'static Budget,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(LARGE, Ordering::Relaxed);
    }
}

/// Bytes of large buffers in use, against a limit. Shared by all workers;
/// touched once per large read, never per byte.
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

/// The process's budget for large buffers.
static BUDGET: Budget = Budget::new(LARGE_BUDGET);

impl Budget {
    pub const fn new(limit: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// A share for one large buffer, if the budget has room.
    fn grant(&'static self) -> Option<Grant> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + LARGE <= self.limit).then_some(used + LARGE)
            })
            .ok()
            .map(|_| Grant { budget: self })
    }

    /// Bytes of large buffers in use now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Free buffers of one size. Buffers that stayed unused through a whole
/// epoch (the low-water mark of the list since the last trim) are freed at
/// the next take or give after the epoch changes.
struct FreeList {
    size: usize,
    keep: usize,
    bufs: Vec<Vec<u8>>,
    low: usize,
    epoch: u32,
}

impl FreeList {
    fn new(size: usize, keep: usize) -> Self {
        FreeList {
            size,
            keep,
            bufs: Vec::new(),
            low: 0,
            epoch: memory::epoch(),
        }
    }

    fn take(&mut self) -> Vec<u8> {
        self.trim();
        let buf = self
            .bufs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size));
        self.low = self.low.min(self.bufs.len());
        buf
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        self.trim();
        if self.bufs.len() < self.keep {
            buf.clear();
            self.bufs.push(buf);
        }
    }

    fn trim(&mut self) {
        let epoch = memory::epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            let unused = self.low.min(self.bufs.len());
            self.bufs.drain(..unused);
            self.low = self.bufs.len();
        }
    }
}

/// A worker's free buffers. Single-threaded: no locks.
pub struct BufPool {
    small: RefCell<FreeList>,
    large: RefCell<FreeList>,
    budget: &'static Budget,
}

impl Default for BufPool {
    fn default() -> Self {
        Self::with_budget(&BUDGET)
    }
}

impl BufPool {
    /// A pool whose large buffers count against `budget`.
    pub fn with_budget(budget: &'static Budget) -> Self {
        BufPool {
            small: RefCell::new(FreeList::new(SMALL, KEEP_SMALL)),
            large: RefCell::new(FreeList::new(LARGE, KEEP_LARGE)),
            budget,
        }
    }

    /// A small buffer (empty, capacity [`SMALL`]).
    pub fn take(&self) -> Vec<u8> {
        self.small.borrow_mut().take()
    }

    /// A large buffer (empty, capacity [`LARGE`]) and its share of the
    /// budget, or `None` when the budget is used up. Keep the grant until
    /// the buffer is given back.
    pub fn take_large(&self) -> Option<(Vec<u8>, Grant)> {
        let grant = self.budget.grant()?;
        Some((self.large.borrow_mut().take(), grant))
    }

    /// Takes a buffer back for reuse (a buffer of another size, or beyond
    /// what is kept, is freed).
    pub fn give(&self, buf: Vec<u8>) {
        match buf.capacity() {
            SMALL => self.small.borrow_mut().give(buf),
            LARGE => self.large.borrow_mut().give(buf),
            _ => {}
        }
    }

    /// Free buffers held: (small, large).
    pub fn free(&self) -> (usize, usize) {
        (
            self.small.borrow().bufs.len(),
            self.large.borrow().bufs.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(buffers: usize) -> &'static Budget {
        Box::leak(Box::new(Budget::new(buffers * LARGE)))
    }

    #[test]
    fn sizes() {
        let pool = BufPool::with_budget(budget(1));
        let small = pool.take();
        assert_eq!((small.len(), small.capacity()), (0, SMALL));
        let (large, _grant) = pool.take_large().expect("budget for one");
        assert_eq!((large.len(), large.capacity()), (0, LARGE));
    }

    #[test]
    fn large_buffers_stop_at_the_budget_and_come_back_with_the_grant() {
        let b = budget(2);
        let pool = BufPool::with_budget(b);
        let first = pool.take_large().expect("first");
        let second = pool.take_large().expect("second");
        assert!(pool.take_large().is_none(), "a third fits no budget of two");
        assert_eq!(b.used(), 2 * LARGE);
        // Dropped without being given back (a cancelled copy): the share
        // still returns.
        drop(first);
        assert_eq!(b.used(), LARGE);
        let (buf, grant) = second;
        pool.give(buf);
        drop(grant);
        assert_eq!(b.used(), 0);
        assert!(pool.take_large().is_some());
    }

    #[test]
    fn free_lists_are_bounded() {
        let pool = BufPool::with_budget(budget(KEEP_LARGE + 10));
        let small: Vec<_> = (0..KEEP_SMALL + 10).map(|_| pool.take()).collect();
        let large: Vec<_> = (0..KEEP_LARGE + 10)
            .map(|_| pool.take_large().expect("budget"))
            .collect();
        small.into_iter().for_each(|b| pool.give(b));
        large.into_iter().for_each(|(b, _)| pool.give(b));
        assert_eq!(pool.free(), (KEEP_SMALL, KEEP_LARGE));
        // A buffer of another size is not kept.
        pool.give(Vec::with_capacity(SMALL + 1));
        assert_eq!(pool.free(), (KEEP_SMALL, KEEP_LARGE));
    }

    #[test]
    fn buffers_unused_for_an_epoch_are_freed() {
        let mut list = FreeList::new(SMALL, 8);
        let bufs: Vec<_> = (0..6).map(|_| list.take()).collect();
        bufs.into_iter().for_each(|b| list.give(b));
        assert_eq!(list.bufs.len(), 6);
        // An epoch in which at most 2 of the 6 were taken at once.
        list.epoch = list.epoch.wrapping_sub(1);
        list.trim();
        let a = list.take();
        let b = list.take();
        list.give(a);
        list.give(b);
        // The next epoch frees the 4 that stayed unused.
        list.epoch = list.epoch.wrapping_sub(1);
        list.trim();
        assert_eq!(list.bufs.len(), 2);
    }
}
