//! Slow start (HAProxy `slowstart`): for `slow_start` after a member comes
//! back up (health checks bring it up, or it leaves maint), its weight and
//! its `max_connections` grow linearly from about nothing to their
//! configured values, so a member that just restarted (cold caches, JIT,
//! connection pools) is not hit with its full share at once. Never at lbd
//! start or for a member added by a reload, as in HAProxy.
//!
//! Pure arithmetic on the ramp's progress; the caller (the pick path)
//! supplies the time the member came back and the clock. Nothing here
//! allocates or locks.
//!
//! * round robin and least connections: the weights of a pool with
//!   `slow_start` are scaled by [`SCALE`] (proportions are unchanged), so a
//!   ramping member of weight 1 still ramps in 1/1024 steps;
//! * `source_ip` (Maglev): the table is fixed per config, so the ramp
//!   admits a growing, stable set of the member's clients instead
//!   ([`admits`]): a client whose hash falls below the progress keeps the
//!   member, the others walk on to the next member of the table, as they
//!   would for an unusable member. HAProxy's consistent hash changes the
//!   server's share of the ring the same way.

/// A pool with `slow_start` weighs its members in these units.
pub const SCALE: u64 = 1024;

/// How far member's ramp is, in 1/[`SCALE`] units (`0..SCALE`), or `None`
/// when it is not ramping: never came back (`back_since_ms == 0`),
/// `duration_ms == 0` (no slow start), or the ramp is over.
#[inline]
pub fn progress(back_since_ms: u64, now_ms: u64, duration_ms: u64) -> Option<u64> {
    if back_since_ms == 0 || duration_ms == 0 {
        return None;
    }
    let elapsed = now_ms.saturating_sub(back_since_ms);
    (elapsed < duration_ms).then(|| elapsed * SCALE / duration_ms)
}

/// The weight a pick uses, in 1/[`SCALE`] units: the configured weight,
/// or for a ramping member its share of it, at least 1 (HAProxy ramps
/// "from 1 to 100%"). A weight of 0 stays 0.
#[inline]
pub fn scaled_weight(weight: u32, progress: Option<u64>) -> u32 {
    let full = u64::from(weight) * SCALE;
    let w = match progress {
        None => full,
        Some(p) if weight > 0 => (full * p / SCALE).max(1),
        Some(_) => 0,
    };
    u32::try_from(w).unwrap_or(u32::MAX)
}

/// The weight shown in stats (HAProxy's `weight` column during
/// slowstart): the ramped weight rounded up, at least 1.
pub fn shown_weight(weight: u32, progress: Option<u64>) -> u32 {
    match progress {
        None => weight,
        Some(p) => {
            let w = (u64::from(weight) * p).div_ceil(SCALE).max(1);
            u32::try_from(w).unwrap_or(weight).min(weight)
        }
    }
}

/// The connection limit in force: `max_connections`, or for a ramping
/// member its share of it, at least 1 (HAProxy: "from 1 to 100%").
#[inline]
pub fn limit(max_connections: u32, progress: Option<u64>) -> u64 {
    match progress {
        None => u64::from(max_connections),
        Some(p) => (u64::from(max_connections) * p).div_ceil(SCALE).max(1),
    }
}

/// For `source_ip` pools: whether the ramping member `member` takes the
/// client with Maglev hash `client_hash` at this `progress`. A client's
/// threshold is fixed, so as the progress grows the member keeps the
/// clients it admitted and adds others; at the end it has all of them.
#[inline]
pub fn admits(client_hash: u64, member: usize, progress: Option<u64>) -> bool {
    match progress {
        None => true,
        Some(p) => {
            mix(client_hash ^ (member as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % SCALE < p
        }
    }
}

/// splitmix64's finaliser: spreads the bits, so the admission threshold
/// does not follow the bits that chose the client's Maglev slot.
#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_runs_over_the_duration_only_after_a_return() {
        assert_eq!(progress(0, 5_000, 10_000), None, "never came back");
        assert_eq!(progress(1_000, 5_000, 0), None, "no slow start");
        assert_eq!(progress(1_000, 1_000, 10_000), Some(0));
        assert_eq!(progress(1_000, 6_000, 10_000), Some(SCALE / 2));
        assert_eq!(progress(1_000, 10_999, 10_000), Some(SCALE - 1));
        assert_eq!(progress(1_000, 11_000, 10_000), None, "over");
        assert_eq!(progress(9_000, 1_000, 10_000), Some(0), "clock skew");
    }

    #[test]
    fn weights_ramp_from_one_unit_to_full() {
        assert_eq!(scaled_weight(3, None), 3 * 1024);
        assert_eq!(scaled_weight(3, Some(0)), 1);
        assert_eq!(scaled_weight(1, Some(512)), 512);
        assert_eq!(scaled_weight(256, Some(1023)), 256 * 1023);
        assert_eq!(scaled_weight(0, Some(512)), 0, "weight 0 stays out");
        assert_eq!(shown_weight(10, None), 10);
        assert_eq!(shown_weight(10, Some(0)), 1);
        assert_eq!(shown_weight(10, Some(512)), 5);
        assert_eq!(shown_weight(10, Some(1023)), 10);
        assert_eq!(shown_weight(0, Some(10)), 0);
    }

    #[test]
    fn limits_ramp_from_one() {
        assert_eq!(limit(100, None), 100);
        assert_eq!(limit(100, Some(0)), 1);
        assert_eq!(limit(100, Some(512)), 50);
        assert_eq!(limit(2, Some(1)), 1);
    }

    #[test]
    fn admission_grows_with_progress_and_keeps_admitted_clients() {
        let clients: Vec<u64> = (0..10_000u64).map(|i| mix(i + 1)).collect();
        let mut before: Vec<bool> = vec![false; clients.len()];
        for p in [0, 128, 256, 512, 768, 1023] {
            let now: Vec<bool> = clients.iter().map(|&h| admits(h, 2, Some(p))).collect();
            let share = now.iter().filter(|&&a| a).count() as f64 / clients.len() as f64;
            let want = p as f64 / SCALE as f64;
            assert!((share - want).abs() < 0.03, "progress {p}: share {share}");
            assert!(
                before.iter().zip(&now).all(|(&b, &n)| !b || n),
                "an admitted client stays admitted"
            );
            before = now;
        }
        assert!(clients.iter().all(|&h| admits(h, 2, None)));
    }
}
