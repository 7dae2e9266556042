//! Member selection: which pool member gets a new connection.
//!
//! The work is split in two halves with different lifetimes:
//!
//! * [`PoolPlan`] is built once per config snapshot from the pool's
//!   algorithm and members ([`PlanMember`]). It holds everything that only
//!   depends on the config, notably the Maglev lookup tables for
//!   `source_ip`, and is shared read-only (`Arc`) by all worker threads.
//! * [`Balancer`] is the per-worker, per-pool mutable state (round-robin
//!   counters, least-connections rotation cursor, Maglev walk scratch). Each
//!   worker owns one per pool and calls [`Balancer::pick`] for every new
//!   connection; `pick` never allocates and never locks.
//!
//! Live facts (health, admin state, members already tried for this
//! connection, active connection counts) are not part of either: the caller
//! passes them to `pick` through the [`MemberStatus`] trait.
//!
//! # Candidates and backups
//!
//! A member is a *candidate* iff its weight is > 0 and `status.usable(i)`.
//! `pick` chooses among the non-backup candidates; only if there are none
//! does it choose among the backup candidates, with the same algorithm. As
//! soon as a non-backup member is a candidate again, backups stop receiving
//! new connections.
//!
//! # Algorithms
//!
//! * [`Algorithm::RoundRobin`]: nginx's smooth weighted round robin
//!   (`round_robin.rs`, the step is `lbd_select::swrr`).
//! * [`Algorithm::LeastConnections`]: fewest active connections per unit of
//!   weight, ties in rotation (`least_conn.rs`).
//! * [`Algorithm::SourceIp`]: weighted Maglev consistent hashing of the
//!   client address (`maglev.rs`; the hash and the table are in
//!   `lbd_select`, shared with the XDP fast path).

mod least_conn;
mod maglev;
mod round_robin;
pub mod slow_start;

use std::{net::IpAddr, sync::Arc};

use lbd_config::Algorithm;

use least_conn::LeastConnections;
use maglev::{Seen, Tables};
use round_robin::RoundRobin;

/// What a balancer knows about one member, fixed for one config snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanMember {
    /// Stable identity across reloads, e.g. "10.0.0.10:31320". Maglev
    /// permutations are derived from it, never from the index.
    pub key: String,
    /// 0..=256; 0 = never picked.
    pub weight: u32,
    /// Only picked when no non-backup member is a candidate.
    pub backup: bool,
}

impl PlanMember {
    /// Whether this member (at `index`) may take a new connection in the
    /// `backup` tier: the one definition of a *candidate*.
    #[inline]
    pub(super) fn is_candidate(
        &self,
        index: usize,
        backup: bool,
        status: &impl MemberStatus,
    ) -> bool {
        self.backup == backup && self.weight > 0 && status.usable(index)
    }
}

/// Built once per config snapshot (may allocate, e.g. the Maglev tables) and
/// shared read-only by all worker threads.
#[derive(Debug)]
pub struct PoolPlan {
    algorithm: Algorithm,
    members: Vec<PlanMember>,
    /// `Some` exactly when `algorithm` is [`Algorithm::SourceIp`].
    maglev: Option<Tables>,
}

