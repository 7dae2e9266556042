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
//!   --no client activity for its timeout----> Outcome::ClientIdle
//!   --no member activity for its timeout----> Outcome::MemberIdle
//!                                              (for both idle outcomes the
//!                                              caller aborts both sockets)
//!   --its member went down / into maint-----> Outcome::Killed (pools with
//!     (the connection's Kill switch fired)     on_down / on_maint; the
//!                                              caller resets both sockets)
//!
//! a side's timeout (the watchdog's, for the side it guards):
//! Open: tunnel_idle if set, else client_idle (client) / member_idle (member)
//!   --that side sent its EOF----------------> Untimed (the other side's
//!                                              timeout bounds the connection)
//!   --lbd sent FIN to that side, and--------> HalfClosed: client_fin (client)
//!     client_fin / member_fin is set            / member_fin (member), counted
//!                                              from the FIN; the watchdog is
//!                                              woken to re-arm at once
//! ```
//!
//! "Activity" on a side is a completed read from it or write to it; a
//! half-closed connection whose open direction is quiet ends by the idle
//! timeouts like any other, the side lbd sent FIN to by its `*_fin`
//! timeout when one is set (HAProxy's `timeout client-fin`/`server-fin`:
//! a peer that got our FIN and neither answers nor closes is let go sooner,
//! or later, than an open one). A side that sent its own EOF is no longer
//! timed (as in HAProxy: nothing is read from it any more); the other
//! side's timeout bounds the connection, so a client that half-closes and
//! waits for a slow answer is not cut by `client_idle`. Timeouts are read from the listener
//! when the member is connected: a reload applies new values to new
//! connections. Without `*_fin` timeouts a FIN changes nothing but a flag.
//! Activity is timed with the kernel's coarse clock ([`coarse_ms`]): one
//! cheap read per chunk, a few milliseconds of precision.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lbd_config::Listener;

use super::buffers::BufPool;
use super::pipes::{Lease, PipePool, PIPE_SIZE};
use super::sessions::Kill;
use super::sizing::{unsent_bytes, Sizer};
use super::wake::WakeSlot;
use crate::clock::{coarse_ms, millis};
use crate::runtime::Stream;
use crate::sockets::with_socket;
use crate::state::add;

/// Where the copied bytes are counted (per-worker counters).
#[derive(Clone, Copy)]
pub struct ByteCounters<'a> {
    /// Client to member.
    pub client_to_member: [&'a AtomicU64; 2],
    /// Member to client.
    pub member_to_client: [&'a AtomicU64; 2],
}

/// The copy phase's idle timeouts, taken from the listener when the
/// member is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The client side's: `tunnel_idle` if set, else `client_idle`.
    pub client: Duration,
    /// The member side's: `tunnel_idle` if set, else `member_idle`.
    pub member: Duration,
    /// Whether `client` and `member` are `tunnel_idle` (for the logs).
    pub tunnel: bool,
    /// The client side's once lbd sent FIN to the client.
    pub client_fin: Option<Duration>,
    /// The member side's once lbd sent FIN to the member.
    pub member_fin: Option<Duration>,
}

impl Timeouts {
    /// A listener's timeouts for its connections' copy phase.
    pub fn of(listener: &Listener) -> Self {
        Timeouts {
            client: listener.tunnel_idle.unwrap_or(listener.client_idle),
            member: listener.tunnel_idle.unwrap_or(listener.member_idle),
            tunnel: listener.tunnel_idle.is_some(),
            client_fin: listener.client_fin,
            member_fin: listener.member_fin,
        }
    }

    /// Whether a FIN can change a side's timeout.
    fn any_fin(&self) -> bool {
        self.client_fin.is_some() || self.member_fin.is_some()
    }

    fn fin(&self, side: Side) -> Option<Duration> {
        match side {
            Side::Client => self.client_fin,
            Side::Member => self.member_fin,
        }
    }
}

