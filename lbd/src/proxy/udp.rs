//! A UDP listener on one worker: datagrams in flows.
//!
//! A flow is one client address and port. Its first datagram passes
//! `allowed_cidrs` and `connection_limit` (which counts flows) and picks a
//! member as a TCP connection would ([`super::slots::take_now`]; it never
//! waits in a queue). The flow then has its own socket connected to that
//! member: later datagrams of the client go through it, and what the
//! member sends back on it goes to the client from the listener's socket
//! (from the address the client wrote to, for a listener bound to a
//! wildcard address: see [`crate::runtime::pktinfo`]).
//! SO_REUSEPORT hashes a client's datagrams to one worker, so a flow lives
//! on one thread and nothing here is shared or locked.
//!
//! # LIFECYCLE of a flow
//!
//! - **Opened** by a client datagram with no flow (or whose flow ended):
//!   counted in the listener's `accepted` and active flows, and on its
//!   member; its task starts ([`Listening::member_to_client`]).
//! - **Alive** while datagrams pass either way within `session_idle`;
//!   each one restarts the idle clock.
//! - **Re-picked**: a client datagram finds its member down or in maint,
//!   or gone from the pool after a reload: the flow ends and the datagram
//!   opens a new flow on another member. A member that answers with an
//!   ICMP port unreachable (ECONNREFUSED on the flow's socket) ends the
//!   flow and backs the member off for new flows, as a refused TCP
//!   connect does.
//! - **Ended** by `session_idle` without a datagram, the above, or the
//!   listener stopping (removed in a reload, or lbd stopping). The task
//!   removes the flow from the table, which closes its socket and gives
//!   its listener and member slots back.
//!
//! Memory per flow: the flow (its socket, slots, idle clock) and its
//! task; received datagrams go through one buffer per listener socket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::runtime::{datagram, Datagram, Runtime};
use crate::snapshot::{ListenerRt, PoolRt};
use crate::state::{add, inc, now_ms, ListenerState, MemberState, Slot, Status};

use super::canonical;
use super::local::Local;
use super::slots::{take_now, MemberSlot, Taken};
use super::wake::WakeSlot;

/// Datagrams taken from a socket per readiness wake-up before the task
/// yields, so one busy socket cannot starve the worker's other tasks.
const BATCH: usize = 64;

/// The receive buffer: room for the largest UDP payload (65,507 bytes over
/// IPv4, 65,527 over IPv6; jumbograms aside), so no datagram is cut.
const MAX_DATAGRAM: usize = 65_536;

/// Stops a listener's receive loop; see `worker::AcceptStop`.
pub trait StopSignal {
    fn requested(&self) -> bool;
    fn wait(&self) -> impl std::future::Future<Output = ()>;
}

/// Serves UDP listener `bind` on `socket` until `stop`: receives client
/// datagrams and forwards them through their flows.
pub async fn serve<R: Runtime, S: StopSignal>(
    local: Rc<Local>,
    bind: SocketAddr,
    socket: R::Datagram,
    stop: Rc<S>,
) {
    let listening = Rc::new(Listening::<R> {
        local,
        bind,
        socket,
        flows: RefCell::new(HashMap::new()),
        buf: RefCell::new(vec![0; MAX_DATAGRAM]),
    });
    debug!(worker = listening.local.id, %bind, "receiving (udp)");
    while !stop.requested() {
        tokio::select! {
            biased;
            () = stop.wait() => break,
            ready = listening.socket.readable() => {
                if let Err(e) = ready {
                    warn!(%bind, "udp listener failed: {e}");
                    break;
                }
                listening.receive_batch();
            }
        }
        // Let flows and other listeners run between batches.
        tokio::task::yield_now().await;
    }
    // Ends every flow: their tasks close their sockets and give the slots
    // back.
    let flows: Vec<_> = listening
        .flows
        .borrow_mut()
        .drain()
        .map(|(_, f)| f)
        .collect();
    for flow in flows {
        flow.end();
    }
    debug!(worker = listening.local.id, %bind, "stopped receiving (udp)");
}

struct Listening<R: Runtime> {
    local: Rc<Local>,
    bind: SocketAddr,
    socket: R::Datagram,
    flows: RefCell<HashMap<SocketAddr, Rc<Flow<R>>>>,
    /// Where datagrams land, both ways; borrowed only between awaits.
    buf: RefCell<Vec<u8>>,
}

