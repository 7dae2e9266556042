//! Relaying an established connection in the kernel (listener option
//! `kernel_relay`): both sockets go into the sockmap of
//! `lbd_ebpf::SockPairer`, whose stream verdict program redirects each
//! socket's data to the other's egress. lbd reads nothing after that; it
//! waits for each side's end, passes the EOF on once the other socket has
//! queued everything relayed into it, watches idle timeouts from TCP's own
//! clocks and counts the bytes from TCP's counters at the end.
//!
//! LIFECYCLE of a relayed connection:
//! 1. paired right after the connect (and the PROXY header), before lbd
//!    read anything (each socket's peer is in place before either comes
//!    under the program, so no data arrives without somewhere to go);
//! 2. kicked (`SO_RCVLOWAT`): what either side queued before the pairing
//!    is relayed now, in order;
//! 3. each direction waits for its EOF, then for the other socket to have
//!    queued all the data its peer sent (plus lbd's own header), then
//!    shuts it down for writing (half-close, as the copy loop does);
//! 4. ends when both directions have, or on an error (both reset), an
//!    idle timeout or the kill switch, like the copy loop.
//!
//! Data read from a paired socket means the program could not redirect
//! it (its peer closed): forwarding it could reorder it with data the
//! kernel relays, so the connection is reset instead.

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use lbd_ebpf::{kick, tcp_counts, SockPairer};

use super::copy::{reset, ByteCounters, Outcome, Timeouts};
use super::sessions::Kill;
use crate::runtime::Stream;
use crate::sockets::with_socket;
use crate::state::add;

/// How often a direction that saw its EOF looks whether the other socket
/// has queued everything (the kernel's worker relays asynchronously).
const FLUSH_POLL: Duration = Duration::from_millis(1);

/// Pairs `client` and `member` and relays them in the kernel until the
/// connection ends. `header` is what lbd itself wrote to the member (the
/// PROXY header). `None`: they could not be paired (nothing changed; the
/// caller copies in userspace).
pub async fn relay_in_kernel<S: Stream>(
    client: &S,
    member: &S,
    pairer: &SockPairer,
    header: u64,
    timeouts: Timeouts,
    counters: ByteCounters<'_>,
    kill: Option<&Kill>,
) -> Option<Outcome> {
    if let Err(e) = pairer.pair(client.as_raw_fd(), member.as_raw_fd()) {
        tracing::debug!("kernel_relay: cannot pair, copying in userspace: {e}");
        return None;
    }
    for s in [client.as_raw_fd(), member.as_raw_fd()] {
        if let Err(e) = kick(s) {
            tracing::debug!("kernel_relay: SO_RCVLOWAT failed: {e}");
        }
    }
    let up = direction(client, member, header);
    let down = direction(member, client, 0);
    let killed = async {
        match kill {
            Some(kill) => kill.wait().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        biased;
        () = killed => Outcome::Killed,
        result = async { tokio::join!(up, down) } => match result {
            (Ok(()), Ok(())) => Outcome::Done,
            (Err(e), _) | (_, Err(e)) => {
                reset(client);
                reset(member);
                Outcome::Error(e)
            }
        },
        idle = idle_watchdog(client, member, timeouts) => idle,
    };
    // What the kernel relayed: everything each side sent.
    if let Ok(c) = tcp_counts(client.as_raw_fd()) {
        counters
            .client_to_member
            .iter()
            .for_each(|a| add(a, c.received));
    }
    if let Ok(m) = tcp_counts(member.as_raw_fd()) {
        counters
            .member_to_client
            .iter()
            .for_each(|a| add(a, m.received));
    }
    Some(outcome)
}

/// One direction: waits for `from`'s EOF, then passes it on to `to` once
/// `to` has queued everything `from` sent (plus `own`, what lbd wrote to
/// `to` itself).
async fn direction<S: Stream>(from: &S, to: &S, own: u64) -> io::Result<()> {
    from.hangup().await?;
    // Only an EOF is expected: a few bytes of room tell data from it.
    let (res, _) = from.read(Vec::with_capacity(64)).await;
    match res? {
        0 => {}
        n => {
            return Err(io::Error::other(format!(
                "kernel_relay: {n} bytes could not be relayed (the other side closed)"
            )))
        }
    }
    let sent = tcp_counts(from.as_raw_fd())
        .map_err(io::Error::other)?
        .received
        + own;
    // Bounded by the idle watchdog, which ends the connection if `to`
    // stops taking data.
    loop {
        let queued = tcp_counts(to.as_raw_fd())
            .map_err(io::Error::other)?
            .queued_out;
        if queued >= sent {
            break;
        }
        tokio::time::sleep(FLUSH_POLL).await;
    }
    let _ = with_socket(to, |s| s.shutdown(Shutdown::Write));
    Ok(())
}

/// Ends the connection when a side has neither sent nor received data for
/// its timeout, by TCP's clocks.
async fn idle_watchdog<S: Stream>(client: &S, member: &S, timeouts: Timeouts) -> Outcome {
    let field = |tunnel: bool, name| if tunnel { "tunnel_idle" } else { name };
    loop {
        let idle = |s: &S| {
            tcp_counts(s.as_raw_fd())
                .map(|c| Duration::from_millis(u64::from(c.last_recv_ms.min(c.last_sent_ms))))
                .unwrap_or(Duration::ZERO)
        };
        let (c, m) = (idle(client), idle(member));
        if c >= timeouts.client {
            return Outcome::ClientIdle(field(timeouts.tunnel, "client_idle"));
        }
        if m >= timeouts.member {
            return Outcome::MemberIdle(field(timeouts.tunnel, "member_idle"));
        }
        let left = (timeouts.client - c).min(timeouts.member - m);
        tokio::time::sleep(left.max(Duration::from_millis(10))).await;
    }
}
