//! Picking a member for a new connection, in one place: which members may
//! take it right now (`Candidates`: up, ready, not backing off after
//! failed connects, not tried already by this connection, below their
//! `max_connections`) and which of them the pool's algorithm chooses
//! ([`LocalView::pick`], with this worker's own balancer state, and the
//! weights of members in slow start ramped).
//!
//! Runs per connection on the worker threads: no locks, no allocation.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use lbd_config::Algorithm;

use crate::balance::{slow_start, Balancer, MemberStatus};
use crate::snapshot::{MemberRt, PoolRt, Snapshot};
use crate::state::now_ms;

/// This worker's view of one snapshot, with its own balancer state (round
/// robin positions are per worker: nothing is shared on the pick path).
pub struct LocalView {
    pub snap: Arc<Snapshot>,
    balancers: RefCell<Vec<Balancer>>,
}

impl LocalView {
    /// A view of `snap`. Balancers of pools whose plan did not change since
    /// `previous` move over, so a reload does not restart round robin at the
    /// first member.
    pub fn new(snap: Arc<Snapshot>, previous: Option<&LocalView>) -> Self {
        let mut old = previous.map(|p| p.balancers.borrow_mut());
        let balancers = snap
            .pools
            .iter()
            .map(|p| {
                let fresh = Balancer::new(Arc::clone(&p.plan));
                match old
                    .as_mut()
                    .and_then(|old| old.iter_mut().find(|b| Arc::ptr_eq(b.plan(), &p.plan)))
                {
                    // The old view is only used by connections of the old
                    // generation still being set up; they get the fresh one.
                    Some(kept) => std::mem::replace(kept, fresh),
                    None => fresh,
                }
            })
            .collect();
        LocalView {
            snap,
            balancers: RefCell::new(balancers),
        }
    }

    /// Picks a member of pool `pool` (index `pool_index`) for `client_ip`,
    /// skipping `tried`. Members backing off after failed connects are used
    /// only if nothing else is available; members at their
    /// `max_connections` are not used (then [`Pick::Full`]).
    pub fn pick(
        &self,
        pool_index: usize,
        pool: &PoolRt,
        client_ip: IpAddr,
        tried: &[usize],
    ) -> Pick {
        let mut balancers = self.balancers.borrow_mut();
        let balancer = &mut balancers[pool_index];
        let mut status = Candidates::new(pool, tried, client_ip, now_ms());
        if let Some(i) = balancer.pick(client_ip, &status).or_else(|| {
            status.ignore_passive = true;
            balancer.pick(client_ip, &status)
        }) {
            return Pick::Member(i);
        }
        if pool.limited && (0..pool.members.len()).any(|i| status.full(i)) {
            Pick::Full
        } else {
            Pick::NoMember
        }
    }
}

/// What [`LocalView::pick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This member (index into the pool's members).
    Member(usize),
    /// Members could take the connection but all are at their limit.
    Full,
    /// No member can take it.
    NoMember,
}

/// The connection limit in force for member `m` of `pool` right now
/// (`max_connections`, ramped during slow start), or `None` without one.
#[inline]
pub fn limit_now(pool: &PoolRt, m: &MemberRt, now_ms: u64) -> Option<u64> {
    let max = m.cfg.max_connections?;
    Some(slow_start::limit(max, ramp(pool, m, now_ms)))
}

/// How far member `m`'s slow start is (see [`slow_start::progress`]).
#[inline]
pub fn ramp(pool: &PoolRt, m: &MemberRt, now_ms: u64) -> Option<u64> {
    if pool.slow_start_ms == 0 {
        return None;
    }
    slow_start::progress(m.state.back_since_ms(), now_ms, pool.slow_start_ms)
}

/// Members a new connection may go to right now.
struct Candidates<'a> {
    pool: &'a PoolRt,
    tried: &'a [usize],
    now_ms: u64,
    ignore_passive: bool,
    /// The client's Maglev hash, for `source_ip` pools in slow start only:
    /// a ramping member admits a growing share of its clients.
    client_hash: Option<u64>,
}

impl<'a> Candidates<'a> {
    fn new(pool: &'a PoolRt, tried: &'a [usize], client_ip: IpAddr, now_ms: u64) -> Self {
        let source_ip = pool.plan.algorithm() == Algorithm::SourceIp;
        Candidates {
            pool,
            tried,
            now_ms,
            ignore_passive: false,
            client_hash: (pool.slow_start_ms > 0 && source_ip)
                .then(|| lbd_select::client_hash(client_ip)),
        }
    }

    /// Usable apart from its connection limit.
    #[inline]
    fn eligible(&self, i: usize) -> bool {
        let m = &self.pool.members[i];
        !self.tried.contains(&i)
            && m.state
                .takes_new_connections(self.now_ms, self.ignore_passive)
            && self
                .client_hash
                .is_none_or(|hash| slow_start::admits(hash, i, ramp(self.pool, m, self.now_ms)))
    }

    /// Below its connection limit (always, without one).
    #[inline]
    fn has_room(&self, i: usize) -> bool {
        if !self.pool.limited {
            return true;
        }
        let m = &self.pool.members[i];
        limit_now(self.pool, m, self.now_ms)
            .is_none_or(|limit| m.state.active.load(Relaxed) < limit)
    }
}

impl MemberStatus for Candidates<'_> {
    #[inline]
    fn usable(&self, i: usize) -> bool {
        self.eligible(i) && self.has_room(i)
    }

    #[inline]
    fn active_connections(&self, i: usize) -> u64 {
        self.pool.members[i].state.active.load(Relaxed)
    }

    #[inline]
    fn weight(&self, i: usize, configured: u32) -> u32 {
        if self.pool.slow_start_ms == 0 {
            return configured;
        }
        slow_start::scaled_weight(
            configured,
            ramp(self.pool, &self.pool.members[i], self.now_ms),
        )
    }

    #[inline]
    fn full(&self, i: usize) -> bool {
        self.pool.limited && self.eligible(i) && !self.has_room(i)
    }
}
