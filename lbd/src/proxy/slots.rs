//! A connection's slot on its member: picked, counted in the member's
//! `active`, and for members with `max_connections` taken only below the
//! limit; when every member that could take the client is full, the client
//! waits in the pool's queue ([`crate::queue`]).
//!
//! # How the limit stays exact
//!
//! A slot of a limited member is taken with one compare-and-swap on the
//! member's shared `active` counter that increments it only while it is
//! below the limit ([`MemberState::try_take`]): however many workers race,
//! `active` never exceeds `max_connections`. No lock: the pick only reads
//! `active` to skip full members, and a pick that loses the race for the
//! last slot picks again. A slot is held from before the connect until the
//! connection is closed, so connects in progress count (as HAProxy's
//! `served`). Only a reload that lowers the limit, or a slow-start ramp
//! (which only rises), leaves `active` above the limit in force: then no
//! new connection is let in until enough have ended.
//!
//! Pools without any `max_connections` skip all of it: one branch on a
//! config flag, then the pick and a plain increment, as before limits
//! existed.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::pick::{limit_now, LocalView, Pick};
use crate::queue::{Attempt, PoolQueue, Refused};
use crate::snapshot::PoolRt;
use crate::state::{now_ms, MemberState, Slot};

use super::local::Local;

/// One connection counted on its member. Dropping it gives the slot back
/// and, in a pool with limits, wakes the head of the pool's queue.
#[derive(Debug)]
pub struct MemberSlot {
    slot: Option<Slot<MemberState>>,
    /// The pool's queue, when its members have limits.
    queue: Option<Arc<PoolQueue>>,
}

impl MemberSlot {
    pub fn state(&self) -> &Arc<MemberState> {
        match &self.slot {
            Some(slot) => slot.state(),
            None => unreachable!("a MemberSlot holds its slot until dropped"),
        }
    }
}

impl Drop for MemberSlot {
    fn drop(&mut self) {
        drop(self.slot.take());
        if let Some(queue) = &self.queue {
            queue.slot_freed();
        }
    }
}

/// A member slot and where it is: `member` of pool `pool` in `view` (which
/// may be newer than the view the connection started with, when it waited
/// in the queue across a reload).
pub struct Taken {
    pub view: Rc<LocalView>,
    pub pool: usize,
    pub member: usize,
    pub slot: MemberSlot,
}

/// Why a connection got no member slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// No member can take it (down, drained, tried already).
    NoMember,
    /// Every member was full and the queue refused or timed it out.
    Queue(Refused),
}

/// A slot on a member of a pool without limits, as picked.
fn take_unlimited(
    view: Rc<LocalView>,
    pool_index: usize,
    client_ip: IpAddr,
    tried: &[usize],
) -> Option<Taken> {
    let pool = &view.snap.pools[pool_index];
    match view.pick(pool_index, pool, client_ip, tried) {
        Pick::Member(member) => Some(Taken {
            slot: MemberSlot {
                slot: Some(Slot::enter(&pool.members[member].state)),
                queue: None,
            },
            view,
            pool: pool_index,
            member,
        }),
        Pick::Full | Pick::NoMember => None,
    }
}

/// Takes a slot at once, never waiting in the queue (a UDP flow: its
/// datagram cannot wait): `None` when no member can take it now.
pub fn take_now(view: Rc<LocalView>, pool_index: usize, client_ip: IpAddr) -> Option<Taken> {
    if !view.snap.pools[pool_index].limited {
        return take_unlimited(view, pool_index, client_ip, &[]);
    }
    match attempt(&view, pool_index, client_ip, &[]) {
        Attempt::Got(taken) => Some(taken),
        Attempt::Gone | Attempt::Full | Attempt::NotForMe => None,
    }
}

