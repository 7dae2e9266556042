//! A data-plane worker: one thread, one single-threaded runtime, its own
//! SO_REUSEPORT socket per listener.
//!
//! The worker follows config generations: when the control thread publishes
//! a snapshot it starts accept loops for listeners it does not serve yet.
//! Listeners that went away end by themselves (their sockets are shut down
//! by the control thread). Per-connection state lives in tasks on this
//! thread only; what is shared with other threads is read through `arc-swap`
//! and per-worker atomic counters.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::balance::Balancer;
use crate::proxy::{self, buffers::BufPool, Candidates};
use crate::runtime::Runtime;
use crate::server::Shared;
use crate::snapshot::{MemberRt, Snapshot};
use crate::sockets::ListenerSockets;
use crate::state::{now_ms, LogLimiter, WorkerCounters};

pub struct Worker<R: Runtime> {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub counters: Arc<WorkerCounters>,
    pub bufs: BufPool,
    view: RefCell<Rc<LocalView>>,
    accept_errors: LogLimiter,
    _runtime: PhantomData<R>,
}

/// This worker's view of one snapshot, with its own balancer state (round
/// robin positions are per worker: nothing is shared on the pick path).
pub struct LocalView {
    pub snap: Arc<Snapshot>,
    balancers: RefCell<Vec<Balancer>>,
}

impl LocalView {
    /// A view of `snap`. Balancers of pools whose plan did not change since
    /// `previous` move over, so a reload does not restart round robin at the
    /// first member.
    fn new(snap: Arc<Snapshot>, previous: Option<&LocalView>) -> Self {
        let mut old = previous.map(|p| p.balancers.borrow_mut());
        let balancers = snap
            .pools
            .iter()
            .map(|p| {
                let fresh = Balancer::new(Arc::clone(&p.plan));
                match old
                    .as_mut()
                    .and_then(|old| old.iter_mut().find(|b| Arc::ptr_eq(b.plan(), &p.plan)))
                {
                    // The old view is only used by connections of the old
                    // generation still being set up; they get the fresh one.
                    Some(kept) => std::mem::replace(kept, fresh),
                    None => fresh,
                }
            })
            .collect();
        LocalView {
            snap,
            balancers: RefCell::new(balancers),
        }
    }

    /// Picks a member of pool `pool` for `client_ip`, skipping `tried`.
    /// Members backing off after failed connects are used only if nothing
    /// else is available.
    pub fn pick(
        &self,
        pool: usize,
        client_ip: IpAddr,
        members: &[MemberRt],
        tried: &[usize],
    ) -> Option<usize> {
        let mut balancers = self.balancers.borrow_mut();
        let balancer = &mut balancers[pool];
        let mut status = Candidates {
            members,
            tried,
            now_ms: now_ms(),
            ignore_passive: false,
        };
        balancer.pick(client_ip, &status).or_else(|| {
            status.ignore_passive = true;
            balancer.pick(client_ip, &status)
        })
    }
}

impl<R: Runtime> Worker<R> {
    fn new(id: usize, shared: Arc<Shared>) -> Self {
        let view = RefCell::new(Rc::new(LocalView::new(shared.snapshot(), None)));
        Worker {
            id,
            counters: Arc::clone(&shared.workers[id]),
            shared,
            bufs: BufPool::default(),
            view,
            accept_errors: LogLimiter::new(5_000),
            _runtime: PhantomData,
        }
    }

    /// The current snapshot's view; rebuilt only when a reload published a
    /// new snapshot (one pointer comparison otherwise).
    pub fn view(&self) -> Rc<LocalView> {
        let current = self.shared.load_snapshot();
        if !Arc::ptr_eq(&current, &self.view.borrow().snap) {
            let next = LocalView::new(
                arc_swap::Guard::into_inner(current),
                Some(&self.view.borrow()),
            );
            *self.view.borrow_mut() = Rc::new(next);
        }
        Rc::clone(&self.view.borrow())
    }

    /// Starts accept loops for new listeners, generation after generation.
    async fn follow_config(self: Rc<Self>) {
        let mut changes = self.shared.subscribe();
        let mut serving: HashMap<SocketAddr, Arc<ListenerSockets>> = HashMap::new();
        loop {
            let snap = self.shared.snapshot();
            serving
                .retain(|bind, sockets| snap.listener_at(*bind).is_some() && !sockets.is_closed());
            for l in &snap.listeners {
                let known = serving
                    .get(&l.cfg.bind)
                    .is_some_and(|s| Arc::ptr_eq(s, &l.sockets));
                if known || l.sockets.is_closed() {
                    continue;
                }
                match l.sockets.for_worker(self.id).and_then(R::listener) {
                    Ok(listener) => {
                        serving.insert(l.cfg.bind, Arc::clone(&l.sockets));
                        tokio::task::spawn_local(
                            Rc::clone(&self).accept_loop(listener, Arc::clone(&l.sockets)),
                        );
                    }
                    Err(e) => error!(worker = self.id, bind = %l.cfg.bind, "cannot accept: {e}"),
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
            crate::service::injected_panic("worker-reload");
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: R::Listener, sockets: Arc<ListenerSockets>) {
        let bind = sockets.bind();
        debug!(worker = self.id, %bind, "accepting");
        loop {
            match R::accept(&listener).await {
                Ok((stream, peer)) => {
                    tokio::task::spawn_local(proxy::handle(Rc::clone(&self), bind, stream, peer));
                }
                Err(_) if sockets.is_closed() => break,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of fds or memory: back off instead of spinning.
                    if self.accept_errors.allow(now_ms()) {
                        warn!(worker = self.id, %bind, "accept failed: {e} (pausing 50ms; logged at most every 5s)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        debug!(worker = self.id, %bind, "stopped accepting");
    }
}

/// Accept errors that concern one connection only (it was aborted before we
/// got to it), not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::EAGAIN)
    )
}

/// Runs worker `id` on the current thread until the process exits. Reports
/// on `ready` whether its runtime started.
pub fn run<R: Runtime>(id: usize, shared: Arc<Shared>, ready: mpsc::Sender<Result<(), String>>) {
    let started = ready.clone();
    let result = R::block_on(async move {
        let worker = Rc::new(Worker::<R>::new(id, shared));
        let _ = started.send(Ok(()));
        worker.follow_config().await;
    });
    if let Err(e) = result {
        let _ = ready.send(Err(format!(
            "worker {id}: cannot start the {} runtime: {e}",
            R::NAME
        )));
    }
}
