//! A pool's queue: where new clients wait while every member that could
//! take them is at its `max_connections` (HAProxy's backend queue, with
//! `maxqueue` and `timeout queue`).
//!
//! One FIFO per pool, shared by all workers and kept across reloads (by
//! pool name). It is the slow path: only connections that found every
//! member full come here, so it may take a mutex. The common path never
//! touches it beyond one atomic load of [`PoolQueue::len`] (pools whose
//! members have no limit not even that).
//!
//! # Who gets a freed slot
//!
//! Only the head of the queue tries to take a slot; the others wait for
//! their turn. The head is woken (a `Notify` permit, so a wake-up before
//! it waits is not lost) when:
//!
//! * a connection to a member of the pool ends ([`PoolQueue::slot_freed`]),
//! * the waiter before it leaves the queue (served, timed out, gone),
//! * and at the latest every [`HEAD_POLL`], for capacity that appears
//!   without a connection ending (a member comes up or ramps up, a reload
//!   raises a limit).
//!
//! New clients do not overtake: while the queue is not empty they queue
//! behind it instead of picking (see `proxy::slots`). A freed slot is thus
//! taken by the oldest waiter, or by a client that arrived at the same
//! instant the queue emptied.
//!
//! The release side and the waiting side each write their own variable
//! (`active` of a member, [`PoolQueue::len`]) then read the other's, with a
//! `SeqCst` fence in between: at least one of them sees the other, so a
//! slot is never freed unseen while the head goes to sleep.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The head of a queue checks for capacity at least this often, even when
/// no connection ended.
pub const HEAD_POLL: Duration = Duration::from_millis(50);

/// HAProxy averages queue times over this many connections (`qtime`).
const QTIME_SAMPLES: f64 = 1024.0;

/// What one attempt of the head to take a slot found.
pub enum Attempt<T> {
    /// A slot: the waiter leaves the queue with it.
    Got(T),
    /// Every member that could take it is full: keep waiting.
    Full,
    /// A member has room, but not for this waiter (it already failed to
    /// connect there): keep waiting, and let the next waiter try.
    NotForMe,
    /// No member can take connections at all (all down or removed): the
    /// waiter gives up at once, as a new client would.
    Gone,
}

/// Why a waiter left the queue without a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue already held `max_queue` clients.
    QueueFull,
    /// `queue_timeout` passed.
    Timeout,
    /// No member could take connections any more.
    NoMember,
}

/// One waiting connection.
#[derive(Debug)]
struct Waiter {
    turn: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    waiters: VecDeque<Arc<Waiter>>,
    qtime: QueueTime,
}

/// HAProxy's `qtime`: a sliding average over the last 1024 connections
/// established to the pool, those that did not wait counting 0. Samples
/// are only taken here, on the slow path: connections that did not wait
/// are accounted for by decaying the average by how many the pool
/// established since (`served` totals, read from the members' counters).
#[derive(Debug, Default, Clone, Copy)]
struct QueueTime {
    avg_ms: f64,
    /// The pool's established-connection total when `avg_ms` was updated.
    served_at: u64,
    max_ms: u64,
}

impl QueueTime {
    fn decayed(&self, served: u64) -> f64 {
        let skipped = served.saturating_sub(self.served_at);
        if skipped == 0 {
            return self.avg_ms;
        }
        let keep = (1.0 - 1.0 / QTIME_SAMPLES).powf(skipped.min(1 << 20) as f64);
        self.avg_ms * keep
    }
}

/// A pool's queue and its counters (see the module docs).
#[derive(Debug, Default)]
pub struct PoolQueue {
    inner: Mutex<Inner>,
    /// Clients waiting now (HAProxy `qcur`).
    len: AtomicUsize,
    /// The most that ever waited at once (HAProxy `qmax`).
    max_len: AtomicUsize,
    /// Clients reset after waiting `queue_timeout`.
    pub timeouts: AtomicU64,
    /// Clients reset because `max_queue` were already waiting.
    pub full: AtomicU64,
}

impl PoolQueue {
    pub fn new() -> PoolQueue {
        PoolQueue::default()
    }