/// Takes a slot on a member of pool `pool_index` of `view` for a client at
/// `client_ip`, skipping the members in `tried`; waits in the pool's queue
/// (up to `queue_timeout`, default `member_connect`) while every member
/// that could take it is full.
pub async fn take(
    local: &Local,
    view: Rc<LocalView>,
    pool_index: usize,
    client_ip: IpAddr,
    tried: &[usize],
    member_connect: Duration,
) -> Result<Taken, NoSlot> {
    let pool = &view.snap.pools[pool_index];
    if !pool.limited {
        // The common path: no limits, no queue.
        return take_unlimited(view, pool_index, client_ip, tried).ok_or(NoSlot::NoMember);
    }
    // New clients queue behind those already waiting.
    if pool.queue.is_empty() {
        match attempt(&view, pool_index, client_ip, tried) {
            Attempt::Got(taken) => return Ok(taken),
            Attempt::Gone => return Err(NoSlot::NoMember),
            Attempt::Full | Attempt::NotForMe => {}
        }
    }
    let queue = Arc::clone(&pool.queue);
    let name = pool.name.clone();
    debug!(pool = %name, client = %client_ip, "every member is full: the client waits in the queue");
    let timeout = pool.queue_timeout.unwrap_or(member_connect);
    let started_on = Arc::clone(&view.snap);
    let waited = queue
        .wait(pool.max_queue, timeout, || {
            // Each try reads the current config: a reload while waiting
            // may have added members or raised limits.
            let now = local.view();
            let Some(index) = now.snap.pools.iter().position(|p| p.name == name) else {
                return Attempt::Gone;
            };
            // `tried` holds indices of the snapshot the connection began in.
            let tried = if Arc::ptr_eq(&now.snap, &started_on) {
                tried
            } else {
                &[]
            };
            attempt(&now, index, client_ip, tried)
        })
        .await;
    match waited {
        Ok((taken, waited)) => {
            let pool = &taken.view.snap.pools[taken.pool];
            queue.record_wait(waited, served(pool));
            debug!(pool = %name, client = %client_ip, "left the queue after {waited:?}");
            Ok(taken)
        }
        Err(why) => {
            debug!(pool = %name, client = %client_ip, "no member slot: {why:?}");
            Err(NoSlot::Queue(why))
        }
    }
}

/// One try for a slot in a pool with limits: pick a member with room and
/// take a slot on it. A pick can lose the last slot to another worker
/// between reading `active` and the compare-and-swap; it then picks again
/// (at most once per member).
fn attempt(
    view: &Rc<LocalView>,
    pool_index: usize,
    client_ip: IpAddr,
    tried: &[usize],
) -> Attempt<Taken> {
    let pool = &view.snap.pools[pool_index];
    for _ in 0..=pool.members.len() {
        match view.pick(pool_index, pool, client_ip, tried) {
            Pick::Member(member) => {
                let state = &pool.members[member].state;
                let slot = match limit_now(pool, &pool.members[member], now_ms()) {
                    None => Some(Slot::enter(state)),
                    Some(limit) => state.try_take(limit),
                };
                if let Some(slot) = slot {
                    return Attempt::Got(Taken {
                        view: Rc::clone(view),
                        pool: pool_index,
                        member,
                        slot: MemberSlot {
                            slot: Some(slot),
                            queue: Some(Arc::clone(&pool.queue)),
                        },
                    });
                }
            }
            Pick::Full if room_only_in(pool, tried) => return Attempt::NotForMe,
            Pick::Full => return Attempt::Full,
            Pick::NoMember => return Attempt::Gone,
        }
    }
    Attempt::Full
}

/// Whether a member this connection already failed on has room: a slot
/// others in the queue could use.
fn room_only_in(pool: &PoolRt, tried: &[usize]) -> bool {
    let now = now_ms();
    tried.iter().any(|&i| {
        let m = &pool.members[i];
        m.cfg.weight > 0
            && m.state.takes_new_connections(now, true)
            && limit_now(pool, m, now).is_none_or(|l| m.state.active.load(Relaxed) < l)
    })
}

/// Connections the pool's members established so far (for `qtime`).
fn served(pool: &PoolRt) -> u64 {
    pool.members
        .iter()
        .map(|m| m.state.counters.sum(|c| &c.connections))
        .sum()
}
