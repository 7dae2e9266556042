//! A task's wake-up slot on one worker thread: whoever changes what the
//! task waits for calls [`WakeSlot::wake`]; the task waits with
//! [`WakeSlot::until`]. No lock, no allocation beyond the waker itself
//! (kept across polls when it would wake the same task). Used by a
//! connection's kill switch ([`super::sessions`]) and by the copy loop's
//! idle watchdog ([`super::copy`]).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct WakeSlot {
    waker: Cell<Option<Waker>>,
}

impl WakeSlot {
    /// Wakes the task waiting in [`WakeSlot::until`], if any.
    pub fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once `ready()` holds; it is checked on each wake.
    pub async fn until(&self, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            let waker = match self.waker.take() {
                Some(w) if w.will_wake(cx.waker()) => w,
                _ => cx.waker().clone(),
            };
            self.waker.set(Some(waker));
            Poll::Pending
        })
        .await
    }
}
