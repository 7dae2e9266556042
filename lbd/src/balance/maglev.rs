//! Maglev lookups for `source_ip` pools. The table itself (weighted Maglev,
//! independent of config order), the client hash and where a walk starts
//! and steps are in `lbd_select` (`select/src/maglev.rs`), shared with the
//! XDP fast path, so a client gets the same member from either path.
//!
//! # Lookups and unusable members
//!
//! A lookup reads slot `client_hash % M`. If that member is not usable right
//! now (health check, admin state, already tried on this connection), the
//! lookup walks forward through the table to the first usable member. Only
//! the clients of the unusable member move; everyone else keeps their member.
//!
//! The walk steps by a per-client stride (`1..M`, from the bits of the client
//! hash not used to choose the slot), not by 1. Neighbouring slots of a
//! Maglev table are correlated (each member fills an arithmetic progression),
//! so with stride 1 the slot after each of B's slots is often owned by the
//! same other member: over 200 random 3-member key sets, the clients of an
//! unusable member split anywhere from 6/94 to 50/50 between the other two.
//! With a per-client stride the next slot is effectively random, the split
//! stays within a few percent of the members' shares, and the walk is still
//! deterministic per client. Because `M` is prime, any stride visits every
//! slot within `M` steps.
//!
//! The walk gives up after `M` steps, or as soon as every member in the table
//! has been seen unusable (tracked with per-worker scratch space, so a pick
//! never allocates).
//!
//! The non-backup and backup members get separate tables (built only from
//! members with weight > 0); the backup table is used only when no non-backup
//! member is usable.

use lbd_select::maglev::{self, Entry, TABLE_SIZE};

use super::{MemberStatus, PlanMember};

/// The Maglev tables of one pool: one per tier.
#[derive(Debug)]
pub(super) struct Tables {
    pub(super) primary: Table,
    pub(super) backup: Table,
}

impl Tables {
    pub(super) fn build(members: &[PlanMember]) -> Tables {
        Tables {
            primary: Table::build(members, false),
            backup: Table::build(members, true),
        }
    }
}

/// One Maglev lookup table: `slots()[s]` is an index into the plan's
/// members (built by `lbd-select`, walked here with the members' state).
#[derive(Debug)]
pub(super) struct Table(maglev::Table);

impl Table {
    /// Builds the table for the members with `backup == backup` and
    /// `weight > 0`; slots hold indices into `members`.
    pub(super) fn build(members: &[PlanMember], backup: bool) -> Table {
        let entries: Vec<Entry<'_>> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.backup == backup)
            .map(|(i, m)| Entry {
                id: u32::try_from(i).expect("member index fits in u32"),
                key: m.key.as_bytes(),
                weight: m.weight,
            })
            .collect();
        Table(maglev::Table::build(&entries))
    }

    /// The member for a client with hash `hash`: its own slot's member if
    /// usable, else the next usable member walking forward through the table
    /// with the client's stride.
    /// `None` if the table is empty or every member in it is unusable.
    pub(super) fn lookup(
        &self,
        hash: u64,
        status: &impl MemberStatus,
        seen: &mut Seen,
    ) -> Option<usize> {
        let slots = self.0.slots();
        if slots.is_empty() {
            return None;
        }
        let mut slot = maglev::home_slot(hash);

        // Fast path: the client's own member is usable.
        let first = slots[slot] as usize;
        if status.usable(first) {
            return Some(first);
        }

        // Walk on with the client's stride (M is prime: any stride visits
        // every slot within M steps).
        let stride = maglev::stride(hash);

        seen.reset();
        seen.mark(first);
        let mut unusable = 1;
        for _ in 1..TABLE_SIZE {
            if unusable == self.0.owners() {
                break;
            }
            slot = maglev::next_slot(slot, stride);
            let member = slots[slot] as usize;
            // Already known to be unusable: don't ask again.
            if seen.contains(member) {
                continue;
            }
            if status.usable(member) {
                return Some(member);
            }
            seen.mark(member);
            unusable += 1;
        }
        None
    }

    /// The slots: member indices, empty or [`TABLE_SIZE`] long.
    pub(super) fn slots(&self) -> &[u32] {
        self.0.slots()
    }

    /// Number of slots owned by member `index` (tests and diagnostics).
    #[cfg(test)]
    pub(super) fn slots_of(&self, index: usize) -> usize {
        self.0
            .slots()
            .iter()
            .filter(|&&s| s as usize == index)
            .count()
    }
}

/// Per-worker scratch space for a lookup walk: which members have been seen
/// unusable during the current walk. Stamping with an epoch instead of
/// clearing makes starting a walk O(1).
#[derive(Debug)]
pub(super) struct Seen {
    stamps: Vec<u32>,
    epoch: u32,
}

impl Seen {
    pub(super) fn new(members: usize) -> Seen {
        Seen {
            stamps: vec![0; members],
            epoch: 0,
        }
    }