struct Flow<R: Runtime> {
    client: SocketAddr,
    /// The address the client sent its first datagram to, where the
    /// listener is bound to a wildcard: replies come from it.
    local: Option<IpAddr>,
    member: R::Datagram,
    member_addr: SocketAddr,
    member_state: Arc<MemberState>,
    listener_state: Arc<ListenerState>,
    /// The snapshot generation the member was last found in.
    generation: Cell<u64>,
    idle_ms: u64,
    last_ms: Cell<u64>,
    ended: Cell<bool>,
    wake: WakeSlot,
    _listener_slot: Slot<ListenerState>,
    _member_slot: MemberSlot,
}

impl<R: Runtime> Flow<R> {
    fn end(&self) {
        self.ended.set(true);
        self.wake.wake();
    }

    fn touch(&self) {
        self.last_ms.set(now_ms());
    }
}

impl<R: Runtime> Listening<R> {
    /// Takes up to [`BATCH`] client datagrams off the listener's socket.
    fn receive_batch(self: &Rc<Self>) {
        for _ in 0..BATCH {
            let received = self.socket.try_recv_from(&mut self.buf.borrow_mut());
            match received {
                Ok((len, client, to)) => self.relay_client_datagram(canonical(client), to, len),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // An ICMP error queued on the listener's socket (a client
                // that went away): about that client only.
                Err(e) => debug!(bind = %self.bind, "udp receive: {e}"),
            }
        }
    }