    /// Clients waiting right now.
    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most clients that ever waited at once.
    pub fn max_len(&self) -> usize {
        self.max_len.load(Relaxed)
    }

    /// Starts the maximum again from the clients waiting now (the stats
    /// socket's `clear counters`).
    pub fn reset_max(&self) {
        self.max_len.store(self.len(), Relaxed);
    }

    /// Call after giving back a member's slot: wakes the head of the queue
    /// if anyone waits (one atomic load otherwise).
    #[inline]
    pub fn slot_freed(&self) {
        fence(SeqCst);
        if self.len.load(Relaxed) > 0 {
            self.wake(0);
        }
    }

    /// `(average, max)` queue time in seconds, the average as HAProxy's
    /// `qtime` (see [`QueueTime`]); `served` is the pool's total of
    /// established connections now.
    pub fn queue_time(&self, served: u64) -> (f64, f64) {
        let q = self.lock().qtime;
        (q.decayed(served) / 1000.0, q.max_ms as f64 / 1000.0)
    }

    /// Counts a connection that waited `waited` and got a slot; `served`
    /// is the pool's total of established connections now.
    pub fn record_wait(&self, waited: Duration, served: u64) {
        let ms = waited.as_secs_f64() * 1000.0;
        let mut inner = self.lock();
        let q = &mut inner.qtime;
        q.avg_ms = q.decayed(served) * (1.0 - 1.0 / QTIME_SAMPLES) + ms / QTIME_SAMPLES;
        q.served_at = served;
        q.max_ms = q.max_ms.max(waited.as_millis() as u64);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the waiter at `position` its turn (if there is one).
    fn wake(&self, position: usize) {
        if let Some(w) = self.lock().waiters.get(position) {
            w.turn.notify_one();
        }
    }

    /// Waits in the queue until `attempt` (tried by the head of the queue
    /// only) gets a slot, `timeout` passes, or no member is left. Refuses at
    /// once when `max_queue` clients already wait. Returns the slot and how
    /// long the client waited.
    pub async fn wait<T>(
        &self,
        max_queue: Option<u32>,
        timeout: Duration,
        mut attempt: impl FnMut() -> Attempt<T>,
    ) -> Result<(T, Duration), Refused> {
        let start = Instant::now();
        let deadline = start + timeout;
        let me = Arc::new(Waiter {
            turn: Notify::new(),
        });
        {
            let mut inner = self.lock();
            if max_queue.is_some_and(|max| inner.waiters.len() >= max as usize) {
                self.full.fetch_add(1, Relaxed);
                return Err(Refused::QueueFull);
            }
            inner.waiters.push_back(Arc::clone(&me));
            let len = inner.waiters.len();
            self.len.store(len, Relaxed);
            self.max_len.fetch_max(len, Relaxed);
        }
        // Leaves the queue however this future ends (dropped included),
        // and passes the turn on.
        let place = Place { queue: self, me };
        // Woken out of turn: the waiters before it cannot use a free slot.
        let mut passed_on = false;
        loop {
            // Pairs with the fence in `slot_freed`: a slot given back
            // before this point is seen by the attempt below; one given
            // back after it sees this waiter in `len` and wakes it.
            fence(SeqCst);
            let position = place.position().unwrap_or(0);
            let head = position == 0;
            if head || passed_on {
                match attempt() {
                    Attempt::Got(slot) => return Ok((slot, start.elapsed())),
                    Attempt::Gone => return Err(Refused::NoMember),
                    Attempt::NotForMe => self.wake(position + 1),
                    Attempt::Full => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.timeouts.fetch_add(1, Relaxed);
                return Err(Refused::Timeout);
            }
            let nap = if head {
                (deadline - now).min(HEAD_POLL)
            } else {
                deadline - now
            };
            let woken = tokio::time::timeout(nap, place.me.turn.notified())
                .await
                .is_ok();
            passed_on = woken && !head;
        }
    }
}

/// A waiter's place in the queue; leaving it wakes the next head.
struct Place<'a> {
    queue: &'a PoolQueue,
    me: Arc<Waiter>,
}

impl Place<'_> {
    fn position(&self) -> Option<usize> {
        self.queue
            .lock()
            .waiters
            .iter()
            .position(|w| Arc::ptr_eq(w, &self.me))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        if let Some(i) = inner.waiters.iter().position(|w| Arc::ptr_eq(w, &self.me)) {
            inner.waiters.remove(i);
        }
        self.queue.len.store(inner.waiters.len(), Relaxed);
        // The next head may have capacity waiting for it (this one took
        // a slot and there may be more, or it gave up its turn).
        if let Some(next) = inner.waiters.front() {
            next.turn.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    #[test]
    fn waiters_are_served_in_order_and_time_out_and_overflow() {
        rt().block_on(async {
            let q = Arc::new(PoolQueue::new());
            let free = Arc::new(AtomicUsize::new(0));
            let order = Arc::new(Mutex::new(Vec::new()));
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let mut tasks = Vec::new();
                    for i in 0..3 {
                        let (q, free, order) = (q.clone(), free.clone(), order.clone());
                        tasks.push(tokio::task::spawn_local(async move {
                            let got = q
                                .wait(Some(3), Duration::from_secs(5), || {
                                    let n = free.load(SeqCst);
                                    if n == 0 {
                                        return Attempt::Full;
                                    }
                                    free.store(n - 1, SeqCst);
                                    Attempt::Got(i)
                                })
                                .await;
                            order.lock().unwrap().push(got.map(|(i, _)| i));
                        }));
                        tokio::task::yield_now().await;
                    }
                    assert_eq!(q.len(), 3);
                    // A fourth is refused: max_queue 3.
                    let over = q
                        .wait(Some(3), Duration::from_secs(5), || Attempt::<()>::Full)
                        .await;
                    assert_eq!(over.err(), Some(Refused::QueueFull));
                    for _ in 0..3 {
                        free.fetch_add(1, SeqCst);
                        q.slot_freed();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    for t in tasks {
                        t.await.expect("task");
                    }
                })
                .await;
            assert_eq!(*order.lock().unwrap(), [Ok(0), Ok(1), Ok(2)]);
            assert_eq!((q.len(), q.max_len()), (0, 3));
            assert_eq!(q.full.load(Relaxed), 1);

            let timed = q
                .wait(None, Duration::from_millis(30), || Attempt::<()>::Full)
                .await;
            assert_eq!(timed.err(), Some(Refused::Timeout));
            assert_eq!(q.timeouts.load(Relaxed), 1);
            let gone = q
                .wait(None, Duration::from_secs(5), || Attempt::<()>::Gone)
                .await;
            assert_eq!(gone.err(), Some(Refused::NoMember));
            assert!(q.is_empty());
        });
    }

    #[test]
    fn a_waiter_the_slot_is_not_for_lets_the_next_one_try() {
        rt().block_on(async {
            let q = Arc::new(PoolQueue::new());
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let picky = tokio::task::spawn_local({
                        let q = q.clone();
                        async move {
                            q.wait(None, Duration::from_millis(300), || Attempt::<()>::NotForMe)
                                .await
                        }
                    });
                    tokio::task::yield_now().await;
                    let taken = Arc::new(AtomicBool::new(false));
                    let start = Instant::now();
                    let second = q
                        .wait(None, Duration::from_secs(5), || {
                            taken.store(true, SeqCst);
                            Attempt::Got(())
                        })
                        .await;
                    assert!(second.is_ok());
                    assert!(
                        start.elapsed() < Duration::from_millis(250),
                        "did not wait for the head's timeout"
                    );
                    assert_eq!(picky.await.expect("task").err(), Some(Refused::Timeout));
                })
                .await;
        });
    }

    #[test]
    fn queue_time_is_haproxys_sliding_average() {
        let q = PoolQueue::new();
        q.record_wait(Duration::from_millis(1024), 1);
        let (avg, max) = q.queue_time(1);
        assert!((avg - 1.0 / 1000.0).abs() < 1e-9, "{avg}");
        assert_eq!(max, 1.024);
        // 1024 connections that did not wait bring it down by about 1/e.
        let (later, _) = q.queue_time(1 + 1024);
        assert!((later / avg - (-1.0f64).exp()).abs() < 0.01, "{later}");
    }
}
