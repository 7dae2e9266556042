//! Hedged connects (`connect_hedge`): when a member's connect has not
//! completed after the hedge delay, a connect to another member starts
//! too, picked as a retry would pick (not a member already tried); the
//! first to complete wins and the other is abandoned.
//!
//! Abandoning a connect drops its future: on epoll that closes the socket;
//! on io_uring the runtime shuts the socket down first
//! ([`crate::runtime::Runtime::connect`]), which aborts the in-flight
//! connect so the kernel stops sending SYNs. An abandoned connect is not a
//! failure: only a connect that really fails or times out is counted
//! against its member ([`super::attempt::failed`]).
//!
//! Only pools without `max_connections` hedge (validated): a hedge holds
//! slots on two members at once. Listeners and pools without
//! `connect_hedge` never come here.
//!
//! # Lifecycle
//!
//! ```text
//! First (one connect in flight, the hedge timer beside it)
//!   --connected-----------------------------> Won by the first
//!   --failed or timed out-------------------> counted; Lost (the caller
//!                                              retries if `retries` allow)
//!   --hedge delay passed, another member----> Racing (hedges += 1)
//!   --hedge delay passed, no other member---> Alone (the normal wait)
//! Racing (both connects in flight)
//!   --one connected-------------------------> Won by it (hedges_won += 1
//!                                              if the hedge); the other
//!                                              abandoned, not counted
//!   --one failed or timed out---------------> counted; Alone with the other
//! Alone (one connect in flight, no timer)
//!   --connected-----------------------------> Won by it
//!   --failed or timed out-------------------> counted; Lost
//! any state
//!   --lbd out of descriptors/memory/ports---> Local: the client is closed,
//!                                              no member blamed
//! ```

use std::net::IpAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use tracing::debug;

use crate::pick::LocalView;
use crate::runtime::Runtime;
use crate::sockets::is_local_shortage;
use crate::state::{inc, ListenerState};

use super::attempt;
use super::local::Local;
use super::slots::{self, MemberSlot, Taken};

/// One connect attempt of a client, with what a hedge needs to pick and
/// count.
pub(super) struct Race<'a> {
    pub local: &'a Local,
    pub view: &'a Rc<LocalView>,
    /// Index of the pool in `view`.
    pub pool: usize,
    pub client_ip: IpAddr,
    pub member_connect: Duration,
    /// Where `hedges` and `hedges_won` are counted.
    pub listener: &'a ListenerState,
}

/// The connect that won.
pub(super) struct Won<R: Runtime> {
    pub member: usize,
    pub stream: R::Stream,
    pub slot: MemberSlot,
}

/// Why a race gave no connection.
pub(super) enum Lost {
    /// Every connect of the race failed (each counted against its member).
    Failed,
    /// lbd itself ran out of something; no member is blamed.
    Local(std::io::Error),
}

/// What one connect of the race ended with.
type Ended<R> = std::io::Result<<R as Runtime>::Stream>;

impl Race<'_> {
    /// Connects to `first`'s member, hedging after `delay`. The members
    /// whose connect failed are added to `tried`. `more`: a retry follows
    /// if the race is lost.
    pub(super) async fn run<R: Runtime>(
        &self,
        first: Taken,
        delay: Duration,
        tried: &mut Vec<usize>,
        more: bool,
    ) -> Result<Won<R>, Lost> {
        let pool = &self.view.snap.pools[self.pool];
        let a = first.member;
        let mut first_conn = pin!(R::connect(pool.members[a].addr, self.member_connect));
        let early = tokio::select! {
            biased;
            ended = first_conn.as_mut() => Some(ended),
            () = tokio::time::sleep(delay) => None,
        };
        if let Some(ended) = early {
            return self.settle::<R>(a, first.slot, ended, tried, more, false);
        }
        // The hedge: another member, picked as a retry would pick.
        tried.push(a);
        let second = match slots::take(
            self.local,
            Rc::clone(self.view),
            self.pool,
            self.client_ip,
            tried,
            self.member_connect,
        )
        .await
        {
            // The pool has no limits: `take` picks at once, in this view.
            Ok(taken) if Rc::ptr_eq(&taken.view, self.view) => taken,
            _ => {
                // No other member: the normal wait.
                let ended = first_conn.await;
                return self.settle::<R>(a, first.slot, ended, tried, more, false);
            }
        };
        let b = second.member;
        inc(&self.listener.counters.get(self.local.id).hedges);
        debug!(
            first = %pool.members[a].label,
            hedge = %pool.members[b].label,
            "connect not done after {delay:?}: hedging to another member"
        );
        let mut second_conn = pin!(R::connect(pool.members[b].addr, self.member_connect));
        // Member and slot of each connect still in flight: [first, hedge].
        let mut racing = [Some((a, first.slot)), Some((b, second.slot))];
        loop {
            let (which, ended) = tokio::select! {
                ended = first_conn.as_mut(), if racing[0].is_some() => (0, ended),
                ended = second_conn.as_mut(), if racing[1].is_some() => (1, ended),
            };
            let Some((index, slot)) = racing[which].take() else {
                unreachable!("only connects in flight are polled")
            };
            let other_racing = racing[1 - which].is_some();
            match ended {
                // The first to connect wins; the other, if still in flight,
                // is abandoned when this returns (its future dropped) and
                // not counted.
                Ok(stream) => {
                    return self.settle::<R>(index, slot, Ok(stream), tried, more, which == 1)
                }
                Err(e) if !other_racing => {
                    return self.settle::<R>(index, slot, Err(e), tried, more, which == 1)
                }
                Err(e) if is_local_shortage(&e) => return Err(Lost::Local(e)),
                Err(e) => {
                    // Counted; its slot goes back now, the other goes on.
                    attempt::failed(self.local.id, pool, index, &e, true);
                    if !tried.contains(&index) {
                        tried.push(index);
                    }
                    drop(slot);
                }
            }
        }
    }

    /// Settles the connect to member `index` that ended with `ended` and
    /// was the last in flight (or won). `hedge`: it was the hedge.
    fn settle<R: Runtime>(
        &self,
        index: usize,
        slot: MemberSlot,
        ended: Ended<R>,
        tried: &mut Vec<usize>,
        more: bool,
        hedge: bool,
    ) -> Result<Won<R>, Lost> {
        let pool = &self.view.snap.pools[self.pool];
        match ended {
            Ok(stream) => {
                if hedge {
                    inc(&self.listener.counters.get(self.local.id).hedges_won);
                }
                attempt::succeeded(pool, index, &stream);
                Ok(Won {
                    member: index,
                    stream,
                    slot,
                })
            }
            Err(e) if is_local_shortage(&e) => Err(Lost::Local(e)),
            Err(e) => {
                attempt::failed(self.local.id, pool, index, &e, more);
                if !tried.contains(&index) {
                    tried.push(index);
                }
                Err(Lost::Failed)
            }
        }
    }
}
