//! Smooth weighted round robin, exactly as nginx does it: per-worker
//! counters, one `lbd_select::swrr::step` per pick (the step is shared with
//! the XDP loader's slot table, see there for the algorithm).
//!
//! Members that are not candidates right now (unusable, weight 0, other tier)
//! neither gain nor lose: their counter is frozen, and the remaining
//! candidates keep their relative proportions.

use super::{MemberStatus, PlanMember};

/// Per-worker round-robin state: one `current` counter per member.
#[derive(Debug)]
pub(super) struct RoundRobin {
    current: Vec<i64>,
}

impl RoundRobin {
    pub(super) fn new(members: usize) -> RoundRobin {
        RoundRobin {
            current: vec![0; members],
        }
    }

    /// One SWRR step over the candidates whose `backup` flag equals `backup`.
    /// Returns `None` (and changes nothing) if that tier has no candidate.
    pub(super) fn pick(
        &mut self,
        members: &[PlanMember],
        backup: bool,
        status: &impl MemberStatus,
    ) -> Option<usize> {
        lbd_select::swrr::step(
            &mut self.current,
            members
                .iter()
                .enumerate()
                .filter(|(i, member)| member.is_candidate(*i, backup, status))
                .map(|(i, member)| (i, i64::from(status.weight(i, member.weight)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Status, CLIENT};
    use super::super::Balancer;
    use lbd_config::Algorithm;

    fn balancer(weights: &[u32]) -> Balancer {
        super::super::test_support::balancer(Algorithm::RoundRobin, weights)
    }

    fn picks(b: &mut Balancer, status: &Status, n: usize) -> Vec<usize> {
        (0..n).map(|_| b.pick(CLIENT, status).unwrap()).collect()
    }

    #[test]
    fn equal_weights_rotate_strictly() {
        let mut b = balancer(&[1, 1, 1]);
        let status = Status::all_usable(3);
        let seq = picks(&mut b, &status, 9);
        assert_eq!(seq, [0, 1, 2, 0, 1, 2, 0, 1, 2]);

        // Same with a larger equal weight.
        let mut b = balancer(&[7, 7, 7, 7]);
        let status = Status::all_usable(4);
        let seq = picks(&mut b, &status, 8);
        assert_eq!(seq, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn weights_1_2_3_give_exact_counts() {
        let mut b = balancer(&[1, 2, 3]);
        let status = Status::all_usable(3);
        let mut counts = [0usize; 3];
        for i in picks(&mut b, &status, 600) {
            counts[i] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
    }

    #[test]
    fn weights_5_1_1_match_nginx_sequence() {
        let mut b = balancer(&[5, 1, 1]);
        let status = Status::all_usable(3);
        let seq = picks(&mut b, &status, 70);
        // nginx's documented sequence for {a=5, b=1, c=1}.
        assert_eq!(&seq[..7], &[0, 0, 1, 0, 2, 0, 0]);
        // The state returns to zero after 7 picks, so the cycle repeats
        // exactly. Within a cycle there are never three `a`s in a row (across
        // the cycle boundary `a a | a a` is inherent to nginx's algorithm).
        for cycle in seq.chunks(7) {
            assert_eq!(cycle, &[0, 0, 1, 0, 2, 0, 0]);
            assert!(!cycle.windows(3).any(|w| w == [0, 0, 0]));
        }
    }

    #[test]
    fn every_window_of_total_weight_is_exact() {
        let weights = [3, 1, 4, 1, 5];
        let total: u32 = weights.iter().sum();
        let mut b = balancer(&weights);
        let status = Status::all_usable(weights.len());
        let seq = picks(&mut b, &status, total as usize * 20);
        for window in seq.chunks(total as usize) {
            let mut counts = [0u32; 5];
            for &i in window {
                counts[i] += 1;
            }
            assert_eq!(counts, weights);
        }
    }

    #[test]
    fn unusable_member_is_skipped_and_proportions_hold() {
        let mut b = balancer(&[1, 2, 3]);
        let mut status = Status::all_usable(3);
        // Warm up so the counters are mid-cycle.
        picks(&mut b, &status, 4);

        status.set_usable(1, false);
        let mut counts = [0usize; 3];
        for i in picks(&mut b, &status, 400) {
            counts[i] += 1;
        }
        assert_eq!(counts[1], 0);
        // 1:3 between the remaining members, allowing one pick of slack for
        // the counters that were mid-cycle when member 1 dropped out.
        assert!(counts[0].abs_diff(100) <= 1, "{counts:?}");
        assert!(counts[2].abs_diff(300) <= 1, "{counts:?}");

        // Back in: everyone is picked again.
        status.set_usable(1, true);
        let seq = picks(&mut b, &status, 12);
        assert!(seq.contains(&1));
    }

    #[test]
    fn weight_zero_is_never_picked() {
        let mut b = balancer(&[2, 0, 1]);
        let status = Status::all_usable(3);
        let seq = picks(&mut b, &status, 300);
        assert!(!seq.contains(&1));
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 200);
    }
}