/// How a proxied connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// Both sides sent EOF.
    Done,
    /// One side failed (reset, broken pipe).
    Error(io::Error),
    /// No activity on the client side for its timeout (the field named).
    ClientIdle(&'static str),
    /// No activity on the member side for its timeout (the field named).
    MemberIdle(&'static str),
    /// The member went down or into maint and the pool closes its
    /// connections (`on_down` / `on_maint = "shutdown_sessions"`), or the
    /// stats socket asked (`shutdown sessions server`).
    Killed,
}

/// Last time something was read from or written to each side (coarse
/// milliseconds, [`coarse_ms`]: a read per chunk costs next to nothing),
/// and whether lbd has sent it FIN.
struct Activity {
    client: Cell<u64>,
    member: Cell<u64>,
    fin_to_client: Cell<bool>,
    fin_to_member: Cell<bool>,
    /// Whether each side has sent its own EOF (lbd read it).
    eof_from_client: Cell<bool>,
    eof_from_member: Cell<bool>,
    timeouts: Timeouts,
    /// The watchdog waiting for a FIN that changes a timeout (only with
    /// `*_fin` timeouts).
    watchdog: WakeSlot,
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Member,
}

impl Activity {
    fn new(timeouts: Timeouts) -> Self {
        let now = coarse_ms();
        Activity {
            client: Cell::new(now),
            member: Cell::new(now),
            fin_to_client: Cell::new(false),
            fin_to_member: Cell::new(false),
            eof_from_client: Cell::new(false),
            eof_from_member: Cell::new(false),
            timeouts,
            watchdog: WakeSlot::default(),
        }
    }

    fn touch(&self, side: Side) {
        match side {
            Side::Client => self.client.set(coarse_ms()),
            Side::Member => self.member.set(coarse_ms()),
        }
    }

    /// `side` sent its EOF: nothing more is read from it, so (as in
    /// HAProxy) its idle timeout stops guarding it; the other side's
    /// timeout still bounds the connection, and a write to this side that
    /// cannot complete stalls the other direction's reads.
    fn eof_from(&self, side: Side) {
        match side {
            Side::Client => self.eof_from_client.set(true),
            Side::Member => self.eof_from_member.set(true),
        }
    }

    fn sent_eof(&self, side: Side) -> bool {
        match side {
            Side::Client => self.eof_from_client.get(),
            Side::Member => self.eof_from_member.get(),
        }
    }

    fn fin_flag(&self, side: Side) -> &Cell<bool> {
        match side {
            Side::Client => &self.fin_to_client,
            Side::Member => &self.fin_to_member,
        }
    }

    /// lbd has sent FIN to `side`. With a `*_fin` timeout for it, that
    /// timeout applies from now on, counted from now (as HAProxy does), and
    /// the watchdog re-arms for it.
    fn fin_sent(&self, side: Side) {
        self.fin_flag(side).set(true);
        if self.timeouts.fin(side).is_some() {
            self.touch(side);
            self.watchdog.wake();
        }
    }

    /// The timeout guarding `side` now, and its field name.
    fn timeout(&self, side: Side) -> (&'static str, Duration) {
        let t = &self.timeouts;
        match (side, self.fin_flag(side).get(), t.fin(side)) {
            (Side::Client, true, Some(fin)) => ("client_fin", fin),
            (Side::Member, true, Some(fin)) => ("member_fin", fin),
            (_, _, _) if self.sent_eof(side) => ("none", Duration::MAX),
            (_, _, _) if t.tunnel => ("tunnel_idle", self.idle(side)),
            (Side::Client, _, _) => ("client_idle", t.client),
            (Side::Member, _, _) => ("member_idle", t.member),
        }
    }

    fn idle(&self, side: Side) -> Duration {
        match side {
            Side::Client => self.timeouts.client,
            Side::Member => self.timeouts.member,
        }
    }

    fn last(&self, side: Side) -> u64 {
        match side {
            Side::Client => self.client.get(),
            Side::Member => self.member.get(),
        }
    }

    /// Which sides lbd has sent FIN to.
    fn fins(&self) -> (bool, bool) {
        (self.fin_to_client.get(), self.fin_to_member.get())
    }

    /// Resolves once the FINs sent differ from `seen`.
    async fn fins_change(&self, seen: (bool, bool)) {
        self.watchdog.until(|| self.fins() != seen).await
    }
}

/// Where a connection's directions get their buffers, and their pipes
/// when the listener splices (`splice`).
#[derive(Clone, Copy)]
pub struct Carriers<'a> {
    pub bufs: &'a BufPool,
    pub pipes: Option<&'a PipePool>,
}

