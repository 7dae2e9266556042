//! A proxied TCP connection, from accept to close:
//! `allowed_cidrs` -> `connection_limit` -> pick a member -> connect (with
//! retries on other members) -> optional PROXY header -> copy both ways.
//!
//! Written against [`crate::runtime`]'s traits, so it runs unchanged on
//! io_uring and epoll.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::pick::LocalView;
use crate::queue::Refused;
use crate::runtime::{Runtime, Stream};
use crate::snapshot::ListenerRt;
use crate::sockets::{is_local_shortage, with_socket};
use crate::state::{inc, now_ms, ListenerState, Slot};

use super::canonical;
use super::copy::{abort, copy_both_ways, ByteCounters, Outcome};
use super::header;
use super::local::Local;
use super::slots::{self, MemberSlot, NoSlot};

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
    client_idle: Duration,
    member_idle: Duration,
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
    let _ = with_socket(client, |s| s.set_nodelay(true));

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
    let m = &member_view.snap.pools[pool_index].members[index];
    inc(&m.state.counters.get(local.id).connections);

    if let Some(version) = listener.cfg.proxy_protocol {
        let destination = local_addr(client, listener.cfg.bind);
        let mut header = local.bufs.take();
        header::encode(version, peer, destination, &mut header);
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
        client_idle: listener.cfg.client_idle,
        member_idle: listener.cfg.member_idle,
    })
}

/// Why a new connection was not given a member.
enum Shed {
    /// No member is usable, or every connect attempt failed.
    NoMember,
    /// Every member was at `max_connections` and the pool's queue refused
    /// the client or it waited `queue_timeout`.
    Queue(Refused),
    /// lbd itself ran out of something (descriptors, memory, local ports):
    /// the member is not to blame.
    Local(std::io::Error),
}

/// A connected member and its slot; `member` of pool `pool` in `view`
/// (newer than the connection's first view if it waited across a reload).
struct Connected<R: Runtime> {
    view: Rc<LocalView>,
    pool: usize,
    member: usize,
    stream: R::Stream,
    slot: MemberSlot,
}

/// Picks members and connects, trying another member after each failure up
/// to the pool's `retries`. Failures feed the member's passive back-off and,
/// in checked pools, its check streak; lbd's own shortages do neither.
async fn connect_member<R: Runtime>(
    local: &Local,
    mut view: Rc<LocalView>,
    listener: &ListenerRt,
    client_ip: IpAddr,
) -> Result<Connected<R>, Shed> {
    // Allocates only if a connect fails.
    let mut tried: Vec<usize> = Vec::new();
    let mut pool_index = listener.pool;
    let retries = view.snap.pools[pool_index].retries;
    for attempt in 0..=retries {
        let taken = slots::take(
            local,
            Rc::clone(&view),
            pool_index,
            client_ip,
            &tried,
            listener.cfg.member_connect,
        )
        .await
        .map_err(|why| match why {
            NoSlot::NoMember => Shed::NoMember,
            NoSlot::Queue(why) => Shed::Queue(why),
        })?;
        if !Rc::ptr_eq(&taken.view, &view) {
            // Waited across a reload: member indices are the new config's.
            tried.clear();
            view = Rc::clone(&taken.view);
            pool_index = taken.pool;
        }
        let pool = &view.snap.pools[pool_index];
        let index = taken.member;
        let m = &pool.members[index];
        match R::connect(m.addr, listener.cfg.member_connect).await {
            Ok(stream) => {
                let _ = with_socket(&stream, |s| s.set_nodelay(true));
                let ended = m.state.connect_succeeded();
                if ended > 0 {
                    info!(member = %m.label, "member reachable again after {ended} failed connect(s)");
                }
                return Ok(Connected {
                    pool: pool_index,
                    member: index,
                    stream,
                    slot: taken.slot,
                    view,
                });
            }
            Err(e) if is_local_shortage(&e) => return Err(Shed::Local(e)),
            Err(e) => {
                let c = m.state.counters.get(local.id);
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
                if attempt < retries {
                    inc(&c.retried_away);
                }
                tried.push(index);
                // `taken.slot` is given back here, before the next pick.
            }
        }
    }
    Err(Shed::NoMember)
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
    let outcome = copy_both_ways(
        &client,
        &conn.member,
        &local.bufs,
        conn.client_idle,
        conn.member_idle,
        counters,
    )
    .await;
    match outcome {
        // Both sides sent EOF: nothing is in flight, closing is enough.
        Outcome::Done => return,
        // One side failed: the copy has reset both sockets already.
        Outcome::Error(e) => {
            debug!(client = %peer, member = %conn.member_label, "connection ended: {e}");
            return;
        }
        Outcome::ClientIdle => {
            debug!(client = %peer, member = %conn.member_label, "client_idle timeout")
        }
        Outcome::MemberIdle => {
            debug!(client = %peer, member = %conn.member_label, "member_idle timeout")
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
