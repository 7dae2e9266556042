//! Copy buffers: a per-worker pool of three sizes, and the process-wide
//! budget that caps the bigger two.
//!
//! A connection borrows a buffer per read and gives it back after the
//! write, so buffers are shared by all of a worker's connections and an
//! idle connection holds none. What a connection can pin is the buffer of a
//! write that waits on a slow peer: small buffers by default keep that to
//! 16 KiB per direction (HAProxy's `tune.bufsize`). A direction that moves
//! bulk gets bigger buffers ([`super::sizing`] decides), which cost far
//! less CPU per byte, but only while the budget lasts; beyond it bulk goes
//! on in small buffers, slower but never refused.
//!
//! Free buffers go back to the allocator when a free list is full or was
//! not needed for a second (a timer task per worker trims the lists, also
//! when the worker is idle), and large ones are mmapped by the allocator
//! (see [`crate::memory`]), so freeing them returns them to the operating
//! system at once.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The default buffer. Reads of interactive traffic are rarely larger, and
/// a stuck direction pins no more than this.
pub const SMALL: usize = 16 * 1024;

/// The buffer of a bulk direction whose peer's send buffer is filling up:
/// fewer reads and writes than small ones while there is room for it.
pub const MEDIUM: usize = 64 * 1024;

/// The buffer of a bulk direction. Measured with `bench` (1 MiB objects,
/// iperf3): 256 KiB needs 20-30% less CPU per GiB than 64 KiB.
pub const LARGE: usize = 256 * 1024;

/// Medium and large buffers in use at once, in bytes, for the whole
/// process (128 large ones). It bounds what bulk directions can pin when
/// their peers stop reading; free buffers kept for reuse are bounded apart,
/// per worker.
pub const BIG_BUDGET: usize = 32 << 20;

/// A buffer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    pub const fn bytes(self) -> usize {
        match self {
            Size::Small => SMALL,
            Size::Medium => MEDIUM,
            Size::Large => LARGE,
        }
    }

    /// Free buffers of this size kept per worker (2, 2 and 4 MiB): enough
    /// for the reads and writes in flight at once on one thread, so a
    /// steady load does not allocate (and, for large ones, map and fault
    /// in) a buffer per read.
    const fn keep(self) -> usize {
        match self {
            Size::Small => 128,
            Size::Medium => 32,
            Size::Large => 16,
        }
    }

    /// The next smaller size, if any.
    const fn smaller(self) -> Option<Size> {
        match self {
            Size::Small => None,
            Size::Medium => Some(Size::Small),
            Size::Large => Some(Size::Medium),
        }
    }

    fn of(capacity: usize) -> Option<Size> {
        [Size::Small, Size::Medium, Size::Large]
            .into_iter()
            .find(|s| s.bytes() == capacity)
    }
}

/// A share of a [`Budget`]: one medium or large buffer. Dropping it gives
/// the share back, also when the future that held it is dropped mid-copy.
#[must_use]
pub struct Grant {
    budget: &'static Budget,
    bytes: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Bytes of medium and large buffers in use, against a limit. Shared by all
/// workers; touched once per read into such a buffer, never per byte.
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

/// The process's budget.
static BUDGET: Budget = Budget::new(BIG_BUDGET);

impl Budget {
    pub const fn new(limit: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// A share of `bytes`, if the budget has room.
    fn grant(&'static self, bytes: usize) -> Option<Grant> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .ok()
            .map(|_| Grant {
                budget: self,
                bytes,
            })
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a quarter or less of the budget is in use.
    pub fn plenty(&self) -> bool {
        self.used() <= self.limit / 4
    }
}

/// How often a worker's free lists are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Free buffers of one size. [`FreeList::trim`] frees those that stayed
/// unused since the last trim (the low-water mark of the list).
struct FreeList {
    size: usize,
    keep: usize,
    bufs: Vec<Vec<u8>>,
    low: usize,
}

impl FreeList {
    fn new(size: Size) -> Self {
        FreeList {
            size: size.bytes(),
            keep: size.keep(),
            bufs: Vec::new(),
            low: 0,
        }
    }

    fn take(&mut self) -> Vec<u8> {
        let buf = self
            .bufs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size));
        self.low = self.low.min(self.bufs.len());
        buf
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        if self.bufs.len() < self.keep {
            buf.clear();
            self.bufs.push(buf);
        }
    }

