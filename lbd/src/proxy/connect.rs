//! Connecting a new client to a member: take a member slot
//! ([`super::slots`]), connect, and after a failure try another member, up
//! to the pool's `retries`. With `connect_hedge` each attempt is a race
//! ([`super::hedge`]); without it, one branch on the setting and the plain
//! connect, as before hedging existed.

use std::net::IpAddr;
use std::rc::Rc;

use crate::pick::LocalView;
use crate::queue::Refused;
use crate::runtime::Runtime;
use crate::snapshot::ListenerRt;
use crate::sockets::is_local_shortage;

use super::attempt;
use super::hedge::{self, Lost};
use super::local::Local;
use super::slots::{self, MemberSlot, NoSlot};

/// Why a new connection was not given a member.
pub(super) enum Shed {
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
pub(super) struct Connected<R: Runtime> {
    pub view: Rc<LocalView>,
    pub pool: usize,
    pub member: usize,
    pub stream: R::Stream,
    pub slot: MemberSlot,
}

/// Picks members and connects, trying another member after each failure up
/// to the pool's `retries`. Failures feed the member's passive back-off and,
/// in checked pools, its check streak; lbd's own shortages do neither.
pub(super) async fn connect_member<R: Runtime>(
    local: &Local,
    mut view: Rc<LocalView>,
    listener: &ListenerRt,
    client_ip: IpAddr,
) -> Result<Connected<R>, Shed> {
    // Allocates only if a connect fails (or a hedge starts).
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
        let more = attempt < retries;
        // Hedged pools have no limits (validated); the check keeps a pool
        // that gained limits in a reload raced by this connection exact.
        if let (Some(delay), false) = (listener.connect_hedge, pool.limited) {
            let race = hedge::Race {
                local,
                view: &view,
                pool: pool_index,
                client_ip,
                member_connect: listener.cfg.member_connect,
                listener: &listener.state,
            };
            match race.run::<R>(taken, delay, &mut tried, more).await {
                Ok(won) => {
                    return Ok(Connected {
                        pool: pool_index,
                        member: won.member,
                        stream: won.stream,
                        slot: won.slot,
                        view,
                    })
                }
                Err(Lost::Local(e)) => return Err(Shed::Local(e)),
                // Both (or the only) connects failed and are counted.
                Err(Lost::Failed) => continue,
            }
        }
        let index = taken.member;
        match R::connect(pool.members[index].addr, listener.cfg.member_connect).await {
            Ok(stream) => {
                attempt::succeeded(pool, index, &stream);
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
                attempt::failed(local.id, pool, index, &e, more);
                tried.push(index);
                // `taken.slot` is given back here, before the next pick.
            }
        }
    }
    Err(Shed::NoMember)
}
