//! Waiting for a state rather than sleeping a fixed time: poll a condition,
//! fail the test with what was awaited once a generous bound passes.

use std::time::{Duration, Instant};

/// How long [`eventually`] and [`eventually_blocking`] wait before they
/// fail: generous for a loaded 2-core machine.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// Time between two polls.
const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` until it holds; panics with `what` after [`EVENTUALLY`].
#[cfg(feature = "tokio")]
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENTUALLY;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a thread that may block: sleeps between polls.
pub fn eventually_blocking(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        std::thread::sleep(POLL);
    }
}
