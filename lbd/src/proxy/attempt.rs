//! What one connect to one member records, whoever started it (the first
//! attempt, a retry or a hedge): a success ends the member's passive
//! back-off; a real failure counts `connect_errors`, starts or extends the
//! back-off and, in a checked pool, feeds the check streak. A connect that
//! is merely abandoned (a hedge won the race) records nothing.

use tracing::{debug, info, warn};

use crate::runtime::Stream;
use crate::snapshot::PoolRt;
use crate::sockets::with_socket;
use crate::state::{inc, now_ms};

/// Records a completed connect to member `index` of `pool` and readies the
/// socket for the copy phase.
pub(super) fn succeeded(pool: &PoolRt, index: usize, stream: &impl Stream) {
    let _ = with_socket(stream, |s| s.set_nodelay(true));
    let m = &pool.members[index];
    let ended = m.state.connect_succeeded();
    if ended > 0 {
        info!(member = %m.label, "member reachable again after {ended} failed connect(s)");
    }
}

/// Records a failed (or timed-out) connect to member `index` of `pool`
/// against the member. `moving_on`: the client goes on to another member
/// (a retry follows, or a hedge is still connecting), counted as
/// `retried_away`.
pub(super) fn failed(
    worker: usize,
    pool: &PoolRt,
    index: usize,
    e: &std::io::Error,
    moving_on: bool,
) {
    let m = &pool.members[index];
    let c = m.state.counters.get(worker);
    inc(&c.connect_errors);
    let failures = m.state.connect_failed(now_ms());
    if let Some(check) = &pool.health {
        if let Some(streak) = m.state.observe_connect_failure(check.fall) {
            warn!(
                member = %m.label,
                "member {} is DOWN: {streak} failure(s) in a row, the last a connect in traffic: {e}",
                m.label
            );
        }
    }
    if failures == 1 {
        warn!(member = %m.label, "connect failed: {e}; avoiding it for new connections until a connect succeeds");
    } else {
        debug!(member = %m.label, failures, "connect failed: {e}");
    }
    if moving_on {
        inc(&c.retried_away);
    }
}
