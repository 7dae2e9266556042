//! Member events: how threads that follow member states from outside the
//! data path (the XDP control loop) learn at once that a member's health
//! or admin state changed, or that a reload published new members, instead
//! of at their next poll; and how the workers' session sweepers learn that
//! a member went down or into maint. At the bottom of the crate: it uses
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Wakes what follows member states from outside the data path (the XDP
/// fast path's thread) as soon as a member's health or admin state changes,
/// instead of at its next poll. Never touched per connection.
pub struct MemberEvents {
    epoch: Mutex<u64>,
    changed: std::sync::Condvar,
}

/// The process's member events.
pub static MEMBER_EVENTS: MemberEvents = MemberEvents {
    epoch: Mutex::new(0),
    changed: std::sync::Condvar::new(),
};

impl MemberEvents {
    /// Some member changed.
    pub fn notify(&self) {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Waits until something changed after `seen` (an earlier return
    /// value; 0 at first), or `timeout`; returns the current epoch.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        let (epoch, _) = self
            .changed
            .wait_timeout_while(epoch, timeout, |e| *e == seen)
            .unwrap_or_else(|p| p.into_inner());
        *epoch
    }
}

/// Wakes the workers' session sweepers (`proxy::sessions`) when a member
/// went down or into maint, so that pools with `on_down` / `on_maint =
/// "shutdown_sessions"` close its connections at once, and on `shutdown
/// sessions server`. Bumped only on those events (rare), whatever the
/// config; never touched per connection.
pub struct SessionEvents {
    generation: AtomicU64,
    notify: Notify,
}

/// The process's session events.
pub static SESSION_EVENTS: SessionEvents = SessionEvents {
    generation: AtomicU64::new(0),
    notify: Notify::const_new(),
};

impl SessionEvents {
    /// A member went down or into maint (its epoch was bumped before).
    pub fn wake(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.notify.notify_waiters();
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// Waits until the generation is no longer `seen`; returns the new one.
    /// No wake is missed: the waiter is registered before the generation
    /// is read.
    pub async fn changed(&self, seen: u64) -> u64 {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.generation();
            if now != seen {
                return now;
            }
            notified.await;
        }
    }
}