impl PoolPlan {
    /// Builds the plan. For `source_ip` this builds two 65 537-slot Maglev
    /// tables (non-backup and backup members), which takes a few
    /// milliseconds; do it off the hot path.
    pub fn new(algorithm: Algorithm, members: Vec<PlanMember>) -> PoolPlan {
        let maglev = match algorithm {
            Algorithm::SourceIp => Some(Tables::build(&members)),
            Algorithm::RoundRobin | Algorithm::LeastConnections => None,
        };
        PoolPlan {
            algorithm,
            members,
            maglev,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// For `source_ip` pools, the Maglev table of the non-backup members
    /// (of the backups if no non-backup member has weight > 0) as member
    /// indices: what the XDP fast path looks clients up in, so a client
    /// gets the same member from either path. `None` for other algorithms,
    /// an empty table, or more than 65 535 members.
    pub fn maglev_slots(&self) -> Option<Vec<u16>> {
        let tables = self.maglev.as_ref()?;
        let table = if tables.primary.slots().is_empty() {
            &tables.backup
        } else {
            &tables.primary
        };
        let slots = table.slots();
        if slots.is_empty() {
            return None;
        }
        slots.iter().map(|&s| u16::try_from(s).ok()).collect()
    }

    /// The members, in config order. Indices returned by
    /// [`Balancer::pick`] and passed to [`MemberStatus`] index this slice.
    pub fn members(&self) -> &[PlanMember] {
        &self.members
    }
}

/// Live per-member facts the caller supplies at pick time (health, admin
/// state, members already tried on this connection, active connection
/// counts). `index` is an index into [`PoolPlan::members`].
pub trait MemberStatus {
    /// May this member get the new connection (healthy, enabled, not yet
    /// tried for this connection)?
    fn usable(&self, index: usize) -> bool;
    /// Connections currently open to this member (least connections only).
    fn active_connections(&self, index: usize) -> u64;
    /// The weight round robin and least connections use for this member,
    /// given its `configured` weight: the same by default; a pool with
    /// slow start scales all weights and ramps those of returning members
    /// (see [`slow_start`]). Must be > 0 when `configured` is.
    #[inline]
    fn weight(&self, _index: usize, configured: u32) -> u32 {
        configured
    }
    /// Whether this member would be usable but is at its connection limit.
    /// A full non-backup member keeps the backups out, as HAProxy does
    /// (backups serve when no active server is up, not when they are
    /// busy): the connection waits for a slot instead.
    #[inline]
    fn full(&self, _index: usize) -> bool {
        false
    }
}

/// Whether the backup tier may be asked: no non-backup member is merely
/// full (called only when no non-backup member could be picked).
fn backups_may_serve(members: &[PlanMember], status: &impl MemberStatus) -> bool {
    !members
        .iter()
        .enumerate()
        .any(|(i, m)| !m.backup && m.weight > 0 && status.full(i))
}

/// Per-worker, per-pool mutable selection state (one per thread, never
/// shared).
#[derive(Debug)]
pub struct Balancer {
    plan: Arc<PoolPlan>,
    state: State,
}

/// The algorithm-specific part of a [`Balancer`].
#[derive(Debug)]
enum State {
    RoundRobin(RoundRobin),
    LeastConnections(LeastConnections),
    SourceIp(Seen),
}

impl Balancer {
    /// Fresh selection state for `plan` (sized to its member count). On a
    /// config reload, build a new `Balancer` for the new plan.
    pub fn new(plan: Arc<PoolPlan>) -> Balancer {
        let n = plan.members.len();
        let state = match plan.algorithm {
            Algorithm::RoundRobin => State::RoundRobin(RoundRobin::new(n)),
            Algorithm::LeastConnections => State::LeastConnections(LeastConnections::new()),
            Algorithm::SourceIp => State::SourceIp(Seen::new(n)),
        };
        Balancer { plan, state }
    }

    pub fn plan(&self) -> &Arc<PoolPlan> {
        &self.plan
    }

    /// Index into `plan.members()` of the member for a new connection from
    /// `client`, or `None` if no member is a candidate. Does not allocate.
    ///
    /// To retry after a failed connect, call again with a `status` that
    /// reports the failed member as not usable.
    pub fn pick(&mut self, client: IpAddr, status: &impl MemberStatus) -> Option<usize> {
        let members = &self.plan.members[..];
        match &mut self.state {
            State::RoundRobin(rr) => rr.pick(members, false, status).or_else(|| {
                backups_may_serve(members, status)
                    .then(|| rr.pick(members, true, status))
                    .flatten()
            }),
            State::LeastConnections(lc) => lc.pick(members, false, status).or_else(|| {
                backups_may_serve(members, status)
                    .then(|| lc.pick(members, true, status))
                    .flatten()
            }),
            State::SourceIp(seen) => {
                let tables = self.plan.maglev.as_ref()?;
                let hash = lbd_select::client_hash(client);
                tables.primary.lookup(hash, status, seen).or_else(|| {
                    backups_may_serve(members, status)
                        .then(|| tables.backup.lookup(hash, status, seen))
                        .flatten()
                })
            }
        }
    }
}

/// Helpers shared by the unit tests of all balance modules.
#[cfg(test)]
mod test_support {
    use super::{Balancer, MemberStatus, PlanMember, PoolPlan};
    use lbd_config::Algorithm;
    use std::cell::Cell;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    /// The client address of tests where it does not matter.
    pub(super) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    /// A balancer over non-backup members with these weights.
    pub(super) fn balancer(algorithm: Algorithm, weights: &[u32]) -> Balancer {
        Balancer::new(Arc::new(PoolPlan::new(algorithm, members(weights, &[]))))
    }

    /// Members keyed "10.0.0.<i>:80" with the given weights; indices listed
    /// in `backups` are backup members.
    pub(super) fn members(weights: &[u32], backups: &[usize]) -> Vec<PlanMember> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| PlanMember {
                key: format!("10.0.0.{i}:80"),
                weight,
                backup: backups.contains(&i),
            })
            .collect()
    }

