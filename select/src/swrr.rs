//! Smooth weighted round robin, exactly as nginx does it: one step.
//!
//! Every member carries a `current` counter. On each pick:
//!
//! 1. every candidate's `current` grows by its weight,
//! 2. the candidate with the largest `current` wins (ties: the first
//!    candidate, i.e. the lowest index),
//! 3. the winner's `current` shrinks by the sum of all candidates' weights.
//!
//! Over any window of `sum(weights)` picks with a fixed candidate set, each
//! member is chosen exactly `weight` times, and the picks are spread out
//! ("smooth"): weights 5,1,1 give `a a b a c a a`, never a burst of five `a`s.
//! Members that are not candidates in a step neither gain nor lose.
//!
//! lbd's proxy runs the step live per connection (per-worker counters,
//! candidates = usable members); the XDP loader runs it `sum(weights)` times
//! up front to lay out the kernel's round-robin slot table.

/// One step over `candidates`, `(index into current, weight)` pairs in
/// ascending index order: returns the chosen index, or `None` (changing
/// nothing) if there is no candidate. Never allocates.
///
/// Panics if an index is out of range of `current`.
#[inline]
pub fn step(
    current: &mut [i64],
    candidates: impl IntoIterator<Item = (usize, i64)>,
) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for (i, weight) in candidates {
        current[i] += weight;
        total += weight;
        // Strictly greater: on a tie the earlier (lower) index stays.
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let chosen = best?;
    current[chosen] -= total;
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(weights: &[i64], n: usize) -> Vec<usize> {
        let mut current = vec![0; weights.len()];
        (0..n)
            .map(|_| step(&mut current, weights.iter().copied().enumerate()).unwrap())
            .collect()
    }

    #[test]
    fn nginx_sequence() {
        assert_eq!(
            run(&[5, 1, 1], 14),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
        assert_eq!(run(&[1, 1, 1], 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn windows_are_exact_and_counters_return_to_zero() {
        let weights = [3, 1, 4, 1, 5];
        let total = weights.iter().sum::<i64>() as usize;
        let mut current = vec![0; weights.len()];
        for _ in 0..10 {
            let mut counts = [0i64; 5];
            for _ in 0..total {
                counts[step(&mut current, weights.iter().copied().enumerate()).unwrap()] += 1;
            }
            assert_eq!(counts, weights);
            assert!(current.iter().all(|&c| c == 0), "{current:?}");
        }
    }

    #[test]
    fn non_candidates_are_frozen_and_no_candidate_is_none() {
        let mut current = vec![0, 7, 0];
        assert_eq!(step(&mut current, [(0, 1), (2, 1)]), Some(0));
        assert_eq!(current, [-1, 7, 1]);
        assert_eq!(step(&mut current, []), None);
        assert_eq!(current, [-1, 7, 1]);
    }
}