    /// Starts a new walk: forgets every mark.
    fn reset(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Wrapped after 2^32 walks: old stamps could now collide.
            self.stamps.fill(0);
            self.epoch = 1;
        }
    }

    fn mark(&mut self, member: usize) {
        self.stamps[member] = self.epoch;
    }

    fn contains(&self, member: usize) -> bool {
        self.stamps[member] == self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{members, Status};
    use super::super::{Balancer, PlanMember, PoolPlan};
    use super::*;
    use lbd_config::Algorithm;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    const CLIENTS: u32 = 10_000;

    /// 10 000 distinct client addresses, spread over 10.0.0.0/8.
    fn clients() -> impl Iterator<Item = IpAddr> {
        (0..CLIENTS).map(|i| {
            let n = 0x0a00_0000 | i.wrapping_mul(2_654_435_761) >> 8;
            IpAddr::V4(Ipv4Addr::from(n))
        })
    }

    fn member(key: &str, weight: u32) -> PlanMember {
        PlanMember {
            key: key.to_string(),
            weight,
            backup: false,
        }
    }

    fn keyed(keys: &[&str]) -> Vec<PlanMember> {
        keys.iter().map(|k| member(k, 1)).collect()
    }

    fn balancer(members: Vec<PlanMember>) -> Balancer {
        Balancer::new(Arc::new(PoolPlan::new(Algorithm::SourceIp, members)))
    }

    /// The key of the member each client maps to (keys, not indices, so
    /// plans with different member lists can be compared).
    fn assignment(b: &mut Balancer, status: &Status) -> Vec<String> {
        clients()
            .map(|c| {
                let i = b.pick(c, status).expect("a usable member");
                b.plan().members()[i].key.clone()
            })
            .collect()
    }

    fn share(assign: &[String], key: &str) -> f64 {
        assign.iter().filter(|k| *k == key).count() as f64 / assign.len() as f64
    }

    const ABC: [&str; 3] = ["10.0.0.10:80", "10.0.0.11:80", "10.0.0.12:80"];

    #[test]
    fn same_client_same_member_across_calls_and_plans() {
        let mut first = balancer(keyed(&ABC));
        let mut second = balancer(keyed(&ABC));
        let status = Status::all_usable(3);
        let a = assignment(&mut first, &status);
        assert_eq!(a, assignment(&mut first, &status));
        assert_eq!(a, assignment(&mut second, &status));
    }

    #[test]
    fn table_ignores_config_order() {
        let mut forward = balancer(keyed(&ABC));
        let mut reversed = balancer(keyed(&[ABC[2], ABC[1], ABC[0]]));
        let status = Status::all_usable(3);
        assert_eq!(
            assignment(&mut forward, &status),
            assignment(&mut reversed, &status)
        );
    }

    #[test]
    fn equal_members_share_evenly() {
        let plan = PoolPlan::new(Algorithm::SourceIp, keyed(&ABC));
        let table = &plan.maglev.as_ref().unwrap().primary;
        let slots: Vec<usize> = (0..3).map(|i| table.slots_of(i)).collect();
        assert_eq!(slots.iter().sum::<usize>(), TABLE_SIZE);
        for &s in &slots {
            assert!(s.abs_diff(TABLE_SIZE / 3) <= 1, "{slots:?}");
        }

        let mut b = balancer(keyed(&ABC));
        let assign = assignment(&mut b, &Status::all_usable(3));
        for key in ABC {
            let s = share(&assign, key);
            assert!((s - 1.0 / 3.0).abs() <= 0.03, "{key}: {s}");
        }
    }

    #[test]
    fn weights_1_2_split_one_third_two_thirds() {
        let members = vec![member(ABC[0], 1), member(ABC[1], 2)];
        let plan = PoolPlan::new(Algorithm::SourceIp, members.clone());
        let table = &plan.maglev.as_ref().unwrap().primary;
        assert!(table.slots_of(0).abs_diff(TABLE_SIZE / 3) <= 1);
        assert!(table.slots_of(1).abs_diff(TABLE_SIZE * 2 / 3) <= 1);

        let mut b = balancer(members);
        let assign = assignment(&mut b, &Status::all_usable(2));
        let s = share(&assign, ABC[0]);
        assert!((s - 1.0 / 3.0).abs() <= 0.03, "{s}");
        let s = share(&assign, ABC[1]);
        assert!((s - 2.0 / 3.0).abs() <= 0.03, "{s}");
    }

    #[test]
    fn slot_counts_follow_weights() {
        let weights = [1u32, 3, 10, 256, 0, 7];
        let members: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| member(&format!("192.0.2.{i}:443"), w))
            .collect();
        let table = Table::build(&members, false);
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let expected = TABLE_SIZE as f64 * f64::from(w) / f64::from(total);
            let got = table.slots_of(i) as f64;
            // Within one slot per member: the `ceil` and the partial last
            // round can each shift a handful of slots.
            let slack = weights.len() as f64;
            assert!(
                (got - expected).abs() <= slack,
                "member {i}: {got} vs {expected}"
            );
        }
        assert_eq!(table.slots_of(4), 0, "weight 0 owns no slot");
        assert_eq!(table.0.owners(), 5);
    }

    #[test]
    fn adding_a_member_moves_a_quarter_to_it() {
        let status3 = Status::all_usable(3);
        let status4 = Status::all_usable(4);
        let before = assignment(&mut balancer(keyed(&ABC)), &status3);
        let mut four = ABC.to_vec();
        four.push("10.0.0.13:80");
        let after = assignment(&mut balancer(keyed(&four)), &status4);

        let moved: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        let fraction = moved.len() as f64 / before.len() as f64;
        assert!((fraction - 0.25).abs() <= 0.05, "moved {fraction}");
        let to_new = moved.iter().filter(|&&i| after[i] == four[3]).count();
        assert!(
            to_new as f64 >= 0.95 * moved.len() as f64,
            "{to_new} of {} moved clients went to the new member",
            moved.len()
        );
    }

    #[test]
    fn removing_a_member_moves_only_its_clients() {
        let four = [
            "10.0.0.10:80",
            "10.0.0.11:80",
            "10.0.0.12:80",
            "10.0.0.13:80",
        ];
        let before = assignment(&mut balancer(keyed(&four)), &Status::all_usable(4));
        let after = assignment(&mut balancer(keyed(&four[..3])), &Status::all_usable(3));

        let mut others_moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b == four[3] {
                assert_ne!(a, four[3]);
            } else if a != b {
                others_moved += 1;
            }
        }
        // Maglev is near-minimal, not perfectly minimal, on a rebuild: allow
        // a sliver of collateral movement.
        let fraction = others_moved as f64 / before.len() as f64;
        assert!(fraction <= 0.02, "{fraction} of other clients moved");
    }

    #[test]
    fn unusable_member_moves_only_its_clients_and_spreads_them() {
        let mut b = balancer(keyed(&ABC));
        let mut status = Status::all_usable(3);
        let before = assignment(&mut b, &status);
        status.set_usable(1, false);
        let after = assignment(&mut b, &status);

        let (mut to_a, mut to_c) = (0, 0);
        for (was, now) in before.iter().zip(&after) {
            if was == ABC[1] {
                assert_ne!(now, ABC[1]);
                if now == ABC[0] {
                    to_a += 1;
                } else {
                    to_c += 1;
                }
            } else {
                assert_eq!(was, now, "a client of a usable member moved");
            }
        }
        // Spread roughly evenly over the two remaining members.
        let moved = f64::from(to_a + to_c);
        assert!(
            (f64::from(to_a) / moved - 0.5).abs() <= 0.05,
            "{to_a} vs {to_c}"
        );

        // Usable again: everyone is back where they were.
        status.set_usable(1, true);
        assert_eq!(before, assignment(&mut b, &status));
    }

    #[test]
    fn all_unusable_gives_none_quickly() {
        let mut b = balancer(members(&[1, 1, 1], &[]));
        let status = Status::none_usable(3);
        for c in clients().take(100) {
            assert_eq!(b.pick(c, &status), None);
        }
        // Stops after seeing the 3 members, not after 65 537 slots.
        assert!(
            status.usable_calls() <= 100 * 3,
            "{}",
            status.usable_calls()
        );
    }

    #[test]
    fn walk_finds_the_single_usable_member() {
        let mut b = balancer(members(&[1; 20], &[]));
        let mut status = Status::none_usable(20);
        status.set_usable(13, true);
        for c in clients().take(200) {
            assert_eq!(b.pick(c, &status), Some(13));
        }
    }

    #[test]
    fn hundred_members_build_and_cover() {
        let members: Vec<_> = (0..100)
            .map(|i| member(&format!("10.1.{}.{}:8080", i / 256, i % 256), 1 + i % 5))
            .collect();
        let plan = PoolPlan::new(Algorithm::SourceIp, members);
        let table = &plan.maglev.as_ref().unwrap().primary;
        assert_eq!(table.0.owners(), 100);
        assert_eq!(
            (0..100).map(|i| table.slots_of(i)).sum::<usize>(),
            TABLE_SIZE
        );
    }

    #[test]
    fn ipv4_mapped_and_plain_ipv4_agree() {
        let mut b = balancer(keyed(&ABC));
        let status = Status::all_usable(3);
        for c in clients().take(1000) {
            let IpAddr::V4(v4) = c else { unreachable!() };
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(b.pick(c, &status), b.pick(mapped, &status));
        }
    }

    #[test]
    fn ipv6_clients_are_hashed_too() {
        let mut b = balancer(keyed(&ABC));
        let status = Status::all_usable(3);
        let mut seen = [false; 3];
        for i in 0..300u128 {
            let ip = IpAddr::V6((0x2001_0db8_u128 << 96 | i).into());
            seen[b.pick(ip, &status).unwrap()] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