/// Copies until both directions are finished, an error, an idle timeout,
/// or `kill` (if any) is fired. Buffers come from the worker's pool only
/// while data is in flight, and so do pipes.
pub async fn copy_both_ways<S: Stream>(
    client: &S,
    member: &S,
    carriers: Carriers<'_>,
    timeouts: Timeouts,
    counters: ByteCounters<'_>,
    kill: Option<&Kill>,
) -> Outcome {
    carriers.bufs.start_trimming();
    let activity = Activity::new(timeouts);
    let up = pump(
        client,
        member,
        Side::Client,
        Side::Member,
        carriers,
        &activity,
        counters.client_to_member,
    );
    let down = pump(
        member,
        client,
        Side::Member,
        Side::Client,
        carriers,
        &activity,
        counters.member_to_client,
    );
    let watchdog = idle_watchdog(&activity);
    let killed = async {
        match kill {
            Some(kill) => kill.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = killed => Outcome::Killed,
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
/// one to spare. On a listener with `splice`, a direction the sizer finds
/// streaming (bulk for [`SPLICE_AFTER`](super::sizing::SPLICE_AFTER) bytes without a pause) splices
/// through a pipe instead ([`splice_bulk`]) while it stays bulk.
async fn pump<S: Stream>(
    from: &S,
    to: &S,
    from_side: Side,
    to_side: Side,
    carriers: Carriers<'_>,
    activity: &Activity,
    counters: [&AtomicU64; 2],
) -> io::Result<()> {
    let pool = carriers.bufs;
    let pipes = carriers
        .pipes
        .filter(|_| from.can_splice() && to.can_splice());
    let dir = Direction {
        from,
        to,
        from_side,
        to_side,
        activity,
        counters,
    };
    let mut bulk = false;
    let mut sizer = Sizer::default();
    loop {
        if !bulk {
            if let Err(e) = from.readable().await {
                return Err(fail(from, to, e));
            }
        }
        if let Some(lease) = pipes.filter(|_| sizer.streaming()).and_then(Lease::new) {
            match splice_bulk(&dir, lease, &mut sizer).await {
                Ok(Spliced::Eof) => {
                    dir.pass_eof();
                    return Ok(());
                }
                Ok(Spliced::NotBulk) => {
                    bulk = false;
                    continue;
                }
                Err(e) => return Err(fail(from, to, e)),
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
                dir.pass_eof();
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

/// One direction's ends.
struct Direction<'a, S> {
    from: &'a S,
    to: &'a S,
    from_side: Side,
    to_side: Side,
    activity: &'a Activity,
    counters: [&'a AtomicU64; 2],
}

impl<S: Stream> Direction<'_, S> {
    /// Half-close: `from` sent EOF; pass it on to `to`. The peer may
    /// already be gone (ENOTCONN); the other direction will notice on its
    /// own.
    fn pass_eof(&self) {
        let _ = with_socket(self.to, |s| s.shutdown(Shutdown::Write));
        self.activity.eof_from(self.from_side);
        self.activity.fin_sent(self.to_side);
    }
}

/// How a run of splicing ended (without an error).
enum Spliced {
    /// `from` sent EOF.
    Eof,
    /// The direction no longer moves bulk: back to buffers.
    NotBulk,
}

/// Splices a streaming direction: up to a pipe's worth from `from` into
/// the pipe, then all of it out to `to`, while the [`Sizer`] still sees
/// bulk. The pipe is empty between rounds (back-pressure as with buffers:
/// a slow reader slows the writer down) and goes back when this returns;
/// one still holding data (this future dropped mid-write) is closed.
/// After a splice that did not fill the pipe, the next waits for
/// readiness first rather than finding the socket empty.
async fn splice_bulk<S: Stream>(
    dir: &Direction<'_, S>,
    mut lease: Lease<'_>,
    sizer: &mut Sizer,
) -> io::Result<Spliced> {
    let pipe = lease.pipe();
    let mut full = true;
    // Bounded: each round moves a byte or more, or returns.
    loop {
        if !full {
            dir.from.readable().await?;
        }
        let n = dir.from.splice_to(pipe.write_end(), PIPE_SIZE).await?;
        full = n >= PIPE_SIZE;
        if n == 0 {
            return Ok(Spliced::Eof);
        }
        pipe.filled(n);
        sizer.read(n);
        dir.activity.touch(dir.from_side);
        dir.to.splice_from(pipe.read_end(), n).await?;
        pipe.drained(n);
        dir.activity.touch(dir.to_side);
        add(dir.counters[0], n as u64);
        add(dir.counters[1], n as u64);
        if !sizer.bulk() {
            return Ok(Spliced::NotBulk);
        }
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

/// Resolves when one side has been idle for its timeout. With `*_fin`
/// timeouts it also wakes when lbd sends a FIN, whose timeout may be
/// shorter than the one it was sleeping on.
async fn idle_watchdog(activity: &Activity) -> Outcome {
    let fins_matter = activity.timeouts.any_fin();
    loop {
        let (client_field, client_timeout) = activity.timeout(Side::Client);
        let (member_field, member_timeout) = activity.timeout(Side::Member);
        let client_deadline = deadline(activity.last(Side::Client), client_timeout);
        let member_deadline = deadline(activity.last(Side::Member), member_timeout);
        let now = coarse_ms();
        if now >= client_deadline {
            return Outcome::ClientIdle(client_field);
        }
        if now >= member_deadline {
            return Outcome::MemberIdle(member_field);
        }
        // tokio saturates a sleep too long for its clock to "far future".
        let left = client_deadline.min(member_deadline) - now;
        let sleep = tokio::time::sleep(Duration::from_millis(left));
        if fins_matter {
            let seen = activity.fins();
            tokio::select! {
                () = sleep => {}
                () = activity.fins_change(seen) => {}
            }
        } else {
            sleep.await;
        }
    }
}

/// `at + timeout` in coarse milliseconds, saturating: a timeout like
/// `18446744073709551615s` means "never" (adding it must not overflow).
fn deadline(at: u64, timeout: Duration) -> u64 {
    at.saturating_add(millis(timeout))
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
/// read without sending anything. A write stuck behind unsent data (a
/// peer that stopped reading) is woken by `SHUT_WR`, whose FIN stays
/// queued behind that data until the close discards it all. With nothing
/// unsent, `SHUT_WR` would send the FIN at once, and the peer would read
/// an orderly end before the reset (a client still acknowledging the last
/// bytes would see the cut-off stream as complete): then it is left out,
/// and a write waiting for acknowledgements completes as they come.
pub fn reset(s: &impl Stream) {
    with_socket(s, |sock| {
        let _ = sock.set_linger(Some(Duration::ZERO));
        let _ = sock.shutdown(Shutdown::Read);
        if unsent_bytes(sock.as_raw_fd()) != Some(0) {
            let _ = sock.shutdown(Shutdown::Write);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_never_instead_of_a_panic() {
        let now = coarse_ms();
        assert_eq!(deadline(now, Duration::MAX), u64::MAX);
        assert_eq!(deadline(now, Duration::from_secs(u64::MAX)), u64::MAX);
        let ten = Duration::from_secs(10);
        assert_eq!(deadline(now, ten), now + 10_000);
    }

    #[tokio::test]
    async fn the_watchdog_takes_a_huge_timeout_on_one_side() {
        let huge = Duration::from_secs(u64::MAX);
        let short = Duration::from_millis(20);
        let activity = Activity::new(timeouts(huge, short));
        let idle = tokio::time::timeout(Duration::from_secs(10), idle_watchdog(&activity))
            .await
            .expect("the member side times out");
        assert!(
            matches!(idle, Outcome::MemberIdle("member_idle")),
            "{idle:?}"
        );
        let activity = Activity::new(timeouts(short, huge));
        let idle = tokio::time::timeout(Duration::from_secs(10), idle_watchdog(&activity))
            .await
            .expect("the client side times out");
        assert!(
            matches!(idle, Outcome::ClientIdle("client_idle")),
            "{idle:?}"
        );
    }

    fn timeouts(client: Duration, member: Duration) -> Timeouts {
        Timeouts {
            client,
            member,
            tunnel: false,
            client_fin: None,
            member_fin: None,
        }
    }

    #[tokio::test]
    async fn a_fin_wakes_the_watchdog_onto_the_shorter_fin_timeout() {
        let long = Duration::from_secs(3600);
        let short = Duration::from_millis(50);
        for side in [Side::Client, Side::Member] {
            let activity = Activity::new(Timeouts {
                client_fin: Some(short),
                member_fin: Some(short),
                ..timeouts(long, long)
            });
            let watchdog = idle_watchdog(&activity);
            let fin = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                activity.fin_sent(side);
                std::future::pending::<()>().await
            };
            let idle = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::select! {
                    idle = watchdog => idle,
                    () = fin => unreachable!(),
                }
            })
            .await
            .expect("the fin timeout fires, not the hour-long idle one");
            match side {
                Side::Client => assert!(
                    matches!(idle, Outcome::ClientIdle("client_fin")),
                    "{idle:?}"
                ),
                Side::Member => assert!(
                    matches!(idle, Outcome::MemberIdle("member_fin")),
                    "{idle:?}"
                ),
            }
        }
    }

    #[test]
    fn which_timeout_guards_a_side() {
        let t = Timeouts {
            client: Duration::from_secs(3600),
            member: Duration::from_secs(3600),
            tunnel: true,
            client_fin: Some(Duration::from_secs(1)),
            member_fin: None,
        };
        let activity = Activity::new(t);
        assert_eq!(activity.timeout(Side::Client).0, "tunnel_idle");
        activity.fin_sent(Side::Client);
        activity.fin_sent(Side::Member);
        assert_eq!(
            activity.timeout(Side::Client),
            ("client_fin", Duration::from_secs(1))
        );
        // No member_fin: the member side keeps tunnel_idle.
        assert_eq!(
            activity.timeout(Side::Member),
            ("tunnel_idle", Duration::from_secs(3600))
        );
        let plain = Activity::new(timeouts(Duration::from_secs(5), Duration::from_secs(7)));
        plain.fin_sent(Side::Member);
        assert_eq!(
            plain.timeout(Side::Client),
            ("client_idle", Duration::from_secs(5))
        );
        assert_eq!(
            plain.timeout(Side::Member),
            ("member_idle", Duration::from_secs(7))
        );
    }
}
