//! Copies bytes both ways between a client and a member until both sides are
//! done, propagating half-close and enforcing idle timeouts.
//!
//! Each direction reads into a buffer and writes it out before reading
//! again (back-pressure: a slow reader slows the writer down). Buffers are
//! borrowed from the worker's pool only while data is in flight: small
//! ones, or bigger ones for a direction that moves bulk
//! ([`super::sizing`]). When one side sends EOF, the other side's
//! write half is shut down and the opposite direction keeps flowing, so a
//! client's `shutdown(SHUT_WR)` reaches the member and the reply still comes
//! back. An error on either side ends both, and both peers get a reset.
//!
//! Reads are never cancelled while the connection lives (an io_uring read
//! cannot be taken back without losing its data); the idle watchdog runs
//! beside the copy instead, and when it fires the caller aborts both sockets.
//!
//! # Lifecycle
//!
//! Each direction (client -> member, member -> client) is its own small
//! state machine; the connection's [`Outcome`] follows from both.
//!
//! ```text
//! direction:
//! Waiting (readiness wait, no buffer held)
//!   --readable------------------------------> Reading (a pooled buffer out)
//! Reading
//!   --n bytes (buffer not full)-------------> Writing, then Waiting
//!   --n bytes (buffer full: bulk)-----------> Writing, then Reading again
//!                                              (no readiness wait)
//!   --EOF-----------------------------------> Finished: the other side's
//!                                              write half is shut down
//!                                              (half-close passed on)
//!   --error---------------------------------> Failed: both sockets reset
//! Writing
//!   --all written---------------------------> counters += n, buffer back
//!   --error (reset, broken pipe)------------> Failed: both sockets reset
//!
//! connection:
//! Copying (both directions running, watchdog beside them)
//!   --both directions Finished--------------> Outcome::Done (FINs both ways,
//!                                              sockets closed)
//!   --either direction Failed---------------> Outcome::Error (peers got RST)
//!   --no client activity for client_idle----> Outcome::ClientIdle
//!   --no member activity for member_idle----> Outcome::MemberIdle
//!                                              (for both idle outcomes the
//!                                              caller aborts both sockets)
//! ```
//!
//! "Activity" on a side is a completed read from it or write to it; a
//! half-closed connection whose open direction is quiet ends by the idle
//! timeouts like any other.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::buffers::BufPool;
use super::sizing::{queued_bytes, Sizer};
use crate::runtime::Stream;
use crate::sockets::with_socket;
use crate::state::add;

/// Where the copied bytes are counted (per-worker counters).
pub struct ByteCounters<'a> {
    /// Client to member.
    pub client_to_member: [&'a AtomicU64; 2],
    /// Member to client.
    pub member_to_client: [&'a AtomicU64; 2],
}

/// How a proxied connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// Both sides sent EOF.
    Done,
    /// One side failed (reset, broken pipe).
    Error(io::Error),
    /// No activity on the client side for `client_idle`.
    ClientIdle,
    /// No activity on the member side for `member_idle`.
    MemberIdle,
}

/// Last time something was read from or written to each side.
struct Activity {
    client: Cell<Instant>,
    member: Cell<Instant>,
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Member,
}

impl Activity {
    fn touch(&self, side: Side) {
        match side {
            Side::Client => self.client.set(Instant::now()),
            Side::Member => self.member.set(Instant::now()),
        }
    }
}

/// Copies until both directions are finished, an error, or an idle timeout.
/// Buffers come from the worker's `pool` only while data is in flight.
pub async fn copy_both_ways<S: Stream>(
    client: &S,
    member: &S,
    pool: &BufPool,
    client_idle: Duration,
    member_idle: Duration,
    counters: ByteCounters<'_>,
) -> Outcome {
    pool.start_trimming();
    let now = Instant::now();
    let activity = Activity {
        client: Cell::new(now),
        member: Cell::new(now),
    };
    let up = pump(
        client,
        member,
        Side::Client,
        Side::Member,
        pool,
        &activity,
        counters.client_to_member,
    );
    let down = pump(
        member,
        client,
        Side::Member,
        Side::Client,
        pool,
        &activity,
        counters.member_to_client,
    );
    let watchdog = idle_watchdog(&activity, client_idle, member_idle);
    tokio::select! {
        biased;
        result = async { tokio::join!(up, down) } => match result {
            (Ok(()), Ok(())) => Outcome::Done,
            (Err(e), _) | (_, Err(e)) => Outcome::Error(e),
        },
        idle = watchdog => idle,
    }
}