    /// A datagram of `len` bytes (in `buf`) from `client`, sent to local
    /// address `to` (known on a wildcard-bound listener).
    fn relay_client_datagram(self: &Rc<Self>, client: SocketAddr, to: Option<IpAddr>, len: usize) {
        let view = self.local.view();
        // Removed in a reload this worker has not acted on yet.
        let Some(listener) = view.snap.udp_listener_at(self.bind) else {
            return;
        };
        let lc = listener.state.counters.get(self.local.id);
        inc(&lc.datagrams_in);
        add(&lc.bytes_in, len as u64);
        let flow = match self.current_flow(
            client,
            listener,
            &view.snap.pools[listener.pool],
            view.snap.generation,
        ) {
            Some(flow) => flow,
            None => match self.open_flow(client, to, listener, Rc::clone(&view)) {
                Some(flow) => flow,
                None => return,
            },
        };
        let sent = flow.member.try_send(&self.buf.borrow()[..len]);
        match sent {
            Ok(_) => {
                flow.touch();
                let mc = flow.member_state.counters.get(self.local.id);
                inc(&mc.datagrams_in);
                add(&mc.bytes_in, len as u64);
            }
            Err(e) => {
                inc(&lc.dropped_send);
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    self.member_refused(&flow);
                }
            }
        }
    }

    /// `client`'s flow, if it has one whose member may still serve it.
    fn current_flow(
        &self,
        client: SocketAddr,
        listener: &ListenerRt,
        pool: &PoolRt,
        generation: u64,
    ) -> Option<Rc<Flow<R>>> {
        let flow = Rc::clone(self.flows.borrow().get(&client)?);
        let mut keep = !flow.ended.get()
            && !matches!(flow.member_state.status(), Status::Down | Status::Maint);
        if keep && flow.generation.get() != generation {
            // After a reload: the member must still be in the pool, and
            // the flow must still be for this listener's state.
            keep = Arc::ptr_eq(&flow.listener_state, &listener.state)
                && pool.members.iter().any(|m| {
                    m.addr == flow.member_addr && Arc::ptr_eq(&m.state, &flow.member_state)
                });
            flow.generation.set(generation);
        }
        if keep {
            return Some(flow);
        }
        debug!(client = %client, member = %flow.member_addr, "udp flow re-picked");
        self.flows.borrow_mut().remove(&client);
        flow.end();
        None
    }

    /// Opens a flow for `client` (its first datagram passed the checks),
    /// or says why not in the listener's counters.
    fn open_flow(
        self: &Rc<Self>,
        client: SocketAddr,
        local: Option<IpAddr>,
        listener: &ListenerRt,
        view: Rc<crate::pick::LocalView>,
    ) -> Option<Rc<Flow<R>>> {
        let lc = listener.state.counters.get(self.local.id);
        inc(&lc.accepted);
        if !listener.allows(client.ip()) {
            inc(&lc.denied_cidr);
            return None;
        }
        let Some(listener_slot) = listener.state.try_acquire(listener.cfg.connection_limit) else {
            inc(&lc.limit_hits);
            return None;
        };
        let generation = view.snap.generation;
        let Some(Taken {
            view,
            pool,
            member,
            slot,
        }) = take_now(view, listener.pool, client.ip())
        else {
            inc(&lc.no_member);
            if listener.state.warn_limiter.allow(now_ms()) {
                warn!(
                    listener = %listener.cfg.name,
                    "no usable member: dropping new udp flows (logged at most every 10s)"
                );
            }
            return None;
        };
        let m = &view.snap.pools[pool].members[member];
        let socket = match datagram::connected_to(m.addr).and_then(R::datagram) {
            Ok(socket) => socket,
            Err(e) => {
                inc(&lc.local_errors);
                if listener.state.local_error_limiter.allow(now_ms()) {
                    warn!(
                        listener = %listener.cfg.name,
                        "cannot open a udp socket to {}: {e} (logged at most every 10s)",
                        m.label
                    );
                }
                return None;
            }
        };
        inc(&m.state.counters.get(self.local.id).connections);
        let flow = Rc::new(Flow {
            client,
            local,
            member: socket,
            member_addr: m.addr,
            member_state: Arc::clone(&m.state),
            listener_state: Arc::clone(&listener.state),
            generation: Cell::new(generation),
            idle_ms: duration_ms(listener.cfg.session_idle),
            last_ms: Cell::new(now_ms()),
            ended: Cell::new(false),
            wake: WakeSlot::default(),
            _listener_slot: listener_slot,
            _member_slot: slot,
        });
        self.flows.borrow_mut().insert(client, Rc::clone(&flow));
        tokio::task::spawn_local(Rc::clone(self).member_to_client(Rc::clone(&flow)));
        Some(flow)
    }

    /// The member refused (ICMP port unreachable): the flow ends, and new
    /// flows avoid the member for a while (the passive back-off of a
    /// refused TCP connect).
    fn member_refused(&self, flow: &Flow<R>) {
        inc(&flow.member_state.counters.get(self.local.id).connect_errors);
        flow.member_state.connect_failed(now_ms());
        flow.end();
    }

    /// A flow's task: forwards the member's datagrams to the client until
    /// the flow ends (see the LIFECYCLE).
    async fn member_to_client(self: Rc<Self>, flow: Rc<Flow<R>>) {
        loop {
            let idle = now_ms().saturating_sub(flow.last_ms.get());
            if flow.ended.get() || idle >= flow.idle_ms {
                break;
            }
            let left = Duration::from_millis(flow.idle_ms - idle);
            tokio::select! {
                biased;
                () = flow.wake.until(|| flow.ended.get()) => break,
                ready = flow.member.readable() => {
                    if ready.is_err() {
                        break;
                    }
                    self.relay_member_datagrams(&flow);
                }
                () = tokio::time::sleep(left) => {}
            }
        }
        let mut flows = self.flows.borrow_mut();
        if flows
            .get(&flow.client)
            .is_some_and(|f| Rc::ptr_eq(f, &flow))
        {
            flows.remove(&flow.client);
        }
    }

    /// Takes up to [`BATCH`] datagrams the member sent and passes them on.
    fn relay_member_datagrams(&self, flow: &Flow<R>) {
        let lc = flow.listener_state.counters.get(self.local.id);
        let mc = flow.member_state.counters.get(self.local.id);
        for _ in 0..BATCH {
            let mut buf = self.buf.borrow_mut();
            let len = match flow.member.try_recv(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    drop(buf);
                    self.member_refused(flow);
                    return;
                }
                Err(e) => {
                    debug!(member = %flow.member_addr, "udp receive from member: {e}");
                    flow.end();
                    return;
                }
            };
            inc(&mc.datagrams_out);
            add(&mc.bytes_out, len as u64);
            flow.touch();
            match self
                .socket
                .try_send_to(&buf[..len], flow.client, flow.local)
            {
                Ok(_) => {
                    inc(&lc.datagrams_out);
                    add(&lc.bytes_out, len as u64);
                }
                Err(_) => inc(&lc.dropped_send),
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
