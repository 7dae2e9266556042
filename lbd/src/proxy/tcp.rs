//! A proxied TCP connection, from accept to close:
//! `allowed_cidrs` -> `connection_limit` -> pick a member and connect
//! ([`super::connect`]: retries on other members, hedged connects) ->
//! optional PROXY header -> copy both ways (or, with `kernel_relay`, let
//! the kernel relay them: [`super::kernel`]).
//!
//! Written against [`crate::runtime`]'s traits, so it runs unchanged on
//! io_uring and epoll.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::queue::Refused;
use crate::runtime::{Runtime, Stream};
use crate::sockets::with_socket;
use crate::state::{inc, now_ms, ListenerState, Slot};

use super::canonical;
use super::connect::{connect_member, Connected, Shed};
use super::copy::{abort, copy_both_ways, reset, ByteCounters, Carriers, Outcome, Timeouts};
use super::header;
use super::kernel::relay_in_kernel;
use super::local::Local;
use super::sessions::Triggers;
use super::slots::MemberSlot;

/// Handles one accepted client connection on `bind` until it is closed.
pub async fn handle<R: Runtime>(
    local: Rc<Local>,
    bind: SocketAddr,
    client: R::Stream,
    peer: SocketAddr,
) {
    let _counted = Slot::enter(&local.counters);
    let peer = canonical(peer);
    let Some(conn) = establish::<R>(&local, bind, &client, peer).await else {
        reject(client);
        return;
    };
    relay(&local, client, peer, conn).await;
}

/// A connection whose member is connected: what the copy phase needs. It
/// holds `Arc`s to the listener and member state, not the whole snapshot,
/// so a long-lived connection does not pin old configs in memory.
struct Established<R: Runtime> {
    member: R::Stream,
    member_label: std::sync::Arc<str>,
    listener_slot: Slot<ListenerState>,
    member_slot: MemberSlot,
    /// The pool's `on_down` / `on_maint`.
    triggers: Triggers,
    timeouts: Timeouts,
    /// The kernel relay, for a listener with `kernel_relay` (when loaded).
    kernel: Option<std::sync::Arc<lbd_ebpf::SockPairer>>,
    /// Whether bulk directions splice (the listener's `splice`).
    splice: bool,
    /// Bytes lbd wrote to the member itself (the PROXY header).
    header: u64,
}

async fn establish<R: Runtime>(
    local: &Local,
    bind: SocketAddr,
    client: &R::Stream,
    peer: SocketAddr,
) -> Option<Established<R>> {
    let view = local.view();
    // Gone in a reload that raced this accept: close it.
    let listener = view.snap.listener_at(bind)?;
    let counters = listener.state.counters.get(local.id);
    inc(&counters.accepted);

    if !listener.allows(peer.ip()) {
        inc(&counters.denied_cidr);
        debug!(listener = %listener.cfg.name, client = %peer, "refused: not in allowed_cidrs");
        return None;
    }
    let Some(listener_slot) = listener.state.try_acquire(listener.cfg.connection_limit) else {
        inc(&counters.limit_hits);
        debug!(listener = %listener.cfg.name, client = %peer, "refused: connection_limit reached");
        return None;
    };
    // TCP_NODELAY came from the listener (`sockets::serve_listener`).

    let pool = &view.snap.pools[listener.pool];
    let connected = match connect_member::<R>(local, Rc::clone(&view), listener, peer.ip()).await {
        Ok(connected) => connected,
        Err(Shed::NoMember) => {
            inc(&counters.no_member);
            if listener.state.warn_limiter.allow(now_ms()) {
                warn!(
                    listener = %listener.cfg.name,
                    pool = %pool.name,
                    "no usable member: closing new connections (logged at most every 10s)"
                );
            }
            return None;
        }
        Err(Shed::Local(e)) => {
            inc(&counters.local_errors);
            if listener.state.local_error_limiter.allow(now_ms()) {
                warn!(
                    listener = %listener.cfg.name,
                    pool = %pool.name,
                    "cannot open a connection to a member: {e}; lbd is out of a local \
                     resource, so the client is closed and no member is blamed \
                     (logged at most every 10s)"
                );
            }
            return None;
        }
        Err(Shed::Queue(why)) => {
            // Counted by the pool's queue (timeouts, full).
            debug!(
                listener = %listener.cfg.name,
                pool = %pool.name,
                client = %peer,
                "refused: every member is at max_connections and {}",
                match why {
                    Refused::QueueFull => "the queue is full (max_queue)",
                    Refused::Timeout => "queue_timeout passed",
                    Refused::NoMember => "no member is left",
                }
            );
            return None;
        }
    };
    let Connected {
        view: member_view,
        pool: pool_index,
        member: index,
        stream: member,
        slot: member_slot,
    } = connected;
    let member_pool = &member_view.snap.pools[pool_index];
    let m = &member_pool.members[index];
    inc(&m.state.counters.get(local.id).connections);

    let mut header_len = 0;
    if let Some(version) = listener.cfg.proxy_protocol {
        let destination = local_addr(client, listener.cfg.bind);
        let mut header = local.bufs.take();
        header::encode(version, peer, destination, &mut header);
        header_len = header.len() as u64;
        let (res, header) = member.write_all(header).await;
        local.bufs.give(header);
        if let Err(e) = res {
            debug!(member = %m.label, "writing the PROXY header failed: {e}");
            abort(&member);
            return None;
        }
    }

    Some(Established {
        member_label: std::sync::Arc::clone(&m.label),
        member_slot,
        member,
        listener_slot,
        triggers: Triggers {
            on_down: member_pool.shutdown_on_down,
            on_maint: member_pool.shutdown_on_maint,
        },
        timeouts: Timeouts::of(&listener.cfg),
        kernel: if listener.cfg.kernel_relay {
            view.snap.kernel_relay.clone()
        } else {
            None
        },
        splice: listener.cfg.splice,
        header: header_len,
    })
}