/// One direction: wait for data, read it into a pooled buffer, write it
/// out, give the buffer back; until EOF or error.
///
/// An idle direction waits in `readable` and holds no buffer, so an idle
/// connection costs no buffer memory. After a read that filled the buffer
/// (a bulk transfer) more data is likely waiting, so the next read goes
/// straight ahead without waiting for readiness first. Each read's buffer
/// is small unless the [`Sizer`] asks for a bigger one and the budget has
/// one to spare.
async fn pump<S: Stream>(
    from: &S,
    to: &S,
    from_side: Side,
    to_side: Side,
    pool: &BufPool,
    activity: &Activity,
    counters: [&AtomicU64; 2],
) -> io::Result<()> {
    let mut bulk = false;
    let mut sizer = Sizer::default();
    loop {
        if !bulk {
            if let Err(e) = from.readable().await {
                return Err(fail(from, to, e));
            }
        }
        let size = sizer.next(to.as_raw_fd(), pool.plenty());
        // The grant (a share of the big-buffer budget) lives as long as
        // the buffer is out, and returns if this future is dropped.
        let (buf, _grant) = pool.take_sized(size);
        let (res, buf) = from.read(buf).await;
        let n = match res {
            Ok(0) => {
                pool.give(buf);
                // Half-close: pass the EOF on. The peer may already be gone
                // (ENOTCONN); the other direction will notice on its own.
                let _ = with_socket(to, |s| s.shutdown(Shutdown::Write));
                return Ok(());
            }
            Ok(n) => n,
            Err(e) => {
                pool.give(buf);
                return Err(fail(from, to, e));
            }
        };
        bulk = n == buf.capacity();
        sizer.read(n);
        activity.touch(from_side);
        let (res, buf) = to.write_all(buf).await;
        pool.give(buf);
        if let Err(e) = res {
            return Err(fail(from, to, e));
        }
        activity.touch(to_side);
        add(counters[0], n as u64);
        add(counters[1], n as u64);
    }
}

/// Ends both directions after an error on one: resetting both sockets
/// wakes the other direction's pending wait, read or write, and both peers
/// learn that the stream broke (RST), rather than seeing an orderly end.
fn fail(from: &impl Stream, to: &impl Stream, e: io::Error) -> io::Error {
    reset(from);
    reset(to);
    e
}

/// Resolves when one side has been idle for its timeout.
async fn idle_watchdog(
    activity: &Activity,
    client_idle: Duration,
    member_idle: Duration,
) -> Outcome {
    loop {
        let client_deadline = deadline(activity.client.get(), client_idle);
        let member_deadline = deadline(activity.member.get(), member_idle);
        let now = Instant::now();
        if now >= client_deadline {
            return Outcome::ClientIdle;
        }
        if now >= member_deadline {
            return Outcome::MemberIdle;
        }
        tokio::time::sleep_until(client_deadline.min(member_deadline).into()).await;
    }
}

/// `at + timeout`, or a far-future instant when that does not fit in an
/// `Instant` (a timeout like `18446744073709551615s` means "never"; adding
/// it would panic).
fn deadline(at: Instant, timeout: Duration) -> Instant {
    at.checked_add(timeout).unwrap_or_else(|| far_future(at))
}

/// About 30 years after `at` (what tokio uses for "never"), or the
/// latest of a few shorter spans that still fit.
fn far_future(at: Instant) -> Instant {
    const YEAR: u64 = 365 * 24 * 3600;
    [30 * YEAR, YEAR, 24 * 3600]
        .into_iter()
        .find_map(|secs| at.checked_add(Duration::from_secs(secs)))
        .unwrap_or(at)
}

/// Shuts a socket down both ways so that any read or write still in flight
/// on it completes now (required before dropping an io_uring socket: its
/// fd is only closed once no operation holds it). The peer sees a FIN.
pub fn abort(s: &impl Stream) {
    let _ = with_socket(s, |s| s.shutdown(Shutdown::Both));
}

/// Like [`abort`], but the peer sees a reset (RST), not an orderly end:
/// used when the other side failed, so that a client whose member reset the
/// connection does not mistake a cut-off answer for a complete one.
///
/// SO_LINGER 0 makes the final close send RST. `SHUT_RD` wakes a pending
/// read without sending anything. A write can only be pending while unsent
/// data fills the send queue; then `SHUT_WR` wakes it too, and its FIN
/// stays queued behind that data until the close discards it all.
pub fn reset(s: &impl Stream) {
    with_socket(s, |sock| {
        let _ = sock.set_linger(Some(Duration::ZERO));
        let _ = sock.shutdown(Shutdown::Read);
        if queued_bytes(sock.as_raw_fd()) != Some(0) {
            let _ = sock.shutdown(Shutdown::Write);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_never_instead_of_a_panic() {
        let now = Instant::now();
        let far = deadline(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
        let huge = Duration::from_secs(u64::MAX);
        assert!(deadline(now, huge) > now + Duration::from_secs(365 * 24 * 3600));
        let ten = Duration::from_secs(10);
        assert_eq!(deadline(now, ten), now + ten);
    }

    #[tokio::test]
    async fn the_watchdog_takes_a_huge_timeout_on_one_side() {
        let now = Instant::now();
        let activity = Activity {
            client: Cell::new(now),
            member: Cell::new(now),
        };
        let huge = Duration::from_secs(u64::MAX);
        let short = Duration::from_millis(20);
        let idle = tokio::time::timeout(
            Duration::from_secs(10),
            idle_watchdog(&activity, huge, short),
        )
        .await
        .expect("the member side times out");
        assert!(matches!(idle, Outcome::MemberIdle), "{idle:?}");
        let idle = tokio::time::timeout(
            Duration::from_secs(10),
            idle_watchdog(&activity, short, huge),
        )
        .await
        .expect("the client side times out");
        assert!(matches!(idle, Outcome::ClientIdle), "{idle:?}");
    }
}