    /// A settable [`MemberStatus`] that also counts `usable` calls.
    pub(super) struct Status {
        usable: Vec<bool>,
        active: Vec<u64>,
        /// Usable but at the connection limit (then `usable` is false).
        full: Vec<bool>,
        /// Weights that replace the configured ones (slow start).
        weights: Vec<Option<u32>>,
        calls: Cell<usize>,
    }

    impl Status {
        pub(super) fn all_usable(n: usize) -> Status {
            Status {
                usable: vec![true; n],
                active: vec![0; n],
                full: vec![false; n],
                weights: vec![None; n],
                calls: Cell::new(0),
            }
        }

        pub(super) fn none_usable(n: usize) -> Status {
            Status {
                usable: vec![false; n],
                ..Status::all_usable(n)
            }
        }

        pub(super) fn set_usable(&mut self, i: usize, usable: bool) {
            self.usable[i] = usable;
        }

        pub(super) fn set_active(&mut self, i: usize, active: u64) {
            self.active[i] = active;
        }

        /// Member `i` is at its connection limit.
        pub(super) fn set_full(&mut self, i: usize) {
            self.usable[i] = false;
            self.full[i] = true;
        }

        pub(super) fn set_weight(&mut self, i: usize, weight: u32) {
            self.weights[i] = Some(weight);
        }

        pub(super) fn usable_calls(&self) -> usize {
            self.calls.get()
        }
    }

    impl MemberStatus for Status {
        fn usable(&self, index: usize) -> bool {
            self.calls.set(self.calls.get() + 1);
            self.usable[index]
        }

        fn active_connections(&self, index: usize) -> u64 {
            self.active[index]
        }

        fn weight(&self, index: usize, configured: u32) -> u32 {
            self.weights[index].unwrap_or(configured)
        }

