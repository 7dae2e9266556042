//! A cheap clock for per-chunk bookkeeping.
//!
//! The copy loop notes the time of every read and write so the idle
//! watchdog knows when each side was last active. `Instant::now()` reads
//! the TSC through the vDSO; `CLOCK_MONOTONIC_COARSE` only reads the time
//! the kernel stored at its last tick (a few ms old at most), which is
//! cheaper and plenty for timeouts counted in seconds.

/// Milliseconds on `CLOCK_MONOTONIC_COARSE` (the kernel's tick: 1-10 ms
/// resolution). Only differences between two readings mean anything.
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    // It cannot fail for this clock id on Linux >= 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Whole milliseconds of `d`, saturating (a timeout like
/// `18446744073709551615s` is "never", not an overflow).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn coarse_time_moves_with_the_real_one() {
        let t0 = Instant::now();
        let c0 = coarse_ms();
        let t1 = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let t2 = Instant::now();
        let c1 = coarse_ms();
        let t3 = Instant::now();
        // Each reading lags the real time by up to one tick (10 ms at the
        // slowest HZ), plus 1 ms of truncation; preemption between the
        // readings only widens the outer span and narrows the inner one.
        let (inner, outer) = ((t2 - t1).as_millis() as u64, (t3 - t0).as_millis() as u64);
        let coarse = c1 - c0;
        assert!(
            coarse + 11 >= inner && coarse <= outer + 11,
            "coarse {coarse} ms, real between {inner} and {outer} ms"
        );
    }

    #[test]
    fn huge_durations_saturate() {
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
    }
}