    fn trim(&mut self) {
        let unused = self.low.min(self.bufs.len());
        self.bufs.drain(..unused);
        self.low = self.bufs.len();
    }
}

/// The free lists, indexed by [`Size`].
type Lists = [RefCell<FreeList>; 3];

/// A worker's free buffers. Single-threaded: no locks.
pub struct BufPool {
    /// Shared with the trimming task (which holds a weak reference).
    lists: Rc<Lists>,
    budget: &'static Budget,
    trimming: Cell<bool>,
}

impl Default for BufPool {
    fn default() -> Self {
        Self::with_budget(&BUDGET)
    }
}

impl BufPool {
    /// A pool whose medium and large buffers count against `budget`.
    pub fn with_budget(budget: &'static Budget) -> Self {
        BufPool {
            lists: Rc::new(
                [Size::Small, Size::Medium, Size::Large].map(|s| RefCell::new(FreeList::new(s))),
            ),
            budget,
            trimming: Cell::new(false),
        }
    }

    /// Starts the task that trims the free lists once a second (once; later
    /// calls do nothing). Call from within the worker's runtime; the task
    /// ends with the pool.
    pub fn start_trimming(&self) {
        self.start_trimming_every(TRIM_EVERY);
    }

    fn start_trimming_every(&self, every: Duration) {
        if !self.trimming.replace(true) {
            tokio::task::spawn_local(trim_every(Rc::downgrade(&self.lists), every));
        }
    }

    fn list(&self, size: Size) -> &RefCell<FreeList> {
        &self.lists[size as usize]
    }

    /// A small buffer (empty, capacity [`SMALL`]).
    pub fn take(&self) -> Vec<u8> {
        self.list(Size::Small).borrow_mut().take()
    }

    /// An empty buffer of `size`, or of the largest smaller size the budget
    /// allows, with its share of the budget (none for a small one). Keep the
    /// grant until the buffer is given back.
    pub fn take_sized(&self, size: Size) -> (Vec<u8>, Option<Grant>) {
        let mut size = size;
        while let Some(smaller) = size.smaller() {
            if let Some(grant) = self.budget.grant(size.bytes()) {
                return (self.list(size).borrow_mut().take(), Some(grant));
            }
            size = smaller;
        }
        (self.take(), None)
    }

    /// Takes a buffer back for reuse (a buffer of another size, or beyond
    /// what is kept, is freed).
    pub fn give(&self, buf: Vec<u8>) {
        if let Some(size) = Size::of(buf.capacity()) {
            self.list(size).borrow_mut().give(buf);
        }
    }

    /// Whether the budget for big buffers is mostly unused (a quarter or
    /// less in use).
    pub fn plenty(&self) -> bool {
        self.budget.plenty()
    }