        fn full(&self, index: usize) -> bool {
            self.full[index]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{members, Status};
    use super::*;
    use std::net::Ipv4Addr;

    const ALL: [Algorithm; 3] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::SourceIp,
    ];

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23));

    fn balancer(algorithm: Algorithm, weights: &[u32], backups: &[usize]) -> Balancer {
        let plan = PoolPlan::new(algorithm, members(weights, backups));
        Balancer::new(Arc::new(plan))
    }

    #[test]
    fn plan_and_balancer_are_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PoolPlan>();
        send_sync::<Arc<PoolPlan>>();
        fn send<T: Send>() {}
        send::<Balancer>();
    }

    #[test]
    fn plan_accessors() {
        let ms = members(&[1, 2], &[1]);
        let plan = Arc::new(PoolPlan::new(Algorithm::LeastConnections, ms.clone()));
        assert_eq!(plan.algorithm(), Algorithm::LeastConnections);
        assert_eq!(plan.members(), &ms[..]);
        let b = Balancer::new(plan.clone());
        assert!(Arc::ptr_eq(b.plan(), &plan));
    }

    #[test]
    fn none_when_no_members() {
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[], &[]);
            assert_eq!(
                b.pick(CLIENT, &Status::all_usable(0)),
                None,
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn none_when_nothing_usable() {
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[1, 2, 3, 1], &[3]);
            assert_eq!(
                b.pick(CLIENT, &Status::none_usable(4)),
                None,
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn none_when_all_weights_zero() {
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[0, 0, 0], &[2]);
            assert_eq!(
                b.pick(CLIENT, &Status::all_usable(3)),
                None,
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn weight_zero_never_picked() {
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[0, 1, 0, 1], &[]);
            let status = Status::all_usable(4);
            for i in 0..500u32 {
                let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919));
                let chosen = b.pick(client, &status).unwrap();
                assert!(chosen == 1 || chosen == 3, "{algorithm:?} picked {chosen}");
            }
        }
    }

    #[test]
    fn backup_only_when_no_primary_candidate() {
        for algorithm in ALL {
            // Members 0, 1 primary; 2, 3 backup.
            let mut b = balancer(algorithm, &[1, 1, 1, 1], &[2, 3]);
            let mut status = Status::all_usable(4);
            let pick = |b: &mut Balancer, status: &Status| {
                (0..50u32)
                    .map(|i| {
                        let client = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i));
                        b.pick(client, status).unwrap()
                    })
                    .collect::<Vec<_>>()
            };

            let picked = pick(&mut b, &status);
            assert!(picked.iter().all(|&i| i < 2), "{algorithm:?}: {picked:?}");

            // One primary down: still primaries only.
            status.set_usable(0, false);
            let picked = pick(&mut b, &status);
            assert!(picked.iter().all(|&i| i == 1), "{algorithm:?}: {picked:?}");

            // Both primaries down: backups, and both backups are used.
            status.set_usable(1, false);
            let picked = pick(&mut b, &status);
            assert!(picked.iter().all(|&i| i >= 2), "{algorithm:?}: {picked:?}");
            assert!(picked.contains(&2) && picked.contains(&3), "{algorithm:?}");

            // A primary back: backups stop immediately.
            status.set_usable(0, true);
            let picked = pick(&mut b, &status);
            assert!(picked.iter().all(|&i| i == 0), "{algorithm:?}: {picked:?}");
        }
    }

    #[test]
    fn full_primaries_keep_backups_out() {
        // HAProxy: backups serve when no active server is up, not when the
        // active servers are busy; the connection waits for a slot.
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[1, 1, 1], &[2]);
            let mut status = Status::all_usable(3);
            status.set_full(0);
            assert_eq!(b.pick(CLIENT, &status), Some(1), "{algorithm:?}");
            status.set_full(1);
            assert_eq!(b.pick(CLIENT, &status), None, "{algorithm:?}");
            let mut down = Status::all_usable(3);
            down.set_usable(0, false);
            down.set_usable(1, false);
            assert_eq!(
                b.pick(CLIENT, &down),
                Some(2),
                "{algorithm:?}: down, not full"
            );
        }
    }

    #[test]
    fn ramped_weights_steer_round_robin_and_least_connections() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastConnections] {
            let mut b = balancer(algorithm, &[1, 1], &[]);
            let mut status = Status::all_usable(2);
            // Slow start: member 0 at 1/1024 of member 1's (scaled) weight.
            status.set_weight(0, 1);
            status.set_weight(1, 1024);
            status.set_active(0, 1);
            status.set_active(1, 1);
            let picks: Vec<usize> = (0..100).map(|_| b.pick(CLIENT, &status).unwrap()).collect();
            let to_ramping = picks.iter().filter(|&&i| i == 0).count();
            assert!(to_ramping <= 1, "{algorithm:?}: {to_ramping} of 100");
        }
    }

    #[test]
    fn primary_with_weight_zero_does_not_block_backups() {
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[0, 1], &[1]);
            assert_eq!(
                b.pick(CLIENT, &Status::all_usable(2)),
                Some(1),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn retry_excluding_tried_member_picks_another() {
        // The data plane retries by reporting the failed member unusable.
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[1, 1, 1], &[]);
            let mut status = Status::all_usable(3);
            let first = b.pick(CLIENT, &status).unwrap();
            status.set_usable(first, false);
            let second = b.pick(CLIENT, &status).unwrap();
            assert_ne!(first, second, "{algorithm:?}");
        }
    }

    #[test]
    fn pick_does_not_allocate() {
        for algorithm in ALL {
            let mut b = balancer(algorithm, &[3, 1, 2, 1, 1], &[3, 4]);
            let mut status = Status::all_usable(5);
            status.set_usable(0, false);
            status.set_active(1, 4);
            // Exercise every path: primaries, walk past an unusable member,
            // fall back to backups, nothing usable.
            let none = Status::none_usable(5);
            let before = alloc_count::get();
            for i in 0..1000u32 {
                let client = IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)));
                std::hint::black_box(b.pick(client, &status));
            }
            status.set_usable(1, false);
            status.set_usable(2, false);
            for i in 0..1000u32 {
                let client = IpAddr::V4(Ipv4Addr::from(i));
                std::hint::black_box(b.pick(client, &status));
            }
            std::hint::black_box(b.pick(CLIENT, &none));
            assert_eq!(alloc_count::get(), before, "{algorithm:?} allocated");
        }
    }

    /// Counts heap allocations made by the current thread, so the no-alloc
    /// test is not disturbed by tests running in parallel.
    mod alloc_count {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static COUNT: Cell<u64> = const { Cell::new(0) };
        }

        pub(super) fn get() -> u64 {
            COUNT.with(Cell::get)
        }

        struct Counting;

        // SAFETY: delegates every call unchanged to the system allocator.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                // SAFETY: same contract as our caller's.
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: same contract as our caller's.
                unsafe { System.dealloc(ptr, layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                // SAFETY: same contract as our caller's.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Counting = Counting;
    }
}
