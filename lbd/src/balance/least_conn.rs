//! Least connections, relative to weight.
//!
//! The winner is the candidate with the smallest `active / weight`. Ratios are
//! compared by cross-multiplying (`a1 * w2 < a2 * w1`) in `u128`, so there is
//! no rounding and no overflow.
//!
//! Ties are broken in rotation: the scan starts just after the previously
//! chosen member and only a *strictly* better candidate replaces the first
//! one found. With all members idle, consecutive picks therefore walk round
//! the pool like plain round robin instead of piling onto member 0 (which
//! matters: many connections can arrive before any of them is counted).

use super::{MemberStatus, PlanMember};

/// Per-worker least-connections state: where the next scan starts.
#[derive(Debug, Default)]
pub(super) struct LeastConnections {
    next: usize,
}

impl LeastConnections {
    pub(super) fn new() -> LeastConnections {
        LeastConnections::default()
    }

    /// Pick among the candidates whose `backup` flag equals `backup`.
    /// Returns `None` (and changes nothing) if that tier has no candidate.
    pub(super) fn pick(
        &mut self,
        members: &[PlanMember],
        backup: bool,
        status: &impl MemberStatus,
    ) -> Option<usize> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;

        // (index, active connections, weight) of the best candidate so far.
        let mut best: Option<(usize, u64, u32)> = None;
        for step in 0..n {
            let i = (start + step) % n;
            let member = &members[i];
            if !member.is_candidate(i, backup, status) {
                continue;
            }
            let active = status.active_connections(i);
            let weight = status.weight(i, member.weight);
            let better = match best {
                None => true,
                // active / weight < best_active / best_weight
                Some((_, best_active, best_weight)) => {
                    u128::from(active) * u128::from(best_weight)
                        < u128::from(best_active) * u128::from(weight)
                }
            };
            if better {
                best = Some((i, active, weight));
            }
        }

        let (chosen, _, _) = best?;
        self.next = chosen + 1;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Status, CLIENT};
    use super::super::Balancer;
    use lbd_config::Algorithm;

    fn balancer(weights: &[u32]) -> Balancer {
        super::super::test_support::balancer(Algorithm::LeastConnections, weights)
    }

    #[test]
    fn prefers_fewest_connections() {
        let mut b = balancer(&[1, 1, 1]);
        let mut status = Status::all_usable(3);
        status.set_active(0, 5);
        status.set_active(1, 2);
        status.set_active(2, 9);
        for _ in 0..5 {
            assert_eq!(b.pick(CLIENT, &status), Some(1));
        }
        status.set_active(2, 1);
        assert_eq!(b.pick(CLIENT, &status), Some(2));
    }

    #[test]
    fn respects_weight() {
        // 2 connections on weight 2 equal 1 connection on weight 1: a tie,
        // so both get picked as the rotation moves on.
        let mut b = balancer(&[2, 1]);
        let mut status = Status::all_usable(2);
        status.set_active(0, 2);
        status.set_active(1, 1);
        let seq: Vec<_> = (0..4).map(|_| b.pick(CLIENT, &status).unwrap()).collect();
        assert_eq!(seq, [0, 1, 0, 1]);

        // 3 on weight 2 (1.5 each) loses to 1 on weight 1.
        status.set_active(0, 3);
        assert_eq!(b.pick(CLIENT, &status), Some(1));
        assert_eq!(b.pick(CLIENT, &status), Some(1));

        // 3 on weight 2 (1.5) beats 2 on weight 1.
        status.set_active(1, 2);
        assert_eq!(b.pick(CLIENT, &status), Some(0));
        assert_eq!(b.pick(CLIENT, &status), Some(0));
    }

    #[test]
    fn ties_rotate() {
        let mut b = balancer(&[1, 1, 1, 1]);
        let status = Status::all_usable(4);
        let seq: Vec<_> = (0..8).map(|_| b.pick(CLIENT, &status).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn ties_rotate_only_among_the_least_loaded() {
        let mut b = balancer(&[1, 1, 1, 1]);
        let mut status = Status::all_usable(4);
        status.set_active(1, 4);
        let seq: Vec<_> = (0..6).map(|_| b.pick(CLIENT, &status).unwrap()).collect();
        assert_eq!(seq, [0, 2, 3, 0, 2, 3]);
    }

    #[test]
    fn skips_unusable_and_weight_zero() {
        let mut b = balancer(&[1, 0, 1]);
        let mut status = Status::all_usable(3);
        status.set_active(0, 10);
        status.set_active(2, 10);
        // Member 1 is idle but has weight 0; member 2 is then made unusable.
        assert_ne!(b.pick(CLIENT, &status), Some(1));
        status.set_usable(2, false);
        for _ in 0..4 {
            assert_eq!(b.pick(CLIENT, &status), Some(0));
        }
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let mut b = balancer(&[256, 1]);
        let mut status = Status::all_usable(2);
        status.set_active(0, u64::MAX);
        status.set_active(1, u64::MAX / 2);
        // MAX/256 < (MAX/2)/1
        assert_eq!(b.pick(CLIENT, &status), Some(0));
    }
}
