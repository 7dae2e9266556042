//! A data-plane worker: one thread, one single-threaded runtime, its own
//! SO_REUSEPORT socket per listener.
//!
//! The worker follows config generations: when the control thread publishes
//! a snapshot it starts accept loops for listeners it does not serve yet,
//! and stops the loops of listeners that went away or were closed (the
//! control thread wakes it for that, see `Shared::wake_workers`); an
//! accept in flight is abandoned without losing a connection
//! (`Runtime::abandon_accept`). Per-connection state lives in tasks on this
//! thread only; what is shared with other threads is read through `arc-swap`
//! and per-worker atomic counters.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tracing::{debug, error, warn};

use lbd_config::Protocol;

use crate::context::Shared;
use crate::proxy::{local::Local, tcp, udp, wake::WakeSlot};
use crate::runtime::Runtime;
use crate::sockets::ListenerSockets;
use crate::state::{now_ms, LogLimiter};

pub struct Worker<R: Runtime> {
    /// What its connections share (id, counters, buffers, config view).
    local: Rc<Local>,
    accept_errors: LogLimiter,
    _runtime: PhantomData<R>,
}

impl<R: Runtime> Worker<R> {
    fn new(id: usize, shared: Arc<Shared>) -> Self {
        Worker {
            local: Rc::new(Local::new(id, shared)),
            accept_errors: LogLimiter::new(5_000),
            _runtime: PhantomData,
        }
    }

    /// Starts accept loops for new listeners, generation after generation,
    /// and stops those of listeners that went away or were closed.
    async fn follow_config(self: Rc<Self>) {
        let mut changes = self.local.shared.subscribe();
        // By protocol and address: a TCP and a UDP listener may share one.
        let mut serving: HashMap<(Protocol, SocketAddr), Serving> = HashMap::new();
        loop {
            let snap = self.local.shared.snapshot();
            serving.retain(|&(protocol, bind), (sockets, stops)| {
                let keep = snap.find_listener(protocol, bind).is_some() && !sockets.is_closed();
                if !keep {
                    stops.iter().for_each(|s| s.request());
                }
                keep
            });
            for l in &snap.listeners {
                let key = (l.cfg.protocol, l.cfg.bind);
                let known = serving
                    .get(&key)
                    .is_some_and(|(s, _)| Arc::ptr_eq(s, &l.sockets));
                if known || l.sockets.is_closed() {
                    continue;
                }
                let started = match l.cfg.protocol {
                    Protocol::Tcp => Rc::clone(&self).serve_tcp(l),
                    Protocol::Udp => self.serve_udp(l),
                };
                match started {
                    Ok(stops) => {
                        if let Some((_, old)) = serving.insert(key, (Arc::clone(&l.sockets), stops))
                        {
                            old.iter().for_each(|s| s.request());
                        }
                    }
                    Err(e) => error!(
                        worker = self.local.id,
                        bind = %l.cfg.bind,
                        "cannot serve ({}): {e}",
                        l.cfg.protocol.name()
                    ),
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
            crate::fault::injected_panic("worker-reload");
        }
    }

    /// Starts the accept loops of TCP listener `l` on this worker's
    /// sockets; returns their stop switches.
    fn serve_tcp(
        self: Rc<Self>,
        l: &crate::snapshot::ListenerRt,
    ) -> io::Result<Vec<Rc<AcceptStop>>> {
        let listeners = l
            .sockets
            .for_worker(self.local.id)?
            .into_iter()
            .inspect(crate::sockets::serve_listener)
            .map(R::listener)
            .collect::<io::Result<Vec<_>>>()?;
        let bind = l.cfg.bind;
        Ok(spawn_stoppable(listeners, |listener, stop| {
            Rc::clone(&self).accept_loop(listener, bind, stop)
        }))
    }

    /// Starts the receive loops of UDP listener `l` on this worker's
    /// sockets; returns their stop switches.
    fn serve_udp(&self, l: &crate::snapshot::ListenerRt) -> io::Result<Vec<Rc<AcceptStop>>> {
        let sockets = l
            .sockets
            .datagram_for_worker(self.local.id)?
            .into_iter()
            .map(R::datagram)
            .collect::<io::Result<Vec<_>>>()?;
        let bind = l.cfg.bind;
        Ok(spawn_stoppable(sockets, |socket, stop| {
            udp::serve::<R, AcceptStop>(Rc::clone(&self.local), bind, socket, stop)
        }))
    }

    async fn accept_loop(
        self: Rc<Self>,
        listener: R::Listener,
        bind: SocketAddr,
        stop: Rc<AcceptStop>,
    ) {
        debug!(worker = self.local.id, %bind, "accepting");
        while !stop.requested() {
            let accepted = {
                let mut accept = std::pin::pin!(R::accept(&listener));
                tokio::select! {
                    biased;
                    result = accept.as_mut() => result,
                    () = stop.wait() => match R::abandon_accept(&listener, accept).await {
                        Some(conn) => Ok(conn),
                        None => break,
                    },
                }
            };
            match accepted {
                Ok((stream, peer)) => {
                    tokio::task::spawn_local(tcp::handle::<R>(
                        Rc::clone(&self.local),
                        bind,
                        stream,
                        peer,
                    ));
                }
                Err(_) if stop.requested() => break,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of fds or memory: back off instead of spinning.
                    if self.accept_errors.allow(now_ms()) {
                        warn!(worker = self.local.id, %bind, "accept failed: {e} (pausing 50ms; logged at most every 5s)");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                        () = stop.wait() => {}
                    }
                }
            }
        }
        debug!(worker = self.local.id, %bind, "stopped accepting");
    }
}

/// A listener a worker serves: its sockets, and the stop switches of the
/// loops on them.
type Serving = (Arc<ListenerSockets>, Vec<Rc<AcceptStop>>);

/// Spawns `serve(socket, stop)` for each of `sockets`, each with its own
/// stop switch: the switches, in order.
fn spawn_stoppable<S, F>(
    sockets: Vec<S>,
    serve: impl Fn(S, Rc<AcceptStop>) -> F,
) -> Vec<Rc<AcceptStop>>
where
    F: std::future::Future<Output = ()> + 'static,
{
    sockets
        .into_iter()
        .map(|socket| {
            let stop = Rc::new(AcceptStop::default());
            tokio::task::spawn_local(serve(socket, Rc::clone(&stop)));
            stop
        })
        .collect()
}

/// Tells one accept loop to stop. Set by the worker's own config
/// follower, so no lock: a flag and a wake-up slot.
#[derive(Default)]
struct AcceptStop {
    requested: Cell<bool>,
    slot: WakeSlot,
}

impl AcceptStop {
    fn request(&self) {
        self.requested.set(true);
        self.slot.wake();
    }

    fn requested(&self) -> bool {
        self.requested.get()
    }

    async fn wait(&self) {
        self.slot.until(|| self.requested.get()).await
    }
}

impl udp::StopSignal for AcceptStop {
    fn requested(&self) -> bool {
        AcceptStop::requested(self)
    }

    async fn wait(&self) {
        AcceptStop::wait(self).await
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
        // Closes connections of pools with on_down / on_maint when their
        // member goes down or into maint (idle otherwise).
        let local = Rc::clone(&worker.local);
        tokio::task::spawn_local(async move { local.sessions.run_sweeper(local.id).await });
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