async fn relay<R: Runtime>(
    local: &Local,
    client: R::Stream,
    peer: SocketAddr,
    conn: Established<R>,
) {
    let lc = conn.listener_slot.state().counters.get(local.id);
    let mc = conn.member_slot.state().counters.get(local.id);
    let counters = ByteCounters {
        client_to_member: [&lc.bytes_in, &mc.bytes_in],
        member_to_client: [&lc.bytes_out, &mc.bytes_out],
    };
    // Every connection registers: `shutdown sessions server` may close
    // it, and on_down / on_maint when its pool has them.
    let registered = local.sessions.register(
        local.id,
        conn.member_slot.state(),
        &conn.member_label,
        conn.triggers,
    );
    let in_kernel = match &conn.kernel {
        Some(pairer) => {
            relay_in_kernel(
                &client,
                &conn.member,
                pairer,
                conn.header,
                conn.timeouts,
                counters,
                Some(registered.kill()),
            )
            .await
        }
        None => None,
    };
    let outcome = match in_kernel {
        Some(outcome) => outcome,
        None => {
            let carriers = Carriers {
                bufs: &local.bufs,
                pipes: conn.splice.then_some(&local.pipes),
            };
            copy_both_ways(
                &client,
                &conn.member,
                carriers,
                conn.timeouts,
                counters,
                Some(registered.kill()),
            )
            .await
        }
    };
    match outcome {
        // Both sides sent EOF: nothing is in flight, closing is enough.
        Outcome::Done => return,
        // One side failed: the copy has reset both sockets already.
        Outcome::Error(e) => {
            debug!(client = %peer, member = %conn.member_label, "connection ended: {e}");
            return;
        }
        Outcome::ClientIdle(field) => {
            debug!(client = %peer, member = %conn.member_label, "client side: {field} timeout")
        }
        Outcome::MemberIdle(field) => {
            debug!(client = %peer, member = %conn.member_label, "member side: {field} timeout")
        }
        Outcome::Killed => {
            debug!(client = %peer, member = %conn.member_label, "closed: the member went down or into maint");
            // Both peers get a RST; pending reads and writes complete now,
            // so the sockets really close when dropped below.
            reset(&client);
            reset(&conn.member);
            return;
        }
    }
    // These outcomes can leave a wait or read in flight; make it finish so
    // the sockets really close.
    abort(&client);
    abort(&conn.member);
}

/// The address the client connected to: the bind address, or for a
/// wildcard bind the socket's own local address.
fn local_addr(client: &impl Stream, bind: SocketAddr) -> SocketAddr {
    if !bind.ip().is_unspecified() {
        return bind;
    }
    with_socket(client, |s| s.local_addr())
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(bind)
}

/// Closes a refused client at once with a reset (no lingering FIN_WAIT
/// state on our side for connections we never served).
fn reject(client: impl Stream) {
    let _ = with_socket(&client, |s| s.set_linger(Some(Duration::ZERO)));
    drop(client);
}
