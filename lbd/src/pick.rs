//! Picking a member for a new connection, in one place: which members may
//! take it right now (`Candidates`: up, ready, not backing off after
//! failed connects, not tried already by this connection) and which of them
//! the pool's algorithm chooses ([`LocalView::pick`], with this worker's own
//! balancer state).
//!
//! Runs per connection on the worker threads: no locks, no allocation.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::balance::{Balancer, MemberStatus};
use crate::snapshot::{MemberRt, Snapshot};
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

    /// Picks a member of pool `pool` for `client_ip`, skipping `tried`.
    /// Members backing off after failed connects are used only if nothing
    /// else is available.
    pub fn pick(
        &self,
        pool: usize,
        client_ip: IpAddr,
        members: &[MemberRt],
        tried: &[usize],
    ) -> Option<usize> {
        let mut balancers = self.balancers.borrow_mut();
        let balancer = &mut balancers[pool];
        let mut status = Candidates {
            members,
            tried,
            now_ms: now_ms(),
            ignore_passive: false,
        };
        balancer.pick(client_ip, &status).or_else(|| {
            status.ignore_passive = true;
            balancer.pick(client_ip, &status)
        })
    }
}

/// Members a new connection may go to right now.
struct Candidates<'a> {
    members: &'a [MemberRt],
    tried: &'a [usize],
    now_ms: u64,
    ignore_passive: bool,
}

impl MemberStatus for Candidates<'_> {
    #[inline]
    fn usable(&self, i: usize) -> bool {
        let m = &self.members[i];
        !self.tried.contains(&i)
            && m.state
                .takes_new_connections(self.now_ms, self.ignore_passive)
    }

    #[inline]
    fn active_connections(&self, i: usize) -> u64 {
        self.members[i].state.active.load(Relaxed)
    }
}
