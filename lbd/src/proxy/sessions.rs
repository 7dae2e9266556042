//! Closing a member's established connections when it goes down or into
//! maint, for pools with `on_down` / `on_maint = "shutdown_sessions"`
//! (HAProxy `on-marked-down shutdown-sessions`), and when the stats socket
//! asks for it (`shutdown sessions server`, any pool).
//!
//! Each worker keeps a registry ([`Sessions`], in its [`super::local::Local`])
//! of its established connections: the member's state, the member's
//! `down_epoch` / `maint_epoch` / `shutdown_epoch` when the connection was
//! registered, and a [`Kill`] switch the connection's copy loop waits on
//! beside its copy. Registering is a slot in the worker's own slab (no
//! lock) and one small allocation per connection.
//!
//! Every transition to Down, every entry into Maint and every `shutdown
//! sessions server` bumps the member's epoch and wakes every worker's
//! sweeper ([`crate::events::SESSION_EVENTS`]);
//! the sweeper walks its registry and fires the switch of each connection
//! whose member's relevant epoch moved. The connection then resets both
//! sockets (client and member get a RST) and ends; its registration is
//! dropped with it. All of this runs on the worker's own thread: no lock,
//! and a connection's entry is gone before its descriptors are closed.
//!
//! # Lifecycle
//!
//! ```text
//! one registered connection:
//!
//! Registered (epochs read, then the member's state)
//!   --member already Down (on_down) or Maint (on_maint)--> Fired at once
//!   --the member's down_epoch moves (on_down)------------> Fired by the sweeper
//!   --the member's maint_epoch moves (on_maint)----------> Fired by the sweeper
//!   --the member's shutdown_epoch moves (asked)----------> Fired by the sweeper
//!   --the connection ends by itself----------------------> Removed
//! Fired
//!   --the copy loop sees the switch----------------------> both sockets reset,
//!                                                          the task ends -> Removed
//! ```
//!
//! No wake is missed: the bump happens before the wake, a sweeper registers
//! for the wake before reading the generation, and a connection reads the
//! epochs before the member's state (a bump it did not see finds it in the
//! registry). Drain never fires anything; leaving Down or Maint neither. A
//! reload keeps member states (and so the entries' meaning) for members
//! that stay; a member a reload removes keeps its connections.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use lbd_config::AdminState;
use tracing::{debug, info};

use super::wake::WakeSlot;
use crate::events::SESSION_EVENTS;
use crate::state::{add, Health, MemberState};

/// A connection's off switch: fired by the sweeper, awaited by the copy
/// loop. Single-threaded (the worker's).
#[derive(Default)]
pub struct Kill {
    fired: Cell<bool>,
    waiter: WakeSlot,
}

impl std::fmt::Debug for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kill")
            .field("fired", &self.fired.get())
            .finish()
    }
}

impl Kill {
    pub fn fire(&self) {
        self.fired.set(true);
        self.waiter.wake();
    }

    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the switch is fired.
    pub async fn wait(&self) {
        self.waiter.until(|| self.fired.get()).await
    }
}

/// What closes a pool's connections (its `on_down` / `on_maint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Triggers {
    pub on_down: bool,
    pub on_maint: bool,
}

/// Why connections were closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Down,
    Maint,
    /// `shutdown sessions server` on the stats socket.
    Asked,
}

struct Entry {
    member: Arc<MemberState>,
    label: Arc<str>,
    triggers: Triggers,
    down_epoch: u64,
    maint_epoch: u64,
    shutdown_epoch: u64,
    kill: Rc<Kill>,
}

impl Entry {
    fn due(&self) -> Option<Reason> {
        if self.member.shutdown_epoch() != self.shutdown_epoch {
            Some(Reason::Asked)
        } else if self.triggers.on_down && self.member.down_epoch() != self.down_epoch {
            Some(Reason::Down)
        } else if self.triggers.on_maint && self.member.maint_epoch() != self.maint_epoch {
            Some(Reason::Maint)
        } else {
            None
        }
    }
}

/// One worker's registered connections (a slab: freed slots are reused).
#[derive(Default)]
pub struct Sessions {
    entries: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
}

/// A connection's place in the registry; removes it when dropped.
pub struct Registered<'a> {
    sessions: &'a Sessions,
    index: usize,
    kill: Rc<Kill>,
}

impl Registered<'_> {
    pub fn kill(&self) -> &Kill {
        &self.kill
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.sessions.entries.borrow_mut().get_mut(self.index) {
            *slot = None;
            self.sessions.free.borrow_mut().push(self.index);
        }
    }
}

