//! Member events: how threads that follow member states from outside the
//! data path (the XDP control loop) learn at once that a member's health
//! or admin state changed, or that a reload published new members, instead
//! of at their next poll. At the bottom of the crate: it uses nothing.

use std::sync::Mutex;
use std::time::Duration;

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
