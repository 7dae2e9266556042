//! Runs a few futures side by side in one task and, when the task wakes,
//! polls only those whose own waker fired.
//!
//! `tokio::join!` and `tokio::select!` poll every branch on every wake. A
//! proxied connection has four: two copy directions, the idle watchdog and
//! the kill switch; each chunk wakes the task two or three times (readiness,
//! read, write), and each time the three branches with nothing to do were
//! polled too. Here every branch gets a waker of its own that records which
//! branch it belongs to before it wakes the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// At most this many branches (bits of the wake mask).
const MAX: usize = 8;

/// What the branch wakers share: which branches woke, and the task to wake.
#[derive(Default)]
struct Shared {
    woken: AtomicU8,
    task: AtomicWaker,
}

struct BranchWaker {
    shared: Arc<Shared>,
    bit: u8,
}

impl Wake for BranchWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.bit, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

/// A branch: a pinned future yielding `T`, polled until it is ready once.
pub type Branch<'a, T> = Pin<&'a mut dyn Future<Output = T>>;

/// Polls `branches` (in order, each only when woken) and gives every ready
/// output to `on_ready` with the branch's index; `Some` from it ends the
/// whole (branches still pending are left as they are). Ends with `None`
/// when every branch is ready and `on_ready` never ended it.
pub async fn run<T, R, const N: usize>(
    branches: &mut [Branch<'_, T>; N],
    mut on_ready: impl FnMut(usize, T) -> Option<R>,
) -> Option<R> {
    const { assert!(N >= 1 && N <= MAX, "1 to 8 branches") };
    let shared = Arc::new(Shared::default());
    let wakers: [Waker; N] = std::array::from_fn(|i| {
        Waker::from(Arc::new(BranchWaker {
            shared: Arc::clone(&shared),
            bit: 1 << i,
        }))
    });
    let all = u8::MAX >> (MAX - N);
    let mut done: u8 = 0;
    let mut first = true;
    std::future::poll_fn(|cx| {
        shared.task.register(cx.waker());
        let woken = if std::mem::take(&mut first) {
            all
        } else {
            shared.woken.swap(0, Ordering::AcqRel)
        };
        for (i, branch) in branches.iter_mut().enumerate() {
            let bit = 1 << i;
            if woken & bit == 0 || done & bit != 0 {
                continue;
            }
            let mut branch_cx = Context::from_waker(&wakers[i]);
            if let Poll::Ready(output) = branch.as_mut().poll(&mut branch_cx) {
                done |= bit;
                if let Some(end) = on_ready(i, output) {
                    return Poll::Ready(Some(end));
                }
            }
        }
        if done == all {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    /// A future that counts its polls and is ready after `ready_after`.
    fn counted<'a>(
        polls: &'a Cell<u32>,
        ready_after: Duration,
        value: u32,
    ) -> impl Future<Output = u32> + 'a {
        let mut sleep = Box::pin(tokio::time::sleep(ready_after));
        std::future::poll_fn(move |cx| {
            polls.set(polls.get() + 1);
            sleep.as_mut().poll(cx).map(|()| value)
        })
    }

    #[tokio::test]
    async fn only_woken_branches_are_polled_and_all_outputs_arrive() {
        let polls = [Cell::new(0), Cell::new(0), Cell::new(0)];
        let mut a = std::pin::pin!(counted(&polls[0], Duration::from_millis(10), 1));
        let mut b = std::pin::pin!(counted(&polls[1], Duration::from_millis(40), 2));
        let mut c = std::pin::pin!(counted(&polls[2], Duration::from_secs(3600), 3));
        let mut seen = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            let mut branches: [Branch<'_, u32>; 3] = [a.as_mut(), b.as_mut(), c.as_mut()];
            run(&mut branches, |i, v| {
                seen.push((i, v));
                (seen.len() == 2).then_some("both")
            })
            .await
        })
        .await
        .expect("ends when a and b are ready");
        assert_eq!(ended, Some("both"));
        assert_eq!(seen, [(0, 1), (1, 2)]);
        // Each branch: the first poll, then one per own wake-up. The
        // hour-long one was never woken, so it was polled once.
        assert_eq!(polls[0].get(), 2);
        assert_eq!(polls[1].get(), 2);
        assert_eq!(polls[2].get(), 1);
    }

    #[tokio::test]
    async fn ends_with_none_when_all_are_ready() {
        let mut a = std::pin::pin!(async { 1 });
        let mut b = std::pin::pin!(async {
            tokio::task::yield_now().await;
            2
        });
        let mut branches: [Branch<'_, i32>; 2] = [a.as_mut(), b.as_mut()];
        let mut sum = 0;
        let ended: Option<()> = run(&mut branches, |_, v| {
            sum += v;
            None
        })
        .await;
        assert_eq!(ended, None);
        assert_eq!(sum, 3);
    }
}