    /// Free buffers held, by size.
    pub fn free(&self) -> [usize; 3] {
        [Size::Small, Size::Medium, Size::Large].map(|s| self.list(s).borrow().bufs.len())
    }
}

/// Trims `lists` every `every` until the pool is gone.
async fn trim_every(lists: Weak<Lists>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(lists) = lists.upgrade() else {
            return;
        };
        for list in lists.iter() {
            list.borrow_mut().trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> &'static Budget {
        Box::leak(Box::new(Budget::new(bytes)))
    }

    #[test]
    fn sizes() {
        let pool = BufPool::with_budget(budget(LARGE + MEDIUM));
        let small = pool.take();
        assert_eq!((small.len(), small.capacity()), (0, SMALL));
        for size in [Size::Small, Size::Medium, Size::Large] {
            let (buf, grant) = pool.take_sized(size);
            assert_eq!((buf.len(), buf.capacity()), (0, size.bytes()));
            assert_eq!(grant.is_some(), size != Size::Small);
        }
    }

    #[test]
    fn big_buffers_stop_at_the_budget_and_come_back_with_the_grant() {
        let b = budget(2 * LARGE + MEDIUM);
        let pool = BufPool::with_budget(b);
        let first = pool.take_sized(Size::Large);
        let second = pool.take_sized(Size::Large);
        assert_eq!(b.used(), 2 * LARGE);
        // Out of room for a large one: the largest that fits.
        let third = pool.take_sized(Size::Large);
        assert_eq!(third.0.capacity(), MEDIUM);
        let fourth = pool.take_sized(Size::Large);
        assert_eq!(fourth.0.capacity(), SMALL);
        assert!(fourth.1.is_none());
        assert_eq!(b.used(), 2 * LARGE + MEDIUM);
        // Dropped without being given back (a cancelled copy): the share
        // still returns.
        drop(first);
        assert_eq!(b.used(), LARGE + MEDIUM);
        let (buf, grant) = second;
        pool.give(buf);
        drop(grant);
        drop(third);
        assert_eq!(b.used(), 0);
        assert_eq!(pool.take_sized(Size::Large).0.capacity(), LARGE);
    }

    #[test]
    fn plenty_means_a_quarter_or_less_in_use() {
        let pool = BufPool::with_budget(budget(8 * LARGE));
        assert!(pool.plenty());
        let two: Vec<_> = (0..2).map(|_| pool.take_sized(Size::Large)).collect();
        assert!(pool.plenty());
        let third = pool.take_sized(Size::Large);
        assert!(!pool.plenty());
        drop(third);
        assert!(pool.plenty());
        drop(two);
    }

    #[test]
    fn free_lists_are_bounded() {
        let pool = BufPool::with_budget(budget(usize::MAX / 2));
        let sizes = [Size::Small, Size::Medium, Size::Large];
        let taken: Vec<_> = sizes
            .iter()
            .flat_map(|&s| (0..s.keep() + 10).map(move |_| s))
            .map(|s| pool.take_sized(s))
            .collect();
        taken.into_iter().for_each(|(b, _)| pool.give(b));
        assert_eq!(pool.free(), sizes.map(Size::keep));
        // A buffer of another size is not kept.
        pool.give(Vec::with_capacity(SMALL + 1));
        assert_eq!(pool.free(), sizes.map(Size::keep));
    }

    #[test]
    fn buffers_unused_since_the_last_trim_are_freed() {
        let mut list = FreeList::new(Size::Small);
        let bufs: Vec<_> = (0..6).map(|_| list.take()).collect();
        bufs.into_iter().for_each(|b| list.give(b));
        assert_eq!(list.bufs.len(), 6);
        list.trim();
        // A period in which at most 2 of the 6 were taken at once.
        let a = list.take();
        let b = list.take();
        list.give(a);
        list.give(b);
        // The next trim frees the 4 that stayed unused.
        list.trim();
        assert_eq!(list.bufs.len(), 2);
        list.trim();
        assert_eq!(list.bufs.len(), 0);
    }

    #[tokio::test]
    async fn an_idle_pool_is_trimmed_by_its_task() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let pool = BufPool::with_budget(budget(LARGE));
                let bufs = [pool.take(), pool.take_sized(Size::Large).0];
                bufs.into_iter().for_each(|b| pool.give(b));
                assert_eq!(pool.free(), [1, 0, 1]);
                pool.start_trimming_every(Duration::from_millis(10));
                pool.start_trimming_every(Duration::from_millis(10));
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while pool.free() != [0, 0, 0] {
                    assert!(std::time::Instant::now() < deadline, "{:?}", pool.free());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
    }
}