impl Sessions {
    /// Registers a connection to `member` (`label` for logs) of worker
    /// `worker`. A member that is already down (or in maint) when it
    /// registers has its switch fired at once.
    pub fn register(
        &self,
        worker: usize,
        member: &Arc<MemberState>,
        label: &Arc<str>,
        triggers: Triggers,
    ) -> Registered<'_> {
        let kill = Rc::new(Kill::default());
        // Epochs first, then the state: see the module docs.
        let entry = Entry {
            member: Arc::clone(member),
            label: Arc::clone(label),
            triggers,
            down_epoch: member.down_epoch(),
            maint_epoch: member.maint_epoch(),
            shutdown_epoch: member.shutdown_epoch(),
            kill: Rc::clone(&kill),
        };
        let reason = if triggers.on_down && member.health() == Health::Down {
            Some(Reason::Down)
        } else if triggers.on_maint && member.admin() == AdminState::Maint {
            Some(Reason::Maint)
        } else {
            None
        };
        let mut entries = self.entries.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(i) => {
                entries[i] = Some(entry);
                i
            }
            None => {
                entries.push(Some(entry));
                entries.len() - 1
            }
        };
        if let Some(reason) = reason {
            kill.fire();
            add(&member.counters.get(worker).sessions_shutdown, 1);
            debug!(member = %label, "member {label} {}: closing a connection that just reached it", reason_state(reason));
        }
        Registered {
            sessions: self,
            index,
            kill,
        }
    }

    /// Connections registered right now.
    pub fn len(&self) -> usize {
        self.entries.borrow().len() - self.free.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fires the switch of every connection whose member went down or into
    /// maint since it registered (per its pool's triggers); counts them on
    /// the member (worker `worker`'s slot) and logs one line per member and
    /// reason. Returns how many it fired.
    pub fn sweep(&self, worker: usize) -> u64 {
        // (member, label, reason, count): members are few per event.
        let mut tally: Vec<(Arc<MemberState>, Arc<str>, Reason, u64)> = Vec::new();
        for entry in self.entries.borrow().iter().flatten() {
            if entry.kill.fired() {
                continue;
            }
            let Some(reason) = entry.due() else {
                continue;
            };
            entry.kill.fire();
            match tally
                .iter_mut()
                .find(|(m, _, r, _)| Arc::ptr_eq(m, &entry.member) && *r == reason)
            {
                Some(t) => t.3 += 1,
                None => tally.push((
                    Arc::clone(&entry.member),
                    Arc::clone(&entry.label),
                    reason,
                    1,
                )),
            }
        }
        let mut fired = 0;
        for (member, label, reason, n) in tally {
            add(&member.counters.get(worker).sessions_shutdown, n);
            fired += n;
            let field = match reason {
                Reason::Down => "on_down = shutdown_sessions",
                Reason::Maint => "on_maint = shutdown_sessions",
                Reason::Asked => "shutdown sessions server",
            };
            info!(
                member = %label,
                worker,
                "member {label} {}: closed {n} established connection(s) ({field})",
                reason_state(reason)
            );
        }
        fired
    }

    /// The worker's sweeper: sweeps after every session event, until the
    /// worker's runtime ends.
    pub async fn run_sweeper(&self, worker: usize) {
        let mut seen = SESSION_EVENTS.generation();
        loop {
            seen = SESSION_EVENTS.changed(seen).await;
            if !self.is_empty() {
                self.sweep(worker);
            }
        }
    }
}

fn reason_state(reason: Reason) -> &'static str {
    match reason {
        Reason::Down => "is DOWN",
        Reason::Maint => "is in MAINT",
        Reason::Asked => "was asked to shut its sessions down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Triggers = Triggers {
        on_down: true,
        on_maint: true,
    };

    fn label() -> Arc<str> {
        Arc::from("p/127.0.0.1:1")
    }

    #[test]
    fn a_sweep_fires_only_the_connections_whose_member_moved() {
        let sessions = Sessions::default();
        let (a, b) = (Arc::new(MemberState::new(1)), Arc::new(MemberState::new(1)));
        let down_only = Triggers {
            on_down: true,
            on_maint: false,
        };
        let ra = sessions.register(0, &a, &label(), down_only);
        let rb = sessions.register(0, &b, &label(), BOTH);
        let rb2 = sessions.register(0, &b, &label(), down_only);
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions.sweep(0), 0, "nothing moved");

        a.set_admin(AdminState::Drain);
        a.set_admin(AdminState::Maint);
        assert_eq!(sessions.sweep(0), 0, "a's pool ignores maint");
        assert!(!ra.kill().fired());

        b.set_admin(AdminState::Maint);
        assert_eq!(sessions.sweep(0), 1);
        assert!(rb.kill().fired() && !rb2.kill().fired());
        assert_eq!(b.counters.sum(|c| &c.sessions_shutdown), 1);

        assert!(a.mark_down());
        assert_eq!(sessions.sweep(0), 1);
        assert!(ra.kill().fired());
        assert_eq!(sessions.sweep(0), 0, "fired once");

        drop(ra);
        drop(rb);
        assert_eq!(sessions.len(), 1);
        let again = sessions.register(0, &b, &label(), down_only);
        assert_eq!(sessions.len(), 2, "a freed slot is reused");
        assert_eq!(sessions.entries.borrow().len(), 3);
        drop(again);
        drop(rb2);
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_connection_to_a_member_already_down_is_fired_at_once() {
        let sessions = Sessions::default();
        let m = Arc::new(MemberState::new(1));
        assert!(m.mark_down());
        let r = sessions.register(0, &m, &label(), BOTH);
        assert!(r.kill().fired());
        assert_eq!(m.counters.sum(|c| &c.sessions_shutdown), 1);
        let none = sessions.register(
            0,
            &m,
            &label(),
            Triggers {
                on_down: false,
                on_maint: true,
            },
        );
        assert!(!none.kill().fired(), "on_maint only: down does not matter");
    }

    #[tokio::test]
    async fn the_switch_wakes_its_waiter_and_the_sweeper_wakes_on_events() {
        let kill = Rc::new(Kill::default());
        let waiter = {
            let kill = Rc::clone(&kill);
            async move { kill.wait().await }
        };
        let fire = async {
            tokio::task::yield_now().await;
            kill.fire();
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(waiter, fire)
        })
        .await
        .expect("the waiter wakes");

        let seen = SESSION_EVENTS.generation();
        let m = MemberState::new(1);
        let changed = SESSION_EVENTS.changed(seen);
        m.set_admin(AdminState::Maint);
        let now = tokio::time::timeout(std::time::Duration::from_secs(10), changed)
            .await
            .expect("a wake sent before waiting is not missed");
        assert!(now > seen);
    }
}
